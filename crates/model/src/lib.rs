//! Transformer models for attn: one checked config for every decoder
//! (GPT-2, Llama, Qwen2, Mistral) and encoder (BERT), the flat parameter store named after
//! Hugging Face tensors, the `Transformer` with explicit forward and backward
//! passes, an inference path with a KV cache, BERT as an encoder config of
//! the same blocks, and checkpoint I/O.
//!
//! ```
//! use attn_model::{Transformer, TransformerConfig};
//! let cfg = TransformerConfig { vocab_size: 11, n_ctx: 8, ..TransformerConfig::gpt2(11, 8, 1, 2, 8) };
//! let mut model = Transformer::new(cfg, 0).unwrap();
//! let tokens = [1u32, 2, 3, 4];
//! let loss = model.forward(&tokens, Some(&[2, 3, 4, 5]), 1, 4).unwrap().unwrap();
//! // An untrained model is close to uniform over the vocabulary.
//! assert!((loss - (11f32).ln()).abs() < 0.5);
//! model.backward(1.0).unwrap();
//! // The inference path gives the same next-token logits from a KV cache.
//! let mut cache = model.new_cache(8).unwrap();
//! let next = model.prefill(&mut cache, &tokens).unwrap().to_vec();
//! model.forward(&tokens, None, 1, 4).unwrap();
//! let full = &model.logits()[3 * 11..4 * 11];
//! assert!(next.iter().zip(full).all(|(a, b)| (a - b).abs() < 1e-5));
//! ```

#![warn(missing_docs)]

pub mod checkpoint;
mod config;
mod error;
pub mod hf;
pub mod lora;
pub mod params;
pub mod quant;
mod seq2seq;
mod transformer;

pub use attn_kernels::kv_cache::KvDtype;
pub use config::{Family, Mlp, Norm, NormPosition, Position, RopeScaling, TransformerConfig, PRESETS};
pub use error::{ModelError, Result};
pub use seq2seq::{is_seq2seq_dir, DecoderCache, EncoderMemory, Seq2Seq, Seq2SeqBatch, Seq2SeqConfig, Seq2SeqFamily, Seq2SeqLoss, SEQ2SEQ_PRESETS};
pub use transformer::config_from_dir;
pub use transformer::{available_memory, ensure_memory, kv_cache_bytes, BatchScratch, Cache, EncoderOutput, Transformer};
