//! Greedy and beam-4 translations of the random-init Marian and BART models
//! in testdata/seq2seq equal transformers' `generate()` token for token
//! (tools/reference/seq2seq_golden.py: a padded batch of two sources,
//! max_new_tokens 24, forced EOS at the limit, length_penalty 1.0,
//! early_stopping False).

use std::path::PathBuf;

use attn_generate::{search, EarlyStopping, SearchConfig};
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
            let cfg = SearchConfig { max_new_tokens: 24, num_beams: beams, length_penalty: 1.0, early_stopping: EarlyStopping::Heuristic };
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
