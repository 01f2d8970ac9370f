//! Parity with PyTorch + Hugging Face `GPT2LMHeadModel`.
//! Fixture: testdata/gpt2_golden.safetensors, written by tools/reference/gpt2_golden.py
//! (torch 2.5.1, transformers 4.46.3): a 2-layer, 4-head, 32-channel GPT-2 with
//! vocab 67, a (3, 10) batch, logits, loss, every gradient, and 10 AdamW steps.

use std::path::PathBuf;

use attn_model::checkpoint::TensorFile;
use attn_model::{Transformer, TransformerConfig};
use attn_train::optim::{DecayRule, Optimizer, OptimizerKind};

fn fixture() -> TensorFile {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/gpt2_golden.safetensors");
    TensorFile::open(&path).expect("fixture present")
}

fn load_model(f: &TensorFile) -> Transformer {
    let cfg = TransformerConfig::gpt2(67, 16, 2, 4, 32);
    let mut model = Transformer::zeros(cfg).unwrap();
    for e in model.layout.entries.clone() {
        f.read_into(&format!("param.{}", e.name), &e.shape, &mut model.params[e.range()]).unwrap();
    }
    model
}

use attn_kernels::gradcheck::max_diff as max_abs;

#[test]
fn logits_loss_and_gradients_match_pytorch() {
    let f = fixture();
    let mut model = load_model(&f);
    let (x, y) = (f.read_ids("input_ids").unwrap(), f.read_ids("targets").unwrap());
    let (b, t) = (3, 10);
    model.zero_grad();
    let loss = model.forward(&x, Some(&y), b, t).unwrap().unwrap();
    // f32 GEMMs in a different summation order: ~1e-6 apart; the bar is 1e-4.
    let dl = max_abs(model.logits(), &f.read_f32("logits").unwrap());
    eprintln!("max |logit difference| {dl:e}");
    assert!(dl < 1e-4, "logits differ by {dl:e}");
    let ref_loss = f.read_f32("loss").unwrap()[0];
    assert!((loss - ref_loss).abs() < 1e-5, "loss {loss} vs {ref_loss}");
    model.backward(1.0).unwrap();
    let mut worst = (0.0f32, String::new());
    // Gradients: within 1e-3 of the largest gradient of the same tensor, so
    // that near-zero entries are not judged by an unstable relative error.
    for e in &model.layout.entries {
        let ours = &model.grads()[e.range()];
        let theirs = f.read_f32(&format!("grad.{}", e.name)).unwrap();
        let scale = theirs.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-6);
        let rel = max_abs(ours, &theirs) / scale;
        assert!(rel < 1e-3, "{}: relative gradient difference {rel:e}", e.name);
        if rel > worst.0 {
            worst = (rel, e.name.clone());
        }
    }
    eprintln!("worst relative gradient difference {:e} ({})", worst.0, worst.1);
}

#[test]
fn ten_adamw_steps_match_pytorch() {
    let f = fixture();
    let mut model = load_model(&f);
    let (x, y) = (f.read_ids("input_ids").unwrap(), f.read_ids("targets").unwrap());
    let want = f.read_f32("step_losses").unwrap();
    let kind = OptimizerKind::AdamW { beta1: 0.9, beta2: 0.95, eps: 1e-8 };
    let mut opt = Optimizer::new(kind, 0.1, DecayRule::Matrices, &model.layout, attn_train::optim::Dtype::F32);
    let mut worst = 0.0f32;
    for (step, &w) in want.iter().enumerate() {
        model.zero_grad();
        let loss = model.forward(&x, Some(&y), 3, 10).unwrap().unwrap();
        assert!((loss - w).abs() < 1e-4, "step {step}: loss {loss} vs pytorch {w}");
        worst = worst.max((loss - w).abs());
        model.backward(1.0).unwrap();
        let (params, grads) = model.params_and_grads();
        opt.step(params, grads, 1e-2, 1.0);
    }
    eprintln!("worst step-loss difference over 10 AdamW steps {worst:e}");
}
