//! The Llama architecture (also Qwen2 and the variants that differ only in
//! config): pre-RMSNorm blocks, rotary positions on queries and keys,
//! grouped-query attention, a SwiGLU MLP, and an output head that is either
//! tied to the token embedding or a separate `lm_head`.
//!
//! As in `gpt.rs`, `forward` saves what `backward` needs and `backward` calls
//! the kernels in exactly the reverse order. Grouped-query attention runs on
//! the multi-head kernel: each K/V head is copied to the query heads of its
//! group before attention, and their gradients are summed back after.

use std::ops::Range;
use std::path::Path;

use attn_kernels::attention::{attention_backward, attention_forward, AttnShape};
use attn_kernels::crossentropy::{crossentropy_backward_inplace, crossentropy_forward};
use attn_kernels::matmul::{matmul_backward, matmul_forward, WeightLayout::OutIn};
use attn_kernels::residual::residual_forward;
use attn_kernels::rmsnorm::{rmsnorm_backward, rmsnorm_forward};
use attn_kernels::rope::{rope_backward, rope_forward, rope_table};
use attn_kernels::swiglu::{swiglu_backward, swiglu_forward};
use rayon::prelude::*;

use crate::error::{HfFields, ModelError, Result};
use crate::params::{ParamKind, ParamLayout};

#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub intermediate_size: usize,
    pub max_position: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub tie_word_embeddings: bool,
    /// Biases on the q, k and v projections (Qwen2, or `attention_bias`).
    pub qkv_bias: bool,
    /// "llama" or "qwen2", written back to config.json.
    pub model_type: String,
    /// The config.json this came from (or null), so that saving keeps the
    /// fields attn does not use, such as token ids.
    pub hf: serde_json::Value,
}

impl LlamaConfig {
    /// From a Hugging Face `config.json` (`model_type` "llama" or "qwen2").
    /// Values this implementation does not compute are errors, not ignored.
    pub fn from_hf(v: &serde_json::Value, path: &Path) -> Result<Self> {
        let f = HfFields { v, path };
        let (int, unsupported) = (|k: &str| f.int(k), |field: &str, value: String, hint: &str| f.unsupported(field, value, hint));
        let model_type = v["model_type"].as_str().unwrap_or("").to_string();
        if model_type != "llama" && model_type != "qwen2" {
            return Err(unsupported("model_type", model_type, "the Llama implementation reads \"llama\" and \"qwen2\""));
        }
        let act = v["hidden_act"].as_str().unwrap_or("silu");
        if act != "silu" {
            return Err(unsupported("hidden_act", act.into(), "Llama's MLP is SwiGLU: hidden_act must be \"silu\""));
        }
        if !v["rope_scaling"].is_null() {
            return Err(unsupported(
                "rope_scaling",
                v["rope_scaling"].to_string(),
                "scaled RoPE (long-context variants) is not implemented; remove it only if the model was trained without it",
            ));
        }
        if v["mlp_bias"].as_bool() == Some(true) {
            return Err(unsupported("mlp_bias", "true".into(), "MLP biases are not implemented"));
        }
        let (c, nh) = (int("hidden_size")?, int("num_attention_heads")?);
        let nkv = v["num_key_value_heads"].as_u64().map_or(nh, |x| x as usize);
        if c % nh != 0 || nh % nkv != 0 || (c / nh) % 2 != 0 {
            return Err(ModelError::InvalidConfig(format!(
                "{}: hidden_size {c}, num_attention_heads {nh} and num_key_value_heads {nkv} must divide evenly, with an even head size",
                path.display()
            )));
        }
        if let Some(hd) = v["head_dim"].as_u64().filter(|&hd| hd as usize != c / nh) {
            return Err(unsupported("head_dim", hd.to_string(), "only head_dim = hidden_size / num_attention_heads is supported"));
        }
        Ok(LlamaConfig {
            vocab_size: int("vocab_size")?,
            hidden_size: c,
            num_layers: int("num_hidden_layers")?,
            num_heads: nh,
            num_kv_heads: nkv,
            intermediate_size: int("intermediate_size")?,
            max_position: int("max_position_embeddings")?,
            rms_norm_eps: v["rms_norm_eps"].as_f64().unwrap_or(1e-6) as f32,
            rope_theta: v["rope_theta"].as_f64().unwrap_or(10_000.0) as f32,
            tie_word_embeddings: v["tie_word_embeddings"].as_bool().unwrap_or(false),
            qkv_bias: model_type == "qwen2" || v["attention_bias"].as_bool() == Some(true),
            model_type,
            hf: v.clone(),
        })
    }

    pub fn head_size(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// Width of the packed q | k | v projection.
    pub fn qkv_width(&self) -> usize {
        self.hidden_size + 2 * self.num_kv_heads * self.head_size()
    }
}

/// Where each tensor sits in the flat buffer.
#[derive(Clone, Debug)]
pub(crate) struct LayerIndex {
    pub ln1: Range<usize>,
    pub qkv_w: Range<usize>,         // q, k, v weights, packed: (C + 2 KVC, C)
    pub qkv_b: Option<Range<usize>>, // (C + 2 KVC)
    pub o_w: Range<usize>,
    pub ln2: Range<usize>,
    pub gate_w: Range<usize>,
    pub up_w: Range<usize>,
    pub down_w: Range<usize>,
}

#[derive(Clone, Debug)]
pub(crate) struct Index {
    pub embed: Range<usize>,
    pub layers: Vec<LayerIndex>,
    pub norm: Range<usize>,
    pub head: Range<usize>, // lm_head, or the embedding when tied
}

fn layout(cfg: &LlamaConfig) -> (ParamLayout, Index) {
    let (v, c, i) = (cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size);
    let kvc = cfg.num_kv_heads * cfg.head_size();
    let mut l = ParamLayout::empty();
    let embed = l.push("model.embed_tokens.weight".into(), vec![v, c], ParamKind::Embedding);
    let mut layers = Vec::new();
    for li in 0..cfg.num_layers {
        let p = format!("model.layers.{li}.");
        let ln1 = l.push(format!("{p}input_layernorm.weight"), vec![c], ParamKind::Norm);
        let q = l.push(format!("{p}self_attn.q_proj.weight"), vec![c, c], ParamKind::Matrix);
        l.push_packed(format!("{p}self_attn.k_proj.weight"), vec![kvc, c], ParamKind::Matrix);
        let vw = l.push_packed(format!("{p}self_attn.v_proj.weight"), vec![kvc, c], ParamKind::Matrix);
        let qkv_b = cfg.qkv_bias.then(|| {
            let qb = l.push(format!("{p}self_attn.q_proj.bias"), vec![c], ParamKind::Bias);
            l.push_packed(format!("{p}self_attn.k_proj.bias"), vec![kvc], ParamKind::Bias);
            let vb = l.push_packed(format!("{p}self_attn.v_proj.bias"), vec![kvc], ParamKind::Bias);
            qb.start..vb.end
        });
        layers.push(LayerIndex {
            ln1,
            qkv_w: q.start..vw.end,
            qkv_b,
            o_w: l.push(format!("{p}self_attn.o_proj.weight"), vec![c, c], ParamKind::Matrix),
            ln2: l.push(format!("{p}post_attention_layernorm.weight"), vec![c], ParamKind::Norm),
            gate_w: l.push(format!("{p}mlp.gate_proj.weight"), vec![i, c], ParamKind::Matrix),
            up_w: l.push(format!("{p}mlp.up_proj.weight"), vec![i, c], ParamKind::Matrix),
            down_w: l.push(format!("{p}mlp.down_proj.weight"), vec![c, i], ParamKind::Matrix),
        });
    }
    let norm = l.push("model.norm.weight".into(), vec![c], ParamKind::Norm);
    let head = if cfg.tie_word_embeddings { embed.clone() } else { l.push("lm_head.weight".into(), vec![v, c], ParamKind::Matrix) };
    l.finish();
    (l, Index { embed, layers, norm, head })
}

struct LayerActs {
    ln1: Vec<f32>,   // (N, C)
    rstd1: Vec<f32>, // (N)
    qkv: Vec<f32>,   // (N, C + 2KVC), after RoPE
    qkv3: Vec<f32>,  // (N, 3C): K, V copied to every query head of their group
    att: Vec<f32>,   // (B, NH, T, T)
    atty: Vec<f32>,  // (N, C)
    res2: Vec<f32>,  // (N, C)
    ln2: Vec<f32>,   // (N, C)
    rstd2: Vec<f32>, // (N)
    gate: Vec<f32>,  // (N, I)
    up: Vec<f32>,    // (N, I)
    act: Vec<f32>,   // (N, I)
    res3: Vec<f32>,  // (N, C)
}

struct Acts {
    b: usize,
    t: usize,
    tokens: Vec<u32>,
    targets: Vec<u32>,
    x0: Vec<f32>, // (N, C)
    layers: Vec<LayerActs>,
    lnf: Vec<f32>,    // (N, C)
    rstdf: Vec<f32>,  // (N)
    logits: Vec<f32>, // (N, V)
    losses: Vec<f32>,
    lse: Vec<f32>,
    dlosses: Vec<f32>,
}

/// A Llama-family decoder with its parameters, gradients and activations.
pub struct Llama {
    pub config: LlamaConfig,
    pub layout: ParamLayout,
    pub(crate) idx: Index,
    pub params: Vec<f32>,
    pub grads: Vec<f32>,
    pub(crate) cos: Vec<f32>, // (maxT, HS/2)
    pub(crate) sin: Vec<f32>,
    acts: Option<Acts>,
    last_bt: (usize, usize),
    has_targets: bool,
}

impl LlamaConfig {
    /// A small Llama for training from scratch on a CPU, shaped like the GPT
    /// `baby` preset: 4 layers, 4 query heads sharing 2 KV heads, 128
    /// channels, context 64, tied embeddings. The vocabulary comes from the
    /// tokenizer.
    pub fn baby() -> Self {
        LlamaConfig {
            vocab_size: 65,
            hidden_size: 128,
            num_layers: 4,
            num_heads: 4,
            num_kv_heads: 2,
            intermediate_size: 344,
            max_position: 64,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            tie_word_embeddings: true,
            qkv_bias: false,
            model_type: "llama".into(),
            hf: serde_json::Value::Null,
        }
    }
}

impl Llama {
    /// transformers' initialisation: N(0, 0.02) for matrices and embeddings,
    /// ones for the norms, zeros for biases.
    pub fn new(config: LlamaConfig, seed: u64) -> Self {
        use rand::SeedableRng;
        use rand_distr::{Distribution, Normal};
        let mut m = Self::zeros(config);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let dist = Normal::new(0.0f32, 0.02).expect("positive std");
        for e in &m.layout.entries {
            let p = &mut m.params[e.range()];
            match e.kind {
                ParamKind::Norm => p.fill(1.0),
                ParamKind::Bias => p.fill(0.0),
                ParamKind::Matrix | ParamKind::Embedding => p.iter_mut().for_each(|x| *x = dist.sample(&mut rng)),
            }
        }
        m
    }

    pub fn zeros(config: LlamaConfig) -> Self {
        let (layout, idx) = layout(&config);
        let (cos, sin) = rope_table(config.max_position, config.head_size(), config.rope_theta);
        let total = layout.total();
        Llama { config, layout, idx, params: vec![0.0; total], grads: vec![0.0; total], cos, sin, acts: None, last_bt: (0, 0), has_targets: false }
    }

    fn reserve(&mut self, b: usize, t: usize) {
        if self.acts.as_ref().is_some_and(|a| a.b >= b && a.t >= t) {
            return;
        }
        let cfg = &self.config;
        let (n, c, i) = (b * t, cfg.hidden_size, cfg.intermediate_size);
        let z = |len: usize| vec![0.0f32; len];
        let layers = (0..cfg.num_layers)
            .map(|_| LayerActs {
                ln1: z(n * c),
                rstd1: z(n),
                qkv: z(n * cfg.qkv_width()),
                qkv3: z(n * 3 * c),
                att: z(b * cfg.num_heads * t * t),
                atty: z(n * c),
                res2: z(n * c),
                ln2: z(n * c),
                rstd2: z(n),
                gate: z(n * i),
                up: z(n * i),
                act: z(n * i),
                res3: z(n * c),
            })
            .collect();
        self.acts = Some(Acts {
            b,
            t,
            tokens: vec![0; n],
            targets: vec![0; n],
            x0: z(n * c),
            layers,
            lnf: z(n * c),
            rstdf: z(n),
            logits: z(n * cfg.vocab_size),
            losses: z(n),
            lse: z(n),
            dlosses: z(n),
        });
    }

    /// Runs `tokens` (B, T); with `targets` (B, T), returns the mean cross-entropy.
    pub fn forward(&mut self, tokens: &[u32], targets: Option<&[u32]>, b: usize, t: usize) -> Result<Option<f32>> {
        let cfg = self.config.clone();
        let (c, nh, nkv, hs, v, inter) = (cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_size(), cfg.vocab_size, cfg.intermediate_size);
        let (n, w) = (b * t, cfg.qkv_width());
        if t == 0 || tokens.len() != n || targets.is_some_and(|tg| tg.len() != n) {
            return Err(ModelError::InvalidConfig(format!("forward needs B*T = {b}*{t} tokens (and targets)")));
        }
        if t > cfg.max_position {
            return Err(ModelError::InvalidConfig(format!("sequence length {t} exceeds the model's {} positions", cfg.max_position)));
        }
        if let Some(bad) = tokens.iter().chain(targets.unwrap_or(&[])).find(|&&x| x as usize >= v) {
            return Err(ModelError::InvalidConfig(format!("token id {bad} is out of range for vocab_size {v}")));
        }
        self.reserve(b, t);
        let Llama { params: p, idx, acts, cos, sin, .. } = self;
        let a = acts.as_mut().expect("reserved");
        a.tokens[..n].copy_from_slice(tokens);
        let embed = &p[idx.embed.clone()];
        a.x0[..n * c].par_chunks_mut(c).zip(tokens.par_iter()).for_each(|(row, &id)| row.copy_from_slice(&embed[id as usize * c..][..c]));
        let shape = AttnShape { b, t, c, nh, causal: true };
        let eps = cfg.rms_norm_eps;
        for (li, wi) in idx.layers.iter().enumerate() {
            let (prev, rest) = a.layers.split_at_mut(li);
            let x: &[f32] = if li == 0 { &a.x0 } else { &prev[li - 1].res3 };
            let l = &mut rest[0];
            rmsnorm_forward(&mut l.ln1, &mut l.rstd1, x, &p[wi.ln1.clone()], n, c, eps);
            matmul_forward(&mut l.qkv, &l.ln1, &p[wi.qkv_w.clone()], wi.qkv_b.clone().map(|r| &p[r]), n, c, w, OutIn);
            rope_forward(&mut l.qkv, cos, sin, b, t, w, 0, nh, hs, 0);
            rope_forward(&mut l.qkv, cos, sin, b, t, w, c, nkv, hs, 0);
            expand_kv(&mut l.qkv3, &l.qkv, n, c, nh, nkv, hs);
            attention_forward(&mut l.atty, &mut l.att, &l.qkv3, shape);
            matmul_forward(&mut l.res2, &l.atty, &p[wi.o_w.clone()], None, n, c, c, OutIn);
            residual_forward(&mut l.res2[..n * c], &x[..n * c]);
            rmsnorm_forward(&mut l.ln2, &mut l.rstd2, &l.res2, &p[wi.ln2.clone()], n, c, eps);
            matmul_forward(&mut l.gate, &l.ln2, &p[wi.gate_w.clone()], None, n, c, inter, OutIn);
            matmul_forward(&mut l.up, &l.ln2, &p[wi.up_w.clone()], None, n, c, inter, OutIn);
            swiglu_forward(&mut l.act[..n * inter], &l.gate[..n * inter], &l.up[..n * inter]);
            matmul_forward(&mut l.res3, &l.act, &p[wi.down_w.clone()], None, n, inter, c, OutIn);
            residual_forward(&mut l.res3[..n * c], &l.res2[..n * c]);
        }
        let last: &[f32] = if cfg.num_layers == 0 { &a.x0 } else { &a.layers[cfg.num_layers - 1].res3 };
        rmsnorm_forward(&mut a.lnf, &mut a.rstdf, last, &p[idx.norm.clone()], n, c, eps);
        matmul_forward(&mut a.logits, &a.lnf, &p[idx.head.clone()], None, n, c, v, OutIn);
        self.last_bt = (b, t);
        self.has_targets = targets.is_some();
        let Some(tg) = targets else { return Ok(None) };
        a.targets[..n].copy_from_slice(tg);
        crossentropy_forward(&mut a.losses, &mut a.lse, &a.logits, tg, n, v);
        Ok(Some((a.losses[..n].iter().map(|&x| x as f64).sum::<f64>() / n as f64) as f32))
    }

    /// Logits (B, T, V) of the last forward pass.
    pub fn logits(&self) -> &[f32] {
        let (b, t) = self.last_bt;
        self.acts.as_ref().map_or(&[], |a| &a.logits[..b * t * self.config.vocab_size])
    }

    pub fn zero_grad(&mut self) {
        self.grads.fill(0.0);
    }

    /// Per-position losses (B, T) of the last forward pass with targets.
    pub fn losses(&self) -> &[f32] {
        let (b, t) = self.last_bt;
        self.acts.as_ref().map_or(&[], |a| &a.losses[..b * t])
    }

    /// Layer `l`'s attention probabilities (B, NH, T, T) from the last forward pass.
    pub fn attention_probs(&self, l: usize) -> &[f32] {
        let (b, t) = self.last_bt;
        self.acts.as_ref().map_or(&[], |a| &a.layers[l].att[..b * self.config.num_heads * t * t])
    }

    /// The residual stream (B, T, C) entering block `l` (`l = num_layers`: the last output).
    pub fn residual_stream(&self, l: usize) -> &[f32] {
        let (b, t) = self.last_bt;
        let n = b * t * self.config.hidden_size;
        self.acts.as_ref().map_or(&[], |a| if l == 0 { &a.x0[..n] } else { &a.layers[l - 1].res3[..n] })
    }

    /// Layer `l`'s packed q | k | v (B, T, C + 2 KVC) after RoPE, for the KV cache.
    pub(crate) fn qkv_activations(&self, l: usize) -> &[f32] {
        let (b, t) = self.last_bt;
        self.acts.as_ref().map_or(&[], |a| &a.layers[l].qkv[..b * t * self.config.qkv_width()])
    }

    pub fn token_embeddings(&self) -> &[f32] {
        &self.params[self.idx.embed.clone()]
    }

    /// The final RMSNorm and output head applied to any residual stream
    /// `hidden` (N, C); logits (N, V).
    pub fn head(&self, hidden: &[f32], n: usize) -> Vec<f32> {
        let (c, v) = (self.config.hidden_size, self.config.vocab_size);
        let (mut x, mut rstd, mut logits) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n * v]);
        rmsnorm_forward(&mut x, &mut rstd, &hidden[..n * c], &self.params[self.idx.norm.clone()], n, c, self.config.rms_norm_eps);
        matmul_forward(&mut logits, &x, &self.params[self.idx.head.clone()], None, n, c, v, OutIn);
        logits
    }

    /// Accumulates d(loss_scale * mean loss)/d(params) into `grads`.
    pub fn backward(&mut self, loss_scale: f32) -> Result<()> {
        if !self.has_targets {
            return Err(ModelError::InvalidConfig("backward needs a forward pass with targets first".into()));
        }
        self.has_targets = false;
        let cfg = self.config.clone();
        let (c, nh, nkv, hs, v, inter) = (cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_size(), cfg.vocab_size, cfg.intermediate_size);
        let (b, t) = self.last_bt;
        let (n, w) = (b * t, cfg.qkv_width());
        let Llama { params: p, grads: g, idx, acts, cos, sin, .. } = self;
        let a = acts.as_mut().expect("forward ran");
        let z = |len: usize| vec![0.0f32; len];
        let (mut dres, mut dc, mut dqkv, mut dqkv3, mut datt) = (z(n * c), z(n * c), z(n * w), z(n * 3 * c), z(b * nh * t * t));
        let (mut dact, mut dgate, mut dup) = (z(n * inter), z(n * inter), z(n * inter));

        a.dlosses[..n].fill(loss_scale / n as f32);
        crossentropy_backward_inplace(&mut a.logits, &a.lse, &a.targets, &a.dlosses, n, v);
        matmul_backward(Some(&mut dc), &mut g[idx.head.clone()], None, &a.logits, &a.lnf, &p[idx.head.clone()], n, c, v, OutIn);
        let last: &[f32] = if cfg.num_layers == 0 { &a.x0 } else { &a.layers[cfg.num_layers - 1].res3 };
        rmsnorm_backward(&mut dres, &mut g[idx.norm.clone()], &dc, last, &p[idx.norm.clone()], &a.rstdf, n, c);
        let shape = AttnShape { b, t, c, nh, causal: true };
        for (li, wi) in idx.layers.iter().enumerate().rev() {
            let x: &[f32] = if li == 0 { &a.x0 } else { &a.layers[li - 1].res3 };
            let l = &a.layers[li];
            // res3 = res2 + down(swiglu(gate(ln2), up(ln2))): dres feeds both branches.
            dact.fill(0.0);
            matmul_backward(Some(&mut dact), &mut g[wi.down_w.clone()], None, &dres, &l.act, &p[wi.down_w.clone()], n, inter, c, OutIn);
            dgate.fill(0.0);
            dup.fill(0.0);
            swiglu_backward(&mut dgate, &mut dup, &dact, &l.gate[..n * inter], &l.up[..n * inter]);
            dc.fill(0.0);
            matmul_backward(Some(&mut dc), &mut g[wi.gate_w.clone()], None, &dgate, &l.ln2, &p[wi.gate_w.clone()], n, c, inter, OutIn);
            matmul_backward(Some(&mut dc), &mut g[wi.up_w.clone()], None, &dup, &l.ln2, &p[wi.up_w.clone()], n, c, inter, OutIn);
            rmsnorm_backward(&mut dres, &mut g[wi.ln2.clone()], &dc, &l.res2, &p[wi.ln2.clone()], &l.rstd2, n, c);
            // res2 = x + o(attention(rope(qkv(ln1(x)))))
            dc.fill(0.0);
            matmul_backward(Some(&mut dc), &mut g[wi.o_w.clone()], None, &dres, &l.atty, &p[wi.o_w.clone()], n, c, c, OutIn);
            dqkv3.fill(0.0);
            attention_backward(&mut dqkv3, &mut datt, &dc, &l.qkv3, &l.att, shape);
            reduce_kv(&mut dqkv, &dqkv3, n, c, nh, nkv, hs);
            rope_backward(&mut dqkv, cos, sin, b, t, w, 0, nh, hs, 0);
            rope_backward(&mut dqkv, cos, sin, b, t, w, c, nkv, hs, 0);
            dc.fill(0.0);
            match wi.qkv_b.clone() {
                Some(rb) => {
                    let (dw, db) = crate::params::two_mut(g, wi.qkv_w.clone(), rb);
                    matmul_backward(Some(&mut dc), dw, Some(db), &dqkv, &l.ln1, &p[wi.qkv_w.clone()], n, c, w, OutIn);
                }
                None => matmul_backward(Some(&mut dc), &mut g[wi.qkv_w.clone()], None, &dqkv, &l.ln1, &p[wi.qkv_w.clone()], n, c, w, OutIn),
            }
            rmsnorm_backward(&mut dres, &mut g[wi.ln1.clone()], &dc, x, &p[wi.ln1.clone()], &l.rstd1, n, c);
        }
        let dembed = &mut g[idx.embed.clone()];
        for (row, &id) in dres.chunks(c).zip(&a.tokens[..n]) {
            dembed[id as usize * c..][..c].iter_mut().zip(row).for_each(|(d, r)| *d += r);
        }
        Ok(())
    }
}

/// (N, C + 2 KVC) -> (N, 3C): queries as they are; each K/V head copied to
/// the NH / NKV query heads that share it.
fn expand_kv(out: &mut [f32], qkv: &[f32], n: usize, c: usize, nh: usize, nkv: usize, hs: usize) {
    let (w, group, kvc) = (c + 2 * nkv * hs, nh / nkv, nkv * hs);
    out[..n * 3 * c].par_chunks_mut(3 * c).zip(qkv[..n * w].par_chunks(w)).for_each(|(o, r)| {
        o[..c].copy_from_slice(&r[..c]);
        for h in 0..nh {
            let kv = h / group;
            o[c + h * hs..c + (h + 1) * hs].copy_from_slice(&r[c + kv * hs..c + (kv + 1) * hs]);
            o[2 * c + h * hs..2 * c + (h + 1) * hs].copy_from_slice(&r[c + kvc + kv * hs..c + kvc + (kv + 1) * hs]);
        }
    });
}

/// The transpose of `expand_kv`: (N, 3C) -> (N, C + 2 KVC), summing each
/// group's K/V gradients. Overwrites `out`.
fn reduce_kv(out: &mut [f32], d3: &[f32], n: usize, c: usize, nh: usize, nkv: usize, hs: usize) {
    let (w, group, kvc) = (c + 2 * nkv * hs, nh / nkv, nkv * hs);
    out[..n * w].par_chunks_mut(w).zip(d3[..n * 3 * c].par_chunks(3 * c)).for_each(|(o, r)| {
        o[..c].copy_from_slice(&r[..c]);
        o[c..].fill(0.0);
        for h in 0..nh {
            let kv = h / group;
            for j in 0..hs {
                o[c + kv * hs + j] += r[c + h * hs + j];
                o[c + kvc + kv * hs + j] += r[2 * c + h * hs + j];
            }
        }
    });
}
