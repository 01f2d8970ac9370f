//! `attn serve`: an OpenAI-compatible HTTP server with continuous batching,
//! and a web page to chat with a model and look inside it.
//!
//! - `engine.rs`: the scheduler thread that owns the model and decodes up to
//!   `--parallel` sequences per step;
//! - `openai.rs`: `/v1/chat/completions` and `/v1/completions`, plain and
//!   Server-Sent Events;
//! - `routes.rs`: the other endpoints (models, health, embeddings,
//!   tokenize, detokenize, attention, metrics) and the page;
//! - `api.rs`: request bodies and OpenAI-shaped errors; `metrics.rs`.
//!
//! The listener answers while the model loads (`/health` says 503), and a
//! shutdown signal lets every request in flight finish before `serve`
//! returns.

#![warn(missing_docs)]

mod api;
mod engine;
mod metrics;
mod openai;
mod routes;

use std::future::Future;
use std::sync::{Arc, OnceLock};

use attn_generate::GenerationConfig;
use attn_model::Transformer;
use attn_tokenizer::chat::ChatTemplate;
use attn_tokenizer::Tokenizer;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

pub use api::ApiError;
pub use metrics::Metrics;

/// Why the server could not load or start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A bad flag or model folder (the message names it).
    #[error("{0}")]
    Input(String),
    /// The model could not be inspected.
    #[error(transparent)]
    Inspect(#[from] attn_inspect::InspectError),
    /// The address could not be bound, or a file read.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// How the server runs; `attn serve`'s flags.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Sequences decoded together.
    pub parallel: usize,
    /// Requests that may wait for a slot; past it, 429.
    pub queue: usize,
    /// When set, every API request needs `Authorization: Bearer KEY`.
    pub api_key: Option<String>,
    /// An origin allowed to call the API from a browser (CORS).
    pub cors_origin: Option<String>,
    /// Largest request body, bytes; past it, 413.
    pub max_body_bytes: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions { parallel: 4, queue: 64, api_key: None, cors_origin: None, max_body_bytes: 2 << 20 }
    }
}

/// A decoder ready to serve: weights, tokenizer, chat template.
pub struct ChatModel {
    /// The id `/v1/models` lists: the model folder's name.
    pub name: String,
    /// The weights.
    pub model: Transformer,
    /// The folder's tokenizer.
    pub tok: Arc<dyn Tokenizer>,
    /// The folder's chat template, or why it could not be read (chat
    /// requests then fail with that message rather than falling back).
    pub template: Result<ChatTemplate, String>,
    /// The folder's sampling defaults (request fields win).
    pub gen_cfg: GenerationConfig,
}

/// An encoder for `/v1/embeddings` (`--embedding-model`).
pub struct Embedder {
    /// The id requests name it by: the folder's name.
    pub name: String,
    /// The encoder.
    pub bert: Transformer,
    /// Its tokenizer.
    pub tok: Arc<dyn Tokenizer>,
    /// Longest input, in tokens (sentence-transformers' `max_seq_length`).
    pub max_len: usize,
}

/// What loading gives the server.
pub struct Loaded {
    /// The decoder that answers completions and chat.
    pub chat: ChatModel,
    /// The encoder for embeddings, when one was given.
    pub embedder: Option<Embedder>,
}

/// The served model once loaded: what the HTTP side needs, and the channel
/// to the engine thread, which owns the weights.
pub(crate) struct Ready {
    pub name: String,
    pub tok: Arc<dyn Tokenizer>,
    pub template: Result<ChatTemplate, String>,
    pub gen_cfg: GenerationConfig,
    pub ctx: usize,
    /// End-of-sequence ids: the model's and generation_config.json's.
    pub eos: Vec<u32>,
    /// `eos` and the chat template's one-token end-of-turn ids, found once.
    pub eos_chat: Vec<u32>,
    pub work: std::sync::mpsc::Sender<engine::Work>,
    pub embedder: Option<Arc<Embedder>>,
}

pub(crate) struct AppState {
    pub opts: ServeOptions,
    pub metrics: Arc<Metrics>,
    pub ready: OnceLock<Result<Ready, String>>,
}

impl AppState {
    /// The model, or 503 while it loads (and 500 if loading failed).
    pub fn ready(&self) -> Result<&Ready, ApiError> {
        match self.ready.get() {
            None => {
                Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the model is still loading; try again shortly (GET /health says when)")
                    .code("model_loading"))
            }
            Some(Err(e)) => Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("the model failed to load: {e}"))),
            Some(Ok(r)) => Ok(r),
        }
    }
}

/// Serves on `listener` until `shutdown` resolves, then lets requests in
/// flight finish. `load` runs on a worker thread while the server already
/// answers (`/health` is 503 until it returns); if it fails, the server
/// stops and `serve` returns its error.
pub async fn serve<L, S>(listener: tokio::net::TcpListener, opts: ServeOptions, load: L, shutdown: S) -> Result<(), ServeError>
where
    L: FnOnce() -> Result<Loaded, String> + Send + 'static,
    S: Future<Output = ()> + Send + 'static,
{
    let state = Arc::new(AppState { opts: opts.clone(), metrics: Arc::new(Metrics::default()), ready: OnceLock::new() });
    let st = state.clone();
    let (failed_tx, failed_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::task::spawn_blocking(move || {
        let ready = load().and_then(|loaded| start_engine(loaded, &st));
        let failed = ready.is_err();
        // Set before the stop signal, so `serve` sees the error on its way out.
        let _ = st.ready.set(ready);
        if failed {
            let _ = failed_tx.send(());
        }
    });
    let stop = async move {
        tokio::select! {
            _ = shutdown => {},
            Ok(()) = failed_rx => {},
        }
    };
    let app = router(state.clone());
    axum::serve(listener, app).with_graceful_shutdown(stop).await?;
    match state.ready.get() {
        Some(Err(e)) => Err(ServeError::Input(e.clone())),
        _ => Ok(()),
    }
}

fn start_engine(loaded: Loaded, st: &AppState) -> Result<Ready, String> {
    let ChatModel { name, model, tok, template, gen_cfg } = loaded.chat;
    let mut eos = model.config.eos_token_ids.clone();
    eos.extend(&gen_cfg.eos_token_ids);
    let mut eos_chat = eos.clone();
    if let Ok(t) = &template {
        eos_chat.extend(t.end_of_turn_ids(tok.as_ref()));
    }
    let ctx = model.context();
    let (tx, rx) = std::sync::mpsc::channel();
    let parallel = st.opts.parallel.max(1);
    let scratch = model.new_batch_scratch(parallel).map_err(|e| format!("--parallel {parallel}: {e}"))?;
    let engine = engine::Engine { model, tok: tok.clone(), name: name.clone(), parallel, metrics: st.metrics.clone() };
    std::thread::Builder::new().name("attn-engine".into()).spawn(move || engine.run(rx, scratch)).map_err(|e| format!("starting the decoding thread: {e}"))?;
    Ok(Ready { name, tok, template, gen_cfg, ctx, eos, eos_chat, work: tx, embedder: loaded.embedder.map(Arc::new) })
}

fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/v1/chat/completions", post(openai::chat))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(routes::embeddings))
        .route("/v1/models", get(routes::models))
        .route("/v1/attention", post(routes::attention))
        .route("/tokenize", post(routes::tokenize))
        .route("/detokenize", post(routes::detokenize))
        .route("/metrics", get(routes::metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    let mut app = Router::new()
        .route("/", get(routes::page))
        .route("/app.js", get(routes::script))
        .route("/style.css", get(routes::style))
        .route("/health", get(routes::health))
        .merge(api)
        .fallback(routes::not_found)
        .layer(DefaultBodyLimit::max(state.opts.max_body_bytes))
        .with_state(state.clone());
    if let Some(origin) = &state.opts.cors_origin {
        let cors = tower_http::cors::CorsLayer::new()
            .allow_origin(origin.parse::<HeaderValue>().unwrap_or(HeaderValue::from_static("null")))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]);
        app = app.layer(cors);
    }
    app
}

/// `--api-key`: a missing or wrong bearer token is a 401.
async fn auth(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    use axum::response::IntoResponse;
    if let Some(key) = &st.opts.api_key {
        let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(key.as_str()) {
            st.metrics.error(401);
            let msg = if given.is_none() {
                "no API key: send the header Authorization: Bearer KEY"
            } else {
                "the API key is not the one this server was started with"
            };
            return ApiError::new(StatusCode::UNAUTHORIZED, msg).code("invalid_api_key").into_response();
        }
    }
    next.run(req).await
}

/// Binds `host:port` and serves until Ctrl-C or SIGTERM, which let the
/// requests in flight finish (a second Ctrl-C exits at once). `on_listen`
/// gets the bound address (port 0 picks a free one).
pub fn run_blocking<L>(host: &str, port: u16, opts: ServeOptions, load: L, on_listen: impl FnOnce(std::net::SocketAddr)) -> Result<(), ServeError>
where
    L: FnOnce() -> Result<Loaded, String> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind((host, port)).await.map_err(|e| ServeError::Input(format!("can't listen on {host}:{port}: {e}")))?;
        on_listen(listener.local_addr()?);
        serve(listener, opts, load, shutdown_signal()).await
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    eprintln!("shutting down: finishing the requests in flight (Ctrl-C again stops at once)");
    tokio::spawn(async {
        let _ = tokio::signal::ctrl_c().await;
        std::process::exit(130);
    });
}
