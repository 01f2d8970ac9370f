//! LoRA fine-tuning end to end: `attn train --init BASE --lora-r R` writes a
//! PEFT folder (never a copy of the base, which stays untouched), resumes bit
//! for bit, and the adapter works the three ways it can be used: `--model
//! BASE --adapter RUN`, `--model RUN` alone, and `attn lora merge`.

mod common;

use std::path::Path;

use common::{attn, corpus, stderr, train_args};

fn file_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect();
    v.sort();
    v
}

fn adapter_tensors(dir: &Path) -> Vec<(String, Vec<u32>)> {
    let f = attn_model::checkpoint::TensorFile::open(&dir.join("adapter_model.safetensors")).unwrap();
    let mut names: Vec<String> = f.names().map(str::to_string).collect();
    names.sort();
    names.into_iter().map(|n| (n.clone(), f.read_f32(&n).unwrap().iter().map(|x| x.to_bits()).collect())).collect()
}

#[test]
fn lora_trains_resumes_and_is_used_three_ways() {
    let tmp = tempfile::tempdir().unwrap();
    let data = corpus(tmp.path());
    let data = data.to_str().unwrap();
    let base = tmp.path().join("base");
    let mut args = train_args(data, base.to_str().unwrap(), "8");
    args.extend(["--preset", "llama-baby"]);
    let o = attn(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let before = file_bytes(&base);

    let lora = |out: &Path, extra: &[&str]| {
        // The base's architecture comes with --init, not a preset.
        let mut args: Vec<&str> = train_args(data, out.to_str().unwrap(), "8").into_iter().filter(|a| *a != "--preset" && *a != "baby").collect();
        args.extend(["--init", base.to_str().unwrap(), "--lora-r", "4", "--lora-targets", "q,k,v,o,mlp", "--lora-dropout", "0.1", "--lr", "1e-2"]);
        args.extend_from_slice(extra);
        attn(&args)
    };
    let (full, part) = (tmp.path().join("full"), tmp.path().join("part"));
    let o = lora(&full, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "trainer_state.safetensors"] {
        assert!(full.join(f).exists(), "{f} missing from the LoRA run");
    }
    assert!(!full.join("model.safetensors").exists(), "a LoRA run must not copy the base weights");
    assert_eq!(file_bytes(&base), before, "the base model changed");
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(full.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!((cfg["peft_type"].as_str(), cfg["r"].as_u64(), cfg["lora_alpha"].as_f64()), (Some("LORA"), Some(4), Some(8.0)));
    assert!(adapter_tensors(&full).iter().any(|(n, _)| n == "base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight"));

    let o = lora(&part, &["--halt-at", "4"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = lora(&part, &["--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(adapter_tensors(&part) == adapter_tensors(&full), "LoRA resume is not bit for bit");

    // The same greedy text with the adapter given, implied, or merged; and it differs from the base's.
    let gen = |args: &[&str]| {
        let mut a = vec!["generate", "--prompt", "Line 1", "--temperature", "0", "--max-new-tokens", "24"];
        a.extend_from_slice(args);
        let o = attn(&a);
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    let (b, f) = (base.to_str().unwrap(), full.to_str().unwrap());
    let with_adapter = gen(&["--model", b, "--adapter", f]);
    assert_eq!(gen(&["--model", f]), with_adapter);
    let merged = tmp.path().join("merged");
    let o = attn(&["lora", "merge", "--model", b, "--adapter", f, "--out", merged.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(gen(&["--model", merged.to_str().unwrap()]), with_adapter);
    let eval = |args: &[&str]| {
        let mut a = vec!["eval", "--data", data, "--seq-len", "16", "--json"];
        a.extend_from_slice(args);
        let o = attn(&a);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["loss"].as_f64().unwrap()
    };
    let (l_base, l_adapted) = (eval(&["--model", b]), eval(&["--model", b, "--adapter", f]));
    assert!(l_adapted < l_base, "the adapter should lower the training text's loss: {l_adapted} vs {l_base}");

    // Merging refuses to write over a folder in use.
    let o = attn(&["lora", "merge", "--model", b, "--adapter", f, "--out", b]);
    assert!(!o.status.success() && stderr(&o).contains("not empty"), "{}", stderr(&o));
    // LoRA needs a model to adapt.
    let o = attn(&["train", "--data", data, "--out", tmp.path().join("x").to_str().unwrap(), "--lora-r", "4", "--steps", "1"]);
    assert!(!o.status.success() && stderr(&o).contains("--init"), "{}", stderr(&o));
}
