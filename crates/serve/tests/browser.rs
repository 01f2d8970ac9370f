//! The web page in a real browser: Debian's chromium driven through
//! chromium-driver by fantoccini. The test opens the page, sends a chat
//! message, waits for the streamed answer, switches to the inspector, checks
//! that the heatmap has one row per token, and takes screenshots: into
//! docs/ with ATTN_UPDATE_SCREENSHOTS=1 (the pictures the README shows),
//! else into the build's temporary folder, so that a test run leaves the
//! checkout as it was.
//!
//! Needs /usr/bin/chromium and /usr/bin/chromedriver (`apt-get install
//! chromium chromium-driver`; .ci/run installs them). Without them the test
//! says SKIPPED, except under CI, where it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use attn_serve::ServeOptions;
use common::Server;
use fantoccini::{ClientBuilder, Locator};
use serde_json::json;

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tools() -> Option<(PathBuf, PathBuf)> {
    let (browser, driver) = (PathBuf::from("/usr/bin/chromium"), PathBuf::from("/usr/bin/chromedriver"));
    if browser.exists() && driver.exists() {
        return Some((browser, driver));
    }
    assert!(std::env::var("CI").is_err(), "CI must install chromium and chromium-driver (apt-get install chromium chromium-driver)");
    eprintln!("SKIPPED: the browser test needs /usr/bin/chromium and /usr/bin/chromedriver (apt-get install chromium chromium-driver)");
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs `script` (which returns a value) until it returns true.
async fn wait_js(c: &fantoccini::Client, what: &str, script: &str) {
    let t0 = Instant::now();
    loop {
        if c.execute(script, vec![]).await.unwrap() == json!(true) {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_and_inspector_in_chromium() {
    let Some((browser, driver)) = tools() else { return };
    let s = Server::start(ServeOptions::default()).await;
    let port = free_port();
    let _driver =
        Driver(Command::new(&driver).arg(format!("--port={port}")).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("starting chromedriver"));
    let caps = json!({"goog:chromeOptions": {
        "binary": browser,
        // No sandbox as root in a container; no background network, which
        // this machine's closed network refuses.
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,860"],
    }});
    let mut builder = ClientBuilder::rustls().expect("TLS roots");
    builder.capabilities(caps.as_object().unwrap().clone());
    let t0 = Instant::now();
    let c = loop {
        match builder.connect(&format!("http://127.0.0.1:{port}")).await {
            Ok(c) => break c,
            Err(e) if t0.elapsed() < Duration::from_secs(20) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("connecting to chromedriver: {e}"),
        }
    };
    let result = drive(&c, &s).await;
    let _ = c.close().await;
    result.unwrap();
}

async fn drive(c: &fantoccini::Client, s: &Server) -> Result<(), fantoccini::error::CmdError> {
    let docs = match std::env::var_os("ATTN_UPDATE_SCREENSHOTS") {
        Some(_) => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs"),
        None => PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
    };
    c.goto(&s.url).await?;
    wait_js(c, "the model's name", "return document.getElementById('model-name').textContent.startsWith('tiny');").await;

    // Chat: a message, then the streamed answer with its token counts.
    c.find(Locator::Id("chat-input")).await?.send_keys("Hello there, who are you?").await?;
    c.find(Locator::Id("send")).await?.click().await?;
    wait_js(c, "the streamed answer", "return document.querySelector('.msg.assistant .meta') !== null;").await;
    let answer = c.find(Locator::Css(".msg.assistant .content")).await?.text().await?;
    let meta = c.find(Locator::Css(".msg.assistant .meta")).await?.text().await?;
    assert!(!answer.is_empty(), "empty answer");
    assert!(meta.contains("completion tokens"), "{meta}");
    // The page shows what the API gives for the same greedy request.
    let body = json!({"messages": [{"role": "user", "content": "Hello there, who are you?"}], "max_tokens": 128, "temperature": 0.7, "top_p": 1, "top_k": 0});
    let (_, whole) = s.post("/v1/chat/completions", body).await;
    let prompt_tokens = whole["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(meta.starts_with(&format!("{prompt_tokens} prompt + ")), "{meta}");
    std::fs::write(docs.join("serve-chat.png"), c.screenshot().await?).expect("writing serve-chat.png");

    // Inspector: one heatmap row per token of the text.
    c.find(Locator::Id("tab-inspect")).await?.click().await?;
    let text = "The quick brown fox jumps";
    let input = c.find(Locator::Id("inspect-text")).await?;
    input.clear().await?;
    input.send_keys(text).await?;
    c.find(Locator::Id("inspect-run")).await?.click().await?;
    wait_js(c, "the heatmap", "return document.body.dataset.inspected !== undefined;").await;
    let (_, t) = s.post("/tokenize", json!({"content": text, "add_special": true})).await;
    let n = t["count"].as_u64().unwrap() as usize;
    let rows = c.find_all(Locator::Css("#heatmap tbody tr.hm-row")).await?;
    assert_eq!(rows.len(), n, "heatmap rows vs tokens");
    let cells = c.find_all(Locator::Css("#heatmap tbody tr.hm-row:last-child td")).await?;
    assert_eq!(cells.len(), n, "heatmap columns vs tokens");
    let bars = c.find_all(Locator::Css("#next-token .bar-row")).await?;
    assert_eq!(bars.len(), 12, "next-token bars");
    // Another layer and head redraw the map.
    c.execute("const l = document.getElementById('layer'); l.value = '1'; l.dispatchEvent(new Event('change'));", vec![]).await?;
    let title = c.find(Locator::Id("heatmap-title")).await?.text().await?;
    assert!(title.contains("layer 1"), "{title}");
    std::fs::write(docs.join("serve-inspect.png"), c.screenshot().await?).expect("writing serve-inspect.png");
    Ok(())
}
