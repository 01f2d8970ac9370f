//! Greedy and beam-4 translations of the random-init Marian and BART models
//! in testdata/seq2seq equal transformers' `generate()` token for token
//! (tools/reference/seq2seq_golden.py: a padded batch of two sources,
//! max_new_tokens 24, forced EOS at the limit, length_penalty 1.0,
//! early_stopping False); and with a folder's own generation settings
//! (tools/reference/seq2seq_generation_golden.py: forced BOS, n-gram and bad
//! word bans, minimum lengths, early stopping, suppressed tokens, in generation_config.json or
//! config.json) they equal `generate()` called with no settings at all.

use std::path::PathBuf;

use attn_generate::{search, EarlyStopping, Rules, SamplerConfig, Sampling, SearchConfig, Seq2SeqSettings};
use attn_model::checkpoint::TensorFile;
use attn_model::Seq2Seq;

fn testdata(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/seq2seq").join(p)
}

#[test]
fn greedy_and_beam_match_transformers_generate() {
    let g = TensorFile::open(&testdata("golden.safetensors")).unwrap();
    for v in ["marian", "bart", "mbart"] {
        let (m, _) = Seq2Seq::load(&testdata(v)).unwrap();
        let src = g.read_ids(&format!("{v}.src")).unwrap();
        let src_len: Vec<usize> = g.read_ids(&format!("{v}.src_len")).unwrap().iter().map(|&x| x as usize).collect();
        let s = src.len() / src_len.len();
        let mem = m.encode_sources(&src, &src_len, s).unwrap();
        for (kind, beams) in [("greedy", 1), ("beam4", 4)] {
            let want = g.read_ids(&format!("{v}.{kind}")).unwrap();
            let lens = g.read_ids(&format!("{v}.{kind}_len")).unwrap();
            let width = want.len() / src_len.len();
            let cfg = SearchConfig { max_new_tokens: 24, num_beams: beams, ..Default::default() };
            let got = search(&m, &mem, &cfg).unwrap();
            for (i, h) in got.iter().enumerate() {
                // The reference rows start with the decoder start token.
                let expect = &want[i * width + 1..i * width + lens[i] as usize];
                assert_eq!(h.ids, expect, "{v} {kind} source {i}");
            }
            println!("{v} {kind}: {:?}", got.iter().map(|h| (h.ids.len(), h.score)).collect::<Vec<_>>());
        }
    }
}

#[test]
fn a_folders_generation_settings_decode_as_transformers_does() {
    let g = TensorFile::open(&testdata("golden.safetensors")).unwrap();
    let cases: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(testdata("generation.json")).unwrap()).unwrap();
    let cases = cases["cases"].as_array().unwrap();
    assert!(cases.len() >= 6);
    for case in cases {
        let (name, folder, file) = (case["name"].as_str().unwrap(), case["folder"].as_str().unwrap(), case["file"].as_str().unwrap());
        // The folder as the reference script wrote it: settings merged into
        // config.json, or a generation_config.json of their own.
        let dir = tempfile::tempdir().unwrap();
        for f in ["config.json", "model.safetensors"] {
            std::fs::copy(testdata(&format!("{folder}/{f}")), dir.path().join(f)).unwrap();
        }
        let mut settings = case["settings"].clone();
        if file == "config.json" {
            let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join(file)).unwrap()).unwrap();
            cfg.as_object_mut().unwrap().append(settings.as_object_mut().unwrap());
            settings = cfg;
        }
        std::fs::write(dir.path().join(file), settings.to_string()).unwrap();
        let (m, _) = Seq2Seq::load(dir.path()).unwrap();
        let s = Seq2SeqSettings::from_dir(dir.path(), m.vocab_size(), m.config.eos_token_id).unwrap();
        assert!(s.ignored.is_empty(), "{name}: {:?}", s.ignored);
        let cfg = SearchConfig {
            max_new_tokens: s.max_new_tokens.expect("every case sets a length"),
            num_beams: s.num_beams.unwrap_or(1),
            length_penalty: s.length_penalty.unwrap_or(1.0),
            early_stopping: s.early_stopping.unwrap_or(EarlyStopping::Heuristic),
            rules: s.rules,
            sample: None,
        };
        let src = g.read_ids(&format!("{folder}.src")).unwrap();
        let src_len: Vec<usize> = g.read_ids(&format!("{folder}.src_len")).unwrap().iter().map(|&x| x as usize).collect();
        let mem = m.encode_sources(&src, &src_len, src.len() / src_len.len()).unwrap();
        let got = search(&m, &mem, &cfg).unwrap();
        for (i, h) in got.iter().enumerate() {
            let want: Vec<u32> = case["expect"][i].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
            assert_eq!(h.ids, want, "{name}, source {i}");
        }
    }
}

/// Sampling draws after the rules: near temperature 0 every draw is the most
/// likely token, so it decodes as greedy does, with a ban and without; and a
/// banned token is never drawn.
#[test]
fn sampling_draws_after_the_rules() {
    let g = TensorFile::open(&testdata("golden.safetensors")).unwrap();
    let (m, _) = Seq2Seq::load(&testdata("marian")).unwrap();
    let src = g.read_ids("marian.src").unwrap();
    let src_len: Vec<usize> = g.read_ids("marian.src_len").unwrap().iter().map(|&x| x as usize).collect();
    let mem = m.encode_sources(&src, &src_len, src.len() / src_len.len()).unwrap();
    let cold = Sampling { sampler: SamplerConfig { temperature: 1e-4, top_k: 0, top_p: 1.0, repetition_penalty: 1.0 }, seed: 9 };
    let ids = |rules: Rules, sample: Option<Sampling>| -> Vec<Vec<u32>> {
        let cfg = SearchConfig { max_new_tokens: 12, rules, sample, ..Default::default() };
        search(&m, &mem, &cfg).unwrap().into_iter().map(|h| h.ids).collect()
    };
    let greedy = ids(Rules::default(), None);
    assert_eq!(ids(Rules::default(), Some(cold)), greedy);
    let banned: Vec<Vec<u32>> = greedy.iter().map(|h| vec![h[0]]).collect();
    let ban = || Rules { bad_words: banned.clone(), ..Rules::default() };
    let drawn = ids(ban(), Some(cold));
    assert_eq!(drawn, ids(ban(), None));
    for h in &drawn {
        assert!(banned.iter().all(|b| !h.contains(&b[0])), "{h:?} has one of {banned:?}");
    }
}
