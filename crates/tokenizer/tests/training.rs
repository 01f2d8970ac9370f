//! BPE training end to end: a vocabulary trained on varied text, saved as a
//! Hugging Face `tokenizer.json`, and read back with HF's own rule (merge the
//! adjacent pair listed earliest in `model.merges`, leftmost first), gives
//! exactly the ids attn's encoder gives. tools/reference/check_tokenizer_json.py
//! checks the same with the real `tokenizers` library.

use attn_tokenizer::bpe::{bytes_to_unicode, AllowedSpecial, BytePairEncoder, CL100K_PATTERN, GPT2_PATTERN};
use attn_tokenizer::pretok::Splitter;
use attn_tokenizer::train::BpeTrainer;
use attn_tokenizer::Tokenizer;
use rustc_hash::FxHashMap;

fn corpus() -> String {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut t = String::from("Привет, мир! こんにちは世界 🎉🎉 digits 1234567 3.14 it's they'll WE'RE   spaces\t\ttabs\n\n");
    for f in ["crates/kernels/src/attention.rs", "crates/model/src/transformer/train.rs", "crates/tokenizer/src/bpe.rs", "README.md"] {
        t.push_str(&std::fs::read_to_string(root.join(f)).unwrap());
    }
    t
}

/// HF's byte-level BPE on one piece, from the vocab and merges of a tokenizer.json.
struct HfBpe {
    vocab: FxHashMap<String, u32>,
    merges: FxHashMap<(String, String), usize>,
}

impl HfBpe {
    fn from_json(j: &serde_json::Value) -> Self {
        let vocab = j["model"]["vocab"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap() as u32)).collect();
        let merges = j["model"]["merges"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, m)| ((m[0].as_str().unwrap().to_string(), m[1].as_str().unwrap().to_string()), i))
            .collect();
        HfBpe { vocab, merges }
    }

    fn encode_piece(&self, piece: &[u8], out: &mut Vec<u32>) {
        let map = bytes_to_unicode();
        let mut parts: Vec<String> = piece.iter().map(|&b| map[b as usize].to_string()).collect();
        loop {
            let best = (0..parts.len().saturating_sub(1)).filter_map(|i| self.merges.get(&(parts[i].clone(), parts[i + 1].clone())).map(|&r| (r, i))).min();
            let Some((_, i)) = best else { break };
            let right = parts.remove(i + 1);
            parts[i].push_str(&right);
        }
        out.extend(parts.iter().map(|p| self.vocab[p]));
    }
}

fn check(pattern: &str) {
    let text = corpus();
    // Trained on the first half, checked on all of it.
    let mut at = text.len() / 2;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let (enc, stats) = BpeTrainer { vocab_size: 1500, pattern: pattern.into(), specials: vec!["<|endoftext|>".into()] }.train(&text[..at]).unwrap();
    assert!(stats.merges >= 1500 - 257, "{stats:?}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    enc.save(&path).unwrap();
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let hf = HfBpe::from_json(&json);
    let splitter = Splitter::new(pattern).unwrap();
    let mut want = Vec::new();
    let mut bad = Vec::new();
    splitter.for_each_piece(&text, |p| {
        let mut h = Vec::new();
        hf.encode_piece(p.as_bytes(), &mut h);
        if h != enc.encode_ordinary(p) {
            bad.push((p.to_string(), h.clone(), enc.encode_ordinary(p)));
        }
        want.extend(h);
    });
    assert!(bad.is_empty(), "{} pieces differ, e.g. {:?}", bad.len(), &bad[..bad.len().min(3)]);
    let got = enc.encode(&text, &AllowedSpecial::None).unwrap();
    assert!(got == want, "first difference at {:?}", got.iter().zip(&want).position(|(a, b)| a != b));
    // And the file loads back as the same tokenizer.
    // (The text quotes "<|endoftext|>"; `Tokenizer::encode` turns it into the special id.)
    let loaded = attn_tokenizer::load_tokenizer(&path, None).unwrap();
    assert_eq!(loaded.encode(&text).unwrap(), enc.encode(&text, &AllowedSpecial::All).unwrap());
    assert_eq!(loaded.decode_bytes(&got).unwrap(), text.as_bytes());
}

#[test]
fn trained_gpt2_pattern_vocabulary_reads_the_same_in_hf_terms() {
    check(GPT2_PATTERN);
}

#[test]
fn trained_cl100k_pattern_vocabulary_reads_the_same_in_hf_terms() {
    check(CL100K_PATTERN);
}

#[test]
fn threads_do_not_change_the_vocabulary() {
    let text = corpus().repeat(4);
    let train = |threads| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| BpeTrainer { vocab_size: 2000, pattern: GPT2_PATTERN.into(), specials: vec![] }.train(&text).unwrap().0)
    };
    let (one, two): (BytePairEncoder, BytePairEncoder) = (train(1), train(2));
    for id in 0..2000 {
        assert_eq!(one.token_bytes(id), two.token_bytes(id), "token {id}");
    }
    let big = text.repeat(3);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    assert_eq!(pool.install(|| one.encode_ordinary(&big)), two.encode_ordinary(&big), "chunked encoding on 2 threads = whole-text encoding");
}
