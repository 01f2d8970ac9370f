//! int8 weights times inputs in 16-bit fixed point: the decoding dot product
//! for int8 rows whose length and group are multiples of 32, the length a
//! multiple of the group.
//!
//! Widening every int8 weight to f32 costs three vector operations per 16
//! weights, which left the int8 matrix-vector kernel compute-bound at about
//! half the speed memory could feed it. Here the input is rounded instead,
//! once per vector: each group of G inputs to i16 with its own scale
//! (max |x| / 32767, so the rounding error is at most 1/65534 of the
//! group's largest input, 128 times finer than the weights' own rounding).
//! A group's products are then exact integer sums (`vpmaddwd`: 32 weights,
//! two instructions), and only each group's 16 partial sums go through f32:
//!
//! ```text
//!   out = sum over groups g, lanes l of  (isum[g, l] * x_scale[g]) * w_scale[g]
//! ```
//!
//! where lane l of a group sums inputs 32k + 2l and 32k + 2l + 1 of every
//! 32-block k in it. The portable definition `dot_fixed16` and the vector
//! kernels compute this bit for bit (integer sums are exact; the f32 steps
//! happen in the same order), so a row's result is the same on every level.

use super::Reading;

/// Lanes of the accumulators: one AVX-512 or two AVX2 registers.
const L: usize = 16;

/// An input vector rounded to 16-bit fixed point, a scale per group.
#[derive(Clone, Debug, Default)]
pub struct Fixed16 {
    /// Each input as round(x / scale of its group), in [-32767, 32767].
    pub q: Vec<i16>,
    /// One scale per group: its largest |x| / 32767.
    pub scales: Vec<f32>,
}

/// The largest group this path takes: each of the L lanes sums group / L
/// products of at most 127 * 32767 in 32 bits, and 8192 / 16 of them stay
/// below 2^31 (larger groups take the f32 path).
pub const MAX_GROUP: usize = 8192;
const _: () = assert!((MAX_GROUP / L) as i64 * 127 * 32767 <= i32::MAX as i64);

/// Whether int8 rows of `cols` inputs in groups of `group` take this path.
/// A row ending on a shorter group does not: the kernels sum whole groups
/// only (C = 96 in groups of 64 once summed 64 inputs a row and gave wrong
/// outputs without an error).
pub fn eligible(cols: usize, group: usize) -> bool {
    cols % 32 == 0 && group % 32 == 0 && group > 0 && group <= MAX_GROUP && cols % group == 0
}

impl Fixed16 {
    /// x rounded per group of `group`: q = round(x * 32767 / max|x|). A group
    /// holding a NaN or an infinity gets a NaN scale, so the outputs it feeds
    /// are NaN, as an f32 product would make them.
    pub fn quantize(&mut self, x: &[f32], group: usize) {
        self.q.resize(x.len(), 0);
        self.scales.clear();
        for (part, q) in x.chunks(group).zip(self.q.chunks_mut(group)) {
            let max = part.iter().fold(0.0f32, |m, &v| m.max(v.abs()));
            let finite = part.iter().all(|v| v.is_finite());
            let inv = if max > 0.0 && finite { 32767.0 / max } else { 0.0 };
            // Round to nearest even by adding and subtracting 1.5 * 2^23
            // (|v * inv| <= 32767), reading the integer from the low
            // mantissa bits: no libm call, so the loop vectorizes.
            const ROUND: f32 = 12_582_912.0;
            for (o, &v) in q.iter_mut().zip(part) {
                *o = (((v * inv).clamp(-32767.0, 32767.0) + ROUND).to_bits() as i32 - ROUND.to_bits() as i32) as i16;
            }
            self.scales.push(if finite { max / 32767.0 } else { f32::NAN });
        }
    }
}

/// The definition: one int8 row (scales per `group`) . x in fixed point.
pub fn dot_fixed16(w: &[i8], w_scales: &[f32], group: usize, x: &Fixed16) -> f32 {
    let n = w.len();
    assert!(eligible(n, group) && x.q.len() >= n && w_scales.len() == n / group);
    let mut acc = [0.0f32; L];
    for (g, &sw) in w_scales.iter().enumerate() {
        let mut isum = [0i32; L];
        for k in (g * group..(g + 1) * group).step_by(32) {
            // Lane l: inputs k + 2l and k + 2l + 1.
            let pairs = w[k..k + 32].chunks_exact(2).zip(x.q[k..k + 32].chunks_exact(2));
            for (s, (wp, xp)) in isum.iter_mut().zip(pairs) {
                *s += wp[0] as i32 * xp[0] as i32 + wp[1] as i32 * xp[1] as i32;
            }
        }
        for (a, &s) in acc.iter_mut().zip(&isum) {
            *a = (s as f32 * x.scales[g]).mul_add(sw, *a);
        }
    }
    crate::simd::sum16(&acc)
}

/// out[k * stride] = row k of `q` (rows, C) . x for every row, each exactly
/// as `dot_fixed16`: the whole block in one call on the active level, so
/// that per-row costs (checks, dispatch, division by the group) are paid
/// once per block.
pub fn rows_fixed16(out: &mut [f32], stride: usize, q: &[i8], scales: &[f32], cols: usize, group: usize, x: &Fixed16, reading: Reading) {
    assert!(eligible(cols, group) && q.len() % cols == 0 && x.q.len() >= cols && x.scales.len() >= cols / group);
    let rows = q.len() / cols;
    let g = cols / group;
    #[cfg(not(target_arch = "x86_64"))]
    let _ = reading; // the portable loop reads rows one at a time either way
    assert!(scales.len() == rows * g && (rows == 0 || out.len() > (rows - 1) * stride));
    #[cfg(target_arch = "x86_64")]
    match crate::simd::active() {
        // SAFETY: `active` never exceeds the detected level; lengths checked above.
        crate::simd::Level::Avx512 => return unsafe { x86::rows512(out, stride, q, scales, cols, group, x, reading) },
        crate::simd::Level::Avx2 => return unsafe { x86::rows256(out, stride, q, scales, cols, group, x, reading) },
        _ => {}
    }
    for r in 0..rows {
        out[r * stride] = dot_fixed16(&q[r * cols..(r + 1) * cols], &scales[r * g..(r + 1) * g], group, x);
    }
}

/// `dot_fixed16` on the portable definition and on each x86 level this CPU
/// has, by name (for the tests).
pub fn on_every_level(w: &[i8], w_scales: &[f32], group: usize, x: &Fixed16) -> Vec<(&'static str, f32)> {
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut out = vec![("portable", dot_fixed16(w, w_scales, group, x))];
    #[cfg(target_arch = "x86_64")]
    for l in crate::simd::levels() {
        // SAFETY: `levels` lists only detected levels.
        match l {
            crate::simd::Level::Avx512 => out.push((l.name(), unsafe { x86::dots512::<1, 0>([w], [w_scales], group, x) }[0])),
            crate::simd::Level::Avx2 => out.push((l.name(), unsafe { x86::dots256::<1, 0>([w], [w_scales], group, x) }[0])),
            _ => {}
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Fixed16, Reading};
    use crate::quant::x86::{sum16, sum8};
    use crate::quant::PREFETCH_ROWS;

    /// 32 inputs a step: one register of i16 inputs, each row's 32 int8
    /// weights sign-extended to i16 and multiplied pairwise into 16 i32 lanes.
    #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
    pub unsafe fn dots512<const R: usize, const G: usize>(w: [&[i8]; R], ws: [&[f32]; R], group: usize, x: &Fixed16) -> [f32; R] {
        // G > 0: the group known at compile time (no division, loops unrolled).
        let group = if G > 0 { G } else { group };
        let n = w[0].len();
        let xp = x.q.as_ptr();
        let mut acc = [_mm512_setzero_ps(); R];
        for g in 0..n / group {
            let mut isum = [_mm512_setzero_si512(); R];
            let k0 = g * group;
            for k in (k0..k0 + group).step_by(32) {
                let xv = _mm512_loadu_si512(xp.add(k) as *const _);
                for r in 0..R {
                    let p = w[r].as_ptr().add(k);
                    if k % 64 == 0 {
                        // Into L2 (see `simd::prefetch_l2`): on a Zen 4 EPYC
                        // gpt2-124m int8 decoding 156-179 -> 165-188 tok/s.
                        _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(4 * PREFETCH_ROWS * R * n));
                    }
                    let prod = _mm512_madd_epi16(_mm512_cvtepi8_epi16(_mm256_loadu_si256(p as *const __m256i)), xv);
                    isum[r] = _mm512_add_epi32(isum[r], prod);
                }
            }
            // The input's scale once for all rows; each row's own scale is a
            // broadcast from memory inside the multiply-add.
            let sx = _mm512_set1_ps(x.scales[g]);
            for r in 0..R {
                let p = _mm512_mul_ps(_mm512_cvtepi32_ps(isum[r]), sx);
                acc[r] = _mm512_fmadd_ps(p, _mm512_set1_ps(*ws[r].get_unchecked(g)), acc[r]);
            }
        }
        acc.map(|a| sum16(a))
    }

    /// The same in two AVX2 registers: lanes 0-7 take inputs 0-15 of a
    /// 32-block, lanes 8-15 inputs 16-31, as the AVX-512 lanes do.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dots256<const R: usize, const G: usize>(w: [&[i8]; R], ws: [&[f32]; R], group: usize, x: &Fixed16) -> [f32; R] {
        let group = if G > 0 { G } else { group };
        let n = w[0].len();
        let xp = x.q.as_ptr();
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        for g in 0..n / group {
            let mut isum = [[_mm256_setzero_si256(); 2]; R];
            let k0 = g * group;
            for k in (k0..k0 + group).step_by(32) {
                let xv = [_mm256_loadu_si256(xp.add(k) as *const __m256i), _mm256_loadu_si256(xp.add(k + 16) as *const __m256i)];
                for r in 0..R {
                    let p = w[r].as_ptr().add(k);
                    if k % 64 == 0 {
                        _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(4 * PREFETCH_ROWS * R * n));
                    }
                    for h in 0..2 {
                        let prod = _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128(p.add(16 * h) as *const __m128i)), xv[h]);
                        isum[r][h] = _mm256_add_epi32(isum[r][h], prod);
                    }
                }
            }
            let sx = _mm256_set1_ps(x.scales[g]);
            for r in 0..R {
                let s = _mm256_set1_ps(*ws[r].get_unchecked(g));
                for h in 0..2 {
                    acc[r][h] = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(isum[r][h]), sx), s, acc[r][h]);
                }
            }
        }
        acc.map(|[lo, hi]| sum8(_mm256_add_ps(lo, hi)))
    }

    /// R rows at a time (a last short block repeats its last row): four for
    /// rows in cache, one for rows streamed from memory (`Reading`); the
    /// group a compile-time constant for the usual 32 and 64.
    macro_rules! rows {
        ($name:ident, $dots:ident, $feat:literal) => {
            #[target_feature(enable = $feat)]
            pub unsafe fn $name(out: &mut [f32], stride: usize, q: &[i8], scales: &[f32], c: usize, group: usize, x: &Fixed16, reading: Reading) {
                match (group, reading) {
                    (32, Reading::InCache) => block::<32, 4>(out, stride, q, scales, c, group, x),
                    (64, Reading::InCache) => block::<64, 4>(out, stride, q, scales, c, group, x),
                    (_, Reading::InCache) => block::<0, 4>(out, stride, q, scales, c, group, x),
                    (32, Reading::Streamed) => block::<32, 1>(out, stride, q, scales, c, group, x),
                    (64, Reading::Streamed) => block::<64, 1>(out, stride, q, scales, c, group, x),
                    (_, Reading::Streamed) => block::<0, 1>(out, stride, q, scales, c, group, x),
                }
                #[inline]
                #[target_feature(enable = $feat)]
                unsafe fn block<const G: usize, const R: usize>(out: &mut [f32], stride: usize, q: &[i8], scales: &[f32], c: usize, group: usize, x: &Fixed16) {
                    let rows = q.len() / c;
                    let g = c / if G > 0 { G } else { group };
                    for k0 in (0..rows).step_by(R) {
                        let row = |k: usize| (k0 + k).min(rows - 1);
                        let qs: [&[i8]; R] = std::array::from_fn(|k| q.get_unchecked(row(k) * c..(row(k) + 1) * c));
                        let ss: [&[f32]; R] = std::array::from_fn(|k| scales.get_unchecked(row(k) * g..(row(k) + 1) * g));
                        let d = $dots::<R, G>(qs, ss, group, x);
                        for (k, &v) in d.iter().enumerate().take(rows - k0) {
                            *out.get_unchecked_mut((k0 + k) * stride) = v;
                        }
                    }
                }
            }
        };
    }
    rows!(rows512, dots512, "avx512f,avx512bw,avx2,fma");
    rows!(rows256, dots256, "avx2,fma");
}
