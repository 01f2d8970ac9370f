//! The measurement behind the int8 decoding kernel's form: attn's kernel
//! (`fixed16::rows_fixed16`, rows one at a time as it streams them), against
//! two other ways to multiply int8 weights by the input, on one thread, with
//! the matrix in the caches so that only the arithmetic is timed:
//!
//! - `unpack`: each 64 weights widened inside their 128-bit lanes
//!   (`vpunpck{l,h}bw` with zeros, so w * 256 in 16 bits), two `vpmaddwd`,
//!   their sum shifted back by 8. It avoids the kernel's cross-lane
//!   `vpmovsxbw`, but the inputs must be stored in the unpack's order and
//!   the shift adds an operation;
//! - `dpbusd-8bit`: one AVX512-VNNI `vpdpbusd` per 64 weights against an
//!   8-bit input. Not a candidate (it rounds the input 128 times more coarsely,
//!   which makes it W8A8 rather than weight-only); it shows what the fewest
//!   operations allow.
//!
//! Both alternatives sum only: their outputs are not compared.
//! Run: cargo bench -p attn-kernels --bench int8_forms

use criterion::{criterion_group, criterion_main, Criterion};

#[cfg(target_arch = "x86_64")]
mod forms {
    use std::arch::x86_64::*;

    /// One int8 row (C) . x with the kernel's operations (sign extension,
    /// `vpmaddwd`, `vpaddd`; a group's scale step) in a plain loop: no
    /// prefetch, no blocks of rows.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn plain(w: &[i8], x: &[i16], ws: &[f32], xs: &[f32]) -> f32 {
        let mut acc = _mm512_setzero_ps();
        for g in 0..w.len() / 64 {
            let mut s = _mm512_setzero_si512();
            for k in [g * 64, g * 64 + 32] {
                let wv = _mm512_cvtepi8_epi16(_mm256_loadu_si256(w.as_ptr().add(k) as *const __m256i));
                s = _mm512_add_epi32(s, _mm512_madd_epi16(wv, _mm512_loadu_si512(x.as_ptr().add(k) as *const _)));
            }
            let p = _mm512_mul_ps(_mm512_cvtepi32_ps(s), _mm512_set1_ps(xs[g]));
            acc = _mm512_fmadd_ps(p, _mm512_set1_ps(ws[g]), acc);
        }
        _mm512_reduce_add_ps(acc)
    }

    /// One int8 row (C) . x in the in-lane form: groups of 64, one f32 scale
    /// step a group as in the kernel.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn unpack(w: &[i8], x: &[i16], ws: &[f32], xs: &[f32]) -> f32 {
        let (mut acc, z) = (_mm512_setzero_ps(), _mm512_setzero_si512());
        for g in 0..w.len() / 64 {
            let k = g * 64;
            let wv = _mm512_loadu_si512(w.as_ptr().add(k) as *const _);
            let (lo, hi) = (_mm512_unpacklo_epi8(z, wv), _mm512_unpackhi_epi8(z, wv));
            let (x0, x1) = (_mm512_loadu_si512(x.as_ptr().add(k) as *const _), _mm512_loadu_si512(x.as_ptr().add(k + 32) as *const _));
            // Each vpmaddwd lane is at most 2 * 127 * 256 * 16383 < 2^30, so the sum fits.
            let s = _mm512_srai_epi32::<8>(_mm512_add_epi32(_mm512_madd_epi16(lo, x0), _mm512_madd_epi16(hi, x1)));
            let p = _mm512_mul_ps(_mm512_cvtepi32_ps(s), _mm512_set1_ps(xs[g]));
            acc = _mm512_fmadd_ps(p, _mm512_set1_ps(ws[g]), acc);
        }
        _mm512_reduce_add_ps(acc)
    }

    /// One int8 row (C) . an 8-bit x: one `vpdpbusd` per 64 weights.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub unsafe fn dpbusd(w: &[i8], x: &[u8], ws: &[f32], xs: &[f32]) -> f32 {
        let mut acc = _mm512_setzero_ps();
        for g in 0..w.len() / 64 {
            let k = g * 64;
            let (wv, xv) = (_mm512_loadu_si512(w.as_ptr().add(k) as *const _), _mm512_loadu_si512(x.as_ptr().add(k) as *const _));
            let s = _mm512_dpbusd_epi32(_mm512_setzero_si512(), xv, wv);
            let p = _mm512_mul_ps(_mm512_cvtepi32_ps(s), _mm512_set1_ps(xs[g]));
            acc = _mm512_fmadd_ps(p, _mm512_set1_ps(ws[g]), acc);
        }
        _mm512_reduce_add_ps(acc)
    }
}

#[cfg(target_arch = "x86_64")]
fn bench(c: &mut Criterion) {
    use attn_kernels::quant::{fixed16, Fixed16, Reading};
    use criterion::Throughput;
    // The kernel runs at whatever level this CPU has; the two alternatives
    // are AVX-512 code.
    let avx512 = is_x86_feature_detected!("avx512bw");
    if !avx512 {
        eprintln!("int8_forms: plain and unpack NOT MEASURED, this CPU lacks AVX-512BW (the kernel runs at {})", attn_kernels::simd::active().name());
    }
    let vnni = avx512 && is_x86_feature_detected!("avx512vnni");
    if avx512 && !vnni {
        eprintln!("int8_forms: dpbusd-8bit NOT MEASURED, this CPU lacks AVX512-VNNI");
    }
    const G: usize = 64;
    let mut g = c.benchmark_group("int8_forms");
    // (OC, C): 256 x 768 stays in L2; gpt2's MLP up-projection, 3072 x 768, in L3.
    for (name, rows, cols) in [("l2_256x768", 256, 768), ("l3_3072x768", 3072, 768)] {
        let w: Vec<i8> = (0..rows * cols).map(|i| ((i * 31 % 255) as i32 - 127) as i8).collect();
        let ws = vec![0.01f32; rows * cols / G];
        let xf: Vec<f32> = (0..cols).map(|i| ((i * 17 % 101) as f32 - 50.0) / 7.0).collect();
        let mut x = Fixed16::default();
        x.quantize(&xf, G);
        // The in-lane form takes 15-bit inputs; the speed does not depend on it.
        let x15: Vec<i16> = x.q.iter().map(|&v| v / 2).collect();
        let x8: Vec<u8> = (0..cols).map(|i| (i * 7 % 255) as u8).collect();
        let mut out = vec![0.0f32; rows];
        g.throughput(Throughput::Bytes((rows * cols) as u64));
        g.bench_function(format!("{name}/kernel"), |b| b.iter(|| fixed16::rows_fixed16(&mut out, 1, &w, &ws, cols, G, &x, Reading::Streamed)));
        if !avx512 {
            continue;
        }
        let row = |r: usize| (&w[r * cols..(r + 1) * cols], &ws[r * cols / G..(r + 1) * cols / G]);
        g.bench_function(format!("{name}/plain"), |b| b.iter(|| (0..rows).map(|r| unsafe { forms::plain(row(r).0, &x.q, row(r).1, &x.scales) }).sum::<f32>()));
        g.bench_function(format!("{name}/unpack"), |b| {
            b.iter(|| (0..rows).map(|r| unsafe { forms::unpack(row(r).0, &x15, row(r).1, &x.scales) }).sum::<f32>())
        });
        if vnni {
            g.bench_function(format!("{name}/dpbusd-8bit"), |b| {
                b.iter(|| (0..rows).map(|r| unsafe { forms::dpbusd(row(r).0, &x8, row(r).1, &x.scales) }).sum::<f32>())
            });
        }
    }
    g.finish();
}

#[cfg(not(target_arch = "x86_64"))]
fn bench(_: &mut Criterion) {
    eprintln!("int8_forms: NOT MEASURED, the forms compared are x86 ones");
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
