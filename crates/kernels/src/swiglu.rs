//! SwiGLU (Llama's MLP activation): y = silu(gate) * up, silu(g) = g * sigmoid(g).

use rayon::prelude::*;

use crate::simd::dispatch;

const CHUNK: usize = 16 * 1024;

/// out = silu(gate) * up, element by element.
pub fn swiglu_forward(
    out: &mut [f32], // (N, I)
    gate: &[f32],    // (N, I)
    up: &[f32],      // (N, I)
) {
    assert!(out.len() == gate.len() && gate.len() == up.len());
    out.par_chunks_mut(CHUNK).zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK))).for_each(|(o, (g, u))| forward_chunk(o, g, u));
}

dispatch! {
    [Avx2]
    fn forward_chunk(out: &mut [f32], gate: &[f32], up: &[f32]) {
        for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
            *o = g / (1.0 + crate::simd::exp(-g)) * u;
        }
    }
}

/// Writes dgate and dup (not added: nothing else feeds them).
pub fn swiglu_backward(
    dgate: &mut [f32], // (N, I)
    dup: &mut [f32],   // (N, I)
    dout: &[f32],      // (N, I)
    gate: &[f32],      // (N, I)
    up: &[f32],        // (N, I)
) {
    assert!(dgate.len() == gate.len() && dup.len() == up.len() && dout.len() == gate.len() && gate.len() == up.len());
    dgate
        .par_chunks_mut(CHUNK)
        .zip(dup.par_chunks_mut(CHUNK))
        .zip(dout.par_chunks(CHUNK).zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK))))
        .for_each(|((dg, du), (dy, (g, u)))| backward_chunk(dg, du, dy, g, u));
}

dispatch! {
    [Avx2]
    fn backward_chunk(dg: &mut [f32], du: &mut [f32], dy: &[f32], g: &[f32], u: &[f32]) {
        let n = dg.len();
        let (du, dy, g, u) = (&mut du[..n], &dy[..n], &g[..n], &u[..n]);
        for i in 0..n {
            let s = 1.0 / (1.0 + crate::simd::exp(-g[i]));
            // d silu / dg = s (1 + g (1 - s))
            dg[i] = dy[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
            du[i] = dy[i] * g[i] * s;
        }
    }
}

/// Reference in f64.
pub fn swiglu_forward_naive(out: &mut [f32], gate: &[f32], up: &[f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        let g = g as f64;
        *o = (g / (1.0 + (-g).exp()) * u as f64) as f32;
    }
}
