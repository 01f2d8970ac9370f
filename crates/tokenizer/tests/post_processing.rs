//! Byte-level BPE files in the layout of Llama 3 and Qwen2: an NFC
//! normalizer and a TemplateProcessing post-processor that adds
//! <|begin_of_text|>. attn's ids must be HF tokenizers' (fixture from
//! tools/reference/bpe_template_golden.py), and saving must keep both steps.

use std::path::PathBuf;

use attn_tokenizer::{load_tokenizer, Tokenizer};

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(name)
}

fn check(tok: &dyn Tokenizer) {
    let fixture: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(testdata("bpe_template_ids.json")).unwrap()).unwrap();
    for (text, ids) in fixture["texts"].as_array().unwrap().iter().zip(fixture["ids"].as_array().unwrap()) {
        let want: Vec<u32> = ids.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
        assert_eq!(tok.encode(text.as_str().unwrap()).unwrap(), want, "{text}");
    }
}

#[test]
fn bos_and_nfc_match_hf_and_survive_saving() {
    let tok = load_tokenizer(&testdata("bpe_template_tokenizer.json"), None).unwrap();
    check(tok.as_ref());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    tok.save(&path).unwrap();
    check(load_tokenizer(&path, None).unwrap().as_ref());
}

/// BART's tokenizer.json puts <s> and </s> around every encoding with a
/// RobertaProcessing post-processor, whose ids are given inline.
#[test]
fn roberta_processing_adds_cls_and_sep() {
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(testdata("bpe_template_tokenizer.json")).unwrap()).unwrap();
    let plain = {
        let mut j = json.clone();
        j["post_processor"] = serde_json::Value::Null;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenizer.json");
        std::fs::write(&p, j.to_string()).unwrap();
        load_tokenizer(&p, None).unwrap().encode("Hello world").unwrap()
    };
    json["post_processor"] =
        serde_json::json!({"type": "RobertaProcessing", "sep": ["</s>", 7], "cls": ["<s>", 5], "trim_offsets": true, "add_prefix_space": false});
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tokenizer.json");
    std::fs::write(&p, json.to_string()).unwrap();
    let ids = load_tokenizer(&p, None).unwrap().encode("Hello world").unwrap();
    assert_eq!(ids, [vec![5], plain, vec![7]].concat());
}
