//! The activation buffers of the training path, allocated once for the
//! largest (B, T) a model has seen: what the forward pass keeps for the
//! backward pass, and the backward pass's scratch.

use attn_kernels::flash::flash_scratch_len;

use super::Transformer;
use crate::config::{Mlp, Norm};

/// Activations of one block, kept for the backward pass. Post-norm blocks
/// reuse the buffers: `ln2` holds N1(x + attention), and `ln1` the block's
/// output N2(ln2 + MLP), whose statistics are `mean1` and `rstd1`.
pub(super) struct LayerActs {
    pub(super) ln1: Vec<f32>,   // (N, C)
    pub(super) mean1: Vec<f32>, // (N), LayerNorm only
    pub(super) rstd1: Vec<f32>, // (N)
    pub(super) qkv: Vec<f32>,   // (N, W), after RoPE
    pub(super) lse: Vec<f32>,   // (B, NH, T) attention's log-sum-exp per query
    pub(super) atty: Vec<f32>,  // (N, A)
    pub(super) res2: Vec<f32>,  // (N, C) residual after attention
    pub(super) ln2: Vec<f32>,   // (N, C)
    pub(super) mean2: Vec<f32>, // (N)
    pub(super) rstd2: Vec<f32>, // (N)
    pub(super) h: Vec<f32>,     // (N, F) first projection (GPT-2 c_fc, Llama up)
    pub(super) gate: Vec<f32>,  // (N, F) SwiGLU only
    pub(super) act: Vec<f32>,   // (N, F) activation output
    pub(super) res3: Vec<f32>,  // (N, C) the block's output
}

/// Every buffer forward and backward touch, allocated once for the largest
/// (B, T) so that the training loop allocates nothing.
pub(super) struct Acts {
    pub(super) b: usize,
    pub(super) t: usize,
    pub(super) tokens: Vec<u32>,  // (N)
    pub(super) targets: Vec<u32>, // (N)
    /// Real positions of each sequence of a right-padded batch (B); empty
    /// when every position is real. Bidirectional attention masks the rest.
    pub(super) key_lens: Vec<usize>,
    pub(super) x0: Vec<f32>,       // (N, C) the first block's input
    pub(super) emb_raw: Vec<f32>,  // (N, C) summed embeddings before their norm (BERT)
    pub(super) emb_mean: Vec<f32>, // (N)
    pub(super) emb_rstd: Vec<f32>, // (N)
    pub(super) layers: Vec<LayerActs>,
    pub(super) lnf: Vec<f32>,      // (N, C)
    pub(super) lnf_mean: Vec<f32>, // (N)
    pub(super) lnf_rstd: Vec<f32>, // (N)
    pub(super) logits: Vec<f32>,   // (N, V); d(logits) after backward
    pub(super) losses: Vec<f32>,   // (N)
    pub(super) lse: Vec<f32>,      // (N)
    pub(super) dlosses: Vec<f32>,  // (N)
    pub(super) cos: Vec<f32>,      // (T, HD/2), rotary only
    pub(super) sin: Vec<f32>,      // (T, HD/2)
    pub(super) rope_len: usize,    // the sequence length the tables were made for
    // Backward scratch, reused by every layer.
    pub(super) dres: Vec<f32>,   // (N, C) gradient of the residual stream
    pub(super) dc: Vec<f32>,     // (N, C)
    pub(super) dqkv: Vec<f32>,   // (N, W)
    pub(super) da: Vec<f32>,     // (N, A)
    pub(super) da_ln2: Vec<f32>, // (N, C) d(ln2)
    pub(super) flash: Vec<f32>,  // flash attention's per-thread blocks
    pub(super) df1: Vec<f32>,    // (N, F)
    pub(super) df2: Vec<f32>,    // (N, F)
    pub(super) df3: Vec<f32>,    // (N, F)
}

impl Acts {
    /// Bytes `new` allocates for (B, T), buffer by buffer as it sizes them
    /// (a test counts the real allocation against this).
    pub(super) fn bytes(m: &Transformer, b: usize, t: usize) -> u128 {
        let cfg = &m.config;
        let u = |x: usize| x as u128;
        let (n, c, nh, w, a, f) = (u(b) * u(t), u(cfg.n_embd), u(cfg.n_head), u(cfg.qkv_width()), u(cfg.attn_width()), u(cfg.d_ff));
        let ln = u((cfg.norm == Norm::Layer) as usize);
        let swiglu = u((cfg.mlp == Mlp::SwiGlu) as usize);
        let en = if cfg.embed_norm { n } else { 0 };
        let v = if cfg.has_head() { u(cfg.vocab_size) } else { 0 };
        let rope = if matches!(cfg.position, crate::config::Position::Rope { .. }) { u(t) * u(cfg.head_dim) } else { 0 };
        // ln1 atty res2 ln2 res3, qkv, h act gate, mean1 rstd1 mean2 rstd2, lse
        let layer = n * (4 * c + w + a + (2 + swiglu) * f + 2 + 2 * ln) + u(b) * nh * u(t);
        // x0 lnf dres dc da_ln2, emb_raw, dqkv da, df1-3, logits,
        // lnf_mean lnf_rstd losses lse dlosses, emb_mean emb_rstd, tokens targets
        let global = n * (5 * c + w + a + 3 * f + v + 5 + 2) + en * (c + 2) + rope + u(flash_scratch_len(cfg.head_dim));
        // The floats (and ids, also 4 bytes), and the per-layer headers.
        4 * (u(cfg.n_layer) * layer + global) + u(cfg.n_layer) * u(std::mem::size_of::<LayerActs>())
    }

    pub(super) fn new(m: &Transformer, b: usize, t: usize) -> Self {
        let cfg = &m.config;
        let (n, c, nh, v, w, a, f) = (b * t, cfg.n_embd, cfg.n_head, cfg.vocab_size, cfg.qkv_width(), cfg.attn_width(), cfg.d_ff);
        let z = |len: usize| attn_kernels::pages::zeroed::<f32>(len);
        let ln = cfg.norm == Norm::Layer;
        let en = if cfg.embed_norm { n } else { 0 };
        let swiglu = cfg.mlp == Mlp::SwiGlu;
        let layers = (0..cfg.n_layer)
            .map(|_| LayerActs {
                ln1: z(n * c),
                mean1: z(if ln { n } else { 0 }),
                rstd1: z(n),
                qkv: z(n * w),
                lse: z(b * nh * t),
                atty: z(n * a),
                res2: z(n * c),
                ln2: z(n * c),
                mean2: z(if ln { n } else { 0 }),
                rstd2: z(n),
                h: z(n * f),
                gate: z(if swiglu { n * f } else { 0 }),
                act: z(n * f),
                res3: z(n * c),
            })
            .collect();
        let (cos, sin) = m.rope_tables(t, t);
        Acts {
            b,
            t,
            tokens: vec![0; n],
            targets: vec![0; n],
            key_lens: Vec::new(),
            x0: z(n * c),
            emb_raw: z(en * c),
            emb_mean: z(en),
            emb_rstd: z(en),
            layers,
            lnf: z(n * c),
            lnf_mean: z(n),
            lnf_rstd: z(n),
            logits: z(if cfg.has_head() { n * v } else { 0 }),
            losses: z(n),
            lse: z(n),
            dlosses: z(n),
            cos,
            sin,
            rope_len: t,
            dres: z(n * c),
            dc: z(n * c),
            dqkv: z(n * w),
            da: z(n * a),
            da_ln2: z(n * c),
            flash: z(flash_scratch_len(cfg.head_dim)),
            df1: z(n * f),
            df2: z(n * f),
            df3: z(n * f),
        }
    }
}
