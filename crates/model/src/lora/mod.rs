//! LoRA: low-rank adapters on a frozen decoder's projections.
//!
//! An adapter on a projection y = x W adds s * (x A^T) B^T, with A (r, in),
//! B (out, r) and s = alpha / r (alpha / sqrt(r) with rsLoRA). Training
//! updates A and B only; the base weights get no gradient and no optimizer
//! state. Adapters are saved as PEFT does (`adapter_config.json`,
//! `adapter_model.safetensors`, keys such as
//! `base_model.model.transformer.h.0.attn.c_attn.lora_A.weight`), and
//! folders written by PEFT load.
//!
//! attn keeps Llama's q, k and v projections as one packed matrix, so an
//! adapter names the output columns of its projection it adds to: q_proj's
//! are the first NH*HD columns of the packed q | k | v output.

use std::collections::HashMap;
use std::ops::Range;

use attn_kernels::matmul::{matmul_backward, matmul_forward, WeightLayout};
use rand::{Rng, SeedableRng};

use crate::config::{Family, TransformerConfig};
use crate::error::{ModelError, Result};
use crate::params::{ParamKind, ParamLayout};

mod io;
pub use io::{adapter_base, is_adapter_dir, load_base, load_merged};

/// A PEFT adapter folder's configuration file.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// A PEFT adapter folder's weights file.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// The projection of a block an adapter sits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    /// The query, key and value projection (its q, k or v columns).
    Qkv,
    /// The attention output projection.
    Proj,
    /// The MLP's up projection.
    Up,
    /// The MLP's gate projection (SwiGLU).
    Gate,
    /// The MLP's down projection.
    Down,
}

/// `--lora-r`, `--lora-alpha`, `--lora-dropout`, `--lora-targets`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoraConfig {
    /// The rank of each A (r, in) and B (out, r).
    pub r: usize,
    /// The update B A is scaled by alpha / r (alpha / sqrt(r) with `rslora`).
    pub alpha: f32,
    /// Dropout on the adapter's input while training.
    pub dropout: f32,
    /// attn's names: q, k, v, o, mlp.
    pub targets: Vec<String>,
    /// Rank-stabilized scaling, PEFT's `use_rslora`.
    pub rslora: bool,
}

impl LoraConfig {
    /// The factor B A is multiplied by at rank `r`.
    pub fn scale(&self, r: usize) -> f32 {
        if self.rslora {
            self.alpha / (r as f32).sqrt()
        } else {
            self.alpha / r as f32
        }
    }
}

/// One adapter: where it adds, and its A and B in the adapter buffer.
#[derive(Clone, Debug)]
pub struct Adapter {
    /// The block it sits in.
    pub layer: usize,
    /// The projection it adds to.
    pub site: Site,
    /// The output columns of the site's projection it adds to.
    pub cols: Range<usize>,
    /// The projection's input width.
    pub d_in: usize,
    /// Its rank.
    pub r: usize,
    /// PEFT's module path, e.g. `transformer.h.0.attn.c_attn`.
    pub module: String,
    a: Range<usize>, // (r, in)
    b: Range<usize>, // (out, r)
}

/// The adapters of a model, their parameters, gradients and saved activations.
pub struct Lora {
    /// Rank, scale, dropout and targets.
    pub config: LoraConfig,
    /// Where each A and B (and a classifier's head) lies in `params`.
    pub layout: ParamLayout,
    /// Every trainable value, in one buffer.
    pub params: Vec<f32>,
    /// Their gradients, same layout.
    pub grads: Vec<f32>,
    /// One per targeted projection.
    pub adapters: Vec<Adapter>,
    /// Dropout applies when true (training steps, not evaluation).
    pub training: bool,
    /// Seed of this micro-batch's dropout masks.
    pub dropout_stream: u64,
    /// A classifier's head, trained in full beside the adapters (PEFT's
    /// `modules_to_save`): (the model's tensor name, its range here).
    pub head: Vec<(String, Range<usize>)>,
    // Saved by the forward pass for the backward: x A^T (N, r), and the
    // dropped-out input (N, in) when dropout is on.
    u: Vec<Vec<f32>>,
    xd: Vec<Vec<f32>>,
}

/// A projection an adapter can sit on: its site, the output columns it adds
/// to, its input width, and PEFT's module path.
type Module = (Site, Range<usize>, usize, String);

/// The modules of layer `li` that `target` names.
fn modules(cfg: &TransformerConfig, li: usize, target: &str) -> Result<Vec<Module>> {
    let (c, f, w, at) = (cfg.n_embd, cfg.d_ff, cfg.qkv_width(), cfg.attn_width());
    let qw = cfg.n_head * cfg.head_dim;
    let kvw = cfg.n_kv_head * cfg.head_dim;
    let bad = || ModelError::InvalidConfig(format!("--lora-targets: unknown target {target:?}; choose among q, k, v, o, mlp"));
    Ok(match cfg.family {
        Family::Gpt2 => {
            let p = format!("transformer.h.{li}.");
            match target {
                // GPT-2's c_attn is one module for q, k and v.
                "q" | "k" | "v" | "qkv" => vec![(Site::Qkv, 0..w, c, format!("{p}attn.c_attn"))],
                "o" => vec![(Site::Proj, 0..c, at, format!("{p}attn.c_proj"))],
                "mlp" => vec![(Site::Up, 0..f, c, format!("{p}mlp.c_fc")), (Site::Down, 0..c, f, format!("{p}mlp.c_proj"))],
                _ => return Err(bad()),
            }
        }
        Family::Bert => {
            // A classifier's body has the `bert.` prefix; q, k and v are packed.
            let p = format!("{}encoder.layer.{li}.", if cfg.is_classifier() { "bert." } else { "" });
            match target {
                "q" => vec![(Site::Qkv, 0..c, c, format!("{p}attention.self.query"))],
                "k" => vec![(Site::Qkv, c..2 * c, c, format!("{p}attention.self.key"))],
                "v" => vec![(Site::Qkv, 2 * c..w, c, format!("{p}attention.self.value"))],
                "o" => vec![(Site::Proj, 0..c, at, format!("{p}attention.output.dense"))],
                "mlp" => vec![(Site::Up, 0..f, c, format!("{p}intermediate.dense")), (Site::Down, 0..c, f, format!("{p}output.dense"))],
                _ => return Err(bad()),
            }
        }
        _ => {
            let p = format!("model.layers.{li}.");
            match target {
                "q" => vec![(Site::Qkv, 0..qw, c, format!("{p}self_attn.q_proj"))],
                "k" => vec![(Site::Qkv, qw..qw + kvw, c, format!("{p}self_attn.k_proj"))],
                "v" => vec![(Site::Qkv, qw + kvw..w, c, format!("{p}self_attn.v_proj"))],
                "o" => vec![(Site::Proj, 0..c, at, format!("{p}self_attn.o_proj"))],
                "mlp" => vec![
                    (Site::Gate, 0..f, c, format!("{p}mlp.gate_proj")),
                    (Site::Up, 0..f, c, format!("{p}mlp.up_proj")),
                    (Site::Down, 0..c, f, format!("{p}mlp.down_proj")),
                ],
                _ => return Err(bad()),
            }
        }
    })
}

/// Every module of the model an adapter can sit on, by PEFT module path.
type Located = (usize, Site, Range<usize>, usize);

fn all_modules(cfg: &TransformerConfig) -> Result<HashMap<String, Located>> {
    let mut out = HashMap::new();
    let targets: &[&str] = if cfg.family == Family::Gpt2 { &["qkv", "o", "mlp"] } else { &["q", "k", "v", "o", "mlp"] };
    for li in 0..cfg.n_layer {
        for t in targets {
            for (site, cols, d_in, module) in modules(cfg, li, t)? {
                out.insert(module, (li, site, cols, d_in));
            }
        }
    }
    Ok(out)
}

fn key(module: &str, ab: &str) -> String {
    format!("base_model.model.{module}.lora_{ab}.weight")
}

impl Lora {
    fn build(config: LoraConfig, mut specs: Vec<(usize, Site, Range<usize>, usize, String, usize)>) -> Self {
        // Layer order, then site order, so that the buffer and the file read alike.
        specs.sort_by(|a, b| (a.0, &a.4).cmp(&(b.0, &b.4)));
        specs.dedup_by(|a, b| a.4 == b.4);
        let mut layout = ParamLayout::empty();
        let mut adapters = Vec::new();
        for (layer, site, cols, d_in, module, r) in specs {
            let a = layout.push(key(&module, "A"), vec![r, d_in], ParamKind::Matrix);
            let b = layout.push(key(&module, "B"), vec![cols.len(), r], ParamKind::Matrix);
            adapters.push(Adapter { layer, site, cols, d_in, r, module, a, b });
        }
        layout.finish();
        let n = adapters.len();
        Lora {
            config,
            params: vec![0.0; layout.total()],
            grads: Vec::new(),
            layout,
            adapters,
            training: false,
            dropout_stream: 0,
            head: Vec::new(),
            u: vec![Vec::new(); n],
            xd: vec![Vec::new(); n],
        }
    }

    /// New adapters for `cfg`: A uniform in +-1/sqrt(in) (PEFT's Kaiming
    /// init), B zero, so the adapted model starts as the base model.
    pub fn new(model: &TransformerConfig, config: LoraConfig, seed: u64) -> Result<Self> {
        if config.r == 0 || config.alpha.is_nan() || config.alpha <= 0.0 || !(0.0..1.0).contains(&config.dropout) {
            return Err(ModelError::InvalidConfig(format!(
                "--lora-r must be at least 1, --lora-alpha positive and --lora-dropout in [0, 1) (got {}, {}, {})",
                config.r, config.alpha, config.dropout
            )));
        }
        let mut specs = Vec::new();
        for li in 0..model.n_layer {
            for t in &config.targets {
                for (site, cols, d_in, module) in modules(model, li, t)? {
                    specs.push((li, site, cols, d_in, module, config.r));
                }
            }
        }
        let mut lora = Self::build(config, specs);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x4c6f_5241);
        for ad in &lora.adapters {
            let bound = 1.0 / (ad.d_in as f32).sqrt();
            lora.params[ad.a.clone()].iter_mut().for_each(|x| *x = rng.gen_range(-bound..bound));
        }
        Ok(lora)
    }

    /// Trainable values.
    pub fn num_params(&self) -> usize {
        self.layout.num_params()
    }

    /// Trains a classifier's head (`score`, or BERT's `classifier`) beside
    /// the adapters, starting from the model's values, as PEFT does for
    /// sequence classification. BERT's pooler stays frozen.
    pub fn add_head(&mut self, model: &crate::Transformer) {
        let heads: Vec<_> = model.layout.entries.iter().filter(|e| is_head(&e.name)).cloned().collect();
        for e in heads {
            let r = self.layout.push(format!("base_model.model.{}", e.name), e.shape.clone(), e.kind);
            self.layout.finish();
            self.params.resize(self.layout.total(), 0.0);
            self.params[r.clone()].copy_from_slice(&model.params[e.range()]);
            self.head.push((e.name.clone(), r));
        }
    }

    /// Copies the trained head into the model's weights.
    pub fn sync_head(&self, layout: &ParamLayout, params: &mut [f32]) {
        for (name, r) in &self.head {
            if let Some(e) = layout.get(name) {
                params[e.range()].copy_from_slice(&self.params[r.clone()]);
            }
        }
    }

    /// Adds a head gradient `g` of the model's tensor `name` into the
    /// adapter's gradients; false when the head is not trained here.
    pub fn add_head_grad(&mut self, name: &str, g: &[f32]) -> bool {
        let Some((_, r)) = self.head.iter().find(|(n, _)| n == name) else { return false };
        if self.grads.len() != self.params.len() {
            self.grads = vec![0.0; self.params.len()];
        }
        self.grads[r.clone()].iter_mut().zip(g).for_each(|(a, b)| *a += b);
        true
    }

    fn dropout_mask(&self, i: usize, len: usize) -> Vec<f32> {
        let p = self.config.dropout;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.dropout_stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i as u64);
        (0..len).map(|_| if rng.gen::<f32>() < p { 0.0 } else { 1.0 / (1.0 - p) }).collect()
    }

    /// After the base projection at (`layer`, `site`): out (N, W) += s * (x A^T) B^T
    /// in the adapter's columns, for x (N, in). Saves what `backward` needs.
    pub fn forward(&mut self, layer: usize, site: Site, out: &mut [f32], x: &[f32], n: usize, w: usize) {
        for i in 0..self.adapters.len() {
            let ad = &self.adapters[i];
            if ad.layer != layer || ad.site != site {
                continue;
            }
            let (r, d_in, oc) = (ad.r, ad.d_in, ad.cols.len());
            let s = self.config.scale(r);
            let drop = self.training && self.config.dropout > 0.0;
            let xd: Vec<f32> = if drop { x[..n * d_in].iter().zip(self.dropout_mask(i, n * d_in)).map(|(a, m)| a * m).collect() } else { Vec::new() };
            let xin: &[f32] = if drop { &xd } else { x };
            let ad = &self.adapters[i];
            let mut u = std::mem::take(&mut self.u[i]);
            u.resize(n * r, 0.0);
            matmul_forward(&mut u, xin, &self.params[ad.a.clone()], None, n, d_in, r, WeightLayout::OutIn);
            let mut delta = vec![0.0f32; n * oc];
            matmul_forward(&mut delta, &u, &self.params[ad.b.clone()], None, n, r, oc, WeightLayout::OutIn);
            for (row, d) in out[..n * w].chunks_exact_mut(w).zip(delta.chunks_exact(oc)) {
                row[ad.cols.clone()].iter_mut().zip(d).for_each(|(o, d)| *o += s * d);
            }
            self.u[i] = u;
            self.xd[i] = xd;
        }
    }

    /// The reverse of `forward` at (`layer`, `site`), given d(out) (N, W):
    /// accumulates dA, dB and adds the adapters' share of d(x) into `dx`.
    pub fn backward(&mut self, layer: usize, site: Site, dout: &[f32], x: &[f32], dx: &mut [f32], n: usize, w: usize) {
        if self.grads.len() != self.params.len() {
            self.grads = vec![0.0; self.params.len()];
        }
        for i in 0..self.adapters.len() {
            let ad = self.adapters[i].clone();
            if ad.layer != layer || ad.site != site {
                continue;
            }
            let (r, d_in, oc) = (ad.r, ad.d_in, ad.cols.len());
            let s = self.config.scale(r);
            // d(delta) = s * dout in the adapter's columns.
            let dd: Vec<f32> = dout[..n * w].chunks_exact(w).flat_map(|row| row[ad.cols.clone()].iter().map(|v| s * v)).collect();
            let mut du = vec![0.0f32; n * r];
            let (ga, gb) = crate::params::two_mut(&mut self.grads, ad.a.clone(), ad.b.clone());
            matmul_backward(Some(&mut du), gb, None, &dd, &self.u[i], &self.params[ad.b.clone()], n, r, oc, WeightLayout::OutIn);
            let drop = !self.xd[i].is_empty();
            let xin: &[f32] = if drop { &self.xd[i] } else { x };
            if drop {
                let mut dxd = vec![0.0f32; n * d_in];
                matmul_backward(Some(&mut dxd), ga, None, &du, xin, &self.params[ad.a.clone()], n, d_in, r, WeightLayout::OutIn);
                let mask = self.dropout_mask(i, n * d_in);
                dx[..n * d_in].iter_mut().zip(dxd.iter().zip(mask)).for_each(|(g, (d, m))| *g += d * m);
            } else {
                matmul_backward(Some(&mut dx[..n * d_in]), ga, None, &du, xin, &self.params[ad.a.clone()], n, d_in, r, WeightLayout::OutIn);
            }
        }
    }

    /// Adds every adapter into the base weights (W += s * B A, transposed for
    /// GPT-2's (in, out) matrices): the adapted model at no extra cost.
    pub fn merge_into(&self, model: &mut crate::Transformer) {
        self.sync_head(&model.layout, &mut model.params);
        // The layout the weights are held in now (`Transformer::rows_for_decoding`).
        let in_out = model.layout_kind() == attn_kernels::matmul::WeightLayout::InOut;
        for ad in &self.adapters {
            let li = &model.idx.layers[ad.layer];
            let lin = match ad.site {
                Site::Qkv => &li.qkv,
                Site::Proj => &li.proj,
                Site::Up => &li.up,
                Site::Gate => li.gate.as_ref().expect("adapters on gate_proj exist only for SwiGLU models"),
                Site::Down => &li.down,
            };
            let w_out = lin.w.len() / ad.d_in;
            let s = self.config.scale(ad.r);
            let (a, b) = (&self.params[ad.a.clone()], &self.params[ad.b.clone()]);
            let wbuf = &mut model.params[lin.w.clone()];
            for (oi, o) in ad.cols.clone().enumerate() {
                for i in 0..ad.d_in {
                    let d: f32 = (0..ad.r).map(|k| b[oi * ad.r + k] * a[k * ad.d_in + i]).sum();
                    let at = if in_out { i * w_out + o } else { o * ad.d_in + i };
                    wbuf[at] += s * d;
                }
            }
        }
    }
}

/// A classifier head's tensor, trained in full under LoRA.
fn is_head(name: &str) -> bool {
    name.starts_with("score.") || name.starts_with("classifier.")
}
