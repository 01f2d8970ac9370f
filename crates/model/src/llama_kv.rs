//! Llama decoding with a KV cache, and Llama checkpoints in the Hugging Face
//! layout (config.json + model.safetensors, tensor names as transformers
//! writes them).
//!
//! The cache keeps keys and values for every query head: each K/V head is
//! stored once per query head of its group, so the multi-head decoding
//! kernel serves grouped-query attention unchanged. That costs NH / NKV
//! times the memory of a grouped cache; for the context lengths attn runs on
//! a CPU it is small next to the weights.

use std::collections::HashMap;
use std::path::Path;

use attn_kernels::attention::attention_decode;
use attn_kernels::matmul::WeightLayout::OutIn;
use attn_kernels::matvec::{matvec_forward, matvec_scratch_len};
use attn_kernels::residual::residual_forward;
use attn_kernels::rmsnorm::rmsnorm_forward;
use attn_kernels::rope::rope_forward;
use attn_kernels::swiglu::swiglu_forward;

use crate::checkpoint::{save_tensors, write_atomic, Weights};
use crate::error::{io_err, ModelError, Result};
use crate::llama::{Llama, LlamaConfig};

pub struct LlamaCache {
    n_ctx: usize,
    k: Vec<f32>, // (L, maxT, C), K/V heads repeated per query head
    v: Vec<f32>, // (L, maxT, C)
    len: usize,
    x: Vec<f32>,        // (C)
    ln: Vec<f32>,       // (C)
    rstd: Vec<f32>,     // (1)
    qkv: Vec<f32>,      // (C + 2 KVC)
    atty: Vec<f32>,     // (C)
    proj: Vec<f32>,     // (C)
    gate: Vec<f32>,     // (I)
    up: Vec<f32>,       // (I)
    act: Vec<f32>,      // (I)
    scores: Vec<f32>,   // (NH, maxT)
    logits: Vec<f32>,   // (V)
    partials: Vec<f32>, // matvec scratch
}

impl LlamaCache {
    pub fn new(model: &Llama) -> Self {
        let cfg = &model.config;
        let (l, t, c, i) = (cfg.num_layers, cfg.max_position, cfg.hidden_size, cfg.intermediate_size);
        let z = |n: usize| vec![0.0f32; n];
        LlamaCache {
            n_ctx: t,
            k: z(l * t * c),
            v: z(l * t * c),
            len: 0,
            x: z(c),
            ln: z(c),
            rstd: z(1),
            qkv: z(cfg.qkv_width()),
            atty: z(c),
            proj: z(c),
            gate: z(i),
            up: z(i),
            act: z(i),
            scores: z(cfg.num_heads * t),
            logits: z(cfg.vocab_size),
            partials: z(matvec_scratch_len(cfg.vocab_size.max(i).max(cfg.qkv_width()))),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len == self.n_ctx
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Stores position `pos` of layer `l` from a packed q | k | v row.
    fn store(&mut self, cfg: &LlamaConfig, l: usize, pos: usize, qkv: &[f32]) {
        let (c, nh, nkv, hs) = (cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_size());
        let (group, kvc) = (nh / nkv, nkv * hs);
        let base = (l * self.n_ctx + pos) * c;
        for h in 0..nh {
            let kv = h / group;
            self.k[base + h * hs..base + (h + 1) * hs].copy_from_slice(&qkv[c + kv * hs..c + (kv + 1) * hs]);
            self.v[base + h * hs..base + (h + 1) * hs].copy_from_slice(&qkv[c + kvc + kv * hs..c + kvc + (kv + 1) * hs]);
        }
    }
}

impl Llama {
    fn check_cache(&self, cache: &LlamaCache) -> Result<()> {
        let cfg = &self.config;
        if cache.n_ctx != cfg.max_position || cache.k.len() != cfg.num_layers * cfg.max_position * cfg.hidden_size || cache.logits.len() != cfg.vocab_size {
            return Err(ModelError::InvalidConfig("this KV cache was made for a model of another shape".into()));
        }
        Ok(())
    }

    /// Runs the prompt as one batched pass, caches its keys and values, and
    /// returns the logits (V) for the next token.
    pub fn prefill<'c>(&mut self, cache: &'c mut LlamaCache, tokens: &[u32]) -> Result<&'c [f32]> {
        self.check_cache(cache)?;
        let t = tokens.len();
        if t == 0 {
            return Err(ModelError::InvalidConfig("prefill needs at least one token".into()));
        }
        self.forward(tokens, None, 1, t)?;
        let (w, v) = (self.config.qkv_width(), self.config.vocab_size);
        for l in 0..self.config.num_layers {
            let qkv = self.qkv_activations(l).to_vec();
            for p in 0..t {
                cache.store(&self.config, l, p, &qkv[p * w..(p + 1) * w]);
            }
        }
        cache.len = t;
        cache.logits.copy_from_slice(&self.logits()[(t - 1) * v..t * v]);
        Ok(&cache.logits)
    }

    /// Appends one token at position `cache.len()`; returns the next logits (V).
    pub fn decode<'c>(&self, cache: &'c mut LlamaCache, token: u32) -> Result<&'c [f32]> {
        self.check_cache(cache)?;
        let cfg = &self.config;
        let (c, nh, nkv, hs, v, inter, w) =
            (cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_size(), cfg.vocab_size, cfg.intermediate_size, cfg.qkv_width());
        let (pos, n_ctx) = (cache.len, cache.n_ctx);
        if pos >= n_ctx {
            return Err(ModelError::InvalidConfig(format!("the KV cache is full: the model's context is {n_ctx} tokens")));
        }
        if token as usize >= v {
            return Err(ModelError::InvalidConfig(format!("token id {token} is out of range for vocab_size {v}")));
        }
        let (p, idx, eps) = (&self.params, &self.idx, cfg.rms_norm_eps);
        cache.x.copy_from_slice(&p[idx.embed.start + token as usize * c..][..c]);
        for (l, wi) in idx.layers.iter().enumerate() {
            let cc = &mut *cache;
            rmsnorm_forward(&mut cc.ln, &mut cc.rstd, &cc.x, &p[wi.ln1.clone()], 1, c, eps);
            matvec_forward(&mut cc.qkv, &mut cc.partials, &cc.ln, &p[wi.qkv_w.clone()], wi.qkv_b.clone().map(|r| &p[r]), c, w, OutIn);
            rope_forward(&mut cc.qkv, &self.cos, &self.sin, 1, 1, w, 0, nh, hs, pos);
            rope_forward(&mut cc.qkv, &self.cos, &self.sin, 1, 1, w, c, nkv, hs, pos);
            let qkv = std::mem::take(&mut cc.qkv);
            cc.store(cfg, l, pos, &qkv);
            cc.qkv = qkv;
            let base = l * n_ctx * c;
            attention_decode(&mut cc.atty, &mut cc.scores, &cc.qkv[..c], &cc.k[base..base + n_ctx * c], &cc.v[base..base + n_ctx * c], pos + 1, c, nh);
            matvec_forward(&mut cc.proj, &mut cc.partials, &cc.atty, &p[wi.o_w.clone()], None, c, c, OutIn);
            residual_forward(&mut cc.x, &cc.proj);
            rmsnorm_forward(&mut cc.ln, &mut cc.rstd, &cc.x, &p[wi.ln2.clone()], 1, c, eps);
            matvec_forward(&mut cc.gate, &mut cc.partials, &cc.ln, &p[wi.gate_w.clone()], None, c, inter, OutIn);
            matvec_forward(&mut cc.up, &mut cc.partials, &cc.ln, &p[wi.up_w.clone()], None, c, inter, OutIn);
            swiglu_forward(&mut cc.act, &cc.gate, &cc.up);
            matvec_forward(&mut cc.proj, &mut cc.partials, &cc.act, &p[wi.down_w.clone()], None, inter, c, OutIn);
            residual_forward(&mut cc.x, &cc.proj);
        }
        rmsnorm_forward(&mut cache.ln, &mut cache.rstd, &cache.x, &p[idx.norm.clone()], 1, c, eps);
        matvec_forward(&mut cache.logits, &mut cache.partials, &cache.ln, &p[idx.head.clone()], None, c, v, OutIn);
        cache.len = pos + 1;
        Ok(&cache.logits)
    }

    /// config.json as transformers writes it, keeping any fields of the
    /// file the model was loaded from (token ids, names) that attn does not use.
    pub fn hf_config(&self) -> serde_json::Value {
        let cfg = &self.config;
        // f32 settings written as their shortest decimal (1e-5, not 9.99999974e-6).
        let dec = |x: f32| x.to_string().parse::<f64>().unwrap_or(x as f64);
        let mut v = if cfg.hf.is_object() { cfg.hf.clone() } else { serde_json::json!({}) };
        let arch = if cfg.model_type == "qwen2" { "Qwen2ForCausalLM" } else { "LlamaForCausalLM" };
        let set = serde_json::json!({
            "model_type": cfg.model_type, "architectures": [arch], "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
            "intermediate_size": cfg.intermediate_size, "num_hidden_layers": cfg.num_layers, "num_attention_heads": cfg.num_heads,
            "num_key_value_heads": cfg.num_kv_heads, "max_position_embeddings": cfg.max_position, "rms_norm_eps": dec(cfg.rms_norm_eps),
            "rope_theta": dec(cfg.rope_theta), "tie_word_embeddings": cfg.tie_word_embeddings, "hidden_act": "silu", "torch_dtype": "float32",
            "rope_scaling": null,
        });
        for (k, x) in set.as_object().expect("object") {
            v[k] = x.clone();
        }
        if cfg.model_type == "llama" {
            v["attention_bias"] = cfg.qkv_bias.into();
            v["mlp_bias"] = false.into();
        }
        v
    }

    /// Writes config.json and model.safetensors into `dir` (atomically, file by file).
    pub fn save(&self, dir: &Path, metadata: Option<HashMap<String, String>>) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let cfg_path = dir.join("config.json");
        let json = serde_json::to_string_pretty(&self.hf_config()).expect("serializes");
        write_atomic(&cfg_path, json.as_bytes()).map_err(io_err(&cfg_path))?;
        let tensors: Vec<_> = self.layout.entries.iter().map(|e| (e.name.as_str(), e.shape.clone(), &self.params[e.range()])).collect();
        let mut meta = metadata.unwrap_or_default();
        meta.insert("format".into(), "pt".into());
        save_tensors(&dir.join("model.safetensors"), &tensors, Some(meta))
    }

    /// Loads a Hugging Face Llama or Qwen2 folder (or an attn run of one).
    pub fn load(dir: &Path) -> Result<(Self, HashMap<String, String>)> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|source| ModelError::Json { path: path.clone(), source })?;
        let config = LlamaConfig::from_hf(&json, &path)?;
        let w = Weights::open_dir(dir)?;
        let mut model = Llama::zeros(config);
        for e in model.layout.entries.clone() {
            // A bare LlamaModel checkpoint has no "model." prefix.
            let short = e.name.strip_prefix("model.").unwrap_or(&e.name);
            let name = if w.has(&e.name) || !w.has(short) { e.name.as_str() } else { short };
            w.read_into(name, &e.shape, &mut model.params[e.range()])?;
        }
        Ok((model, w.metadata()?))
    }
}
