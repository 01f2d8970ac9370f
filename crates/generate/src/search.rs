//! Decoding for encoder-decoders: greedy decoding, sampling and beam search
//! over a batch of sources, encoded once, stepping the decoder with its KV
//! cache.
//!
//! Both follow transformers' `generate()` so that the same model gives the
//! same tokens: `max_new_tokens` counts the EOS; each hypothesis's next
//! token obeys the folder's rules (`rules.rs`: with `forced_eos_token_id` the
//! last allowed token is EOS, and so on); beam search keeps 2K candidates a step,
//! scores a finished hypothesis by sum(log p) / length^length_penalty (length
//! = tokens generated, EOS included), and stops, with `early_stopping` false,
//! when the best running beam, scored at its current length, cannot beat the
//! worst of K finished ones.

use attn_model::{EncoderMemory, Seq2Seq};

use crate::rules::Rules;
use crate::{GenerateError, Sampler, SamplerConfig};

/// transformers' `early_stopping`: when beam search may stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EarlyStopping {
    /// As soon as K hypotheses are finished.
    True,
    /// When the best running beam, at its current length, cannot beat the worst finished one (the default).
    Heuristic,
    /// Only when no running beam can improve, even at the maximum length.
    Never,
}

/// Greedy or beam-search decoding of an encoder-decoder, as transformers'
/// `generate()` does it.
#[derive(Clone, Debug)]
pub struct SearchConfig {
    /// Tokens to generate at most, EOS included.
    pub max_new_tokens: usize,
    /// 1 is greedy.
    pub num_beams: usize,
    /// A finished beam scores sum(log p) / length^length_penalty.
    pub length_penalty: f32,
    /// When beam search stops.
    pub early_stopping: EarlyStopping,
    /// What may come next (a folder's generation settings: `Seq2SeqSettings`).
    pub rules: Rules,
    /// Draw each token instead of taking the most likely (needs `num_beams` 1).
    pub sample: Option<Sampling>,
}

/// transformers' `do_sample` without beams: after the rules, temperature,
/// top-k and top-p shape each row's distribution and a token is drawn from it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// Its `repetition_penalty` stays 1: the rules apply the folder's.
    pub sampler: SamplerConfig,
    /// Row r of the batch draws from its own stream, seeded `seed + r`, so a
    /// source's output depends on its seed alone, not on its neighbours.
    pub seed: u64,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig { max_new_tokens: 64, num_beams: 1, length_penalty: 1.0, early_stopping: EarlyStopping::Heuristic, rules: Rules::default(), sample: None }
    }
}

/// One source's output.
#[derive(Clone, Debug, PartialEq)]
pub struct Hypothesis {
    /// Generated ids after the start token; ends with EOS when it finished.
    pub ids: Vec<u32>,
    /// Greedy: the sum of log-probabilities. Beam: that sum / length^length_penalty.
    pub score: f32,
    /// Whether it ended with EOS (not at the length limit).
    pub finished: bool,
}

/// Large negative score transformers uses for "not a candidate".
const NEG: f32 = -1.0e9;

fn log_softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let sum: f32 = row.iter().map(|&x| (x - max).exp()).sum();
    let lse = max + sum.ln();
    row.iter().map(|&x| x - lse).collect()
}

/// The folder's rules on the next token's scores of the hypothesis `ids`
/// (after `start`), whose source row is `src`.
fn apply_rules(model: &Seq2Seq, cfg: &SearchConfig, start: u32, ids: &[u32], src: &[u32], scores: &mut [f32], max_length: usize) {
    cfg.rules.apply(start, ids, src, scores, model.config.eos_token_id, model.config.forced_eos_token_id, max_length);
}

fn start_token(model: &Seq2Seq, cfg: &SearchConfig) -> u32 {
    cfg.rules.decoder_start_token_id.unwrap_or(model.config.decoder_start_token_id)
}

fn check(model: &Seq2Seq, cfg: &SearchConfig) -> Result<(), GenerateError> {
    if cfg.max_new_tokens == 0 {
        return Err(GenerateError::Config("--max-new-tokens must be at least 1".into()));
    }
    if cfg.num_beams == 0 {
        return Err(GenerateError::Config("--beam must be at least 1".into()));
    }
    if cfg.max_new_tokens >= model.config.n_ctx {
        return Err(GenerateError::Config(format!(
            "--max-new-tokens {} needs {} decoder positions, more than the model's {}",
            cfg.max_new_tokens,
            cfg.max_new_tokens + 1,
            model.config.n_ctx
        )));
    }
    if !cfg.length_penalty.is_finite() {
        return Err(GenerateError::Config("--length-penalty must be a finite number".into()));
    }
    // The sampler's own settings are checked where greedy makes it.
    if cfg.sample.is_some() && cfg.num_beams > 1 {
        return Err(GenerateError::Config(format!(
            "sampling with --beam {} (transformers' beam sampling) is not supported: sample with --beam 1, or search beams with --temperature 0",
            cfg.num_beams
        )));
    }
    Ok(())
}

/// Greedy decoding (or sampling, with `cfg.sample`) or beam search, by `cfg.num_beams`.
pub fn search(model: &Seq2Seq, mem: &EncoderMemory, cfg: &SearchConfig) -> Result<Vec<Hypothesis>, GenerateError> {
    check(model, cfg)?;
    if cfg.num_beams == 1 {
        greedy(model, mem, cfg)
    } else {
        beam_search(model, mem, cfg)
    }
}

fn greedy(model: &Seq2Seq, mem: &EncoderMemory, cfg: &SearchConfig) -> Result<Vec<Hypothesis>, GenerateError> {
    let (b, v, eos) = (mem.b, model.vocab_size(), model.config.eos_token_id);
    let max_length = cfg.max_new_tokens + 1;
    let mut cache = model.new_decoder_cache(mem, 1, max_length)?;
    let mut out: Vec<Hypothesis> = (0..b).map(|_| Hypothesis { ids: Vec::new(), score: 0.0, finished: false }).collect();
    let start = start_token(model, cfg);
    let mut tokens = vec![start; b];
    let mut samplers = match cfg.sample {
        Some(s) => (0..b as u64).map(|r| Sampler::new(s.sampler, s.seed.wrapping_add(r)).map(Some)).collect::<Result<Vec<_>, _>>()?,
        None => (0..b).map(|_| None).collect(),
    };
    for _ in 1..max_length {
        let logits = model.decode_step(&tokens, &mut cache, mem)?;
        for (i, h) in out.iter_mut().enumerate() {
            if h.finished {
                // transformers feeds the pad token to finished rows; their outputs are unused.
                tokens[i] = model.config.pad_token_id;
                continue;
            }
            let mut row = logits[i * v..][..v].to_vec();
            apply_rules(model, cfg, start, &h.ids, &mem.src[i * mem.s..][..mem.s], &mut row, max_length);
            let next = match &mut samplers[i] {
                // Ruled-out tokens are -inf: no weight in the draw.
                Some(s) => s.sample(&row) as usize,
                // The first of equal maxima, as torch.argmax picks.
                None => row.iter().enumerate().fold(0, |best, (j, &x)| if x > row[best] { j } else { best }),
            };
            h.score += log_softmax(&logits[i * v..][..v])[next];
            h.ids.push(next as u32);
            h.finished = next as u32 == eos;
            tokens[i] = next as u32;
        }
        if out.iter().all(|h| h.finished) {
            break;
        }
    }
    Ok(out)
}

/// One source's beams.
struct Beams {
    /// K running hypotheses (ids after the start token) and their summed log-probabilities.
    running: Vec<(Vec<u32>, f32)>,
    /// K best finished hypotheses: ids, length-normalised score, really finished.
    done: Vec<(Vec<u32>, f32, bool)>,
    /// The early-stop heuristic still sees room for improvement.
    open: bool,
}

fn beam_search(model: &Seq2Seq, mem: &EncoderMemory, cfg: &SearchConfig) -> Result<Vec<Hypothesis>, GenerateError> {
    let (b, v, k, eos) = (mem.b, model.vocab_size(), cfg.num_beams, model.config.eos_token_id);
    let max_length = cfg.max_new_tokens + 1;
    let lp = cfg.length_penalty as f64;
    let keep = 2 * k; // (1 + number of EOS ids) * K, at least 2K

    // Each source's K * V candidate scores (f32) and their order (usize),
    // beside the cache: a wide beam over a large vocabulary is gigabytes.
    let need = model.decoder_cache_bytes(b * k, max_length) + k as u128 * v as u128 * (4 + std::mem::size_of::<usize>() as u128);
    attn_model::ensure_memory(need, || format!("--beam {k} over {b} sources and {v} vocabulary ids would"), "use a smaller --beam or fewer sources at once")?;
    let mut cache = model.new_decoder_cache(mem, k, max_length)?;
    let mut beams: Vec<Beams> = (0..b)
        .map(|_| Beams {
            running: (0..k).map(|j| (Vec::new(), if j == 0 { 0.0 } else { NEG })).collect(),
            done: (0..k).map(|_| (Vec::new(), NEG, false)).collect(),
            open: true,
        })
        .collect();
    let start = start_token(model, cfg);
    let mut tokens = vec![start; b * k];
    for cur_len in 1..max_length {
        let logits = model.decode_step(&tokens, &mut cache, mem)?;
        let mut from = vec![0usize; b * k];
        let mut all_hit = true;
        for (i, bm) in beams.iter_mut().enumerate() {
            // Accumulated scores of every (beam, token), flattened to K * V.
            let mut acc = Vec::with_capacity(k * v);
            for (j, (ids, score)) in bm.running.iter().enumerate() {
                let mut lp_row = log_softmax(&logits[(i * k + j) * v..][..v]);
                apply_rules(model, cfg, start, ids, &mem.src[i * mem.s..][..mem.s], &mut lp_row, max_length);
                if cfg.rules.renormalize && lp_row.iter().any(|x| x.is_finite()) {
                    lp_row = log_softmax(&lp_row);
                }
                acc.extend(lp_row.iter().map(|&x| x + score));
            }
            let top = top_indices(&acc, keep);
            let cands: Vec<(usize, u32, f32, bool)> = top
                .iter()
                .map(|&idx| {
                    let tok = (idx % v) as u32;
                    (idx / v, tok, acc[idx], tok == eos || cur_len + 1 >= max_length)
                })
                .collect();
            all_hit &= cands.iter().all(|c| c.3);
            // The next running beams: the best K candidates that did not stop.
            let masked: Vec<f32> = cands.iter().map(|c| c.2 + if c.3 { NEG } else { 0.0 }).collect();
            let next = top_indices(&masked, k);
            let all_done = bm.done.iter().all(|d| d.2);
            // Finished candidates among the top K compete for the K finished slots.
            let denom = ((cur_len as f64).powf(lp)) as f32;
            let mut merged: Vec<(Vec<u32>, f32, bool)> = std::mem::take(&mut bm.done);
            for (pos, &(beam, tok, score, hit)) in cands.iter().enumerate() {
                let mut s = score / denom;
                if all_done && cfg.early_stopping == EarlyStopping::True {
                    s += NEG;
                }
                if !bm.open {
                    s += NEG;
                }
                let real = hit && pos < k;
                if !real {
                    s += NEG;
                }
                let mut ids = bm.running[beam].0.clone();
                ids.push(tok);
                merged.push((ids, s, real));
            }
            let order = top_indices(&merged.iter().map(|m| m.1).collect::<Vec<_>>(), k);
            bm.done = order.iter().map(|&o| merged[o].clone()).collect();
            let old = std::mem::take(&mut bm.running);
            bm.running = next
                .iter()
                .map(|&n| {
                    let (beam, tok, _, _) = cands[n];
                    let mut ids = old[beam].0.clone();
                    ids.push(tok);
                    (ids, masked[n])
                })
                .collect();
            for (j, &n) in next.iter().enumerate() {
                from[i * k + j] = i * k + cands[n].0;
                tokens[i * k + j] = cands[n].1;
            }
            // The early-stop heuristic, at the new length.
            let best_len = match cfg.early_stopping {
                EarlyStopping::Never if lp > 0.0 => max_length - 1,
                _ => cur_len,
            };
            let best_possible = bm.running[0].1 / ((best_len as f64).powf(lp)) as f32;
            let worst = bm.done.iter().map(|d| d.1).fold(f32::INFINITY, f32::min);
            bm.open &= bm.done.iter().any(|d| !d.2) || best_possible > worst;
        }
        model.reorder_cache(&mut cache, &from);
        let improvable = beams.iter().any(|bm| bm.open);
        let all_done = beams.iter().all(|bm| bm.done.iter().all(|d| d.2));
        if !improvable || (all_done && cfg.early_stopping == EarlyStopping::True) || all_hit {
            break;
        }
    }
    Ok(beams
        .into_iter()
        .map(|bm| {
            let (ids, score, finished) = bm.done.into_iter().next().expect("K >= 1");
            Hypothesis { finished: finished && ids.last() == Some(&eos), ids, score }
        })
        .collect())
}

/// Indices of the `n` largest values, largest first; equal values keep
/// their order.
fn top_indices(x: &[f32], n: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    let n = n.min(x.len());
    idx.select_nth_unstable_by(n.saturating_sub(1), |&a, &b| x[b].total_cmp(&x[a]).then(a.cmp(&b)));
    idx.truncate(n);
    idx.sort_by(|&a, &b| x[b].total_cmp(&x[a]).then(a.cmp(&b)));
    idx
}
