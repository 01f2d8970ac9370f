//! Byte-level BPE: GPT-2 / tiktoken style.
//!
//! Text is split into pieces by a regex (GPT-2's or cl100k's pattern), each
//! piece's UTF-8 bytes start as single-byte tokens, and adjacent parts are
//! merged, lowest rank first, while their concatenation is in the vocabulary.
//! The rank of a token is its id (as in tiktoken files, and as GPT-2's
//! `vocab.json` ids follow its merge order), so one table serves both.
//!
//! ```text
//! "hello world" -> pieces ["hello", " world"] -> [31373, 995]   (r50k)
//! ```

pub use crate::byte_alphabet::bytes_to_unicode;
use crate::byte_alphabet::unicode_to_bytes;
use std::path::Path;

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::pretok::Splitter;

use crate::{Result, TokenizerError};

/// GPT-2's pre-tokenizer (r50k).
pub const GPT2_PATTERN: &str = r"'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// cl100k's pre-tokenizer (GPT-3.5 / GPT-4).
pub const CL100K_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// `gpt2` and `cl100k` name the built-in patterns; anything else is a regex.
pub fn pattern_by_name(name: &str) -> &str {
    match name {
        "gpt2" | "r50k" => GPT2_PATTERN,
        "cl100k" => CL100K_PATTERN,
        custom => custom,
    }
}

/// Which special tokens `encode` may produce from the text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AllowedSpecial {
    /// Every special token in the text becomes its id.
    All,
    /// Special-token strings are encoded as ordinary text.
    None,
    /// Only these become ids; others are ordinary text.
    Set(Vec<String>),
    /// Any special-token string in the text is an error.
    Raise,
}

/// Byte-level BPE (GPT-2, cl100k, Llama 3, Qwen2, or trained by
/// `BpeTrainer`): a regex splits the text, each piece's bytes merge by rank.
pub struct BytePairEncoder {
    /// token bytes -> id (= merge rank)
    ranks: FxHashMap<Vec<u8>, u32>,
    /// id -> token bytes, specials included
    tokens: Vec<Vec<u8>>,
    specials: Vec<(String, u32)>,
    splitter: Splitter,
    pattern_src: String,
    /// Ids the post-processor puts around every encoding (Llama 3's
    /// `<|begin_of_text|>`); used by `Tokenizer::encode`, as HF's `encode` does.
    prefix_ids: Vec<u32>,
    suffix_ids: Vec<u32>,
    /// Unicode NFC before encoding (Qwen2's normalizer).
    nfc: bool,
}

impl BytePairEncoder {
    /// From a rank table (bytes -> id), special tokens and a split pattern.
    pub fn new(ranks: FxHashMap<Vec<u8>, u32>, specials: Vec<(String, u32)>, pattern: &str) -> Result<Self> {
        let bad = |msg: String| TokenizerError::Format { path: "<bpe>".into(), msg };
        let splitter = Splitter::new(pattern)?;
        let n = ranks.values().chain(specials.iter().map(|s| &s.1)).map(|&r| r as usize + 1).max().unwrap_or(0);
        // Ids are dense in real files (tiktoken leaves a few gaps before its
        // specials); an id far past the entries is damage, and would make
        // the id table as large as the id.
        if let Some((_, id)) = specials.iter().find(|(s, _)| s.is_empty()) {
            return Err(bad(format!("token id {id} is the empty string, which no text can be split into; the file is damaged")));
        }
        let entries = ranks.len() + specials.len();
        if n > 2 * entries + 1024 {
            return Err(bad(format!("token id {} is far beyond the vocabulary's {entries} entries; the file is damaged", n - 1)));
        }
        let mut tokens: Vec<Option<Vec<u8>>> = vec![None; n];
        let mut place = |r: u32, b: &[u8]| match &tokens[r as usize] {
            Some(old) if old != b => Err(bad(format!(
                "token id {r} is given to two tokens, {:?} and {:?}; every id must name one token",
                String::from_utf8_lossy(old),
                String::from_utf8_lossy(b)
            ))),
            _ => {
                tokens[r as usize] = Some(b.to_vec());
                Ok(())
            }
        };
        for (b, &r) in &ranks {
            place(r, b)?;
        }
        for (s, r) in &specials {
            place(*r, s.as_bytes())?;
        }
        let tokens: Vec<Vec<u8>> = tokens.into_iter().map(Option::unwrap_or_default).collect();
        for b in 0..=255u8 {
            if !ranks.contains_key(&vec![b]) {
                return Err(bad(format!("the vocabulary lacks the single byte {b:#04x}; byte-level BPE needs all 256")));
            }
        }
        Ok(BytePairEncoder { ranks, tokens, specials, splitter, pattern_src: pattern.to_string(), prefix_ids: Vec::new(), suffix_ids: Vec::new(), nfc: false })
    }

    /// A tiktoken rank file: one `base64(token) rank` per line.
    pub fn load_tiktoken(path: &Path, specials: Vec<(String, u32)>, pattern: &str) -> Result<Self> {
        use base64::Engine;
        let text = std::fs::read_to_string(path).map_err(|err| TokenizerError::Io { path: path.into(), err })?;
        let mut ranks = FxHashMap::default();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let bad = |what: &str| TokenizerError::Format { path: path.into(), msg: format!("line {}: {what}; expected `BASE64 RANK`", i + 1) };
            let (tok, rank) = line.split_once(' ').ok_or_else(|| bad("no space"))?;
            let bytes = base64::engine::general_purpose::STANDARD.decode(tok).map_err(|_| bad("invalid base64"))?;
            let rank: u32 = rank.trim().parse().map_err(|_| bad("rank is not an integer"))?;
            ranks.insert(bytes, rank);
        }
        Self::new(ranks, specials, pattern).map_err(|e| relabel(e, path))
    }

    /// GPT-2's `vocab.json` (also `encoder.json`) and `merges.txt` (also `vocab.bpe`).
    pub fn load_gpt2(vocab: &Path, merges: &Path) -> Result<Self> {
        let map = crate::read_vocab_json(vocab)?;
        let m = std::fs::read_to_string(merges).map_err(|err| TokenizerError::Io { path: merges.into(), err })?;
        let mut pairs = Vec::new();
        for (i, line) in m.lines().enumerate().filter(|(_, l)| !l.starts_with("#version") && !l.trim().is_empty()) {
            let (a, b) = line
                .split_once(' ')
                .ok_or_else(|| TokenizerError::Format { path: merges.into(), msg: format!("line {}: expected two tokens separated by a space", i + 1) })?;
            pairs.push(format!("{a}{b}"));
        }
        Self::from_vocab(map, &pairs, Vec::new(), GPT2_PATTERN).map_err(|e| relabel(e, vocab))
    }

    /// From a GPT-2-style vocabulary (tokens in the byte-to-unicode alphabet),
    /// the concatenations its merges produce, and added tokens.
    ///
    /// A vocab entry that no merge produces and that is not a single byte is
    /// an added token such as <|endoftext|> (which is spelled in printable
    /// bytes, so its characters alone cannot tell).
    pub fn from_vocab(vocab: std::collections::HashMap<String, u32>, merged: &[String], added: Vec<(String, u32)>, pattern: &str) -> Result<Self> {
        let merged: std::collections::HashSet<&str> = merged.iter().map(|s| s.as_str()).collect();
        let decode = unicode_to_bytes();
        let mut ranks = FxHashMap::default();
        // Sets, not scans: a file with a million unmerged entries must load
        // in time linear in its size.
        let added_names: std::collections::HashSet<String> = added.iter().map(|(s, _)| s.clone()).collect();
        let added_ids: std::collections::HashSet<u32> = added.iter().map(|(_, i)| *i).collect();
        let mut specials = added;
        for (tok, id) in vocab {
            if added_names.contains(&tok) || added_ids.contains(&id) {
                continue;
            }
            let bytes = tok.chars().map(|c| decode.get(&c).copied()).collect::<Option<Vec<u8>>>();
            match bytes {
                Some(b) if b.len() == 1 || merged.contains(tok.as_str()) => {
                    ranks.insert(b, id);
                }
                _ => specials.push((tok, id)),
            }
        }
        Self::new(ranks, specials, pattern)
    }

    /// A Hugging Face `tokenizer.json` with a byte-level BPE model: GPT-2's
    /// ByteLevel pre-tokenizer, or a Split regex followed by ByteLevel.
    pub fn from_hf_json(json: &serde_json::Value, path: &Path) -> Result<Self> {
        let bad = |msg: String| TokenizerError::Format { path: path.into(), msg };
        let model = &json["model"];
        let vocab: std::collections::HashMap<String, u32> =
            serde_json::from_value(model["vocab"].clone()).map_err(|e| bad(format!("model.vocab is not an object of token -> id: {e}")))?;
        let merges = model["merges"].as_array().ok_or_else(|| bad("model.merges is missing".into()))?;
        let mut pairs = Vec::with_capacity(merges.len());
        for (i, m) in merges.iter().enumerate() {
            // Older files write "a b", newer ones ["a", "b"].
            let pair = match m {
                serde_json::Value::String(s) => s.split_once(' ').map(|(a, b)| format!("{a}{b}")),
                serde_json::Value::Array(v) if v.len() == 2 => Some(format!("{}{}", v[0].as_str().unwrap_or(""), v[1].as_str().unwrap_or(""))),
                _ => None,
            };
            pairs.push(pair.ok_or_else(|| bad(format!("model.merges[{i}] is neither \"a b\" nor [\"a\", \"b\"]")))?);
        }
        let added: Vec<(String, u32)> = json["added_tokens"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| Some((t["content"].as_str()?.to_string(), t["id"].as_u64()? as u32))).collect())
            .unwrap_or_default();
        let pre = &json["pre_tokenizer"];
        let pattern = match pre["type"].as_str() {
            Some("ByteLevel") if pre["use_regex"].as_bool() != Some(false) => {
                if pre["add_prefix_space"].as_bool() == Some(true) {
                    return Err(bad("pre_tokenizer.add_prefix_space = true is not supported".into()));
                }
                GPT2_PATTERN.to_string()
            }
            Some("Sequence") => pre["pretokenizers"]
                .as_array()
                .and_then(|list| list.iter().find_map(|p| p["pattern"]["Regex"].as_str().map(str::to_string)))
                .ok_or_else(|| bad("pre_tokenizer.pretokenizers has no Split regex".into()))?,
            other => {
                return Err(bad(format!(
                    "pre_tokenizer.type {} is not a byte-level pre-tokenizer this build reads (ByteLevel, or a Sequence with a Split regex)",
                    other.map_or("missing".to_string(), |t| format!("{t:?}"))
                )))
            }
        };
        match json["decoder"]["type"].as_str() {
            None | Some("ByteLevel") | Some("Sequence") => {}
            Some(other) => return Err(bad(format!("decoder.type {other:?} does not decode byte-level BPE; expected \"ByteLevel\""))),
        }
        let nfc = match json["normalizer"]["type"].as_str() {
            None => false,
            Some("NFC") => true,
            Some(other) => return Err(bad(format!("normalizer.type {other:?} is not supported with byte-level BPE (null or \"NFC\" are)"))),
        };
        let id_of = |s: &str| added.iter().find(|(t, _)| t == s).map(|(_, i)| *i).or_else(|| vocab.get(s).copied());
        let (prefix_ids, suffix_ids) = crate::spbpe::template_ids(&json["post_processor"], id_of, path)?;
        let mut enc = Self::from_vocab(vocab, &pairs, added, &pattern).map_err(|e| relabel(e, path))?;
        enc.prefix_ids = prefix_ids;
        enc.suffix_ids = suffix_ids;
        enc.nfc = nfc;
        Ok(enc)
    }

    /// Tokens, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// The pre-tokenizer's regex.
    pub fn pattern(&self) -> &str {
        &self.pattern_src
    }

    /// Ids to put before and after every `Tokenizer::encode` (saved as a
    /// TemplateProcessing post-processor), e.g. a translation vocabulary's `</s>`.
    pub fn set_template(&mut self, prefix: Vec<u32>, suffix: Vec<u32>) {
        (self.prefix_ids, self.suffix_ids) = (prefix, suffix);
    }

    /// The special tokens and their ids.
    pub fn special_tokens(&self) -> &[(String, u32)] {
        &self.specials
    }

    /// Encodes `text`, turning the special tokens that `allowed` permits into their ids.
    pub fn encode(&self, text: &str, allowed: &AllowedSpecial) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            // The earliest special token in `rest` that is allowed.
            let next = self
                .specials
                .iter()
                .filter_map(|(s, id)| rest.find(s.as_str()).map(|at| (at, s, *id)))
                .filter(|(_, s, _)| match allowed {
                    AllowedSpecial::All | AllowedSpecial::Raise => true,
                    AllowedSpecial::None => false,
                    AllowedSpecial::Set(set) => set.iter().any(|x| x == *s),
                })
                .min_by_key(|(at, s, _)| (*at, std::cmp::Reverse(s.len())));
            match next {
                Some((_, s, _)) if *allowed == AllowedSpecial::Raise => {
                    return Err(TokenizerError::Format {
                        path: "<input>".into(),
                        msg: format!("the text contains the special token {s:?}; choose how to treat special tokens"),
                    });
                }
                Some((at, s, id)) => {
                    self.encode_ordinary_into(&rest[..at], &mut out);
                    out.push(id);
                    rest = &rest[at + s.len()..];
                }
                None => {
                    self.encode_ordinary_into(rest, &mut out);
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Encodes `text` with no special-token handling.
    pub fn encode_ordinary(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        self.encode_ordinary_into(text, &mut out);
        out
    }

    fn encode_ordinary_into(&self, text: &str, out: &mut Vec<u32>) {
        // Big texts are cut where no piece crosses, and the chunks are
        // encoded on the thread pool; the ids are those of the whole text.
        const CHUNK: usize = 256 << 10;
        let threads = rayon::current_num_threads();
        if text.len() < 2 * CHUNK || threads == 1 {
            self.splitter.for_each_piece(text, |p| self.encode_piece(p.as_bytes(), out));
            return;
        }
        let chunks = self.splitter.chunks(text, text.len() / CHUNK);
        let parts: Vec<Vec<u32>> = chunks
            .par_iter()
            .map(|c| {
                let mut v = Vec::with_capacity(c.len() / 3);
                self.splitter.for_each_piece(c, |p| self.encode_piece(p.as_bytes(), &mut v));
                v
            })
            .collect();
        out.reserve(parts.iter().map(Vec::len).sum());
        for p in parts {
            out.extend_from_slice(&p);
        }
    }

    fn encode_piece(&self, piece: &[u8], out: &mut Vec<u32>) {
        match self.ranks.get(piece) {
            Some(&id) => out.push(id),
            None => self.merge_piece(piece, out),
        }
    }

    /// BPE on one piece: repeatedly merge the adjacent pair whose
    /// concatenation has the lowest rank. `parts[i]` is the start of part i.
    fn merge_piece(&self, piece: &[u8], out: &mut Vec<u32>) {
        for w in self.split_piece(piece).windows(2) {
            out.push(self.ranks[&piece[w[0]..w[1]]]);
        }
    }

    /// Part boundaries of `piece` after BPE.
    fn split_piece(&self, piece: &[u8]) -> Vec<usize> {
        let mut parts: Vec<usize> = (0..=piece.len()).collect();
        let rank_of = |parts: &[usize], i: usize| -> u32 {
            if i + 2 < parts.len() {
                self.ranks.get(&piece[parts[i]..parts[i + 2]]).copied().unwrap_or(u32::MAX)
            } else {
                u32::MAX
            }
        };
        let mut pair_ranks: Vec<u32> = (0..parts.len() - 1).map(|i| rank_of(&parts, i)).collect();
        while let Some((best, &r)) = pair_ranks.iter().enumerate().min_by_key(|(_, &r)| r) {
            if r == u32::MAX {
                break;
            }
            parts.remove(best + 1);
            pair_ranks.remove(best + 1);
            pair_ranks[best] = rank_of(&parts, best);
            if best > 0 {
                pair_ranks[best - 1] = rank_of(&parts, best - 1);
            }
        }
        parts
    }

    /// A Hugging Face `tokenizer.json` (byte-level BPE) describing this
    /// tokenizer.
    ///
    /// This encoder merges two adjacent parts whenever their concatenation is
    /// a token, at that token's rank; HF merges listed pairs, in list order.
    /// Listing, for every token in rank order, each split of it into two
    /// tokens makes the two rules the same. For GPT-2's and cl100k's files
    /// this adds merges HF never uses (their vocabularies reach each token
    /// by one split); for a trained vocabulary where a token was reached by
    /// two different splits, it is what keeps the ids identical.
    pub fn to_hf_json(&self) -> serde_json::Value {
        let map = bytes_to_unicode();
        let show = |b: &[u8]| b.iter().map(|&x| map[x as usize]).collect::<String>();
        let mut by_rank: Vec<(u32, &Vec<u8>)> = self.ranks.iter().map(|(b, &r)| (r, b)).collect();
        by_rank.sort();
        let vocab: serde_json::Map<String, serde_json::Value> = by_rank.iter().map(|(r, b)| (show(b), (*r).into())).collect();
        let merges: Vec<serde_json::Value> = by_rank
            .iter()
            .flat_map(|(_, b)| (1..b.len()).map(move |k| (&b[..k], &b[k..])))
            .filter(|(x, y)| self.ranks.contains_key(*x) && self.ranks.contains_key(*y))
            .map(|(x, y)| serde_json::json!([show(x), show(y)]))
            .collect();
        let added: Vec<serde_json::Value> = self
            .specials
            .iter()
            .map(|(s, id)| serde_json::json!({"id": id, "content": s, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}))
            .collect();
        let pre = if self.pattern_src == GPT2_PATTERN {
            serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})
        } else {
            serde_json::json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": self.pattern_src}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]})
        };
        serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
            "normalizer": if self.nfc { serde_json::json!({"type": "NFC"}) } else { serde_json::Value::Null },
            "pre_tokenizer": pre, "post_processor": self.template_json(),
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null, "end_of_word_suffix": null,
                      "fuse_unk": false, "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": merges},
        })
    }

    /// The post-processor that adds `prefix_ids` and `suffix_ids`, or null.
    fn template_json(&self) -> serde_json::Value {
        if self.prefix_ids.is_empty() && self.suffix_ids.is_empty() {
            return serde_json::Value::Null;
        }
        let name = |id: &u32| String::from_utf8_lossy(&self.tokens[*id as usize]).into_owned();
        let special = |id: &u32| serde_json::json!({"SpecialToken": {"id": name(id), "type_id": 0}});
        let single: Vec<serde_json::Value> = self
            .prefix_ids
            .iter()
            .map(special)
            .chain(std::iter::once(serde_json::json!({"Sequence": {"id": "A", "type_id": 0}})))
            .chain(self.suffix_ids.iter().map(special))
            .collect();
        let tokens: serde_json::Map<String, serde_json::Value> = self
            .prefix_ids
            .iter()
            .chain(&self.suffix_ids)
            .map(|id| (name(id), serde_json::json!({"id": name(id), "ids": [id], "tokens": [name(id)]})))
            .collect();
        serde_json::json!({"type": "TemplateProcessing", "single": single, "pair": single, "special_tokens": tokens})
    }

    /// The bytes of `ids`. Lossless: any byte string encodes and decodes back.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for &id in ids {
            let t = self.tokens.get(id as usize).ok_or(TokenizerError::IdOutOfRange { id, vocab: self.tokens.len() })?;
            out.extend_from_slice(t);
        }
        Ok(out)
    }

    /// Token bytes of one id (for display).
    pub fn token_bytes(&self, id: u32) -> Option<&[u8]> {
        self.tokens.get(id as usize).map(|t| t.as_slice())
    }

    /// Encodes arbitrary bytes: valid UTF-8 runs go through the pattern, and
    /// every other byte is its own single-byte token (byte fallback).
    pub fn encode_bytes(&self, bytes: &[u8]) -> Vec<u32> {
        let mut out = Vec::new();
        for chunk in bytes.utf8_chunks() {
            self.encode_ordinary_into(chunk.valid(), &mut out);
            for &b in chunk.invalid() {
                out.push(self.ranks[&vec![b]]);
            }
        }
        out
    }
}

fn relabel(e: TokenizerError, path: &Path) -> TokenizerError {
    match e {
        TokenizerError::Format { msg, .. } => TokenizerError::Format { path: path.into(), msg },
        other => other,
    }
}

impl crate::Tokenizer for BytePairEncoder {
    /// Special tokens in the text become their ids, and the post-processor's
    /// tokens are added, as HF tokenizers' `encode` does.
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let body = self.encode_plain(text)?;
        Ok([self.prefix_ids.as_slice(), &body, &self.suffix_ids].concat())
    }

    fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        if self.nfc {
            use unicode_normalization::UnicodeNormalization;
            BytePairEncoder::encode(self, &text.nfc().collect::<String>(), &AllowedSpecial::All)
        } else {
            BytePairEncoder::encode(self, text, &AllowedSpecial::All)
        }
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.decode_bytes(ids)?).into_owned())
    }

    fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        BytePairEncoder::decode_bytes(self, ids)
    }

    fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string(&self.to_hf_json()).expect("serializes");
        crate::write_atomic(path, &text)
    }
}
