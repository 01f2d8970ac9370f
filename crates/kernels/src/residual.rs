//! Residual connection: out = a + b. Its backward is the identity into both
//! inputs, which the model applies by keeping one running residual gradient.

use rayon::prelude::*;

const CHUNK: usize = 16 * 1024;

/// out += inp. The model adds a sublayer's output into the residual stream in
/// place, so no separate `a + b` buffer is kept.
pub fn residual_forward(
    out: &mut [f32],  // (N, C)
    inp: &[f32],      // (N, C)
) {
    assert!(out.len() == inp.len());
    out.par_chunks_mut(CHUNK).zip(inp.par_chunks(CHUNK)).for_each(|(o, x)| crate::simd::axpy(o, 1.0, x));
}

/// Accumulates dinp += dout (the gradient of `out += inp` with respect to inp).
pub fn residual_backward(
    dinp: &mut [f32],  // (N, C)
    dout: &[f32],      // (N, C)
) {
    residual_forward(dinp, dout);
}
