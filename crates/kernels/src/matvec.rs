//! One row through a dense layer: out = x @ W + bias, for decoding at batch 1.
//!
//! Decoding reads every weight once per token and does two FLOPs per weight,
//! so it is bound by memory bandwidth, not arithmetic. These loops stream each
//! weight matrix once, split so that every thread streams its own part.

use multiversion::multiversion;
use rayon::prelude::*;

use crate::matmul::WeightLayout;
use crate::simd::{axpy, dot};

/// Output columns per task for (C, OC) weights: each task streams a
/// (C, COLS) strip of W and keeps its COLS outputs in L1.
const COLS: usize = 256;
/// Output rows per task for (OC, C) weights.
const ROWS: usize = 64;

pub fn matvec_forward(
    out: &mut [f32],        // (OC)
    inp: &[f32],            // (C)
    weight: &[f32],         // (C, OC) or (OC, C), see `layout`
    bias: Option<&[f32]>,   // (OC)
    c: usize, oc: usize,
    layout: WeightLayout,
) {
    assert!(out.len() >= oc && inp.len() >= c && weight.len() >= c * oc);
    let (out, inp) = (&mut out[..oc], &inp[..c]);
    match layout {
        WeightLayout::InOut => out.par_chunks_mut(COLS).enumerate().for_each(|(j, o)| {
            let c0 = j * COLS;
            match bias {
                Some(b) => o.copy_from_slice(&b[c0..c0 + o.len()]),
                None => o.fill(0.0),
            }
            strip_in_out(o, inp, weight, c0, oc);
        }),
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

/// o += sum over rows i of inp[i] * W[i, c0 .. c0 + o.len()]
#[multiversion(targets("x86_64+avx2+fma", "x86_64+avx"))]
fn strip_in_out(o: &mut [f32], inp: &[f32], weight: &[f32], c0: usize, oc: usize) {
    let w = o.len();
    for (i, &x) in inp.iter().enumerate() {
        axpy(o, x, &weight[i * oc + c0..i * oc + c0 + w]);
    }
}

/// o[r] = W[r, :] . inp
#[multiversion(targets("x86_64+avx2+fma", "x86_64+avx"))]
fn rows_out_in(o: &mut [f32], inp: &[f32], weight: &[f32], c: usize) {
    for (r, x) in o.iter_mut().enumerate() {
        *x = dot(&weight[r * c..(r + 1) * c], inp);
    }
}
