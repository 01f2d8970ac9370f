//! Request bodies and errors in OpenAI's shapes.
//!
//! Bodies are read as bytes (the size limit gives 413), parsed as JSON (400
//! for bad JSON), checked for unknown fields (400 naming the field: a typo
//! such as `temprature` must not be ignored silently), then read into typed
//! structs with the path of any bad value named.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// `{"error": {"message", "type", "param", "code"}}` with an HTTP status.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong and how to fix it.
    pub message: String,
    /// The request field at fault, where one is.
    pub param: Option<String>,
    /// A machine-readable code (OpenAI's, e.g. `context_length_exceeded`).
    pub code: Option<&'static str>,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), param: None, code: None }
    }
    /// A 400.
    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    /// A 400 about one field.
    pub fn field(param: &str, message: impl Into<String>) -> Self {
        ApiError { param: Some(param.to_string()), ..Self::bad(message) }
    }
    /// The same error with `code` set.
    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }
    fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            429 => "rate_limit_error",
            500..=599 => "server_error",
            _ => "invalid_request_error",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"message": self.message, "type": self.kind(), "param": self.param, "code": self.code}});
        (self.status, axum::Json(body)).into_response()
    }
}

/// Parses a body: JSON, only the `allowed` fields, then the typed struct.
pub fn parse<T: DeserializeOwned>(body: &[u8], allowed: &[&str]) -> Result<T, ApiError> {
    typed(&json_body(body, allowed)?)
}

/// The body as a JSON object holding only `allowed` fields.
pub fn json_body(body: &[u8], allowed: &[&str]) -> Result<serde_json::Value, ApiError> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("the request body is not valid JSON: {e}")))?;
    let obj = v.as_object().ok_or_else(|| ApiError::bad("the request body must be a JSON object"))?;
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::field(k, format!("unrecognized field \"{k}\"; this endpoint takes: {}", allowed.join(", "))));
    }
    Ok(v)
}

/// The typed struct of a checked body, naming the field of a bad value.
/// (Each struct reads its own fields of the body and ignores the rest:
/// serde's `flatten` would lose the path of the bad value.)
pub fn typed<T: DeserializeOwned>(v: &serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        ApiError::field(&path, format!("field \"{path}\": {}", e.inner()))
    })
}

/// A string or a list of strings (OpenAI's `stop`).
#[derive(Deserialize, Clone, Debug)]
#[serde(untagged, expecting = "expected a string or a list of strings")]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize, Clone, Debug, Default)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Deserialize, Clone, Debug)]
pub struct ResponseFormat {
    #[serde(rename = "type")]
    pub kind: String,
}

/// What both completion endpoints take besides the prompt.
#[derive(Deserialize, Clone, Debug, Default)]
pub struct Sampling {
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// Not in OpenAI's API; llama.cpp and vLLM take it too.
    pub top_k: Option<u64>,
    pub seed: Option<i64>,
    pub stop: Option<OneOrMany>,
    pub n: Option<u64>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub response_format: Option<ResponseFormat>,
    /// Token id (as a string, JSON keys being strings) -> a number from -100
    /// to 100 added to that token's logit before each draw.
    pub logit_bias: Option<std::collections::BTreeMap<String, f32>>,
    /// attn's own: go on past end-of-sequence tokens (for benchmarks).
    #[serde(default)]
    pub ignore_eos: bool,
}

/// Fields every completion request may carry.
pub const SAMPLING_FIELDS: &[&str] = &[
    "model",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop",
    "n",
    "stream",
    "stream_options",
    "frequency_penalty",
    "presence_penalty",
    "response_format",
    "logit_bias",
    "ignore_eos",
    "user",
    "logprobs",
];

#[derive(Deserialize, Debug)]
pub struct ChatRequest {
    pub messages: Vec<serde_json::Value>,
    #[serde(default)]
    pub logprobs: bool,
    pub top_logprobs: Option<u64>,
}

pub const CHAT_FIELDS: &[&str] = &["messages", "top_logprobs", "max_completion_tokens"];

#[derive(Deserialize, Debug)]
pub struct CompletionRequest {
    pub prompt: Prompt,
    pub logprobs: Option<u64>,
    #[serde(default)]
    pub echo: bool,
    pub suffix: Option<String>,
}

pub const COMPLETION_FIELDS: &[&str] = &["prompt", "echo", "suffix"];

/// A completion prompt: text, one text in a list, or token ids.
#[derive(Deserialize, Debug)]
#[serde(untagged, expecting = "expected a string, a list of strings, a list of token ids or a list of such lists")]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Ids(Vec<u32>),
    IdLists(Vec<Vec<u32>>),
}

#[derive(Deserialize, Debug)]
pub struct EmbeddingRequest {
    pub input: Prompt,
    pub encoding_format: Option<String>,
    pub dimensions: Option<u64>,
}

pub const EMBEDDING_FIELDS: &[&str] = &["input", "model", "encoding_format", "dimensions", "user"];

#[derive(Deserialize, Debug)]
pub struct TokenizeRequest {
    pub content: String,
    #[serde(default)]
    pub add_special: bool,
    #[serde(default)]
    pub with_pieces: bool,
}

#[derive(Deserialize, Debug)]
pub struct DetokenizeRequest {
    pub tokens: Vec<u32>,
}

#[derive(Deserialize, Debug)]
pub struct AttentionRequest {
    pub text: String,
    pub layer: Option<usize>,
    pub head: Option<usize>,
    pub top: Option<usize>,
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
}

pub const ATTENTION_FIELDS: &[&str] = &["text", "layer", "head", "top", "temperature", "top_k", "top_p", "model"];
