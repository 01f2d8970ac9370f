//! The Llama family against Hugging Face transformers: logits, loss and every
//! parameter gradient for three tiny random models in
//! testdata/llama_golden.safetensors (tools/reference/llama_golden.py):
//! Llama with grouped-query attention and tied embeddings, Llama with
//! separate heads and lm_head at rope_theta 500000, and Qwen2 with QKV bias
//! and a single KV head.

use std::path::{Path, PathBuf};

use attn_model::checkpoint::TensorFile;
use attn_model::llama::{Llama, LlamaConfig};

fn fixture() -> TensorFile {
    TensorFile::open(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/llama_golden.safetensors")).expect("fixture present")
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn check(variant: &str) {
    let f = fixture();
    let meta = f.metadata().unwrap();
    let json: serde_json::Value = serde_json::from_str(&meta[variant]).unwrap();
    let cfg = LlamaConfig::from_hf(&json, Path::new("config.json")).unwrap();
    let mut model = Llama::zeros(cfg);
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
        let rel = max_abs(&model.grads[e.range()], &theirs) / scale;
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
        ("rope_scaling", serde_json::json!({"type": "linear", "factor": 2.0}), "rope_scaling"),
        ("num_key_value_heads", serde_json::json!(3), "num_key_value_heads"),
        ("model_type", serde_json::json!("mamba"), "model_type"),
    ] {
        let mut v = base.clone();
        v[field] = value;
        let err = LlamaConfig::from_hf(&v, Path::new("config.json")).unwrap_err().to_string();
        assert!(err.contains(expect) && err.contains("config.json"), "{field}: {err}");
    }
}
