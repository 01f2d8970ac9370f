//! LoRA against PEFT 0.18 (testdata/lora, written by
//! tools/reference/lora_golden.py): adapters PEFT made on a GPT-2 (Conv1D,
//! fan_in_fan_out) and a Llama with grouped-query heads load onto their base
//! models and give PEFT's logits, loss and adapter gradients, with the base
//! frozen; merging gives the same logits; new adapters start as the base
//! model; a saved adapter loads back; dropout's gradient is checked against
//! finite differences.
//!
//! Bars: logits within 1e-4, loss within 1e-5, adapter gradients within 1e-3
//! of each tensor's largest entry.

use std::path::PathBuf;

use attn_model::checkpoint::TensorFile;
use attn_model::lora::{Lora, LoraConfig};
use attn_model::Transformer;

fn dir(v: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/lora").join(v)
}

fn golden() -> TensorFile {
    TensorFile::open(&dir("golden.safetensors")).unwrap()
}

fn adapted(v: &str) -> Transformer {
    let (mut model, _) = Transformer::load(&dir(v).join("base")).unwrap();
    let (lora, _) = Lora::load(&dir(v).join("adapter"), &model.config).unwrap();
    model.lora = Some(lora);
    model
}

use attn_kernels::gradcheck::max_diff as max_abs;

/// The adapter gradient furthest from PEFT's, relative to its tensor's largest entry.
fn worst_gradient(f: &TensorFile, v: &str, lora: &Lora) -> (f32, String) {
    let mut worst = (0.0f32, String::new());
    for e in &lora.layout.entries {
        let theirs = f.read_f32(&format!("{v}.grad.{}", e.name)).unwrap();
        let scale = theirs.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-6);
        let rel = max_abs(&lora.grads[e.range()], &theirs) / scale;
        if rel > worst.0 {
            worst = (rel, e.name.clone());
        }
    }
    worst
}

fn check(v: &str) {
    let f = golden();
    let mut model = adapted(v);
    let shape = f.shape(&format!("{v}.input_ids")).unwrap();
    let (b, t) = (shape[0], shape[1]);
    let (x, y) = (f.read_ids(&format!("{v}.input_ids")).unwrap(), f.read_ids(&format!("{v}.targets")).unwrap());
    model.zero_grad();
    let loss = model.forward(&x, Some(&y), b, t).unwrap().unwrap();
    let want_logits = f.read_f32(&format!("{v}.logits")).unwrap();
    let dl = max_abs(model.logits(), &want_logits);
    let want = f.read_f32(&format!("{v}.loss")).unwrap()[0];
    eprintln!("{v}: logits {dl:e}, loss {loss} vs PEFT {want}");
    assert!(dl < 1e-4 && (loss - want).abs() < 1e-5, "{v}: logits {dl:e}, loss {loss} vs {want}");
    model.backward(1.0).unwrap();
    assert!(model.grads().is_empty(), "the base must get no gradient buffer");
    let lora = model.lora.as_ref().unwrap();
    let worst = worst_gradient(&f, v, lora);
    eprintln!("{v}: {} adapter tensors, worst relative gradient difference {:e} ({})", lora.layout.entries.len(), worst.0, worst.1);
    assert!(worst.0 < 1e-3, "{v} {}: {:e}", worst.1, worst.0);

    // Merged into the base: the same logits from the plain model.
    let (mut merged, _) = Transformer::load(&dir(v).join("base")).unwrap();
    model.lora.as_ref().unwrap().merge_into(&mut merged);
    merged.forward(&x, None, b, t).unwrap();
    let dm = max_abs(merged.logits(), &want_logits);
    eprintln!("{v}: merged logits {dm:e}");
    assert!(dm < 1e-4, "{v}: merged logits differ by {dm:e}");
}

#[test]
fn gpt2_adapter_from_peft_matches() {
    check("gpt2");
}

#[test]
fn llama_adapter_from_peft_matches() {
    check("llama");
}

#[test]
fn new_adapters_start_as_the_base_and_round_trip() {
    let (mut model, _) = Transformer::load(&dir("llama").join("base")).unwrap();
    let x: Vec<u32> = (0..32).map(|i| (i * 7 % 60) as u32).collect();
    model.forward(&x, None, 1, 32).unwrap();
    let base = model.logits().to_vec();
    let cfg = LoraConfig { r: 2, alpha: 4.0, dropout: 0.0, targets: vec!["q".into(), "v".into(), "mlp".into()], rslora: false };
    model.lora = Some(Lora::new(&model.config, cfg, 1).unwrap());
    model.forward(&x, None, 1, 32).unwrap();
    assert_eq!(model.logits(), base.as_slice(), "B starts at zero: the adapted model is the base");
    // 2 layers x (q, v, gate, up, down).
    let lora = model.lora.as_mut().unwrap();
    assert_eq!(lora.adapters.len(), 10);
    lora.params.iter_mut().enumerate().for_each(|(i, p)| *p += (i % 7) as f32 * 0.01);
    let tmp = tempfile::tempdir().unwrap();
    lora.save(tmp.path(), &model.config, "base", None).unwrap();
    let (back, _) = Lora::load(tmp.path(), &model.config).unwrap();
    assert_eq!(back.params, lora.params);
    assert_eq!(back.config.scale(2), 2.0);
    let names: Vec<_> = back.layout.entries.iter().map(|e| e.name.clone()).collect();
    assert!(names.contains(&"base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight".to_string()), "{names:?}");
}

#[test]
fn adapters_for_another_model_are_refused() {
    let (model, _) = Transformer::load(&dir("llama").join("base")).unwrap();
    let e = Lora::load(&dir("gpt2").join("adapter"), &model.config).err().expect("a GPT-2 adapter on a Llama").to_string();
    assert!(e.contains("transformer.h.") && e.contains("not a projection"), "{e}");
}

/// With dropout, the analytic gradient of the adapters equals finite
/// differences of the loss under the same masks.
#[test]
fn dropout_gradient_matches_finite_differences() {
    let (mut model, _) = Transformer::load(&dir("gpt2").join("base")).unwrap();
    let cfg = LoraConfig { r: 2, alpha: 2.0, dropout: 0.3, targets: vec!["q".into(), "o".into(), "mlp".into()], rslora: false };
    let mut lora = Lora::new(&model.config, cfg, 3).unwrap();
    lora.params.iter_mut().enumerate().for_each(|(i, p)| *p += ((i * 37 % 11) as f32 - 5.0) * 0.02);
    lora.training = true;
    lora.dropout_stream = 9;
    model.lora = Some(lora);
    let (b, t) = (2, 16);
    let x: Vec<u32> = (0..b * t).map(|i| (i * 13 % 67) as u32).collect();
    let y: Vec<u32> = (0..b * t).map(|i| (i * 5 % 67) as u32).collect();
    model.zero_grad();
    model.forward(&x, Some(&y), b, t).unwrap();
    model.backward(1.0).unwrap();
    let grads = model.lora.as_ref().unwrap().grads.clone();
    let n = grads.len();
    let mut worst = 0.0f32;
    for k in (0..n).step_by(n / 40) {
        let mut at = |d: f32| {
            model.lora.as_mut().unwrap().params[k] += d;
            let l = model.forward(&x, Some(&y), b, t).unwrap().unwrap() as f64;
            model.lora.as_mut().unwrap().params[k] -= d;
            l
        };
        let eps = 1e-2;
        let num = ((at(eps) - at(-eps)) / (2.0 * eps as f64)) as f32;
        worst = worst.max((num - grads[k]).abs());
    }
    let scale = grads.iter().fold(0.0f32, |m, g| m.max(g.abs()));
    eprintln!("dropout: worst |numeric - analytic| {worst:e} of gradient scale {scale:e}");
    assert!(worst < 2e-3 * scale.max(1.0), "dropout gradient off by {worst:e}");
}

/// An adapter attn writes (testdata/lora/attn_export/{gpt2,llama}, with the
/// logits attn computes with it) for tools/reference/check_lora_export.py to
/// load with `PeftModel.from_pretrained` and compare. This test keeps the
/// committed folders equal to what attn writes and computes today;
/// ATTN_WRITE_FIXTURES=1 rewrites them.
#[test]
fn exported_adapters_are_current() {
    for v in ["gpt2", "llama"] {
        let (mut model, _) = Transformer::load(&dir(v).join("base")).unwrap();
        let cfg = LoraConfig { r: 3, alpha: 6.0, dropout: 0.0, targets: ["q", "k", "v", "o", "mlp"].map(String::from).to_vec(), rslora: false };
        let mut lora = Lora::new(&model.config, cfg, 7).unwrap();
        lora.params.iter_mut().enumerate().for_each(|(i, p)| *p += ((i * 31 % 17) as f32 - 8.0) * 0.01);
        let x: Vec<u32> = (0..2 * 64).map(|i| (i * 11 % 67) as u32).collect();
        let out = dir("attn_export").join(v);
        if std::env::var_os("ATTN_WRITE_FIXTURES").is_some() {
            std::fs::create_dir_all(&out).unwrap();
            lora.save(&out, &model.config, &format!("testdata/lora/{v}/base"), None).unwrap();
            model.lora = Some(lora);
            model.forward(&x, None, 2, 64).unwrap();
            let ids: Vec<f32> = x.iter().map(|&i| i as f32).collect();
            attn_model::checkpoint::save_tensors(
                &out.join("attn_logits.safetensors"),
                &[("logits", vec![2, 64, 67], model.logits()), ("input_ids", vec![2, 64], &ids)],
                None,
            )
            .unwrap();
            continue;
        }
        let (saved, _) = Lora::load(&out, &model.config).unwrap();
        assert_eq!(saved.params, lora.params, "{v}: the committed adapter is not what attn writes; rerun with ATTN_WRITE_FIXTURES=1");
        model.lora = Some(saved);
        model.forward(&x, None, 2, 64).unwrap();
        let want = TensorFile::open(&out.join("attn_logits.safetensors")).unwrap().read_f32("logits").unwrap();
        assert!(max_abs(model.logits(), &want) < 1e-5, "{v}: the committed logits are stale");
    }
}

/// Sequence classifiers with LoRA (PEFT task_type SEQ_CLS): the adapters and
/// the head, trained in full beside them, give PEFT's logits, loss and
/// gradients on a right-padded batch, the base frozen.
fn check_cls(v: &str) {
    let f = golden();
    let (mut model, _) = Transformer::load(&dir(v).join("base")).unwrap();
    let (lora, _) = Lora::load(&dir(v).join("adapter"), &model.config).unwrap();
    assert!(!lora.head.is_empty(), "{v}: the adapter carries the classifier's head");
    model.lora = Some(lora);
    let t = f.shape(&format!("{v}.input_ids")).unwrap()[1];
    let x = f.read_ids(&format!("{v}.input_ids")).unwrap();
    let lens: Vec<usize> = f.read_ids(&format!("{v}.lens")).unwrap().iter().map(|&l| l as usize).collect();
    let labels = f.read_ids(&format!("{v}.labels")).unwrap();
    model.zero_grad();
    let (logits, loss) = model.classify(&x, &lens, t, Some(&labels)).unwrap();
    let dl = max_abs(&logits, &f.read_f32(&format!("{v}.logits")).unwrap());
    let (loss, want) = (loss.unwrap(), f.read_f32(&format!("{v}.loss")).unwrap()[0]);
    eprintln!("{v}: logits {dl:e}, loss {loss} vs PEFT {want}");
    assert!(dl < 1e-4 && (loss - want).abs() < 1e-5, "{v}: logits {dl:e}, loss {loss} vs {want}");
    model.classify_backward(1.0).unwrap();
    assert!(model.grads().is_empty());
    let lora = model.lora.as_ref().unwrap();
    let worst = worst_gradient(&f, v, lora);
    eprintln!("{v}: {} tensors (head included), worst relative gradient difference {:e} ({})", lora.layout.entries.len(), worst.0, worst.1);
    assert!(worst.0 < 1e-3, "{v} {}: {:e}", worst.1, worst.0);
}

#[test]
fn gpt2_classifier_adapter_from_peft_matches() {
    check_cls("gpt2_cls");
}

#[test]
fn bert_classifier_adapter_from_peft_matches() {
    check_cls("bert_cls");
}
