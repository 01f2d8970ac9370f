//! Turning logits into tokens: a softmax distribution over the vocabulary,
//! shaped by temperature, top-k and top-p, then sampled; and the
//! one-token-at-a-time generation loop.
//!
//! Generation prefills the prompt in one batched pass, then decodes one token
//! at a time against a KV cache.
//!
//! ```
//! use attn_generate::{Sampler, SamplerConfig};
//! let mut s = Sampler::new(SamplerConfig { temperature: 0.0, ..Default::default() }, 0).unwrap();
//! assert_eq!(s.sample(&[0.1, 2.0, -1.0]), 1); // temperature 0 is greedy
//! ```

#![warn(missing_docs)]

mod config;
mod rules;
mod sampler;
mod search;
mod seq2seq_settings;
mod stream;

pub use config::GenerationConfig;
pub use rules::Rules;
pub use sampler::{Sampler, SamplerConfig};
pub use search::{search, EarlyStopping, Hypothesis, Sampling, SearchConfig};
pub use seq2seq_settings::Seq2SeqSettings;
pub use stream::{token_bytes, StopStrings, TextStream, Utf8Stream};

use attn_model::Transformer;

/// Why a generation could not start.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// A sampling setting out of its range (temperature, top-k, top-p,
    /// repetition penalty, beams).
    #[error("invalid sampler setting: {0}")]
    Sampler(String),
    /// The prompt and the tokens asked for do not fit in the context.
    #[error("the prompt ({prompt} tokens) plus --max-new-tokens {new} exceeds the model's context of {ctx} tokens; lower --max-new-tokens (or leave it out to stop at the end of the context) or pass --sliding-window to drop the oldest tokens")]
    #[allow(missing_docs)]
    ContextOverflow { prompt: usize, new: usize, ctx: usize },
    /// An unreadable or invalid generation_config.json (the message names
    /// the file and the field).
    #[error("{0}")]
    Config(String),
    /// Nothing to condition on.
    #[error("the prompt is empty after tokenization")]
    EmptyPrompt,
    /// The model refused a forward pass.
    #[error(transparent)]
    Model(#[from] attn_model::ModelError),
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// An end-of-sequence token or a stop string.
    Stop,
    /// The token limit or the end of the context.
    Length,
}

/// The result of `generate`.
#[derive(Clone, Debug)]
pub struct Generation {
    /// The prompt followed by the generated tokens (an end-of-sequence token excluded).
    pub ids: Vec<u32>,
    /// Why it stopped.
    pub finish_reason: FinishReason,
    /// Tokens sampled, an end-of-sequence token included (it was computed).
    pub completion_tokens: usize,
}

/// Appends sampled tokens to `prompt`, calling `on_token` with each, until an
/// id in `eos` is drawn (not passed on), `on_token` returns false, `max_new`
/// tokens (None: up to the end of the context) or the context runs out. The
/// prompt is prefilled in one pass, then each token is one cached decode step.
///
/// Past the context: an error up front when `max_new` asks for more, unless
/// `sliding_window`, in which case the model sees the most recent n_ctx
/// tokens. Positions are absolute, so the window cannot reuse the cache:
/// each step beyond the context runs the whole window again.
pub fn generate(
    model: &Transformer,
    prompt: &[u32],
    max_new: Option<usize>,
    sliding_window: bool,
    eos: &[u32],
    sampler: &mut Sampler,
    mut on_token: impl FnMut(u32) -> bool,
) -> Result<Generation, GenerateError> {
    let ctx = model.context();
    if prompt.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    let room = ctx.saturating_sub(prompt.len());
    if !sliding_window && prompt.len() > ctx {
        return Err(GenerateError::ContextOverflow { prompt: prompt.len(), new: max_new.unwrap_or(0), ctx });
    }
    let max_new = match max_new {
        Some(n) if n > room && !sliding_window => return Err(GenerateError::ContextOverflow { prompt: prompt.len(), new: n, ctx }),
        Some(n) => n,
        None if sliding_window => usize::MAX,
        None => room,
    };
    let mut ids = prompt.to_vec();
    // Sized to the request, never to the model's maximum context.
    let capacity = prompt.len().min(ctx).saturating_add(max_new).min(ctx);
    let mut cache = model.new_cache(capacity)?;
    let mut logits = model.prefill(&mut cache, &ids[ids.len().saturating_sub(ctx)..])?.to_vec();
    let mut done = Generation { ids: Vec::new(), finish_reason: FinishReason::Length, completion_tokens: 0 };
    for i in 0..max_new {
        let next = sampler.sample_with_history(&logits, &ids);
        done.completion_tokens += 1;
        if eos.contains(&next) {
            done.finish_reason = FinishReason::Stop;
            break;
        }
        ids.push(next);
        if !on_token(next) {
            done.finish_reason = FinishReason::Stop;
            break;
        }
        if i + 1 == max_new {
            break;
        }
        if !cache.is_full() {
            logits.copy_from_slice(model.decode(&mut cache, next)?);
        } else if sliding_window {
            cache.clear();
            let window = &ids[ids.len() - cache.capacity()..];
            logits.copy_from_slice(model.prefill(&mut cache, window)?);
        } else {
            break;
        }
    }
    done.ids = ids;
    Ok(done)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_chunks_prints_whole() {
        let text = "héllo 世界 🎉";
        let bytes = text.as_bytes();
        // Feed one byte at a time: every multi-byte character arrives split.
        let mut st = Utf8Stream::default();
        let mut out = String::new();
        for b in bytes {
            let piece = st.push(std::slice::from_ref(b));
            assert!(!piece.contains(char::REPLACEMENT_CHARACTER), "garbage printed: {piece:?}");
            out.push_str(&piece);
        }
        out.push_str(&st.finish());
        assert_eq!(out, text);
        // Bytes that can never be UTF-8 become U+FFFD, and the stream goes on.
        let mut st = Utf8Stream::default();
        assert_eq!(st.push(&[b'a', 0xFF, b'b']), "a\u{FFFD}b");
    }

    #[test]
    fn stop_strings_are_never_printed() {
        let mut st = StopStrings::new(vec!["\n\nEND".into()]);
        let mut printed = String::new();
        let mut stopped = false;
        for piece in ["Hello", "\n", "\n", "EN", "D more"] {
            let (out, stop) = st.push(piece);
            printed.push_str(&out);
            if stop {
                stopped = true;
                break;
            }
        }
        assert!(stopped);
        assert_eq!(printed, "Hello");
        // A partial match that does not complete is released.
        let mut st = StopStrings::new(vec!["STOP".into()]);
        assert_eq!(st.push("ab ST"), ("ab ".to_string(), false));
        assert_eq!(st.push("AR"), ("STAR".to_string(), false));
        assert_eq!(st.finish(), "");
    }
}
