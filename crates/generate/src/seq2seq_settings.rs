//! What an encoder-decoder folder asks of decoding, read as transformers
//! reads it: `generation_config.json` where the folder has one, else the
//! legacy generation fields of `config.json` (transformers 4.x folders such
//! as opus-mt keep num_beams, max_length and bad_words_ids there).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::rules::Rules;
use crate::{EarlyStopping, GenerateError, SamplerConfig};

/// A folder's decoding defaults; command-line flags win over them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Seq2SeqSettings {
    /// `num_beams`.
    pub num_beams: Option<usize>,
    /// `length_penalty`.
    pub length_penalty: Option<f32>,
    /// `early_stopping`: true, false or "never".
    pub early_stopping: Option<EarlyStopping>,
    /// max_new_tokens, else max_length - 1 (the decoder's start token counts
    /// in max_length).
    pub max_new_tokens: Option<usize>,
    /// The token rules the file sets (repetition penalty, minimum length,
    /// n-gram bans, bad words, forced tokens).
    pub rules: Rules,
    /// `do_sample: true`: temperature, top_k and top_p with transformers'
    /// defaults (1, 50, 1) where the file has none.
    pub sample: Option<SamplerConfig>,
    /// The file these came from, if any.
    pub file: Option<PathBuf>,
    /// Settings the file asks for that attn's search does not apply, as
    /// "FILE: field = value", for the caller to print.
    pub ignored: Vec<String>,
}

impl Seq2SeqSettings {
    /// Reads `dir`'s settings for a model of `vocab` ids whose EOS is `eos`.
    /// A folder without any gives the defaults.
    pub fn from_dir(dir: &Path, vocab: usize, eos: u32) -> Result<Self, GenerateError> {
        let gen = dir.join("generation_config.json");
        let (path, own_file) = if gen.exists() { (gen, true) } else { (dir.join("config.json"), false) };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !own_file => return Ok(Self::default()),
            Err(e) => return Err(GenerateError::Config(format!("{}: {e}", path.display()))),
        };
        let v: Value = serde_json::from_str(&text).map_err(|e| GenerateError::Config(format!("{}: invalid JSON: {e}", path.display())))?;
        Reader { path, v, vocab }.settings(own_file, eos)
    }
}

struct Reader {
    path: PathBuf,
    v: Value,
    vocab: usize,
}

impl Reader {
    fn bad(&self, field: &str, want: &str) -> GenerateError {
        let got = self.v.get(field).map(Value::to_string).unwrap_or_default();
        GenerateError::Config(format!("{}: field \"{field}\" = {got} is not usable; it must be {want}", self.path.display()))
    }

    fn get(&self, field: &str) -> Option<&Value> {
        self.v.get(field).filter(|x| !x.is_null())
    }

    fn count(&self, field: &str) -> Result<Option<usize>, GenerateError> {
        self.get(field).map(|x| x.as_u64().map(|n| n as usize).ok_or_else(|| self.bad(field, "a whole number >= 0"))).transpose()
    }

    fn id(&self, field: &str) -> Result<Option<u32>, GenerateError> {
        match self.count(field)? {
            Some(t) if t >= self.vocab => Err(self.bad(field, &format!("an id below the vocabulary size {}", self.vocab))),
            t => Ok(t.map(|t| t as u32)),
        }
    }

    /// `x` as a list of ids below the vocabulary size, if it is one.
    fn id_list(&self, x: &Value) -> Option<Vec<u32>> {
        x.as_array()?.iter().map(|i| i.as_u64().filter(|&i| (i as usize) < self.vocab).map(|i| i as u32)).collect()
    }

    /// The field as a list of ids; absent or null is empty.
    fn ids(&self, field: &str) -> Result<Vec<u32>, GenerateError> {
        let Some(x) = self.get(field) else { return Ok(Vec::new()) };
        self.id_list(x).ok_or_else(|| self.bad(field, &format!("a list of ids below the vocabulary size {}", self.vocab)))
    }

    /// The field as true or false; absent or null is false.
    fn flag(&self, field: &str) -> Result<bool, GenerateError> {
        self.get(field).map(|x| x.as_bool().ok_or_else(|| self.bad(field, "true or false"))).transpose().map(|b| b.unwrap_or(false))
    }

    fn settings(&self, own_file: bool, eos: u32) -> Result<Seq2SeqSettings, GenerateError> {
        let num_beams = match self.count("num_beams")? {
            Some(0) => return Err(self.bad("num_beams", "at least 1")),
            n => n,
        };
        let length_penalty = match self.get("length_penalty") {
            None => None,
            Some(x) => Some(x.as_f64().filter(|f| f.is_finite()).ok_or_else(|| self.bad("length_penalty", "a finite number"))? as f32),
        };
        let early_stopping = match self.get("early_stopping") {
            None => None,
            Some(Value::Bool(true)) => Some(EarlyStopping::True),
            Some(Value::Bool(false)) => Some(EarlyStopping::Heuristic),
            Some(Value::String(s)) if s == "never" => Some(EarlyStopping::Never),
            Some(_) => return Err(self.bad("early_stopping", "true, false or \"never\"")),
        };
        let max_new_tokens = match (self.count("max_new_tokens")?, self.count("max_length")?) {
            (Some(0), _) => return Err(self.bad("max_new_tokens", "at least 1")),
            (Some(n), _) => Some(n),
            (None, Some(l)) if l < 2 => return Err(self.bad("max_length", "at least 2 (the start token and one generated)")),
            (None, l) => l.map(|l| l - 1),
        };
        let min_length = self.count("min_length")?.unwrap_or(0).max(1 + self.count("min_new_tokens")?.unwrap_or(0));
        let bad_words = match self.get("bad_words_ids") {
            None => Vec::new(),
            Some(x) => {
                let want = format!("a list of lists of ids below the vocabulary size {}", self.vocab);
                let lists = x.as_array().ok_or_else(|| self.bad("bad_words_ids", &want))?;
                let one = |l: &Value| self.id_list(l).filter(|ids| !ids.is_empty()).ok_or_else(|| self.bad("bad_words_ids", &want));
                lists.iter().map(one).collect::<Result<Vec<_>, _>>()?
            }
        };
        let repetition_penalty = match self.get("repetition_penalty") {
            None => None,
            Some(x) => match x.as_f64().filter(|p| p.is_finite() && *p > 0.0) {
                Some(1.0) => None,
                Some(p) => Some(p as f32),
                None => return Err(self.bad("repetition_penalty", "a number above 0")),
            },
        };
        let sample = if self.flag("do_sample")? { Some(self.sampler()?) } else { None };
        let rules = Rules {
            repetition_penalty,
            min_length: if min_length > 1 { min_length } else { 0 },
            no_repeat_ngram_size: self.count("no_repeat_ngram_size")?.unwrap_or(0),
            encoder_no_repeat_ngram_size: self.count("encoder_no_repeat_ngram_size")?.unwrap_or(0),
            bad_words,
            forced_bos_token_id: self.id("forced_bos_token_id")?,
            // generation_config.json decides alone (a missing field forces no
            // EOS); config.json's field is the model config's already.
            forced_eos_token_id: if own_file { Some(self.id("forced_eos_token_id")?) } else { None },
            decoder_start_token_id: if own_file { self.id("decoder_start_token_id")? } else { None },
            suppress_tokens: self.ids("suppress_tokens")?,
            begin_suppress_tokens: self.ids("begin_suppress_tokens")?,
            renormalize: self.flag("renormalize_logits")?,
        };
        let file = Some(self.path.clone());
        Ok(Seq2SeqSettings { num_beams, length_penalty, early_stopping, max_new_tokens, rules, sample, file, ignored: self.ignored(eos) })
    }

    /// The sampler `do_sample` asks for, with transformers' defaults; the
    /// repetition penalty is the rules' (applied before sampling).
    fn sampler(&self) -> Result<SamplerConfig, GenerateError> {
        let float = |field: &str, default: f64, ok: fn(f64) -> bool, want: &str| match self.get(field) {
            None => Ok(default as f32),
            Some(x) => x.as_f64().filter(|&f| ok(f)).map(|f| f as f32).ok_or_else(|| self.bad(field, want)),
        };
        Ok(SamplerConfig {
            temperature: float("temperature", 1.0, |t| t > 0.0 && t.is_finite(), "a number above 0 when do_sample is true")?,
            top_k: self.count("top_k")?.unwrap_or(50),
            top_p: float("top_p", 1.0, |p| p > 0.0 && p <= 1.0, "a number in (0, 1]")?,
            repetition_penalty: 1.0,
        })
    }

    /// Fields set away from their no-op value that the search does not apply.
    fn ignored(&self, eos: u32) -> Vec<String> {
        // do_sample is applied (with one beam: `Decoding` names beam sampling).
        let noops = [("num_beam_groups", 1.0), ("diversity_penalty", 0.0), ("num_return_sequences", 1.0)];
        // bad_words_ids is applied here.
        let mut out = crate::config::unapplied(&self.path, &self.v, &["bad_words_ids", "suppress_tokens", "begin_suppress_tokens"], &noops);
        // More end-of-sequence ids than the model's one.
        if let Some(x) = self.get("eos_token_id") {
            let same = x.as_u64() == Some(eos as u64) || x.as_array().is_some_and(|a| a.len() == 1 && a[0].as_u64() == Some(eos as u64));
            if !same {
                out.push(format!("{}: eos_token_id = {x}", self.path.display()));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(file: &str, json: &str) -> Result<Seq2SeqSettings, GenerateError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(file), json).unwrap();
        Seq2SeqSettings::from_dir(dir.path(), 100, 2)
    }

    #[test]
    fn reads_settings_and_names_what_it_ignores() {
        let s = read(
            "generation_config.json",
            r#"{"num_beams": 4, "max_length": 30, "min_new_tokens": 5, "min_length": 3,
            "early_stopping": "never", "bad_words_ids": [[7], [8, 9]], "do_sample": true, "repetition_penalty": 1.0, "eos_token_id": [2, 5]}"#,
        )
        .unwrap();
        assert_eq!((s.num_beams, s.max_new_tokens, s.early_stopping), (Some(4), Some(29), Some(EarlyStopping::Never)));
        assert_eq!(s.rules.min_length, 6);
        assert_eq!(s.rules.bad_words, vec![vec![7], vec![8, 9]]);
        // A generation_config.json without forced_eos_token_id forces none.
        assert_eq!(s.rules.forced_eos_token_id, Some(None));
        assert_eq!(s.ignored.len(), 1, "{:?}", s.ignored);
        assert!(s.ignored[0].ends_with("eos_token_id = [2,5]"), "{:?}", s.ignored);
        // do_sample with transformers' defaults where the file has none.
        let sampler = s.sample.unwrap();
        assert_eq!((sampler.temperature, sampler.top_k, sampler.top_p), (1.0, 50, 1.0));
        let s = read("generation_config.json", r#"{"do_sample": true, "temperature": 0.5, "top_k": 0, "top_p": 0.9}"#).unwrap();
        let sampler = s.sample.unwrap();
        assert_eq!((sampler.temperature, sampler.top_k, sampler.top_p), (0.5, 0, 0.9));
        // Without do_sample the sampling fields change nothing.
        assert_eq!(read("generation_config.json", r#"{"do_sample": false, "temperature": 0.5}"#).unwrap().sample, None);
        // config.json: the model config's forced EOS stands.
        let s = read("config.json", r#"{"num_beams": 2, "forced_eos_token_id": 2, "max_new_tokens": 9}"#).unwrap();
        assert_eq!((s.num_beams, s.max_new_tokens, s.rules.forced_eos_token_id), (Some(2), Some(9), None));
        assert_eq!(Seq2SeqSettings::from_dir(tempfile::tempdir().unwrap().path(), 100, 2).unwrap(), Seq2SeqSettings::default());
    }

    #[test]
    fn unusable_values_name_the_file_and_field() {
        for (json, field) in [
            (r#"{"num_beams": 0}"#, "num_beams"),
            (r#"{"bad_words_ids": [[100]]}"#, "bad_words_ids"),
            (r#"{"bad_words_ids": [5]}"#, "bad_words_ids"),
            (r#"{"max_length": 1}"#, "max_length"),
            (r#"{"early_stopping": "sometimes"}"#, "early_stopping"),
            (r#"{"forced_bos_token_id": -1}"#, "forced_bos_token_id"),
            (r#"{"length_penalty": "long"}"#, "length_penalty"),
            (r#"{"do_sample": "yes"}"#, "do_sample"),
            (r#"{"suppress_tokens": [100]}"#, "suppress_tokens"),
            (r#"{"begin_suppress_tokens": 3}"#, "begin_suppress_tokens"),
            (r#"{"do_sample": true, "temperature": 0}"#, "temperature"),
            (r#"{"do_sample": true, "top_p": 1.5}"#, "top_p"),
            (r#"{"do_sample": true, "top_k": -1}"#, "top_k"),
        ] {
            let e = read("generation_config.json", json).unwrap_err().to_string();
            assert!(e.contains("generation_config.json") && e.contains(&format!("\"{field}\"")), "{json}: {e}");
        }
    }
}
