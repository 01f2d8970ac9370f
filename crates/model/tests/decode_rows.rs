//! GPT-2's block matrices held (OC, C) for decoding
//! (`Transformer::rows_for_decoding`): the model keeps its function on every
//! path, and what it writes (a folder, a quantized folder, a merged LoRA) is
//! what the model in its own (C, OC) layout writes, byte for byte.

use std::path::{Path, PathBuf};

use attn_model::lora::Lora;
use attn_model::quant::WeightDtype;
use attn_model::{Transformer, TransformerConfig};

fn prompt(n: usize) -> Vec<u32> {
    (0..n).map(|j| ((j * 13 + 5) % 60) as u32).collect()
}

/// Prefill logits, then the logits of 6 greedy decoding steps.
fn decoded(m: &Transformer) -> Vec<Vec<f32>> {
    let mut c = m.new_cache(24).unwrap();
    let mut out = vec![m.prefill(&mut c, &prompt(12)).unwrap().to_vec()];
    for _ in 0..6 {
        let last = out.last().unwrap();
        let next = last.iter().enumerate().fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0 as u32;
        out.push(m.decode(&mut c, next).unwrap().to_vec());
    }
    out
}

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = a.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    attn_kernels::gradcheck::max_diff(a, b) / scale
}

fn saved(m: &Transformer) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    m.save(dir.path(), None).unwrap();
    std::fs::read(dir.path().join("model.safetensors")).unwrap()
}

fn load(dir: &Path) -> Transformer {
    Transformer::load(dir).unwrap().0
}

/// The logits of prefill (a GEMM), of each decoding step (the matrix-vector
/// kernel) and of the training forward pass stay within rounding of the
/// (C, OC) model's, and the saved folder is the same file.
#[test]
fn rows_keep_the_function_and_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let cols = Transformer::new(TransformerConfig::baby(), 7).unwrap();
    cols.save(dir.path(), None).unwrap();
    let mut rows = load(dir.path());
    rows.rows_for_decoding();
    assert_ne!(rows.params, cols.params, "GPT-2's matrices are transposed");
    for (i, (a, b)) in decoded(&cols).iter().zip(decoded(&rows)).enumerate() {
        assert!(max_rel(a, &b) < 1e-5, "step {i}: {}", max_rel(a, &b));
    }
    let (tokens, targets) = (prompt(32), prompt(33)[1..].to_vec());
    let mut cols_train = load(dir.path());
    let want = cols_train.forward(&tokens, Some(&targets), 2, 16).unwrap().unwrap();
    let got = rows.forward(&tokens, Some(&targets), 2, 16).unwrap().unwrap();
    assert!((want - got).abs() < 1e-5 * want.abs(), "training forward loss {got} against {want}");
    assert!(saved(&rows) == saved(&cols), "the saved folder differs");
    // Twice is once; a family already (OC, C) is left alone.
    rows.rows_for_decoding();
    assert!(saved(&rows) == saved(&cols));
    let mut llama = Transformer::new(TransformerConfig::llama_baby(), 7).unwrap();
    let before = llama.params.clone();
    llama.rows_for_decoding();
    assert_eq!(llama.params, before);
}

/// Quantizing turns the matrices back first: the same bf16 and int8
/// matrices, logits and folder as quantizing the (C, OC) model.
#[test]
fn quantizing_rows_equals_quantizing_columns() {
    let dir = tempfile::tempdir().unwrap();
    Transformer::new(TransformerConfig::baby(), 8).unwrap().save(dir.path(), None).unwrap();
    for dtype in [WeightDtype::Bf16, WeightDtype::Int8 { group: 32 }] {
        let mut cols = load(dir.path());
        cols.quantize(dtype).unwrap();
        let mut rows = load(dir.path());
        rows.rows_for_decoding();
        rows.quantize(dtype).unwrap();
        assert_eq!(decoded(&rows), decoded(&cols), "{dtype:?}: logits");
        assert!(saved(&rows) == saved(&cols), "{dtype:?}: the quantized folder differs");
    }
}

/// A PEFT adapter (testdata/lora/gpt2, nonzero B) merged into a model held
/// (OC, C) adds each update at the transposed place: the merged weights
/// save as the (C, OC) merge does.
#[test]
fn lora_merges_into_rows() {
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/lora/gpt2");
    let mut cols = load(&base.join("base"));
    let (lora, _) = Lora::load(&base.join("adapter"), &cols.config).unwrap();
    let mut rows = load(&base.join("base"));
    rows.rows_for_decoding();
    let plain = saved(&cols);
    lora.merge_into(&mut cols);
    lora.merge_into(&mut rows);
    assert!(saved(&cols) != plain, "the adapter changes the weights");
    assert!(saved(&rows) == saved(&cols), "merged into rows, the weights differ");
}
