//! The HTTP API against a tiny random model served in-process: OpenAI's
//! shapes, usage equal to the tokenizer's counts, streaming, batching that
//! does not change outputs, and the errors.

mod common;

use attn_serve::ServeOptions;
use common::{parse_sse, streamed_text, Server};
use serde_json::{json, Value};

fn chat_body(content: &str, extra: Value) -> Value {
    let mut b = json!({"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": 24, "temperature": 0});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_and_completions_in_openais_shape_with_exact_usage() {
    let s = Server::start(ServeOptions::default()).await;
    let tok = common::tokenizer();
    let (status, r) = s.post("/v1/chat/completions", chat_body("Hello there", json!({}))).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["object"], "chat.completion");
    assert_eq!(r["model"], "tiny");
    assert_eq!(r["choices"][0]["message"]["role"], "assistant");
    let reason = r["choices"][0]["finish_reason"].as_str().unwrap();
    assert!(reason == "stop" || reason == "length", "{reason}");
    // prompt_tokens is exactly the rendered template's token count.
    let rendered = "<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n";
    let want = tok.encode_plain(rendered).unwrap().len() as u64;
    assert_eq!(r["usage"]["prompt_tokens"], want);
    let (p, c) = (r["usage"]["prompt_tokens"].as_u64().unwrap(), r["usage"]["completion_tokens"].as_u64().unwrap());
    assert_eq!(r["usage"]["total_tokens"], p + c);
    assert!((1..=24).contains(&c));
    if reason == "length" {
        assert_eq!(c, 24);
    }

    let (status, r) = s.post("/v1/completions", json!({"prompt": "The quick brown", "max_tokens": 10, "temperature": 0, "ignore_eos": true})).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["object"], "text_completion");
    assert_eq!(r["usage"]["prompt_tokens"], tok.encode("The quick brown").unwrap().len() as u64);
    assert_eq!(r["usage"]["completion_tokens"], 10);
    assert_eq!(r["choices"][0]["finish_reason"], "length");
    // A prompt given as token ids gives the same completion.
    let ids = tok.encode("The quick brown").unwrap();
    let (_, r2) = s.post("/v1/completions", json!({"prompt": ids, "max_tokens": 10, "temperature": 0, "ignore_eos": true})).await;
    assert_eq!(r2["choices"][0]["text"], r["choices"][0]["text"]);

    let (_, models) = s.get("/v1/models").await;
    let models: Value = serde_json::from_str(&models).unwrap();
    assert_eq!(models["data"][0]["id"], "tiny");
    let (status, health) = s.get("/health").await;
    assert_eq!(status, 200, "{health}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_matches_the_whole_answer_and_never_splits_a_character() {
    let s = Server::start(ServeOptions::default()).await;
    // A random byte-level model writes arbitrary bytes: multi-byte characters
    // split across tokens are common, and each would show up as U+FFFD in a
    // stream that split them, unlike in the whole answer.
    for (i, prompt) in ["日本語のテキスト", "emoji 🙂🚀", "Ünïcödé"].iter().enumerate() {
        let extra = json!({"max_tokens": 40, "temperature": 1.0, "seed": i, "ignore_eos": true});
        let (_, whole) = s.post("/v1/chat/completions", chat_body(prompt, extra.clone())).await;
        let mut body = chat_body(prompt, extra);
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        let ev = s.stream("/v1/chat/completions", body).await;
        assert_eq!(ev[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(ev[0]["object"], "chat.completion.chunk");
        assert_eq!(ev.last().unwrap(), "[DONE]");
        let usage = &ev[ev.len() - 2];
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"], whole["usage"]);
        let finish = &ev[ev.len() - 3]["choices"][0];
        assert_eq!(finish["finish_reason"], whole["choices"][0]["finish_reason"]);
        assert_eq!(streamed_text(&ev), whole["choices"][0]["message"]["content"].as_str().unwrap());
        // Chunks before the usage chunk carry "usage": null, as OpenAI's do.
        assert!(ev[1]["usage"].is_null());
    }
    // Completions stream too, with usage when asked.
    let body = json!({"prompt": "Hello", "max_tokens": 12, "temperature": 0, "stream": true, "stream_options": {"include_usage": true}, "ignore_eos": true});
    let ev = s.stream("/v1/completions", body).await;
    assert_eq!(ev[ev.len() - 2]["usage"]["completion_tokens"], 12);
    let (_, whole) = s.post("/v1/completions", json!({"prompt": "Hello", "max_tokens": 12, "temperature": 0, "ignore_eos": true})).await;
    assert_eq!(streamed_text(&ev), whole["choices"][0]["text"].as_str().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_does_not_depend_on_the_rest_of_the_batch() {
    let s = Server::start(ServeOptions { parallel: 8, ..Default::default() }).await;
    let greedy = chat_body("The quick brown fox", json!({"max_tokens": 32, "ignore_eos": true}));
    let seeded = chat_body("Hello world", json!({"max_tokens": 32, "temperature": 0.9, "top_p": 0.95, "seed": 1234, "ignore_eos": true}));
    let (_, alone_greedy) = s.post("/v1/chat/completions", greedy.clone()).await;
    let (_, alone_seeded) = s.post("/v1/chat/completions", seeded.clone()).await;
    // The same two requests among 14 others of different lengths and settings.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let body = match i {
            3 => greedy.clone(),
            11 => seeded.clone(),
            _ => chat_body(&"lazy dog ".repeat(i + 1), json!({"max_tokens": 8 + 3 * i, "temperature": 0.7, "seed": i, "ignore_eos": true})),
        };
        let (client, url) = (s.client.clone(), format!("{}/v1/chat/completions", s.url));
        tasks.push(tokio::spawn(async move { client.post(url).json(&body).send().await.unwrap().json::<Value>().await.unwrap() }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    assert_eq!(out[3]["choices"][0]["message"]["content"], alone_greedy["choices"][0]["message"]["content"]);
    assert_eq!(out[11]["choices"][0]["message"]["content"], alone_seeded["choices"][0]["message"]["content"]);
    for o in &out {
        assert!(o["choices"][0]["message"]["content"].is_string(), "{o}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_strings_logprobs_tokenize_and_attention() {
    let s = Server::start(ServeOptions::default()).await;
    let tok = common::tokenizer();
    // Find some text the model writes, then stop on a piece of it.
    let (_, r) = s.post("/v1/completions", json!({"prompt": "Hello", "max_tokens": 30, "temperature": 0, "ignore_eos": true})).await;
    let text = r["choices"][0]["text"].as_str().unwrap().to_string();
    let stop: String = text.chars().skip(6).take(2).collect();
    let (_, r) = s.post("/v1/completions", json!({"prompt": "Hello", "max_tokens": 30, "temperature": 0, "stop": stop, "ignore_eos": true})).await;
    let cut = r["choices"][0]["text"].as_str().unwrap();
    assert_eq!(r["choices"][0]["finish_reason"], "stop");
    assert!(text.starts_with(cut) && !cut.contains(&stop), "{cut:?} {stop:?}");

    // Chat logprobs: one entry per generated token, top_logprobs sorted, each
    // token's bytes those of the text.
    let (_, r) = s.post("/v1/chat/completions", chat_body("Hi", json!({"max_tokens": 6, "logprobs": true, "top_logprobs": 3, "ignore_eos": true}))).await;
    let content = r["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), 6);
    let mut bytes = Vec::new();
    for e in content {
        let top = e["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        // Greedy: the chosen token is the most likely one.
        assert_eq!(top[0]["logprob"], e["logprob"]);
        assert!(top[0]["logprob"].as_f64() >= top[1]["logprob"].as_f64() && e["logprob"].as_f64().unwrap() <= 0.0);
        bytes.extend(e["bytes"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap() as u8));
    }
    assert_eq!(String::from_utf8_lossy(&bytes), r["choices"][0]["message"]["content"].as_str().unwrap());
    // Completions: the legacy shape.
    let (_, r) = s.post("/v1/completions", json!({"prompt": "Hello", "max_tokens": 4, "logprobs": 2, "temperature": 0, "ignore_eos": true})).await;
    let lp = &r["choices"][0]["logprobs"];
    assert_eq!(lp["tokens"].as_array().unwrap().len(), 4);
    assert_eq!(lp["token_logprobs"].as_array().unwrap().len(), 4);
    assert_eq!(lp["top_logprobs"][0].as_object().unwrap().len(), 2);
    assert_eq!(lp["text_offset"][0], 0);

    let (_, t) = s.post("/tokenize", json!({"content": "Hello world 🙂"})).await;
    let ids: Vec<u32> = serde_json::from_value(t["tokens"].clone()).unwrap();
    assert_eq!(ids, tok.encode_plain("Hello world 🙂").unwrap());
    let (_, d) = s.post("/detokenize", json!({"tokens": ids})).await;
    assert_eq!(d["content"], "Hello world 🙂");

    // /v1/attention gives the numbers attn inspect computes.
    let (status, a) = s.post("/v1/attention", json!({"text": "The quick brown fox", "layer": 1, "head": 0, "top": 5})).await;
    assert_eq!(status, 200, "{a}");
    let mut m = common::model(tok.as_ref());
    let tr = attn_inspect::trace(&mut m, tok.as_ref(), "The quick brown fox").unwrap();
    let t = tr.len();
    assert_eq!(a["tokens"].as_array().unwrap().len(), t);
    let got: Vec<Vec<f32>> = serde_json::from_value(a["attention"][0][0].clone()).unwrap();
    assert_eq!(got.concat(), tr.attention(1, 0));
    let next = attn_inspect::next_token(&tr, tok.as_ref(), 5, attn_generate::SamplerConfig { temperature: 1.0, ..Default::default() }).unwrap();
    assert_eq!(a["next_token"]["candidates"][0]["id"], next.candidates[0].id);
    assert_eq!(a["next_token"]["candidates"].as_array().unwrap().len(), 5);
    let (status, e) = s.post("/v1/attention", json!({"text": "The fox", "layer": 7})).await;
    assert_eq!(status, 400);
    assert!(e["error"]["message"].as_str().unwrap().contains("layer 7 is out of range"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_openai_shaped_errors_naming_the_field() {
    let s = Server::start(ServeOptions { max_body_bytes: 4096, ..Default::default() }).await;
    let check = |status: u16, r: &Value, want_status: u16, needle: &str| {
        assert_eq!(status, want_status, "{r}");
        let msg = r["error"]["message"].as_str().unwrap_or_else(|| panic!("no error.message in {r}"));
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
        assert!(r["error"]["type"].is_string());
    };
    // prompt + max_tokens beyond the context names both numbers.
    let (st, r) = s.post("/v1/completions", json!({"prompt": "Hello world", "max_tokens": 260})).await;
    let p = common::tokenizer().encode("Hello world").unwrap().len();
    check(st, &r, 400, &format!("the prompt is {p} tokens and max_tokens is 260"));
    assert!(r["error"]["message"].as_str().unwrap().contains("256"));
    assert_eq!(r["error"]["code"], "context_length_exceeded");
    // A prompt that alone fills the context names the prompt, not max_tokens.
    let (st, r) = s.post("/v1/completions", json!({"prompt": "Hello world ".repeat(300), "max_tokens": 3})).await;
    check(st, &r, 400, "shorten the prompt to 255 tokens or fewer");
    assert_eq!((r["error"]["param"].as_str(), r["error"]["code"].as_str()), (Some("prompt"), Some("context_length_exceeded")));
    let (st, r) = s.post("/v1/completions", json!({"prompt": "Hello", "stop": 5})).await;
    check(st, &r, 400, "a string or a list of strings");
    assert_eq!(r["error"]["param"], "stop");
    let (st, r) = s.post("/v1/chat/completions", chat_body("hi", json!({"temprature": 0.5}))).await;
    check(st, &r, 400, "\"temprature\"");
    assert_eq!(r["error"]["param"], "temprature");
    let (st, r) = s.post("/v1/chat/completions", chat_body("hi", json!({"temperature": "hot"}))).await;
    check(st, &r, 400, "temperature");
    assert_eq!(r["error"]["param"], "temperature");
    let (st, r) = s.post("/v1/chat/completions", chat_body("hi", json!({"temperature": 3.0}))).await;
    check(st, &r, 400, "between 0 and 2");
    let (st, r) = s.post("/v1/chat/completions", json!({"messages": [{"content": "no role"}]})).await;
    check(st, &r, 400, "messages[0].role");
    let (st, r) = s.post("/v1/chat/completions", chat_body("hi", json!({"n": 0}))).await;
    check(st, &r, 400, "n must be between 1 and 128");
    let (st, r) = s.post("/v1/chat/completions", chat_body("hi", json!({"n": 65}))).await;
    check(st, &r, 400, "lower n");
    let (st, r) = s.post("/v1/completions", json!({"prompt": "Hello", "logit_bias": {"abc": 1}})).await;
    check(st, &r, 400, "\"abc\" is not one");
    assert_eq!(r["error"]["param"], "logit_bias");
    let (st, r) = s.post("/v1/completions", json!({"prompt": "Hello", "logit_bias": {"99999": 1}})).await;
    check(st, &r, 400, "token id 99999 in logit_bias is out of range");
    let (st, r) = s.post("/v1/completions", json!({"prompt": "Hello", "logit_bias": {"5": 150}})).await;
    check(st, &r, 400, "between -100 and 100");
    let (st, r) = s.post("/v1/embeddings", json!({"input": "hi"})).await;
    check(st, &r, 400, "--embedding-model");
    // Not JSON, and too big.
    let raw = s.client.post(format!("{}/v1/completions", s.url)).header("content-type", "application/json").body("{not json").send().await.unwrap();
    let st = raw.status().as_u16();
    check(st, &raw.json().await.unwrap(), 400, "not valid JSON");
    let big = json!({"prompt": "x".repeat(10_000)});
    let (st, r) = s.post("/v1/completions", big).await;
    check(st, &r, 413, "4096 bytes");
    let (st, r) = s.post("/v1/nothing", json!({})).await;
    check(st, &r, 404, "/v1/nothing");
    // The server keeps serving through all of it.
    let (st, _) = s.post("/v1/chat/completions", chat_body("still there?", json!({}))).await;
    assert_eq!(st, 200);
    assert!(s.metric("attn_errors_total{status=\"400\"}").await >= 11.0);
    assert_eq!(s.metric("attn_errors_total{status=\"413\"}").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_is_required_when_set() {
    let s = Server::start(ServeOptions { api_key: Some("sesame".into()), ..Default::default() }).await;
    let url = format!("{}/v1/models", s.url);
    let r = s.client.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "invalid_api_key");
    assert_eq!(s.client.get(&url).bearer_auth("wrong").send().await.unwrap().status(), 401);
    assert_eq!(s.client.get(&url).bearer_auth("sesame").send().await.unwrap().status(), 200);
    // The page and the health check stay open.
    assert_eq!(s.client.get(format!("{}/health", s.url)).send().await.unwrap().status(), 200);
    assert_eq!(s.client.get(format!("{}/", s.url)).send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_while_loading() {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let s = Server::start_with(ServeOptions::default(), move || {
        rx.recv().unwrap();
        Ok(common::loaded())
    })
    .await;
    let (st, body) = s.get("/health").await;
    assert_eq!(st, 503, "{body}");
    let (st, r) = s.post("/v1/chat/completions", chat_body("hi", json!({}))).await;
    assert_eq!(st, 503);
    assert_eq!(r["error"]["code"], "model_loading");
    tx.send(()).unwrap();
    for _ in 0..200 {
        if s.get("/health").await.0 == 200 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the server never became healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_parser_sanity() {
    let ev = parse_sse("data: {\"a\":1}\n\ndata: [DONE]\n\n");
    assert_eq!(ev, vec![json!({"a": 1}), json!("[DONE]")]);
}

/// A character-level model (as the README's Shakespeare run is) cannot
/// chat through ChatML, whose markers hold characters it lacks: the error
/// says so and points to completions, instead of blaming a character the
/// user never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_whose_tokenizer_lacks_the_template_says_it_cannot_chat() {
    use std::sync::Arc;
    let s = Server::start_with(ServeOptions::default(), || {
        let tok = attn_tokenizer::CharTokenizer::train("hello there, how are you?\n");
        let model = attn_model::Transformer::new(attn_model::TransformerConfig::gpt2(attn_tokenizer::Tokenizer::vocab_size(&tok), 64, 1, 2, 16), 3).unwrap();
        let template = Ok(attn_tokenizer::chat::ChatTemplate::chatml());
        let chat = attn_serve::ChatModel { name: "chars".into(), model, tok: Arc::new(tok), template, gen_cfg: Default::default() };
        Ok(attn_serve::Loaded { chat, embedder: None })
    })
    .await;
    let body = json!({"messages": [{"role": "user", "content": "hello"}], "max_tokens": 2});
    let (st, r) = s.post("/v1/chat/completions", body).await;
    assert_eq!(st, 400, "{r}");
    let msg = r["error"]["message"].as_str().unwrap();
    assert!(msg.contains("chat template writes '<'") && msg.contains("/v1/completions"), "{msg}");
    let (st, r) = s.post("/v1/completions", json!({"prompt": "hello", "max_tokens": 2})).await;
    assert_eq!(st, 200, "{r}");
}
