//! A few rows through a dense layer: out = x @ W + bias, for decoding (one
//! row per sequence being generated).
//!
//! Decoding reads every weight once per token and does two FLOPs per weight,
//! so it is bound by memory bandwidth, not arithmetic. These loops stream each
//! weight matrix once, split so that every thread streams its own part.

use crate::simd::dispatch;
use rayon::prelude::*;

use crate::matmul::WeightLayout;
use crate::simd::axpy;

/// Output rows per task for (OC, C) weights.
const ROWS: usize = 64;

/// Scratch floats `matvec_forward` needs for `n` rows through a layer with
/// `oc` outputs.
pub fn matvec_scratch_len(n: usize, oc: usize) -> usize {
    rayon::current_num_threads().saturating_sub(1).max(1) * n * oc
}

/// out = inp @ W + bias for a few rows (decoding: one row per sequence).
///
/// Every weight is read once for all N rows, and each output is summed in
/// an order that depends only on C, OC and the thread count, never on N: a
/// row gives bit for bit the same result alone as beside others, which is
/// what makes a server's output independent of what else is in the batch.
///
/// (C, OC) weights are split into one contiguous block of input rows per
/// thread, so each thread streams one contiguous region of memory (the
/// prefetcher's best case); block 0 accumulates into `out`, the others into
/// `scratch`, summed at the end in block order. (OC, C) weights are split by
/// output rows, each a dot product.
pub fn matvec_forward(
    out: &mut [f32],      // (N, OC)
    scratch: &mut [f32],  // see `matvec_scratch_len`
    inp: &[f32],          // (N, C)
    weight: &[f32],       // (C, OC) or (OC, C), see `layout`
    bias: Option<&[f32]>, // (OC)
    n: usize,
    c: usize,
    oc: usize,
    layout: WeightLayout,
) {
    assert!(n >= 1 && out.len() >= n * oc && inp.len() >= n * c && weight.len() >= c * oc);
    let (out, inp) = (&mut out[..n * oc], &inp[..n * c]);
    match layout {
        WeightLayout::InOut => {
            let blocks = (scratch.len() / (n * oc).max(1) + 1).min(rayon::current_num_threads()).min(c.div_ceil(8)).max(1);
            let rows = c.div_ceil(blocks);
            for o in out.chunks_mut(oc) {
                match bias {
                    Some(b) => o.copy_from_slice(&b[..oc]),
                    None => o.fill(0.0),
                }
            }
            let partials = &mut scratch[..(blocks - 1) * n * oc];
            partials.fill(0.0);
            rayon::scope(|s| {
                for (j, part) in partials.chunks_mut(n * oc).enumerate() {
                    let r0 = ((j + 1) * rows).min(c);
                    let r1 = (r0 + rows).min(c);
                    s.spawn(move |_| rows_in_out(part, inp, &weight[r0 * oc..], r0..r1, c, oc));
                }
                rows_in_out(out, inp, weight, 0..rows.min(c), c, oc);
            });
            for part in scratch[..(blocks - 1) * n * oc].chunks(n * oc) {
                axpy(out, 1.0, part);
            }
        }
        WeightLayout::OutIn if n == 1 => out.par_chunks_mut(ROWS).enumerate().for_each(|(j, o)| {
            let (r0, rows) = (j * ROWS, o.len());
            rows_out_in(o, inp, &weight[r0 * c..(r0 + rows) * c], c, 1);
            add_bias(o, bias.map(|b| &b[r0..r0 + rows]));
        }),
        WeightLayout::OutIn => {
            // Results land in scratch as (OC, N), each task writing whole
            // rows of it, then are transposed into `out`.
            let t = &mut scratch[..n * oc];
            t.par_chunks_mut(ROWS * n).enumerate().for_each(|(j, o)| {
                let (r0, rows) = (j * ROWS, o.len() / n);
                rows_out_in(o, inp, &weight[r0 * c..(r0 + rows) * c], c, n);
            });
            for (r, col) in t.chunks(n).enumerate() {
                for (b, &x) in col.iter().enumerate() {
                    out[b * oc + r] = x;
                }
            }
            for o in out.chunks_mut(oc) {
                add_bias(o, bias);
            }
        }
    }
}

fn add_bias(o: &mut [f32], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        for (x, &bi) in o.iter_mut().zip(b) {
            *x += bi;
        }
    }
}

dispatch! {
    /// o[b] += sum over i in `range` of inp[b, i] * W[i, :], for W's rows from
    /// `range.start` on (given at `weight`). Four rows of W go through each
    /// pass over o, which quarters the traffic to o (in L2 for several rows)
    /// while adding the terms in the same order as one row at a time: each
    /// output is fma(x1, w1, fma(x0, w0, o))..., the same for every b and n.
    [Avx512]
    fn rows_in_out(o: &mut [f32], inp: &[f32], weight: &[f32], range: std::ops::Range<usize>, c: usize, oc: usize) {
        let (i0, len) = (range.start, range.len());
        let quads = len / 4;
        for q in 0..quads {
            let k = q * 4;
            let w = &weight[k * oc..(k + 4) * oc];
            let (w0, rest) = w.split_at(oc);
            let (w1, rest) = rest.split_at(oc);
            let (w2, w3) = rest.split_at(oc);
            for (ob, xb) in o.chunks_mut(oc).zip(inp.chunks(c)) {
                let x = &xb[i0 + k..i0 + k + 4];
                let (x0, x1, x2, x3) = (x[0], x[1], x[2], x[3]);
                for ((((y, &a), &b), &cc), &d) in ob.iter_mut().zip(w0).zip(w1).zip(w2).zip(w3) {
                    *y = x3.mul_add(d, x2.mul_add(cc, x1.mul_add(b, x0.mul_add(a, *y))));
                }
            }
        }
        for k in quads * 4..len {
            let w = &weight[k * oc..(k + 1) * oc];
            for (ob, xb) in o.chunks_mut(oc).zip(inp.chunks(c)) {
                let x = xb[i0 + k];
                for (y, &a) in ob.iter_mut().zip(w) {
                    *y = x.mul_add(a, *y);
                }
            }
        }
    }
}

/// o[r, b] = W[r, :] . inp[b] (o is (rows, N)). Several weight rows and
/// inputs go through each pass: one load of W serves up to four inputs and
/// one load of an input serves several rows; for one input, four rows keep
/// four independent chains of fused multiply-adds in flight. Every (r, b) is
/// summed the same way, see `dot_lanes`.
fn rows_out_in(o: &mut [f32], inp: &[f32], weight: &[f32], c: usize, n: usize) {
    let rows = o.len() / n;
    let row = |r: usize| &weight[r.min(rows - 1) * c..(r.min(rows - 1) + 1) * c];
    let mut r = 0;
    while r < rows {
        if n == 1 {
            let k = (rows - r).min(4);
            let d = dots::<4, 1>([row(r), row(r + 1), row(r + 2), row(r + 3)], [inp]);
            for (i, x) in o[r..r + k].iter_mut().enumerate() {
                *x = d[i][0];
            }
            r += 4;
            continue;
        }
        let k = (rows - r).min(2);
        let (w0, w1) = (row(r), row(r + 1));
        let mut b = 0;
        while b < n {
            let nb = (n - b).min(4);
            let x = |j: usize| &inp[(b + j.min(nb - 1)) * c..(b + j.min(nb - 1) + 1) * c];
            let d = dots::<2, 4>([w0, w1], [x(0), x(1), x(2), x(3)]);
            for i in 0..k {
                o[(r + i) * n + b..(r + i) * n + b + nb].copy_from_slice(&d[i][..nb]);
            }
            b += nb;
        }
        r += 2;
    }
}

/// w[i] . x[j] for every i < R, j < NB, each as `dot_lanes` sums it.
fn dots<const R: usize, const NB: usize>(w: [&[f32]; R], x: [&[f32]; NB]) -> [[f32; NB]; R] {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::active() >= crate::simd::Level::Avx2 {
        // SAFETY: the active level implies AVX2 and FMA; every slice has w[0]'s length.
        return unsafe { x86::dots(w, x) };
    }
    let mut out = [[0.0; NB]; R];
    for (o, wi) in out.iter_mut().zip(w) {
        for (oj, xj) in o.iter_mut().zip(x) {
            *oj = dot_lanes(wi, xj);
        }
    }
    out
}

/// The one definition of a decoding dot product: eight lanes, lane j
/// accumulating w[8i + j] * x[8i + j] by fused multiply-add over i, the
/// tail fused into a scalar, then a fixed reduction of the lanes. The
/// vector kernels compute exactly this (a fused multiply-add rounds once,
/// in a register or in libm alike), so every path gives the same bits.
fn dot_lanes(w: &[f32], x: &[f32]) -> f32 {
    let n = w.len();
    let chunks = n / 8;
    let mut a = [0.0f32; 8];
    for i in 0..chunks {
        for j in 0..8 {
            a[j] = w[i * 8 + j].mul_add(x[i * 8 + j], a[j]);
        }
    }
    reduce(&a, &w[chunks * 8..], &x[chunks * 8..n])
}

#[inline(always)]
fn reduce(a: &[f32; 8], w_tail: &[f32], x_tail: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for (&w, &x) in w_tail.iter().zip(x_tail) {
        s = w.mul_add(x, s);
    }
    let p = [a[0] + a[4], a[1] + a[5], a[2] + a[6], a[3] + a[7]];
    s + (p[0] + p[2]) + (p[1] + p[3])
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// `dot_lanes` of each of R weight rows with each of NB inputs, in AVX2
    /// registers (R x NB accumulators).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dots<const R: usize, const NB: usize>(w: [&[f32]; R], x: [&[f32]; NB]) -> [[f32; NB]; R] {
        let n = w[0].len();
        let chunks = n / 8;
        let mut acc = [[_mm256_setzero_ps(); NB]; R];
        for i in 0..chunks {
            let mut wv = [_mm256_setzero_ps(); R];
            for (v, wi) in wv.iter_mut().zip(&w) {
                *v = _mm256_loadu_ps(wi.as_ptr().add(i * 8));
            }
            for k in 0..NB {
                let xv = _mm256_loadu_ps(x[k].as_ptr().add(i * 8));
                for r in 0..R {
                    acc[r][k] = _mm256_fmadd_ps(wv[r], xv, acc[r][k]);
                }
            }
        }
        let mut out = [[0.0f32; NB]; R];
        for r in 0..R {
            for k in 0..NB {
                let mut lanes = [0.0f32; 8];
                _mm256_storeu_ps(lanes.as_mut_ptr(), acc[r][k]);
                out[r][k] = super::reduce(&lanes, &w[r][chunks * 8..n], &x[k][chunks * 8..n]);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    /// The AVX2 kernel and the portable definition agree bit for bit.
    #[test]
    fn vector_dots_equal_dot_lanes() {
        let c = 203; // a tail after 25 chunks of 8
        let v = |seed: u32| -> Vec<f32> { (0..c).map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0).collect() };
        let (w0, w1) = (v(1), v(2));
        let xs: Vec<Vec<f32>> = (3..7).map(v).collect();
        let d = super::dots::<2, 4>([&w0, &w1], [&xs[0], &xs[1], &xs[2], &xs[3]]);
        let e = super::dots::<4, 1>([&w0, &w1, &xs[2], &xs[3]], [&xs[0]]);
        for k in 0..4 {
            assert_eq!(d[0][k].to_bits(), super::dot_lanes(&w0, &xs[k]).to_bits());
            assert_eq!(d[1][k].to_bits(), super::dot_lanes(&w1, &xs[k]).to_bits());
        }
        for (r, w) in [&w0, &w1, &xs[2], &xs[3]].iter().enumerate() {
            assert_eq!(e[r][0].to_bits(), super::dot_lanes(w, &xs[0]).to_bits());
        }
    }
}
