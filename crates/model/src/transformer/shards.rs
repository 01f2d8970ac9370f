//! Data-parallel training steps: the batch's sequences split into shards,
//! each shard's forward and backward pass run start to end on one thread of
//! its own (`attn_kernels::team`), and the shards' gradients added up once.
//!
//! A small model's step on two threads otherwise meets at hundreds of
//! parallel regions, and each core keeps reading rows the other wrote; with
//! the vCPUs placed far apart that cost `baby` a third of its step
//! (docs/PERFORMANCE.md, "Data-parallel shards").
//!
//! The result depends on the number of shards (the gradient is a sum of
//! per-shard sums) and on nothing else: not on the thread count, nor on which
//! thread ran which shard. `attn train` saves the count with the run.

use std::sync::Mutex;

use attn_kernels::optim::CHUNK;

use super::acts::Acts;
use super::train::{labelled_count, Start};
use super::Transformer;
use crate::error::Result;

/// One shard's buffers, kept between steps.
#[derive(Default)]
pub(super) struct Shard {
    acts: Option<Acts>,
    /// Its gradient; empty for shard 0, which adds into the model's own.
    grads: Vec<f32>,
}

/// Parameters above which `auto_data_shards` keeps one shard: a copy of the
/// gradient per shard then costs more memory and adding-up time than the
/// parallel regions it saves (gpt2-124m's step is 1.8x PyTorch's without).
const SHARD_MAX_PARAMS: u128 = 16 << 20;

/// The most memory `auto_data_shards` spends on the extra shards' gradient
/// copies, so that many threads do not multiply a model's size unasked.
const SHARD_MAX_EXTRA_BYTES: u128 = 256 << 20;

impl crate::config::TransformerConfig {
    /// The shard count `attn train` picks when not told: one per thread (up
    /// to the batch size) for a model of at most 16M parameters, as many as
    /// keep the extra gradient copies within 256 MiB; else 1.
    pub fn auto_data_shards(&self, batch_size: usize, threads: usize) -> usize {
        match self.param_count() {
            Some(p) if p <= SHARD_MAX_PARAMS => {
                let by_memory = 1 + SHARD_MAX_EXTRA_BYTES / (4 * p).max(1);
                threads.min(batch_size).min(by_memory.min(usize::MAX as u128) as usize).max(1)
            }
            _ => 1,
        }
    }
}

impl Transformer {
    /// Sets how many data-parallel shards `train_step` splits a batch into
    /// (1: none, the default).
    pub fn set_data_shards(&mut self, n: usize) {
        self.data_shards = n.max(1);
        self.shards.truncate(self.data_shards);
    }

    /// The data-parallel shard count (`set_data_shards`).
    pub fn data_shards(&self) -> usize {
        self.data_shards
    }

    /// How many threads of the team a training step uses: the shard count,
    /// or 1 with LoRA adapters, which train unsharded. The zeroing, the
    /// shards (at most one a sequence) and the optimizer
    /// (`Optimizer::step_on_team`) all split by it.
    pub fn team_size(&self) -> usize {
        if self.lora.is_some() {
            1
        } else {
            self.data_shards
        }
    }

    /// One micro-batch's forward and backward pass: adds d(`loss_scale` *
    /// mean loss)/d(params) into the gradients and returns the mean loss over
    /// the labelled positions, as `forward` then `backward` do. With data
    /// shards (and no LoRA adapters) the sequences are split into that many
    /// contiguous runs that train on threads of their own; call this from
    /// outside rayon's pool, so the calling thread only waits.
    pub fn train_step(&mut self, tokens: &[u32], targets: &[u32], b: usize, t: usize, loss_scale: f32) -> Result<f32> {
        let s = self.team_size().min(b);
        if s <= 1 {
            let loss = self.forward(tokens, Some(targets), b, t)?.expect("targets given");
            self.backward(loss_scale)?;
            return Ok(loss);
        }
        self.check_batch(tokens, Some(targets), b, t)?;
        let bounds = shard_bounds(b, s);
        self.reserve_shards(&bounds, t)?;
        self.ensure_grads_pub();
        let labelled = labelled_count(targets);
        let d = loss_scale / labelled.max(1) as f32;
        let mut shards = std::mem::take(&mut self.shards);
        std::mem::swap(&mut shards[0].grads, &mut self.grads);
        let cells: Vec<Mutex<&mut Shard>> = shards.iter_mut().map(Mutex::new).collect();
        let sums: Vec<Mutex<f64>> = (0..s).map(|_| Mutex::new(0.0)).collect();
        let this = &*self;
        attn_kernels::team::for_each_shard(s, |i| {
            let mut sh = cells[i].lock().unwrap_or_else(|e| e.into_inner());
            let (lo, hi) = (bounds[i] * t, bounds[i + 1] * t);
            let sum = this.shard_pass(&mut sh, &tokens[lo..hi], &targets[lo..hi], bounds[i + 1] - bounds[i], t, d, i > 0);
            *sums[i].lock().unwrap_or_else(|e| e.into_inner()) = sum;
        });
        drop(cells);
        add_up(&mut shards);
        std::mem::swap(&mut shards[0].grads, &mut self.grads);
        self.shards = shards;
        // The per-row buffers `logits` and `losses` show are the unsharded path's.
        self.set_last(0, 0);
        let total: f64 = sums.into_iter().map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner())).sum();
        Ok((total / labelled.max(1) as f64) as f32)
    }

    /// Allocates the buffers a `train_step` on (B, T) needs, refusing (rather
    /// than have the allocation abort the process) when they would not fit
    /// in the memory available.
    pub fn reserve_step(&mut self, b: usize, t: usize) -> Result<()> {
        match self.team_size().min(b) {
            s if s > 1 => self.reserve_shards(&shard_bounds(b, s), t),
            _ => self.reserve(b, t),
        }
    }

    /// Allocates what each shard lacks for its sequences of length `t`,
    /// after checking the memory the new buffers take.
    fn reserve_shards(&mut self, bounds: &[usize], t: usize) -> Result<()> {
        let s = bounds.len() - 1;
        self.shards.resize_with(s, Shard::default);
        let fits = |sh: &Shard, b: usize| sh.acts.as_ref().is_some_and(|a| a.b * a.t >= b * t && a.t >= t);
        let mut need = 0u128;
        for (i, sh) in self.shards.iter().enumerate() {
            let b = bounds[i + 1] - bounds[i];
            if !fits(sh, b) {
                need += Acts::bytes(self, b, t);
            }
            if i > 0 && sh.grads.len() != self.params.len() {
                need += 4 * self.params.len() as u128;
            }
        }
        if need == 0 {
            return Ok(()); // every step after the first
        }
        // One shard (no gradient copies) is only worth suggesting if it fits.
        let one = Acts::bytes(self, bounds[s], t);
        let hint = match super::available_memory() {
            Some(avail) if one > avail as u128 => "lower --batch-size".to_string(),
            _ => format!("lower --batch-size, or pass --data-shards 1 (one shard needs {:.1} GB)", one as f64 / 1e9),
        };
        super::ensure_memory(need, || format!("{s} data-parallel shards of a {}-sequence batch", bounds[s]), &hint)?;
        // Each shard allocates on its own thread, so its pages are first
        // touched (and placed) where they will be used.
        let mut shards = std::mem::take(&mut self.shards);
        let cells: Vec<Mutex<&mut Shard>> = shards.iter_mut().map(Mutex::new).collect();
        let this = &*self;
        attn_kernels::team::for_each_shard(s, |i| {
            let mut sh = cells[i].lock().unwrap_or_else(|e| e.into_inner());
            let b = bounds[i + 1] - bounds[i];
            if !fits(&sh, b) {
                sh.acts = None;
                sh.acts = Some(Acts::new(this, b, t));
            }
            if i > 0 && sh.grads.len() != this.params.len() {
                sh.grads = attn_kernels::pages::zeroed(this.params.len());
            }
        });
        drop(cells);
        self.shards = shards;
        Ok(())
    }

    /// One shard's forward and backward pass on its own thread; adds its
    /// gradient into `sh.grads` (zeroed first when `own_grads`) and returns
    /// the sum of its positions' losses.
    #[allow(clippy::too_many_arguments)]
    fn shard_pass(&self, sh: &mut Shard, tokens: &[u32], targets: &[u32], b: usize, t: usize, d: f32, own_grads: bool) -> f64 {
        let a = sh.acts.as_mut().expect("reserved");
        let sum = self.forward_with_loss(a, None, tokens, Some(targets), b, t).expect("targets given");
        if own_grads {
            attn_kernels::zero(&mut sh.grads);
        }
        self.backward_blocks(a, &mut sh.grads, None, Start::Loss(d), b, t);
        sum
    }
}

/// Shard i holds sequences bounds[i]..bounds[i + 1] of a batch of `b`.
fn shard_bounds(b: usize, s: usize) -> Vec<usize> {
    (0..=s).map(|i| i * b / s).collect()
}

/// Adds every shard's gradient into shard 0's, element by element in shard
/// order, so the sum's rounding depends on the shard count alone. The team
/// splits the parameters as the optimizer's `step_on_team` will, so each
/// core goes on to update the part it summed.
fn add_up(shards: &mut [Shard]) {
    let s = shards.len();
    let (first, rest) = shards.split_first_mut().expect("at least one shard");
    let len = first.grads.len();
    let parts = team_parts(&mut first.grads, s);
    attn_kernels::team::for_each_shard(s, |i| {
        let r = attn_kernels::team::part(len, s, CHUNK, i);
        let mut g = parts[i].lock().unwrap_or_else(|e| e.into_inner());
        for other in rest.iter() {
            attn_kernels::residual::residual_forward(&mut g, &other.grads[r.clone()]);
        }
    });
}

/// Zeroes `buf` on the team's first `n` threads, each its own part.
pub(super) fn zero_on_team(buf: &mut [f32], n: usize) {
    let parts = team_parts(buf, n);
    attn_kernels::team::for_each_shard(n, |i| parts[i].lock().unwrap_or_else(|e| e.into_inner()).fill(0.0));
}

/// `buf` cut into the team's `n` parts (`team::part` at the optimizer's chunks).
fn team_parts(buf: &mut [f32], n: usize) -> Vec<Mutex<&mut [f32]>> {
    attn_kernels::team::parts_mut(buf, n, CHUNK).into_iter().map(Mutex::new).collect()
}
