//! One decoding step for several sequences at once (continuous batching).
//!
//! Each sequence keeps its own KV cache, of its own length; the step takes
//! one new token per sequence and runs every dense layer once over all of
//! them, so the weights are read once per step instead of once per sequence.
//! Attention runs per sequence against its own cache.
//!
//! A row's result is bit for bit the same whatever else is in the batch, and
//! the same as `Transformer::decode` on its cache alone: every kernel here is
//! row-wise or sums each output in an order independent of the batch size
//! (see `matvec_forward`). Greedy and seeded output then do not depend on load.

use attn_kernels::kv_cache::kv_layer_len;
use attn_kernels::matmul::WeightLayout::OutIn;
use attn_kernels::matvec::matvec_scratch_len;
use attn_kernels::rope::rope_forward;

use super::infer::Tail;
use super::{Cache, Transformer};
use crate::config::Position;
use crate::error::{ModelError, Result};
use crate::params::Lin;

/// Buffers for a step of up to `max_rows` sequences, allocated once.
pub struct BatchScratch {
    max_rows: usize,
    x: Vec<f32>,        // (N, C) the residual stream
    ln: Vec<f32>,       // (N, C)
    mean: Vec<f32>,     // (N)
    rstd: Vec<f32>,     // (N)
    qkv: Vec<f32>,      // (N, W)
    atty: Vec<f32>,     // (N, A)
    tmp: Vec<f32>,      // (N, C)
    h: Vec<f32>,        // (N, F)
    gate: Vec<f32>,     // (N, F)
    act: Vec<f32>,      // (N, F)
    logits: Vec<f32>,   // (N, V)
    partials: Vec<f32>, // matvec scratch
}

impl BatchScratch {
    /// Rows (sequences) it has room for in one step.
    pub fn max_rows(&self) -> usize {
        self.max_rows
    }
}

impl Transformer {
    /// Buffers for decoding up to `max_rows` sequences together; refused
    /// when they would not fit in the memory available.
    pub fn new_batch_scratch(&self, max_rows: usize) -> Result<BatchScratch> {
        let cfg = &self.config;
        let n = max_rows.max(1);
        let (c, w, a, f, v) = (cfg.n_embd, cfg.qkv_width(), cfg.attn_width(), cfg.d_ff, cfg.vocab_size);
        let part = matvec_scratch_len(n, v.max(f).max(w).max(c)) as u128;
        let need = 4 * (n as u128 * (3 * c + w + a + 3 * f + v + 2) as u128 + part);
        super::ensure_memory(need, || format!("decoding buffers for {n} sequences at once"), "decode fewer sequences together (attn serve: --parallel)")?;
        let z = |k: usize| vec![0.0f32; k];
        Ok(BatchScratch {
            max_rows: n,
            x: z(n * c),
            ln: z(n * c),
            mean: z(n),
            rstd: z(n),
            qkv: z(n * w),
            atty: z(n * a),
            tmp: z(n * c),
            h: z(n * f),
            gate: z(n * f),
            act: z(n * f),
            logits: z(n * v),
            // Sized for the most rows, so the kernel splits every layer the
            // same way at any batch size (see `matvec_forward`).
            partials: z(matvec_scratch_len(n, v.max(f).max(w).max(c))),
        })
    }

    /// Appends `tokens[i]` to `caches[i]` for every i and returns the next
    /// logits of each, (N, V) row-major.
    pub fn decode_batch<'s>(&self, scratch: &'s mut BatchScratch, caches: &mut [&mut Cache], tokens: &[u32]) -> Result<&'s [f32]> {
        let cfg = &self.config;
        let n = tokens.len();
        if n != caches.len() || n == 0 || n > scratch.max_rows {
            return Err(ModelError::InvalidConfig(format!(
                "a batched step needs one token per cache, 1 to {} of them: got {n} tokens for {} caches",
                scratch.max_rows,
                caches.len()
            )));
        }
        if scratch.logits.len() != scratch.max_rows * cfg.vocab_size || scratch.x.len() != scratch.max_rows * cfg.n_embd {
            return Err(ModelError::InvalidConfig("these batch buffers were made for a model of another shape".into()));
        }
        for cache in caches.iter() {
            if !cache.fits(cfg) {
                return Err(ModelError::InvalidConfig("a KV cache in the batch was made for a model of another shape".into()));
            }
            if cache.len >= cache.capacity {
                return Err(ModelError::InvalidConfig(format!("a KV cache in the batch is full ({} positions)", cache.capacity)));
            }
        }
        self.check_ids("token", tokens)?;
        attn_kernels::in_pool(|| self.batch_forward(scratch, caches, tokens));
        Ok(&scratch.logits[..n * cfg.vocab_size])
    }

    fn batch_forward(&self, s: &mut BatchScratch, caches: &mut [&mut Cache], tokens: &[u32]) {
        let cfg = &self.config;
        let n = tokens.len();
        let (c, v, w, at) = (cfg.n_embd, cfg.vocab_size, cfg.qkv_width(), cfg.attn_width());
        let (nh, nkv, hd, kvw) = (cfg.n_head, cfg.n_kv_head, cfg.head_dim, cfg.n_kv_head * cfg.head_dim);
        let (idx, lay) = (&self.idx, self.layout_kind());
        let BatchScratch { x, ln, mean, rstd, qkv, atty, tmp, h, gate, act, logits, partials, .. } = s;
        let dense =
            |out: &mut [f32], partials: &mut [f32], inp: &[f32], lin: &Lin, ic: usize, oc: usize| self.dense_rows(out, partials, inp, lin, n, ic, oc, lay);
        for (r, (cache, &id)) in caches.iter_mut().zip(tokens).enumerate() {
            self.embed_row(&mut x[r * c..(r + 1) * c], id, cache.len);
            if self.rope_is_dynamic() {
                (cache.cos, cache.sin) = self.rope_tables(cache.len + 1, cache.len + 1);
            }
        }
        let rope = matches!(cfg.position, Position::Rope { .. });
        for (li, wi) in idx.layers.iter().enumerate() {
            self.norm_forward(ln, mean, rstd, x, &wi.norm1, n);
            dense(qkv, partials, ln, &wi.qkv, c, w);
            for (r, cache) in caches.iter_mut().enumerate() {
                let (p0, cap) = (cache.len, cache.capacity);
                let row = &mut qkv[r * w..(r + 1) * w];
                if rope {
                    rope_forward(row, &cache.cos, &cache.sin, 1, 1, w, 0, nh, hd, p0);
                    rope_forward(row, &cache.cos, &cache.sin, 1, 1, w, at, nkv, hd, p0);
                }
                let per = kv_layer_len(nkv, hd, cap);
                let Cache { kv, scores, .. } = &mut **cache;
                let layer = li * per..(li + 1) * per;
                kv.store(layer.clone(), &row[at..at + kvw], &row[at + kvw..at + 2 * kvw], p0, nkv, hd, cap);
                kv.attention(layer, &mut atty[r * at..(r + 1) * at], scores, row, w, 1, p0, (nh, nkv, hd, cap));
            }
            let t = Tail {
                x: &mut x[..],
                ln: &mut ln[..],
                mean: &mut mean[..],
                rstd: &mut rstd[..],
                atty: &atty[..],
                tmp: &mut tmp[..],
                h: &mut h[..],
                gate: &mut gate[..],
                act: &mut act[..],
                partials: &mut partials[..],
            };
            self.block_tail(wi, t, n, &dense);
        }
        for cache in caches.iter_mut() {
            cache.len += 1;
        }
        let (Some(nf), Some(head)) = (&idx.norm_f, self.head_lin()) else { unreachable!("caches exist only for decoders") };
        self.norm_forward(ln, mean, rstd, x, nf, n);
        self.dense_rows(logits, partials, ln, &head, n, c, v, OutIn);
    }
}
