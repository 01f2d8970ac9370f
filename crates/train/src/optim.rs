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
    /// clipping.
    pub fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32, max_norm: f32) -> f32 {
        let norm = grad_norm(grads);
        self.update(params, grads, lr, clip_coefficient(norm, max_norm));
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
