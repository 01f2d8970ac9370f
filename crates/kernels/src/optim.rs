//! Optimizer updates over flat slices, and global-norm gradient clipping.
//! The model calls these once per parameter group (a contiguous run of the
//! flat buffer with one weight-decay setting).

use crate::simd::dispatch;
use rayon::prelude::*;

/// Floats per task of the update kernels, and per partial sum of
/// `grad_norm`: the norm adds the chunks' sums in order, so any split of the
/// buffer at whole chunks gives it the same bits (`grad_norm_on_team`).
pub const CHUNK: usize = 32 * 1024;

/// How an optimizer moment is stored: f32, or bf16 (half the memory; each
/// update computes in f32 and rounds the moment to nearest even).
pub trait Moment: Copy + Send + Sync {
    /// The stored moment as f32.
    fn get(self) -> f32;
    /// x stored as a moment.
    fn put(x: f32) -> Self;
}

impl Moment for f32 {
    #[inline(always)]
    fn get(self) -> f32 {
        self
    }
    #[inline(always)]
    fn put(x: f32) -> Self {
        x
    }
}

/// A bf16 moment (the high 16 bits of an f32).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(transparent)]
pub struct Bf16(pub u16);

// SAFETY: a transparent u16, whose all-zero bytes are bf16 +0.0.
unsafe impl bytemuck::Zeroable for Bf16 {}

impl Moment for Bf16 {
    #[inline(always)]
    fn get(self) -> f32 {
        crate::quant::bf16_to_f32(self.0)
    }
    #[inline(always)]
    fn put(x: f32) -> Self {
        Bf16(crate::quant::bf16_bits(x))
    }
}

/// Hyperparameters of one AdamW step.
#[derive(Clone, Copy, Debug)]
pub struct AdamW {
    /// Learning rate of this step.
    pub lr: f32,
    /// Decay of the first moment (the gradient's running mean).
    pub beta1: f32,
    /// Decay of the second moment (the squared gradient's running mean).
    pub beta2: f32,
    /// Added to the second moment's square root.
    pub eps: f32,
    /// Decoupled weight decay: each step first multiplies every weight by
    /// 1 - lr * weight_decay.
    pub weight_decay: f32,
    /// 1-based step count, for bias correction.
    pub step: u64,
    /// Multiplies every gradient first: the clipping coefficient, applied here
    /// so that clipping costs no extra pass over the gradients.
    pub grad_scale: f32,
}

/// AdamW with decoupled weight decay, in the operation order of
/// `torch.optim.AdamW` so that results agree to float rounding (with f32
/// moments; bf16 moments are widened, updated in f32 and rounded back).
pub fn adamw_update<M: Moment>(
    params: &mut [f32], // (P)
    grads: &[f32],      // (P)
    m: &mut [M],        // (P) first moment
    v: &mut [M],        // (P) second moment
    h: AdamW,
) {
    assert!(grads.len() == params.len() && m.len() == params.len() && v.len() == params.len());
    let bc1 = 1.0 - (h.beta1 as f64).powi(h.step as i32);
    let bc2 = 1.0 - (h.beta2 as f64).powi(h.step as i32);
    let step_size = (h.lr as f64 / bc1) as f32;
    let bc2_sqrt = bc2.sqrt() as f32;
    let decay = 1.0 - h.lr * h.weight_decay;
    let k = AdamWConsts { step_size, bc2_sqrt, decay, h };
    params
        .par_chunks_mut(CHUNK)
        .zip(grads.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
        .for_each(|((p, g), (m, v))| adamw_chunk(p, g, m, v, k));
}

#[derive(Clone, Copy)]
struct AdamWConsts {
    step_size: f32,
    bc2_sqrt: f32,
    decay: f32,
    h: AdamW,
}

dispatch! {
    /// One chunk of `adamw_update`, compiled per vector level: with bf16
    /// moments the widening and rounding are as much work as the arithmetic,
    /// and only wide registers keep the update at memory speed.
    [Avx512]
    fn adamw_chunk<M: Moment>(p: &mut [f32], g: &[f32], m: &mut [M], v: &mut [M], k: AdamWConsts) {
        let h = k.h;
        for i in 0..p.len() {
            let gi = g[i] * h.grad_scale;
            p[i] *= k.decay;
            let (mut mi, mut vi) = (m[i].get(), v[i].get());
            mi += (gi - mi) * (1.0 - h.beta1);
            vi = vi * h.beta2 + (1.0 - h.beta2) * gi * gi;
            // The update uses the moments as stored, so a run resumed from
            // its checkpoint takes the same steps.
            (m[i], v[i]) = (M::put(mi), M::put(vi));
            let (mi, vi) = (m[i].get(), v[i].get());
            let denom = vi.sqrt() / k.bc2_sqrt + h.eps;
            p[i] -= k.step_size * mi / denom;
        }
    }
}

/// Hyperparameters of one SGD step.
#[derive(Clone, Copy, Debug)]
pub struct Sgd {
    /// Learning rate of this step.
    pub lr: f32,
    /// Momentum (0: plain SGD), as torch's.
    pub momentum: f32,
    /// L2 decay added to the gradient, as torch's SGD applies it.
    pub weight_decay: f32,
    /// True on the first step: torch initialises the momentum buffer to the gradient.
    pub first_step: bool,
    /// Multiplies every gradient first (the clipping coefficient).
    pub grad_scale: f32,
}

/// SGD with momentum and (coupled, L2) weight decay, as `torch.optim.SGD`.
pub fn sgd_update<M: Moment>(
    params: &mut [f32], // (P)
    grads: &[f32],      // (P)
    momentum: &mut [M], // (P)
    h: Sgd,
) {
    assert!(grads.len() == params.len() && momentum.len() == params.len());
    params.par_chunks_mut(CHUNK).zip(grads.par_chunks(CHUNK)).zip(momentum.par_chunks_mut(CHUNK)).for_each(|((p, g), buf)| {
        for i in 0..p.len() {
            let gi = g[i] * h.grad_scale + h.weight_decay * p[i];
            let d = if h.momentum == 0.0 {
                gi
            } else {
                buf[i] = M::put(if h.first_step { gi } else { h.momentum * buf[i].get() + gi });
                buf[i].get()
            };
            p[i] -= h.lr * d;
        }
    });
}

/// The L2 norm of the whole gradient, accumulated in f64.
pub fn grad_norm(grads: &[f32]) -> f32 {
    // Partial sums per fixed chunk, then a serial sum in chunk order: rayon's own
    // reduction tree varies from run to run, and resume must be bit-exact.
    let partial: Vec<f64> = grads.par_chunks(CHUNK).map(sum_squares).collect();
    partial.iter().sum::<f64>().sqrt() as f32
}

/// `grad_norm` computed by the team's first `n` threads (`crate::team`),
/// each over its part (`team::part` at whole chunks): the same chunks' sums,
/// added in the same order, so the same bits.
pub fn grad_norm_on_team(grads: &[f32], n: usize) -> f32 {
    let partial: Vec<std::sync::Mutex<Vec<f64>>> = (0..n).map(|_| Default::default()).collect();
    crate::team::for_each_shard(n, |i| {
        let sums = grads[crate::team::part(grads.len(), n, CHUNK, i)].chunks(CHUNK).map(sum_squares).collect();
        *partial[i].lock().unwrap_or_else(|e| e.into_inner()) = sums;
    });
    let partial = partial.into_iter().flat_map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()));
    partial.sum::<f64>().sqrt() as f32
}

dispatch! {
    /// The sum of x^2 in f64, over 8 running sums (element i goes to sum i
    /// mod 8) added in order at the end. One running sum is a chain of
    /// dependent f64 adds the compiler may not reorder, about 4x slower than
    /// the memory; the order is still fixed, so the result does not depend
    /// on the SIMD level.
    [Avx512]
    fn sum_squares(g: &[f32]) -> f64 {
        let mut acc = [0.0f64; 8];
        let mut rows = g.chunks_exact(8);
        for row in &mut rows {
            for (a, &x) in acc.iter_mut().zip(row) {
                *a += (x as f64) * (x as f64);
            }
        }
        for (a, &x) in acc.iter_mut().zip(rows.remainder()) {
            *a += (x as f64) * (x as f64);
        }
        acc.iter().sum()
    }
}

/// The factor that brings a gradient of global norm `norm` down to at most
/// `max_norm`, as `torch.nn.utils.clip_grad_norm_` computes it (1 when no
/// clipping is needed or `max_norm` is 0).
pub fn clip_coefficient(norm: f32, max_norm: f32) -> f32 {
    if max_norm <= 0.0 {
        return 1.0;
    }
    (max_norm / (norm + 1e-6)).min(1.0)
}
