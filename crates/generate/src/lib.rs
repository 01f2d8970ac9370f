//! Turning logits into tokens: a softmax distribution over the vocabulary,
//! shaped by temperature, top-k and top-p, then sampled; and the
//! one-token-at-a-time generation loop.
//!
//! This loop re-runs the model over the whole window for every new token; the
//! KV-cached decoder replaces it (issue 4) behind the same function.
//!
//! ```
//! use attn_generate::{Sampler, SamplerConfig};
//! let mut s = Sampler::new(SamplerConfig { temperature: 0.0, ..Default::default() }, 0).unwrap();
//! assert_eq!(s.sample(&[0.1, 2.0, -1.0]), 1); // temperature 0 is greedy
//! ```

use attn_model::Gpt;
use rand::{Rng, SeedableRng};

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("invalid sampler setting: {0}")]
    Sampler(String),
    #[error(transparent)]
    Model(#[from] attn_model::ModelError),
}

#[derive(Clone, Copy, Debug)]
pub struct SamplerConfig {
    /// 0 means greedy.
    pub temperature: f32,
    /// Keep the k most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p; 1 keeps all.
    pub top_p: f32,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig { temperature: 1.0, top_k: 0, top_p: 1.0 }
    }
}

pub struct Sampler {
    cfg: SamplerConfig,
    rng: rand_chacha::ChaCha8Rng,
    /// (prob, id) scratch, reused between calls.
    scratch: Vec<(f32, u32)>,
}

impl Sampler {
    pub fn new(cfg: SamplerConfig, seed: u64) -> Result<Self, GenerateError> {
        if !(cfg.temperature >= 0.0 && cfg.temperature.is_finite()) {
            return Err(GenerateError::Sampler(format!("temperature must be >= 0, got {}", cfg.temperature)));
        }
        if !(cfg.top_p > 0.0 && cfg.top_p <= 1.0) {
            return Err(GenerateError::Sampler(format!("top-p must be in (0, 1], got {}", cfg.top_p)));
        }
        Ok(Sampler { cfg, rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed), scratch: Vec::new() })
    }

    /// Softmax of `logits / temperature`, restricted by top-k then top-p and
    /// renormalized, as (prob, id) sorted by descending probability.
    pub fn distribution(&mut self, logits: &[f32]) -> &[(f32, u32)] {
        let temp = self.cfg.temperature.max(1e-6);
        let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        self.scratch.clear();
        self.scratch.extend(logits.iter().enumerate().map(|(i, &l)| (((l - max) / temp).exp(), i as u32)));
        // Ties broken by id so the order, and thus sampling, is deterministic.
        self.scratch.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        if self.cfg.top_k > 0 {
            self.scratch.truncate(self.cfg.top_k);
        }
        let total: f32 = self.scratch.iter().map(|p| p.0).sum();
        let mut cum = 0.0;
        let n = self.scratch.len();
        let mut keep = n;
        for (i, p) in self.scratch.iter_mut().enumerate() {
            p.0 /= total;
            cum += p.0;
            if cum >= self.cfg.top_p && keep == n {
                keep = i + 1;
            }
        }
        self.scratch.truncate(keep);
        let kept: f32 = self.scratch.iter().map(|p| p.0).sum();
        self.scratch.iter_mut().for_each(|p| p.0 /= kept);
        &self.scratch
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.cfg.temperature == 0.0 {
            return logits.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &l)| if l > best.1 { (i, l) } else { best }).0 as u32;
        }
        let u: f32 = self.rng.gen();
        let dist = self.distribution(logits).to_vec();
        let mut cum = 0.0;
        for &(p, id) in &dist {
            cum += p;
            if u < cum {
                return id;
            }
        }
        dist.last().map_or(0, |d| d.1)
    }
}

/// Appends `max_new` sampled tokens to `prompt`, calling `on_token` with each.
/// The model sees at most its context length of the most recent tokens.
pub fn generate(model: &mut Gpt, prompt: &[u32], max_new: usize, sampler: &mut Sampler, mut on_token: impl FnMut(u32)) -> Result<Vec<u32>, GenerateError> {
    let mut ids = prompt.to_vec();
    let v = model.config.vocab_size;
    for _ in 0..max_new {
        let start = ids.len().saturating_sub(model.config.n_ctx);
        let window = &ids[start..];
        let t = window.len();
        model.forward(window, None, 1, t)?;
        let next = sampler.sample(&model.logits()[(t - 1) * v..t * v]);
        ids.push(next);
        on_token(next);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_p_keeps_smallest_set_reaching_p() {
        // probs 0.5, 0.3, 0.2 (logits are their logs)
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        let mut s = Sampler::new(SamplerConfig { temperature: 1.0, top_k: 0, top_p: 0.8 }, 0).unwrap();
        let d = s.distribution(&logits).to_vec();
        assert_eq!(d.iter().map(|p| p.1).collect::<Vec<_>>(), vec![0, 1]);
        assert!((d[0].0 - 0.625).abs() < 1e-6);
        let mut s = Sampler::new(SamplerConfig { temperature: 1.0, top_k: 0, top_p: 0.79 }, 0).unwrap();
        assert_eq!(s.distribution(&logits).len(), 2);
        let mut s = Sampler::new(SamplerConfig { temperature: 1.0, top_k: 0, top_p: 0.5 }, 0).unwrap();
        assert_eq!(s.distribution(&logits).len(), 1);
    }

    #[test]
    fn low_temperature_matches_greedy_and_seed_reproduces() {
        let logits = [0.1f32, 0.3, 0.25, -2.0];
        let mut cold = Sampler::new(SamplerConfig { temperature: 1e-4, ..Default::default() }, 9).unwrap();
        assert!((0..50).all(|_| cold.sample(&logits) == 1));
        let draw = |seed| {
            let mut s = Sampler::new(SamplerConfig::default(), seed).unwrap();
            (0..64).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }

    #[test]
    fn invalid_settings_are_rejected() {
        assert!(Sampler::new(SamplerConfig { temperature: -1.0, ..Default::default() }, 0).is_err());
        assert!(Sampler::new(SamplerConfig { top_p: 0.0, ..Default::default() }, 0).is_err());
        assert!(Sampler::new(SamplerConfig { top_p: 1.5, ..Default::default() }, 0).is_err());
    }
}
