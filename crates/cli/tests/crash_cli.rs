//! No lost work: `attn train` killed with SIGKILL at random instants (with a
//! checkpoint at every step, so many kills land inside one) always leaves a
//! folder that loads and resumes; SIGTERM and SIGINT checkpoint and exit
//! with 143 and 130; a new run never replaces an existing one unasked.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{attn, corpus, stderr, with_value};

/// A tiny run that checkpoints at every step, on one thread.
fn args<'a>(data: &'a str, out: &'a str, steps: &'a str) -> Vec<&'a str> {
    let a = common::train_args(data, out, steps);
    let a = with_value(a, "--batch-size", "2");
    let a = with_value(a, "--eval-every", "1");
    let a = with_value(a, "--eval-batches", "1");
    let a = with_value(a, "--warmup", "2");
    with_value(a, "--threads", "1")
}

fn steps_logged(run: &Path) -> Vec<u64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_u64().unwrap())
        .collect()
}

/// A splitmix64 stream: reproducible kill instants without a dependency.
fn delays(seed: u64, n: usize, max_ms: u64) -> Vec<u64> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) % max_ms
        })
        .collect()
}

#[test]
fn sigkill_at_60_random_instants_always_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let out = dir.path().join("run");
    let (data_s, out_s) = (data.to_str().unwrap(), out.to_str().unwrap());
    let (mut kills, mut resumes) = (0, 0);
    for delay in delays(7, 60, 600) {
        let resume = out.join("trainer_state.safetensors").exists();
        let mut a = args(data_s, out_s, "100000");
        if resume {
            a.push("--resume");
            resumes += 1;
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_attn")).args(&a).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            panic!("attn train (resume: {resume}) ended by itself with {status} after {delay} ms: {err}");
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        // Whatever the instant, the folder is a loadable model once it exists.
        if out.join("model.safetensors").exists() {
            attn_model::Transformer::load(&out).unwrap_or_else(|e| panic!("after a kill at {delay} ms the run does not load: {e}"));
        }
    }
    // Most kills land on a resumable run; a loaded machine slows the first
    // checkpoint, so the bar leaves room for that.
    assert!(resumes >= 20, "only {resumes} of {kills} kills hit a resumable run; the delays are too short");
    // Finish the run: three more steps after the last committed one.
    let committed: u64 =
        std::fs::read_to_string(out.join("checkpoint.json")).map_or(0, |t| serde_json::from_str::<serde_json::Value>(&t).unwrap()["step"].as_u64().unwrap());
    let target = (committed + 3).to_string();
    let o = attn(&[args(data_s, out_s, &target), vec!["--resume"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let logged = steps_logged(&out);
    assert_eq!(logged, (1..=committed + 3).collect::<Vec<_>>(), "metrics are not one contiguous run");
    eprintln!("{kills} kills, {resumes} resumed starts, final step {}", committed + 3);
    // Nothing temporary is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp") || n.ends_with(".next"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(!dir.path().join(".run.attn-new").exists());
    // The killed runs' lock files were taken over, and the last run released its own.
    assert!(!dir.path().join(".run.attn-lock").exists());
}

/// A second `attn train` into the folder a live run is writing (fresh with
/// --overwrite, or --resume) is refused with the other process named, and
/// the first run goes on to finish whole.
#[test]
fn a_second_run_into_a_live_runs_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let out = dir.path().join("run");
    let (data_s, out_s) = (data.to_str().unwrap(), out.to_str().unwrap());
    let first = Command::new(env!("CARGO_BIN_EXE_attn")).args(args(data_s, out_s, "200")).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    // Live: it has written a checkpoint (so it holds the lock, and there is
    // something to resume), and 200 steps with a checkpoint at each take
    // seconds, not the milliseconds the checks need. (A fixed 300 ms wait
    // could land before a slow machine's run took the lock, or after a fast
    // machine's 60-step run had ended.)
    let t0 = std::time::Instant::now();
    while !out.join("trainer_state.safetensors").exists() {
        assert!(t0.elapsed() < Duration::from_secs(60), "the first run wrote no checkpoint in 60 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    for extra in [vec!["--overwrite"], vec!["--resume"]] {
        let o = attn(&[args(data_s, out_s, "5"), extra.clone()].concat());
        assert_eq!(o.status.code(), Some(1), "{extra:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains("another attn process") && err.contains(&first.id().to_string()) && err.contains(out_s), "{extra:?}: {err}");
    }
    let o = first.wait_with_output().unwrap();
    assert!(o.status.success(), "the first run: {}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(steps_logged(&out), (1..=200).collect::<Vec<_>>(), "the first run is whole");
    assert!(!dir.path().join(".run.attn-lock").exists(), "the lock is released");
}

/// `--resume` into a folder whose lock a live process holds touches nothing:
/// the `.next` file of a checkpoint being committed stays. (Reading the saved
/// options once "recovered" the folder before taking the lock, deleting a
/// live run's checkpoint file mid-commit; the test above caught it by chance.)
#[cfg(unix)]
#[test]
fn a_refused_resume_leaves_a_live_runs_pending_checkpoint_alone() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let out = dir.path().join("run");
    let (data_s, out_s) = (data.to_str().unwrap(), out.to_str().unwrap());
    let o = attn(&args(data_s, out_s, "2"));
    assert!(o.status.success(), "{}", stderr(&o));
    // A live "run" mid-commit: its lock, and its state written as .next.
    let pending = out.join("trainer_state.safetensors.next");
    std::fs::copy(out.join("trainer_state.safetensors"), &pending).unwrap();
    let mut holder = Command::new("sleep").arg("60").spawn().unwrap();
    std::fs::write(dir.path().join(".run.attn-lock"), format!("{}\n", holder.id())).unwrap();
    let o = attn(&[args(data_s, out_s, "4"), vec!["--resume"]].concat());
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("another attn process") && stderr(&o).contains(&holder.id().to_string()), "{}", stderr(&o));
    assert!(pending.exists(), "the live run's pending checkpoint file was deleted");
}

#[cfg(unix)]
#[test]
fn sigterm_and_sigint_checkpoint_and_exit_143_and_130() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    for (signal, sig, code) in [("TERM", libc::SIGTERM, 143), ("INT", libc::SIGINT, 130)] {
        let out = dir.path().join(format!("run-{signal}"));
        // Checkpoint only when asked: eval-every is large, so the stop is what saves.
        let a = with_value(args(data.to_str().unwrap(), out.to_str().unwrap(), "100000"), "--eval-every", "100000");
        let child = Command::new(env!("CARGO_BIN_EXE_attn")).args(&a).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        // SAFETY: kill(2) on the child this test spawned and still owns.
        assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, sig) }, 0);
        let out_status = child.wait_with_output().unwrap().status;
        assert_eq!(out_status.code(), Some(code), "SIG{signal}");
        let step = steps_logged(&out).last().copied().unwrap();
        let o = attn(&[args(data.to_str().unwrap(), out.to_str().unwrap(), &(step + 2).to_string()), vec!["--resume"]].concat());
        assert!(o.status.success(), "SIG{signal}: {}", stderr(&o));
    }
}

#[test]
fn a_new_run_never_replaces_an_existing_one_unasked() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let out = dir.path().join("run");
    let (data_s, out_s) = (data.to_str().unwrap(), out.to_str().unwrap());
    let o = attn(&args(data_s, out_s, "3"));
    assert!(o.status.success(), "{}", stderr(&o));
    let before = std::fs::read(out.join("model.safetensors")).unwrap();
    // Again without --resume or --overwrite: refused, nothing touched.
    let o = attn(&args(data_s, out_s, "3"));
    assert!(!o.status.success() && stderr(&o).contains("--resume") && stderr(&o).contains("--overwrite"), "{}", stderr(&o));
    assert_eq!(std::fs::read(out.join("model.safetensors")).unwrap(), before);
    // A new run that fails (a corpus too short) leaves the old one whole.
    let short = dir.path().join("short.txt");
    std::fs::write(&short, "too short").unwrap();
    let o = attn(&[args(short.to_str().unwrap(), out_s, "3"), vec!["--overwrite"]].concat());
    assert!(!o.status.success());
    assert_eq!(std::fs::read(out.join("model.safetensors")).unwrap(), before);
    assert_eq!(steps_logged(&out), vec![1, 2, 3]);
    // --init X --out X is refused.
    let o = attn(&["train", "--data", data_s, "--out", out_s, "--init", out_s, "--overwrite", "--steps", "1", "--quiet"]);
    assert!(!o.status.success() && stderr(&o).contains("same folder"), "{}", stderr(&o));
    // --overwrite replaces it.
    let o = attn(&[args(data_s, out_s, "2"), vec!["--overwrite"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(steps_logged(&out), vec![1, 2]);
    // A folder with other files in it is never taken.
    let other = dir.path().join("notes");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("todo.txt"), "mine").unwrap();
    let o = attn(&[args(data_s, other.to_str().unwrap(), "2"), vec!["--overwrite"]].concat());
    assert!(!o.status.success() && stderr(&o).contains("other files"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(other.join("todo.txt")).unwrap(), "mine");
}

#[test]
fn another_runs_shard_and_other_data_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let o = attn(&args(data.to_str().unwrap(), a.to_str().unwrap(), "2"));
    assert!(o.status.success(), "{}", stderr(&o));
    // Run b has another vocabulary: the same text with extra characters.
    let other = dir.path().join("other.txt");
    std::fs::write(&other, std::fs::read_to_string(&data).unwrap() + "\nZebra quartz {~}\n").unwrap();
    let o = attn(&args(other.to_str().unwrap(), b.to_str().unwrap(), "2"));
    assert!(o.status.success(), "{}", stderr(&o));
    let val_b = b.join("data/val.bin");
    let o = attn(&["eval", "--model", a.to_str().unwrap(), "--data", val_b.to_str().unwrap()]);
    assert!(!o.status.success() && stderr(&o).contains("another tokenizer"), "{}", stderr(&o));
    // Its own shard scores.
    let o = attn(&["eval", "--model", a.to_str().unwrap(), "--data", a.join("data/val.bin").to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    // --resume with other --data is refused instead of training on the old shards.
    let o = attn(&[args(other.to_str().unwrap(), a.to_str().unwrap(), "4"), vec!["--resume"]].concat());
    assert!(!o.status.success() && stderr(&o).contains("--data differs"), "{}", stderr(&o));
}
