//! The endpoints besides the completions, and the web page.

use std::sync::Arc;

use attn_generate::SamplerConfig;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde_json::json;

use crate::api::{self, ApiError, AttentionRequest, DetokenizeRequest, EmbeddingRequest, Prompt, TokenizeRequest};
use crate::engine::{InspectRequest, Work};
use crate::openai::{body, counted};
use crate::AppState;

const PAGE: &str = include_str!("../web/index.html");
const SCRIPT: &str = include_str!("../web/app.js");
const STYLE: &str = include_str!("../web/style.css");

pub async fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response()
}

pub async fn script() -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], SCRIPT).into_response()
}

pub async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

pub async fn not_found(State(st): State<Arc<AppState>>, uri: Uri) -> ApiError {
    st.metrics.error(404);
    ApiError::new(StatusCode::NOT_FOUND, format!("no endpoint {}; see GET /v1/models, POST /v1/chat/completions, POST /v1/completions", uri.path()))
        .code("not_found")
}

/// 200 once the model is loaded, 503 while it loads (500 if it failed).
pub async fn health(State(st): State<Arc<AppState>>) -> Response {
    match st.ready.get() {
        None => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "loading"}))).into_response(),
        Some(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"status": "error", "message": e}))).into_response(),
        Some(Ok(r)) => Json(json!({
            "status": "ok", "model": r.name, "context": r.ctx, "slots_total": st.opts.parallel,
            "slots_busy": st.metrics.busy(), "queue_length": st.metrics.queue_len(),
            "chat_template": r.template.is_ok(), "embedding_model": r.embedder.as_ref().map(|e| e.name.clone()),
        }))
        .into_response(),
    }
}

pub async fn models(State(st): State<Arc<AppState>>) -> Result<Response, ApiError> {
    st.metrics.request("models");
    let r = counted(&st, st.ready())?;
    let entry = |id: &str| json!({"id": id, "object": "model", "created": 0, "owned_by": "attn"});
    let mut data = vec![entry(&r.name)];
    if let Some(e) = &r.embedder {
        data.push(entry(&e.name));
    }
    Ok(Json(json!({"object": "list", "data": data})).into_response())
}

pub async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], st.metrics.render()).into_response()
}

pub async fn tokenize(State(st): State<Arc<AppState>>, b: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let b = body(&st, b)?;
    st.metrics.request("tokenize");
    counted(
        &st,
        (|| {
            let req: TokenizeRequest = api::parse(&b, &["content", "add_special", "with_pieces", "model"])?;
            let r = st.ready()?;
            let ids = if req.add_special { r.tok.encode(&req.content) } else { r.tok.encode_plain(&req.content) }.map_err(|e| ApiError::bad(e.to_string()))?;
            if req.with_pieces {
                let pieces: Vec<_> = ids.iter().map(|&i| json!({"id": i, "piece": r.tok.piece(i)})).collect();
                return Ok(Json(json!({"tokens": pieces, "count": ids.len()})).into_response());
            }
            Ok(Json(json!({"tokens": ids, "count": ids.len()})).into_response())
        })(),
    )
}

pub async fn detokenize(State(st): State<Arc<AppState>>, b: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let b = body(&st, b)?;
    st.metrics.request("detokenize");
    counted(
        &st,
        (|| {
            let req: DetokenizeRequest = api::parse(&b, &["tokens", "model"])?;
            let r = st.ready()?;
            if let Some(bad) = req.tokens.iter().find(|&&i| i as usize >= r.tok.vocab_size()) {
                return Err(ApiError::field("tokens", format!("token id {bad} is out of range for the vocabulary of {}", r.tok.vocab_size())));
            }
            let text = r.tok.decode(&req.tokens).map_err(|e| ApiError::bad(e.to_string()))?;
            Ok(Json(json!({"content": text})).into_response())
        })(),
    )
}

pub async fn embeddings(State(st): State<Arc<AppState>>, b: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let b = body(&st, b)?;
    st.metrics.request("embeddings");
    counted(&st, embeddings_inner(&st, &b).await)
}

async fn embeddings_inner(st: &AppState, b: &[u8]) -> Result<Response, ApiError> {
    let req: EmbeddingRequest = api::parse(b, api::EMBEDDING_FIELDS)?;
    let r = st.ready()?;
    let Some(e) = r.embedder.clone() else {
        return Err(ApiError::bad("this server has no embedding model; start it with --embedding-model DIR (a BERT / sentence-transformers folder)"));
    };
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(f) => return Err(ApiError::field("encoding_format", format!("encoding_format must be \"float\" or \"base64\", got \"{f}\""))),
    };
    if req.dimensions.is_some_and(|d| d as usize != e.bert.config.n_embd) {
        return Err(ApiError::field("dimensions", format!("this model's embeddings have {} dimensions; other sizes are not supported", e.bert.config.n_embd)));
    }
    let enc = |t: &str| e.tok.encode(t).map_err(|err| ApiError::bad(err.to_string()));
    let inputs: Vec<Vec<u32>> = match req.input {
        Prompt::Text(t) => vec![enc(&t)?],
        Prompt::Texts(v) => v.iter().map(|t| enc(t)).collect::<Result<_, _>>()?,
        Prompt::Ids(ids) => vec![ids],
        Prompt::IdLists(v) => v,
    };
    if inputs.is_empty() || inputs.len() > 2048 {
        return Err(ApiError::field("input", "input must hold 1 to 2048 texts"));
    }
    for (i, ids) in inputs.iter().enumerate() {
        if ids.is_empty() {
            return Err(ApiError::field("input", format!("input {i} is empty")));
        }
        if ids.len() > e.max_len {
            return Err(
                ApiError::field("input", format!("input {i} is {} tokens; this model takes at most {}", ids.len(), e.max_len)).code("context_length_exceeded")
            );
        }
        if let Some(bad) = ids.iter().find(|&&x| x as usize >= e.bert.config.vocab_size) {
            return Err(ApiError::field("input", format!("input {i}: token id {bad} is out of range")));
        }
    }
    let tokens: usize = inputs.iter().map(Vec::len).sum();
    let e2 = e.clone();
    let vecs = tokio::task::spawn_blocking(move || e2.bert.embed(&inputs, 8192))
        .await
        .map_err(|err| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))?
        .map_err(|err| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string()))?;
    let data: Vec<_> = vecs
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data, "model": e.name, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})).into_response())
}

/// attn's own: the attention maps and the next-token distribution of a
/// text, the numbers `attn inspect` gives.
pub async fn attention(State(st): State<Arc<AppState>>, b: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let b = body(&st, b)?;
    st.metrics.request("attention");
    counted(&st, attention_inner(&st, &b).await)
}

async fn attention_inner(st: &AppState, b: &[u8]) -> Result<Response, ApiError> {
    let req: AttentionRequest = api::parse(b, api::ATTENTION_FIELDS)?;
    let r = st.ready()?;
    let sampling =
        SamplerConfig { temperature: req.temperature.unwrap_or(1.0), top_k: req.top_k.unwrap_or(0), top_p: req.top_p.unwrap_or(1.0), repetition_penalty: 1.0 };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job = InspectRequest { text: req.text, layer: req.layer, head: req.head, top: req.top.unwrap_or(10).clamp(1, 100), sampling, reply: tx };
    r.work.send(Work::Inspect(job)).map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the server is shutting down"))?;
    match rx.await {
        Ok(Ok(v)) => Ok(Json(v).into_response()),
        Ok(Err(e)) => Err(ApiError::bad(e)),
        Err(_) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the inspection ended without a result")),
    }
}
