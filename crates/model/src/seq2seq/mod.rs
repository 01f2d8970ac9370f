//! The encoder-decoder of "Attention Is All You Need": an encoder over the
//! source, a decoder over the target whose blocks add a cross-attention
//! sub-block reading the encoder's output. Marian, BART and mBART are configs of it.
//!
//! - `config.rs`: the checked config, presets, Hugging Face config.json.
//! - `train.rs`: forward with saved activations, and the backward pass;
//!   `blocks.rs`: its sub-blocks, post-norm or pre-norm.
//! - `infer.rs`: encode once, then decode step by step with a self-attention
//!   KV cache and cross-attention keys and values computed once per source.
//! - `io.rs`: Marian / BART folders in both directions.
//!
//! Blocks are post-norm, as in the paper (Marian, BART):
//! x -> N(x + SelfAttn(x)) -> N(. + CrossAttn(., enc)) -> N(. + FFN(.)),
//! or pre-norm (mBART): x -> x + SelfAttn(N(x)) -> ... with a final norm
//! after each stack.

mod acts;
mod blocks;
mod config;
mod infer;
mod io;
mod train;

pub use config::{Seq2SeqConfig, Seq2SeqFamily, SEQ2SEQ_MODEL_TYPES, SEQ2SEQ_PRESETS};
pub use infer::{DecoderCache, EncoderMemory};
pub use io::is_seq2seq_dir;
pub use train::{Seq2SeqBatch, Seq2SeqLoss};

use std::ops::Range;

use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use crate::config::{NormPosition, Position};
use crate::error::Result;
use crate::params::{Lin, NormIdx, ParamKind, ParamLayout};

/// One attention sub-block: q from the block's input, k | v (packed, one
/// GEMM) from the same input or from the encoder's output, the output
/// projection, and the norm after the residual.
#[derive(Clone, Debug)]
pub(crate) struct AttnIdx {
    pub q: Lin,
    pub kv: Lin,
    pub out: Lin,
    pub norm: NormIdx,
}

#[derive(Clone, Debug)]
pub(crate) struct FfnIdx {
    pub fc1: Lin,
    pub fc2: Lin,
    pub norm: NormIdx,
}

#[derive(Clone, Debug)]
pub(crate) struct LayerIdx {
    pub self_attn: AttnIdx,
    /// Decoder layers only.
    pub cross: Option<AttnIdx>,
    pub ffn: FfnIdx,
}

#[derive(Clone, Debug)]
pub(crate) struct StackIdx {
    /// Learned positions (BART: max positions + 2 rows, read at p + 2).
    pub pos: Option<Range<usize>>,
    pub emb_norm: Option<NormIdx>,
    pub layers: Vec<LayerIdx>,
    /// The norm after the last block (pre-norm stacks only).
    pub final_norm: Option<NormIdx>,
}

#[derive(Clone, Debug)]
pub(crate) struct S2SIndex {
    /// `model.shared`: source and target embeddings, and the output head.
    pub shared: Range<usize>,
    pub enc: StackIdx,
    pub dec: StackIdx,
    /// Added to the logits; a buffer in transformers, never trained.
    pub final_logits_bias: Range<usize>,
}

/// Rows by which BART's learned position tables are offset.
pub(crate) const BART_POS_OFFSET: usize = 2;

/// An encoder-decoder (the original Transformer; Marian, BART, mBART):
/// its config, its weights in one buffer, and its training state.
pub struct Seq2Seq {
    /// The shape.
    pub config: Seq2SeqConfig,
    /// Where each tensor lies in `params`.
    pub layout: ParamLayout,
    pub(crate) idx: S2SIndex,
    /// Every weight, in one buffer.
    pub params: Vec<f32>,
    /// Gradients, same layout; empty until the first backward pass.
    grads: Vec<f32>,
    /// Marian's sinusoidal table (maxT, C), or empty.
    pub(crate) pos_table: Vec<f32>,
    acts: Option<acts::Acts>,
}

impl Seq2Seq {
    /// A model whose parameters are all zero, to be filled by a loader.
    pub fn zeros(config: Seq2SeqConfig) -> Result<Self> {
        config.validate()?;
        let (layout, idx) = layout(&config);
        let pos_table = match config.position {
            Position::Sinusoidal => marian_sinusoidal(config.n_ctx, config.d_model),
            _ => Vec::new(),
        };
        let params = attn_kernels::pages::zeroed(layout.total());
        Ok(Seq2Seq { config, layout, idx, params, grads: Vec::new(), pos_table, acts: None })
    }

    /// Random weights: N(0, 0.02) matrices and embeddings (as transformers
    /// initialises Marian and BART), zero biases, unit norms, zero logits bias.
    pub fn new(config: Seq2SeqConfig, seed: u64) -> Result<Self> {
        let mut m = Self::zeros(config)?;
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
        // The pad token's embedding starts at zero, as nn.Embedding's padding_idx makes it.
        let (c, pad) = (m.config.d_model, m.config.pad_token_id as usize);
        m.params[m.idx.shared.start + pad * c..][..c].fill(0.0);
        Ok(m)
    }

    /// A named shape (`transformer-tiny`, `-small`, `-base`) with random
    /// weights drawn from `seed`.
    pub fn preset(name: &str, vocab_size: usize, seed: u64) -> Result<Self> {
        Self::new(Seq2SeqConfig::preset(name, vocab_size)?, seed)
    }

    /// The shared vocabulary's size.
    pub fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }
    /// Every weight.
    pub fn params(&self) -> &[f32] {
        &self.params
    }
    /// Their gradients (empty before the first backward pass).
    pub fn grads(&self) -> &[f32] {
        &self.grads
    }
    /// Weights, padding excluded.
    pub fn num_params(&self) -> usize {
        self.layout.num_params()
    }

    fn ensure_grads(&mut self) {
        if self.grads.len() != self.params.len() {
            self.grads = attn_kernels::pages::zeroed(self.params.len());
        }
    }
    /// Sets every gradient to 0 (backward passes add to them).
    pub fn zero_grad(&mut self) {
        self.ensure_grads();
        attn_kernels::zero(&mut self.grads);
    }
    /// Parameters to update and the gradients to update them with.
    pub fn params_and_grads(&mut self) -> (&mut [f32], &[f32]) {
        self.ensure_grads();
        (&mut self.params, &self.grads)
    }

    /// One line for logs.
    pub fn describe(&self) -> String {
        let c = &self.config;
        format!(
            "{}: {} + {} layers, {} heads, {} channels, FFN {}, context {}, vocab {}, {:.2}M parameters",
            c.family.model_type(),
            c.encoder_layers,
            c.decoder_layers,
            c.encoder_heads,
            c.d_model,
            c.encoder_ffn,
            c.n_ctx,
            c.vocab_size,
            self.num_params() as f64 / 1e6
        )
    }

    /// Training FLOPs for B pairs of S source and T target tokens (6 per
    /// parameter and token, plus the attention score and value products).
    pub fn train_flops(&self, b: usize, s: usize, t: usize) -> f64 {
        let c = &self.config;
        let (d, v) = (c.d_model as f64, c.vocab_size as f64);
        let enc_layer = 4.0 * d * d + 2.0 * d * c.encoder_ffn as f64;
        let dec_layer = 8.0 * d * d + 2.0 * d * c.decoder_ffn as f64;
        let (s, t) = (s as f64, t as f64);
        let dense = s * enc_layer * c.encoder_layers as f64 + t * dec_layer * c.decoder_layers as f64 + t * d * v;
        // Per attention: QK^T and att @ V, 2 FLOPs each multiply-add, over d channels.
        let attn = 4.0 * d * (s * s * c.encoder_layers as f64 + (t * t + t * s) * c.decoder_layers as f64);
        b as f64 * 3.0 * (2.0 * dense + attn)
    }
}

/// Marian's sinusoidal table: for each position p, the sines of
/// p / 10000^(2i/C) in the first half of the row and the cosines in the second
/// (not interleaved as in the paper's formula; the same values, permuted).
pub(crate) fn marian_sinusoidal(max_t: usize, c: usize) -> Vec<f32> {
    let half = c.div_ceil(2);
    let mut out = vec![0.0f32; max_t * c];
    for p in 0..max_t {
        let row = &mut out[p * c..][..c];
        for j in 0..c {
            // Feature j uses frequency index 2 * (j / 2); sines take the even j, cosines the odd.
            let angle = p as f64 / 10000f64.powf((2 * (j / 2)) as f64 / c as f64);
            if j % 2 == 0 {
                row[j / 2] = angle.sin() as f32;
            } else {
                row[half + j / 2] = angle.cos() as f32;
            }
        }
    }
    out
}

/// The layout with the tensor names both Marian and BART folders use.
fn layout(cfg: &Seq2SeqConfig) -> (ParamLayout, S2SIndex) {
    let (v, c) = (cfg.vocab_size, cfg.d_model);
    let mut l = ParamLayout::empty();
    let shared = l.push("model.shared.weight".into(), vec![v, c], ParamKind::Embedding);
    let lin = |l: &mut ParamLayout, name: &str, out: usize, inp: usize| Lin {
        q: None,
        w: l.push(format!("{name}.weight"), vec![out, inp], ParamKind::Matrix),
        b: Some(l.push(format!("{name}.bias"), vec![out], ParamKind::Bias)),
    };
    let norm = |l: &mut ParamLayout, name: &str| Lin {
        q: None,
        w: l.push(format!("{name}.weight"), vec![c], ParamKind::Norm),
        b: Some(l.push(format!("{name}.bias"), vec![c], ParamKind::Bias)),
    };
    let attn = |l: &mut ParamLayout, p: &str| {
        let q = lin(l, &format!("{p}.q_proj"), c, c);
        // k and v back to back: one (2C, C) matrix and one 2C bias.
        let k = l.push(format!("{p}.k_proj.weight"), vec![c, c], ParamKind::Matrix);
        let vw = l.push_packed(format!("{p}.v_proj.weight"), vec![c, c], ParamKind::Matrix);
        let kb = l.push(format!("{p}.k_proj.bias"), vec![c], ParamKind::Bias);
        let vb = l.push_packed(format!("{p}.v_proj.bias"), vec![c], ParamKind::Bias);
        let out = lin(l, &format!("{p}.out_proj"), c, c);
        (q, Lin { q: None, w: k.start..vw.end, b: Some(kb.start..vb.end) }, out)
    };
    let stack = |l: &mut ParamLayout, side: &str, n_layer: usize, ffn: usize, decoder: bool| {
        let pos = (cfg.position == Position::Learned)
            .then(|| l.push(format!("model.{side}.embed_positions.weight"), vec![cfg.n_ctx + BART_POS_OFFSET, c], ParamKind::Embedding));
        let emb_norm = cfg.embed_norm.then(|| norm(l, &format!("model.{side}.layernorm_embedding")));
        let layers = (0..n_layer)
            .map(|i| {
                let p = format!("model.{side}.layers.{i}");
                let (q, kv, out) = attn(l, &format!("{p}.self_attn"));
                let self_attn = AttnIdx { q, kv, out, norm: norm(l, &format!("{p}.self_attn_layer_norm")) };
                let cross = decoder.then(|| {
                    let (q, kv, out) = attn(l, &format!("{p}.encoder_attn"));
                    AttnIdx { q, kv, out, norm: norm(l, &format!("{p}.encoder_attn_layer_norm")) }
                });
                let fc1 = lin(l, &format!("{p}.fc1"), ffn, c);
                let fc2 = lin(l, &format!("{p}.fc2"), c, ffn);
                let ffn = FfnIdx { fc1, fc2, norm: norm(l, &format!("{p}.final_layer_norm")) };
                LayerIdx { self_attn, cross, ffn }
            })
            .collect();
        let final_norm = (cfg.norm_position == NormPosition::Pre).then(|| norm(l, &format!("model.{side}.layer_norm")));
        StackIdx { pos, emb_norm, layers, final_norm }
    };
    let enc = stack(&mut l, "encoder", cfg.encoder_layers, cfg.encoder_ffn, false);
    let dec = stack(&mut l, "decoder", cfg.decoder_layers, cfg.decoder_ffn, true);
    let final_logits_bias = l.push("final_logits_bias".into(), vec![1, v], ParamKind::Bias);
    l.finish();
    (l, S2SIndex { shared, enc, dec, final_logits_bias })
}
