//! bf16 matrix products (f32 sums) on every path this CPU has, against the
//! naive twin that rounds the operands and sums in f64. The precision is a
//! process-wide setting, so these tests live in their own binary.

use attn_kernels::matmul::*;
use attn_kernels::mixed::*;
use attn_kernels::quant::{bf16_bits, bf16_to_f32};

mod common;
use common::*;

fn round(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| bf16_to_f32(bf16_bits(v))).collect()
}

/// Shapes on both sides of the 16/32 tile edges, K not a multiple of 32, ones
/// large enough to split across threads, K over one 2048 block, and A more
/// than twice as tall as B is wide (the tiles then compute the transpose).
const SHAPES: [(usize, usize, usize); 10] =
    [(1, 1, 1), (16, 16, 32), (17, 33, 31), (37, 45, 70), (64, 96, 128), (130, 257, 193), (40, 70, 2100), (130, 17, 70), (300, 40, 2100), (75, 1, 33)];

#[test]
fn every_bf16_path_matches_the_naive_twin() {
    let mut ran = Vec::new();
    for threads in [1, 3] {
        with_threads(threads, || {
            for &(m, n, k) in &SHAPES {
                let (a, b) = (randn(m * k, 1), randn(k * n, 2));
                let mut slow = vec![0.0; m * n];
                gemm_bf16_naive(&mut slow, &a, &b, m, n, k, false);
                for (path, fast) in gemm_bf16_paths(m, n, k, &a, &b) {
                    // Exact products, f32 sums of up to 2100 terms of size ~1.
                    let d = max_diff(&fast, &slow);
                    assert!(d < 1e-4 * (k as f32 / 100.0).max(1.0), "{path} {m}x{n}x{k} on {threads} threads: off by {d}");
                    if !ran.contains(&path) {
                        ran.push(path);
                    }
                }
            }
        });
    }
    eprintln!("bf16 GEMM paths tested: {ran:?}");
    if !ran.contains(&"amx") {
        eprintln!("NOT TESTED: the AMX bf16 path (this CPU has no AMX-BF16, or the kernel refused the tile state)");
    }
    if !ran.contains(&"avx512-bf16") {
        eprintln!("NOT TESTED: the AVX512-BF16 (vdpbf16ps) bf16 path (this CPU lacks AVX512-BF16)");
    }
}

#[test]
fn bf16_dense_layers_round_their_operands_and_nothing_else() {
    set_matmul_precision(Precision::Bf16);
    eprintln!("dense layers in bf16 on the {} path", bf16_path());
    for threads in [1, 2] {
        with_threads(threads, || {
            // (40, 1100, 300): dW's transposed operand packs in groups of 16 row
            // tiles and a partial one.
            for &(n, c, oc) in &[(7, 13, 5), (67, 129, 131), (256, 96, 80), (40, 1100, 300)] {
                for layout in [WeightLayout::InOut, WeightLayout::OutIn] {
                    let (x, w, bias) = (randn(n * c, 1), randn(c * oc, 2), randn(oc, 3));
                    let (mut fast, mut slow) = (vec![0.0; n * oc], vec![0.0; n * oc]);
                    matmul_forward(&mut fast, &x, &w, Some(&bias), n, c, oc, layout);
                    // The bias is added in f32, unrounded.
                    matmul_forward_naive(&mut slow, &round(&x), &round(&w), Some(&bias), n, c, oc, layout);
                    assert!(max_diff(&fast, &slow) < 1e-4, "forward {n}x{c}x{oc} {layout:?}");
                    let dy = randn(n * oc, 4);
                    let (mut dx1, mut dw1, mut db1) = (vec![0.5; n * c], vec![0.5; c * oc], vec![0.5; oc]);
                    let (mut dx2, mut dw2, mut db2) = (dx1.clone(), dw1.clone(), db1.clone());
                    matmul_backward(Some(&mut dx1), &mut dw1, Some(&mut db1), &dy, &x, &w, n, c, oc, layout);
                    matmul_backward_naive(&mut dx2, &mut dw2, None, &round(&dy), &round(&x), &round(&w), n, c, oc, layout);
                    // The bias gradient sums the f32 upstream gradient.
                    matmul_backward_naive(&mut vec![0.0; n * c], &mut vec![0.0; c * oc], Some(&mut db2), &dy, &x, &w, n, c, oc, layout);
                    assert!(max_diff(&dx1, &dx2) < 1e-4, "dinp {n}x{c}x{oc} {layout:?}");
                    assert!(max_diff(&dw1, &dw2) < 1e-4, "dweight {n}x{c}x{oc} {layout:?}");
                    assert!(max_diff(&db1, &db2) < 1e-4, "dbias {n}x{c}x{oc} {layout:?}");
                    // And the products really were rounded: f32 differs.
                    if n * c * oc > 10_000 {
                        let mut exact = vec![0.0; n * oc];
                        matmul_forward_naive(&mut exact, &x, &w, Some(&bias), n, c, oc, layout);
                        assert!(max_diff(&fast, &exact) > 1e-3, "bf16 forward equals f32's");
                    }
                }
            }
        });
    }
    set_matmul_precision(Precision::F32);
}

/// The checks above again at every lower SIMD level this CPU has.
#[test]
fn every_simd_level() {
    common::rerun_at_every_level();
}
