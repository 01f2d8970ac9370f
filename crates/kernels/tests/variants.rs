//! Fast kernels against their naive references, on random and awkward shapes
//! (sizes that are not multiples of the GEMM tile or the SIMD width), with the
//! rayon pool at 1 and at 3 threads.

use attn_kernels::attention::*;
use attn_kernels::crossentropy::*;
use attn_kernels::gelu::*;
use attn_kernels::layernorm::*;
use attn_kernels::matmul::*;
use attn_kernels::optim::*;

mod common;
use common::*;

#[test]
fn matmul_matches_naive() {
    for threads in [1, 3] {
        with_threads(threads, || {
            // Big enough to take the parallel path, and odd-sized; (300, 16,
            // 24) has many rows for a small weight, as `baby`'s layers do.
            for &(n, c, oc) in &[(1, 1, 1), (7, 13, 5), (67, 129, 131), (130, 64, 257), (300, 16, 24)] {
                for layout in [WeightLayout::InOut, WeightLayout::OutIn] {
                    let (x, w, b) = (randn(n * c, 1), randn(c * oc, 2), randn(oc, 3));
                    let (mut fast, mut slow) = (vec![0.0; n * oc], vec![0.0; n * oc]);
                    matmul_forward(&mut fast, &x, &w, Some(&b), n, c, oc, layout);
                    matmul_forward_naive(&mut slow, &x, &w, Some(&b), n, c, oc, layout);
                    // f32 sums of up to 129 terms of size ~1: rounding ~1e-5.
                    assert!(max_diff(&fast, &slow) < 1e-4, "forward {n}x{c}x{oc} {layout:?}");
                    let dy = randn(n * oc, 4);
                    let (mut dx1, mut dw1, mut db1) = (vec![0.5; n * c], vec![0.5; c * oc], vec![0.5; oc]);
                    let (mut dx2, mut dw2, mut db2) = (dx1.clone(), dw1.clone(), db1.clone());
                    matmul_backward(Some(&mut dx1), &mut dw1, Some(&mut db1), &dy, &x, &w, n, c, oc, layout);
                    matmul_backward_naive(&mut dx2, &mut dw2, Some(&mut db2), &dy, &x, &w, n, c, oc, layout);
                    assert!(max_diff(&dx1, &dx2) < 1e-4 && max_diff(&dw1, &dw2) < 1e-4 && max_diff(&db1, &db2) < 1e-4);
                    // The writing form: dx from garbage equals the naive sum
                    // from zero, and dW, dbias still accumulate.
                    let (mut dx3, mut dw3, mut db3) = (vec![f32::NAN; n * c], vec![0.5; c * oc], vec![0.5; oc]);
                    let mut dx4 = vec![0.0; n * c];
                    let (mut dw4, mut db4) = (vec![0.5; c * oc], vec![0.5; oc]);
                    matmul_backward_set(Some(&mut dx3), &mut dw3, Some(&mut db3), &dy, &x, &w, n, c, oc, layout);
                    matmul_backward_naive(&mut dx4, &mut dw4, Some(&mut db4), &dy, &x, &w, n, c, oc, layout);
                    assert!(max_diff(&dx3, &dx4) < 1e-4 && max_diff(&dw3, &dw4) < 1e-4 && max_diff(&db3, &db4) < 1e-4, "set {n}x{c}x{oc}");
                }
            }
        });
    }
}

#[test]
fn attention_matches_naive() {
    for threads in [1, 3] {
        with_threads(threads, || {
            // t = 32 and 33 sit on either side of the switch from row loops to
            // GEMMs; (nh, nkv) covers plain multi-head, grouped and single-KV-head.
            for &(b, t, nh, nkv, hs) in &[(1, 1, 4, 4, 1), (2, 7, 3, 3, 4), (1, 32, 4, 2, 4), (3, 33, 6, 2, 8), (2, 70, 4, 1, 6)] {
                for causal in [true, false] {
                    let s = AttnShape { b, t, nh, nkv, hs, causal };
                    let (w, oc) = (s.qkv_width(), s.out_width());
                    let qkv = randn(b * t * w, 5);
                    let (mut o1, mut a1) = (vec![0.0; b * t * oc], vec![0.0; b * nh * t * t]);
                    let (mut o2, mut a2) = (o1.clone(), a1.clone());
                    attention_forward(&mut o1, &mut a1, &qkv, s);
                    attention_forward_naive(&mut o2, &mut a2, &qkv, s);
                    assert!(max_diff(&o1, &o2) < 1e-5 && max_diff(&a1, &a2) < 1e-5, "{s:?}");
                    // Causal rows: zero above the diagonal, each row sums to 1.
                    for (i, row) in a1.chunks(t).enumerate() {
                        let q = i % t;
                        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
                        if causal {
                            assert!(row[q + 1..].iter().all(|&x| x == 0.0));
                        }
                    }
                }
            }
        });
    }
}

#[test]
fn layernorm_gelu_crossentropy_match_naive() {
    let (n, c) = (37, 75);
    let (x, w, b) = (randn(n * c, 6), randn(c, 7), randn(c, 8));
    let (mut o1, mut m1, mut r1) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
    let (mut o2, mut m2, mut r2) = (o1.clone(), m1.clone(), r1.clone());
    layernorm_forward(&mut o1, &mut m1, &mut r1, &x, &w, &b, n, c, 1e-5);
    layernorm_forward_naive(&mut o2, &mut m2, &mut r2, &x, &w, &b, n, c, 1e-5);
    assert!(max_diff(&o1, &o2) < 1e-5 && max_diff(&r1, &r2) < 1e-4);

    let mut g1 = vec![0.0; n * c];
    let mut g2 = g1.clone();
    gelu_forward(&mut g1, &x);
    gelu_forward_naive(&mut g2, &x);
    assert!(max_diff(&g1, &g2) < 1e-6);
    gelu_erf_forward(&mut g1, &x);
    gelu_erf_forward_naive(&mut g2, &x);
    assert!(max_diff(&g1, &g2) < 1e-6);
    // The exact and tanh forms differ by up to ~1e-3 for |x| near 2: the
    // exact one must not be the approximation under another name.
    let probe = [2.0f32, -2.0, 3.0];
    let (mut e, mut a) = ([0.0; 3], [0.0; 3]);
    gelu_erf_forward(&mut e, &probe);
    gelu_forward(&mut a, &probe);
    assert!(max_diff(&e, &a) > 1e-4);

    let v = 75;
    let targets: Vec<u32> = (0..n as u32).map(|i| (i * 7) % v as u32).collect();
    let (mut l1, mut lse, mut l2) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    crossentropy_forward(&mut l1, &mut lse, &x, &targets, n, v);
    crossentropy_forward_naive(&mut l2, &x, &targets, n, v);
    assert!(max_diff(&l1, &l2) < 1e-5);
}

#[test]
fn adamw_matches_scalar_formula() {
    // Two steps of the textbook update, written out in f64.
    let (mut p, g) = (vec![0.5f32, -1.0, 2.0], vec![0.1f32, -0.2, 0.0]);
    let (mut m, mut v) = (vec![0.0; 3], vec![0.0; 3]);
    let (lr, b1, b2, eps, wd) = (1e-2f64, 0.9f64, 0.95f64, 1e-8f64, 0.1f64);
    let mut rp: Vec<f64> = p.iter().map(|&x| x as f64).collect();
    let (mut rm, mut rv) = (vec![0.0f64; 3], vec![0.0f64; 3]);
    for step in 1..=2u64 {
        adamw_update(
            &mut p,
            &g,
            &mut m,
            &mut v,
            AdamW { lr: lr as f32, beta1: b1 as f32, beta2: b2 as f32, eps: eps as f32, weight_decay: wd as f32, step, grad_scale: 1.0 },
        );
        for i in 0..3 {
            let gi = g[i] as f64;
            rp[i] *= 1.0 - lr * wd;
            rm[i] = b1 * rm[i] + (1.0 - b1) * gi;
            rv[i] = b2 * rv[i] + (1.0 - b2) * gi * gi;
            let mh = rm[i] / (1.0 - b1.powi(step as i32));
            let vh = rv[i] / (1.0 - b2.powi(step as i32));
            rp[i] -= lr * mh / (vh.sqrt() + eps);
        }
    }
    for i in 0..3 {
        assert!((p[i] as f64 - rp[i]).abs() < 1e-6, "{i}: {} vs {}", p[i], rp[i]);
    }
}

/// bf16 moments: each step is the f32 update with the moments rounded to
/// bf16 (nearest even) as they are stored, and then used as stored.
#[test]
fn adamw_with_bf16_moments_rounds_them_as_stored() {
    use attn_kernels::optim::Bf16;
    use attn_kernels::quant::{bf16_bits, bf16_to_f32};
    let n = 1000;
    let g: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) * 1e-3).collect();
    let (mut p, mut rp) = (vec![0.3f32; n], vec![0.3f32; n]);
    let (mut m, mut v) = (vec![Bf16::default(); n], vec![Bf16::default(); n]);
    let (mut rm, mut rv) = (vec![0.0f32; n], vec![0.0f32; n]);
    let (b1, b2, eps, lr, wd) = (0.9f32, 0.95f32, 1e-8f32, 1e-2f32, 0.1f32);
    for step in 1..=5u64 {
        let h = AdamW { lr, beta1: b1, beta2: b2, eps, weight_decay: wd, step, grad_scale: 0.5 };
        adamw_update(&mut p, &g, &mut m, &mut v, h);
        let bc1 = 1.0 - (b1 as f64).powi(step as i32);
        let bc2 = (1.0 - (b2 as f64).powi(step as i32)).sqrt() as f32;
        for i in 0..n {
            let gi = g[i] * 0.5;
            rp[i] *= 1.0 - lr * wd;
            rm[i] = bf16_to_f32(bf16_bits(rm[i] + (gi - rm[i]) * (1.0 - b1)));
            rv[i] = bf16_to_f32(bf16_bits(rv[i] * b2 + (1.0 - b2) * gi * gi));
            rp[i] -= (lr as f64 / bc1) as f32 * rm[i] / (rv[i].sqrt() / bc2 + eps);
        }
    }
    for i in 0..n {
        assert_eq!(p[i].to_bits(), rp[i].to_bits(), "parameter {i}");
        assert_eq!(bf16_to_f32(m[i].0).to_bits(), rm[i].to_bits(), "first moment {i}");
    }
}

#[test]
fn sgd_momentum_and_clipping() {
    let (mut p, g) = (vec![1.0f32, 1.0], vec![1.0f32, -2.0]);
    let mut buf = vec![0.0; 2];
    sgd_update(&mut p, &g, &mut buf, Sgd { lr: 0.1, momentum: 0.9, weight_decay: 0.0, first_step: true, grad_scale: 1.0 });
    sgd_update(&mut p, &g, &mut buf, Sgd { lr: 0.1, momentum: 0.9, weight_decay: 0.0, first_step: false, grad_scale: 1.0 });
    // buf: g, then 0.9 g + g = 1.9 g; p = 1 - 0.1 g - 0.19 g = 1 - 0.29 g
    assert!((p[0] - 0.71).abs() < 1e-6 && (p[1] - 1.58).abs() < 1e-6);

    let grads = vec![3.0f32, 4.0];
    let norm = grad_norm(&grads);
    assert!((norm - 5.0).abs() < 1e-6);
    // Several chunks and a ragged tail, against one f64 sum.
    let long = randn(100_003, 7);
    let want = long.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
    assert!((grad_norm(&long) as f64 - want).abs() < 1e-6 * want, "{} vs {want}", grad_norm(&long));
    // Split between the team's threads at whole chunks: the same bits.
    for n in [2, 3, 5] {
        assert_eq!(attn_kernels::optim::grad_norm_on_team(&long, n).to_bits(), grad_norm(&long).to_bits(), "{n} threads");
    }
    let coef = clip_coefficient(norm, 1.0);
    assert!((coef - 0.2).abs() < 1e-6);
    assert_eq!(clip_coefficient(0.5, 1.0), 1.0, "no clipping below the threshold");
    assert_eq!(clip_coefficient(50.0, 0.0), 1.0, "0 disables clipping");
    // The fused scale gives the same update as pre-scaled gradients.
    let (mut p1, mut p2, mut b1, mut b2) = (vec![1.0f32, 1.0], vec![1.0f32, 1.0], vec![0.0; 2], vec![0.0; 2]);
    let scaled: Vec<f32> = grads.iter().map(|g| g * coef).collect();
    sgd_update(&mut p1, &grads, &mut b1, Sgd { lr: 0.1, momentum: 0.9, weight_decay: 0.0, first_step: true, grad_scale: coef });
    sgd_update(&mut p2, &scaled, &mut b2, Sgd { lr: 0.1, momentum: 0.9, weight_decay: 0.0, first_step: true, grad_scale: 1.0 });
    assert_eq!(p1, p2);
}

/// Several rows against the naive product, and each row of a batch bit for
/// bit equal to the same row run alone (batch invariance: a server's output
/// must not depend on what else it is decoding).
#[test]
fn matvec_matches_naive_and_is_batch_invariant() {
    use attn_kernels::matvec::{matvec_forward, matvec_scratch_len};
    for threads in [1, 3] {
        with_threads(threads, || {
            for &(c, oc) in &[(1, 1), (13, 7), (129, 300), (64, 1031)] {
                for layout in [WeightLayout::InOut, WeightLayout::OutIn] {
                    for n in [1, 2, 5] {
                        let (x, w, b) = (randn(n * c, 11), randn(c * oc, 12), randn(oc, 13));
                        let (mut fast, mut slow) = (vec![0.0; n * oc], vec![0.0; n * oc]);
                        // Sized for more rows than used, as a server's batch buffers are.
                        let mut scratch = vec![0.0; matvec_scratch_len(8, oc)];
                        matvec_forward(&mut fast, &mut scratch, &x, &w, Some(&b), n, c, oc, layout);
                        matmul_forward_naive(&mut slow, &x, &w, Some(&b), n, c, oc, layout);
                        assert!(max_diff(&fast, &slow) < 1e-4, "{c}x{oc} {layout:?} n={n}");
                        for r in 0..n {
                            let mut alone = vec![0.0; oc];
                            let mut scratch1 = vec![0.0; matvec_scratch_len(1, oc)];
                            matvec_forward(&mut alone, &mut scratch1, &x[r * c..(r + 1) * c], &w, Some(&b), 1, c, oc, layout);
                            assert_eq!(alone, fast[r * oc..(r + 1) * oc], "{c}x{oc} {layout:?} row {r} of {n}");
                        }
                    }
                }
            }
        });
    }
}

/// The inference kernel (queries at positions P0.., keys from a cache)
/// against rows of the full causal attention: decoding (T = 1), a prompt of
/// more than one query block, and a chunk that starts mid-sequence; and a
/// position scores alike decoded and inside a prompt.
#[test]
fn cached_attention_matches_rows_of_causal_attention() {
    use attn_kernels::kv_cache::{attention_cached, attention_cached_scratch_len, kv_layer_len, kv_store};
    // Head sizes 64 and 128 take decoding's fixed-size paths, 8 and 13 the
    // general one (13: dimensions past the last group of four).
    for (threads, hs) in [(1, 8), (3, 13), (1, 64), (3, 128)] {
        with_threads(threads, || {
            let (t, nh, nkv) = (150, 6, 2);
            let s = AttnShape { b: 1, t, nh, nkv, hs, causal: true };
            let (w, oc, kvw) = (s.qkv_width(), s.out_width(), nkv * hs);
            let qkv = randn(t * w, 21);
            let (mut full, mut att) = (vec![0.0; t * oc], vec![0.0; nh * t * t]);
            attention_forward_naive(&mut full, &mut att, &qkv, s);
            // The cache of every position, with room for more (S > t, not a
            // whole number of tiles).
            let cap = 163;
            let (mut k, mut v) = (vec![0.0; kv_layer_len(nkv, hs, cap)], vec![0.0; kv_layer_len(nkv, hs, cap)]);
            for j in 0..t {
                kv_store(&mut k, &mut v, &qkv[j * w + oc..j * w + oc + kvw], &qkv[j * w + oc + kvw..j * w + oc + 2 * kvw], j, nkv, hs, cap);
            }
            let mut scratch = vec![0.0; attention_cached_scratch_len(nh, cap)];
            let mut last = vec![];
            for (p0, rows) in [(0, t), (t - 1, 1), (37, 100)] {
                let mut out = vec![0.0; rows * oc];
                attention_cached(&mut out, &mut scratch, &qkv[p0 * w..], &k, &v, w, rows, p0, nh, nkv, hs, cap);
                let d = max_diff(&out, &full[p0 * oc..(p0 + rows) * oc]);
                assert!(d < 1e-5, "hs {hs} p0 {p0} rows {rows}: {d:e}");
                last.push(out[(t - 1 - p0).min(rows - 1) * oc..][..oc].to_vec());
            }
            // The last position, as the prompt's last row and decoded alone.
            assert!(max_diff(&last[0], &last[1]) < 1e-6, "hs {hs}");
        });
    }
}

/// A bf16 cache computes what an f32 cache holding the same rounded keys
/// and values computes, bit for bit (its elements are widened exactly as
/// they are read), prompt and decoding alike; and it stays close to the
/// unrounded f32 cache.
#[test]
fn bf16_cache_equals_f32_cache_of_rounded_rows() {
    use attn_kernels::kv_cache::{attention_cached, attention_cached_scratch_len, kv_layer_len, kv_store};
    use attn_kernels::quant::{bf16_bits, bf16_to_f32};
    for (threads, hs) in [(1, 13), (3, 64), (1, 128)] {
        with_threads(threads, || {
            let (t, nh, nkv, cap) = (90, 4, 2, 97);
            let (oc, kvw) = (nh * hs, nkv * hs);
            let w = oc + 2 * kvw;
            let qkv = randn(t * w, 33);
            let rounded: Vec<f32> = qkv.iter().map(|&x| bf16_to_f32(bf16_bits(x))).collect();
            let len = kv_layer_len(nkv, hs, cap);
            let (mut kb, mut vb) = (vec![0u16; len], vec![0u16; len]);
            let (mut kr, mut vr) = (vec![0.0f32; len], vec![0.0f32; len]);
            let (mut kf, mut vf) = (vec![0.0f32; len], vec![0.0f32; len]);
            for j in 0..t {
                let (k, v) = (j * w + oc..j * w + oc + kvw, j * w + oc + kvw..j * w + oc + 2 * kvw);
                kv_store(&mut kb, &mut vb, &qkv[k.clone()], &qkv[v.clone()], j, nkv, hs, cap);
                kv_store(&mut kr, &mut vr, &rounded[k.clone()], &rounded[v.clone()], j, nkv, hs, cap);
                kv_store(&mut kf, &mut vf, &qkv[k], &qkv[v], j, nkv, hs, cap);
            }
            let mut scratch = vec![0.0; attention_cached_scratch_len(nh, cap)];
            for (p0, rows) in [(0, t), (t - 1, 1), (20, 70)] {
                let mut run = |k: &dyn Fn(&mut [f32], &mut [f32])| {
                    let mut out = vec![0.0; rows * oc];
                    k(&mut out, &mut scratch);
                    out
                };
                let q = &qkv[p0 * w..];
                let b = run(&|o, sc| attention_cached(o, sc, q, &kb, &vb, w, rows, p0, nh, nkv, hs, cap));
                let r = run(&|o, sc| attention_cached(o, sc, q, &kr, &vr, w, rows, p0, nh, nkv, hs, cap));
                let f = run(&|o, sc| attention_cached(o, sc, q, &kf, &vf, w, rows, p0, nh, nkv, hs, cap));
                assert!(b.iter().zip(&r).all(|(x, y)| x.to_bits() == y.to_bits()), "hs {hs} p0 {p0}: bf16 cache differs from its rounded f32 twin");
                // bf16 keeps 8 bits of mantissa: outputs (|x| ~ 1) move by about 2^-9.
                let d = max_diff(&b, &f);
                assert!(d > 0.0 && d < 2e-2, "hs {hs} p0 {p0}: bf16 vs f32 cache {d:e}");
            }
        });
    }
}

#[test]
fn llama_kernels_match_naive() {
    use attn_kernels::rmsnorm::*;
    use attn_kernels::rope::*;
    use attn_kernels::swiglu::*;
    for threads in [1, 3] {
        with_threads(threads, || {
            let (n, c) = (37, 75);
            let (x, w) = (randn(n * c, 61), randn(c, 62));
            let (mut o1, mut r1, mut o2, mut r2) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n * c], vec![0.0; n]);
            rmsnorm_forward(&mut o1, &mut r1, &x, &w, n, c, 1e-6);
            rmsnorm_forward_naive(&mut o2, &mut r2, &x, &w, n, c, 1e-6);
            assert!(max_diff(&o1, &o2) < 1e-5 && max_diff(&r1, &r2) < 1e-4);

            let up = randn(n * c, 63);
            swiglu_forward(&mut o1, &x, &up);
            swiglu_forward_naive(&mut o2, &x, &up);
            assert!(max_diff(&o1, &o2) < 1e-6);

            // 3 heads of 8 at column 5 of rows of width 40, positions from 100.
            let (b, t, stride, offset, nh, hs, pos0, theta) = (2, 9, 40, 5, 3, 8, 100, 500_000.0);
            let (cos, sin) = rope_table(128, hs, theta);
            let mut a = randn(b * t * stride, 64);
            let mut z = a.clone();
            rope_forward(&mut a, &cos, &sin, b, t, stride, offset, nh, hs, pos0);
            rope_forward_naive(&mut z, b, t, stride, offset, nh, hs, pos0, theta);
            assert!(max_diff(&a, &z) < 1e-6);
            // Columns outside the rotated heads are untouched.
            let orig = randn(b * t * stride, 64);
            assert!(a.chunks(stride).zip(orig.chunks(stride)).all(|(r, o)| r[..offset] == o[..offset] && r[offset + nh * hs..] == o[offset + nh * hs..]));
            // Unscaled frequencies are the default table's; llama3 keeps the
            // high frequencies, divides the low ones by the factor.
            let l3 = RopeScaling::Llama3 { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position: 64 };
            let (base, scaled) = (rope_inv_freq(hs, theta, RopeScaling::None, 1), rope_inv_freq(hs, theta, l3, 1));
            assert_eq!(base[0], scaled[0]);
            assert!((scaled[hs / 2 - 1] - base[hs / 2 - 1] / 8.0).abs() < 1e-12);
            assert_eq!(rope_inv_freq(hs, theta, RopeScaling::Dynamic { factor: 2.0, max_position: 64 }, 64), base);
            assert!(rope_inv_freq(hs, theta, RopeScaling::Dynamic { factor: 2.0, max_position: 64 }, 128)[1] < base[1]);
        });
    }
}

#[test]
fn few_rows_match_naive_bit_for_bit_and_alone() {
    use attn_kernels::few_rows::{few_rows_forward, few_rows_forward_naive};
    // The level reruns (`rerun_at_every_level`) take it through each kernel
    // this CPU has; the top level names the ones it lacks.
    let path = attn_kernels::few_rows::path();
    eprintln!("few-rows kernel tested on: {path}");
    let detected = attn_kernels::simd::detected();
    if attn_kernels::simd::active() == detected && detected < attn_kernels::simd::Level::Avx512 {
        eprintln!("NOT TESTED: the AVX-512 few-rows kernel (this CPU lacks AVX-512F)");
    }
    for threads in [1, 3] {
        with_threads(threads, || {
            // Weight rows on both sides of the register block (6 / 8) and the
            // task (48); rows on both sides of the 32-row panel; enough
            // weights to go parallel.
            for &(n, c, oc) in &[(5, 1, 1), (32, 7, 50), (33, 129, 131), (64, 200, 400), (40, 512, 97)] {
                let (x, w, b) = (randn(n * c, 1), randn(c * oc, 2), randn(oc, 3));
                let (mut fast, mut slow) = (vec![0.0; n * oc], vec![0.0; n * oc]);
                few_rows_forward(&mut fast, &x, &w, Some(&b), n, c, oc);
                few_rows_forward_naive(&mut slow, &x, &w, Some(&b), n, c, oc);
                assert_eq!(fast, slow, "{n}x{c}x{oc} on {threads} threads");
                // The last row alone gives the same bits as in the batch.
                let mut alone = vec![0.0; oc];
                few_rows_forward(&mut alone, &x[(n - 1) * c..], &w, Some(&b), 1, c, oc);
                assert_eq!(alone, fast[(n - 1) * oc..], "{n}x{c}x{oc}: a row alone");
            }
        });
    }
}

#[test]
fn residual_and_embeddings_match_plain_sums() {
    // 40,000 values: more than one parallel chunk, and a ragged last one.
    let (a, x) = (randn(40_000, 1), randn(40_000, 2));
    let mut out = a.clone();
    attn_kernels::residual::residual_forward(&mut out, &x);
    assert!(out.iter().zip(a.iter().zip(&x)).all(|(o, (a, x))| *o == a + x));
    // Token + position rows, and their gradients summed over repeated tokens.
    let (b, t, c, v) = (2, 5, 37, 4);
    let (wte, pos) = (randn(v * c, 3), randn(t * c, 4));
    let tokens: Vec<u32> = (0..b * t).map(|i| (i * 3 % v) as u32).collect();
    let mut emb = vec![0.0; b * t * c];
    attn_kernels::embedding::embedding_forward(&mut emb, &tokens, &wte, &pos, b, t, c);
    let dout = randn(b * t * c, 5);
    let (mut dwte, mut dpos) = (vec![0.0; v * c], vec![0.0; t * c]);
    attn_kernels::embedding::embedding_backward(&mut dwte, Some(&mut dpos), &dout, &tokens, b, t, c);
    let (mut want_dwte, mut want_dpos) = (vec![0.0f32; v * c], vec![0.0f32; t * c]);
    for i in 0..b * t {
        let tok = tokens[i] as usize;
        for j in 0..c {
            assert_eq!(emb[i * c + j], wte[tok * c + j] + pos[(i % t) * c + j]);
            want_dwte[tok * c + j] += dout[i * c + j];
            want_dpos[(i % t) * c + j] += dout[i * c + j];
        }
    }
    assert_eq!((dwte, dpos), (want_dwte, want_dpos));
}

/// The checks above again at every lower SIMD level this CPU has.
#[test]
fn every_simd_level() {
    common::rerun_at_every_level();
}
