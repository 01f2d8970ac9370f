//! The training path: `forward` saves every activation the backward pass
//! needs (and the attention probabilities that `attn inspect` shows);
//! `backward` calls the kernels in exactly the reverse order, so the two read
//! side by side.
//!
//! Letters: B batch, T time, C channels, N = B*T rows, W = (NH + 2 NKV) HD the
//! packed q | k | v width, A = NH*HD the attention output width, F the MLP
//! width, V vocabulary.

use attn_kernels::attention::AttnShape;
use attn_kernels::crossentropy::{crossentropy_backward_inplace, crossentropy_forward, IGNORE};
use attn_kernels::embedding::{embedding_backward, embedding_forward};
use attn_kernels::flash::{flash_backward, flash_forward};
use attn_kernels::gelu::{gelu_backward, gelu_erf_backward, gelu_erf_forward, gelu_forward};
use attn_kernels::layernorm::layernorm_backward;
use attn_kernels::matmul::{matmul_backward, matmul_backward_set, matmul_forward, WeightLayout::OutIn};
use attn_kernels::mixed::matmul_precision;
use attn_kernels::residual::residual_forward;
use attn_kernels::rmsnorm::rmsnorm_backward;
use attn_kernels::rope::{rope_backward, rope_forward};
use attn_kernels::swiglu::{swiglu_backward, swiglu_forward};
use attn_kernels::zero;
use rayon::prelude::*;

use super::acts::Acts;
use super::last_pass::block_output;
use super::{norm_forward, Transformer};
use crate::config::{Mlp, Norm, NormPosition, Position};
use crate::error::{ModelError, Result};
use crate::lora::{Lora, Site};
use crate::params::{grad_view, lin_mut, NormIdx};

fn norm_backward(m: &Transformer, g: &mut [f32], dx: &mut [f32], dout: &[f32], x: &[f32], w: &NormIdx, mean: &[f32], rstd: &[f32], n: usize) {
    let (c, p) = (m.config.n_embd, &m.params);
    if g.is_empty() {
        // Frozen: the kernels still want weight-gradient buffers; C floats each.
        let mut scratch = vec![0.0f32; 2 * c];
        let (dw, db) = scratch.split_at_mut(c);
        return match (m.config.norm, &w.b) {
            (Norm::Layer, Some(_)) => layernorm_backward(dx, dw, db, dout, x, &p[w.w.clone()], mean, rstd, n, c),
            _ => rmsnorm_backward(dx, dw, dout, x, &p[w.w.clone()], rstd, n, c),
        };
    }
    let (dw, db) = lin_mut(g, w);
    match (m.config.norm, db) {
        (Norm::Layer, Some(db)) => layernorm_backward(dx, dw, db, dout, x, &p[w.w.clone()], mean, rstd, n, c),
        _ => rmsnorm_backward(dx, dw, dout, x, &p[w.w.clone()], rstd, n, c),
    }
}

impl Transformer {
    /// Make sure activation buffers can hold (B, T); reallocates only when
    /// they grow, and refuses (rather than have the allocation abort the
    /// process) when the new set would not fit in the memory available.
    pub fn reserve(&mut self, b: usize, t: usize) -> Result<()> {
        let fits = self.acts.as_ref().is_some_and(|a| a.b * a.t >= b * t && a.t >= t);
        if !fits {
            super::ensure_memory(
                self.activation_bytes(b, t),
                || format!("activations for a batch of {b} x {t} tokens"),
                "lower --batch-size or --seq-len (attn train: --grad-accum keeps the tokens per step)",
            )?;
            self.acts = None; // free before allocating the larger set
            self.acts = Some(Acts::new(self, b, t));
        }
        Ok(())
    }

    /// Bytes of the activation buffers a (B, T) batch trains with: what the
    /// forward pass keeps for the backward pass, and the backward's scratch.
    pub fn activation_bytes(&self, b: usize, t: usize) -> u128 {
        Acts::bytes(self, b, t)
    }

    /// Runs the model on `tokens` (B, T), keeping every activation. With
    /// `targets` (B, T) it also computes the mean cross-entropy over the
    /// labelled positions (targets equal to `IGNORE` count for nothing, as
    /// labels of -100 in transformers), which it returns, and prepares for
    /// `backward`. With no labelled position the loss is 0.
    pub fn forward(&mut self, tokens: &[u32], targets: Option<&[u32]>, b: usize, t: usize) -> Result<Option<f32>> {
        attn_kernels::in_pool(|| self.forward_in_pool(tokens, targets, b, t))
    }

    fn forward_in_pool(&mut self, tokens: &[u32], targets: Option<&[u32]>, b: usize, t: usize) -> Result<Option<f32>> {
        self.check_batch(tokens, targets, b, t)?;
        self.reserve(b, t)?;
        let mut a = self.acts.take().expect("reserved");
        let mut lora = self.lora.take();
        let sum = self.forward_with_loss(&mut a, lora.as_mut(), tokens, targets, b, t);
        self.lora = lora;
        self.last_bt = (b, t);
        self.has_targets = targets.is_some();
        self.acts = Some(a);
        Ok(sum.zip(targets).map(|(sum, tg)| (sum / labelled_count(tg).max(1) as f64) as f32))
    }

    /// The forward pass into `a`, and with `targets` the sum of the
    /// labelled positions' losses (`forward`, and each data-parallel shard).
    pub(super) fn forward_with_loss(&self, a: &mut Acts, lora: Option<&mut Lora>, tokens: &[u32], targets: Option<&[u32]>, b: usize, t: usize) -> Option<f64> {
        let n = b * t;
        self.refresh_rope(a, t);
        a.key_lens.clear();
        self.forward_blocks(a, lora, tokens, b, t);
        let tg = targets?;
        a.targets[..n].copy_from_slice(tg);
        crossentropy_forward(&mut a.losses, &mut a.lse, &a.logits, tg, n, self.config.vocab_size);
        Some(a.losses[..n].iter().map(|&x| x as f64).sum())
    }

    /// Checks a training batch: sizes, ids and labels against the model.
    pub(super) fn check_batch(&self, tokens: &[u32], targets: Option<&[u32]>, b: usize, t: usize) -> Result<()> {
        self.require_f32("the training forward pass (training, eval loss over batches, attention maps)")?;
        let n = b * t;
        if t == 0 || b == 0 || tokens.len() != n {
            return Err(ModelError::InvalidConfig(format!("forward needs B*T = {b}*{t} tokens, got {}", tokens.len())));
        }
        if t > self.config.n_ctx {
            return Err(ModelError::InvalidConfig(format!("sequence length {t} exceeds the model's context of {} tokens", self.config.n_ctx)));
        }
        self.check_ids("token", tokens)?;
        if targets.is_some() && !self.config.has_head() {
            return Err(ModelError::InvalidConfig(format!("a {} encoder has no language-model head to compute a loss with", self.model_type())));
        }
        if let Some(tg) = targets {
            if tg.len() != n {
                return Err(ModelError::InvalidConfig(format!("targets must have B*T = {n} entries, got {}", tg.len())));
            }
            // IGNORE marks a position without a label (padding, a prompt).
            let labelled: Vec<u32> = tg.iter().copied().filter(|&x| x != IGNORE).collect();
            self.check_ids("target", &labelled)?;
        }
        Ok(())
    }

    pub(super) fn forward_blocks(&self, a: &mut Acts, mut lora: Option<&mut Lora>, tokens: &[u32], b: usize, t: usize) {
        let cfg = &self.config;
        let (c, v, w, at, f) = (cfg.n_embd, cfg.vocab_size, cfg.qkv_width(), cfg.attn_width(), cfg.d_ff);
        let (nh, nkv, hd) = (cfg.n_head, cfg.n_kv_head, cfg.head_dim);
        let n = b * t;
        let (p, idx, lay) = (&self.params, &self.idx, self.layout_kind());
        a.tokens[..n].copy_from_slice(tokens);
        // The summed embeddings go straight into x0, or into emb_raw when a norm follows.
        let emb: &mut [f32] = if cfg.embed_norm { &mut a.emb_raw } else { &mut a.x0 };
        match (&idx.wpe, cfg.position) {
            (Some(wpe), _) => embedding_forward(emb, tokens, &p[idx.wte.clone()], &p[wpe.clone()], b, t, c),
            (None, Position::Sinusoidal) => embedding_forward(emb, tokens, &p[idx.wte.clone()], &self.pos_table, b, t, c),
            _ => {
                let wte = &p[idx.wte.clone()];
                emb[..n * c].par_chunks_mut(c).zip(tokens.par_iter()).for_each(|(row, &id)| row.copy_from_slice(&wte[id as usize * c..][..c]));
            }
        }
        if let Some(wtt) = &idx.wtt {
            // Every token is of type 0 (one segment).
            let t0 = &p[wtt.start..wtt.start + c];
            emb[..n * c].par_chunks_mut(c).for_each(|row| residual_forward(row, t0));
        }
        if let Some(en) = &idx.emb_norm {
            norm_forward(cfg, p, &mut a.x0, &mut a.emb_mean, &mut a.emb_rstd, &a.emb_raw, en, n);
        }
        let rope = matches!(cfg.position, Position::Rope { .. });
        let post = cfg.norm_position == NormPosition::Post;
        let shape = self.attn_shape(b, t);
        let bias = |r: &Option<std::ops::Range<usize>>| r.clone().map(|r| &p[r]);
        for (li, wi) in idx.layers.iter().enumerate() {
            let (prev, rest) = a.layers.split_at_mut(li);
            let x: &[f32] = if li == 0 { &a.x0 } else { block_output(post, &prev[li - 1]) };
            let l = &mut rest[0];
            // Attention reads N1(x) (pre-norm) or x itself (post-norm).
            if !post {
                norm_forward(cfg, p, &mut l.ln1, &mut l.mean1, &mut l.rstd1, x, &wi.norm1, n);
            }
            let attn_in: &[f32] = if post { x } else { &l.ln1 };
            matmul_forward(&mut l.qkv, attn_in, &p[wi.qkv.w.clone()], bias(&wi.qkv.b), n, c, w, lay);
            if let Some(lo) = lora.as_deref_mut() {
                lo.forward(li, Site::Qkv, &mut l.qkv, attn_in, n, w);
            }
            if rope {
                rope_forward(&mut l.qkv, &a.cos, &a.sin, b, t, w, 0, nh, hd, 0);
                rope_forward(&mut l.qkv, &a.cos, &a.sin, b, t, w, at, nkv, hd, 0);
            }
            flash_forward(&mut l.atty, &mut l.lse, &mut a.flash, &l.qkv, shape, &a.key_lens, matmul_precision());
            matmul_forward(&mut l.res2, &l.atty, &p[wi.proj.w.clone()], bias(&wi.proj.b), n, at, c, lay);
            if let Some(lo) = lora.as_deref_mut() {
                lo.forward(li, Site::Proj, &mut l.res2, &l.atty, n, c);
            }
            residual_forward(&mut l.res2[..n * c], &x[..n * c]);
            // Pre: N2(res2) feeds the MLP. Post: N1(res2) is both the MLP's
            // input and its residual.
            let n_mid = if post { &wi.norm1 } else { &wi.norm2 };
            norm_forward(cfg, p, &mut l.ln2, &mut l.mean2, &mut l.rstd2, &l.res2, n_mid, n);
            matmul_forward(&mut l.h, &l.ln2, &p[wi.up.w.clone()], bias(&wi.up.b), n, c, f, lay);
            if let Some(lo) = lora.as_deref_mut() {
                lo.forward(li, Site::Up, &mut l.h, &l.ln2, n, f);
            }
            match (&wi.gate, cfg.mlp) {
                (Some(g), _) => {
                    matmul_forward(&mut l.gate, &l.ln2, &p[g.w.clone()], None, n, c, f, lay);
                    if let Some(lo) = lora.as_deref_mut() {
                        lo.forward(li, Site::Gate, &mut l.gate, &l.ln2, n, f);
                    }
                    swiglu_forward(&mut l.act[..n * f], &l.gate[..n * f], &l.h[..n * f]);
                }
                (None, Mlp::GeluErf) => gelu_erf_forward(&mut l.act[..n * f], &l.h[..n * f]),
                (None, _) => gelu_forward(&mut l.act[..n * f], &l.h[..n * f]),
            }
            matmul_forward(&mut l.res3, &l.act, &p[wi.down.w.clone()], bias(&wi.down.b), n, f, c, lay);
            if let Some(lo) = lora.as_deref_mut() {
                lo.forward(li, Site::Down, &mut l.res3, &l.act, n, c);
            }
            let skip: &[f32] = if post { &l.ln2 } else { &l.res2 };
            residual_forward(&mut l.res3[..n * c], &skip[..n * c]);
            if post {
                norm_forward(cfg, p, &mut l.ln1, &mut l.mean1, &mut l.rstd1, &l.res3, &wi.norm2, n);
            }
        }
        let last: &[f32] = if cfg.n_layer == 0 { &a.x0 } else { block_output(post, &a.layers[cfg.n_layer - 1]) };
        let normed: &[f32] = match &idx.norm_f {
            Some(nf) => {
                norm_forward(cfg, p, &mut a.lnf, &mut a.lnf_mean, &mut a.lnf_rstd, last, nf, n);
                &a.lnf
            }
            None => last,
        };
        let Some(head) = &idx.head else { return };
        matmul_forward(&mut a.logits, normed, &p[head.clone()], None, n, c, v, OutIn);
    }

    /// Accumulates d(loss_scale * mean loss)/d(params) into the gradients.
    /// `loss_scale` is 1 / grad_accum_steps when accumulating micro-batches.
    pub fn backward(&mut self, loss_scale: f32) -> Result<()> {
        attn_kernels::in_pool(|| self.backward_in_pool(loss_scale))
    }

    fn backward_in_pool(&mut self, loss_scale: f32) -> Result<()> {
        if !self.has_targets {
            return Err(ModelError::InvalidConfig("backward needs a forward pass with targets first".into()));
        }
        self.has_targets = false; // the logits buffer is about to become d(logits)
        self.ensure_grads();
        let mut a = self.acts.take().expect("forward ran");
        let mut g = std::mem::take(&mut self.grads);
        let mut lora = self.lora.take();
        let (b, t) = self.last_bt;
        let d = loss_scale / labelled_count(&a.targets[..b * t]).max(1) as f32;
        self.backward_blocks(&mut a, &mut g, lora.as_mut(), Start::Loss(d), b, t);
        self.lora = lora;
        self.grads = g;
        self.acts = Some(a);
        Ok(())
    }

    /// `g` is empty when the base is frozen (LoRA): then only the inputs'
    /// gradients flow, to reach the adapters.
    pub(super) fn backward_blocks(&self, a: &mut Acts, g: &mut [f32], mut lora: Option<&mut Lora>, start: Start<'_>, b: usize, t: usize) {
        let cfg = &self.config;
        let (c, v, w, at, f) = (cfg.n_embd, cfg.vocab_size, cfg.qkv_width(), cfg.attn_width(), cfg.d_ff);
        let (nh, nkv, hd) = (cfg.n_head, cfg.n_kv_head, cfg.head_dim);
        let n = b * t;
        let (p, idx, lay) = (&self.params, &self.idx, self.layout_kind());
        let post = cfg.norm_position == NormPosition::Post;
        let last: &[f32] = if cfg.n_layer == 0 { &a.x0 } else { block_output(post, &a.layers[cfg.n_layer - 1]) };
        // dres collects the final norm's d(input) (it adds); every other
        // buffer's first product writes it, so only dres starts at zero.
        if idx.norm_f.is_some() {
            zero(&mut a.dres[..n * c]);
        }
        match start {
            Start::Loss(d) => {
                let head = idx.head.clone().expect("forward refused targets without a head");
                a.dlosses[..n].iter_mut().zip(&a.targets[..n]).for_each(|(dl, &tg)| *dl = if tg == IGNORE { 0.0 } else { d });
                crossentropy_backward_inplace(&mut a.logits, &a.lse, &a.targets, &a.dlosses, n, v);
                match &idx.norm_f {
                    Some(nf) => {
                        matmul_backward_set(Some(&mut a.dc), grad_view(g, head.clone()), None, &a.logits, &a.lnf, &p[head.clone()], n, c, v, OutIn);
                        norm_backward(self, g, &mut a.dres, &a.dc, last, nf, &a.lnf_mean, &a.lnf_rstd, n);
                    }
                    None => matmul_backward_set(Some(&mut a.dres), grad_view(g, head.clone()), None, &a.logits, last, &p[head.clone()], n, c, v, OutIn),
                }
            }
            // d(the final hidden states), from a head outside the LM path.
            Start::Hidden(dh) => match &idx.norm_f {
                Some(nf) => norm_backward(self, g, &mut a.dres, dh, last, nf, &a.lnf_mean, &a.lnf_rstd, n),
                None => a.dres[..n * c].copy_from_slice(&dh[..n * c]),
            },
        }
        let rope = matches!(cfg.position, Position::Rope { .. });
        let shape = self.attn_shape(b, t);
        for (li, wi) in idx.layers.iter().enumerate().rev() {
            let x: &[f32] = if li == 0 { &a.x0 } else { block_output(post, &a.layers[li - 1]) };
            let l = &a.layers[li];
            // d(res3): for pre-norm it is dres itself (the residual stream);
            // for post-norm, back through the output norm into dc.
            let dres3: &[f32] = if post {
                zero(&mut a.dc[..n * c]);
                norm_backward(self, g, &mut a.dc, &a.dres, &l.res3, &wi.norm2, &l.mean1, &l.rstd1, n);
                &a.dc
            } else {
                &a.dres
            };
            // res3 = skip + down(act(up(ln2)))
            let (dw, db) = lin_mut(g, &wi.down);
            matmul_backward_set(Some(&mut a.df1), dw, db, dres3, &l.act, &p[wi.down.w.clone()], n, f, c, lay);
            if let Some(lo) = lora.as_deref_mut() {
                lo.backward(li, Site::Down, dres3, &l.act, &mut a.df1, n, c);
            }
            // d(ln2) collects the MLP branch, plus the residual when post-norm.
            // Pre-norm: the first product writes it; post-norm: it starts as
            // the residual's share and every product adds.
            let mut dln2 = std::mem::take(&mut a.da_ln2);
            if post {
                dln2[..n * c].copy_from_slice(&dres3[..n * c]);
            }
            let first = if post { matmul_backward } else { matmul_backward_set };
            match (&wi.gate, cfg.mlp) {
                (Some(gate), _) => {
                    swiglu_backward(&mut a.df2[..n * f], &mut a.df3[..n * f], &a.df1[..n * f], &l.gate[..n * f], &l.h[..n * f]);
                    first(Some(&mut dln2), grad_view(g, gate.w.clone()), None, &a.df2, &l.ln2, &p[gate.w.clone()], n, c, f, lay);
                    let (dw, db) = lin_mut(g, &wi.up);
                    matmul_backward(Some(&mut dln2), dw, db, &a.df3, &l.ln2, &p[wi.up.w.clone()], n, c, f, lay);
                    if let Some(lo) = lora.as_deref_mut() {
                        lo.backward(li, Site::Gate, &a.df2, &l.ln2, &mut dln2, n, f);
                        lo.backward(li, Site::Up, &a.df3, &l.ln2, &mut dln2, n, f);
                    }
                }
                (None, mlp) => {
                    if mlp == Mlp::GeluErf {
                        gelu_erf_backward(&mut a.df2[..n * f], &l.h[..n * f], &a.df1[..n * f]);
                    } else {
                        gelu_backward(&mut a.df2[..n * f], &l.h[..n * f], &a.df1[..n * f]);
                    }
                    let (dw, db) = lin_mut(g, &wi.up);
                    first(Some(&mut dln2), dw, db, &a.df2, &l.ln2, &p[wi.up.w.clone()], n, c, f, lay);
                    if let Some(lo) = lora.as_deref_mut() {
                        lo.backward(li, Site::Up, &a.df2, &l.ln2, &mut dln2, n, f);
                    }
                }
            }
            // ln2 = N(res2): d(res2) adds into dres (pre-norm, where dres
            // already holds the residual's share) or into a zeroed dres (post).
            if post {
                zero(&mut a.dres[..n * c]);
            }
            let n_mid = if post { &wi.norm1 } else { &wi.norm2 };
            norm_backward(self, g, &mut a.dres, &dln2, &l.res2, n_mid, &l.mean2, &l.rstd2, n);
            a.da_ln2 = dln2;
            // res2 = x + proj(attention(rope(qkv(attn_in)))); dres is d(res2),
            // and stays as the residual's share of d(x).
            let (dw, db) = lin_mut(g, &wi.proj);
            matmul_backward_set(Some(&mut a.da), dw, db, &a.dres, &l.atty, &p[wi.proj.w.clone()], n, at, c, lay);
            if let Some(lo) = lora.as_deref_mut() {
                lo.backward(li, Site::Proj, &a.dres, &l.atty, &mut a.da, n, c);
            }
            zero(&mut a.dqkv[..n * w]);
            flash_backward(&mut a.dqkv, &mut a.flash, &a.da, &l.qkv, &l.atty, &l.lse, shape, &a.key_lens, matmul_precision());
            if rope {
                rope_backward(&mut a.dqkv, &a.cos, &a.sin, b, t, w, 0, nh, hd, 0);
                rope_backward(&mut a.dqkv, &a.cos, &a.sin, b, t, w, at, nkv, hd, 0);
            }
            let (dw, db) = lin_mut(g, &wi.qkv);
            if post {
                matmul_backward(Some(&mut a.dres), dw, db, &a.dqkv, x, &p[wi.qkv.w.clone()], n, c, w, lay);
                if let Some(lo) = lora.as_deref_mut() {
                    lo.backward(li, Site::Qkv, &a.dqkv, x, &mut a.dres, n, w);
                }
            } else {
                matmul_backward_set(Some(&mut a.dc), dw, db, &a.dqkv, &l.ln1, &p[wi.qkv.w.clone()], n, c, w, lay);
                if let Some(lo) = lora.as_deref_mut() {
                    lo.backward(li, Site::Qkv, &a.dqkv, &l.ln1, &mut a.dc, n, w);
                }
                norm_backward(self, g, &mut a.dres, &a.dc, x, &wi.norm1, &l.mean1, &l.rstd1, n);
            }
        }
        // dres is d(x0); back through the embedding norm when there is one.
        let demb: &[f32] = match &idx.emb_norm {
            Some(en) => {
                zero(&mut a.dc[..n * c]);
                norm_backward(self, g, &mut a.dc, &a.dres, &a.emb_raw, en, &a.emb_mean, &a.emb_rstd, n);
                &a.dc
            }
            None => &a.dres,
        };
        if g.is_empty() {
            return; // a frozen base: no embedding gradients
        }
        if let Some(wtt) = &idx.wtt {
            let dt0 = &mut g[wtt.start..wtt.start + c];
            for row in demb[..n * c].chunks_exact(c) {
                residual_forward(dt0, row);
            }
        }
        match &idx.wpe {
            Some(wpe) => {
                let (dwte, dwpe) = crate::params::two_mut(g, idx.wte.clone(), wpe.clone());
                embedding_backward(dwte, Some(dwpe), demb, &a.tokens, b, t, c);
            }
            None => embedding_backward(&mut g[idx.wte.clone()], None, demb, &a.tokens, b, t, c),
        }
    }

    pub(super) fn attn_shape(&self, b: usize, t: usize) -> AttnShape {
        let cfg = &self.config;
        AttnShape { b, t, nh: cfg.n_head, nkv: cfg.n_kv_head, hs: cfg.head_dim, causal: cfg.causal }
    }
}

impl Transformer {
    /// Moves the activations out (to run a pass that borrows the model) and back.
    pub(super) fn take_acts(&mut self) -> Option<Acts> {
        self.acts.take()
    }
    pub(super) fn put_acts(&mut self, a: Acts) {
        self.acts = Some(a);
    }
    pub(super) fn take_grads(&mut self) -> Vec<f32> {
        self.ensure_grads_pub();
        std::mem::take(&mut self.grads)
    }
    pub(super) fn put_grads(&mut self, g: Vec<f32>) {
        self.grads = g;
    }
    pub(super) fn set_last(&mut self, b: usize, t: usize) {
        self.last_bt = (b, t);
        self.has_targets = false;
    }
    /// Refreshes the rotary tables of `a` for a sequence of `t` when they
    /// depend on it (dynamic scaling).
    pub(super) fn refresh_rope(&self, a: &mut Acts, t: usize) {
        if self.rope_is_dynamic() && a.rope_len != t {
            (a.cos, a.sin) = self.rope_tables(t, t);
            a.rope_len = t;
        }
    }
}

/// Where the backward pass starts.
pub(super) enum Start<'a> {
    /// The next-token loss: d(loss)/d(each labelled position's loss), the
    /// scale over the count of labelled positions the mean is over.
    Loss(f32),
    /// d(final hidden states) (B, T, C): the output of the final norm, or of
    /// the last block when there is none.
    Hidden(&'a [f32]),
}

/// Positions that carry a label.
pub(super) fn labelled_count(targets: &[u32]) -> usize {
    targets.iter().filter(|&&x| x != IGNORE).count()
}
