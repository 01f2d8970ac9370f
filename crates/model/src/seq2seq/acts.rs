//! The encoder-decoder's training buffers: what the forward pass keeps for
//! the backward pass and the backward pass's scratch, allocated for the
//! largest batch seen (`Caps`), and their size in bytes, which lets a batch
//! too large for memory be refused before it is allocated.

use attn_kernels::crossentropy::IGNORE;

use super::Seq2Seq;

#[derive(Default)]
pub(super) struct AttnActs {
    pub(super) q: Vec<f32>,    // (Nq, C)
    pub(super) kv: Vec<f32>,   // (Nk, 2C)
    pub(super) att: Vec<f32>,  // (B, NH, TQ, TK)
    pub(super) atty: Vec<f32>, // (Nq, C)
    pub(super) res: Vec<f32>,  // (Nq, C) input + attention
    pub(super) ln: Vec<f32>,   // (Nq, C) the sub-block's output
    pub(super) mean: Vec<f32>, // (Nq)
    pub(super) rstd: Vec<f32>, // (Nq)
}

#[derive(Default)]
pub(super) struct FfnActs {
    pub(super) h: Vec<f32>,   // (N, F)
    pub(super) act: Vec<f32>, // (N, F)
    pub(super) res: Vec<f32>, // (N, C)
    pub(super) ln: Vec<f32>,  // (N, C)
    pub(super) mean: Vec<f32>,
    pub(super) rstd: Vec<f32>,
}

pub(super) struct LayerActs {
    pub(super) sa: AttnActs,
    pub(super) ca: Option<AttnActs>,
    pub(super) ffn: FfnActs,
}

pub(super) struct StackActs {
    pub(super) tokens: Vec<u32>,   // (N)
    pub(super) emb_raw: Vec<f32>,  // (N, C) before the embedding norm, if any
    pub(super) emb_mean: Vec<f32>, // (N)
    pub(super) emb_rstd: Vec<f32>, // (N)
    pub(super) x0: Vec<f32>,       // (N, C) the first block's input
    pub(super) layers: Vec<LayerActs>,
    pub(super) fin: Vec<f32>,      // (N, C) the final norm's output (pre-norm only)
    pub(super) fin_mean: Vec<f32>, // (N)
    pub(super) fin_rstd: Vec<f32>, // (N)
}

impl StackActs {
    /// The stack's output: the final norm (pre-norm) or the last block's (post-norm).
    pub(super) fn out(&self, pre: bool) -> &[f32] {
        if pre {
            &self.fin
        } else {
            self.layers.last().expect("at least one layer").ffn.out(false)
        }
    }
    /// The input of block `li`.
    pub(super) fn input(&self, li: usize, pre: bool) -> &[f32] {
        if li == 0 {
            &self.x0
        } else {
            self.layers[li - 1].ffn.out(pre)
        }
    }
}

/// Backward scratch for one side.
#[derive(Default)]
pub(super) struct Scratch {
    pub(super) d0: Vec<f32>,   // (N, C) ping
    pub(super) d1: Vec<f32>,   // (N, C) pong
    pub(super) dres: Vec<f32>, // (N, C)
    pub(super) da: Vec<f32>,   // (N, C) d(attention output)
    pub(super) dq: Vec<f32>,   // (N, C)
    pub(super) dkv: Vec<f32>,  // (N, 2C)
    pub(super) datt: Vec<f32>, // (B, NH, TQ, TK), the largest attention of the side
    pub(super) dh: Vec<f32>,   // (N, F)
    pub(super) dact: Vec<f32>, // (N, F)
}

/// Capacities the buffers were allocated for.
#[derive(Clone, Copy, Default, PartialEq, Debug)]
pub(super) struct Caps {
    pub(super) ns: usize,
    pub(super) nt: usize,
    pub(super) att_ss: usize,
    pub(super) att_tt: usize,
    pub(super) att_ts: usize,
}

pub(super) struct Acts {
    pub(super) caps: Caps,
    pub(super) b: usize,
    pub(super) s: usize,
    pub(super) t: usize,
    pub(super) src_len: Vec<usize>,
    pub(super) tgt_len: Vec<usize>,
    pub(super) enc: StackActs,
    pub(super) dec: StackActs,
    pub(super) labels: Vec<u32>,  // (Nt)
    pub(super) logits: Vec<f32>,  // (Nt, V); d(logits) after backward
    pub(super) losses: Vec<f32>,  // (Nt)
    pub(super) lse: Vec<f32>,     // (Nt)
    pub(super) dlosses: Vec<f32>, // (Nt)
    pub(super) n_labels: usize,
    pub(super) smoothing: f32,
    pub(super) has_labels: bool,
    pub(super) se: Scratch,
    pub(super) sd: Scratch,
    pub(super) denc: Vec<f32>, // (Ns, C) d(encoder output), summed over decoder layers
    pub(super) dkvx: Vec<f32>, // (Ns, 2C) d(cross-attention k | v)
}

pub(super) fn z(n: usize) -> Vec<f32> {
    attn_kernels::pages::zeroed(n)
}

fn attn_acts(nq: usize, nk: usize, c: usize, att: usize) -> AttnActs {
    AttnActs { q: z(nq * c), kv: z(nk * 2 * c), att: z(att), atty: z(nq * c), res: z(nq * c), ln: z(nq * c), mean: z(nq), rstd: z(nq) }
}

fn ffn_acts(n: usize, c: usize, f: usize) -> FfnActs {
    FfnActs { h: z(n * f), act: z(n * f), res: z(n * c), ln: z(n * c), mean: z(n), rstd: z(n) }
}

fn scratch(n: usize, c: usize, f: usize, att: usize) -> Scratch {
    Scratch { d0: z(n * c), d1: z(n * c), dres: z(n * c), da: z(n * c), dq: z(n * c), dkv: z(n * 2 * c), datt: z(att), dh: z(n * f), dact: z(n * f) }
}

impl Acts {
    /// Bytes `new` allocates for `caps`, buffer by buffer as it (and
    /// `attn_acts`, `ffn_acts`, `scratch`) size them.
    pub(super) fn bytes(m: &Seq2Seq, caps: Caps) -> u128 {
        let cfg = &m.config;
        let u = |x: usize| x as u128;
        let (c, v, pre, en) = (u(cfg.d_model), u(cfg.vocab_size), u(m.pre_norm() as usize), u(cfg.embed_norm as usize));
        let (ns, nt) = (u(caps.ns), u(caps.nt));
        let attn = |nq: u128, nk: u128, att: usize| 4 * nq * c + 2 * nk * c + u(att) + 2 * nq;
        let ffn = |n: u128, f: usize| 2 * n * u(f) + 2 * n * c + 2 * n;
        let scratch = |n: u128, f: usize, att: usize| 7 * n * c + u(att) + 2 * n * u(f);
        // fin fin_mean fin_rstd, tokens, emb_raw emb_mean emb_rstd, x0
        let stack = |n: u128| pre * n * (c + 2) + n + en * n * c + 2 * n + n * c;
        let enc = stack(ns) + u(cfg.encoder_layers) * (attn(ns, ns, caps.att_ss) + ffn(ns, cfg.encoder_ffn));
        let dec = stack(nt) + u(cfg.decoder_layers) * (attn(nt, nt, caps.att_tt) + attn(nt, ns, caps.att_ts) + ffn(nt, cfg.decoder_ffn));
        // labels logits losses lse dlosses, the two scratches, denc dkvx
        let rest = nt * (v + 4) + scratch(ns, cfg.encoder_ffn, caps.att_ss) + scratch(nt, cfg.decoder_ffn, caps.att_tt.max(caps.att_ts)) + 3 * ns * c;
        let headers = u(cfg.encoder_layers + cfg.decoder_layers) * u(std::mem::size_of::<LayerActs>());
        4 * (enc + dec + rest) + headers
    }

    pub(super) fn new(m: &Seq2Seq, caps: Caps) -> Self {
        let cfg = &m.config;
        let (c, v) = (cfg.d_model, cfg.vocab_size);
        let Caps { ns, nt, att_ss, att_tt, att_ts } = caps;
        let pre = m.pre_norm();
        let stack = |n: usize, layers: usize, f: usize, decoder: bool| StackActs {
            fin: z(if pre { n * c } else { 0 }),
            fin_mean: z(if pre { n } else { 0 }),
            fin_rstd: z(if pre { n } else { 0 }),
            tokens: vec![0; n],
            emb_raw: z(if cfg.embed_norm { n * c } else { 0 }),
            emb_mean: z(n),
            emb_rstd: z(n),
            x0: z(n * c),
            layers: (0..layers)
                .map(|_| LayerActs {
                    sa: attn_acts(n, n, c, if decoder { att_tt } else { att_ss }),
                    ca: decoder.then(|| attn_acts(nt, ns, c, att_ts)),
                    ffn: ffn_acts(n, c, f),
                })
                .collect(),
        };
        Acts {
            caps,
            b: 0,
            s: 0,
            t: 0,
            src_len: Vec::new(),
            tgt_len: Vec::new(),
            enc: stack(ns, cfg.encoder_layers, cfg.encoder_ffn, false),
            dec: stack(nt, cfg.decoder_layers, cfg.decoder_ffn, true),
            labels: vec![IGNORE; nt],
            logits: z(nt * v),
            losses: z(nt),
            lse: z(nt),
            dlosses: z(nt),
            n_labels: 0,
            smoothing: 0.0,
            has_labels: false,
            se: scratch(ns, c, cfg.encoder_ffn, att_ss),
            sd: scratch(nt, c, cfg.decoder_ffn, att_tt.max(att_ts)),
            denc: z(ns * c),
            dkvx: z(ns * 2 * c),
        }
    }
}
