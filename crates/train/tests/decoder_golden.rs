//! The one Transformer against Hugging Face transformers 5.x at real
//! sequence lengths (testdata/decoder_golden.safetensors, written by
//! tools/reference/decoder_golden.py): GPT-2 at its full context of 64, Llama
//! with grouped-query attention, an explicit head_dim and theta 5e5, Llama
//! with llama3 rope scaling at T = 96, and Qwen2 with q/k/v biases. Each model
//! is built from the config.json text transformers wrote, so the 5.x layout
//! (`rope_parameters`) is what is parsed.
//!
//! Bars: logits within 1e-4; every gradient within 1e-3 of its tensor's
//! largest entry; 10 AdamW steps with grad_accum = 2 within 1e-4 of torch's
//! losses and of its final weights. f32 sums in another order differ by
//! ~1e-6 per op; a wrong op differs by far more than the bars.

use std::path::{Path, PathBuf};

use attn_model::checkpoint::TensorFile;
use attn_model::Transformer;
use attn_train::optim::{DecayRule, Optimizer, OptimizerKind};

fn fixture() -> TensorFile {
    TensorFile::open(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/decoder_golden.safetensors")).expect("fixture present")
}

use attn_kernels::gradcheck::max_diff as max_abs;

fn load(f: &TensorFile, variant: &str) -> Transformer {
    let json: serde_json::Value = serde_json::from_str(&f.metadata().unwrap()[variant]).unwrap();
    let cfg = attn_model::hf::from_hf(&json, Path::new("config.json")).unwrap();
    let mut model = Transformer::zeros(cfg).unwrap();
    for e in model.layout.entries.clone() {
        f.read_into(&format!("{variant}.param.{}", e.name), &e.shape, &mut model.params[e.range()]).unwrap();
    }
    model
}

fn check(variant: &str) {
    let f = fixture();
    let mut model = load(&f, variant);
    let shape = f.shape(&format!("{variant}.input_ids")).unwrap();
    let (b, t) = (shape[1], shape[2]);
    assert!(t >= 64, "the fixture must exercise real lengths");
    let (x, y) = (f.read_ids(&format!("{variant}.input_ids")).unwrap(), f.read_ids(&format!("{variant}.targets")).unwrap());
    let n = b * t;
    model.zero_grad();
    let loss = model.forward(&x[..n], Some(&y[..n]), b, t).unwrap().unwrap();
    let dl = max_abs(model.logits(), &f.read_f32(&format!("{variant}.logits")).unwrap());
    let want = f.read_f32(&format!("{variant}.loss")).unwrap()[0];
    eprintln!("{variant} (T = {t}): logits {dl:e}, loss {:e}", (loss - want).abs());
    assert!(dl < 1e-4, "{variant}: logits differ by {dl:e}");
    assert!((loss - want).abs() < 1e-5, "{variant}: loss {loss} vs {want}");
    model.backward(1.0).unwrap();
    let mut worst = (0.0f32, String::new());
    for e in &model.layout.entries {
        let theirs = f.read_f32(&format!("{variant}.grad.{}", e.name)).unwrap();
        let scale = theirs.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-6);
        let rel = max_abs(&model.grads()[e.range()], &theirs) / scale;
        if rel > worst.0 {
            worst = (rel, e.name.clone());
        }
    }
    eprintln!("{variant}: worst relative gradient difference {:e} ({})", worst.0, worst.1);
    assert!(worst.0 < 1e-3, "{variant} {}: relative gradient difference {:e}", worst.1, worst.0);

    // 10 AdamW steps, two micro-batches each, as torch ran them.
    let mut model = load(&f, variant);
    // eps 1e-6, not 1e-8: some gradients are zero in exact arithmetic (the
    // key bias: adding a constant to every score of a row changes no
    // probability) and so pure rounding noise in both programs; Adam divides
    // them by their own size, and with eps 1e-8 that noise became +-lr steps.
    let kind = OptimizerKind::AdamW { beta1: 0.9, beta2: 0.95, eps: 1e-6 };
    let mut opt = Optimizer::new(kind, 0.1, DecayRule::Matrices, &model.layout, attn_train::optim::Dtype::F32);
    let want = f.read_f32(&format!("{variant}.step_losses")).unwrap();
    let mut worst_loss = 0.0f32;
    for (step, &w) in want.iter().enumerate() {
        model.zero_grad();
        let mut sum = 0.0f64;
        for micro in 0..2 {
            let r = micro * n..(micro + 1) * n;
            sum += model.forward(&x[r.clone()], Some(&y[r]), b, t).unwrap().unwrap() as f64 / 2.0;
            model.backward(0.5).unwrap();
        }
        worst_loss = worst_loss.max((sum as f32 - w).abs());
        assert!((sum as f32 - w).abs() < 1e-4, "{variant} step {step}: loss {sum} vs torch {w}");
        let (params, grads) = model.params_and_grads();
        opt.step(params, grads, 1e-2, 1.0);
    }
    let (mut worst_w, mut worst_name) = (0.0f32, String::new());
    for e in &model.layout.entries {
        let theirs = f.read_f32(&format!("{variant}.final.{}", e.name)).unwrap();
        let d = max_abs(&model.params[e.range()], &theirs);
        if d > worst_w {
            (worst_w, worst_name) = (d, e.name.clone());
        }
    }
    eprintln!("{variant}: worst final weight {worst_name}");
    eprintln!("{variant}: 10 AdamW steps (grad_accum 2): losses within {worst_loss:e}, final weights within {worst_w:e}");
    assert!(worst_w < 1e-4, "{variant}: final weights differ by {worst_w:e}");
}

#[test]
fn gpt2_at_full_context_matches_transformers() {
    check("gpt2");
}

#[test]
fn llama_gqa_head_dim_theta_matches_transformers() {
    check("llama_gqa");
}

#[test]
fn llama3_rope_scaling_matches_transformers() {
    check("llama3_scaled");
}

#[test]
fn qwen2_bias_matches_transformers() {
    check("qwen2_bias");
}
