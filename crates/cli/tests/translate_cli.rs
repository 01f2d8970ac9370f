//! `attn train --task translation`, `attn translate` and `attn eval` on an
//! encoder-decoder, end to end on a synthetic word-for-word task; resuming a
//! translation run reproduces the uninterrupted one bit for bit; bad input is
//! refused with the file, the line or the flag named.

mod common;

use std::path::Path;

use common::{attn, message_flaw, stderr};

/// English -> Spanish word lists, 1 to 5 words a pair.
fn pairs(dir: &Path) -> (String, String, String) {
    let en = ["the", "water", "light", "house", "king", "bread", "land", "day", "night", "man"];
    let es = ["el", "agua", "luz", "casa", "rey", "pan", "tierra", "día", "noche", "hombre"];
    let (mut tsv, mut src, mut tgt) = (String::new(), String::new(), String::new());
    for i in 0..240 {
        let idx: Vec<usize> = (0..1 + i % 5).map(|k| (i * 7 + k * 3) % 10).collect();
        let s: Vec<&str> = idx.iter().map(|&j| en[j]).collect();
        let t: Vec<&str> = idx.iter().map(|&j| es[j]).collect();
        tsv.push_str(&format!("{}\t{}\n", s.join(" "), t.join(" ")));
        src.push_str(&format!("{}\n", s.join(" ")));
        tgt.push_str(&format!("{}\n", t.join(" ")));
    }
    let w = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };
    (w("pairs.tsv", &tsv), w("src.txt", &src), w("tgt.txt", &tgt))
}

fn train<'a>(data: &'a str, out: &'a str, steps: &'a str, extra: &[&'a str]) -> std::process::Output {
    let mut args = vec![
        "train",
        "--task",
        "translation",
        "--data",
        data,
        "--out",
        out,
        "--preset",
        "transformer-tiny",
        "--tokenizer",
        "bpe:300",
        "--steps",
        steps,
        "--eval-every",
        "5",
        "--batch-tokens",
        "256",
        "--lr",
        "3e-3",
        "--warmup",
        "5",
        "--threads",
        "2",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    attn(&args)
}

/// A folder's tensors by name, in name order.
fn tensors(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let f = attn_model::checkpoint::TensorFile::open(&dir.join("model.safetensors")).unwrap();
    let mut names: Vec<String> = f.names().map(str::to_string).collect();
    names.sort();
    names.into_iter().map(|n| (n.clone(), f.read_f32(&n).unwrap())).collect()
}

#[test]
fn train_translate_eval_and_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let (tsv, _, _) = pairs(tmp.path());
    let full = tmp.path().join("full");
    let plan = tmp.path().join("plan.json");
    let o = train(&tsv, full.to_str().unwrap(), "10", &["--export-plan", plan.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The plan a PyTorch peer trains from: every micro-batch, and the recipe
    // the trainer state records (the peer may start before any checkpoint),
    // its numbers as the exact f32 values attn trains with.
    let plan: serde_json::Value = serde_json::from_slice(&std::fs::read(&plan).unwrap()).unwrap();
    assert_eq!(plan["micro_batches"].as_array().unwrap().len(), 10);
    let state = attn_model::checkpoint::TensorFile::open(&full.join("trainer_state.safetensors")).unwrap();
    let recorded: serde_json::Value = serde_json::from_str(&state.metadata().unwrap()["train_config"]).unwrap();
    fn widened(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Number(x) if x.is_f64() => serde_json::json!(x.as_f64().unwrap() as f32),
            serde_json::Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), widened(v))).collect(),
            v => v.clone(),
        }
    }
    let recipe = plan["train_config"].as_object().unwrap();
    assert_eq!(recipe.len(), recorded.as_object().unwrap().len());
    for (k, v) in recipe {
        assert_eq!(widened(v), widened(&recorded[k]), "train_config.{k}");
    }
    assert_eq!((recipe["lr"].as_f64(), recipe["warmup"].as_u64()), (Some(3e-3f32 as f64), Some(5)));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["step"], 10);
    assert!(summary["val_loss"].as_f64().unwrap() < (300f64).ln(), "{summary}");
    for f in ["config.json", "model.safetensors", "tokenizer.json", "trainer_state.safetensors", "metrics.jsonl", "loss.png"] {
        assert!(full.join(f).exists(), "{f} missing");
    }
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(full.join("config.json")).unwrap()).unwrap();
    assert_eq!((cfg["model_type"].as_str(), cfg["activation_function"].as_str()), (Some("marian"), Some("relu")));

    // Interrupted at step 5, resumed to 10: the same weights as the run that went straight through.
    let part = tmp.path().join("part");
    let o = train(&tsv, part.to_str().unwrap(), "10", &["--halt-at", "5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = train(&tsv, part.to_str().unwrap(), "10", &["--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Every tensor bit for bit (the file bytes may differ: safetensors writes its metadata in hash order).
    let bits = |dir: &Path| tensors(dir).into_iter().map(|(n, v)| (n, v.iter().map(|x| x.to_bits()).collect::<Vec<_>>())).collect::<Vec<_>>();
    assert!(bits(&part) == bits(&full), "resume is not bit for bit");

    let model = full.to_str().unwrap();
    let o = attn(&["translate", "--model", model, "--beam", "3", "--max-new-tokens", "8", "--json", "the king", "light"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let t = v["translations"].as_array().unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(t[0]["source"], "the king");
    assert!(t[0]["ids"].as_array().unwrap().len() <= 8 && t[0]["score"].is_number() && t[0]["text"].is_string());
    // A beam wider than memory holds is refused up front, not allocated
    // until the process is killed: under a 4 GB address space (2 GB
    // counted available), a million beams' scores need several GB.
    #[cfg(target_os = "linux")]
    {
        let o = std::process::Command::new("sh")
            .args(["-c", "ulimit -v 4194304 && exec \"$0\" translate --model \"$1\" --beam 1000000 --max-new-tokens 8 light"])
            .args([env!("CARGO_BIN_EXE_attn"), model])
            .output()
            .unwrap();
        let err = stderr(&o);
        assert!(!o.status.success() && err.contains("--beam 1000000") && err.contains("GB of memory available"), "{err}");
    }
    let o = attn(&["eval", "--model", model, "--data", &tsv, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for k in ["loss", "perplexity", "tokens", "bleu", "chrf"] {
        assert!(e[k].is_number(), "eval --json lacks {k}: {e}");
    }
    assert!((e["perplexity"].as_f64().unwrap() - e["loss"].as_f64().unwrap().exp()).abs() < 1e-6);
}

#[test]
fn aligned_source_and_target_files_train() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, src, tgt) = pairs(tmp.path());
    let out = tmp.path().join("run");
    let o = attn(&[
        "train",
        "--task",
        "translation",
        "--source",
        &src,
        "--target",
        &tgt,
        "--out",
        out.to_str().unwrap(),
        "--preset",
        "transformer-tiny",
        "--tokenizer",
        "bpe:300",
        "--steps",
        "2",
        "--batch-tokens",
        "256",
        "--threads",
        "2",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The pre-norm option trains, saves as mBART, and translates.
    let pre = tmp.path().join("pre");
    let o = attn(&[
        "train",
        "--task",
        "translation",
        "--source",
        &src,
        "--target",
        &tgt,
        "--out",
        pre.to_str().unwrap(),
        "--preset",
        "transformer-tiny",
        "--tokenizer",
        "bpe:300",
        "--steps",
        "2",
        "--batch-tokens",
        "256",
        "--threads",
        "2",
        "--quiet",
        "--norm-position",
        "pre",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(pre.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["model_type"], "mbart");
    let o = attn(&["translate", "--model", pre.to_str().unwrap(), "--max-new-tokens", "4", "the king"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn bad_translation_input_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (tsv, src, _) = pairs(tmp.path());
    let out = tmp.path().join("run");
    let out = out.to_str().unwrap();
    let no_tab = tmp.path().join("bad.tsv");
    std::fs::write(&no_tab, "a\tb\nno tab here\n").unwrap();
    let short = tmp.path().join("short.txt");
    std::fs::write(&short, "one line\n").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--data", no_tab.to_str().unwrap()], "bad.tsv:2: no tab"),
        (vec!["--source", &src, "--target", short.to_str().unwrap()], "must be aligned line by line"),
        (vec!["--data", &tsv, "--preset", "gpt2-124m"], "transformer-tiny, transformer-small, transformer-base"),
        (vec!["--data", &tsv, "--tokenizer", "char"], "subword vocabulary"),
        (vec!["--data", &tsv, "--label-smoothing", "1.5"], "--label-smoothing"),
        (vec!["--data", &tsv, "--batch-tokens", "0"], "--batch-tokens"),
        (vec!["--task", "lm", "--data", &tsv, "--label-smoothing", "0.2"], "is for --task translation"),
    ];
    for (extra, want) in cases {
        let mut args =
            vec!["train", "--task", "translation", "--out", out, "--steps", "2", "--quiet", "--tokenizer", "bpe:300", "--preset", "transformer-tiny"];
        args.extend(extra);
        let o = attn(&args);
        let err = stderr(&o);
        assert!(!o.status.success() && err.contains(want), "{args:?}: {err}");
        assert_eq!(message_flaw(&err), None);
        assert!(!Path::new(out).exists(), "a failed run left {out}");
    }
    // A decoder folder is not a translation model, and beam 0 is no search.
    let lm = tmp.path().join("lm");
    let corpus = common::corpus(tmp.path());
    assert!(common::tiny_run(corpus.to_str().unwrap(), lm.to_str().unwrap(), "baby").status.success());
    let o = attn(&["translate", "--model", lm.to_str().unwrap(), "hello"]);
    assert!(!o.status.success() && stderr(&o).contains("model_type") && stderr(&o).contains("attn generate"), "{}", stderr(&o));
    // And the other way: a translation folder names the commands that run it.
    let marian = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/marian_spm");
    let o = attn(&["generate", "--model", marian.to_str().unwrap(), "--prompt", "hello"]);
    assert!(!o.status.success() && stderr(&o).contains("encoder-decoder") && stderr(&o).contains("attn translate"), "{}", stderr(&o));
    let o = attn(&["translate", "--model", lm.to_str().unwrap(), "--beam", "0", "hello"]);
    assert!(!o.status.success() && stderr(&o).contains("--beam"), "{}", stderr(&o));
}

/// `--init DIR` fine-tunes: the run starts from the folder's weights, config
/// and tokenizer (an attn run, or a Hub-style Marian folder whose
/// SentencePiece files travel into the run folder) and learns on from there.
#[test]
fn fine_tuning_starts_from_a_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let (tsv, _, _) = pairs(tmp.path());
    let base = tmp.path().join("base");
    let o = train(&tsv, base.to_str().unwrap(), "20", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let base_val = serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["val_loss"].as_f64().unwrap();
    let tune = |init: &Path, out: &Path, steps: &str, lr: &str, extra: &[&str]| {
        let (init, out) = (init.to_str().unwrap(), out.to_str().unwrap());
        let mut args = vec!["train", "--task", "translation", "--data", &tsv, "--init", init, "--out", out, "--steps", steps];
        args.extend(["--eval-every", "5", "--batch-tokens", "256", "--lr", lr, "--warmup", "1", "--threads", "2", "--quiet"]);
        args.extend(extra);
        attn(&args)
    };
    // A vanishing learning rate: the weights, config and tokenizer are the folder's.
    let same = tmp.path().join("same");
    let o = tune(&base, &same, "1", "1e-12", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (a, b) = (tensors(&base), tensors(&same));
    assert_eq!(a.iter().map(|t| &t.0).collect::<Vec<_>>(), b.iter().map(|t| &t.0).collect::<Vec<_>>());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        let d = x.iter().zip(y).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
        assert!(d < 1e-6, "{name} moved by {d}: not started from the folder's weights");
    }
    let read = |d: &Path, f: &str| std::fs::read(d.join(f)).unwrap();
    assert_eq!(read(&base, "tokenizer.json"), read(&same, "tokenizer.json"));
    assert_eq!(read(&base, "config.json"), read(&same, "config.json"));
    // Trained on, the loss goes on falling from the folder's.
    let more = tmp.path().join("more");
    let o = tune(&base, &more, "10", "3e-3", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let more_val = serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["val_loss"].as_f64().unwrap();
    assert!(more_val < base_val, "fine-tuned val loss {more_val} not below the folder's {base_val}");
    // A Hub-style Marian folder: its SentencePiece files come along, and the run translates.
    let hub = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/marian_spm");
    let tuned = tmp.path().join("tuned");
    let o = tune(&hub, &tuned, "2", "1e-4", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in ["source.spm", "target.spm", "vocab.json", "tokenizer_config.json"] {
        assert_eq!(read(&hub, f), read(&tuned, f), "{f}");
    }
    let o = attn(&["translate", "--model", tuned.to_str().unwrap(), "--max-new-tokens", "4", "the king"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The folder decides the architecture: --norm-position is refused, and so is a decoder folder.
    let o = tune(&base, &tmp.path().join("x"), "2", "1e-3", &["--norm-position", "pre"]);
    assert!(!o.status.success() && stderr(&o).contains("--norm-position"), "{}", stderr(&o));
    let lm = tmp.path().join("lm");
    let corpus = common::corpus(tmp.path());
    assert!(common::tiny_run(corpus.to_str().unwrap(), lm.to_str().unwrap(), "baby").status.success());
    let o = tune(&lm, &tmp.path().join("y"), "2", "1e-3", &[]);
    let err = stderr(&o);
    assert!(!o.status.success() && err.contains("model_type"), "{err}");
    assert_eq!(message_flaw(&err), None);
    assert!(!tmp.path().join("y").exists());
    // A tokenizer that does not end sequences with the model's EOS is refused
    // (trained on, the model would never learn to stop).
    let noeos = tmp.path().join("noeos");
    std::fs::create_dir(&noeos).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(base.join(f), noeos.join(f)).unwrap();
    }
    let mut tok: serde_json::Value = serde_json::from_slice(&read(&base, "tokenizer.json")).unwrap();
    assert!(!tok["post_processor"].is_null(), "the trained tokenizer appends EOS with a post-processor");
    tok["post_processor"] = serde_json::Value::Null;
    std::fs::write(noeos.join("tokenizer.json"), serde_json::to_vec(&tok).unwrap()).unwrap();
    let o = tune(&noeos, &tmp.path().join("z"), "2", "1e-3", &[]);
    let err = stderr(&o);
    assert!(!o.status.success() && err.contains("eos_token_id") && err.contains("post-processor"), "{err}");
    assert_eq!(message_flaw(&err), None);
    assert!(!tmp.path().join("z").exists());
}

/// A Hub-style Marian folder (source.spm, target.spm, vocab.json, no
/// tokenizer.json; tools/reference/marian_spm_golden.py): `attn translate`
/// tokenizes with its SentencePiece models and gives transformers'
/// `generate()` tokens and MarianTokenizer's text, greedy and beam 3.
#[test]
fn marian_sentencepiece_folder_translates_as_transformers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata");
    let fixture: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root.join("marian_spm_ids.json")).unwrap()).unwrap();
    let model = root.join("marian_spm");
    for case in fixture["generate"].as_array().unwrap() {
        let beam = case["beam"].to_string();
        let out =
            attn(&["translate", "--model", model.to_str().unwrap(), "--beam", &beam, "--max-new-tokens", "12", "--json", case["source"].as_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let t = &got["translations"][0];
        assert_eq!(t["ids"], case["ids"], "beam {beam}: {}", case["source"]);
        assert_eq!(t["text"], case["text"], "beam {beam}: {}", case["source"]);
    }
    // The alignment picture tokenizes its target with target.spm.
    let case = &fixture["cases"][1];
    let text = case["text"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("align.json");
    let m = model.to_str().unwrap();
    let o =
        attn(&["inspect", "attention", "--model", m, "--kind", "cross", "--source", "In the beginning.", "--target", text, "--out", json.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(got["target_ids"], case["target_ids"], "target ids of {text:?}");
}
