//! GELU, tanh approximation (GPT-2's `gelu_new`):
//! y = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))

use crate::simd::dispatch;
use rayon::prelude::*;

use crate::simd::tanh;

const K: f32 = 0.797_884_6; // sqrt(2 / pi)
const A: f32 = 0.044_715;
const CHUNK: usize = 16 * 1024;

/// out = gelu(inp), element by element (the tanh form above).
pub fn gelu_forward(
    out: &mut [f32], // (N)
    inp: &[f32],     // (N)
) {
    assert!(out.len() == inp.len());
    out.par_chunks_mut(CHUNK).zip(inp.par_chunks(CHUNK)).for_each(|(o, x)| forward_chunk(o, x));
}

dispatch! {
    [Avx512]
    fn forward_chunk(out: &mut [f32], inp: &[f32]) {
        for (o, &x) in out.iter_mut().zip(inp) {
            *o = 0.5 * x * (1.0 + tanh(K * (x + A * x * x * x)));
        }
    }
}

/// Writes dinp = dout * gelu'(inp): the activation is d(up)'s only source,
/// so its buffer needs no zeroing first.
pub fn gelu_backward(
    dinp: &mut [f32], // (N)
    inp: &[f32],      // (N)
    dout: &[f32],     // (N)
) {
    assert!(dinp.len() == inp.len() && dout.len() == inp.len());
    dinp.par_chunks_mut(CHUNK).zip(inp.par_chunks(CHUNK).zip(dout.par_chunks(CHUNK))).for_each(|(di, (x, dy))| backward_chunk(di, x, dy));
}

dispatch! {
    [Avx512]
    fn backward_chunk(dinp: &mut [f32], inp: &[f32], dout: &[f32]) {
        for ((di, &x), &dy) in dinp.iter_mut().zip(inp).zip(dout) {
            let th = tanh(K * (x + A * x * x * x));
            // d/dx: 0.5 (1 + th) + 0.5 x (1 - th^2) K (1 + 3 A x^2)
            let grad = 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * K * (1.0 + 3.0 * A * x * x);
            *di = grad * dy;
        }
    }
}

/// Reference in f64.
pub fn gelu_forward_naive(out: &mut [f32], inp: &[f32]) {
    for (o, &x) in out.iter_mut().zip(inp) {
        let x = x as f64;
        let k = (2.0 / std::f64::consts::PI).sqrt();
        *o = (0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh())) as f32;
    }
}

/// GELU with the exact normal CDF, BERT's `gelu`: y = 0.5 x (1 + erf(x / sqrt 2)).
pub fn gelu_erf_forward(
    out: &mut [f32], // (N)
    inp: &[f32],     // (N)
) {
    assert!(out.len() == inp.len());
    out.par_chunks_mut(CHUNK).zip(inp.par_chunks(CHUNK)).for_each(|(o, x)| erf_chunk(o, x));
}

dispatch! {
    [Avx512]
    fn erf_chunk(out: &mut [f32], inp: &[f32]) {
        for (o, &x) in out.iter_mut().zip(inp) {
            *o = 0.5 * x * (1.0 + crate::simd::erf(x * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
}

/// Writes dinp = dout * gelu'(inp) for the exact GELU:
/// d/dx x Phi(x) = Phi(x) + x phi(x), phi the standard normal density.
pub fn gelu_erf_backward(
    dinp: &mut [f32], // (N)
    inp: &[f32],      // (N)
    dout: &[f32],     // (N)
) {
    assert!(dinp.len() == inp.len() && dout.len() == inp.len());
    dinp.par_chunks_mut(CHUNK).zip(inp.par_chunks(CHUNK).zip(dout.par_chunks(CHUNK))).for_each(|(di, (x, dy))| erf_backward_chunk(di, x, dy));
}

dispatch! {
    [Avx512]
    fn erf_backward_chunk(dinp: &mut [f32], inp: &[f32], dout: &[f32]) {
        const INV_SQRT_2PI: f32 = 0.398_942_3;
        for ((di, &x), &dy) in dinp.iter_mut().zip(inp).zip(dout) {
            let cdf = 0.5 * (1.0 + crate::simd::erf(x * std::f32::consts::FRAC_1_SQRT_2));
            let pdf = INV_SQRT_2PI * crate::simd::exp(-0.5 * x * x);
            *di = (cdf + x * pdf) * dy;
        }
    }
}

/// Reference in f64.
pub fn gelu_erf_forward_naive(out: &mut [f32], inp: &[f32]) {
    for (o, &x) in out.iter_mut().zip(inp) {
        let x = x as f64;
        *o = (0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))) as f32;
    }
}
