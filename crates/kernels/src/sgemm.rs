//! f32 GEMM kernels of attn's own, beside the `gemm` crate: B packed in
//! panels of NR columns, A read in place, an MR x NR microkernel of FMAs.
//! Two instances: AVX-512 (12 x 32, 24 accumulator registers) and AVX2 +
//! FMA (6 x 16, 12 accumulators, `avx2.rs`).
//!
//! Why beside `gemm`: on the Intel Xeons measured, the crate's forward
//! products of training trailed MKL's sgemm by 10-50% (most on `baby`'s
//! 128-wide ones and transformer-base's 512^3, docs/PERFORMANCE.md), and
//! small K leaves little work to pay for packing both operands. Here A is
//! read in place (its MR rows x KC block is read by broadcasts and stays in
//! L1 across every panel of B; the AVX2 instance copies an A stored column
//! by column into [KC][MR] blocks first), and B is packed once per thread
//! in blocks that fit in L2. Which one runs is `matmul::f32_gemm`'s choice.
//!
//! Each output is summed in one fixed order, K ascending in blocks of
//! `KC`, whatever the thread count or where the row falls in the matrix.

use std::arch::x86_64::*;
use std::cell::RefCell;

use crate::matmul::Mat;
use crate::scratch::Scratch;

mod avx2;
pub(crate) use avx2::Avx2;

/// One instance of the kernel: its tile, its blocking and its two
/// ISA-specific parts. The driver (`gemm`) is shared.
pub(crate) trait Kernel {
    /// Rows per microkernel call.
    const MR: usize;
    /// Columns per packed panel of B.
    const NR: usize;
    /// K per block: an MR-row block of A stays in L1 across the panels.
    const KC: usize;
    /// Packed B per block: about half of L2.
    const PACK_BYTES: usize;
    /// Whether an A stored column by column (a transposed operand, the
    /// weight gradient's) is copied into [kc][MR] blocks first, so that a
    /// step of K reads one run of MR floats instead of a cache line per row.
    const PACK_A: bool;
    /// c (rows, cols) [+]= a (rows, kc) @ b (kc, NR), b packed as [kc][NR]
    /// (zeros past `cols`), for 1 <= rows <= MR; columns past `cols` are
    /// neither read nor written.
    unsafe fn panel(rows: usize, kc: usize, ap: *const f32, a: Mat, bp: *const f32, c: *mut f32, c_rs: isize, cols: usize, add: bool);
    /// b[p0.., j0..] (kc, cols) into panels [cols / NR][kc][NR], the last
    /// one zero-padded.
    unsafe fn pack_b(dst: *mut f32, b: Mat, p0: usize, kc: usize, j0: usize, cols: usize);
}

/// The AVX-512 instance.
pub(crate) struct Avx512;

impl Kernel for Avx512 {
    const MR: usize = MR;
    const NR: usize = NR;
    const KC: usize = KC;
    const PACK_BYTES: usize = PACK_BYTES;
    const PACK_A: bool = false;
    unsafe fn panel(rows: usize, kc: usize, ap: *const f32, a: Mat, bp: *const f32, c: *mut f32, c_rs: isize, cols: usize, add: bool) {
        panel(rows, kc, ap, a, bp, c, c_rs, cols, add)
    }
    unsafe fn pack_b(dst: *mut f32, b: Mat, p0: usize, kc: usize, j0: usize, cols: usize) {
        pack_b(dst, b, p0, kc, j0, cols)
    }
}

/// Columns per packed panel of B: two vectors of 16.
const NR: usize = 32;
/// Rows per microkernel call: 12 x 2 accumulators, 2 vectors of B, and a
/// broadcast register leave 5 of the 32 vector registers free.
const MR: usize = 12;
/// K per block: a 12-row block of A (18 KiB) stays in L1 across the panels.
const KC: usize = 384;
/// Packed B per block: half of a 1-2 MiB L2.
const PACK_BYTES: usize = 512 << 10;

thread_local! {
    /// The packed block of B, kept between calls (no fresh pages per GEMM).
    static PACKED: RefCell<Scratch> = const { RefCell::new(Scratch::new()) };
    /// The packed block of A (`Kernel::PACK_A`).
    static PACKED_A: RefCell<Scratch> = const { RefCell::new(Scratch::new()) };
}

/// dst (m, n) = [dst +] a (m, k) @ b (k, n) on the calling thread, for a
/// row-major dst (columns contiguous), with kernel K.
///
/// Safety: the CPU has K's instructions (`matmul::f32_gemm` checks); every
/// operand covers its strided extent; dst does not alias a or b.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm<K: Kernel>(m: usize, n: usize, k: usize, dst: *mut f32, dst_rs: isize, accumulate: bool, a: Mat, b: Mat) {
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                std::ptr::write_bytes(dst.offset(i as isize * dst_rs), 0, n);
            }
        }
        return;
    }
    let kc_max = K::KC.min(k);
    let nc = (K::PACK_BYTES / (4 * kc_max) / K::NR * K::NR).max(K::NR);
    let pack_a = K::PACK_A && a.cs != 1;
    crate::scratch::with(&PACKED_A, |abuf| {
        let apacked = abuf.get::<f32>(if pack_a { kc_max * m.next_multiple_of(K::MR) } else { 0 }).as_mut_ptr();
        crate::scratch::with(&PACKED, |buf| {
            let packed = buf.get::<f32>(kc_max * nc.min(n.next_multiple_of(K::NR))).as_mut_ptr();
            for p0 in (0..k).step_by(K::KC) {
                let kc = K::KC.min(k - p0);
                let add = accumulate || p0 > 0;
                if pack_a {
                    // A (m, kc) as blocks [m / MR][kc][MR], once per block of K.
                    for i0 in (0..m).step_by(K::MR) {
                        let rows = K::MR.min(m - i0);
                        let blk = apacked.add(i0 * kc);
                        for p in 0..kc {
                            let col = a.ptr.offset(i0 as isize * a.rs + (p0 + p) as isize * a.cs);
                            for r in 0..rows {
                                *blk.add(p * K::MR + r) = *col.offset(r as isize * a.rs);
                            }
                        }
                    }
                }
                for j0 in (0..n).step_by(nc) {
                    let cols = nc.min(n - j0);
                    K::pack_b(packed, b, p0, kc, j0, cols);
                    for i0 in (0..m).step_by(K::MR) {
                        let rows = K::MR.min(m - i0);
                        let (ap, am) = if pack_a {
                            let p = apacked.add(i0 * kc);
                            (p as *const f32, Mat { ptr: p, rs: 1, cs: K::MR as isize })
                        } else {
                            (a.ptr.offset(i0 as isize * a.rs + p0 as isize * a.cs), a)
                        };
                        for jp in 0..cols.div_ceil(K::NR) {
                            let c = dst.offset(i0 as isize * dst_rs + (j0 + jp * K::NR) as isize);
                            let bp = packed.add(jp * kc * K::NR);
                            let w = K::NR.min(cols - jp * K::NR);
                            K::panel(rows, kc, ap, am, bp, c, dst_rs, w, add);
                        }
                    }
                }
            }
        })
    });
}

/// One microkernel call for `rows` (1..=12) rows: the row count is a
/// compile-time constant in each instance, so the accumulators stay in
/// registers.
#[inline(always)]
unsafe fn panel(rows: usize, kc: usize, ap: *const f32, a: Mat, bp: *const f32, c: *mut f32, c_rs: isize, cols: usize, add: bool) {
    macro_rules! go {
        ($($r:literal)*) => {
            match rows {
                $($r => micro::<$r>(kc, ap, a.rs, a.cs, bp, c, c_rs, cols, add),)*
                _ => unreachable!(),
            }
        };
    }
    go!(1 2 3 4 5 6 7 8 9 10 11 12)
}

/// c (R, cols) [+]= a (R, kc) @ b (kc, 32), b packed as [kc][32] (zeros past
/// `cols`), c's rows `c_rs` floats apart; columns past `cols` are neither read
/// nor written.
#[target_feature(enable = "avx512f")]
unsafe fn micro<const R: usize>(kc: usize, a: *const f32, a_rs: isize, a_cs: isize, b: *const f32, c: *mut f32, c_rs: isize, cols: usize, add: bool) {
    let (m0, m1) = masks(cols);
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    if add {
        for (r, acc) in acc.iter_mut().enumerate() {
            let row = c.offset(r as isize * c_rs);
            *acc = [_mm512_maskz_loadu_ps(m0, row), _mm512_maskz_loadu_ps(m1, row.wrapping_add(16))];
        }
    }
    if a_cs == 1 {
        // Rows of A contiguous: R row pointers, each walked along K.
        let rows: [*const f32; R] = std::array::from_fn(|r| a.offset(r as isize * a_rs));
        for p in 0..kc {
            let (b0, b1) = (_mm512_load_ps(b.add(p * NR)), _mm512_load_ps(b.add(p * NR + 16)));
            for (acc, row) in acc.iter_mut().zip(&rows) {
                let av = _mm512_set1_ps(*row.add(p));
                acc[0] = _mm512_fmadd_ps(av, b0, acc[0]);
                acc[1] = _mm512_fmadd_ps(av, b1, acc[1]);
            }
        }
    } else {
        // Any other layout, a transposed A (rs = 1) above all: the R values
        // of a step of K lie side by side.
        for p in 0..kc {
            let (b0, b1) = (_mm512_load_ps(b.add(p * NR)), _mm512_load_ps(b.add(p * NR + 16)));
            let col = a.offset(p as isize * a_cs);
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*col.offset(r as isize * a_rs));
                acc[0] = _mm512_fmadd_ps(av, b0, acc[0]);
                acc[1] = _mm512_fmadd_ps(av, b1, acc[1]);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        let row = c.offset(r as isize * c_rs);
        _mm512_mask_storeu_ps(row, m0, acc[0]);
        _mm512_mask_storeu_ps(row.wrapping_add(16), m1, acc[1]);
    }
}

/// The lanes of the two vectors of a 32-column row that hold the first
/// `cols` columns.
#[inline(always)]
fn masks(cols: usize) -> (__mmask16, __mmask16) {
    let lanes = |n: usize| if n >= 16 { 0xffff } else { (1u16 << n) - 1 };
    (lanes(cols), lanes(cols.saturating_sub(16)))
}

/// b[p0.., j0..] (kc, cols) into panels [cols / 32][kc][32], the last one
/// zero-padded.
#[target_feature(enable = "avx512f")]
unsafe fn pack_b(dst: *mut f32, b: Mat, p0: usize, kc: usize, j0: usize, cols: usize) {
    let at = |p: usize, j: usize| b.ptr.offset((p0 + p) as isize * b.rs + (j0 + j) as isize * b.cs);
    for jp in 0..cols.div_ceil(NR) {
        let panel = dst.add(jp * kc * NR);
        let w = NR.min(cols - jp * NR);
        let (m0, m1) = masks(w);
        if b.cs == 1 {
            // Rows of B contiguous: 32 floats a row, masked at the edge.
            for p in 0..kc {
                let src = at(p, jp * NR);
                _mm512_store_ps(panel.add(p * NR), _mm512_maskz_loadu_ps(m0, src));
                _mm512_store_ps(panel.add(p * NR + 16), _mm512_maskz_loadu_ps(m1, src.wrapping_add(16)));
            }
        } else if b.cs.unsigned_abs() * NR > i32::MAX as usize {
            // Columns too far apart for a gather's 32-bit offsets.
            for p in 0..kc {
                for jj in 0..NR {
                    *panel.add(p * NR + jj) = if jj < w { *at(p, jp * NR + jj) } else { 0.0 };
                }
            }
        } else {
            // Any other stride: a gather of 16 columns per vector; along K
            // the same 32 cache lines serve 16 steps. Column-stored B (a
            // (OC, C) weight read as (C, OC)) arrives here only in products
            // under 8 wide or deep: larger ones are copied row-major first
            // (`matmul::sgemm_block`).
            let step = _mm512_set1_epi32(b.cs as i32);
            let idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), step);
            let col0 = at(0, jp * NR);
            for p in 0..kc {
                let src = col0.offset(p as isize * b.rs);
                let lo = _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), m0, idx, src);
                let hi = _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), m1, idx, src.wrapping_offset(16 * b.cs));
                _mm512_store_ps(panel.add(p * NR), lo);
                _mm512_store_ps(panel.add(p * NR + 16), hi);
            }
        }
    }
}
