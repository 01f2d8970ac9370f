//! `generation_config.json`: the sampling defaults and end-of-sequence ids
//! that transformers saves beside a model.

use crate::GenerateError;

/// Sampling defaults and end-of-sequence ids from a model folder's
/// `generation_config.json` (transformers' file), where present.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GenerationConfig {
    /// `temperature`.
    pub temperature: Option<f32>,
    /// `top_k`.
    pub top_k: Option<usize>,
    /// `top_p`.
    pub top_p: Option<f32>,
    /// `repetition_penalty`.
    pub repetition_penalty: Option<f32>,
    /// `max_new_tokens`.
    pub max_new_tokens: Option<usize>,
    /// `do_sample: false` means greedy whatever the temperature.
    pub do_sample: Option<bool>,
    /// `eos_token_id`, a number or a list.
    pub eos_token_ids: Vec<u32>,
    /// Settings the file asks for that attn's sampler does not apply, as
    /// "FILE: field = value", for the caller to print.
    pub ignored: Vec<String>,
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
            ignored: unapplied(
                &path,
                &v,
                &[],
                &[
                    ("num_beams", 1.0),
                    ("num_beam_groups", 1.0),
                    ("diversity_penalty", 0.0),
                    ("no_repeat_ngram_size", 0.0),
                    ("min_new_tokens", 0.0),
                    ("typical_p", 1.0),
                    ("epsilon_cutoff", 0.0),
                    ("eta_cutoff", 0.0),
                    ("min_p", 0.0),
                    ("guidance_scale", 1.0),
                ],
            ),
        })
    }
}

/// Fields of the generation settings `v` (read from `path`) that are set
/// away from their no-op value (`noops`, or for the list and object fields
/// below but those in `applied`, anything non-empty): what a caller that does
/// not apply them should name rather than drop silently.
pub(crate) fn unapplied(path: &std::path::Path, v: &serde_json::Value, applied: &[&str], noops: &[(&str, f64)]) -> Vec<String> {
    use serde_json::Value;
    let mut out = Vec::new();
    let mut note = |field: &str, x: &Value| out.push(format!("{}: {field} = {x}", path.display()));
    for &(field, noop) in noops {
        match v.get(field) {
            None | Some(Value::Null) => {}
            Some(x) if x.as_f64() == Some(noop) || x.as_bool() == Some(noop != 0.0) => {}
            Some(x) => note(field, x),
        }
    }
    let lists =
        ["bad_words_ids", "suppress_tokens", "begin_suppress_tokens", "sequence_bias", "exponential_decay_length_penalty", "force_words_ids", "constraints"];
    for field in lists.into_iter().filter(|f| !applied.contains(f)) {
        match v.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::Array(a)) if a.is_empty() => {}
            Some(Value::Object(o)) if o.is_empty() => {}
            Some(x) => note(field, x),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_the_sampler_does_not_apply_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let json = r#"{"temperature": 0.7, "do_sample": true, "num_beams": 4, "no_repeat_ngram_size": 3, "bad_words_ids": [[1]],
            "suppress_tokens": [], "typical_p": 1.0, "min_p": null}"#;
        std::fs::write(dir.path().join("generation_config.json"), json).unwrap();
        let g = GenerationConfig::from_dir(dir.path()).unwrap();
        assert_eq!(g.temperature, Some(0.7));
        let fields: Vec<&str> = g.ignored.iter().map(|s| s.rsplit(": ").next().unwrap()).collect();
        assert_eq!(fields, ["num_beams = 4", "no_repeat_ngram_size = 3", "bad_words_ids = [[1]]"]);
    }
}
