//! A table of bad inputs across every subcommand and file type. Each must
//! end with an error (exit status 1, or 2 for clap's usage errors) whose
//! message names what is wrong, within a time limit: no panic, no abort, no
//! hang, no silent success.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use attn_model::checkpoint::save_tensors;
use common::{attn, copy_dir, corpus, message_flaw, stderr, tiny_run};

struct Case {
    name: String,
    args: Vec<String>,
    /// Every one of these must appear in stderr.
    expect: Vec<String>,
}

fn case(name: impl Into<String>, args: &[&str], expect: &[&str]) -> Case {
    Case { name: name.into(), args: args.iter().map(|s| s.to_string()).collect(), expect: expect.iter().map(|s| s.to_string()).collect() }
}

/// Runs a case with a time limit; returns a description of what went wrong.
fn check(c: &Case) -> Option<String> {
    let mut child =
        Command::new(env!("CARGO_BIN_EXE_attn")).args(&c.args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("attn runs");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            return Some(format!("{}: hung (killed after 60 s)", c.name));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    match status.code() {
        Some(1) | Some(2) => {}
        Some(0) => return Some(format!("{}: succeeded, expected an error", c.name)),
        other => return Some(format!("{}: exit {other:?} (panic or abort): {err}", c.name)),
    }
    if let Some(flaw) = message_flaw(&err) {
        return Some(format!("{}: {flaw}", c.name));
    }
    let missing: Vec<_> = c.expect.iter().filter(|e| !err.contains(e.as_str())).collect();
    (!missing.is_empty()).then(|| format!("{}: expected {missing:?} in: {err}", c.name))
}

fn edit_json(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// A model folder with one config.json field changed.
fn with_field(base: &Path, root: &Path, tag: &str, field: &str, value: serde_json::Value) -> PathBuf {
    let d = root.join(tag);
    copy_dir(base, &d);
    edit_json(&d.join("config.json"), |v| {
        if value.is_null() {
            v.as_object_mut().unwrap().remove(field);
        } else {
            v[field] = value;
        }
    });
    d
}

#[test]
fn bad_inputs_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let data = corpus(root);
    let data_s = data.to_str().unwrap().to_string();
    // Two small runs: a GPT-2 (character tokenizer) and a Llama.
    let (gpt, llama) = (root.join("gpt"), root.join("llama"));
    for (out, preset) in [(&gpt, "baby"), (&llama, "llama-baby")] {
        let o = tiny_run(&data_s, out.to_str().unwrap(), preset);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let (g, l) = (gpt.to_str().unwrap().to_string(), llama.to_str().unwrap().to_string());
    let mut cases: Vec<Case> = Vec::new();
    let gen = |m: &Path| {
        vec!["generate".to_string(), "--model".into(), m.to_str().unwrap().into(), "--prompt".into(), "the".into(), "--max-new-tokens".into(), "4".into()]
    };

    // config.json: every size and value the arithmetic depends on.
    let bad_values =
        [("zero", serde_json::json!(0)), ("negative", serde_json::json!(-3)), ("text", serde_json::json!("big")), ("fraction", serde_json::json!(2.5))];
    for field in ["vocab_size", "n_positions", "n_embd", "n_layer", "n_head"] {
        for (tag, v) in &bad_values {
            let m = with_field(&gpt, root, &format!("gpt-{field}-{tag}"), field, v.clone());
            let args = gen(&m);
            cases.push(Case { name: format!("gpt2 {field} {tag}"), args, expect: vec![field.into(), "config.json".into()] });
        }
    }
    for field in [
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "intermediate_size",
        "max_position_embeddings",
        "head_dim",
    ] {
        for (tag, v) in &bad_values {
            let m = with_field(&llama, root, &format!("llama-{field}-{tag}"), field, v.clone());
            cases.push(Case { name: format!("llama {field} {tag}"), args: gen(&m), expect: vec![field.into(), "config.json".into()] });
        }
    }
    for (field, v, expect) in [
        ("rms_norm_eps", serde_json::json!(-1e-6), "rms_norm_eps"),
        ("rope_theta", serde_json::json!(-10000.0), "rope_theta"),
        ("rope_theta", serde_json::json!(0.0), "rope_theta"),
        ("num_key_value_heads", serde_json::json!(3), "num_key_value_heads"),
        ("rope_scaling", serde_json::json!({"rope_type": "yarn", "factor": 4.0}), "rope_scaling.rope_type"),
        ("rope_scaling", serde_json::json!({"rope_type": "linear"}), "rope_scaling.factor"),
        ("rope_scaling", serde_json::json!({"rope_type": "linear", "factor": -2.0}), "rope_scaling.factor"),
        ("rope_scaling", serde_json::json!("fast"), "rope_scaling"),
        ("rope_parameters", serde_json::json!({"rope_type": "longrope", "rope_theta": 1e4}), "rope_parameters.rope_type"),
        ("hidden_act", serde_json::json!("gelu"), "hidden_act"),
        ("mlp_bias", serde_json::json!(true), "mlp_bias"),
        ("attention_bias", serde_json::json!(true), "attention_bias"),
        ("model_type", serde_json::json!("mamba"), "model_type"),
        ("sliding_window", serde_json::json!(8), "sliding_window"),
        ("eos_token_id", serde_json::json!("eos"), "eos_token_id"),
    ] {
        let m = with_field(&llama, root, &format!("llama-{field}-x{}", cases.len()), field, v);
        cases.push(Case { name: format!("llama {field} = bad"), args: gen(&m), expect: vec![expect.into(), "config.json".into()] });
    }
    for (field, v) in [
        ("layer_norm_epsilon", serde_json::json!(-1e-5)),
        ("activation_function", serde_json::json!("relu")),
        ("scale_attn_by_inverse_layer_idx", serde_json::json!(true)),
        ("n_inner", serde_json::json!(0)),
    ] {
        let m = with_field(&gpt, root, &format!("gpt-{field}-bad"), field, v);
        cases.push(Case { name: format!("gpt2 {field} = bad"), args: gen(&m), expect: vec![field.into(), "config.json".into()] });
    }
    // Sizes that no machine holds are refused before allocating.
    for (field, v) in [("n_layer", 1_000_000_000u64), ("n_embd", 1u64 << 40), ("vocab_size", 4_000_000_000), ("n_positions", 1_000_000_000_000)] {
        let m = with_field(&gpt, root, &format!("gpt-huge-{field}"), field, serde_json::json!(v));
        let expect = if field == "n_embd" { "n_embd" } else { "GB" };
        cases.push(Case { name: format!("gpt2 {field} = {v}"), args: gen(&m), expect: vec![expect.into(), "config.json".into()] });
    }
    let m = root.join("no-config");
    copy_dir(&gpt, &m);
    std::fs::remove_file(m.join("config.json")).unwrap();
    cases.push(Case { name: "missing config.json".into(), args: gen(&m), expect: vec!["config.json".into()] });
    let m = root.join("bad-json");
    copy_dir(&gpt, &m);
    std::fs::write(m.join("config.json"), "{\"model_type\": \"gpt2\", ").unwrap();
    cases.push(Case { name: "truncated config.json".into(), args: gen(&m), expect: vec!["config.json".into(), "JSON".into()] });

    // model.safetensors: truncations, a damaged header, NaN and missing or extra tensors.
    let weights = std::fs::read(gpt.join("model.safetensors")).unwrap();
    for (tag, bytes) in [
        ("empty", Vec::new()),
        ("4 bytes", weights[..4].to_vec()),
        ("header cut", weights[..20].to_vec()),
        ("half", weights[..weights.len() / 2].to_vec()),
        ("one byte short", weights[..weights.len() - 1].to_vec()),
        ("huge header length", [u64::MAX.to_le_bytes().to_vec(), weights[8..].to_vec()].concat()),
        ("garbage header", [weights[..8].to_vec(), vec![b'x'; weights.len() - 8]].concat()),
    ] {
        let m = root.join(format!("st-{}", tag.replace(' ', "-")));
        copy_dir(&gpt, &m);
        std::fs::write(m.join("model.safetensors"), bytes).unwrap();
        cases.push(Case { name: format!("model.safetensors {tag}"), args: gen(&m), expect: vec!["model.safetensors".into()] });
    }
    {
        let (model, _) = attn_model::Transformer::load(&gpt).unwrap();
        let tensors: Vec<(String, Vec<usize>, Vec<f32>)> =
            model.layout.entries.iter().map(|e| (e.name.clone(), e.shape.clone(), model.params[e.range()].to_vec())).collect();
        type Tensors = Vec<(String, Vec<usize>, Vec<f32>)>;
        let write = |tag: &str, f: &dyn Fn(&mut Tensors)| {
            let m = root.join(format!("st-{tag}"));
            copy_dir(&gpt, &m);
            let mut t = tensors.clone();
            f(&mut t);
            let refs: Vec<(&str, Vec<usize>, &[f32])> = t.iter().map(|(n, s, d)| (n.as_str(), s.clone(), d.as_slice())).collect();
            save_tensors(&m.join("model.safetensors"), &refs, None).unwrap();
            m
        };
        let m = write("nan", &|t| t[3].2[1] = f32::NAN);
        cases.push(Case { name: "NaN weight".into(), args: gen(&m), expect: vec![tensors[3].0.clone(), "NaN".into()] });
        let m = write("inf", &|t| t[5].2[0] = f32::INFINITY);
        cases.push(Case { name: "infinite weight".into(), args: gen(&m), expect: vec![tensors[5].0.clone(), "inf".into()] });
        let m = write("missing", &|t| {
            t.remove(4);
        });
        cases.push(Case { name: "missing tensor".into(), args: gen(&m), expect: vec![tensors[4].0.clone(), "missing".into()] });
        let m = write("extra", &|t| t.push(("transformer.h.9.mlp.c_fc.weight".into(), vec![2], vec![0.0, 0.0])));
        cases.push(Case { name: "unused tensor".into(), args: gen(&m), expect: vec!["transformer.h.9.mlp.c_fc.weight".into(), "not used".into()] });
        let m = write("shape", &|t| t[0].1 = vec![t[0].2.len()]);
        cases.push(Case { name: "wrong shape".into(), args: gen(&m), expect: vec![tensors[0].0.clone(), "shape".into()] });
    }

    // tokenizer.json (character-level and byte-level BPE), vocab.json + merges.txt, .tiktoken.
    let tok = gpt.join("tokenizer.json");
    let enc = |p: &Path| vec!["tokenizer".to_string(), "encode".into(), "--tokenizer".into(), p.to_str().unwrap().into(), "hello there".into()];
    let tok_case = |cases: &mut Vec<Case>, tag: &str, expect: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let p = root.join(format!("tok-{tag}.json"));
        std::fs::copy(&tok, &p).unwrap();
        edit_json(&p, |v| f(v));
        cases.push(Case {
            name: format!("char tokenizer.json {tag}"),
            args: enc(&p),
            expect: vec![expect.into(), p.file_name().unwrap().to_string_lossy().into()],
        });
    };
    tok_case(&mut cases, "dup-id", "both", &|v| {
        let first = v["model"]["vocab"].as_object().unwrap().keys().next().unwrap().clone();
        let second = v["model"]["vocab"].as_object().unwrap().keys().nth(1).unwrap().clone();
        v["model"]["vocab"][second] = v["model"]["vocab"][first].clone();
    });
    tok_case(&mut cases, "gap", "no gaps", &|v| {
        let k = v["model"]["vocab"].as_object().unwrap().keys().next().unwrap().clone();
        v["model"]["vocab"][k] = 1_000_000.into();
    });
    tok_case(&mut cases, "metaspace", "pre_tokenizer", &|v| v["pre_tokenizer"] = serde_json::json!({"type": "Metaspace", "replacement": "\u{2581}"}));
    tok_case(&mut cases, "normalizer", "normalizer", &|v| v["normalizer"] = serde_json::json!({"type": "Lowercase"}));
    tok_case(&mut cases, "decoder", "decoder", &|v| v["decoder"] = serde_json::json!({"type": "WordPiece"}));
    tok_case(&mut cases, "post", "post_processor", &|v| v["post_processor"] = serde_json::json!({"type": "TemplateProcessing"}));
    tok_case(&mut cases, "model-type", "model.type", &|v| v["model"]["type"] = "Unigram".into());
    tok_case(&mut cases, "vocab-not-object", "model.vocab", &|v| v["model"]["vocab"] = serde_json::json!([1, 2]));
    tok_case(&mut cases, "two-chars", "single character", &|v| v["model"]["vocab"]["ab"] = 9999.into());
    // A byte-level BPE tokenizer.json that attn trains, then damages.
    let bpe = root.join("bpe.json");
    let o = attn(&["tokenizer", "train", "--data", &data_s, "--vocab-size", "300", "--out", bpe.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bpe_case = |cases: &mut Vec<Case>, tag: &str, expect: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let p = root.join(format!("bpe-{tag}.json"));
        std::fs::copy(&bpe, &p).unwrap();
        edit_json(&p, |v| f(v));
        cases.push(Case { name: format!("BPE tokenizer.json {tag}"), args: enc(&p), expect: vec![expect.into()] });
    };
    bpe_case(&mut cases, "far-id", "far beyond", &|v| v["added_tokens"] = serde_json::json!([{"id": 10_000_000, "content": "<x>", "special": true}]));
    bpe_case(&mut cases, "dup-id", "two tokens", &|v| {
        let id = v["model"]["vocab"].as_object().unwrap().values().next().unwrap().clone();
        v["model"]["vocab"]["<other>"] = id;
    });
    // Found by the fuzzer: an empty token matched everywhere and encoding never advanced.
    bpe_case(&mut cases, "empty-token", "empty string", &|v| {
        let n = v["model"]["vocab"].as_object().unwrap().len();
        v["model"]["vocab"][""] = n.into();
    });
    bpe_case(&mut cases, "pre", "pre_tokenizer", &|v| v["pre_tokenizer"] = serde_json::json!({"type": "Whitespace"}));
    bpe_case(&mut cases, "normalizer", "normalizer", &|v| v["normalizer"] = serde_json::json!({"type": "NFKC"}));
    bpe_case(&mut cases, "decoder", "decoder", &|v| v["decoder"] = serde_json::json!({"type": "Metaspace"}));
    bpe_case(&mut cases, "merges", "model.merges", &|v| v["model"]["merges"] = serde_json::json!([42]));
    bpe_case(&mut cases, "no-merges", "model.merges", &|v| v["model"].as_object_mut().unwrap().remove("merges").map(|_| ()).unwrap_or(()));
    bpe_case(&mut cases, "missing-byte", "single byte", &|v| {
        v["model"]["vocab"].as_object_mut().unwrap().remove("A");
    });
    let tk = root.join("bad.tiktoken");
    std::fs::write(&tk, "IQ== 0\nnot-base64! 1\n").unwrap();
    cases.push(Case { name: ".tiktoken bad base64".into(), args: enc(&tk), expect: vec!["line 2".into(), "bad.tiktoken".into()] });
    let tk2 = root.join("rank.tiktoken");
    std::fs::write(&tk2, "IQ== x\n").unwrap();
    cases.push(Case { name: ".tiktoken bad rank".into(), args: enc(&tk2), expect: vec!["rank".into()] });
    let vm = root.join("gpt2-files");
    std::fs::create_dir_all(&vm).unwrap();
    std::fs::write(vm.join("vocab.json"), "[1, 2]").unwrap();
    std::fs::write(vm.join("merges.txt"), "#version: 0.2\na b\n").unwrap();
    cases.push(Case { name: "vocab.json not an object".into(), args: enc(&vm), expect: vec!["vocab.json".into()] });
    let empty_dir = root.join("no-tokenizer");
    std::fs::create_dir_all(&empty_dir).unwrap();
    cases.push(Case { name: "folder without tokenizer files".into(), args: enc(&empty_dir), expect: vec!["tokenizer.json".into()] });

    // Token shards.
    let val = gpt.join("data/val.bin");
    let shard = std::fs::read(&val).unwrap();
    for (tag, bytes) in [
        ("empty", Vec::new()),
        ("magic", [b"NOTTOKEN".to_vec(), shard[8..].to_vec()].concat()),
        ("truncated", shard[..shard.len() - 3].to_vec()),
        ("header only", shard[..30].to_vec()),
    ] {
        let p = root.join(format!("shard-{}.bin", tag.replace(' ', "-")));
        std::fs::write(&p, &bytes).unwrap();
        // A file without the shard header is read as text: an empty one is too short to score.
        let expect = if tag == "magic" || tag == "empty" { "" } else { "shard" };
        cases.push(Case {
            name: format!("shard {tag}"),
            args: vec!["eval".into(), "--model".into(), g.clone(), "--data".into(), p.to_str().unwrap().into()],
            expect: vec![expect.into()],
        });
    }
    // A shard made by another tokenizer (the BPE above) for the character-level model.
    let bpe_shard = root.join("bpe-shard.bin");
    let o = attn(&["tokenizer", "encode", "--tokenizer", bpe.to_str().unwrap(), "--data", &data_s, "--out", bpe_shard.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    cases.push(case("eval another tokenizer's shard", &["eval", "--model", &l, "--data", bpe_shard.to_str().unwrap()], &["another tokenizer"]));

    // The command line: numbers and names out of range.
    let gp = |extra: &[&str]| -> Vec<String> { ["generate", "--model", g.as_str(), "--prompt", "the"].iter().chain(extra).map(|s| s.to_string()).collect() };
    for (name, extra, expect) in [
        ("temperature -1", &["--temperature", "-1"][..], "temperature"),
        ("temperature=-1", &["--temperature=-1"][..], "temperature"),
        ("temperature nan", &["--temperature", "nan"][..], "temperature"),
        ("top-p 0", &["--top-p", "0"][..], "top-p"),
        ("top-p 1.5", &["--top-p", "1.5"][..], "top-p"),
        ("repetition penalty 0", &["--repetition-penalty", "0"][..], "repetition penalty"),
        ("max-new-tokens past the context", &["--max-new-tokens", "1000"][..], "--sliding-window"),
        ("max-new-tokens near u64::MAX", &["--max-new-tokens", "18446744073709551610"][..], "context"),
        ("max-new-tokens negative", &["--max-new-tokens", "-5"][..], "max-new-tokens"),
        ("threads 0", &["--threads", "0"][..], "--threads"),
        ("unknown flag", &["--temprature", "1"][..], "--temprature"),
        ("prompt file missing", &["--prompt-file", "/nonexistent/p.txt"][..], "cannot be used with"),
    ] {
        cases.push(Case { name: format!("generate {name}"), args: gp(extra), expect: vec![expect.into()] });
    }
    cases.push(case("generate prompt-file missing", &["generate", "--model", &g, "--prompt-file", "/nonexistent/p.txt"], &["/nonexistent/p.txt"]));
    cases.push(case("generate empty prompt", &["generate", "--model", &g, "--prompt", ""], &["prompt"]));
    cases.push(case("generate unknown character", &["generate", "--model", &g, "--prompt", "\u{4e16}"], &["\u{4e16}"]));
    cases.push(case("generate missing model", &["generate", "--model", "/nonexistent/run", "--prompt", "a"], &["/nonexistent/run"]));
    // ChatML's `<` is not among a character-level model's characters.
    cases.push(case("chat with a character-level model", &["chat", "--model", &g], &["cannot chat", "attn generate"]));
    let chats = root.join("chats.jsonl");
    std::fs::write(&chats, "{\"messages\": [{\"role\": \"user\", \"content\": \"the\"}, {\"role\": \"assistant\", \"content\": \"to\"}]}\n".repeat(4)).unwrap();
    let sft = root.join("sft-chars");
    cases.push(case(
        "sft of a character-level model",
        &["train", "--task", "sft", "--init", &g, "--data", chats.to_str().unwrap(), "--out", sft.to_str().unwrap(), "--steps", "1"],
        &["chats.jsonl", "cannot learn to chat", "prompt / completion"],
    ));
    cases.push(case("generate on a file", &["generate", "--model", data_s.as_str(), "--prompt", "a"], &["config.json"]));
    let tr = |extra: &[&str]| {
        let out = root.join(format!("tr-{}", extra.join("_").replace(['/', '.', ':'], "-")));
        let base = ["train", "--data", data_s.as_str(), "--out", out.to_str().unwrap(), "--steps", "2", "--batch-size", "2", "--seq-len", "16", "--quiet"];
        [base.iter().map(|s| s.to_string()).collect::<Vec<_>>(), extra.iter().map(|s| s.to_string()).collect()].concat()
    };
    for (extra, expect) in [
        (&["--steps", "0"][..], "--steps"),
        (&["--batch-size", "0"][..], "--batch-size"),
        (&["--seq-len", "0"][..], "--seq-len"),
        (&["--seq-len", "65"][..], "context of 64"),
        (&["--grad-accum", "0"][..], "--grad-accum"),
        (&["--data-shards", "0"][..], "--data-shards"),
        (&["--data-shards", "3"][..], "more than the 2 sequences"),
        (&["--lr", "-1"][..], "--lr"),
        (&["--lr", "nan"][..], "--lr"),
        (&["--lr", "inf"][..], "--lr"),
        (&["--min-lr", "nan"][..], "--min-lr"),
        (&["--weight-decay", "nan"][..], "--weight-decay"),
        (&["--weight-decay", "-1"][..], "--weight-decay"),
        (&["--beta1", "1.0"][..], "--beta1"),
        (&["--beta2", "-0.5"][..], "--beta2"),
        (&["--optimizer", "sgd", "--momentum", "1.5"][..], "--momentum"),
        (&["--grad-clip", "nan"][..], "--grad-clip"),
        (&["--val-fraction", "1.5"][..], "--val-fraction"),
        (&["--tokenizer", "bpe:x"][..], "bpe:N"),
        (&["--tokenizer", "bpe:10"][..], "256"),
        (&["--tokenizer", "/nonexistent/tok.json"][..], "/nonexistent/tok.json"),
        (&["--preset", "gpt5"][..], "gpt5"),
        (&["--optimizer", "lion"][..], "lion"),
        (&["--position", "alibi"][..], "alibi"),
        (&["--preset", "llama-baby", "--position", "sinusoidal"][..], "--position"),
        (&["--init", "/nonexistent/model"][..], "/nonexistent/model"),
        (&["--resume"][..], "--resume"),
        // Refused before allocating, not an abort in the allocator.
        (&["--batch-size", "100000000"][..], "GB of memory available"),
    ] {
        cases.push(Case { name: format!("train {}", extra.join(" ")), args: tr(extra), expect: vec![expect.into()] });
    }
    let empty = root.join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let short = root.join("short.txt");
    std::fs::write(&short, "just a few words").unwrap();
    let one = root.join("one.txt");
    std::fs::write(&one, "j").unwrap();
    let binary = root.join("binary.dat");
    std::fs::write(&binary, [0xFFu8, 0xFE, 0x00, 0x80, 0x81]).unwrap();
    for (tag, p, expect) in [
        ("empty", &empty, "empty"),
        ("short", &short, "shorter than one batch"),
        ("not UTF-8", &binary, "UTF-8"),
        ("missing", &root.join("nope.txt"), "nope.txt"),
    ] {
        let out = root.join(format!("tr-data-{}", tag.replace(' ', "-")));
        cases.push(case(
            format!("train data {tag}"),
            &["train", "--data", p.to_str().unwrap(), "--out", out.to_str().unwrap(), "--steps", "2", "--quiet"],
            &[expect],
        ));
    }
    cases.push(case("train into an existing run", &["train", "--data", &data_s, "--out", &g, "--steps", "2", "--quiet"], &["--resume", "--overwrite"]));
    cases.push(case(
        "train --init X --out X",
        &["train", "--data", &data_s, "--out", &g, "--init", &g, "--overwrite", "--steps", "1", "--quiet"],
        &["same folder"],
    ));
    cases.push(case("train --resume with other data", &["train", "--data", short.to_str().unwrap(), "--out", &g, "--resume", "--quiet"], &["--data differs"]));
    cases.push(case("train --resume changed lr", &["train", "--data", &data_s, "--out", &g, "--resume", "--lr", "0.5", "--steps", "3", "--quiet"], &["lr"]));
    // eval, inspect, embed, tokenizer and bench.
    for (name, args, expect) in [
        ("eval seq-len 0", vec!["eval", "--model", &g, "--data", &data_s, "--seq-len", "0"], "--seq-len"),
        ("eval seq-len past context", vec!["eval", "--model", &g, "--data", &data_s, "--seq-len", "65"], "window"),
        ("eval one character", vec!["eval", "--model", &g, "--data", one.to_str().unwrap()], "at least 2"),
        ("eval missing data", vec!["eval", "--model", &g, "--data", "/nonexistent/x.txt"], "/nonexistent/x.txt"),
        ("inspect attention layer 99", vec!["inspect", "attention", "--model", &g, "--text", "the", "--layer", "99", "--head", "0"], "layer"),
        ("inspect attention head 99", vec!["inspect", "attention", "--model", &g, "--text", "the", "--layer", "0", "--head", "99"], "head"),
        ("inspect attention text past context", vec!["inspect", "attention", "--model", &g, "--text", &"the ".repeat(40)], "64"),
        (
            "inspect attention png in a missing folder",
            vec!["inspect", "attention", "--model", &g, "--text", "the", "--out", "/nonexistent-dir/a.png"],
            "/nonexistent-dir does not exist",
        ),
        ("inspect next empty text", vec!["inspect", "next", "--model", &g, "--text", ""], "text"),
        ("inspect next top-p 2", vec!["inspect", "next", "--model", &g, "--text", "the", "--top-p", "2"], "top-p"),
        ("inspect embeddings empty words", vec!["inspect", "embeddings", "--model", &g, "--words", ",,,"], "empty word"),
        ("inspect embeddings one word", vec!["inspect", "embeddings", "--model", &g, "--words", "the"], "two words"),
        ("inspect embeddings unknown char", vec!["inspect", "embeddings", "--model", &g, "--words", "\u{4e16},the"], "\u{4e16}"),
        ("embed on a decoder", vec!["embed", "--model", &g, "hello"], "encoder"),
        ("similarity one text", vec!["similarity", "--model", &g, "a"], "similarity"),
        ("tokenizer train vocab 10", vec!["tokenizer", "train", "--data", &data_s, "--vocab-size", "10", "--out", "/tmp/x.json"], "256"),
        (
            "tokenizer train bad regex",
            vec!["tokenizer", "train", "--data", &data_s, "--vocab-size", "300", "--pattern", "(", "--out", "/tmp/x.json"],
            "pattern",
        ),
        ("tokenizer decode id out of range", vec!["tokenizer", "decode", "--tokenizer", tok.to_str().unwrap(), "99999"], "99999"),
        ("tokenizer decode not a number", vec!["tokenizer", "decode", "--tokenizer", tok.to_str().unwrap(), "abc"], "abc"),
        ("bench gemm size huge", vec!["bench", "gemm", "--size", "1000000"], "--size"),
        ("bench gemm size 0", vec!["bench", "gemm", "--size", "0"], "--size"),
        ("bench train seq-len past context", vec!["bench", "train", "--preset", "baby", "--seq-len", "65", "--steps", "1"], "65"),
        ("bench train batch past memory", vec!["bench", "train", "--preset", "baby", "--batch-size", "100000000", "--steps", "1"], "GB of memory available"),
        (
            "bench train seq2seq batch past memory",
            vec!["bench", "train", "--preset", "transformer-tiny", "--batch-size", "100000000", "--steps", "1"],
            "GB of memory available",
        ),
        ("bench decode rows past memory", vec!["bench", "decode", "--preset", "baby", "--rows", "100000000", "--steps", "1"], "GB of memory available"),
        ("serve parallel past memory", vec!["serve", "--model", &g, "--port", "0", "--parallel", "100000000"], "--parallel 100000000"),
        ("bench generate too long", vec!["bench", "generate", "--preset", "baby", "--prompt-len", "60", "--new-tokens", "10"], "context"),
        ("unknown subcommand", vec!["fly"], "fly"),
        ("completions unknown shell", vec!["completions", "tcsh"], "tcsh"),
    ] {
        cases.push(case(name, &args, &[expect]));
    }

    // Counts where 0 means nothing are refused by name, before any work: a
    // median of no rounds used to panic, and 0 new tokens printed 2e22 tok/s.
    for (cmd, flag) in [
        (&["bench", "train", "--preset", "baby"][..], "--steps"),
        (&["bench", "train", "--preset", "baby"], "--batch-size"),
        (&["bench", "train", "--preset", "baby"], "--seq-len"),
        (&["bench", "train", "--preset", "transformer-tiny"], "--steps"),
        (&["bench", "generate", "--preset", "baby"], "--new-tokens"),
        (&["bench", "generate", "--preset", "baby"], "--prompt-len"),
        (&["bench", "decode", "--preset", "baby"], "--steps"),
        (&["bench", "decode", "--preset", "baby"], "--rows"),
        (&["bench", "gemm", "--shapes"], "--rounds"),
        (&["bench", "tokenizer", "--tokenizer", "x", "--data", "x"], "--rounds"),
        (&["bench", "embed", "--model", "x", "--data", "x"], "--rounds"),
        (&["bench", "translate", "--model", "x", "--data", "x"], "--rounds"),
        (&["bench", "translate", "--model", "x", "--data", "x"], "--beam"),
        (&["bench", "translate", "--model", "x", "--data", "x"], "--batch-size"),
        (&["eval", "--model", &g, "--data", &data_s], "--batch-size"),
        (&["eval", "--model", &g, "--data", &data_s], "--beam"),
        (&["translate", "--model", "x", "hello"], "--beam"),
        (&["translate", "--model", "x", "hello"], "--max-new-tokens"),
        (&["translate", "--model", "x", "hello"], "--batch-size"),
        (&["inspect", "next", "--model", &g, "--text", "the"], "--top"),
        (&["inspect", "lens", "--model", &g, "--text", "the"], "--top"),
        (&["inspect", "embeddings", "--model", &g, "--words", "a,b"], "--neighbours"),
        (&["train", "--data", &data_s, "--out", "x"], "--eval-every"),
        (&["train", "--data", &data_s, "--out", "x"], "--eval-batches"),
        (&["serve", "--model", &g], "--queue"),
    ] {
        let args: Vec<&str> = cmd.iter().copied().chain([flag, "0"]).collect();
        cases.push(case(format!("{} {flag} 0", cmd[..2].join(" ")), &args, &[flag, "at least 1"]));
    }

    let total = cases.len();
    let problems: Vec<String> = cases.iter().filter_map(check).collect();
    eprintln!("{total} bad-input cases, {} problems", problems.len());
    assert!(total >= 150, "only {total} cases");
    assert!(problems.is_empty(), "{} of {total} cases went wrong:\n{}", problems.len(), problems.join("\n"));
}
