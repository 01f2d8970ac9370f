//! Sequence classification: the blocks as for language modelling, then a
//! small head over one position per sequence, as transformers' task models
//! do it. A decoder (`GPT2ForSequenceClassification`,
//! `LlamaForSequenceClassification`) reads its last real token through
//! `score` (K, C); BERT (`BertForSequenceClassification`) reads [CLS]
//! through its pooler (dense + tanh), then `classifier` (K, C) + bias.
//!
//! Batches are right-padded with each sequence's real length given: a
//! decoder needs no mask (no real position attends to a later one), and
//! BERT's attention gives keys past a sequence's length probability 0.
//!
//! Letters: B sequences, T positions, C channels, K labels.

use attn_kernels::crossentropy::{crossentropy_backward_inplace, crossentropy_forward};
use attn_kernels::matmul::{matmul_backward, matmul_forward, WeightLayout::OutIn};

use super::train::Start;
use super::Transformer;
use crate::error::{ModelError, Result};
use crate::params::lin_mut;

/// What the head's backward pass needs.
pub(super) struct ClsActs {
    /// Row of the (B*T, C) hidden states each sequence is read at.
    rows: Vec<usize>,
    pooled: Vec<f32>, // (B, C) the hidden state at `rows`
    act: Vec<f32>,    // (B, C) tanh(pooler(pooled)); BERT only
    logits: Vec<f32>, // (B, K)
    lse: Vec<f32>,    // (B)
    labels: Vec<u32>, // (B); empty without labels
}

impl Transformer {
    /// Classifies a right-padded batch: `tokens` (B, T), `lens` (B) the real
    /// length of each sequence. Returns the logits (B, K) and, given
    /// `labels` (B), the mean cross-entropy, after which `classify_backward`
    /// may run.
    pub fn classify(&mut self, tokens: &[u32], lens: &[usize], t: usize, labels: Option<&[u32]>) -> Result<(Vec<f32>, Option<f32>)> {
        self.require_f32("classification")?;
        let cfg = self.config.clone();
        let (b, c, k) = (lens.len(), cfg.n_embd, cfg.labels.len());
        let bad = |m: String| Err(ModelError::InvalidConfig(m));
        let Some(cls) = self.idx.cls.clone() else {
            return bad(format!("this {} model has no classification head (config.json names no id2label of a *ForSequenceClassification)", self.model_type()));
        };
        if b == 0 || t == 0 || tokens.len() != b * t || lens.iter().any(|&l| l == 0 || l > t) {
            return bad(format!("classify needs B*T = {b}*{t} tokens and lengths in 1..={t}, got {} tokens and {lens:?}", tokens.len()));
        }
        if t > cfg.n_ctx {
            return bad(format!("sequence length {t} exceeds the model's context of {} tokens", cfg.n_ctx));
        }
        self.check_ids("token", tokens)?;
        if let Some(l) = labels {
            if l.len() != b || l.iter().any(|&x| x as usize >= k) {
                return bad(format!("classify needs {b} labels below {k}, got {l:?}"));
            }
        }
        // A LoRA run trains the head beside the adapters: use its values.
        if let Some(l) = &self.lora {
            l.sync_head(&self.layout, &mut self.params);
        }
        self.reserve(b, t)?;
        let mut a = self.take_acts().expect("reserved");
        self.refresh_rope(&mut a, t);
        a.key_lens = if cfg.causal { Vec::new() } else { lens.to_vec() };
        let mut lora = self.lora.take();
        self.forward_blocks(&mut a, lora.as_mut(), tokens, b, t);
        self.lora = lora;
        self.set_last(b, t);
        // A decoder reads its last real token, BERT its first ([CLS]).
        let rows: Vec<usize> = lens.iter().enumerate().map(|(bi, &l)| bi * t + if cfg.causal { l - 1 } else { 0 }).collect();
        let hidden = self.final_hidden(&a);
        let pooled: Vec<f32> = rows.iter().flat_map(|&r| hidden[r * c..(r + 1) * c].iter().copied()).collect();
        self.put_acts(a);
        let p = &self.params;
        let bias = |r: &Option<std::ops::Range<usize>>| r.clone().map(|r| &p[r]);
        let mut act = Vec::new();
        if let Some(pl) = &cls.pooler {
            act = vec![0.0f32; b * c];
            matmul_forward(&mut act, &pooled, &p[pl.w.clone()], bias(&pl.b), b, c, c, OutIn);
            act.iter_mut().for_each(|x| *x = x.tanh());
        }
        let head_in: &[f32] = if cls.pooler.is_some() { &act } else { &pooled };
        let mut logits = vec![0.0f32; b * k];
        matmul_forward(&mut logits, head_in, &p[cls.out.w.clone()], bias(&cls.out.b), b, c, k, OutIn);
        let (mut losses, mut lse) = (vec![0.0f32; b], vec![0.0f32; b]);
        let loss = labels.map(|l| {
            crossentropy_forward(&mut losses, &mut lse, &logits, l, b, k);
            (losses.iter().map(|&x| x as f64).sum::<f64>() / b as f64) as f32
        });
        self.cls_acts = Some(ClsActs { rows, pooled, act, logits: logits.clone(), lse, labels: labels.map(<[u32]>::to_vec).unwrap_or_default() });
        Ok((logits, loss))
    }

    /// Accumulates d(loss_scale * mean loss)/d(params) of the last
    /// `classify` with labels into the gradients.
    pub fn classify_backward(&mut self, loss_scale: f32) -> Result<()> {
        let Some(ca) = self.cls_acts.take().filter(|ca| !ca.labels.is_empty()) else {
            return Err(ModelError::InvalidConfig("classify_backward needs a classify pass with labels first".into()));
        };
        let cls = self.idx.cls.clone().expect("classify checked the head");
        let (b, t) = (ca.rows.len(), self.last_bt.1);
        let (c, k) = (self.config.n_embd, self.config.labels.len());
        let mut g = self.take_grads();
        let p = &self.params;
        // d(logits) = (softmax - onehot) * loss_scale / B
        let mut dlogits = ca.logits.clone();
        crossentropy_backward_inplace(&mut dlogits, &ca.lse, &ca.labels, &vec![loss_scale / b as f32; b], b, k);
        let head_in: &[f32] = if cls.pooler.is_some() { &ca.act } else { &ca.pooled };
        let mut dhead_in = vec![0.0f32; b * c];
        // A frozen base (LoRA) has no gradient buffer; its head may still
        // train, in the adapter's buffer.
        let frozen = g.is_empty();
        let (mut dw_out, mut db_out) =
            (vec![0.0f32; if frozen { cls.out.w.len() } else { 0 }], cls.out.b.as_ref().map(|r| vec![0.0f32; if frozen { r.len() } else { 0 }]));
        let (dw, db) = if frozen { (dw_out.as_mut_slice(), db_out.as_deref_mut()) } else { lin_mut(&mut g, &cls.out) };
        matmul_backward(Some(&mut dhead_in), dw, db, &dlogits, head_in, &p[cls.out.w.clone()], b, c, k, OutIn);
        if frozen {
            if let Some(l) = &mut self.lora {
                let names: Vec<String> = self
                    .layout
                    .entries
                    .iter()
                    .filter(|e| e.offset == cls.out.w.start || cls.out.b.as_ref().is_some_and(|r| r.start == e.offset))
                    .map(|e| e.name.clone())
                    .collect();
                for n in names {
                    let grad: &[f32] = if n.ends_with(".bias") { db_out.as_deref().unwrap_or(&[]) } else { &dw_out };
                    l.add_head_grad(&n, grad);
                }
            }
        }
        let dpooled = match &cls.pooler {
            Some(pl) => {
                // tanh' = 1 - tanh^2
                let dz: Vec<f32> = dhead_in.iter().zip(&ca.act).map(|(d, a)| d * (1.0 - a * a)).collect();
                let mut dp = vec![0.0f32; b * c];
                let (dw, db) = lin_mut(&mut g, pl);
                matmul_backward(Some(&mut dp), dw, db, &dz, &ca.pooled, &p[pl.w.clone()], b, c, c, OutIn);
                dp
            }
            None => dhead_in,
        };
        let mut dh = vec![0.0f32; b * t * c];
        for (bi, &r) in ca.rows.iter().enumerate() {
            dh[r * c..(r + 1) * c].copy_from_slice(&dpooled[bi * c..(bi + 1) * c]);
        }
        let mut a = self.take_acts().expect("classify ran");
        let mut lora = self.lora.take();
        let (lb, lt) = self.last_bt;
        self.backward_blocks(&mut a, &mut g, lora.as_mut(), Start::Hidden(&dh), lb, lt);
        self.lora = lora;
        self.put_acts(a);
        self.put_grads(g);
        Ok(())
    }
}
