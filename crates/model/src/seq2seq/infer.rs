//! Inference: the encoder runs once per batch of sources, and every decoder
//! layer's cross-attention keys and values are projected from its output
//! once (`EncoderMemory`). The decoder then takes one token per hypothesis
//! per step, appending its keys and values to a self-attention cache sized to
//! the request (`DecoderCache`). No probabilities or activations are kept.
//!
//! Hypotheses are laid out source-major: rows = B * K, row r belongs to
//! source r / K (K = 1 for greedy, the beam width for beam search), so the
//! K queries of one source attend to its keys in one (K, S) block.

use attn_kernels::activation::activation_forward;
use attn_kernels::cross_attention::{cross_attention_forward, CrossShape};
use attn_kernels::few_rows::{few_rows_forward, pays as few_rows_pay};
use attn_kernels::layernorm::layernorm_forward;
use attn_kernels::matmul::{matmul_forward, WeightLayout::OutIn};
use attn_kernels::matvec::{matvec_forward, matvec_scratch_len};
use attn_kernels::residual::residual_forward;

use super::{AttnIdx, FfnIdx, Seq2Seq, StackIdx, BART_POS_OFFSET};
use crate::error::{ModelError, Result};
use crate::params::Lin;

/// The encoded sources of one batch.
pub struct EncoderMemory {
    /// Sources in the batch.
    pub b: usize,
    /// Source positions, padded to the longest.
    pub s: usize,
    /// Each source's real length.
    pub src_len: Vec<usize>,
    /// The source ids as given (B, S), padding included: what
    /// `encoder_no_repeat_ngram_size` reads.
    pub src: Vec<u32>,
    /// The encoder's output (B, S, C).
    pub hidden: Vec<f32>,
    /// Per decoder layer: cross-attention k | v (B, S, 2C).
    cross_kv: Vec<Vec<f32>>,
}

/// Self-attention keys and values of every hypothesis, per decoder layer.
pub struct DecoderCache {
    /// Hypotheses (B * K).
    pub rows: usize,
    /// Positions each row can hold.
    pub cap: usize,
    /// Positions filled (the same for every row: they step together).
    pub len: usize,
    kv: Vec<Vec<f32>>, // per layer (rows, cap, 2C)
}

/// Rows up to which a dense layer is a matrix-vector product, which streams
/// the weights once; gemm would copy them into its packed layout first
/// (greedy decoding of one source: 20% more tokens a second, measured).
/// Beyond a few rows gemm's register tiles win back the copy.
const MATVEC_ROWS: usize = 4;

impl Seq2Seq {
    /// Encodes B right-padded sources (B, S) and projects the cross-attention
    /// keys and values of every decoder layer.
    pub fn encode_sources(&self, src: &[u32], src_len: &[usize], s: usize) -> Result<EncoderMemory> {
        attn_kernels::in_pool(|| self.encode_sources_in_pool(src, src_len, s))
    }

    fn encode_sources_in_pool(&self, src: &[u32], src_len: &[usize], s: usize) -> Result<EncoderMemory> {
        let (c, b) = (self.config.d_model, src_len.len());
        if b == 0 || s == 0 || src.len() != b * s || src_len.iter().any(|&l| l == 0 || l > s) {
            return Err(ModelError::InvalidConfig(format!("encode_sources needs B*S = {b}*{s} ids and lengths in 1..=S")));
        }
        if s > self.config.n_ctx {
            return Err(ModelError::InvalidConfig(format!("the source has {s} tokens, more than the model's {} positions", self.config.n_ctx)));
        }
        let v = self.config.vocab_size as u32;
        if let Some(bad) = src.iter().find(|&&x| x >= v) {
            return Err(ModelError::InvalidConfig(format!("source id {bad} is out of range for vocab_size {v}")));
        }
        let n = b * s;
        let mut x = self.embed_rows(src, |r| r % s, &self.idx.enc);
        let he = self.config.encoder_heads;
        let shape = CrossShape { b, tq: s, tk: s, nh: he, nkv: he, hs: c / he, causal: false };
        for w in &self.idx.enc.layers {
            x = self.attn_infer(&x, Kv::Project, &w.self_attn, n, shape, src_len);
            x = self.ffn_infer(&x, &w.ffn, n, self.config.encoder_ffn);
        }
        if let Some(fw) = &self.idx.enc.final_norm {
            x = self.layernorm(&x, fw, n);
        }
        let cross_kv = self.idx.dec.layers.iter().map(|w| self.project(&x, &w.cross.as_ref().expect("decoder layer").kv, n, 2 * c)).collect();
        Ok(EncoderMemory { b, s, src_len: src_len.to_vec(), src: src.to_vec(), hidden: x, cross_kv })
    }

    /// A cache for `k` hypotheses per source of `mem`, holding `cap` target positions.
    pub fn new_decoder_cache(&self, mem: &EncoderMemory, k: usize, cap: usize) -> Result<DecoderCache> {
        if cap > self.config.n_ctx {
            return Err(ModelError::InvalidConfig(format!("{cap} target positions exceed the model's {}", self.config.n_ctx)));
        }
        let rows = mem.b * k;
        crate::transformer::ensure_memory(
            self.decoder_cache_bytes(rows, cap),
            || format!("a decoder cache for {rows} hypotheses ({} sources x {k}) of {cap} positions, with their logits, would", mem.b),
            "ask for fewer beams, sources at once or new tokens",
        )?;
        let kv = (0..self.config.decoder_layers).map(|_| vec![0.0; rows * cap * 2 * self.config.d_model]).collect();
        Ok(DecoderCache { rows, cap, len: 0, kv })
    }

    /// Bytes a decoder cache of `rows` hypotheses and `cap` positions holds,
    /// plus the (rows, V) logits each step returns.
    pub fn decoder_cache_bytes(&self, rows: usize, cap: usize) -> u128 {
        let c = &self.config;
        4 * rows as u128 * (c.decoder_layers as u128 * cap as u128 * 2 * c.d_model as u128 + c.vocab_size as u128)
    }

    /// One decoder step: `tokens` (rows) enter at position `cache.len`.
    /// Returns the next-token logits (rows, V).
    pub fn decode_step(&self, tokens: &[u32], cache: &mut DecoderCache, mem: &EncoderMemory) -> Result<Vec<f32>> {
        attn_kernels::in_pool(|| self.decode_step_in_pool(tokens, cache, mem))
    }

    fn decode_step_in_pool(&self, tokens: &[u32], cache: &mut DecoderCache, mem: &EncoderMemory) -> Result<Vec<f32>> {
        let (c, v) = (self.config.d_model, self.config.vocab_size);
        let rows = cache.rows;
        if tokens.len() != rows || rows % mem.b != 0 {
            return Err(ModelError::InvalidConfig(format!("decode_step got {} tokens for {rows} cached rows", tokens.len())));
        }
        if cache.len >= cache.cap {
            return Err(ModelError::InvalidConfig(format!("the decoder cache holds {} positions and is full", cache.cap)));
        }
        if let Some(bad) = tokens.iter().find(|&&x| x as usize >= v) {
            return Err(ModelError::InvalidConfig(format!("token id {bad} is out of range for vocab_size {v}")));
        }
        let k = rows / mem.b;
        let pos = cache.len;
        let mut x = self.embed_rows(tokens, |_| pos, &self.idx.dec);
        let hd = self.config.decoder_heads;
        let self_shape = CrossShape { b: rows, tq: 1, tk: cache.cap, nh: hd, nkv: hd, hs: c / hd, causal: false };
        let cross_shape = CrossShape { b: mem.b, tq: k, tk: mem.s, nh: hd, nkv: hd, hs: c / hd, causal: false };
        let self_len = vec![pos + 1; rows];
        for (li, w) in self.idx.dec.layers.iter().enumerate() {
            let cache_l = Kv::Append { cache: &mut cache.kv[li], cap: cache.cap, pos };
            x = self.attn_infer(&x, cache_l, &w.self_attn, rows, self_shape, &self_len);
            x = self.attn_infer(&x, Kv::Given(&mem.cross_kv[li]), w.cross.as_ref().expect("decoder layer"), rows, cross_shape, &mem.src_len);
            x = self.ffn_infer(&x, &w.ffn, rows, self.config.decoder_ffn);
        }
        if let Some(fw) = &self.idx.dec.final_norm {
            x = self.layernorm(&x, fw, rows);
        }
        cache.len += 1;
        let head = Lin { w: self.idx.shared.clone(), b: Some(self.idx.final_logits_bias.clone()), q: None };
        Ok(self.project(&x, &head, rows, v))
    }

    /// Row r of the cache becomes old row `from[r]` (beam search keeps the
    /// hypotheses it extends).
    pub fn reorder_cache(&self, cache: &mut DecoderCache, from: &[usize]) {
        assert_eq!(from.len(), cache.rows);
        let w = cache.cap * 2 * self.config.d_model;
        let filled = cache.len * 2 * self.config.d_model;
        // Only rows that take another row's history move; their sources are
        // copied out first, since a source may itself be overwritten.
        let moves: Vec<(usize, usize)> = from.iter().enumerate().filter(|&(r, &f)| r != f).map(|(r, &f)| (r, f)).collect();
        let mut tmp = vec![0.0f32; moves.len() * filled];
        for layer in &mut cache.kv {
            for (i, &(_, f)) in moves.iter().enumerate() {
                tmp[i * filled..][..filled].copy_from_slice(&layer[f * w..][..filled]);
            }
            for (i, &(r, _)) in moves.iter().enumerate() {
                layer[r * w..][..filled].copy_from_slice(&tmp[i * filled..][..filled]);
            }
        }
    }

    /// shared[token] * scale + position(row) (+ LayerNorm), for any rows.
    fn embed_rows(&self, tokens: &[u32], pos_of: impl Fn(usize) -> usize, stack: &StackIdx) -> Vec<f32> {
        let c = self.config.d_model;
        let p = &self.params;
        let scale = self.embed_scale();
        let shared = &p[self.idx.shared.clone()];
        let pos: &[f32] = match &stack.pos {
            Some(r) => &p[r.start + BART_POS_OFFSET * c..r.end],
            None => &self.pos_table,
        };
        let mut x = vec![0.0; tokens.len() * c];
        for (r, row) in x.chunks_exact_mut(c).enumerate() {
            let (e, pe) = (&shared[tokens[r] as usize * c..][..c], &pos[pos_of(r) * c..][..c]);
            for j in 0..c {
                row[j] = e[j] * scale + pe[j];
            }
        }
        match &stack.emb_norm {
            Some(en) => self.layernorm(&x, en, tokens.len()),
            None => x,
        }
    }

    /// x (N, C) @ W^T + bias for W (OC, C), C = x.len() / N.
    fn project(&self, x: &[f32], w: &Lin, n: usize, oc: usize) -> Vec<f32> {
        let (c, p) = (x.len() / n, &self.params);
        let bias = w.b.clone().map(|r| &p[r]);
        let mut out = vec![0.0; n * oc];
        if n <= MATVEC_ROWS {
            let mut scratch = vec![0.0; matvec_scratch_len(n, oc)];
            matvec_forward(&mut out, &mut scratch, x, &p[w.w.clone()], bias, n, c, oc, OutIn);
        } else if few_rows_pay(n) {
            few_rows_forward(&mut out, x, &p[w.w.clone()], bias, n, c, oc);
        } else {
            matmul_forward(&mut out, x, &p[w.w.clone()], bias, n, c, oc, OutIn);
        }
        out
    }

    fn layernorm(&self, x: &[f32], w: &Lin, n: usize) -> Vec<f32> {
        let (c, p) = (self.config.d_model, &self.params);
        let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
        let bias = &p[w.b.clone().expect("LayerNorm bias")];
        layernorm_forward(&mut out, &mut mean, &mut rstd, x, &p[w.w.clone()], bias, n, c, self.config.norm_eps);
        out
    }

    /// One attention sub-block: N(x + out(attention(q(x), kv))) post-norm,
    /// x + out(attention(q(N(x)), kv)) pre-norm.
    fn attn_infer(&self, x: &[f32], kv: Kv, w: &AttnIdx, n: usize, shape: CrossShape, key_len: &[usize]) -> Vec<f32> {
        let c = self.config.d_model;
        let pre = self.pre_norm();
        let normed = pre.then(|| self.layernorm(x, &w.norm, n));
        let q_in: &[f32] = normed.as_deref().unwrap_or(x);
        let q = self.project(q_in, &w.q, n, c);
        let projected;
        let kv: &[f32] = match kv {
            Kv::Given(kv) => kv,
            Kv::Project => {
                projected = self.project(q_in, &w.kv, n, 2 * c);
                &projected
            }
            Kv::Append { cache, cap, pos } => {
                // This step's keys and values join the cache at `pos`.
                for (r, row) in self.project(q_in, &w.kv, n, 2 * c).chunks_exact(2 * c).enumerate() {
                    cache[(r * cap + pos) * 2 * c..][..2 * c].copy_from_slice(row);
                }
                cache
            }
        };
        let (mut atty, mut att) = (vec![0.0; n * c], vec![0.0; shape.b * shape.nh * shape.tq * shape.tk]);
        cross_attention_forward(&mut atty, &mut att, &q, kv, key_len, shape);
        let mut res = self.project(&atty, &w.out, n, c);
        residual_forward(&mut res, &x[..n * c]);
        if pre {
            res
        } else {
            self.layernorm(&res, &w.norm, n)
        }
    }

    fn ffn_infer(&self, x: &[f32], w: &FfnIdx, n: usize, f: usize) -> Vec<f32> {
        let (c, pre) = (self.config.d_model, self.pre_norm());
        let normed = pre.then(|| self.layernorm(x, &w.norm, n));
        let h = self.project(normed.as_deref().unwrap_or(x), &w.fc1, n, f);
        let mut act = vec![0.0; n * f];
        activation_forward(self.config.act, &mut act, &h);
        let mut res = self.project(&act, &w.fc2, n, c);
        residual_forward(&mut res, &x[..n * c]);
        if pre {
            res
        } else {
            self.layernorm(&res, &w.norm, n)
        }
    }
}

/// Where an attention sub-block's keys and values come from.
enum Kv<'a> {
    /// Computed once per source (cross-attention).
    Given(&'a [f32]),
    /// Projected from the sub-block's input (encoder self-attention).
    Project,
    /// Projected from this step's input and appended to a (rows, cap, 2C) cache at `pos`.
    Append { cache: &'a mut [f32], cap: usize, pos: usize },
}
