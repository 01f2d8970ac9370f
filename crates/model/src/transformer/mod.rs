//! The one decoder: GPT-2, Llama, Qwen2 and Mistral are configs of it.
//!
//! - `train.rs`: the training forward pass, which saves what the backward pass
//!   needs, and the backward pass, its strict reverse; `acts.rs` their buffers.
//! - `infer.rs`: the inference path: a KV cache sized to the request, no
//!   saved probabilities, logits for the last position only.
//! - `io.rs`: Hugging Face folders in both directions.

mod acts;
mod batch;
mod classify;
mod encode;
mod infer;
mod io;
mod last_pass;
mod quantized;
mod rows;
mod shards;
mod train;

pub use batch::BatchScratch;
pub use encode::EncoderOutput;
pub use infer::{kv_cache_bytes, Cache};
pub use io::config_from_dir;

use attn_kernels::embedding::sinusoidal_table;
use attn_kernels::layernorm::layernorm_forward;
use attn_kernels::matmul::{matmul_forward, WeightLayout};
use attn_kernels::rmsnorm::rmsnorm_forward;
use attn_kernels::rope::{rope_inv_freq, rope_table_from, RopeScaling};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use crate::config::{Family, Norm, Position, TransformerConfig};
use crate::error::{ModelError, Result};
use crate::params::{Index, NormIdx, ParamKind, ParamLayout};

/// A decoder with its parameters, and (once it trains) gradients and activations.
pub struct Transformer {
    /// The shape.
    pub config: TransformerConfig,
    /// Where each tensor lies in the parameter buffer.
    pub layout: ParamLayout,
    pub(crate) idx: Index,
    /// All parameters, laid out by `layout`.
    pub params: Vec<f32>,
    /// Gradients, same layout; empty until the first backward pass, so a
    /// model that only runs inference never allocates them.
    grads: Vec<f32>,
    /// The fixed sinusoidal table (maxT, C), or empty.
    pub(crate) pos_table: Vec<f32>,
    acts: Option<acts::Acts>,
    /// (B, T) of the last training-path forward pass.
    last_bt: (usize, usize),
    has_targets: bool,
    /// LoRA adapters, trained (and applied) by the training path; the
    /// inference path sees them once merged.
    pub lora: Option<crate::lora::Lora>,
    /// What a classifier's forward pass keeps for its backward pass.
    cls_acts: Option<classify::ClsActs>,
    /// The bf16 or int8 matrices of a quantized model (see `crate::quant`).
    pub(crate) quant: Option<crate::quant::Quant>,
    /// GPT-2's block matrices are held (OC, C) for decoding (`rows`).
    rows_out_in: bool,
    /// How new KV caches store keys and values, when set (`kv_dtype`).
    kv_dtype: Option<attn_kernels::kv_cache::KvDtype>,
    /// Data-parallel shards of a training step (`shards.rs`), and their buffers.
    data_shards: usize,
    shards: Vec<shards::Shard>,
}

impl Transformer {
    /// A randomly initialised model: N(0, 0.02) weights (GPT-2 scales its
    /// residual projections by 1/sqrt(2 * n_layer)), zero biases, unit norms.
    pub fn new(config: TransformerConfig, seed: u64) -> Result<Self> {
        let mut m = Self::zeros(config)?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let std = 0.02f32;
        let scaled = if m.config.family == Family::Gpt2 { std / (2.0 * m.config.n_layer as f32).sqrt() } else { std };
        for e in &m.layout.entries {
            let p = &mut m.params[e.range()];
            match e.kind {
                ParamKind::Norm => p.fill(1.0),
                ParamKind::Bias => p.fill(0.0),
                ParamKind::Matrix | ParamKind::Embedding => {
                    let s = if e.name.ends_with("c_proj.weight") { scaled } else { std };
                    let dist = Normal::new(0.0, s).expect("positive std");
                    p.iter_mut().for_each(|x| *x = dist.sample(&mut rng));
                }
            }
        }
        Ok(m)
    }

    /// A model whose parameters are all zero, to be filled by a loader. The
    /// memory the weights need is checked before anything is allocated.
    pub fn zeros(config: TransformerConfig) -> Result<Self> {
        config.validate()?;
        check_memory(&config, std::path::Path::new("the model config"))?;
        let (layout, idx) = ParamLayout::transformer(&config);
        Ok(Self::with_layout(config, layout, idx))
    }

    /// A model of `layout` (the full one, or a quantized model's rest), zeros.
    pub(crate) fn with_layout(config: TransformerConfig, layout: ParamLayout, idx: Index) -> Self {
        let pos_table = match config.position {
            Position::Sinusoidal => {
                let mut t = vec![0.0; config.n_ctx * config.n_embd];
                sinusoidal_table(&mut t, config.n_ctx, config.n_embd);
                t
            }
            _ => Vec::new(),
        };
        let params = attn_kernels::pages::zeroed(layout.total());
        Transformer {
            config,
            layout,
            idx,
            params,
            grads: Vec::new(),
            pos_table,
            acts: None,
            last_bt: (0, 0),
            has_targets: false,
            lora: None,
            cls_acts: None,
            quant: None,
            rows_out_in: false,
            kv_dtype: None,
            data_shards: 1,
            shards: Vec::new(),
        }
    }

    /// A preset (`baby`, `shakespeare-char`, `gpt2-124m`, `llama-baby`, ...), randomly initialised.
    pub fn preset(name: &str, seed: u64) -> Result<Self> {
        Self::new(TransformerConfig::preset(name)?, seed)
    }

    pub(crate) fn layout_kind(&self) -> WeightLayout {
        if self.rows_out_in {
            WeightLayout::OutIn
        } else {
            layout_of(self.config.family)
        }
    }

    /// One line for logs: type, layers, heads, channels, context, vocabulary, parameters.
    pub fn describe(&self) -> String {
        let c = &self.config;
        let kv = if c.n_kv_head != c.n_head { format!(" ({} KV heads)", c.n_kv_head) } else { String::new() };
        format!(
            "{}: {} layers, {} heads{kv}, {} channels, context {}, vocab {}, {:.2}M parameters",
            c.family.model_type(),
            c.n_layer,
            c.n_head,
            c.n_embd,
            c.n_ctx,
            c.vocab_size,
            self.layout.num_params() as f64 / 1e6
        )
    }

    /// config.json's `model_type`.
    pub fn model_type(&self) -> &'static str {
        self.config.family.model_type()
    }
    /// Token ids run from 0 to this, exclusive.
    pub fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }
    /// Positions the model can attend over.
    pub fn context(&self) -> usize {
        self.config.n_ctx
    }
    /// Transformer blocks.
    pub fn n_layer(&self) -> usize {
        self.config.n_layer
    }
    /// Query heads.
    pub fn n_head(&self) -> usize {
        self.config.n_head
    }
    /// Width of the residual stream.
    pub fn n_embd(&self) -> usize {
        self.config.n_embd
    }
    /// Where each tensor lies in `params`.
    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }
    /// Every weight, in one buffer.
    pub fn params(&self) -> &[f32] {
        &self.params
    }
    /// Gradients of the last backward passes (empty before the first).
    pub fn grads(&self) -> &[f32] {
        &self.grads
    }

    /// Parameters to update and the gradients to update them with: the
    /// adapters' when LoRA is on (the base is frozen), else the model's.
    pub fn params_and_grads(&mut self) -> (&mut [f32], &[f32]) {
        self.ensure_grads();
        match &mut self.lora {
            Some(l) => (&mut l.params, &l.grads),
            None => (&mut self.params, &self.grads),
        }
    }

    /// The layout of what `params_and_grads` returns.
    pub fn trainable_layout(&self) -> &ParamLayout {
        self.lora.as_ref().map_or(&self.layout, |l| &l.layout)
    }

    /// The values of what `params_and_grads` returns.
    pub fn trainable_params(&self) -> &[f32] {
        self.lora.as_ref().map_or(&self.params, |l| &l.params)
    }

    pub(crate) fn ensure_grads_pub(&mut self) {
        self.ensure_grads()
    }

    /// With LoRA the base weights are frozen: they get no gradient buffer.
    fn ensure_grads(&mut self) {
        match &mut self.lora {
            Some(l) => {
                self.grads = Vec::new();
                if l.grads.len() != l.params.len() {
                    l.grads = vec![0.0; l.params.len()];
                }
            }
            None if self.grads.len() != self.params.len() => self.grads = attn_kernels::pages::zeroed(self.params.len()),
            None => {}
        }
    }

    /// Sets every gradient (and the adapters') to 0; backward passes add to them.
    pub fn zero_grad(&mut self) {
        self.ensure_grads();
        let team = self.team_size();
        if team > 1 {
            // Each part on the thread that will add into it and update it.
            shards::zero_on_team(&mut self.grads, team);
        } else {
            attn_kernels::zero(&mut self.grads);
        }
        if let Some(l) = &mut self.lora {
            attn_kernels::zero(&mut l.grads);
        }
    }

    /// FLOPs of one training step on B sequences of T tokens (every product,
    /// forward and backward, attention counted in full), for MFU.
    pub fn train_flops(&self, b: usize, t: usize) -> f64 {
        self.config.train_flops(b, t)
    }

    /// Token embeddings (V, C); empty for a quantized model.
    pub fn token_embeddings(&self) -> &[f32] {
        &self.params[self.idx.wte.clone()]
    }

    /// The final norm and output head applied to any residual stream `hidden`
    /// (N, C): logits (N, V). For the last block's output these are exactly
    /// the model's own logits (the logit lens applies it to every layer).
    /// Empty for an encoder, which has no head, and for a quantized model.
    pub fn head(&self, hidden: &[f32], n: usize) -> Vec<f32> {
        let (c, v) = (self.config.n_embd, self.config.vocab_size);
        let Some(head) = self.idx.head.as_ref().filter(|_| self.quant.is_none()) else { return Vec::new() };
        let mut x = hidden[..n * c].to_vec();
        if let Some(nf) = &self.idx.norm_f {
            let (mut mean, mut rstd) = (vec![0.0; n], vec![0.0; n]);
            self.norm_forward(&mut x, &mut mean, &mut rstd, &hidden[..n * c], nf, n);
        }
        let mut logits = vec![0.0; n * v];
        matmul_forward(&mut logits, &x, &self.params[head.clone()], None, n, c, v, WeightLayout::OutIn);
        logits
    }

    /// LayerNorm or RMSNorm over rows of C; `mean` is unused by RMSNorm.
    pub(crate) fn norm_forward(&self, out: &mut [f32], mean: &mut [f32], rstd: &mut [f32], x: &[f32], w: &NormIdx, n: usize) {
        norm_forward(&self.config, &self.params, out, mean, rstd, x, w, n)
    }

    /// cos and sin tables (rows, HD/2) for a sequence of `seq_len` positions
    /// (only dynamic scaling depends on it). Empty when positions are not rotary.
    pub(crate) fn rope_tables(&self, rows: usize, seq_len: usize) -> (Vec<f32>, Vec<f32>) {
        match self.config.position {
            Position::Rope { theta, scaling } => rope_table_from(rows, &rope_inv_freq(self.config.head_dim, theta, scaling, seq_len)),
            _ => (Vec::new(), Vec::new()),
        }
    }

    /// Whether the rotary tables change with the sequence length.
    pub(crate) fn rope_is_dynamic(&self) -> bool {
        matches!(self.config.position, Position::Rope { scaling: RopeScaling::Dynamic { .. }, .. })
    }

    pub(crate) fn check_ids(&self, what: &str, ids: &[u32]) -> Result<()> {
        let v = self.config.vocab_size;
        match ids.iter().find(|&&x| x as usize >= v) {
            Some(bad) => Err(ModelError::InvalidConfig(format!("{what} id {bad} is out of range for vocab_size {v}"))),
            None => Ok(()),
        }
    }
}

pub(crate) fn norm_forward(cfg: &TransformerConfig, p: &[f32], out: &mut [f32], mean: &mut [f32], rstd: &mut [f32], x: &[f32], w: &NormIdx, n: usize) {
    let (c, eps) = (cfg.n_embd, cfg.norm_eps);
    match (cfg.norm, &w.b) {
        (Norm::Layer, Some(b)) => layernorm_forward(out, mean, rstd, x, &p[w.w.clone()], &p[b.clone()], n, c, eps),
        _ => rmsnorm_forward(out, rstd, x, &p[w.w.clone()], n, c, eps),
    }
}

/// Refuses `need` bytes for `what` when more than the memory available,
/// with the way out in `hint`: an allocation past it would abort the
/// process (or wake the OOM killer) instead of reporting.
pub fn ensure_memory(need: u128, what: impl FnOnce() -> String, hint: &str) -> Result<()> {
    match available_memory() {
        Some(avail) if need > avail as u128 => {
            Err(ModelError::OutOfMemory { what: what(), needed_gb: need as f64 / 1e9, available_gb: avail as f64 / 1e9, hint: hint.into() })
        }
        _ => Ok(()),
    }
}

/// Bytes of memory available to this process, if known: Linux's
/// MemAvailable, or less under an address-space limit (`ulimit -v`).
pub fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
    });
    match (meminfo, address_space_limit()) {
        (Some(m), Some(l)) => Some(m.min(l)),
        (m, l) => m.or(l),
    }
}

/// Half the soft RLIMIT_AS, if one is set: the address space also holds the
/// program, its threads' stacks and its memory maps.
fn address_space_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes the struct it is given and nothing else.
        let ok = unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut lim) } == 0;
        if ok && lim.rlim_cur != libc::RLIM_INFINITY {
            // rlim_t is not u64 on every platform.
            #[allow(clippy::unnecessary_cast)]
            return Some(lim.rlim_cur as u64 / 2);
        }
    }
    None
}

/// Refuses a config whose f32 weights alone exceed the memory available,
/// before anything is allocated.
pub(crate) fn check_memory(cfg: &TransformerConfig, path: &std::path::Path) -> Result<()> {
    let needed = cfg.param_count().and_then(|n| n.checked_mul(4));
    let avail = available_memory();
    let too_big = match (needed, avail) {
        (None, _) => true,
        (Some(n), Some(a)) => n > a as u128,
        // Without /proc/meminfo, still refuse what no address space holds.
        (Some(n), None) => n > (1u128 << 47),
    };
    if too_big {
        return Err(ModelError::TooLarge {
            path: path.to_path_buf(),
            needed_gb: needed.map_or(f64::INFINITY, |n| n as f64 / 1e9),
            available_gb: avail.map_or(0.0, |a| a as f64 / 1e9),
            hint: "check vocab_size, hidden_size, intermediate_size, num_hidden_layers and max_position_embeddings".into(),
        });
    }
    Ok(())
}

/// How a family stores its block matrices: GPT-2's Conv1D (C, OC), the
/// others' nn.Linear (OC, C).
pub(crate) fn layout_of(family: Family) -> WeightLayout {
    match family {
        Family::Gpt2 => WeightLayout::InOut,
        _ => WeightLayout::OutIn,
    }
}
