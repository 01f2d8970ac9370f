//! GPT configuration: typed presets, and the Hugging Face `config.json` mirror.

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// How word order enters the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PositionEncoding {
    /// A trained (maxT, C) table, GPT-2's `wpe`.
    Learned,
    /// The fixed sin/cos table of "Attention Is All You Need"; no parameters.
    Sinusoidal,
}

/// A resolved, validated GPT-2-architecture config.
#[derive(Clone, Debug, PartialEq)]
pub struct GptConfig {
    pub vocab_size: usize,
    /// Maximum sequence length (`n_positions`).
    pub n_ctx: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    pub position: PositionEncoding,
    pub layer_norm_eps: f32,
}

/// Names accepted by `--preset`.
pub const PRESETS: &[&str] = &["gpt2-124m", "gpt2-350m", "shakespeare-char", "baby"];

impl GptConfig {
    /// GPT-2 small: 12 layers, 12 heads, 768 channels, 1024 context, 50257 tokens.
    pub fn gpt2_124m() -> Self {
        Self { vocab_size: 50257, n_ctx: 1024, n_layer: 12, n_head: 12, n_embd: 768, position: PositionEncoding::Learned, layer_norm_eps: 1e-5 }
    }
    /// GPT-2 medium.
    pub fn gpt2_350m() -> Self {
        Self { n_layer: 24, n_head: 16, n_embd: 1024, ..Self::gpt2_124m() }
    }
    /// nanoGPT's character-level Shakespeare model: 6 layers, 6 heads, 384 channels, 256 context.
    pub fn shakespeare_char() -> Self {
        Self { vocab_size: 65, n_ctx: 256, n_layer: 6, n_head: 6, n_embd: 384, position: PositionEncoding::Learned, layer_norm_eps: 1e-5 }
    }
    /// A model that trains in minutes on two cores: 4 layers, 4 heads, 128 channels, 64 context.
    pub fn baby() -> Self {
        Self { vocab_size: 65, n_ctx: 64, n_layer: 4, n_head: 4, n_embd: 128, position: PositionEncoding::Learned, layer_norm_eps: 1e-5 }
    }

    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "gpt2-124m" | "gpt2" => Ok(Self::gpt2_124m()),
            "gpt2-350m" | "gpt2-medium" => Ok(Self::gpt2_350m()),
            "shakespeare-char" => Ok(Self::shakespeare_char()),
            "baby" => Ok(Self::baby()),
            _ => Err(ModelError::UnknownPreset(name.to_string(), PRESETS.join(", "))),
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::InvalidConfig(m));
        if self.vocab_size == 0 || self.n_ctx == 0 || self.n_layer == 0 || self.n_head == 0 || self.n_embd == 0 {
            return bad(format!("every size must be positive: {self:?}"));
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return bad(format!("n_embd {} is not divisible by n_head {}", self.n_embd, self.n_head));
        }
        if self.position == PositionEncoding::Sinusoidal && !self.n_embd.is_multiple_of(2) {
            return bad(format!("sinusoidal positions need an even n_embd, got {}", self.n_embd));
        }
        if self.vocab_size > u32::MAX as usize {
            return bad(format!("vocab_size {} does not fit in u32 token ids", self.vocab_size));
        }
        Ok(())
    }

    pub fn head_size(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Parameter count (the output head is tied to `wte`, so it adds nothing).
    pub fn num_params(&self) -> usize {
        crate::params::ParamLayout::gpt(self).num_params()
    }

    /// Training FLOPs of one step over B x T tokens, counting every GEMM
    /// (forward 2*m*n*k, backward twice that). Attention products are counted
    /// in full T x T because the kernel computes them so.
    pub fn train_flops(&self, b: usize, t: usize) -> f64 {
        let (n, c, l, v) = ((b * t) as f64, self.n_embd as f64, self.n_layer as f64, self.vocab_size as f64);
        let per_layer = 2.0 * n * c * 12.0 * c + 4.0 * (b as f64) * (t as f64) * (t as f64) * c;
        3.0 * (l * per_layer + 2.0 * n * c * v)
    }

    pub fn to_hf(&self) -> HfGpt2Config {
        HfGpt2Config {
            model_type: "gpt2".into(),
            architectures: vec!["GPT2LMHeadModel".into()],
            vocab_size: self.vocab_size,
            n_positions: self.n_ctx,
            n_ctx: Some(self.n_ctx),
            n_embd: self.n_embd,
            n_layer: self.n_layer,
            n_head: self.n_head,
            n_inner: None,
            activation_function: "gelu_new".into(),
            // Via the shortest decimal, so 1e-5f32 is written as 1e-5, not 9.9999997e-6.
            layer_norm_epsilon: self.layer_norm_eps.to_string().parse().expect("f32 prints as a number"),
            resid_pdrop: 0.0,
            embd_pdrop: 0.0,
            attn_pdrop: 0.0,
            initializer_range: 0.02,
            tie_word_embeddings: true,
            bos_token_id: None,
            eos_token_id: None,
            torch_dtype: Some("float32".into()),
            attn_position_encoding: Some(self.position),
        }
    }

    pub fn from_hf(hf: &HfGpt2Config, path: &std::path::Path) -> Result<Self> {
        let unsupported =
            |field: &str, value: String, hint: &str| ModelError::Unsupported { path: path.to_path_buf(), field: field.into(), value, hint: hint.into() };
        if hf.model_type != "gpt2" {
            return Err(unsupported("model_type", hf.model_type.clone(), "this build loads model_type \"gpt2\""));
        }
        if !matches!(hf.activation_function.as_str(), "gelu_new" | "gelu_pytorch_tanh") {
            return Err(unsupported("activation_function", hf.activation_function.clone(), "only the tanh GELU (gelu_new) is implemented"));
        }
        if let Some(inner) = hf.n_inner {
            if inner != 4 * hf.n_embd {
                return Err(unsupported("n_inner", inner.to_string(), "the MLP width must be 4 * n_embd"));
            }
        }
        if !hf.tie_word_embeddings {
            return Err(unsupported("tie_word_embeddings", "false".into(), "GPT-2 models here tie lm_head to wte"));
        }
        let cfg = Self {
            vocab_size: hf.vocab_size,
            n_ctx: hf.n_positions,
            n_layer: hf.n_layer,
            n_head: hf.n_head,
            n_embd: hf.n_embd,
            position: hf.attn_position_encoding.unwrap_or(PositionEncoding::Learned),
            layer_norm_eps: hf.layer_norm_epsilon as f32,
        };
        cfg.validate().map_err(|e| ModelError::InvalidConfig(format!("{}: {e}", path.display())))?;
        Ok(cfg)
    }
}

/// The fields of a Hugging Face GPT-2 `config.json` that matter here. Unknown
/// fields are ignored, as `transformers` does.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HfGpt2Config {
    pub model_type: String,
    #[serde(default)]
    pub architectures: Vec<String>,
    pub vocab_size: usize,
    pub n_positions: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_ctx: Option<usize>,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    #[serde(default)]
    pub n_inner: Option<usize>,
    #[serde(default = "default_act")]
    pub activation_function: String,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default)]
    pub resid_pdrop: f64,
    #[serde(default)]
    pub embd_pdrop: f64,
    #[serde(default)]
    pub attn_pdrop: f64,
    #[serde(default = "default_init")]
    pub initializer_range: f64,
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch_dtype: Option<String>,
    /// attn's own field: `transformers` ignores it, so a sinusoidal model is
    /// only loadable in attn (its `wpe` is not a parameter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attn_position_encoding: Option<PositionEncoding>,
}

fn default_act() -> String {
    "gelu_new".into()
}
fn default_eps() -> f64 {
    1e-5
}
fn default_init() -> f64 {
    0.02
}
fn default_true() -> bool {
    true
}
