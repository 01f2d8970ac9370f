//! `POST /v1/chat/completions` and `POST /v1/completions`, whole or streamed
//! as Server-Sent Events in OpenAI's format.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use attn_generate::SamplerConfig;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::api::{self, ApiError, ChatRequest, CompletionRequest, Prompt, Sampling};
use crate::engine::{Event, GenRequest, TokenLogprob, Work};
use crate::{AppState, Ready};

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Completion,
}

/// The body as bytes; past the size limit, 413.
pub fn body(st: &AppState, b: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    b.map_err(|e| {
        let err = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the request body is larger than the limit of {} bytes", st.opts.max_body_bytes))
        } else {
            ApiError::new(e.status(), e.body_text())
        };
        st.metrics.error(err.status.as_u16());
        err
    })
}

/// Counts the error in the metrics on its way out.
pub fn counted<T>(st: &AppState, r: Result<T, ApiError>) -> Result<T, ApiError> {
    if let Err(e) = &r {
        st.metrics.error(e.status.as_u16());
    }
    r
}

pub async fn chat(State(st): State<Arc<AppState>>, b: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let b = body(&st, b)?;
    st.metrics.request("chat_completions");
    counted(&st, chat_inner(&st, &b).await)
}

async fn chat_inner(st: &AppState, b: &[u8]) -> Result<Response, ApiError> {
    let v = api::json_body(b, &[api::CHAT_FIELDS, api::SAMPLING_FIELDS].concat())?;
    let (req, sampling): (ChatRequest, Sampling) = (api::typed(&v)?, api::typed(&v)?);
    let ready = st.ready()?;
    let messages = req.messages.iter().enumerate().map(|(i, m)| message(i, m)).collect::<Result<Vec<_>, _>>()?;
    if messages.is_empty() {
        return Err(ApiError::field("messages", "messages is empty: give at least one {\"role\", \"content\"}"));
    }
    let template =
        ready.template.as_ref().map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("the model's chat template can't be used: {e}")))?;
    let text = template.render_json(&messages, true).map_err(|e| ApiError::field("messages", format!("the chat template refused these messages: {e}")))?;
    let prompt = ready.tok.encode_plain(&text).map_err(|e| match template.unwritable_char(ready.tok.as_ref()) {
        // The template itself (ChatML's `<|im_start|>` for a character-level
        // model without one) is what fails: no request can fix that.
        Some(ch) => ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the model's chat template writes {ch:?}, which its tokenizer does not know, so this model cannot chat; send the text to /v1/completions instead"),
        ),
        None => ApiError::field("messages", e.to_string()),
    })?;
    let logprobs = match (req.logprobs, req.top_logprobs) {
        (true, k) => Some(k.unwrap_or(0)),
        (false, Some(_)) => return Err(ApiError::field("top_logprobs", "top_logprobs needs \"logprobs\": true")),
        (false, None) => None,
    };
    if logprobs.is_some_and(|k| k > 20) {
        return Err(ApiError::field("top_logprobs", "top_logprobs must be between 0 and 20"));
    }
    // A reply ends at the template's end of turn, whether the model writes
    // it as one token (in `ready.eos_chat`) or as text.
    run(st, ready, Kind::Chat, prompt, sampling, logprobs.map(|k| k as usize), template.end_of_turn(), true).await
}

pub async fn completions(State(st): State<Arc<AppState>>, b: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let b = body(&st, b)?;
    st.metrics.request("completions");
    counted(&st, completions_inner(&st, &b).await)
}

async fn completions_inner(st: &AppState, b: &[u8]) -> Result<Response, ApiError> {
    let v = api::json_body(b, &[api::COMPLETION_FIELDS, api::SAMPLING_FIELDS].concat())?;
    let (req, sampling): (CompletionRequest, Sampling) = (api::typed(&v)?, api::typed(&v)?);
    let ready = st.ready()?;
    if req.echo {
        return Err(ApiError::field("echo", "echo is not supported"));
    }
    if req.suffix.is_some() {
        return Err(ApiError::field("suffix", "suffix (fill in the middle) is not supported"));
    }
    let prompt = match req.prompt {
        Prompt::Text(t) => ready.tok.encode(&t).map_err(|e| ApiError::bad(e.to_string()))?,
        Prompt::Texts(v) if v.len() == 1 => ready.tok.encode(&v[0]).map_err(|e| ApiError::bad(e.to_string()))?,
        Prompt::Ids(ids) => ids,
        Prompt::IdLists(mut v) if v.len() == 1 => v.remove(0),
        _ => return Err(ApiError::field("prompt", "one prompt per request: a string, or a list of token ids")),
    };
    if let Some(bad) = prompt.iter().find(|&&i| i as usize >= ready.tok.vocab_size()) {
        return Err(ApiError::field("prompt", format!("token id {bad} is out of range for the vocabulary of {}", ready.tok.vocab_size())));
    }
    if req.logprobs.is_some_and(|k| k > 5) {
        return Err(ApiError::field("logprobs", "logprobs must be between 0 and 5"));
    }
    run(st, ready, Kind::Completion, prompt, sampling, req.logprobs.map(|k| k as usize), Vec::new(), false).await
}

/// A message with its content as one string (a list of text parts is joined).
fn message(i: usize, m: &Value) -> Result<Value, ApiError> {
    let at = |f: &str| format!("messages[{i}].{f}");
    let role =
        m.get("role").and_then(Value::as_str).ok_or_else(|| ApiError::field(&at("role"), format!("{} must be a string such as \"user\"", at("role"))))?;
    let content = match m.get("content") {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => String::new(),
        Some(Value::Array(parts)) => {
            let mut s = String::new();
            for p in parts {
                match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => s.push_str(t),
                    _ => return Err(ApiError::field(&at("content"), "only text content parts ({\"type\": \"text\", \"text\": ...}) are supported")),
                }
            }
            s
        }
        Some(_) => return Err(ApiError::field(&at("content"), format!("{} must be a string or a list of text parts", at("content")))),
    };
    let mut out = m.clone();
    out["role"] = json!(role);
    out["content"] = json!(content);
    Ok(out)
}

/// Most choices one request may ask for (`n`), as OpenAI's API allows.
const MAX_N: u64 = 128;

/// Checks the sampling fields against the model and builds the requests:
/// one per choice (`n`), each with its own seed (the request's seed plus
/// the choice's index), so that the choices differ when sampling and a
/// seed repeats all of them.
fn build(
    ready: &Ready,
    prompt: Vec<u32>,
    s: &Sampling,
    logprobs: Option<usize>,
    mut stop: Vec<String>,
    chat: bool,
) -> Result<Vec<(GenRequest, UnboundedReceiver<Event>)>, ApiError> {
    let n = s.n.unwrap_or(1);
    if !(1..=MAX_N).contains(&n) {
        return Err(ApiError::field("n", format!("n must be between 1 and {MAX_N}, got {n}")));
    }
    if let Some(f) = s.response_format.as_ref().filter(|f| f.kind != "text") {
        return Err(ApiError::field("response_format", format!("response_format of type \"{}\" is not supported; only \"text\"", f.kind)));
    }
    if prompt.is_empty() {
        return Err(ApiError::field("prompt", "the prompt is empty after tokenization"));
    }
    let (p, ctx) = (prompt.len(), ready.ctx);
    if p >= ctx {
        // Whatever max_tokens says: the prompt alone is what must shrink.
        let (field, what) = if chat { ("messages", "the conversation") } else { ("prompt", "the prompt") };
        return Err(ApiError::field(
            field,
            format!(
                "the prompt is {p} tokens, which leaves no room for a reply in the model's context of {ctx} tokens; shorten {what} to {} tokens or fewer",
                ctx - 1
            ),
        )
        .code("context_length_exceeded"));
    }
    let max_tokens = match s.max_completion_tokens.or(s.max_tokens) {
        Some(0) => return Err(ApiError::field("max_tokens", "max_tokens must be at least 1")),
        Some(m) if p as u64 + m > ctx as u64 => {
            return Err(ApiError::field(
                "max_tokens",
                format!(
                    "the prompt is {p} tokens and max_tokens is {m}: {} in all, more than the model's context of {ctx} tokens; lower max_tokens to {} or less",
                    p as u64 + m,
                    ctx.saturating_sub(p)
                ),
            )
            .code("context_length_exceeded"))
        }
        Some(m) => m as usize,
        None => ctx - p,
    };
    let g = &ready.gen_cfg;
    let greedy = g.do_sample == Some(false);
    let sampling = SamplerConfig {
        temperature: s.temperature.or(if greedy { Some(0.0) } else { g.temperature }).unwrap_or(1.0),
        top_k: s.top_k.map(|k| k as usize).or(g.top_k).unwrap_or(0),
        top_p: s.top_p.or(g.top_p).unwrap_or(1.0),
        repetition_penalty: 1.0,
    };
    if !(0.0..=2.0).contains(&sampling.temperature) {
        return Err(ApiError::field("temperature", format!("temperature must be between 0 and 2, got {}", sampling.temperature)));
    }
    if !(sampling.top_p > 0.0 && sampling.top_p <= 1.0) {
        return Err(ApiError::field("top_p", format!("top_p must be in (0, 1], got {}", sampling.top_p)));
    }
    for (name, v) in [("frequency_penalty", s.frequency_penalty), ("presence_penalty", s.presence_penalty)] {
        if v.is_some_and(|v| !(-2.0..=2.0).contains(&v)) {
            return Err(ApiError::field(name, format!("{name} must be between -2 and 2")));
        }
    }
    let user_stop = s.stop.clone().map(api::OneOrMany::into_vec).unwrap_or_default();
    if user_stop.len() > 4 {
        return Err(ApiError::field("stop", "at most 4 stop strings"));
    }
    stop.extend(user_stop);
    let eos = match (s.ignore_eos, chat) {
        (true, _) => Vec::new(),
        (false, true) => ready.eos_chat.clone(),
        (false, false) => ready.eos.clone(),
    };
    let logit_bias = logit_bias(s.logit_bias.as_ref(), ready.tok.vocab_size())?;
    let seed = s.seed.map_or_else(rand::random, |x| x as u64);
    let choice = |i: u64| {
        let (tx, rx) = unbounded_channel();
        let req = GenRequest {
            prompt: prompt.clone(),
            max_tokens,
            sampling,
            seed: seed.wrapping_add(i),
            frequency_penalty: s.frequency_penalty.unwrap_or(0.0),
            presence_penalty: s.presence_penalty.unwrap_or(0.0),
            logit_bias: logit_bias.clone(),
            stop: stop.clone(),
            eos: eos.clone(),
            logprobs,
            events: tx,
        };
        (req, rx)
    };
    Ok((0..n).map(choice).collect())
}

/// OpenAI's `logit_bias` as (id, bias): keys are token ids written as
/// strings, values between -100 and 100.
fn logit_bias(m: Option<&std::collections::BTreeMap<String, f32>>, vocab: usize) -> Result<Vec<(u32, f32)>, ApiError> {
    let field = |msg: String| ApiError::field("logit_bias", msg);
    m.into_iter()
        .flatten()
        .map(|(k, &b)| {
            let id: u32 = k.trim().parse().map_err(|_| field(format!("logit_bias keys are token ids such as \"50256\"; {k:?} is not one")))?;
            if id as usize >= vocab {
                return Err(field(format!("token id {id} in logit_bias is out of range for the vocabulary of {vocab}")));
            }
            if !(-100.0..=100.0).contains(&b) {
                return Err(field(format!("logit_bias values must be between -100 and 100; token {id} has {b}")));
            }
            Ok((id, b))
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
async fn run(
    st: &AppState,
    ready: &Ready,
    kind: Kind,
    prompt: Vec<u32>,
    s: Sampling,
    logprobs: Option<usize>,
    stop: Vec<String>,
    chat: bool,
) -> Result<Response, ApiError> {
    let reqs = build(ready, prompt, &s, logprobs, stop, chat)?;
    let (n, prompt_tokens) = (reqs.len(), reqs[0].0.prompt.len());
    if n > st.opts.queue {
        return Err(ApiError::field("n", format!("n = {n} is more than the {} requests this server queues at once (--queue); lower n", st.opts.queue)));
    }
    // Every choice is a sequence of its own: all of them queue, or none.
    for queued in 0..n {
        if !st.metrics.try_enqueue(st.opts.queue) {
            (0..queued).for_each(|_| st.metrics.dequeued());
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("the server is busy: {} requests are already waiting; try again later", st.opts.queue),
            )
            .code("queue_full"));
        }
    }
    // Each choice prefills the prompt (no cache is shared between them).
    st.metrics.prompt_tokens(n * prompt_tokens);
    let mut rxs = Vec::with_capacity(n);
    for (i, (req, rx)) in reqs.into_iter().enumerate() {
        if ready.work.send(Work::Generate(req, Instant::now())).is_err() {
            (i..n).for_each(|_| st.metrics.dequeued());
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down"));
        }
        rxs.push(rx);
    }
    // The choices' events as they come, each with its index.
    let events = futures_util::stream::select_all(rxs.into_iter().enumerate().map(|(i, rx)| UnboundedReceiverStream::new(rx).map(move |ev| (i, ev))));
    let fmt = Format {
        kind,
        id: format!("{}-{:016x}", if kind == Kind::Chat { "chatcmpl" } else { "cmpl" }, rand::random::<u64>()),
        created: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        model: ready.name.clone(),
        include_usage: s.stream_options.as_ref().is_some_and(|o| o.include_usage),
        logprobs: logprobs.is_some(),
    };
    if s.stream {
        let head = futures_util::stream::iter(fmt.start(n));
        let mut tally = Tally { left: n, prompt: prompt_tokens, completion: 0, ended: false };
        let body = events.scan((), move |_, (i, ev)| futures_util::future::ready(tally.chunks(&fmt, i, ev))).flat_map(futures_util::stream::iter);
        let sse = axum::response::Sse::new(head.chain(body).map(Ok::<_, Infallible>)).keep_alive(KeepAlive::default());
        return Ok(sse.into_response());
    }
    collect(fmt, n, events).await
}

/// Waits for every choice and answers with one JSON object.
async fn collect(fmt: Format, n: usize, mut events: impl futures_util::Stream<Item = (usize, Event)> + Unpin) -> Result<Response, ApiError> {
    let (mut texts, mut lps, mut finish) = (vec![String::new(); n], vec![Vec::new(); n], vec![None; n]);
    let (mut prompt, mut completion, mut left) = (0, 0, n);
    while let Some((i, ev)) = events.next().await {
        match ev {
            Event::Text { text, logprobs } => {
                texts[i].push_str(&text);
                lps[i].extend(logprobs);
            }
            Event::Error(e) => return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e)),
            Event::Done { finish_reason, prompt_tokens, completion_tokens } => {
                finish[i] = Some(finish_reason);
                // OpenAI's usage counts the prompt once, and every choice's tokens.
                (prompt, completion, left) = (prompt_tokens, completion + completion_tokens, left - 1);
                if left == 0 {
                    break;
                }
            }
        }
    }
    if left > 0 {
        return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the generation ended without a result"));
    }
    let choices: Vec<Value> = (0..n)
        .map(|i| {
            let lp = fmt.logprobs.then(|| fmt.logprobs_json(&lps[i], 0));
            match fmt.kind {
                Kind::Chat => json!({"index": i, "message": {"role": "assistant", "content": texts[i]}, "logprobs": lp, "finish_reason": finish[i]}),
                Kind::Completion => json!({"index": i, "text": texts[i], "logprobs": lp, "finish_reason": finish[i]}),
            }
        })
        .collect();
    let object = if fmt.kind == Kind::Chat { "chat.completion" } else { "text_completion" };
    let body = json!({"id": fmt.id, "object": object, "created": fmt.created, "model": fmt.model, "choices": choices, "usage": usage(prompt, completion)});
    Ok(Json(body).into_response())
}

/// A stream's count of the choices still running and of their tokens, for
/// the usage chunk and the final `[DONE]` after the last choice ends.
struct Tally {
    left: usize,
    prompt: usize,
    completion: usize,
    /// `[DONE]` has been sent (after the last choice, or an error).
    ended: bool,
}

impl Tally {
    /// Chunks for choice `i`'s event; None ends the stream.
    fn chunks(&mut self, fmt: &Format, i: usize, ev: Event) -> Option<Vec<Sse>> {
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

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// Turns engine events into OpenAI's response chunks.
struct Format {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    logprobs: bool,
}

impl Format {
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
    fn start(&self, n: usize) -> Vec<Sse> {
        match self.kind {
            Kind::Chat => (0..n)
                .map(|i| self.chunk(json!({"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}), Value::Null))
                .collect(),
            Kind::Completion => Vec::new(),
        }
    }

    /// Choice `i`'s event as chunks (`Tally` adds the usage and `[DONE]`
    /// after the last choice).
    fn chunks(&self, i: usize, ev: Event) -> Vec<Sse> {
        match ev {
            Event::Text { text, logprobs } => {
                let lp = if self.logprobs { self.logprobs_json(&logprobs, 0) } else { Value::Null };
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
    fn logprobs_json(&self, lps: &[TokenLogprob], offset: usize) -> Value {
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
            Kind::Completion => {
                let mut at = offset;
                let mut offsets = Vec::new();
                for t in lps {
                    offsets.push(at);
                    at += t.bytes.len();
                }
                let top: Vec<Value> =
                    lps.iter().map(|t| t.top.iter().map(|(_, b, lp)| (text(b), json!(lp))).collect::<serde_json::Map<_, _>>().into()).collect();
                json!({
                    "tokens": lps.iter().map(|t| text(&t.bytes)).collect::<Vec<_>>(),
                    "token_logprobs": lps.iter().map(|t| t.logprob).collect::<Vec<_>>(),
                    "top_logprobs": top,
                    "text_offset": offsets,
                })
            }
        }
    }
}
