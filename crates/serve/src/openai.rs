//! `POST /v1/chat/completions` and `POST /v1/completions`, whole or streamed
//! as Server-Sent Events in OpenAI's format.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use attn_generate::SamplerConfig;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::KeepAlive;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::api::{self, ApiError, ChatRequest, CompletionRequest, Prompt, Sampling};
use crate::engine::{Event, GenRequest, ScoreRequest, Work};
use crate::{AppState, Ready};

mod format;
use format::{usage, Echo, Format, Tally};

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
    run(st, ready, Kind::Chat, prompt, sampling, logprobs.map(|k| k as usize), template.end_of_turn(), true, None).await
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
    if req.suffix.is_some() {
        return Err(ApiError::field("suffix", "suffix (fill in the middle) is not supported"));
    }
    let (prompt, text) = match req.prompt {
        Prompt::Text(t) => (ready.tok.encode(&t).map_err(|e| ApiError::bad(e.to_string()))?, Some(t)),
        Prompt::Texts(mut v) if v.len() == 1 => (ready.tok.encode(&v[0]).map_err(|e| ApiError::bad(e.to_string()))?, Some(v.remove(0))),
        Prompt::Ids(ids) => (ids, None),
        Prompt::IdLists(mut v) if v.len() == 1 => (v.remove(0), None),
        _ => return Err(ApiError::field("prompt", "one prompt per request: a string, or a list of token ids")),
    };
    if let Some(bad) = prompt.iter().find(|&&i| i as usize >= ready.tok.vocab_size()) {
        return Err(ApiError::field("prompt", format!("token id {bad} is out of range for the vocabulary of {}", ready.tok.vocab_size())));
    }
    if req.logprobs.is_some_and(|k| k > 5) {
        return Err(ApiError::field("logprobs", "logprobs must be between 0 and 5"));
    }
    let echo = req.echo.then_some(text);
    run(st, ready, Kind::Completion, prompt, sampling, req.logprobs.map(|k| k as usize), Vec::new(), false, echo).await
}

/// The prompt as `echo` returns it: its text (as sent, or decoded from the
/// ids sent) and, with `logprobs`, each token's log probability given the
/// ones before it, which the engine computes in one pass over the prompt.
async fn echo(ready: &Ready, prompt: &[u32], text: Option<String>, logprobs: Option<usize>) -> Result<Echo, ApiError> {
    let text = match text {
        Some(t) => t,
        None => ready.tok.decode(prompt).map_err(|e| ApiError::field("prompt", e.to_string()))?,
    };
    let first = prompt.first().map(|&i| attn_generate::token_bytes(ready.tok.as_ref(), i)).unwrap_or_default();
    let rest = match logprobs {
        Some(top) if prompt.len() > 1 => {
            if prompt.len() > ready.ctx {
                return Err(ApiError::field("prompt", format!("the prompt is {} tokens, more than the model's context of {}", prompt.len(), ready.ctx)));
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            let job = ScoreRequest { prompt: prompt.to_vec(), top, reply: tx };
            ready.work.send(Work::Score(job)).map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down"))?;
            let scored = rx.await.map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down"))?;
            scored.map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e))?
        }
        _ => Vec::new(),
    };
    Ok(Echo { text, first, rest, scored: logprobs.is_some() })
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
/// seed repeats all of them. `score_only` (`echo` with `max_tokens: 0`)
/// checks the same fields and builds none: nothing is generated.
#[allow(clippy::too_many_arguments)]
fn build(
    ready: &Ready,
    prompt: &[u32],
    s: &Sampling,
    logprobs: Option<usize>,
    mut stop: Vec<String>,
    chat: bool,
    score_only: bool,
) -> Result<Vec<(GenRequest, UnboundedReceiver<Event>)>, ApiError> {
    let n = choices(s)?;
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
        Some(0) if score_only => 0,
        Some(0) => return Err(ApiError::field("max_tokens", "max_tokens must be at least 1 (or 0 with echo, to score the prompt)")),
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
    if score_only {
        return Ok(Vec::new());
    }
    let seed = s.seed.map_or_else(rand::random, |x| x as u64);
    let choice = |i: u64| {
        let (tx, rx) = unbounded_channel();
        let req = GenRequest {
            prompt: prompt.to_vec(),
            max_tokens,
            sampling,
            seed: seed.wrapping_add(i),
            frequency_penalty: s.frequency_penalty.unwrap_or(0.0),
            presence_penalty: s.presence_penalty.unwrap_or(0.0),
            logit_bias: logit_bias.clone(),
            stop: stop.clone(),
            eos: eos.clone(),
            logprobs,
            prompt_for_next: i + 1 < n,
            events: tx,
        };
        (req, rx)
    };
    Ok((0..n).map(choice).collect())
}

/// The number of choices asked for (`n`), checked.
fn choices(s: &Sampling) -> Result<u64, ApiError> {
    let n = s.n.unwrap_or(1);
    if !(1..=MAX_N).contains(&n) {
        return Err(ApiError::field("n", format!("n must be between 1 and {MAX_N}, got {n}")));
    }
    Ok(n)
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

/// Checks and queues the request's choices, then answers as they finish,
/// whole or streamed. `echo` is `Some(the prompt's text as sent, or None
/// when sent as ids)` where the prompt goes back before the completion;
/// with `max_tokens: 0` nothing is generated and every choice ends at once.
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
    echo: Option<Option<String>>,
) -> Result<Response, ApiError> {
    let score_only = echo.is_some() && s.max_tokens == Some(0);
    let reqs = build(ready, &prompt, &s, logprobs, stop, chat, score_only)?;
    let (n, prompt_tokens) = (choices(&s)? as usize, prompt.len());
    let echo = match echo {
        Some(text) => Some(self::echo(ready, &prompt, text, logprobs).await?),
        None => None,
    };
    let events = if score_only {
        let done = move |i| (i, Event::Done { finish_reason: "length", prompt_tokens, completion_tokens: 0 });
        futures_util::stream::iter((0..n).map(done)).boxed()
    } else {
        queue(st, ready, reqs)?.boxed()
    };
    let fmt = Format::new(kind, ready, &s, logprobs.is_some(), echo);
    if s.stream {
        let head = futures_util::stream::iter(fmt.start(n));
        let mut tally = Tally { left: n, prompt: prompt_tokens, completion: 0, ended: false };
        let body = events.scan((), move |_, (i, ev)| futures_util::future::ready(tally.chunks(&fmt, i, ev))).flat_map(futures_util::stream::iter);
        let sse = axum::response::Sse::new(head.chain(body).map(Ok::<_, Infallible>)).keep_alive(KeepAlive::default());
        return Ok(sse.into_response());
    }
    collect(fmt, n, events).await
}

/// Sends every choice to the engine (all of them queue, or none) and
/// returns their events as they come, each with its index.
fn queue(
    st: &AppState,
    ready: &Ready,
    reqs: Vec<(GenRequest, UnboundedReceiver<Event>)>,
) -> Result<impl futures_util::Stream<Item = (usize, Event)> + Send + 'static, ApiError> {
    let (n, prompt_tokens) = (reqs.len(), reqs[0].0.prompt.len());
    if n > st.opts.queue {
        return Err(ApiError::field("n", format!("n = {n} is more than the {} requests this server queues at once (--queue); lower n", st.opts.queue)));
    }
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
    st.metrics.prompt_tokens(prompt_tokens);
    let mut rxs = Vec::with_capacity(n);
    for (i, (req, rx)) in reqs.into_iter().enumerate() {
        if ready.work.send(Work::Generate(req, Instant::now())).is_err() {
            (i..n).for_each(|_| st.metrics.dequeued());
            return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down"));
        }
        rxs.push(rx);
    }
    Ok(futures_util::stream::select_all(rxs.into_iter().enumerate().map(|(i, rx)| UnboundedReceiverStream::new(rx).map(move |ev| (i, ev)))))
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
        .map(|i| match fmt.kind {
            Kind::Chat => {
                let lp = fmt.logprobs.then(|| fmt.logprobs_json(&lps[i]));
                json!({"index": i, "message": {"role": "assistant", "content": texts[i]}, "logprobs": lp, "finish_reason": finish[i]})
            }
            Kind::Completion => {
                let lp = fmt.logprobs.then(|| fmt.completion_logprobs(fmt.echo.as_ref(), &lps[i]));
                let text = fmt.echo.as_ref().map_or(String::new(), |e| e.text.clone()) + &texts[i];
                json!({"index": i, "text": text, "logprobs": lp, "finish_reason": finish[i]})
            }
        })
        .collect();
    let object = if fmt.kind == Kind::Chat { "chat.completion" } else { "text_completion" };
    let body = json!({"id": fmt.id, "object": object, "created": fmt.created, "model": fmt.model, "choices": choices, "usage": usage(prompt, completion)});
    Ok(Json(body).into_response())
}
