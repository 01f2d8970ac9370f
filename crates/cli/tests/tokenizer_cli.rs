//! `attn tokenizer` on a small byte-level BPE written as a .tiktoken file.

use std::process::Command;

fn attn(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_attn")).args(args).output().expect("attn runs")
}

#[test]
fn encode_decode_show_convert() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    // 256 single bytes, then merges "un", "hap", "happ" ... in rank order.
    let b64 = |b: &[u8]| {
        const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::new();
        for c in b.chunks(3) {
            let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
            for k in 0..4 {
                s.push(if k <= c.len() { T[(n >> (18 - 6 * k) & 63) as usize] as char } else { '=' });
            }
        }
        s
    };
    let path = dir.path().join("tiny.tiktoken");
    let mut f = std::fs::File::create(&path).unwrap();
    let merges: [&[u8]; 4] = [b"un", b"ha", b"hap", b"happ"];
    for b in 0..=255u8 {
        writeln!(f, "{} {b}", b64(&[b])).unwrap();
    }
    for (i, m) in merges.iter().enumerate() {
        writeln!(f, "{} {}", b64(m), 256 + i).unwrap();
    }
    drop(f);
    let p = path.to_str().unwrap();
    let o = attn(&["tokenizer", "encode", "--tokenizer", p, "--pattern", "gpt2", "unhappy"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8(o.stdout).unwrap().trim(), "256 259 121");
    let o = attn(&["tokenizer", "decode", "--tokenizer", p, "256", "259", "121"]);
    assert_eq!(String::from_utf8(o.stdout).unwrap(), "unhappy");
    let o = attn(&["tokenizer", "show", "--tokenizer", p, "unhappy"]);
    assert!(String::from_utf8(o.stdout).unwrap().starts_with("un|happ|y\n"));
    // Convert to tokenizer.json and read it back: the same ids.
    let json = dir.path().join("tokenizer.json");
    let o = attn(&["tokenizer", "convert", "--tokenizer", p, "--pattern", "gpt2", "--out", json.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = attn(&["tokenizer", "encode", "--tokenizer", json.to_str().unwrap(), "unhappy"]);
    assert_eq!(String::from_utf8(o.stdout).unwrap().trim(), "256 259 121");
    // An id past the vocabulary is a clear error.
    let o = attn(&["tokenizer", "decode", "--tokenizer", p, "999"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("out of range"));
}

#[test]
fn train_then_encode_and_decode() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("a.txt");
    std::fs::write(&data, "the unhappiness of the happy hippo<|endoftext|>happy happy hippo\n".repeat(50)).unwrap();
    let out = dir.path().join("tok.json");
    let (d, o_s) = (data.to_str().unwrap(), out.to_str().unwrap());
    let o = attn(&["tokenizer", "train", "--data", d, "--vocab-size", "280", "--special", "<|endoftext|>", "--out", o_s]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = attn(&["tokenizer", "encode", "--tokenizer", o_s, "happy hippo<|endoftext|>"]);
    let ids: Vec<u32> = String::from_utf8(o.stdout).unwrap().split_whitespace().map(|x| x.parse().unwrap()).collect();
    assert_eq!(ids.last(), Some(&279), "the special token is the last id");
    assert!(ids.len() <= 4, "merges learned from the text: {ids:?}");
    let args: Vec<String> = ["tokenizer", "decode", "--tokenizer", o_s].iter().map(|s| s.to_string()).chain(ids.iter().map(u32::to_string)).collect();
    let o = Command::new(env!("CARGO_BIN_EXE_attn")).args(&args).output().unwrap();
    assert_eq!(String::from_utf8(o.stdout).unwrap(), "happy hippo<|endoftext|>");
    // Too small a vocabulary names the minimum.
    let o = attn(&["tokenizer", "train", "--data", d, "--vocab-size", "200", "--special", "<|endoftext|>", "--out", o_s]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("at least 257"), "{}", String::from_utf8_lossy(&o.stderr));
}
