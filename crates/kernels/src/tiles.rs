//! bf16 GEMM over packed tiles, f32 sums: packing, blocking and threading
//! around a 32x32 microkernel (AMX tiles, or AVX512-BF16 dot products).
//!
//! Operands are rounded to bf16 and packed as AMX wants them, which suits
//! `vdpbf16ps` as well: A in 1 KiB tiles of 16 rows x 32 of K, B in tiles of
//! 16 rows of column pairs ("VNNI": row p holds (b[2p][j], b[2p+1][j]) for 16
//! columns j).

use std::cell::RefCell;

use crate::simd::{dispatch, prefetch};
use rayon::prelude::*;

use crate::matmul::{Mat, SendMat};
use crate::mixed::TILE;
use crate::quant::bf16_bits;
use crate::scratch::Scratch;
use crate::SendPtr;

thread_local! {
    /// Packed operands, kept between calls so that a GEMM does not page in
    /// fresh memory: all of A on the calling thread, one strip of B per worker.
    /// A thread that steals another GEMM's task while it waits finds its
    /// buffer in use and packs into a fresh one instead.
    static PACKED: RefCell<Scratch> = const { RefCell::new(Scratch::new()) };
}

/// The 32x32 microkernels that run over the packed tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Microkernel {
    /// AMX tiles (`amx.rs`).
    Amx,
    /// AVX512-BF16 `vdpbf16ps` (`dpbf16.rs`).
    Avx512Bf16,
}

/// dst (m, n) = [dst +] bf16(a) (m, k) @ bf16(b) (k, n), f32 sums.
///
/// For each block of 2,048 of K, that block of A is packed into tiles
/// (parallel). The columns are then split across threads; each thread packs
/// a few strips of 32 columns of B along the block (2 KiB per 32 of K each,
/// up to 1 MiB) and runs every row pair over them while they are hot, so B
/// is read from memory once and never written back packed whole (the output
/// head's (V, C) weight would be 77 MB packed). A is the operand read again,
/// so the taller of the two is made B (the product is run transposed).
///
/// Safety: `kernel` runs on this CPU; as for `matmul::sgemm`.
pub(crate) unsafe fn gemm(
    kernel: Microkernel,
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
    if m == 0 || n == 0 {
        return;
    }
    if m > 2 * n {
        // A is packed (a K block at a time) and read again for every group of
        // B's strips, so it should be the smaller operand: dst^T (n, m) = B^T
        // A^T instead. The output head's weight gradient (V, C) = dlogits^T X
        // ran at 345 GFLOP/s the other way round, 880 this way (docs/PERFORMANCE.md).
        let t = |x: Mat| Mat { rs: x.cs, cs: x.rs, ..x };
        return gemm(kernel, n, m, k, dst, dst_cs, dst_rs, accumulate, t(b), t(a), threads);
    }
    // Tile pairs per dimension; M and N are padded to 32, K to 32.
    let (mp, np, kt) = (m.div_ceil(32), n.div_ceil(32), k.div_ceil(32).max(1));
    let parts = if m * n * k >= 48 * 48 * 48 { threads.min(np).max(1) } else { 1 };
    crate::scratch::with(&PACKED, |buf| {
        // K in blocks, so that packed operands stay small whatever K is (the
        // output head's backward has K = V): each block of A is packed, then
        // every strip of B runs over it while it is in the last-level cache;
        // later blocks add.
        for kb in (0..kt).step_by(K_TILES) {
            let kn = K_TILES.min(kt - kb);
            let k_rem = (k - 32 * kb).min(32 * kn);
            let at_k = |x: Mat, stride: isize| Mat { ptr: x.ptr.offset((32 * kb) as isize * stride), ..x };
            let (ak, bk) = (at_k(a, a.cs), at_k(b, b.rs));
            let pa = buf.get::<u16>(2 * mp * kn * TILE);
            pack_a(pa, ak, m, k_rem, kn);
            let (pa, bk, dst) = (SendU16(pa.as_ptr()), SendMat(bk), SendPtr(dst));
            let add = accumulate || kb > 0;
            let run = |part: usize| {
                let (pa, bk, dst) = (pa.get(), bk.get(), dst.get());
                crate::scratch::with(&STRIP, |strip| {
                    if kernel == Microkernel::Amx {
                        crate::amx::configure();
                    }
                    // The kernel's block, and its transpose for a transposed dst,
                    // once per task rather than per block.
                    let (mut block, mut spare) = (Block([0.0; 1024]), Block([0.0; 1024]));
                    let (lo, hi) = (part * np / parts, (part + 1) * np / parts);
                    // Strips of B packed together: up to 8 (256 columns, 1 KiB
                    // of each row), while they fit in half of a 2 MiB L2.
                    let strips = (STRIP_BYTES / (2 * kn * TILE * 2)).clamp(1, 8);
                    let strip = strip.get(strips * 2 * kn * TILE);
                    for jb in (lo..hi).step_by(strips) {
                        let count = strips.min(hi - jb);
                        pack_b_strips(strip, bk, k_rem, n, kn, jb, count);
                        for j in jb..jb + count {
                            let b0 = strip.as_ptr().add((j - jb) * 2 * kn * TILE);
                            let b1 = b0.add(kn * TILE);
                            for i in 0..mp {
                                let a0 = pa.add(2 * i * kn * TILE);
                                let a1 = a0.add(kn * TILE);
                                let (rows, cols) = ((m - 32 * i).min(32), (n - 32 * j).min(32));
                                if rows == 32 && cols == 32 && dst_cs == 1 {
                                    // A whole block of row-major dst: the tiles read and write it.
                                    let c = dst.offset(32 * (i as isize * dst_rs + j as isize));
                                    kernel_32x32(kernel, a0, a1, b0, b1, kn, c, 4 * dst_rs as usize, add);
                                } else {
                                    kernel_32x32(kernel, a0, a1, b0, b1, kn, block.0.as_mut_ptr(), 128, false);
                                    store_block(&block.0, &mut spare.0, dst, dst_rs, dst_cs, add, 32 * i, rows, 32 * j, cols);
                                }
                            }
                        }
                    }
                    if kernel == Microkernel::Amx {
                        crate::amx::release();
                    }
                });
            };
            if parts == 1 {
                run(0);
            } else {
                (0..parts).into_par_iter().for_each(run);
            }
        }
    });
}

#[inline(always)]
unsafe fn kernel_32x32(
    kernel: Microkernel,
    a0: *const u16,
    a1: *const u16,
    b0: *const u16,
    b1: *const u16,
    kt: usize,
    c: *mut f32,
    c_stride: usize,
    accumulate: bool,
) {
    match kernel {
        Microkernel::Amx => crate::amx::kernel_32x32(a0, a1, b0, b1, kt, c, c_stride, accumulate),
        Microkernel::Avx512Bf16 => crate::dpbf16::kernel_32x32(a0, a1, b0, b1, kt, c, c_stride, accumulate),
    }
}

thread_local! {
    /// One worker's strips of packed B (`crate::scratch`: tile rows on
    /// cache-line boundaries).
    static STRIP: RefCell<Scratch> = const { RefCell::new(Scratch::new()) };
}

/// Bytes of packed B a thread works over at once.
const STRIP_BYTES: usize = 1 << 20;

/// K tiles (of 32) per block: 2048 of K.
const K_TILES: usize = 64;

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

/// dst[r0 + i, c0 + j] (+)= block[i, j] for i < rows, j < cols; `spare`
/// holds the transposed block when dst is transposed.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn store_block(
    block: &[f32; 1024],
    spare: &mut [f32; 1024],
    dst: *mut f32,
    rs: isize,
    cs: isize,
    accumulate: bool,
    r0: usize,
    rows: usize,
    c0: usize,
    cols: usize,
) {
    if rs == 1 && cs != 1 {
        // A transposed dst (the swapped product in `gemm`): the block's columns
        // are memory rows. The block is transposed in L1 first, so that each
        // memory row is added from a contiguous run: read column by column,
        // the adds ran one float at a time (7% of a gpt2-124m bf16 step,
        // in the output head's and the MLP's weight gradients).
        crate::transpose::transpose(spare.as_mut_ptr(), 32, block.as_ptr(), 32, rows, cols);
        for j in 0..cols {
            let d = std::slice::from_raw_parts_mut(dst.offset((c0 + j) as isize * cs + r0 as isize), rows);
            let s = &spare[j * 32..j * 32 + rows];
            if accumulate {
                d.iter_mut().zip(s).for_each(|(d, s)| *d += s);
            } else {
                d.copy_from_slice(s);
            }
        }
        return;
    }
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
    let transposed = a.rs == 1 && a.cs != 1;
    let a = SendMat(a);
    let chunk = kt * TILE;
    if transposed {
        // A transposed operand (dW = X^T dY): A's columns are memory rows, so
        // row tiles go in groups that read each memory row 256 floats at a
        // time. One tile at a time read 64 bytes from each of K rows: a
        // TLB and cache miss per 16 values, 8% of a bf16 training step.
        let tiles = dst.len() / chunk;
        let group = (tiles / (4 * rayon::current_num_threads())).clamp(1, 16);
        let run = |(g, tiles): (usize, &mut [u16])| pack_a_tiles_t(tiles, a.get(), m, k, kt, g * group * 16);
        if dst.len() >= 1 << 16 {
            dst.par_chunks_mut(group * chunk).enumerate().for_each(run);
        } else {
            dst.chunks_mut(group * chunk).enumerate().for_each(run);
        }
        return;
    }
    if dst.len() >= 1 << 16 {
        dst.par_chunks_mut(chunk).enumerate().for_each(|(ti, tiles)| pack_a_tiles(tiles, a.get(), m, k, ti * 16));
    } else {
        dst.chunks_mut(chunk).enumerate().for_each(|(ti, tiles)| pack_a_tiles(tiles, a.get(), m, k, ti * 16));
    }
}

dispatch! {
    /// Rows i0..i0 + 16 of A along the whole K.
    [Avx512]
    fn pack_a_tiles(tiles: &mut [u16], a: Mat, m: usize, k: usize, i0: usize) {
        for (t, tile) in tiles.chunks_exact_mut(TILE).enumerate() {
            let k0 = t * 32;
            let at = |i: usize, kk: usize| unsafe { *a.ptr.offset((i0 + i) as isize * a.rs + (k0 + kk) as isize * a.cs) };
            if i0 + 16 <= m && k0 + 32 <= k && a.cs == 1 {
                // Rows contiguous.
                for (r, row) in tile.chunks_exact_mut(32).enumerate() {
                    let src = unsafe { &*(a.ptr.offset((i0 + r) as isize * a.rs + k0 as isize) as *const [f32; 32]) };
                    round_32(row.try_into().unwrap(), src);
                }
            } else {
                for r in 0..16 {
                    for kk in 0..32 {
                        tile[r * 32 + kk] = if i0 + r < m && k0 + kk < k { bf16_bits(at(r, kk)) } else { 0 };
                    }
                }
            }
        }
    }
}

dispatch! {
    /// Row tiles i0 / 16.. of a column-contiguous A (rs == 1), `tiles.len() /
    /// (kt * TILE)` of them, along the whole K: for each K tile, its 32 memory
    /// rows are read across the group and rounded into `rows`, then each tile is
    /// written as the transpose of its 16 columns of `rows`.
    [Avx512]
    fn pack_a_tiles_t(tiles: &mut [u16], a: Mat, m: usize, k: usize, kt: usize, i0: usize) {
        let group = tiles.len() / (kt * TILE);
        let width = 16 * group; // rows of A in this group
        let mut rows = [[0u16; 256]; 32]; // [kk][i - i0]
        for t in 0..kt {
            let k0 = 32 * t;
            for (kk, row) in rows.iter_mut().enumerate() {
                let valid = if k0 + kk < k { width.min(m.saturating_sub(i0)) } else { 0 };
                // Rows past K (valid = 0) may lie past A: no in-bounds offset to them.
                let src = unsafe { std::slice::from_raw_parts(a.ptr.wrapping_offset(i0 as isize + (k0 + kk) as isize * a.cs), valid) };
                if k0 + kk + AHEAD < k {
                    prefetch(src.as_ptr().wrapping_offset(AHEAD as isize * a.cs), valid);
                }
                for (d, &x) in row[..valid].iter_mut().zip(src) {
                    *d = bf16_bits(x);
                }
                row[valid..width].fill(0);
            }
            for g in 0..group {
                let tile: &mut [u16; TILE] = (&mut tiles[(g * kt + t) * TILE..][..TILE]).try_into().unwrap();
                for r in 0..16 {
                    for kk in 0..32 {
                        tile[r * 32 + kk] = rows[kk][16 * g + r];
                    }
                }
            }
        }
    }
}

dispatch! {
    /// Columns 32 * j0.. of B (k, n), `strips` strips of 32, each as two column
    /// tiles along K: [strip][column tile][k tile][16 pairs][16 columns][2], so
    /// that row p of a tile holds (b[2p][j], b[2p+1][j]); zero-padded.
    ///
    /// The loops follow B's memory: along rows when rows are contiguous, along
    /// columns when columns are (a (OC, C) weight read as (C, OC)). A strip read
    /// row by row alone would touch a new page for every row of B.
    [Avx512]
    fn pack_b_strips(dst: &mut [u16], b: Mat, k: usize, n: usize, kt: usize, j0: usize, strips: usize) {
        // View pairs as u32: low half the even row, high half the odd row.
        let dst: &mut [u32] = unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr() as *mut u32, dst.len() / 2) };
        let tile = TILE / 2;
        // The u32 index of pair row p, column jj (0..32) of k tile t in strip s.
        let at_pair = |s: usize, t: usize, p: usize, jj: usize| s * 2 * kt * tile + (jj / 16) * kt * tile + t * tile + p * 16 + jj % 16;
        let full_k = k / 32;
        let full_n = ((n.saturating_sub(32 * j0)) / 32).min(strips);
        if b.cs == 1 {
            for t in 0..full_k {
                for p in 0..16 {
                    let (r0, r1) = unsafe { (b.ptr.offset((32 * t + 2 * p) as isize * b.rs), b.ptr.offset((32 * t + 2 * p + 1) as isize * b.rs)) };
                    if 32 * t + 2 * p + AHEAD + 1 < k {
                        let ahead = AHEAD as isize * b.rs;
                        prefetch(r0.wrapping_offset(ahead).wrapping_add(32 * j0), 32 * full_n);
                        prefetch(r1.wrapping_offset(ahead).wrapping_add(32 * j0), 32 * full_n);
                    }
                    for s in 0..full_n {
                        let c0 = 32 * (j0 + s);
                        let base = at_pair(s, t, p, 0);
                        for (h, off) in [(0, 0), (16, kt * tile)] {
                            let (r0, r1) = unsafe { (&*(r0.add(c0 + h) as *const [f32; 16]), &*(r1.add(c0 + h) as *const [f32; 16])) };
                            pairs_16((&mut dst[base + off..base + off + 16]).try_into().unwrap(), r0, r1);
                        }
                    }
                }
            }
        } else if b.rs == 1 {
            for s in 0..full_n {
                for half in 0..2 {
                    let cols = unsafe { b.ptr.offset((32 * (j0 + s) + 16 * half) as isize * b.cs) };
                    for t in 0..full_k {
                        // 16 columns' 32 values of this K tile, as 16 pairs each,
                        // then written transposed: row p of the tile takes pair p
                        // of every column.
                        let mut pairs = [[0u32; 16]; 16];
                        for (jj, row) in pairs.iter_mut().enumerate() {
                            let v = unsafe { &*(cols.offset(jj as isize * b.cs + 32 * t as isize) as *const [f32; 32]) };
                            for p in 0..16 {
                                row[p] = pair(v[2 * p], v[2 * p + 1]);
                            }
                        }
                        let base = at_pair(s, t, 0, 16 * half);
                        let out: &mut [u32; 256] = (&mut dst[base..base + 256]).try_into().unwrap();
                        // out[p][jj] = pairs[jj][p], the bits moved as f32 through
                        // register shuffles (the loop compiled to gathers).
                        // SAFETY: two distinct 16 x 16 arrays of 4-byte values.
                        unsafe { crate::transpose::transpose(out.as_mut_ptr() as *mut f32, 16, pairs.as_ptr() as *const f32, 16, 16, 16) };
                    }
                }
            }
        }
        // Whatever the fast loops left: partial tiles, and any other strides.
        let fast = |s: usize, t: usize| (b.cs == 1 || b.rs == 1) && s < full_n && t < full_k;
        let bf = |kk: usize, j: usize| if kk < k && j < n { bf16_bits(unsafe { *b.ptr.offset(kk as isize * b.rs + j as isize * b.cs) }) } else { 0 };
        for s in 0..strips {
            for t in (0..kt).filter(|&t| !fast(s, t)) {
                for p in 0..16 {
                    for jj in 0..32 {
                        let (kk, j) = (32 * t + 2 * p, 32 * (j0 + s) + jj);
                        dst[at_pair(s, t, p, jj)] = bf(kk, j) as u32 | (bf(kk + 1, j) as u32) << 16;
                    }
                }
            }
        }
    }
}

/// Rows ahead that the packing loops prefetch: each row of a strided operand
/// is a short stream of its own (1 KiB or less), over before the hardware
/// prefetchers pick it up, and the loads stalled on it.
const AHEAD: usize = 8;

#[inline(always)]
fn round_32(dst: &mut [u16; 32], src: &[f32; 32]) {
    for j in 0..32 {
        dst[j] = bf16_bits(src[j]);
    }
}

/// out[j] = pair(r0[j], r1[j]), written so that it vectorizes.
#[inline(always)]
fn pairs_16(out: &mut [u32; 16], r0: &[f32; 16], r1: &[f32; 16]) {
    for j in 0..16 {
        out[j] = pair(r0[j], r1[j]);
    }
}

/// The VNNI pair (lo, hi) as one u32: bf16(lo) in the low half.
#[inline(always)]
fn pair(lo: f32, hi: f32) -> u32 {
    bf16_bits(lo) as u32 | (bf16_bits(hi) as u32) << 16
}
