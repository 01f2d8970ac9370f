//! SentencePiece model files (`.model`, Marian's `source.spm` /
//! `target.spm`): unigram models, as the `sentencepiece` library encodes and
//! decodes with them.
//!
//! A file is a protocol buffer (`ModelProto`): the pieces with their scores
//! and types, the trainer's settings (model type, byte fallback) and the
//! normalizer's (its rules compiled into a character map, whether to add a
//! "▁" in front, whether to drop extra spaces). Encoding:
//!
//! 1. normalize: the longest prefix found in the character map is replaced
//!    by its normal form (NFKC plus the "nmt" rules: newlines and tabs become
//!    spaces, control characters go), one character passes through where
//!    none matches; leading, trailing and repeated spaces are dropped, a "▁"
//!    is put in front and every space becomes "▁";
//! 2. cut the normalized text into the pieces whose scores (log
//!    probabilities) sum highest (Viterbi over every piece that matches at
//!    every character), a character no piece covers becoming `<unk>` at a
//!    penalty of 10 below the lowest score, consecutive unknowns merged into
//!    one (or split into `<0xXX>` byte pieces with byte fallback).

use std::path::Path;

use prost::Message;
use rustc_hash::FxHashMap;

use crate::{Result, Tokenizer, TokenizerError};

const SPACE: &str = "\u{2581}";
/// How far below the lowest piece score an unknown character scores.
const UNK_PENALTY: f32 = 10.0;

#[derive(Clone, PartialEq, prost::Message)]
struct ModelProto {
    #[prost(message, repeated, tag = "1")]
    pieces: Vec<PieceProto>,
    #[prost(message, optional, tag = "2")]
    trainer_spec: Option<TrainerSpec>,
    #[prost(message, optional, tag = "3")]
    normalizer_spec: Option<NormalizerSpec>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PieceProto {
    #[prost(string, optional, tag = "1")]
    piece: Option<String>,
    #[prost(float, optional, tag = "2")]
    score: Option<f32>,
    #[prost(int32, optional, tag = "3")]
    kind: Option<i32>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TrainerSpec {
    #[prost(int32, optional, tag = "3")]
    model_type: Option<i32>,
    #[prost(bool, optional, tag = "24")]
    treat_whitespace_as_suffix: Option<bool>,
    #[prost(bool, optional, tag = "35")]
    byte_fallback: Option<bool>,
    #[prost(string, optional, tag = "44")]
    unk_surface: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct NormalizerSpec {
    #[prost(string, optional, tag = "1")]
    name: Option<String>,
    #[prost(bytes = "vec", optional, tag = "2")]
    precompiled_charsmap: Option<Vec<u8>>,
    #[prost(bool, optional, tag = "3")]
    add_dummy_prefix: Option<bool>,
    #[prost(bool, optional, tag = "4")]
    remove_extra_whitespaces: Option<bool>,
    #[prost(bool, optional, tag = "5")]
    escape_whitespaces: Option<bool>,
}

/// Piece types, as `ModelProto.SentencePiece.Type` numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)] // SentencePiece's own names
pub enum PieceKind {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

/// A unigram SentencePiece model.
pub struct SentencePiece {
    pieces: Vec<String>,
    scores: Vec<f32>,
    kinds: Vec<PieceKind>,
    /// Normal, user-defined and unused pieces by text (what text can match).
    lookup: FxHashMap<String, u32>,
    /// Every piece by text (the first id of a repeated one), for decoding.
    ids: FxHashMap<String, u32>,
    /// The longest matchable piece, in bytes.
    max_len: usize,
    user_defined: Vec<String>,
    unk: u32,
    unk_surface: String,
    min_score: f32,
    max_score: f32,
    byte_ids: Option<Vec<u32>>,
    normalizer: Normalizer,
    /// The file's bytes, written back unchanged by `save`.
    raw: Vec<u8>,
}

struct Normalizer {
    /// The double-array trie of the character map (darts-clone units) and
    /// the normalized strings its values point into; empty: identity.
    trie: Vec<u32>,
    normalized: Vec<u8>,
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    escape_whitespaces: bool,
}

impl SentencePiece {
    /// Reads a `.model` / `.spm` file (a serialized `ModelProto`).
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|err| TokenizerError::Io { path: path.into(), err })?;
        Self::from_bytes(bytes, path)
    }

    /// Parses a `ModelProto`; `path` names it in errors.
    pub fn from_bytes(raw: Vec<u8>, path: &Path) -> Result<Self> {
        let bad = |msg: String| TokenizerError::Format { path: path.into(), msg };
        let proto = ModelProto::decode(raw.as_slice()).map_err(|e| bad(format!("not a SentencePiece model file (ModelProto): {e}")))?;
        let trainer = proto.trainer_spec.clone().unwrap_or_default();
        match trainer.model_type.unwrap_or(1) {
            1 => {}
            t => {
                let name = match t {
                    2 => "BPE",
                    3 => "WORD",
                    4 => "CHAR",
                    _ => "unknown",
                };
                return Err(bad(format!(
                    "trainer_spec.model_type is {name} ({t}); attn reads unigram SentencePiece models (Marian's); for a BPE model use its tokenizer.json"
                )));
            }
        }
        if trainer.treat_whitespace_as_suffix == Some(true) {
            return Err(bad("trainer_spec.treat_whitespace_as_suffix is set; attn supports the default (\"▁\" in front of words)".into()));
        }
        if proto.pieces.is_empty() {
            return Err(bad("the model has no pieces".into()));
        }
        let (mut pieces, mut scores, mut kinds) = (Vec::new(), Vec::new(), Vec::new());
        let (mut lookup, mut ids, mut user_defined, mut unk) = (FxHashMap::default(), FxHashMap::default(), Vec::new(), None);
        let (mut min_score, mut max_score, mut max_len) = (f32::INFINITY, f32::NEG_INFINITY, 0);
        let mut byte_ids = vec![u32::MAX; 256];
        for (i, p) in proto.pieces.iter().enumerate() {
            let text = p.piece.clone().unwrap_or_default();
            let kind = match p.kind.unwrap_or(1) {
                1 => PieceKind::Normal,
                2 => PieceKind::Unknown,
                3 => PieceKind::Control,
                4 => PieceKind::UserDefined,
                5 => PieceKind::Unused,
                6 => PieceKind::Byte,
                k => return Err(bad(format!("pieces[{i}] ({text:?}) has type {k}, which SentencePiece does not define"))),
            };
            let score = p.score.unwrap_or(0.0);
            match kind {
                PieceKind::Normal | PieceKind::UserDefined | PieceKind::Unused if !text.is_empty() => {
                    if kind == PieceKind::Normal {
                        min_score = min_score.min(score);
                        max_score = max_score.max(score);
                    }
                    if kind == PieceKind::UserDefined {
                        user_defined.push(text.clone());
                    }
                    max_len = max_len.max(text.len());
                    lookup.entry(text.clone()).or_insert(i as u32);
                }
                PieceKind::Unknown => unk = unk.or(Some(i as u32)),
                PieceKind::Byte => {
                    if let Some(b) = text.strip_prefix("<0x").and_then(|h| h.strip_suffix('>')).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        byte_ids[b as usize] = i as u32;
                    }
                }
                _ => {}
            }
            ids.entry(text.clone()).or_insert(i as u32);
            pieces.push(text);
            scores.push(score);
            kinds.push(kind);
        }
        let unk = unk.ok_or_else(|| bad("no piece has type UNKNOWN (<unk>)".into()))?;
        let byte_ids = if trainer.byte_fallback == Some(true) {
            if byte_ids.contains(&u32::MAX) {
                return Err(bad("trainer_spec.byte_fallback is set but not all 256 <0xXX> byte pieces are present".into()));
            }
            Some(byte_ids)
        } else {
            None
        };
        if min_score > max_score {
            (min_score, max_score) = (0.0, 0.0);
        }
        let ns = proto.normalizer_spec.unwrap_or_default();
        let (trie, normalized) =
            decode_charsmap(ns.precompiled_charsmap.as_deref().unwrap_or(&[])).map_err(|m| bad(format!("normalizer_spec.precompiled_charsmap: {m}")))?;
        let normalizer = Normalizer {
            trie,
            normalized,
            add_dummy_prefix: ns.add_dummy_prefix.unwrap_or(true),
            remove_extra_whitespaces: ns.remove_extra_whitespaces.unwrap_or(true),
            escape_whitespaces: ns.escape_whitespaces.unwrap_or(true),
        };
        user_defined.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let unk_surface = trainer.unk_surface.unwrap_or_else(|| " \u{2047} ".into());
        Ok(SentencePiece { pieces, scores, kinds, lookup, ids, max_len, user_defined, unk, unk_surface, min_score, max_score, byte_ids, normalizer, raw })
    }

    /// Pieces in the model.
    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    /// Whether the model has no piece.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// The piece of model id `id`.
    pub fn piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(String::as_str)
    }

    /// The file as it was read.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// The text as the model sees it before cutting it into pieces.
    pub fn normalize(&self, text: &str) -> String {
        self.normalizer.normalize(text, &self.user_defined)
    }

    /// `text` as (piece text, id) pairs: `sentencepiece`'s
    /// `encode(text, out_type=str)` and its ids. An unknown run's text is the
    /// normalized characters it covers.
    pub fn encode_pieces(&self, text: &str) -> Vec<(String, u32)> {
        let norm = self.normalize(text);
        let s = norm.as_bytes();
        // best[e]: the highest score of a cut of s[..e] (the first found on
        // a tie), with the piece ending there and where it starts.
        #[derive(Clone, Copy)]
        struct Best {
            score: f32,
            start: usize,
            id: u32,
        }
        let mut best: Vec<Option<Best>> = vec![None; s.len() + 1];
        best[0] = Some(Best { score: 0.0, start: 0, id: u32::MAX });
        let unk_score = self.min_score - UNK_PENALTY;
        let offer = |best: &mut Vec<Option<Best>>, end: usize, b: Best| {
            if !best[end].is_some_and(|o| b.score <= o.score) {
                best[end] = Some(b);
            }
        };
        let mut start = 0;
        while start < s.len() {
            let here = best[start].map_or(0.0, |b| b.score);
            let ch = norm[start..].chars().next().map_or(1, char::len_utf8);
            let mut single = false;
            let ends = norm[start..].char_indices().skip(1).map(|(i, _)| start + i).chain(std::iter::once(s.len()));
            for end in ends {
                if end - start > self.max_len {
                    break;
                }
                if let Some(&id) = self.lookup.get(&norm[start..end]) {
                    let kind = self.kinds[id as usize];
                    if kind == PieceKind::Unused {
                        continue;
                    }
                    // User-defined pieces score so that they always win.
                    let score = if kind == PieceKind::UserDefined { (end - start) as f32 * self.max_score - 1e-7 } else { self.scores[id as usize] };
                    offer(&mut best, end, Best { score: here + score, start, id });
                    single |= end - start == ch;
                }
            }
            if !single {
                offer(&mut best, start + ch, Best { score: here + unk_score, start, id: self.unk });
            }
            start += ch;
        }
        // The best cut, back from the end; then consecutive unknowns merge.
        let mut cut: Vec<(usize, usize, u32)> = Vec::new();
        let mut end = s.len();
        while end > 0 {
            let b = best[end].expect("every character boundary is reached");
            cut.push((b.start, end, b.id));
            end = b.start;
        }
        cut.reverse();
        let mut out: Vec<(String, u32)> = Vec::with_capacity(cut.len());
        let mut i = 0;
        while i < cut.len() {
            let (from, mut to, id) = cut[i];
            i += 1;
            while id == self.unk && i < cut.len() && cut[i].2 == self.unk {
                to = cut[i].1;
                i += 1;
            }
            out.push((norm[from..to].to_string(), id));
        }
        match &self.byte_ids {
            Some(bytes) => out
                .into_iter()
                .flat_map(|(t, id)| {
                    if id == self.unk {
                        t.bytes().map(|b| (self.pieces[bytes[b as usize] as usize].clone(), bytes[b as usize])).collect()
                    } else {
                        vec![(t, id)]
                    }
                })
                .collect(),
            None => out,
        }
    }

    /// Pieces back to text, as `sentencepiece`'s `decode_pieces`: control
    /// pieces vanish, `<0xXX>` pieces become bytes, "▁" becomes a space, and
    /// the first piece loses the "▁" the normalizer put in front. A piece the
    /// model does not know is written as it is; `<unk>` itself as " ⁇ ".
    pub fn decode_pieces<S: AsRef<str>>(&self, pieces: &[S]) -> String {
        let mut bytes: Vec<u8> = Vec::new();
        let mut at_start = true;
        for p in pieces {
            let p = p.as_ref();
            let id = self.ids.get(p).copied();
            let kind = id.map(|i| self.kinds[i as usize]);
            let text: std::borrow::Cow<str> = match kind {
                Some(PieceKind::Control) => continue,
                Some(PieceKind::Byte) => {
                    let b = p.get(3..5).and_then(|h| u8::from_str_radix(h, 16).ok()).unwrap_or(b'?');
                    bytes.push(b);
                    at_start = false;
                    continue;
                }
                Some(PieceKind::Unknown) => self.unk_surface.as_str().into(),
                // Not a piece of this model: kept as written.
                None => p.into(),
                _ => {
                    let p = if at_start && self.normalizer.add_dummy_prefix { p.strip_prefix(SPACE).unwrap_or(p) } else { p };
                    p.replace(SPACE, " ").into()
                }
            };
            if !text.is_empty() {
                at_start = false;
            }
            bytes.extend_from_slice(text.as_bytes());
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// A lone SentencePiece model file as a tokenizer: the model's own piece
/// ids, no tokens added (T5-style folders add theirs in a template attn does
/// not read from .model files).
impl Tokenizer for SentencePiece {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.encode_pieces(text).into_iter().map(|(_, id)| id).collect())
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        let pieces = ids.iter().map(|&id| self.piece(id).ok_or(TokenizerError::IdOutOfRange { id, vocab: self.len() })).collect::<Result<Vec<&str>>>()?;
        Ok(self.decode_pieces(&pieces))
    }

    fn vocab_size(&self) -> usize {
        self.len()
    }

    fn save(&self, path: &Path) -> Result<()> {
        crate::write_atomic(path, self.raw())
    }
}

/// Splits a precompiled character map: a little-endian u32 giving the trie's
/// size in bytes, the trie's 32-bit units, then the NUL-terminated normal
/// forms the trie's values point into.
fn decode_charsmap(blob: &[u8]) -> std::result::Result<(Vec<u32>, Vec<u8>), String> {
    if blob.is_empty() {
        return Ok((Vec::new(), Vec::new()));
    }
    let size = blob.get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize).ok_or("shorter than its 4-byte header")?;
    if size % 4 != 0 || 4 + size > blob.len() || size == 0 {
        return Err(format!("the trie size {size} does not fit the {} bytes", blob.len()));
    }
    let trie = blob[4..4 + size].chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    Ok((trie, blob[4 + size..].to_vec()))
}

impl Normalizer {
    /// The longest prefix of `input` the character map knows, as (normal
    /// form, bytes consumed); one character unchanged where it knows none.
    fn prefix<'a>(&'a self, input: &'a str, user_defined: &[String]) -> (&'a str, usize) {
        // User-defined pieces are never normalized.
        if let Some(u) = user_defined.iter().find(|u| input.starts_with(u.as_str())) {
            return (&input[..u.len()], u.len());
        }
        let one = input.chars().next().map_or(0, char::len_utf8);
        let Some((len, value)) = self.longest_match(input.as_bytes()) else {
            return (&input[..one], one);
        };
        let tail = self.normalized.get(value as usize..).unwrap_or(&[]);
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        match std::str::from_utf8(&tail[..end]) {
            // A match inside a character would split it: take the character.
            Ok(s) if input.is_char_boundary(len) => (s, len),
            _ => (&input[..one], one),
        }
    }

    /// darts-clone's common-prefix search, keeping the longest hit.
    fn longest_match(&self, key: &[u8]) -> Option<(usize, u32)> {
        let t = &self.trie;
        let has_leaf = |u: u32| (u >> 8) & 1 == 1;
        let value = |u: u32| u & ((1 << 31) - 1);
        let label = |u: u32| u & ((1 << 31) | 0xFF);
        let offset = |u: u32| ((u >> 10) << ((u & (1 << 9)) >> 6)) as usize;
        let mut pos = offset(*t.first()?);
        let mut found = None;
        for (i, &c) in key.iter().enumerate() {
            pos ^= c as usize;
            let unit = *t.get(pos)?;
            if label(unit) != c as u32 {
                break;
            }
            pos ^= offset(unit);
            if has_leaf(unit) {
                found = Some((i + 1, value(*t.get(pos)?)));
            }
        }
        found
    }

    fn normalize(&self, text: &str, user_defined: &[String]) -> String {
        let mut input = text;
        if self.remove_extra_whitespaces {
            while !input.is_empty() {
                let (s, n) = self.prefix(input, user_defined);
                if s != " " {
                    break;
                }
                input = &input[n..];
            }
        }
        let mut out = String::with_capacity(text.len() * 2);
        if input.is_empty() {
            return out;
        }
        let space = if self.escape_whitespaces { SPACE } else { " " };
        if self.add_dummy_prefix {
            out.push_str(space);
        }
        let mut prev_space = self.remove_extra_whitespaces;
        while !input.is_empty() {
            let (mut s, n) = self.prefix(input, user_defined);
            while prev_space && s.starts_with(' ') {
                s = &s[1..];
            }
            if !s.is_empty() {
                for ch in s.chars() {
                    if ch == ' ' {
                        out.push_str(space);
                    } else {
                        out.push(ch);
                    }
                }
                prev_space = s.ends_with(' ');
            }
            input = &input[n..];
            if !self.remove_extra_whitespaces {
                prev_space = false;
            }
        }
        if self.remove_extra_whitespaces {
            while out.ends_with(space) {
                out.truncate(out.len() - space.len());
            }
        }
        out
    }
}
