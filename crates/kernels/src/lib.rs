//! The numeric core of attn: free functions over `f32` slices, in `_forward` /
//! `_backward` pairs, in the manner of llm.c. There is no autograd: each backward
//! kernel is derived by hand and checked against finite differences.
//!
//! Letters used in every shape comment:
//! B = batch, T = time (sequence), C = channels, OC = output channels,
//! V = vocabulary, NH = heads, HS = head size (C / NH), N = B * T rows.
//!
//! Conventions (the same in every file):
//! - Outputs come first, then inputs, then weights, then sizes.
//! - Every `_backward` kernel *adds* into its gradient outputs; the caller zeroes
//!   them. This makes tied weights and gradient accumulation free.
//! - Kernels never allocate and never fail; sizes are checked with `assert!`
//!   at entry because a wrong size is a programming error, not bad input.
//! - Each kernel has a slow `_naive` twin that the tests compare against.
//!
//! ```
//! use attn_kernels::gelu::{gelu_forward, gelu_backward};
//! let x = [0.5f32, -1.0, 2.0];
//! let mut y = [0.0f32; 3];
//! gelu_forward(&mut y, &x);
//! let mut dx = [0.0f32; 3];
//! gelu_backward(&mut dx, &x, &[1.0, 1.0, 1.0]);
//! assert!(y[2] > 1.9 && dx[2] > 1.0);
//! ```

#![warn(missing_docs)]

pub mod activation;
#[cfg(target_arch = "x86_64")]
mod amx;
pub mod attention;
pub mod cache;
pub mod cross_attention;
pub mod crossentropy;
#[cfg(target_arch = "x86_64")]
mod dpbf16;
pub mod embedding;
pub mod few_rows;
pub mod flash;
pub mod gelu;
pub mod gradcheck;
pub mod kv_cache;
pub mod layernorm;
pub mod matmul;
pub mod matvec;
pub mod mixed;
pub mod optim;
pub mod pages;
pub mod peak;
pub mod quant;
pub mod residual;
pub mod rmsnorm;
pub mod rope;
mod scratch;
#[cfg(target_arch = "x86_64")]
mod sgemm;
pub mod simd;
pub mod swiglu;
pub mod team;
#[cfg(target_arch = "x86_64")]
mod tiles;
pub mod transpose;

/// Rows per rayon task for row-parallel kernels. Small row counts stay on one
/// thread: spawning costs more than the work.
pub(crate) fn rows_per_task(rows: usize, row_len: usize) -> usize {
    // Aim for at least ~16K elements per task so the split pays for itself.
    let min_rows = (16 * 1024 / row_len.max(1)).max(1);
    let threads = rayon::current_num_threads().max(1);
    rows.div_ceil(threads * 4).max(min_rows)
}

/// A raw pointer that may cross threads. Used where parallel tasks write
/// provably disjoint, strided regions of one buffer (for example one head's
/// columns of every row), which slices cannot express.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub *mut f32);
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// Going through a method makes a closure capture the whole wrapper (which
    /// is Send), not its raw-pointer field (which is not).
    #[inline(always)]
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// Sets `buf` to zero on every thread of the pool. The backward passes zero
/// their gradient buffers before kernels add into them: megabytes a layer,
/// and the whole gradient every step. One thread's `fill` left the other
/// idle: 3.5% of a `baby` step's samples were memset on one thread.
pub fn zero(buf: &mut [f32]) {
    use rayon::prelude::*;
    if buf.len() < 1 << 15 {
        return buf.fill(0.0);
    }
    buf.par_chunks_mut(1 << 15).for_each(|c| c.fill(0.0));
}

/// Runs `f` on a thread of rayon's pool. A model's pass starts tens to
/// hundreds of parallel regions; from a thread outside the pool each one is
/// handed over through the pool's queue and waited for on a lock (a sleep
/// and a wake-up each), from a thread inside it a region is a push onto that
/// thread's own queue, which the other threads steal from. So the entry
/// points of a pass (a decoding step, a training forward or backward, an
/// optimizer step) run their whole body in the pool. Anything they keep in a
/// thread-local must expect to be re-entered: a thread waiting on a region
/// may take up another caller's pass meanwhile.
pub fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::scope(|_| f())
    }
}
