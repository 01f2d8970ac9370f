//! Residual connection: out = a + b. Its backward is the identity into both
//! inputs, so there is no backward kernel: the model keeps one running
//! residual-stream gradient and hands it to both branches unchanged.

use rayon::prelude::*;

const CHUNK: usize = 16 * 1024;

/// out += inp. The model adds a sublayer's output into the residual stream in
/// place, so no separate `a + b` buffer is kept.
pub fn residual_forward(
    out: &mut [f32], // (N, C)
    inp: &[f32],     // (N, C)
) {
    assert!(out.len() == inp.len());
    out.par_chunks_mut(CHUNK).zip(inp.par_chunks(CHUNK)).for_each(|(o, x)| add_chunk(o, x));
}

crate::simd::dispatch! {
    /// o += x
    [Avx2]
    fn add_chunk(o: &mut [f32], x: &[f32]) {
        crate::simd::axpy(o, 1.0, x);
    }
}
