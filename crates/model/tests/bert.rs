//! BERT against Hugging Face transformers and sentence-transformers.
//!
//! - testdata/bert_golden.safetensors (tools/reference/bert_golden.py): a tiny
//!   random BertModel; two sentences run as one ragged batch must give HF's
//!   last hidden states and attention probabilities.
//! - testdata/minilm_reference.safetensors: the real all-MiniLM-L6-v2
//!   (scripts/fetch_minilm.sh; CI fetches it): token ids identical to HF
//!   tokenizers, sentence embeddings within 1e-4 cosine of sentence-transformers,
//!   attention within 1e-5 of transformers on a real sentence.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use attn_model::checkpoint::{save_tensors, TensorFile};
use attn_model::Transformer;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

use attn_kernels::gradcheck::max_diff as max_abs;

/// The golden fixture as an HF folder: config.json + model.safetensors.
fn golden_folder(dir: &Path) -> TensorFile {
    let f = TensorFile::open(&root().join("testdata/bert_golden.safetensors")).unwrap();
    let meta: HashMap<String, String> = f.metadata().unwrap();
    std::fs::write(dir.join("config.json"), &meta["config"]).unwrap();
    let cfg: serde_json::Value = serde_json::from_str(&meta["config"]).unwrap();
    let l = cfg["num_hidden_layers"].as_u64().unwrap() as usize;
    let mut names = vec![
        "embeddings.word_embeddings.weight".to_string(),
        "embeddings.position_embeddings.weight".into(),
        "embeddings.token_type_embeddings.weight".into(),
        "embeddings.LayerNorm.weight".into(),
        "embeddings.LayerNorm.bias".into(),
    ];
    for layer in 0..l {
        for part in [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
            "attention.output.LayerNorm",
            "intermediate.dense",
            "output.dense",
            "output.LayerNorm",
        ] {
            for wb in ["weight", "bias"] {
                names.push(format!("encoder.layer.{layer}.{part}.{wb}"));
            }
        }
    }
    let data: Vec<(String, Vec<usize>, Vec<f32>)> =
        names.iter().map(|n| (n.clone(), f.shape(&format!("param.{n}")).unwrap(), f.read_f32(&format!("param.{n}")).unwrap())).collect();
    let refs: Vec<(&str, Vec<usize>, &[f32])> = data.iter().map(|(n, s, d)| (n.as_str(), s.clone(), d.as_slice())).collect();
    save_tensors(&dir.join("model.safetensors"), &refs, None).unwrap();
    f
}

#[test]
fn tiny_bert_matches_transformers() {
    let dir = tempfile::tempdir().unwrap();
    let f = golden_folder(dir.path());
    let bert = Transformer::load(dir.path()).unwrap().0;
    let (a, b) = (f.read_ids("ids.0").unwrap(), f.read_ids("ids.1").unwrap());
    let out = bert.encode(&[a.clone(), b.clone()].concat(), &[a.len(), b.len()], true).unwrap();
    let c = bert.config.n_embd;
    let want = [f.read_f32("hidden.0").unwrap(), f.read_f32("hidden.1").unwrap()].concat();
    let d = max_abs(&out.hidden, &want);
    eprintln!("max |hidden difference| {d:e}");
    assert!(d < 1e-4, "hidden states differ by {d:e}");
    assert_eq!(out.hidden.len(), (a.len() + b.len()) * c);
    // Attention per layer: sentence 0's (NH, T0, T0), then sentence 1's.
    let (wa, wb) = (f.read_f32("attentions.0").unwrap(), f.read_f32("attentions.1").unwrap());
    let (la, lb) = (wa.len() / bert.config.n_layer, wb.len() / bert.config.n_layer);
    let mut worst = 0.0f32;
    for (l, got) in out.attention.iter().enumerate() {
        let want = [&wa[l * la..(l + 1) * la], &wb[l * lb..(l + 1) * lb]].concat();
        let d = max_abs(got, &want);
        assert!(d < 1e-5, "layer {l}: attention differs by {d:e}");
        worst = worst.max(d);
    }
    eprintln!("max |attention difference| {worst:e}");
    // Bidirectional: a row spreads over keys on both sides of the query.
    assert!(out.attention[0][1..a.len()].iter().any(|&x| x > 0.0));
}

#[test]
fn bad_bert_folders_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    golden_folder(dir.path());
    let cfg = std::fs::read_to_string(dir.path().join("config.json")).unwrap();
    std::fs::write(dir.path().join("config.json"), cfg.replace("\"gelu\"", "\"swish\"")).unwrap();
    let err = Transformer::load(dir.path()).err().expect("swish is rejected").to_string();
    assert!(err.contains("hidden_act") && err.contains("swish"), "{err}");
    std::fs::write(dir.path().join("config.json"), cfg.replace("\"hidden_size\": 32", "\"hidden_size\": 48")).unwrap();
    let err = Transformer::load(dir.path()).err().expect("wrong shapes are rejected").to_string();
    assert!(err.contains("embeddings.word_embeddings.weight' has shape") && err.contains(", 48]"), "{err}");
    std::fs::write(dir.path().join("config.json"), &cfg).unwrap();
    let bytes = std::fs::read(dir.path().join("model.safetensors")).unwrap();
    std::fs::write(dir.path().join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let err = Transformer::load(dir.path()).err().expect("truncated weights are rejected").to_string();
    assert!(err.contains("model.safetensors") && err.contains("truncated"), "{err}");
}

#[test]
fn all_minilm_l6_v2_matches_sentence_transformers() {
    let model = root().join(".cache/models/all-MiniLM-L6-v2");
    if !model.join("model.safetensors").exists() {
        assert!(std::env::var("CI").is_err(), "CI must fetch the model first (scripts/fetch_minilm.sh)");
        eprintln!("SKIPPED: run scripts/fetch_minilm.sh to check all-MiniLM-L6-v2");
        return;
    }
    let f = TensorFile::open(&root().join("testdata/minilm_reference.safetensors")).unwrap();
    let sentences: Vec<String> = serde_json::from_str(&f.metadata().unwrap()["sentences"]).unwrap();
    let tok = attn_tokenizer::load_tokenizer(&model, None).unwrap();
    let bert = Transformer::load(&model).unwrap().0;
    let mut all = Vec::new();
    for (i, s) in sentences.iter().enumerate() {
        let ids = tok.encode(s).unwrap();
        assert_eq!(ids, f.read_ids(&format!("ids.{i}")).unwrap(), "token ids of {s:?}");
        all.push(ids);
    }
    let got = bert.embed(&all, 4096).unwrap();
    let want = f.read_f32("embeddings").unwrap();
    let c = bert.config.n_embd;
    let mut worst = 1.0f64;
    for (i, g) in got.iter().enumerate() {
        let w = &want[i * c..(i + 1) * c];
        let dot: f64 = g.iter().zip(w).map(|(a, b)| *a as f64 * *b as f64).sum();
        let nw: f64 = w.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        worst = worst.min(dot / nw);
        assert!(max_abs(g, w) < 1e-4, "{:?}: embedding differs by {:e}", sentences[i], max_abs(g, w));
    }
    eprintln!("lowest cosine to sentence-transformers: {worst}");
    assert!(1.0 - worst < 1e-4);
    let cos = |a: usize, b: usize| got[a].iter().zip(&got[b]).map(|(x, y)| x * y).sum::<f32>();
    assert!((cos(1, 2) - 0.6807).abs() < 1e-4, "cos(king, queen) = {}", cos(1, 2));
    assert!((cos(1, 3) - 0.2876).abs() < 1e-4, "cos(king, car) = {}", cos(1, 3));
    let out = bert.encode(&all[0], &[all[0].len()], true).unwrap();
    let d = max_abs(&out.attention.concat(), &f.read_f32("attentions.0").unwrap());
    eprintln!("max |attention difference| on a real sentence {d:e}");
    assert!(d < 1e-5);
}
