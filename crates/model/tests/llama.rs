//! The Llama family against Hugging Face transformers: logits, loss and every
//! parameter gradient for three tiny random models in
//! testdata/llama_golden.safetensors (tools/reference/llama_golden.py):
//! Llama with grouped-query attention and tied embeddings, Llama with
//! separate heads and lm_head at rope_theta 500000, and Qwen2 with QKV bias
//! and a single KV head.

use std::path::{Path, PathBuf};

use attn_model::checkpoint::TensorFile;
use attn_model::{hf, Position, Transformer};

fn fixture() -> TensorFile {
    TensorFile::open(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/llama_golden.safetensors")).expect("fixture present")
}

use attn_kernels::gradcheck::max_diff as max_abs;

fn check(variant: &str) {
    let f = fixture();
    let meta = f.metadata().unwrap();
    let json: serde_json::Value = serde_json::from_str(&meta[variant]).unwrap();
    let cfg = hf::from_hf(&json, Path::new("config.json")).unwrap();
    let mut model = Transformer::zeros(cfg).unwrap();
    for e in model.layout.entries.clone() {
        f.read_into(&format!("{variant}.param.{}", e.name), &e.shape, &mut model.params[e.range()]).unwrap();
    }
    let (x, y) = (f.read_ids("input_ids").unwrap(), f.read_ids("targets").unwrap());
    let (b, t) = (2, x.len() / 2);
    model.zero_grad();
    let loss = model.forward(&x, Some(&y), b, t).unwrap().unwrap();
    let dl = max_abs(model.logits(), &f.read_f32(&format!("{variant}.logits")).unwrap());
    eprintln!("{variant}: max |logit difference| {dl:e}");
    assert!(dl < 1e-4, "{variant}: logits differ by {dl:e}");
    let want = f.read_f32(&format!("{variant}.loss")).unwrap()[0];
    assert!((loss - want).abs() < 1e-5, "{variant}: loss {loss} vs {want}");
    model.backward(1.0).unwrap();
    let mut worst = (0.0f32, String::new());
    for e in &model.layout.entries {
        let theirs = f.read_f32(&format!("{variant}.grad.{}", e.name)).unwrap();
        let scale = theirs.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-6);
        let rel = max_abs(&model.grads()[e.range()], &theirs) / scale;
        assert!(rel < 1e-3, "{variant} {}: relative gradient difference {rel:e}", e.name);
        if rel > worst.0 {
            worst = (rel, e.name.clone());
        }
    }
    eprintln!("{variant}: worst relative gradient difference {:e} ({})", worst.0, worst.1);
}

#[test]
fn llama_gqa_tied_matches_transformers() {
    check("llama_gqa_tied");
}

#[test]
fn llama_mha_untied_matches_transformers() {
    check("llama_mha_untied");
}

#[test]
fn qwen2_with_qkv_bias_matches_transformers() {
    check("qwen2_bias");
}

#[test]
fn unsupported_config_values_are_named() {
    let f = fixture();
    let base: serde_json::Value = serde_json::from_str(&f.metadata().unwrap()["llama_gqa_tied"]).unwrap();
    for (field, value, expect) in [
        ("hidden_act", serde_json::json!("gelu"), "hidden_act"),
        ("rope_scaling", serde_json::json!({"type": "yarn", "factor": 2.0}), "rope_scaling"),
        ("rms_norm_eps", serde_json::json!(-1e-6), "rms_norm_eps"),
        ("num_attention_heads", serde_json::json!(0), "num_attention_heads"),
        ("rope_theta", serde_json::json!(-5.0), "rope_theta"),
        ("num_key_value_heads", serde_json::json!(3), "num_key_value_heads"),
        ("model_type", serde_json::json!("mamba"), "model_type"),
    ] {
        let mut v = base.clone();
        v[field] = value;
        let err = hf::from_hf(&v, Path::new("config.json")).unwrap_err().to_string();
        assert!(err.contains(expect) && err.contains("config.json"), "{field}: {err}");
    }
}

fn load_variant(variant: &str) -> Transformer {
    let f = fixture();
    let json: serde_json::Value = serde_json::from_str(&f.metadata().unwrap()[variant]).unwrap();
    let mut model = Transformer::zeros(hf::from_hf(&json, Path::new("config.json")).unwrap()).unwrap();
    for e in model.layout.entries.clone() {
        f.read_into(&format!("{variant}.param.{}", e.name), &e.shape, &mut model.params[e.range()]).unwrap();
    }
    model
}

/// Cached decoding against a full forward pass at every step, to the end of
/// the context, with grouped-query attention (2 KV heads for 4 query heads).
#[test]
fn kv_cache_matches_full_forward() {
    for variant in ["llama_gqa_tied", "qwen2_bias"] {
        let mut model = load_variant(variant);
        let (v, ctx) = (model.config.vocab_size, model.config.n_ctx);
        let mut tokens = vec![5u32, 17, 3];
        let mut cache = model.new_cache(ctx).unwrap();
        let mut logits = model.prefill(&mut cache, &tokens).unwrap().to_vec();
        let mut worst = 0.0f32;
        while tokens.len() < ctx {
            model.forward(&tokens, None, 1, tokens.len()).unwrap();
            let full = &model.logits()[(tokens.len() - 1) * v..];
            worst = worst.max(max_abs(&logits, full));
            let next = logits.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0 as u32;
            tokens.push(next);
            if tokens.len() < ctx {
                logits = model.decode(&mut cache, next).unwrap().to_vec();
            }
        }
        eprintln!("{variant}: worst cached-vs-full logit difference {worst:e} over {} positions", ctx);
        assert!(worst < 1e-5, "{variant}: {worst:e}");
        assert!(cache.is_full() || cache.len() == ctx - 1);
    }
}

#[test]
fn save_and_load_round_trip() {
    let model = load_variant("llama_mha_untied");
    let dir = tempfile::tempdir().unwrap();
    model.save(dir.path(), None).unwrap();
    let (loaded, _) = Transformer::load(dir.path()).unwrap();
    assert!(matches!(loaded.config.position, Position::Rope { theta: 500000.0, .. }));
    assert_eq!(loaded.params, model.params);
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["architectures"][0], "LlamaForCausalLM");
    assert_eq!(cfg["num_key_value_heads"], 4);
    // A missing tensor is named.
    let tied = load_variant("llama_gqa_tied");
    let mut json = tied.hf_config();
    json["tie_word_embeddings"] = false.into();
    tied.save(dir.path(), None).unwrap();
    std::fs::write(dir.path().join("config.json"), json.to_string()).unwrap();
    let err = Transformer::load(dir.path()).err().expect("lm_head is missing").to_string();
    assert!(err.contains("lm_head.weight") && err.contains("model.safetensors"), "{err}");
}

/// A folder as `save_pretrained` writes a large model: the tensors split over
/// two files, listed in model.safetensors.index.json.
#[test]
fn sharded_folder_loads() {
    use attn_model::checkpoint::save_tensors;
    let model = load_variant("qwen2_bias");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), model.hf_config().to_string()).unwrap();
    let entries = &model.layout.entries;
    let half = entries.len() / 2;
    let mut weight_map = serde_json::Map::new();
    for (i, part) in [&entries[..half], &entries[half..]].iter().enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", i + 1);
        let tensors: Vec<_> = part.iter().map(|e| (e.name.as_str(), e.shape.clone(), &model.params[e.range()])).collect();
        save_tensors(&dir.path().join(&file), &tensors, None).unwrap();
        for e in part.iter() {
            weight_map.insert(e.name.clone(), file.clone().into());
        }
    }
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(dir.path().join("model.safetensors.index.json"), index.to_string()).unwrap();
    let (mut loaded, _) = Transformer::load(dir.path()).unwrap();
    assert_eq!(loaded.model_type(), "qwen2");
    assert_eq!(loaded.params(), &model.params[..]);
    let f = fixture();
    let x = f.read_ids("input_ids").unwrap();
    loaded.forward(&x, None, 2, x.len() / 2).unwrap();
    assert!(max_abs(loaded.logits(), &f.read_f32("qwen2_bias.logits").unwrap()) < 1e-4);
    // A shard the index names but that lacks the tensor is an error naming both.
    let mut bad = index.clone();
    bad["weight_map"]["model.norm.weight"] = "model-00001-of-00002.safetensors".into();
    std::fs::write(dir.path().join("model.safetensors.index.json"), bad.to_string()).unwrap();
    let err = Transformer::load(dir.path()).err().expect("inconsistent index").to_string();
    assert!(err.contains("model.norm.weight") && err.contains("model-00001-of-00002.safetensors"), "{err}");
}
