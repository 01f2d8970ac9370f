//! Token and position embeddings: `out[b, t] = wte[tokens[b, t]] + pos[t]`.
//! `pos` is either a learned table (GPT-2's `wpe`) or the fixed sinusoidal
//! table of "Attention Is All You Need".

use rayon::prelude::*;

use crate::simd::dispatch;

/// `out[b, t] = wte[tokens[b, t]] + pos[t]`.
pub fn embedding_forward(
    out: &mut [f32], // (B, T, C)
    tokens: &[u32],  // (B, T)
    wte: &[f32],     // (V, C)
    pos: &[f32],     // (maxT, C), learned or sinusoidal
    b: usize,
    t: usize,
    c: usize,
) {
    assert!(out.len() >= b * t * c && tokens.len() >= b * t && pos.len() >= t * c);
    let v = wte.len() / c;
    out[..b * t * c].par_chunks_mut(c).enumerate().for_each(|(i, o)| {
        let tok = tokens[i] as usize;
        assert!(tok < v, "token id {tok} out of range for vocab {v}");
        add(o, &wte[tok * c..(tok + 1) * c], &pos[(i % t) * c..(i % t + 1) * c]);
    });
}

dispatch! {
    /// o = w + p
    [Avx2]
    fn add(o: &mut [f32], w: &[f32], p: &[f32]) {
        for ((o, &w), &p) in o.iter_mut().zip(w).zip(p) {
            *o = w + p;
        }
    }
}

dispatch! {
    /// y += x
    [Avx2]
    fn accumulate(y: &mut [f32], x: &[f32]) {
        crate::simd::axpy(y, 1.0, x);
    }
}

/// Accumulates dwte and (when learned) dpos. Split by column blocks: tokens
/// repeat, so a row split would race on dwte; a column split keeps every task's
/// writes disjoint and the sum order independent of the thread count.
pub fn embedding_backward(
    dwte: &mut [f32],         // (V, C)
    dpos: Option<&mut [f32]>, // (maxT, C)
    dout: &[f32],             // (B, T, C)
    tokens: &[u32],           // (B, T)
    b: usize,
    t: usize,
    c: usize,
) {
    let n = b * t;
    let cols = c.div_ceil(rayon::current_num_threads().max(1)).max(16);
    let ncb = c.div_ceil(cols);
    let dwte_p = crate::SendPtr(dwte.as_mut_ptr());
    let dpos_p = dpos.map(|d| crate::SendPtr(d.as_mut_ptr()));
    (0..ncb).into_par_iter().for_each(|j| {
        let (c0, c1) = (j * cols, ((j + 1) * cols).min(c));
        for i in 0..n {
            let dy = &dout[i * c + c0..i * c + c1];
            let tok = tokens[i] as usize;
            // Safety: task j touches only columns c0..c1 of each row.
            unsafe {
                let w = std::slice::from_raw_parts_mut(dwte_p.get().add(tok * c + c0), c1 - c0);
                accumulate(w, dy);
                if let Some(p) = dpos_p {
                    let p = std::slice::from_raw_parts_mut(p.get().add((i % t) * c + c0), c1 - c0);
                    accumulate(p, dy);
                }
            }
        }
    });
}

/// The fixed sinusoidal table: PE[p, 2i] = sin(p / 10000^(2i/C)),
/// PE[p, 2i+1] = cos(p / 10000^(2i/C)).
pub fn sinusoidal_table(
    out: &mut [f32], // (maxT, C)
    max_t: usize,
    c: usize,
) {
    for p in 0..max_t {
        for i in 0..c {
            let k = (i / 2 * 2) as f64 / c as f64;
            let angle = p as f64 / 10000f64.powf(k);
            out[p * c + i] = if i % 2 == 0 { angle.sin() } else { angle.cos() } as f32;
        }
    }
}
