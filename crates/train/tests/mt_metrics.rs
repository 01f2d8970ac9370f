//! BLEU and chrF equal PyPI sacrebleu 2.5.1's corpus scores on the sets in
//! testdata/mt_metrics.json (tools/reference/mt_metrics_golden.py), and the
//! 13a tokenizer gives its exact strings.

use attn_train::mt_metrics::{corpus_bleu, corpus_chrf, tokenize_13a};

#[test]
fn bleu_chrf_and_13a_match_sacrebleu() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/mt_metrics.json");
    let sets: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let strings = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect::<Vec<_>>();
    let mut n = 0;
    for (name, set) in sets.as_object().unwrap().iter().filter(|(k, _)| !k.starts_with('_')) {
        let (hyps, refs) = (strings(&set["hyps"]), strings(&set["refs"]));
        for (h, want) in hyps.iter().zip(strings(&set["tok13a"])) {
            assert_eq!(tokenize_13a(h), want, "{name}: 13a of {h:?}");
        }
        let (bleu, chrf) = (corpus_bleu(&hyps, &refs), corpus_chrf(&hyps, &refs));
        assert!((bleu - set["bleu"].as_f64().unwrap()).abs() < 1e-9, "{name}: BLEU {bleu} vs {}", set["bleu"]);
        assert!((chrf - set["chrf"].as_f64().unwrap()).abs() < 1e-9, "{name}: chrF {chrf} vs {}", set["chrf"]);
        n += 1;
    }
    assert_eq!(n, 5);
}
