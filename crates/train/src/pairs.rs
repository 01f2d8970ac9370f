//! Parallel text for translation: `source<TAB>target` lines or two aligned
//! files, a joint BPE trained on both sides, token ids with the tokenizer's
//! EOS, and batches built by token count (pairs of similar length together,
//! so little of a batch is padding).

use std::path::{Path, PathBuf};

use attn_model::{Seq2Seq, Seq2SeqBatch};
use attn_tokenizer::bpe::{BytePairEncoder, GPT2_PATTERN};
use attn_tokenizer::train::BpeTrainer;
use attn_tokenizer::Tokenizer;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::error::{Result, TrainError};

/// A (source, target) text pair.
pub type Pair = (String, String);

/// `source<TAB>target` lines from each file; blank lines are skipped. A line
/// without a tab, or with an empty side, is an error naming file and line.
pub fn read_tsv(files: &[PathBuf]) -> Result<Vec<Pair>> {
    let mut pairs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(TrainError::io(f))?;
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = |what: &str| TrainError::Data(format!("{}:{}: {what}; each line is source<TAB>target", f.display(), i + 1));
            let (s, t) = line.split_once('\t').ok_or_else(|| bad("no tab"))?;
            if t.contains('\t') {
                return Err(bad("more than one tab"));
            }
            if s.trim().is_empty() || t.trim().is_empty() {
                return Err(bad("an empty side"));
            }
            pairs.push((s.to_string(), t.to_string()));
        }
    }
    if pairs.is_empty() {
        return Err(TrainError::Data(format!(
            "no source<TAB>target pairs in {}",
            files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
        )));
    }
    Ok(pairs)
}

/// Line i of `source` with line i of `target`; the counts must agree.
pub fn read_aligned(source: &Path, target: &Path) -> Result<Vec<Pair>> {
    let read = |p: &Path| std::fs::read_to_string(p).map_err(TrainError::io(p));
    let (s, t) = (read(source)?, read(target)?);
    let (sl, tl): (Vec<&str>, Vec<&str>) = (s.lines().collect(), t.lines().collect());
    if sl.len() != tl.len() {
        return Err(TrainError::Data(format!(
            "{} has {} lines but {} has {}; --source and --target must be aligned line by line",
            source.display(),
            sl.len(),
            target.display(),
            tl.len()
        )));
    }
    let pairs: Vec<Pair> =
        sl.iter().zip(&tl).filter(|(a, b)| !a.trim().is_empty() && !b.trim().is_empty()).map(|(a, b)| (a.to_string(), b.to_string())).collect();
    if pairs.is_empty() {
        return Err(TrainError::Data(format!("{} and {} hold no non-empty line pairs", source.display(), target.display())));
    }
    Ok(pairs)
}

/// Token ids of one pair; both end with EOS (the tokenizer's template adds it).
#[derive(Clone, Debug)]
pub struct PairIds {
    /// The source's ids.
    pub src: Vec<u32>,
    /// The target's ids.
    pub tgt: Vec<u32>,
}

/// Encodes pairs, keeping those whose sides fit in `max_len` tokens; returns
/// the kept pairs and their indices in `pairs`.
pub fn encode_pairs(tok: &dyn Tokenizer, pairs: &[Pair], max_len: usize) -> Result<(Vec<PairIds>, Vec<usize>)> {
    let (mut out, mut kept) = (Vec::with_capacity(pairs.len()), Vec::with_capacity(pairs.len()));
    for (i, (s, t)) in pairs.iter().enumerate() {
        let (src, tgt) = (tok.encode(s)?, tok.encode_target(t)?);
        if src.len() <= max_len && tgt.len() <= max_len {
            out.push(PairIds { src, tgt });
            kept.push(i);
        }
    }
    Ok((out, kept))
}

/// Groups pair indices into batches of at most `batch_tokens` tokens,
/// counted as pairs x the longest side in the batch (what the padded buffers
/// hold). Pairs are sorted by length first; the order is deterministic.
pub fn token_batches(pairs: &[PairIds], batch_tokens: usize) -> Vec<Vec<usize>> {
    let len = |i: usize| pairs[i].src.len().max(pairs[i].tgt.len());
    let mut order: Vec<usize> = (0..pairs.len()).collect();
    order.sort_by_key(|&i| (len(i), pairs[i].src.len(), i));
    let mut batches = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    let mut longest = 0;
    for i in order {
        let l = longest.max(len(i));
        if !cur.is_empty() && (cur.len() + 1) * l > batch_tokens {
            batches.push(std::mem::take(&mut cur));
            longest = 0;
        }
        longest = longest.max(len(i));
        cur.push(i);
    }
    if !cur.is_empty() {
        batches.push(cur);
    }
    batches
}

/// The batch order of `epoch`: a seeded shuffle, the same on every resume.
pub fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    order.shuffle(&mut rng);
    order
}

/// The pairs `idx` as one right-padded batch: decoder inputs start with
/// `start` and are the targets shifted right.
pub fn make_batch(pairs: &[PairIds], idx: &[usize], pad: u32, start: u32) -> Seq2SeqBatch {
    let refs: Vec<(&[u32], &[u32])> = idx.iter().map(|&i| (pairs[i].src.as_slice(), pairs[i].tgt.as_slice())).collect();
    Seq2SeqBatch::from_pairs(&refs, pad, start)
}

/// Cross-entropy summed over every target token (EOS included) and the
/// token count, in batches of `batch_tokens`: `attn eval`'s loss.
pub fn score_pairs(model: &mut Seq2Seq, pairs: &[PairIds], batch_tokens: usize) -> Result<(f64, usize)> {
    let (pad, start) = (model.config.pad_token_id, model.config.decoder_start_token_id);
    let (mut nats, mut tokens) = (0.0f64, 0usize);
    for idx in token_batches(pairs, batch_tokens) {
        let batch = make_batch(pairs, &idx, pad, start);
        let l = model.forward(&batch, true, 0.0)?.expect("labels given");
        nats += l.nll as f64 * l.tokens as f64;
        tokens += l.tokens;
    }
    Ok((nats, tokens))
}

/// The special tokens of attn's translation vocabularies (Marian's names):
/// padding (also the decoder's start token).
pub const PAD: &str = "<pad>";
/// The end of every sentence.
pub const EOS: &str = "</s>";

/// A BPE of `n` tokens over both sides, with `<pad>` and `</s>`, and a
/// template that ends every encoding with `</s>` (as Marian's tokenizers do).
pub fn train_joint_bpe(pairs: &[Pair], n: usize) -> Result<BytePairEncoder> {
    let mut text = String::new();
    for (s, t) in pairs {
        text.push_str(s);
        text.push('\n');
        text.push_str(t);
        text.push('\n');
    }
    let trainer = BpeTrainer { vocab_size: n, pattern: GPT2_PATTERN.into(), specials: vec![PAD.into(), EOS.into()] };
    let (mut tok, _) = trainer.train(&text)?;
    let eos = special_id(&tok, EOS).expect("trained with it");
    tok.set_template(Vec::new(), vec![eos]);
    Ok(tok)
}

fn special_id(tok: &BytePairEncoder, name: &str) -> Option<u32> {
    tok.special_tokens().iter().find(|s| s.0 == name).map(|s| s.1)
}
