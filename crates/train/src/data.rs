//! Token shards on disk and seeded batch sampling.
//!
//! A shard is a 40-byte header (`ATTNTOK2`, id width in bytes, token count,
//! vocabulary size, tokenizer fingerprint) followed by little-endian u16 ids
//! (vocab <= 65536) or u32 ids. Shards are memory-mapped, so a corpus larger
//! than RAM trains without loading it. The fingerprint lets `attn eval` and
//! `--resume` refuse a shard another tokenizer made. Shards of the first
//! format (`ATTNTOK1`, 24 bytes, no vocabulary or fingerprint) still open.

use std::fs;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Result, TrainError};

const MAGIC_V1: &[u8; 8] = b"ATTNTOK1";
const MAGIC: &[u8; 8] = b"ATTNTOK2";
const HEADER_V1: usize = 24;
const HEADER: usize = 40;

/// FNV-1a over a byte stream, the fingerprint's hash: stable across
/// versions and platforms, which `std`'s hasher does not promise.
fn fnv1a(h: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(h, |h, &b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3))
}

/// A fingerprint of what a tokenizer's ids mean: every id's bytes, in order.
/// Two tokenizers agree on it only if they decode every id alike.
pub fn tokenizer_fingerprint(tok: &dyn attn_tokenizer::Tokenizer) -> u64 {
    let mut h = 0xCBF2_9CE4_8422_2325;
    for id in 0..tok.vocab_size() as u32 {
        let bytes = tok.decode_bytes(&[id]).unwrap_or_default();
        h = fnv1a(h, &(bytes.len() as u32).to_le_bytes());
        h = fnv1a(h, &bytes);
    }
    h
}

/// A fingerprint of a corpus: its files' bytes in order.
pub fn corpus_fingerprint(paths: &[PathBuf]) -> Result<u64> {
    let mut h = 0xCBF2_9CE4_8422_2325;
    for p in paths {
        let bytes = fs::read(p).map_err(TrainError::io(p))?;
        h = fnv1a(h, &(bytes.len() as u64).to_le_bytes());
        h = fnv1a(h, &bytes);
    }
    Ok(h)
}

/// Writes `tokens` as a shard, atomically, stamped with the vocabulary size
/// and fingerprint of the tokenizer that made them.
pub fn write_shard(path: &Path, tokens: &[u32], vocab_size: usize, fingerprint: u64) -> Result<()> {
    let width: u32 = if vocab_size <= 1 << 16 { 2 } else { 4 };
    let mut bytes = Vec::with_capacity(HEADER + tokens.len() * width as usize);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&width.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    bytes.extend_from_slice(&(tokens.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&(vocab_size as u64).to_le_bytes());
    bytes.extend_from_slice(&fingerprint.to_le_bytes());
    for &t in tokens {
        if width == 2 {
            bytes.extend_from_slice(&(t as u16).to_le_bytes());
        } else {
            bytes.extend_from_slice(&t.to_le_bytes());
        }
    }
    attn_model::checkpoint::write_atomic(path, &bytes).map_err(TrainError::io(path))
}

/// A memory-mapped token shard.
pub struct TokenShard {
    /// The file, for error messages.
    pub path: PathBuf,
    mmap: Mmap,
    header: usize,
    width: usize,
    len: usize,
    /// The vocabulary size and tokenizer fingerprint it was made with (None
    /// for first-format shards).
    pub stamp: Option<(usize, u64)>,
}

impl TokenShard {
    /// Maps `path` and checks its header.
    pub fn open(path: &Path) -> Result<Self> {
        let file = fs::File::open(path).map_err(TrainError::io(path))?;
        // Safety: the shard is only ever replaced by rename, never modified in place.
        let mmap = unsafe { Mmap::map(&file) }.map_err(TrainError::io(path))?;
        let bad = |msg: &str| {
            TrainError::Data(format!(
                "{}: {msg}; a run's shards are rebuilt by starting the run again from its text (attn train --data FILE --out NEW_DIR)",
                path.display()
            ))
        };
        let header = match mmap.get(..8) {
            Some(m) if m == MAGIC => HEADER,
            Some(m) if m == MAGIC_V1 => HEADER_V1,
            _ => return Err(bad("not a token shard (bad header)")),
        };
        if mmap.len() < header {
            return Err(bad("truncated (shorter than its header)"));
        }
        let u64_at = |o: usize| u64::from_le_bytes(mmap[o..o + 8].try_into().expect("8 bytes"));
        let width = u32::from_le_bytes(mmap[8..12].try_into().expect("4 bytes")) as usize;
        let len = u64_at(16);
        let expected = len.checked_mul(width as u64).and_then(|b| b.checked_add(header as u64));
        if !(width == 2 || width == 4) || expected != Some(mmap.len() as u64) {
            return Err(bad("truncated or corrupted (size does not match its header)"));
        }
        let stamp = (header == HEADER).then(|| (u64_at(24) as usize, u64_at(32)));
        Ok(TokenShard { path: path.to_path_buf(), mmap, header, width, len: len as usize, stamp })
    }

    /// Tokens in the shard.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no token.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Token `i`.
    pub fn get(&self, i: usize) -> u32 {
        let o = self.header + i * self.width;
        let b = &self.mmap[o..o + self.width];
        if self.width == 2 {
            u16::from_le_bytes([b[0], b[1]]) as u32
        } else {
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        }
    }

    /// Every token, as a vector.
    pub fn to_vec(&self) -> Vec<u32> {
        (0..self.len).map(|i| self.get(i)).collect()
    }

    /// True when `path` starts with the shard header (as opposed to text).
    pub fn is_shard(path: &Path) -> bool {
        let mut head = [0u8; 8];
        fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head)).is_ok() && (&head == MAGIC || &head == MAGIC_V1)
    }

    /// Refuses a shard that another tokenizer made. `what` names the model
    /// or run the tokenizer belongs to, for the message.
    pub fn check_tokenizer(&self, tok: &dyn attn_tokenizer::Tokenizer, what: &str) -> Result<()> {
        let Some((vocab, fp)) = self.stamp else { return Ok(()) };
        if vocab != tok.vocab_size() || fp != tokenizer_fingerprint(tok) {
            return Err(TrainError::Data(format!(
                "{} was tokenized with another tokenizer (vocabulary {vocab}) than {what} (vocabulary {}); its ids would mean other text. Pass the text file instead, or the shard of this run",
                self.path.display(),
                tok.vocab_size()
            )));
        }
        Ok(())
    }

    /// Copies tokens [start, start + out.len()) into `out`.
    pub fn read(&self, start: usize, out: &mut [u32]) {
        for (i, o) in out.iter_mut().enumerate() {
            *o = self.get(start + i);
        }
    }

    /// Fills one (B, T) batch of inputs and next-token targets from random
    /// windows. The RNG is keyed by (seed, stream), so batch k of a run is the
    /// same whether or not the run was interrupted before it.
    pub fn sample_batch(&self, x: &mut [u32], y: &mut [u32], b: usize, t: usize, seed: u64, stream: u64) {
        assert!(self.len > t, "shard shorter than one window (checked at startup)");
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        for r in 0..b {
            let start = rng.gen_range(0..self.len - t);
            self.read(start, &mut x[r * t..(r + 1) * t]);
            self.read(start + 1, &mut y[r * t..(r + 1) * t]);
        }
    }
}

/// Reads and concatenates text files, with errors that name the file.
pub fn read_corpus(files: &[PathBuf]) -> Result<String> {
    if files.is_empty() {
        return Err(TrainError::Data("no --data files given".into()));
    }
    let mut text = String::new();
    for f in files {
        let bytes = fs::read(f).map_err(TrainError::io(f))?;
        if bytes.is_empty() {
            return Err(TrainError::Data(format!("{}: the file is empty", f.display())));
        }
        let s = String::from_utf8(bytes).map_err(|e| TrainError::Data(format!("{}: not valid UTF-8 at byte {}", f.display(), e.utf8_error().valid_up_to())))?;
        text.push_str(&s);
    }
    Ok(text)
}

/// Splits tokens into (train, val): the last `val_fraction` of the corpus is
/// validation, so the two never share a window.
pub fn split(tokens: &[u32], val_fraction: f64) -> (&[u32], &[u32]) {
    let n_val = ((tokens.len() as f64) * val_fraction).round() as usize;
    tokens.split_at(tokens.len() - n_val.min(tokens.len()))
}
