//! Multi-head scaled dot-product attention over a packed QKV buffer, with
//! grouped-query attention by stride: NH query heads share NKV key/value heads
//! (NH / NKV queries a group), and query head h reads KV head h / (NH / NKV).
//! No K or V head is ever copied.
//!
//! Each row of `qkv` is [Q (NH*HS) | K (NKV*HS) | V (NKV*HS)], W = (NH + 2 NKV) HS.
//! For each batch row b and query head h:
//!   scores = Q_h K_g^T / sqrt(HS)            (T, T)
//!   att    = softmax(scores) with the causal mask (keys after the query get 0)
//!   out_h  = att @ V_g                       (T, HS)
//! The probabilities `att` are saved for the backward pass. The decoder's
//! training path uses `flash` instead (no (T, T) buffer); these kernels are
//! the reference it is tested against, and what BERT's sentence embeddings
//! use when they return attention maps. The forward pass splits work over (b, h);
//! the backward pass over (b, g), so that the query heads of a group, which
//! all add into the same dK and dV, run in one task and never race.

use crate::simd::dispatch;
use rayon::prelude::*;

use crate::matmul::sgemm_serial;
use crate::simd::dot;
use crate::SendPtr;

/// Sizes shared by forward and backward.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    /// Sequences in the batch.
    pub b: usize,
    /// Positions per sequence.
    pub t: usize,
    /// Query heads.
    pub nh: usize,
    /// Key/value heads; divides `nh`.
    pub nkv: usize,
    /// Head size.
    pub hs: usize,
    /// Mask keys after the query (decoders) or not (encoders).
    pub causal: bool,
}

impl AttnShape {
    /// Plain multi-head attention over C channels (NKV = NH, HS = C / NH).
    pub fn mha(b: usize, t: usize, c: usize, nh: usize, causal: bool) -> Self {
        AttnShape { b, t, nh, nkv: nh, hs: c / nh, causal }
    }
    /// Width of one packed q | k | v row.
    pub fn qkv_width(&self) -> usize {
        (self.nh + 2 * self.nkv) * self.hs
    }
    /// Width of one output row (NH * HS).
    pub fn out_width(&self) -> usize {
        self.nh * self.hs
    }
    fn group(&self) -> usize {
        self.nh / self.nkv
    }
    fn check(&self) {
        assert!(self.nkv > 0 && self.nh % self.nkv == 0 && self.hs > 0, "heads {} / kv heads {} / head size {}", self.nh, self.nkv, self.hs);
    }
}

/// Up to this length, attention is computed row by row instead of by GEMM.
const SHORT: usize = 32;

/// Multi-head self-attention of packed Q, K, V rows: for each sequence and
/// head, out = softmax(Q K^T / sqrt(HS), causal or not) V, the
/// probabilities kept in `att` for the backward pass and for looking inside.
pub fn attention_forward(
    out: &mut [f32], // (B, T, NH*HS)
    att: &mut [f32], // (B, NH, T, T)
    qkv: &[f32],     // (B, T, W): Q, K, V packed along channels
    s: AttnShape,
) {
    attention_forward_masked(out, att, qkv, s, &[]);
}

/// `attention_forward` over a right-padded batch: sequence `bi` has
/// `key_lens[bi]` real positions, and keys past it get probability 0, so no
/// real position sees padding (an empty `key_lens`: every key is real). The
/// backward pass needs no mask: it multiplies by these zero probabilities.
pub fn attention_forward_masked(
    out: &mut [f32], // (B, T, NH*HS)
    att: &mut [f32], // (B, NH, T, T)
    qkv: &[f32],     // (B, T, W)
    s: AttnShape,
    key_lens: &[usize], // (B) or empty
) {
    s.check();
    assert!(key_lens.is_empty() || (key_lens.len() == s.b && key_lens.iter().all(|&l| l >= 1 && l <= s.t)), "key lengths {key_lens:?} for T = {}", s.t);
    let AttnShape { b, t, nh, hs, causal, .. } = s;
    let (w, oc, group) = (s.qkv_width(), s.out_width(), s.group());
    assert!(out.len() >= b * t * oc && att.len() >= b * nh * t * t && qkv.len() >= b * t * w);
    let scale = 1.0 / (hs as f32).sqrt();
    let out_ptr = SendPtr(out.as_mut_ptr());
    att[..b * nh * t * t].par_chunks_mut(t * t).enumerate().for_each(|(bh, att_bh)| {
        let (bi, h) = (bh / nh, bh % nh);
        let g = h / group;
        let base = bi * t * w;
        let klen = key_lens.get(bi).copied().unwrap_or(t);
        let (qo, ko, vo) = (h * hs, oc + g * hs, oc + s.nkv * hs + g * hs);
        let q = qkv[base + qo..].as_ptr();
        let k = qkv[base + ko..].as_ptr();
        let v = qkv[base + vo..].as_ptr();
        let ws = w as isize;
        if t <= SHORT {
            // Short sequences (sentence embeddings): a GEMM call costs more
            // than the arithmetic, so rows are done directly.
            let row = |i: usize, off: usize| &qkv[base + i * w + off..][..hs];
            for (i, scores) in att_bh.chunks_exact_mut(t).enumerate() {
                let len = if causal { i + 1 } else { t }.min(klen);
                for (j, sc) in scores[..len].iter_mut().enumerate() {
                    *sc = dot(row(i, qo), row(j, ko));
                }
            }
            softmax_rows(att_bh, t, scale, causal, klen);
            for (i, probs) in att_bh.chunks_exact(t).enumerate() {
                // SAFETY: each (b, h) task writes only its head's columns of its batch rows.
                let o = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add((bi * t + i) * oc + h * hs), hs) };
                o.fill(0.0);
                for (j, &p) in probs.iter().enumerate().filter(|(_, &p)| p != 0.0) {
                    crate::simd::axpy(o, p, row(j, vo));
                }
            }
            return;
        }
        unsafe {
            // scores (T, T) = Q_h (T, HS) @ K_g^T (HS, T)
            sgemm_serial(t, t, hs, att_bh.as_mut_ptr(), t as isize, 1, false, q, ws, 1, k, 1, ws);
        }
        softmax_rows(att_bh, t, scale, causal, klen);
        unsafe {
            // out_h (T, HS), row stride NH*HS = att (T, T) @ V_g (T, HS). Each
            // (b, h) task writes only its own head's columns of its batch rows.
            let o = out_ptr.get().add(bi * t * oc + h * hs);
            sgemm_serial(t, hs, t, o, oc as isize, 1, false, att_bh.as_ptr(), t as isize, 1, v, ws, 1);
        }
    });
}

dispatch! {
    [Avx512]
    fn softmax_rows(att: &mut [f32], t: usize, scale: f32, causal: bool, klen: usize) {
        for (q, row) in att.chunks_exact_mut(t).enumerate() {
            let len = if causal { q + 1 } else { t }.min(klen);
            softmax_row(&mut row[..len], scale);
            row[len..].fill(0.0);
        }
    }
}

/// In place: x -> softmax(x * scale), over the live (unmasked) entries.
#[inline(always)]
pub(crate) fn softmax_row(live: &mut [f32], scale: f32) {
    let max = live.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) * scale;
    let inv = 1.0 / crate::simd::exp_sum_lanes(live, scale, max);
    for x in live.iter_mut() {
        *x *= inv;
    }
}

/// Accumulates dqkv. `scratch` receives d(att) and is overwritten.
pub fn attention_backward(
    dqkv: &mut [f32],    // (B, T, W)
    scratch: &mut [f32], // (B, NH, T, T)
    dout: &[f32],        // (B, T, NH*HS)
    qkv: &[f32],         // (B, T, W)
    att: &[f32],         // (B, NH, T, T)
    s: AttnShape,
) {
    s.check();
    let AttnShape { b, t, nh, nkv, hs, causal } = s;
    let (w, oc, group) = (s.qkv_width(), s.out_width(), s.group());
    assert!(dqkv.len() >= b * t * w && scratch.len() >= b * nh * t * t && dout.len() >= b * t * oc);
    assert!(qkv.len() >= b * t * w && att.len() >= b * nh * t * t);
    let scale = 1.0 / (hs as f32).sqrt();
    let dqkv_ptr = SendPtr(dqkv.as_mut_ptr());
    let ws = w as isize;
    // The heads of a group are adjacent, so a (b, g) task owns one contiguous
    // run of `group` (T, T) blocks of the scratch.
    scratch[..b * nh * t * t].par_chunks_mut(group * t * t).enumerate().for_each(|(bg, datt_g)| {
        let (bi, g) = (bg / nkv, bg % nkv);
        let base = bi * t * w;
        let (ko, vo) = (oc + g * hs, oc + nkv * hs + g * hs);
        let k = qkv[base + ko..].as_ptr();
        let v = qkv[base + vo..].as_ptr();
        for (j, datt) in datt_g.chunks_exact_mut(t * t).enumerate() {
            let h = g * group + j;
            let att_bh = &att[(bi * nh + h) * t * t..][..t * t];
            let q = qkv[base + h * hs..].as_ptr();
            let dy = dout[bi * t * oc + h * hs..].as_ptr();
            // SAFETY: dQ_h belongs to this task alone; dK_g and dV_g to this
            // task's group alone, whose heads run one after another here.
            unsafe {
                let dq = dqkv_ptr.get().add(base + h * hs);
                let dk = dqkv_ptr.get().add(base + ko);
                let dv = dqkv_ptr.get().add(base + vo);
                // datt (T, T) = dout_h (T, HS) @ V_g^T (HS, T)
                sgemm_serial(t, t, hs, datt.as_mut_ptr(), t as isize, 1, false, dy, oc as isize, 1, v, 1, ws);
                // dV_g (T, HS) += att^T (T, T) @ dout_h (T, HS)
                sgemm_serial(t, hs, t, dv, ws, 1, true, att_bh.as_ptr(), 1, t as isize, dy, oc as isize, 1);
                softmax_backward_rows(datt, att_bh, t, scale, causal);
                // datt now holds d(scores) * scale.
                // dQ_h (T, HS) += dS (T, T) @ K_g (T, HS)
                sgemm_serial(t, hs, t, dq, ws, 1, true, datt.as_ptr(), t as isize, 1, k, ws, 1);
                // dK_g (T, HS) += dS^T (T, T) @ Q_h (T, HS)
                sgemm_serial(t, hs, t, dk, ws, 1, true, datt.as_ptr(), 1, t as isize, q, ws, 1);
            }
        }
    });
}

dispatch! {
    /// In place: datt -> d(pre-softmax scores), already multiplied by `scale`.
    [Avx512]
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
}

/// Reference forward: explicit loops over every (b, h, query, key), in f64.
pub fn attention_forward_naive(out: &mut [f32], att: &mut [f32], qkv: &[f32], s: AttnShape) {
    let AttnShape { b, t, nh, nkv, hs, causal } = s;
    let (w, oc) = (s.qkv_width(), s.out_width());
    let scale = 1.0 / (hs as f64).sqrt();
    for bi in 0..b {
        for h in 0..nh {
            let g = h / (nh / nkv);
            let (ko, vo) = (oc + g * hs, oc + nkv * hs + g * hs);
            for tq in 0..t {
                let q = &qkv[(bi * t + tq) * w + h * hs..][..hs];
                let row = &mut att[((bi * nh + h) * t + tq) * t..][..t];
                let len = if causal { tq + 1 } else { t };
                let mut scores = vec![f64::NEG_INFINITY; t];
                for tk in 0..len {
                    let k = &qkv[(bi * t + tk) * w + ko..][..hs];
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
                        acc += row[tk] as f64 * qkv[(bi * t + tk) * w + vo + i] as f64;
                    }
                    out[(bi * t + tq) * oc + h * hs + i] = acc as f32;
                }
            }
        }
    }
}
