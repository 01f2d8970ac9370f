//! LayerNorm: y = (x - mean) * rstd * weight + bias, over the last dimension.
//! The forward pass saves mean and rstd (1/std) per row for the backward pass.

use crate::simd::{dispatch, lane_sum, lane_sum2};
use rayon::prelude::*;

use crate::rows_per_task;

/// LayerNorm of N rows of C; saves each row's mean and rstd.
pub fn layernorm_forward(
    out: &mut [f32],  // (N, C)
    mean: &mut [f32], // (N)
    rstd: &mut [f32], // (N)
    inp: &[f32],      // (N, C)
    weight: &[f32],   // (C)
    bias: &[f32],     // (C)
    n: usize,
    c: usize,
    eps: f32,
) {
    assert!(out.len() >= n * c && inp.len() >= n * c && mean.len() >= n && rstd.len() >= n);
    assert!(weight.len() == c && bias.len() == c);
    let rows = rows_per_task(n, c);
    out[..n * c]
        .par_chunks_mut(rows * c)
        .zip(inp[..n * c].par_chunks(rows * c))
        .zip(mean[..n].par_chunks_mut(rows).zip(rstd[..n].par_chunks_mut(rows)))
        .for_each(|((o, x), (m, r))| forward_rows(o, m, r, x, weight, bias, c, eps));
}

dispatch! {
    [Avx2]
    fn forward_rows(out: &mut [f32], mean: &mut [f32], rstd: &mut [f32], inp: &[f32], weight: &[f32], bias: &[f32], c: usize, eps: f32) {
        for (((o, x), m), r) in out.chunks_exact_mut(c).zip(inp.chunks_exact(c)).zip(mean.iter_mut()).zip(rstd.iter_mut()) {
            let x = &x[..c];
            let mu = lane_sum(c, |i| x[i]) / c as f32;
            let var = lane_sum(c, |i| (x[i] - mu) * (x[i] - mu));
            // Biased variance, as torch.nn.LayerNorm uses.
            let rs = 1.0 / (var / c as f32 + eps).sqrt();
            for i in 0..c {
                o[i] = (x[i] - mu) * rs * weight[i] + bias[i];
            }
            *m = mu;
            *r = rs;
        }
    }
}

/// Accumulates dinp, dweight and dbias.
pub fn layernorm_backward(
    dinp: &mut [f32],    // (N, C)
    dweight: &mut [f32], // (C)
    dbias: &mut [f32],   // (C)
    dout: &[f32],        // (N, C)
    inp: &[f32],         // (N, C)
    weight: &[f32],      // (C)
    mean: &[f32],        // (N)
    rstd: &[f32],        // (N)
    n: usize,
    c: usize,
) {
    assert!(dinp.len() >= n * c && dout.len() >= n * c && inp.len() >= n * c);
    assert!(dweight.len() == c && dbias.len() == c && weight.len() == c);
    let rows = rows_per_task(n, c);
    // Pass 1, by rows: the input gradient.
    dinp[..n * c]
        .par_chunks_mut(rows * c)
        .zip(dout[..n * c].par_chunks(rows * c).zip(inp[..n * c].par_chunks(rows * c)))
        .zip(mean[..n].par_chunks(rows).zip(rstd[..n].par_chunks(rows)))
        .for_each(|((di, (dy, x)), (m, r))| backward_rows(di, dy, x, weight, m, r, c));
    // Pass 2, by column blocks: each task owns its slice of dweight/dbias, so no
    // reduction buffers are needed and the sum order is independent of threads.
    let cols = c.div_ceil(rayon::current_num_threads().max(1)).max(16);
    dweight
        .par_chunks_mut(cols)
        .zip(dbias.par_chunks_mut(cols))
        .enumerate()
        .for_each(|(j, (dw, db))| param_grad_cols(dw, db, j * cols, dout, inp, mean, rstd, n, c));
}

dispatch! {
    [Avx2]
    fn backward_rows(dinp: &mut [f32], dout: &[f32], inp: &[f32], weight: &[f32], mean: &[f32], rstd: &[f32], c: usize) {
        for (((di, dy), x), (&mu, &rs)) in dinp.chunks_exact_mut(c).zip(dout.chunks_exact(c)).zip(inp.chunks_exact(c)).zip(mean.iter().zip(rstd)) {
            // dnorm = dy * w; dx = rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm))
            let (x, dy, weight) = (&x[..c], &dy[..c], &weight[..c]);
            let (sum_dn, sum_dn_n) = lane_sum2(c, |i| {
                let dn = dy[i] * weight[i];
                (dn, dn * (x[i] - mu) * rs)
            });
            let mean_dn = sum_dn / c as f32;
            let mean_dn_n = sum_dn_n / c as f32;
            for i in 0..c {
                let norm = (x[i] - mu) * rs;
                let dn = dy[i] * weight[i];
                di[i] += rs * (dn - mean_dn - norm * mean_dn_n);
            }
        }
    }
}

dispatch! {
    [Avx2]
    fn param_grad_cols(dw: &mut [f32], db: &mut [f32], c0: usize, dout: &[f32], inp: &[f32], mean: &[f32], rstd: &[f32], n: usize, c: usize) {
        let w = dw.len();
        for r in 0..n {
            let dy = &dout[r * c + c0..r * c + c0 + w];
            let x = &inp[r * c + c0..r * c + c0 + w];
            let (mu, rs) = (mean[r], rstd[r]);
            for i in 0..w {
                db[i] += dy[i];
                dw[i] += dy[i] * (x[i] - mu) * rs;
            }
        }
    }
}

/// Reference forward in f64.
pub fn layernorm_forward_naive(out: &mut [f32], mean: &mut [f32], rstd: &mut [f32], inp: &[f32], weight: &[f32], bias: &[f32], n: usize, c: usize, eps: f32) {
    for r in 0..n {
        let x = &inp[r * c..(r + 1) * c];
        let mu = x.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
        let var = x.iter().map(|&v| (v as f64 - mu).powi(2)).sum::<f64>() / c as f64;
        let rs = 1.0 / (var + eps as f64).sqrt();
        for i in 0..c {
            out[r * c + i] = ((x[i] as f64 - mu) * rs * weight[i] as f64 + bias[i] as f64) as f32;
        }
        mean[r] = mu as f32;
        rstd[r] = rs as f32;
    }
}
