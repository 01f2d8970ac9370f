//! The x86 kernels of `quant`'s grouped dot products (AVX-512 and AVX2),
//! each equal bit for bit to the portable `dot_grouped`.

use std::arch::x86_64::*;

use super::PREFETCH_ROWS;

#[derive(Clone, Copy)]
pub enum Level {
    Avx512,
    Avx2,
}

/// Every level this CPU runs, the best first.
pub fn levels() -> Vec<(&'static str, Level)> {
    crate::simd::levels().into_iter().filter_map(|l| Some((l.name(), of(l)?))).collect()
}

/// The level `simd::active()` allows.
pub fn level() -> Option<Level> {
    of(crate::simd::active())
}

fn of(l: crate::simd::Level) -> Option<Level> {
    match l {
        crate::simd::Level::Avx512 => Some(Level::Avx512),
        crate::simd::Level::Avx2 => Some(Level::Avx2),
        _ => None,
    }
}

/// `dot_grouped` of R rows with one x, in vector registers: 32 lanes are
/// two AVX-512 or four AVX2 registers per row; R rows side by side keep
/// R independent chains in flight (the running lanes' fused
/// multiply-add chain would otherwise bound a row). `$l16` / `$l8` widen
/// 16 / 8 weights at a pointer.
macro_rules! grouped {
    ($name:ident, $name512:ident, $name256:ident, $t:ty, $l16:expr, $l8:expr, $scalar:expr) => {
        grouped!(@dispatch $name, $name512, $name256, $t, $l8, $scalar);
        grouped!(@avx512 $name512, $t, $l16, $scalar);
    };
    (@dispatch $name:ident, $name512:ident, $name256:ident, $t:ty, $l8:expr, $scalar:expr) => {
        pub unsafe fn $name<const R: usize>(level: Level, w: [&[$t]; R], scales: [&[f32]; R], group: usize, x: &[f32]) -> [f32; R] {
            match level {
                Level::Avx512 => $name512(w, scales, group, x),
                Level::Avx2 => $name256(w, scales, group, x),
            }
        }
        grouped!(@avx2 $name256, $t, $l8, $scalar);
    };
    (@avx512 $name512:ident, $t:ty, $l16:expr, $scalar:expr) => {
        #[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
        unsafe fn $name512<const R: usize>(w: [&[$t]; R], scales: [&[f32]; R], group: usize, x: &[f32]) -> [f32; R] {
            let n = w[0].len();
            let xp = x.as_ptr();
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            let mut t = [0.0f32; R];
            for g in 0..scales[0].len() {
                let (a, b) = (g * group, ((g + 1) * group).min(n));
                let whole = a + (b - a) / 32 * 32;
                let mut p = [[_mm512_setzero_ps(); 2]; R];
                let mut i = a;
                while i < whole {
                    let xv = [_mm512_loadu_ps(xp.add(i)), _mm512_loadu_ps(xp.add(i + 16))];
                    for r in 0..R {
                        _mm_prefetch::<_MM_HINT_T0>(w[r].as_ptr().wrapping_add(i + PREFETCH_ROWS * R * n) as *const i8);
                        for k in 0..2 {
                            p[r][k] = _mm512_fmadd_ps($l16(w[r].as_ptr().add(i + 16 * k)), xv[k], p[r][k]);
                        }
                    }
                    i += 32;
                }
                for r in 0..R {
                    let s = scales[r][g];
                    let sv = _mm512_set1_ps(s);
                    for k in 0..2 {
                        acc[r][k] = _mm512_fmadd_ps(p[r][k], sv, acc[r][k]);
                    }
                    t[r] = super::group_tail(&|i| $scalar(w[r][i]), whole..b, x).mul_add(s, t[r]);
                }
            }
            let mut out = [0.0f32; R];
            for r in 0..R {
                let mut lanes = [0.0f32; 32];
                _mm512_storeu_ps(lanes.as_mut_ptr(), acc[r][0]);
                _mm512_storeu_ps(lanes.as_mut_ptr().add(16), acc[r][1]);
                out[r] = super::reduce(&lanes, t[r]);
            }
            out
        }
    };
    (@avx2 $name256:ident, $t:ty, $l8:expr, $scalar:expr) => {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn $name256<const R: usize>(w: [&[$t]; R], scales: [&[f32]; R], group: usize, x: &[f32]) -> [f32; R] {
            let n = w[0].len();
            let xp = x.as_ptr();
            let mut acc = [[_mm256_setzero_ps(); 4]; R];
            let mut t = [0.0f32; R];
            for g in 0..scales[0].len() {
                let (a, b) = (g * group, ((g + 1) * group).min(n));
                let whole = a + (b - a) / 32 * 32;
                let mut p = [[_mm256_setzero_ps(); 4]; R];
                let mut i = a;
                while i < whole {
                    for k in 0..4 {
                        let xv = _mm256_loadu_ps(xp.add(i + 8 * k));
                        for r in 0..R {
                            p[r][k] = _mm256_fmadd_ps($l8(w[r].as_ptr().add(i + 8 * k)), xv, p[r][k]);
                        }
                    }
                    i += 32;
                }
                for r in 0..R {
                    let s = scales[r][g];
                    let sv = _mm256_set1_ps(s);
                    for k in 0..4 {
                        acc[r][k] = _mm256_fmadd_ps(p[r][k], sv, acc[r][k]);
                    }
                    t[r] = super::group_tail(&|i| $scalar(w[r][i]), whole..b, x).mul_add(s, t[r]);
                }
            }
            let mut out = [0.0f32; R];
            for r in 0..R {
                let mut lanes = [0.0f32; 32];
                for k in 0..4 {
                    _mm256_storeu_ps(lanes.as_mut_ptr().add(8 * k), acc[r][k]);
                }
                out[r] = super::reduce(&lanes, t[r]);
            }
            out
        }
    };
}

grouped!(
    dot_i8,
    dot_i8_512,
    dot_i8_256,
    i8,
    |p: *const i8| _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(p as *const __m128i))),
    |p: *const i8| _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i))),
    |v: i8| v as f32
);
grouped!(
    @dispatch dot_u16,
    dot_u16_512,
    dot_u16_256,
    u16,
    |p: *const u16| _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i)))),
    super::bf16_to_f32
);

/// bf16 rows (one group, scale 1) without widening each weight: 32 bf16
/// in a register are 16 f32 in their upper halves (the odd elements,
/// masked) and 16 in their lower halves (the even ones, shifted up), so
/// two multiply-adds take the even and odd inputs (deinterleaved once for
/// all rows). Lane 2l of `dot_grouped` is then even-lane l, lane 2l + 1
/// odd-lane l: the same 32 chains, in the same order, bit for bit.
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
unsafe fn dot_u16_512<const R: usize>(w: [&[u16]; R], scales: [&[f32]; R], group: usize, x: &[f32]) -> [f32; R] {
    let n = w[0].len();
    assert!(scales.iter().all(|s| s == &[1.0]) && group >= n, "bf16 rows are one group of scale 1");
    let whole = n / 32 * 32;
    let xp = x.as_ptr();
    let (even, odd) = even_odd();
    let upper = _mm512_set1_epi32(0xffff_0000u32 as i32);
    let mut pe = [_mm512_setzero_ps(); R];
    let mut po = [_mm512_setzero_ps(); R];
    let mut i = 0;
    while i < whole {
        let (x0, x1) = (_mm512_loadu_ps(xp.add(i)), _mm512_loadu_ps(xp.add(i + 16)));
        let (xe, xo) = (_mm512_permutex2var_ps(x0, even, x1), _mm512_permutex2var_ps(x0, odd, x1));
        for r in 0..R {
            _mm_prefetch::<_MM_HINT_T0>(w[r].as_ptr().wrapping_add(i + PREFETCH_ROWS * R * n) as *const i8);
            let v = _mm512_loadu_si512(w[r].as_ptr().add(i) as *const _);
            pe[r] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32::<16>(v)), xe, pe[r]);
            po[r] = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(v, upper)), xo, po[r]);
        }
        i += 32;
    }
    // A loop, not `array::from_fn`: LLVM left that closure out of line,
    // which kept the accumulators on the stack, stored every step (bf16
    // rows in cache at 55 GiB/s instead of 90).
    let mut out = [0.0f32; R];
    for r in 0..R {
        out[r] = finish_u16(pe[r], po[r], w[r], whole, x);
    }
    out
}

/// 16 lanes summed in a fixed tree: lane l plus lane l + 8, then lane m
/// plus m + 4, then (0 + 2) + (1 + 3). The int8 fixed-point rows and the
/// bf16 rows' last step both end in it.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
pub(super) unsafe fn sum16(v: __m512) -> f32 {
    sum8(halves(v))
}

/// Lane l plus lane l + 8: `sum16`'s first step, 16 lanes to 8.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn halves(v: __m512) -> __m256 {
    _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v))))
}

/// `sum16` once its first step is done, or two AVX2 registers added.
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(super) fn sum8(h: __m256) -> f32 {
    let q = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
    let r = _mm_add_ps(q, _mm_movehl_ps(q, q));
    _mm_cvtss_f32(_mm_add_ss(r, _mm_shuffle_ps::<1>(r, r)))
}

/// The indices that split 32 floats in two registers into their even and
/// their odd elements (`_mm512_permutex2var_ps`).
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn even_odd() -> (__m512i, __m512i) {
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    (even, _mm512_add_epi32(even, _mm512_set1_epi32(1)))
}

/// A bf16 row's dot product from its even and odd lanes (`dot_u16_512`)
/// over its first `whole` inputs: the group's scale step of the definition,
/// fma(p, 1, 0), then `quant::reduce`'s fixed tree in registers, and the
/// scalar tail. Lane 2l of the definition is even-lane l and lane 2l + 1
/// odd-lane l, so reduce's halving steps (lane j plus lane j + 16, then
/// j + 8) are the even and the odd register each added to its own upper
/// half: the same additions of the same pairs, so the same bits. Stored
/// to memory and reduced a float at a time, this took about as long as a
/// 768-long row's multiply-adds.
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
#[inline]
unsafe fn finish_u16(pe: __m512, po: __m512, row: &[u16], whole: usize, x: &[f32]) -> f32 {
    let one = |v: __m512| _mm512_fmadd_ps(v, _mm512_set1_ps(1.0), _mm512_setzero_ps());
    let (even, odd) = (sum16(one(pe)), sum16(one(po)));
    let t = super::group_tail(&|i| super::bf16_to_f32(row[i]), whole..row.len(), x).mul_add(1.0, 0.0);
    t + even + odd
}
grouped!(dot_f32, dot_f32_512, dot_f32_256, f32, |p: *const f32| _mm512_loadu_ps(p), |p: *const f32| _mm256_loadu_ps(p), |v: f32| v);

/// o[r] = `dot_grouped`(row r of `w`, x) (bf16, one group of scale 1) for
/// the o.len() rows of x.len() that `w` starts with: the streamed reading
/// of bf16 rows, for rows read from memory. Each 16 bf16 (32 bytes) widen
/// into one register of f32 (`vpmovzxwd` and a shift), so the two
/// accumulators hold lanes 0-15 and 16-31 of the definition, each summed in
/// its order; then its reduction, in registers. No software prefetch: the
/// hardware's follows one sequential stream a thread. On a Zen 4 EPYC
/// (gpt2-124m's 49 matrices on huge pages, 2 threads, alternated in one
/// process; docs/PERFORMANCE.md) this read 50-51 GB/s when memory gave f32
/// rows 51-54, where the even/odd form of `dot_u16_512` (whole 64-byte
/// loads, with an L2 prefetch four rows ahead) read 42-45; when memory gave
/// 34-36, 34-36 against 32-34.
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
pub unsafe fn rows_u16_512(o: &mut [f32], w: &[u16], x: &[f32]) {
    let n = x.len();
    assert!(w.len() >= o.len() * n);
    let whole = n / 32 * 32;
    let widen = |p: *const u16| _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(_mm256_loadu_si256(p as *const __m256i))));
    for (r, y) in o.iter_mut().enumerate() {
        let row = &w[r * n..(r + 1) * n];
        let (wp, xp) = (row.as_ptr(), x.as_ptr());
        let (mut lo, mut hi) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut i = 0;
        while i < whole {
            lo = _mm512_fmadd_ps(widen(wp.add(i)), _mm512_loadu_ps(xp.add(i)), lo);
            hi = _mm512_fmadd_ps(widen(wp.add(i + 16)), _mm512_loadu_ps(xp.add(i + 16)), hi);
            i += 32;
        }
        // The group's scale step, fma(p, 1, 0); then `reduce`: lane j plus
        // j + 16, plus j + 8, and the even and odd quarter-lanes in order.
        let one = |v: __m512| _mm512_fmadd_ps(v, _mm512_set1_ps(1.0), _mm512_setzero_ps());
        let q = halves(_mm512_add_ps(one(lo), one(hi)));
        let f = _mm_add_ps(_mm256_castps256_ps128(q), _mm256_extractf128_ps::<1>(q));
        let mut l = [0.0f32; 4];
        _mm_storeu_ps(l.as_mut_ptr(), f);
        let t = super::group_tail(&|i| super::bf16_to_f32(row[i]), whole..n, x).mul_add(1.0, 0.0);
        *y = t + (l[0] + l[2]) + (l[1] + l[3]);
    }
}

/// `rows_u16_512` for AVX2 + FMA: o[r] = `dot_grouped`(row r of `w`, x) (bf16,
/// one group of scale 1), the streamed reading. Widening 8 bf16 at a time
/// (`vpmovzxwd` and a shift, as `dot_u16_256` does) costs three operations
/// per 8 weights; here each 16 are one load, a shift (the even elements)
/// and a mask (the odd ones), against x's even and odd elements stored side
/// by side once per call: two operations fewer per 16 weights, which
/// counts where two vCPUs share one core's units.
///
/// Lanes: in each 32-block, `acc[2h]` lane l holds definition lane 16h + 2l
/// and `acc[2h + 1]` lane 16h + 2l + 1, each summed in the definition's
/// order. `reduce`'s steps are then: lane j plus j + 16 (the even and the
/// odd registers of the two halves added), j plus j + 8 (each register's
/// two 128-bit halves), and the even and odd quarter-lanes in its order:
/// the same additions of the same pairs, so the same bits.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn rows_u16_256(o: &mut [f32], w: &[u16], x: &[f32]) {
    let n = x.len();
    assert!(w.len() >= o.len() * n);
    let whole = n / 32 * 32;
    // x as [16 blocks][8 even, 8 odd], in this thread's kept buffer: the
    // decoder calls this once per task per matrix per token.
    thread_local! {
        static EVEN_ODD: std::cell::RefCell<crate::scratch::Scratch> = const { std::cell::RefCell::new(crate::scratch::Scratch::new()) };
    }
    crate::scratch::with(&EVEN_ODD, |buf| {
        let xs: &mut [f32] = buf.get(whole);
        for (d, s) in xs.chunks_exact_mut(16).zip(x[..whole].chunks_exact(16)) {
            for l in 0..8 {
                d[l] = s[2 * l];
                d[8 + l] = s[2 * l + 1];
            }
        }
        // SAFETY: the caller checked AVX2 and FMA, and w covers o.len() rows.
        unsafe { rows_u16_256_even_odd(o, w, x, xs) }
    })
}

/// `rows_u16_256`'s loop, with `xs` x's first `xs.len()` (a multiple of 32)
/// elements in the even/odd order.
///
/// Each 64-byte step prefetches the line 1 KiB on into L2: the hardware's
/// prefetcher alone kept fewer lines in flight. On the AVX2-only Zen 3
/// EPYC (gpt2-124m, 2 threads, `attn bench generate --dtype bf16`, the two
/// builds alternated 10 times) the fraction of the bound went from
/// 0.80-0.84 (median 0.82) to 0.81-0.89 (0.86); 0.75-1.25 KiB on did
/// alike, 0.5 KiB no better than none, 2 KiB 0.74-0.77, 3-6 KiB 0.69-0.72.
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_u16_256_even_odd(o: &mut [f32], w: &[u16], x: &[f32], xs: &[f32]) {
    const AHEAD: usize = 512;
    let (n, whole) = (x.len(), xs.len());
    let upper = _mm256_set1_epi32(0xffff_0000u32 as i32);
    let xq = xs.as_ptr();
    for (r, y) in o.iter_mut().enumerate() {
        let row = &w[r * n..(r + 1) * n];
        let wp = row.as_ptr();
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i < whole {
            // Into L2, AHEAD weights on (past the row's end: the next row's).
            _mm_prefetch::<_MM_HINT_T1>(wp.wrapping_add(i + AHEAD) as *const i8);
            for h in 0..2 {
                let v = _mm256_loadu_si256(wp.add(i + 16 * h) as *const __m256i);
                let even = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(v));
                let odd = _mm256_castsi256_ps(_mm256_and_si256(v, upper));
                acc[2 * h] = _mm256_fmadd_ps(even, _mm256_loadu_ps(xq.add(i + 16 * h)), acc[2 * h]);
                acc[2 * h + 1] = _mm256_fmadd_ps(odd, _mm256_loadu_ps(xq.add(i + 16 * h + 8)), acc[2 * h + 1]);
            }
            i += 32;
        }
        // The group's scale step, fma(p, 1, 0); then `reduce`.
        let one = |v: __m256| _mm256_fmadd_ps(v, _mm256_set1_ps(1.0), _mm256_setzero_ps());
        let (he, ho) = (_mm256_add_ps(one(acc[0]), one(acc[2])), _mm256_add_ps(one(acc[1]), one(acc[3])));
        let quarter = |h: __m256| {
            let mut q = [0.0f32; 4];
            _mm_storeu_ps(q.as_mut_ptr(), _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h)));
            q
        };
        let (e, d) = (quarter(he), quarter(ho));
        let t = super::group_tail(&|i| super::bf16_to_f32(row[i]), whole..n, x).mul_add(1.0, 0.0);
        *y = t + ((e[0] + e[2]) + (e[1] + e[3])) + ((d[0] + d[2]) + (d[1] + d[3]));
    }
}
