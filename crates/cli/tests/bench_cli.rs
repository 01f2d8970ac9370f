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

/// Rounds set against the probes on either side of them, and each decoding
/// step against a probe pass on either side of it: `fraction_of_bound` is
/// the median step.
#[test]
fn bench_generate_sets_each_round_and_step_against_its_own_bandwidth() {
    let v = json(&["bench", "generate", "--preset", "baby", "--prompt-len", "4", "--new-tokens", "8"]);
    let (rounds, probes) = (v["fraction_of_bound_rounds"].as_array().unwrap(), v["read_bandwidth_gbps_probes"].as_array().unwrap());
    assert_eq!((rounds.len(), probes.len()), (3, 4), "a probe before the first round and after each: {v}");
    let f: Vec<f64> = rounds.iter().map(|x| x.as_f64().unwrap()).collect();
    assert!(f.iter().all(|&x| x > 0.0) && probes.iter().all(|p| p.as_f64().unwrap() > 0.0), "{v}");
    let mut steps: Vec<f64> = v["fraction_of_bound_steps"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
    assert_eq!(steps.len(), 7, "a fraction for each of the 7 decoding steps after the prefill: {v}");
    steps.sort_by(f64::total_cmp);
    assert!(steps[0] > 0.0, "{v}");
    assert_eq!(v["fraction_of_bound"].as_f64().unwrap(), steps[3], "the median step: {v}");
    assert_eq!((v["simd"].is_string(), v["dtype"].as_str(), v["new_tokens"].as_u64()), (true, Some("f32"), Some(8)), "{v}");
}

#[test]
fn the_f32_gemm_is_named_and_a_wrong_name_refused() {
    let v = json(&["bench", "gemm", "--size", "64"]);
    assert_eq!(v["f32_gemm"], "gemm-crate", "the default: {v}");
    let run = |value: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_attn")).args(["bench", "gemm", "--size", "64"]).env("ATTN_F32_GEMM", value).output().unwrap()
    };
    let o = run("avx512");
    assert!(o.status.success(), "{}", common::stderr(&o));
    // attn's own kernel when asked, where the loop kernels run at AVX-512.
    let v: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap()).unwrap();
    assert_eq!(v["f32_gemm"] == "avx512", v["simd"] == "avx512", "{v}");
    // The cores' multiply-add rate beside the GEMM's, wherever the level has a vector FMA.
    let vector = v["simd"] == "avx512" || v["simd"] == "avx2";
    assert_eq!(v["fma_gflops"].as_f64().is_some_and(|f| f > 0.0), vector, "{v}");
    assert_eq!(v["gemm_of_fma"].as_f64().is_some(), vector, "{v}");
    let o = run("mkl");
    assert!(!o.status.success() && common::stderr(&o).contains("ATTN_F32_GEMM=\"mkl\" is not a GEMM"), "{}", common::stderr(&o));
}

#[test]
fn a_bf16_path_that_is_unknown_or_missing_is_refused() {
    let run = |value: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_attn")).args(["bench", "gemm", "--size", "64"]).env("ATTN_BF16_PATH", value).output().unwrap()
    };
    let o = run("fast");
    assert!(!o.status.success() && common::stderr(&o).contains("ATTN_BF16_PATH=\"fast\" is not a bf16 path"), "{}", common::stderr(&o));
    // The portable path runs everywhere and is reported as asked.
    let o = run("f32-emulated");
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"bf16_path\":\"f32-emulated\""));
    // A path this CPU has runs; one it lacks is an error naming what runs instead.
    let has: Vec<&str> = attn_kernels::mixed::gemm_bf16_paths(1, 1, 1, &[1.0], &[1.0]).into_iter().map(|(name, _)| name).collect();
    for path in ["amx", "avx512-bf16"] {
        let o = run(path);
        if has.contains(&path) {
            assert!(o.status.success(), "{path}: {}", common::stderr(&o));
        } else {
            assert!(!o.status.success() && common::stderr(&o).contains("this CPU lacks that path"), "{path}: {}", common::stderr(&o));
        }
    }
}

#[test]
fn bench_gemm_shapes_times_each_f32_gemm_and_the_bf16_tiles() {
    let v = json(&["bench", "gemm", "--shapes", "--rounds", "1"]);
    let rows = v["gflops"].as_array().unwrap_or_else(|| panic!("{v}"));
    assert_eq!(rows.len(), 10, "{v}");
    let tiles = attn_kernels::mixed::bf16_path();
    let tiles = (tiles != "f32-emulated").then_some(tiles);
    if tiles.is_none() {
        eprintln!("NOT TESTED: bench gemm --shapes' bf16 column (this CPU has neither AMX nor AVX512-BF16)");
    }
    for r in rows {
        for p in ["gemm-crate"].into_iter().chain((v["simd"] == "avx512").then_some("avx512")).chain(tiles) {
            for k in ["fwd", "dinp", "dw"] {
                assert!(r[p][k].as_f64().is_some_and(|g| g > 0.0), "{p} {k} in {r}");
            }
        }
    }
}
