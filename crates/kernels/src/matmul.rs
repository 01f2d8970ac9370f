//! Dense layers: `out = inp @ W (+ bias)`, on the `gemm` crate.
//!
//! `gemm` was chosen by measurement on the development machine (2 Zen1 cores,
//! AVX2+FMA): 35-37 GFLOP/s per core on GPT-2 shapes, 70-74 on two threads, with
//! the transposed operands of the backward pass just as fast, pure Rust, and
//! with run-time CPU dispatch. See docs/PERFORMANCE.md.

mod choice;
pub use choice::{f32_gemm, set_f32_gemm, F32Gemm};

/// How a weight matrix is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightLayout {
    /// (C, OC): GPT-2's `Conv1D` stores weights input-major.
    InOut,
    /// (OC, C): `torch.nn.Linear`, and a tied output head that reads `wte` (V, C).
    OutIn,
}

/// A matrix operand given by pointer and strides, so transposes cost nothing.
#[derive(Clone, Copy)]
pub(crate) struct Mat {
    pub(crate) ptr: *const f32,
    pub(crate) rs: isize,
    pub(crate) cs: isize,
}

/// Below this many multiply-adds a GEMM runs on the calling thread: the rayon
/// fork/join costs more than it saves.
const PARALLEL_MIN_WORK: usize = 48 * 48 * 48;

/// Output blocks are multiples of this many rows or columns, so that every
/// block but the last fills whole microkernel tiles.
const SPLIT_ALIGN: usize = 16;

/// dst (m, n) = [dst +] a (m, k) @ b (k, n), in the precision set by
/// `mixed::set_matmul_precision` (f32 unless asked).
///
/// Safety: as for `sgemm_f32`.
unsafe fn sgemm(m: usize, n: usize, k: usize, dst: *mut f32, dst_rs: isize, dst_cs: isize, accumulate: bool, a: Mat, b: Mat, threads: usize) {
    match crate::mixed::matmul_precision() {
        crate::mixed::Precision::F32 => sgemm_f32(m, n, k, dst, dst_rs, dst_cs, accumulate, a, b, threads),
        crate::mixed::Precision::Bf16 => crate::mixed::gemm_bf16(m, n, k, dst, dst_rs, dst_cs, accumulate, a, b, threads),
    }
}

/// dst (m, n) = [dst +] a (m, k) @ b (k, n) in f32.
///
/// Threading: the output is cut into one block of rows (or columns, whichever
/// dimension is larger; columns on a tie) per thread, and each block is a
/// single-threaded GEMM.
/// On the small shapes of training (m = B*T = 768, n = 128..512) this scales
/// ~1.8x on 2 threads where gemm's internal threading managed ~1.15x
/// (docs/PERFORMANCE.md).
///
/// Safety: every operand must cover its strided extent; `dst` must not alias
/// `a` or `b`.
pub(crate) unsafe fn sgemm_f32(m: usize, n: usize, k: usize, dst: *mut f32, dst_rs: isize, dst_cs: isize, accumulate: bool, a: Mat, b: Mat, threads: usize) {
    let init = if accumulate { Init::Keep } else { Init::Zero };
    sgemm_f32_init(m, n, k, dst, dst_rs, dst_cs, init, a, b, threads)
}

/// What dst holds before a product adds into it.
#[derive(Clone, Copy)]
enum Init {
    /// Nothing: the product is written over it.
    Zero,
    /// Its contents (dst += a @ b).
    Keep,
    /// Every row a copy of this (n) vector, the bias; row-major dst only.
    /// Each block fills its own part just before its product, on its own
    /// thread, where one serial pass over all of dst took 1.5% of a step.
    Bias(*const f32),
}

/// `sgemm_f32` with dst's starting value given by `init`.
#[allow(clippy::too_many_arguments)]
unsafe fn sgemm_f32_init(m: usize, n: usize, k: usize, dst: *mut f32, dst_rs: isize, dst_cs: isize, init: Init, a: Mat, b: Mat, threads: usize) {
    if m == 0 || n == 0 {
        return;
    }
    // Fills rows `rows` x columns `cols` of dst from the bias, if that is
    // the start; says whether the product then adds.
    let start = |rows: std::ops::Range<usize>, cols: std::ops::Range<usize>| match init {
        Init::Zero => false,
        Init::Keep => true,
        Init::Bias(bias) => {
            assert_eq!(dst_cs, 1, "a bias start needs a row-major dst");
            let src = std::slice::from_raw_parts(bias.add(cols.start), cols.len());
            for r in rows {
                std::slice::from_raw_parts_mut(dst.offset(r as isize * dst_rs).add(cols.start), cols.len()).copy_from_slice(src);
            }
            true
        }
    };
    let parts = if m * n * k >= PARALLEL_MIN_WORK { threads.min(m.max(n).div_ceil(SPLIT_ALIGN)) } else { 1 };
    if parts <= 1 {
        let accumulate = start(0..m, 0..n);
        return sgemm_block(m, n, k, dst, dst_rs, dst_cs, accumulate, a, b);
    }
    // On a tie, columns: the crate packs b (and attn's kernel packs b), so a
    // split by rows would have every thread pack all of b, a split by
    // columns packs each part of b once (transformer-base's 512^3 forward
    // products, docs/PERFORMANCE.md).
    let split_rows = m > n;
    let len = if split_rows { m } else { n };
    let block = len.div_ceil(parts).next_multiple_of(SPLIT_ALIGN);
    let dst_s = crate::SendPtr(dst);
    let (a, b) = (SendMat(a), SendMat(b));
    let start = &SendFn(start);
    use rayon::prelude::*;
    (0..len.div_ceil(block)).into_par_iter().for_each(|i| {
        let (a, b, dst) = (a.get(), b.get(), dst_s.get());
        let first = i * block;
        let size = block.min(len - first);
        // Each block writes its own rows (or columns) of dst.
        if split_rows {
            let accumulate = (start.0)(first..first + size, 0..n);
            let a = Mat { ptr: a.ptr.offset(first as isize * a.rs), ..a };
            sgemm_block(size, n, k, dst.offset(first as isize * dst_rs), dst_rs, dst_cs, accumulate, a, b);
        } else {
            let accumulate = (start.0)(0..m, first..first + size);
            let b = Mat { ptr: b.ptr.offset(first as isize * b.cs), ..b };
            sgemm_block(m, size, k, dst.offset(first as isize * dst_cs), dst_rs, dst_cs, accumulate, a, b);
        }
    });
}

/// A closure over raw pointers, shared by the blocks of one product; each
/// block touches only its own part of dst.
struct SendFn<F>(F);
unsafe impl<F> Sync for SendFn<F> {}

#[derive(Clone, Copy)]
pub(crate) struct SendMat(pub(crate) Mat);
unsafe impl Send for SendMat {}
unsafe impl Sync for SendMat {}

impl SendMat {
    /// See `SendPtr::get`: makes closures capture the Send wrapper.
    #[inline(always)]
    pub(crate) fn get(self) -> Mat {
        self.0
    }
}

thread_local! {
    /// A block of b copied row-major (`sgemm_block`), kept between calls.
    static B_ROWS: std::cell::RefCell<crate::scratch::Scratch> = const { std::cell::RefCell::new(crate::scratch::Scratch::new()) };
}

/// Floats of b copied at a time: about half of a 1-2 MiB L2.
const B_ROWS_FLOATS: usize = 128 << 10;

/// One single-threaded GEMM call. A b stored column by column (rs = 1: the
/// (OC, C) weight of a forward product, or a (C, OC) one of a backward) is
/// first copied row-major, a block of columns at a time (`transpose.rs` says why).
unsafe fn sgemm_block(m: usize, n: usize, k: usize, dst: *mut f32, dst_rs: isize, dst_cs: isize, accumulate: bool, a: Mat, b: Mat) {
    if b.rs == 1 && b.cs > 1 && k >= 8 && n >= 8 {
        // At least 64 columns a block, however long K is.
        let w = (B_ROWS_FLOATS / k).next_multiple_of(64).max(64).min(n);
        return crate::scratch::with(&B_ROWS, |buf| {
            let rows = buf.get::<f32>(k * w).as_mut_ptr();
            for j0 in (0..n).step_by(w) {
                let cols = w.min(n - j0);
                // b's columns j0.. are rows of the stored matrix: (cols, k) at stride b.cs.
                crate::transpose::transpose(rows, cols, b.ptr.offset(j0 as isize * b.cs), b.cs as usize, cols, k);
                let bc = Mat { ptr: rows, rs: cols as isize, cs: 1 };
                sgemm_block_direct(m, cols, k, dst.offset(j0 as isize * dst_cs), dst_rs, dst_cs, accumulate, a, bc);
            }
        });
    }
    sgemm_block_direct(m, n, k, dst, dst_rs, dst_cs, accumulate, a, b)
}

unsafe fn sgemm_block_direct(m: usize, n: usize, k: usize, dst: *mut f32, dst_rs: isize, dst_cs: isize, accumulate: bool, a: Mat, b: Mat) {
    #[cfg(target_arch = "x86_64")]
    if dst_cs == 1 {
        match f32_gemm() {
            F32Gemm::Avx512 => return crate::sgemm::gemm::<crate::sgemm::Avx512>(m, n, k, dst, dst_rs, accumulate, a, b),
            F32Gemm::Avx2 => return crate::sgemm::gemm::<crate::sgemm::Avx2>(m, n, k, dst, dst_rs, accumulate, a, b),
            F32Gemm::Crate => {}
        }
    }
    // gemm computes dst = alpha*dst + beta*(a@b): the scale names are swapped
    // relative to BLAS.
    gemm::gemm(m, n, k, dst, dst_cs, dst_rs, accumulate, a.ptr, a.cs, a.rs, b.ptr, b.cs, b.rs, 1.0f32, 1.0f32, false, false, false, gemm::Parallelism::None);
}

/// Single-threaded strided GEMM for kernels that parallelize at a coarser level
/// (attention runs one GEMM per (batch, head) on each rayon task).
///
/// Safety: as for `sgemm`.
pub(crate) unsafe fn sgemm_serial(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    dst_cs: isize,
    accumulate: bool,
    a: *const f32,
    a_rs: isize,
    a_cs: isize,
    b: *const f32,
    b_rs: isize,
    b_cs: isize,
) {
    sgemm_block(m, n, k, dst, dst_rs, dst_cs, accumulate, Mat { ptr: a, rs: a_rs, cs: a_cs }, Mat { ptr: b, rs: b_rs, cs: b_cs });
}

fn weight_mat(weight: *const f32, c: usize, oc: usize, layout: WeightLayout) -> Mat {
    // Viewed as the (C, OC) operand of inp @ W.
    match layout {
        WeightLayout::InOut => Mat { ptr: weight, rs: oc as isize, cs: 1 },
        WeightLayout::OutIn => Mat { ptr: weight, rs: 1, cs: c as isize },
    }
}

/// out = inp @ W + bias.
pub fn matmul_forward(
    out: &mut [f32],      // (N, OC)
    inp: &[f32],          // (N, C)
    weight: &[f32],       // (C, OC) or (OC, C), see `layout`
    bias: Option<&[f32]>, // (OC)
    n: usize,
    c: usize,
    oc: usize,
    layout: WeightLayout,
) {
    assert!(out.len() >= n * oc && inp.len() >= n * c && weight.len() >= c * oc);
    let out = &mut out[..n * oc];
    assert!(bias.is_none_or(|b| b.len() >= oc));
    let threads = rayon::current_num_threads();
    if crate::mixed::matmul_precision() == crate::mixed::Precision::F32 {
        let init = bias.map_or(Init::Zero, |b| Init::Bias(b.as_ptr()));
        let w = weight_mat(weight.as_ptr(), c, oc, layout);
        // SAFETY: the asserts above cover every extent read and written.
        return unsafe { sgemm_f32_init(n, oc, c, out.as_mut_ptr(), oc as isize, 1, init, Mat { ptr: inp.as_ptr(), rs: c as isize, cs: 1 }, w, threads) };
    }
    if let Some(bias) = bias {
        for row in out.chunks_exact_mut(oc) {
            row.copy_from_slice(&bias[..oc]);
        }
    }
    unsafe {
        sgemm(
            n,
            oc,
            c,
            out.as_mut_ptr(),
            oc as isize,
            1,
            bias.is_some(),
            Mat { ptr: inp.as_ptr(), rs: c as isize, cs: 1 },
            weight_mat(weight.as_ptr(), c, oc, layout),
            threads,
        );
    }
}

/// Accumulates dinp += dout @ W^T, dW += inp^T @ dout, dbias += colsum(dout).
pub fn matmul_backward(
    dinp: Option<&mut [f32]>,  // (N, C); None when the input needs no gradient
    dweight: &mut [f32],       // same shape as weight; empty when the weight needs no gradient
    dbias: Option<&mut [f32]>, // (OC)
    dout: &[f32],              // (N, OC)
    inp: &[f32],               // (N, C)
    weight: &[f32],            // (C, OC) or (OC, C)
    n: usize,
    c: usize,
    oc: usize,
    layout: WeightLayout,
) {
    backward(dinp, true, dweight, dbias, dout, inp, weight, n, c, oc, layout)
}

/// As `matmul_backward`, but writes dinp = dout @ W^T instead of adding to
/// it (dW and dbias still accumulate): for the first or only product to
/// reach an input's gradient, whose buffer then needs no zeroing first.
pub fn matmul_backward_set(
    dinp: Option<&mut [f32]>,  // (N, C), overwritten
    dweight: &mut [f32],       // same shape as weight; empty when the weight needs no gradient
    dbias: Option<&mut [f32]>, // (OC)
    dout: &[f32],              // (N, OC)
    inp: &[f32],               // (N, C)
    weight: &[f32],            // (C, OC) or (OC, C)
    n: usize,
    c: usize,
    oc: usize,
    layout: WeightLayout,
) {
    backward(dinp, false, dweight, dbias, dout, inp, weight, n, c, oc, layout)
}

#[allow(clippy::too_many_arguments)]
fn backward(
    dinp: Option<&mut [f32]>,
    dinp_add: bool,
    dweight: &mut [f32],
    dbias: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    n: usize,
    c: usize,
    oc: usize,
    layout: WeightLayout,
) {
    // An empty dweight asks for no weight gradient (a frozen weight).
    assert!(dout.len() >= n * oc && inp.len() >= n * c && weight.len() >= c * oc && (dweight.is_empty() || dweight.len() >= c * oc));
    let threads = rayon::current_num_threads();
    let w = weight_mat(weight.as_ptr(), c, oc, layout);
    let dout_m = Mat { ptr: dout.as_ptr(), rs: oc as isize, cs: 1 };
    unsafe {
        if let Some(dinp) = dinp {
            assert!(dinp.len() >= n * c);
            // W^T as a (OC, C) operand: swap the strides.
            let wt = Mat { ptr: w.ptr, rs: w.cs, cs: w.rs };
            sgemm(n, c, oc, dinp.as_mut_ptr(), c as isize, 1, dinp_add, dout_m, wt, threads);
        }
        match layout {
            _ if dweight.is_empty() => {}
            WeightLayout::InOut => {
                // dW (C, OC) += inp^T (C, N) @ dout (N, OC)
                let inp_t = Mat { ptr: inp.as_ptr(), rs: 1, cs: c as isize };
                sgemm(c, oc, n, dweight.as_mut_ptr(), oc as isize, 1, true, inp_t, dout_m, threads);
            }
            WeightLayout::OutIn => {
                // dW (OC, C) += dout^T (OC, N) @ inp (N, C)
                let dout_t = Mat { ptr: dout.as_ptr(), rs: 1, cs: oc as isize };
                let inp_m = Mat { ptr: inp.as_ptr(), rs: c as isize, cs: 1 };
                sgemm(oc, c, n, dweight.as_mut_ptr(), c as isize, 1, true, dout_t, inp_m, threads);
            }
        }
    }
    if let Some(dbias) = dbias {
        bias_backward(&mut dbias[..oc], &dout[..n * oc], oc);
    }
}

/// dbias (OC) += sum over rows of dout (N, OC). Split by columns so that each
/// task owns its outputs: no reduction buffers, and the result does not depend
/// on the thread count.
fn bias_backward(dbias: &mut [f32], dout: &[f32], oc: usize) {
    use rayon::prelude::*;
    let n = dout.len() / oc;
    let cols = (oc / rayon::current_num_threads().max(1)).max(64);
    if n * oc < 32 * 1024 {
        for row in dout.chunks_exact(oc) {
            crate::simd::axpy(dbias, 1.0, row);
        }
        return;
    }
    dbias.par_chunks_mut(cols).enumerate().for_each(|(j, db)| {
        let c0 = j * cols;
        for r in 0..n {
            crate::simd::axpy(db, 1.0, &dout[r * oc + c0..r * oc + c0 + db.len()]);
        }
    });
}

/// Reference: out = inp @ W + bias, in plain loops.
pub fn matmul_forward_naive(out: &mut [f32], inp: &[f32], weight: &[f32], bias: Option<&[f32]>, n: usize, c: usize, oc: usize, layout: WeightLayout) {
    for r in 0..n {
        for o in 0..oc {
            let mut s = bias.map_or(0.0, |b| b[o]) as f64;
            for i in 0..c {
                let w = match layout {
                    WeightLayout::InOut => weight[i * oc + o],
                    WeightLayout::OutIn => weight[o * c + i],
                };
                s += inp[r * c + i] as f64 * w as f64;
            }
            out[r * oc + o] = s as f32;
        }
    }
}

/// Reference backward in plain loops (accumulating, like the fast one).
pub fn matmul_backward_naive(
    dinp: &mut [f32],
    dweight: &mut [f32],
    dbias: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    n: usize,
    c: usize,
    oc: usize,
    layout: WeightLayout,
) {
    let widx = |i: usize, o: usize| match layout {
        WeightLayout::InOut => i * oc + o,
        WeightLayout::OutIn => o * c + i,
    };
    for r in 0..n {
        for o in 0..oc {
            let d = dout[r * oc + o];
            for i in 0..c {
                dinp[r * c + i] += d * weight[widx(i, o)];
                dweight[widx(i, o)] += d * inp[r * c + i];
            }
        }
    }
    if let Some(db) = dbias {
        for r in 0..n {
            for o in 0..oc {
                db[o] += dout[r * oc + o];
            }
        }
    }
}

/// One big square GEMM, for measuring this machine's peak (used by `attn bench`).
/// Returns the multiply-add count times two (FLOPs).
pub fn sgemm_peak_probe(dst: &mut [f32], a: &[f32], b: &[f32], size: usize) -> f64 {
    assert!(dst.len() >= size * size && a.len() >= size * size && b.len() >= size * size);
    unsafe {
        sgemm_f32(
            size,
            size,
            size,
            dst.as_mut_ptr(),
            size as isize,
            1,
            false,
            Mat { ptr: a.as_ptr(), rs: size as isize, cs: 1 },
            Mat { ptr: b.as_ptr(), rs: size as isize, cs: 1 },
            rayon::current_num_threads(),
        );
    }
    2.0 * (size as f64).powi(3)
}

/// The same square product with bf16 operands on this CPU's fastest bf16 path
/// (`mixed::bf16_path`). Returns FLOPs.
pub fn bf16_gemm_peak_probe(dst: &mut [f32], a: &[f32], b: &[f32], size: usize) -> f64 {
    assert!(dst.len() >= size * size && a.len() >= size * size && b.len() >= size * size);
    let (am, bm) = (Mat { ptr: a.as_ptr(), rs: size as isize, cs: 1 }, Mat { ptr: b.as_ptr(), rs: size as isize, cs: 1 });
    unsafe { crate::mixed::gemm_bf16(size, size, size, dst.as_mut_ptr(), size as isize, 1, false, am, bm, rayon::current_num_threads()) };
    2.0 * (size as f64).powi(3)
}
