//! A few rows through a dense layer: out = x @ W + bias, for decoding (one
//! row per sequence being generated).
//!
//! Decoding reads every weight once per token and does two FLOPs per weight,
//! so it is bound by memory bandwidth, not arithmetic. These loops stream each
//! weight matrix once, split so that every thread streams its own part.

use rayon::prelude::*;

use crate::matmul::WeightLayout;
use crate::simd::{axpy, dispatch};

/// The fewest output rows per task for (OC, C) weights.
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
/// `scratch`, summed at the end in block order. (OC, C) weights are split
/// into a few contiguous blocks of output rows per thread, each row a dot
/// product (`dot_lanes`).
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
        WeightLayout::OutIn if n == 1 => {
            let rows = out_in_rows(oc);
            out.par_chunks_mut(rows).enumerate().for_each(|(j, o)| {
                let r0 = j * rows;
                rows_out_in(o, inp, &weight[r0 * c..(r0 + o.len()) * c], c, 1);
                add_bias(o, bias.map(|b| &b[r0..r0 + o.len()]));
            })
        }
        WeightLayout::OutIn => {
            // Results land in scratch as (OC, N), each task writing whole
            // rows of it, then are transposed into `out`.
            let rows = out_in_rows(oc);
            let t = &mut scratch[..n * oc];
            t.par_chunks_mut(rows * n).enumerate().for_each(|(j, o)| {
                let r0 = j * rows;
                rows_out_in(o, inp, &weight[r0 * c..(r0 + o.len() / n) * c], c, n);
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

/// Output rows per task for (OC, C) weights: a few contiguous blocks per
/// thread (more than one, so that a thread the OS preempts, or one that
/// finishes first, is covered by the others), at least `ROWS`.
fn out_in_rows(oc: usize) -> usize {
    rows_per_task(oc, ROWS)
}

/// Four contiguous blocks of `oc` rows per thread, at least `min` rows
/// each: how the f32 and the quantized matrix-vector kernels split a
/// matrix's rows. rayon hands each thread a contiguous half and its blocks
/// in order, so each thread still streams one region of memory.
pub(crate) fn rows_per_task(oc: usize, min: usize) -> usize {
    oc.div_ceil(4 * rayon::current_num_threads()).max(min)
}

fn add_bias(o: &mut [f32], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        for (x, &bi) in o.iter_mut().zip(b) {
            *x += bi;
        }
    }
}

/// o[b] += sum over i in `range` of inp[b, i] * W[i, :], for W's rows from
/// `range.start` on (given at `weight`). Four rows of W go through each pass
/// over o, which quarters the traffic to o (in L2 for several rows) while
/// adding the terms in the same order as one row at a time: each output is
/// fma(x3, w3, fma(x2, w2, fma(x1, w1, fma(x0, w0, o)))), then the next
/// four, the same on every path and for every b and n.
fn rows_in_out(o: &mut [f32], inp: &[f32], weight: &[f32], range: std::ops::Range<usize>, c: usize, oc: usize) {
    let (i0, len) = (range.start, range.len());
    let quads = len / 4;
    #[cfg(target_arch = "x86_64")]
    if crate::simd::active() >= crate::simd::Level::Avx2 {
        let n = o.len() / oc;
        assert!(inp.len() >= n * c && i0 + len <= c && weight.len() >= len * oc);
        // SAFETY: the active level implies the features each kernel
        // enables; W holds `len` rows of OC, each input row C from `i0` on.
        unsafe {
            match crate::simd::active() {
                crate::simd::Level::Avx512 => x86::quads_512(o, &inp[i0..], weight, quads, n, c, oc),
                _ => x86::quads_256(o, &inp[i0..], weight, quads, n, c, oc),
            }
        }
    } else {
        quads_portable(o, inp, weight, i0, quads, c, oc);
    }
    #[cfg(not(target_arch = "x86_64"))]
    quads_portable(o, inp, weight, i0, quads, c, oc);
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

dispatch! {
    /// The first `quads` groups of four rows of `rows_in_out`, in plain Rust
    /// (compiled for AVX where that is the best level).
    [Avx]
    fn quads_portable(o: &mut [f32], inp: &[f32], weight: &[f32], i0: usize, quads: usize, c: usize, oc: usize) {
        for q in 0..quads {
            let k = q * 4;
            let w = |r: usize| &weight[(k + r) * oc..(k + r + 1) * oc];
            for (ob, xb) in o.chunks_mut(oc).zip(inp.chunks(c)) {
                let x = &xb[i0 + k..i0 + k + 4];
                for (j, y) in ob.iter_mut().enumerate() {
                    *y = x[3].mul_add(w(3)[j], x[2].mul_add(w(2)[j], x[1].mul_add(w(1)[j], x[0].mul_add(w(0)[j], *y))));
                }
            }
        }
    }
}

/// o[r, b] = W[r, :] . inp[b] (o is (rows, N)). The weight rows go by one
/// at a time, each dotted with up to two inputs per pass, so a thread reads
/// one stream of memory front to back. On an AMD EPYC Zen 5 (2 threads),
/// gpt2-124m's output head (768 x 50,257, streamed from memory) read this way
/// ran at 82 GB/s against 62 for four rows side by side (four streams 3 KiB
/// apart); matrices that stay in cache at 180-190 GB/s either way. Every
/// (r, b) is summed the same way, see `dot_lanes`.
fn rows_out_in(o: &mut [f32], inp: &[f32], weight: &[f32], c: usize, n: usize) {
    if n == 1 {
        #[cfg(target_arch = "x86_64")]
        if crate::simd::active() >= crate::simd::Level::Avx2 {
            // SAFETY: the active level implies AVX2 and FMA.
            return unsafe { x86::rows(o, &inp[..c], weight) };
        }
        for (y, w) in o.iter_mut().zip(weight.chunks(c)) {
            *y = dot_lanes(w, &inp[..c]);
        }
        return;
    }
    for (or, w) in o.chunks_mut(n).zip(weight.chunks(c)) {
        for (b, ob) in or.chunks_mut(2).enumerate() {
            let x = |j: usize| &inp[(b * 2 + j.min(ob.len() - 1)) * c..][..c];
            let d = dots::<2>(w, [x(0), x(1)]);
            ob.copy_from_slice(&d[..ob.len()]);
        }
    }
}

/// w . x[j] for every j < NB, each as `dot_lanes` sums it.
fn dots<const NB: usize>(w: &[f32], x: [&[f32]; NB]) -> [f32; NB] {
    assert!(x.iter().all(|v| v.len() >= w.len()));
    #[cfg(target_arch = "x86_64")]
    if crate::simd::active() >= crate::simd::Level::Avx2 {
        // SAFETY: the active level implies AVX2 and FMA; every input is at least as long as w.
        return unsafe { x86::dots(w, x) };
    }
    x.map(|xj| dot_lanes(w, xj))
}

/// Accumulators of a decoding dot product, eight lanes each.
const CHAINS: usize = 4;

/// The one definition of a decoding dot product: `CHAINS` accumulators of
/// eight lanes, the m-th run of eight products going into accumulator
/// m % CHAINS lane by lane by fused multiply-add, the tail (under eight)
/// fused into a scalar, then a fixed reduction. Four independent chains
/// keep the adds' latency from bounding a row read alone (one chain ran at
/// 110 GB/s on matrices in cache, four at 185). The vector kernels compute
/// exactly this (a fused multiply-add rounds once, in a register or in libm
/// alike), so every path gives the same bits.
fn dot_lanes(w: &[f32], x: &[f32]) -> f32 {
    let n = w.len();
    let chunks = n / 8;
    let mut a = [[0.0f32; 8]; CHAINS];
    for m in 0..chunks {
        for j in 0..8 {
            a[m % CHAINS][j] = w[m * 8 + j].mul_add(x[m * 8 + j], a[m % CHAINS][j]);
        }
    }
    reduce(&a, &w[chunks * 8..], &x[chunks * 8..n])
}

#[inline(always)]
fn reduce(a: &[[f32; 8]; CHAINS], w_tail: &[f32], x_tail: &[f32]) -> f32 {
    let l: [f32; 8] = std::array::from_fn(|j| (a[0][j] + a[1][j]) + (a[2][j] + a[3][j]));
    reduce_lanes(&l, w_tail, x_tail)
}

#[inline(always)]
fn reduce_lanes(l: &[f32; 8], w_tail: &[f32], x_tail: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for (&w, &x) in w_tail.iter().zip(x_tail) {
        s = w.mul_add(x, s);
    }
    let p = [l[0] + l[4], l[1] + l[5], l[2] + l[6], l[3] + l[7]];
    s + (p[0] + p[2]) + (p[1] + p[3])
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::CHAINS;
    use crate::simd::prefetch_l2;
    use std::arch::x86_64::*;

    /// N input rows (x: row b at b * C) through `quads` groups of four rows
    /// of W (C, OC): the body of `rows_in_out`, 16 outputs (a cache line of
    /// each row) a step, as one AVX-512 or two AVX2 registers. The inputs
    /// go by inside each group, while its four rows are in L1.
    ///
    /// The four rows are four streams of memory; the first input's steps
    /// prefetch the next four rows' lines at the same columns. On an AMD
    /// EPYC Zen 5 (2 threads), gpt2-124m's block matrices streamed from
    /// memory at 74 GB/s this way (the machine's parallel read), 66-70
    /// without the prefetch, and 57-62 as LLVM vectorized the same loop in
    /// plain Rust, with or without it. The prefetches go to L2
    /// (`prefetch_l2`): on a Zen 4 EPYC prefetching into L1 ran 10-15% slower.
    macro_rules! quads {
        ($name:ident, $feat:literal, $v:ty, $lanes:literal, $set1:ident, $load:ident, $fma:ident, $store:ident) => {
            #[target_feature(enable = $feat)]
            pub unsafe fn $name(o: &mut [f32], x: &[f32], weight: &[f32], quads: usize, n: usize, c: usize, oc: usize) {
                assert!(n >= 1 && x.len() >= (n - 1) * c + 4 * quads && weight.len() >= 4 * quads * oc && o.len() >= n * oc);
                let w = weight.as_ptr();
                let whole = oc / 16 * 16;
                for q in 0..quads {
                    let k = 4 * q;
                    let row = |r: usize| w.add((k + r) * oc);
                    let next = (q + 1 < quads).then(|| w.add((k + 4) * oc));
                    for b in 0..n {
                        let (o, x) = (o.as_mut_ptr().add(b * oc), &x[b * c + k..b * c + k + 4]);
                        let xs: [$v; 4] = std::array::from_fn(|r| $set1(x[r]));
                        let next = if b == 0 { next } else { None };
                        for j in (0..whole).step_by(16) {
                            if let Some(p) = next {
                                for r in 0..4 {
                                    prefetch_l2(p.add(r * oc + j), 16);
                                }
                            }
                            for h in (j..j + 16).step_by($lanes) {
                                let mut y = $load(o.add(h));
                                for (r, &xr) in xs.iter().enumerate() {
                                    y = $fma(xr, $load(row(r).add(h)), y);
                                }
                                $store(o.add(h), y);
                            }
                        }
                        for j in whole..oc {
                            let mut y = *o.add(j);
                            for (r, &xr) in x.iter().enumerate() {
                                y = xr.mul_add(*row(r).add(j), y);
                            }
                            *o.add(j) = y;
                        }
                    }
                }
            }
        };
    }
    quads!(quads_512, "avx512f", __m512, 16, _mm512_set1_ps, _mm512_loadu_ps, _mm512_fmadd_ps, _mm512_storeu_ps);
    quads!(quads_256, "avx2,fma", __m256, 8, _mm256_set1_ps, _mm256_loadu_ps, _mm256_fmadd_ps, _mm256_storeu_ps);

    /// o[r] = `dot_lanes`(W[r, :], x) for every row of W, in one call so
    /// that the dot products inline into the loop.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn rows(o: &mut [f32], x: &[f32], weight: &[f32]) {
        assert!(weight.len() >= o.len() * x.len());
        for (y, w) in o.iter_mut().zip(weight.chunks(x.len())) {
            *y = dots(w, [x])[0];
        }
    }

    /// `dot_lanes` of w with each of NB inputs, in AVX2 registers (NB x
    /// CHAINS accumulators: NB = 2 takes 8 of the 16).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dots<const NB: usize>(w: &[f32], x: [&[f32]; NB]) -> [f32; NB] {
        let n = w.len();
        let chunks = n / 8;
        let mut acc = [[_mm256_setzero_ps(); CHAINS]; NB];
        let step = |acc: &mut [[__m256; CHAINS]; NB], m: usize, k: usize| {
            let wv = _mm256_loadu_ps(w.as_ptr().add(m * 8));
            for (a, xj) in acc.iter_mut().zip(&x) {
                a[k] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xj.as_ptr().add(m * 8)), a[k]);
            }
        };
        let full = chunks / CHAINS * CHAINS;
        for m in (0..full).step_by(CHAINS) {
            for k in 0..CHAINS {
                step(&mut acc, m + k, k);
            }
        }
        for m in full..chunks {
            step(&mut acc, m, m % CHAINS);
        }
        let mut out = [0.0f32; NB];
        for (o, (a, xj)) in out.iter_mut().zip(acc.iter().zip(&x)) {
            // The chains' lane-wise sums as `reduce` orders them (each lane
            // rounds as a scalar add would), then the rest in `reduce_lanes`.
            let mut l = [0.0f32; 8];
            _mm256_storeu_ps(l.as_mut_ptr(), _mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])));
            *o = super::reduce_lanes(&l, &w[chunks * 8..n], &xj[chunks * 8..n]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    /// The (C, OC) kernels in AVX-512 and AVX2 registers give the plain
    /// loop's bits, with columns past the last whole cache line.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn vector_quads_equal_the_plain_loop() {
        use crate::simd::{detected, Level};
        // Two inputs of C = 15 (three groups of four and 3 more), with
        // columns past the last whole cache line.
        let (n, quads, c) = (2, 3, 15);
        for oc in [16, 37, 1031] {
            let v = |n: usize, seed: u32| -> Vec<f32> {
                (0..n).map(|i| ((i as u32 ^ seed).wrapping_mul(2654435761) >> 8) as f32 / (1u32 << 23) as f32 - 1.0).collect()
            };
            let (x, w, o0) = (v(n * c, 1), v(4 * quads * oc, 2), v(n * oc, 3));
            let mut want = o0.clone();
            super::quads_portable(&mut want, &x, &w, 0, quads, c, oc);
            let mut got = o0.clone();
            if detected() >= Level::Avx2 {
                // SAFETY: the CPU has AVX2 and FMA.
                unsafe { super::x86::quads_256(&mut got, &x, &w, quads, n, c, oc) };
                assert_eq!(got, want, "avx2, oc {oc}");
            }
            if detected() >= Level::Avx512 {
                got.copy_from_slice(&o0);
                // SAFETY: the CPU has AVX-512.
                unsafe { super::x86::quads_512(&mut got, &x, &w, quads, n, c, oc) };
                assert_eq!(got, want, "avx512, oc {oc}");
            }
        }
    }

    /// The AVX2 kernel and the portable definition agree bit for bit, for
    /// lengths that end a run of chains, stop in the middle of one, and
    /// leave a scalar tail.
    #[test]
    fn vector_dots_equal_dot_lanes() {
        for c in [64, 203, 792, 770] {
            // Magnitudes over 2^-8..2^8, so that adding in another order
            // rounds differently and a kernel that did would be caught.
            let v = |seed: u32| -> Vec<f32> {
                let h = |i: usize| (i as u32 ^ seed).wrapping_mul(2654435761);
                (0..c).map(|i| ((h(i) >> 8) as f32 / (1u32 << 23) as f32 - 1.0) * 2f32.powi((h(i) % 17) as i32 - 8)).collect()
            };
            let w = v(1);
            let xs: Vec<Vec<f32>> = (3..5).map(v).collect();
            let d = super::dots::<2>(&w, [&xs[0], &xs[1]]);
            let e = super::dots::<1>(&xs[1], [&w]);
            for k in 0..2 {
                assert_eq!(d[k].to_bits(), super::dot_lanes(&w, &xs[k]).to_bits(), "c {c}, input {k}");
            }
            assert_eq!(e[0].to_bits(), super::dot_lanes(&xs[1], &w).to_bits(), "c {c}");
            // Whole rows: one input (its own loop) and three (o is (rows, N)).
            let (rows, inp) = ([w.as_slice(), &xs[0], &xs[1]].concat(), [xs[0].clone(), xs[1].clone(), w.clone()].concat());
            let (mut o1, mut o3) = (vec![0.0; 3], vec![0.0; 9]);
            super::rows_out_in(&mut o1, &inp, &rows, c, 1);
            super::rows_out_in(&mut o3, &inp, &rows, c, 3);
            for r in 0..3 {
                for b in 0..3 {
                    let want = super::dot_lanes(&rows[r * c..][..c], &inp[b * c..][..c]).to_bits();
                    assert_eq!(o3[r * 3 + b].to_bits(), want, "c {c}, row {r}, input {b}");
                    if b == 0 {
                        assert_eq!(o1[r].to_bits(), want, "c {c}, row {r}");
                    }
                }
            }
            // Against plain f64 sums: the definition is a dot product.
            let exact: f64 = w.iter().zip(&xs[0]).map(|(&a, &b)| a as f64 * b as f64).sum();
            assert!((d[0] as f64 - exact).abs() < 1e-4 * exact.abs().max(1.0), "c {c}: {} against {exact}", d[0]);
        }
        // Random sums rarely round differently in another order; this one
        // must. Run 97 of 99 (after the last full group of four) belongs to
        // chain 1, where -1 cancels run 1's 1 and run 0's 2^-30 survives; in
        // chain 0 it would swallow the 2^-30 first.
        let (mut w, x) = (vec![0.0f32; 792], vec![1.0f32; 792]);
        (w[0], w[8], w[97 * 8]) = (2f32.powi(-30), 1.0, -1.0);
        assert_eq!(super::dot_lanes(&w, &x), 2f32.powi(-30));
        assert_eq!(super::dots::<2>(&w, [&x, &x]), [2f32.powi(-30); 2]);
    }
}
