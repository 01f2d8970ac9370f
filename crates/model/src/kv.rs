//! Decoding with a KV cache.
//!
//! `prefill` runs the prompt through the batched forward pass and keeps each
//! layer's keys and values; `decode` then runs one token at a time: every
//! dense layer is a matrix-vector product over the weights (so a token costs
//! one pass over the weights, which is the memory-bandwidth bound) and
//! attention reads the cached keys and values instead of recomputing them.

use attn_kernels::attention::attention_decode;
use attn_kernels::gelu::gelu_forward;
use attn_kernels::layernorm::layernorm_forward;
use attn_kernels::matmul::WeightLayout::*;
use attn_kernels::matvec::{matvec_forward, matvec_scratch_len};
use attn_kernels::residual::residual_forward;

use crate::error::{ModelError, Result};
use crate::Gpt;

/// Keys and values of every layer for the positions seen so far, plus the
/// buffers one decoding step needs, allocated once.
pub struct KvCache {
    n_ctx: usize,
    c: usize,
    k: Vec<f32>, // (L, maxT, C)
    v: Vec<f32>, // (L, maxT, C)
    len: usize,
    x: Vec<f32>,          // (C) the residual stream
    ln: Vec<f32>,         // (C)
    qkv: Vec<f32>,        // (3C)
    atty: Vec<f32>,       // (C)
    proj: Vec<f32>,       // (C)
    h: Vec<f32>,          // (4C)
    hg: Vec<f32>,         // (4C)
    scores: Vec<f32>,     // (NH, maxT)
    stats: [Vec<f32>; 2], // mean and rstd of one row
    logits: Vec<f32>,     // (V)
    partials: Vec<f32>,   // (threads - 1, 4C) matvec partial sums
}

impl KvCache {
    pub fn new(model: &Gpt) -> Self {
        let cfg = &model.config;
        let (l, t, c) = (cfg.n_layer, cfg.n_ctx, cfg.n_embd);
        let z = |n: usize| vec![0.0f32; n];
        KvCache {
            n_ctx: t,
            c,
            k: z(l * t * c),
            v: z(l * t * c),
            len: 0,
            x: z(c),
            ln: z(c),
            qkv: z(3 * c),
            atty: z(c),
            proj: z(c),
            h: z(4 * c),
            hg: z(4 * c),
            scores: z(cfg.n_head * t),
            stats: [z(1), z(1)],
            logits: z(cfg.vocab_size),
            partials: z(matvec_scratch_len(4 * c)),
        }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when no further token fits in the model's context.
    pub fn is_full(&self) -> bool {
        self.len == self.n_ctx
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }
}

impl Gpt {
    fn check_cache(&self, cache: &KvCache) -> Result<()> {
        let cfg = &self.config;
        if cache.c != cfg.n_embd || cache.n_ctx != cfg.n_ctx || cache.k.len() != cfg.n_layer * cfg.n_ctx * cfg.n_embd || cache.logits.len() != cfg.vocab_size {
            return Err(ModelError::InvalidConfig("this KV cache was made for a model of another shape".into()));
        }
        Ok(())
    }

    /// Runs `tokens` as one batched forward pass, fills the cache with their
    /// keys and values, and returns the logits (V) for the next token.
    pub fn prefill<'c>(&mut self, cache: &'c mut KvCache, tokens: &[u32]) -> Result<&'c [f32]> {
        let (t, c, v) = (tokens.len(), self.config.n_embd, self.config.vocab_size);
        self.check_cache(cache)?;
        if t == 0 {
            return Err(ModelError::InvalidConfig("prefill needs at least one token".into()));
        }
        self.forward(tokens, None, 1, t)?;
        let n_ctx = cache.n_ctx;
        for l in 0..self.config.n_layer {
            let qkv = self.qkv_activations(l);
            for p in 0..t {
                let dst = (l * n_ctx + p) * c;
                cache.k[dst..dst + c].copy_from_slice(&qkv[p * 3 * c + c..p * 3 * c + 2 * c]);
                cache.v[dst..dst + c].copy_from_slice(&qkv[p * 3 * c + 2 * c..p * 3 * c + 3 * c]);
            }
        }
        cache.len = t;
        cache.logits.copy_from_slice(&self.logits()[(t - 1) * v..t * v]);
        Ok(&cache.logits)
    }

    /// Appends one token at position `cache.len()` and returns the logits (V)
    /// for the token after it.
    pub fn decode<'c>(&self, cache: &'c mut KvCache, token: u32) -> Result<&'c [f32]> {
        let cfg = &self.config;
        let (c, nh, v, n_ctx) = (cfg.n_embd, cfg.n_head, cfg.vocab_size, cache.n_ctx);
        self.check_cache(cache)?;
        let pos = cache.len;
        if pos >= n_ctx {
            return Err(ModelError::InvalidConfig(format!("the KV cache is full: the model's context is {n_ctx} tokens")));
        }
        if token as usize >= v {
            return Err(ModelError::InvalidConfig(format!("token id {token} is out of range for vocab_size {v}")));
        }
        let (p, idx) = (&self.params, &self.idx);
        let eps = cfg.layer_norm_eps;
        let KvCache { k, v: vc, x, ln, qkv, atty, proj, h, hg, scores, stats, logits, partials, .. } = cache;
        let [mean, rstd] = stats;
        let wte = &p[idx.wte.clone()];
        let pos_row: &[f32] = match &idx.wpe {
            Some(r) => &p[r.start + pos * c..r.start + (pos + 1) * c],
            None => &self.pos_table[pos * c..(pos + 1) * c],
        };
        for i in 0..c {
            x[i] = wte[token as usize * c + i] + pos_row[i];
        }
        for (l, w) in idx.layers.iter().enumerate() {
            layernorm_forward(ln, mean, rstd, x, &p[w.ln1_w.clone()], &p[w.ln1_b.clone()], 1, c, eps);
            matvec_forward(qkv, partials, ln, &p[w.qkv_w.clone()], Some(&p[w.qkv_b.clone()]), c, 3 * c, InOut);
            let base = l * n_ctx * c;
            k[base + pos * c..base + (pos + 1) * c].copy_from_slice(&qkv[c..2 * c]);
            vc[base + pos * c..base + (pos + 1) * c].copy_from_slice(&qkv[2 * c..3 * c]);
            attention_decode(atty, scores, &qkv[..c], &k[base..base + n_ctx * c], &vc[base..base + n_ctx * c], pos + 1, c, nh);
            matvec_forward(proj, partials, atty, &p[w.proj_w.clone()], Some(&p[w.proj_b.clone()]), c, c, InOut);
            residual_forward(x, proj);
            layernorm_forward(ln, mean, rstd, x, &p[w.ln2_w.clone()], &p[w.ln2_b.clone()], 1, c, eps);
            matvec_forward(h, partials, ln, &p[w.fc_w.clone()], Some(&p[w.fc_b.clone()]), c, 4 * c, InOut);
            gelu_forward(hg, h);
            matvec_forward(proj, partials, hg, &p[w.fcproj_w.clone()], Some(&p[w.fcproj_b.clone()]), 4 * c, c, InOut);
            residual_forward(x, proj);
        }
        layernorm_forward(ln, mean, rstd, x, &p[idx.lnf_w.clone()], &p[idx.lnf_b.clone()], 1, c, eps);
        matvec_forward(logits, partials, ln, wte, None, c, v, OutIn);
        cache.len = pos + 1;
        Ok(&cache.logits)
    }
}
