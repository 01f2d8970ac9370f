//! The bf16 microkernel for CPUs with AVX512-BF16 and no AMX: `vdpbf16ps`
//! adds, in each of 16 f32 lanes, the dot product of a bf16 pair of A with
//! the pair of B in that lane, so it reads exactly the packed tiles of
//! `tiles.rs` (a row of a B tile is one vector of 16 column pairs).
//!
//! The 32x32 block of C is done as four blocks of 8 rows x 32 columns:
//! sixteen accumulator vectors, two B vectors and a broadcast A pair per step.

use std::arch::x86_64::*;
use std::mem::transmute;

use crate::mixed::TILE;

/// AVX-512F and AVX512-BF16 present (checked once by std).
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16")
}

/// The contract of `amx::kernel_32x32`: c (32, 32) [+]= [a0; a1] @ [b0 b1]
/// over `kt` packed K tiles, c's rows `c_stride` bytes apart.
///
/// Safety: `available()`; pointers as for `amx::kernel_32x32`.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(crate) unsafe fn kernel_32x32(a0: *const u16, a1: *const u16, b0: *const u16, b1: *const u16, kt: usize, c: *mut f32, c_stride: usize, accumulate: bool) {
    for g in 0..4 {
        // Rows 8g..8g + 8 of the block: rows (8g) % 16.. of a0's or a1's tiles.
        let (a, r0) = if g < 2 { (a0, 8 * g) } else { (a1, 8 * (g - 2)) };
        let row = |r: usize| c.byte_add((8 * g + r) * c_stride);
        let mut acc = [[_mm512_setzero_ps(); 2]; 8];
        if accumulate {
            for (r, acc) in acc.iter_mut().enumerate() {
                *acc = [_mm512_loadu_ps(row(r)), _mm512_loadu_ps(row(r).add(16))];
            }
        }
        for t in 0..kt {
            // A tile row r: 16 pairs (u32) of consecutive K.
            let at = a.add(t * TILE) as *const u32;
            let (bt0, bt1) = (b0.add(t * TILE), b1.add(t * TILE));
            for q in 0..16 {
                let bv0: __m512bh = transmute(_mm512_loadu_si512(bt0.add(32 * q) as *const _));
                let bv1: __m512bh = transmute(_mm512_loadu_si512(bt1.add(32 * q) as *const _));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let av: __m512bh = transmute(_mm512_set1_epi32(*at.add((r0 + r) * 16 + q) as i32));
                    acc[0] = _mm512_dpbf16_ps(acc[0], av, bv0);
                    acc[1] = _mm512_dpbf16_ps(acc[1], av, bv1);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            _mm512_storeu_ps(row(r), acc[0]);
            _mm512_storeu_ps(row(r).add(16), acc[1]);
        }
    }
}
