//! Supervised fine-tuning end to end: `attn train --task sft` on a synthetic
//! chat task (one- and two-turn arithmetic questions answered as
//! "a + b = c"), then `attn chat` answering in that format and stopping at
//! the end-of-turn token; `--render`; resuming bit for bit; prompt/completion
//! records; bad records refused with the file, line and field named.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{attn, message_flaw, stderr};

fn question(a: usize, b: usize) -> (String, String) {
    (format!("What is {a} plus {b}?"), format!("{a} + {b} = {}", a + b))
}

/// 600 conversations of one or two turns, in a fixed pseudo-random order.
fn arithmetic(dir: &Path) -> String {
    let mut lines = String::new();
    let mut x = 12345u64;
    let mut next = || {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (x >> 33) as usize % 10
    };
    for i in 0..600 {
        let mut messages = Vec::new();
        for _ in 0..1 + i % 2 {
            let (q, a) = question(next(), next());
            messages.push(serde_json::json!({"role": "user", "content": q}));
            messages.push(serde_json::json!({"role": "assistant", "content": a}));
        }
        lines.push_str(&serde_json::json!({ "messages": messages }).to_string());
        lines.push('\n');
    }
    let p = dir.join("arith.jsonl");
    std::fs::write(&p, lines).unwrap();
    p.to_string_lossy().into_owned()
}

fn train(data: &str, out: &str, steps: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "train",
        "--task",
        "sft",
        "--data",
        data,
        "--out",
        out,
        "--preset",
        "baby",
        "--tokenizer",
        "bpe:300",
        "--steps",
        steps,
        "--batch-size",
        "16",
        "--eval-every",
        "100",
        "--eval-batches",
        "2",
        "--lr",
        "3e-3",
        "--warmup",
        "30",
        "--threads",
        "2",
        "--quiet",
    ];
    args.extend_from_slice(extra);
    attn(&args)
}

fn with_stdin(args: &[&str], input: &str) -> std::process::Output {
    let mut child =
        Command::new(env!("CARGO_BIN_EXE_attn")).args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("attn runs");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn sft_learns_the_format_and_stops_at_end_of_turn() {
    let tmp = tempfile::tempdir().unwrap();
    let data = arithmetic(tmp.path());
    let out = tmp.path().join("run");
    let o = train(&data, out.to_str().unwrap(), "300", &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // Only the answers are scored: after 300 steps they are nearly certain.
    assert!(summary["val_loss_full"].as_f64().unwrap() < 0.2, "{summary}");
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!(cfg["chat_template"].as_str(), Some(attn_tokenizer::chat::CHATML), "the run saves its ChatML template");

    // Two turns, a reset, and a third: every reply is "a + b = c" and nothing after it.
    let asks = [(2, 5), (9, 8), (0, 0)];
    let input = format!("{}\n{}\n/reset\n{}\n", question(2, 5).0, question(9, 8).0, question(0, 0).0);
    let o = with_stdin(&["chat", "--model", out.to_str().unwrap(), "--temperature", "0", "--max-new-tokens", "12"], &input);
    assert!(o.status.success(), "{}", stderr(&o));
    let replies: Vec<String> = String::from_utf8(o.stdout).unwrap().lines().map(str::to_string).collect();
    assert_eq!(replies.len(), 3, "{replies:?}");
    let mut correct = 0;
    for (reply, (a, b)) in replies.iter().zip(asks) {
        let prefix = format!("{a} + {b} = ");
        let rest = reply.strip_prefix(&prefix).unwrap_or_else(|| panic!("reply {reply:?} is not in the trained format"));
        assert!(!rest.is_empty() && rest.chars().all(|c| c.is_ascii_digit()), "reply {reply:?} did not stop at the end of its turn");
        correct += (rest == (a + b).to_string()) as usize;
    }
    eprintln!("replies {replies:?}: {correct} of 3 sums right");

    // --render prints exactly the ChatML prompt.
    let o = with_stdin(
        &["chat", "--model", out.to_str().unwrap(), "--render"],
        r#"[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]"#,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8(o.stdout).unwrap(), "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

#[test]
fn sft_resumes_bit_for_bit_and_trains_on_completions() {
    let tmp = tempfile::tempdir().unwrap();
    let data = arithmetic(tmp.path());
    let (full, part) = (tmp.path().join("full"), tmp.path().join("part"));
    let o = train(&data, full.to_str().unwrap(), "10", &["--eval-every", "5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = train(&data, part.to_str().unwrap(), "10", &["--eval-every", "5", "--halt-at", "5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = train(&data, part.to_str().unwrap(), "10", &["--eval-every", "5", "--resume"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let tensors = |dir: &Path| {
        let f = attn_model::checkpoint::TensorFile::open(&dir.join("model.safetensors")).unwrap();
        let mut names: Vec<String> = f.names().map(str::to_string).collect();
        names.sort();
        names.into_iter().map(|n| f.read_f32(&n).unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>()).collect::<Vec<_>>()
    };
    assert!(tensors(&part) == tensors(&full), "resume is not bit for bit");

    // Prompt/completion records, fine-tuning the model just trained (--init).
    let pc = tmp.path().join("pc.jsonl");
    let lines: String =
        (0..40).map(|i| serde_json::json!({"prompt": format!("{i} plus 1 is"), "completion": format!(" {}", i + 1)}).to_string() + "\n").collect();
    std::fs::write(&pc, lines).unwrap();
    let ft = tmp.path().join("ft");
    let o = attn(&[
        "train",
        "--task",
        "sft",
        "--data",
        pc.to_str().unwrap(),
        "--init",
        full.to_str().unwrap(),
        "--out",
        ft.to_str().unwrap(),
        "--steps",
        "3",
        "--batch-size",
        "4",
        "--eval-every",
        "3",
        "--threads",
        "2",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = with_stdin(&["chat", "--model", ft.to_str().unwrap(), "--max-new-tokens", "3", "--temperature", "0"], "hello\n");
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn bad_sft_records_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let cases: [(&str, &[&str], &[&str]); 5] = [
        ("{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": 3, \"completion\": \"b\"}\n", &[], &["bad.jsonl:2", "\"prompt\""]),
        ("{\"messages\": [{\"role\": \"user\"}]}\n", &[], &["bad.jsonl:1", "messages[0]", "content"]),
        ("{\"text\": \"hello\"}\n", &[], &["bad.jsonl:1", "prompt", "messages"]),
        ("not json\n", &[], &["bad.jsonl:1", "invalid JSON"]),
        (
            "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"c\", \"completion\": \"d\"}\n",
            &["--loss-on", "assistant"],
            &["--loss-on assistant", "prompt/completion"],
        ),
    ];
    for (text, extra, want) in cases {
        let p = tmp.path().join("bad.jsonl");
        std::fs::write(&p, text).unwrap();
        let mut args = vec!["train", "--task", "sft", "--data", p.to_str().unwrap(), "--out", out.to_str().unwrap(), "--steps", "1", "--quiet"];
        args.extend_from_slice(extra);
        let o = attn(&args);
        let e = stderr(&o);
        assert!(!o.status.success(), "{text:?} was accepted");
        for w in want {
            assert!(e.contains(w), "{text:?}: the error should name {w:?}: {e}");
        }
        assert_eq!(message_flaw(&e), None);
    }
    // --loss-on belongs to --task sft.
    let corpus = common::corpus(tmp.path());
    let o = attn(&["train", "--data", corpus.to_str().unwrap(), "--out", out.to_str().unwrap(), "--loss-on", "all", "--steps", "1"]);
    assert!(!o.status.success() && stderr(&o).contains("--loss-on is for --task sft"), "{}", stderr(&o));
}
