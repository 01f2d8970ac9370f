//! SentencePiece-style BPE, the tokenizer of Llama 2, TinyLlama and Mistral,
//! as their Hugging Face `tokenizer.json` describes it:
//!
//! 1. added tokens written in the text (`<s>`) are cut out first;
//! 2. each remaining segment gets a "▁" in front and every space becomes "▁"
//!    (a `Prepend` + `Replace` normalizer, or a `Metaspace` pre-tokenizer,
//!    which also splits before each "▁");
//! 3. the characters are merged by the rank of each adjacent pair in
//!    `model.merges`, lowest first, leftmost first on ties; a character that
//!    is not in the vocabulary becomes its UTF-8 bytes as `<0xXX>` tokens
//!    (byte fallback), or `<unk>`;
//! 4. the post-processor adds `<s>` in front.
//!
//! Decoding turns "▁" back into spaces and `<0xXX>` tokens into bytes, and
//! drops the one space the normalizer put in front.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::Path;

use rustc_hash::FxHashMap;

use crate::{Result, TokenizerError};

const SPACE: char = '▁';

/// SentencePiece-style BPE from a `tokenizer.json` (Llama 1 and 2,
/// Mistral, TinyLlama): `▁` for spaces, merges of pieces, byte fallback.
pub struct SentencePieceBpe {
    tokens: Vec<String>,
    vocab: FxHashMap<String, u32>,
    /// (left id, right id) -> (rank, merged id)
    merges: FxHashMap<(u32, u32), (u32, u32)>,
    /// Id of `<0xXX>` for each byte, when byte fallback is on.
    byte_ids: Option<Vec<u32>>,
    /// Id -> the byte it stands for, for `<0xXX>` tokens.
    byte_of: FxHashMap<u32, u8>,
    unk: Option<u32>,
    specials: Vec<(String, u32)>,
    prefix_ids: Vec<u32>,
    suffix_ids: Vec<u32>,
    prepend: bool,
    /// Metaspace with split: BPE runs on each "▁"-started word separately.
    split: bool,
    /// The decoder strips one leading space.
    strip_one: bool,
    json: serde_json::Value,
}

/// Whether a `tokenizer.json` with a BPE model is SentencePiece-style
/// (rather than GPT-2's byte-level BPE).
pub fn is_sentencepiece(json: &serde_json::Value) -> bool {
    let text = json["normalizer"].to_string() + &json["pre_tokenizer"].to_string();
    json["model"]["byte_fallback"].as_bool() == Some(true) || text.contains('\u{2581}') || text.contains("Metaspace")
}

/// `[CLS] $A [SEP]`-style ids around a sequence, from a TemplateProcessing
/// post-processor (possibly inside a Sequence), or RoBERTa / BERT processing. `id_of` maps token text to id.
pub(crate) fn template_ids(post: &serde_json::Value, id_of: impl Fn(&str) -> Option<u32>, path: &Path) -> Result<(Vec<u32>, Vec<u32>)> {
    let bad = |msg: String| TokenizerError::Format { path: path.into(), msg };
    let template = match post["type"].as_str() {
        // BART / RoBERTa: <s> $A </s>, the ids given inline as [token, id].
        Some("RobertaProcessing") | Some("BertProcessing") => {
            let id = |f: &str| post[f][1].as_u64().map(|i| i as u32).ok_or_else(|| bad(format!("post_processor.{f} is not [token, id]")));
            return Ok((vec![id("cls")?], vec![id("sep")?]));
        }
        Some("TemplateProcessing") => post,
        Some("Sequence") => match post["processors"].as_array().and_then(|ps| ps.iter().find(|p| p["type"] == "TemplateProcessing")) {
            Some(t) => t,
            None => return Ok((Vec::new(), Vec::new())),
        },
        _ => return Ok((Vec::new(), Vec::new())),
    };
    let single = template["single"].as_array().ok_or_else(|| bad("post_processor.single is missing".into()))?;
    let (mut prefix, mut suffix, mut seen_seq) = (Vec::new(), Vec::new(), false);
    for piece in single {
        if let Some(tok) = piece["SpecialToken"]["id"].as_str() {
            let id = id_of(tok).ok_or_else(|| bad(format!("post_processor names {tok:?}, which is not in the vocabulary")))?;
            if seen_seq {
                suffix.push(id)
            } else {
                prefix.push(id)
            }
        } else if piece.get("Sequence").is_some() {
            seen_seq = true;
        }
    }
    Ok((prefix, suffix))
}

impl SentencePieceBpe {
    /// From a parsed `tokenizer.json`; `path` names it in errors.
    pub fn from_hf_json(json: &serde_json::Value, path: &Path) -> Result<Self> {
        let bad = |msg: String| TokenizerError::Format { path: path.into(), msg };
        let model = &json["model"];
        let vocab: FxHashMap<String, u32> =
            serde_json::from_value(model["vocab"].clone()).map_err(|e| bad(format!("model.vocab is not an object of token -> id: {e}")))?;
        let specials: Vec<(String, u32)> = json["added_tokens"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| Some((t["content"].as_str()?.to_string(), t["id"].as_u64()? as u32))).collect())
            .unwrap_or_default();
        let n = vocab.values().chain(specials.iter().map(|s| &s.1)).map(|&i| i as usize + 1).max().unwrap_or(0);
        let mut tokens = vec![String::new(); n];
        for (t, &i) in vocab.iter() {
            tokens[i as usize] = t.clone();
        }
        for (t, i) in &specials {
            tokens[*i as usize] = t.clone();
        }
        let mut merges = FxHashMap::default();
        for (rank, m) in model["merges"].as_array().ok_or_else(|| bad("model.merges is missing".into()))?.iter().enumerate() {
            let (a, b) = match m {
                serde_json::Value::String(s) => s.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())),
                serde_json::Value::Array(v) if v.len() == 2 => Some((v[0].as_str().unwrap_or("").to_string(), v[1].as_str().unwrap_or("").to_string())),
                _ => None,
            }
            .ok_or_else(|| bad(format!("model.merges[{rank}] is neither \"a b\" nor [\"a\", \"b\"]")))?;
            let id = |s: &str| vocab.get(s).copied().ok_or_else(|| bad(format!("model.merges[{rank}] uses {s:?}, which is not in model.vocab")));
            let merged = id(&format!("{a}{b}"))?;
            merges.entry((id(&a)?, id(&b)?)).or_insert((rank as u32, merged));
        }
        let byte_of: FxHashMap<u32, u8> = (0..=255u8).filter_map(|b| vocab.get(&format!("<0x{b:02X}>")).map(|&id| (id, b))).collect();
        let byte_ids = if model["byte_fallback"].as_bool() == Some(true) {
            let ids: Option<Vec<u32>> = (0..=255u8).map(|b| vocab.get(&format!("<0x{b:02X}>")).copied()).collect();
            Some(ids.ok_or_else(|| bad("model.byte_fallback is true but the vocabulary lacks some <0xXX> byte tokens".into()))?)
        } else {
            None
        };
        let unk = model["unk_token"].as_str().and_then(|u| vocab.get(u).copied());
        // Prepend + Replace normalizers (Llama 2's current files), or a
        // Metaspace pre-tokenizer (older files and Mistral's).
        let norm = json["normalizer"].to_string();
        let pre = &json["pre_tokenizer"];
        let metaspace = [pre.clone()].into_iter().chain(pre["pretokenizers"].as_array().cloned().unwrap_or_default()).find(|p| p["type"] == "Metaspace");
        let (prepend, split) = match &metaspace {
            Some(m) => {
                (m["prepend_scheme"].as_str().map_or(m["add_prefix_space"].as_bool().unwrap_or(true), |s| s != "never"), m["split"].as_bool().unwrap_or(true))
            }
            None => (norm.contains("Prepend"), false),
        };
        let strip_one = json["decoder"].to_string().contains("\"Strip\"") || metaspace.is_some();
        let id_of = |s: &str| vocab.get(s).copied().or_else(|| specials.iter().find(|(t, _)| t == s).map(|(_, i)| *i));
        let (prefix_ids, suffix_ids) = template_ids(&json["post_processor"], id_of, path)?;
        Ok(SentencePieceBpe { tokens, vocab, merges, byte_ids, byte_of, unk, specials, prefix_ids, suffix_ids, prepend, split, strip_one, json: json.clone() })
    }

    /// Ids of `text` with the post-processor's `<s>`.
    pub fn encode_text(&self, text: &str) -> Vec<u32> {
        let mut out = self.prefix_ids.clone();
        out.extend(self.encode_body(text));
        out.extend_from_slice(&self.suffix_ids);
        out
    }

    /// Ids of `text` alone, without the post-processor's tokens.
    pub fn encode_body(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        crate::split_specials(text, &self.specials, &mut out, |out, seg| self.encode_segment(seg, out), |out, id| out.push(id));
        out
    }

    fn encode_segment(&self, seg: &str, out: &mut Vec<u32>) {
        if seg.is_empty() {
            return;
        }
        let mut s = String::with_capacity(seg.len() + 3);
        if self.prepend {
            s.push(SPACE);
        }
        s.extend(seg.chars().map(|c| if c == ' ' { SPACE } else { c }));
        if self.split {
            let mut start = 0;
            for (i, c) in s.char_indices() {
                if c == SPACE && i > start {
                    self.merge(&s[start..i], out);
                    start = i;
                }
            }
            self.merge(&s[start..], out);
        } else {
            self.merge(&s, out);
        }
    }

    /// BPE over the characters of `word`: a min-heap of (rank, position) over
    /// a linked list of symbols, so a long text costs O(n log n).
    fn merge(&self, word: &str, out: &mut Vec<u32>) {
        let mut ids: Vec<u32> = Vec::with_capacity(word.len());
        let mut buf = [0u8; 4];
        for c in word.chars() {
            match self.vocab.get(c.encode_utf8(&mut buf) as &str) {
                Some(&id) => ids.push(id),
                None => match (&self.byte_ids, self.unk) {
                    (Some(b), _) => ids.extend(c.encode_utf8(&mut buf).bytes().map(|x| b[x as usize])),
                    // fuse_unk: a run of unknown characters is one <unk>.
                    (None, Some(u)) if ids.last() != Some(&u) => ids.push(u),
                    _ => {}
                },
            }
        }
        let n = ids.len();
        let mut next: Vec<usize> = (1..=n).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut alive = vec![true; n];
        let mut heap = BinaryHeap::new();
        let push = |heap: &mut BinaryHeap<Reverse<(u32, usize, u32, u32)>>, ids: &[u32], i: usize, j: usize| {
            if let Some(&(rank, _)) = self.merges.get(&(ids[i], ids[j])) {
                heap.push(Reverse((rank, i, ids[i], ids[j])));
            }
        };
        for i in 0..n.saturating_sub(1) {
            push(&mut heap, &ids, i, i + 1);
        }
        while let Some(Reverse((_, i, a, b))) = heap.pop() {
            let j = next[i];
            // Stale: a side was merged away or changed since this was pushed.
            if !alive[i] || j >= n || ids[i] != a || ids[j] != b {
                continue;
            }
            ids[i] = self.merges[&(a, b)].1;
            alive[j] = false;
            next[i] = next[j];
            if next[i] < n {
                prev[next[i]] = i;
            }
            if prev[i] < n {
                push(&mut heap, &ids, prev[i], i);
            }
            if next[i] < n {
                push(&mut heap, &ids, i, next[i]);
            }
        }
        out.extend((0..n).filter(|&i| alive[i]).map(|i| ids[i]));
    }

    fn piece_bytes(&self, id: u32, out: &mut Vec<u8>) -> Result<()> {
        if let Some(&b) = self.byte_of.get(&id) {
            out.push(b);
            return Ok(());
        }
        let t = self.tokens.get(id as usize).ok_or(TokenizerError::IdOutOfRange { id, vocab: self.tokens.len() })?;
        for c in t.chars() {
            let mut buf = [0u8; 4];
            out.extend_from_slice(if c == SPACE { b" " } else { c.encode_utf8(&mut buf).as_bytes() });
        }
        Ok(())
    }
}

impl crate::Tokenizer for SentencePieceBpe {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.encode_text(text))
    }

    fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.encode_body(text))
    }

    /// The text, with `<s>` and the other added tokens left out (as HF's
    /// `decode` does by default) and the leading space the encoder added removed.
    fn decode(&self, ids: &[u32]) -> Result<String> {
        let mut bytes = Vec::new();
        for &id in ids.iter().filter(|id| !self.specials.iter().any(|s| s.1 == **id)) {
            self.piece_bytes(id, &mut bytes)?;
        }
        let s = String::from_utf8_lossy(&bytes).into_owned();
        Ok(if self.strip_one { s.strip_prefix(' ').map(str::to_string).unwrap_or(s) } else { s })
    }

    /// Raw bytes of each piece, spaces kept, for streaming output.
    fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for &id in ids {
            self.piece_bytes(id, &mut out)?;
        }
        Ok(out)
    }

    fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    fn save(&self, path: &Path) -> Result<()> {
        crate::write_atomic(path, serde_json::to_string(&self.json).expect("serializes"))
    }
}
