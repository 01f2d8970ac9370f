//! Every backward kernel against central finite differences (f64 loss), on
//! tiny shapes that are not multiples of any tile or SIMD width.
//!
//! Tolerance: f32 forward rounding (~1e-7 relative) divided by eps = 1e-2
//! leaves ~1e-5; the second-order term of central differences is eps^2 * f''' ~ 1e-4.
//! 2e-3 leaves room for both while catching any wrong term (which is O(1)).

mod common;

use attn_kernels::attention::*;
use attn_kernels::crossentropy::*;
use attn_kernels::embedding::*;
use attn_kernels::gelu::*;
use attn_kernels::gradcheck::*;
use attn_kernels::layernorm::*;
use attn_kernels::matmul::*;
use rand::{Rng, SeedableRng};

const EPS: f32 = 1e-2;
const TOL: f64 = 2e-3;

fn randn(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.gen_range(-1.0f32..1.0) * scale).collect()
}

fn assert_ok(name: &str, r: GradCheck) {
    assert!(r.max_err < TOL, "{name}: worst error {:.2e} at {} (numeric {:.6}, analytic {:.6})", r.max_err, r.index, r.numeric, r.analytic);
}

#[test]
fn matmul_gradients_both_layouts() {
    let (n, c, oc) = (5, 7, 3);
    for layout in [WeightLayout::InOut, WeightLayout::OutIn] {
        let mut x = randn(n * c, 1, 1.0);
        let mut w = randn(c * oc, 2, 1.0);
        let mut b = randn(oc, 3, 1.0);
        let proj = projection(n * oc, 4);
        let (mut dx, mut dw, mut db) = (vec![0.0; n * c], vec![0.0; c * oc], vec![0.0; oc]);
        matmul_backward(Some(&mut dx), &mut dw, Some(&mut db), &proj, &x, &w, n, c, oc, layout);
        let mut out = vec![0.0; n * oc];
        let (w0, b0, x0) = (w.clone(), b.clone(), x.clone());
        assert_ok(
            "matmul dx",
            check_gradient(&mut x, &dx, EPS, |x| {
                matmul_forward(&mut out, x, &w0, Some(&b0), n, c, oc, layout);
                weighted_sum(&out, &proj)
            }),
        );
        assert_ok(
            "matmul dw",
            check_gradient(&mut w, &dw, EPS, |w| {
                matmul_forward(&mut out, &x0, w, Some(&b0), n, c, oc, layout);
                weighted_sum(&out, &proj)
            }),
        );
        assert_ok(
            "matmul db",
            check_gradient(&mut b, &db, EPS, |b| {
                matmul_forward(&mut out, &x0, &w0, Some(b), n, c, oc, layout);
                weighted_sum(&out, &proj)
            }),
        );
    }
}

#[test]
fn layernorm_gradients() {
    let (n, c) = (3, 11);
    let mut x = randn(n * c, 5, 2.0);
    let mut w = randn(c, 6, 1.0);
    let mut b = randn(c, 7, 1.0);
    let proj = projection(n * c, 8);
    let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
    layernorm_forward(&mut out, &mut mean, &mut rstd, &x, &w, &b, n, c, 1e-5);
    let (mut dx, mut dw, mut db) = (vec![0.0; n * c], vec![0.0; c], vec![0.0; c]);
    layernorm_backward(&mut dx, &mut dw, &mut db, &proj, &x, &w, &mean, &rstd, n, c);
    let (w0, b0, x0) = (w.clone(), b.clone(), x.clone());
    let f = |x: &[f32], w: &[f32], b: &[f32]| {
        let (mut o, mut m, mut r) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
        layernorm_forward(&mut o, &mut m, &mut r, x, w, b, n, c, 1e-5);
        weighted_sum(&o, &proj)
    };
    assert_ok("layernorm dx", check_gradient(&mut x, &dx, EPS, |x| f(x, &w0, &b0)));
    assert_ok("layernorm dw", check_gradient(&mut w, &dw, EPS, |w| f(&x0, w, &b0)));
    assert_ok("layernorm db", check_gradient(&mut b, &db, EPS, |b| f(&x0, &w0, b)));
}

#[test]
fn attention_gradients_causal_and_bidirectional() {
    // Multi-head, grouped (two query heads a KV head), and one KV head; T = 40
    // also takes the GEMM path that training uses past 32 positions.
    for (causal, nh, nkv, t) in [(true, 3, 3, 5), (false, 3, 3, 5), (true, 4, 2, 5), (true, 4, 1, 40)] {
        let s = AttnShape { b: 2, t, nh, nkv, hs: 2, causal };
        let (b, c) = (s.b, s.out_width());
        let mut qkv = randn(b * t * s.qkv_width(), 9, 1.0);
        let proj = projection(b * t * c, 10);
        let (mut out, mut att) = (vec![0.0; b * t * c], vec![0.0; b * nh * t * t]);
        attention_forward(&mut out, &mut att, &qkv, s);
        let (mut dqkv, mut scratch) = (vec![0.0; qkv.len()], vec![0.0; att.len()]);
        attention_backward(&mut dqkv, &mut scratch, &proj, &qkv, &att, s);
        assert_ok(
            "attention dqkv",
            check_gradient(&mut qkv, &dqkv, EPS, |q| {
                let (mut o, mut a) = (vec![0.0; b * t * c], vec![0.0; b * nh * t * t]);
                attention_forward(&mut o, &mut a, q, s);
                weighted_sum(&o, &proj)
            }),
        );
    }
}

#[test]
fn gelu_erf_gradients() {
    let mut x = randn(37, 13, 3.0);
    let proj = projection(37, 14);
    let mut dx = vec![f32::NAN; 37]; // written, not added to
    gelu_erf_backward(&mut dx, &x, &proj);
    let mut out = vec![0.0; 37];
    assert_ok(
        "gelu_erf",
        check_gradient(&mut x, &dx, 1e-3, |x| {
            gelu_erf_forward(&mut out, x);
            weighted_sum(&out, &proj)
        }),
    );
}

#[test]
fn gelu_gradients() {
    let mut x = randn(37, 11, 3.0);
    let proj = projection(37, 12);
    let mut dx = vec![f32::NAN; 37]; // written, not added to
    gelu_backward(&mut dx, &x, &proj);
    let mut out = vec![0.0; 37];
    assert_ok(
        "gelu",
        check_gradient(&mut x, &dx, 1e-3, |x| {
            gelu_forward(&mut out, x);
            weighted_sum(&out, &proj)
        }),
    );
}

#[test]
fn crossentropy_gradients() {
    let (n, v) = (4, 9);
    let mut logits = randn(n * v, 13, 3.0);
    let targets = [0u32, 8, 3, 3];
    let dl = [0.25f32, 0.5, 1.0, -0.7];
    let (mut losses, mut lse) = (vec![0.0; n], vec![0.0; n]);
    crossentropy_forward(&mut losses, &mut lse, &logits, &targets, n, v);
    let mut dlogits = logits.clone();
    crossentropy_backward_inplace(&mut dlogits, &lse, &targets, &dl, n, v);
    assert_ok(
        "crossentropy",
        check_gradient(&mut logits, &dlogits, EPS, |x| {
            let (mut l, mut s) = (vec![0.0; n], vec![0.0; n]);
            crossentropy_forward(&mut l, &mut s, x, &targets, n, v);
            weighted_sum(&l, &dl)
        }),
    );
}

#[test]
fn embedding_gradients_with_repeated_tokens() {
    let (b, t, c, v) = (2, 3, 5, 4);
    let tokens = [1u32, 1, 3, 0, 1, 3];
    let mut wte = randn(v * c, 14, 1.0);
    let mut wpe = randn(t * c, 15, 1.0);
    let proj = projection(b * t * c, 16);
    let (mut dwte, mut dwpe) = (vec![0.0; v * c], vec![0.0; t * c]);
    embedding_backward(&mut dwte, Some(&mut dwpe), &proj, &tokens, b, t, c);
    let mut out = vec![0.0; b * t * c];
    let (wte0, wpe0) = (wte.clone(), wpe.clone());
    assert_ok(
        "embedding dwte",
        check_gradient(&mut wte, &dwte, EPS, |w| {
            embedding_forward(&mut out, &tokens, w, &wpe0, b, t, c);
            weighted_sum(&out, &proj)
        }),
    );
    assert_ok(
        "embedding dwpe",
        check_gradient(&mut wpe, &dwpe, EPS, |p| {
            embedding_forward(&mut out, &tokens, &wte0, p, b, t, c);
            weighted_sum(&out, &proj)
        }),
    );
}

#[test]
fn rmsnorm_gradients() {
    use attn_kernels::rmsnorm::*;
    let (n, c) = (3, 7);
    let mut x = randn(n * c, 31, 1.0);
    let mut w = randn(c, 32, 1.0);
    let proj = projection(n * c, 33);
    let (mut out, mut rstd) = (vec![0.0; n * c], vec![0.0; n]);
    rmsnorm_forward(&mut out, &mut rstd, &x, &w, n, c, 1e-5);
    let (mut dx, mut dw) = (vec![0.0; n * c], vec![0.0; c]);
    rmsnorm_backward(&mut dx, &mut dw, &proj, &x, &w, &rstd, n, c);
    let (w0, x0) = (w.clone(), x.clone());
    let mut r = vec![0.0; n];
    assert_ok(
        "rmsnorm dx",
        check_gradient(&mut x, &dx, EPS, |x| {
            rmsnorm_forward(&mut out, &mut r, x, &w0, n, c, 1e-5);
            weighted_sum(&out, &proj)
        }),
    );
    assert_ok(
        "rmsnorm dw",
        check_gradient(&mut w, &dw, EPS, |w| {
            rmsnorm_forward(&mut out, &mut r, &x0, w, n, c, 1e-5);
            weighted_sum(&out, &proj)
        }),
    );
}

#[test]
fn rope_backward_is_the_transpose() {
    use attn_kernels::rope::*;
    // Two heads of size 6 at column 2 of rows of width 16; positions start at 3.
    let (b, t, stride, offset, nh, hs, pos0) = (2, 4, 16, 2, 2, 6, 3);
    let (cos, sin) = rope_table(16, hs, 10_000.0);
    let mut x = randn(b * t * stride, 41, 1.0);
    let proj = projection(b * t * stride, 42);
    let mut dx = proj.clone();
    rope_backward(&mut dx, &cos, &sin, b, t, stride, offset, nh, hs, pos0);
    assert_ok(
        "rope dx",
        check_gradient(&mut x, &dx, EPS, |x| {
            let mut y = x.to_vec();
            rope_forward(&mut y, &cos, &sin, b, t, stride, offset, nh, hs, pos0);
            weighted_sum(&y, &proj)
        }),
    );
}

#[test]
fn swiglu_gradients() {
    use attn_kernels::swiglu::*;
    let n = 23;
    let mut g = randn(n, 51, 3.0);
    let mut u = randn(n, 52, 1.0);
    let proj = projection(n, 53);
    let (mut dg, mut du) = (vec![f32::NAN; n], vec![f32::NAN; n]); // written, not added to
    swiglu_backward(&mut dg, &mut du, &proj, &g, &u);
    let mut out = vec![0.0; n];
    let (g0, u0) = (g.clone(), u.clone());
    assert_ok(
        "swiglu dgate",
        check_gradient(&mut g, &dg, EPS, |g| {
            swiglu_forward(&mut out, g, &u0);
            weighted_sum(&out, &proj)
        }),
    );
    assert_ok(
        "swiglu dup",
        check_gradient(&mut u, &du, EPS, |u| {
            swiglu_forward(&mut out, &g0, u);
            weighted_sum(&out, &proj)
        }),
    );
}

/// The checks above again at every lower SIMD level this CPU has.
#[test]
fn every_simd_level() {
    common::rerun_at_every_level();
}
