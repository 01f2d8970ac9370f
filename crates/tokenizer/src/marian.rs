//! The tokenizer of a Marian folder as the Hub has them (Helsinki-NLP
//! opus-mt): `source.spm` and `target.spm` SentencePiece models cut text into
//! pieces, `vocab.json` maps pieces to the model's ids (and
//! `target_vocab.json` the target's, with `separate_vocabs`), as
//! transformers' `MarianTokenizer` does:
//!
//! - `</s>`, `<unk>` and `<pad>` written in the text are cut out first and
//!   kept as themselves; a leading language code (`>>es<<`) is one token;
//! - every other piece is looked up in the vocabulary, `<unk>` where it is
//!   missing; `</s>` ends every encoding;
//! - decoding maps ids back to pieces and joins them with the source model
//!   (the target model with separate vocabularies), special tokens written
//!   as they are followed by a space.

use std::path::Path;

use std::collections::HashMap;

use crate::sentencepiece::SentencePiece;
use crate::{Result, Tokenizer, TokenizerError};

/// A Marian folder's tokenizer: SentencePiece models for the source
/// (`source.spm`) and the target (`target.spm`), ids from `vocab.json`.
pub struct MarianTokenizer {
    source: SentencePiece,
    target: SentencePiece,
    vocab: HashMap<String, u32>,
    /// With `separate_vocabs`: the target side's vocabulary.
    target_vocab: Option<HashMap<String, u32>>,
    /// Id -> piece of the vocabulary decoding reads (the target's when
    /// separate); a map, as nothing stops a file from using sparse ids.
    tokens: HashMap<u32, String>,
    eos: u32,
    unk: u32,
    specials: Vec<(String, u32)>,
}

/// Whether `dir` holds a Marian SentencePiece tokenizer.
pub fn is_marian_dir(dir: &Path) -> bool {
    dir.join("source.spm").exists() && dir.join("vocab.json").exists()
}

impl MarianTokenizer {
    /// Reads the folder's `source.spm`, `target.spm`, `vocab.json` (and
    /// `target_vocab.json`, `tokenizer_config.json` where present).
    pub fn load(dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: serde_json::Value = match std::fs::read_to_string(&cfg_path) {
            Ok(t) => serde_json::from_str(&t).map_err(|e| TokenizerError::Format { path: cfg_path.clone(), msg: format!("invalid JSON: {e}") })?,
            Err(_) => serde_json::Value::Null,
        };
        let name = |field: &str, default: &str| cfg[field].as_str().or_else(|| cfg[field]["content"].as_str()).unwrap_or(default).to_string();
        let (eos_tok, unk_tok, pad_tok) = (name("eos_token", "</s>"), name("unk_token", "<unk>"), name("pad_token", "<pad>"));
        let source = SentencePiece::load(&dir.join("source.spm"))?;
        let target_path = dir.join("target.spm");
        let target =
            if target_path.exists() { SentencePiece::load(&target_path)? } else { SentencePiece::from_bytes(source.raw().to_vec(), &dir.join("source.spm"))? };
        let vocab_path = dir.join("vocab.json");
        let vocab = crate::read_vocab_json(&vocab_path)?;
        let separate = cfg["separate_vocabs"].as_bool().unwrap_or(false);
        let target_vocab = if separate {
            let p = dir.join("target_vocab.json");
            if !p.exists() {
                return Err(TokenizerError::Format { path: cfg_path, msg: "separate_vocabs is true but the folder has no target_vocab.json".into() });
            }
            Some(crate::read_vocab_json(&p)?)
        } else {
            None
        };
        let id = |tok: &str| {
            vocab
                .get(tok)
                .copied()
                .ok_or_else(|| TokenizerError::Format { path: vocab_path.clone(), msg: format!("{tok:?} is not in the vocabulary; Marian needs it") })
        };
        let (eos, unk) = (id(&eos_tok)?, id(&unk_tok)?);
        let mut specials = vec![(eos_tok.clone(), eos), (unk_tok.clone(), unk)];
        if let Ok(pad) = id(&pad_tok) {
            specials.push((pad_tok, pad));
        }
        let dec = target_vocab.as_ref().unwrap_or(&vocab);
        let tokens = dec.iter().map(|(piece, &i)| (i, piece.clone())).collect();
        Ok(MarianTokenizer { source, target, vocab, target_vocab, tokens, eos, unk, specials })
    }

    fn encode_with(&self, text: &str, spm: &SentencePiece, vocab: &HashMap<String, u32>) -> Vec<u32> {
        let mut ids = Vec::new();
        crate::split_specials(
            text,
            &self.specials,
            &mut ids,
            |ids, seg| {
                let mut seg = seg;
                if let Some(end) = seg.strip_prefix(">>").and(seg.find("<<")) {
                    ids.push(vocab.get(&seg[..end + 2]).copied().unwrap_or(self.unk));
                    seg = &seg[end + 2..];
                }
                ids.extend(spm.encode_pieces(seg).into_iter().map(|(p, _)| vocab.get(&p).copied().unwrap_or(self.unk)));
            },
            |ids, id| ids.push(id),
        );
        ids.push(self.eos);
        ids
    }

    /// `decode`, leaving out `</s>`, `<unk>` and `<pad>`
    /// (transformers' `skip_special_tokens=True`).
    pub fn decode_skipping_specials(&self, ids: &[u32]) -> Result<String> {
        self.decode_impl(ids, true)
    }

    fn decode_impl(&self, ids: &[u32], skip: bool) -> Result<String> {
        let spm = if self.target_vocab.is_some() { &self.target } else { &self.source };
        let (mut out, mut run): (String, Vec<String>) = (String::new(), Vec::new());
        for &id in ids {
            let piece = match self.tokens.get(&id) {
                Some(p) => p.clone(),
                _ => spm.piece(id).map(str::to_string).ok_or(TokenizerError::IdOutOfRange { id, vocab: self.tokens.len() })?,
            };
            if self.specials.iter().any(|(s, _)| *s == piece) {
                if !skip {
                    out.push_str(&spm.decode_pieces(&run));
                    out.push_str(&piece);
                    out.push(' ');
                    run.clear();
                }
            } else {
                run.push(piece);
            }
        }
        out.push_str(&spm.decode_pieces(&run));
        Ok(out.replace('\u{2581}', " ").trim().to_string())
    }
}

impl Tokenizer for MarianTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.encode_with(text, &self.source, &self.vocab))
    }

    fn encode_target(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.encode_with(text, &self.target, self.target_vocab.as_ref().unwrap_or(&self.vocab)))
    }

    /// Without the `</s>` MarianTokenizer appends (its `add_special_tokens=False`).
    fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode(text)?;
        ids.pop();
        Ok(ids)
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.decode_impl(ids, false)
    }

    fn vocab_size(&self) -> usize {
        self.vocab.len().max(self.target_vocab.as_ref().map_or(0, |v| v.len()))
    }

    /// Writes the folder's own files next to `path` (source.spm, target.spm,
    /// vocab.json and, with separate vocabularies, target_vocab.json): a
    /// SentencePiece unigram model has no tokenizer.json form attn writes.
    fn save(&self, path: &Path) -> Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        let write = |name: &str, bytes: &[u8]| crate::write_atomic(&dir.join(name), bytes);
        write("source.spm", self.source.raw())?;
        write("target.spm", self.target.raw())?;
        let json = |v: &HashMap<String, u32>| {
            let mut pairs: Vec<(&String, &u32)> = v.iter().collect();
            pairs.sort_by_key(|&(_, &i)| i);
            let map: serde_json::Map<String, serde_json::Value> = pairs.into_iter().map(|(k, &i)| (k.clone(), i.into())).collect();
            serde_json::to_string_pretty(&map).expect("serializes")
        };
        write("vocab.json", json(&self.vocab).as_bytes())?;
        if let Some(t) = &self.target_vocab {
            write("target_vocab.json", json(t).as_bytes())?;
        }
        Ok(())
    }
}
