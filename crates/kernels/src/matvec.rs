//! One row through a dense layer: out = x @ W + bias, for decoding at batch 1.
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

/// Scratch floats `matvec_forward` needs for a layer with `oc` outputs.
pub fn matvec_scratch_len(oc: usize) -> usize {
    rayon::current_num_threads().saturating_sub(1) * oc
}

/// out = inp @ W + bias.
///
/// (C, OC) weights are split into one contiguous block of rows per thread, so
/// each thread streams one contiguous region of memory (the prefetcher's best
/// case); block 0 accumulates into `out`, the others into `scratch`, summed
/// at the end. (OC, C) weights are split by output rows, each a dot product.
pub fn matvec_forward(
    out: &mut [f32],      // (OC)
    scratch: &mut [f32],  // (threads - 1, OC), see `matvec_scratch_len`
    inp: &[f32],          // (C)
    weight: &[f32],       // (C, OC) or (OC, C), see `layout`
    bias: Option<&[f32]>, // (OC)
    c: usize,
    oc: usize,
    layout: WeightLayout,
) {
    assert!(out.len() >= oc && inp.len() >= c && weight.len() >= c * oc);
    let (out, inp) = (&mut out[..oc], &inp[..c]);
    match layout {
        WeightLayout::InOut => {
            let blocks = (scratch.len() / oc.max(1) + 1).min(rayon::current_num_threads()).min(c.div_ceil(8)).max(1);
            let rows = c.div_ceil(blocks);
            match bias {
                Some(b) => out.copy_from_slice(&b[..oc]),
                None => out.fill(0.0),
            }
            let partials = &mut scratch[..(blocks - 1) * oc];
            partials.fill(0.0);
            rayon::scope(|s| {
                for (j, part) in partials.chunks_mut(oc).enumerate() {
                    let r0 = (j + 1) * rows;
                    s.spawn(move |_| rows_in_out(part, &inp[r0.min(c)..(r0 + rows).min(c)], &weight[r0.min(c) * oc..], oc));
                }
                rows_in_out(out, &inp[..rows.min(c)], weight, oc);
            });
            for part in scratch[..(blocks - 1) * oc].chunks(oc) {
                axpy(out, 1.0, part);
            }
        }
        WeightLayout::OutIn => out.par_chunks_mut(ROWS).enumerate().for_each(|(j, o)| {
            let (r0, rows) = (j * ROWS, o.len());
            rows_out_in(o, inp, &weight[r0 * c..(r0 + rows) * c], c);
            if let Some(b) = bias {
                for (x, &bi) in o.iter_mut().zip(&b[r0..r0 + rows]) {
                    *x += bi;
                }
            }
        }),
    }
}

/// o += sum over i of inp[i] * W[i, :], for the rows of W starting at `weight`.
#[multiversion(targets("x86_64+avx2+fma", "x86_64+avx"))]
fn rows_in_out(o: &mut [f32], inp: &[f32], weight: &[f32], oc: usize) {
    for (i, &x) in inp.iter().enumerate() {
        axpy(o, x, &weight[i * oc..(i + 1) * oc]);
    }
}

/// o[r] = W[r, :] . inp
#[multiversion(targets("x86_64+avx2+fma", "x86_64+avx"))]
fn rows_out_in(o: &mut [f32], inp: &[f32], weight: &[f32], c: usize) {
    for (r, x) in o.iter_mut().enumerate() {
        *x = dot(&weight[r * c..(r + 1) * c], inp);
    }
}
