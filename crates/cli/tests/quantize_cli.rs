//! `attn quantize` and `--dtype` end to end: a trained run written as bf16
//! and int8 folders, generated from and scored in them and on the fly,
//! with the errors a user meets.

mod common;

use common::{attn, corpus, stderr, train_args};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn eval_loss(model: &str, data: &str, dtype: &str) -> f64 {
    eval_loss_kv(model, data, dtype, "auto")
}

fn eval_loss_kv(model: &str, data: &str, dtype: &str, kv: &str) -> f64 {
    let o = attn(&["eval", "--model", model, "--data", data, "--seq-len", "64", "--dtype", dtype, "--kv-dtype", kv, "--json"]);
    assert!(o.status.success(), "eval --dtype {dtype} --kv-dtype {kv}: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    v["loss"].as_f64().unwrap()
}

#[test]
fn quantized_folders_generate_and_score() {
    let tmp = tempfile::tempdir().unwrap();
    let data = corpus(tmp.path());
    let data = data.to_str().unwrap();
    let run = tmp.path().join("run");
    let o = attn(&train_args(data, run.to_str().unwrap(), "30"));
    assert!(o.status.success(), "{}", stderr(&o));
    let run = run.to_str().unwrap();
    let f32_loss = eval_loss(run, data, "f32");
    for (dtype, tol) in [("bf16", 0.002), ("int8", 0.01)] {
        let out = tmp.path().join(dtype);
        let o = attn(&["quantize", "--model", run, "--dtype", dtype, "--out", out.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stdout(&o).contains("MB ->"), "{}", stdout(&o));
        assert!(out.join("tokenizer.json").exists());
        let out = out.to_str().unwrap();
        // The folder's own dtype (auto), and the same on the fly from the run.
        let saved = eval_loss(out, data, "auto");
        let fly = eval_loss(run, data, dtype);
        assert_eq!(saved, fly, "{dtype}: saved folder and on-the-fly quantization");
        assert!((saved - f32_loss).abs() <= tol * f32_loss, "{dtype}: loss {saved} vs f32 {f32_loss}");
        // Its KV cache is bf16 unless asked otherwise: f32 keys and values
        // score a little differently, within the same bar.
        let kv32 = eval_loss_kv(out, data, "auto", "f32");
        assert!(kv32 != saved && (kv32 - f32_loss).abs() <= tol * f32_loss, "{dtype} --kv-dtype f32: {kv32} vs {saved}");
        let prompt: String = std::fs::read_to_string(data).unwrap().chars().take(4).collect();
        let o = attn(&["generate", "--model", out, "--prompt", &prompt, "--max-new-tokens", "20", "--temperature", "0"]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stdout(&o).starts_with(&prompt), "{}", stdout(&o));
        // Refuses to write into a folder that holds anything.
        let o = attn(&["quantize", "--model", run, "--dtype", dtype, "--out", out]);
        assert!(!o.status.success() && stderr(&o).contains("not empty"), "{}", stderr(&o));
    }
    // f32 weights with a bf16 cache score through the inference path.
    let kv16 = eval_loss_kv(run, data, "f32", "bf16");
    assert!(kv16 != f32_loss && (kv16 - f32_loss).abs() <= 0.002 * f32_loss, "f32 --kv-dtype bf16: {kv16} vs {f32_loss}");
    let o = attn(&["eval", "--model", run, "--data", data, "--kv-dtype", "f16"]);
    assert!(!o.status.success() && stderr(&o).contains("auto, f32 or bf16"), "{}", stderr(&o));
    let int8 = tmp.path().join("int8");
    let o = attn(&["generate", "--model", int8.to_str().unwrap(), "--dtype", "bf16", "--prompt", "x", "--max-new-tokens", "2"]);
    assert!(!o.status.success() && stderr(&o).contains("int8"), "{}", stderr(&o));
    let o = attn(&["generate", "--model", run, "--dtype", "int4", "--prompt", "x"]);
    assert!(!o.status.success() && stderr(&o).contains("int8:G"), "{}", stderr(&o));
}

/// An encoder folder is refused by the commands that predict tokens, with
/// or without --dtype.
#[test]
fn encoders_are_refused_with_a_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let bert = tmp.path().join("bert");
    attn_model::Transformer::new(attn_model::TransformerConfig::bert(300, 32, 1, 2, 32, 64), 1).unwrap().save(&bert, None).unwrap();
    let tok = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/bpe_template_tokenizer.json");
    std::fs::copy(tok, bert.join("tokenizer.json")).unwrap();
    let b = bert.to_str().unwrap();
    let o = attn(&["generate", "--model", b, "--prompt", "x", "--max-new-tokens", "2"]);
    assert!(!o.status.success() && stderr(&o).contains("does not predict next tokens"), "{}", stderr(&o));
    let o = attn(&["generate", "--model", b, "--dtype", "int8", "--prompt", "x", "--max-new-tokens", "2"]);
    assert!(!o.status.success() && stderr(&o).contains("decoders"), "{}", stderr(&o));
    let o = attn(&["quantize", "--model", b, "--dtype", "int8", "--out", tmp.path().join("q").to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("decoders"), "{}", stderr(&o));
}
