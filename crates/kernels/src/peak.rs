//! What the cores themselves can compute: f32 multiply-adds (and bf16 dot
//! products, where the CPU has `vdpbf16ps`) a second, with nothing loaded
//! from memory, every thread of the pool at once.
//!
//! The GEMM peak (`matmul::sgemm_peak_probe`) is the denominator of attn's
//! MFU, as the benchmarks report it; this is the ceiling above that one. On
//! the 2-core Zen 4 EPYC measured, `attn bench gemm` gave 117 GFLOP/s of
//! multiply-adds a core against a 1024^3 GEMM at 219 on two cores: the GEMM
//! at 94% of what the vector units finish, so a faster f32 kernel has at
//! most 6% to find (docs/PERFORMANCE.md).
//!
//! Each thread runs `CHAINS` independent accumulators: more than a
//! multiply-add's latency (4 cycles) times the units that issue them (2),
//! so that no chain waits on itself.

use std::time::{Duration, Instant};

/// Independent accumulator registers a thread keeps busy.
const CHAINS: usize = 12;

/// Loop trips between clock readings.
const TRIPS: usize = 1 << 16;

/// f32 multiply-adds a second, in GFLOP/s (2 FLOPs each), on the active
/// SIMD level (`simd::active`) with every pool thread running `for_at_least`;
/// None where that level has no vector FMA (AVX, the portable level, and
/// every non-x86 target).
pub fn fma_gflops(for_at_least: Duration) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        use crate::simd::Level;
        // FLOPs of one loop trip: CHAINS registers of 16 or 8 lanes, 2 each.
        let (f, flops): (unsafe fn(usize) -> f32, usize) = match crate::simd::active() {
            Level::Avx512 => (x86::fma512, CHAINS * 16 * 2),
            Level::Avx2 => (x86::fma256, CHAINS * 8 * 2),
            _ => return None,
        };
        // SAFETY: `active` never exceeds the CPU's level.
        Some(on_every_thread(for_at_least, flops, |n| unsafe { f(n) }))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = for_at_least;
        None
    }
}

/// bf16 dot products (`vdpbf16ps`: 16 lanes, each two products and their
/// sum into f32) a second, in GFLOP/s, every pool thread at once; None
/// without AVX512-BF16. The ceiling of the "avx512-bf16" tile kernel.
pub fn bf16_dot_gflops(for_at_least: Duration) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if crate::dpbf16::available() {
        // SAFETY: checked just above.
        return Some(on_every_thread(for_at_least, CHAINS * 16 * 4, |n| unsafe { x86::dpbf16(n) }));
    }
    let _ = for_at_least;
    None
}

/// Runs `trips(n)` (n loop trips of `flops` FLOPs each) on every thread of
/// the pool together until each has run `for_at_least`; the sum of the
/// threads' rates, in GFLOP/s, each thread's the best of `WINDOWS` equal
/// windows. A peak is what the cores do when nothing interrupts them: on
/// the 2-core VMs measured, a 300 ms average over the whole run once came
/// back 23% low (178 against 228-233 GFLOP/s a minute later) while the
/// host ran something else on one of the vCPUs, and the GEMM peak beside
/// it is a best of ten too.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn on_every_thread(for_at_least: Duration, flops: usize, trips: impl Fn(usize) -> f32 + Sync) -> f64 {
    let window = for_at_least / WINDOWS;
    let rates = rayon::broadcast(|_| {
        // One untimed run first: the clock ramps up and the code is paged in.
        std::hint::black_box(trips(TRIPS));
        let mut best = 0.0f64;
        for _ in 0..WINDOWS {
            let (t0, mut done) = (Instant::now(), 0usize);
            while done == 0 || t0.elapsed() < window {
                std::hint::black_box(trips(TRIPS));
                done += TRIPS;
            }
            best = best.max((done * flops) as f64 / t0.elapsed().as_secs_f64() / 1e9);
        }
        best
    });
    rates.iter().sum()
}

/// Timed windows per thread in `on_every_thread`.
const WINDOWS: u32 = 10;

/// The value every chain of the probes ends at after `n` trips: each starts
/// at 1 and takes x * 1 + 2^-10 per trip (exact in f32 below 2^23 trips).
pub fn expected_chain(n: usize) -> f32 {
    1.0 + n as f32 / 1024.0
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::CHAINS;

    /// Sum of the first lane of every chain after `n` trips of
    /// acc = acc * 1 + 2^-10 (the tests check it against `expected_chain`,
    /// so the loop is known to run).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma512(n: usize) -> f32 {
        let (one, step) = std::hint::black_box((_mm512_set1_ps(1.0), _mm512_set1_ps(1.0 / 1024.0)));
        let mut acc = [one; CHAINS];
        for _ in 0..n {
            for a in acc.iter_mut() {
                *a = _mm512_fmadd_ps(*a, one, step);
            }
        }
        acc.iter().map(|&a| _mm_cvtss_f32(_mm512_castps512_ps128(a))).sum()
    }

    /// As `fma512` on 8 lanes.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma256(n: usize) -> f32 {
        let (one, step) = std::hint::black_box((_mm256_set1_ps(1.0), _mm256_set1_ps(1.0 / 1024.0)));
        let mut acc = [one; CHAINS];
        for _ in 0..n {
            for a in acc.iter_mut() {
                *a = _mm256_fmadd_ps(*a, one, step);
            }
        }
        acc.iter().map(|&a| _mm_cvtss_f32(_mm256_castps256_ps128(a))).sum()
    }

    /// acc += (0, 2^-10) . (1, 1) in bf16 pairs: 2^-10 a trip, as above.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn dpbf16(n: usize) -> f32 {
        // 2^-10 is 0x3a80 in bf16; the pair (0, 2^-10) and the pair (1, 1).
        // Opaque to the compiler, which otherwise folds the constant products
        // and runs no loop at all.
        let a: __m512bh = std::mem::transmute(std::hint::black_box(_mm512_set1_epi32(0x3a80_0000)));
        let b: __m512bh = std::mem::transmute(std::hint::black_box(_mm512_set1_epi32(0x3f80_3f80)));
        let mut acc = [_mm512_set1_ps(1.0); CHAINS];
        for _ in 0..n {
            for c in acc.iter_mut() {
                *c = _mm512_dpbf16_ps(*c, a, b);
            }
        }
        acc.iter().map(|&c| _mm_cvtss_f32(_mm512_castps512_ps128(c))).sum()
    }

    /// Every probe this CPU runs, by name, after `n` trips (for the tests).
    pub fn every_probe(n: usize) -> Vec<(&'static str, f32)> {
        let mut out = Vec::new();
        // SAFETY: each runs only where its features were detected.
        unsafe {
            if is_x86_feature_detected!("avx512f") {
                out.push(("avx512", fma512(n)));
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                out.push(("avx2", fma256(n)));
            }
            if crate::dpbf16::available() {
                out.push(("avx512-bf16", dpbf16(n)));
            }
        }
        out
    }
}

/// The probes' loops this CPU runs, by name, each after `n` trips: every
/// one should give CHAINS * `expected_chain(n)`.
pub fn every_probe(n: usize) -> Vec<(&'static str, f32)> {
    #[cfg(target_arch = "x86_64")]
    return x86::every_probe(n);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = n;
        Vec::new()
    }
}

/// Chains each probe runs (for the tests).
pub const PROBE_CHAINS: usize = CHAINS;
