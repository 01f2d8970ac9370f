use std::path::{Path, PathBuf};

/// Why a run could not start, go on or save.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // each variant's message, in its #[error], is its documentation
pub enum TrainError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{0}")]
    Data(String),
    #[error("{0}")]
    Config(String),
    #[error("cannot resume from {path}: {msg}")]
    Resume { path: PathBuf, msg: String },
    #[error("the loss or the gradients were not finite for {count} steps in a row (step {step}: loss {loss}, gradient norm {norm}); no update was applied, and the last checkpoint ({}) is intact. Lower --lr, check --weight-decay, --beta1 and --beta2, or check the data", last_checkpoint.map_or("none yet".to_string(), |s| format!("step {s}")))]
    Diverged { step: usize, count: usize, loss: f32, norm: f32, last_checkpoint: Option<usize> },
    #[error("saving the step-{step} checkpoint in {dir} failed: {msg}. {}", previous.map_or("No earlier checkpoint exists".to_string(), |p| format!("The step-{p} checkpoint is intact; free the space (or fix the cause) and continue with --resume")))]
    Checkpoint { step: usize, dir: PathBuf, previous: Option<usize>, msg: String },
    #[error(transparent)]
    Model(#[from] attn_model::ModelError),
    #[error(transparent)]
    Tokenizer(#[from] attn_tokenizer::TokenizerError),
}

/// The training crate's result.
pub type Result<T> = std::result::Result<T, TrainError>;

impl TrainError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError {
        let path = path.to_path_buf();
        move |err| TrainError::Io { path, err }
    }
}
