//! Helpers shared by the CLI tests: run the built binary, write a small corpus.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn attn(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_attn")).args(args).output().expect("attn runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A few KB of varied text: enough for train and val windows at T = 16.
pub fn corpus(dir: &Path) -> PathBuf {
    let mut text = String::new();
    for i in 0..300 {
        text.push_str(&format!("Line {i}: the quick brown fox {} over the lazy dog.\n", ["jumps", "leaps", "hops"][i % 3]));
    }
    let p = dir.join("corpus.txt");
    std::fs::write(&p, text).unwrap();
    p
}

pub fn train_args<'a>(data: &'a str, out: &'a str, steps: &'a str) -> Vec<&'a str> {
    train_args_t(data, out, steps, "16")
}

pub fn train_args_t<'a>(data: &'a str, out: &'a str, steps: &'a str, seq_len: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--data",
        data,
        "--out",
        out,
        "--preset",
        "baby",
        "--steps",
        steps,
        "--batch-size",
        "4",
        "--seq-len",
        seq_len,
        "--eval-every",
        "4",
        "--eval-batches",
        "2",
        "--warmup",
        "3",
        "--threads",
        "2",
        "--quiet",
    ]
}

/// Copies the files (not subfolders) of `from` into a fresh folder `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A two-step run of `preset` in `out`, for tests that need a run folder.
pub fn tiny_run(data: &str, out: &str, preset: &str) -> Output {
    attn(&[
        "train",
        "--data",
        data,
        "--out",
        out,
        "--preset",
        preset,
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--seq-len",
        "16",
        "--eval-every",
        "2",
        "--eval-batches",
        "1",
        "--quiet",
    ])
}

/// `args` with the value after `flag` replaced.
pub fn with_value<'a>(mut args: Vec<&'a str>, flag: &str, value: &'a str) -> Vec<&'a str> {
    let i = args.iter().position(|a| *a == flag).unwrap_or_else(|| panic!("{flag} is not in {args:?}"));
    args[i + 1] = value;
    args
}

/// What is wrong with an error message as a user reads it, if anything: a
/// panic, Debug formatting (`Some(`, `Os {`), or a clause printed twice (an
/// error both a wrapper's source and in its message: "config.json: invalid
/// JSON: EOF ...: EOF ...", as a bad config.json once read).
pub fn message_flaw(err: &str) -> Option<String> {
    if err.contains("panicked") || err.contains("stack backtrace") {
        return Some(format!("panicked: {err}"));
    }
    for debug in ["Some(", "Os {", "IoError(", "TrainConfig {"] {
        if err.contains(debug) {
            return Some(format!("Debug output {debug:?} in: {err}"));
        }
    }
    for line in err.lines() {
        let parts: Vec<&str> = line.split(": ").collect();
        if parts.windows(2).any(|w| w[0] == w[1]) {
            return Some(format!("a clause repeated in: {line}"));
        }
    }
    None
}
