//! SentencePiece unigram models and Marian's tokenizer against the Python
//! libraries: testdata/marian_spm (a Marian tokenizer folder: an nmt_nfkc
//! source model, an identity-normalized target model, a joint vocab.json)
//! and testdata/marian_spm_ids.json (tools/reference/marian_spm_golden.py:
//! `sentencepiece` 0.2.1's pieces, transformers' MarianTokenizer ids and
//! decodings). The texts cover NFKC folding (full-width letters, ligatures,
//! circled digits, non-breaking spaces), characters no piece covers (merged
//! into one unknown), leading / repeated / trailing spaces, newlines and
//! tabs, a language code, special tokens written in the text, and the empty
//! string.

use std::path::PathBuf;

use attn_tokenizer::marian::MarianTokenizer;
use attn_tokenizer::sentencepiece::SentencePiece;
use attn_tokenizer::{load_tokenizer, Tokenizer};

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(name)
}

fn fixture() -> Vec<serde_json::Value> {
    let f: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(testdata("marian_spm_ids.json")).unwrap()).unwrap();
    f["cases"].as_array().unwrap().clone()
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn pieces_match_sentencepiece() {
    let dir = testdata("marian_spm");
    let (src, tgt) = (SentencePiece::load(&dir.join("source.spm")).unwrap(), SentencePiece::load(&dir.join("target.spm")).unwrap());
    for case in fixture() {
        let text = case["text"].as_str().unwrap();
        for (model, key) in [(&src, "source_pieces"), (&tgt, "target_pieces")] {
            let got: Vec<String> = model.encode_pieces(text).into_iter().map(|(p, _)| p).collect();
            assert_eq!(got, strings(&case[key]), "{key} of {text:?}");
        }
    }
}

#[test]
fn marian_ids_and_decoding_match_transformers() {
    let dir = testdata("marian_spm");
    let tok = MarianTokenizer::load(&dir).unwrap();
    // The folder loads through the generic entry point too.
    let generic = load_tokenizer(&dir, None).unwrap();
    for case in fixture() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(tok.encode(text).unwrap(), ids(&case["source_ids"]), "source ids of {text:?}");
        assert_eq!(generic.encode(text).unwrap(), ids(&case["source_ids"]), "source ids of {text:?} (load_tokenizer)");
        let target = ids(&case["target_ids"]);
        assert_eq!(tok.encode_target(text).unwrap(), target, "target ids of {text:?}");
        assert_eq!(tok.decode(&target).unwrap(), case["decoded_specials"].as_str().unwrap(), "decode of {text:?}");
        assert_eq!(tok.decode_skipping_specials(&target).unwrap(), case["decoded"].as_str().unwrap(), "decode of {text:?} without specials");
    }
}

#[test]
fn a_lone_model_file_is_a_tokenizer_of_its_own_ids() {
    let path = testdata("marian_spm/target.spm");
    let tok = load_tokenizer(&path, None).unwrap();
    let sp = SentencePiece::load(&path).unwrap();
    let text = "Y la tierra estaba desordenada y vacía";
    let want: Vec<u32> = sp.encode_pieces(text).into_iter().map(|(_, id)| id).collect();
    assert_eq!(tok.encode(text).unwrap(), want);
    assert_eq!(tok.decode(&want).unwrap(), text, "a text of known pieces round-trips");
    assert_eq!(tok.vocab_size(), sp.len());
}

#[test]
fn bad_files_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.spm");
    std::fs::write(&junk, b"\xff\xff\xff not a protocol buffer").unwrap();
    let err = load_tokenizer(&junk, None).err().expect("junk is refused").to_string();
    assert!(err.contains("junk.spm") && err.contains("ModelProto"), "{err}");

    // A Marian folder whose vocab.json lacks <unk>.
    let m = dir.path().join("marian");
    std::fs::create_dir(&m).unwrap();
    for f in ["source.spm", "target.spm", "tokenizer_config.json"] {
        std::fs::copy(testdata("marian_spm").join(f), m.join(f)).unwrap();
    }
    std::fs::write(m.join("vocab.json"), r#"{"</s>": 0, "a": 1}"#).unwrap();
    let err = load_tokenizer(&m, None).err().expect("no <unk>").to_string();
    assert!(err.contains("vocab.json") && err.contains("<unk>"), "{err}");

    std::fs::write(m.join("vocab.json"), r#"{"</s>": 0, "<unk>": -1}"#).unwrap();
    let err = load_tokenizer(&m, None).err().expect("a negative id").to_string();
    assert!(err.contains("vocab.json") && err.contains("<unk>"), "{err}");
}

#[test]
fn save_writes_the_folder_files_back() {
    let src = testdata("marian_spm");
    let tok = MarianTokenizer::load(&src).unwrap();
    let dir = tempfile::tempdir().unwrap();
    tok.save(&dir.path().join("tokenizer.json")).unwrap();
    std::fs::copy(src.join("tokenizer_config.json"), dir.path().join("tokenizer_config.json")).unwrap();
    let again = MarianTokenizer::load(dir.path()).unwrap();
    for case in fixture() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(again.encode(text).unwrap(), ids(&case["source_ids"]), "{text:?} after a save");
    }
    assert!(!dir.path().join("tokenizer.json").exists(), "no tokenizer.json is claimed");
}

/// A `separate_vocabs` folder: sources through vocab.json, targets and
/// decoding through target_vocab.json, as MarianTokenizer does.
#[test]
fn separate_vocabularies_match_transformers() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["vocab.json", "target_vocab.json", "tokenizer_config.json"] {
        std::fs::copy(testdata("marian_spm_separate").join(f), dir.path().join(f)).unwrap();
    }
    for f in ["source.spm", "target.spm"] {
        std::fs::copy(testdata("marian_spm").join(f), dir.path().join(f)).unwrap();
    }
    let tok = MarianTokenizer::load(dir.path()).unwrap();
    let f: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(testdata("marian_spm_ids.json")).unwrap()).unwrap();
    for case in f["separate"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(tok.encode(text).unwrap(), ids(&case["source_ids"]), "source ids of {text:?}");
        let target = ids(&case["target_ids"]);
        assert_eq!(tok.encode_target(text).unwrap(), target, "target ids of {text:?}");
        assert_eq!(tok.decode(&target).unwrap(), case["decoded_specials"].as_str().unwrap(), "decode of {text:?}");
        assert_eq!(tok.decode_skipping_specials(&target).unwrap(), case["decoded"].as_str().unwrap(), "decode of {text:?}");
    }
    // Without target_vocab.json the folder is refused, naming the setting.
    std::fs::remove_file(dir.path().join("target_vocab.json")).unwrap();
    let err = MarianTokenizer::load(dir.path()).err().expect("missing target vocabulary").to_string();
    assert!(err.contains("separate_vocabs") && err.contains("target_vocab.json"), "{err}");
}
