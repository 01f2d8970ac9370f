//! Mixed precision for the dense layers: bf16 operands, f32 accumulation.
//!
//! With `Precision::Bf16` every product of `matmul_forward` / `matmul_backward`
//! rounds both operands to bf16 (nearest even) and sums their products in f32;
//! weights, gradients, optimizer state, norms, softmax and the loss stay f32.
//! Flash attention's block products follow the same precision (`flash.rs`).
//! This is `torch.autocast(dtype=torch.bfloat16)` for the linear layers, set
//! process-wide like `torch.set_float32_matmul_precision`.
//!
//! Paths, chosen at run time:
//! - "amx": operands packed into bf16 tiles and multiplied by AMX (`amx.rs`).
//! - "avx512-bf16": the same packed tiles multiplied with `vdpbf16ps`
//!   (`dpbf16.rs`): the default on AMD CPUs without AMX (see `microkernel`).
//! - "f32-emulated": operands rounded to bf16 values kept in f32, then the
//!   f32 GEMM. The product of two bf16 values is exact in f32, so this computes
//!   the same sums as the tiles in another order: correct everywhere, not faster.

use std::sync::atomic::{AtomicU8, Ordering};

use rayon::prelude::*;

use crate::matmul::{Mat, SendMat};
use crate::quant::{bf16_bits, bf16_to_f32};

/// The number format of the dense layers' products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// f32 products (the default).
    F32,
    /// bf16 inputs, f32 sums (`--dtype bf16`): AMX tiles, AVX512-BF16, or
    /// a widening fallback, by what the CPU has.
    Bf16,
}

impl Precision {
    /// The name `--dtype` takes and the benchmarks report.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

static PRECISION: AtomicU8 = AtomicU8::new(0);

/// Sets the precision of every dense-layer product in this process.
pub fn set_matmul_precision(p: Precision) {
    PRECISION.store(p as u8, Ordering::Relaxed);
}

/// The precision `set_matmul_precision` last set (f32 until then).
pub fn matmul_precision() -> Precision {
    match PRECISION.load(Ordering::Relaxed) {
        0 => Precision::F32,
        _ => Precision::Bf16,
    }
}

/// The path bf16 products take on this CPU: "amx", "avx512-bf16" or
/// "f32-emulated".
pub fn bf16_path() -> &'static str {
    match microkernel() {
        #[cfg(target_arch = "x86_64")]
        Some(crate::tiles::Microkernel::Amx) => "amx",
        #[cfg(target_arch = "x86_64")]
        Some(crate::tiles::Microkernel::Avx512Bf16) => "avx512-bf16",
        _ => "f32-emulated",
    }
}

/// The tile microkernel bf16 products use: AMX where present; else
/// `vdpbf16ps` on AMD CPUs with AVX512-BF16; else none (the f32-emulated
/// path). The environment variable ATTN_BF16_PATH=amx|avx512-bf16|f32-emulated
/// asks for another path where the CPU has it.
///
/// Why the vendor decides: Intel issues `vdpbf16ps` once a cycle and FMA
/// twice, so on the Intel Xeon measured the kernel ran at 95-102 GFLOP/s
/// against 135-165 for the f32 GEMM; on the AMD EPYC measured (Zen, AVX512-BF16,
/// no AMX) it issues as often as FMA and ran at 960-976 GFLOP/s against
/// 492-512 (docs/PERFORMANCE.md). Decided once, so a process never mixes paths.
#[cfg(target_arch = "x86_64")]
fn microkernel() -> Option<crate::tiles::Microkernel> {
    use crate::tiles::Microkernel;
    static CHOICE: std::sync::OnceLock<Option<Microkernel>> = std::sync::OnceLock::new();
    *CHOICE.get_or_init(|| match std::env::var("ATTN_BF16_PATH").ok().as_deref() {
        Some("amx") if crate::amx::available() => Some(Microkernel::Amx),
        Some("avx512-bf16") if crate::dpbf16::available() => Some(Microkernel::Avx512Bf16),
        Some("f32-emulated") => None,
        _ if crate::amx::available() => Some(Microkernel::Amx),
        _ if crate::dpbf16::available() && is_amd() => Some(Microkernel::Avx512Bf16),
        _ => None,
    })
}

/// The CPU's vendor string (CPUID leaf 0) is "AuthenticAMD".
// `__cpuid` is safe from Rust 1.87 on; the workspace supports 1.80.
#[cfg(target_arch = "x86_64")]
#[allow(unused_unsafe)]
fn is_amd() -> bool {
    let id = unsafe { std::arch::x86_64::__cpuid(0) };
    // The 12 bytes come in EBX, EDX, ECX order: "Auth", "enti", "cAMD".
    [id.ebx, id.edx, id.ecx] == [u32::from_le_bytes(*b"Auth"), u32::from_le_bytes(*b"enti"), u32::from_le_bytes(*b"cAMD")]
}

#[cfg(not(target_arch = "x86_64"))]
fn microkernel() -> Option<()> {
    None
}

/// dst (m, n) = [dst +] bf16(a) (m, k) @ bf16(b) (k, n), f32 sums, on the
/// fastest path this CPU has.
///
/// Safety: as for `matmul::sgemm`.
pub(crate) unsafe fn gemm_bf16(m: usize, n: usize, k: usize, dst: *mut f32, dst_rs: isize, dst_cs: isize, accumulate: bool, a: Mat, b: Mat, threads: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(kernel) = microkernel() {
        return crate::tiles::gemm(kernel, m, n, k, dst, dst_rs, dst_cs, accumulate, a, b, threads);
    }
    gemm_bf16_emulated(m, n, k, dst, dst_rs, dst_cs, accumulate, a, b, threads)
}

/// The portable path: round each operand into a contiguous f32 copy, then the
/// f32 GEMM.
pub(crate) unsafe fn gemm_bf16_emulated(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    dst_cs: isize,
    accumulate: bool,
    a: Mat,
    b: Mat,
    threads: usize,
) {
    let round = |x: Mat, rows: usize, cols: usize| -> Vec<f32> {
        let mut out = vec![0.0f32; rows * cols];
        let x = SendMat(x);
        out.par_chunks_mut(cols.max(1)).enumerate().for_each(|(i, row)| {
            let x = x.get();
            for (j, o) in row.iter_mut().enumerate() {
                *o = bf16_to_f32(bf16_bits(*x.ptr.offset(i as isize * x.rs + j as isize * x.cs)));
            }
        });
        out
    };
    let (ra, rb) = (round(a, m, k), round(b, k, n));
    let a = Mat { ptr: ra.as_ptr(), rs: k as isize, cs: 1 };
    let b = Mat { ptr: rb.as_ptr(), rs: n as isize, cs: 1 };
    crate::matmul::sgemm_f32(m, n, k, dst, dst_rs, dst_cs, accumulate, a, b, threads);
}

/// Reference: dst (m, n) = [dst +] bf16(a) @ bf16(b) in f64, plain loops over
/// row-major slices.
pub fn gemm_bf16_naive(dst: &mut [f32], a: &[f32], b: &[f32], m: usize, n: usize, k: usize, accumulate: bool) {
    let r = |x: f32| bf16_to_f32(bf16_bits(x)) as f64;
    for i in 0..m {
        for j in 0..n {
            let s: f64 = (0..k).map(|p| r(a[i * k + p]) * r(b[p * n + j])).sum();
            let d = &mut dst[i * n + j];
            *d = if accumulate { (*d as f64 + s) as f32 } else { s as f32 };
        }
    }
}

/// Every bf16 GEMM path this CPU has, by name, over row-major slices (for the
/// tests, which compare each with the naive twin).
pub fn gemm_bf16_paths(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<(&'static str, Vec<f32>)> {
    assert!(a.len() >= m * k && b.len() >= k * n);
    let am = Mat { ptr: a.as_ptr(), rs: k as isize, cs: 1 };
    let bm = Mat { ptr: b.as_ptr(), rs: n as isize, cs: 1 };
    let threads = rayon::current_num_threads();
    let mut out = Vec::new();
    let mut c = vec![0.0f32; m * n];
    unsafe { gemm_bf16_emulated(m, n, k, c.as_mut_ptr(), n as isize, 1, false, am, bm, threads) };
    out.push(("f32-emulated", c));
    #[cfg(target_arch = "x86_64")]
    {
        use crate::tiles::Microkernel;
        for (name, kernel, runs) in [("amx", Microkernel::Amx, crate::amx::available()), ("avx512-bf16", Microkernel::Avx512Bf16, crate::dpbf16::available())] {
            if runs {
                let mut c = vec![0.0f32; m * n];
                unsafe { crate::tiles::gemm(kernel, m, n, k, c.as_mut_ptr(), n as isize, 1, false, am, bm, threads) };
                out.push((name, c));
            }
        }
    }
    out
}

/// u16 elements in one packed tile: 16 rows of 32 bf16 (1 KiB).
#[cfg(target_arch = "x86_64")]
pub(crate) const TILE: usize = 16 * 32;
