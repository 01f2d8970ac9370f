//! Supervised fine-tuning's loss: labels of -100 (attn's `IGNORE`) on the
//! prompt and on the padding of a right-padded batch, against transformers
//! 5.x (testdata/sft_golden.safetensors, written by
//! tools/reference/sft_golden.py). transformers runs with its attention mask;
//! attn needs none, because in a causal model a right-padded position comes
//! after every real one and so no real position can attend to it.
//!
//! Bars: logits at real positions within 1e-4, the loss within 1e-5, every
//! gradient within 1e-3 of its tensor's largest entry.

use std::path::{Path, PathBuf};

use attn_kernels::crossentropy::IGNORE;
use attn_model::checkpoint::TensorFile;
use attn_model::Transformer;

fn fixture() -> TensorFile {
    TensorFile::open(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/sft_golden.safetensors")).expect("fixture present")
}

fn load(f: &TensorFile, variant: &str) -> Transformer {
    let json: serde_json::Value = serde_json::from_str(&f.metadata().unwrap()[variant]).unwrap();
    let cfg = attn_model::hf::from_hf(&json, Path::new("config.json")).unwrap();
    let mut model = Transformer::zeros(cfg).unwrap();
    for e in model.layout.entries.clone() {
        f.read_into(&format!("{variant}.param.{}", e.name), &e.shape, &mut model.params[e.range()]).unwrap();
    }
    model
}

/// transformers' labels (B, T), -100 where ignored, as next-token targets:
/// position i predicts label i + 1; the last position predicts nothing.
fn shifted_targets(labels: &[u32], b: usize, t: usize) -> Vec<u32> {
    let mut y = vec![IGNORE; b * t];
    for r in 0..b {
        for i in 0..t - 1 {
            let l = labels[r * t + i + 1] as i32;
            y[r * t + i] = if l == -100 { IGNORE } else { l as u32 };
        }
    }
    y
}

struct Case {
    model: Transformer,
    x: Vec<u32>,
    y: Vec<u32>,
    mask: Vec<u32>,
    b: usize,
    t: usize,
}

fn case(f: &TensorFile, variant: &str) -> Case {
    let shape = f.shape(&format!("{variant}.input_ids")).unwrap();
    let (b, t) = (shape[0], shape[1]);
    assert!(t >= 64, "the fixture must exercise real lengths");
    let x = f.read_ids(&format!("{variant}.input_ids")).unwrap();
    let y = shifted_targets(&f.read_ids(&format!("{variant}.labels")).unwrap(), b, t);
    let mask = f.read_ids(&format!("{variant}.attention_mask")).unwrap();
    Case { model: load(f, variant), x, y, mask, b, t }
}

fn check(variant: &str) {
    let f = fixture();
    let Case { mut model, x, y, mask, b, t } = case(&f, variant);
    let v = model.vocab_size();
    model.zero_grad();
    let loss = model.forward(&x, Some(&y), b, t).unwrap().unwrap();
    let want = f.read_f32(&format!("{variant}.loss")).unwrap()[0];
    let theirs = f.read_f32(&format!("{variant}.logits")).unwrap();
    // Only real positions: what a padded position computes is never used.
    let mut dl = 0.0f32;
    for (row, &m) in mask.iter().enumerate() {
        if m == 1 {
            let r = row * v..(row + 1) * v;
            dl = model.logits()[r.clone()].iter().zip(&theirs[r]).map(|(a, b)| (a - b).abs()).fold(dl, f32::max);
        }
    }
    eprintln!("{variant}: logits {dl:e}, loss {loss} vs transformers {want}");
    assert!(dl < 1e-4, "{variant}: logits differ by {dl:e}");
    assert!((loss - want).abs() < 1e-5, "{variant}: loss {loss} vs transformers {want}");
    model.backward(1.0).unwrap();
    let mut worst = (0.0f32, String::new());
    for e in &model.layout.entries {
        let theirs = f.read_f32(&format!("{variant}.grad.{}", e.name)).unwrap();
        let scale = theirs.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-6);
        let d = attn_kernels::gradcheck::max_diff(&model.grads()[e.range()], &theirs) / scale;
        if d > worst.0 {
            worst = (d, e.name.clone());
        }
    }
    eprintln!("{variant}: worst relative gradient difference {:e} ({})", worst.0, worst.1);
    assert!(worst.0 < 1e-3, "{variant} {}: relative gradient difference {:e}", worst.1, worst.0);
}

#[test]
fn gpt2_masked_loss_matches_transformers() {
    check("gpt2");
}

#[test]
fn qwen2_masked_loss_matches_transformers() {
    check("qwen2");
}

/// Each example of the padded batch, run alone at its own length, gives the
/// same logits as in the batch.
#[test]
fn padded_batch_equals_each_example_alone() {
    let f = fixture();
    let Case { mut model, x, y, mask, b, t } = case(&f, "qwen2");
    let v = model.vocab_size();
    model.forward(&x, Some(&y), b, t).unwrap();
    let batch_logits = model.logits().to_vec();
    for r in 0..b {
        let len = mask[r * t..(r + 1) * t].iter().filter(|&&m| m == 1).count();
        let (xr, yr) = (&x[r * t..r * t + len], &y[r * t..r * t + len]);
        model.forward(xr, Some(yr), 1, len).unwrap();
        let d = attn_kernels::gradcheck::max_diff(model.logits(), &batch_logits[r * t * v..(r * t + len) * v]);
        assert!(d < 1e-5, "example {r} (length {len}): logits alone differ from the padded batch's by {d:e}");

        // Labelling the prompt too changes the gradient, so ignoring it is
        // what keeps the prompt out of the update.
        model.zero_grad();
        model.forward(xr, Some(yr), 1, len).unwrap();
        model.backward(1.0).unwrap();
        let masked = model.grads().to_vec();
        let all: Vec<u32> = (0..len).map(|i| if i + 1 < len { xr[i + 1] } else { IGNORE }).collect();
        model.zero_grad();
        model.forward(xr, Some(&all), 1, len).unwrap();
        model.backward(1.0).unwrap();
        assert_ne!(masked, model.grads(), "example {r}: labelling the prompt should change the gradient");
    }
}
