//! Attention whose queries and keys come from separate buffers, with padding
//! masks: the cross-attention of an encoder-decoder (decoder queries, encoder
//! keys and values) and the self-attention of batches that hold sequences of
//! different lengths (right-padded). GQA by stride, as in `attention.rs`.
//!
//! q  (B, TQ, NH*HS);  kv (B, TK, 2*NKV*HS), each row `[K | V]`.
//! `key_len[b] <= TK`: keys at or past it are padding and get probability 0, so
//! no padded position can change a real position's result. With `causal`,
//! query i also sees only keys j <= i.
//! For each b and query head h (KV head g = h / (NH / NKV)):
//! ```text
//!   scores = Q_h K_g^T / sqrt(HS)          (TQ, L)   L = key_len[b]
//!   att    = softmax(scores) over the live keys of each row
//!   out_h  = att @ V_g                     (TQ, HS)
//! ```
//! A row with no live key (key_len 0) is all zeros, and so is its output.

use rayon::prelude::*;

use crate::matmul::sgemm_serial;
use crate::SendPtr;

/// Sizes of a cross-attention (or a padded self-attention) call.
#[derive(Clone, Copy, Debug)]
pub struct CrossShape {
    /// Sequences in the batch.
    pub b: usize,
    /// Queries per batch row.
    pub tq: usize,
    /// Key/value rows per batch row (the buffer's capacity; `key_len` says how many are real).
    pub tk: usize,
    /// Query heads.
    pub nh: usize,
    /// Key/value heads; divides `nh`.
    pub nkv: usize,
    /// Head size.
    pub hs: usize,
    /// Query i sees only keys j <= i (a padded decoder's self-attention).
    pub causal: bool,
}

impl CrossShape {
    /// Width of a query row and of an output row (NH * HS).
    pub fn q_width(&self) -> usize {
        self.nh * self.hs
    }
    /// Width of one [K | V] row.
    pub fn kv_width(&self) -> usize {
        2 * self.nkv * self.hs
    }
    fn check(&self, key_len: &[usize]) {
        assert!(self.nkv > 0 && self.nh % self.nkv == 0 && self.hs > 0, "heads {} / kv heads {} / head size {}", self.nh, self.nkv, self.hs);
        assert!(key_len.len() >= self.b, "key_len has {} entries for batch {}", key_len.len(), self.b);
    }
    /// Live keys of query row `i` in batch row `b`.
    fn live(&self, key_len: usize, i: usize) -> usize {
        let l = key_len.min(self.tk);
        if self.causal {
            l.min(i + 1)
        } else {
            l
        }
    }
}

/// Attention of `q`'s rows over `kv`'s first `key_len[b]` rows (see the
/// module comment); `att` keeps the probabilities for the backward pass and
/// the alignment pictures.
pub fn cross_attention_forward(
    out: &mut [f32],   // (B, TQ, NH*HS)
    att: &mut [f32],   // (B, NH, TQ, TK)
    q: &[f32],         // (B, TQ, NH*HS)
    kv: &[f32],        // (B, TK, 2*NKV*HS)
    key_len: &[usize], // (B)
    s: CrossShape,
) {
    s.check(key_len);
    let CrossShape { b, tq, tk, nh, nkv, hs, .. } = s;
    let (qw, kvw, group) = (s.q_width(), s.kv_width(), nh / nkv);
    assert!(out.len() >= b * tq * qw && att.len() >= b * nh * tq * tk && q.len() >= b * tq * qw && kv.len() >= b * tk * kvw);
    let scale = 1.0 / (hs as f32).sqrt();
    let out_ptr = SendPtr(out.as_mut_ptr());
    att[..b * nh * tq * tk].par_chunks_mut(tq * tk).enumerate().for_each(|(bh, att_bh)| {
        let (bi, h) = (bh / nh, bh % nh);
        let g = h / group;
        let lb = key_len[bi].min(tk);
        let o = out_ptr.get().wrapping_add(bi * tq * qw + h * hs);
        if lb == 0 {
            att_bh.fill(0.0);
            for i in 0..tq {
                // SAFETY: each (b, h) task writes only its head's columns of its batch rows.
                unsafe { std::slice::from_raw_parts_mut(o.add(i * qw), hs).fill(0.0) };
            }
            return;
        }
        let qp = q[bi * tq * qw + h * hs..].as_ptr();
        let kp = kv[bi * tk * kvw + g * hs..].as_ptr();
        let vp = kv[bi * tk * kvw + nkv * hs + g * hs..].as_ptr();
        unsafe {
            // scores (TQ, L) = Q_h (TQ, HS) @ K_g^T (HS, L), row stride TK
            sgemm_serial(tq, lb, hs, att_bh.as_mut_ptr(), tk as isize, 1, false, qp, qw as isize, 1, kp, 1, kvw as isize);
        }
        for (i, row) in att_bh.chunks_exact_mut(tk).enumerate() {
            let live = s.live(lb, i);
            if live == 0 {
                row.fill(0.0);
            } else {
                crate::attention::softmax_row(&mut row[..live], scale);
                row[live..].fill(0.0);
            }
        }
        unsafe {
            // out_h (TQ, HS) = att (TQ, L) @ V_g (L, HS); each task owns its head's columns.
            sgemm_serial(tq, hs, lb, o, qw as isize, 1, false, att_bh.as_ptr(), tk as isize, 1, vp, kvw as isize, 1);
        }
    });
}

/// Accumulates dq and dkv. `scratch` receives d(att) and is overwritten.
#[allow(clippy::too_many_arguments)]
pub fn cross_attention_backward(
    dq: &mut [f32],      // (B, TQ, NH*HS)
    dkv: &mut [f32],     // (B, TK, 2*NKV*HS)
    scratch: &mut [f32], // (B, NH, TQ, TK)
    dout: &[f32],        // (B, TQ, NH*HS)
    q: &[f32],           // (B, TQ, NH*HS)
    kv: &[f32],          // (B, TK, 2*NKV*HS)
    att: &[f32],         // (B, NH, TQ, TK)
    key_len: &[usize],   // (B)
    s: CrossShape,
) {
    s.check(key_len);
    let CrossShape { b, tq, tk, nh, nkv, hs, .. } = s;
    let (qw, kvw, group) = (s.q_width(), s.kv_width(), nh / nkv);
    assert!(dq.len() >= b * tq * qw && dkv.len() >= b * tk * kvw && scratch.len() >= b * nh * tq * tk && dout.len() >= b * tq * qw);
    assert!(q.len() >= b * tq * qw && kv.len() >= b * tk * kvw && att.len() >= b * nh * tq * tk);
    let scale = 1.0 / (hs as f32).sqrt();
    let (dq_ptr, dkv_ptr) = (SendPtr(dq.as_mut_ptr()), SendPtr(dkv.as_mut_ptr()));
    // A (b, g) task owns the `group` adjacent (TQ, TK) blocks of its heads, and
    // dK_g, dV_g of its batch row, which those heads all add into.
    scratch[..b * nh * tq * tk].par_chunks_mut(group * tq * tk).enumerate().for_each(|(bg, datt_g)| {
        let (bi, g) = (bg / nkv, bg % nkv);
        let lb = key_len[bi].min(tk);
        if lb == 0 {
            return;
        }
        let (ko, vo) = (bi * tk * kvw + g * hs, bi * tk * kvw + nkv * hs + g * hs);
        let (kp, vp) = (kv[ko..].as_ptr(), kv[vo..].as_ptr());
        for (j, datt) in datt_g.chunks_exact_mut(tq * tk).enumerate() {
            let h = g * group + j;
            let att_bh = &att[(bi * nh + h) * tq * tk..][..tq * tk];
            let qo = bi * tq * qw + h * hs;
            let (qp, dy) = (q[qo..].as_ptr(), dout[qo..].as_ptr());
            // SAFETY: dQ_h belongs to this task alone; dK_g and dV_g to this
            // task's group alone, whose heads run one after another here.
            unsafe {
                let (dqp, dk, dv) = (dq_ptr.get().add(qo), dkv_ptr.get().add(ko), dkv_ptr.get().add(vo));
                // datt (TQ, L) = dout_h (TQ, HS) @ V_g^T (HS, L)
                sgemm_serial(tq, lb, hs, datt.as_mut_ptr(), tk as isize, 1, false, dy, qw as isize, 1, vp, 1, kvw as isize);
                // dV_g (L, HS) += att^T (L, TQ) @ dout_h (TQ, HS)
                sgemm_serial(lb, hs, tq, dv, kvw as isize, 1, true, att_bh.as_ptr(), 1, tk as isize, dy, qw as isize, 1);
                for (i, (d, a)) in datt.chunks_exact_mut(tk).zip(att_bh.chunks_exact(tk)).enumerate() {
                    let live = s.live(lb, i);
                    let inner = crate::simd::dot(&a[..live], &d[..live]);
                    for x in 0..live {
                        d[x] = a[x] * (d[x] - inner) * scale;
                    }
                    d[live..].fill(0.0);
                }
                // dQ_h (TQ, HS) += dS (TQ, L) @ K_g (L, HS)
                sgemm_serial(tq, hs, lb, dqp, qw as isize, 1, true, datt.as_ptr(), tk as isize, 1, kp, kvw as isize, 1);
                // dK_g (L, HS) += dS^T (L, TQ) @ Q_h (TQ, HS)
                sgemm_serial(lb, hs, tq, dk, kvw as isize, 1, true, datt.as_ptr(), 1, tk as isize, qp, qw as isize, 1);
            }
        }
    });
}

/// Reference forward: explicit loops over every (b, h, query, key), in f64.
pub fn cross_attention_forward_naive(out: &mut [f32], att: &mut [f32], q: &[f32], kv: &[f32], key_len: &[usize], s: CrossShape) {
    let CrossShape { b, tq, tk, nh, nkv, hs, causal } = s;
    let (qw, kvw) = (s.q_width(), s.kv_width());
    let scale = 1.0 / (hs as f64).sqrt();
    for bi in 0..b {
        for h in 0..nh {
            let g = h / (nh / nkv);
            for i in 0..tq {
                let qrow = &q[(bi * tq + i) * qw + h * hs..][..hs];
                let row = &mut att[((bi * nh + h) * tq + i) * tk..][..tk];
                let live: Vec<usize> = (0..tk).filter(|&j| j < key_len[bi] && (!causal || j <= i)).collect();
                let scores: Vec<f64> = live
                    .iter()
                    .map(|&j| qrow.iter().zip(&kv[(bi * tk + j) * kvw + g * hs..][..hs]).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() * scale)
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = scores.iter().map(|&x| (x - max).exp()).sum();
                row.fill(0.0);
                for (&j, &sc) in live.iter().zip(&scores) {
                    row[j] = ((sc - max).exp() / sum) as f32;
                }
                for d in 0..hs {
                    let acc: f64 = live.iter().map(|&j| row[j] as f64 * kv[(bi * tk + j) * kvw + nkv * hs + g * hs + d] as f64).sum();
                    out[(bi * tq + i) * qw + h * hs + d] = acc as f32;
                }
            }
        }
    }
}
