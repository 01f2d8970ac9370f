use std::path::PathBuf;

/// Everything that can go wrong building or loading a model. Each variant names
/// the file and field involved so the message tells the user what to fix.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // each variant's message, in its #[error], is its documentation
pub enum ModelError {
    #[error("unknown preset '{0}' (available: {1})")]
    UnknownPreset(String, String),
    #[error("invalid model config: {0}")]
    InvalidConfig(String),
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path}: invalid JSON: {err}")]
    Json { path: PathBuf, err: serde_json::Error },
    #[error("{path}: not a valid safetensors file ({detail}); the file may be truncated or corrupted, re-save or re-download it")]
    Safetensors { path: PathBuf, detail: String },
    #[error("{path}: tensor '{name}' is missing")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: tensor '{name}' has shape {found:?}, expected {expected:?} for this config.json")]
    ShapeMismatch { path: PathBuf, name: String, found: Vec<usize>, expected: Vec<usize> },
    #[error("{path}: tensor '{name}' has dtype {dtype}, expected F32")]
    DType { path: PathBuf, name: String, dtype: String },
    #[error("{path}: field \"{field}\" {msg}")]
    Field { path: PathBuf, field: String, msg: String },
    /// A request (batch, beam, cache) whose buffers exceed the memory available.
    #[error("{what} need {needed_gb:.1} GB, more than the {available_gb:.1} GB of memory available; {hint}")]
    OutOfMemory { what: String, needed_gb: f64, available_gb: f64, hint: String },
    #[error("{path}: the model needs {needed_gb:.1} GB for its weights alone, more than the {available_gb:.1} GB of memory available; {hint}")]
    TooLarge { path: PathBuf, needed_gb: f64, available_gb: f64, hint: String },
    #[error("{path}: tensor '{name}' holds {value} at index {index}; the weights are corrupt or came from a diverged run, use an earlier checkpoint")]
    NonFinite { path: PathBuf, name: String, index: usize, value: f32 },
    #[error("{path}: {count} tensors in the weights are not used by config.json: {names}; the config does not describe this checkpoint (check num_hidden_layers / n_layer)")]
    UnusedTensors { path: PathBuf, count: usize, names: String },
    #[error("{path}: unsupported {field} '{value}' ({hint})")]
    Unsupported { path: PathBuf, field: String, value: String, hint: String },
}

/// The model crate's result.
pub type Result<T> = std::result::Result<T, ModelError>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> ModelError {
    let path = path.into();
    move |err| ModelError::Io { path, err }
}
