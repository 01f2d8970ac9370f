//! `generation_config.json`: the sampling defaults and end-of-sequence ids
//! that transformers saves beside a model.

use crate::GenerateError;

/// Sampling defaults and end-of-sequence ids from a model folder's
/// `generation_config.json` (transformers' file), where present.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenerationConfig {
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub max_new_tokens: Option<usize>,
    /// `do_sample: false` means greedy whatever the temperature.
    pub do_sample: Option<bool>,
    pub eos_token_ids: Vec<u32>,
}

impl GenerationConfig {
    /// Reads `dir/generation_config.json`; a missing file gives the empty config.
    pub fn from_dir(dir: &std::path::Path) -> Result<Self, GenerateError> {
        let path = dir.join("generation_config.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(GenerateError::Config(format!("{}: {e}", path.display()))),
        };
        let bad = |field: &str, v: &serde_json::Value| GenerateError::Config(format!("{}: field \"{field}\" has an unusable value {v}", path.display()));
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| GenerateError::Config(format!("{}: invalid JSON: {e}", path.display())))?;
        let num = |k: &str| -> Result<Option<f64>, GenerateError> {
            match v.get(k) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(x) => x.as_f64().filter(|f| f.is_finite() && *f >= 0.0).map(Some).ok_or_else(|| bad(k, x)),
            }
        };
        let eos_token_ids = match v.get("eos_token_id") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(x) => match (x.as_u64(), x.as_array()) {
                (Some(id), _) => vec![id as u32],
                (_, Some(list)) => list.iter().map(|i| i.as_u64().map(|i| i as u32).ok_or_else(|| bad("eos_token_id", x))).collect::<Result<_, _>>()?,
                _ => return Err(bad("eos_token_id", x)),
            },
        };
        Ok(GenerationConfig {
            temperature: num("temperature")?.map(|x| x as f32),
            top_k: num("top_k")?.map(|x| x as usize),
            top_p: num("top_p")?.map(|x| x as f32),
            repetition_penalty: num("repetition_penalty")?.map(|x| x as f32),
            max_new_tokens: num("max_new_tokens")?.map(|x| x as usize),
            do_sample: v.get("do_sample").and_then(serde_json::Value::as_bool),
            eos_token_ids,
        })
    }
}
