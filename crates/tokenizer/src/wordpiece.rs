//! WordPiece, BERT's tokenizer, as Hugging Face `tokenizers` runs it:
//!
//! 1. special tokens written in the text (`"[MASK]"`) are cut out first;
//! 2. BertNormalizer: drop control characters and turn whitespace into
//!    spaces; put spaces around CJK ideographs; strip accents (NFD, then drop
//!    non-spacing marks); lower-case;
//! 3. BertPreTokenizer: split on whitespace, and make every punctuation
//!    character a word of its own;
//! 4. WordPiece: each word becomes the longest vocabulary prefix, then the
//!    longest `##`-prefixed continuation, and so on; a word with no such
//!    split, or longer than 100 characters, is `[UNK]`;
//! 5. the post-processor wraps the ids in `[CLS] ... [SEP]`.
//!
//! ```text
//! "Héllo, unaffable!" -> [CLS] hello , una ##ffa ##ble ! [SEP]
//! ```

use std::path::Path;
use std::sync::OnceLock;

use rustc_hash::FxHashMap;
use unicode_normalization::UnicodeNormalization;

use crate::pretok::{class_ranges, in_ranges};
use crate::{Result, TokenizerError};

/// BERT's WordPiece: basic tokenization (lower-casing and accent stripping
/// where the file says), then greedy longest-match pieces with `##`.
pub struct WordPiece {
    vocab: FxHashMap<String, u32>,
    tokens: Vec<String>,
    unk: u32,
    /// Ids wrapped around every encoding: [CLS] before, [SEP] after.
    prefix_ids: Vec<u32>,
    suffix_ids: Vec<u32>,
    /// Tokens matched verbatim in the raw text before normalization.
    specials: Vec<(String, u32)>,
    continuing: String,
    max_chars: usize,
    lowercase: bool,
    strip_accents: bool,
    clean_text: bool,
    chinese_chars: bool,
    /// The file it was read from, written back as is by `save`.
    json: serde_json::Value,
}

struct Classes {
    other: Vec<(u32, u32)>,
    punct: Vec<(u32, u32)>,
    nonspacing: Vec<(u32, u32)>,
}

fn classes() -> &'static Classes {
    static C: OnceLock<Classes> = OnceLock::new();
    C.get_or_init(|| Classes { other: class_ranges(r"\p{C}"), punct: class_ranges(r"\p{P}"), nonspacing: class_ranges(r"\p{Mn}") })
}

fn is_bert_whitespace(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || c.is_whitespace()
}

fn is_bert_control(c: char) -> bool {
    !matches!(c, '\t' | '\n' | '\r') && in_ranges(&classes().other, c)
}

fn is_bert_punctuation(c: char) -> bool {
    c.is_ascii_punctuation() || in_ranges(&classes().punct, c)
}

/// The CJK Unified Ideographs blocks BERT isolates (not all of CJK: Hangul,
/// kana and the like are written with spaces or are handled as letters).
fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F | 0x2B740..=0x2B81F | 0x2B820..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

impl WordPiece {
    /// From a Hugging Face `tokenizer.json` with a WordPiece model.
    pub fn from_hf_json(json: &serde_json::Value, path: &Path) -> Result<Self> {
        let bad = |msg: String| TokenizerError::Format { path: path.into(), msg };
        let model = &json["model"];
        let vocab: FxHashMap<String, u32> =
            serde_json::from_value(model["vocab"].clone()).map_err(|e| bad(format!("model.vocab is not an object of token -> id: {e}")))?;
        let unk_token = model["unk_token"].as_str().unwrap_or("[UNK]");
        let norm = &json["normalizer"];
        let (mut lowercase, mut strip, mut clean, mut chinese) = (false, false, false, false);
        match norm["type"].as_str() {
            Some("BertNormalizer") => {
                lowercase = norm["lowercase"].as_bool().unwrap_or(true);
                // null means "follow lowercase", as in BERT's original code.
                strip = norm["strip_accents"].as_bool().unwrap_or(lowercase);
                clean = norm["clean_text"].as_bool().unwrap_or(true);
                chinese = norm["handle_chinese_chars"].as_bool().unwrap_or(true);
            }
            None => {}
            Some(other) => return Err(bad(format!("normalizer.type {other:?} is not supported with WordPiece; expected \"BertNormalizer\" or null"))),
        }
        match json["pre_tokenizer"]["type"].as_str() {
            Some("BertPreTokenizer") | None => {}
            Some(other) => return Err(bad(format!("pre_tokenizer.type {other:?} is not supported with WordPiece; expected \"BertPreTokenizer\""))),
        }
        let specials: Vec<(String, u32)> = json["added_tokens"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| Some((t["content"].as_str()?.to_string(), t["id"].as_u64()? as u32))).collect())
            .unwrap_or_default();
        // TemplateProcessing "single": [CLS] $A [SEP]; BertProcessing likewise.
        let id_of = |s: &str| vocab.get(s).copied().ok_or_else(|| bad(format!("post_processor names {s:?}, which is not in model.vocab")));
        let post = &json["post_processor"];
        let (mut prefix_ids, mut suffix_ids) = (Vec::new(), Vec::new());
        match post["type"].as_str() {
            Some("TemplateProcessing") => {
                let single = post["single"].as_array().ok_or_else(|| bad("post_processor.single is missing".into()))?;
                let mut seen_seq = false;
                for piece in single {
                    if let Some(tok) = piece["SpecialToken"]["id"].as_str() {
                        let id = id_of(tok)?;
                        if seen_seq {
                            suffix_ids.push(id)
                        } else {
                            prefix_ids.push(id)
                        }
                    } else if piece.get("Sequence").is_some() {
                        seen_seq = true;
                    }
                }
            }
            Some("BertProcessing") => {
                prefix_ids.push(post["cls"][1].as_u64().ok_or_else(|| bad("post_processor.cls is not [token, id]".into()))? as u32);
                suffix_ids.push(post["sep"][1].as_u64().ok_or_else(|| bad("post_processor.sep is not [token, id]".into()))? as u32);
            }
            None => {}
            Some(other) => return Err(bad(format!("post_processor.type {other:?} is not supported with WordPiece"))),
        }
        let n = vocab.values().map(|&i| i as usize + 1).max().unwrap_or(0);
        let mut tokens = vec![String::new(); n];
        for (t, &i) in &vocab {
            tokens[i as usize] = t.clone();
        }
        let unk = *vocab.get(unk_token).ok_or_else(|| bad(format!("model.unk_token {unk_token:?} is not in model.vocab")))?;
        Ok(WordPiece {
            unk,
            prefix_ids,
            suffix_ids,
            specials,
            continuing: model["continuing_subword_prefix"].as_str().unwrap_or("##").to_string(),
            max_chars: model["max_input_chars_per_word"].as_u64().unwrap_or(100) as usize,
            lowercase,
            strip_accents: strip,
            clean_text: clean,
            chinese_chars: chinese,
            vocab,
            tokens,
            json: json.clone(),
        })
    }

    /// From BERT's `vocab.txt` (one token per line; the id is the line
    /// number), with the usual uncased settings and `[CLS]`/`[SEP]` wrapping.
    pub fn from_vocab_txt(path: &Path, lowercase: bool) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|err| TokenizerError::Io { path: path.into(), err })?;
        let vocab: serde_json::Map<String, serde_json::Value> = text.lines().enumerate().map(|(i, t)| (t.to_string(), i.into())).collect();
        let specials: Vec<serde_json::Value> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
            .iter()
            .filter_map(|s| vocab.get(*s).map(|id| serde_json::json!({"id": id, "content": s, "special": true, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false})))
            .collect();
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": specials,
            "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": lowercase},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                         {"Sequence": {"id": "B", "type_id": 1}}, {"SpecialToken": {"id": "[SEP]", "type_id": 1}}],
                "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [vocab.get("[CLS]")], "tokens": ["[CLS]"]}, "[SEP]": {"id": "[SEP]", "ids": [vocab.get("[SEP]")], "tokens": ["[SEP]"]}}},
            "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": true},
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": vocab},
        });
        Self::from_hf_json(&json, path)
    }

    fn normalize(&self, text: &str) -> String {
        let mut s = String::with_capacity(text.len());
        for c in text.chars() {
            if self.clean_text {
                if c == '\0' || c == '\u{fffd}' || is_bert_control(c) {
                    continue;
                }
                if is_bert_whitespace(c) {
                    s.push(' ');
                    continue;
                }
            }
            if self.chinese_chars && is_cjk(c) {
                s.push(' ');
                s.push(c);
                s.push(' ');
            } else {
                s.push(c);
            }
        }
        if self.strip_accents {
            s = s.nfd().filter(|&c| !in_ranges(&classes().nonspacing, c)).collect();
        }
        if self.lowercase {
            s = s.chars().flat_map(char::to_lowercase).collect();
        }
        s
    }

    fn encode_words(&self, text: &str, out: &mut Vec<u32>) {
        let norm = self.normalize(text);
        let mut word = String::new();
        let flush = |word: &mut String, out: &mut Vec<u32>| {
            if !word.is_empty() {
                self.encode_word(word, out);
                word.clear();
            }
        };
        for c in norm.chars() {
            if is_bert_whitespace(c) {
                flush(&mut word, out);
            } else if is_bert_punctuation(c) {
                flush(&mut word, out);
                word.push(c);
                flush(&mut word, out);
            } else {
                word.push(c);
            }
        }
        flush(&mut word, out);
    }

    /// Greedy longest-match-first over one word.
    fn encode_word(&self, word: &str, out: &mut Vec<u32>) {
        if word.chars().count() > self.max_chars {
            out.push(self.unk);
            return;
        }
        let start_len = out.len();
        let mut start = 0;
        let mut piece = String::new();
        while start < word.len() {
            let mut end = word.len();
            let mut found = None;
            while end > start {
                piece.clear();
                if start > 0 {
                    piece.push_str(&self.continuing);
                }
                piece.push_str(&word[start..end]);
                if let Some(&id) = self.vocab.get(&piece) {
                    found = Some(id);
                    break;
                }
                end = word[..end].char_indices().next_back().map_or(start, |(i, _)| i);
            }
            match found {
                Some(id) => {
                    out.push(id);
                    start = end;
                }
                None => {
                    out.truncate(start_len);
                    out.push(self.unk);
                    return;
                }
            }
        }
    }

    /// The ids a model sees: `[CLS]`, the text's pieces, `[SEP]`.
    pub fn encode_text(&self, text: &str) -> Vec<u32> {
        let mut out = self.prefix_ids.clone();
        out.extend(self.encode_body(text));
        out.extend_from_slice(&self.suffix_ids);
        out
    }

    /// Ids of `text` alone, without the post-processor's tokens.
    pub fn encode_body(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        crate::split_specials(text, &self.specials, &mut out, |out, seg| self.encode_words(seg, out), |out, id| out.push(id));
        out
    }

    /// The token of `id`.
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }
}

impl crate::Tokenizer for WordPiece {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.encode_text(text))
    }

    fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.encode_body(text))
    }

    /// Pieces joined with spaces, `##` continuations glued on; special
    /// tokens are kept. (Normalization cannot be undone: the text comes back
    /// lower-cased and without accents.)
    fn decode(&self, ids: &[u32]) -> Result<String> {
        let mut s = String::new();
        for &id in ids {
            let t = self.token(id).ok_or(TokenizerError::IdOutOfRange { id, vocab: self.tokens.len() })?;
            match t.strip_prefix(self.continuing.as_str()) {
                Some(rest) if !s.is_empty() => s.push_str(rest),
                _ => {
                    if !s.is_empty() {
                        s.push(' ');
                    }
                    s.push_str(t);
                }
            }
        }
        Ok(s)
    }

    /// One token's text; a continuation keeps its `##` so that pieces read
    /// as pieces.
    fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        if let [id] = ids {
            return self.token(*id).map(|t| t.as_bytes().to_vec()).ok_or(TokenizerError::IdOutOfRange { id: *id, vocab: self.tokens.len() });
        }
        Ok(self.decode(ids)?.into_bytes())
    }

    fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    fn save(&self, path: &Path) -> Result<()> {
        crate::write_atomic(path, serde_json::to_string(&self.json).expect("serializes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tokenizer;

    fn tiny() -> WordPiece {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vocab.txt");
        let words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", ",", "!", "una", "##ffa", "##ble", "un", "the", "cafe", "日", "本"];
        std::fs::write(&path, words.join("\n")).unwrap();
        WordPiece::from_vocab_txt(&path, true).unwrap()
    }

    #[test]
    fn normalizes_splits_and_wraps() {
        let wp = tiny();
        let ids = wp.encode("Héllo, UNAFFABLE!").unwrap();
        let toks: Vec<&str> = ids.iter().map(|&i| wp.token(i).unwrap()).collect();
        assert_eq!(toks, ["[CLS]", "hello", ",", "una", "##ffa", "##ble", "!", "[SEP]"]);
        assert_eq!(wp.decode(&ids).unwrap(), "[CLS] hello , unaffable ! [SEP]");
    }

    #[test]
    fn unknown_words_cjk_controls_and_specials() {
        let wp = tiny();
        let toks = |s: &str| wp.encode(s).unwrap().iter().map(|&i| wp.token(i).unwrap().to_string()).collect::<Vec<_>>();
        // "unx" has a prefix "un" but no continuation: the whole word is [UNK].
        assert_eq!(toks("the unx café"), ["[CLS]", "the", "[UNK]", "cafe", "[SEP]"]);
        assert_eq!(toks("日本"), ["[CLS]", "日", "本", "[SEP]"]);
        assert_eq!(toks("the\u{0}\u{200b}\tthe"), ["[CLS]", "the", "the", "[SEP]"]);
        assert_eq!(toks("the [MASK] the"), ["[CLS]", "the", "[MASK]", "the", "[SEP]"]);
        assert_eq!(toks(&"a".repeat(101)), ["[CLS]", "[UNK]", "[SEP]"]);
    }
}
