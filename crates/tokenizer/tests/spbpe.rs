//! SentencePiece-style BPE (Llama 2 / TinyLlama's tokenizer.json layout)
//! against HF tokenizers: testdata/spbpe_tokenizer.json and the ids HF gives
//! for varied texts (tools/reference/spbpe_golden.py): leading and repeated
//! spaces, characters outside the vocabulary (byte fallback), newlines and
//! tabs, special tokens written in the text, the empty string.

use std::path::PathBuf;

use attn_tokenizer::load_tokenizer;

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(name)
}

#[test]
fn ids_match_hf_tokenizers() {
    let tok = load_tokenizer(&testdata("spbpe_tokenizer.json"), None).unwrap();
    let fixture: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(testdata("spbpe_ids.json")).unwrap()).unwrap();
    for ((text, ids), decoded) in
        fixture["texts"].as_array().unwrap().iter().zip(fixture["ids"].as_array().unwrap()).zip(fixture["decoded"].as_array().unwrap())
    {
        let text = text.as_str().unwrap();
        let want: Vec<u32> = ids.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        let got = tok.encode(text).unwrap();
        assert_eq!(got, want, "ids of {text:?}");
        assert_eq!(tok.decode(&got).unwrap(), decoded.as_str().unwrap(), "decode of {text:?}");
    }
}

#[test]
fn streaming_bytes_keep_spaces_and_rebuild_multibyte_characters() {
    let tok = load_tokenizer(&testdata("spbpe_tokenizer.json"), None).unwrap();
    let text = "a café 日本";
    let ids = tok.encode(text).unwrap();
    // Piece by piece (as generation streams), skipping <s>: the bytes are the
    // text with the one prepended space.
    let bytes: Vec<u8> = ids[1..].iter().flat_map(|&i| tok.decode_bytes(&[i]).unwrap()).collect();
    assert_eq!(String::from_utf8(bytes).unwrap(), format!(" {text}"));
}
