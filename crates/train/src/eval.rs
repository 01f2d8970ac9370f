//! Scoring a text: mean next-token loss, perplexity and bits per byte.

use attn_model::Transformer;
use serde::Serialize;

use crate::error::{Result, TrainError};

#[derive(Debug, Clone, Serialize)]
/// What `attn eval` reports for a language model.
pub struct EvalResult {
    /// Mean next-token cross-entropy in nats.
    pub loss: f64,
    /// exp(loss).
    pub perplexity: f64,
    /// Total nats / (ln 2 * bytes of text): comparable across tokenizers.
    pub bits_per_byte: f64,
    /// Tokens scored (predictions = tokens - 1).
    pub tokens: usize,
}

/// Total nats and the number of predictions over `ids`.
///
/// Windows hold up to `window` + 1 tokens and overlap by one, so every token
/// after the first is predicted exactly once; full windows run `batch` at a
/// time. A text that fits in one window is scored as exactly its tokens: the
/// number `transformers` computes with `labels=input_ids`. Training's final
/// full-split validation and `attn eval` both call this, so they agree.
pub fn score_tokens(model: &mut Transformer, ids: &[u32], window: usize, batch: usize) -> Result<(f64, usize)> {
    score_tokens_with_progress(model, ids, window, batch, &mut |_, _| {})
}

/// `score_tokens`, calling `progress(predictions done, predictions in all)`
/// after each forward pass.
pub fn score_tokens_with_progress(
    model: &mut Transformer,
    ids: &[u32],
    window: usize,
    batch: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(f64, usize)> {
    if ids.len() < 2 {
        return Err(TrainError::Data(format!("the text has {} token(s); scoring needs at least 2", ids.len())));
    }
    if window == 0 || window > model.context() {
        return Err(TrainError::Config(format!("window {window} must be in 1..={}", model.context())));
    }
    let preds = ids.len() - 1;
    if model.weight_dtype() != attn_model::quant::WeightDtype::F32 || model.kv_dtype() != attn_model::KvDtype::F32 {
        // bf16 / int8 weights have only the inference path, and a bf16 KV
        // cache is only on it: a window at a time.
        let mut nats = 0.0f64;
        for s in (0..preds).step_by(window) {
            let e = (s + window).min(preds);
            nats += model.score_cached(&ids[s..e], &ids[s + 1..e + 1])?;
            progress(e, preds);
        }
        return Ok((nats, preds));
    }
    let full = preds / window;
    // The batch only sets the speed: no larger than the windows there are,
    // and halved until its activations take at most half the memory free.
    let mut batch = batch.clamp(1, full.max(1));
    let room = attn_model::available_memory().map_or(u128::MAX, |a| a as u128 / 2);
    while batch > 1 && model.activation_bytes(batch, window) > room {
        batch /= 2;
    }
    let (mut x, mut y) = (Vec::with_capacity(batch * window), Vec::with_capacity(batch * window));
    let mut nats = 0.0f64;
    let mut w = 0;
    while w < full {
        let n = batch.min(full - w);
        x.clear();
        y.clear();
        for i in w..w + n {
            x.extend_from_slice(&ids[i * window..(i + 1) * window]);
            y.extend_from_slice(&ids[i * window + 1..(i + 1) * window + 1]);
        }
        model.forward(&x, Some(&y), n, window)?;
        nats += model.losses().iter().map(|&l| l as f64).sum::<f64>();
        w += n;
        progress(w * window, preds);
    }
    let rest = preds - full * window;
    if rest > 0 {
        let s = full * window;
        model.forward(&ids[s..s + rest], Some(&ids[s + 1..s + rest + 1]), 1, rest)?;
        nats += model.losses().iter().map(|&l| l as f64).sum::<f64>();
    }
    Ok((nats, preds))
}

/// Scores `ids`, the tokenization of a text of `text_bytes` bytes.
pub fn evaluate(model: &mut Transformer, ids: &[u32], text_bytes: usize, window: usize, batch: usize) -> Result<EvalResult> {
    evaluate_with_progress(model, ids, text_bytes, window, batch, &mut |_, _| {})
}

/// `evaluate`, reporting progress as `score_tokens_with_progress` does.
pub fn evaluate_with_progress(
    model: &mut Transformer,
    ids: &[u32],
    text_bytes: usize,
    window: usize,
    batch: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<EvalResult> {
    let (nats, preds) = score_tokens_with_progress(model, ids, window, batch, progress)?;
    let loss = nats / preds as f64;
    if !loss.is_finite() {
        return Err(TrainError::Data(format!(
            "the loss is {loss}: the model produces non-finite logits on this text; its weights or config are broken (an earlier checkpoint may be sound)"
        )));
    }
    Ok(EvalResult { loss, perplexity: loss.exp(), bits_per_byte: nats / (std::f64::consts::LN_2 * text_bytes.max(1) as f64), tokens: ids.len() })
}
