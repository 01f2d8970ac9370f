//! Attention for training without a T x T buffer (the flash-attention
//! scheme): the forward pass walks key blocks with an online softmax and
//! keeps, per query, only the log-sum-exp of its scores; the backward pass
//! recomputes each block's probabilities from Q, K and that log-sum-exp.
//! Memory is linear in T: the outputs, one float a query, and a scratch of
//! a few blocks per thread.
//!
//! Same packed layout, grouped-query heads and masks as `attention`:
//! rows of `qkv` are [Q (NH*HS) | K (NKV*HS) | V (NKV*HS)]; causal masking
//! and per-sequence key lengths (right padding) give probability 0.

use crate::simd::dispatch;
use rayon::prelude::*;

use crate::attention::AttnShape;
use crate::matmul::{sgemm_serial, Mat};
use crate::mixed::Precision;
use crate::SendPtr;

/// Queries and keys per block.
const BQ: usize = 128;
const BK: usize = 128;

/// Scratch floats one task of either pass needs.
fn task_scratch(hs: usize) -> usize {
    2 * BQ * BK + BQ * hs + 3 * BQ
}

/// Scratch floats `flash_forward` / `flash_backward` need for heads of size
/// `hs`: one block buffer per thread of the current pool, whatever B and T.
pub fn flash_scratch_len(hs: usize) -> usize {
    rayon::current_num_threads().max(1) * task_scratch(hs)
}

/// Runs `f(task, worker scratch)` for every task in 0..tasks, the tasks
/// dealt round-robin to as many workers as the scratch holds buffers for
/// (every task of a pass costs about the same).
fn for_each_task(scratch: &mut [f32], per: usize, tasks: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    assert!(scratch.len() >= per, "flash attention scratch too small: see flash_scratch_len");
    let workers = (scratch.len() / per).min(tasks).max(1);
    scratch[..workers * per].par_chunks_mut(per).enumerate().for_each(|(wid, sc)| {
        for task in (wid..tasks).step_by(workers) {
            f(task, sc);
        }
    });
}

/// The live keys of query row `i` of sequence `bi`: `0..live(i)`.
#[inline(always)]
fn live_keys(s: &AttnShape, key_lens: &[usize], bi: usize, i: usize) -> usize {
    let klen = key_lens.get(bi).copied().unwrap_or(s.t);
    if s.causal {
        (i + 1).min(klen)
    } else {
        klen
    }
}

/// out = softmax(Q K^T / sqrt(HS), masked) V per head, and lse (the
/// natural log of each query's softmax denominator, scores scaled) for the
/// backward pass.
pub fn flash_forward(
    out: &mut [f32],     // (B, T, NH*HS)
    lse: &mut [f32],     // (B, NH, T)
    scratch: &mut [f32], // see `flash_scratch_len`
    qkv: &[f32],         // (B, T, W)
    s: AttnShape,
    key_lens: &[usize], // (B) or empty: every key is real
    precision: Precision,
) {
    let AttnShape { b, t, nh, nkv, hs, .. } = s;
    let (w, oc, group) = (s.qkv_width(), s.out_width(), nh / nkv);
    assert!(nkv > 0 && nh % nkv == 0 && out.len() >= b * t * oc && lse.len() >= b * nh * t && qkv.len() >= b * t * w);
    assert!(key_lens.is_empty() || key_lens.len() == b);
    let scale = 1.0 / (hs as f32).sqrt();
    let (out_ptr, lse_ptr) = (SendPtr(out.as_mut_ptr()), SendPtr(lse.as_mut_ptr()));
    for_each_task(scratch, task_scratch(hs), b * nh, |bh, sc| {
        // SAFETY: task (b, h) alone writes lse[b, h, :].
        let lse_bh = unsafe { std::slice::from_raw_parts_mut(lse_ptr.get().add(bh * t), t) };
        let (bi, h) = (bh / nh, bh % nh);
        let g = h / group;
        let base = bi * t * w;
        let (q, k, v) = (&qkv[base + h * hs..], &qkv[base + oc + g * hs..], &qkv[base + oc + nkv * hs + g * hs..]);
        let (sp, rest) = sc.split_at_mut(BQ * BK);
        let (acc, rest) = rest[BQ * BK..].split_at_mut(BQ * hs);
        let (m, rest) = rest.split_at_mut(BQ);
        let l = &mut rest[..BQ];
        for i0 in (0..t).step_by(BQ) {
            let rows = BQ.min(t - i0);
            let keys_max = (i0..i0 + rows).map(|i| live_keys(&s, key_lens, bi, i)).max().unwrap_or(0);
            m[..rows].fill(f32::NEG_INFINITY);
            l[..rows].fill(0.0);
            acc[..rows * hs].fill(0.0);
            for j0 in (0..keys_max).step_by(BK) {
                let cols = BK.min(keys_max - j0);
                // SAFETY: the pointers stay inside this task's rows of qkv and scratch.
                unsafe {
                    // S (rows, cols) = Q_blk (rows, HS) @ K_blk^T (HS, cols)
                    block_gemm(
                        precision,
                        rows,
                        cols,
                        hs,
                        sp.as_mut_ptr(),
                        BK as isize,
                        1,
                        false,
                        q[i0 * w..].as_ptr(),
                        w as isize,
                        1,
                        k[j0 * w..].as_ptr(),
                        1,
                        w as isize,
                    );
                }
                for r in 0..rows {
                    let live = live_keys(&s, key_lens, bi, i0 + r).saturating_sub(j0).min(cols);
                    online_softmax_row(&mut sp[r * BK..r * BK + cols], live, scale, &mut m[r], &mut l[r], &mut acc[r * hs..(r + 1) * hs]);
                }
                // SAFETY: as above.
                unsafe {
                    // acc (rows, HS) += P (rows, cols) @ V_blk (cols, HS)
                    block_gemm(
                        precision,
                        rows,
                        hs,
                        cols,
                        acc.as_mut_ptr(),
                        hs as isize,
                        1,
                        true,
                        sp.as_ptr(),
                        BK as isize,
                        1,
                        v[j0 * w..].as_ptr(),
                        w as isize,
                        1,
                    );
                }
            }
            for r in 0..rows {
                let inv = if l[r] > 0.0 { 1.0 / l[r] } else { 0.0 };
                // SAFETY: each (b, h) task writes only its head's columns of its batch rows.
                let o = unsafe { std::slice::from_raw_parts_mut(out_ptr.get().add((bi * t + i0 + r) * oc + h * hs), hs) };
                for (y, &a) in o.iter_mut().zip(&acc[r * hs..(r + 1) * hs]) {
                    *y = a * inv;
                }
                lse_bh[i0 + r] = m[r] + l[r].ln();
            }
        }
    });
}

/// Accumulates dqkv from dout, recomputing each block's probabilities from
/// Q, K and `lse`. `out` is the forward pass's output. Tasks are (b, KV
/// group): the query heads of a group add into the same dK and dV, so they
/// run one after another in one task.
pub fn flash_backward(
    dqkv: &mut [f32],    // (B, T, W)
    scratch: &mut [f32], // see `flash_scratch_len`
    dout: &[f32],        // (B, T, NH*HS)
    qkv: &[f32],         // (B, T, W)
    out: &[f32],         // (B, T, NH*HS)
    lse: &[f32],         // (B, NH, T)
    s: AttnShape,
    key_lens: &[usize],
    precision: Precision,
) {
    let AttnShape { b, t, nh, nkv, hs, .. } = s;
    let (w, oc, group) = (s.qkv_width(), s.out_width(), nh / nkv);
    assert!(dqkv.len() >= b * t * w && dout.len() >= b * t * oc && out.len() >= b * t * oc && lse.len() >= b * nh * t);
    assert!(qkv.len() >= b * t * w && (key_lens.is_empty() || key_lens.len() == b));
    let scale = 1.0 / (hs as f32).sqrt();
    let dptr = SendPtr(dqkv.as_mut_ptr());
    for_each_task(scratch, task_scratch(hs), b * nkv, |bg, sc| {
        let (bi, g) = (bg / nkv, bg % nkv);
        let base = bi * t * w;
        let (ko, vo) = (oc + g * hs, oc + nkv * hs + g * hs);
        let (p, rest) = sc.split_at_mut(BQ * BK);
        let (dp, rest) = rest.split_at_mut(BQ * BK);
        let dsum = &mut rest[..BQ];
        for h in g * group..(g + 1) * group {
            let qo = h * hs;
            let lse_bh = &lse[(bi * nh + h) * t..][..t];
            for i0 in (0..t).step_by(BQ) {
                let rows = BQ.min(t - i0);
                // D_i = dout_i . out_i, the softmax backward's row term.
                for (r, d) in dsum[..rows].iter_mut().enumerate() {
                    let at = (bi * t + i0 + r) * oc + qo;
                    *d = crate::simd::dot(&dout[at..at + hs], &out[at..at + hs]);
                }
                let keys_max = (i0..i0 + rows).map(|i| live_keys(&s, key_lens, bi, i)).max().unwrap_or(0);
                for j0 in (0..keys_max).step_by(BK) {
                    let cols = BK.min(keys_max - j0);
                    let qp = qkv[base + i0 * w + qo..].as_ptr();
                    let kp = qkv[base + j0 * w + ko..].as_ptr();
                    let vp = qkv[base + j0 * w + vo..].as_ptr();
                    let dyp = dout[(bi * t + i0) * oc + qo..].as_ptr();
                    // SAFETY: reads stay inside qkv / dout; the writes go to dQ_h
                    // (this head's columns) and dK_g, dV_g, owned by this task.
                    unsafe {
                        // S (rows, cols) = Q_blk @ K_blk^T
                        block_gemm(precision, rows, cols, hs, p.as_mut_ptr(), BK as isize, 1, false, qp, w as isize, 1, kp, 1, w as isize);
                        // dP (rows, cols) = dO_blk (rows, HS) @ V_blk^T (HS, cols)
                        block_gemm(precision, rows, cols, hs, dp.as_mut_ptr(), BK as isize, 1, false, dyp, oc as isize, 1, vp, 1, w as isize);
                    }
                    for r in 0..rows {
                        let live = live_keys(&s, key_lens, bi, i0 + r).saturating_sub(j0).min(cols);
                        probs_and_dscores(&mut p[r * BK..r * BK + cols], &mut dp[r * BK..r * BK + cols], live, scale, lse_bh[i0 + r], dsum[r]);
                    }
                    unsafe {
                        let d = dptr.get().add(base);
                        // dV_blk (cols, HS) += P^T (cols, rows) @ dO_blk (rows, HS)
                        block_gemm(precision, cols, hs, rows, d.add(j0 * w + vo), w as isize, 1, true, p.as_ptr(), 1, BK as isize, dyp, oc as isize, 1);
                        // dQ_blk (rows, HS) += dS (rows, cols) @ K_blk (cols, HS)
                        block_gemm(precision, rows, hs, cols, d.add(i0 * w + qo), w as isize, 1, true, dp.as_ptr(), BK as isize, 1, kp, w as isize, 1);
                        // dK_blk (cols, HS) += dS^T (cols, rows) @ Q_blk (rows, HS)
                        block_gemm(precision, cols, hs, rows, d.add(j0 * w + ko), w as isize, 1, true, dp.as_ptr(), 1, BK as isize, qp, w as isize, 1);
                    }
                }
            }
        }
    });
}

/// dst (m, n) = [dst +] a (m, k) @ b (k, n) for one block: f32, or with
/// `Precision::Bf16` bf16 operands and f32 sums (scores, probabilities and
/// gradients rounded to bf16 as they enter a product), as the dense layers
/// under that precision and as autocast runs attention.
///
/// Safety: as for `sgemm_serial`.
#[allow(clippy::too_many_arguments)]
unsafe fn block_gemm(
    precision: Precision,
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    dst_cs: isize,
    accumulate: bool,
    a: *const f32,
    a_rs: isize,
    a_cs: isize,
    b: *const f32,
    b_rs: isize,
    b_cs: isize,
) {
    match precision {
        Precision::F32 => sgemm_serial(m, n, k, dst, dst_rs, dst_cs, accumulate, a, a_rs, a_cs, b, b_rs, b_cs),
        Precision::Bf16 => {
            let (a, b) = (Mat { ptr: a, rs: a_rs, cs: a_cs }, Mat { ptr: b, rs: b_rs, cs: b_cs });
            crate::mixed::gemm_bf16(m, n, k, dst, dst_rs, dst_cs, accumulate, a, b, 1)
        }
    }
}

dispatch! {
    /// One query row's step of the online softmax over a block of scores:
    /// raises the running max `m` if the block's is larger (rescaling the sum
    /// `l` and the output accumulator `acc` by exp(old - new)), and turns the
    /// `live` scores into exp(score * scale - m); masked ones become 0.
    [Avx512]
    fn online_softmax_row(row: &mut [f32], live: usize, scale: f32, m: &mut f32, l: &mut f32, acc: &mut [f32]) {
        let bmax = row[..live].iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x)) * scale;
        let m_new = m.max(bmax);
        let corr = if *m == f32::NEG_INFINITY { 0.0 } else { crate::simd::exp(*m - m_new) };
        let sum = crate::simd::exp_sum_lanes(&mut row[..live], scale, m_new);
        row[live..].fill(0.0);
        if m_new != f32::NEG_INFINITY {
            *m = m_new;
        }
        *l = *l * corr + sum;
        acc.iter_mut().for_each(|a| *a *= corr);
    }
}

dispatch! {
    /// Rebuilds a row of probabilities from its scores and log-sum-exp, and
    /// turns dP into d(scores) = P * (dP - D) * scale (the scores' scale folded
    /// in); masked entries become 0.
    [Avx512]
    fn probs_and_dscores(p: &mut [f32], dp: &mut [f32], live: usize, scale: f32, lse: f32, d: f32) {
        for (x, y) in p[..live].iter_mut().zip(dp[..live].iter_mut()) {
            *x = crate::simd::exp(*x * scale - lse);
            *y = *x * (*y - d) * scale;
        }
        p[live..].fill(0.0);
        dp[live..].fill(0.0);
    }
}

/// The attention probabilities (B, NH, T, T) the forward pass used, rebuilt
/// from Q, K and lse (what `attn inspect attention` shows).
pub fn flash_probs(
    att: &mut [f32], // (B, NH, T, T)
    qkv: &[f32],     // (B, T, W)
    lse: &[f32],     // (B, NH, T)
    s: AttnShape,
    key_lens: &[usize],
) {
    let AttnShape { b, t, nh, nkv, hs, .. } = s;
    let (w, oc, group) = (s.qkv_width(), s.out_width(), nh / nkv);
    assert!(att.len() >= b * nh * t * t && lse.len() >= b * nh * t && qkv.len() >= b * t * w);
    let scale = 1.0 / (hs as f32).sqrt();
    att[..b * nh * t * t].par_chunks_mut(t * t).enumerate().for_each(|(bh, a)| {
        let (bi, h) = (bh / nh, bh % nh);
        let base = bi * t * w;
        let (q, k) = (&qkv[base + h * hs..], &qkv[base + oc + (h / group) * hs..]);
        // SAFETY: inside this (b, h)'s rows.
        unsafe { sgemm_serial(t, t, hs, a.as_mut_ptr(), t as isize, 1, false, q.as_ptr(), w as isize, 1, k.as_ptr(), 1, w as isize) };
        for (i, row) in a.chunks_exact_mut(t).enumerate() {
            let live = live_keys(&s, key_lens, bi, i);
            let l = lse[bh * t + i];
            row[..live].iter_mut().for_each(|x| *x = crate::simd::exp(*x * scale - l));
            row[live..].fill(0.0);
        }
    });
}
