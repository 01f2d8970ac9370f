//! One checked config for every decoder attn builds: GPT-2, Llama, Qwen2 and
//! Mistral are values of it, not separate types. Presets are typed
//! constructors; `hf.rs` reads and writes Hugging Face `config.json` files.

pub use attn_kernels::rope::RopeScaling;

use std::path::Path;

use crate::error::{ModelError, Result};

/// Which normalisation the blocks use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Norm {
    /// LayerNorm with weight and bias (GPT-2).
    Layer,
    /// RMSNorm with a weight only (Llama).
    Rms,
}

/// Where each block normalises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormPosition {
    /// x + f(N(x)), with a final norm after the last block (GPT-2, Llama).
    Pre,
    /// N(x + f(x)), no final norm (BERT, "Attention Is All You Need").
    Post,
}

/// How word order enters the model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Position {
    /// A trained (maxT, C) table added to the embeddings, GPT-2's `wpe`.
    Learned,
    /// The fixed sin/cos table of "Attention Is All You Need"; no parameters.
    Sinusoidal,
    /// Rotary embeddings on queries and keys.
    /// `theta`: the base of the rotation frequencies; `scaling`: how they
    /// stretch past the trained context.
    #[allow(missing_docs)]
    Rope { theta: f32, scaling: RopeScaling },
}

/// The feed-forward network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mlp {
    /// up -> GELU (tanh form, `gelu_new`) -> down (GPT-2).
    Gelu,
    /// up -> GELU (exact, with erf) -> down (BERT's `gelu`).
    GeluErf,
    /// down(silu(gate(x)) * up(x)) (Llama).
    SwiGlu,
}

/// The checkpoint family: tensor names, weight layout and `model_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `transformer.h.{i}.attn.c_attn`, Conv1D weights stored (in, out).
    Gpt2,
    /// `model.layers.{i}.self_attn.q_proj`, Linear weights stored (out, in).
    Llama,
    /// Llama's names, with biases on q, k and v.
    Qwen2,
    /// Llama's names and shapes (`model_type` mistral).
    Mistral,
    /// `encoder.layer.{i}.attention.self.query`, an encoder without a head.
    Bert,
}

impl Family {
    /// config.json's `model_type`.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Gpt2 => "gpt2",
            Family::Llama => "llama",
            Family::Qwen2 => "qwen2",
            Family::Mistral => "mistral",
            Family::Bert => "bert",
        }
    }
}

/// A resolved, validated decoder config.
#[derive(Clone, Debug, PartialEq)]
pub struct TransformerConfig {
    /// Tensor names, layouts and `model_type`.
    pub family: Family,
    /// Token ids run from 0 to this, exclusive.
    pub vocab_size: usize,
    /// Positions the model attends over (`n_positions`, `max_position_embeddings`).
    pub n_ctx: usize,
    /// Transformer blocks.
    pub n_layer: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (grouped-query attention when below `n_head`).
    pub n_kv_head: usize,
    /// Channels per head (n_embd / n_head unless the config says).
    pub head_dim: usize,
    /// Width of the residual stream.
    pub n_embd: usize,
    /// Width of the feed-forward network's hidden layer.
    pub d_ff: usize,
    /// LayerNorm or RMSNorm.
    pub norm: Norm,
    /// Before each sublayer (GPT-2, Llama) or after the residual add (BERT).
    pub norm_position: NormPosition,
    /// Added to the variance inside each norm.
    pub norm_eps: f32,
    /// Queries see only earlier keys (decoders) or every key (encoders).
    pub causal: bool,
    /// Token-type (segment) embeddings added to the input; 0 for none.
    pub type_vocab_size: usize,
    /// A norm over the summed embeddings (BERT).
    pub embed_norm: bool,
    /// How positions enter.
    pub position: Position,
    /// The feed-forward network.
    pub mlp: Mlp,
    /// Biases on the q, k and v projections.
    pub qkv_bias: bool,
    /// Biases on the attention output and both MLP projections.
    pub dense_bias: bool,
    /// The output head is the token embedding (no separate `lm_head`).
    pub tied_head: bool,
    /// Token ids that end generation (config.json's `eos_token_id`).
    pub eos_token_ids: Vec<u32>,
    /// A sequence classifier's labels in id order (`id2label`); empty for a
    /// language model or an encoder. A classifier has no LM head: GPT-2 and
    /// Llama end in `score` (K, C) read at the last real token, BERT in its
    /// pooler (dense + tanh over `[CLS]`) and `classifier`.
    pub labels: Vec<String>,
    /// The config.json this came from (or null), so that saving keeps the
    /// fields attn does not use, such as names and token ids.
    pub hf: serde_json::Value,
}

/// Names accepted by `--preset`.
pub const PRESETS: &[&str] = &["gpt2-124m", "gpt2-350m", "shakespeare-char", "baby", "llama-baby"];

impl TransformerConfig {
    /// GPT-2 small: 12 layers, 12 heads, 768 channels, 1024 context, 50257 tokens.
    pub fn gpt2_124m() -> Self {
        Self::gpt2(50257, 1024, 12, 12, 768)
    }
    /// GPT-2 medium.
    pub fn gpt2_350m() -> Self {
        Self::gpt2(50257, 1024, 24, 16, 1024)
    }
    /// nanoGPT's character-level Shakespeare model: 6 layers, 6 heads, 384 channels, 256 context.
    pub fn shakespeare_char() -> Self {
        Self::gpt2(65, 256, 6, 6, 384)
    }
    /// A model that trains in minutes on two cores: 4 layers, 4 heads, 128 channels, 64 context.
    pub fn baby() -> Self {
        Self::gpt2(65, 64, 4, 4, 128)
    }

    /// A GPT-2-architecture config (learned positions, LayerNorm, GELU, tied head).
    pub fn gpt2(vocab_size: usize, n_ctx: usize, n_layer: usize, n_head: usize, n_embd: usize) -> Self {
        TransformerConfig {
            family: Family::Gpt2,
            vocab_size,
            n_ctx,
            n_layer,
            n_head,
            n_kv_head: n_head,
            head_dim: n_embd / n_head.max(1),
            n_embd,
            d_ff: n_embd.saturating_mul(4),
            norm: Norm::Layer,
            norm_position: NormPosition::Pre,
            norm_eps: 1e-5,
            causal: true,
            type_vocab_size: 0,
            embed_norm: false,
            position: Position::Learned,
            mlp: Mlp::Gelu,
            qkv_bias: true,
            dense_bias: true,
            tied_head: true,
            eos_token_ids: Vec::new(),
            labels: Vec::new(),
            hf: serde_json::Value::Null,
        }
    }

    /// A small Llama shaped like `baby`: 4 layers, 4 query heads sharing 2 KV
    /// heads, 128 channels, context 64, tied embeddings.
    pub fn llama_baby() -> Self {
        TransformerConfig {
            family: Family::Llama,
            vocab_size: 65,
            n_ctx: 64,
            n_layer: 4,
            n_head: 4,
            n_kv_head: 2,
            head_dim: 32,
            n_embd: 128,
            d_ff: 344,
            norm: Norm::Rms,
            norm_position: NormPosition::Pre,
            norm_eps: 1e-5,
            causal: true,
            type_vocab_size: 0,
            embed_norm: false,
            position: Position::Rope { theta: 10_000.0, scaling: RopeScaling::None },
            mlp: Mlp::SwiGlu,
            qkv_bias: false,
            dense_bias: false,
            tied_head: true,
            eos_token_ids: Vec::new(),
            labels: Vec::new(),
            hf: serde_json::Value::Null,
        }
    }

    /// A BERT encoder: post-LayerNorm blocks, bidirectional attention, exact
    /// GELU, learned positions, token types and a norm over the embeddings.
    pub fn bert(vocab_size: usize, n_ctx: usize, n_layer: usize, n_head: usize, n_embd: usize, d_ff: usize) -> Self {
        TransformerConfig {
            family: Family::Bert,
            d_ff,
            norm_position: NormPosition::Post,
            norm_eps: 1e-12,
            causal: false,
            type_vocab_size: 2,
            embed_norm: true,
            mlp: Mlp::GeluErf,
            tied_head: false,
            ..Self::gpt2(vocab_size, n_ctx, n_layer, n_head, n_embd)
        }
    }

    /// Whether the model ends in a language-model head (decoders) or in its
    /// hidden states (encoders). A BERT config with `tied_head` reads its
    /// hidden states through the word embeddings, which lets the tests train
    /// the post-norm encoder blocks on a next-token loss.
    pub fn has_head(&self) -> bool {
        self.labels.is_empty() && (self.family != Family::Bert || self.tied_head)
    }

    /// Whether the model ends in a sequence-classification head.
    pub fn is_classifier(&self) -> bool {
        !self.labels.is_empty()
    }

    /// A named shape (`baby`, `gpt2-124m`, `llama-baby`, ...); an unknown
    /// name is an error listing the known ones.
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "gpt2-124m" | "gpt2" => Ok(Self::gpt2_124m()),
            "gpt2-350m" | "gpt2-medium" => Ok(Self::gpt2_350m()),
            "shakespeare-char" => Ok(Self::shakespeare_char()),
            "baby" => Ok(Self::baby()),
            "llama-baby" => Ok(Self::llama_baby()),
            _ => Err(ModelError::UnknownPreset(name.to_string(), PRESETS.join(", "))),
        }
    }

    /// The same model with another vocabulary size (runs take it from their tokenizer).
    pub fn with_vocab(&self, vocab_size: usize) -> Self {
        Self { vocab_size, ..self.clone() }
    }

    /// Checks every size and value that the arithmetic depends on.
    pub fn validate(&self) -> Result<()> {
        self.validate_at(Path::new("the model config"))
    }

    /// As `validate`, with errors that name `path` (a config.json) and the field.
    pub fn validate_at(&self, path: &Path) -> Result<()> {
        let bad = |field: &str, m: String| Err(ModelError::Field { path: path.to_path_buf(), field: field.into(), msg: m });
        for (field, v) in [
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings / n_positions", self.n_ctx),
            ("num_hidden_layers / n_layer", self.n_layer),
            ("num_attention_heads / n_head", self.n_head),
            ("num_key_value_heads", self.n_kv_head),
            ("head_dim", self.head_dim),
            ("hidden_size / n_embd", self.n_embd),
            ("intermediate_size / n_inner", self.d_ff),
        ] {
            if v == 0 {
                return bad(field, "must be positive, got 0".into());
            }
        }
        // Widths the kernels index with must fit comfortably in usize; a
        // damaged config can ask for products that would overflow.
        let width = (self.n_head as u128 + 2 * self.n_kv_head as u128) * self.head_dim as u128;
        if width > u32::MAX as u128 || self.n_embd > u32::MAX as usize || self.d_ff > u32::MAX as usize {
            return bad(
                "hidden_size / n_embd",
                format!("the sizes ({} heads of {}, width {}, MLP {}) are far too large for any model", self.n_head, self.head_dim, self.n_embd, self.d_ff),
            );
        }
        if !self.n_head.is_multiple_of(self.n_kv_head) {
            return bad("num_key_value_heads", format!("{} does not divide num_attention_heads {}", self.n_kv_head, self.n_head));
        }
        if matches!(self.family, Family::Gpt2 | Family::Bert) && self.n_head * self.head_dim != self.n_embd {
            return bad("n_embd", format!("{} is not divisible by n_head {}", self.n_embd, self.n_head));
        }
        if matches!(self.family, Family::Gpt2 | Family::Bert) && self.n_kv_head != self.n_head {
            return bad("n_head", "GPT-2 and BERT checkpoints have as many key/value heads as query heads".into());
        }
        if self.family == Family::Bert && (self.norm != Norm::Layer || matches!(self.position, Position::Rope { .. })) {
            return bad("model_type", "BERT uses LayerNorm and learned positions".into());
        }
        if !(self.norm_eps > 0.0 && self.norm_eps.is_finite()) {
            return bad("rms_norm_eps / layer_norm_epsilon", format!("must be a positive number, got {}", self.norm_eps));
        }
        match self.position {
            Position::Rope { theta, scaling } => {
                if !(theta > 1.0 && theta.is_finite()) {
                    return bad("rope_theta", format!("must be a number above 1, got {theta}"));
                }
                if !self.head_dim.is_multiple_of(2) {
                    return bad("head_dim", format!("rotary embeddings need an even head size, got {}", self.head_dim));
                }
                let factor = match scaling {
                    RopeScaling::None => 1.0,
                    RopeScaling::Linear { factor } | RopeScaling::Dynamic { factor, .. } => factor,
                    RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position } => {
                        if !(low_freq_factor > 0.0 && high_freq_factor > low_freq_factor && original_max_position > 0) {
                            return bad(
                                "rope_scaling",
                                format!("llama3 needs 0 < low_freq_factor < high_freq_factor and original_max_position_embeddings > 0, got {low_freq_factor}, {high_freq_factor}, {original_max_position}"),
                            );
                        }
                        factor
                    }
                };
                if !(factor > 0.0 && factor.is_finite()) {
                    return bad("rope_scaling.factor", format!("must be a positive number, got {factor}"));
                }
            }
            Position::Sinusoidal if !self.n_embd.is_multiple_of(2) => {
                return bad("n_embd", format!("sinusoidal positions need an even n_embd, got {}", self.n_embd));
            }
            _ => {}
        }
        if self.vocab_size > u32::MAX as usize {
            return bad("vocab_size", format!("{} does not fit in u32 token ids", self.vocab_size));
        }
        if let Some(&bad_id) = self.eos_token_ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return bad("eos_token_id", format!("{bad_id} is outside the vocabulary of {} tokens", self.vocab_size));
        }
        Ok(())
    }

    /// Width of the packed q | k | v projection: (NH + 2 NKV) * HD.
    pub fn qkv_width(&self) -> usize {
        (self.n_head + 2 * self.n_kv_head) * self.head_dim
    }

    /// Width of the attention output before its projection: NH * HD.
    pub fn attn_width(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Parameter count, computed with checked arithmetic so that absurd
    /// configs are reported instead of overflowing. Tied heads add nothing.
    pub fn param_count(&self) -> Option<u128> {
        let (v, c, t, l, f) = (self.vocab_size as u128, self.n_embd as u128, self.n_ctx as u128, self.n_layer as u128, self.d_ff as u128);
        let (w, a) = (self.qkv_width() as u128, self.attn_width() as u128);
        let norm = if self.norm == Norm::Layer { 2 * c } else { c };
        let mlp = match self.mlp {
            Mlp::Gelu | Mlp::GeluErf => 2 * c * f,
            Mlp::SwiGlu => 3 * c * f,
        };
        let biases = if self.qkv_bias { w } else { 0 } + if self.dense_bias { c + f + c } else { 0 };
        let per_layer = 2 * norm + c * w + a * c + mlp + biases;
        let pos = if self.position == Position::Learned { t * c } else { 0 };
        let head = if self.tied_head || !self.has_head() { 0 } else { v * c };
        let final_norm = if self.norm_position == NormPosition::Pre { norm } else { 0 };
        let embed_extra = self.type_vocab_size as u128 * c + if self.embed_norm { 2 * c } else { 0 };
        let k = self.labels.len() as u128;
        let cls = match (k, self.family) {
            (0, _) => 0,
            (_, Family::Bert) => c * c + c + k * c + k,
            _ => k * c,
        };
        Some(v * c + pos + embed_extra + l.checked_mul(per_layer)? + final_norm + head + cls)
    }

    /// Training FLOPs of one step over B x T tokens, counting every GEMM
    /// (forward 2mnk, backward twice that) and attention's products in full
    /// T x T, as the kernels compute them.
    pub fn train_flops(&self, b: usize, t: usize) -> f64 {
        let (n, c) = ((b * t) as f64, self.n_embd as f64);
        let mlp_mats = if self.mlp == Mlp::SwiGlu { 3.0 } else { 2.0 };
        let per_layer_weights = (self.qkv_width() + self.attn_width()) as f64 * c + mlp_mats * self.d_ff as f64 * c;
        let attention = 4.0 * (b * t * t * self.attn_width()) as f64;
        let head = if self.has_head() { (self.vocab_size * self.n_embd) as f64 } else { 0.0 };
        3.0 * (self.n_layer as f64 * (2.0 * n * per_layer_weights + attention) + 2.0 * n * head)
    }
}
