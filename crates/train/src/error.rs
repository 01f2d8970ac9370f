use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{0}")]
    Data(String),
    #[error("{0}")]
    Config(String),
    #[error("cannot resume from {path}: {msg}")]
    Resume { path: PathBuf, msg: String },
    #[error(transparent)]
    Model(#[from] attn_model::ModelError),
    #[error(transparent)]
    Tokenizer(#[from] attn_tokenizer::TokenizerError),
}

pub type Result<T> = std::result::Result<T, TrainError>;

impl TrainError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError {
        let path = path.to_path_buf();
        move |err| TrainError::Io { path, err }
    }
}
