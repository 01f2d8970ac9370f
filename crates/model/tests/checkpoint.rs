//! Half-precision weights are widened to f32 on load; other dtypes are
//! errors that name the tensor.

use attn_model::checkpoint::TensorFile;
use safetensors::tensor::{Dtype, TensorView};

#[test]
fn f16_and_bf16_widen_and_integers_are_refused() {
    let values = [1.0f32, -2.5, 0.333_333_34, 65504.0, 1e-3];
    let f16: Vec<u8> = values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect();
    let bf16: Vec<u8> = values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect();
    let ints: Vec<u8> = [1i32, 2, 3, 4, 5].iter().flat_map(|v| v.to_le_bytes()).collect();
    let tensors = [
        ("a.f16", TensorView::new(Dtype::F16, vec![5], &f16).unwrap()),
        ("b.bf16", TensorView::new(Dtype::BF16, vec![5], &bf16).unwrap()),
        ("c.i32", TensorView::new(Dtype::I32, vec![5], &ints).unwrap()),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    safetensors::serialize_to_file(tensors, &None, &path).unwrap();
    let f = TensorFile::open(&path).unwrap();
    let want16: Vec<f32> = values.iter().map(|&v| half::f16::from_f32(v).to_f32()).collect();
    let wantb: Vec<f32> = values.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect();
    assert_eq!(f.read_f32("a.f16").unwrap(), want16);
    assert_eq!(f.read_f32("b.bf16").unwrap(), wantb);
    let err = f.read_f32("c.i32").unwrap_err().to_string();
    assert!(err.contains("c.i32") && err.contains("I32") && err.contains("model.safetensors"), "{err}");
}
