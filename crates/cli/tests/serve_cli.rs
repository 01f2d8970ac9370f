//! `attn serve` as a process: it answers while loading, serves a trained
//! run folder, drains and exits 0 on Ctrl-C (SIGINT; SIGTERM takes the same
//! path and tools/serve/openai_client.sh sends it), and exits non-zero with the
//! file named when the model can't be loaded.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One HTTP/1.1 request on a fresh connection: (status, body).
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

#[cfg(unix)]
#[test]
fn serves_a_run_folder_and_drains_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::corpus(dir.path());
    let out = dir.path().join("run");
    let o = common::tiny_run(data.to_str().unwrap(), out.to_str().unwrap(), "baby");
    assert!(o.status.success(), "{}", common::stderr(&o));
    // f32, and int8 weights converted while loading.
    for dtype in ["f32", "int8"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_attn"))
            .args(["serve", "--model", out.to_str().unwrap(), "--port", "0", "--threads", "2", "--dtype", dtype])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        let addr = first.split("http://").nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or_else(|| panic!("{first}")).to_string();
        let t0 = Instant::now();
        while http(&addr, "GET", "/health", "").0 != 200 {
            assert!(t0.elapsed() < Duration::from_secs(30), "never healthy");
            std::thread::sleep(Duration::from_millis(20));
        }
        let (st, body) = http(&addr, "POST", "/v1/completions", r#"{"prompt": "Line 1: the", "max_tokens": 5, "temperature": 0, "ignore_eos": true}"#);
        assert_eq!(st, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["usage"]["completion_tokens"], 5);
        // Attention maps need the f32 weights, and the error says so.
        let (st, body) = http(&addr, "POST", "/v1/attention", r#"{"text": "Line 1: the"}"#);
        if dtype == "int8" {
            assert!(st == 400 && body.contains("--dtype f32"), "{st} {body}");
        } else {
            assert_eq!(st, 200, "{body}");
        }
        // The run folder's name is the model id.
        let (_, models) = http(&addr, "GET", "/v1/models", "");
        assert!(models.contains("\"run\""), "{models}");
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let status = child.wait().unwrap();
        assert!(status.success(), "{status:?}");
        let rest: Vec<String> = lines.map_while(Result::ok).collect();
        assert!(rest.iter().any(|l| l.contains("shutting down")), "{rest:?}");
    }
}

#[test]
fn a_model_that_fails_to_load_ends_the_server_with_the_file_named() {
    let o = common::attn(&["serve", "--model", "/nonexistent/model", "--port", "0"]);
    assert!(!o.status.success());
    let e = common::stderr(&o);
    assert!(e.contains("/nonexistent/model/config.json"), "{e}");
    let o = common::attn(&["serve", "--model", "x", "--parallel", "0"]);
    let e = common::stderr(&o);
    assert!(e.contains("--parallel") && e.contains("must be at least 1"), "{e}");
}
