//! Hugging Face `config.json` for decoders, read into typed structs per
//! `model_type` and resolved into a checked `TransformerConfig`.
//!
//! Both transformers 4.x and 5.x layouts load: `rope_theta` + `rope_scaling`
//! (4.x) or `rope_parameters` (5.x); `rope_type` or the older `type`;
//! `eos_token_id` as an int or a list. Every field that changes the
//! arithmetic is honoured or rejected by name. A missing field takes
//! transformers' default for that model type, from `defaults` below.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::config::{Family, Mlp, Norm, NormPosition, Position, RopeScaling, TransformerConfig};
use crate::error::{ModelError, Result};

mod write;
pub use write::to_hf;

/// An int or a list of ints, as `eos_token_id` may be written.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged, expecting = "expected a token id or a list of token ids")]
pub enum TokenIds {
    /// `"eos_token_id": 2`.
    One(u32),
    /// `"eos_token_id": [2, 32000]`.
    Many(Vec<u32>),
}

impl TokenIds {
    /// The ids as a list.
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(x) => vec![*x],
            TokenIds::Many(v) => v.clone(),
        }
    }
}

/// GPT-2's config.json fields that decide the arithmetic.
#[derive(Debug, Deserialize)]
struct HfGpt2 {
    vocab_size: Option<usize>,
    n_positions: Option<usize>,
    n_embd: Option<usize>,
    n_layer: Option<usize>,
    n_head: Option<usize>,
    n_inner: Option<usize>,
    activation_function: Option<String>,
    layer_norm_epsilon: Option<f64>,
    tie_word_embeddings: Option<bool>,
    scale_attn_weights: Option<bool>,
    scale_attn_by_inverse_layer_idx: Option<bool>,
    reorder_and_upcast_attn: Option<bool>,
    add_cross_attention: Option<bool>,
    eos_token_id: Option<TokenIds>,
    /// attn's own field: transformers ignores it, so a sinusoidal model is
    /// only loadable in attn (its `wpe` is not a parameter).
    attn_position_encoding: Option<String>,
}

/// Llama, Qwen2 and Mistral config.json fields that decide the arithmetic.
#[derive(Debug, Deserialize)]
struct HfLlama {
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    hidden_act: Option<String>,
    max_position_embeddings: Option<usize>,
    rms_norm_eps: Option<f64>,
    tie_word_embeddings: Option<bool>,
    rope_theta: Option<f64>,
    rope_scaling: Option<Value>,
    rope_parameters: Option<Value>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    sliding_window: Option<Value>,
    use_sliding_window: Option<bool>,
    eos_token_id: Option<TokenIds>,
}

/// BERT's config.json fields that decide the arithmetic.
#[derive(Debug, Deserialize)]
struct HfBert {
    vocab_size: Option<usize>,
    hidden_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    intermediate_size: Option<usize>,
    max_position_embeddings: Option<usize>,
    type_vocab_size: Option<usize>,
    layer_norm_eps: Option<f64>,
    hidden_act: Option<String>,
    position_embedding_type: Option<String>,
    is_decoder: Option<bool>,
    add_cross_attention: Option<bool>,
    /// attn's own field: the hidden states read through the tied word
    /// embeddings as a language-model head (attn's tests train on it).
    attn_lm_head: Option<bool>,
}

/// transformers' defaults for fields a config.json may leave out, per model
/// type. Source: the `__init__` signatures of `LlamaConfig`, `Qwen2Config` and
/// `MistralConfig` (transformers 4.46 and 5.x agree on these values).
struct Defaults {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    /// None: as many as the query heads.
    num_key_value_heads: Option<usize>,
    max_position_embeddings: usize,
    rms_norm_eps: f64,
    rope_theta: f64,
    tie_word_embeddings: bool,
}

fn defaults(family: Family) -> Defaults {
    match family {
        Family::Qwen2 => Defaults {
            vocab_size: 151936,
            hidden_size: 4096,
            intermediate_size: 22016,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: Some(32),
            max_position_embeddings: 32768,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            tie_word_embeddings: false,
        },
        Family::Mistral => Defaults {
            vocab_size: 32000,
            hidden_size: 4096,
            intermediate_size: 14336,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: Some(8),
            max_position_embeddings: 4096 * 32,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            tie_word_embeddings: false,
        },
        _ => Defaults {
            vocab_size: 32000,
            hidden_size: 4096,
            intermediate_size: 11008,
            num_hidden_layers: 32,
            num_attention_heads: 32,
            num_key_value_heads: None,
            max_position_embeddings: 2048,
            rms_norm_eps: 1e-6,
            rope_theta: 10000.0,
            tie_word_embeddings: false,
        },
    }
}

fn unsupported(path: &Path, field: &str, value: impl ToString, hint: &str) -> ModelError {
    ModelError::Unsupported { path: path.to_path_buf(), field: field.into(), value: value.to_string(), hint: hint.into() }
}

fn field_err(path: &Path, field: &str, msg: impl Into<String>) -> ModelError {
    ModelError::Field { path: path.to_path_buf(), field: field.into(), msg: msg.into() }
}

/// Every `model_type` attn loads.
pub const MODEL_TYPES: &[&str] = &["gpt2", "llama", "qwen2", "mistral", "bert"];

/// Resolves a decoder's config.json (already parsed) into a checked config.
pub fn from_hf(v: &Value, path: &Path) -> Result<TransformerConfig> {
    let model_type = v
        .get("model_type")
        .and_then(Value::as_str)
        .ok_or_else(|| field_err(path, "model_type", "is missing; a model folder's config.json names its architecture"))?;
    let family = match model_type {
        "gpt2" => Family::Gpt2,
        "llama" => Family::Llama,
        "qwen2" => Family::Qwen2,
        "mistral" => Family::Mistral,
        "bert" => Family::Bert,
        m if crate::seq2seq::SEQ2SEQ_MODEL_TYPES.contains(&m) => {
            let hint =
                format!("an encoder-decoder: attn translate (or summarize), eval and inspect attention run it; this command takes {}", MODEL_TYPES.join(", "));
            return Err(unsupported(path, "model_type", m, &hint));
        }
        other => return Err(unsupported(path, "model_type", other, &format!("model types attn runs: {}", MODEL_TYPES.join(", ")))),
    };
    let cfg = match family {
        Family::Gpt2 => gpt2_from_hf(v, path)?,
        Family::Bert => bert_from_hf(v, path)?,
        _ => llama_from_hf(v, path, family)?,
    };
    // An end-of-sequence id outside the vocabulary can never be drawn
    // (transformers' GPT2Config defaults to 50256 whatever the vocab size).
    let mut cfg = cfg;
    cfg.labels = classifier_labels(v, path)?;
    cfg.eos_token_ids.retain(|&id| (id as usize) < cfg.vocab_size);
    cfg.validate_at(path)?;
    Ok(cfg)
}

/// A `*ForSequenceClassification` config's labels, in id order, from
/// `id2label` (every config has one, so only the architecture says the model
/// is a classifier); empty for other architectures.
fn classifier_labels(v: &Value, path: &Path) -> Result<Vec<String>> {
    let arch = v["architectures"].get(0).and_then(Value::as_str).unwrap_or("");
    if !arch.ends_with("ForSequenceClassification") {
        return Ok(Vec::new());
    }
    // transformers 5 leaves out id2label when it is the default LABEL_0, LABEL_1, ...
    let Some(map) = v["id2label"].as_object() else {
        let n = match &v["num_labels"] {
            Value::Null => 2,
            x => x.as_u64().filter(|&n| n >= 2).ok_or_else(|| field_err(path, "num_labels", "must be an integer of at least 2"))? as usize,
        };
        return Ok((0..n).map(|i| format!("LABEL_{i}")).collect());
    };
    let mut labels = vec![None; map.len()];
    for (id, name) in map {
        let i: usize =
            id.parse().ok().filter(|&i| i < map.len()).ok_or_else(|| field_err(path, "id2label", format!("key {id:?} is not an id in 0..{}", map.len())))?;
        labels[i] = Some(name.as_str().ok_or_else(|| field_err(path, "id2label", format!("label {id} is not a string")))?.to_string());
    }
    let labels: Vec<String> = labels.into_iter().map(|l| l.expect("ids 0..n are distinct")).collect();
    if labels.len() < 2 {
        return Err(field_err(path, "id2label", "a classifier needs at least 2 labels"));
    }
    if v["problem_type"].as_str().is_some_and(|p| p != "single_label_classification") {
        return Err(unsupported(
            path,
            "problem_type",
            v["problem_type"].as_str().unwrap_or(""),
            "only single_label_classification (softmax over the labels) is implemented",
        ));
    }
    Ok(labels)
}

fn parse<T: for<'de> Deserialize<'de>>(v: &Value, path: &Path) -> Result<T> {
    // serde's own message does not say which field had the wrong type.
    serde_path_to_error::deserialize(v).map_err(|e| field_err(path, &e.path().to_string(), format!("has the wrong type: {}", e.inner())))
}

fn gpt2_from_hf(v: &Value, path: &Path) -> Result<TransformerConfig> {
    let hf: HfGpt2 = parse(v, path)?;
    let act = hf.activation_function.as_deref().unwrap_or("gelu_new");
    if !matches!(act, "gelu_new" | "gelu_pytorch_tanh") {
        return Err(unsupported(path, "activation_function", act, "only the tanh GELU (gelu_new) is implemented"));
    }
    for (field, value, default) in [
        ("scale_attn_weights", hf.scale_attn_weights, true),
        ("scale_attn_by_inverse_layer_idx", hf.scale_attn_by_inverse_layer_idx, false),
        ("reorder_and_upcast_attn", hf.reorder_and_upcast_attn, false),
        ("add_cross_attention", hf.add_cross_attention, false),
    ] {
        if value.is_some_and(|x| x != default) {
            return Err(unsupported(path, field, !default, &format!("only {field} = {default} is implemented")));
        }
    }
    if hf.tie_word_embeddings == Some(false) {
        return Err(unsupported(path, "tie_word_embeddings", "false", "GPT-2 models here tie lm_head to wte"));
    }
    // transformers' GPT2Config defaults: 50257 tokens, 1024 positions, 768/12/12.
    let (c, nh) = (hf.n_embd.unwrap_or(768), hf.n_head.unwrap_or(12));
    let mut cfg = TransformerConfig::gpt2(hf.vocab_size.unwrap_or(50257), hf.n_positions.unwrap_or(1024), hf.n_layer.unwrap_or(12), nh, c);
    if nh == 0 || c % nh != 0 {
        return Err(field_err(path, "n_embd", format!("{c} is not divisible by n_head {nh}")));
    }
    cfg.d_ff = hf.n_inner.unwrap_or(c.saturating_mul(4));
    cfg.norm_eps = hf.layer_norm_epsilon.unwrap_or(1e-5) as f32;
    cfg.position = match hf.attn_position_encoding.as_deref() {
        None | Some("learned") => Position::Learned,
        Some("sinusoidal") => Position::Sinusoidal,
        Some(other) => return Err(unsupported(path, "attn_position_encoding", other, "learned or sinusoidal")),
    };
    cfg.eos_token_ids = hf.eos_token_id.map(|t| t.to_vec()).unwrap_or_default();
    cfg.hf = v.clone();
    Ok(cfg)
}

fn bert_from_hf(v: &Value, path: &Path) -> Result<TransformerConfig> {
    let hf: HfBert = parse(v, path)?;
    let mlp = match hf.hidden_act.as_deref().unwrap_or("gelu") {
        "gelu" => Mlp::GeluErf,
        "gelu_new" | "gelu_pytorch_tanh" => Mlp::Gelu,
        other => return Err(unsupported(path, "hidden_act", other, "supported: gelu, gelu_new, gelu_pytorch_tanh")),
    };
    if let Some(p) = hf.position_embedding_type.as_deref().filter(|p| *p != "absolute") {
        return Err(unsupported(path, "position_embedding_type", p, "only \"absolute\" position embeddings are implemented"));
    }
    for (field, value) in [("is_decoder", hf.is_decoder), ("add_cross_attention", hf.add_cross_attention)] {
        if value == Some(true) {
            return Err(unsupported(path, field, "true", "BERT runs here as an encoder"));
        }
    }
    // transformers' BertConfig defaults (bert-base-uncased).
    let (c, nh) = (hf.hidden_size.unwrap_or(768), hf.num_attention_heads.unwrap_or(12));
    if nh == 0 || c % nh != 0 {
        return Err(field_err(path, "hidden_size", format!("{c} is not divisible by num_attention_heads {nh}")));
    }
    let mut cfg = TransformerConfig::bert(
        hf.vocab_size.unwrap_or(30522),
        hf.max_position_embeddings.unwrap_or(512),
        hf.num_hidden_layers.unwrap_or(12),
        nh,
        c,
        hf.intermediate_size.unwrap_or(3072),
    );
    cfg.type_vocab_size = hf.type_vocab_size.unwrap_or(2);
    cfg.norm_eps = hf.layer_norm_eps.unwrap_or(1e-12) as f32;
    cfg.mlp = mlp;
    cfg.tied_head = hf.attn_lm_head.unwrap_or(false);
    cfg.hf = v.clone();
    if cfg.type_vocab_size == 0 {
        return Err(field_err(path, "type_vocab_size", "must be positive, got 0"));
    }
    Ok(cfg)
}

/// Rotary settings from either layout: 5.x's `rope_parameters`, or 4.x's
/// top-level `rope_theta` with an optional `rope_scaling`.
fn rope_from_hf(hf: &HfLlama, path: &Path, default_theta: f64, max_pos: usize) -> Result<Position> {
    let (params, field) = match (&hf.rope_parameters, &hf.rope_scaling) {
        (Some(p), _) if p.is_object() => (Some(p), "rope_parameters"),
        (_, Some(s)) if s.is_object() => (Some(s), "rope_scaling"),
        (_, Some(s)) if !s.is_null() => return Err(field_err(path, "rope_scaling", format!("must be an object or null, got {s}"))),
        _ => (None, "rope_scaling"),
    };
    let num = |k: &str| params.and_then(|p| p.get(k)).and_then(Value::as_f64);
    let theta = num("rope_theta").or(hf.rope_theta).unwrap_or(default_theta);
    let kind = params.and_then(|p| p.get("rope_type").or_else(|| p.get("type"))).and_then(Value::as_str).unwrap_or("default");
    let need = |k: &str| num(k).ok_or_else(|| field_err(path, &format!("{field}.{k}"), format!("is required for rope_type \"{kind}\"")));
    let scaling = match kind {
        "default" => RopeScaling::None,
        "linear" => RopeScaling::Linear { factor: need("factor")? as f32 },
        "dynamic" => {
            RopeScaling::Dynamic { factor: need("factor")? as f32, max_position: num("original_max_position_embeddings").map_or(max_pos, |x| x as usize) }
        }
        "llama3" => RopeScaling::Llama3 {
            factor: need("factor")? as f32,
            low_freq_factor: need("low_freq_factor")? as f32,
            high_freq_factor: need("high_freq_factor")? as f32,
            original_max_position: need("original_max_position_embeddings")? as usize,
        },
        other => {
            return Err(unsupported(path, &format!("{field}.rope_type"), other, "implemented: default, linear, dynamic, llama3"));
        }
    };
    // Types that scale the attention logits (yarn, longrope) are rejected above;
    // an explicit attention_factor other than 1 would change them too.
    if let Some(f) = num("attention_factor").filter(|&f| f != 1.0) {
        return Err(unsupported(path, &format!("{field}.attention_factor"), f, "only 1.0 is implemented"));
    }
    Ok(Position::Rope { theta: theta as f32, scaling })
}

fn llama_from_hf(v: &Value, path: &Path, family: Family) -> Result<TransformerConfig> {
    let hf: HfLlama = parse(v, path)?;
    let d = defaults(family);
    let act = hf.hidden_act.as_deref().unwrap_or("silu");
    if act != "silu" {
        return Err(unsupported(path, "hidden_act", act, "the MLP is SwiGLU: hidden_act must be \"silu\""));
    }
    if hf.mlp_bias == Some(true) {
        return Err(unsupported(path, "mlp_bias", "true", "MLP biases are not implemented for this family"));
    }
    let n_ctx = hf.max_position_embeddings.unwrap_or(d.max_position_embeddings);
    // A sliding window narrower than the context changes which keys a query
    // sees; attn's attention is full-context, so such a model is refused.
    let window = hf.sliding_window.as_ref().and_then(Value::as_u64).map(|w| w as usize);
    let window_on = match family {
        Family::Qwen2 => hf.use_sliding_window == Some(true),
        _ => true,
    };
    if let Some(w) = window.filter(|&w| window_on && w < n_ctx) {
        return Err(unsupported(
            path,
            "sliding_window",
            w,
            &format!("sliding-window attention is not implemented; it is a no-op only when >= max_position_embeddings ({n_ctx}) or null"),
        ));
    }
    let c = hf.hidden_size.unwrap_or(d.hidden_size);
    let nh = hf.num_attention_heads.unwrap_or(d.num_attention_heads);
    let nkv = hf.num_key_value_heads.or(d.num_key_value_heads).unwrap_or(nh);
    if nh == 0 {
        return Err(field_err(path, "num_attention_heads", "must be positive, got 0"));
    }
    let head_dim = match hf.head_dim {
        Some(hd) => hd,
        None if c % nh == 0 => c / nh,
        None => return Err(field_err(path, "hidden_size", format!("{c} is not divisible by num_attention_heads {nh}; give head_dim explicitly"))),
    };
    let cfg = TransformerConfig {
        family,
        vocab_size: hf.vocab_size.unwrap_or(d.vocab_size),
        n_ctx,
        n_layer: hf.num_hidden_layers.unwrap_or(d.num_hidden_layers),
        n_head: nh,
        n_kv_head: nkv,
        head_dim,
        n_embd: c,
        d_ff: hf.intermediate_size.unwrap_or(d.intermediate_size),
        norm: Norm::Rms,
        norm_position: NormPosition::Pre,
        causal: true,
        type_vocab_size: 0,
        embed_norm: false,
        norm_eps: hf.rms_norm_eps.unwrap_or(d.rms_norm_eps) as f32,
        position: rope_from_hf(&hf, path, d.rope_theta, n_ctx)?,
        mlp: Mlp::SwiGlu,
        // Qwen2 always has q, k and v biases; Llama and Mistral when attention_bias.
        qkv_bias: family == Family::Qwen2 || hf.attention_bias == Some(true),
        // Llama's attention_bias also puts a bias on o_proj.
        dense_bias: false,
        tied_head: hf.tie_word_embeddings.unwrap_or(d.tie_word_embeddings),
        eos_token_ids: hf.eos_token_id.map(|t| t.to_vec()).unwrap_or_default(),
        labels: Vec::new(),
        hf: v.clone(),
    };
    if family != Family::Qwen2 && hf.attention_bias == Some(true) {
        return Err(unsupported(path, "attention_bias", "true", "Llama's attention_bias also adds an o_proj bias, which is not implemented"));
    }
    Ok(cfg)
}
