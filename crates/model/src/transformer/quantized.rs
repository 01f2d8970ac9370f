//! A decoder with bf16 or int8 weights: quantizing one in memory, loading
//! and saving one, and the dense layer and head that read the small
//! matrices (see `crate::quant` for what is quantized and the file format).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::Path;

use attn_kernels::matmul::{matmul_forward, WeightLayout};
use attn_kernels::quant::{bf16_bits, qmatvec_forward, QData, QMatrix};
use rayon::prelude::*;
use safetensors::tensor::Dtype;

use super::Transformer;
use crate::checkpoint::{check_finite, refuse_unused, save_config_json, save_raw, RawTensor, Weights, CONFIG_FILE, WEIGHTS_FILE};
use crate::config::TransformerConfig;
use crate::error::{ModelError, Result};
use crate::params::{Lin, ParamLayout};
use crate::quant::{self, part_f32, Src, WeightDtype};

thread_local! {
    /// A quantized matrix widened to f32 for a prefill GEMM, reused. Held
    /// while the GEMM runs in parallel, so it may be in use when a pass
    /// starts on the same thread (`dense_q`).
    static WIDE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Rows a chunk may have to take the quantized matrix-vector kernel (more
/// go through a GEMM over widened weights).
pub(super) const QROWS: usize = 8;

impl Transformer {
    /// How the dense weights are held.
    pub fn weight_dtype(&self) -> WeightDtype {
        self.quant.as_ref().map_or(WeightDtype::F32, |q| q.dtype)
    }

    /// Bytes the weights take in memory.
    pub fn weight_bytes(&self) -> usize {
        self.params.len() * 4 + self.quant.as_ref().map_or(0, |q| q.mats.iter().map(QMatrix::bytes).sum())
    }

    /// An error for work that needs the f32 weights (training, attention
    /// maps, classification) on a quantized model.
    pub(crate) fn require_f32(&self, what: &str) -> Result<()> {
        match &self.quant {
            None => Ok(()),
            Some(q) => Err(ModelError::InvalidConfig(format!(
                "{what} needs f32 weights and this model's are {}; load it with --dtype f32 (an int8 folder holds no f32 weights: use the folder it was quantized from)",
                q.dtype.name()
            ))),
        }
    }

    /// Quantizes the dense weights (blocks, LM head, token embedding) in
    /// place and drops their f32 copies. Only decoders quantize, and a model
    /// with LoRA adapters must merge them first.
    pub fn quantize(&mut self, dtype: WeightDtype) -> Result<()> {
        if dtype == WeightDtype::F32 || self.quant.as_ref().is_some_and(|q| q.dtype == dtype) {
            return Ok(());
        }
        check_quantizable(&self.config, self.lora.is_some(), dtype)?;
        self.require_f32("quantizing again")?;
        // The tensors are read, and saved later, in the files' layout.
        self.family_layout();
        let (full, params) = (self.layout.clone(), std::mem::take(&mut self.params));
        let (lay, dims) = (self.layout_kind(), quant_dims(&self.config));
        let (compact, q) = quant::build(&full, &mut self.idx, dtype, lay, dims, &mut |e| Ok(Src::F32(params[e.range()].to_vec())))?;
        let mut rest = vec![0.0f32; compact.total()];
        for e in &compact.entries {
            let old = full.get(&e.name).expect("kept tensors come from the full layout");
            rest[e.range()].copy_from_slice(&params[old.range()]);
        }
        (self.params, self.layout, self.quant, self.grads, self.acts) = (rest, compact, Some(q), Vec::new(), None);
        Ok(())
    }

    /// The f32 model with the same function: every quantized weight
    /// widened back (bf16 exactly, int8 as q * scale).
    pub fn dequantized(&self) -> Result<Transformer> {
        let Some(q) = &self.quant else { return Err(ModelError::InvalidConfig("the model is already f32".into())) };
        let mut m = Transformer::zeros(self.config.clone())?;
        for e in &self.layout.entries {
            let to = m.layout.get(&e.name).expect("same config").range();
            m.params[to].copy_from_slice(&self.params[e.range()]);
        }
        for part in &q.parts {
            let to = m.layout.get(&part.name).expect("same config").range();
            m.params[to].copy_from_slice(&part_f32(&q.mats[part.mat], part));
        }
        Ok(m)
    }

    /// Loads a decoder folder with its dense weights as `dtype`; `None`
    /// keeps the folder's own (int8 when it is attn's int8, bf16 when its
    /// matrices are BF16, else f32). Quantized tensors are read one at a
    /// time, so no f32 copy of the whole model is ever held.
    pub fn load_as(dir: &Path, dtype: Option<WeightDtype>) -> Result<(Self, HashMap<String, String>)> {
        let config = super::config_from_dir(dir)?;
        // Before anything is sized by the config (its layout included).
        super::check_memory(&config, &dir.join(CONFIG_FILE))?;
        let w = Weights::open_dir(dir)?;
        let stored = stored_dtype(dir, &config, &w)?;
        let want = dtype.unwrap_or(stored);
        if want == WeightDtype::F32 {
            return match stored {
                // The int8 values widened: the same function, at f32 speed.
                WeightDtype::Int8 { .. } => Ok((Self::load_as(dir, Some(stored))?.0.dequantized()?, w.metadata()?)),
                _ => Self::load(dir),
            };
        }
        let (full, mut idx) = ParamLayout::transformer(&config);
        check_quantizable(&config, false, want)?;
        let (lay, dims) = (super::layout_of(config.family), quant_dims(&config));
        let mut used = HashSet::new();
        let names = |e: &str| super::io::candidates(config.family, e);
        let (compact, q) = quant::build(&full, &mut idx, want, lay, dims, &mut |e| {
            if let Some(base) = names(&e.name).into_iter().find(|n| w.has(&format!("{n}.qweight"))) {
                let WeightDtype::Int8 { group } = stored else { unreachable!("int8 tensors make an int8 folder") };
                let (qn, sn) = (format!("{base}.qweight"), format!("{base}.scales"));
                // (OC, C) out-major, whatever the tensor's own layout.
                let shape = w.shape(&qn)?;
                if shape.len() != 2 || shape[0] * shape[1] != e.len() {
                    return Err(ModelError::ShapeMismatch { path: w.path_of(&qn), name: qn, found: shape, expected: vec![e.len() / dims.0, dims.0] });
                }
                let q = w.read_i8(&qn, &shape)?;
                let scales = w.read(&sn, &[shape[0], shape[1].div_ceil(group)])?;
                check_finite(dir, &sn, &scales)?;
                used.extend([qn, sn]);
                return Ok(Src::Int8 { q, scales, group });
            }
            let name = names(&e.name).into_iter().find(|n| w.has(n)).unwrap_or_else(|| e.name.clone());
            let missing = |err| match err {
                ModelError::MissingTensor { path, .. } => ModelError::MissingTensor { path, name: e.name.clone() },
                other => other,
            };
            let cols = *e.shape.last().expect("a matrix");
            let rows = e.len() / cols;
            // (OC, C) tensors are converted a block of rows at a time, so a
            // large one (the embedding) never exists whole in f32.
            let block = ((1 << 22) / cols).max(1);
            if quant::entry_layout(e, lay) == WeightLayout::OutIn && rows > block {
                let mut buf = vec![0.0f32; block * cols];
                let mut parts = Vec::new();
                for r0 in (0..rows).step_by(block) {
                    let n = block.min(rows - r0);
                    w.read_part_into(&name, &e.shape, r0 * cols, &mut buf[..n * cols]).map_err(missing)?;
                    check_finite(dir, &e.name, &buf[..n * cols])?;
                    parts.push(quant::convert(&buf[..n * cols], cols, n, WeightLayout::OutIn, want));
                }
                used.insert(name);
                return Ok(Src::Q(quant::concat_rows(parts, cols)));
            }
            let v = w.read(&name, &e.shape).map_err(missing)?;
            check_finite(dir, &e.name, &v)?;
            used.insert(name);
            Ok(Src::F32(v))
        })?;
        let mut model = Transformer::with_layout(config, compact, idx);
        used.extend(model.read_params(dir, &w, None)?);
        let tied_head = |n: &str| model.config.tied_head && n == "lm_head.weight";
        refuse_unused(dir, &w, &used, |n| super::io::is_known_extra(n) || tied_head(n))?;
        model.quant = Some(q);
        Ok((model, w.metadata()?))
    }

    /// Writes a quantized model's folder: bf16 as a Hugging Face folder of
    /// BF16 matrices, int8 in attn's format (see `crate::quant`).
    pub(crate) fn save_quantized(&self, dir: &Path, metadata: Option<HashMap<String, String>>) -> Result<()> {
        let q = self.quant.as_ref().expect("a quantized model");
        let mut config = self.hf_config();
        match q.dtype {
            WeightDtype::Int8 { group } => {
                config["quantization_config"] = serde_json::json!({"quant_method": "attn", "bits": 8, "group_size": group});
            }
            _ => config["torch_dtype"] = "bfloat16".into(),
        }
        save_config_json(dir, &config)?;
        let mut tensors: Vec<RawTensor> =
            self.layout.entries.iter().map(|e| (e.name.clone(), Dtype::F32, e.shape.clone(), bytemuck::cast_slice(&self.params[e.range()]).to_vec())).collect();
        for part in &q.parts {
            let m = &q.mats[part.mat];
            match &m.data {
                QData::Bf16(_) => {
                    let bits: Vec<u16> = part_f32(m, part).iter().map(|&x| bf16_bits(x)).collect();
                    tensors.push((part.name.clone(), Dtype::BF16, part.shape.clone(), bytemuck::cast_slice(&bits).to_vec()));
                }
                QData::Int8 { q, scales, group } => {
                    let (c, g) = (m.cols, m.cols.div_ceil(*group));
                    let qs: Vec<u8> = q[part.row0 * c..(part.row0 + part.rows) * c].iter().map(|&v| v as u8).collect();
                    let ss = &scales[part.row0 * g..(part.row0 + part.rows) * g];
                    tensors.push((format!("{}.qweight", part.name), Dtype::I8, vec![part.rows, c], qs));
                    tensors.push((format!("{}.scales", part.name), Dtype::F32, vec![part.rows, g], bytemuck::cast_slice(ss).to_vec()));
                }
            }
        }
        let mut meta = metadata.unwrap_or_default();
        meta.insert("format".into(), "pt".into());
        save_raw(&dir.join(WEIGHTS_FILE), &tensors, Some(meta))
    }

    /// out = inp @ W + b for `rows` rows of one sequence when W is
    /// quantized: the matrix-vector kernel for a few rows (when the scratch
    /// holds them), else W widened to f32 (one matrix at a time, in a reused
    /// buffer) and a GEMM.
    pub(super) fn dense_q(&self, out: &mut [f32], scratch: &mut [f32], inp: &[f32], m: &QMatrix, bias: Option<&[f32]>, rows: usize) {
        if rows <= QROWS && scratch.len() >= rows * m.rows {
            return qmatvec_forward(out, scratch, inp, m, bias, rows);
        }
        WIDE.with(|cell| {
            // In use when this thread took up another pass's task while its
            // own GEMM waits (work stealing): that one gets a buffer of its own.
            let (mut own, mut kept) = (Vec::new(), cell.try_borrow_mut());
            let wide = kept.as_deref_mut().unwrap_or(&mut own);
            wide.resize(m.rows * m.cols, 0.0);
            // Widened in parallel, 64 rows a task: one thread alone spent
            // longer on this than the GEMM takes for a 32-token prompt.
            wide.par_chunks_mut(64 * m.cols).enumerate().for_each(|(i, rows)| m.dequantize_rows(rows, 64 * i));
            matmul_forward(out, inp, wide, bias, rows, m.cols, m.rows, WeightLayout::OutIn);
        });
    }

    /// Whether the dense weights are int8.
    pub(super) fn is_int8(&self) -> bool {
        matches!(self.weight_dtype(), WeightDtype::Int8 { .. })
    }

    /// The quantized matrix of `lin`, if it has one.
    pub(super) fn qmat(&self, lin: &Lin) -> Option<&QMatrix> {
        lin.q.map(|k| &self.quant.as_ref().expect("quantized index")[k])
    }

    /// Row `id` of a quantized token embedding, widened into `row`.
    pub(super) fn embed_q(&self, row: &mut [f32], id: u32) -> bool {
        match self.idx.wte_q {
            Some(k) => {
                self.quant.as_ref().expect("quantized index")[k].dequantize_rows(row, id as usize);
                true
            }
            None => false,
        }
    }
}

impl std::ops::Index<usize> for quant::Quant {
    type Output = QMatrix;
    fn index(&self, k: usize) -> &QMatrix {
        &self.mats[k]
    }
}

fn check_quantizable(cfg: &TransformerConfig, lora: bool, dtype: WeightDtype) -> Result<()> {
    if !cfg.has_head() || !cfg.causal {
        return Err(ModelError::InvalidConfig(format!(
            "only decoders with an LM head take --dtype {}; this is a {} without one",
            dtype.name(),
            cfg.family.model_type()
        )));
    }
    if lora {
        return Err(ModelError::InvalidConfig(format!("merge the LoRA adapters into the model before converting it to {}", dtype.name())));
    }
    Ok(())
}

/// The blocks' model, attention and MLP widths.
fn quant_dims(cfg: &TransformerConfig) -> (usize, usize, usize) {
    (cfg.n_embd, cfg.attn_width(), cfg.d_ff)
}

/// The dtype a folder's dense weights are stored in.
fn stored_dtype(dir: &Path, config: &TransformerConfig, w: &Weights) -> Result<WeightDtype> {
    let path = dir.join(CONFIG_FILE);
    if let Some(qc) = config.hf.get("quantization_config") {
        let method = qc.get("quant_method").and_then(|v| v.as_str()).unwrap_or("");
        let bits = qc.get("bits").and_then(|v| v.as_u64());
        let group = qc.get("group_size").and_then(|v| v.as_u64()).unwrap_or(0) as usize;
        if method != "attn" || bits != Some(8) || group == 0 {
            return Err(ModelError::InvalidConfig(format!(
                "{}: quantization_config {qc} is not one attn reads (it reads {{\"quant_method\": \"attn\", \"bits\": 8, \"group_size\": G}}); load the unquantized model instead",
                path.display()
            )));
        }
        return Ok(WeightDtype::Int8 { group });
    }
    // A folder whose first block matrix is BF16 is a bf16 model.
    let (full, idx) = ParamLayout::transformer(config);
    let first = idx.layers.first().and_then(|l| full.entries.iter().find(|e| e.offset == l.up.w.start));
    if let Some(e) = first {
        if let Some(n) = super::io::candidates(config.family, &e.name).into_iter().find(|n| w.has(n)) {
            if w.dtype(&n)? == Dtype::BF16 {
                return Ok(WeightDtype::Bf16);
            }
        }
    }
    Ok(WeightDtype::F32)
}
