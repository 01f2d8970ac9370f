//! Faults: clients that go away, a full queue, shutdown with requests in
//! flight, and a short soak of all of it mixed with normal traffic.

mod common;

use std::time::{Duration, Instant};

use attn_serve::ServeOptions;
use common::Server;
use futures_util::StreamExt;
use serde_json::{json, Value};

async fn slow(opts: ServeOptions) -> Server {
    Server::start_with(opts, || Ok(common::loaded_with(common::slow_model))).await
}

fn long_stream() -> Value {
    json!({"prompt": "Hello", "max_tokens": 1000, "temperature": 0, "ignore_eos": true, "stream": true})
}

/// Polls `f` until it holds or `secs` pass.
async fn eventually<F: std::future::Future<Output = bool>>(secs: u64, mut f: impl FnMut() -> F) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_frees_its_slot() {
    let s = slow(ServeOptions { parallel: 2, ..Default::default() }).await;
    let r = s.client.post(format!("{}/v1/completions", s.url)).json(&long_stream()).send().await.unwrap();
    let mut body = r.bytes_stream();
    // Read the first chunk, so generation is under way, then hang up.
    body.next().await.unwrap().unwrap();
    assert_eq!(s.metric("attn_slots_busy").await, 1.0);
    drop(body);
    let freed = eventually(10, || async { s.metric("attn_slots_busy").await == 0.0 }).await;
    assert!(freed, "the slot was not freed after the client disconnected");
    assert_eq!(s.metric("attn_requests_cancelled_total").await, 1.0);
    // It stopped early: far fewer than 1,000 tokens were generated.
    assert!(s.metric("attn_completion_tokens_total").await < 800.0);
    // A non-streaming request whose client goes away mid-generation is
    // cancelled too. The client is dropped once the server reports the slot
    // busy, not after a fixed time: a fast CPU generated all 1,000 tokens
    // inside the 150 ms timeout this used to use.
    let req = s.client.post(format!("{}/v1/completions", s.url));
    let req = req.json(&json!({"prompt": "Hello", "max_tokens": 1000, "temperature": 0, "ignore_eos": true})).send();
    let pending = tokio::spawn(req);
    assert!(eventually(10, || async { s.metric("attn_slots_busy").await == 1.0 }).await);
    pending.abort();
    assert!(pending.await.is_err_and(|e| e.is_cancelled()), "the request finished before the client went away");
    assert!(eventually(10, || async { s.metric("attn_requests_cancelled_total").await == 2.0 }).await);
    assert!(eventually(10, || async { s.metric("attn_slots_busy").await == 0.0 }).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429() {
    let s = slow(ServeOptions { parallel: 1, queue: 1, ..Default::default() }).await;
    let send = || s.client.post(format!("{}/v1/completions", s.url)).json(&long_stream()).send();
    // One generating, one waiting; the third finds the queue full.
    let a = send().await.unwrap();
    let mut a = a.bytes_stream();
    a.next().await.unwrap().unwrap();
    let b = send().await.unwrap();
    assert!(eventually(10, || async { s.metric("attn_queue_length").await == 1.0 }).await);
    let c = send().await.unwrap();
    assert_eq!(c.status(), 429);
    let e: Value = c.json().await.unwrap();
    assert_eq!(e["error"]["type"], "rate_limit_error");
    assert_eq!(e["error"]["code"], "queue_full");
    // The waiting request is served once the first is done.
    drop(a);
    let text = b.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{}", &text[text.len().saturating_sub(200)..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_requests_in_flight_finish() {
    // The slower model and a long request: short ones can finish between two polls.
    let mut s = slow(ServeOptions::default()).await;
    let body = json!({"prompt": "Hello", "max_tokens": 1000, "temperature": 0, "ignore_eos": true});
    let (client, url) = (s.client.clone(), format!("{}/v1/completions", s.url));
    let inflight = tokio::spawn(async move { client.post(url).json(&body).send().await.unwrap().json::<Value>().await.unwrap() });
    assert!(eventually(10, || async { s.metric("attn_slots_busy").await == 1.0 }).await);
    assert!(!inflight.is_finished(), "the request finished before the shutdown: nothing was in flight");
    s.shutdown();
    let r = inflight.await.unwrap();
    assert_eq!(r["usage"]["completion_tokens"], 1000, "{r}");
    tokio::time::timeout(Duration::from_secs(10), s.done.take().unwrap()).await.expect("serve returned after the drain").unwrap();
    assert!(s.client.get(format!("{}/health", s.url)).send().await.is_err(), "still listening after shutdown");
}

/// A few seconds of mixed traffic: normal requests, streams cut short, bad
/// bodies; every normal request completes and no slot is left busy. The
/// hour-long version is `tools/bench/serve_soak.sh`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_soak() {
    let s = slow(ServeOptions { parallel: 4, max_body_bytes: 8192, ..Default::default() }).await;
    let secs: u64 = std::env::var("ATTN_SOAK_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    let t0 = Instant::now();
    let (mut ok, mut cut, mut bad) = (0, 0, 0);
    let mut i = 0u64;
    while t0.elapsed() < Duration::from_secs(secs) {
        i += 1;
        let url = format!("{}/v1/completions", s.url);
        match i % 4 {
            0 | 1 => {
                let r = s.client.post(&url).json(&json!({"prompt": "The fox", "max_tokens": 8, "seed": i, "ignore_eos": true})).send().await.unwrap();
                let v: Value = r.json().await.unwrap();
                assert_eq!(v["usage"]["completion_tokens"], 8, "{v}");
                ok += 1;
            }
            2 => {
                let r = s.client.post(&url).json(&long_stream()).send().await.unwrap();
                let mut b = r.bytes_stream();
                b.next().await.unwrap().unwrap();
                cut += 1;
            }
            _ => {
                let st = s.client.post(&url).body("x".repeat(9000)).header("content-type", "application/json").send().await.unwrap().status();
                assert_eq!(st, 413);
                let st = s.client.post(&url).json(&json!({"prompt": 5})).send().await.unwrap().status();
                assert_eq!(st, 400);
                bad += 2;
            }
        }
    }
    assert!(ok > 0 && cut > 0 && bad > 0);
    assert!(eventually(10, || async { s.metric("attn_slots_busy").await == 0.0 && s.metric("attn_queue_length").await == 0.0 }).await);
    assert_eq!(s.metric("attn_requests_cancelled_total").await, cut as f64);
    eprintln!("soak: {ok} complete, {cut} cut short, {bad} refused in {:.1} s", t0.elapsed().as_secs_f64());
}
