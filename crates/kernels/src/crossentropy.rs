//! Softmax cross-entropy over the vocabulary, fused: the probabilities are never
//! stored. The forward pass saves each row's log-sum-exp; the backward pass
//! rewrites the logits buffer in place into d(logits), which saves an (N, V)
//! buffer (51 MB for GPT-2 at B=4, T=64).

use crate::simd::dispatch;
use rayon::prelude::*;

/// `losses[i] = logsumexp(logits[i]) - logits[i, targets[i]]`; 0 where
/// `targets[i]` is `IGNORE` (a position with no label: padding, or a prompt the
/// loss does not cover).
pub fn crossentropy_forward(
    losses: &mut [f32], // (N)
    lse: &mut [f32],    // (N)
    logits: &[f32],     // (N, V)
    targets: &[u32],    // (N)
    n: usize,
    v: usize,
) {
    assert!(losses.len() >= n && lse.len() >= n && logits.len() >= n * v && targets.len() >= n);
    losses[..n].par_iter_mut().zip(lse[..n].par_iter_mut()).zip(logits[..n * v].par_chunks(v)).zip(&targets[..n]).for_each(|(((loss, lse), row), &tgt)| {
        *lse = logsumexp(row);
        if tgt == IGNORE {
            *loss = 0.0;
            return;
        }
        assert!((tgt as usize) < v, "target {tgt} out of range for vocab {v}");
        *loss = *lse - row[tgt as usize];
    });
}

dispatch! {
    [Avx512]
    fn logsumexp(row: &[f32]) -> f32 {
        let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        max + crate::simd::sum_exp_lanes(row, max).ln()
    }
}

/// In place: on entry `logits` holds the logits, on exit d(loss)/d(logits),
/// i.e. `(softmax(logits) - onehot(target)) * dlosses[i]`; rows whose target
/// is `IGNORE` become 0.
pub fn crossentropy_backward_inplace(
    logits: &mut [f32], // (N, V)
    lse: &[f32],        // (N)
    targets: &[u32],    // (N)
    dlosses: &[f32],    // (N)
    n: usize,
    v: usize,
) {
    assert!(logits.len() >= n * v && lse.len() >= n && targets.len() >= n && dlosses.len() >= n);
    logits[..n * v].par_chunks_mut(v).enumerate().for_each(|(i, row)| {
        if targets[i] == IGNORE {
            row.fill(0.0);
            return;
        }
        softmax_scaled(row, lse[i], dlosses[i]);
        row[targets[i] as usize] -= dlosses[i];
    });
}

dispatch! {
    /// row = exp(row - lse) * d
    [Avx512]
    fn softmax_scaled(row: &mut [f32], lse: f32, d: f32) {
        for x in row.iter_mut() {
            *x = crate::simd::exp(*x - lse) * d;
        }
    }
}

/// Reference forward in f64.
pub fn crossentropy_forward_naive(losses: &mut [f32], logits: &[f32], targets: &[u32], n: usize, v: usize) {
    for i in 0..n {
        if targets[i] == IGNORE {
            losses[i] = 0.0;
            continue;
        }
        let row = &logits[i * v..(i + 1) * v];
        let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
        losses[i] = (max + sum.ln() - row[targets[i] as usize] as f64) as f32;
    }
}

/// A target that contributes no loss and no gradient (Hugging Face's -100).
pub const IGNORE: u32 = u32::MAX;

/// Cross-entropy against a label-smoothed target: (1 - eps) on the target and
/// eps / V on every class, as PyTorch's `label_smoothing`:
/// `losses[i] = (1 - eps)(lse - x[t]) + eps (lse - mean(x))`; 0 where `targets[i]` is `IGNORE`.
pub fn crossentropy_smoothed_forward(
    losses: &mut [f32], // (N)
    lse: &mut [f32],    // (N)
    logits: &[f32],     // (N, V)
    targets: &[u32],    // (N)
    n: usize,
    v: usize,
    eps: f32,
) {
    assert!(losses.len() >= n && lse.len() >= n && logits.len() >= n * v && targets.len() >= n);
    losses[..n].par_iter_mut().zip(lse[..n].par_iter_mut()).zip(logits[..n * v].par_chunks(v)).zip(&targets[..n]).for_each(|(((loss, lse), row), &tgt)| {
        if tgt == IGNORE {
            (*loss, *lse) = (0.0, 0.0);
            return;
        }
        assert!((tgt as usize) < v, "target {tgt} out of range for vocab {v}");
        *lse = logsumexp(row);
        let nll = *lse - row[tgt as usize];
        *loss = if eps == 0.0 { nll } else { (1.0 - eps) * nll + eps * (*lse - (row.iter().map(|&x| x as f64).sum::<f64>() / v as f64) as f32) };
    });
}

/// In place: logits -> d(loss)/d(logits) = `(softmax - (1 - eps) onehot - eps / V) * dlosses[i]`;
/// rows whose target is IGNORE become 0.
pub fn crossentropy_smoothed_backward_inplace(
    logits: &mut [f32], // (N, V)
    lse: &[f32],        // (N)
    targets: &[u32],    // (N)
    dlosses: &[f32],    // (N)
    n: usize,
    v: usize,
    eps: f32,
) {
    assert!(logits.len() >= n * v && lse.len() >= n && targets.len() >= n && dlosses.len() >= n);
    logits[..n * v].par_chunks_mut(v).enumerate().for_each(|(i, row)| {
        if targets[i] == IGNORE {
            row.fill(0.0);
            return;
        }
        let d = dlosses[i];
        softmax_scaled(row, lse[i], d);
        if eps != 0.0 {
            let u = eps / v as f32 * d;
            row.iter_mut().for_each(|x| *x -= u);
        }
        row[targets[i] as usize] -= (1.0 - eps) * d;
    });
}
