//! Sequence classifiers against transformers 5.x (testdata/classify, written
//! by tools/reference/classify_golden.py): GPT2ForSequenceClassification
//! (score over the last real token) and BertForSequenceClassification
//! (pooler over [CLS], classifier), each folder loaded as transformers saved
//! it, on a right-padded batch of lengths 64, 40 and 9.
//!
//! Bars: logits within 1e-4, loss within 1e-5, every gradient within 1e-3 of
//! its tensor's largest entry.

use std::path::PathBuf;

use attn_model::checkpoint::TensorFile;
use attn_model::Transformer;

fn dir(v: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/classify").join(v)
}

use attn_kernels::gradcheck::{max_diff as max_abs, relative_diff};

struct Batch {
    x: Vec<u32>,
    lens: Vec<usize>,
    labels: Vec<u32>,
    t: usize,
}

fn batch(f: &TensorFile, v: &str) -> Batch {
    let t = f.shape(&format!("{v}.input_ids")).unwrap()[1];
    Batch {
        x: f.read_ids(&format!("{v}.input_ids")).unwrap(),
        lens: f.read_ids(&format!("{v}.lens")).unwrap().iter().map(|&l| l as usize).collect(),
        labels: f.read_ids(&format!("{v}.labels")).unwrap(),
        t,
    }
}

fn check(v: &str, labels: &[&str]) {
    let f = TensorFile::open(&dir("golden.safetensors")).unwrap();
    let (mut model, _) = Transformer::load(&dir(v)).unwrap();
    assert_eq!(model.config.labels, labels);
    let Batch { x, lens, labels, t } = batch(&f, v);
    model.zero_grad();
    let (logits, loss) = model.classify(&x, &lens, t, Some(&labels)).unwrap();
    let dl = max_abs(&logits, &f.read_f32(&format!("{v}.logits")).unwrap());
    let want = f.read_f32(&format!("{v}.loss")).unwrap()[0];
    let loss = loss.unwrap();
    eprintln!("{v}: logits {dl:e}, loss {loss} vs transformers {want}");
    assert!(dl < 1e-4 && (loss - want).abs() < 1e-5, "{v}: logits {dl:e}, loss {loss} vs {want}");
    model.classify_backward(1.0).unwrap();
    let mut worst = (0.0f32, String::new());
    for e in &model.layout.entries {
        let theirs = f.read_f32(&format!("{v}.grad.{}", e.name)).unwrap();
        let rel = relative_diff(&model.grads()[e.range()], &theirs);
        if rel > worst.0 {
            worst = (rel, e.name.clone());
        }
    }
    eprintln!("{v}: {} tensors, worst relative gradient difference {:e} ({})", model.layout.entries.len(), worst.0, worst.1);
    assert!(worst.0 < 1e-3, "{v} {}: {:e}", worst.1, worst.0);

    // Each sequence alone gives the logits it gets in the padded batch.
    for (i, &len) in lens.iter().enumerate() {
        let (alone, _) = model.classify(&x[i * t..i * t + len], &[len], len, None).unwrap();
        let k = alone.len();
        assert!(max_abs(&alone, &logits[i * k..(i + 1) * k]) < 1e-5, "{v}: sequence {i} alone differs");
    }

    // Saved and loaded back: the same config and logits.
    let tmp = tempfile::tempdir().unwrap();
    model.save(tmp.path(), None).unwrap();
    let saved: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(tmp.path().join("config.json")).unwrap()).unwrap();
    assert!(saved["architectures"][0].as_str().unwrap().ends_with("ForSequenceClassification"));
    let (mut back, _) = Transformer::load(tmp.path()).unwrap();
    let (again, _) = back.classify(&x, &lens, t, None).unwrap();
    assert_eq!(again, logits);
}

#[test]
fn gpt2_classifier_matches_transformers() {
    check("gpt2", &["negative", "neutral", "positive"]);
}

#[test]
fn bert_classifier_matches_transformers() {
    check("bert", &["ham", "spam"]);
}

#[test]
fn a_language_model_becomes_a_classifier_with_a_new_head() {
    let base = dir("../lora/gpt2/base");
    let labels = vec!["a".to_string(), "b".to_string()];
    let mut m = Transformer::load_as_classifier(&base, labels.clone(), 3).unwrap();
    assert_eq!(m.config.labels, labels);
    assert!(m.layout.get("score.weight").is_some() && m.layout.get("transformer.wte.weight").is_some());
    let (lm, _) = Transformer::load(&base).unwrap();
    let e = m.layout.get("transformer.h.0.attn.c_attn.weight").unwrap().clone();
    assert_eq!(&m.params[e.range()], &lm.params[lm.layout.get(&e.name).unwrap().range()], "the body is kept");
    let (logits, _) = m.classify(&[5, 6, 7, 8], &[4], 4, None).unwrap();
    assert_eq!(logits.len(), 2);
    // An LM cannot classify, and a classifier has no LM loss.
    let mut lm = lm;
    assert!(lm.classify(&[5, 6], &[2], 2, None).is_err());
    assert!(m.forward(&[5, 6], Some(&[6, 7]), 1, 2).is_err());
}

/// Classifier folders attn writes (testdata/classify/attn_export/{gpt2,bert}:
/// the fixture models after one SGD step on the fixture batch, with the
/// logits attn computes) for tools/reference/check_classify_export.py to
/// load with `AutoModelForSequenceClassification` and compare. This test
/// keeps the committed folders current; ATTN_WRITE_FIXTURES=1 rewrites them.
#[test]
fn exported_classifiers_are_current() {
    let f = TensorFile::open(&dir("golden.safetensors")).unwrap();
    for v in ["gpt2", "bert"] {
        let (mut model, _) = Transformer::load(&dir(v)).unwrap();
        let Batch { x, lens, labels, t } = batch(&f, v);
        model.zero_grad();
        model.classify(&x, &lens, t, Some(&labels)).unwrap();
        model.classify_backward(1.0).unwrap();
        let g = model.grads().to_vec();
        model.params.iter_mut().zip(&g).for_each(|(p, g)| *p -= 0.5 * g);
        let (logits, _) = model.classify(&x, &lens, t, None).unwrap();
        let out = dir("attn_export").join(v);
        if std::env::var_os("ATTN_WRITE_FIXTURES").is_some() {
            model.save(&out, None).unwrap();
            let ids: Vec<f32> = x.iter().map(|&i| i as f32).collect();
            let lens_f: Vec<f32> = lens.iter().map(|&l| l as f32).collect();
            let k = model.config.labels.len();
            attn_model::checkpoint::save_tensors(
                &out.join("attn_logits.safetensors"),
                &[("logits", vec![lens.len(), k], &logits), ("input_ids", vec![lens.len(), t], &ids), ("lens", vec![lens.len()], &lens_f)],
                None,
            )
            .unwrap();
            continue;
        }
        let (mut saved, _) = Transformer::load(&out).unwrap();
        // Within rounding: the step's gradient sums differ between the
        // AVX2 and AVX-512 GEMM kernels.
        let d = max_abs(&saved.params, &model.params);
        assert!(d < 1e-5, "{v}: the committed folder is not what attn writes (off by {d:e}); rerun with ATTN_WRITE_FIXTURES=1");
        let (again, _) = saved.classify(&x, &lens, t, None).unwrap();
        let want = TensorFile::open(&out.join("attn_logits.safetensors")).unwrap().read_f32("logits").unwrap();
        assert!(max_abs(&again, &want) < 1e-5, "{v}: the committed logits are stale");
    }
}
