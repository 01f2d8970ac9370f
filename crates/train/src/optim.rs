//! Optimizer state over the model's flat parameter buffer.

use std::ops::Range;

use attn_kernels::optim::{adamw_update, clip_coefficient, grad_norm, sgd_update, AdamW, Sgd};
use attn_model::params::{ParamKind, ParamLayout};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum OptimizerKind {
    AdamW { beta1: f32, beta2: f32, eps: f32 },
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
    pub kind: OptimizerKind,
    pub weight_decay: f32,
    /// (range in the flat buffer, whether it decays), one per tensor.
    groups: Vec<(Range<usize>, bool)>,
    /// AdamW first moment, or SGD momentum.
    pub m: Vec<f32>,
    /// AdamW second moment (empty for SGD).
    pub v: Vec<f32>,
    /// Steps taken so far.
    pub step: u64,
}

impl Optimizer {
    pub fn new(kind: OptimizerKind, weight_decay: f32, rule: DecayRule, layout: &ParamLayout) -> Self {
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
            OptimizerKind::AdamW { .. } => vec![0.0; n],
            OptimizerKind::Sgd { .. } => Vec::new(),
        };
        Optimizer { kind, weight_decay, groups, m: vec![0.0; n], v, step: 0 }
    }

    /// One optimizer step: measures the global gradient norm, clips to
    /// `max_norm` (0 disables) inside the update, and returns the norm before
    /// clipping. A non-finite norm is returned without touching the
    /// parameters or the moments: `NaN.min(1.0)` is 1.0, so clipping alone
    /// would let it through.
    pub fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32, max_norm: f32) -> f32 {
        let norm = grad_norm(grads);
        if norm.is_finite() {
            self.update(params, grads, lr, clip_coefficient(norm, max_norm));
        }
        norm
    }

    /// One update of `params` from `grads * grad_scale` at learning rate `lr`.
    pub fn update(&mut self, params: &mut [f32], grads: &[f32], lr: f32, grad_scale: f32) {
        self.step += 1;
        for (r, decays) in &self.groups {
            let wd = if *decays { self.weight_decay } else { 0.0 };
            match self.kind {
                OptimizerKind::AdamW { beta1, beta2, eps } => adamw_update(
                    &mut params[r.clone()],
                    &grads[r.clone()],
                    &mut self.m[r.clone()],
                    &mut self.v[r.clone()],
                    AdamW { lr, beta1, beta2, eps, weight_decay: wd, step: self.step, grad_scale },
                ),
                OptimizerKind::Sgd { momentum } => sgd_update(
                    &mut params[r.clone()],
                    &grads[r.clone()],
                    &mut self.m[r.clone()],
                    Sgd { lr, momentum, weight_decay: wd, first_step: self.step == 1, grad_scale },
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A NaN or infinite gradient norm leaves the parameters and the moments
    /// untouched, and does not count as a step.
    #[test]
    fn non_finite_gradients_are_never_applied() {
        let layout = attn_model::Transformer::zeros(attn_model::TransformerConfig::gpt2(5, 4, 1, 1, 4)).unwrap().layout;
        let kind = OptimizerKind::AdamW { beta1: 0.9, beta2: 0.99, eps: 1e-8 };
        let mut opt = Optimizer::new(kind, 0.1, DecayRule::Matrices, &layout);
        let mut params = vec![1.0f32; layout.total()];
        for bad in [f32::NAN, f32::INFINITY] {
            let mut grads = vec![0.5; layout.total()];
            grads[1] = bad;
            let norm = opt.step(&mut params, &grads, 1e-2, 1.0);
            assert!(!norm.is_finite());
            assert!(params.iter().all(|&p| p == 1.0) && opt.m.iter().all(|&m| m == 0.0) && opt.step == 0);
        }
        opt.step(&mut params, &vec![0.5; layout.total()], 1e-2, 1.0);
        assert!(params.iter().any(|&p| p < 1.0) && opt.step == 1);
    }
}
