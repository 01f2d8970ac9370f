//! RMSNorm (Llama): y = x * rstd * weight, rstd = 1 / sqrt(mean(x^2) + eps).
//! No centring and no bias. The forward pass saves rstd per row.

use crate::simd::{dispatch, lane_sum};
use rayon::prelude::*;

use crate::rows_per_task;

/// RMSNorm of N rows of C; saves each row's rstd.
pub fn rmsnorm_forward(
    out: &mut [f32],  // (N, C)
    rstd: &mut [f32], // (N)
    inp: &[f32],      // (N, C)
    weight: &[f32],   // (C)
    n: usize,
    c: usize,
    eps: f32,
) {
    assert!(out.len() >= n * c && inp.len() >= n * c && rstd.len() >= n && weight.len() == c);
    let rows = rows_per_task(n, c);
    out[..n * c]
        .par_chunks_mut(rows * c)
        .zip(inp[..n * c].par_chunks(rows * c))
        .zip(rstd[..n].par_chunks_mut(rows))
        .for_each(|((o, x), r)| forward_rows(o, r, x, weight, c, eps));
}

dispatch! {
    [Avx2]
    fn forward_rows(out: &mut [f32], rstd: &mut [f32], inp: &[f32], weight: &[f32], c: usize, eps: f32) {
        for ((o, x), r) in out.chunks_exact_mut(c).zip(inp.chunks_exact(c)).zip(rstd.iter_mut()) {
            let x = &x[..c];
            let ms = lane_sum(c, |i| x[i] * x[i]) / c as f32;
            let rs = 1.0 / (ms + eps).sqrt();
            for i in 0..c {
                o[i] = x[i] * rs * weight[i];
            }
            *r = rs;
        }
    }
}

/// Accumulates dinp and dweight.
pub fn rmsnorm_backward(
    dinp: &mut [f32],    // (N, C)
    dweight: &mut [f32], // (C)
    dout: &[f32],        // (N, C)
    inp: &[f32],         // (N, C)
    weight: &[f32],      // (C)
    rstd: &[f32],        // (N)
    n: usize,
    c: usize,
) {
    assert!(dinp.len() >= n * c && dout.len() >= n * c && inp.len() >= n * c && dweight.len() == c && weight.len() == c);
    let rows = rows_per_task(n, c);
    dinp[..n * c]
        .par_chunks_mut(rows * c)
        .zip(dout[..n * c].par_chunks(rows * c).zip(inp[..n * c].par_chunks(rows * c)))
        .zip(rstd[..n].par_chunks(rows))
        .for_each(|((di, (dy, x)), r)| backward_rows(di, dy, x, weight, r, c));
    // By column blocks, as in LayerNorm: each task owns a slice of dweight,
    // so the sum order does not depend on the thread count.
    let cols = c.div_ceil(rayon::current_num_threads().max(1)).max(16);
    dweight.par_chunks_mut(cols).enumerate().for_each(|(j, dw)| {
        let c0 = j * cols;
        for r in 0..n {
            let (dy, x) = (&dout[r * c + c0..][..dw.len()], &inp[r * c + c0..][..dw.len()]);
            for i in 0..dw.len() {
                dw[i] += dy[i] * x[i] * rstd[r];
            }
        }
    });
}

dispatch! {
    [Avx2]
    fn backward_rows(dinp: &mut [f32], dout: &[f32], inp: &[f32], weight: &[f32], rstd: &[f32], c: usize) {
        for (((di, dy), x), &rs) in dinp.chunks_exact_mut(c).zip(dout.chunks_exact(c)).zip(inp.chunks_exact(c)).zip(rstd) {
            // With n = x * rstd and dn = dy * w: dx = rstd * (dn - n * mean(dn * n)).
            let (x, dy, weight) = (&x[..c], &dy[..c], &weight[..c]);
            let dot = lane_sum(c, |i| dy[i] * weight[i] * x[i] * rs);
            let m = dot / c as f32;
            for i in 0..c {
                di[i] += rs * (dy[i] * weight[i] - x[i] * rs * m);
            }
        }
    }
}

/// Reference forward in f64.
pub fn rmsnorm_forward_naive(out: &mut [f32], rstd: &mut [f32], inp: &[f32], weight: &[f32], n: usize, c: usize, eps: f32) {
    for r in 0..n {
        let x = &inp[r * c..(r + 1) * c];
        let ms = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / c as f64;
        let rs = 1.0 / (ms + eps as f64).sqrt();
        for i in 0..c {
            out[r * c + i] = (x[i] as f64 * rs * weight[i] as f64) as f32;
        }
        rstd[r] = rs as f32;
    }
}
