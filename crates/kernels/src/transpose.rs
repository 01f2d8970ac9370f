//! Out-of-place transpose of an f32 block, for GEMM operands stored the
//! other way round.
//!
//! Why: a (OC, C) weight (`torch.nn.Linear`) is the B operand of the forward
//! product read column by column, and a GEMM packing such a B gathers each
//! panel row from rows of the weight that lie C floats apart. With C a power
//! of two those rows fall into the same few L1 sets and evict one another, so
//! the gather runs at L2 speed: transformer-base's forward products ran at
//! 0.8 of the backward's rate on the same shapes. Transposing 8 x 8 tiles in
//! registers reads each cache line of the source once, whole, and writes
//! whole lines (docs/PERFORMANCE.md).

/// dst (cols, rows), row stride `dst_rs` = src (rows, cols)^T, src's rows
/// `src_rs` floats apart.
///
/// Safety: src covers rows x cols at its stride, dst covers cols x rows at
/// its stride, and they do not overlap.
pub(crate) unsafe fn transpose(dst: *mut f32, dst_rs: usize, src: *const f32, src_rs: usize, rows: usize, cols: usize) {
    #[cfg(target_arch = "x86_64")]
    if crate::simd::active() >= crate::simd::Level::Avx {
        return x86::transpose(dst, dst_rs, src, src_rs, rows, cols);
    }
    transpose_scalar(dst, dst_rs, src, src_rs, rows, cols);
}

/// dst (cols, rows) = src (rows, cols)^T, both dense.
pub fn transpose_into(dst: &mut [f32], src: &[f32], rows: usize, cols: usize) {
    assert!(src.len() == rows * cols && dst.len() == rows * cols, "transpose of ({rows}, {cols}) between buffers of {} and {}", src.len(), dst.len());
    // SAFETY: both cover rows x cols densely, and a &mut never aliases a &.
    unsafe { transpose(dst.as_mut_ptr(), rows, src.as_ptr(), cols, rows, cols) }
}

/// The portable twin, also the edges of the vector version: tiles of 8 x 8
/// so that the lines of a tile's source rows stay in L1 across it.
unsafe fn transpose_scalar(dst: *mut f32, dst_rs: usize, src: *const f32, src_rs: usize, rows: usize, cols: usize) {
    const T: usize = 8;
    for r0 in (0..rows).step_by(T) {
        for c0 in (0..cols).step_by(T) {
            for r in r0..(r0 + T).min(rows) {
                for c in c0..(c0 + T).min(cols) {
                    *dst.add(c * dst_rs + r) = *src.add(r * src_rs + c);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// 8 x 8 tiles through AVX registers; the right and bottom edges that do
    /// not fill a tile go to the scalar loop.
    #[target_feature(enable = "avx")]
    pub(super) unsafe fn transpose(dst: *mut f32, dst_rs: usize, src: *const f32, src_rs: usize, rows: usize, cols: usize) {
        let (r8, c8) = (rows / 8 * 8, cols / 8 * 8);
        for r0 in (0..r8).step_by(8) {
            for c0 in (0..c8).step_by(8) {
                tile(dst.add(c0 * dst_rs + r0), dst_rs, src.add(r0 * src_rs + c0), src_rs);
            }
        }
        if c8 < cols {
            super::transpose_scalar(dst.add(c8 * dst_rs), dst_rs, src.add(c8), src_rs, rows, cols - c8);
        }
        if r8 < rows {
            super::transpose_scalar(dst.add(r8), dst_rs, src.add(r8 * src_rs), src_rs, rows - r8, c8);
        }
    }

    /// One 8 x 8 tile: rows r0..r7 (lanes 0..7) become columns.
    #[inline(always)]
    unsafe fn tile(dst: *mut f32, dst_rs: usize, src: *const f32, src_rs: usize) {
        let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * src_rs)));
        // Pairs of rows interleaved by 32 bits: (a0 b0 a1 b1 | a4 b4 a5 b5) ...
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        // Then by 64 bits: (a0 b0 c0 d0 | a4 b4 c4 d4) ...
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        // Then the 128-bit halves: column j of the tile in one register.
        let out = [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ];
        for (j, v) in out.iter().enumerate() {
            _mm256_storeu_ps(dst.add(j * dst_rs), *v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_scalar_on_ragged_shapes_and_strides() {
        for &(rows, cols, pad) in &[(8, 8, 0), (17, 23, 3), (64, 40, 0), (5, 70, 1), (33, 9, 7), (1, 1, 0)] {
            let src_rs = cols + pad;
            let src: Vec<f32> = (0..rows * src_rs).map(|i| i as f32 * 0.5 - 7.0).collect();
            let dst_rs = rows + 2;
            let mut dst = vec![f32::NAN; cols * dst_rs];
            unsafe { transpose(dst.as_mut_ptr(), dst_rs, src.as_ptr(), src_rs, rows, cols) };
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(dst[c * dst_rs + r], src[r * src_rs + c], "({rows}, {cols}) at ({r}, {c})");
                }
            }
            // Padding columns of dst are left alone.
            for c in 0..cols {
                assert!(dst[c * dst_rs + rows..(c + 1) * dst_rs].iter().all(|x| x.is_nan()));
            }
        }
    }
}
