//! A few rows through a dense layer: out = x @ W + bias, for decoding (one
//! row per sequence being generated).
//!
//! Decoding reads every weight once per token and does two FLOPs per weight,
//! so it is bound by memory bandwidth, not arithmetic. These loops stream each
//! weight matrix once, split so that every thread streams its own part.

use multiversion::multiversion;
use rayon::prelude::*;

use crate::matmul::WeightLayout;
use crate::simd::{axpy, dot};

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

/// o[b] += sum over i in `range` of inp[b, i] * W[i, :], for W's rows from
/// `range.start` on (given at `weight`). The sum over i runs in the same
/// order for every b.
#[multiversion(targets("x86_64+avx2+fma", "x86_64+avx"))]
fn rows_in_out(o: &mut [f32], inp: &[f32], weight: &[f32], range: std::ops::Range<usize>, c: usize, oc: usize) {
    for (k, i) in range.enumerate() {
        let w = &weight[k * oc..(k + 1) * oc];
        for (ob, xb) in o.chunks_mut(oc).zip(inp.chunks(c)) {
            axpy(ob, xb[i], w);
        }
    }
}

/// o[r, b] = W[r, :] . inp[b] (o is (rows, N))
#[multiversion(targets("x86_64+avx2+fma", "x86_64+avx"))]
fn rows_out_in(o: &mut [f32], inp: &[f32], weight: &[f32], c: usize, n: usize) {
    for (r, ob) in o.chunks_mut(n).enumerate() {
        let w = &weight[r * c..(r + 1) * c];
        for (x, xb) in ob.iter_mut().zip(inp.chunks(c)) {
            *x = dot(w, xb);
        }
    }
}
