//! The flat parameter buffer and its named views.
//!
//! Every parameter lives in one contiguous `Vec<f32>`; gradients and optimizer
//! moments use the same layout, so the optimizer, clipping and checkpointing
//! each run over a single slice. Views are named after the Hugging Face tensor
//! names, so `model.safetensors` is written with no conversion step.

use std::ops::Range;

use crate::config::{Family, Position, TransformerConfig};

/// What a tensor is, which decides weight decay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// A projection's weight: always decayed.
    Matrix,
    /// A token or position table: decayed only with `--decay-embeddings`.
    Embedding,
    /// A norm's scale or shift: never decayed.
    Norm,
    /// A bias: never decayed.
    Bias,
}

/// One tensor of the flat buffer.
#[derive(Clone, Debug)]
pub struct ParamEntry {
    /// Hugging Face name, e.g. `transformer.h.0.attn.c_attn.weight`.
    pub name: String,
    /// Its shape, as the checkpoint stores it.
    pub shape: Vec<usize>,
    /// Where it starts in the buffer.
    pub offset: usize,
    /// What it is.
    pub kind: ParamKind,
}

impl ParamEntry {
    /// Values it holds.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Its values' range in the buffer.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// Offsets of every tensor in the flat buffer.
#[derive(Clone, Debug)]
pub struct ParamLayout {
    /// Every tensor, in buffer order.
    pub entries: Vec<ParamEntry>,
    total: usize,
}

/// Tensors start on 16-float (64-byte) boundaries so SIMD loads stay aligned.
const ALIGN: usize = 16;

impl ParamLayout {
    pub(crate) fn empty() -> Self {
        ParamLayout { entries: Vec::new(), total: 0 }
    }

    pub(crate) fn push(&mut self, name: String, shape: Vec<usize>, kind: ParamKind) -> Range<usize> {
        let offset = self.total.next_multiple_of(ALIGN);
        self.push_at(offset, name, shape, kind)
    }

    /// Right after the previous tensor, unaligned, so that consecutive
    /// tensors (Llama's q, k and v projections) form one matrix in memory.
    pub(crate) fn push_packed(&mut self, name: String, shape: Vec<usize>, kind: ParamKind) -> Range<usize> {
        self.push_at(self.total, name, shape, kind)
    }

    /// This layout without the tensors that lie inside `removed` (ranges
    /// of this layout), the rest moved down in order, and the map from an
    /// offset of this layout to one of the new. Each removed tensor takes
    /// the padding after it along, so every kept tensor keeps its alignment.
    pub(crate) fn without(&self, removed: &[Range<usize>]) -> (ParamLayout, impl Fn(usize) -> usize) {
        let inside = |e: &ParamEntry| removed.iter().any(|r| r.start <= e.offset && e.range().end <= r.end && !e.is_empty());
        let mut spans: Vec<Range<usize>> = Vec::new();
        let mut out = ParamLayout::empty();
        for (i, e) in self.entries.iter().enumerate() {
            if inside(e) {
                let end = self.entries.get(i + 1).map_or(self.total, |n| n.offset);
                spans.push(e.offset..end.max(e.range().end));
            }
        }
        let shift = move |old: usize| old - spans.iter().filter(|s| s.end <= old).map(|s| s.len()).sum::<usize>();
        for e in self.entries.iter().filter(|e| !inside(e)) {
            out.entries.push(ParamEntry { offset: shift(e.offset), ..e.clone() });
        }
        out.total = shift(self.total);
        (out, shift)
    }

    /// Pads the end to the alignment, as the GPT layout does.
    pub(crate) fn finish(&mut self) {
        self.total = self.total.next_multiple_of(ALIGN);
    }

    fn push_at(&mut self, offset: usize, name: String, shape: Vec<usize>, kind: ParamKind) -> Range<usize> {
        let e = ParamEntry { name, shape, offset, kind };
        let r = e.range();
        self.total = r.end;
        self.entries.push(e);
        r
    }

    /// Buffer length, padding included.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Parameter count, padding excluded.
    pub fn num_params(&self) -> usize {
        self.entries.iter().map(|e| e.len()).sum()
    }

    /// The tensor named `name`.
    pub fn get(&self, name: &str) -> Option<&ParamEntry> {
        self.entries.iter().find(|e| e.name == name)
    }
}

/// A dense layer's weight and optional bias.
#[derive(Clone, Debug)]
pub(crate) struct Lin {
    pub w: Range<usize>,
    pub b: Option<Range<usize>>,
    /// The weight's index in the model's quantized matrices, when it has
    /// been quantized (then `w` is empty).
    pub q: Option<usize>,
}

/// A norm's weight, and its bias for LayerNorm.
pub(crate) type NormIdx = Lin;

#[derive(Clone, Debug)]
pub(crate) struct LayerIndex {
    pub norm1: NormIdx,
    /// q | k | v, one packed matrix: GPT-2's `c_attn`, or Llama's three
    /// projections laid out back to back.
    pub qkv: Lin,
    pub proj: Lin,
    pub norm2: NormIdx,
    /// SwiGLU's gate projection; None for the GELU MLP.
    pub gate: Option<Lin>,
    /// The MLP's first projection (GPT-2 `c_fc`, Llama `up_proj`).
    pub up: Lin,
    /// The MLP's last projection (GPT-2 `mlp.c_proj`, Llama `down_proj`).
    pub down: Lin,
}

/// Where each tensor of a `Transformer` sits in the flat buffer.
#[derive(Clone, Debug)]
pub(crate) struct Index {
    pub wte: Range<usize>,
    pub wpe: Option<Range<usize>>,
    /// Token-type embeddings (BERT).
    pub wtt: Option<Range<usize>>,
    /// The norm over the summed embeddings (BERT).
    pub emb_norm: Option<NormIdx>,
    pub layers: Vec<LayerIndex>,
    /// The norm after the last block (pre-norm models only).
    pub norm_f: Option<NormIdx>,
    /// `lm_head`, or the token embedding when tied; None for encoders and classifiers.
    pub head: Option<Range<usize>>,
    /// A sequence classifier's head.
    pub cls: Option<ClsIndex>,
    /// The quantized head and token embedding (the same matrix when tied).
    pub head_q: Option<usize>,
    pub wte_q: Option<usize>,
}

impl Index {
    /// Every range in the index, for remapping.
    pub(crate) fn for_each_range(&mut self, f: &mut dyn FnMut(&mut Range<usize>)) {
        let lin = |l: &mut Lin, f: &mut dyn FnMut(&mut Range<usize>)| {
            f(&mut l.w);
            if let Some(b) = &mut l.b {
                f(b);
            }
        };
        f(&mut self.wte);
        for r in [&mut self.wpe, &mut self.wtt, &mut self.head].into_iter().flatten() {
            f(r);
        }
        for l in [&mut self.emb_norm, &mut self.norm_f].into_iter().flatten() {
            lin(l, f);
        }
        for layer in &mut self.layers {
            for l in [&mut layer.norm1, &mut layer.qkv, &mut layer.proj, &mut layer.norm2, &mut layer.up, &mut layer.down] {
                lin(l, f);
            }
            if let Some(g) = &mut layer.gate {
                lin(g, f);
            }
        }
        if let Some(cls) = &mut self.cls {
            if let Some(p) = &mut cls.pooler {
                lin(p, f);
            }
            lin(&mut cls.out, f);
        }
    }
}

/// A classifier's head: BERT's pooler (dense + tanh over [CLS]) then
/// `classifier`; a decoder's `score` (no bias) over its last real token.
#[derive(Clone, Debug)]
pub(crate) struct ClsIndex {
    pub pooler: Option<Lin>,
    pub out: Lin,
}

impl ParamLayout {
    /// The layout of a config, with Hugging Face names for its family.
    pub(crate) fn transformer(cfg: &TransformerConfig) -> (Self, Index) {
        match cfg.family {
            Family::Gpt2 => Self::gpt2_layout(cfg),
            Family::Bert => Self::bert_layout(cfg),
            _ => Self::llama_layout(cfg),
        }
    }

    fn gpt2_layout(cfg: &TransformerConfig) -> (Self, Index) {
        let (v, c, t, f, w) = (cfg.vocab_size, cfg.n_embd, cfg.n_ctx, cfg.d_ff, cfg.qkv_width());
        let mut l = ParamLayout::empty();
        let p = "transformer.";
        let wte = l.push(format!("{p}wte.weight"), vec![v, c], ParamKind::Embedding);
        let wpe = (cfg.position == Position::Learned).then(|| l.push(format!("{p}wpe.weight"), vec![t, c], ParamKind::Embedding));
        let lin = |l: &mut ParamLayout, name: String, shape: Vec<usize>, out: usize, kind: ParamKind| Lin {
            q: None,
            w: l.push(format!("{name}.weight"), shape, kind),
            b: Some(l.push(format!("{name}.bias"), vec![out], ParamKind::Bias)),
        };
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let h = format!("{p}h.{i}.");
            layers.push(LayerIndex {
                norm1: lin(&mut l, format!("{h}ln_1"), vec![c], c, ParamKind::Norm),
                qkv: lin(&mut l, format!("{h}attn.c_attn"), vec![c, w], w, ParamKind::Matrix),
                proj: lin(&mut l, format!("{h}attn.c_proj"), vec![cfg.attn_width(), c], c, ParamKind::Matrix),
                norm2: lin(&mut l, format!("{h}ln_2"), vec![c], c, ParamKind::Norm),
                gate: None,
                up: lin(&mut l, format!("{h}mlp.c_fc"), vec![c, f], f, ParamKind::Matrix),
                down: lin(&mut l, format!("{h}mlp.c_proj"), vec![f, c], c, ParamKind::Matrix),
            });
        }
        let norm_f = lin(&mut l, format!("{p}ln_f"), vec![c], c, ParamKind::Norm);
        let cls = score_head(&mut l, cfg);
        l.finish();
        let head = cls.is_none().then(|| wte.clone());
        (l, Index { head, wte, wpe, wtt: None, emb_norm: None, layers, norm_f: Some(norm_f), cls, head_q: None, wte_q: None })
    }

    fn llama_layout(cfg: &TransformerConfig) -> (Self, Index) {
        let (v, c, f, hd) = (cfg.vocab_size, cfg.n_embd, cfg.d_ff, cfg.head_dim);
        let (qw, kvw) = (cfg.n_head * hd, cfg.n_kv_head * hd);
        let mut l = ParamLayout::empty();
        let wte = l.push("model.embed_tokens.weight".into(), vec![v, c], ParamKind::Embedding);
        let dense = |l: &mut ParamLayout, name: String, shape: Vec<usize>| Lin { q: None, w: l.push(name, shape, ParamKind::Matrix), b: None };
        let norm = |l: &mut ParamLayout, name: String| Lin { q: None, w: l.push(name, vec![c], ParamKind::Norm), b: None };
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for li in 0..cfg.n_layer {
            let p = format!("model.layers.{li}.");
            let norm1 = norm(&mut l, format!("{p}input_layernorm.weight"));
            // q, k and v back to back form the (W, C) matrix of one GEMM.
            let q = l.push(format!("{p}self_attn.q_proj.weight"), vec![qw, c], ParamKind::Matrix);
            l.push_packed(format!("{p}self_attn.k_proj.weight"), vec![kvw, c], ParamKind::Matrix);
            let vr = l.push_packed(format!("{p}self_attn.v_proj.weight"), vec![kvw, c], ParamKind::Matrix);
            let qkv_b = cfg.qkv_bias.then(|| {
                let qb = l.push(format!("{p}self_attn.q_proj.bias"), vec![qw], ParamKind::Bias);
                l.push_packed(format!("{p}self_attn.k_proj.bias"), vec![kvw], ParamKind::Bias);
                let vb = l.push_packed(format!("{p}self_attn.v_proj.bias"), vec![kvw], ParamKind::Bias);
                qb.start..vb.end
            });
            let proj = dense(&mut l, format!("{p}self_attn.o_proj.weight"), vec![c, qw]);
            let norm2 = norm(&mut l, format!("{p}post_attention_layernorm.weight"));
            let gate = Some(dense(&mut l, format!("{p}mlp.gate_proj.weight"), vec![f, c]));
            let up = dense(&mut l, format!("{p}mlp.up_proj.weight"), vec![f, c]);
            let down = dense(&mut l, format!("{p}mlp.down_proj.weight"), vec![c, f]);
            layers.push(LayerIndex { norm1, qkv: Lin { q: None, w: q.start..vr.end, b: qkv_b }, proj, norm2, gate, up, down });
        }
        let norm_f = norm(&mut l, "model.norm.weight".into());
        let cls = score_head(&mut l, cfg);
        let head = match (&cls, cfg.tied_head) {
            (Some(_), _) => None,
            (None, true) => Some(wte.clone()),
            (None, false) => Some(l.push("lm_head.weight".into(), vec![v, c], ParamKind::Matrix)),
        };
        l.finish();
        (l, Index { wte, wpe: None, wtt: None, emb_norm: None, layers, norm_f: Some(norm_f), head, cls, head_q: None, wte_q: None })
    }

    /// BERT's names: `BertModel`'s, or with a classifier the `bert.` prefix
    /// of `BertForSequenceClassification`. Linear weights are stored (out,
    /// in); q, k and v back to back.
    fn bert_layout(cfg: &TransformerConfig) -> (Self, Index) {
        let (v, c, t, f) = (cfg.vocab_size, cfg.n_embd, cfg.n_ctx, cfg.d_ff);
        let pre = if cfg.is_classifier() { "bert." } else { "" };
        let mut l = ParamLayout::empty();
        let lin = |l: &mut ParamLayout, name: &str, out: usize, inp: usize| Lin {
            q: None,
            w: l.push(format!("{name}.weight"), vec![out, inp], ParamKind::Matrix),
            b: Some(l.push(format!("{name}.bias"), vec![out], ParamKind::Bias)),
        };
        let norm = |l: &mut ParamLayout, name: &str| Lin {
            q: None,
            w: l.push(format!("{name}.weight"), vec![c], ParamKind::Norm),
            b: Some(l.push(format!("{name}.bias"), vec![c], ParamKind::Bias)),
        };
        let wte = l.push(format!("{pre}embeddings.word_embeddings.weight"), vec![v, c], ParamKind::Embedding);
        let wpe = l.push(format!("{pre}embeddings.position_embeddings.weight"), vec![t, c], ParamKind::Embedding);
        let wtt = l.push(format!("{pre}embeddings.token_type_embeddings.weight"), vec![cfg.type_vocab_size, c], ParamKind::Embedding);
        let emb_norm = norm(&mut l, &format!("{pre}embeddings.LayerNorm"));
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = format!("{pre}encoder.layer.{i}.");
            let q = l.push(format!("{p}attention.self.query.weight"), vec![c, c], ParamKind::Matrix);
            l.push_packed(format!("{p}attention.self.key.weight"), vec![c, c], ParamKind::Matrix);
            let vw = l.push_packed(format!("{p}attention.self.value.weight"), vec![c, c], ParamKind::Matrix);
            let qb = l.push(format!("{p}attention.self.query.bias"), vec![c], ParamKind::Bias);
            l.push_packed(format!("{p}attention.self.key.bias"), vec![c], ParamKind::Bias);
            let vb = l.push_packed(format!("{p}attention.self.value.bias"), vec![c], ParamKind::Bias);
            let proj = lin(&mut l, &format!("{p}attention.output.dense"), c, c);
            let norm1 = norm(&mut l, &format!("{p}attention.output.LayerNorm"));
            let up = lin(&mut l, &format!("{p}intermediate.dense"), f, c);
            let down = lin(&mut l, &format!("{p}output.dense"), c, f);
            let norm2 = norm(&mut l, &format!("{p}output.LayerNorm"));
            layers.push(LayerIndex { norm1, qkv: Lin { q: None, w: q.start..vw.end, b: Some(qb.start..vb.end) }, proj, norm2, gate: None, up, down });
        }
        let cls =
            cfg.is_classifier().then(|| ClsIndex { pooler: Some(lin(&mut l, "bert.pooler.dense", c, c)), out: lin(&mut l, "classifier", cfg.labels.len(), c) });
        l.finish();
        let head = (cfg.tied_head && cls.is_none()).then(|| wte.clone());
        (l, Index { wte, wpe: Some(wpe), wtt: Some(wtt), emb_norm: Some(emb_norm), layers, norm_f: None, head, cls, head_q: None, wte_q: None })
    }
}

/// A decoder classifier's `score` (K, C), no bias; None for a language model.
fn score_head(l: &mut ParamLayout, cfg: &TransformerConfig) -> Option<ClsIndex> {
    cfg.is_classifier().then(|| ClsIndex {
        pooler: None,
        out: Lin { q: None, w: l.push("score.weight".into(), vec![cfg.labels.len(), cfg.n_embd], ParamKind::Matrix), b: None },
    })
}

/// The gradient view of `r`, or an empty slice when `buf` is empty (frozen).
pub(crate) fn grad_view(buf: &mut [f32], r: Range<usize>) -> &mut [f32] {
    if buf.is_empty() {
        buf
    } else {
        &mut buf[r]
    }
}

/// Two disjoint mutable views into one buffer (`a` must end before `b` starts).
pub(crate) fn two_mut(buf: &mut [f32], a: Range<usize>, b: Range<usize>) -> (&mut [f32], &mut [f32]) {
    assert!(a.end <= b.start);
    let (lo, hi) = buf.split_at_mut(b.start);
    (&mut lo[a], &mut hi[..b.end - b.start])
}

/// A weight's gradient view and its bias's, which may both be needed at once.
/// An empty `buf` (a frozen model's gradients) gives empty views.
pub(crate) fn lin_mut<'a>(buf: &'a mut [f32], lin: &Lin) -> (&'a mut [f32], Option<&'a mut [f32]>) {
    if buf.is_empty() {
        return (buf, None);
    }
    match &lin.b {
        Some(b) if lin.w.end <= b.start => {
            let (w, b) = two_mut(buf, lin.w.clone(), b.clone());
            (w, Some(b))
        }
        Some(_) => unreachable!("biases follow their weights in every layout"),
        None => (&mut buf[lin.w.clone()], None),
    }
}
