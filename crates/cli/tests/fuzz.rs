//! A fuzzing harness for every loader, on stable Rust: valid seed files are
//! mutated (bit flips, truncation, insertions, splices, huge and odd numbers,
//! deep nesting) and handed to the loaders in a child process whose address
//! space is limited. A panic is caught and reported with its input; an abort
//! or a kill ends the child, and the parent reports the input it was on.
//!
//! The short run (a few thousand executions) is part of the tests. A long run:
//!   ATTN_FUZZ_SECONDS=600 cargo test --release -p attn-cli --test fuzz -- --nocapture
//! prints executions per loader and writes any failing input under
//! target/fuzz-findings/.

use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use attn_model::{Transformer, TransformerConfig};
use common::copy_dir;

mod common;

/// splitmix64: small, fast, reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const NUMBERS: &[&str] =
    &["0", "-1", "1e308", "-1e308", "18446744073709551615", "4294967296", "1000000000000", "0.0", "1e-45", "3", "65536", "null", "true", "\"x\""];

/// Every number in a JSON value, as JSON pointers.
fn number_paths(v: &serde_json::Value, at: String, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Number(_) => out.push(at),
        serde_json::Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| number_paths(x, format!("{at}/{i}"), out)),
        serde_json::Value::Object(o) => o.iter().for_each(|(k, x)| number_paths(x, format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out)),
        _ => {}
    }
}

/// A structure-aware mutation of JSON text: one number becomes an odd one.
fn mutate_json_number(data: &[u8], rng: &mut Rng) -> Option<Vec<u8>> {
    let mut v: serde_json::Value = serde_json::from_slice(data).ok()?;
    let mut paths = Vec::new();
    number_paths(&v, String::new(), &mut paths);
    let p = paths.get(rng.below(paths.len().max(1)))?.clone();
    let odd = [
        serde_json::json!(0),
        serde_json::json!(-1),
        serde_json::json!(u32::MAX),
        serde_json::json!(u64::MAX),
        serde_json::json!(1u64 << 40),
        serde_json::json!(1e308),
        serde_json::json!(1.5),
        serde_json::json!(-1e-9),
        serde_json::Value::Null,
        serde_json::json!("x"),
    ];
    *v.pointer_mut(&p)? = odd[rng.below(odd.len())].clone();
    serde_json::to_vec(&v).ok()
}

/// One mutation of `data`; `other` is a second seed for splices.
fn mutate(data: &[u8], other: &[u8], rng: &mut Rng) -> Vec<u8> {
    if rng.below(3) == 0 {
        if let Some(m) = mutate_json_number(data, rng) {
            return m;
        }
    }
    let mut d = data.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        match rng.below(9) {
            0 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] ^= 1 << rng.below(8);
            }
            1 => {
                let keep = rng.below(d.len() + 1);
                d.truncate(keep);
            }
            2 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] = [0, 0xFF, b'9', b'"', b'{', b'[', b'-', b'\n'][rng.below(8)];
            }
            3 => {
                let i = rng.below(d.len() + 1);
                let n = rng.below(64);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                d.splice(i..i, bytes);
            }
            4 if !other.is_empty() => {
                let (i, j) = (rng.below(d.len() + 1), rng.below(other.len()));
                d.truncate(i);
                d.extend_from_slice(&other[j..]);
            }
            5 => {
                // Replace a number in JSON text with an odd one.
                let digits: Vec<usize> = d.iter().enumerate().filter(|(_, b)| b.is_ascii_digit()).map(|(i, _)| i).collect();
                if let Some(&i) = digits.get(rng.below(digits.len().max(1))) {
                    let mut end = i;
                    while end < d.len() && (d[end].is_ascii_digit() || d[end] == b'.' || d[end] == b'e' || d[end] == b'-') {
                        end += 1;
                    }
                    d.splice(i..end, NUMBERS[rng.below(NUMBERS.len())].bytes());
                }
            }
            6 => {
                let depth = 1 + rng.below(100_000);
                let mut n = vec![b'['; depth];
                n.extend(std::iter::repeat_n(b']', depth));
                let i = rng.below(d.len() + 1);
                d.splice(i..i, n);
            }
            7 if d.len() >= 8 => {
                // Little-endian integers (safetensors and shard headers).
                let i = rng.below(d.len() - 7);
                let v: u64 = [0, 1, u64::MAX, u32::MAX as u64, 1 << 40, rng.next()][rng.below(6)];
                d[i..i + 8].copy_from_slice(&v.to_le_bytes());
            }
            _ => {
                let i = rng.below(d.len() + 1);
                let j = (i + rng.below(64)).min(d.len());
                d.drain(i..j);
            }
        }
    }
    d
}

/// A loader under test: which files of the seed folder it mutates, and how it reads it.
struct Target {
    name: &'static str,
    seed_dir: PathBuf,
    /// Files in the seed folder that get mutated.
    files: Vec<&'static str>,
    run: fn(&Path),
}

fn load_model(dir: &Path) {
    if let Ok((m, _)) = Transformer::load(dir) {
        if m.config.has_head() {
            let mut cache = m.new_cache(4).expect("a loaded model makes a cache");
            let _ = m.prefill(&mut cache, &[0, 1]);
        }
    }
}

/// An encoder-decoder folder: load, encode a source, take a decoder step.
fn load_seq2seq(dir: &Path) {
    if let Ok((m, _)) = attn_model::Seq2Seq::load(dir) {
        // Two positions, or one where the config allows only one (longer
        // sources and caches are refused with an error, as they should be).
        let n = m.config.n_ctx.min(2);
        let mem = m.encode_sources(&[0, 1][..n], &[n], n).expect("a loaded model encodes");
        let mut cache = m.new_decoder_cache(&mem, 2, n).expect("a loaded model makes a cache");
        let start = m.config.decoder_start_token_id;
        let _ = m.decode_step(&[start, start], &mut cache, &mem);
    }
}

fn load_tokenizer(dir: &Path) {
    let path = if dir.join("tokenizer.json").exists() {
        dir.join("tokenizer.json")
    } else if dir.join("tok.tiktoken").exists() {
        dir.join("tok.tiktoken")
    } else {
        dir.to_path_buf()
    };
    if let Ok(t) = attn_tokenizer::load_tokenizer(&path, None) {
        if let Ok(ids) = t.encode("Hello, wörld! 1234 <|endoftext|>") {
            let _ = t.decode(&ids);
        }
        if let Ok(ids) = t.encode_target(">>es<< ¿Qué? ＡＢＣ ﬁn </s>  ") {
            let _ = t.decode(&ids);
        }
    }
}

fn load_shard(dir: &Path) {
    if let Ok(s) = attn_train::data::TokenShard::open(&dir.join("val.bin")) {
        let _ = s.to_vec();
        if let Ok(t) = attn_tokenizer::load_tokenizer(&dir.join("tokenizer.json"), None) {
            let _ = s.check_tokenizer(t.as_ref(), "the seed");
        }
    }
}

fn load_run(dir: &Path) {
    let _ = attn_train::saved_train_config(dir);
    load_model(dir);
}

fn load_safetensors(dir: &Path) {
    if let Ok(f) = attn_model::checkpoint::TensorFile::open(&dir.join("model.safetensors")) {
        let names: Vec<String> = f.names().map(str::to_string).collect();
        for n in names {
            let _ = f.read_f32(&n);
        }
    }
}

fn corpus() -> String {
    (0..400).map(|i| format!("Line {i}: the quick brown fox {} over the lazy dog, wörld.\n", ["jumps", "leaps", "hops"][i % 3])).collect()
}

/// Seed folders, made fresh: small models of each family, each tokenizer format, a shard, a run.
fn seeds(root: &Path) -> Vec<Target> {
    let text = corpus();
    let mk = |name: &str| {
        let d = root.join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let gpt = mk("gpt2");
    Transformer::new(TransformerConfig::gpt2(70, 16, 2, 2, 8), 1).unwrap().save(&gpt, None).unwrap();
    let llama = mk("llama");
    let lc = TransformerConfig { vocab_size: 70, n_ctx: 16, n_embd: 16, head_dim: 4, d_ff: 24, ..TransformerConfig::llama_baby() };
    Transformer::new(lc, 2).unwrap().save(&llama, None).unwrap();
    let bert = mk("bert");
    Transformer::new(TransformerConfig::bert(70, 16, 2, 2, 8, 16), 3).unwrap().save(&bert, None).unwrap();
    let marian = mk("marian");
    let mc = attn_model::Seq2SeqConfig {
        vocab_size: 70,
        d_model: 8,
        n_ctx: 16,
        encoder_heads: 2,
        decoder_heads: 2,
        encoder_ffn: 12,
        decoder_ffn: 12,
        ..attn_model::Seq2SeqConfig::paper(70, 1, 8, 2, 12, 16)
    };
    attn_model::Seq2Seq::new(mc, 4).unwrap().save(&marian, None).unwrap();
    let char_tok = mk("char");
    let ct = attn_tokenizer::CharTokenizer::train(&text);
    attn_tokenizer::Tokenizer::save(&ct, &char_tok.join("tokenizer.json")).unwrap();
    let bpe = mk("bpe");
    let trainer =
        attn_tokenizer::train::BpeTrainer { vocab_size: 300, pattern: attn_tokenizer::bpe::GPT2_PATTERN.into(), specials: vec!["<|endoftext|>".into()] };
    let (bt, _) = trainer.train(&text).unwrap();
    attn_tokenizer::Tokenizer::save(&bt, &bpe.join("tokenizer.json")).unwrap();
    // GPT-2's two-file layout and a .tiktoken rank file, from the same BPE.
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(bpe.join("tokenizer.json")).unwrap()).unwrap();
    let vm = mk("vocab-merges");
    std::fs::write(vm.join("vocab.json"), json["model"]["vocab"].to_string()).unwrap();
    let merges: Vec<String> = json["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m {
            serde_json::Value::String(s) => s.clone(),
            other => format!("{} {}", other[0].as_str().unwrap(), other[1].as_str().unwrap()),
        })
        .collect();
    std::fs::write(vm.join("merges.txt"), format!("#version: 0.2\n{}\n", merges.join("\n"))).unwrap();
    let tk = mk("tiktoken");
    let mut lines = String::new();
    for id in 0..attn_tokenizer::Tokenizer::vocab_size(&bt) as u32 {
        let b = attn_tokenizer::Tokenizer::decode_bytes(&bt, &[id]).unwrap();
        if b != b"<|endoftext|>" {
            use base64::Engine;
            lines.push_str(&format!("{} {id}\n", base64::engine::general_purpose::STANDARD.encode(&b)));
        }
    }
    std::fs::write(tk.join("tok.tiktoken"), lines).unwrap();
    // A Hub-style Marian tokenizer folder (SentencePiece models + vocab.json).
    let spm = mk("marian-spm");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/marian_spm");
    for f in ["source.spm", "target.spm", "vocab.json", "tokenizer_config.json"] {
        std::fs::copy(fixture.join(f), spm.join(f)).unwrap();
    }
    let shard = mk("shard");
    let ids = attn_tokenizer::Tokenizer::encode(&ct, &text).unwrap();
    let fp = attn_train::data::tokenizer_fingerprint(&ct);
    attn_train::data::write_shard(&shard.join("val.bin"), &ids[..500], attn_tokenizer::Tokenizer::vocab_size(&ct), fp).unwrap();
    std::fs::copy(char_tok.join("tokenizer.json"), shard.join("tokenizer.json")).unwrap();
    // A real run folder, written by attn train.
    let data = root.join("corpus.txt");
    std::fs::write(&data, &text).unwrap();
    let run = root.join("run");
    let o = common::tiny_run(data.to_str().unwrap(), run.to_str().unwrap(), "baby");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = |name, seed_dir: &PathBuf, files: &[&'static str], run: fn(&Path)| Target { name, seed_dir: seed_dir.clone(), files: files.to_vec(), run };
    vec![
        t("gpt2 config.json", &gpt, &["config.json"], load_model),
        t("llama config.json", &llama, &["config.json"], load_model),
        t("bert config.json", &bert, &["config.json"], load_model),
        t("marian config.json", &marian, &["config.json"], load_seq2seq),
        t("marian weights", &marian, &["model.safetensors"], load_seq2seq),
        t("safetensors", &gpt, &["model.safetensors"], load_safetensors),
        t("model folder weights", &llama, &["model.safetensors"], load_model),
        t("char tokenizer.json", &char_tok, &["tokenizer.json"], load_tokenizer),
        t("bpe tokenizer.json", &bpe, &["tokenizer.json"], load_tokenizer),
        t("vocab.json + merges.txt", &vm, &["vocab.json", "merges.txt"], load_tokenizer),
        t(".tiktoken", &tk, &["tok.tiktoken"], load_tokenizer),
        t("marian .spm + vocab.json", &spm, &["target.spm", "source.spm", "vocab.json"], load_tokenizer),
        t("token shard", &shard, &["val.bin"], load_shard),
        t("run folder", &run, &["config.json", "model.safetensors", "trainer_state.safetensors", "checkpoint.json", "tokenizer.json"], load_run),
    ]
}

/// The child: runs every target for its share of the budget, reporting each
/// input's identity on stderr before trying it.
#[test]
fn fuzz_child() {
    let Ok(work) = std::env::var("ATTN_FUZZ_CHILD") else { return };
    let secs: f64 = std::env::var("ATTN_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20.0);
    // 4 GB of address space: a loader that allocated what a damaged file
    // claims would fail here, and the parent would see the abort.
    #[cfg(unix)]
    unsafe {
        let lim = libc::rlimit { rlim_cur: 4 << 30, rlim_max: 4 << 30 };
        libc::setrlimit(libc::RLIMIT_AS, &lim);
    }
    rayon::ThreadPoolBuilder::new().num_threads(1).build_global().ok();
    std::panic::set_hook(Box::new(|info| eprintln!("PANICMSG {}", info.to_string().replace('\n', " "))));
    let root = PathBuf::from(work);
    let seed_dir = root.join("seeds");
    let _ = std::fs::remove_dir_all(&seed_dir);
    let targets = seeds(&seed_dir);
    let per = secs / targets.len() as f64;
    let mut rng = Rng(std::env::var("ATTN_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(2026));
    let mut err = std::io::stderr();
    for t in &targets {
        let case = root.join("case");
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed().as_secs_f64() < per {
            copy_dir(&t.seed_dir, &case);
            let file = t.files[rng.below(t.files.len())];
            let original = std::fs::read(t.seed_dir.join(file)).unwrap_or_default();
            let other = std::fs::read(t.seed_dir.join(t.files[rng.below(t.files.len())])).unwrap_or_default();
            let mutated = mutate(&original, &other, &mut rng);
            std::fs::write(case.join(file), &mutated).unwrap();
            // The parent keeps the last of these lines if this process dies.
            writeln!(err, "TRY {} {} {}", t.name, file, case.display()).unwrap();
            let r = std::panic::catch_unwind(AssertUnwindSafe(|| (t.run)(&case)));
            if r.is_err() {
                let keep = root.join(format!("panic-{}-{n}", t.name.replace([' ', '.', '+'], "_")));
                copy_dir(&case, &keep);
                writeln!(err, "PANIC {} {} {}", t.name, file, keep.display()).unwrap();
            }
            n += 1;
        }
        writeln!(err, "DONE {} {n}", t.name).unwrap();
    }
}

#[test]
fn loaders_survive_mutated_files() {
    if std::env::var("ATTN_FUZZ_CHILD").is_ok() {
        return;
    }
    let secs = std::env::var("ATTN_FUZZ_SECONDS").unwrap_or_else(|_| "20".into());
    let work = tempfile::tempdir().unwrap();
    let findings = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/fuzz-findings");
    let mut seed: u64 = std::env::var("ATTN_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(2026);
    let mut failures = Vec::new();
    let mut totals: Vec<(String, u64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs_f64(secs.parse::<f64>().unwrap_or(20.0) * 3.0 + 60.0);
    // Restart the child after a crash, with the next seed, until the budget is spent.
    let mut left: f64 = secs.parse().unwrap_or(20.0);
    while left > 0.5 && Instant::now() < deadline {
        let t0 = Instant::now();
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["fuzz_child", "--exact", "--nocapture", "--test-threads", "1"])
            .env("ATTN_FUZZ_CHILD", work.path())
            .env("ATTN_FUZZ_SECONDS", left.to_string())
            .env("ATTN_FUZZ_SEED", seed.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        for l in err.lines() {
            if let Some(rest) = l.strip_prefix("DONE ") {
                let (name, n) = rest.rsplit_once(' ').unwrap();
                match totals.iter_mut().find(|(t, _)| t == name) {
                    Some((_, c)) => *c += n.parse::<u64>().unwrap(),
                    None => totals.push((name.to_string(), n.parse().unwrap())),
                }
            }
            if let Some(rest) = l.strip_prefix("PANIC ") {
                failures.push(format!("panic: {rest}"));
            }
            if let Some(rest) = l.strip_prefix("PANICMSG ") {
                if !failures.iter().any(|f| f.ends_with(rest)) {
                    failures.push(format!("panic message: {rest}"));
                }
            }
        }
        let child_ok = out.status.success() && err.contains("test fuzz_child ... ok") || out.status.code() == Some(0);
        if !child_ok {
            let last = err.lines().rfind(|l| l.starts_with("TRY ")).unwrap_or("TRY ? ? ?").to_string();
            let case_dir = last.rsplit(' ').next().unwrap_or("");
            let keep = findings.join(format!("crash-{seed}"));
            if Path::new(case_dir).is_dir() {
                copy_dir(Path::new(case_dir), &keep);
            }
            failures.push(format!("the child died ({:?}) on: {} (kept in {})", out.status, &last[4..], keep.display()));
        }
        left -= t0.elapsed().as_secs_f64();
        seed += 1;
        if child_ok {
            break;
        }
    }
    let total: u64 = totals.iter().map(|t| t.1).sum();
    for (name, n) in &totals {
        eprintln!("fuzz: {name}: {n} executions");
    }
    eprintln!("fuzz: {total} executions in all, {} failures", failures.len());
    assert!(total >= 500, "the fuzzer ran only {total} executions");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
