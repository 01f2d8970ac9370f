//! Every f32 GEMM (attn's AVX-512 and AVX2 kernels and the `gemm` crate) against the
//! naive dense layer, on shapes that leave partial microkernel tiles and run
//! over several blocks of K and of packed (or, column-stored, copied)
//! columns, K past the copy's block among them, with and without a bias
//! (a product that writes, and one that adds), at 1 and 3 threads. One test
//! in its own binary: the GEMM choice is process-wide.

use attn_kernels::matmul::*;

mod common;
use common::*;

#[test]
fn each_f32_gemm_matches_naive() {
    for path in [F32Gemm::Avx512, F32Gemm::Avx2, F32Gemm::Crate] {
        set_f32_gemm(path);
        if f32_gemm() != path {
            eprintln!("NOT TESTED: the {} f32 GEMM (this CPU or level lacks it)", path.name());
            continue;
        }
        for threads in [1, 3] {
            with_threads(threads, || {
                for &(n, c, oc) in &[(1, 1, 1), (7, 13, 5), (13, 129, 33), (67, 129, 131), (37, 800, 700), (400, 40, 350), (2, 140_000, 9)] {
                    for layout in [WeightLayout::InOut, WeightLayout::OutIn] {
                        let (x, w, b) = (randn(n * c, 1), randn(c * oc, 2), randn(oc, 3));
                        // f32 sums of up to 800 terms of size ~1.
                        let tol = 1e-4 * (n.max(c).max(oc) as f32 / 100.0).max(1.0);
                        for bias in [None, Some(&b[..])] {
                            let (mut fast, mut slow) = (vec![0.0; n * oc], vec![0.0; n * oc]);
                            matmul_forward(&mut fast, &x, &w, bias, n, c, oc, layout);
                            matmul_forward_naive(&mut slow, &x, &w, bias, n, c, oc, layout);
                            assert!(max_diff(&fast, &slow) < tol, "{} forward {n}x{c}x{oc} {layout:?}", path.name());
                        }
                        let dy = randn(n * oc, 4);
                        let (mut dx1, mut dw1) = (vec![0.5; n * c], vec![0.5; c * oc]);
                        let (mut dx2, mut dw2) = (dx1.clone(), dw1.clone());
                        matmul_backward(Some(&mut dx1), &mut dw1, None, &dy, &x, &w, n, c, oc, layout);
                        matmul_backward_naive(&mut dx2, &mut dw2, None, &dy, &x, &w, n, c, oc, layout);
                        assert!(max_diff(&dx1, &dx2) < tol && max_diff(&dw1, &dw2) < tol, "{} backward {n}x{c}x{oc} {layout:?}", path.name());
                    }
                }
            });
        }
        eprintln!("tested: the {} f32 GEMM", path.name());
    }
}
