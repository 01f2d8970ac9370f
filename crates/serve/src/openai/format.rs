//! OpenAI's response shapes for the completion endpoints: whole answers,
//! choices, stream chunks, usage and log probabilities.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::response::sse::Event as Sse;
use serde_json::{json, Value};

use super::{Kind, Sampling};
use crate::engine::{Event, TokenLogprob};
use crate::Ready;

/// The prompt's part of an `echo` answer.
pub(super) struct Echo {
    pub(super) text: String,
    /// The first prompt token's bytes: nothing precedes it to score it by.
    pub(super) first: Vec<u8>,
    /// Every later prompt token, given the ones before it.
    pub(super) rest: Vec<TokenLogprob>,
    /// Whether `rest` was asked for (`logprobs`).
    pub(super) scored: bool,
}

/// A stream's count of the choices still running and of their tokens, for
/// the usage chunk and the final `[DONE]` after the last choice ends.
pub(super) struct Tally {
    pub(super) left: usize,
    pub(super) prompt: usize,
    pub(super) completion: usize,
    /// `[DONE]` has been sent (after the last choice, or an error).
    pub(super) ended: bool,
}

impl Tally {
    /// Chunks for choice `i`'s event; None ends the stream.
    pub(super) fn chunks(&mut self, fmt: &Format, i: usize, ev: Event) -> Option<Vec<Sse>> {
        if self.ended {
            return None;
        }
        match &ev {
            Event::Done { completion_tokens, .. } => (self.left, self.completion) = (self.left - 1, self.completion + completion_tokens),
            Event::Error(_) => self.ended = true,
            Event::Text { .. } => {}
        }
        let mut out = fmt.chunks(i, ev);
        if self.left == 0 && !self.ended {
            if fmt.include_usage {
                out.push(fmt.chunk(Value::Null, usage(self.prompt, self.completion)));
            }
            out.push(Sse::default().data("[DONE]"));
            self.ended = true;
        }
        Some(out)
    }
}

pub(super) fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// Turns engine events into OpenAI's response chunks.
pub(super) struct Format {
    pub(super) kind: Kind,
    pub(super) id: String,
    pub(super) created: u64,
    pub(super) model: String,
    pub(super) include_usage: bool,
    pub(super) logprobs: bool,
    /// The prompt, where `echo` asked for it back before the completion.
    pub(super) echo: Option<Echo>,
}

impl Format {
    pub(super) fn new(kind: Kind, ready: &Ready, s: &Sampling, logprobs: bool, echo: Option<Echo>) -> Self {
        Format {
            kind,
            id: format!("{}-{:016x}", if kind == Kind::Chat { "chatcmpl" } else { "cmpl" }, rand::random::<u64>()),
            created: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            model: ready.name.clone(),
            include_usage: s.stream_options.as_ref().is_some_and(|o| o.include_usage),
            logprobs,
            echo,
        }
    }

    fn chunk(&self, choice: Value, usage: Value) -> Sse {
        let object = if self.kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" };
        let choices = if choice.is_null() { json!([]) } else { json!([choice]) };
        let mut c = json!({"id": self.id, "object": object, "created": self.created, "model": self.model, "choices": choices});
        if self.include_usage {
            c["usage"] = usage;
        }
        Sse::default().data(c.to_string())
    }

    /// The first chunks: the assistant's role for each of `n` choices (chat only).
    pub(super) fn start(&self, n: usize) -> Vec<Sse> {
        match self.kind {
            Kind::Chat => (0..n)
                .map(|i| self.chunk(json!({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}), Value::Null))
                .collect(),
            // With `echo`, a first chunk per choice holds the prompt.
            Kind::Completion => match &self.echo {
                Some(e) => {
                    let lp = if self.logprobs { self.completion_logprobs(Some(e), &[]) } else { Value::Null };
                    (0..n).map(|i| self.chunk(json!({"index": i, "text": e.text, "logprobs": lp, "finish_reason": null}), Value::Null)).collect()
                }
                None => Vec::new(),
            },
        }
    }

    /// Choice `i`'s event as chunks (`Tally` adds the usage and `[DONE]`
    /// after the last choice).
    pub(super) fn chunks(&self, i: usize, ev: Event) -> Vec<Sse> {
        match ev {
            Event::Text { text, logprobs } => {
                let lp = if self.logprobs { self.logprobs_json(&logprobs) } else { Value::Null };
                let choice = match self.kind {
                    Kind::Chat => json!({"index": i, "delta": {"content": text}, "logprobs": lp, "finish_reason": null}),
                    Kind::Completion => json!({"index": i, "text": text, "logprobs": lp, "finish_reason": null}),
                };
                vec![self.chunk(choice, Value::Null)]
            }
            Event::Done { finish_reason, .. } => {
                let choice = match self.kind {
                    Kind::Chat => json!({"index": i, "delta": {}, "logprobs": null, "finish_reason": finish_reason}),
                    Kind::Completion => json!({"index": i, "text": "", "logprobs": null, "finish_reason": finish_reason}),
                };
                vec![self.chunk(choice, Value::Null)]
            }
            Event::Error(e) => {
                let err = json!({"error": {"message": e, "type": "server_error", "param": null, "code": null}});
                vec![Sse::default().data(err.to_string()), Sse::default().data("[DONE]")]
            }
        }
    }

    /// Chat: `{"content": [{token, logprob, bytes, top_logprobs}]}`.
    /// Completions: `{tokens, token_logprobs, top_logprobs, text_offset}`.
    pub(super) fn logprobs_json(&self, lps: &[TokenLogprob]) -> Value {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match self.kind {
            Kind::Chat => {
                let entry = |b: &[u8], lp: f32| json!({"token": text(b), "logprob": lp, "bytes": b});
                let content: Vec<Value> = lps
                    .iter()
                    .map(|t| {
                        let mut e = entry(&t.bytes, t.logprob);
                        e["top_logprobs"] = t.top.iter().map(|(_, b, lp)| entry(b, *lp)).collect();
                        e
                    })
                    .collect();
                json!({"content": content})
            }
            Kind::Completion => self.completion_logprobs(None, lps),
        }
    }

    /// Completions' `{tokens, token_logprobs, top_logprobs, text_offset}`
    /// for `lps`, after the prompt's tokens where `echo` is given: the first
    /// with a null log probability and null alternatives, as OpenAI's API
    /// writes it.
    pub(super) fn completion_logprobs(&self, echo: Option<&Echo>, lps: &[TokenLogprob]) -> Value {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let top_of = |t: &TokenLogprob| -> Value { t.top.iter().map(|(_, b, lp)| (text(b), json!(lp))).collect::<serde_json::Map<_, _>>().into() };
        let (mut tokens, mut lp, mut top, mut offsets) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut at = 0;
        let mut push = |bytes: &[u8], l: Value, t: Value| {
            tokens.push(text(bytes));
            lp.push(l);
            top.push(t);
            offsets.push(at);
            at += bytes.len();
        };
        if let Some(e) = echo.filter(|e| e.scored) {
            push(&e.first, Value::Null, Value::Null);
            e.rest.iter().for_each(|t| push(&t.bytes, json!(t.logprob), top_of(t)));
        }
        lps.iter().for_each(|t| push(&t.bytes, json!(t.logprob), top_of(t)));
        json!({"tokens": tokens, "token_logprobs": lp, "top_logprobs": top, "text_offset": offsets})
    }
}
