//! `/v1/embeddings` with the real all-MiniLM-L6-v2 (scripts/fetch_minilm.sh;
//! CI fetches it first): float and base64 encodings of the same vectors,
//! the numbers `attn embed` gives, and usage equal to the tokenizer's count.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use attn_serve::{Embedder, Loaded, ServeOptions};
use base64::Engine as _;
use common::Server;
use serde_json::json;

fn minilm() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/models/all-MiniLM-L6-v2");
    if p.join("config.json").exists() {
        return Some(p);
    }
    assert!(std::env::var("CI").is_err(), "CI must fetch the model first (scripts/fetch_minilm.sh)");
    eprintln!("SKIPPED: run scripts/fetch_minilm.sh to test /v1/embeddings");
    None
}

fn embedder(dir: &std::path::Path) -> Embedder {
    let (bert, _) = attn_model::Transformer::load(dir).unwrap();
    let tok = attn_tokenizer::load_tokenizer(dir, None).unwrap();
    Embedder { name: "all-MiniLM-L6-v2".into(), bert, tok: Arc::from(tok), max_len: 256 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_float_and_base64_match_the_model() {
    let Some(dir) = minilm() else { return };
    let d2 = dir.clone();
    let s = Server::start_with(ServeOptions::default(), move || Ok(Loaded { embedder: Some(embedder(&d2)), ..common::loaded() })).await;
    let texts = ["A man is eating food.", "Someone is having a meal.", "The stock market fell today."];
    let (st, f) = s.post("/v1/embeddings", json!({"model": "all-MiniLM-L6-v2", "input": texts})).await;
    assert_eq!(st, 200, "{f}");
    assert_eq!(f["object"], "list");
    assert_eq!(f["model"], "all-MiniLM-L6-v2");
    let (_, b) = s.post("/v1/embeddings", json!({"input": texts, "encoding_format": "base64"})).await;
    let e = embedder(&dir);
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| e.tok.encode(t).unwrap()).collect();
    let want = e.bert.embed(&ids, 8192).unwrap();
    assert_eq!(f["usage"]["prompt_tokens"], ids.iter().map(Vec::len).sum::<usize>());
    for (i, w) in want.iter().enumerate() {
        let got: Vec<f32> = serde_json::from_value(f["data"][i]["embedding"].clone()).unwrap();
        assert_eq!(&got, w, "float embedding {i}");
        let bytes = base64::engine::general_purpose::STANDARD.decode(b["data"][i]["embedding"].as_str().unwrap()).unwrap();
        let got: Vec<f32> = bytes.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(&got, w, "base64 embedding {i}");
    }
    let (_, models) = s.get("/v1/models").await;
    assert!(models.contains("all-MiniLM-L6-v2"), "{models}");
    let (st, r) = s.post("/v1/embeddings", json!({"input": "x", "encoding_format": "hex"})).await;
    assert_eq!(st, 400);
    assert_eq!(r["error"]["param"], "encoding_format");
}
