//! `n` choices per request, `logit_bias` and `echo`, against the tiny random
//! model the other API tests serve.

mod common;

use attn_serve::ServeOptions;
use common::{streamed_text, Server};
use serde_json::{json, Value};

/// A completion request for 8 sampled tokens past "The quick brown".
fn sampled(seed: u64, n: u64) -> Value {
    json!({"prompt": "The quick brown", "max_tokens": 8, "temperature": 1.0, "seed": seed, "n": n, "ignore_eos": true})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn n_choices_are_the_single_requests_of_their_seeds() {
    let s = Server::start(ServeOptions::default()).await;
    let p = common::tokenizer().encode("The quick brown").unwrap().len() as u64;
    let prefilled = s.metric("attn_prefill_tokens_total").await;
    let (st, r) = s.post("/v1/completions", sampled(7, 3)).await;
    assert_eq!(st, 200, "{r}");
    // The three choices share one prefill of the prompt.
    assert_eq!(s.metric("attn_prefill_tokens_total").await - prefilled, p as f64);
    let choices = r["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(c["finish_reason"], "length");
        // Choice i is what one request with seed 7 + i gives.
        let (_, one) = s.post("/v1/completions", sampled(7 + i as u64, 1)).await;
        assert_eq!(one["choices"][0]["text"], c["text"], "choice {i}");
    }
    let texts: std::collections::HashSet<&str> = choices.iter().map(|c| c["text"].as_str().unwrap()).collect();
    assert!(texts.len() > 1, "three sampled choices came out the same: {texts:?}");
    // The prompt is counted once, every choice's tokens.
    assert_eq!(r["usage"], json!({"prompt_tokens": p, "completion_tokens": 24, "total_tokens": p + 24}));

    // Streamed: each choice's chunks carry its index and add up to its text;
    // one usage chunk and one [DONE] after the last choice ends.
    let mut body = sampled(7, 3);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let ev = s.stream("/v1/completions", body).await;
    assert_eq!(ev.last().unwrap(), "[DONE]");
    assert_eq!(ev.iter().filter(|e| *e == "[DONE]").count(), 1);
    assert_eq!(ev[ev.len() - 2]["usage"], r["usage"]);
    let mut streamed = vec![String::new(); 3];
    let mut finished = vec![0; 3];
    for e in &ev[..ev.len() - 2] {
        let c = &e["choices"][0];
        let i = c["index"].as_u64().unwrap() as usize;
        streamed[i].push_str(c["text"].as_str().unwrap());
        finished[i] += c["finish_reason"].is_string() as usize;
    }
    assert_eq!(finished, [1, 1, 1]);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(streamed[i], c["text"].as_str().unwrap(), "choice {i}");
    }

    // Chat: a role chunk per choice first, and whole messages.
    let chat = json!({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 6, "temperature": 0, "n": 2, "ignore_eos": true});
    let (st, r) = s.post("/v1/chat/completions", chat.clone()).await;
    assert_eq!(st, 200, "{r}");
    // Greedy choices are the same text, as OpenAI's are.
    assert_eq!(r["choices"][0]["message"], r["choices"][1]["message"]);
    assert_eq!(r["usage"]["completion_tokens"], 12);
    let mut body = chat;
    body["stream"] = json!(true);
    let ev = s.stream("/v1/chat/completions", body).await;
    let roles: Vec<u64> =
        ev[..2].iter().filter(|e| e["choices"][0]["delta"]["role"] == "assistant").map(|e| e["choices"][0]["index"].as_u64().unwrap()).collect();
    assert_eq!(roles, [0, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logit_bias_pushes_a_token_in_or_out() {
    let s = Server::start(ServeOptions::default()).await;
    let tok = common::tokenizer();
    // +100 on one token: greedy decoding writes nothing else.
    // A merged token that is whole characters (the first of the vocabulary's).
    let (x, piece) = (256..tok.vocab_size() as u32)
        .find_map(|id| String::from_utf8(attn_generate::token_bytes(tok.as_ref(), id)).ok().filter(|t| t.len() > 1).map(|t| (id, t)))
        .unwrap();
    let greedy = |bias: Value| json!({"prompt": "Hello world", "max_tokens": 5, "temperature": 0, "ignore_eos": true, "logit_bias": bias});
    let (st, r) = s.post("/v1/completions", greedy(json!({x.to_string(): 100}))).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["choices"][0]["text"], piece.repeat(5));

    // -100 on the unbiased reply's first token: it is not written first any
    // more. Chat's logprobs give each token's bytes, which name its id.
    let chat = |bias: Value| json!({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 3, "temperature": 0, "ignore_eos": true, "logprobs": true, "logit_bias": bias});
    let first = |v: &Value| v["choices"][0]["logprobs"]["content"][0].clone();
    let (st, base) = s.post("/v1/chat/completions", chat(json!({}))).await;
    assert_eq!(st, 200, "{base}");
    let bytes: Vec<u8> = serde_json::from_value(first(&base)["bytes"].clone()).unwrap();
    let ids: Vec<u32> = (0..tok.vocab_size() as u32).filter(|&id| attn_generate::token_bytes(tok.as_ref(), id) == bytes).collect();
    assert_eq!(ids.len(), 1, "{bytes:?}");
    let (st, r) = s.post("/v1/chat/completions", chat(json!({ids[0].to_string(): -100}))).await;
    assert_eq!(st, 200, "{r}");
    assert_ne!(first(&r)["bytes"], first(&base)["bytes"]);
    // The logprobs stay the model's own (before the bias): the runner-up is
    // at most as likely as the greedy token was.
    assert!(first(&r)["logprob"].as_f64().unwrap() <= first(&base)["logprob"].as_f64().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_returns_the_prompt_and_scores_it() {
    let s = Server::start(ServeOptions::default()).await;
    let tok = common::tokenizer();
    let prompt = "The quick brown fox";
    let ids = tok.encode(prompt).unwrap();
    let n = ids.len();
    let body = json!({"prompt": prompt, "max_tokens": 4, "temperature": 0, "ignore_eos": true, "logprobs": 2});
    let (_, plain) = s.post("/v1/completions", body.clone()).await;
    let mut echoed = body.clone();
    echoed["echo"] = json!(true);
    let (st, r) = s.post("/v1/completions", echoed.clone()).await;
    assert_eq!(st, 200, "{r}");
    // The prompt, then the very completion a plain request gets.
    let (c, p) = (&r["choices"][0], &plain["choices"][0]);
    assert_eq!(c["text"].as_str().unwrap(), format!("{prompt}{}", p["text"].as_str().unwrap()));
    let (lp, plp) = (&c["logprobs"], &p["logprobs"]);
    assert_eq!(lp["tokens"].as_array().unwrap().len(), n + 4);
    assert!(lp["token_logprobs"][0].is_null() && lp["top_logprobs"][0].is_null(), "{lp}");
    assert_eq!(lp["token_logprobs"].as_array().unwrap()[n..], plp["token_logprobs"].as_array().unwrap()[..]);
    assert_eq!(lp["top_logprobs"].as_array().unwrap()[n..], plp["top_logprobs"].as_array().unwrap()[..]);
    assert_eq!(lp["text_offset"][n], prompt.len());
    assert_eq!(r["usage"], plain["usage"]);
    // Prompt token i scores as log_softmax of the model's logits at i - 1,
    // recomputed here from the same weights.
    let mut model = common::model(tok.as_ref());
    model.forward(&ids, None, 1, n).unwrap();
    let v = model.logits().len() / n;
    for i in 1..n {
        let row = &model.logits()[(i - 1) * v..i * v];
        let lse = row.iter().map(|&x| (x as f64).exp()).sum::<f64>().ln();
        let want = row[ids[i] as usize] as f64 - lse;
        let got = lp["token_logprobs"][i].as_f64().unwrap();
        assert!((got - want).abs() < 1e-5, "token {i}: {got} vs {want}");
        assert_eq!(lp["top_logprobs"][i].as_object().unwrap().len(), 2);
    }

    // max_tokens 0: the prompt alone, scored, nothing generated (what
    // evaluation harnesses send).
    let (st, r0) = s.post("/v1/completions", json!({"prompt": prompt, "max_tokens": 0, "echo": true, "logprobs": 0})).await;
    assert_eq!(st, 200, "{r0}");
    assert_eq!(r0["choices"][0]["text"], prompt);
    assert_eq!(r0["choices"][0]["logprobs"]["token_logprobs"].as_array().unwrap()[..], lp["token_logprobs"].as_array().unwrap()[..n]);
    assert_eq!(r0["usage"]["completion_tokens"], 0);
    // Streamed alike: the prompt, a finish per choice, [DONE].
    let ev = s.stream("/v1/completions", json!({"prompt": prompt, "max_tokens": 0, "echo": true, "n": 2, "stream": true})).await;
    assert_eq!(ev.len(), 5, "{ev:?}");
    for i in 0..2 {
        assert_eq!((&ev[i]["choices"][0]["index"], &ev[i]["choices"][0]["text"]), (&json!(i), &json!(prompt)));
        assert_eq!(ev[2 + i]["choices"][0]["finish_reason"], "length");
    }
    // The other fields are still checked.
    let (st, r) = s.post("/v1/completions", json!({"prompt": prompt, "max_tokens": 0, "echo": true, "temperature": 3})).await;
    assert_eq!((st, r["error"]["param"].as_str()), (400, Some("temperature")), "{r}");
    // Without echo, max_tokens 0 is still refused.
    let (st, _) = s.post("/v1/completions", json!({"prompt": prompt, "max_tokens": 0})).await;
    assert_eq!(st, 400);

    // Streamed: the first chunk is the prompt, the text adds up the same.
    echoed["stream"] = json!(true);
    let ev = s.stream("/v1/completions", echoed).await;
    assert_eq!(ev[0]["choices"][0]["text"], prompt);
    assert_eq!(streamed_text(&ev), c["text"].as_str().unwrap());
}
