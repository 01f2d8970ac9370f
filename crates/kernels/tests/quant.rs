//! Quantized weights: rounding bounds, the kernel against its naive twin,
//! both source layouts, and batch invariance.

mod common;

use attn_kernels::matmul::WeightLayout;
use attn_kernels::quant::{bf16_bits, bf16_to_f32, qmatvec_forward, qmatvec_naive, QData, QMatrix, Reading};
use rand::{Rng, SeedableRng};

fn randn(n: usize, seed: u64) -> Vec<f32> {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| r.gen_range(-1.0f32..1.0) * 0.1).collect()
}

fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; w.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = w[r * cols + c];
        }
    }
    t
}

#[test]
fn bf16_rounds_to_nearest_even() {
    assert_eq!(bf16_bits(1.0), 0x3f80);
    // 1 + 2^-8 is halfway between two bf16 values: ties go to the even one.
    assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3f80);
    assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3f82);
    assert!(bf16_to_f32(bf16_bits(f32::NAN)).is_nan());
    for x in randn(1000, 1) {
        assert!((bf16_to_f32(bf16_bits(x)) - x).abs() <= x.abs() / 256.0);
    }
}

#[test]
fn int8_error_is_within_half_a_step() {
    let (oc, c) = (7, 100); // groups of 32 leave a tail of 4
    let w = randn(oc * c, 2);
    let q = QMatrix::int8(&w, c, oc, WeightLayout::OutIn, 32);
    let QData::Int8 { scales, .. } = &q.data else { panic!("int8") };
    let mut d = vec![0.0; oc * c];
    q.dequantize_rows(&mut d, 0);
    for r in 0..oc {
        for i in 0..c {
            let s = scales[r * 4 + i / 32];
            assert!((d[r * c + i] - w[r * c + i]).abs() <= s * 0.5 + 1e-9, "row {r} col {i}");
        }
    }
}

#[test]
fn both_layouts_quantize_to_the_same_matrix() {
    // 53 output rows: the transpose's blocks of 16 end with a partial one.
    for (oc, c) in [(48, 64), (53, 40)] {
        let w = randn(oc * c, 3); // (OC, C)
        let t = transpose(&w, oc, c); // (C, OC)
        assert_eq!(QMatrix::int8(&w, c, oc, WeightLayout::OutIn, 32), QMatrix::int8(&t, c, oc, WeightLayout::InOut, 32));
        assert_eq!(QMatrix::bf16(&w, c, oc, WeightLayout::OutIn), QMatrix::bf16(&t, c, oc, WeightLayout::InOut));
    }
}

#[test]
fn kernel_matches_naive_and_is_batch_invariant() {
    // C = 96 in groups of 64 ends each row on a short group: the fixed-point
    // path once took it and summed only whole groups (a silent wrong answer).
    // Row counts of 37 and 3 leave blocks that are not whole multiples of
    // the four rows the in-cache kernels take side by side.
    for (c, oc) in [(64, 96), (96, 40), (203, 70), (768, 130), (96, 37), (768, 3)] {
        let w = randn(oc * c, 4);
        let bias = randn(oc, 5);
        let n = 5;
        let x = randn(n * c, 6);
        for q in [
            QMatrix::bf16(&w, c, oc, WeightLayout::OutIn),
            QMatrix::int8(&w, c, oc, WeightLayout::OutIn, 32),
            QMatrix::int8(&w, c, oc, WeightLayout::OutIn, 64),
        ] {
            let (mut fast, mut slow, mut scratch) = (vec![0.0; n * oc], vec![0.0; n * oc], vec![0.0; n * oc]);
            qmatvec_forward(&mut fast, &mut scratch, &x, &q, Some(&bias), n);
            qmatvec_naive(&mut slow, &x, &q, Some(&bias), n);
            for (a, b) in fast.iter().zip(&slow) {
                assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "c={c} oc={oc}: {a} vs {b}");
            }
            // A row alone takes the one-input kernel, with rows read four
            // side by side or one at a time (`Reading`): the same bits.
            for reading in [Reading::InCache, Reading::Streamed] {
                let q = QMatrix { reading, ..q.clone() };
                for b in 0..n {
                    let mut one = vec![0.0; oc];
                    qmatvec_forward(&mut one, &mut [], &x[b * c..(b + 1) * c], &q, Some(&bias), 1);
                    let same = one.iter().zip(&fast[b * oc..(b + 1) * oc]).all(|(p, q)| p.to_bits() == q.to_bits());
                    assert!(same, "row {b} of a batch of {n} differs from the row alone (c={c}, {reading:?})");
                }
            }
        }
    }
}

/// Every vector level this CPU has equals the portable definition bit for
/// bit; levels it lacks are named as untested.
#[test]
fn every_level_equals_the_definition() {
    use attn_kernels::quant::dots_on_every_level;
    let mut seen = Vec::new();
    for c in [31, 64, 203, 768] {
        let x = randn(c, 7);
        let w = randn(c, 8);
        let h: Vec<u16> = w.iter().map(|&v| bf16_bits(v)).collect();
        for group in [32, 64, 40] {
            let q = QMatrix::int8(&w, c, 1, WeightLayout::OutIn, group);
            let QData::Int8 { q, scales, .. } = &q.data else { panic!("int8") };
            let all = dots_on_every_level(q, scales, group, &h, &x);
            for (name, a, b) in &all[1..] {
                assert_eq!(a.to_bits(), all[0].1.to_bits(), "int8 {name} c={c} group={group}");
                assert_eq!(b.to_bits(), all[0].2.to_bits(), "bf16 {name} c={c}");
            }
            seen = all.iter().map(|l| l.0).collect();
        }
    }
    let missing: Vec<_> = ["avx512", "avx2"].into_iter().filter(|l| !seen.contains(l)).collect();
    eprintln!("quantized dot products tested on: {seen:?}; not tested (this CPU lacks them): {missing:?}");
}

/// The checks above again at every lower SIMD level this CPU has.
#[test]
fn every_simd_level() {
    common::rerun_at_every_level();
}

/// The fixed-point int8 product: every level equals the definition bit for
/// bit, the definition is the exact integer sum it claims, and the rounding
/// of the input stays within 1/65534 of each group's largest value.
#[test]
fn fixed_point_products_agree_on_every_level() {
    use attn_kernels::quant::fixed16::{dot_fixed16, eligible, on_every_level, rows_fixed16};
    use attn_kernels::quant::Fixed16;
    let mut seen = Vec::new();
    for c in [32, 64, 96, 768] {
        let mut x = randn(c, 9);
        x[c / 2] *= 40.0; // an outlier, as real activations have
        let w = randn(c, 10);
        for group in [32, 64, 96] {
            if !eligible(c, group) {
                assert!(c % group != 0, "c={c} group={group} should take this path");
                continue;
            }
            let q = QMatrix::int8(&w, c, 1, WeightLayout::OutIn, group);
            let QData::Int8 { q, scales, .. } = &q.data else { panic!("int8") };
            let mut f = Fixed16::default();
            f.quantize(&x, group);
            for (i, (&v, &fq)) in x.iter().zip(&f.q).enumerate() {
                let s = f.scales[i / group];
                assert!((fq as f32 * s - v).abs() <= s * 0.51, "input {i} rounded too far: {v} as {fq} * {s}");
            }
            let all = on_every_level(q, scales, group, &f);
            for (name, v) in &all[1..] {
                assert_eq!(v.to_bits(), all[0].1.to_bits(), "{name} c={c} group={group}");
            }
            let exact: f64 = (0..c).map(|i| q[i] as f64 * scales[i / group] as f64 * f.q[i] as f64 * f.scales[i / group] as f64).sum();
            let d = dot_fixed16(q, scales, group, &f) as f64;
            assert!((d - exact).abs() <= 1e-5 * (1.0 + exact.abs()), "c={c} group={group}: {d} vs {exact}");
            seen = all.iter().map(|l| l.0).collect();
        }
    }
    // Whole blocks of rows (7: a short last block) on the active level, the
    // group a compile-time constant (32, 64) or not (96), equal row by row.
    let c = 192;
    let x = randn(c, 11);
    for group in [32, 64, 96] {
        let m = QMatrix::int8(&randn(7 * c, 12), c, 7, WeightLayout::OutIn, group);
        let QData::Int8 { q, scales, .. } = &m.data else { panic!("int8") };
        let mut f = Fixed16::default();
        f.quantize(&x, group);
        for reading in [Reading::InCache, Reading::Streamed] {
            let mut out = vec![0.0f32; 7 * 3];
            rows_fixed16(&mut out, 3, q, scales, c, group, &f, reading);
            let g = c / group;
            for r in 0..7 {
                let want = dot_fixed16(&q[r * c..(r + 1) * c], &scales[r * g..(r + 1) * g], group, &f);
                assert_eq!(out[r * 3].to_bits(), want.to_bits(), "row {r} group {group} {reading:?}");
            }
        }
    }
    let mut f = Fixed16::default();
    f.quantize(&[1.0, f32::NAN].repeat(16), 32);
    assert!(f.scales[0].is_nan(), "a NaN input must make the product NaN");
    let missing: Vec<_> = ["avx512", "avx2"].into_iter().filter(|l| !seen.contains(l)).collect();
    eprintln!("fixed-point int8 products tested on: {seen:?}; not tested (this CPU lacks them): {missing:?}");
}

/// A large group of equal-signed maxima: each of the fixed-point path's 16
/// lanes sums group / 16 products of up to 127 * 32767 in 32 bits, which
/// would pass 2^31 at groups above 8,256, so such groups must take the f32
/// path and still give the sum.
#[test]
fn large_int8_groups_do_not_overflow() {
    for (c, group) in [(1024, 1024), (8256, 8256), (16384, 8192), (32768, 32768)] {
        let (oc, w, x) = (3, vec![0.5f32; 3 * c], vec![2.0f32; c]);
        let q = QMatrix::int8(&w, c, oc, WeightLayout::OutIn, group);
        for reading in [Reading::InCache, Reading::Streamed] {
            let q = QMatrix { reading, ..q.clone() };
            let mut out = vec![0.0f32; oc];
            qmatvec_forward(&mut out, &mut [], &x, &q, None, 1);
            for &v in &out {
                assert!((v - c as f32).abs() <= 1e-3 * c as f32, "c={c} group={group} {reading:?}: {v}, want {c}");
            }
        }
    }
}
