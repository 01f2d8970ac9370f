//! Multi-head scaled dot-product attention over a packed QKV buffer.
//!
//! For each batch row b and head h (HS = C / NH):
//!   scores = Q_h K_h^T / sqrt(HS)            (T, T)
//!   att    = softmax(scores) with the causal mask (keys after the query get 0)
//!   out_h  = att @ V_h                       (T, HS)
//! The probabilities `att` are saved for the backward pass (and are what
//! `attn inspect attention` shows). Work is split over (b, h) pairs; inside a
//! task the two products are single-threaded GEMMs on strided views of `qkv`.

use multiversion::multiversion;
use rayon::prelude::*;

use crate::matmul::sgemm_serial;
use crate::simd::dot;
use crate::SendPtr;

/// Sizes shared by forward and backward.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub b: usize,
    pub t: usize,
    pub c: usize,
    pub nh: usize,
    /// Mask keys after the query (decoders) or not (encoders).
    pub causal: bool,
}

impl AttnShape {
    fn hs(&self) -> usize {
        self.c / self.nh
    }
}

/// Up to this length, attention is computed row by row instead of by GEMM.
const SHORT: usize = 32;

pub fn attention_forward(
    out: &mut [f32], // (B, T, C)
    att: &mut [f32], // (B, NH, T, T)
    qkv: &[f32],     // (B, T, 3C): Q, K, V packed along channels
    s: AttnShape,
) {
    let AttnShape { b, t, c, nh, causal } = s;
    assert!(c % nh == 0, "channels {c} not divisible by heads {nh}");
    assert!(out.len() >= b * t * c && att.len() >= b * nh * t * t && qkv.len() >= b * t * 3 * c);
    let hs = s.hs();
    let scale = 1.0 / (hs as f32).sqrt();
    let out_ptr = SendPtr(out.as_mut_ptr());
    att[..b * nh * t * t].par_chunks_mut(t * t).enumerate().for_each(|(bh, att_bh)| {
        let (bi, h) = (bh / nh, bh % nh);
        let base = bi * t * 3 * c;
        let q = qkv[base + h * hs..].as_ptr();
        let k = qkv[base + c + h * hs..].as_ptr();
        let v = qkv[base + 2 * c + h * hs..].as_ptr();
        let c3 = 3 * c as isize;
        if t <= SHORT {
            // Short sequences (sentence embeddings): a GEMM call costs more
            // than the arithmetic, so rows are done directly.
            let row = |i: usize, part: usize| &qkv[base + i * 3 * c + part * c + h * hs..][..hs];
            for (i, scores) in att_bh.chunks_exact_mut(t).enumerate() {
                let len = if causal { i + 1 } else { t };
                for (j, sc) in scores[..len].iter_mut().enumerate() {
                    *sc = dot(row(i, 0), row(j, 1));
                }
            }
            softmax_rows(att_bh, t, scale, causal);
            for (i, probs) in att_bh.chunks_exact(t).enumerate() {
                // SAFETY: each (b, h) task writes only its head's columns of its batch rows.
                let o = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add((bi * t + i) * c + h * hs), hs) };
                o.fill(0.0);
                for (j, &p) in probs.iter().enumerate().filter(|(_, &p)| p != 0.0) {
                    crate::simd::axpy(o, p, row(j, 2));
                }
            }
            return;
        }
        unsafe {
            // scores (T, T) = Q (T, HS) @ K^T (HS, T)
            sgemm_serial(t, t, hs, att_bh.as_mut_ptr(), t as isize, 1, false, q, c3, 1, k, 1, c3);
        }
        softmax_rows(att_bh, t, scale, causal);
        unsafe {
            // out_h (T, HS), row stride C = att (T, T) @ V (T, HS). Each (b, h)
            // task writes only its own head's columns of its own batch rows.
            let o = out_ptr.get().add(bi * t * c + h * hs);
            sgemm_serial(t, hs, t, o, c as isize, 1, false, att_bh.as_ptr(), t as isize, 1, v, c3, 1);
        }
    });
}

#[multiversion(targets("x86_64+avx2+fma", "x86_64+avx"))]
fn softmax_rows(att: &mut [f32], t: usize, scale: f32, causal: bool) {
    for (q, row) in att.chunks_exact_mut(t).enumerate() {
        let len = if causal { q + 1 } else { t };
        let (live, masked) = row.split_at_mut(len);
        let max = live.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) * scale;
        let mut sum = 0.0f32;
        for x in live.iter_mut() {
            *x = crate::simd::exp(*x * scale - max);
            sum += *x;
        }
        let inv = 1.0 / sum;
        for x in live.iter_mut() {
            *x *= inv;
        }
        masked.fill(0.0);
    }
}

/// Accumulates dqkv. `scratch` receives d(att) and is overwritten.
pub fn attention_backward(
    dqkv: &mut [f32],    // (B, T, 3C)
    scratch: &mut [f32], // (B, NH, T, T)
    dout: &[f32],        // (B, T, C)
    qkv: &[f32],         // (B, T, 3C)
    att: &[f32],         // (B, NH, T, T)
    s: AttnShape,
) {
    let AttnShape { b, t, c, nh, causal } = s;
    assert!(dqkv.len() >= b * t * 3 * c && scratch.len() >= b * nh * t * t && dout.len() >= b * t * c);
    assert!(qkv.len() >= b * t * 3 * c && att.len() >= b * nh * t * t);
    let hs = s.hs();
    let scale = 1.0 / (hs as f32).sqrt();
    let dqkv_ptr = SendPtr(dqkv.as_mut_ptr());
    scratch[..b * nh * t * t].par_chunks_mut(t * t).enumerate().for_each(|(bh, datt)| {
        let (bi, h) = (bh / nh, bh % nh);
        let att_bh = &att[bh * t * t..(bh + 1) * t * t];
        let base = bi * t * 3 * c;
        let q = qkv[base + h * hs..].as_ptr();
        let k = qkv[base + c + h * hs..].as_ptr();
        let v = qkv[base + 2 * c + h * hs..].as_ptr();
        let dy = dout[bi * t * c + h * hs..].as_ptr();
        let c3 = 3 * c as isize;
        unsafe {
            let dq = dqkv_ptr.get().add(base + h * hs);
            let dk = dqkv_ptr.get().add(base + c + h * hs);
            let dv = dqkv_ptr.get().add(base + 2 * c + h * hs);
            // datt (T, T) = dout_h (T, HS) @ V^T (HS, T)
            sgemm_serial(t, t, hs, datt.as_mut_ptr(), t as isize, 1, false, dy, c as isize, 1, v, 1, c3);
            // dV (T, HS) += att^T (T, T) @ dout_h (T, HS)
            sgemm_serial(t, hs, t, dv, c3, 1, true, att_bh.as_ptr(), 1, t as isize, dy, c as isize, 1);
            softmax_backward_rows(datt, att_bh, t, scale, causal);
            // datt now holds d(scores) * scale.
            // dQ (T, HS) += dS (T, T) @ K (T, HS)
            sgemm_serial(t, hs, t, dq, c3, 1, true, datt.as_ptr(), t as isize, 1, k, c3, 1);
            // dK (T, HS) += dS^T (T, T) @ Q (T, HS)
            sgemm_serial(t, hs, t, dk, c3, 1, true, datt.as_ptr(), 1, t as isize, q, c3, 1);
        }
    });
}

/// In place: datt -> d(pre-softmax scores), already multiplied by `scale`.
#[multiversion(targets("x86_64+avx2+fma", "x86_64+avx"))]
fn softmax_backward_rows(datt: &mut [f32], att: &[f32], t: usize, scale: f32, causal: bool) {
    for (q, (d, a)) in datt.chunks_exact_mut(t).zip(att.chunks_exact(t)).enumerate() {
        let len = if causal { q + 1 } else { t };
        let inner = dot(&a[..len], &d[..len]);
        for i in 0..len {
            d[i] = a[i] * (d[i] - inner) * scale;
        }
        d[len..].fill(0.0);
    }
}

/// Attention for one new query at position T-1 over T cached keys and values
/// (decoding with a KV cache). Causality is implicit: the cache holds only
/// the past. One task per head.
pub fn attention_decode(
    out: &mut [f32],    // (C)
    scores: &mut [f32], // (NH, maxT) scratch; row h holds head h's probabilities on return
    q: &[f32],          // (C)
    k_cache: &[f32],    // (maxT, C)
    v_cache: &[f32],    // (maxT, C)
    t: usize,
    c: usize,
    nh: usize,
) {
    let hs = c / nh;
    let max_t = scores.len() / nh;
    assert!(t >= 1 && t <= max_t && out.len() >= c && q.len() >= c && k_cache.len() >= t * c && v_cache.len() >= t * c);
    let scale = 1.0 / (hs as f32).sqrt();
    out[..c].par_chunks_mut(hs).zip(scores.par_chunks_mut(max_t)).enumerate().for_each(|(h, (o, sc))| {
        decode_head(o, &mut sc[..t], &q[h * hs..(h + 1) * hs], &k_cache[h * hs..], &v_cache[h * hs..], c, scale);
    });
}

#[multiversion(targets("x86_64+avx2+fma", "x86_64+avx"))]
fn decode_head(out: &mut [f32], scores: &mut [f32], q: &[f32], k: &[f32], v: &[f32], c: usize, scale: f32) {
    let hs = out.len();
    let mut max = f32::NEG_INFINITY;
    for (j, s) in scores.iter_mut().enumerate() {
        *s = dot(q, &k[j * c..j * c + hs]) * scale;
        max = max.max(*s);
    }
    let mut sum = 0.0f32;
    for s in scores.iter_mut() {
        *s = crate::simd::exp(*s - max);
        sum += *s;
    }
    let inv = 1.0 / sum;
    out.fill(0.0);
    for (j, s) in scores.iter_mut().enumerate() {
        *s *= inv;
        crate::simd::axpy(out, *s, &v[j * c..j * c + hs]);
    }
}

/// Reference forward: explicit loops over every (b, h, query, key).
pub fn attention_forward_naive(out: &mut [f32], att: &mut [f32], qkv: &[f32], s: AttnShape) {
    let AttnShape { b, t, c, nh, causal } = s;
    let hs = s.hs();
    let scale = 1.0 / (hs as f64).sqrt();
    for bi in 0..b {
        for h in 0..nh {
            for tq in 0..t {
                let q = &qkv[(bi * t + tq) * 3 * c + h * hs..][..hs];
                let row = &mut att[((bi * nh + h) * t + tq) * t..][..t];
                let len = if causal { tq + 1 } else { t };
                let mut scores = vec![f64::NEG_INFINITY; t];
                for tk in 0..len {
                    let k = &qkv[(bi * t + tk) * 3 * c + c + h * hs..][..hs];
                    scores[tk] = q.iter().zip(k).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() * scale;
                }
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = scores.iter().map(|&x| (x - max).exp()).sum();
                for tk in 0..t {
                    row[tk] = ((scores[tk] - max).exp() / sum) as f32;
                }
                for i in 0..hs {
                    let mut acc = 0.0f64;
                    for tk in 0..len {
                        acc += row[tk] as f64 * qkv[(bi * t + tk) * 3 * c + 2 * c + h * hs + i] as f64;
                    }
                    out[(bi * t + tq) * c + h * hs + i] = acc as f32;
                }
            }
        }
    }
}
