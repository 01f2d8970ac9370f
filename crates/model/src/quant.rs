//! Decoders with small weights: every dense matrix of the blocks, the LM
//! head and the token embedding held as bf16 or int8 (see
//! `attn_kernels::quant`), everything else (norms, biases, positions) f32.
//!
//! Only the inference path reads them (`prefill`, `decode`, `decode_batch`,
//! `log_probs`); training, classification and attention maps need f32 weights
//! and say so. The f32 copies of quantized tensors are not kept: the flat
//! parameter buffer is rebuilt without them (`ParamLayout::without`).
//!
//! On disk, bf16 is an ordinary Hugging Face folder whose matrices are BF16
//! tensors. int8 is attn's own: each quantized tensor NAME is stored as
//! `NAME.qweight` (I8, out-major (OC, C) whatever NAME's own layout) and
//! `NAME.scales` (F32, (OC, ceil(C / G))), with
//! `"quantization_config": {"quant_method": "attn", "bits": 8, "group_size": G}`
//! in config.json. docs/PERFORMANCE.md has the format and the figures.

use std::ops::Range;

use attn_kernels::matmul::WeightLayout;
use attn_kernels::quant::{shared_bytes, streamed_from_memory, QData, QMatrix, Reading, Together};

use crate::error::{ModelError, Result};
use crate::params::{Index, ParamEntry, ParamKind, ParamLayout};

/// Inputs per scale in plain `int8`. 64 rather than 32: with an f32 scale
/// a weight then takes 8.5 bits instead of 9, and the decoding kernel does
/// half as many float steps (a convert, a multiply and a multiply-add a
/// group: three of the five vector operations per 32 weights at G = 32);
/// on held-out text both sizes score within 0.02% of f32
/// (docs/PERFORMANCE.md). Rows whose length is not a multiple of 64 still
/// quantize (the last group is shorter) but decode through the slower
/// widening kernel: `int8:32` suits them.
pub const INT8_GROUP: usize = 64;

/// How a model holds its dense weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightDtype {
    /// 4 bytes a weight.
    F32,
    /// 2 bytes a weight, rounded to nearest even.
    Bf16,
    /// Symmetric int8, one scale per `group` inputs.
    #[allow(missing_docs)]
    Int8 { group: usize },
}

impl WeightDtype {
    /// `f32`, `bf16`, `int8` (groups of `INT8_GROUP`) or `int8:G`.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            "int8" => Ok(Self::Int8 { group: INT8_GROUP }),
            _ => match s.strip_prefix("int8:").map(str::parse::<usize>) {
                Some(Ok(g)) if g >= 1 => Ok(Self::Int8 { group: g }),
                _ => Err(format!("unknown weight dtype `{s}`: expected f32, bf16, int8 or int8:G (G inputs a scale, e.g. int8:32; plain int8 is int8:64)")),
            },
        }
    }

    /// `parse`'s input for this dtype.
    pub fn name(&self) -> String {
        match self {
            Self::F32 => "f32".into(),
            Self::Bf16 => "bf16".into(),
            Self::Int8 { group: INT8_GROUP } => "int8".into(),
            Self::Int8 { group } => format!("int8:{group}"),
        }
    }
}

/// A quantized model's matrices, and where each came from, for saving.
#[derive(Clone, Debug)]
pub(crate) struct Quant {
    pub dtype: WeightDtype,
    pub mats: Vec<QMatrix>,
    /// Every tensor of the original layout that went into a matrix.
    pub parts: Vec<Part>,
}

/// One original tensor: rows `row0..row0 + rows` of matrix `mat`, stored by
/// Hugging Face as `shape` in `layout`.
#[derive(Clone, Debug)]
pub(crate) struct Part {
    pub name: String,
    pub shape: Vec<usize>,
    pub mat: usize,
    pub row0: usize,
    pub rows: usize,
    pub layout: WeightLayout,
}

/// A tensor as a loader has it: f32 values, already int8, or already
/// converted (a large tensor converted a block of rows at a time).
pub(crate) enum Src {
    F32(Vec<f32>),
    Int8 { q: Vec<i8>, scales: Vec<f32>, group: usize },
    Q(QMatrix),
}

/// The layout of tensor `e` of a family whose blocks are `lay`: embeddings
/// and LM heads are (V, C) in every family.
pub(crate) fn entry_layout(e: &ParamEntry, lay: WeightLayout) -> WeightLayout {
    if e.kind == ParamKind::Embedding || e.name.starts_with("lm_head") {
        WeightLayout::OutIn
    } else {
        lay
    }
}

/// f32 rows (`rows`, `cols`) in `layout` as `dtype`.
pub(crate) fn convert(v: &[f32], cols: usize, rows: usize, layout: WeightLayout, dtype: WeightDtype) -> QMatrix {
    match dtype {
        WeightDtype::Bf16 => QMatrix::bf16(v, cols, rows, layout),
        WeightDtype::Int8 { group } => QMatrix::int8(v, cols, rows, layout, group),
        WeightDtype::F32 => unreachable!("f32 models are not built here"),
    }
}

/// One matrix to quantize: the range it spans in the full layout, and its
/// input width (C).
struct Target {
    range: Range<usize>,
    cols: usize,
}

/// Rebuilds `(layout, idx)` for `dtype`: the matrices quantized from what
/// `read` gives for each of their tensors, the rest left to the caller to
/// fill at the returned layout's offsets. `(c, a, f)` are the blocks'
/// model, attention and MLP widths, `lay` their weight layout.
pub(crate) fn build(
    layout: &ParamLayout,
    idx: &mut Index,
    dtype: WeightDtype,
    lay: WeightLayout,
    (c, a, f): (usize, usize, usize),
    read: &mut dyn FnMut(&ParamEntry) -> Result<Src>,
) -> Result<(ParamLayout, Quant)> {
    let mut quant = Quant { dtype, mats: Vec::new(), parts: Vec::new() };
    // Every matrix to quantize, in the order decoding reads them: (layer and
    // site, or None for the head and then the embedding, and its target).
    let dims = |r: &Range<usize>, cols: usize| Target { range: r.clone(), cols };
    let mut targets: Vec<(Option<(usize, u8)>, Target)> = Vec::new();
    for (li, l) in idx.layers.iter().enumerate() {
        targets.extend([(0, dims(&l.qkv.w, c)), (1, dims(&l.proj.w, a))].map(|(s, t)| (Some((li, s)), t)));
        if let Some(g) = &l.gate {
            targets.push((Some((li, 2)), dims(&g.w, c)));
        }
        targets.extend([(3, dims(&l.up.w, c)), (4, dims(&l.down.w, f))].map(|(s, t)| (Some((li, s)), t)));
    }
    let head = idx.head.clone();
    targets.extend(head.iter().map(|h| (None, dims(h, c))));
    if head.as_ref() != Some(&idx.wte) {
        targets.push((None, dims(&idx.wte, c)));
    }
    // All of them in one buffer (`attn_kernels::quant::Together`), each
    // copied in as soon as it is made.
    let group = match dtype {
        WeightDtype::Int8 { group } => Some(group),
        _ => None,
    };
    let mut together = Together::with_bytes(targets.iter().map(|(_, t)| shared_bytes(t.range.len() / t.cols, t.cols, group)).sum());
    let mut removed = Vec::new();
    for (k, (site, t)) in targets.into_iter().enumerate() {
        let m = quantize_target(&t, k, layout, lay, dtype, &mut quant.parts, read)?;
        let pushed = together.push(m);
        debug_assert_eq!(pushed, k);
        removed.push(t.range.clone());
        let Some((li, site)) = site else {
            if head.as_ref() == Some(&t.range) {
                idx.head_q = Some(k);
                if t.range == idx.wte {
                    idx.wte_q = Some(k);
                }
            } else {
                idx.wte_q = Some(k);
            }
            continue;
        };
        let l = &mut idx.layers[li];
        let lin = match site {
            0 => &mut l.qkv,
            1 => &mut l.proj,
            2 => l.gate.as_mut().expect("gate"),
            3 => &mut l.up,
            _ => &mut l.down,
        };
        lin.q = Some(k);
    }
    quant.mats = together.finish();
    // Decoding reads every matrix once a token: one row at a time when they
    // are too large together to stay in the last-level cache.
    let reading = if streamed_from_memory(quant.mats.iter().map(QMatrix::bytes).sum()) { Reading::Streamed } else { Reading::InCache };
    quant.mats.iter_mut().for_each(|m| m.reading = reading);
    let (compact, shift) = layout.without(&removed);
    // Quantized weights keep an empty range; every other range moves with its tensor.
    let quantized: Vec<Range<usize>> = removed.clone();
    idx.for_each_range(&mut |r: &mut Range<usize>| {
        if quantized.iter().any(|q| q.start <= r.start && r.end <= q.end) {
            *r = 0..0;
        } else {
            let len = r.len();
            r.start = shift(r.start);
            r.end = r.start + len;
        }
    });
    Ok((compact, quant))
}

/// The matrix of target `t`: its tensors (one, or Q, K and V side by side)
/// quantized and stacked by rows, recorded as `parts` of matrix `mat`.
fn quantize_target(
    t: &Target,
    mat: usize,
    layout: &ParamLayout,
    lay: WeightLayout,
    dtype: WeightDtype,
    parts: &mut Vec<Part>,
    read: &mut dyn FnMut(&ParamEntry) -> Result<Src>,
) -> Result<QMatrix> {
    let mut rows_of = Vec::new();
    let mut row0 = 0;
    for e in layout.entries.iter().filter(|e| t.range.start <= e.offset && e.range().end <= t.range.end) {
        let elay = entry_layout(e, lay);
        let rows = e.len() / t.cols;
        rows_of.push(quantize_part(read(e)?, e, dtype, elay, t.cols, rows)?);
        parts.push(Part { name: e.name.clone(), shape: e.shape.clone(), mat, row0, rows, layout: elay });
        row0 += rows;
    }
    Ok(concat_rows(rows_of, t.cols))
}

fn quantize_part(src: Src, e: &ParamEntry, dtype: WeightDtype, lay: WeightLayout, cols: usize, rows: usize) -> Result<QMatrix> {
    match (src, dtype) {
        (Src::Q(m), _) => {
            assert!(m.rows == rows && m.cols == cols, "a converted tensor of the entry's shape");
            Ok(m)
        }
        (Src::F32(_), WeightDtype::F32) => unreachable!("f32 models are not built here"),
        (Src::F32(v), _) => Ok(convert(&v, cols, rows, lay, dtype)),
        (Src::Int8 { q, scales, group }, WeightDtype::Int8 { group: want }) if group == want => {
            if q.len() != rows * cols || scales.len() != rows * cols.div_ceil(group) {
                return Err(ModelError::InvalidConfig(format!(
                    "{}: int8 weights of {} values and {} scales; ({rows}, {cols}) in groups of {group} needs {} and {}",
                    e.name,
                    q.len(),
                    scales.len(),
                    rows * cols,
                    rows * cols.div_ceil(group)
                )));
            }
            Ok(QMatrix { rows, cols, data: QData::Int8 { q: q.into(), scales: scales.into(), group }, reading: Reading::InCache })
        }
        (Src::Int8 { group, .. }, want) => Err(ModelError::InvalidConfig(format!(
            "{} is stored as int8 in groups of {group}; it can't be loaded as {} (load it with --dtype int8{}, or quantize the f32 original)",
            e.name,
            want.name(),
            if group == 32 { String::new() } else { format!(":{group}") }
        ))),
    }
}

/// One matrix from row blocks of the same format.
pub(crate) fn concat_rows(parts: Vec<QMatrix>, cols: usize) -> QMatrix {
    let rows = parts.iter().map(|p| p.rows).sum();
    let mut it = parts.into_iter();
    let first = it.next().expect("a matrix has at least one tensor");
    let data = it.fold(first.data, |acc, p| match (acc, p.data) {
        (QData::Bf16(a), QData::Bf16(b)) => {
            let mut a = a.into_vec();
            a.extend_from_slice(&b);
            QData::Bf16(a.into())
        }
        (QData::Int8 { q, scales, group }, QData::Int8 { q: q2, scales: s2, .. }) => {
            let (mut q, mut scales) = (q.into_vec(), scales.into_vec());
            q.extend_from_slice(&q2);
            scales.extend_from_slice(&s2);
            QData::Int8 { q: q.into(), scales: scales.into(), group }
        }
        _ => unreachable!("one dtype per model"),
    });
    QMatrix { rows, cols, data, reading: Reading::InCache }
}

/// Tensor `part` of `m` back in its own layout as f32 (for bf16 saving).
pub(crate) fn part_f32(m: &QMatrix, part: &Part) -> Vec<f32> {
    let c = m.cols;
    let mut rows = vec![0.0f32; part.rows * c];
    m.dequantize_rows(&mut rows, part.row0);
    match part.layout {
        WeightLayout::OutIn => rows,
        WeightLayout::InOut => {
            let mut t = vec![0.0f32; rows.len()];
            for (o, row) in rows.chunks(c).enumerate() {
                for (i, &x) in row.iter().enumerate() {
                    t[i * part.rows + o] = x;
                }
            }
            t
        }
    }
}
