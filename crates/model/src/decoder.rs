//! One type for every decoder attn trains and runs, so that training,
//! generation, evaluation and inspection are written once. Each method
//! forwards to the architecture's own implementation.

use std::collections::HashMap;
use std::path::Path;

use crate::checkpoint::{load_gpt, model_type, save_gpt};
use crate::error::{ModelError, Result};
use crate::kv::KvCache;
use crate::llama::{Llama, LlamaConfig};
use crate::llama_kv::LlamaCache;
use crate::params::ParamLayout;
use crate::{Gpt, GptConfig};

pub enum Decoder {
    Gpt(Gpt),
    Llama(Llama),
}

/// The shape of a decoder to build: a preset, or a folder's config.json.
#[derive(Clone, Debug, PartialEq)]
pub enum Architecture {
    Gpt(GptConfig),
    Llama(LlamaConfig),
}

impl Architecture {
    /// GPT presets (`baby`, `shakespeare-char`, `gpt2-124m`, ...) and `llama-baby`.
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "llama-baby" => Ok(Architecture::Llama(LlamaConfig::baby())),
            other => GptConfig::preset(other).map(Architecture::Gpt).map_err(|e| match e {
                ModelError::UnknownPreset(n, list) => ModelError::UnknownPreset(n, format!("{list}, llama-baby")),
                e => e,
            }),
        }
    }

    /// The config.json of a model folder.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        match model_type(dir)?.as_str() {
            "gpt2" => crate::checkpoint::read_gpt_config(dir).map(Architecture::Gpt),
            "llama" | "qwen2" => {
                let text = std::fs::read_to_string(&path).map_err(crate::error::io_err(&path))?;
                let v: serde_json::Value = serde_json::from_str(&text).map_err(|source| ModelError::Json { path: path.clone(), source })?;
                LlamaConfig::from_hf(&v, &path).map(Architecture::Llama)
            }
            other => {
                Err(ModelError::Unsupported { path, field: "model_type".into(), value: other.into(), hint: "decoders attn runs: gpt2, llama, qwen2".into() })
            }
        }
    }

    pub fn context(&self) -> usize {
        match self {
            Architecture::Gpt(c) => c.n_ctx,
            Architecture::Llama(c) => c.max_position,
        }
    }

    pub fn with_vocab(&self, vocab_size: usize) -> Self {
        match self {
            Architecture::Gpt(c) => Architecture::Gpt(GptConfig { vocab_size, ..c.clone() }),
            Architecture::Llama(c) => Architecture::Llama(LlamaConfig { vocab_size, ..c.clone() }),
        }
    }

    /// A randomly initialised model of this shape.
    pub fn build(&self, seed: u64) -> Result<Decoder> {
        Ok(match self {
            Architecture::Gpt(c) => Decoder::Gpt(Gpt::new(c.clone(), seed)?),
            Architecture::Llama(c) => Decoder::Llama(Llama::new(c.clone(), seed)),
        })
    }
}

/// A KV cache for the matching `Decoder`.
pub enum Cache {
    Gpt(KvCache),
    Llama(LlamaCache),
}

macro_rules! each {
    ($self:expr, $m:ident => $e:expr) => {
        match $self {
            Decoder::Gpt($m) => $e,
            Decoder::Llama($m) => $e,
        }
    };
}

impl Decoder {
    /// Loads a model folder by its config.json `model_type`: "gpt2", "llama" or "qwen2".
    pub fn load(dir: &Path) -> Result<(Self, HashMap<String, String>)> {
        match model_type(dir)?.as_str() {
            "gpt2" => load_gpt(dir).map(|(m, meta)| (Decoder::Gpt(m), meta)),
            "llama" | "qwen2" => Llama::load(dir).map(|(m, meta)| (Decoder::Llama(m), meta)),
            other => Err(ModelError::Unsupported {
                path: dir.join("config.json"),
                field: "model_type".into(),
                value: other.into(),
                hint: "decoders attn runs: gpt2, llama, qwen2".into(),
            }),
        }
    }

    pub fn save(&self, dir: &Path, metadata: Option<HashMap<String, String>>) -> Result<()> {
        match self {
            Decoder::Gpt(m) => save_gpt(dir, m, metadata),
            Decoder::Llama(m) => m.save(dir, metadata),
        }
    }

    /// One line for logs: type, layers, heads, channels, context, vocabulary, parameters.
    pub fn describe(&self) -> String {
        let kv = match self {
            Decoder::Llama(m) if m.config.num_kv_heads != m.config.num_heads => format!(" ({} KV heads)", m.config.num_kv_heads),
            _ => String::new(),
        };
        format!(
            "{}: {} layers, {} heads{kv}, {} channels, context {}, vocab {}, {:.2}M parameters",
            self.model_type(),
            self.n_layer(),
            self.n_head(),
            self.n_embd(),
            self.context(),
            self.vocab_size(),
            self.layout().num_params() as f64 / 1e6
        )
    }

    /// "gpt2", "llama" or "qwen2".
    pub fn model_type(&self) -> &str {
        match self {
            Decoder::Gpt(_) => "gpt2",
            Decoder::Llama(m) => &m.config.model_type,
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Decoder::Gpt(m) => m.config.vocab_size,
            Decoder::Llama(m) => m.config.vocab_size,
        }
    }

    /// Positions the model can attend over.
    pub fn context(&self) -> usize {
        match self {
            Decoder::Gpt(m) => m.config.n_ctx,
            Decoder::Llama(m) => m.config.max_position,
        }
    }

    pub fn n_layer(&self) -> usize {
        match self {
            Decoder::Gpt(m) => m.config.n_layer,
            Decoder::Llama(m) => m.config.num_layers,
        }
    }

    pub fn n_head(&self) -> usize {
        match self {
            Decoder::Gpt(m) => m.config.n_head,
            Decoder::Llama(m) => m.config.num_heads,
        }
    }

    pub fn n_embd(&self) -> usize {
        match self {
            Decoder::Gpt(m) => m.config.n_embd,
            Decoder::Llama(m) => m.config.hidden_size,
        }
    }

    /// The architecture's config, as a Hugging Face config.json object.
    pub fn hf_config(&self) -> serde_json::Value {
        match self {
            Decoder::Gpt(m) => serde_json::to_value(m.config.to_hf()).expect("serializes"),
            Decoder::Llama(m) => m.hf_config(),
        }
    }

    /// Training FLOPs of one step over B x T tokens, counting every GEMM
    /// (forward 2mnk, backward twice that) and attention's products in full
    /// T x T, as the kernels compute them.
    pub fn train_flops(&self, b: usize, t: usize) -> f64 {
        match self {
            Decoder::Gpt(m) => m.config.train_flops(b, t),
            Decoder::Llama(m) => {
                let c = &m.config;
                let n = (b * t) as f64;
                let per_layer = (c.qkv_width() + c.hidden_size + 3 * c.intermediate_size) as f64 * c.hidden_size as f64;
                let attention = 4.0 * (b * t * t * c.hidden_size) as f64;
                let head = (c.vocab_size * c.hidden_size) as f64;
                3.0 * (c.num_layers as f64 * (2.0 * n * per_layer + attention) + 2.0 * n * head)
            }
        }
    }

    pub fn layout(&self) -> &ParamLayout {
        each!(self, m => &m.layout)
    }

    pub fn params(&self) -> &[f32] {
        each!(self, m => &m.params)
    }

    /// Parameters to update and the gradients to update them with.
    pub fn params_and_grads(&mut self) -> (&mut [f32], &[f32]) {
        each!(self, m => (&mut m.params, &m.grads))
    }

    pub fn forward(&mut self, tokens: &[u32], targets: Option<&[u32]>, b: usize, t: usize) -> Result<Option<f32>> {
        each!(self, m => m.forward(tokens, targets, b, t))
    }

    pub fn backward(&mut self, loss_scale: f32) -> Result<()> {
        each!(self, m => m.backward(loss_scale))
    }

    pub fn zero_grad(&mut self) {
        each!(self, m => m.zero_grad())
    }

    pub fn logits(&self) -> &[f32] {
        each!(self, m => m.logits())
    }

    pub fn losses(&self) -> &[f32] {
        each!(self, m => m.losses())
    }

    pub fn attention_probs(&self, l: usize) -> &[f32] {
        each!(self, m => m.attention_probs(l))
    }

    pub fn residual_stream(&self, l: usize) -> &[f32] {
        each!(self, m => m.residual_stream(l))
    }

    pub fn head(&self, hidden: &[f32], n: usize) -> Vec<f32> {
        each!(self, m => m.head(hidden, n))
    }

    pub fn token_embeddings(&self) -> &[f32] {
        each!(self, m => m.token_embeddings())
    }

    pub fn new_cache(&self) -> Cache {
        match self {
            Decoder::Gpt(m) => Cache::Gpt(KvCache::new(m)),
            Decoder::Llama(m) => Cache::Llama(LlamaCache::new(m)),
        }
    }

    /// Runs the prompt in one batched pass and fills the cache; returns the next logits.
    pub fn prefill<'c>(&mut self, cache: &'c mut Cache, tokens: &[u32]) -> Result<&'c [f32]> {
        match (self, cache) {
            (Decoder::Gpt(m), Cache::Gpt(c)) => m.prefill(c, tokens),
            (Decoder::Llama(m), Cache::Llama(c)) => m.prefill(c, tokens),
            _ => Err(ModelError::InvalidConfig("this KV cache was made for another architecture".into())),
        }
    }

    /// One token at the cache's next position; returns the next logits.
    pub fn decode<'c>(&self, cache: &'c mut Cache, token: u32) -> Result<&'c [f32]> {
        match (self, cache) {
            (Decoder::Gpt(m), Cache::Gpt(c)) => m.decode(c, token),
            (Decoder::Llama(m), Cache::Llama(c)) => m.decode(c, token),
            _ => Err(ModelError::InvalidConfig("this KV cache was made for another architecture".into())),
        }
    }
}

impl Cache {
    pub fn len(&self) -> usize {
        match self {
            Cache::Gpt(c) => c.len(),
            Cache::Llama(c) => c.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_full(&self) -> bool {
        match self {
            Cache::Gpt(c) => c.is_full(),
            Cache::Llama(c) => c.is_full(),
        }
    }

    pub fn clear(&mut self) {
        match self {
            Cache::Gpt(c) => c.clear(),
            Cache::Llama(c) => c.clear(),
        }
    }
}
