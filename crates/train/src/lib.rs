//! Training for attn: token shards on disk, seeded batch sampling, the
//! optimizer over the flat parameter buffer, the training loop with warmup and
//! cosine decay, metrics, loss curves, and exactly resumable checkpoints.
//!
//! A run folder is a Hugging Face model folder plus the training state:
//! `config.json`, `model.safetensors`, `tokenizer.json`,
//! `trainer_state.safetensors`, `metrics.jsonl`, `loss.png`, `data/*.bin`.

#![warn(missing_docs)]

pub mod classify;
pub mod data;
mod error;
pub mod eval;
pub mod metrics;
pub mod mt_metrics;
pub mod optim;
pub mod pairs;
pub mod run_dir;
mod session;
pub mod sft;
pub mod trainer;
pub mod translation;

pub use error::{Result, TrainError};
pub use session::saved_train_config;
pub use trainer::{train, TokenizerSpec, TrainConfig, TrainRun, TrainSummary};
