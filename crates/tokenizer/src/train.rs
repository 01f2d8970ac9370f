//! Byte-level BPE training.
//!
//! 1. Special tokens are cut out of the text, and the rest is split into
//!    pieces by the pre-tokenizer; each distinct piece becomes a "word" with
//!    its count. Chunks of the text are counted on separate threads.
//! 2. Every word starts as its bytes (ids 0..=255), and the count of each
//!    adjacent pair is the sum over the words holding it, also threaded.
//! 3. Repeatedly, the most frequent pair is merged into a new token. Only the
//!    words that hold the pair are rewritten, and only their pairs' counts
//!    change, so a merge costs time in proportion to where the pair occurs,
//!    not to the corpus. A max-heap of (count, pair) gives the next pair;
//!    entries whose count went stale are re-pushed when they surface.
//!
//! Ties go to the pair with the smaller ids, so a corpus always gives the
//! same vocabulary. Ids: bytes 0..=255, merges in order, then special tokens.
//!
//! A merged pair whose bytes are already a token (the same string reached by
//! another split) reuses that token's id: encoding merges by the rank of the
//! concatenation, so it would merge this pair too.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rayon::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::bpe::BytePairEncoder;
use crate::pretok::Splitter;
use crate::{Result, TokenizerError};

/// What to train.
#[derive(Clone, Debug)]
pub struct BpeTrainer {
    /// Total vocabulary size: 256 bytes + merges + special tokens.
    pub vocab_size: usize,
    /// Pre-tokenizer regex (`GPT2_PATTERN`, `CL100K_PATTERN` or custom).
    pub pattern: String,
    /// Special tokens, given the ids after the merges.
    pub specials: Vec<String>,
}

/// What training did, for reports.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainStats {
    /// Distinct pieces the pre-tokenizer cut the text into.
    pub words: usize,
    /// Merges learned.
    pub merges: usize,
    /// Merges whose bytes were already a token (no new id).
    pub repeats: usize,
}

impl BpeTrainer {
    /// Learns merges from `text` until the vocabulary has `vocab_size` tokens
    /// (or no adjacent pair is left).
    pub fn train(&self, text: &str) -> Result<(BytePairEncoder, TrainStats)> {
        let min = 256 + self.specials.len();
        if self.vocab_size < min {
            return Err(TokenizerError::Format {
                path: "<vocab-size>".into(),
                msg: format!(
                    "a vocab size of {} is too small: byte-level BPE needs 256 byte tokens plus {} special tokens, at least {min}",
                    self.vocab_size,
                    self.specials.len()
                ),
            });
        }
        let splitter = Splitter::new(&self.pattern)?;
        let (mut words, counts) = count_words(text, &self.specials, &splitter);
        let mut state = PairState::new(&words, &counts);

        let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let mut ids: FxHashMap<Vec<u8>, u32> = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let target = self.vocab_size - self.specials.len();
        let mut stats = TrainStats { words: words.len(), merges: 0, repeats: 0 };
        let mut seen = vec![u32::MAX; words.len()];
        while tokens.len() < target {
            let Some((a, b)) = state.pop_best() else { break };
            let bytes = [tokens[a as usize].as_slice(), tokens[b as usize].as_slice()].concat();
            let id = match ids.get(&bytes) {
                Some(&id) => {
                    stats.repeats += 1;
                    id
                }
                None => {
                    let id = tokens.len() as u32;
                    ids.insert(bytes.clone(), id);
                    tokens.push(bytes);
                    id
                }
            };
            stats.merges += 1;
            state.merge(a, b, id, &mut words, &counts, &mut seen, stats.merges as u32);
        }

        let ranks: FxHashMap<Vec<u8>, u32> = ids;
        let specials = self.specials.iter().enumerate().map(|(i, s)| (s.clone(), (tokens.len() + i) as u32)).collect();
        Ok((BytePairEncoder::new(ranks, specials, &self.pattern)?, stats))
    }
}

/// Distinct pieces as byte-id sequences, with their counts, sorted by bytes
/// so the result does not depend on thread timing.
fn count_words(text: &str, specials: &[String], splitter: &Splitter) -> (Vec<Vec<u32>>, Vec<u64>) {
    let mut segments = vec![text];
    for s in specials.iter().filter(|s| !s.is_empty()) {
        segments = segments.iter().flat_map(|seg| seg.split(s.as_str())).collect();
    }
    let chunks: Vec<&str> = segments.iter().flat_map(|seg| splitter.chunks(seg, (seg.len() >> 18).max(1))).collect();
    let merged = chunks
        .par_iter()
        .fold(FxHashMap::default, |mut m: FxHashMap<&str, u64>, c| {
            splitter.for_each_piece(c, |p| *m.entry(p).or_default() += 1);
            m
        })
        .reduce(FxHashMap::default, |mut a, b| {
            let (mut big, small) = if a.len() >= b.len() { (a, b) } else { (b, std::mem::take(&mut a)) };
            for (k, v) in small {
                *big.entry(k).or_default() += v;
            }
            big
        });
    let mut list: Vec<(&str, u64)> = merged.into_iter().collect();
    list.sort_unstable();
    list.into_iter().map(|(p, c)| (p.bytes().map(u32::from).collect(), c)).unzip()
}

type Pair = (u32, u32);

struct PairState {
    counts: FxHashMap<Pair, i64>,
    /// Words that held the pair when it was last counted (may be stale).
    places: FxHashMap<Pair, Vec<u32>>,
    /// Max count first; among equals, the smaller pair.
    heap: BinaryHeap<(i64, Reverse<Pair>)>,
}

impl PairState {
    fn new(words: &[Vec<u32>], counts: &[u64]) -> Self {
        let per_chunk = words
            .par_chunks(4096)
            .enumerate()
            .map(|(ci, ws)| {
                let mut c: FxHashMap<Pair, i64> = FxHashMap::default();
                let mut p: FxHashMap<Pair, Vec<u32>> = FxHashMap::default();
                for (wi, w) in ws.iter().enumerate() {
                    let idx = (ci * 4096 + wi) as u32;
                    for pair in w.windows(2) {
                        let pair = (pair[0], pair[1]);
                        *c.entry(pair).or_default() += counts[idx as usize] as i64;
                        let list = p.entry(pair).or_default();
                        if list.last() != Some(&idx) {
                            list.push(idx);
                        }
                    }
                }
                (c, p)
            })
            .collect::<Vec<_>>();
        let mut state = PairState { counts: FxHashMap::default(), places: FxHashMap::default(), heap: BinaryHeap::new() };
        for (c, p) in per_chunk {
            for (k, v) in c {
                *state.counts.entry(k).or_default() += v;
            }
            for (k, v) in p {
                state.places.entry(k).or_default().extend(v);
            }
        }
        state.heap = state.counts.iter().map(|(&p, &c)| (c, Reverse(p))).collect();
        state
    }

    fn pop_best(&mut self) -> Option<Pair> {
        while let Some((c, Reverse(pair))) = self.heap.pop() {
            let now = self.counts.get(&pair).copied().unwrap_or(0);
            if now == c && c > 0 {
                return Some(pair);
            }
            if now > 0 && now != c {
                self.heap.push((now, Reverse(pair)));
            }
        }
        None
    }

    /// Rewrites every word holding `a b` with `id`, and moves the counts of
    /// the pairs around each rewritten spot.
    fn merge(&mut self, a: u32, b: u32, id: u32, words: &mut [Vec<u32>], counts: &[u64], seen: &mut [u32], step: u32) {
        let places = self.places.remove(&(a, b)).unwrap_or_default();
        let mut grown: FxHashSet<Pair> = FxHashSet::default();
        for &wi in &places {
            if seen[wi as usize] == step {
                continue;
            }
            seen[wi as usize] = step;
            let w = &mut words[wi as usize];
            let c = counts[wi as usize] as i64;
            if !w.windows(2).any(|p| p[0] == a && p[1] == b) {
                continue;
            }
            for p in w.windows(2) {
                *self.counts.get_mut(&(p[0], p[1])).expect("counted") -= c;
            }
            let mut out = Vec::with_capacity(w.len());
            let mut i = 0;
            while i < w.len() {
                if i + 1 < w.len() && w[i] == a && w[i + 1] == b {
                    out.push(id);
                    i += 2;
                } else {
                    out.push(w[i]);
                    i += 1;
                }
            }
            *w = out;
            for p in w.windows(2) {
                let pair = (p[0], p[1]);
                *self.counts.entry(pair).or_default() += c;
                if p[0] == id || p[1] == id {
                    let list = self.places.entry(pair).or_default();
                    if list.last() != Some(&wi) {
                        list.push(wi);
                    }
                    grown.insert(pair);
                }
            }
        }
        // Pairs that lost count are fixed lazily in `pop_best`; new pairs
        // need an entry now. Sorted so the heap's history is deterministic.
        let mut grown: Vec<Pair> = grown.into_iter().collect();
        grown.sort_unstable();
        for p in grown {
            self.heap.push((self.counts[&p], Reverse(p)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpe::{AllowedSpecial, GPT2_PATTERN};

    fn trainer(n: usize) -> BpeTrainer {
        BpeTrainer { vocab_size: n, pattern: GPT2_PATTERN.into(), specials: vec!["<|endoftext|>".into()] }
    }

    /// Recount from scratch after each merge: the slow, obviously right way.
    fn naive_merges(text: &str, n_merges: usize) -> Vec<Vec<u8>> {
        let splitter = Splitter::new(GPT2_PATTERN).unwrap();
        let (mut words, counts) = count_words(text, &[], &splitter);
        let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let mut out = Vec::new();
        for _ in 0..n_merges {
            let mut pc: std::collections::BTreeMap<Pair, i64> = Default::default();
            for (w, &c) in words.iter().zip(&counts) {
                for p in w.windows(2) {
                    *pc.entry((p[0], p[1])).or_default() += c as i64;
                }
            }
            // Highest count; the BTreeMap walks pairs in increasing order, so
            // `max_by_key` keeping the last max needs the reversed order.
            let Some((&(a, b), _)) = pc.iter().rev().max_by_key(|(_, &c)| c) else { break };
            let bytes = [tokens[a as usize].clone(), tokens[b as usize].clone()].concat();
            let id = match tokens.iter().position(|t| *t == bytes) {
                Some(i) => i as u32,
                None => {
                    tokens.push(bytes.clone());
                    (tokens.len() - 1) as u32
                }
            };
            out.push(bytes);
            for w in &mut words {
                let mut o = Vec::new();
                let mut i = 0;
                while i < w.len() {
                    if i + 1 < w.len() && w[i] == a && w[i + 1] == b {
                        o.push(id);
                        i += 2;
                    } else {
                        o.push(w[i]);
                        i += 1;
                    }
                }
                *w = o;
            }
        }
        out
    }

    const TEXT: &str = "the cat sat on the mat; the hat is flat. aaaa abab aaa! Thé thé 日本語 日本 low lower lowest newest widest\n\n  spaces   here ";

    #[test]
    fn incremental_counts_match_recounting() {
        let text = TEXT.repeat(3) + "banana bandana cabana";
        let (enc, stats) = BpeTrainer { vocab_size: 256 + 60, pattern: GPT2_PATTERN.into(), specials: vec![] }.train(&text).unwrap();
        let naive = naive_merges(&text, stats.merges);
        let mut got: Vec<Vec<u8>> = (256..enc.vocab_size() as u32).map(|i| enc.token_bytes(i).unwrap().to_vec()).collect();
        let mut uniq = Vec::new();
        for t in naive {
            if !uniq.contains(&t) {
                uniq.push(t);
            }
        }
        got.truncate(uniq.len());
        assert_eq!(got, uniq);
    }

    #[test]
    fn same_corpus_same_vocabulary_and_round_trip() {
        let text = TEXT.repeat(20);
        let (a, _) = trainer(300).train(&text).unwrap();
        let (b, _) = trainer(300).train(&text).unwrap();
        assert_eq!(a.vocab_size(), 300);
        for id in 0..300 {
            assert_eq!(a.token_bytes(id), b.token_bytes(id));
        }
        assert_eq!(a.special_tokens(), &[("<|endoftext|>".to_string(), 299)]);
        let ids = a.encode(&text, &AllowedSpecial::None).unwrap();
        assert!(ids.len() * 2 < text.len(), "merges compress the training text: {} ids for {} bytes", ids.len(), text.len());
        assert_eq!(a.decode_bytes(&ids).unwrap(), text.as_bytes());
    }

    #[test]
    fn special_tokens_are_not_merged_across() {
        let text = "ab<|endoftext|>ab<|endoftext|>ab<|endoftext|>".repeat(10);
        let (enc, _) = trainer(270).train(&text).unwrap();
        for id in 256..enc.vocab_size() as u32 - 1 {
            let t = enc.token_bytes(id).unwrap();
            assert!(!t.windows(2).any(|w| w == b"<|" || w == b"b<"), "{:?}", String::from_utf8_lossy(t));
        }
        let ids = enc.encode("ab<|endoftext|>", &AllowedSpecial::All).unwrap();
        assert_eq!(ids.last(), Some(&(enc.vocab_size() as u32 - 1)));
    }

    #[test]
    fn vocab_smaller_than_bytes_is_an_error() {
        let Err(err) = trainer(256).train("abc") else { panic!("trained with 256 tokens and a special") };
        let err = err.to_string();
        assert!(err.contains("at least 257"), "{err}");
    }
}
