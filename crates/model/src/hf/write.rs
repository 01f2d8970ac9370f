//! `config.json` as transformers writes it, from a `TransformerConfig`.

use serde_json::{json, Value};

use crate::config::{Family, Mlp, Position, RopeScaling, TransformerConfig};

/// config.json as transformers writes it (4.x layout, which 5.x also reads),
/// keeping the fields of the file the model was loaded from that attn does
/// not use (token ids, names).
pub fn to_hf(cfg: &TransformerConfig) -> Value {
    // f32 settings written as their shortest decimal (1e-5, not 9.99999974e-6).
    let dec = |x: f32| x.to_string().parse::<f64>().unwrap_or(x as f64);
    let mut v = if cfg.hf.is_object() { cfg.hf.clone() } else { json!({}) };
    let set = match cfg.family {
        Family::Bert => json!({
            "model_type": "bert", "architectures": ["BertModel"], "vocab_size": cfg.vocab_size, "hidden_size": cfg.n_embd,
            "num_hidden_layers": cfg.n_layer, "num_attention_heads": cfg.n_head, "intermediate_size": cfg.d_ff,
            "max_position_embeddings": cfg.n_ctx, "type_vocab_size": cfg.type_vocab_size, "layer_norm_eps": dec(cfg.norm_eps),
            "hidden_act": if cfg.mlp == Mlp::GeluErf { "gelu" } else { "gelu_new" }, "position_embedding_type": "absolute",
            "attn_lm_head": if cfg.tied_head { Value::Bool(true) } else { Value::Null },
        }),
        Family::Gpt2 => {
            let mut s = json!({
                "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": cfg.vocab_size, "n_positions": cfg.n_ctx,
                "n_ctx": cfg.n_ctx, "n_embd": cfg.n_embd, "n_layer": cfg.n_layer, "n_head": cfg.n_head,
                "n_inner": if cfg.d_ff == 4 * cfg.n_embd { Value::Null } else { cfg.d_ff.into() },
                "activation_function": "gelu_new", "layer_norm_epsilon": dec(cfg.norm_eps), "resid_pdrop": 0.0, "embd_pdrop": 0.0,
                "attn_pdrop": 0.0, "initializer_range": 0.02, "tie_word_embeddings": true, "torch_dtype": "float32",
            });
            s["attn_position_encoding"] = match cfg.position {
                Position::Sinusoidal => "sinusoidal".into(),
                _ => "learned".into(),
            };
            s
        }
        family => {
            let arch = match family {
                Family::Qwen2 => "Qwen2ForCausalLM",
                Family::Mistral => "MistralForCausalLM",
                _ => "LlamaForCausalLM",
            };
            let (theta, scaling) = match cfg.position {
                Position::Rope { theta, scaling } => (theta, scaling),
                _ => (10_000.0, RopeScaling::None),
            };
            let rope_scaling = match scaling {
                RopeScaling::None => Value::Null,
                RopeScaling::Linear { factor } => json!({"rope_type": "linear", "factor": dec(factor)}),
                RopeScaling::Dynamic { factor, max_position } => {
                    json!({"rope_type": "dynamic", "factor": dec(factor), "original_max_position_embeddings": max_position})
                }
                RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position } => json!({
                    "rope_type": "llama3", "factor": dec(factor), "low_freq_factor": dec(low_freq_factor),
                    "high_freq_factor": dec(high_freq_factor), "original_max_position_embeddings": original_max_position,
                }),
            };
            let mut s = json!({
                "model_type": family.model_type(), "architectures": [arch], "vocab_size": cfg.vocab_size, "hidden_size": cfg.n_embd,
                "intermediate_size": cfg.d_ff, "num_hidden_layers": cfg.n_layer, "num_attention_heads": cfg.n_head,
                "num_key_value_heads": cfg.n_kv_head, "head_dim": cfg.head_dim, "max_position_embeddings": cfg.n_ctx,
                "rms_norm_eps": dec(cfg.norm_eps), "rope_theta": dec(theta), "rope_scaling": rope_scaling,
                "tie_word_embeddings": cfg.tied_head, "hidden_act": "silu", "torch_dtype": "float32",
            });
            if family != Family::Qwen2 {
                s["attention_bias"] = cfg.qkv_bias.into();
                s["mlp_bias"] = false.into();
            }
            s
        }
    };
    // A 5.x file's rope_parameters would contradict the 4.x fields written here.
    if let Some(o) = v.as_object_mut() {
        o.remove("rope_parameters");
    }
    for (k, x) in set.as_object().expect("object") {
        if !x.is_null() || k == "rope_scaling" {
            v[k] = x.clone();
        }
    }
    if !cfg.eos_token_ids.is_empty() {
        v["eos_token_id"] = if cfg.eos_token_ids.len() == 1 { cfg.eos_token_ids[0].into() } else { cfg.eos_token_ids.clone().into() };
    }
    if cfg.is_classifier() {
        let arch = match cfg.family {
            Family::Gpt2 => "GPT2ForSequenceClassification",
            Family::Bert => "BertForSequenceClassification",
            Family::Qwen2 => "Qwen2ForSequenceClassification",
            Family::Mistral => "MistralForSequenceClassification",
            Family::Llama => "LlamaForSequenceClassification",
        };
        v["architectures"] = json!([arch]);
        v["id2label"] = cfg.labels.iter().enumerate().map(|(i, l)| (i.to_string(), Value::from(l.clone()))).collect::<serde_json::Map<_, _>>().into();
        v["label2id"] = cfg.labels.iter().enumerate().map(|(i, l)| (l.clone(), Value::from(i))).collect::<serde_json::Map<_, _>>().into();
        v["problem_type"] = "single_label_classification".into();
        // transformers pools a decoder at its last non-pad token, and refuses
        // batches without a pad id.
        if cfg.family != Family::Bert && v["pad_token_id"].is_null() {
            v["pad_token_id"] = cfg.eos_token_ids.first().copied().unwrap_or(0).into();
        }
    }
    v
}
