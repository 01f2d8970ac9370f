//! The arithmetic-peak probes (`attn_kernels::peak`): their loops run and
//! compute what they claim, on every vector path this CPU has. No timing is
//! asserted; only that the rates come back finite and positive.

use attn_kernels::peak::{bf16_dot_gflops, every_probe, expected_chain, fma_gflops, PROBE_CHAINS};
use std::time::Duration;

#[test]
fn every_probe_loop_computes_its_chains() {
    for n in [0, 1, 1000, 1 << 16] {
        for (name, got) in every_probe(n) {
            // Exact: each chain adds 2^-10 per trip from 1, a multiple of 2^-10 below 2^14.
            assert_eq!(got, PROBE_CHAINS as f32 * expected_chain(n), "{name} after {n} trips");
        }
    }
    let seen: Vec<&str> = every_probe(1).into_iter().map(|p| p.0).collect();
    let missing: Vec<&str> = ["avx512", "avx2", "avx512-bf16"].into_iter().filter(|p| !seen.contains(p)).collect();
    eprintln!("peak probes tested on: {seen:?}; not tested (this CPU lacks them): {missing:?}");
}

#[test]
fn rates_are_finite_and_positive_where_there_is_a_path() {
    let has = |name: &str| every_probe(1).iter().any(|p| p.0 == name);
    let fma = fma_gflops(Duration::from_millis(2));
    // The f32 probe runs on the active level (ATTN_SIMD may lower it).
    let vector = attn_kernels::simd::active() >= attn_kernels::simd::Level::Avx2;
    assert_eq!(fma.is_some(), vector, "an FMA rate exactly where the active level has a vector FMA");
    assert_eq!(bf16_dot_gflops(Duration::from_millis(2)).is_some(), has("avx512-bf16"));
    for r in [fma, bf16_dot_gflops(Duration::from_millis(2))].into_iter().flatten() {
        assert!(r.is_finite() && r > 0.0, "{r}");
    }
}
