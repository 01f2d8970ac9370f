//! The encoder's inference path (BERT): several texts as one ragged batch,
//! their tokens concatenated, so every row-wise step (embeddings, norms,
//! projections) is one GEMM over all tokens with no padding, and only
//! attention runs per text. Sentence embeddings are the mean of a text's last
//! hidden states, L2-normalised, as sentence-transformers computes them.

use attn_kernels::attention::{attention_forward, AttnShape};
use attn_kernels::gelu::{gelu_erf_forward, gelu_forward};
use attn_kernels::matmul::matmul_forward;
use attn_kernels::residual::residual_forward;
use rayon::prelude::*;

use super::Transformer;
use crate::config::{Mlp, NormPosition};
use crate::error::{ModelError, Result};

/// The encoder's outputs for a ragged batch.
pub struct EncoderOutput {
    /// Last hidden states (N, C), texts one after another.
    pub hidden: Vec<f32>,
    /// Per layer, each text's attention probabilities (NH, T_s, T_s), one
    /// after another; empty unless asked for.
    pub attention: Vec<Vec<f32>>,
}

impl Transformer {
    /// Runs texts of lengths `lens` (their ids concatenated in `ids`), all of
    /// token type 0, with bidirectional attention within each text. With
    /// `keep_attention`, also returns every layer's attention probabilities.
    pub fn encode(&self, ids: &[u32], lens: &[usize], keep_attention: bool) -> Result<EncoderOutput> {
        attn_kernels::in_pool(|| self.encode_in_pool(ids, lens, keep_attention))
    }

    fn encode_in_pool(&self, ids: &[u32], lens: &[usize], keep_attention: bool) -> Result<EncoderOutput> {
        self.require_f32("encoding")?;
        let cfg = &self.config;
        let (c, nh, f) = (cfg.n_embd, cfg.n_head, cfg.d_ff);
        let n: usize = lens.iter().sum();
        if cfg.causal || cfg.n_kv_head != nh || cfg.qkv_width() != 3 * c {
            return Err(ModelError::InvalidConfig(format!("encode runs bidirectional encoders such as BERT, not {}", self.model_type())));
        }
        if n != ids.len() || lens.contains(&0) {
            return Err(ModelError::InvalidConfig(format!("encode got {} ids for texts of lengths {lens:?}", ids.len())));
        }
        if let Some(&t) = lens.iter().find(|&&t| t > cfg.n_ctx) {
            return Err(ModelError::InvalidConfig(format!("a text of {t} tokens exceeds the model's {} positions", cfg.n_ctx)));
        }
        self.check_ids("token", ids)?;
        let (p, idx, lay) = (&self.params, &self.idx, self.layout_kind());
        let bias = |r: &Option<std::ops::Range<usize>>| r.clone().map(|r| &p[r]);
        // Embeddings: word + position (restarting per text) + type 0, then their norm.
        let mut x = vec![0.0f32; n * c];
        let positions: Vec<usize> = lens.iter().flat_map(|&t| 0..t).collect();
        let wte = &p[idx.wte.clone()];
        x.par_chunks_mut(c).zip(ids.par_iter().zip(&positions)).for_each(|(row, (&id, &pos))| {
            row.copy_from_slice(&wte[id as usize * c..][..c]);
            if let Some(wpe) = &idx.wpe {
                residual_forward(row, &p[wpe.start + pos * c..][..c]);
            }
            if let Some(wtt) = &idx.wtt {
                residual_forward(row, &p[wtt.start..wtt.start + c]);
            }
        });
        let (mut mean, mut rstd, mut tmp) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n * c]);
        if let Some(en) = &idx.emb_norm {
            self.norm_forward(&mut tmp, &mut mean, &mut rstd, &x, en, n);
            std::mem::swap(&mut x, &mut tmp);
        }
        let offsets: Vec<usize> = lens
            .iter()
            .scan(0, |o, &t| {
                let start = *o;
                *o += t;
                Some(start)
            })
            .collect();
        let mut att = vec![0.0f32; lens.iter().map(|&t| nh * t * t).sum()];
        let (mut qkv, mut ctx, mut ln) = (vec![0.0f32; n * 3 * c], vec![0.0f32; n * c], vec![0.0f32; n * c]);
        let (mut h, mut g) = (vec![0.0f32; n * f], vec![0.0f32; n * f]);
        let post = cfg.norm_position == NormPosition::Post;
        let mut attention = Vec::new();
        for wi in &idx.layers {
            if !post {
                self.norm_forward(&mut ln, &mut mean, &mut rstd, &x, &wi.norm1, n);
            }
            matmul_forward(&mut qkv, if post { &x } else { &ln }, &p[wi.qkv.w.clone()], bias(&wi.qkv.b), n, c, 3 * c, lay);
            // Attention per text, texts in parallel on disjoint slices.
            let mut ctx_parts: Vec<&mut [f32]> = Vec::with_capacity(lens.len());
            let mut att_parts: Vec<&mut [f32]> = Vec::with_capacity(lens.len());
            let (mut ctx_rest, mut att_rest) = (ctx.as_mut_slice(), att.as_mut_slice());
            for &t in lens {
                let (a, b) = std::mem::take(&mut ctx_rest).split_at_mut(t * c);
                ctx_parts.push(a);
                ctx_rest = b;
                let (a, b) = std::mem::take(&mut att_rest).split_at_mut(nh * t * t);
                att_parts.push(a);
                att_rest = b;
            }
            ctx_parts.into_par_iter().zip(att_parts).zip(lens.par_iter().zip(&offsets)).for_each(|((out, a), (&t, &o))| {
                attention_forward(out, a, &qkv[o * 3 * c..(o + t) * 3 * c], AttnShape::mha(1, t, c, nh, false));
            });
            if keep_attention {
                attention.push(att.clone());
            }
            // tmp = x + proj(ctx); post: x = N1(tmp); pre: x = tmp, ln = N2(x).
            matmul_forward(&mut tmp, &ctx, &p[wi.proj.w.clone()], bias(&wi.proj.b), n, c, c, lay);
            residual_forward(&mut tmp, &x);
            if post {
                self.norm_forward(&mut x, &mut mean, &mut rstd, &tmp, &wi.norm1, n);
            } else {
                std::mem::swap(&mut x, &mut tmp);
                self.norm_forward(&mut ln, &mut mean, &mut rstd, &x, &wi.norm2, n);
            }
            matmul_forward(&mut h, if post { &x } else { &ln }, &p[wi.up.w.clone()], bias(&wi.up.b), n, c, f, lay);
            match cfg.mlp {
                Mlp::GeluErf => gelu_erf_forward(&mut g, &h),
                _ => gelu_forward(&mut g, &h),
            }
            matmul_forward(&mut tmp, &g, &p[wi.down.w.clone()], bias(&wi.down.b), n, f, c, lay);
            residual_forward(&mut tmp, &x);
            if post {
                self.norm_forward(&mut x, &mut mean, &mut rstd, &tmp, &wi.norm2, n);
            } else {
                std::mem::swap(&mut x, &mut tmp);
            }
        }
        if let Some(nf) = &idx.norm_f {
            self.norm_forward(&mut tmp, &mut mean, &mut rstd, &x, nf, n);
            std::mem::swap(&mut x, &mut tmp);
        }
        Ok(EncoderOutput { hidden: x, attention })
    }

    /// Sentence embeddings: the mean of each text's last hidden states,
    /// L2-normalised. Texts run in batches of about `max_tokens` tokens.
    pub fn embed(&self, texts: &[Vec<u32>], max_tokens: usize) -> Result<Vec<Vec<f32>>> {
        let c = self.config.n_embd;
        let mut out = Vec::with_capacity(texts.len());
        let mut start = 0;
        while start < texts.len() {
            let mut end = start;
            let mut tokens = 0;
            while end < texts.len() && (end == start || tokens + texts[end].len() <= max_tokens) {
                tokens += texts[end].len();
                end += 1;
            }
            let batch = &texts[start..end];
            let lens: Vec<usize> = batch.iter().map(Vec::len).collect();
            let o = self.encode(&batch.concat(), &lens, false)?;
            let mut at = 0;
            for &t in &lens {
                out.push(mean_pool_normalize(&o.hidden[at * c..(at + t) * c], t, c));
                at += t;
            }
            start = end;
        }
        Ok(out)
    }
}

/// Mean over `t` rows of `hidden` (T, C), then divided by its L2 norm.
fn mean_pool_normalize(hidden: &[f32], t: usize, c: usize) -> Vec<f32> {
    let mut v = vec![0.0f64; c];
    for row in hidden.chunks(c).take(t) {
        v.iter_mut().zip(row).for_each(|(a, &b)| *a += b as f64);
    }
    v.iter_mut().for_each(|a| *a /= t as f64);
    // sentence-transformers' Normalize divides by max(norm, 1e-12).
    let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-12);
    v.iter().map(|a| (a / norm) as f32).collect()
}
