//! Scoring a text: mean next-token loss, perplexity and bits per byte.

use attn_model::Gpt;
use serde::Serialize;

use crate::error::{Result, TrainError};

#[derive(Debug, Clone, Serialize)]
pub struct EvalResult {
    /// Mean next-token cross-entropy in nats.
    pub loss: f64,
    pub perplexity: f64,
    /// Total nats / (ln 2 * bytes of text): comparable across tokenizers.
    pub bits_per_byte: f64,
    /// Tokens in the text (predictions = tokens - 1).
    pub tokens: usize,
}

/// Scores `ids` (the tokenization of a text of `text_bytes` bytes).
///
/// Windows hold up to n_ctx + 1 tokens and overlap by one, so every token
/// after the first is predicted exactly once. A text that fits in the context
/// is one window of exactly its tokens: the same number `transformers`
/// computes with `labels=input_ids`.
pub fn evaluate(model: &mut Gpt, ids: &[u32], text_bytes: usize) -> Result<EvalResult> {
    if ids.len() < 2 {
        return Err(TrainError::Data(format!("the text has {} token(s); scoring needs at least 2", ids.len())));
    }
    let ctx = model.config.n_ctx;
    let mut nats = 0.0f64;
    let mut start = 0;
    while start + 1 < ids.len() {
        let end = (start + ctx + 1).min(ids.len());
        let window = &ids[start..end];
        let t = window.len() - 1;
        model.forward(&window[..t], Some(&window[1..]), 1, t)?;
        nats += model.losses().iter().map(|&x| x as f64).sum::<f64>();
        start = end - 1;
    }
    let n = (ids.len() - 1) as f64;
    let loss = nats / n;
    Ok(EvalResult { loss, perplexity: loss.exp(), bits_per_byte: nats / (std::f64::consts::LN_2 * text_bytes.max(1) as f64), tokens: ids.len() })
}
