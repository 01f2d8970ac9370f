//! The AVX2 + FMA instance of attn's f32 GEMM: a 6 x 16 microkernel, 12
//! accumulators, 2 vectors of B and a broadcast in 15 of the 16 registers.
//! Per step of K: 2 loads of B, 6 broadcasts of A, 12 FMAs, so two FMA
//! pipes stay busy while the load ports have room.

use std::arch::x86_64::*;

use super::Kernel;
use crate::matmul::Mat;

/// Columns per packed panel of B: two vectors of 8.
const NR: usize = 16;
/// Rows per microkernel call.
const MR: usize = 6;
/// K per block: the 6-row block of A (6 KiB) and a panel of B (16 KiB) fit
/// in a 32 KiB L1 together.
const KC: usize = 256;
/// Packed B per block: half of a 512 KiB L2.
const PACK_BYTES: usize = 256 << 10;

/// The AVX2 instance.
pub(crate) struct Avx2;

impl Kernel for Avx2 {
    const MR: usize = MR;
    const NR: usize = NR;
    const KC: usize = KC;
    const PACK_BYTES: usize = PACK_BYTES;
    const PACK_A: bool = true;

    #[inline(always)]
    unsafe fn panel(rows: usize, kc: usize, ap: *const f32, a: Mat, bp: *const f32, c: *mut f32, c_rs: isize, cols: usize, add: bool) {
        // The row count a compile-time constant in each instance, so the
        // accumulators stay in registers.
        macro_rules! go {
            ($($r:literal)*) => {
                match rows {
                    $($r => micro::<$r>(kc, ap, a.rs, a.cs, bp, c, c_rs, cols, add),)*
                    _ => unreachable!(),
                }
            };
        }
        go!(1 2 3 4 5 6)
    }

    unsafe fn pack_b(dst: *mut f32, b: Mat, p0: usize, kc: usize, j0: usize, cols: usize) {
        pack_b(dst, b, p0, kc, j0, cols)
    }
}

/// The lanes of the two vectors of a 16-column row that hold the first
/// `cols` columns, as `vmaskmovps` masks.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn masks(cols: usize) -> (__m256i, __m256i) {
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let n = cols.min(NR) as i32;
    (_mm256_cmpgt_epi32(_mm256_set1_epi32(n), lane), _mm256_cmpgt_epi32(_mm256_set1_epi32(n - 8), lane))
}

/// c (R, cols) [+]= a (R, kc) @ b (kc, 16), b packed as [kc][16].
/// Whole 16-column tiles load and store c plainly: AMD's masked stores are
/// microcoded, so only the edge panel pays for them.
#[target_feature(enable = "avx2,fma")]
unsafe fn micro<const R: usize>(kc: usize, a: *const f32, a_rs: isize, a_cs: isize, b: *const f32, c: *mut f32, c_rs: isize, cols: usize, add: bool) {
    let whole = cols >= NR;
    let (m0, m1) = masks(cols);
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    if add {
        for (r, acc) in acc.iter_mut().enumerate() {
            let row = c.offset(r as isize * c_rs);
            *acc = if whole {
                [_mm256_loadu_ps(row), _mm256_loadu_ps(row.add(8))]
            } else {
                [_mm256_maskload_ps(row, m0), _mm256_maskload_ps(row.wrapping_add(8), m1)]
            };
        }
    }
    if a_cs == 1 {
        // Rows of A contiguous: R row pointers, each walked along K.
        let rows: [*const f32; R] = std::array::from_fn(|r| a.offset(r as isize * a_rs));
        for p in 0..kc {
            let (b0, b1) = (_mm256_load_ps(b.add(p * NR)), _mm256_load_ps(b.add(p * NR + 8)));
            for (acc, row) in acc.iter_mut().zip(&rows) {
                let av = _mm256_broadcast_ss(&*row.add(p));
                acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
                acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
            }
        }
    } else {
        // Any other layout, a transposed A (rs = 1) above all: the R values
        // of a step of K lie side by side.
        for p in 0..kc {
            let (b0, b1) = (_mm256_load_ps(b.add(p * NR)), _mm256_load_ps(b.add(p * NR + 8)));
            let col = a.offset(p as isize * a_cs);
            for (r, acc) in acc.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*col.offset(r as isize * a_rs));
                acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
                acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        let row = c.offset(r as isize * c_rs);
        if whole {
            _mm256_storeu_ps(row, acc[0]);
            _mm256_storeu_ps(row.add(8), acc[1]);
        } else {
            _mm256_maskstore_ps(row, m0, acc[0]);
            _mm256_maskstore_ps(row.wrapping_add(8), m1, acc[1]);
        }
    }
}

/// b[p0.., j0..] (kc, cols) into panels [cols / 16][kc][16], the last one
/// zero-padded.
#[target_feature(enable = "avx2,fma")]
unsafe fn pack_b(dst: *mut f32, b: Mat, p0: usize, kc: usize, j0: usize, cols: usize) {
    let at = |p: usize, j: usize| b.ptr.offset((p0 + p) as isize * b.rs + (j0 + j) as isize * b.cs);
    for jp in 0..cols.div_ceil(NR) {
        let panel = dst.add(jp * kc * NR);
        let w = NR.min(cols - jp * NR);
        if b.cs == 1 {
            // Rows of B contiguous: 16 floats a row, masked at the edge.
            let (m0, m1) = masks(w);
            for p in 0..kc {
                let src = at(p, jp * NR);
                let (lo, hi) = if w == NR {
                    (_mm256_loadu_ps(src), _mm256_loadu_ps(src.add(8)))
                } else {
                    (_mm256_maskload_ps(src, m0), _mm256_maskload_ps(src.wrapping_add(8), m1))
                };
                _mm256_store_ps(panel.add(p * NR), lo);
                _mm256_store_ps(panel.add(p * NR + 8), hi);
            }
        } else {
            // Any other stride, one float at a time: column-stored B (a (OC,
            // C) weight read as (C, OC)) arrives here only in products under
            // 8 wide or deep; larger ones are copied row-major first
            // (`matmul::sgemm_block`).
            for p in 0..kc {
                for jj in 0..NR {
                    *panel.add(p * NR + jj) = if jj < w { *at(p, jp * NR + jj) } else { 0.0 };
                }
            }
        }
    }
}
