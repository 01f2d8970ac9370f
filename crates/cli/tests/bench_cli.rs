//! Every `attn bench` JSON names the vector path that ran, the number format
//! and the peak memory, so no figure travels without them.

mod common;

fn json(args: &[&str]) -> serde_json::Value {
    let o = common::attn(args);
    assert!(o.status.success(), "{}", common::stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    serde_json::from_str(out.lines().last().unwrap()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn bench_json_carries_simd_dtype_and_peak_memory() {
    for args in [
        vec!["bench", "gemm", "--size", "64"],
        vec!["bench", "decode", "--preset", "baby", "--rows", "1,3", "--steps", "2", "--prompt-len", "4"],
        vec!["bench", "train", "--preset", "baby", "--batch-size", "2", "--seq-len", "16", "--steps", "1"],
    ] {
        let v = json(&args);
        let simd = v["simd"].as_str().unwrap_or_else(|| panic!("no simd in {v}"));
        assert!(["avx512", "avx2", "avx", "sse2", "neon", "scalar"].contains(&simd), "{v}");
        assert_eq!(v["dtype"], "f32", "{v}");
        assert!(v["peak_rss_mb"].as_f64().unwrap() > 0.0, "{v}");
        eprintln!("{}: simd path {simd}", args[1]);
    }
    let v = json(&["bench", "decode", "--preset", "baby", "--rows", "1,3", "--steps", "2", "--prompt-len", "4"]);
    assert_eq!(v["batches"].as_array().unwrap().len(), 2);
    assert_eq!(v["batches"][1]["rows"], 3);
    assert_eq!(v["kv_dtype"], "f32", "{v}");
    // Quantized weights take a bf16 KV cache unless --kv-dtype says otherwise.
    let q = ["bench", "decode", "--preset", "baby", "--rows", "1", "--steps", "2", "--prompt-len", "4", "--dtype", "int8"];
    assert_eq!(json(&q)["kv_dtype"], "bf16");
    assert_eq!(json(&[&q[..], &["--kv-dtype", "f32"]].concat())["kv_dtype"], "f32");
}
