//! BERT, the encoder-only transformer (inference).
//!
//! Embeddings are word + position + token type, then LayerNorm. Each block is
//! post-LayerNorm: x = LN(x + Attn(x)), x = LN(x + FFN(x)), with
//! bidirectional attention and an exact-erf GELU. Sentence embeddings are the
//! mean of the last hidden states over a sentence's tokens, L2-normalized, as
//! sentence-transformers computes them for all-MiniLM-L6-v2.
//!
//! Several sentences run as one ragged batch: their tokens are concatenated,
//! so every row-wise step (embeddings, norms, the four projections) is one
//! large GEMM over all tokens with no padding, and only attention is done per
//! sentence.

use std::path::Path;

use attn_kernels::attention::{attention_forward, AttnShape};
use attn_kernels::gelu::{gelu_erf_forward, gelu_forward};
use attn_kernels::layernorm::layernorm_forward;
use attn_kernels::matmul::{matmul_forward, WeightLayout::OutIn};
use attn_kernels::residual::residual_forward;
use rayon::prelude::*;

use crate::checkpoint::Weights;
use crate::error::{io_err, HfFields, ModelError, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: the exact normal CDF.
    GeluErf,
    /// `gelu_new` / `gelu_pytorch_tanh`: the tanh approximation.
    GeluTanh,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub max_position: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f32,
    pub act: Activation,
}

impl BertConfig {
    /// From a Hugging Face `config.json` with `model_type` "bert".
    pub fn from_hf(v: &serde_json::Value, path: &Path) -> Result<Self> {
        let f = HfFields { v, path };
        let (int, unsupported) = (|k: &str| f.int(k), |field: &str, value: String, hint: &str| f.unsupported(field, value, hint));
        let act = match v["hidden_act"].as_str().unwrap_or("gelu") {
            "gelu" => Activation::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
            other => return Err(unsupported("hidden_act", other.into(), "supported: gelu, gelu_new, gelu_pytorch_tanh")),
        };
        if let Some(p) = v["position_embedding_type"].as_str().filter(|p| *p != "absolute") {
            return Err(unsupported("position_embedding_type", p.into(), "only \"absolute\" position embeddings are supported"));
        }
        let cfg = BertConfig {
            vocab_size: int("vocab_size")?,
            hidden_size: int("hidden_size")?,
            num_layers: int("num_hidden_layers")?,
            num_heads: int("num_attention_heads")?,
            intermediate_size: int("intermediate_size")?,
            max_position: int("max_position_embeddings")?,
            type_vocab_size: v["type_vocab_size"].as_u64().unwrap_or(2) as usize,
            layer_norm_eps: v["layer_norm_eps"].as_f64().unwrap_or(1e-12) as f32,
            act,
        };
        if cfg.hidden_size % cfg.num_heads != 0 {
            return Err(ModelError::InvalidConfig(format!(
                "{}: hidden_size {} is not divisible by num_attention_heads {}",
                path.display(),
                cfg.hidden_size,
                cfg.num_heads
            )));
        }
        Ok(cfg)
    }
}

struct Norm {
    w: Vec<f32>, // (C)
    b: Vec<f32>, // (C)
}

struct Linear {
    w: Vec<f32>, // (OC, C), PyTorch's layout
    b: Vec<f32>, // (OC)
}

struct Layer {
    qkv: Linear, // (3C, C): query, key, value stacked
    attn_out: Linear,
    ln1: Norm,
    up: Linear,   // (I, C)
    down: Linear, // (C, I)
    ln2: Norm,
}

pub struct Bert {
    pub config: BertConfig,
    word: Vec<f32>,  // (V, C)
    pos: Vec<f32>,   // (maxT, C)
    ttype: Vec<f32>, // (types, C)
    emb_ln: Norm,
    layers: Vec<Layer>,
}

/// The encoder's outputs for a ragged batch.
pub struct BertOutput {
    /// Last hidden states (N, C), sentences one after another.
    pub hidden: Vec<f32>,
    /// Per layer, each sentence's attention probabilities (NH, T_s, T_s), one
    /// after another; empty unless asked for.
    pub attention: Vec<Vec<f32>>,
}

impl Bert {
    /// Loads a Hugging Face BERT folder (config.json + model.safetensors or
    /// shards). Tensor names may carry the `bert.` prefix of task models.
    pub fn load(dir: &Path) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(io_err(&cfg_path))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|source| ModelError::Json { path: cfg_path.clone(), source })?;
        let config = BertConfig::from_hf(&v, &cfg_path)?;
        let w = Weights::open_dir(dir)?;
        let prefix = if w.has("bert.embeddings.word_embeddings.weight") { "bert." } else { "" };
        let (c, i) = (config.hidden_size, config.intermediate_size);
        let read = |name: &str, shape: &[usize]| w.read(&format!("{prefix}{name}"), shape);
        // Old checkpoints name LayerNorm parameters gamma and beta.
        let norm = |name: &str| -> Result<Norm> {
            let full = format!("{prefix}{name}.weight");
            if w.has(&full) {
                Ok(Norm { w: read(&format!("{name}.weight"), &[c])?, b: read(&format!("{name}.bias"), &[c])? })
            } else if w.has(&format!("{prefix}{name}.gamma")) {
                Ok(Norm { w: read(&format!("{name}.gamma"), &[c])?, b: read(&format!("{name}.beta"), &[c])? })
            } else {
                Err(ModelError::MissingTensor { path: dir.join("model.safetensors"), name: full })
            }
        };
        let linear = |name: &str, oc: usize, ic: usize| -> Result<Linear> {
            Ok(Linear { w: read(&format!("{name}.weight"), &[oc, ic])?, b: read(&format!("{name}.bias"), &[oc])? })
        };
        let mut layers = Vec::with_capacity(config.num_layers);
        for l in 0..config.num_layers {
            let p = format!("encoder.layer.{l}");
            let (q, k, vv) = (
                linear(&format!("{p}.attention.self.query"), c, c)?,
                linear(&format!("{p}.attention.self.key"), c, c)?,
                linear(&format!("{p}.attention.self.value"), c, c)?,
            );
            layers.push(Layer {
                qkv: Linear { w: [q.w, k.w, vv.w].concat(), b: [q.b, k.b, vv.b].concat() },
                attn_out: linear(&format!("{p}.attention.output.dense"), c, c)?,
                ln1: norm(&format!("{p}.attention.output.LayerNorm"))?,
                up: linear(&format!("{p}.intermediate.dense"), i, c)?,
                down: linear(&format!("{p}.output.dense"), c, i)?,
                ln2: norm(&format!("{p}.output.LayerNorm"))?,
            });
        }
        Ok(Bert {
            word: read("embeddings.word_embeddings.weight", &[config.vocab_size, c])?,
            pos: read("embeddings.position_embeddings.weight", &[config.max_position, c])?,
            ttype: read("embeddings.token_type_embeddings.weight", &[config.type_vocab_size, c])?,
            emb_ln: norm("embeddings.LayerNorm")?,
            layers,
            config,
        })
    }

    /// Runs sentences `lens` (their token ids concatenated in `ids`), all of
    /// token type 0. With `keep_attention`, also returns every layer's
    /// attention probabilities.
    pub fn forward(&self, ids: &[u32], lens: &[usize], keep_attention: bool) -> Result<BertOutput> {
        let cfg = &self.config;
        let (c, nh, inter) = (cfg.hidden_size, cfg.num_heads, cfg.intermediate_size);
        let n: usize = lens.iter().sum();
        if n != ids.len() || lens.contains(&0) {
            return Err(ModelError::InvalidConfig(format!("forward got {} ids for sentences of lengths {lens:?}", ids.len())));
        }
        if let Some(&t) = lens.iter().find(|&&t| t > cfg.max_position) {
            return Err(ModelError::InvalidConfig(format!("a sentence of {t} tokens exceeds the model's {} positions", cfg.max_position)));
        }
        if let Some(bad) = ids.iter().find(|&&x| x as usize >= cfg.vocab_size) {
            return Err(ModelError::InvalidConfig(format!("token id {bad} is out of range for vocab_size {}", cfg.vocab_size)));
        }
        // Embeddings: word + position (restarting per sentence) + type 0.
        let mut x = vec![0.0f32; n * c];
        let positions: Vec<usize> = lens.iter().flat_map(|&t| 0..t).collect();
        x.par_chunks_mut(c).zip(ids.par_iter().zip(&positions)).for_each(|(row, (&id, &p))| {
            let (w, pe, te) = (&self.word[id as usize * c..][..c], &self.pos[p * c..][..c], &self.ttype[..c]);
            for j in 0..c {
                row[j] = w[j] + pe[j] + te[j];
            }
        });
        let (mut mean, mut rstd) = (vec![0.0f32; n], vec![0.0f32; n]);
        let mut tmp = vec![0.0f32; n * c];
        let eps = cfg.layer_norm_eps;
        layernorm_forward(&mut tmp, &mut mean, &mut rstd, &x, &self.emb_ln.w, &self.emb_ln.b, n, c, eps);
        std::mem::swap(&mut x, &mut tmp);

        // Where each sentence starts, in tokens.
        let offsets: Vec<usize> = lens
            .iter()
            .scan(0, |o, &t| {
                let start = *o;
                *o += t;
                Some(start)
            })
            .collect();
        let att_len: usize = lens.iter().map(|&t| nh * t * t).sum();
        let mut att = vec![0.0f32; att_len];
        let (mut qkv, mut ctx, mut h, mut g) = (vec![0.0f32; n * 3 * c], vec![0.0f32; n * c], vec![0.0f32; n * inter], vec![0.0f32; n * inter]);
        let mut attention = Vec::new();
        for layer in &self.layers {
            matmul_forward(&mut qkv, &x, &layer.qkv.w, Some(&layer.qkv.b), n, c, 3 * c, OutIn);
            // Attention per sentence, sentences in parallel on disjoint slices.
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
            // x = LN(x + ctx Wo^T + bo)
            matmul_forward(&mut tmp, &ctx, &layer.attn_out.w, Some(&layer.attn_out.b), n, c, c, OutIn);
            residual_forward(&mut tmp, &x);
            layernorm_forward(&mut x, &mut mean, &mut rstd, &tmp, &layer.ln1.w, &layer.ln1.b, n, c, eps);
            // x = LN(x + GELU(x Wi^T + bi) Wd^T + bd)
            matmul_forward(&mut h, &x, &layer.up.w, Some(&layer.up.b), n, c, inter, OutIn);
            match cfg.act {
                Activation::GeluErf => gelu_erf_forward(&mut g, &h),
                Activation::GeluTanh => gelu_forward(&mut g, &h),
            }
            matmul_forward(&mut tmp, &g, &layer.down.w, Some(&layer.down.b), n, inter, c, OutIn);
            residual_forward(&mut tmp, &x);
            layernorm_forward(&mut x, &mut mean, &mut rstd, &tmp, &layer.ln2.w, &layer.ln2.b, n, c, eps);
        }
        Ok(BertOutput { hidden: x, attention })
    }

    /// Word-embedding row of token `id` (C).
    pub fn word_embedding(&self, id: u32) -> &[f32] {
        let c = self.config.hidden_size;
        &self.word[id as usize * c..(id as usize + 1) * c]
    }

    /// Sentence embeddings: mean of each sentence's last hidden states,
    /// L2-normalized. Sentences are processed in batches of about
    /// `max_tokens` tokens.
    pub fn embed(&self, sentences: &[Vec<u32>], max_tokens: usize) -> Result<Vec<Vec<f32>>> {
        let c = self.config.hidden_size;
        let mut out = Vec::with_capacity(sentences.len());
        let mut start = 0;
        while start < sentences.len() {
            let mut end = start;
            let mut tokens = 0;
            while end < sentences.len() && (end == start || tokens + sentences[end].len() <= max_tokens) {
                tokens += sentences[end].len();
                end += 1;
            }
            let batch = &sentences[start..end];
            let ids: Vec<u32> = batch.concat();
            let lens: Vec<usize> = batch.iter().map(Vec::len).collect();
            let o = self.forward(&ids, &lens, false)?;
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
pub fn mean_pool_normalize(hidden: &[f32], t: usize, c: usize) -> Vec<f32> {
    let mut v = vec![0.0f64; c];
    for row in hidden.chunks(c).take(t) {
        v.iter_mut().zip(row).for_each(|(a, &b)| *a += b as f64);
    }
    v.iter_mut().for_each(|a| *a /= t as f64);
    // sentence-transformers' Normalize divides by max(norm, 1e-12).
    let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-12);
    v.iter().map(|a| (a / norm) as f32).collect()
}
