//! The GPT-2 architecture: pre-LayerNorm blocks, learned or sinusoidal
//! positions, GELU MLP, and an output head tied to the token embedding.
//!
//! `forward` saves every activation the backward pass needs; `backward` calls
//! the kernels in exactly the reverse order, so the two read side by side.

use attn_kernels::attention::{attention_backward, attention_forward, AttnShape};
use attn_kernels::crossentropy::{crossentropy_backward_inplace, crossentropy_forward};
use attn_kernels::embedding::{embedding_backward, embedding_forward, sinusoidal_table};
use attn_kernels::gelu::{gelu_backward, gelu_forward};
use attn_kernels::layernorm::{layernorm_backward, layernorm_forward};
use attn_kernels::matmul::{matmul_backward, matmul_forward, WeightLayout::*};
use attn_kernels::residual::residual_forward;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use crate::error::{ModelError, Result};
use crate::params::{two_mut, GptIndex, ParamKind, ParamLayout};
use crate::{GptConfig, PositionEncoding};

/// Activations of one block, kept for the backward pass.
struct LayerActs {
    ln1: Vec<f32>,      // (N, C)
    ln1_mean: Vec<f32>, // (N)
    ln1_rstd: Vec<f32>, // (N)
    qkv: Vec<f32>,      // (N, 3C)
    atty: Vec<f32>,     // (N, C)
    att: Vec<f32>,      // (B, NH, T, T)
    res2: Vec<f32>,     // (N, C) residual after attention
    ln2: Vec<f32>,      // (N, C)
    ln2_mean: Vec<f32>, // (N)
    ln2_rstd: Vec<f32>, // (N)
    fch: Vec<f32>,      // (N, 4C)
    fch_gelu: Vec<f32>, // (N, 4C)
    res3: Vec<f32>,     // (N, C) residual after the MLP: the block's output
}

/// Every buffer forward and backward touch, allocated once for the largest
/// (B, T) so that the training loop allocates nothing.
struct Acts {
    b: usize,
    t: usize,
    tokens: Vec<u32>,  // (N)
    targets: Vec<u32>, // (N)
    encoded: Vec<f32>, // (N, C)
    layers: Vec<LayerActs>,
    lnf: Vec<f32>,      // (N, C)
    lnf_mean: Vec<f32>, // (N)
    lnf_rstd: Vec<f32>, // (N)
    logits: Vec<f32>,   // (N, V); d(logits) after backward
    losses: Vec<f32>,   // (N)
    lse: Vec<f32>,      // (N)
    dlosses: Vec<f32>,  // (N)
    // Backward scratch, reused by every layer.
    dres: Vec<f32>,  // (N, C) gradient of the residual stream
    dc: Vec<f32>,    // (N, C)
    d3c: Vec<f32>,   // (N, 3C)
    d4c_a: Vec<f32>, // (N, 4C)
    d4c_b: Vec<f32>, // (N, 4C)
    datt: Vec<f32>,  // (B, NH, T, T)
}

impl Acts {
    fn new(cfg: &GptConfig, b: usize, t: usize) -> Self {
        let (n, c, nh, v) = (b * t, cfg.n_embd, cfg.n_head, cfg.vocab_size);
        let z = |len: usize| vec![0.0f32; len];
        let layers = (0..cfg.n_layer)
            .map(|_| LayerActs {
                ln1: z(n * c),
                ln1_mean: z(n),
                ln1_rstd: z(n),
                qkv: z(n * 3 * c),
                atty: z(n * c),
                att: z(b * nh * t * t),
                res2: z(n * c),
                ln2: z(n * c),
                ln2_mean: z(n),
                ln2_rstd: z(n),
                fch: z(n * 4 * c),
                fch_gelu: z(n * 4 * c),
                res3: z(n * c),
            })
            .collect();
        Acts {
            b,
            t,
            tokens: vec![0; n],
            targets: vec![0; n],
            encoded: z(n * c),
            layers,
            lnf: z(n * c),
            lnf_mean: z(n),
            lnf_rstd: z(n),
            logits: z(n * v),
            losses: z(n),
            lse: z(n),
            dlosses: z(n),
            dres: z(n * c),
            dc: z(n * c),
            d3c: z(n * 3 * c),
            d4c_a: z(n * 4 * c),
            d4c_b: z(n * 4 * c),
            datt: z(b * nh * t * t),
        }
    }
}

/// A GPT-2-architecture model with its parameters, gradients and activations.
pub struct Gpt {
    pub config: GptConfig,
    pub layout: ParamLayout,
    pub(crate) idx: GptIndex,
    /// All parameters, laid out by `layout`.
    pub params: Vec<f32>,
    /// Gradients, same layout. Backward accumulates; call `zero_grad` between steps.
    pub grads: Vec<f32>,
    /// The fixed sinusoidal table (maxT, C), or empty for learned positions.
    pub(crate) pos_table: Vec<f32>,
    acts: Option<Acts>,
    /// (B, T) of the last forward pass.
    last_bt: (usize, usize),
    has_targets: bool,
}

impl Gpt {
    /// A model with GPT-2's initialisation: N(0, 0.02) weights, the residual
    /// projections scaled by 1/sqrt(2 * n_layer), zero biases, unit norms.
    pub fn new(config: GptConfig, seed: u64) -> Result<Self> {
        let mut m = Self::zeros(config)?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let std = 0.02f32;
        let proj_std = std / (2.0 * m.config.n_layer as f32).sqrt();
        for e in &m.layout.entries {
            let p = &mut m.params[e.range()];
            match e.kind {
                ParamKind::Norm => p.fill(1.0),
                ParamKind::Bias => p.fill(0.0),
                ParamKind::Matrix | ParamKind::Embedding => {
                    let s = if e.name.ends_with("c_proj.weight") { proj_std } else { std };
                    let dist = Normal::new(0.0, s).expect("positive std");
                    p.iter_mut().for_each(|x| *x = dist.sample(&mut rng));
                }
            }
        }
        Ok(m)
    }

    /// A model whose parameters are all zero, to be filled by a loader.
    pub fn zeros(config: GptConfig) -> Result<Self> {
        config.validate()?;
        let (layout, idx) = ParamLayout::gpt_with_index(&config);
        let total = layout.total();
        let pos_table = match config.position {
            PositionEncoding::Learned => Vec::new(),
            PositionEncoding::Sinusoidal => {
                let mut t = vec![0.0; config.n_ctx * config.n_embd];
                sinusoidal_table(&mut t, config.n_ctx, config.n_embd);
                t
            }
        };
        Ok(Gpt { config, layout, idx, params: vec![0.0; total], grads: vec![0.0; total], pos_table, acts: None, last_bt: (0, 0), has_targets: false })
    }

    pub fn zero_grad(&mut self) {
        self.grads.fill(0.0);
    }

    /// Make sure activation buffers can hold (B, T); reallocates only when they grow.
    pub fn reserve(&mut self, b: usize, t: usize) {
        let fits = self.acts.as_ref().is_some_and(|a| a.b * a.t >= b * t && a.b * a.t * a.t >= b * t * t);
        if !fits {
            self.acts = None; // free before allocating the larger set
            self.acts = Some(Acts::new(&self.config, b, t));
        }
    }

    fn check_tokens(&self, what: &str, ids: &[u32]) -> Result<()> {
        let v = self.config.vocab_size as u32;
        if let Some(bad) = ids.iter().find(|&&x| x >= v) {
            return Err(ModelError::InvalidConfig(format!("{what} id {bad} is out of range for vocab_size {v}")));
        }
        Ok(())
    }

    /// Runs the model on `tokens` (B, T). With `targets` (B, T) it also computes
    /// the mean cross-entropy, which it returns, and prepares for `backward`.
    pub fn forward(&mut self, tokens: &[u32], targets: Option<&[u32]>, b: usize, t: usize) -> Result<Option<f32>> {
        let cfg = self.config.clone();
        let (c, nh, v) = (cfg.n_embd, cfg.n_head, cfg.vocab_size);
        let n = b * t;
        if t == 0 || b == 0 || tokens.len() != n {
            return Err(ModelError::InvalidConfig(format!("forward needs B*T = {b}*{t} tokens, got {}", tokens.len())));
        }
        if t > cfg.n_ctx {
            return Err(ModelError::InvalidConfig(format!("sequence length {t} exceeds the model's context of {} tokens", cfg.n_ctx)));
        }
        self.check_tokens("token", tokens)?;
        if let Some(tg) = targets {
            if tg.len() != n {
                return Err(ModelError::InvalidConfig(format!("targets must have B*T = {n} entries, got {}", tg.len())));
            }
            self.check_tokens("target", tg)?;
        }
        self.reserve(b, t);
        let Gpt { params: p, idx, pos_table, acts, .. } = self;
        let a = acts.as_mut().expect("reserved");
        a.tokens[..n].copy_from_slice(tokens);
        let pos: &[f32] = match &idx.wpe {
            Some(r) => &p[r.clone()],
            None => pos_table,
        };
        embedding_forward(&mut a.encoded, tokens, &p[idx.wte.clone()], pos, b, t, c);
        let shape = AttnShape { b, t, c, nh, causal: true };
        let eps = cfg.layer_norm_eps;
        for (li, w) in idx.layers.iter().enumerate() {
            let (prev, rest) = a.layers.split_at_mut(li);
            let res_in: &[f32] = if li == 0 { &a.encoded } else { &prev[li - 1].res3 };
            let l = &mut rest[0];
            layernorm_forward(&mut l.ln1, &mut l.ln1_mean, &mut l.ln1_rstd, res_in, &p[w.ln1_w.clone()], &p[w.ln1_b.clone()], n, c, eps);
            matmul_forward(&mut l.qkv, &l.ln1, &p[w.qkv_w.clone()], Some(&p[w.qkv_b.clone()]), n, c, 3 * c, InOut);
            attention_forward(&mut l.atty, &mut l.att, &l.qkv, shape);
            matmul_forward(&mut l.res2, &l.atty, &p[w.proj_w.clone()], Some(&p[w.proj_b.clone()]), n, c, c, InOut);
            residual_forward(&mut l.res2[..n * c], &res_in[..n * c]);
            layernorm_forward(&mut l.ln2, &mut l.ln2_mean, &mut l.ln2_rstd, &l.res2, &p[w.ln2_w.clone()], &p[w.ln2_b.clone()], n, c, eps);
            matmul_forward(&mut l.fch, &l.ln2, &p[w.fc_w.clone()], Some(&p[w.fc_b.clone()]), n, c, 4 * c, InOut);
            gelu_forward(&mut l.fch_gelu[..n * 4 * c], &l.fch[..n * 4 * c]);
            matmul_forward(&mut l.res3, &l.fch_gelu, &p[w.fcproj_w.clone()], Some(&p[w.fcproj_b.clone()]), n, 4 * c, c, InOut);
            residual_forward(&mut l.res3[..n * c], &l.res2[..n * c]);
        }
        let last = &a.layers[cfg.n_layer - 1].res3;
        layernorm_forward(&mut a.lnf, &mut a.lnf_mean, &mut a.lnf_rstd, last, &p[idx.lnf_w.clone()], &p[idx.lnf_b.clone()], n, c, eps);
        matmul_forward(&mut a.logits, &a.lnf, &p[idx.wte.clone()], None, n, c, v, OutIn);
        self.last_bt = (b, t);
        self.has_targets = targets.is_some();
        let Some(tg) = targets else { return Ok(None) };
        a.targets[..n].copy_from_slice(tg);
        crossentropy_forward(&mut a.losses, &mut a.lse, &a.logits, tg, n, v);
        let mean = a.losses[..n].iter().map(|&x| x as f64).sum::<f64>() / n as f64;
        Ok(Some(mean as f32))
    }

    /// Logits (B, T, V) of the last forward pass. Overwritten by `backward`.
    pub fn logits(&self) -> &[f32] {
        let (b, t) = self.last_bt;
        self.acts.as_ref().map_or(&[], |a| &a.logits[..b * t * self.config.vocab_size])
    }

    /// Layer `l`'s packed Q, K, V (B, T, 3C) from the last forward pass; the
    /// KV cache copies K and V from here after a prefill.
    pub(crate) fn qkv_activations(&self, l: usize) -> &[f32] {
        let (b, t) = self.last_bt;
        self.acts.as_ref().map_or(&[], |a| &a.layers[l].qkv[..b * t * 3 * self.config.n_embd])
    }

    /// Attention probabilities (B, NH, T, T) of layer `l` from the last
    /// forward pass: row q holds how much query q attends to each key; a
    /// causal model's entries above the diagonal are zero.
    pub fn attention_probs(&self, l: usize) -> &[f32] {
        let (b, t) = self.last_bt;
        self.acts.as_ref().map_or(&[], |a| &a.layers[l].att[..b * self.config.n_head * t * t])
    }

    /// The residual stream (B, T, C) entering block `l` of the last forward
    /// pass: `l = 0` is the embeddings, `l = n_layer` the last block's output.
    pub fn residual_stream(&self, l: usize) -> &[f32] {
        let (b, t) = self.last_bt;
        let n = b * t * self.config.n_embd;
        self.acts.as_ref().map_or(&[], |a| if l == 0 { &a.encoded[..n] } else { &a.layers[l - 1].res3[..n] })
    }

    /// Token embeddings (V, C), which are also the output head.
    pub fn token_embeddings(&self) -> &[f32] {
        &self.params[self.idx.wte.clone()]
    }

    /// The output head applied to any residual stream `hidden` (N, C): the
    /// final LayerNorm, then the tied embedding. Returns logits (N, V). For
    /// the last block's output this is exactly the model's own logits.
    pub fn head(&self, hidden: &[f32], n: usize) -> Vec<f32> {
        let (c, v) = (self.config.n_embd, self.config.vocab_size);
        let (mut ln, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
        let p = &self.params;
        layernorm_forward(
            &mut ln,
            &mut mean,
            &mut rstd,
            &hidden[..n * c],
            &p[self.idx.lnf_w.clone()],
            &p[self.idx.lnf_b.clone()],
            n,
            c,
            self.config.layer_norm_eps,
        );
        let mut logits = vec![0.0; n * v];
        matmul_forward(&mut logits, &ln, &p[self.idx.wte.clone()], None, n, c, v, OutIn);
        logits
    }

    /// Per-position losses (B, T) of the last forward pass with targets.
    pub fn losses(&self) -> &[f32] {
        let (b, t) = self.last_bt;
        self.acts.as_ref().map_or(&[], |a| &a.losses[..b * t])
    }

    /// Accumulates d(loss_scale * mean loss)/d(params) into `grads`.
    /// `loss_scale` is 1 / grad_accum_steps when accumulating micro-batches.
    pub fn backward(&mut self, loss_scale: f32) -> Result<()> {
        if !self.has_targets {
            return Err(ModelError::InvalidConfig("backward needs a forward pass with targets first".into()));
        }
        self.has_targets = false; // the logits buffer is about to become d(logits)
        let cfg = self.config.clone();
        let (c, nh, v) = (cfg.n_embd, cfg.n_head, cfg.vocab_size);
        let (b, t) = self.last_bt;
        let n = b * t;
        let Gpt { params: p, grads: g, idx, acts, .. } = self;
        let a = acts.as_mut().expect("forward ran");
        a.dlosses[..n].fill(loss_scale / n as f32);
        crossentropy_backward_inplace(&mut a.logits, &a.lse, &a.targets, &a.dlosses, n, v);
        let dlnf = &mut a.dc;
        dlnf.fill(0.0);
        matmul_backward(Some(dlnf), &mut g[idx.wte.clone()], None, &a.logits, &a.lnf, &p[idx.wte.clone()], n, c, v, OutIn);
        a.dres.fill(0.0);
        let last = &a.layers[cfg.n_layer - 1].res3;
        let (dw, db) = two_mut(g, idx.lnf_w.clone(), idx.lnf_b.clone());
        layernorm_backward(&mut a.dres, dw, db, &a.dc, last, &p[idx.lnf_w.clone()], &a.lnf_mean, &a.lnf_rstd, n, c);
        let shape = AttnShape { b, t, c, nh, causal: true };
        for (li, w) in idx.layers.iter().enumerate().rev() {
            let res_in: &[f32] = if li == 0 { &a.encoded } else { &a.layers[li - 1].res3 };
            let l = &a.layers[li];
            // res3 = res2 + mlp(ln2(res2)): dres flows unchanged into both branches.
            a.d4c_a.fill(0.0);
            let (dw, db) = two_mut(g, w.fcproj_w.clone(), w.fcproj_b.clone());
            matmul_backward(Some(&mut a.d4c_a), dw, Some(db), &a.dres, &l.fch_gelu, &p[w.fcproj_w.clone()], n, 4 * c, c, InOut);
            a.d4c_b.fill(0.0);
            gelu_backward(&mut a.d4c_b[..n * 4 * c], &l.fch[..n * 4 * c], &a.d4c_a[..n * 4 * c]);
            a.dc.fill(0.0);
            let (dw, db) = two_mut(g, w.fc_w.clone(), w.fc_b.clone());
            matmul_backward(Some(&mut a.dc), dw, Some(db), &a.d4c_b, &l.ln2, &p[w.fc_w.clone()], n, c, 4 * c, InOut);
            let (dw, db) = two_mut(g, w.ln2_w.clone(), w.ln2_b.clone());
            layernorm_backward(&mut a.dres, dw, db, &a.dc, &l.res2, &p[w.ln2_w.clone()], &l.ln2_mean, &l.ln2_rstd, n, c);
            // res2 = res_in + attn(ln1(res_in))
            a.dc.fill(0.0);
            let (dw, db) = two_mut(g, w.proj_w.clone(), w.proj_b.clone());
            matmul_backward(Some(&mut a.dc), dw, Some(db), &a.dres, &l.atty, &p[w.proj_w.clone()], n, c, c, InOut);
            a.d3c.fill(0.0);
            attention_backward(&mut a.d3c, &mut a.datt, &a.dc, &l.qkv, &l.att, shape);
            a.dc.fill(0.0);
            let (dw, db) = two_mut(g, w.qkv_w.clone(), w.qkv_b.clone());
            matmul_backward(Some(&mut a.dc), dw, Some(db), &a.d3c, &l.ln1, &p[w.qkv_w.clone()], n, c, 3 * c, InOut);
            let (dw, db) = two_mut(g, w.ln1_w.clone(), w.ln1_b.clone());
            layernorm_backward(&mut a.dres, dw, db, &a.dc, res_in, &p[w.ln1_w.clone()], &l.ln1_mean, &l.ln1_rstd, n, c);
        }
        match &idx.wpe {
            Some(wpe) => {
                let (dwte, dwpe) = two_mut(g, idx.wte.clone(), wpe.clone());
                embedding_backward(dwte, Some(dwpe), &a.dres, &a.tokens, b, t, c);
            }
            None => embedding_backward(&mut g[idx.wte.clone()], None, &a.dres, &a.tokens, b, t, c),
        }
        Ok(())
    }
}
