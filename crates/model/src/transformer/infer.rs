//! The inference path. `Transformer::forward_cached` runs new tokens against
//! a KV cache: a prompt (prefill) or one token (decode) go through the same
//! code. It keeps no attention probabilities and no per-position logits
//! (only the last position's), and works through a long prompt in chunks of
//! `CHUNK` rows, so its memory is the weights, the cache, and a few MB.
//!
//! The cache holds NKV heads (query heads of a group share one) for the
//! positions the request asked for, rounded up to whole tiles of 16 keys,
//! head after head (`attn_kernels::kv_cache` has the layout and its reasons),
//! as f32 or bf16 (`Transformer::kv_dtype`: bf16 for bf16 and int8 weights).

use attn_kernels::gelu::gelu_forward;
use attn_kernels::kv_cache::{attention_cached_scratch_len, kv_layer_len, KvDtype, KvStore, CACHED_BLOCK};
use attn_kernels::matmul::{matmul_forward, WeightLayout, WeightLayout::OutIn};
use attn_kernels::matvec::{matvec_forward, matvec_scratch_len};
use attn_kernels::quant::qmatvec_forward;
use attn_kernels::residual::residual_forward;
use attn_kernels::rope::rope_forward;
use attn_kernels::swiglu::swiglu_forward;

use super::quantized::QROWS;
use super::Transformer;
use crate::config::Position;
use crate::error::{ModelError, Result};
use crate::params::{LayerIndex, Lin};

/// Rows of a prompt processed together: large enough for efficient GEMMs,
/// small enough that the per-chunk buffers stay a few MB.
const CHUNK: usize = 256;

/// Keys and values of every layer for up to `capacity` positions, plus the
/// buffers one chunk needs, allocated once. A clone holds the same positions:
/// a prompt prefilled once can start several sequences.
#[derive(Clone)]
pub struct Cache {
    pub(super) capacity: usize,
    pub(super) len: usize,
    pub(super) kvw: usize,
    pub(super) kv: KvStore,      // (L, kv_layer_len) keys in transposed tiles and values, attn_kernels::kv_cache
    x: Vec<f32>,                 // (rows, C) the residual stream
    ln: Vec<f32>,                // (rows, C)
    mean: Vec<f32>,              // (rows)
    rstd: Vec<f32>,              // (rows)
    qkv: Vec<f32>,               // (rows, W)
    atty: Vec<f32>,              // (rows, A)
    tmp: Vec<f32>,               // (rows, C)
    h: Vec<f32>,                 // (rows, F)
    gate: Vec<f32>,              // (rows, F)
    act: Vec<f32>,               // (rows, F)
    pub(super) scores: Vec<f32>, // (NH, CACHED_BLOCK, capacity)
    logits: Vec<f32>,            // (V)
    partials: Vec<f32>,          // matvec scratch
    pub(super) cos: Vec<f32>,    // (capacity, HD/2), rotary only
    pub(super) sin: Vec<f32>,    // (capacity, HD/2)
}

impl Cache {
    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether no position is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Positions it can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    /// True when no further token fits.
    pub fn is_full(&self) -> bool {
        self.len == self.capacity
    }
    /// Forgets every position (the buffers stay allocated).
    pub fn clear(&mut self) {
        self.len = 0;
    }
    /// Whether this cache was made for a model of `cfg`'s shape.
    pub(super) fn fits(&self, cfg: &crate::TransformerConfig) -> bool {
        let kvw = cfg.n_kv_head * cfg.head_dim;
        self.kvw == kvw && self.kv.len() == cfg.n_layer * kv_layer_len(cfg.n_kv_head, cfg.head_dim, self.capacity)
    }
    /// Bytes held by the keys and values.
    pub fn kv_bytes(&self) -> usize {
        self.kv.bytes()
    }
    /// How the keys and values are stored.
    pub fn kv_dtype(&self) -> KvDtype {
        self.kv.dtype()
    }
}

/// Bytes a cache of `capacity` positions needs for its keys and values.
pub fn kv_cache_bytes(cfg: &crate::TransformerConfig, capacity: usize, dtype: KvDtype) -> u128 {
    2 * dtype.size() as u128 * cfg.n_layer as u128 * kv_layer_len(cfg.n_kv_head, cfg.head_dim, capacity) as u128
}

impl Transformer {
    /// How new KV caches store keys and values: as set by `set_kv_dtype`,
    /// else f32 for an f32 model and bf16 for a bf16 or int8 one (whose
    /// decoding reads so few weight bytes that an f32 cache would be a
    /// large part of each token's reads).
    pub fn kv_dtype(&self) -> KvDtype {
        self.kv_dtype.unwrap_or(if self.quant.is_some() { KvDtype::Bf16 } else { KvDtype::F32 })
    }

    /// Sets how caches made from now on store keys and values.
    pub fn set_kv_dtype(&mut self, dtype: KvDtype) {
        self.kv_dtype = Some(dtype);
    }

    /// A KV cache for up to `capacity` positions (at most the model's context).
    pub fn new_cache(&self, capacity: usize) -> Result<Cache> {
        let cfg = &self.config;
        if !cfg.has_head() || !cfg.causal {
            return Err(ModelError::InvalidConfig(format!("a {} encoder does not generate; it has no KV cache", self.model_type())));
        }
        let capacity = capacity.clamp(1, cfg.n_ctx);
        super::ensure_memory(kv_cache_bytes(cfg, capacity, self.kv_dtype()), || format!("a KV cache for {capacity} positions would"), "ask for fewer tokens")?;
        let rows = CHUNK.min(capacity);
        let (c, w, a, f, kvw) = (cfg.n_embd, cfg.qkv_width(), cfg.attn_width(), cfg.d_ff, cfg.n_kv_head * cfg.head_dim);
        let z = |n: usize| vec![0.0f32; n];
        let kv = cfg.n_layer * kv_layer_len(cfg.n_kv_head, cfg.head_dim, capacity);
        let (cos, sin) = if self.rope_is_dynamic() { (Vec::new(), Vec::new()) } else { self.rope_tables(capacity, capacity) };
        Ok(Cache {
            capacity,
            len: 0,
            kvw,
            kv: KvStore::zeros(self.kv_dtype(), kv),
            x: z(rows * c),
            ln: z(rows * c),
            mean: z(rows),
            rstd: z(rows),
            qkv: z(rows * w),
            atty: z(rows * a),
            tmp: z(rows * c),
            h: z(rows * f),
            gate: z(rows * f),
            act: z(rows * f),
            scores: z(attention_cached_scratch_len(cfg.n_head, capacity) / CACHED_BLOCK * CACHED_BLOCK.min(rows)),
            logits: z(cfg.vocab_size),
            // int8 models run chunks of up to QROWS rows through the
            // quantized matrix-vector kernel, whose scratch is per row.
            partials: z(matvec_scratch_len(if self.is_int8() { QROWS } else { 1 }, cfg.vocab_size.max(f).max(w))),
            cos,
            sin,
        })
    }

    /// Runs the prompt and fills the cache; returns the logits (V) for the next token.
    pub fn prefill<'c>(&self, cache: &'c mut Cache, tokens: &[u32]) -> Result<&'c [f32]> {
        if tokens.is_empty() {
            return Err(ModelError::InvalidConfig("prefill needs at least one token".into()));
        }
        self.forward_cached(cache, tokens)
    }

    /// One token at the cache's next position; returns the next logits (V).
    pub fn decode<'c>(&self, cache: &'c mut Cache, token: u32) -> Result<&'c [f32]> {
        self.forward_cached(cache, &[token])
    }

    /// Appends `tokens` at positions `cache.len()..` and returns the logits
    /// (V) for the token after the last of them.
    pub fn forward_cached<'c>(&self, cache: &'c mut Cache, tokens: &[u32]) -> Result<&'c [f32]> {
        let cfg = &self.config;
        if !cache.fits(cfg) || cache.logits.len() != cfg.vocab_size {
            return Err(ModelError::InvalidConfig("this KV cache was made for a model of another shape".into()));
        }
        if cache.len + tokens.len() > cache.capacity {
            return Err(ModelError::InvalidConfig(format!(
                "the KV cache holds {} positions: {} are used and {} more were given",
                cache.capacity,
                cache.len,
                tokens.len()
            )));
        }
        self.check_ids("token", tokens)?;
        let chunks = tokens.len().div_ceil(CHUNK);
        attn_kernels::in_pool(|| {
            for (i, chunk) in tokens.chunks(CHUNK).enumerate() {
                self.chunk_forward(cache, chunk, i + 1 == chunks);
            }
        });
        Ok(&cache.logits)
    }

    /// Total next-token cross-entropy (nats) of `targets[i]` after
    /// `tokens[..=i]`, through the inference path: what `forward` with
    /// targets sums, for models that only have that path (bf16 and int8
    /// weights). Runs in a cache of its own, a chunk of rows at a time; for
    /// int8 weights chunks of QROWS, which take the decoding kernel (it
    /// rounds its input to fixed point, `attn_kernels::quant::fixed16`,
    /// where a larger chunk's GEMM would not), so that the score is the
    /// model's as it generates.
    pub fn score_cached(&self, tokens: &[u32], targets: &[u32]) -> Result<f64> {
        attn_kernels::in_pool(|| self.score_cached_in_pool(tokens, targets))
    }

    fn score_cached_in_pool(&self, tokens: &[u32], targets: &[u32]) -> Result<f64> {
        let (c, v) = (self.config.n_embd, self.config.vocab_size);
        if tokens.is_empty() || tokens.len() != targets.len() || tokens.len() > self.config.n_ctx {
            return Err(ModelError::InvalidConfig(format!(
                "scoring needs 1 to {} tokens and one target each: got {} and {}",
                self.config.n_ctx,
                tokens.len(),
                targets.len()
            )));
        }
        self.check_ids("target", targets)?;
        let mut cache = self.new_cache(tokens.len())?;
        let (Some(nf), Some(head)) = (&self.idx.norm_f, self.head_lin()) else { unreachable!("new_cache refuses encoders") };
        let mut logits = vec![0.0f32; CHUNK.min(tokens.len()) * v];
        let mut nats = 0.0f64;
        let rows = if self.is_int8() { QROWS } else { CHUNK };
        for (chunk, ys) in tokens.chunks(rows).zip(targets.chunks(rows)) {
            self.forward_cached(&mut cache, chunk)?;
            let rows = chunk.len();
            let Cache { x, ln, mean, rstd, partials, .. } = &mut cache;
            self.norm_forward(ln, mean, rstd, x, nf, rows);
            self.dense(&mut logits, partials, ln, &head, rows, c, v, OutIn);
            for (row, &y) in logits.chunks(v).zip(ys) {
                let max = row.iter().fold(f32::NEG_INFINITY, |m, &z| m.max(z));
                let sum: f64 = row.iter().map(|&z| ((z - max) as f64).exp()).sum();
                nats += sum.ln() + max as f64 - row[y as usize] as f64;
            }
        }
        Ok(nats)
    }

    /// Dense layer on `rows` rows of one sequence: a matrix-vector product
    /// for one row (the decoding case, bound by reading the weights), a GEMM
    /// otherwise.
    pub(super) fn dense(
        &self,
        out: &mut [f32],
        partials: &mut [f32],
        inp: &[f32],
        lin: &crate::params::Lin,
        rows: usize,
        c: usize,
        oc: usize,
        lay: WeightLayout,
    ) {
        let p = &self.params;
        let bias = lin.b.clone().map(|r| &p[r]);
        match self.qmat(lin) {
            _ if rows == 1 => self.dense_rows(out, partials, inp, lin, 1, c, oc, lay),
            Some(m) => self.dense_q(out, partials, inp, m, bias, rows),
            None => matmul_forward(out, inp, &p[lin.w.clone()], bias, rows, c, oc, lay),
        }
    }

    /// One row per sequence (N rows) through a dense layer, f32 or
    /// quantized: the matrix-vector kernels, which read each weight once for
    /// all rows and sum every output in an order independent of N.
    pub(super) fn dense_rows(&self, out: &mut [f32], partials: &mut [f32], inp: &[f32], lin: &Lin, n: usize, c: usize, oc: usize, lay: WeightLayout) {
        let p = &self.params;
        let bias = lin.b.clone().map(|r| &p[r]);
        match self.qmat(lin) {
            Some(m) => qmatvec_forward(out, partials, inp, m, bias, n),
            None => matvec_forward(out, partials, inp, &p[lin.w.clone()], bias, n, c, oc, lay),
        }
    }

    /// The LM head as a dense layer: (V, C), no bias, quantized or not.
    pub(super) fn head_lin(&self) -> Option<Lin> {
        self.idx.head.clone().map(|w| Lin { w, b: None, q: self.idx.head_q })
    }

    fn chunk_forward(&self, cache: &mut Cache, tokens: &[u32], want_logits: bool) {
        let cfg = &self.config;
        let (c, v, w, at) = (cfg.n_embd, cfg.vocab_size, cfg.qkv_width(), cfg.attn_width());
        let (nh, nkv, hd, kvw) = (cfg.n_head, cfg.n_kv_head, cfg.head_dim, cache.kvw);
        let (rows, p0, cap) = (tokens.len(), cache.len, cache.capacity);
        let (idx, lay) = (&self.idx, self.layout_kind());
        if self.rope_is_dynamic() {
            // The frequencies depend on the total length, as transformers
            // recomputes them once a sequence passes the original context.
            (cache.cos, cache.sin) = self.rope_tables(p0 + rows, p0 + rows);
        }
        let Cache { kv, x, ln, mean, rstd, qkv, atty, tmp, h, gate, act, scores, logits, partials, cos, sin, .. } = cache;
        for (r, &id) in tokens.iter().enumerate() {
            self.embed_row(&mut x[r * c..(r + 1) * c], id, p0 + r);
        }
        let rope = matches!(cfg.position, Position::Rope { .. });
        for (li, wi) in idx.layers.iter().enumerate() {
            self.norm_forward(ln, mean, rstd, x, &wi.norm1, rows);
            self.dense(qkv, partials, ln, &wi.qkv, rows, c, w, lay);
            if rope {
                rope_forward(qkv, cos, sin, 1, rows, w, 0, nh, hd, p0);
                rope_forward(qkv, cos, sin, 1, rows, w, at, nkv, hd, p0);
            }
            let per = kv_layer_len(nkv, hd, cap);
            let layer = li * per..(li + 1) * per;
            for r in 0..rows {
                let row = &qkv[r * w..(r + 1) * w];
                kv.store(layer.clone(), &row[at..at + kvw], &row[at + kvw..at + 2 * kvw], p0 + r, nkv, hd, cap);
            }
            kv.attention(layer, atty, scores, qkv, w, rows, p0, (nh, nkv, hd, cap));
            let dense =
                |out: &mut [f32], partials: &mut [f32], inp: &[f32], lin: &Lin, ic: usize, oc: usize| self.dense(out, partials, inp, lin, rows, ic, oc, lay);
            self.block_tail(wi, Tail { x, ln, mean, rstd, atty, tmp, h, gate, act, partials }, rows, &dense);
        }
        cache.len = p0 + rows;
        if !want_logits {
            return;
        }
        // Only the last position's logits are ever needed from a cached pass.
        let last = &x[(rows - 1) * c..rows * c];
        let (Some(nf), Some(head)) = (&idx.norm_f, self.head_lin()) else { unreachable!("new_cache refuses encoders") };
        self.norm_forward(ln, mean, rstd, last, nf, 1);
        self.dense_rows(logits, partials, ln, &head, 1, c, v, OutIn);
    }

    /// The input row of token `id` at position `pos`: its embedding plus a
    /// learned or sinusoidal position (rotary positions come later, in Q and K).
    pub(super) fn embed_row(&self, row: &mut [f32], id: u32, pos: usize) {
        let (p, idx, c) = (&self.params, &self.idx, self.config.n_embd);
        if !self.embed_q(row, id) {
            row.copy_from_slice(&p[idx.wte.start + id as usize * c..][..c]);
        }
        let add: Option<&[f32]> = match (&idx.wpe, self.config.position) {
            (Some(wpe), _) => Some(&p[wpe.start + pos * c..][..c]),
            (None, Position::Sinusoidal) => Some(&self.pos_table[pos * c..][..c]),
            _ => None,
        };
        if let Some(add) = add {
            residual_forward(row, add);
        }
    }

    /// A block after its attention, on `rows` rows: output projection,
    /// residual, second norm, MLP, residual. `dense` runs one layer over
    /// the rows, with the kernel its caller chose (one sequence's rows, or
    /// one row from each of a batch of sequences).
    pub(super) fn block_tail(&self, wi: &LayerIndex, t: Tail<'_>, rows: usize, dense: &Dense<'_>) {
        let cfg = &self.config;
        let (c, at, f) = (cfg.n_embd, cfg.attn_width(), cfg.d_ff);
        let Tail { x, ln, mean, rstd, atty, tmp, h, gate, act, partials } = t;
        dense(tmp, partials, atty, &wi.proj, at, c);
        residual_forward(&mut x[..rows * c], &tmp[..rows * c]);
        self.norm_forward(ln, mean, rstd, x, &wi.norm2, rows);
        dense(h, partials, ln, &wi.up, c, f);
        match &wi.gate {
            Some(g) => {
                dense(gate, partials, ln, g, c, f);
                swiglu_forward(&mut act[..rows * f], &gate[..rows * f], &h[..rows * f]);
            }
            None => gelu_forward(&mut act[..rows * f], &h[..rows * f]),
        }
        dense(tmp, partials, act, &wi.down, f, c);
        residual_forward(&mut x[..rows * c], &tmp[..rows * c]);
    }
}

/// One dense layer over the rows in hand: (out, matvec scratch, input, layer, in width, out width).
pub(super) type Dense<'a> = dyn Fn(&mut [f32], &mut [f32], &[f32], &Lin, usize, usize) + 'a;

/// The buffers `block_tail` works in.
pub(super) struct Tail<'a> {
    pub x: &'a mut [f32],
    pub ln: &'a mut [f32],
    pub mean: &'a mut [f32],
    pub rstd: &'a mut [f32],
    pub atty: &'a [f32],
    pub tmp: &'a mut [f32],
    pub h: &'a mut [f32],
    pub gate: &'a mut [f32],
    pub act: &'a mut [f32],
    pub partials: &'a mut [f32],
}
