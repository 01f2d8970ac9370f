//! PEFT folders: `adapter_config.json` and `adapter_model.safetensors`
//! written and read, and models loaded with an adapter merged in.

use std::collections::HashMap;
use std::path::Path;

use super::{all_modules, is_head, Lora, LoraConfig, ADAPTER_CONFIG, ADAPTER_WEIGHTS};
use crate::checkpoint::{check_finite, save_layout, TensorFile};
use crate::config::{Family, TransformerConfig};
use crate::error::{io_err, ModelError, Result};
use crate::params::ParamKind;

impl Lora {
    /// Writes `adapter_config.json` (PEFT's fields) and `adapter_model.safetensors` into `dir`.
    pub fn save(&self, dir: &Path, model: &TransformerConfig, base: &str, metadata: Option<HashMap<String, String>>) -> Result<()> {
        self.save_config(dir, model, base)?;
        self.save_weights(&dir.join(ADAPTER_WEIGHTS), metadata)
    }

    /// Writes `adapter_config.json` for PEFT, naming `base` as the base model.
    pub fn save_config(&self, dir: &Path, model: &TransformerConfig, base: &str) -> Result<()> {
        let gpt2 = model.family == Family::Gpt2;
        let mut targets: Vec<String> = self
            .adapters
            .iter()
            .map(|a| if gpt2 { a.module.splitn(4, '.').nth(3).unwrap_or(&a.module).to_string() } else { a.module.rsplit('.').next().unwrap_or("").to_string() })
            .collect();
        targets.sort();
        targets.dedup();
        let cfg = serde_json::json!({
            "peft_type": "LORA",
            "task_type": if self.head.is_empty() { "CAUSAL_LM" } else { "SEQ_CLS" },
            "base_model_name_or_path": base,
            "r": self.config.r,
            "lora_alpha": self.config.alpha,
            "lora_dropout": self.config.dropout,
            "target_modules": targets,
            "fan_in_fan_out": gpt2,
            "bias": "none",
            "use_rslora": self.config.rslora,
            "use_dora": false,
            "modules_to_save": if self.head.is_empty() { serde_json::Value::Null } else { serde_json::json!(["classifier", "score"]) },
            "init_lora_weights": true,
            "inference_mode": true,
            "rank_pattern": {},
            "alpha_pattern": {},
        });
        let path = dir.join(ADAPTER_CONFIG);
        crate::checkpoint::write_atomic(&path, serde_json::to_string_pretty(&cfg).expect("serializes").as_bytes()).map_err(io_err(&path))
    }

    /// Writes the adapters' tensors under PEFT's names.
    pub fn save_weights(&self, path: &Path, metadata: Option<HashMap<String, String>>) -> Result<()> {
        save_layout(path, &self.layout, &self.params, metadata)
    }

    /// Loads a PEFT LoRA folder for a model of config `model`. Anything it
    /// cannot apply exactly (DoRA, bias training, per-module alphas, saved
    /// full modules) is refused by field name.
    pub fn load(dir: &Path, model: &TransformerConfig) -> Result<(Self, HashMap<String, String>)> {
        let path = dir.join(ADAPTER_CONFIG);
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|err| ModelError::Json { path: path.clone(), err })?;
        let bad = |field: &str, msg: String| ModelError::Field { path: path.clone(), field: field.into(), msg };
        if v["peft_type"].as_str().is_some_and(|t| t != "LORA") {
            return Err(bad("peft_type", format!("{}: only LORA adapters are supported", v["peft_type"])));
        }
        if v["use_dora"].as_bool() == Some(true) {
            return Err(bad("use_dora", "DoRA adapters are not supported; retrain with use_dora=false".into()));
        }
        if v["bias"].as_str().is_some_and(|b| b != "none") {
            return Err(bad("bias", format!("{}: adapters that train biases are not supported", v["bias"])));
        }
        // Full copies of modules: only a classifier's head (PEFT's default
        // for sequence classification) can be applied.
        if let Some(m) = v["modules_to_save"].as_array() {
            if let Some(other) = m.iter().filter_map(|x| x.as_str()).find(|x| !["classifier", "score"].contains(x)) {
                return Err(bad("modules_to_save", format!("{other:?}: only a classifier's head (classifier, score) can be saved in full")));
            }
        }
        if v["alpha_pattern"].as_object().is_some_and(|m| !m.is_empty()) {
            return Err(bad("alpha_pattern", "per-module alphas are not supported".into()));
        }
        let r = v["r"].as_u64().ok_or_else(|| bad("r", "missing or not a positive integer".into()))? as usize;
        let alpha = v["lora_alpha"].as_f64().ok_or_else(|| bad("lora_alpha", "missing or not a number".into()))? as f32;
        let config = LoraConfig {
            r,
            alpha,
            dropout: v["lora_dropout"].as_f64().unwrap_or(0.0) as f32,
            targets: Vec::new(),
            rslora: v["use_rslora"].as_bool().unwrap_or(false),
        };
        let w = TensorFile::open(&dir.join(ADAPTER_WEIGHTS))?;
        let known = all_modules(model)?;
        let mut specs = Vec::new();
        let mut heads = Vec::new();
        for name in w.names() {
            if let Some(h) = name.strip_prefix("base_model.model.").filter(|n| is_head(n)) {
                heads.push((h.to_string(), w.shape(name)?));
                continue;
            }
            let Some(module) = name.strip_prefix("base_model.model.").and_then(|n| n.strip_suffix(".lora_A.weight")) else {
                if name.ends_with(".lora_B.weight") {
                    continue;
                }
                return Err(ModelError::Field {
                    path: dir.join(ADAPTER_WEIGHTS),
                    field: name.to_string(),
                    msg: "is not a LoRA A or B matrix (expected base_model.model.<module>.lora_A.weight)".into(),
                });
            };
            let Some((layer, site, cols, d_in)) = known.get(module) else {
                return Err(ModelError::Field {
                    path: dir.join(ADAPTER_WEIGHTS),
                    field: name.to_string(),
                    msg: format!("adapts {module}, which is not a projection of this {} model (is it the right base model?)", model.family.model_type()),
                });
            };
            let shape = w.shape(name)?;
            let rank = shape.first().copied().unwrap_or(0);
            specs.push((*layer, *site, cols.clone(), *d_in, module.to_string(), rank));
        }
        if specs.is_empty() {
            return Err(bad("target_modules", format!("{} holds no LoRA matrices", dir.join(ADAPTER_WEIGHTS).display())));
        }
        let mut lora = Self::build(config, specs);
        heads.sort();
        for (name, shape) in heads {
            let r = lora.layout.push(format!("base_model.model.{name}"), shape, if name.ends_with(".bias") { ParamKind::Bias } else { ParamKind::Matrix });
            lora.layout.finish();
            lora.params.resize(lora.layout.total(), 0.0);
            lora.head.push((name, r));
        }
        for e in lora.layout.entries.clone() {
            w.read_into(&e.name, &e.shape, &mut lora.params[e.range()])?;
            check_finite(dir, &e.name, &lora.params[e.range()])?;
        }
        let meta = w.metadata()?;
        Ok((lora, meta))
    }
}

/// Whether `dir` holds a PEFT adapter (and not a full model: a LoRA
/// classifier run keeps its config.json, for the labels, beside it).
pub fn is_adapter_dir(dir: &Path) -> bool {
    dir.join(ADAPTER_CONFIG).exists() && !dir.join(crate::checkpoint::WEIGHTS_FILE).exists()
}

/// The frozen base of an adapter folder, built as the adapter needs it: the
/// folder `base_model_name_or_path` names, as a classifier with the labels of
/// the adapter folder's config.json when it has one (a LoRA classifier run).
pub fn load_base(adapter_dir: &Path) -> Result<crate::Transformer> {
    let base = adapter_base(adapter_dir)?;
    let own = adapter_dir.join(crate::checkpoint::CONFIG_FILE);
    if own.exists() {
        let labels = crate::config_from_dir(adapter_dir)?.labels;
        if !labels.is_empty() {
            return crate::Transformer::load_as_classifier(Path::new(&base), labels, 0);
        }
    }
    Ok(crate::Transformer::load(Path::new(&base))?.0)
}

/// A model with an adapter merged in: `dir` is a base folder and `adapter`
/// a PEFT folder for it, or `dir` is itself an adapter folder (an attn LoRA
/// run) whose config names its base.
pub fn load_merged(dir: &Path, adapter: Option<&Path>) -> Result<crate::Transformer> {
    let (mut model, adapter) = match adapter {
        Some(a) => (crate::Transformer::load(dir)?.0, a),
        None if is_adapter_dir(dir) => (load_base(dir)?, dir),
        // A bf16 or int8 folder is widened to f32, which every path runs.
        None => return Ok(crate::Transformer::load_as(dir, Some(crate::quant::WeightDtype::F32))?.0),
    };
    let (lora, _) = Lora::load(adapter, &model.config)?;
    lora.merge_into(&mut model);
    Ok(model)
}

/// The base model an adapter folder names (`base_model_name_or_path`).
pub fn adapter_base(dir: &Path) -> Result<String> {
    let path = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|err| ModelError::Json { path: path.clone(), err })?;
    v["base_model_name_or_path"].as_str().map(str::to_string).ok_or_else(|| ModelError::Field {
        path,
        field: "base_model_name_or_path".into(),
        msg: "is missing; give the base model folder with --model and this folder with --adapter".into(),
    })
}
