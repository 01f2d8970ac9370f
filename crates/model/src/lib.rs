//! Transformer models for attn: configs with typed presets, the flat parameter
//! store named after Hugging Face tensors, the GPT-2 architecture with explicit
//! forward and backward passes, and checkpoint I/O.
//!
//! ```
//! use attn_model::{Gpt, GptConfig};
//! let cfg = GptConfig { vocab_size: 11, n_ctx: 8, n_layer: 1, n_head: 2, n_embd: 8, ..GptConfig::baby() };
//! let mut model = Gpt::new(cfg, 0).unwrap();
//! let tokens = [1u32, 2, 3, 4];
//! let loss = model.forward(&tokens, Some(&[2, 3, 4, 5]), 1, 4).unwrap().unwrap();
//! // An untrained model is close to uniform over the vocabulary.
//! assert!((loss - (11f32).ln()).abs() < 0.5);
//! model.backward(1.0).unwrap();
//! ```

pub mod bert;
pub mod checkpoint;
mod config;
mod decoder;
mod error;
mod gpt;
pub mod kv;
pub mod llama;
pub mod llama_kv;
pub mod params;

pub use config::{GptConfig, HfGpt2Config, PositionEncoding, PRESETS};
pub use decoder::{Architecture, Cache, Decoder};
pub use error::{ModelError, Result};
pub use gpt::Gpt;
pub use kv::KvCache;
