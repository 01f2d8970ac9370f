//! `attn embed`, `attn similarity` and `attn inspect` on the real
//! all-MiniLM-L6-v2 (scripts/fetch_minilm.sh; CI fetches it first).

mod common;

use std::path::PathBuf;

use common::{attn, stderr};

fn minilm() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/models/all-MiniLM-L6-v2");
    if p.join("model.safetensors").exists() {
        return Some(p);
    }
    assert!(std::env::var("CI").is_err(), "CI must fetch the model first (scripts/fetch_minilm.sh)");
    eprintln!("SKIPPED: run scripts/fetch_minilm.sh to test the encoder commands");
    None
}

fn json(o: &std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).unwrap()
}

#[test]
fn similarity_embed_and_inspect_on_minilm() {
    let Some(model) = minilm() else { return };
    let m = model.to_str().unwrap();
    let s = json(&attn(&["similarity", "--model", m, "--json", "king", "queen", "car"]));
    assert_eq!(s["texts"], serde_json::json!(["king", "queen", "car"]));
    let cos = |i: usize, j: usize| s["cosine"][i][j].as_f64().unwrap();
    assert!((cos(0, 1) - 0.6807).abs() < 1e-4, "cos(king, queen) = {}", cos(0, 1));
    assert!((cos(0, 2) - 0.2876).abs() < 1e-4, "cos(king, car) = {}", cos(0, 2));

    // One vector per text, unit length, 384 numbers per line in plain mode.
    let o = attn(&["embed", "--model", m, "the first text", "a second one"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<Vec<f64>> = String::from_utf8_lossy(&o.stdout).lines().map(|l| l.split(' ').map(|x| x.parse().unwrap()).collect()).collect();
    assert_eq!(lines.len(), 2);
    for v in &lines {
        assert_eq!(v.len(), 384);
        assert!((v.iter().map(|x| x * x).sum::<f64>().sqrt() - 1.0).abs() < 1e-5);
    }

    // Attention maps line up with transformers' positions: [CLS] ... [SEP].
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("att.json");
    let o = attn(&["inspect", "attention", "--model", m, "--text", "The cat sat.", "--out", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let a: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
    assert_eq!(a["tokens"], serde_json::json!(["[CLS]", "the", "cat", "sat", ".", "[SEP]"]));
    assert_eq!(a["attention"].as_array().unwrap().len(), 6);
    assert_eq!(a["attention"][0].as_array().unwrap().len(), 12);
    // Bidirectional: the first token attends to later ones.
    assert!(a["attention"][0][0][0].as_array().unwrap()[1..].iter().any(|x| x.as_f64().unwrap() > 0.0));

    // Sentence embeddings in inspect, and the decoder-only views say why they do not apply.
    let e = json(&attn(&["inspect", "embeddings", "--model", m, "--words", "king,queen,car", "--json"]));
    assert!((e["cosine"][0][1].as_f64().unwrap() - 0.6807).abs() < 1e-4);
    let o = attn(&["inspect", "next", "--model", m, "--text", "hello"]);
    assert!(!o.status.success() && stderr(&o).contains("BERT encoder"), "{}", stderr(&o));
    let o = attn(&["generate", "--model", m, "--prompt", "hello"]);
    assert!(!o.status.success() && stderr(&o).contains("attn embed"), "{}", stderr(&o));
}

#[test]
fn decoder_folders_and_unknown_model_types_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), r#"{"model_type": "mamba"}"#).unwrap();
    let o = attn(&["similarity", "--model", dir.path().to_str().unwrap(), "a", "b"]);
    assert!(!o.status.success() && stderr(&o).contains("model_type 'mamba'") && stderr(&o).contains("config.json"), "{}", stderr(&o));
}
