//! Inspection against Hugging Face transformers (eager attention,
//! `output_attentions=True`, `output_hidden_states=True`) on the tiny GPT-2 of
//! testdata/gpt2_golden.safetensors; the reference numbers are in
//! testdata/gpt2_inspect_golden.safetensors (tools/reference/gpt2_inspect_golden.py).

use std::path::PathBuf;

use attn_model::checkpoint::TensorFile;
use attn_model::{Transformer, TransformerConfig};

fn testdata(name: &str) -> TensorFile {
    TensorFile::open(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata").join(name)).expect("fixture present")
}

fn traced() -> (attn_inspect::Trace, Transformer, TensorFile) {
    let weights = testdata("gpt2_golden.safetensors");
    let cfg = TransformerConfig::gpt2(67, 16, 2, 4, 32);
    let mut model = Transformer::zeros(cfg).unwrap();
    for e in model.layout.entries.clone() {
        weights.read_into(&format!("param.{}", e.name), &e.shape, &mut model.params[e.range()]).unwrap();
    }
    let golden = testdata("gpt2_inspect_golden.safetensors");
    let ids = golden.read_ids("input_ids").unwrap();
    let tokens = ids.iter().map(|i| format!("<{i}>")).collect();
    let tr = attn_inspect::trace_ids(&mut model, &ids, tokens).unwrap();
    (tr, model, golden)
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn attention_probabilities_match_transformers() {
    let (tr, _, golden) = traced();
    let d = max_abs(&tr.attention, &golden.read_f32("attentions").unwrap());
    eprintln!("max |attention difference| {d:e}");
    assert!(d < 1e-5, "attention differs by {d:e}");
    let t = tr.len();
    let c = tr.n_embd;
    // The residual stream entering each block (HF's hidden_states[0..L]).
    let d = max_abs(&tr.hidden[..tr.n_layer * t * c], &golden.read_f32("residual").unwrap());
    assert!(d < 1e-4, "residual stream differs by {d:e}");
    assert!(max_abs(&tr.logits, &golden.read_f32("logits").unwrap()) < 1e-4);
}

#[test]
fn causal_rows_sum_to_one_with_nothing_above_the_diagonal() {
    let (tr, _, _) = traced();
    let t = tr.len();
    for l in 0..tr.n_layer {
        for h in 0..tr.n_head {
            let a = tr.attention(l, h);
            for q in 0..t {
                let row = &a[q * t..(q + 1) * t];
                let sum: f32 = row.iter().sum();
                assert!((sum - 1.0).abs() < 1e-5, "layer {l} head {h} row {q} sums to {sum}");
                assert!(row[q + 1..].iter().all(|&x| x == 0.0), "layer {l} head {h} row {q} attends to the future");
            }
        }
    }
    let json = tr.attention_json("tiny");
    assert_eq!(json["attention"].as_array().unwrap().len(), tr.n_layer);
    assert_eq!(json["attention"][1][3][4].as_array().unwrap().len(), t);
    assert_eq!(json["attention"][1][3][4][2].as_f64().unwrap() as f32, tr.attention(1, 3)[4 * t + 2]);
}

#[test]
fn logit_lens_final_layer_is_the_model_prediction() {
    let (tr, model, _) = traced();
    let lens = attn_inspect::logit_lens(&model, &tr, 3);
    assert_eq!(lens.len(), tr.n_layer + 1);
    let v = tr.vocab_size;
    for (pos, top) in lens[tr.n_layer].iter().enumerate() {
        let row = &tr.logits[pos * v..(pos + 1) * v];
        let argmax = row.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0;
        assert_eq!(top[0].0 as usize, argmax, "position {pos}");
        let p = attn_inspect::softmax(row);
        assert!((top[0].1 - p[argmax]).abs() < 1e-12, "the same probability, not just the same token");
    }
    // The head applied to the last block's output is the model's own logits, bit for bit.
    let t = tr.len();
    let last = &tr.hidden[tr.n_layer * t * tr.n_embd..];
    assert_eq!(model.head(last, t), tr.logits);
}

/// all-MiniLM-L6-v2 on a real sentence through `trace_bert`, against
/// transformers' eager attention (testdata/minilm_reference.safetensors).
#[test]
fn minilm_attention_matches_transformers() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/models/all-MiniLM-L6-v2");
    if !dir.join("model.safetensors").exists() {
        assert!(std::env::var("CI").is_err(), "CI must fetch the model first (scripts/fetch_minilm.sh)");
        eprintln!("SKIPPED: run scripts/fetch_minilm.sh");
        return;
    }
    let reference = testdata("minilm_reference.safetensors");
    let sentences: Vec<String> = serde_json::from_str(&reference.metadata().unwrap()["sentences"]).unwrap();
    let bert = Transformer::load(&dir).unwrap().0;
    let tok = attn_tokenizer::load_tokenizer(&dir, None).unwrap();
    let tr = attn_inspect::trace_bert(&bert, tok.as_ref(), &sentences[0]).unwrap();
    assert_eq!(tr.tokens.first().map(String::as_str), Some("[CLS]"));
    assert_eq!(tr.tokens.last().map(String::as_str), Some("[SEP]"));
    assert_eq!(tr.ids, reference.read_ids("ids.0").unwrap());
    let d = max_abs(&tr.attention, &reference.read_f32("attentions.0").unwrap());
    eprintln!("max |attention difference| (MiniLM) {d:e}");
    assert!(d < 1e-5, "attention differs by {d:e}");
    assert!(!tr.causal);
}
