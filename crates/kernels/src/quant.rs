//! Weights stored small for decoding: bf16, or int8 with one f32 scale per
//! group of G consecutive inputs (symmetric, round to nearest), and the
//! matrix-vector products that read them (see below for the arithmetic).
//!
//! Decoding reads every weight once per token, so its speed is bytes read per
//! token: 4 for f32, 2 for bf16, 1 + 4/G for int8. For bf16 the arithmetic
//! stays f32 (weight widened, input and accumulators f32). int8 rows whose
//! length and group are multiples of 32 (every model's shapes) take the
//! faster fixed-point product of `fixed16`, which rounds the input to 16 bits
//! a group; other int8 rows are widened to f32 as bf16 ones are.
//!
//! A quantized matrix is always stored (OC, C), out-major, whatever layout the
//! f32 original had, so that a group is a run of one output's inputs.

use rayon::prelude::*;

use crate::matmul::WeightLayout;

pub mod fixed16;
pub use fixed16::Fixed16;
mod held;
pub use held::{shared_bytes, Held, Together};

/// Lanes of the accumulators: every output is summed as 32 partial sums
/// (lane j takes inputs j, j + 32, ...), then a fixed reduction. Two AVX-512
/// or four AVX2 registers, independent chains for the pipeline.
const LANES: usize = 32;

/// Blocks of rows ahead to prefetch: the kernel reads R rows side by side,
/// and prefetches the same place PREFETCH_ROWS blocks of R rows on.
#[cfg(target_arch = "x86_64")]
const PREFETCH_ROWS: usize = 2;

/// Fewest output rows a parallel task takes.
const ROWS: usize = 32;

/// How a quantized matrix holds its weights.
#[derive(Clone, Debug, PartialEq)]
pub enum QData {
    /// The upper 16 bits of each f32 (rounded to nearest even).
    Bf16(Held<u16>),
    /// w ~ q * scales[row, i / group], q in [-127, 127].
    #[allow(missing_docs)] // as the line above says
    Int8 { q: Held<i8>, scales: Held<f32>, group: usize },
}

/// A (rows, cols) = (OC, C) weight matrix in a small format.
#[derive(Clone, Debug, PartialEq)]
pub struct QMatrix {
    /// Outputs (OC).
    pub rows: usize,
    /// Inputs (C).
    pub cols: usize,
    /// The weights, row by row.
    pub data: QData,
    /// How one input reads the rows: `Streamed` when the model's weights
    /// are larger than the last-level cache (`streamed_from_memory`).
    pub reading: Reading,
}

/// How a one-row matrix-vector pass walks a thread's block of rows. Both
/// compute each output by the same definition, bit for bit; only speed
/// differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reading {
    /// Four rows side by side: more loads in flight, fastest when the rows
    /// are in cache (a small model's weights stay there between tokens).
    InCache,
    /// One row at a time, so that each thread reads one sequential stream:
    /// fastest from memory. On a Zen 5 EPYC (32 MiB L3), gpt2-124m: bf16
    /// decoding 5-27% faster, int8 with groups of 64 18-23%
    /// (docs/PERFORMANCE.md), where four rows were 20% faster in cache.
    Streamed,
}

/// Whether a model whose quantized weights take `bytes` reads them from
/// memory at every token: more than the last-level cache holds.
pub fn streamed_from_memory(bytes: usize) -> bool {
    bytes > crate::cache::last_level_bytes()
}

/// f32 -> bf16 bits, round to nearest even (NaN stays NaN).
#[inline(always)]
pub fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    // A select, not a branch, so that loops over it vectorize.
    let rounded = (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16;
    let quiet_nan = ((b >> 16) | 0x40) as u16;
    if x.is_nan() {
        quiet_nan
    } else {
        rounded
    }
}

/// The f32 a bf16 stands for (exact).
#[inline(always)]
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

impl QMatrix {
    /// The weight of `w` (OC, C) or (C, OC), by `layout`, as (OC, C) rows.
    fn out_in(w: &[f32], c: usize, oc: usize, layout: WeightLayout) -> std::borrow::Cow<'_, [f32]> {
        assert_eq!(w.len(), c * oc);
        match layout {
            WeightLayout::OutIn => std::borrow::Cow::Borrowed(w),
            WeightLayout::InOut => {
                // 16 output rows a task: each input row gives them one cache
                // line, and each of them is written in order (a plain
                // transpose wrote one float per cache line, on one thread,
                // and was most of a quantized model's loading time).
                let mut t = vec![0.0; c * oc];
                t.par_chunks_mut(16 * c).enumerate().for_each(|(b, rows)| {
                    let o0 = 16 * b;
                    let n = rows.len() / c;
                    for (i, wr) in w.chunks(oc).enumerate() {
                        for (o, &x) in wr[o0..o0 + n].iter().enumerate() {
                            rows[o * c + i] = x;
                        }
                    }
                });
                std::borrow::Cow::Owned(t)
            }
        }
    }

    /// Every weight rounded to bf16 (to nearest even).
    pub fn bf16(w: &[f32], c: usize, oc: usize, layout: WeightLayout) -> Self {
        let t = Self::out_in(w, c, oc, layout);
        QMatrix { rows: oc, cols: c, data: QData::Bf16(t.iter().map(|&x| bf16_bits(x)).collect::<Vec<_>>().into()), reading: Reading::InCache }
    }

    /// Symmetric int8 with a scale per `group` inputs of each output (the
    /// last group of a row is shorter when C is not a multiple).
    pub fn int8(w: &[f32], c: usize, oc: usize, layout: WeightLayout, group: usize) -> Self {
        assert!(group > 0);
        let t = Self::out_in(w, c, oc, layout);
        let groups = c.div_ceil(group);
        let mut q = vec![0i8; c * oc];
        let mut scales = vec![0.0f32; groups * oc];
        for (r, row) in t.chunks(c).enumerate() {
            for (g, part) in row.chunks(group).enumerate() {
                let max = part.iter().fold(0.0f32, |m, &x| m.max(x.abs()));
                let s = max / 127.0;
                scales[r * groups + g] = s;
                let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
                for (k, &x) in part.iter().enumerate() {
                    q[r * c + g * group + k] = (x * inv).round().clamp(-127.0, 127.0) as i8;
                }
            }
        }
        QMatrix { rows: oc, cols: c, data: QData::Int8 { q: q.into(), scales: scales.into(), group }, reading: Reading::InCache }
    }

    /// The int8 group size, None for bf16.
    pub fn group(&self) -> Option<usize> {
        match self.data {
            QData::Int8 { group, .. } => Some(group),
            QData::Bf16(_) => None,
        }
    }

    /// Bytes the weights take in memory.
    pub fn bytes(&self) -> usize {
        match &self.data {
            QData::Bf16(h) => h.len() * 2,
            QData::Int8 { q, scales, .. } => q.len() + scales.len() * 4,
        }
    }

    /// Rows `r0..r0 + out.len() / C` as f32, (rows, C).
    pub fn dequantize_rows(&self, out: &mut [f32], r0: usize) {
        let c = self.cols;
        assert!(out.len() % c == 0 && r0 + out.len() / c <= self.rows);
        match &self.data {
            QData::Bf16(h) => out.iter_mut().zip(&h[r0 * c..]).for_each(|(o, &x)| *o = bf16_to_f32(x)),
            QData::Int8 { q, scales, group } => {
                let groups = c.div_ceil(*group);
                for (k, row) in out.chunks_mut(c).enumerate() {
                    let r = r0 + k;
                    for (g, part) in row.chunks_mut(*group).enumerate() {
                        let s = scales[r * groups + g];
                        let qs = &q[r * c + g * group..];
                        part.iter_mut().zip(qs).for_each(|(o, &x)| *o = x as f32 * s);
                    }
                }
            }
        }
    }
}

/// out = inp @ W^T + bias for a few rows, W quantized (OC, C).
///
/// As `matvec_forward`, each output is summed in an order fixed by C alone
/// (see `dot_bf16` / `dot_int8`), never by N or the thread count, so a row's
/// result is the same alone or in any batch.
pub fn qmatvec_forward(
    out: &mut [f32],      // (N, OC)
    scratch: &mut [f32],  // (N * OC), for N > 1
    inp: &[f32],          // (N, C)
    w: &QMatrix,          // (OC, C)
    bias: Option<&[f32]>, // (OC)
    n: usize,
) {
    let (c, oc) = (w.cols, w.rows);
    assert!(n >= 1 && out.len() >= n * oc && inp.len() >= n * c);
    let inp = &inp[..n * c];
    // int8 rows in fixed point: each input rounded once, here.
    let fixed: Vec<Fixed16> = match &w.data {
        QData::Int8 { group, .. } if fixed16::eligible(c, *group) => inp
            .chunks(c)
            .map(|x| {
                let mut f = Fixed16::default();
                f.quantize(x, *group);
                f
            })
            .collect(),
        _ => Vec::new(),
    };
    // Results are computed as (OC, N), each task writing whole rows of it.
    let t: &mut [f32] = if n == 1 { &mut out[..oc] } else { &mut scratch[..n * oc] };
    // Contiguous blocks of rows, four a thread as for f32 rows: each thread
    // streams one region of memory, which the prefetchers follow (many small
    // tasks interleaved between threads measured 2x slower), and a thread
    // that finishes first takes the other's last block. On a Zen 4 EPYC,
    // gpt2-124m's 49 matrices streamed at 33-34 GB/s in bf16 and int8 this
    // way against 30-34 with one block a thread (alternated, 2 threads).
    let per = crate::matvec::rows_per_task(oc, ROWS).next_multiple_of(4);
    t.par_chunks_mut(per * n).enumerate().for_each(|(j, o)| rows_q(o, inp, &fixed, w, j * per, n));
    if n > 1 {
        for (r, col) in scratch[..n * oc].chunks(n).enumerate() {
            for (b, &x) in col.iter().enumerate() {
                out[b * oc + r] = x;
            }
        }
    }
    if let Some(bias) = bias {
        for o in out[..n * oc].chunks_mut(oc) {
            o.iter_mut().zip(bias).for_each(|(x, &b)| *x += b);
        }
    }
}

/// o[r, b] for the rows r0.. that `o` (rows, N) covers; `fixed` holds the
/// N inputs in fixed point when the rows take that path.
fn rows_q(o: &mut [f32], inp: &[f32], fixed: &[Fixed16], w: &QMatrix, r0: usize, n: usize) {
    let c = w.cols;
    let rows = o.len() / n;
    if let (QData::Int8 { q, scales, group }, false) = (&w.data, fixed.is_empty()) {
        let g = c / group;
        let (q, scales) = (&q[r0 * c..(r0 + rows) * c], &scales[r0 * g..(r0 + rows) * g]);
        if n == 1 {
            return fixed16::rows_fixed16(o, 1, q, scales, c, *group, &fixed[0], w.reading);
        }
        // Every input against four rows while they are in L1.
        for k0 in (0..rows).step_by(4) {
            let m = (rows - k0).min(4);
            let (qb, sb) = (&q[k0 * c..(k0 + m) * c], &scales[k0 * g..(k0 + m) * g]);
            for (b, x) in fixed.iter().enumerate() {
                fixed16::rows_fixed16(&mut o[k0 * n + b..], n, qb, sb, c, *group, x, Reading::InCache);
            }
        }
        return;
    }
    if n == 1 {
        #[cfg(target_arch = "x86_64")]
        if let (QData::Bf16(h), Reading::Streamed) = (&w.data, w.reading) {
            match x86::level() {
                // SAFETY: the level's features were detected; the kernels check the lengths.
                Some(x86::Level::Avx512) => return unsafe { x86::rows_u16_512(o, &h[r0 * c..], &inp[..c]) },
                Some(x86::Level::Avx2) => return unsafe { x86::rows_u16_256(o, &h[r0 * c..], &inp[..c]) },
                _ => {}
            }
        }
        match w.reading {
            Reading::InCache => rows_side_by_side::<4>(o, inp, w, r0),
            Reading::Streamed => rows_side_by_side::<1>(o, inp, w, r0),
        }
        return;
    }
    // Several inputs: widen each row once (a small buffer per task), then the
    // same sums per input.
    let mut wf = vec![0.0f32; c];
    for (k, ob) in o.chunks_mut(n).enumerate() {
        let r = r0 + k;
        let (scales, group): (&[f32], usize) = match &w.data {
            QData::Bf16(_) => {
                w.dequantize_rows(&mut wf, r);
                (&[1.0], c.max(1))
            }
            QData::Int8 { q, scales, group } => {
                let g = c.div_ceil(*group);
                // Widened without its scales: the sums apply them per group.
                wf.iter_mut().zip(&q[r * c..(r + 1) * c]).for_each(|(o, &v)| *o = v as f32);
                (&scales[r * g..(r + 1) * g], *group)
            }
        };
        for (b, y) in ob.iter_mut().enumerate() {
            *y = dot_f32_grouped(&wf, scales, group, &inp[b * c..(b + 1) * c]);
        }
    }
}

/// o[r] for the rows r0.. that `o` covers, R rows at a time (the last block
/// repeats its last row), one input.
fn rows_side_by_side<const R: usize>(o: &mut [f32], inp: &[f32], w: &QMatrix, r0: usize) {
    let (c, rows) = (w.cols, o.len());
    for k0 in (0..rows).step_by(R) {
        let row = |k: usize| r0 + (k0 + k).min(rows - 1);
        let d = match &w.data {
            QData::Bf16(h) => dots_bf16(std::array::from_fn(|k| &h[row(k) * c..(row(k) + 1) * c]), inp),
            QData::Int8 { q, scales, group } => {
                let g = c.div_ceil(*group);
                let qs = std::array::from_fn(|k| &q[row(k) * c..(row(k) + 1) * c]);
                dots_int8::<R>(qs, std::array::from_fn(|k| &scales[row(k) * g..(row(k) + 1) * g]), *group, inp)
            }
        };
        let m = (rows - k0).min(R);
        o[k0..k0 + m].copy_from_slice(&d[..m]);
    }
}

/// The fixed reduction of the lanes (and a scalar tail).
#[inline(always)]
fn reduce(a: &[f32; LANES], tail: f32) -> f32 {
    let mut h = [0.0f32; LANES / 2];
    for j in 0..LANES / 2 {
        h[j] = a[j] + a[j + LANES / 2];
    }
    let mut q = [0.0f32; LANES / 4];
    for j in 0..LANES / 4 {
        q[j] = h[j] + h[j + LANES / 4];
    }
    tail + ((q[0] + q[4]) + (q[2] + q[6])) + ((q[1] + q[5]) + (q[3] + q[7]))
}

/// The one definition of a quantized dot product, which the vector kernels
/// compute bit for bit: per group of inputs, lane j (of 32) accumulates
/// w[a + 32i + j] * x[a + 32i + j] by fused multiply-add; the group's lanes
/// are then scaled into running lanes (fma(p, s, acc)); a group's last
/// (len % 32) inputs form a scalar chain, scaled into a scalar. bf16 and f32
/// rows are one group with scale 1, where fma(p, 1, 0) = p exactly.
fn dot_grouped(w: impl Fn(usize) -> f32, n: usize, scales: &[f32], group: usize, x: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut t = 0.0f32;
    for (g, &s) in scales.iter().enumerate() {
        let (a, b) = (g * group, ((g + 1) * group).min(n));
        let whole = a + (b - a) / LANES * LANES;
        let mut p = [0.0f32; LANES];
        for base in (a..whole).step_by(LANES) {
            for j in 0..LANES {
                p[j] = w(base + j).mul_add(x[base + j], p[j]);
            }
        }
        for j in 0..LANES {
            acc[j] = p[j].mul_add(s, acc[j]);
        }
        t = group_tail(&w, whole..b, x).mul_add(s, t);
    }
    reduce(&acc, t)
}

#[inline(always)]
fn group_tail(w: &impl Fn(usize) -> f32, r: std::ops::Range<usize>, x: &[f32]) -> f32 {
    let mut u = 0.0f32;
    for i in r {
        u = w(i).mul_add(x[i], u);
    }
    u
}

/// R bf16 rows . x, each as `dot_grouped` sums it (one group, scale 1).
pub fn dots_bf16<const R: usize>(w: [&[u16]; R], x: &[f32]) -> [f32; R] {
    let n = w[0].len();
    assert!(x.len() >= n && w.iter().all(|r| r.len() == n));
    let (one, group) = ([1.0f32], n.max(1));
    #[cfg(target_arch = "x86_64")]
    if let Some(level) = x86::level() {
        // SAFETY: the level's features were detected; lengths checked above.
        return unsafe { x86::dot_u16(level, w, [&one[..]; R], group, x) };
    }
    w.map(|r| dot_grouped(|i| bf16_to_f32(r[i]), n, &one, group, x))
}

/// R int8 rows (a scale per `group` inputs) . x.
pub fn dots_int8<const R: usize>(q: [&[i8]; R], scales: [&[f32]; R], group: usize, x: &[f32]) -> [f32; R] {
    let n = q[0].len();
    let ng = n.div_ceil(group);
    assert!(x.len() >= n && q.iter().all(|r| r.len() == n) && scales.iter().all(|s| s.len() == ng));
    #[cfg(target_arch = "x86_64")]
    if let Some(level) = x86::level() {
        // SAFETY: as in `dots_bf16`.
        return unsafe { x86::dot_i8(level, q, scales, group, x) };
    }
    let mut out = [0.0; R];
    for r in 0..R {
        out[r] = dot_grouped(|i| q[r][i] as f32, n, scales[r], group, x);
    }
    out
}

/// An f32 row (with group scales) . x, summed as the quantized rows are:
/// equal, bit for bit, to them on the row this one was widened from
/// (widening i8 or bf16 to f32 is exact).
fn dot_f32_grouped(w: &[f32], scales: &[f32], group: usize, x: &[f32]) -> f32 {
    assert!(x.len() >= w.len() && w.len().div_ceil(group) == scales.len());
    #[cfg(target_arch = "x86_64")]
    if let Some(level) = x86::level() {
        // SAFETY: as in `dots_bf16`.
        return unsafe { x86::dot_f32(level, [w], [scales], group, x) }[0];
    }
    dot_grouped(|i| w[i], w.len(), scales, group, x)
}

/// One int8 and one bf16 dot product on every path this CPU has: the
/// portable definition first, then each vector level detected, by name.
/// The tests check they agree bit for bit, and say which levels were absent.
#[doc(hidden)]
pub fn dots_on_every_level(q: &[i8], scales: &[f32], group: usize, h: &[u16], x: &[f32]) -> Vec<(&'static str, f32, f32)> {
    let one = [1.0f32];
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut out =
        vec![("portable", dot_grouped(|i| q[i] as f32, q.len(), scales, group, x), dot_grouped(|i| bf16_to_f32(h[i]), h.len(), &one, h.len().max(1), x))];
    #[cfg(target_arch = "x86_64")]
    for (name, level) in x86::levels() {
        // SAFETY: `levels` lists only detected levels.
        let (a, b) = unsafe { (x86::dot_i8(level, [q], [scales], group, x)[0], x86::dot_u16(level, [h], [&one[..]], h.len().max(1), x)[0]) };
        out.push((name, a, b));
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod x86;

/// The slow definition: dequantize everything, then plain f64 dot products.
pub fn qmatvec_naive(out: &mut [f32], inp: &[f32], w: &QMatrix, bias: Option<&[f32]>, n: usize) {
    let (c, oc) = (w.cols, w.rows);
    let mut full = vec![0.0f32; c * oc];
    w.dequantize_rows(&mut full, 0);
    for b in 0..n {
        // The input as the kernel sees it: rounded to fixed point for int8
        // rows that take that path.
        let mut x: Vec<f64> = inp[b * c..(b + 1) * c].iter().map(|&v| v as f64).collect();
        if let QData::Int8 { group, .. } = &w.data {
            if fixed16::eligible(c, *group) {
                let mut f = Fixed16::default();
                f.quantize(&inp[b * c..(b + 1) * c], *group);
                x = f.q.iter().enumerate().map(|(i, &v)| v as f64 * f.scales[i / group] as f64).collect();
            }
        }
        for r in 0..oc {
            let s: f64 = (0..c).map(|i| full[r * c + i] as f64 * x[i]).sum();
            out[b * oc + r] = s as f32 + bias.map_or(0.0, |bb| bb[r]);
        }
    }
}
