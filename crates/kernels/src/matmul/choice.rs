//! Which f32 GEMM the dense layers run: the `gemm` crate, or one of attn's
//! own kernels (`sgemm.rs`) where asked for and the CPU has it.

/// The f32 GEMM that runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum F32Gemm {
    /// attn's own kernel (`sgemm.rs`), where the loop kernels run at AVX-512.
    Avx512,
    /// The `gemm` crate: the default, and the only one for column-major outputs.
    Crate,
    /// attn's own kernel at AVX2 + FMA (`sgemm/avx2.rs`), where the loop
    /// kernels run at AVX2 or above.
    Avx2,
}

impl F32Gemm {
    /// The name `ATTN_F32_GEMM` takes and the benchmarks report as `"f32_gemm"`.
    pub fn name(self) -> &'static str {
        match self {
            F32Gemm::Avx512 => "avx512",
            F32Gemm::Crate => "gemm-crate",
            F32Gemm::Avx2 => "avx2",
        }
    }
}

static F32_GEMM: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(u8::MAX);

/// The f32 GEMM products take: the `gemm` crate unless `set_f32_gemm` or
/// ATTN_F32_GEMM=avx512|avx2 (read once) asked for one of attn's kernels and
/// the loop kernels run at that level or above (`simd::active`).
///
/// Why the crate stays the default: on the AVX-512 AMD EPYC measured, both
/// run the training shapes at 230-260 GFLOP/s a core, the peak, and whole
/// `baby` steps took the same time (docs/PERFORMANCE.md); attn's kernel
/// was written for the Intel Xeons, where the crate trailed MKL by 10-50%
/// on those shapes, and is to be measured there (`attn bench gemm
/// --shapes`) before it becomes anyone's default. On the AVX2-only AMD
/// EPYC measured, the AVX2 kernel and the crate tied on the same shapes
/// and on whole steps within that machine's swings.
pub fn f32_gemm() -> F32Gemm {
    use std::sync::atomic::Ordering;
    let want = match F32_GEMM.load(Ordering::Relaxed) {
        0 => F32Gemm::Avx512,
        1 => F32Gemm::Crate,
        2 => F32Gemm::Avx2,
        _ => {
            let w = match std::env::var("ATTN_F32_GEMM").as_deref() {
                Ok("avx512") => F32Gemm::Avx512,
                Ok("avx2") => F32Gemm::Avx2,
                _ => F32Gemm::Crate,
            };
            F32_GEMM.store(w as u8, Ordering::Relaxed);
            w
        }
    };
    let level = crate::simd::active();
    match want {
        F32Gemm::Avx512 if level == crate::simd::Level::Avx512 && cfg!(target_arch = "x86_64") => F32Gemm::Avx512,
        F32Gemm::Avx2 if level >= crate::simd::Level::Avx2 && cfg!(target_arch = "x86_64") => F32Gemm::Avx2,
        _ => F32Gemm::Crate,
    }
}

/// Asks for an f32 GEMM for this process (the tests and benchmarks compare
/// the two); `Avx512` still falls back to the crate where it cannot run.
pub fn set_f32_gemm(g: F32Gemm) {
    F32_GEMM.store(g as u8, std::sync::atomic::Ordering::Relaxed);
}
