//! Tokenizers: text to token ids and back.
//!
//! [`CharTokenizer`] maps each Unicode scalar of a corpus to one id, the
//! vocabulary being the sorted set of characters seen in training. It is saved
//! as a Hugging Face `tokenizer.json` (a WordLevel model over single characters
//! with a `Fuse` decoder), so the same file describes it to attn and to
//! `tokenizers`.
//!
//! ```
//! use attn_tokenizer::{CharTokenizer, Tokenizer};
//! let tok = CharTokenizer::train("hello world");
//! let ids = tok.encode("hold").unwrap();
//! assert_eq!(tok.decode(&ids).unwrap(), "hold");
//! assert_eq!(tok.vocab_size(), 8); // ' ', d, e, h, l, o, r, w
//! ```

#![warn(missing_docs)]

pub mod bpe;
mod byte_alphabet;
pub mod chat;
pub mod marian;
pub mod pretok;
pub mod sentencepiece;
pub mod spbpe;
pub mod train;
pub mod wordpiece;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// Why a tokenizer could not load, encode or decode.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // the fields are what the messages print
pub enum TokenizerError {
    /// A file could not be read or written.
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    /// A file's contents are not a tokenizer attn reads (the message says what).
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
    /// A character-level tokenizer met a character it was not trained on.
    #[error(
        "character {ch:?} (U+{code:04X}) is not in the tokenizer's vocabulary; a character-level tokenizer only knows the characters of its training text"
    )]
    UnknownChar { ch: char, code: u32 },
    /// Decoding an id the vocabulary does not have.
    #[error("token id {id} is out of range for a vocabulary of {vocab} tokens")]
    IdOutOfRange { id: u32, vocab: usize },
}

/// The tokenizers' result.
pub type Result<T> = std::result::Result<T, TokenizerError>;

/// What every tokenizer offers the training and generation paths.
pub trait Tokenizer: Send + Sync {
    /// The ids of `text`, with whatever the tokenizer's post-processor adds
    /// around it (BOS, CLS / SEP), as transformers' `encode` gives them.
    fn encode(&self, text: &str) -> Result<Vec<u32>>;
    /// `encode` without the tokens a post-processor adds around the text
    /// (BOS, CLS / SEP): transformers' `add_special_tokens=False`, which is
    /// how a rendered chat template (that writes its own BOS) is tokenized.
    fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        self.encode(text)
    }
    /// The target side of a translation pair: `encode` but for tokenizers
    /// with a separate target model (Marian's target.spm).
    fn encode_target(&self, text: &str) -> Result<Vec<u32>> {
        self.encode(text)
    }
    /// The text of `ids` (invalid UTF-8 from a byte-level vocabulary
    /// becomes U+FFFD).
    fn decode(&self, ids: &[u32]) -> Result<String>;
    /// The raw bytes of `ids`. Byte-level tokenizers can end a token in the
    /// middle of a UTF-8 character; streaming output goes through this and an
    /// incremental UTF-8 decoder so such characters are printed whole.
    fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        Ok(self.decode(ids)?.into_bytes())
    }
    /// One token's text for display (inspection tables, token lists): its
    /// bytes as UTF-8, invalid sequences as U+FFFD, or `<id N>` for an id
    /// this vocabulary does not have (a model's output can be wider than its
    /// tokenizer), so that no token shows as an empty string.
    fn piece(&self, id: u32) -> String {
        match self.decode_bytes(&[id]) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(_) => format!("<id {id}>"),
        }
    }
    /// Ids run from 0 to this, exclusive.
    fn vocab_size(&self) -> usize;
    /// Writes a Hugging Face `tokenizer.json`.
    fn save(&self, path: &Path) -> Result<()>;
}

/// Loads any tokenizer `--tokenizer` accepts:
/// - a `tokenizer.json` (character-level WordLevel, or byte-level BPE);
/// - a folder holding `tokenizer.json`, `source.spm` + `vocab.json` (Marian),
///   or `vocab.json` + `merges.txt`;
/// - a SentencePiece unigram model file (`.model`, `.spm`);
/// - a `.tiktoken` rank file, with `pattern` (default: GPT-2's for r50k/p50k/gpt2
///   file names, cl100k's otherwise) and, for the OpenAI encodings named in
///   the file name, their special tokens.
pub fn load_tokenizer(path: &Path, pattern: Option<&str>) -> Result<Box<dyn Tokenizer>> {
    use bpe::{BytePairEncoder, CL100K_PATTERN, GPT2_PATTERN};
    if path.is_dir() {
        if path.join("tokenizer.json").exists() {
            return load_tokenizer(&path.join("tokenizer.json"), pattern);
        }
        if marian::is_marian_dir(path) {
            return Ok(Box::new(marian::MarianTokenizer::load(path)?));
        }
        let (v, m) = (path.join("vocab.json"), path.join("merges.txt"));
        if v.exists() && m.exists() {
            return Ok(Box::new(BytePairEncoder::load_gpt2(&v, &m)?));
        }
        if path.join("vocab.txt").exists() {
            // BERT's vocab.txt; tokenizer_config.json says whether it is cased.
            let cfg: serde_json::Value =
                std::fs::read_to_string(path.join("tokenizer_config.json")).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
            let lower = cfg["do_lower_case"].as_bool().unwrap_or(true);
            return Ok(Box::new(wordpiece::WordPiece::from_vocab_txt(&path.join("vocab.txt"), lower)?));
        }
        return Err(TokenizerError::Format {
            path: path.into(),
            msg: "the folder has no tokenizer.json, source.spm + vocab.json (Marian), vocab.json + merges.txt (GPT-2) or vocab.txt (BERT)".into(),
        });
    }
    let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    if name.ends_with(".model") || name.ends_with(".spm") {
        return Ok(Box::new(sentencepiece::SentencePiece::load(path)?));
    }
    if name.ends_with(".tiktoken") {
        let default = if ["r50k", "p50k", "gpt2"].iter().any(|k| name.contains(k)) { GPT2_PATTERN } else { CL100K_PATTERN };
        // Special tokens are not in rank files; these are OpenAI's published ids.
        let specials: &[(&str, u32)] = if name.contains("cl100k") {
            &[("<|endoftext|>", 100257), ("<|fim_prefix|>", 100258), ("<|fim_middle|>", 100259), ("<|fim_suffix|>", 100260), ("<|endofprompt|>", 100276)]
        } else if name.contains("o200k") {
            &[("<|endoftext|>", 199999), ("<|endofprompt|>", 200018)]
        } else if ["r50k", "p50k", "gpt2"].iter().any(|k| name.contains(k)) {
            &[("<|endoftext|>", 50256)]
        } else {
            &[]
        };
        let specials = specials.iter().map(|(s, i)| (s.to_string(), *i)).collect();
        return Ok(Box::new(BytePairEncoder::load_tiktoken(path, specials, pattern.unwrap_or(default))?));
    }
    let text = std::fs::read_to_string(path).map_err(|err| TokenizerError::Io { path: path.into(), err })?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| TokenizerError::Format { path: path.into(), msg: format!("invalid JSON: {e}") })?;
    match json["model"]["type"].as_str() {
        Some("BPE") if spbpe::is_sentencepiece(&json) => Ok(Box::new(spbpe::SentencePieceBpe::from_hf_json(&json, path)?)),
        Some("BPE") => Ok(Box::new(BytePairEncoder::from_hf_json(&json, path)?)),
        Some("WordLevel") => Ok(Box::new(CharTokenizer::load(path)?)),
        Some("WordPiece") => Ok(Box::new(wordpiece::WordPiece::from_hf_json(&json, path)?)),
        other => Err(TokenizerError::Format {
            path: path.into(),
            msg: format!(
                "model.type {}: expected \"BPE\" (byte-level), \"WordPiece\" (BERT) or \"WordLevel\" (character-level)",
                other.map_or("missing".to_string(), |t| format!("{t:?}"))
            ),
        }),
    }
}

/// Walks `text`, cutting out the special tokens written in it: `segment` gets
/// the text between them (never empty), `special` each token's id, both with
/// `out` to write to. The earliest match wins, the longest on a tie.
pub(crate) fn split_specials<C>(
    text: &str,
    specials: &[(String, u32)],
    out: &mut C,
    mut segment: impl FnMut(&mut C, &str),
    mut special: impl FnMut(&mut C, u32),
) {
    let mut rest = text;
    while !rest.is_empty() {
        // An empty token would match everywhere and never advance.
        let next = specials
            .iter()
            .filter(|(s, _)| !s.is_empty())
            .filter_map(|(s, id)| rest.find(s.as_str()).map(|at| (at, s.len(), *id)))
            .min_by_key(|&(at, len, _)| (at, std::cmp::Reverse(len)));
        match next {
            Some((at, len, id)) => {
                if at > 0 {
                    segment(out, &rest[..at]);
                }
                special(out, id);
                rest = &rest[at + len..];
            }
            None => {
                segment(out, rest);
                break;
            }
        }
    }
}

/// Writes `data` to `path` through a temp file and a rename, so a reader never
/// sees half a tokenizer file.
pub(crate) fn write_atomic(path: &Path, data: impl AsRef<[u8]>) -> Result<()> {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    std::fs::write(&tmp, data).and_then(|_| std::fs::rename(&tmp, path)).map_err(|err| TokenizerError::Io { path: path.into(), err })
}

/// A `vocab.json`: a JSON object of token -> id (GPT-2's, Marian's).
pub(crate) fn read_vocab_json(path: &Path) -> Result<HashMap<String, u32>> {
    let text = std::fs::read_to_string(path).map_err(|err| TokenizerError::Io { path: path.into(), err })?;
    let bad = |msg: String| TokenizerError::Format { path: path.into(), msg };
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).map_err(|e| bad(format!("not a JSON object of token -> id: {e}")))?;
    map.into_iter()
        .map(|(k, v)| match v.as_u64().and_then(|i| u32::try_from(i).ok()) {
            Some(i) => Ok((k, i)),
            None => Err(bad(format!("the id of {k:?} is {v}, not a non-negative integer"))),
        })
        .collect()
}

/// One id per character.
#[derive(Clone, Debug, PartialEq)]
pub struct CharTokenizer {
    chars: Vec<char>,
    ids: HashMap<char, u32>,
}

impl CharTokenizer {
    /// The vocabulary is every distinct character of `text`, sorted by code point.
    pub fn train(text: &str) -> Self {
        let set: BTreeSet<char> = text.chars().collect();
        Self::from_chars(set.into_iter().collect())
    }

    fn from_chars(chars: Vec<char>) -> Self {
        let ids = chars.iter().enumerate().map(|(i, &c)| (c, i as u32)).collect();
        CharTokenizer { chars, ids }
    }

    /// Reads a character-level `tokenizer.json` that `save` wrote.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|err| TokenizerError::Io { path: path.into(), err })?;
        let fmt = |msg: String| TokenizerError::Format { path: path.into(), msg };
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| fmt(format!("invalid JSON: {e}")))?;
        let model = json.get("model").ok_or_else(|| fmt("no \"model\" field".into()))?;
        if model.get("type").and_then(|t| t.as_str()) != Some("WordLevel") {
            return Err(fmt("model.type is not \"WordLevel\"; only character-level tokenizer.json files are supported in this build".into()));
        }
        let vocab = model.get("vocab").and_then(|v| v.as_object()).ok_or_else(|| fmt("model.vocab is missing or not an object".into()))?;
        let mut by_id: BTreeMap<u64, char> = BTreeMap::new();
        for (tok, id) in vocab {
            let id = id.as_u64().ok_or_else(|| fmt(format!("model.vocab[{tok:?}] is not an integer id")))?;
            let mut it = tok.chars();
            let (Some(ch), None) = (it.next(), it.next()) else {
                return Err(fmt(format!("model.vocab entry {tok:?} is not a single character")));
            };
            if let Some(other) = by_id.insert(id, ch) {
                return Err(fmt(format!("model.vocab gives id {id} to both {other:?} and {ch:?}; every id must name one character")));
            }
        }
        // What attn writes for a character tokenizer; anything else would be
        // silently ignored here (a Metaspace pre-tokenizer, say, would drop spaces).
        for (field, allowed) in [("normalizer", &[][..]), ("post_processor", &[][..]), ("pre_tokenizer", &["Split"][..]), ("decoder", &["Fuse"][..])] {
            let v = &json[field];
            let kind = v["type"].as_str();
            if !v.is_null() && !kind.is_some_and(|k| allowed.contains(&k)) {
                return Err(fmt(format!(
                    "{field}.type {:?} is not supported with a character-level (WordLevel) tokenizer; expected {}",
                    kind.unwrap_or("?"),
                    if allowed.is_empty() { "null".to_string() } else { format!("{allowed:?} or null") }
                )));
            }
        }
        if json["pre_tokenizer"]["type"] == "Split" && json["pre_tokenizer"]["pattern"]["Regex"] != r"[\s\S]" {
            return Err(fmt(format!("pre_tokenizer.pattern {} is not the one-character split a character tokenizer uses", json["pre_tokenizer"]["pattern"])));
        }
        if by_id.keys().enumerate().any(|(i, &id)| i as u64 != id) {
            return Err(fmt("model.vocab ids must be 0..N with no gaps".into()));
        }
        Ok(Self::from_chars(by_id.into_values().collect()))
    }
}

impl Tokenizer for CharTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        text.chars().map(|ch| self.ids.get(&ch).copied().ok_or(TokenizerError::UnknownChar { ch, code: ch as u32 })).collect()
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        ids.iter().map(|&id| self.chars.get(id as usize).copied().ok_or(TokenizerError::IdOutOfRange { id, vocab: self.chars.len() })).collect()
    }

    fn vocab_size(&self) -> usize {
        self.chars.len()
    }

    fn save(&self, path: &Path) -> Result<()> {
        let vocab: serde_json::Map<String, serde_json::Value> = self.chars.iter().enumerate().map(|(i, c)| (c.to_string(), i.into())).collect();
        let json = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [],
            "normalizer": null,
            // Every character is its own piece. Not "(?s).": HF tokenizers'
            // Oniguruma rejects inline flags, and the file would not load.
            "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "[\\s\\S]"}, "behavior": "Isolated", "invert": false},
            "post_processor": null,
            // Join pieces with no separator.
            "decoder": {"type": "Fuse"},
            "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "\u{fffd}"},
        });
        let text = serde_json::to_string_pretty(&json).expect("serializes");
        write_atomic(path, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_file_with_multibyte_chars() {
        let text = "To be, or not to be: thät is the quéstion — 生きるべきか\n\t";
        let tok = CharTokenizer::train(text);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        tok.save(&path).unwrap();
        let loaded = CharTokenizer::load(&path).unwrap();
        assert_eq!(loaded, tok);
        let ids = loaded.encode(text).unwrap();
        assert_eq!(ids.len(), text.chars().count());
        assert_eq!(loaded.decode(&ids).unwrap(), text);
    }

    #[test]
    fn saved_pattern_has_no_inline_flags() {
        // Regression: "(?s)." made `tokenizers.Tokenizer.from_file` fail with
        // "data did not match any variant of untagged enum PyPreTokenizerTypeWrapper".
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        CharTokenizer::train("ab").save(&path).unwrap();
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(json["pre_tokenizer"]["pattern"]["Regex"], r"[\s\S]");
        assert_eq!(json["decoder"]["type"], "Fuse");
    }

    #[test]
    fn unknown_char_and_bad_id_are_errors() {
        let tok = CharTokenizer::train("abc");
        let err = tok.encode("abz").unwrap_err().to_string();
        assert!(err.contains("'z'"), "{err}");
        assert!(matches!(tok.decode(&[3]), Err(TokenizerError::IdOutOfRange { id: 3, vocab: 3 })));
        // For display, such an id is named rather than shown as nothing.
        assert_eq!((tok.piece(1), tok.piece(3)), ("b".to_string(), "<id 3>".to_string()));
    }

    #[test]
    fn malformed_file_names_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        std::fs::write(&path, r#"{"model": {"type": "WordLevel", "vocab": {"ab": 0}}}"#).unwrap();
        let err = CharTokenizer::load(&path).unwrap_err().to_string();
        assert!(err.contains("tokenizer.json") && err.contains("\"ab\""), "{err}");
    }
}
