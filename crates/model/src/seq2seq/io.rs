//! Marian, BART and mBART folders in both directions: config.json +
//! model.safetensors with the names transformers writes.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::{Seq2Seq, Seq2SeqConfig};
use crate::checkpoint::{check_finite, refuse_unused, save_config_json, save_layout, Weights, CONFIG_FILE, WEIGHTS_FILE};
use crate::error::{io_err, ModelError, Result};

/// Tensors a folder may carry that are copies of one attn reads, or fixed
/// tables it computes: the tied embeddings and head, and Marian's sinusoidal
/// position tables (written by transformers 4.x).
fn is_known_extra(name: &str, marian: bool) -> bool {
    matches!(name, "lm_head.weight" | "model.encoder.embed_tokens.weight" | "model.decoder.embed_tokens.weight")
        || (marian && name.ends_with("embed_positions.weight"))
}

/// Where else a tensor may be found: the shared embedding under one of its
/// tied names, when `model.shared.weight` itself was not written.
fn candidates(name: &str) -> Vec<&str> {
    match name {
        "model.shared.weight" => vec![name, "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight"],
        _ => vec![name],
    }
}

/// Whether a folder's config.json describes an encoder-decoder attn runs.
pub fn is_seq2seq_dir(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join(CONFIG_FILE))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("model_type").and_then(|m| m.as_str()).map(|m| super::config::SEQ2SEQ_MODEL_TYPES.contains(&m)))
        .unwrap_or(false)
}

impl Seq2Seq {
    /// Loads a Marian, BART or mBART folder (or an attn translation run).
    pub fn load(dir: &Path) -> Result<(Self, HashMap<String, String>)> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|err| ModelError::Json { path: path.clone(), err })?;
        let config = Seq2SeqConfig::from_hf(&v, &path)?;
        let marian = config.family == super::Seq2SeqFamily::Marian;
        let w = Weights::open_dir(dir)?;
        let mut model = Seq2Seq::zeros(config)?;
        let mut used = HashSet::new();
        for e in model.layout.entries.clone() {
            let names = candidates(&e.name);
            let Some(name) = names.iter().find(|n| w.has(n)) else {
                // transformers does not always write the logits bias (it is a zero buffer in new models).
                if e.name == "final_logits_bias" {
                    continue;
                }
                return Err(ModelError::MissingTensor { path: dir.join(WEIGHTS_FILE), name: e.name.clone() });
            };
            w.read_into(name, &e.shape, &mut model.params[e.range()])?;
            check_finite(dir, &e.name, &model.params[e.range()])?;
            used.insert(name.to_string());
        }
        refuse_unused(dir, &w, &used, |n| is_known_extra(n, marian))?;
        Ok((model, w.metadata()?))
    }

    /// Writes config.json and model.safetensors into `dir`, file by file atomically.
    pub fn save(&self, dir: &Path, metadata: Option<HashMap<String, String>>) -> Result<()> {
        self.save_config(dir)?;
        self.save_weights(&dir.join(WEIGHTS_FILE), metadata)
    }

    /// Writes config.json into `dir`, atomically.
    pub fn save_config(&self, dir: &Path) -> Result<()> {
        save_config_json(dir, &self.config.to_hf())
    }

    /// Writes the weights as safetensors to `path`, atomically.
    pub fn save_weights(&self, path: &Path, metadata: Option<HashMap<String, String>>) -> Result<()> {
        save_layout(path, &self.layout, &self.params, metadata)
    }
}
