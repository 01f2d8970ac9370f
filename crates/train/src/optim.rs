//! Optimizer state over the model's flat parameter buffer.

use std::ops::Range;

use attn_kernels::optim::{adamw_update, clip_coefficient, grad_norm, sgd_update, AdamW, Bf16, Moment, Sgd, CHUNK};
use attn_model::checkpoint::{Dtype as TensorDtype, RawTensor, TensorFile};
use attn_model::params::{ParamKind, ParamLayout};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// A number format: how the optimizer stores its moments
/// (`--optimizer-dtype`), and in what the dense layers multiply (`--dtype`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    #[default]
    /// 4 bytes a value (the default).
    F32,
    /// Moments: half the memory of f32 (AdamW: 4 bytes a parameter instead
    /// of 8); every update computes in f32 and rounds to nearest even.
    /// Products: operands rounded to bf16, sums in f32 (`attn_kernels::mixed`).
    Bf16,
}

impl Dtype {
    /// Whether this is the default, f32.
    pub fn is_f32(&self) -> bool {
        *self == Dtype::F32
    }

    /// The name the flags take.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::Bf16 => "bf16",
        }
    }

    /// The matrix-product precision this format asks for.
    pub fn precision(self) -> attn_kernels::mixed::Precision {
        match self {
            Dtype::F32 => attn_kernels::mixed::Precision::F32,
            Dtype::Bf16 => attn_kernels::mixed::Precision::Bf16,
        }
    }
}

/// One moment buffer, in the parameters' layout.
pub enum Moments {
    /// 4 bytes a value.
    F32(Vec<f32>),
    /// 2 bytes a value.
    Bf16(Vec<Bf16>),
}

impl Moments {
    /// Zeros written to memory, not only allocated. `vec![0.0; n]` maps
    /// every page to the kernel's shared zero page, and AdamW's first step
    /// reads each moment before writing it: every 4 KiB then took a
    /// copy-on-write fault and a TLB flush on every core: 2.0 s for
    /// gpt2-124m's 1 GB of moments against 65-85 ms for a later step, where
    /// writing them here takes 170-220 ms once.
    ///
    /// On huge pages where available (`attn_kernels::pages`), which also
    /// makes that first write 512 times fewer faults.
    fn zeros(dtype: Dtype, n: usize) -> Self {
        fn touched<T: bytemuck::Zeroable + Copy + Send + Sync>(n: usize) -> Vec<T> {
            let mut v = attn_kernels::pages::zeroed::<T>(n);
            if let Some(&zero) = v.first() {
                attn_kernels::in_pool(|| v.par_chunks_mut(1 << 16).for_each(|c| c.fill(zero)));
            }
            v
        }
        match dtype {
            Dtype::F32 => Moments::F32(touched(n)),
            Dtype::Bf16 => Moments::Bf16(touched(n)),
        }
    }

    /// Values held.
    pub fn len(&self) -> usize {
        match self {
            Moments::F32(x) => x.len(),
            Moments::Bf16(x) => x.len(),
        }
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The moments widened to f32.
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Moments::F32(x) => x.clone(),
            Moments::Bf16(x) => x.iter().map(|h| h.get()).collect(),
        }
    }

    /// As a checkpoint tensor (F32 or BF16).
    pub fn raw(&self, name: &str) -> RawTensor {
        match self {
            // One copy of the bytes, as a checkpoint of f32 moments always took.
            Moments::F32(x) => (name.into(), TensorDtype::F32, vec![x.len()], bytemuck::cast_slice(x).to_vec()),
            Moments::Bf16(x) => {
                let bits: Vec<u16> = x.iter().map(|h| h.0).collect();
                (name.into(), TensorDtype::BF16, vec![x.len()], bytemuck::cast_slice(&bits).to_vec())
            }
        }
    }

    /// Reads a checkpoint tensor of either dtype (a bf16 one into f32
    /// moments exactly, an f32 one into bf16 moments rounded).
    fn load(&mut self, state: &TensorFile, name: &str) -> Result<()> {
        let n = self.len();
        let mut wide = vec![0.0f32; n];
        state.read_into(name, &[n], &mut wide)?;
        *self = match self {
            Moments::F32(_) => Moments::F32(wide),
            Moments::Bf16(_) => Moments::Bf16(wide.into_iter().map(Bf16::put).collect()),
        };
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
/// The update rule and its settings.
pub enum OptimizerKind {
    /// `--optimizer adamw` with `--beta1`, `--beta2`, `--eps`.
    #[allow(missing_docs)]
    AdamW { beta1: f32, beta2: f32, eps: f32 },
    /// `--optimizer sgd` with `--momentum`.
    #[allow(missing_docs)]
    Sgd { momentum: f32 },
}

/// Which tensors get weight decay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecayRule {
    /// Weight matrices only: not norms, biases or embeddings.
    Matrices,
    /// Matrices and embeddings (nanoGPT's rule: every tensor with two dimensions).
    MatricesAndEmbeddings,
}

/// The optimizer's moments live in buffers with the parameters' layout.
pub struct Optimizer {
    /// The update rule.
    pub kind: OptimizerKind,
    /// Weight decay for the tensors `DecayRule` picks.
    pub weight_decay: f32,
    /// (range in the flat buffer, whether it decays), one per tensor.
    groups: Vec<(Range<usize>, bool)>,
    /// AdamW first moment, or SGD momentum.
    pub m: Moments,
    /// AdamW second moment (empty for SGD).
    pub v: Moments,
    /// Steps taken so far.
    pub step: u64,
}

impl Optimizer {
    /// Zeroed moments for `layout`'s tensors, stored as `dtype`.
    pub fn new(kind: OptimizerKind, weight_decay: f32, rule: DecayRule, layout: &ParamLayout, dtype: Dtype) -> Self {
        let groups = layout
            .entries
            .iter()
            .map(|e| {
                let decays = match e.kind {
                    ParamKind::Matrix => true,
                    ParamKind::Embedding => rule == DecayRule::MatricesAndEmbeddings,
                    ParamKind::Norm | ParamKind::Bias => false,
                };
                (e.range(), decays)
            })
            .collect();
        let n = layout.total();
        let v = match kind {
            OptimizerKind::AdamW { .. } => Moments::zeros(dtype, n),
            OptimizerKind::Sgd { .. } => Moments::zeros(dtype, 0),
        };
        Optimizer { kind, weight_decay, groups, m: Moments::zeros(dtype, n), v, step: 0 }
    }

    /// The moments as checkpoint tensors "m" (and "v" for AdamW).
    pub fn state_tensors(&self) -> Vec<RawTensor> {
        let mut t = vec![self.m.raw("m")];
        if !self.v.is_empty() {
            t.push(self.v.raw("v"));
        }
        t
    }

    /// Reads the moments `state_tensors` wrote.
    pub fn load_state(&mut self, state: &TensorFile) -> Result<()> {
        self.m.load(state, "m")?;
        if !self.v.is_empty() {
            self.v.load(state, "v")?;
        }
        Ok(())
    }

    /// One optimizer step: measures the global gradient norm, clips to
    /// `max_norm` (0 disables) inside the update, and returns the norm before
    /// clipping. A non-finite norm is returned without touching the
    /// parameters or the moments: `NaN.min(1.0)` is 1.0, so clipping alone
    /// would let it through.
    pub fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32, max_norm: f32) -> f32 {
        attn_kernels::in_pool(|| {
            let norm = grad_norm(grads);
            if norm.is_finite() {
                self.update(params, grads, lr, clip_coefficient(norm, max_norm));
            }
            norm
        })
    }

    /// `step` on the first `n` threads of `attn_kernels::team`, each on its
    /// own part of the parameters (`team::part` at whole `CHUNK`s): the part
    /// in which `Transformer::train_step` added its shards' gradients up, so
    /// each core updates what it has just summed, and the pool of the
    /// unsharded kernels is not woken. The same bits as `step`: the norm
    /// sums the same chunks in the same order, and the update goes element
    /// by element. Call it from outside rayon's pool.
    pub fn step_on_team(&mut self, params: &mut [f32], grads: &[f32], lr: f32, max_norm: f32, n: usize) -> f32 {
        if n <= 1 {
            return self.step(params, grads, lr, max_norm);
        }
        let norm = attn_kernels::optim::grad_norm_on_team(grads, n);
        if norm.is_finite() {
            self.step += 1;
            let grad_scale = clip_coefficient(norm, max_norm);
            let rule = Rule { kind: self.kind, weight_decay: self.weight_decay, groups: &self.groups, step: self.step, lr, grad_scale };
            match (&mut self.m, &mut self.v) {
                (Moments::F32(m), Moments::F32(v)) => update_on_team(&rule, params, grads, m, v, n),
                (Moments::Bf16(m), Moments::Bf16(v)) => update_on_team(&rule, params, grads, m, v, n),
                _ => unreachable!("both moments are made with one dtype"),
            }
        }
        norm
    }

    /// One update of `params` from `grads * grad_scale` at learning rate `lr`.
    pub fn update(&mut self, params: &mut [f32], grads: &[f32], lr: f32, grad_scale: f32) {
        self.step += 1;
        let rule = Rule { kind: self.kind, weight_decay: self.weight_decay, groups: &self.groups, step: self.step, lr, grad_scale };
        match (&mut self.m, &mut self.v) {
            (Moments::F32(m), Moments::F32(v)) => update_part(&rule, params, grads, m, v, 0),
            (Moments::Bf16(m), Moments::Bf16(v)) => update_part(&rule, params, grads, m, v, 0),
            _ => unreachable!("both moments are made with one dtype"),
        }
    }
}

/// One update's settings, shared by the parts it is split into.
struct Rule<'a> {
    kind: OptimizerKind,
    weight_decay: f32,
    groups: &'a [(Range<usize>, bool)],
    step: u64,
    lr: f32,
    grad_scale: f32,
}

/// Updates `p`, the parameters at `off..off + p.len()` of the flat buffer,
/// from their gradients `g` and moments `m` and `v` (`v` empty for SGD),
/// tensor by tensor for each one's weight decay.
fn update_part<M: Moment>(rule: &Rule, p: &mut [f32], g: &[f32], m: &mut [M], v: &mut [M], off: usize) {
    for (r, decays) in rule.groups {
        let (lo, hi) = (r.start.max(off), r.end.min(off + p.len()));
        if lo >= hi {
            continue;
        }
        let s = lo - off..hi - off;
        let wd = if *decays { rule.weight_decay } else { 0.0 };
        let (p, g, m) = (&mut p[s.clone()], &g[s.clone()], &mut m[s.clone()]);
        match rule.kind {
            OptimizerKind::AdamW { beta1, beta2, eps } => {
                let h = AdamW { lr: rule.lr, beta1, beta2, eps, weight_decay: wd, step: rule.step, grad_scale: rule.grad_scale };
                adamw_update(p, g, m, &mut v[s], h)
            }
            OptimizerKind::Sgd { momentum } => {
                sgd_update(p, g, m, Sgd { lr: rule.lr, momentum, weight_decay: wd, first_step: rule.step == 1, grad_scale: rule.grad_scale })
            }
        }
    }
}

/// One thread's share of an update: parameters, gradients, moments.
type Part<'a, M> = (&'a mut [f32], &'a [f32], &'a mut [M], &'a mut [M]);

/// `update_part` on each of the team's first `n` threads, over its part.
fn update_on_team<M: Moment>(rule: &Rule, params: &mut [f32], grads: &[f32], m: &mut [M], v: &mut [M], n: usize) {
    use attn_kernels::team::{part, parts_mut};
    use std::sync::Mutex;
    let len = params.len();
    // SGD has no second moment: its parts are empty.
    let vs = if v.is_empty() { (0..n).map(|_| &mut [][..]).collect() } else { parts_mut(v, n, CHUNK) };
    let parts: Vec<Mutex<Part<M>>> = parts_mut(params, n, CHUNK)
        .into_iter()
        .zip(parts_mut(m, n, CHUNK))
        .zip(vs)
        .enumerate()
        .map(|(i, ((p, m), v))| Mutex::new((p, &grads[part(len, n, CHUNK, i)], m, v)))
        .collect();
    attn_kernels::team::for_each_shard(n, |i| {
        let mut share = parts[i].lock().unwrap_or_else(|e| e.into_inner());
        let (p, g, m, v) = &mut *share;
        update_part(rule, p, g, m, v, part(len, n, CHUNK, i).start);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The team's split update gives the bits of the whole one: AdamW with
    /// f32 and bf16 moments, SGD, with clipping active, over tensors that
    /// straddle the parts.
    #[test]
    fn the_update_on_the_team_is_the_whole_update() {
        let layout = attn_model::Transformer::zeros(attn_model::TransformerConfig::gpt2(67, 16, 3, 2, 40)).unwrap().layout;
        let n = layout.total();
        let grads: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1013) as f32 - 506.0) * 1e-3).collect();
        let adamw = OptimizerKind::AdamW { beta1: 0.9, beta2: 0.99, eps: 1e-8 };
        for (kind, dtype) in [(adamw, Dtype::F32), (adamw, Dtype::Bf16), (OptimizerKind::Sgd { momentum: 0.9 }, Dtype::F32)] {
            let run = |parts: usize| {
                let mut opt = Optimizer::new(kind, 0.1, DecayRule::Matrices, &layout, dtype);
                let mut params = vec![0.5f32; n];
                let norms: Vec<u32> = (0..3).map(|_| opt.step_on_team(&mut params, &grads, 1e-2, 1.0, parts).to_bits()).collect();
                (params, opt.m.to_f32(), norms)
            };
            let whole = run(1);
            for parts in [2, 3] {
                let split = run(parts);
                assert_eq!(split.2, whole.2, "{kind:?} {parts} parts: the norms");
                assert!(split.0.iter().zip(&whole.0).all(|(a, b)| a.to_bits() == b.to_bits()), "{kind:?} {dtype:?} {parts} parts: the weights");
                assert!(split.1.iter().zip(&whole.1).all(|(a, b)| a.to_bits() == b.to_bits()), "{kind:?} {dtype:?} {parts} parts: the moments");
            }
        }
    }

    /// A NaN or infinite gradient norm leaves the parameters and the moments
    /// untouched, and does not count as a step.
    #[test]
    fn non_finite_gradients_are_never_applied() {
        let layout = attn_model::Transformer::zeros(attn_model::TransformerConfig::gpt2(5, 4, 1, 1, 4)).unwrap().layout;
        let kind = OptimizerKind::AdamW { beta1: 0.9, beta2: 0.99, eps: 1e-8 };
        let mut opt = Optimizer::new(kind, 0.1, DecayRule::Matrices, &layout, Dtype::F32);
        let mut params = vec![1.0f32; layout.total()];
        for bad in [f32::NAN, f32::INFINITY] {
            let mut grads = vec![0.5; layout.total()];
            grads[1] = bad;
            let norm = opt.step(&mut params, &grads, 1e-2, 1.0);
            assert!(!norm.is_finite());
            assert!(params.iter().all(|&p| p == 1.0) && opt.m.to_f32().iter().all(|&m| m == 0.0) && opt.step == 0);
        }
        opt.step(&mut params, &vec![0.5; layout.total()], 1e-2, 1.0);
        assert!(params.iter().any(|&p| p < 1.0) && opt.step == 1);
    }
}
