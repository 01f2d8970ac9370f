//! The encoder-decoder kernels: cross-attention with padding masks against its
//! naive twin and finite differences, padded batches against each sequence
//! alone, the FFN activations, and label-smoothed cross-entropy with ignored
//! targets.

use attn_kernels::activation::*;
use attn_kernels::cross_attention::*;
use attn_kernels::crossentropy::*;
use attn_kernels::gradcheck::*;

mod common;
use common::*;

fn shapes() -> Vec<CrossShape> {
    vec![
        // Cross-attention: 5 queries over 7 keys, GQA 4:2, odd head size.
        CrossShape { b: 3, tq: 5, tk: 7, nh: 4, nkv: 2, hs: 3, causal: false },
        // Masked causal self-attention.
        CrossShape { b: 2, tq: 6, tk: 6, nh: 2, nkv: 2, hs: 5, causal: true },
        // Long enough for several GEMM tiles.
        CrossShape { b: 2, tq: 70, tk: 67, nh: 3, nkv: 1, hs: 24, causal: false },
    ]
}

fn lens(s: &CrossShape) -> Vec<usize> {
    // Full, short, and (where B allows) empty key rows.
    (0..s.b).map(|i| [s.tk, s.tk / 2 + 1, 0][i % 3]).collect()
}

#[test]
fn cross_attention_matches_naive() {
    for s in shapes() {
        let (qw, kvw) = (s.q_width(), s.kv_width());
        let (q, kv, kl) = (randn_scaled(s.b * s.tq * qw, 1, 1.0), randn_scaled(s.b * s.tk * kvw, 2, 1.0), lens(&s));
        let n_att = s.b * s.nh * s.tq * s.tk;
        let (mut o1, mut a1) = (vec![0.0; s.b * s.tq * qw], vec![9.0; n_att]);
        let (mut o2, mut a2) = (vec![0.0; s.b * s.tq * qw], vec![0.0; n_att]);
        cross_attention_forward(&mut o1, &mut a1, &q, &kv, &kl, s);
        cross_attention_forward_naive(&mut o2, &mut a2, &q, &kv, &kl, s);
        assert!(max_diff(&o1, &o2) < 1e-5, "{s:?}: out differs by {}", max_diff(&o1, &o2));
        assert!(max_diff(&a1, &a2) < 1e-6, "{s:?}: probabilities differ");
        // Padded keys get exactly zero probability.
        for bi in 0..s.b {
            for row in a1[bi * s.nh * s.tq * s.tk..][..s.nh * s.tq * s.tk].chunks(s.tk) {
                assert!(row[kl[bi]..].iter().all(|&p| p == 0.0));
            }
        }
    }
}

#[test]
fn cross_attention_gradients() {
    for s in shapes().into_iter().take(2) {
        let (qw, kvw) = (s.q_width(), s.kv_width());
        let (mut q, mut kv, kl) = (randn_scaled(s.b * s.tq * qw, 3, 1.0), randn_scaled(s.b * s.tk * kvw, 4, 1.0), lens(&s));
        let n_att = s.b * s.nh * s.tq * s.tk;
        let proj = projection(s.b * s.tq * qw, 5);
        let (mut out, mut att) = (vec![0.0; s.b * s.tq * qw], vec![0.0; n_att]);
        cross_attention_forward(&mut out, &mut att, &q, &kv, &kl, s);
        let (mut dq, mut dkv, mut scratch) = (vec![0.0; q.len()], vec![0.0; kv.len()], vec![0.0; n_att]);
        cross_attention_backward(&mut dq, &mut dkv, &mut scratch, &proj, &q, &kv, &att, &kl, s);
        let kv0 = kv.clone();
        let r = check_gradient(&mut q, &dq, 1e-2, |q| {
            cross_attention_forward(&mut out, &mut att, q, &kv0, &kl, s);
            weighted_sum(&out, &proj)
        });
        assert!(r.max_err < 2e-3, "{s:?} dq: {r:?}");
        let q0 = q.clone();
        let r = check_gradient(&mut kv, &dkv, 1e-2, |kv| {
            cross_attention_forward(&mut out, &mut att, &q0, kv, &kl, s);
            weighted_sum(&out, &proj)
        });
        assert!(r.max_err < 2e-3, "{s:?} dkv: {r:?}");
        // Padded key rows receive no gradient.
        for bi in 0..s.b {
            for j in kl[bi]..s.tk {
                assert!(dkv[(bi * s.tk + j) * kvw..][..kvw].iter().all(|&x| x == 0.0));
            }
        }
    }
}

/// A batch of right-padded sequences gives each real query the result it gets alone.
#[test]
fn padded_batch_equals_each_alone() {
    let (nh, nkv, hs, tq, tk) = (4, 2, 6, 9, 11);
    let s = CrossShape { b: 3, tq, tk, nh, nkv, hs, causal: false };
    let (qw, kvw) = (s.q_width(), s.kv_width());
    let kl = [11, 4, 7];
    let q = randn_scaled(3 * tq * qw, 6, 1.0);
    let mut kv = randn_scaled(3 * tk * kvw, 7, 1.0);
    // Garbage in the padding: it must not matter.
    for (bi, &l) in kl.iter().enumerate() {
        kv[(bi * tk + l) * kvw..(bi + 1) * tk * kvw].iter_mut().for_each(|x| *x = 1e3);
    }
    let (mut out, mut att) = (vec![0.0; 3 * tq * qw], vec![0.0; 3 * nh * tq * tk]);
    cross_attention_forward(&mut out, &mut att, &q, &kv, &kl, s);
    for (bi, &l) in kl.iter().enumerate() {
        let one = CrossShape { b: 1, tk: l, ..s };
        let (mut o1, mut a1) = (vec![0.0; tq * qw], vec![0.0; nh * tq * l]);
        cross_attention_forward(&mut o1, &mut a1, &q[bi * tq * qw..][..tq * qw], &kv[bi * tk * kvw..][..l * kvw], &[l], one);
        assert!(max_diff(&o1, &out[bi * tq * qw..][..tq * qw]) < 1e-6, "sequence {bi}");
    }
}

#[test]
fn activations_match_naive_and_differentiate() {
    for act in [Activation::Relu, Activation::Silu, Activation::GeluErf, Activation::GeluTanh] {
        let mut x = randn_scaled(1000, 8, 4.0);
        // Keep ReLU's kink away from the finite-difference step.
        x.iter_mut().filter(|v| v.abs() < 0.02).for_each(|v| *v = 0.5);
        let (mut fast, mut slow) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        activation_forward(act, &mut fast, &x);
        activation_forward_naive(act, &mut slow, &x);
        assert!(max_diff(&fast, &slow) < 1e-5, "{act:?} forward");
        let proj = projection(x.len(), 9);
        let mut dx = vec![f32::NAN; x.len()]; // written, not added to
        activation_backward(act, &mut dx, &x, &proj);
        let r = check_gradient(&mut x, &dx, 1e-3, |x| {
            activation_forward(act, &mut fast, x);
            weighted_sum(&fast, &proj)
        });
        assert!(r.max_err < 2e-3, "{act:?}: {r:?}");
        assert_eq!(Activation::from_hf(act.hf_name()), Some(act));
    }
}

#[test]
fn smoothed_crossentropy_gradient_and_ignore() {
    let (n, v, eps) = (6, 11, 0.1);
    let mut logits = randn_scaled(n * v, 10, 3.0);
    let targets = [3, IGNORE, 0, 10, IGNORE, 7];
    let dl = [0.5, 0.5, 1.0, 0.25, 2.0, 1.0];
    let loss_of = |lg: &[f32]| {
        let (mut losses, mut lse) = (vec![0.0; n], vec![0.0; n]);
        crossentropy_smoothed_forward(&mut losses, &mut lse, lg, &targets, n, v, eps);
        losses.iter().zip(&dl).map(|(&l, &d)| l as f64 * d as f64).sum::<f64>()
    };
    let (mut losses, mut lse) = (vec![0.0; n], vec![0.0; n]);
    crossentropy_smoothed_forward(&mut losses, &mut lse, &logits, &targets, n, v, eps);
    assert_eq!((losses[1], losses[4]), (0.0, 0.0));
    // The closed form against a direct sum over classes.
    let row = &logits[0..v];
    let lse0 = row.iter().map(|&x| (x as f64).exp()).sum::<f64>().ln();
    let want: f64 = (1.0 - eps as f64) * (lse0 - row[3] as f64) + eps as f64 / v as f64 * row.iter().map(|&x| lse0 - x as f64).sum::<f64>();
    assert!((losses[0] as f64 - want).abs() < 1e-5);
    let mut grad = logits.clone();
    crossentropy_smoothed_backward_inplace(&mut grad, &lse, &targets, &dl, n, v, eps);
    assert!(grad[v..2 * v].iter().chain(&grad[4 * v..5 * v]).all(|&g| g == 0.0));
    let r = check_gradient(&mut logits, &grad, 1e-2, loss_of);
    assert!(r.max_err < 2e-3, "{r:?}");
    // eps = 0 is the plain loss.
    let (mut plain, mut lse2, mut ref_losses) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    crossentropy_smoothed_forward(&mut plain, &mut lse2, &logits, &[3, 1, 0, 10, 2, 7], n, v, 0.0);
    crossentropy_forward(&mut ref_losses, &mut lse2, &logits, &[3, 1, 0, 10, 2, 7], n, v);
    assert!(max_diff(&plain, &ref_losses) < 1e-6);
}

/// The checks above again at every lower SIMD level this CPU has.
#[test]
fn every_simd_level() {
    common::rerun_at_every_level();
}
