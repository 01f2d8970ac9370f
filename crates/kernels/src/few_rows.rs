//! A few dozen rows through (OC, C) weights: out = inp @ W^T + bias, for the
//! steps of beam search and batched decoding (batch x beams rows at a time).
//!
//! At 32 rows gemm spent more time copying the weights into its packed
//! layout (a transposing copy of every (OC, C) matrix, every step) than
//! multiplying, and the matrix-vector dot products reload each input for
//! every pair of weight rows. Here the few inputs are transposed once into a
//! small panel (C, 32) that stays in cache, and each weight is read once, in
//! place, as a broadcast against 32 rows at a time: 6 x 32 sums live in
//! registers (12 AVX-512 vectors) while the weights stream by.

use crate::simd::dispatch;
use rayon::prelude::*;

/// Rows of the input handled per pass over the weights (the panel's width).
const LANES: usize = 32;
/// Weight rows per register block.
const R: usize = 6;
/// Weight rows per parallel task.
const TASK_ROWS: usize = 48;

/// Rows up to which `few_rows_forward` is meant to be used; beyond, the
/// weights are re-read once per 32 rows and gemm's packed layout pays off.
pub const FEW_ROWS_MAX: usize = 64;

/// Whether `n` rows go faster here than through gemm on this CPU: up to
/// `FEW_ROWS_MAX`, with the AVX-512 kernel. The loops at AVX2 ran at 70-100
/// GFLOP/s on the 2 Zen 5 cores measured, where gemm's AVX2 products reach
/// 253: beam-4 translation of transformer-base's shapes on the AVX2 paths
/// (`tools/bench/as_avx2.sh`) went from 259-271 tok/s with them to 376-389
/// with gemm, round by round.
pub fn pays(n: usize) -> bool {
    n <= FEW_ROWS_MAX && avx512()
}

/// out (N, OC) = inp (N, C) @ W^T + bias, W (OC, C) row-major.
///
/// Each output is one chain of fused multiply-adds over C in order, plus the
/// bias: the same bits whatever N and the thread count, so a row's result
/// does not depend on what else is in the batch.
pub fn few_rows_forward(
    out: &mut [f32],      // (N, OC)
    inp: &[f32],          // (N, C)
    weight: &[f32],       // (OC, C)
    bias: Option<&[f32]>, // (OC)
    n: usize,
    c: usize,
    oc: usize,
) {
    assert!(out.len() >= n * oc && inp.len() >= n * c && weight.len() >= oc * c && bias.iter().all(|b| b.len() >= oc));
    // The panel and out^T in this thread's scratch: fresh vectors of this
    // size (64 + 256 KiB at transformer-base's MLP) came from mmap every call,
    // and the kernel zeroing their pages showed in `perf` beside the products
    // (the criterion benchmark gained 3-8%).
    crate::scratch::with(&BUFFERS, |buf| {
        let (panel, outt) = buf.get::<f32>((c + oc) * LANES).split_at_mut(c * LANES);
        for g in (0..n).step_by(LANES) {
            let rows = LANES.min(n - g);
            // panel (C, 32): panel[k][j] = inp[g + j][k]. Columns past the
            // last row keep whatever they held: each column is its own chain
            // of sums, and those columns of out^T are never read.
            for j in 0..rows {
                for (k, &x) in inp[(g + j) * c..(g + j + 1) * c].iter().enumerate() {
                    panel[k * LANES + j] = x;
                }
            }
            // out^T blocks (TASK_ROWS, 32), each task its own weight rows;
            // every value is written before it is read.
            let panel = &*panel;
            let task = |(t, o): (usize, &mut [f32])| {
                let r0 = t * TASK_ROWS;
                block_rows(o, panel, &weight[r0 * c..(r0 + o.len() / LANES) * c], c);
            };
            if oc * c >= 1 << 16 {
                outt.par_chunks_mut(TASK_ROWS * LANES).enumerate().for_each(task);
            } else {
                outt.chunks_mut(TASK_ROWS * LANES).enumerate().for_each(task);
            }
            // out rows g.. (rows, OC) = the first `rows` columns of out^T,
            // transposed in 8 x 8 register tiles (a float at a time, reading
            // out^T down its columns, was 5% of a beam search's samples),
            // then the bias: the same single addition as before, so the
            // same bits.
            // SAFETY: out^T holds (OC, 32) at stride 32; out holds `rows`
            // rows of OC from row g; they are separate buffers.
            unsafe { crate::transpose::transpose(out[g * oc..].as_mut_ptr(), oc, outt.as_ptr(), LANES, oc, rows) };
            if let Some(b) = bias {
                for o in out[g * oc..(g + rows) * oc].chunks_exact_mut(oc) {
                    crate::simd::axpy(o, 1.0, &b[..oc]);
                }
            }
        }
    })
}

thread_local! {
    /// `few_rows_forward`'s panel and transposed output, kept between calls.
    static BUFFERS: std::cell::RefCell<crate::scratch::Scratch> = const { std::cell::RefCell::new(crate::scratch::Scratch::new()) };
}

/// The kernel `few_rows_forward` runs at the active vector level: "avx512",
/// or "portable" (the loops below, compiled for AVX2 + FMA where the CPU
/// has it).
pub fn path() -> &'static str {
    if avx512() {
        "avx512"
    } else {
        "portable"
    }
}

/// The AVX-512 kernel runs: the one question `pays`, `path` and
/// `block_rows` ask.
fn avx512() -> bool {
    cfg!(target_arch = "x86_64") && crate::simd::active() == crate::simd::Level::Avx512
}

/// o (rows, 32) = w (rows, C) @ panel (C, 32), R weight rows at a time.
fn block_rows(o: &mut [f32], panel: &[f32], w: &[f32], c: usize) {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        // SAFETY: the active level implies AVX-512F; the slices hold (rows, C) and (C, 32).
        return unsafe { x86::block_rows(o, panel, w, c) };
    }
    block_rows_portable(o, panel, w, c)
}

dispatch! {
    /// `block_rows` in plain loops, vectorized by the compiler. Written for
    /// AVX-512 it kept only 9 of its 12 sums in registers and ran at ~60 GFLOP/s
    /// on 2 cores, hence the intrinsics there. At AVX2 it stays: AVX2 + FMA
    /// intrinsics (6 rows x 16 columns, and 3 rows x 32) ran no faster on the
    /// Zen 5 measured (70-100 GFLOP/s on 2 cores, either way, round by round).
    [Avx2]
    fn block_rows_portable(o: &mut [f32], panel: &[f32], w: &[f32], c: usize) {
        let rows = o.len() / LANES;
        let mut r = 0;
        while r < rows {
            let k = R.min(rows - r);
            // The last block repeats its final row to fill R; only k are stored.
            let row = |i: usize| &w[(r + i.min(k - 1)) * c..(r + i.min(k - 1) + 1) * c];
            let ws: [&[f32]; R] = std::array::from_fn(row);
            let mut acc = [[0.0f32; LANES]; R];
            for (kk, p) in panel.chunks_exact(LANES).enumerate() {
                let p: &[f32; LANES] = p.try_into().unwrap();
                for i in 0..R {
                    let a = ws[i][kk];
                    for j in 0..LANES {
                        acc[i][j] = a.mul_add(p[j], acc[i][j]);
                    }
                }
            }
            o[r * LANES..(r + k) * LANES].copy_from_slice(acc[..k].as_flattened());
            r += R;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::LANES;
    use std::arch::x86_64::*;

    /// Weight rows per register block: 8 x 2 sums, 2 panel vectors and a
    /// broadcast, 19 of the 32 vector registers.
    const R: usize = 8;

    /// Panel rows (of C) per pass: 32 KiB of the panel, which then stays in
    /// L1 while every weight row of the task goes by (the whole panel, 64 KiB
    /// at C = 512, came from L2; on 2 cores transformer-base's head went from
    /// 75 to 87 GFLOP/s, its MLP layers from 96 to 98-100).
    const KC: usize = 256;

    /// `block_rows_portable` with AVX-512 intrinsics: the same fused chains
    /// (a chain that spans two passes is stored and reloaded as the f32 it is).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn block_rows(o: &mut [f32], panel: &[f32], w: &[f32], c: usize) {
        let rows = o.len() / LANES;
        let (p, out) = (panel.as_ptr(), o.as_mut_ptr());
        for k0 in (0..c).step_by(KC) {
            let k1 = (k0 + KC).min(c);
            let mut r = 0;
            while r < rows {
                let k = R.min(rows - r);
                let ws: [*const f32; R] = std::array::from_fn(|i| w.as_ptr().add((r + i.min(k - 1)) * c));
                let dst = |i: usize| out.add((r + i.min(k - 1)) * LANES);
                let mut acc = [[_mm512_setzero_ps(); 2]; R];
                if k0 > 0 {
                    for (i, a) in acc.iter_mut().enumerate() {
                        *a = [_mm512_loadu_ps(dst(i)), _mm512_loadu_ps(dst(i).add(16))];
                    }
                }
                for kk in k0..k1 {
                    let (p0, p1) = (_mm512_loadu_ps(p.add(kk * LANES)), _mm512_loadu_ps(p.add(kk * LANES + 16)));
                    for i in 0..R {
                        let a = _mm512_set1_ps(*ws[i].add(kk));
                        acc[i][0] = _mm512_fmadd_ps(a, p0, acc[i][0]);
                        acc[i][1] = _mm512_fmadd_ps(a, p1, acc[i][1]);
                    }
                }
                for (i, a) in acc.iter().enumerate().take(k) {
                    _mm512_storeu_ps(dst(i), a[0]);
                    _mm512_storeu_ps(dst(i).add(16), a[1]);
                }
                r += R;
            }
        }
    }
}

/// Reference: the same sums in plain loops (one fused chain per output).
pub fn few_rows_forward_naive(out: &mut [f32], inp: &[f32], weight: &[f32], bias: Option<&[f32]>, n: usize, c: usize, oc: usize) {
    for b in 0..n {
        for o in 0..oc {
            let mut s = 0.0f32;
            for k in 0..c {
                s = weight[o * c + k].mul_add(inp[b * c + k], s);
            }
            out[b * oc + o] = s + bias.map_or(0.0, |bb| bb[o]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The portable loops (what a CPU without AVX-512 runs) give the naive
    /// sums bit for bit, on this CPU whatever it has.
    #[test]
    fn portable_block_equals_naive() {
        let (n, c, oc) = (LANES, 37, 19);
        let v = |len: usize, seed: u32| -> Vec<f32> { (0..len).map(|i| (((i as u32).wrapping_mul(2654435761) ^ seed) % 1000) as f32 / 500.0 - 1.0).collect() };
        let (x, w) = (v(n * c, 1), v(oc * c, 2));
        let mut panel = vec![0.0; c * LANES];
        for j in 0..n {
            for k in 0..c {
                panel[k * LANES + j] = x[j * c + k];
            }
        }
        let mut outt = vec![0.0; oc * LANES];
        block_rows_portable(&mut outt, &panel, &w, c);
        let mut slow = vec![0.0; n * oc];
        few_rows_forward_naive(&mut slow, &x, &w, None, n, c, oc);
        for j in 0..n {
            for r in 0..oc {
                assert_eq!(outt[r * LANES + j], slow[j * oc + r]);
            }
        }
    }
}
