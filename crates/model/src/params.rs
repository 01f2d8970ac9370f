//! The flat parameter buffer and its named views.
//!
//! Every parameter lives in one contiguous `Vec<f32>`; gradients and optimizer
//! moments use the same layout, so the optimizer, clipping and checkpointing
//! each run over a single slice. Views are named after the Hugging Face tensor
//! names, so `model.safetensors` is written with no conversion step.

use std::ops::Range;

/// What a tensor is, which decides weight decay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    Matrix,
    Embedding,
    Norm,
    Bias,
}

#[derive(Clone, Debug)]
pub struct ParamEntry {
    /// Hugging Face name, e.g. `transformer.h.0.attn.c_attn.weight`.
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
    pub kind: ParamKind,
}

impl ParamEntry {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// Offsets of every tensor in the flat buffer.
#[derive(Clone, Debug)]
pub struct ParamLayout {
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

    /// The GPT-2 layout. Returns the layout and the per-layer index ranges.
    pub fn gpt(cfg: &crate::GptConfig) -> Self {
        Self::gpt_with_index(cfg).0
    }

    pub(crate) fn gpt_with_index(cfg: &crate::GptConfig) -> (Self, GptIndex) {
        let (v, c, t) = (cfg.vocab_size, cfg.n_embd, cfg.n_ctx);
        let mut l = ParamLayout { entries: Vec::new(), total: 0 };
        let p = "transformer.";
        let wte = l.push(format!("{p}wte.weight"), vec![v, c], ParamKind::Embedding);
        let wpe = match cfg.position {
            crate::PositionEncoding::Learned => Some(l.push(format!("{p}wpe.weight"), vec![t, c], ParamKind::Embedding)),
            crate::PositionEncoding::Sinusoidal => None,
        };
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let h = format!("{p}h.{i}.");
            layers.push(LayerIndex {
                ln1_w: l.push(format!("{h}ln_1.weight"), vec![c], ParamKind::Norm),
                ln1_b: l.push(format!("{h}ln_1.bias"), vec![c], ParamKind::Bias),
                qkv_w: l.push(format!("{h}attn.c_attn.weight"), vec![c, 3 * c], ParamKind::Matrix),
                qkv_b: l.push(format!("{h}attn.c_attn.bias"), vec![3 * c], ParamKind::Bias),
                proj_w: l.push(format!("{h}attn.c_proj.weight"), vec![c, c], ParamKind::Matrix),
                proj_b: l.push(format!("{h}attn.c_proj.bias"), vec![c], ParamKind::Bias),
                ln2_w: l.push(format!("{h}ln_2.weight"), vec![c], ParamKind::Norm),
                ln2_b: l.push(format!("{h}ln_2.bias"), vec![c], ParamKind::Bias),
                fc_w: l.push(format!("{h}mlp.c_fc.weight"), vec![c, 4 * c], ParamKind::Matrix),
                fc_b: l.push(format!("{h}mlp.c_fc.bias"), vec![4 * c], ParamKind::Bias),
                fcproj_w: l.push(format!("{h}mlp.c_proj.weight"), vec![4 * c, c], ParamKind::Matrix),
                fcproj_b: l.push(format!("{h}mlp.c_proj.bias"), vec![c], ParamKind::Bias),
            });
        }
        let lnf_w = l.push(format!("{p}ln_f.weight"), vec![c], ParamKind::Norm);
        let lnf_b = l.push(format!("{p}ln_f.bias"), vec![c], ParamKind::Bias);
        l.total = l.total.next_multiple_of(ALIGN);
        (l, GptIndex { wte, wpe, layers, lnf_w, lnf_b })
    }

    /// Buffer length, padding included.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Parameter count, padding excluded.
    pub fn num_params(&self) -> usize {
        self.entries.iter().map(|e| e.len()).sum()
    }

    pub fn get(&self, name: &str) -> Option<&ParamEntry> {
        self.entries.iter().find(|e| e.name == name)
    }
}

#[derive(Clone, Debug)]
pub(crate) struct LayerIndex {
    pub ln1_w: Range<usize>,
    pub ln1_b: Range<usize>,
    pub qkv_w: Range<usize>,
    pub qkv_b: Range<usize>,
    pub proj_w: Range<usize>,
    pub proj_b: Range<usize>,
    pub ln2_w: Range<usize>,
    pub ln2_b: Range<usize>,
    pub fc_w: Range<usize>,
    pub fc_b: Range<usize>,
    pub fcproj_w: Range<usize>,
    pub fcproj_b: Range<usize>,
}

#[derive(Clone, Debug)]
pub(crate) struct GptIndex {
    pub wte: Range<usize>,
    pub wpe: Option<Range<usize>>,
    pub layers: Vec<LayerIndex>,
    pub lnf_w: Range<usize>,
    pub lnf_b: Range<usize>,
}

/// Two disjoint mutable views into one buffer (`a` must end before `b` starts).
pub(crate) fn two_mut(buf: &mut [f32], a: Range<usize>, b: Range<usize>) -> (&mut [f32], &mut [f32]) {
    assert!(a.end <= b.start);
    let (lo, hi) = buf.split_at_mut(b.start);
    (&mut lo[a], &mut hi[..b.end - b.start])
}
