//! Decoder folders in the Hugging Face layout: config.json + model.safetensors
//! (or the shards an index lists), tensor names as transformers writes them.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::Transformer;
use crate::checkpoint::{check_finite, refuse_unused, save_config_json, save_layout, Weights, CONFIG_FILE, WEIGHTS_FILE};
use crate::config::{Family, TransformerConfig};
use crate::error::{io_err, ModelError, Result};

/// Tensors that checkpoints carry but that are not parameters of the model
/// attn builds: GPT-2's causal mask buffers, old Llama rotary frequency
/// buffers, BERT's position-id buffer, and BERT's pooler and pre-training
/// heads (a base encoder's outputs are its hidden states).
pub(super) fn is_known_extra(name: &str) -> bool {
    name.ends_with(".attn.bias")
        || name.ends_with(".attn.masked_bias")
        || name.ends_with("rotary_emb.inv_freq")
        || name.ends_with("embeddings.position_ids")
        || ["pooler.", "bert.pooler.", "cls."].iter().any(|p| name.starts_with(p))
}

/// The names a checkpoint may give tensor `name`: as attn names it; without
/// the base model's prefix (bare `GPT2Model` / `LlamaModel` files); with BERT
/// task models' `bert.` prefix; and old BERT files' LayerNorm gamma / beta.
pub(super) fn candidates(family: Family, name: &str) -> Vec<String> {
    let mut out = vec![name.to_string()];
    match family {
        Family::Gpt2 => out.extend(name.strip_prefix("transformer.").map(str::to_string)),
        Family::Bert => {
            // A classifier's body is `bert.`-prefixed; a bare BertModel's is not.
            out.extend(name.strip_prefix("bert.").map(str::to_string));
            out.push(format!("bert.{name}"));
            let old = name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta");
            if old != name {
                out.push(format!("bert.{old}"));
                out.push(old);
            }
        }
        _ => out.extend(name.strip_prefix("model.").map(str::to_string)),
    }
    out
}

/// The config of a decoder folder, from its config.json.
pub fn config_from_dir(dir: &Path) -> Result<TransformerConfig> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|err| ModelError::Json { path: path.clone(), err })?;
    crate::hf::from_hf(&v, &path)
}

impl Transformer {
    /// Loads a decoder folder (an attn run, or a Hugging Face GPT-2, Llama,
    /// Qwen2 or Mistral folder) by its config.json `model_type`. Returns the
    /// model and the weights file's metadata.
    pub fn load(dir: &Path) -> Result<(Self, HashMap<String, String>)> {
        let config = config_from_dir(dir)?;
        if config.hf.get("quantization_config").is_some() {
            return Err(ModelError::InvalidConfig(format!(
                "{}: the model is quantized (config.json has quantization_config): load it with `Transformer::load_as` (what --dtype does); training starts from the f32 folder it was quantized from",
                dir.join(CONFIG_FILE).display()
            )));
        }
        Self::load_config(dir, config, None)
    }

    /// Loads a model folder as a sequence classifier over `labels`: a
    /// classifier with those labels loads as it is; any other model (a
    /// language model, an encoder, a classifier of other labels) keeps its
    /// body and gets a new head, N(0, 0.02) as transformers initialises one
    /// (BERT's pooler is kept when the folder has it). An LM head is dropped.
    pub fn load_as_classifier(dir: &Path, labels: Vec<String>, seed: u64) -> Result<Self> {
        let mut config = config_from_dir(dir)?;
        if config.labels == labels {
            return Ok(Self::load(dir)?.0);
        }
        config.labels = labels;
        if let Some(o) = config.hf.as_object_mut() {
            for k in ["id2label", "label2id", "architectures", "num_labels"] {
                o.remove(k);
            }
        }
        Ok(Self::load_config(dir, config, Some(seed))?.0)
    }

    /// Reads the folder's tensors into a model of `config`. With `new_head`,
    /// head tensors the folder lacks are initialised from that seed instead
    /// of being an error.
    fn load_config(dir: &Path, config: TransformerConfig, new_head: Option<u64>) -> Result<(Self, HashMap<String, String>)> {
        super::check_memory(&config, &dir.join(CONFIG_FILE))?;
        let w = Weights::open_dir(dir)?;
        let mut model = Transformer::zeros(config)?;
        let used = model.read_params(dir, &w, new_head)?;
        // A tied head may still be saved; it is the embedding, so it is not read.
        let tied_head = |n: &str| model.config.tied_head && n == "lm_head.weight";
        // A new classifier drops the folder's LM head or old classification head.
        let replaced = |n: &str| new_head.is_some() && (n == "lm_head.weight" || n.starts_with("score.") || n.starts_with("classifier."));
        refuse_unused(dir, &w, &used, |n| is_known_extra(n) || tied_head(n) || replaced(n))?;
        Ok((model, w.metadata()?))
    }

    /// Reads every tensor of `self.layout` from `w`, returning the names
    /// read. With `new_head`, head tensors the folder lacks are initialised
    /// from that seed instead of being an error.
    pub(super) fn read_params(&mut self, dir: &Path, w: &Weights, new_head: Option<u64>) -> Result<HashSet<String>> {
        let mut used = HashSet::new();
        let mut rng = new_head.map(<rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64);
        for e in self.layout.entries.clone() {
            let names = candidates(self.config.family, &e.name);
            let name = names.iter().find(|n| w.has(n)).unwrap_or(&names[0]).as_str();
            let is_head = ["score.", "classifier.", "bert.pooler."].iter().any(|p| e.name.starts_with(p));
            let fits = w.has(name) && w.shape(name).ok().as_deref() == Some(e.shape.as_slice());
            if let (Some(rng), true, false) = (rng.as_mut(), is_head, fits) {
                use rand_distr::Distribution;
                let dist = rand_distr::Normal::new(0.0f32, 0.02).expect("positive std");
                let p = &mut self.params[e.range()];
                if e.kind == crate::params::ParamKind::Bias {
                    p.fill(0.0);
                } else {
                    p.iter_mut().for_each(|x| *x = dist.sample(rng));
                }
                continue;
            }
            w.read_into(name, &e.shape, &mut self.params[e.range()]).map_err(|err| match err {
                ModelError::MissingTensor { path, .. } => ModelError::MissingTensor { path, name: e.name.clone() },
                other => other,
            })?;
            check_finite(dir, &e.name, &self.params[e.range()])?;
            used.insert(name.to_string());
        }
        Ok(used)
    }

    /// The config as a Hugging Face config.json object.
    pub fn hf_config(&self) -> serde_json::Value {
        crate::hf::to_hf(&self.config)
    }

    /// Writes config.json and model.safetensors into `dir` (atomically, file
    /// by file). A tied head is not written, as `save_pretrained` does.
    /// A quantized model writes its own format (see `crate::quant`).
    pub fn save(&self, dir: &Path, metadata: Option<HashMap<String, String>>) -> Result<()> {
        if self.quant.is_some() {
            return self.save_quantized(dir, metadata);
        }
        self.save_config(dir)?;
        self.save_weights(&dir.join(WEIGHTS_FILE), metadata)
    }

    /// Writes config.json into `dir`, atomically.
    pub fn save_config(&self, dir: &Path) -> Result<()> {
        save_config_json(dir, &self.hf_config())
    }

    /// Writes the weights as safetensors to `path`, atomically.
    pub fn save_weights(&self, path: &Path, metadata: Option<HashMap<String, String>>) -> Result<()> {
        self.require_f32("saving weights alone")?;
        save_layout(path, &self.layout, &self.params_in_family_layout(), metadata)
    }
}
