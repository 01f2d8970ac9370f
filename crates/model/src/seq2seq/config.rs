//! The encoder-decoder config, its presets, and Marian / BART / mBART config.json.

use std::path::Path;

use attn_kernels::activation::Activation;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::{NormPosition, Position};
use crate::error::{ModelError, Result};
use crate::hf::TokenIds;

/// The checkpoint family, which decides positions and `model_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seq2SeqFamily {
    /// `MarianMTModel`: sinusoidal positions (sines then cosines), no
    /// embedding norm. attn's own translation models are saved as Marian.
    Marian,
    /// `BartForConditionalGeneration`: learned positions offset by 2, a
    /// LayerNorm over the embeddings.
    Bart,
    /// `MBartForConditionalGeneration`: BART's embeddings with pre-norm
    /// blocks and a final LayerNorm after each stack. attn's pre-norm
    /// translation models are saved as mBART.
    MBart,
}

impl Seq2SeqFamily {
    /// config.json's `model_type`.
    pub fn model_type(self) -> &'static str {
        match self {
            Seq2SeqFamily::Marian => "marian",
            Seq2SeqFamily::Bart => "bart",
            Seq2SeqFamily::MBart => "mbart",
        }
    }
    fn architecture(self) -> &'static str {
        match self {
            Seq2SeqFamily::Marian => "MarianMTModel",
            Seq2SeqFamily::Bart => "BartForConditionalGeneration",
            Seq2SeqFamily::MBart => "MBartForConditionalGeneration",
        }
    }
}

/// A resolved, validated encoder-decoder config.
#[derive(Clone, Debug, PartialEq)]
pub struct Seq2SeqConfig {
    /// Tensor names, layouts and `model_type`.
    pub family: Seq2SeqFamily,
    /// One vocabulary for source and target (shared embeddings).
    pub vocab_size: usize,
    /// Width of both residual streams.
    pub d_model: usize,
    /// Blocks, heads and feed-forward widths of each stack.
    pub encoder_layers: usize,
    #[allow(missing_docs)]
    pub decoder_layers: usize,
    #[allow(missing_docs)]
    pub encoder_heads: usize,
    #[allow(missing_docs)]
    pub decoder_heads: usize,
    #[allow(missing_docs)]
    pub encoder_ffn: usize,
    #[allow(missing_docs)]
    pub decoder_ffn: usize,
    /// The feed-forward networks' nonlinearity.
    pub act: Activation,
    /// Positions each side attends over (`max_position_embeddings`).
    pub n_ctx: usize,
    /// Sinusoidal (Marian) or learned (BART) positions.
    pub position: Position,
    /// Token embeddings are multiplied by sqrt(d_model) (the paper; `scale_embedding`).
    pub scale_embedding: bool,
    /// A LayerNorm over the summed embeddings (BART's `layernorm_embedding`).
    pub embed_norm: bool,
    /// Post: N(x + f(x)) as in the paper (Marian, BART). Pre: x + f(N(x)),
    /// with a final norm after each stack (mBART).
    pub norm_position: NormPosition,
    /// Added to the variance inside each LayerNorm.
    pub norm_eps: f32,
    /// The padding id: batches are padded with it, and it is never a label.
    pub pad_token_id: u32,
    /// The id that ends a sequence.
    pub eos_token_id: u32,
    /// The first decoder input (Marian: the pad token; BART: EOS).
    pub decoder_start_token_id: u32,
    /// Forced as the last token when generation reaches its length limit.
    pub forced_eos_token_id: Option<u32>,
    /// The config.json this came from, so saving keeps fields attn does not use.
    pub hf: Value,
}

/// Names accepted by `--preset` for translation.
pub const SEQ2SEQ_PRESETS: &[&str] = &["transformer-tiny", "transformer-small", "transformer-base"];

/// Every encoder-decoder `model_type` attn loads.
pub const SEQ2SEQ_MODEL_TYPES: &[&str] = &["marian", "bart", "mbart"];

impl Seq2SeqConfig {
    /// The paper's shape of model: post-norm, sinusoidal positions, ReLU,
    /// embeddings scaled by sqrt(d_model) and shared by source, target and
    /// output. Token ids are set for attn's tokenizers (pad 0, eos 1); the
    /// trainer overwrites them from the tokenizer it builds.
    pub fn paper(vocab_size: usize, layers: usize, d_model: usize, heads: usize, ffn: usize, n_ctx: usize) -> Self {
        Seq2SeqConfig {
            family: Seq2SeqFamily::Marian,
            vocab_size,
            d_model,
            encoder_layers: layers,
            decoder_layers: layers,
            encoder_heads: heads,
            decoder_heads: heads,
            encoder_ffn: ffn,
            decoder_ffn: ffn,
            act: Activation::Relu,
            n_ctx,
            position: Position::Sinusoidal,
            scale_embedding: true,
            embed_norm: false,
            norm_position: NormPosition::Post,
            norm_eps: 1e-5,
            pad_token_id: 0,
            eos_token_id: 1,
            decoder_start_token_id: 0,
            forced_eos_token_id: None,
            hf: Value::Null,
        }
    }

    /// `transformer-tiny` (tests), `transformer-small` (trains on two cores),
    /// `transformer-base` (the paper's: 6 + 6 layers, 512 channels, 8 heads, FFN 2048).
    pub fn preset(name: &str, vocab_size: usize) -> Result<Self> {
        Ok(match name {
            "transformer-tiny" => Self::paper(vocab_size, 2, 32, 4, 64, 128),
            "transformer-small" => Self::paper(vocab_size, 3, 256, 4, 1024, 256),
            "transformer-base" => Self::paper(vocab_size, 6, 512, 8, 2048, 512),
            other => return Err(ModelError::UnknownPreset(other.into(), SEQ2SEQ_PRESETS.join(", "))),
        })
    }

    /// The pre-norm variant of a config: pre-norm blocks, final norms, and
    /// the mBART embeddings (learned positions, embedding LayerNorm) that a
    /// Hugging Face pre-norm encoder-decoder has.
    pub fn pre_norm(mut self) -> Self {
        self.family = Seq2SeqFamily::MBart;
        self.norm_position = NormPosition::Pre;
        self.position = Position::Learned;
        self.embed_norm = true;
        self
    }

    /// Channels per head of the decoder's or the encoder's attention.
    pub fn head_dim(&self, decoder: bool) -> usize {
        self.d_model / if decoder { self.decoder_heads } else { self.encoder_heads }
    }

    /// `validate_at` for a config not read from a file.
    pub fn validate(&self) -> Result<()> {
        self.validate_at(Path::new("the model config"))
    }

    /// Checks every size and id, naming `path` and the field at fault.
    pub fn validate_at(&self, path: &Path) -> Result<()> {
        let bad = |field: &str, m: String| Err(field_err(path, field, m));
        for (field, v) in [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("encoder_layers", self.encoder_layers),
            ("decoder_layers", self.decoder_layers),
            ("encoder_attention_heads", self.encoder_heads),
            ("decoder_attention_heads", self.decoder_heads),
            ("encoder_ffn_dim", self.encoder_ffn),
            ("decoder_ffn_dim", self.decoder_ffn),
            ("max_position_embeddings", self.n_ctx),
        ] {
            if v == 0 {
                return bad(field, "must be positive, got 0".into());
            }
            if v > u32::MAX as usize {
                return bad(field, format!("{v} is far too large for any model"));
            }
        }
        for (field, heads) in [("encoder_attention_heads", self.encoder_heads), ("decoder_attention_heads", self.decoder_heads)] {
            if !self.d_model.is_multiple_of(heads) {
                return bad(field, format!("{heads} does not divide d_model {}", self.d_model));
            }
        }
        for (field, id) in [("pad_token_id", self.pad_token_id), ("eos_token_id", self.eos_token_id), ("decoder_start_token_id", self.decoder_start_token_id)] {
            if id as usize >= self.vocab_size {
                return bad(field, format!("{id} is outside the vocabulary of {} tokens", self.vocab_size));
            }
        }
        if !(self.norm_eps > 0.0 && self.norm_eps.is_finite()) {
            return bad("layer_norm_eps", format!("must be a positive number, got {}", self.norm_eps));
        }
        if matches!(self.position, Position::Rope { .. }) {
            return bad("position", "encoder-decoders here use sinusoidal or learned positions".into());
        }
        let params = (self.vocab_size as u128 + 2 * self.n_ctx as u128) * self.d_model as u128
            + (self.encoder_layers + 2 * self.decoder_layers) as u128 * 4 * (self.d_model as u128).pow(2)
            + 2 * (self.encoder_layers as u128 * self.encoder_ffn as u128 + self.decoder_layers as u128 * self.decoder_ffn as u128) * self.d_model as u128;
        if let Some(avail) = crate::available_memory() {
            if params * 4 > avail as u128 {
                return Err(ModelError::TooLarge {
                    path: path.to_path_buf(),
                    needed_gb: params as f64 * 4.0 / 1e9,
                    available_gb: avail as f64 / 1e9,
                    hint: "check vocab_size, d_model, *_layers and *_ffn_dim".into(),
                });
            }
        }
        Ok(())
    }

    /// A Marian or BART config.json, already parsed. Missing fields take
    /// transformers' defaults for that model type (MarianConfig, BartConfig).
    pub fn from_hf(v: &Value, path: &Path) -> Result<Self> {
        let hf: HfSeq2Seq =
            serde_path_to_error::deserialize(v).map_err(|e| field_err(path, &e.path().to_string(), format!("has the wrong type: {}", e.inner())))?;
        let family = match v.get("model_type").and_then(Value::as_str) {
            Some("marian") => Seq2SeqFamily::Marian,
            Some("bart") => Seq2SeqFamily::Bart,
            Some("mbart") => Seq2SeqFamily::MBart,
            Some(m) if crate::hf::MODEL_TYPES.contains(&m) => {
                return Err(field_err(
                    path,
                    "model_type",
                    format!(
                    "\"{m}\" is not an encoder-decoder: attn generate, chat and serve (decoders) or embed and classify (encoders) run it; translate takes {}",
                    SEQ2SEQ_MODEL_TYPES.join(", ")
                ),
                ))
            }
            Some(m) => return Err(field_err(path, "model_type", format!("\"{m}\" is not an encoder-decoder attn runs ({})", SEQ2SEQ_MODEL_TYPES.join(", ")))),
            None => return Err(field_err(path, "model_type", format!("is missing: set it to one of {}", SEQ2SEQ_MODEL_TYPES.join(", ")))),
        };
        let marian = family == Seq2SeqFamily::Marian;
        let mbart = family == Seq2SeqFamily::MBart;
        // MarianConfig: 58101 tokens, pad 58100, eos 0; BartConfig: 50265, pad 1, eos 2. Both 12 + 12 layers of 1024, 16 heads, FFN 4096, gelu.
        let vocab_size = hf.vocab_size.unwrap_or(if marian { 58101 } else { 50265 });
        let pad = hf.pad_token_id.unwrap_or(if marian { 58100 } else { 1 });
        let eos = match hf.eos_token_id {
            Some(TokenIds::One(x)) => x,
            Some(TokenIds::Many(v)) if v.len() == 1 => v[0],
            Some(TokenIds::Many(v)) => return Err(field_err(path, "eos_token_id", format!("{v:?}: encoder-decoders here stop at one end-of-sequence id"))),
            None => {
                if marian {
                    0
                } else {
                    2
                }
            }
        };
        let act_name = hf.activation_function.clone().unwrap_or_else(|| "gelu".into());
        let act = Activation::from_hf(&act_name).ok_or_else(|| unsupported(path, "activation_function", &act_name, "relu, gelu, gelu_new, silu or swish"))?;
        if hf.decoder_vocab_size.is_some_and(|d| d != vocab_size) {
            return Err(unsupported(
                path,
                "decoder_vocab_size",
                &hf.decoder_vocab_size.unwrap_or(0).to_string(),
                "source and target share one vocabulary here; it must equal vocab_size",
            ));
        }
        for (field, value, want) in [
            ("share_encoder_decoder_embeddings", hf.share_encoder_decoder_embeddings, true),
            ("tie_word_embeddings", hf.tie_word_embeddings, true),
            ("normalize_before", hf.normalize_before, mbart),
            ("normalize_embedding", hf.normalize_embedding, false),
            ("add_bias_logits", hf.add_bias_logits, false),
            ("add_final_layer_norm", hf.add_final_layer_norm, false),
        ] {
            if value.is_some_and(|x| x != want) {
                return Err(unsupported(path, field, &(!want).to_string(), &format!("only {field} = {want} is implemented")));
            }
        }
        if marian && hf.static_position_embeddings == Some(false) {
            return Err(unsupported(path, "static_position_embeddings", "false", "Marian models use sinusoidal positions"));
        }
        let d_model = hf.d_model.unwrap_or(1024);
        let cfg = Seq2SeqConfig {
            family,
            vocab_size,
            d_model,
            encoder_layers: hf.encoder_layers.unwrap_or(12),
            decoder_layers: hf.decoder_layers.unwrap_or(12),
            encoder_heads: hf.encoder_attention_heads.unwrap_or(16),
            decoder_heads: hf.decoder_attention_heads.unwrap_or(16),
            encoder_ffn: hf.encoder_ffn_dim.unwrap_or(4096),
            decoder_ffn: hf.decoder_ffn_dim.unwrap_or(4096),
            act,
            n_ctx: hf.max_position_embeddings.unwrap_or(1024),
            position: if marian { Position::Sinusoidal } else { Position::Learned },
            scale_embedding: hf.scale_embedding.unwrap_or(false),
            embed_norm: !marian,
            norm_position: if mbart { NormPosition::Pre } else { NormPosition::Post },
            norm_eps: 1e-5,
            pad_token_id: pad,
            eos_token_id: eos,
            decoder_start_token_id: hf.decoder_start_token_id.unwrap_or(if marian { pad } else { 2 }),
            forced_eos_token_id: match v.get("forced_eos_token_id") {
                // Present in the file (even as null) decides; absent takes the class default (eos).
                Some(Value::Null) => None,
                Some(_) => hf.forced_eos_token_id,
                None => Some(eos),
            },
            hf: v.clone(),
        };
        cfg.validate_at(path)?;
        Ok(cfg)
    }

    /// config.json for this model: the fields it came with, and every field
    /// that decides the arithmetic written out.
    pub fn to_hf(&self) -> Value {
        let mut v = if self.hf.is_object() { self.hf.clone() } else { json!({}) };
        let o = v.as_object_mut().expect("object");
        let fields = json!({
            "model_type": self.family.model_type(),
            "architectures": [self.family.architecture()],
            "is_encoder_decoder": true,
            "vocab_size": self.vocab_size,
            "d_model": self.d_model,
            "encoder_layers": self.encoder_layers,
            "decoder_layers": self.decoder_layers,
            "encoder_attention_heads": self.encoder_heads,
            "decoder_attention_heads": self.decoder_heads,
            "encoder_ffn_dim": self.encoder_ffn,
            "decoder_ffn_dim": self.decoder_ffn,
            "activation_function": self.act.hf_name(),
            "max_position_embeddings": self.n_ctx,
            "scale_embedding": self.scale_embedding,
            "pad_token_id": self.pad_token_id,
            "eos_token_id": self.eos_token_id,
            "decoder_start_token_id": self.decoder_start_token_id,
            "forced_eos_token_id": self.forced_eos_token_id,
            "tie_word_embeddings": true,
            // attn trains without dropout; transformers would otherwise add it in train mode.
            "dropout": 0.0,
            "attention_dropout": 0.0,
            "activation_dropout": 0.0,
        });
        for (k, val) in fields.as_object().expect("object") {
            o.insert(k.clone(), val.clone());
        }
        if self.family == Seq2SeqFamily::Marian {
            o.insert("decoder_vocab_size".into(), json!(self.vocab_size));
            o.insert("share_encoder_decoder_embeddings".into(), json!(true));
        }
        o.entry("dtype").or_insert(json!("float32"));
        v
    }
}

/// Marian, BART and mBART config.json fields that decide the arithmetic.
#[derive(Debug, Deserialize)]
struct HfSeq2Seq {
    vocab_size: Option<usize>,
    decoder_vocab_size: Option<usize>,
    d_model: Option<usize>,
    encoder_layers: Option<usize>,
    decoder_layers: Option<usize>,
    encoder_attention_heads: Option<usize>,
    decoder_attention_heads: Option<usize>,
    encoder_ffn_dim: Option<usize>,
    decoder_ffn_dim: Option<usize>,
    activation_function: Option<String>,
    max_position_embeddings: Option<usize>,
    scale_embedding: Option<bool>,
    pad_token_id: Option<u32>,
    eos_token_id: Option<TokenIds>,
    decoder_start_token_id: Option<u32>,
    forced_eos_token_id: Option<u32>,
    share_encoder_decoder_embeddings: Option<bool>,
    tie_word_embeddings: Option<bool>,
    normalize_before: Option<bool>,
    normalize_embedding: Option<bool>,
    add_bias_logits: Option<bool>,
    add_final_layer_norm: Option<bool>,
    static_position_embeddings: Option<bool>,
}

fn field_err(path: &Path, field: &str, msg: impl Into<String>) -> ModelError {
    ModelError::Field { path: path.to_path_buf(), field: field.into(), msg: msg.into() }
}

fn unsupported(path: &Path, field: &str, value: &str, hint: &str) -> ModelError {
    ModelError::Unsupported { path: path.to_path_buf(), field: field.into(), value: value.into(), hint: hint.into() }
}
