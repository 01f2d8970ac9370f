//! Runs the built `attn` binary on temporary folders and checks what it writes
//! and prints.

mod common;

use std::path::Path;
use std::process::Command;

use common::{attn, corpus, message_flaw, stderr, train_args, train_args_t};

fn losses(run: &Path) -> Vec<(u64, u32, Option<u32>)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let bits = |k: &str| v.get(k).and_then(|x| x.as_f64()).map(|x| (x as f32).to_bits());
            (v["step"].as_u64().unwrap(), bits("train_loss").unwrap(), bits("val_loss"))
        })
        .collect()
}

#[test]
fn resume_continues_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let (data, a_s, b_s) = (data.to_str().unwrap(), a.to_str().unwrap(), b.to_str().unwrap());

    let o = attn(&train_args(data, a_s, "10"));
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap()).unwrap();
    let val_full = summary["val_loss_full"].as_f64().expect("final full-split val loss");
    let mut halted = train_args(data, b_s, "10");
    halted.extend(["--halt-at", "6"]);
    let o = attn(&halted);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(losses(&b).len(), 6);
    let mut resumed = train_args(data, b_s, "10");
    resumed.push("--resume");
    let o = attn(&resumed);
    assert!(o.status.success(), "{}", stderr(&o));

    // Every step's train loss and every scheduled val loss, to the bit, and the
    // final weights. (The halted run also evaluated at its halt step, 6.)
    let (la, lb) = (losses(&a), losses(&b));
    assert_eq!(la.len(), 10);
    assert_eq!(la.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(), lb.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>());
    for (ra, rb) in la.iter().zip(&lb) {
        if ra.2.is_some() {
            assert_eq!(ra.2, rb.2, "val loss at step {}", ra.0);
        }
    }
    assert!(lb[5].2.is_some(), "the halted run evaluates before stopping");
    // (Compared as tensors: the header's metadata map has no fixed key order.)
    let (ma, _) = attn_model::Transformer::load(&a).unwrap();
    let (mb, _) = attn_model::Transformer::load(&b).unwrap();
    assert!(ma.params == mb.params, "final weights differ");
    for f in ["config.json", "tokenizer.json", "trainer_state.safetensors", "loss.png", "data/train.bin", "data/val.bin"] {
        assert!(a.join(f).exists(), "{f} missing");
    }
    // A repeated flag overrides the earlier one (scripts rely on this).
    let c = dir.path().join("c");
    let mut repeated = train_args(data, c.to_str().unwrap(), "10");
    repeated.extend(["--steps", "3"]);
    let o = attn(&repeated);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(losses(&c).len(), 3);

    // The loss went down.
    let l = losses(&a);
    assert!(f32::from_bits(l[9].1) < f32::from_bits(l[0].1));

    // `attn eval` scores a text with the run's tokenizer: one window of
    // exactly its characters when it fits in the context.
    let short = dir.path().join("short.txt");
    std::fs::write(&short, "Line 7: the quick brown fox").unwrap();
    let o = attn(&["eval", "--model", a_s, "--data", short.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["tokens"], 27);
    let loss = r["loss"].as_f64().unwrap();
    assert!(loss > 0.0 && (r["perplexity"].as_f64().unwrap() - loss.exp()).abs() < 1e-9);
    // bits/byte = nats over 26 predictions / (ln 2 * 27 bytes)
    assert!((r["bits_per_byte"].as_f64().unwrap() - loss * 26.0 / (std::f64::consts::LN_2 * 27.0)).abs() < 1e-9);

    // `attn eval` on the run's own val split reproduces the final val loss
    // training reported (same windows; the batching differs, so the sum order
    // differs: 1e-4 is far above that rounding and far below any real change).
    let val = a.join("data/val.bin");
    let o = attn(&["eval", "--model", a_s, "--data", val.to_str().unwrap(), "--seq-len", "16", "--batch-size", "3", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!((r["loss"].as_f64().unwrap() - val_full).abs() < 1e-4, "{} vs {val_full}", r["loss"]);
    // The batch only sets the speed: a hundred million windows a pass is
    // cut to the windows there are, not allocated.
    let o = attn(&["eval", "--model", a_s, "--data", val.to_str().unwrap(), "--seq-len", "16", "--batch-size", "100000000", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let big: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!((big["loss"].as_f64().unwrap() - val_full).abs() < 1e-4, "{} vs {val_full}", big["loss"]);

    // And the run folder generates text that starts with the prompt.
    let o = attn(&["generate", "--model", a_s, "--prompt", "Line", "--max-new-tokens", "20", "--seed", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.starts_with("Line") && text.chars().count() >= 24, "{text:?}");
    // The same seed gives the same text.
    let again = attn(&["generate", "--model", a_s, "--prompt", "Line", "--max-new-tokens", "20", "--seed", "3"]);
    assert_eq!(String::from_utf8(again.stdout).unwrap(), text);

    // Past the context (64 for baby) it is an error that says what to do,
    // and nothing is printed; with --sliding-window it goes on.
    let o = attn(&["generate", "--model", a_s, "--prompt", "Line", "--max-new-tokens", "100"]);
    assert!(!o.status.success() && o.stdout.is_empty() && stderr(&o).contains("--sliding-window"), "{}", stderr(&o));
    let o = attn(&["generate", "--model", a_s, "--prompt", "Line", "--max-new-tokens", "100", "--sliding-window"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8(o.stdout).unwrap().trim_end_matches('\n').chars().count(), 104);

    // Bad sampler values are errors.
    for bad in [["--temperature", "-1"], ["--top-p", "0"], ["--top-p", "1.5"]] {
        let o = attn(&[&["generate", "--model", a_s, "--prompt", "Line", "--max-new-tokens", "5"][..], &bad[..]].concat());
        assert!(!o.status.success(), "{bad:?}");
        assert_eq!(message_flaw(&stderr(&o)), None, "{bad:?}");
    }
    let o = attn(&["generate", "--model", a_s, "--prompt", "", "--max-new-tokens", "5"]);
    assert!(!o.status.success() && stderr(&o).contains("empty"), "{}", stderr(&o));
    let o = attn(&["generate", "--model", dir.path().join("nope").to_str().unwrap(), "--prompt", "x"]);
    assert!(!o.status.success() && stderr(&o).contains("nope"), "{}", stderr(&o));
}

#[test]
fn bad_input_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let data_s = data.to_str().unwrap();
    let out = dir.path().join("run");
    let out_s = out.to_str().unwrap();
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let short = dir.path().join("short.txt");
    std::fs::write(&short, "just a few words").unwrap();

    let none = dir.path().join("none");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (train_args("/nonexistent/file.txt", out_s, "2"), "/nonexistent/file.txt"),
        (train_args(empty.to_str().unwrap(), out_s, "2"), "the file is empty"),
        (train_args(short.to_str().unwrap(), out_s, "2"), "shorter than one batch"),
        (train_args_t(data_s, out_s, "2", "65"), "exceeds the model's context of 64"),
        (train_args(data_s, out_s, "2").into_iter().map(|a| if a == "baby" { "gpt5" } else { a }).collect(), "unknown preset 'gpt5'"),
        ([train_args(data_s, none.to_str().unwrap(), "2"), vec!["--resume"]].concat(), "start the run without --resume"),
    ];
    for (args, want) in cases {
        let o = attn(&args);
        let err = stderr(&o);
        assert!(!o.status.success(), "should fail: {args:?}");
        assert!(err.contains(want), "{args:?}: expected {want:?} in {err:?}");
        assert_eq!(message_flaw(&err), None);
    }

    // A corrupted checkpoint on --resume names the file.
    let o = attn(&train_args(data_s, out_s, "4"));
    assert!(o.status.success(), "{}", stderr(&o));
    let state = out.join("trainer_state.safetensors");
    let bytes = std::fs::read(&state).unwrap();
    std::fs::write(&state, &bytes[..bytes.len() - 100]).unwrap();
    let o = attn(&[train_args(data_s, out_s, "8"), vec!["--resume"]].concat());
    let err = stderr(&o);
    assert!(!o.status.success() && err.contains("trainer_state.safetensors") && err.contains("corrupted"), "{err}");
}

#[test]
fn bpe_tokenizer_trained_for_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let out = dir.path().join("run");
    let mut args = train_args(data.to_str().unwrap(), out.to_str().unwrap(), "3");
    args.extend(["--tokenizer", "bpe:300"]);
    let o = attn(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let tok: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("tokenizer.json")).unwrap()).unwrap();
    assert_eq!(tok["model"]["type"], "BPE");
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["vocab_size"], 300);
    // The run folder generates with its own tokenizer.
    let o = attn(&["generate", "--model", out.to_str().unwrap(), "--prompt", "Line 7: the", "--max-new-tokens", "5", "--seed", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("Line 7: the"));
    let mut args = train_args(data.to_str().unwrap(), dir.path().join("bad").to_str().unwrap(), "3").into_iter().map(String::from).collect::<Vec<_>>();
    args.extend(["--tokenizer".into(), "bpe:many".into()]);
    let o = Command::new(env!("CARGO_BIN_EXE_attn")).args(&args).output().unwrap();
    assert!(!o.status.success() && stderr(&o).contains("bpe:N"), "{}", stderr(&o));
}

#[test]
fn fine_tuning_starts_from_the_given_weights() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let (base, tuned) = (dir.path().join("base"), dir.path().join("tuned"));
    let o = attn(&train_args(data.to_str().unwrap(), base.to_str().unwrap(), "4"));
    assert!(o.status.success(), "{}", stderr(&o));
    // New data: the same characters in a different order, so the char vocabulary still covers it.
    let other = dir.path().join("other.txt");
    let text: String = std::fs::read_to_string(&data).unwrap().lines().rev().collect::<Vec<_>>().join("\n");
    std::fs::write(&other, text).unwrap();
    let args = [
        "train",
        "--data",
        other.to_str().unwrap(),
        "--out",
        tuned.to_str().unwrap(),
        "--init",
        base.to_str().unwrap(),
        "--steps",
        "1",
        "--batch-size",
        "4",
        "--seq-len",
        "16",
        "--eval-every",
        "1",
        "--eval-batches",
        "1",
        "--warmup",
        "0",
        "--lr",
        "1e-12",
        "--threads",
        "2",
        "--quiet",
    ];
    let o = attn(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    // One step at a negligible learning rate: the weights are the base run's.
    let read = |p: &Path| attn_model::checkpoint::TensorFile::open(&p.join("model.safetensors")).unwrap().read_f32("transformer.wte.weight").unwrap();
    let (a, b) = (read(&base), read(&tuned));
    assert_eq!(a.len(), b.len());
    assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-6), "fine-tuning did not start from the base weights");
    assert_eq!(std::fs::read(base.join("tokenizer.json")).unwrap(), std::fs::read(tuned.join("tokenizer.json")).unwrap());
    // The fine-tuning run resumes from its own folder with only --steps
    // given (its seq-len 16 and batch 4 are read from the run, not the preset).
    let o = attn(&["train", "--data", other.to_str().unwrap(), "--out", tuned.to_str().unwrap(), "--resume", "--steps", "3", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(losses(&tuned).len(), 3);
    // Changing an option that decides the numbers is refused by name.
    let o = attn(&["train", "--data", other.to_str().unwrap(), "--out", tuned.to_str().unwrap(), "--resume", "--steps", "4", "--lr", "0.5", "--quiet"]);
    assert!(!o.status.success() && stderr(&o).contains("differ"), "{}", stderr(&o));
    // --init with a tokenizer or preset is a contradiction, refused up front.
    let mut bad = args.to_vec();
    bad.extend(["--tokenizer", "bpe:300"]);
    let o = attn(&bad);
    assert!(!o.status.success() && stderr(&o).contains("--tokenizer"), "{}", stderr(&o));
}

#[test]
fn llama_trains_resumes_and_generates() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let llama = |out: &Path, steps: &str| {
        let mut v: Vec<String> = train_args(data.to_str().unwrap(), out.to_str().unwrap(), steps).into_iter().map(String::from).collect();
        v.extend(["--preset", "llama-baby", "--tokenizer", "bpe:300"].map(String::from));
        v
    };
    let run = |args: &[String]| Command::new(env!("CARGO_BIN_EXE_attn")).args(args).output().unwrap();
    let o = run(&llama(&a, "6"));
    assert!(o.status.success(), "{}", stderr(&o));
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(a.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["model_type"], "llama");
    assert_eq!(cfg["num_key_value_heads"], 2);
    // Interrupted at step 3 and resumed: the same losses as the straight run.
    let mut halted = llama(&b, "6");
    halted.extend(["--halt-at".into(), "3".into()]);
    assert!(run(&halted).status.success());
    let mut resumed = llama(&b, "6");
    resumed.push("--resume".into());
    let o = run(&resumed);
    assert!(o.status.success(), "{}", stderr(&o));
    // (The halted run also evaluated at step 3, where it stopped.)
    let train_only = |v: Vec<(u64, u32, Option<u32>)>| v.into_iter().map(|(s, l, _)| (s, l)).collect::<Vec<_>>();
    assert_eq!(train_only(losses(&a)), train_only(losses(&b)));
    assert_eq!(losses(&a).last(), losses(&b).last());
    let o = attn(&["generate", "--model", a.to_str().unwrap(), "--prompt", "Line 3:", "--max-new-tokens", "8", "--seed", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("Line 3:"));
    let o = attn(&["inspect", "attention", "--model", a.to_str().unwrap(), "--text", "Line 3: the fox", "--layer", "3", "--head", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Trains `a` for 10 steps and `b` halted at 6 then resumed (with no flags
/// but --resume: the options come from the saved run), both with `flags`,
/// and checks that they agree bit for bit: every train loss, the val losses
/// of the uninterrupted run, the final weights.
fn halt_resume_matches(data: &str, a: &Path, b: &Path, flags: &[&'static str]) {
    let run = |out: &Path, extra: &[&'static str]| {
        let mut v = train_args(data, out.to_str().unwrap(), "10");
        v.extend(flags);
        v.extend(extra);
        let o = attn(&v);
        assert!(o.status.success(), "{}", stderr(&o));
    };
    run(a, &[]);
    run(b, &["--halt-at", "6"]);
    let o = attn(&[train_args(data, b.to_str().unwrap(), "10"), vec!["--resume"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    // The halted run also evaluated at its halt step.
    let (la, lb) = (losses(a), losses(b));
    assert_eq!(la.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(), lb.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>());
    for (ra, rb) in la.iter().zip(&lb).filter(|(ra, _)| ra.2.is_some()) {
        assert_eq!(ra.2, rb.2, "val loss at step {}", ra.0);
    }
    let (ma, _) = attn_model::Transformer::load(a).unwrap();
    let (mb, _) = attn_model::Transformer::load(b).unwrap();
    assert!(ma.params == mb.params, "final weights differ after the resume");
}

/// `--optimizer-dtype bf16`: the trainer state holds the moments as BF16
/// (half the bytes), a halted run resumes to the same losses and weights bit
/// for bit, and the run differs from the f32 one only by the moments'
/// rounding.
#[test]
fn bf16_moments_halve_the_state_and_resume_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let (a, b, f) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("f32"));
    let (data, f_s) = (data.to_str().unwrap(), f.to_str().unwrap());
    halt_resume_matches(data, &a, &b, &["--optimizer-dtype", "bf16"]);

    let o = attn(&train_args(data, f_s, "10"));
    assert!(o.status.success(), "{}", stderr(&o));
    let state = |d: &Path| attn_model::checkpoint::TensorFile::open(&d.join("trainer_state.safetensors")).unwrap();
    let (sa, sf) = (state(&a), state(&f));
    for name in ["m", "v"] {
        assert_eq!(sa.dtype(name).unwrap(), attn_model::checkpoint::Dtype::BF16, "{name}");
        assert_eq!(sf.dtype(name).unwrap(), attn_model::checkpoint::Dtype::F32, "{name}");
    }
    let size = |d: &Path| std::fs::metadata(d.join("trainer_state.safetensors")).unwrap().len();
    assert!(size(&a) * 10 < size(&f) * 6, "bf16 state {} bytes vs f32 {}", size(&a), size(&f));
    // Same data and initialisation: the first step's loss is equal, and the
    // runs part only by rounding after that.
    let (la, lf) = (losses(&a), losses(&f));
    assert_eq!(la[0].1, lf[0].1);
    let (ea, ef) = (f32::from_bits(la[9].1), f32::from_bits(lf[9].1));
    assert!((ea - ef).abs() < 0.02 * ef, "step 10: bf16 moments {ea}, f32 {ef}");
}

/// `--dtype bf16`: the dense layers multiply bf16 operands (AMX where the CPU
/// has it, else rounded f32). The option is saved with the run, a resumed run
/// keeps it and continues bit for bit, and the losses stay close to f32's
/// without being equal to them.
#[test]
fn bf16_products_are_saved_resume_bit_for_bit_and_track_f32() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let (a, b, f) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("f32"));
    let (data, f_s) = (data.to_str().unwrap(), f.to_str().unwrap());
    halt_resume_matches(data, &a, &b, &["--dtype", "bf16"]);
    assert_eq!(attn_train::saved_train_config(&b).unwrap().dtype, attn_train::optim::Dtype::Bf16);
    let la = losses(&a);

    let o = attn(&train_args(data, f_s, "10"));
    assert!(o.status.success(), "{}", stderr(&o));
    // The precision may change on --resume (with a note); the moments' format
    // may not, and the refusal names it though f32 is not written down.
    let o = attn(&[train_args(data, f_s, "12"), vec!["--resume", "--optimizer-dtype", "bf16"]].concat());
    assert!(!o.status.success() && stderr(&o).contains("--optimizer-dtype: saved the default, given \"bf16\""), "{}", stderr(&o));
    let lf = losses(&f);
    let o = attn(&[train_args(data, f_s, "12"), vec!["--resume", "--dtype", "bf16"]].concat());
    assert!(o.status.success() && stderr(&o).contains("--dtype changed from f32 to bf16"), "{}", stderr(&o));
    assert_eq!(attn_train::saved_train_config(&f).unwrap().dtype, attn_train::optim::Dtype::Bf16);
    let (a0, f0) = (f32::from_bits(la[0].1), f32::from_bits(lf[0].1));
    assert!(a0 != f0, "the first bf16 loss equals f32's: were the products rounded?");
    for (ra, rf) in la.iter().zip(&lf) {
        let (ea, ef) = (f32::from_bits(ra.1), f32::from_bits(rf.1));
        assert!((ea - ef).abs() < 0.02 * ef, "step {}: bf16 products {ea}, f32 {ef}", ra.0);
    }
}

/// `--data-shards`: saved with the run, so a run begun on 2 threads (2
/// shards when not told) resumes on 1 thread to the same bits; a resume
/// that asks for another count is refused by name.
#[test]
fn data_shards_are_saved_and_resume_on_another_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let data = data.to_str().unwrap();
    let run = |out: &Path, extra: &[&str]| {
        let mut v = train_args(data, out.to_str().unwrap(), "10");
        v.extend(extra);
        let o = attn(&v);
        assert!(o.status.success(), "{}", stderr(&o));
    };
    run(&a, &["--threads", "2", "--data-shards", "2"]);
    run(&b, &["--threads", "2", "--data-shards", "2", "--halt-at", "6"]);
    let cfg = attn_train::saved_train_config(&b).unwrap();
    assert_eq!(cfg.data_shards, 2);
    let o = attn(&[train_args(data, b.to_str().unwrap(), "10"), vec!["--resume", "--data-shards", "1"]].concat());
    assert!(!o.status.success() && stderr(&o).contains("--data-shards: saved 2"), "{}", stderr(&o));
    run(&b, &["--resume", "--threads", "1"]);
    let (la, lb) = (losses(&a), losses(&b));
    assert_eq!(la.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(), lb.iter().map(|r| (r.0, r.1)).collect::<Vec<_>>());
    let (ma, _) = attn_model::Transformer::load(&a).unwrap();
    let (mb, _) = attn_model::Transformer::load(&b).unwrap();
    assert!(ma.params == mb.params, "final weights differ after resuming on 1 thread");
}
