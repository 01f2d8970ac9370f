//! Mixed precision for the dense layers: bf16 operands, f32 accumulation.
//!
//! With `Precision::Bf16` every product of `matmul_forward` / `matmul_backward`
//! rounds both operands to bf16 (nearest even) and sums their products in f32;
//! weights, gradients, optimizer state, norms, softmax and the loss stay f32.
//! This is `torch.autocast(dtype=torch.bfloat16)` for the linear layers, set
//! process-wide like `torch.set_float32_matmul_precision`.
//!
//! Paths, chosen at run time:
//! - "amx": operands packed into bf16 tiles and multiplied by AMX (`amx.rs`).
//! - "f32-emulated": operands rounded to bf16 values kept in f32, then the
//!   f32 GEMM. The product of two bf16 values is exact in f32, so this computes
//!   the same sums as the tiles in another order: correct everywhere, not faster.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU8, Ordering};

use multiversion::multiversion;
use rayon::prelude::*;

use crate::matmul::{Mat, SendMat};
use crate::quant::{bf16_bits, bf16_to_f32};

/// The number format of the dense layers' products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    F32,
    Bf16,
}

impl Precision {
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

pub fn matmul_precision() -> Precision {
    match PRECISION.load(Ordering::Relaxed) {
        0 => Precision::F32,
        _ => Precision::Bf16,
    }
}

/// The path bf16 products take on this CPU: "amx" or "f32-emulated".
pub fn bf16_path() -> &'static str {
    if amx_available() {
        "amx"
    } else {
        "f32-emulated"
    }
}

fn amx_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::amx::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// dst (m, n) = [dst +] bf16(a) (m, k) @ bf16(b) (k, n), f32 sums, on the
/// fastest path this CPU has.
///
/// Safety: as for `matmul::sgemm`.
pub(crate) unsafe fn gemm_bf16(m: usize, n: usize, k: usize, dst: *mut f32, dst_rs: isize, dst_cs: isize, accumulate: bool, a: Mat, b: Mat, threads: usize) {
    #[cfg(target_arch = "x86_64")]
    if crate::amx::available() {
        return amx_gemm(m, n, k, dst, dst_rs, dst_cs, accumulate, a, b, threads);
    }
    gemm_bf16_emulated(m, n, k, dst, dst_rs, dst_cs, accumulate, a, b, threads)
}

/// The portable path: round each operand into a contiguous f32 copy, then the
/// f32 GEMM.
pub(crate) unsafe fn gemm_bf16_emulated(m: usize, n: usize, k: usize, dst: *mut f32, dst_rs: isize, dst_cs: isize, accumulate: bool, a: Mat, b: Mat, threads: usize) {
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
    if crate::amx::available() {
        let mut c = vec![0.0f32; m * n];
        unsafe { amx_gemm(m, n, k, c.as_mut_ptr(), n as isize, 1, false, am, bm, threads) };
        out.push(("amx", c));
    }
    out
}

/// u16 elements in one packed tile: 16 rows of 32 bf16 (1 KiB).
pub(crate) const TILE: usize = 16 * 32;

thread_local! {
    /// Packed A and B, kept between calls so that each GEMM does not page in
    /// fresh memory.
    static PACKED: RefCell<(Vec<u16>, Vec<u16>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Column pairs (32 columns) per inner block: the B tiles of one block along
/// the whole K stay in L2 while every row pair of the task passes over them.
#[cfg(target_arch = "x86_64")]
const N_PAIRS_PER_BLOCK: usize = 8;

#[cfg(target_arch = "x86_64")]
unsafe fn amx_gemm(m: usize, n: usize, k: usize, dst: *mut f32, dst_rs: isize, dst_cs: isize, accumulate: bool, a: Mat, b: Mat, threads: usize) {
    use crate::amx::kernel_32x32;
    if m == 0 || n == 0 {
        return;
    }
    // Tiles per dimension; M and N are padded to pairs of 16, K to 32.
    let (mp, np, kt) = (m.div_ceil(32), n.div_ceil(32), k.div_ceil(32).max(1));
    PACKED.with(|cell| {
        let mut bufs = cell.borrow_mut();
        let (pa, pb) = &mut *bufs;
        pa.resize(2 * mp * kt * TILE, 0);
        pb.resize(2 * np * kt * TILE, 0);
        pack_a(pa, a, m, k, kt);
        pack_b(pb, b, k, n, kt);
        let (pa, pb) = (SendU16(pa.as_ptr()), SendU16(pb.as_ptr()));
        let dst = crate::SendPtr(dst);
        let parts = if m * n * k >= 48 * 48 * 48 { threads.min(mp.max(np)).max(1) } else { 1 };
        let split_rows = mp >= np;
        let len = if split_rows { mp } else { np };
        (0..parts).into_par_iter().for_each(|part| {
            let (lo, hi) = (part * len / parts, (part + 1) * len / parts);
            let (rows, cols) = if split_rows { (lo..hi, 0..np) } else { (0..mp, lo..hi) };
            let (pa, pb, dst) = (pa.get(), pb.get(), dst.get());
            crate::amx::configure();
            let mut block = Block([0.0; 1024]);
            let mut nb = cols.start;
            while nb < cols.end {
                let ne = (nb + N_PAIRS_PER_BLOCK).min(cols.end);
                for i in rows.clone() {
                    let a0 = pa.add(2 * i * kt * TILE);
                    for j in nb..ne {
                        let b0 = pb.add(2 * j * kt * TILE);
                        kernel_32x32(a0, a0.add(kt * TILE), b0, b0.add(kt * TILE), kt, block.0.as_mut_ptr());
                        store_block(&block.0, dst, dst_rs, dst_cs, accumulate, 32 * i, (m - 32 * i).min(32), 32 * j, (n - 32 * j).min(32));
                    }
                }
                nb = ne;
            }
            crate::amx::release();
        });
    });
}

#[cfg(target_arch = "x86_64")]
#[repr(C, align(64))]
struct Block([f32; 1024]);

#[derive(Clone, Copy)]
struct SendU16(*const u16);
unsafe impl Send for SendU16 {}
unsafe impl Sync for SendU16 {}
impl SendU16 {
    #[inline(always)]
    fn get(self) -> *const u16 {
        self.0
    }
}

/// dst[r0 + i, c0 + j] (+)= block[i, j] for i < rows, j < cols.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn store_block(block: &[f32; 1024], dst: *mut f32, rs: isize, cs: isize, accumulate: bool, r0: usize, rows: usize, c0: usize, cols: usize) {
    for i in 0..rows {
        let src = &block[i * 32..i * 32 + cols];
        let base = dst.offset((r0 + i) as isize * rs + c0 as isize * cs);
        if cs == 1 {
            let d = std::slice::from_raw_parts_mut(base, cols);
            if accumulate {
                d.iter_mut().zip(src).for_each(|(d, s)| *d += s);
            } else {
                d.copy_from_slice(src);
            }
        } else {
            for (j, &s) in src.iter().enumerate() {
                let d = base.offset(j as isize * cs);
                *d = if accumulate { *d + s } else { s };
            }
        }
    }
}

/// A (m, k) into bf16 tiles, [row tile][k tile][16 rows][32], zero-padded to
/// whole tiles (rows to a multiple of 32).
fn pack_a(dst: &mut [u16], a: Mat, m: usize, k: usize, kt: usize) {
    let a = SendMat(a);
    let work = dst.len();
    let pack = |(ti, tiles): (usize, &mut [u16])| {
        let a = a.get();
        for (t, tile) in tiles.chunks_exact_mut(TILE).enumerate() {
            for (r, row) in tile.chunks_exact_mut(32).enumerate() {
                let i = ti * 16 + r;
                let k0 = t * 32;
                let len = if i < m { k.saturating_sub(k0).min(32) } else { 0 };
                if a.cs == 1 && len > 0 {
                    let src = unsafe { std::slice::from_raw_parts(a.ptr.offset(i as isize * a.rs + k0 as isize), len) };
                    round_into(&mut row[..len], src);
                } else {
                    for (kk, o) in row[..len].iter_mut().enumerate() {
                        *o = bf16_bits(unsafe { *a.ptr.offset(i as isize * a.rs + (k0 + kk) as isize * a.cs) });
                    }
                }
                row[len..].fill(0);
            }
        }
    };
    let chunk = kt * TILE;
    if work >= 1 << 16 {
        dst.par_chunks_mut(chunk).enumerate().for_each(pack);
    } else {
        dst.chunks_mut(chunk).enumerate().for_each(pack);
    }
}

/// B (k, n) into bf16 tiles, [column tile][k tile][16 pairs][16 columns][2]:
/// row p of a tile holds (b[2p][j], b[2p+1][j]), zero-padded.
fn pack_b(dst: &mut [u16], b: Mat, k: usize, n: usize, kt: usize) {
    let b = SendMat(b);
    let work = dst.len();
    let pack = |(tj, tiles): (usize, &mut [u16])| {
        let b = b.get();
        let j0 = tj * 16;
        for (t, tile) in tiles.chunks_exact_mut(TILE).enumerate() {
            let k0 = t * 32;
            let full = k0 + 32 <= k && j0 + 16 <= n;
            let at = |kk: usize, j: usize| unsafe { *b.ptr.offset((k0 + kk) as isize * b.rs + (j0 + j) as isize * b.cs) };
            if full && b.cs == 1 {
                // Rows of B are contiguous: interleave two rows.
                for (p, row) in tile.chunks_exact_mut(32).enumerate() {
                    let r0 = unsafe { std::slice::from_raw_parts(b.ptr.offset((k0 + 2 * p) as isize * b.rs + j0 as isize), 16) };
                    let r1 = unsafe { std::slice::from_raw_parts(b.ptr.offset((k0 + 2 * p + 1) as isize * b.rs + j0 as isize), 16) };
                    interleave_into(row, r0, r1);
                }
            } else if full && b.rs == 1 {
                // Columns of B are contiguous (a (OC, C) weight read as (C, OC)):
                // each column's 32 values are the j-th pair of every row.
                let mut col = [0u16; 32];
                for j in 0..16 {
                    let src = unsafe { std::slice::from_raw_parts(b.ptr.offset(k0 as isize + (j0 + j) as isize * b.cs), 32) };
                    round_into(&mut col, src);
                    for p in 0..16 {
                        tile[p * 32 + 2 * j] = col[2 * p];
                        tile[p * 32 + 2 * j + 1] = col[2 * p + 1];
                    }
                }
            } else {
                for p in 0..16 {
                    for j in 0..16 {
                        for h in 0..2 {
                            let kk = 2 * p + h;
                            let inside = k0 + kk < k && j0 + j < n;
                            tile[p * 32 + 2 * j + h] = if inside { bf16_bits(at(kk, j)) } else { 0 };
                        }
                    }
                }
            }
        }
    };
    let chunk = kt * TILE;
    if work >= 1 << 16 {
        dst.par_chunks_mut(chunk).enumerate().for_each(pack);
    } else {
        dst.chunks_mut(chunk).enumerate().for_each(pack);
    }
}

#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn round_into(dst: &mut [u16], src: &[f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = bf16_bits(s);
    }
}

#[multiversion(targets("x86_64+avx512f+avx512bw+avx512vl+avx2+fma", "x86_64+avx2+fma"))]
fn interleave_into(dst: &mut [u16], r0: &[f32], r1: &[f32]) {
    for j in 0..16 {
        dst[2 * j] = bf16_bits(r0[j]);
        dst[2 * j + 1] = bf16_bits(r1[j]);
    }
}
