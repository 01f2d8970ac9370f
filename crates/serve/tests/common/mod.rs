//! A tiny random GPT-2 with a byte-level BPE served in-process on a free
//! port, and helpers to call it.
#![allow(dead_code)]

use std::sync::Arc;

use attn_model::{Transformer, TransformerConfig};
use attn_serve::{ChatModel, Loaded, ServeOptions};
use attn_tokenizer::bpe::GPT2_PATTERN;
use attn_tokenizer::chat::ChatTemplate;
use attn_tokenizer::train::BpeTrainer;
use attn_tokenizer::Tokenizer;
use serde_json::Value;

pub const CORPUS: &str = "Hello world! The quick brown fox jumps over the lazy dog. Ünïcödé, 日本語のテキスト, emoji 🙂🚀. ";

pub fn tokenizer() -> Box<dyn Tokenizer> {
    let trainer =
        BpeTrainer { vocab_size: 320, pattern: GPT2_PATTERN.into(), specials: vec!["<|endoftext|>".into(), "<|im_start|>".into(), "<|im_end|>".into()] };
    Box::new(trainer.train(&CORPUS.repeat(20)).unwrap().0)
}

/// The served model's weights: the same every time, so a test can rebuild them.
pub fn model(tok: &dyn Tokenizer) -> Transformer {
    sized(tok, TransformerConfig::gpt2(tok.vocab_size(), 256, 2, 2, 32))
}

/// A slower model with a longer context, for requests that must still be
/// running when the test acts on them: 1,000 tokens take about 2 s on a 2-core
/// AMD EPYC Zen 5. Its weights (42 MB) outgrow the last-level cache on
/// purpose; the 4-layer, 128-channel model this was finished 1,000 tokens in
/// 0.1 s there, within a few of the tests' 20 ms polls.
pub fn slow_model(tok: &dyn Tokenizer) -> Transformer {
    sized(tok, TransformerConfig::gpt2(tok.vocab_size(), 1024, 6, 6, 384))
}

fn sized(tok: &dyn Tokenizer, mut cfg: TransformerConfig) -> Transformer {
    cfg.eos_token_ids = vec![tok.encode_plain("<|endoftext|>").unwrap()[0]];
    Transformer::new(cfg, 11).unwrap()
}

pub fn loaded() -> Loaded {
    loaded_with(model)
}

pub fn loaded_with(make: fn(&dyn Tokenizer) -> Transformer) -> Loaded {
    let tok = tokenizer();
    let model = make(tok.as_ref());
    let chat = ChatModel { name: "tiny".into(), model, tok: Arc::from(tok), template: Ok(ChatTemplate::chatml()), gen_cfg: Default::default() };
    Loaded { chat, embedder: None }
}

pub struct Server {
    pub url: String,
    pub client: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub done: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    pub async fn start(opts: ServeOptions) -> Server {
        Self::start_with(opts, || Ok(loaded())).await
    }

    pub async fn start_with<L: FnOnce() -> Result<Loaded, String> + Send + 'static>(opts: ServeOptions, load: L) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let done = tokio::spawn(async move {
            attn_serve::serve(listener, opts, load, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        let s = Server { url, client: reqwest::Client::new(), stop: Some(tx), done: Some(done) };
        for _ in 0..500 {
            if let Ok(r) = s.client.get(format!("{}/health", s.url)).send().await {
                if r.status() != 503 {
                    break;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        s
    }

    pub fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self.client.post(format!("{}{path}", self.url)).json(&body).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self.client.get(format!("{}{path}", self.url)).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// A streamed request's events (the JSON of each `data:` line, with
    /// `[DONE]` as a string).
    pub async fn stream(&self, path: &str, body: Value) -> Vec<Value> {
        let r = self.client.post(format!("{}{path}", self.url)).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
        let text = r.text().await.unwrap();
        parse_sse(&text)
    }

    /// A metric's value from /metrics.
    pub async fn metric(&self, name: &str) -> f64 {
        let (_, text) = self.get("/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')).map(|v| v.parse().unwrap()))
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

pub fn parse_sse(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|ev| ev.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| if d == "[DONE]" { Value::String(d.into()) } else { serde_json::from_str(d).unwrap() })
        .collect()
}

/// The text of a streamed chat (or completion) response.
pub fn streamed_text(events: &[Value]) -> String {
    events.iter().filter_map(|e| e["choices"].get(0)).map(|c| c["delta"]["content"].as_str().or(c["text"].as_str()).unwrap_or("").to_string()).collect()
}
