//! The encoder-decoder's training path: `forward` keeps every activation,
//! `backward` walks the same sub-blocks in reverse.
//!
//! Letters: B pairs, S source and T target positions (each padded to the
//! longest in the batch), C = d_model, F the FFN width, V the vocabulary,
//! Ns = B*S and Nt = B*T rows. Buffers are sized for the largest batch seen
//! and used up to the current sizes, since token-count batches change shape
//! every step.

use attn_kernels::cross_attention::CrossShape;
use attn_kernels::crossentropy::{crossentropy_smoothed_backward_inplace, crossentropy_smoothed_forward, IGNORE};
use attn_kernels::layernorm::{layernorm_backward, layernorm_forward};
use attn_kernels::matmul::{matmul_backward, matmul_forward, WeightLayout::OutIn};

use super::acts::{z, Acts, Caps, StackActs};
use super::blocks::norm_params;
use super::{Seq2Seq, StackIdx, BART_POS_OFFSET};
use crate::config::Position;
use crate::error::{ModelError, Result};
use crate::params::lin_mut;

/// A batch of (source, target) pairs, right-padded.
#[derive(Clone, Debug, Default)]
pub struct Seq2SeqBatch {
    /// Pairs in the batch.
    pub b: usize,
    /// Source positions, padded to the longest.
    pub s: usize,
    /// Target positions, padded to the longest.
    pub t: usize,
    /// (B, S) source ids, padded with the pad id.
    pub src: Vec<u32>,
    /// Each source's real length.
    pub src_len: Vec<usize>,
    /// (B, T) decoder inputs: the start token, then the target shifted right.
    pub tgt_in: Vec<u32>,
    /// (B, T) the tokens to predict; IGNORE on padding.
    pub labels: Vec<u32>,
}

impl Seq2SeqBatch {
    /// Pairs of token ids as the tokenizer gives them (targets already end in
    /// EOS); decoder inputs are the targets shifted right behind `start`, as
    /// transformers' `shift_tokens_right` builds them.
    pub fn from_pairs(pairs: &[(&[u32], &[u32])], pad: u32, start: u32) -> Self {
        let b = pairs.len();
        let s = pairs.iter().map(|p| p.0.len()).max().unwrap_or(0);
        let t = pairs.iter().map(|p| p.1.len()).max().unwrap_or(0);
        let (mut src, mut tgt_in, mut labels) = (vec![pad; b * s], vec![pad; b * t], vec![IGNORE; b * t]);
        for (i, (sr, tg)) in pairs.iter().enumerate() {
            src[i * s..][..sr.len()].copy_from_slice(sr);
            labels[i * t..][..tg.len()].copy_from_slice(tg);
            if !tg.is_empty() {
                tgt_in[i * t] = start;
                // Every label but the last of the longest target shifts in, EOS included.
                let k = tg.len().min(t - 1);
                tgt_in[i * t + 1..][..k].copy_from_slice(&tg[..k]);
            }
        }
        Seq2SeqBatch { b, s, t, src, src_len: pairs.iter().map(|p| p.0.len()).collect(), tgt_in, labels }
    }

    /// Target tokens that carry a loss.
    pub fn label_tokens(&self) -> usize {
        self.labels.iter().filter(|&&l| l != IGNORE).count()
    }
}

/// What one forward pass with labels measured.
#[derive(Clone, Copy, Debug)]
pub struct Seq2SeqLoss {
    /// The loss that is optimised (label-smoothed when smoothing > 0), mean over labelled tokens.
    pub loss: f32,
    /// Plain cross-entropy, mean over labelled tokens (transformers' `loss` with `labels`).
    pub nll: f32,
    /// Labelled target tokens the means are over.
    pub tokens: usize,
}

impl Seq2Seq {
    fn check_batch(&self, batch: &Seq2SeqBatch) -> Result<()> {
        let Seq2SeqBatch { b, s, t, .. } = *batch;
        let bad = |m: String| Err(ModelError::InvalidConfig(m));
        if b == 0 || s == 0 || t == 0 {
            return bad(format!("an empty batch (B = {b}, S = {s}, T = {t})"));
        }
        if batch.src.len() != b * s || batch.tgt_in.len() != b * t || batch.labels.len() != b * t || batch.src_len.len() != b {
            return bad("batch buffers do not match B, S and T".into());
        }
        if s > self.config.n_ctx || t > self.config.n_ctx {
            return bad(format!("source length {s} or target length {t} exceeds the model's {} positions", self.config.n_ctx));
        }
        if batch.src_len.iter().any(|&l| l == 0 || l > s) {
            return bad("every source needs between 1 and S tokens".into());
        }
        let v = self.config.vocab_size as u32;
        if let Some(bad_id) = batch.src.iter().chain(&batch.tgt_in).chain(batch.labels.iter().filter(|&&l| l != IGNORE)).find(|&&x| x >= v) {
            return bad(format!("token id {bad_id} is out of range for vocab_size {v}"));
        }
        Ok(())
    }

    /// Bytes of the activation buffers a batch of B pairs (S source, T
    /// target positions) trains with.
    pub fn activation_bytes(&self, b: usize, s: usize, t: usize) -> u128 {
        Acts::bytes(self, Self::caps(&self.config, b, s, t))
    }

    fn caps(cfg: &super::Seq2SeqConfig, b: usize, s: usize, t: usize) -> Caps {
        let (nhe, nhd) = (cfg.encoder_heads, cfg.decoder_heads);
        Caps { ns: b * s, nt: b * t, att_ss: b * nhe * s * s, att_tt: b * nhd * t * t, att_ts: b * nhd * t * s }
    }

    /// Makes sure the activation buffers hold B pairs of (S, T) positions;
    /// reallocates only when they grow, and refuses (rather than have the
    /// allocation abort the process) a set larger than the memory available.
    pub fn reserve(&mut self, b: usize, s: usize, t: usize) -> Result<()> {
        let need = Self::caps(&self.config, b, s, t);
        let have = self.acts.as_ref().map(|a| a.caps).unwrap_or_default();
        let fits = have.ns >= need.ns && have.nt >= need.nt && have.att_ss >= need.att_ss && have.att_tt >= need.att_tt && have.att_ts >= need.att_ts;
        if !fits {
            let caps = Caps {
                ns: have.ns.max(need.ns),
                nt: have.nt.max(need.nt),
                att_ss: have.att_ss.max(need.att_ss),
                att_tt: have.att_tt.max(need.att_tt),
                att_ts: have.att_ts.max(need.att_ts),
            };
            crate::transformer::ensure_memory(
                Acts::bytes(self, caps),
                || format!("activations for a batch of {b} pairs of {s} source and {t} target positions"),
                "use smaller batches (attn train: --batch-tokens; attn bench: --batch-size or --seq-len)",
            )?;
            self.acts = None; // free before allocating the larger set
            self.acts = Some(Acts::new(self, caps));
        }
        Ok(())
    }

    /// Runs encoder and decoder on a batch, keeping every activation. With
    /// `labels` it returns the loss and prepares for `backward`;
    /// `smoothing` is the label smoothing (0 for the plain loss).
    pub fn forward(&mut self, batch: &Seq2SeqBatch, with_labels: bool, smoothing: f32) -> Result<Option<Seq2SeqLoss>> {
        attn_kernels::in_pool(|| self.forward_in_pool(batch, with_labels, smoothing))
    }

    fn forward_in_pool(&mut self, batch: &Seq2SeqBatch, with_labels: bool, smoothing: f32) -> Result<Option<Seq2SeqLoss>> {
        self.check_batch(batch)?;
        let Seq2SeqBatch { b, s, t, .. } = *batch;
        self.reserve(b, s, t)?;
        let mut a = self.acts.take().expect("reserved");
        (a.b, a.s, a.t) = (b, s, t);
        a.src_len = batch.src_len.clone();
        a.tgt_len = vec![t; b];
        self.forward_all(&mut a, batch);
        a.has_labels = with_labels;
        let result = with_labels.then(|| {
            let (nt, v) = (b * t, self.config.vocab_size);
            a.labels[..nt].copy_from_slice(&batch.labels);
            a.smoothing = smoothing;
            crossentropy_smoothed_forward(&mut a.losses, &mut a.lse, &a.logits, &a.labels, nt, v, smoothing);
            let mut nll = 0.0f64;
            for i in (0..nt).filter(|&i| a.labels[i] != IGNORE) {
                nll += (a.lse[i] - a.logits[i * v + a.labels[i] as usize]) as f64;
            }
            a.n_labels = batch.label_tokens();
            let denom = a.n_labels.max(1) as f64;
            Seq2SeqLoss { loss: (a.losses[..nt].iter().map(|&x| x as f64).sum::<f64>() / denom) as f32, nll: (nll / denom) as f32, tokens: a.n_labels }
        });
        self.acts = Some(a);
        Ok(result)
    }

    fn forward_all(&self, a: &mut Acts, batch: &Seq2SeqBatch) {
        let cfg = &self.config;
        let (b, s, t, c, v) = (a.b, a.s, a.t, cfg.d_model, cfg.vocab_size);
        let (ns, nt) = (b * s, b * t);
        let (he, hd) = (cfg.encoder_heads, cfg.decoder_heads);
        let pre = self.pre_norm();
        self.embed(&mut a.enc, &self.idx.enc, &batch.src, b, s);
        let enc_self = CrossShape { b, tq: s, tk: s, nh: he, nkv: he, hs: c / he, causal: false };
        for li in 0..cfg.encoder_layers {
            let (prev, rest) = a.enc.layers.split_at_mut(li);
            let x: &[f32] = if li == 0 { &a.enc.x0 } else { prev[li - 1].ffn.out(pre) };
            let w = &self.idx.enc.layers[li];
            self.attn_forward(&mut rest[0].sa, &w.self_attn, x, None, ns, ns, enc_self, &a.src_len);
            self.ffn_forward(&mut rest[0], &w.ffn, ns, cfg.encoder_ffn, false);
        }
        self.final_norm(&mut a.enc, &self.idx.enc, ns);
        let enc_out: &[f32] = a.enc.out(pre);
        self.embed(&mut a.dec, &self.idx.dec, &batch.tgt_in, b, t);
        let dec_self = CrossShape { b, tq: t, tk: t, nh: hd, nkv: hd, hs: c / hd, causal: true };
        let cross = CrossShape { b, tq: t, tk: s, nh: hd, nkv: hd, hs: c / hd, causal: false };
        for li in 0..cfg.decoder_layers {
            let (prev, rest) = a.dec.layers.split_at_mut(li);
            let x: &[f32] = if li == 0 { &a.dec.x0 } else { prev[li - 1].ffn.out(pre) };
            let w = &self.idx.dec.layers[li];
            let l = &mut rest[0];
            self.attn_forward(&mut l.sa, &w.self_attn, x, None, nt, nt, dec_self, &a.tgt_len);
            let ca = l.ca.as_mut().expect("decoder layer");
            self.attn_forward(ca, w.cross.as_ref().expect("decoder layer"), l.sa.out(pre), Some(enc_out), nt, ns, cross, &a.src_len);
            self.ffn_forward(l, &w.ffn, nt, cfg.decoder_ffn, true);
        }
        self.final_norm(&mut a.dec, &self.idx.dec, nt);
        let p = &self.params;
        matmul_forward(&mut a.logits, a.dec.out(pre), &p[self.idx.shared.clone()], Some(&p[self.idx.final_logits_bias.clone()]), nt, c, v, OutIn);
    }

    /// x0 = shared[token] * scale + position (+ LayerNorm for BART).
    fn embed(&self, st: &mut StackActs, stack: &StackIdx, tokens: &[u32], b: usize, t: usize) {
        let (c, n) = (self.config.d_model, b * t);
        let p = &self.params;
        st.tokens[..n].copy_from_slice(tokens);
        let scale = self.embed_scale();
        let shared = &p[self.idx.shared.clone()];
        let pos: &[f32] = match (&stack.pos, self.config.position) {
            (Some(r), _) => &p[r.start + BART_POS_OFFSET * c..r.end],
            _ => &self.pos_table,
        };
        let out: &mut [f32] = if stack.emb_norm.is_some() { &mut st.emb_raw } else { &mut st.x0 };
        for (r, row) in out[..n * c].chunks_exact_mut(c).enumerate() {
            let (tok, pi) = (tokens[r] as usize, r % t);
            let (e, pe) = (&shared[tok * c..][..c], &pos[pi * c..][..c]);
            for j in 0..c {
                row[j] = e[j] * scale + pe[j];
            }
        }
        if let Some(en) = &stack.emb_norm {
            let (w, bias) = norm_params(p, en);
            layernorm_forward(&mut st.x0, &mut st.emb_mean, &mut st.emb_rstd, &st.emb_raw, w, bias, n, c, self.config.norm_eps);
        }
    }

    pub(crate) fn embed_scale(&self) -> f32 {
        if self.config.scale_embedding {
            (self.config.d_model as f32).sqrt()
        } else {
            1.0
        }
    }

    /// Logits (B, T, V) of the last forward pass. Overwritten by `backward`.
    pub fn logits(&self) -> &[f32] {
        self.acts.as_ref().map_or(&[], |a| &a.logits[..a.b * a.t * self.config.vocab_size])
    }

    /// Cross-attention probabilities (B, NH, T, S) of decoder layer `l` in the last forward pass.
    pub fn cross_attention_probs(&self, l: usize) -> &[f32] {
        let nh = self.config.decoder_heads;
        self.acts.as_ref().and_then(|a| a.dec.layers.get(l).and_then(|x| x.ca.as_ref()).map(|ca| &ca.att[..a.b * nh * a.t * a.s])).unwrap_or(&[])
    }

    /// The shared token embeddings (V, C) of source, target and output head.
    pub fn token_embeddings(&self) -> &[f32] {
        &self.params[self.idx.shared.clone()]
    }

    /// The logit lens on the decoder after the last forward pass: the output
    /// (B, T, V) of decoder layer `l` (0: the embeddings, `decoder_layers`:
    /// the last block, whose lens is the model's logits) read through the
    /// final norm (pre-norm models) and the output head.
    pub fn decoder_lens_logits(&self, l: usize) -> Vec<f32> {
        let Some(a) = self.acts.as_ref() else { return Vec::new() };
        let (c, v, nt, pre) = (self.config.d_model, self.config.vocab_size, a.b * a.t, self.pre_norm());
        let x = &a.dec.input(l.min(self.config.decoder_layers), pre)[..nt * c];
        let mut normed = Vec::new();
        let x: &[f32] = match &self.idx.dec.final_norm {
            Some(fw) => {
                let (w, bias) = norm_params(&self.params, fw);
                let (mut mean, mut rstd) = (vec![0.0; nt], vec![0.0; nt]);
                normed.resize(nt * c, 0.0);
                layernorm_forward(&mut normed, &mut mean, &mut rstd, x, w, bias, nt, c, self.config.norm_eps);
                &normed
            }
            None => x,
        };
        let p = &self.params;
        let mut logits = vec![0.0; nt * v];
        matmul_forward(&mut logits, x, &p[self.idx.shared.clone()], Some(&p[self.idx.final_logits_bias.clone()]), nt, c, v, OutIn);
        logits
    }

    /// Self-attention probabilities of layer `l` in the last forward pass:
    /// the encoder's (B, NH, S, S), or the decoder's (B, NH, T, T), zero
    /// above the diagonal.
    pub fn self_attention_probs(&self, decoder: bool, l: usize) -> &[f32] {
        let Some(a) = self.acts.as_ref() else { return &[] };
        let (stack, nh, n) = if decoder { (&a.dec, self.config.decoder_heads, a.t) } else { (&a.enc, self.config.encoder_heads, a.s) };
        stack.layers.get(l).map(|x| &x.sa.att[..a.b * nh * n * n]).unwrap_or(&[])
    }

    /// Accumulates d(loss_scale * loss)/d(params) into the gradients.
    pub fn backward(&mut self, loss_scale: f32) -> Result<()> {
        attn_kernels::in_pool(|| self.backward_in_pool(loss_scale))
    }

    fn backward_in_pool(&mut self, loss_scale: f32) -> Result<()> {
        let Some(mut a) = self.acts.take().filter(|a| a.has_labels) else {
            return Err(ModelError::InvalidConfig("backward needs a forward pass with labels first".into()));
        };
        a.has_labels = false; // logits are about to become d(logits)
        self.ensure_grads();
        let mut g = std::mem::take(&mut self.grads);
        self.backward_all(&mut a, &mut g, loss_scale);
        self.grads = g;
        self.acts = Some(a);
        Ok(())
    }

    fn backward_all(&self, a: &mut Acts, g: &mut [f32], loss_scale: f32) {
        let cfg = &self.config;
        let (b, s, t, c, v) = (a.b, a.s, a.t, cfg.d_model, cfg.vocab_size);
        let (ns, nt) = (b * s, b * t);
        let (he, hd) = (cfg.encoder_heads, cfg.decoder_heads);
        let pre = self.pre_norm();
        let p = &self.params;
        a.dlosses[..nt].fill(loss_scale / a.n_labels.max(1) as f32);
        crossentropy_smoothed_backward_inplace(&mut a.logits, &a.lse, &a.labels, &a.dlosses, nt, v, a.smoothing);
        // logits = out @ shared^T + bias (a buffer, not trained); then back
        // through the final norm, if there is one, into sd.d0.
        let sd = &mut a.sd;
        attn_kernels::zero(&mut sd.dres[..nt * c]);
        matmul_backward(Some(&mut sd.dres), &mut g[self.idx.shared.clone()], None, &a.logits, a.dec.out(pre), &p[self.idx.shared.clone()], nt, c, v, OutIn);
        self.final_norm_backward(g, &a.dec, &self.idx.dec, &sd.dres, &mut sd.d0, nt);
        attn_kernels::zero(&mut a.denc[..ns * c]);
        let enc_out: &[f32] = a.enc.out(pre);
        let dec_self = CrossShape { b, tq: t, tk: t, nh: hd, nkv: hd, hs: c / hd, causal: true };
        let cross = CrossShape { b, tq: t, tk: s, nh: hd, nkv: hd, hs: c / hd, causal: false };
        for li in (0..cfg.decoder_layers).rev() {
            let w = &self.idx.dec.layers[li];
            let l = &a.dec.layers[li];
            let ca = l.ca.as_ref().expect("decoder layer");
            self.ffn_backward(g, sd, &l.ffn, &w.ffn, ca.out(pre), nt, cfg.decoder_ffn);
            let mut dkvx = std::mem::take(&mut a.dkvx);
            self.attn_backward(
                g,
                sd,
                ca,
                w.cross.as_ref().expect("decoder layer"),
                l.sa.out(pre),
                Some(enc_out),
                Some((&mut a.denc, &mut dkvx)),
                nt,
                ns,
                cross,
                &a.src_len,
            );
            a.dkvx = dkvx;
            self.attn_backward(g, sd, &l.sa, &w.self_attn, a.dec.input(li, pre), None, None, nt, nt, dec_self, &a.tgt_len);
        }
        self.embed_backward(g, &a.dec, &self.idx.dec, &a.sd.d0, nt, t);
        let se = &mut a.se;
        self.final_norm_backward(g, &a.enc, &self.idx.enc, &a.denc, &mut se.d0, ns);
        let enc_self = CrossShape { b, tq: s, tk: s, nh: he, nkv: he, hs: c / he, causal: false };
        for li in (0..cfg.encoder_layers).rev() {
            let w = &self.idx.enc.layers[li];
            let l = &a.enc.layers[li];
            self.ffn_backward(g, se, &l.ffn, &w.ffn, l.sa.out(pre), ns, cfg.encoder_ffn);
            self.attn_backward(g, se, &l.sa, &w.self_attn, a.enc.input(li, pre), None, None, ns, ns, enc_self, &a.src_len);
        }
        self.embed_backward(g, &a.enc, &self.idx.enc, &a.se.d0, ns, s);
    }

    /// d(x0) into the shared embedding (skipping the pad token, whose row
    /// nn.Embedding's padding_idx keeps fixed) and the learned positions.
    fn embed_backward(&self, g: &mut [f32], st: &StackActs, stack: &StackIdx, dx0: &[f32], n: usize, t: usize) {
        let c = self.config.d_model;
        let demb_buf;
        let demb: &[f32] = match &stack.emb_norm {
            Some(en) => {
                let mut d = z(n * c);
                let (dw, db) = lin_mut(g, en);
                let (nw, _) = norm_params(&self.params, en);
                layernorm_backward(&mut d, dw, db.expect("LayerNorm bias"), dx0, &st.emb_raw, nw, &st.emb_mean, &st.emb_rstd, n, c);
                demb_buf = d;
                &demb_buf
            }
            None => dx0,
        };
        let (scale, pad) = (self.embed_scale(), self.config.pad_token_id);
        for (r, row) in demb[..n * c].chunks_exact(c).enumerate() {
            let tok = st.tokens[r];
            if tok != pad {
                let dst = &mut g[self.idx.shared.start + tok as usize * c..][..c];
                dst.iter_mut().zip(row).for_each(|(d, &x)| *d += x * scale);
            }
            if let (Some(pos), Position::Learned) = (&stack.pos, self.config.position) {
                let pi = r % t + BART_POS_OFFSET;
                let dst = &mut g[pos.start + pi * c..][..c];
                dst.iter_mut().zip(row).for_each(|(d, &x)| *d += x);
            }
        }
    }
}
