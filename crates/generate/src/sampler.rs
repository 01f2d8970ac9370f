//! Drawing the next token from the logits: greedy, temperature, top-k,
//! top-p and a repetition penalty.

use rand::{Rng, SeedableRng};

use crate::GenerateError;

/// How the next token is drawn from the logits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerConfig {
    /// 0 means greedy.
    pub temperature: f32,
    /// Keep the k most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p; 1 keeps all.
    pub top_p: f32,
    /// Above 1 it makes tokens already in the text less likely (CTRL's rule:
    /// positive logits are divided by it, negative ones multiplied); 1 disables.
    pub repetition_penalty: f32,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig { temperature: 1.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0 }
    }
}

/// Draws tokens from logits as a `SamplerConfig` says, with its own seeded
/// random numbers (ChaCha8), so a seed repeats a run.
pub struct Sampler {
    cfg: SamplerConfig,
    rng: rand_chacha::ChaCha8Rng,
    /// (prob, id) scratch, reused between calls.
    scratch: Vec<(f32, u32)>,
    /// Unnormalized softmax weights, one per id, reused between calls.
    weights: Vec<f32>,
    /// Sort keys of the filtered path (`order_key`), reused between calls.
    keys: Vec<u64>,
    /// Top-p's histogram of the weights: (count, mass) per bucket, reused.
    buckets: Vec<(usize, f64)>,
    /// Logits after the repetition penalty, reused between calls.
    penalized: Vec<f32>,
}

impl Sampler {
    /// A sampler for `cfg`; an out-of-range setting is an error.
    pub fn new(cfg: SamplerConfig, seed: u64) -> Result<Self, GenerateError> {
        if !(cfg.temperature >= 0.0 && cfg.temperature.is_finite()) {
            return Err(GenerateError::Sampler(format!("temperature must be >= 0, got {}", cfg.temperature)));
        }
        if !(cfg.top_p > 0.0 && cfg.top_p <= 1.0) {
            return Err(GenerateError::Sampler(format!("top-p must be in (0, 1], got {}", cfg.top_p)));
        }
        if !(cfg.repetition_penalty > 0.0 && cfg.repetition_penalty.is_finite()) {
            return Err(GenerateError::Sampler(format!("repetition penalty must be positive, got {}", cfg.repetition_penalty)));
        }
        Ok(Sampler {
            cfg,
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
            scratch: Vec::new(),
            weights: Vec::new(),
            keys: Vec::new(),
            buckets: Vec::new(),
            penalized: Vec::new(),
        })
    }

    /// Softmax of `logits / temperature`, restricted by top-k then top-p and
    /// renormalized, as (prob, id) sorted by descending probability.
    pub fn distribution(&mut self, logits: &[f32]) -> &[(f32, u32)] {
        let temp = self.cfg.temperature.max(1e-6);
        self.fill_weights(logits, temp);
        // Each (weight, id) as one integer that sorts by descending weight,
        // then ascending id (`order_key`): ties broken by id keep the order,
        // and thus sampling, deterministic, and integers sort several times
        // faster than pairs under a comparator (a 50k vocabulary is sorted
        // every token under top-p).
        self.keys.clear();
        self.keys.extend(self.weights.iter().enumerate().map(|(i, &w)| order_key(w, i as u32)));
        if self.cfg.top_k > 0 && self.cfg.top_k < self.keys.len() {
            // Partition out the k largest first, so only k entries get sorted.
            self.keys.select_nth_unstable(self.cfg.top_k - 1);
            self.keys.truncate(self.cfg.top_k);
        }
        // In f64, so the total does not depend on the order it is summed in.
        let total = self.keys.iter().map(|&k| key_weight(k) as f64).sum::<f64>() as f32;
        let n = self.keys.len();
        // Sort no more than top-p needs. One pass files the weights into
        // 4096 buckets by their top bits (exponent and three mantissa bits:
        // ascending buckets are descending weights) and finds the bucket
        // where the mass reaches top-p; the m entries up to it are selected
        // and sorted. Should rounding leave those m short of top-p, all are.
        let mut m = n;
        if self.cfg.top_p < 1.0 {
            self.buckets.clear();
            self.buckets.resize(4096, (0, 0.0));
            for &k in &self.keys {
                let b = &mut self.buckets[(k >> 52) as usize];
                b.0 += 1;
                b.1 += key_weight(k) as f64;
            }
            let target = self.cfg.top_p as f64 * total as f64;
            let (mut c, mut acc) = (0, 0.0);
            for &(cb, mb) in &self.buckets {
                c += cb;
                acc += mb;
                if acc >= target {
                    break;
                }
            }
            m = c.clamp(1, n);
        }
        loop {
            if m < n {
                self.keys.select_nth_unstable(m - 1);
            }
            self.keys[..m].sort_unstable();
            let reached: f32 = self.keys[..m].iter().map(|&k| key_weight(k) / total).sum();
            if m == n || reached >= self.cfg.top_p {
                break;
            }
            m = n;
        }
        self.scratch.clear();
        self.scratch.extend(self.keys[..m].iter().map(|&k| (key_weight(k), k as u32)));
        let mut cum = 0.0;
        let mut keep = m;
        for (i, p) in self.scratch.iter_mut().enumerate() {
            p.0 /= total;
            cum += p.0;
            if cum >= self.cfg.top_p && keep == m {
                keep = i + 1;
            }
        }
        self.scratch.truncate(keep);
        let kept: f32 = self.scratch.iter().map(|p| p.0).sum();
        self.scratch.iter_mut().for_each(|p| p.0 /= kept);
        &self.scratch
    }

    /// `weights` = exp((logits - max) / temp), vectorized (`exp_weights`).
    fn fill_weights(&mut self, logits: &[f32], temp: f32) {
        let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        self.weights.resize(logits.len(), 0.0);
        attn_kernels::simd::exp_weights(&mut self.weights, logits, max, temp);
    }

    /// Samples the next token; `history` (prompt and generated tokens) feeds
    /// the repetition penalty.
    pub fn sample_with_history(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        if self.cfg.repetition_penalty == 1.0 || history.is_empty() {
            return self.sample(logits);
        }
        let mut pen = std::mem::take(&mut self.penalized);
        pen.clear();
        pen.extend_from_slice(logits);
        let r = self.cfg.repetition_penalty;
        let mut seen = std::collections::HashSet::new();
        for &id in history {
            // Once per distinct token, however often it occurred.
            if seen.insert(id) {
                if let Some(l) = pen.get_mut(id as usize) {
                    *l = if *l > 0.0 { *l / r } else { *l * r };
                }
            }
        }
        let next = self.sample(&pen);
        self.penalized = pen;
        next
    }

    /// Draws one id. The draw compares `u * total` with the running sum of
    /// unnormalised weights, in f64, so no id gets mass it does not have
    /// (summing normalised f32 terms leaves ~1e-5 over 50k ids, which would
    /// all fall to the last id).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.cfg.temperature == 0.0 {
            return logits.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &l)| if l > best.1 { (i, l) } else { best }).0 as u32;
        }
        let u: f64 = self.rng.gen();
        if self.cfg.top_k == 0 && self.cfg.top_p >= 1.0 {
            // No filter needs the ranking: invert the CDF in id order, with no
            // sort of the vocabulary. The weights are computed once, in f32;
            // the total and the running sum add them in the same order in f64.
            self.fill_weights(logits, self.cfg.temperature);
            let total: f64 = self.weights.iter().map(|&w| w as f64).sum();
            return pick(self.weights.iter().enumerate().map(|(id, &w)| (w as f64, id as u32)), u * total);
        }
        let dist = self.distribution(logits);
        let total: f64 = dist.iter().map(|p| p.0 as f64).sum();
        pick(dist.iter().map(|&(p, id)| (p as f64, id)), u * total)
    }
}

/// The first id whose running weight passes `target`; past the end (only by
/// rounding), the last id with any weight.
fn pick(weights: impl Iterator<Item = (f64, u32)>, target: f64) -> u32 {
    let (mut cum, mut last) = (0.0f64, 0u32);
    for (w, id) in weights {
        if w > 0.0 {
            cum += w;
            last = id;
            if cum > target {
                return id;
            }
        }
    }
    last
}

/// A weight (>= 0) and its id as one integer: ascending keys are descending
/// weights, ties by ascending id. A non-negative float's bits order like
/// its value, so the inverted bits go in the high half.
fn order_key(w: f32, id: u32) -> u64 {
    ((!w.to_bits() as u64) << 32) | id as u64
}

/// The weight `order_key` packed.
fn key_weight(k: u64) -> f32 {
    f32::from_bits(!((k >> 32) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_p_keeps_smallest_set_reaching_p() {
        // probs 0.5, 0.3, 0.2 (logits are their logs)
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        let mut s = Sampler::new(SamplerConfig { top_p: 0.8, ..Default::default() }, 0).unwrap();
        let d = s.distribution(&logits).to_vec();
        assert_eq!(d.iter().map(|p| p.1).collect::<Vec<_>>(), vec![0, 1]);
        assert!((d[0].0 - 0.625).abs() < 1e-6);
        let mut s = Sampler::new(SamplerConfig { top_p: 0.79, ..Default::default() }, 0).unwrap();
        assert_eq!(s.distribution(&logits).len(), 2);
        let mut s = Sampler::new(SamplerConfig { top_p: 0.5, ..Default::default() }, 0).unwrap();
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
    fn the_tail_gets_only_its_own_mass() {
        // 50,257 ids: all equally likely but the last, whose probability is
        // e^-40 / 50,256 (about 4e-23). Even the largest draw u = 1 - 2^-53
        // must not land on it. (Normalising each term in f32 and summing left
        // up to ~1e-5 of the mass, depending on rounding, past the
        // second-to-last id.)
        let n = 50_257;
        let mut logits = vec![0.0f32; n];
        logits[n - 1] = -40.0;
        let weights: Vec<f64> = logits.iter().map(|&l| (l as f64).exp()).collect();
        let total: f64 = weights.iter().sum();
        let u_max = 1.0 - f64::EPSILON / 2.0;
        let id = pick(weights.iter().enumerate().map(|(i, &w)| (w, i as u32)), u_max * total);
        assert_eq!(id, n as u32 - 2);
        // Draws through the sampler (both paths) never produce the tail id.
        for top_k in [0, n] {
            let mut s = Sampler::new(SamplerConfig { top_k, ..Default::default() }, 3).unwrap();
            assert!((0..300).all(|_| s.sample(&logits) != n as u32 - 1));
        }
    }

    #[test]
    fn top_k_keeps_the_k_most_likely() {
        let logits = [1.0f32, 3.0, 2.0, 0.5];
        let mut s = Sampler::new(SamplerConfig { top_k: 2, ..Default::default() }, 0).unwrap();
        let d = s.distribution(&logits).to_vec();
        assert_eq!(d.iter().map(|p| p.1).collect::<Vec<_>>(), vec![1, 2]);
        // Renormalized softmax over the two: e^3 / (e^3 + e^2)
        assert!((d[0].0 - 1.0 / (1.0 + (-1.0f32).exp())).abs() < 1e-6);
        let mut rng_draws = Sampler::new(SamplerConfig { top_k: 2, ..Default::default() }, 5).unwrap();
        assert!((0..200).all(|_| matches!(rng_draws.sample(&logits), 1 | 2)));
    }

    #[test]
    fn unfiltered_and_filtered_paths_sample_the_softmax() {
        // top_k = 0 takes the unsorted fast path; top_k = 4 (all tokens) the
        // sorted one. Both must match softmax([0, 1, 2, 0.5] / 0.7).
        let logits = [0.0f32, 1.0, 2.0, 0.5];
        let z: Vec<f64> = logits.iter().map(|&l| (l as f64 / 0.7).exp()).collect();
        let want: Vec<f64> = z.iter().map(|x| x / z.iter().sum::<f64>()).collect();
        for top_k in [0, 4] {
            let mut s = Sampler::new(SamplerConfig { temperature: 0.7, top_k, ..Default::default() }, 42).unwrap();
            let mut counts = [0usize; 4];
            for _ in 0..40_000 {
                counts[s.sample(&logits) as usize] += 1;
            }
            for i in 0..4 {
                // 40k draws: standard error <= 0.0025, so 0.01 is 4 sigma.
                assert!((counts[i] as f64 / 40_000.0 - want[i]).abs() < 0.01, "top_k {top_k}: {counts:?} vs {want:?}");
            }
        }
    }

    #[test]
    fn top_p_sorting_only_what_it_needs_equals_sorting_everything() {
        // A reference in f64: the full sort by (prob desc, id asc), then the
        // shortest prefix whose mass reaches top-p. Peaked logits keep a few
        // dozen ids; flat ones most of the vocabulary, and their ties (the
        // repeated values) must order by id.
        use rand::Rng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let n = 5000;
        let peaked: Vec<f32> = (0..n).map(|i| if i % 97 == 0 { 8.0 + (i % 5) as f32 } else { rng.gen_range(-4.0..0.0) }).collect();
        let flat: Vec<f32> = (0..n).map(|i| (i % 40) as f32 * 0.01).collect();
        for (logits, top_p, top_k) in [(&peaked, 0.9, 0), (&flat, 0.95, 0), (&flat, 0.5, 3000), (&peaked, 1.0, 20)] {
            let mut s = Sampler::new(SamplerConfig { temperature: 0.8, top_p, top_k, ..Default::default() }, 0).unwrap();
            let got = s.distribution(logits).to_vec();
            let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
            let mut all: Vec<(f64, u32)> = logits.iter().enumerate().map(|(i, &l)| (((l as f64 - max) / 0.8f32 as f64).exp(), i as u32)).collect();
            all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            if top_k > 0 {
                all.truncate(top_k);
            }
            let total: f64 = all.iter().map(|p| p.0).sum();
            let mut cum = 0.0;
            let keep = all.iter().position(|p| {
                cum += p.0 / total;
                cum >= top_p as f64
            });
            all.truncate(keep.map_or(all.len(), |k| k + 1));
            let kept: f64 = all.iter().map(|p| p.0).sum();
            assert_eq!(got.len(), all.len(), "top_p {top_p} top_k {top_k}");
            for (g, w) in got.iter().zip(&all) {
                assert_eq!(g.1, w.1);
                assert!((g.0 as f64 - w.0 / kept).abs() < 1e-6, "{g:?} vs {w:?}");
            }
        }
    }

    #[test]
    fn temperature_sharpens_and_flattens() {
        let logits = [1.0f32, 2.0];
        let p_hi = |t: f32| Sampler::new(SamplerConfig { temperature: t, ..Default::default() }, 0).unwrap().distribution(&logits)[0].0;
        // softmax([1, 2] / T)[1] = 1 / (1 + e^(-1/T))
        for t in [0.5f32, 1.0, 2.0] {
            assert!((p_hi(t) - 1.0 / (1.0 + (-1.0 / t).exp())).abs() < 1e-6);
        }
        assert!(p_hi(0.5) > p_hi(1.0) && p_hi(1.0) > p_hi(2.0));
    }

    #[test]
    fn repetition_penalty_demotes_seen_tokens() {
        let logits = [2.0f32, 1.9, -1.0];
        let mut s = Sampler::new(SamplerConfig { temperature: 0.0, repetition_penalty: 1.5, ..Default::default() }, 0).unwrap();
        assert_eq!(s.sample_with_history(&logits, &[]), 0);
        // 2.0 / 1.5 = 1.33 < 1.9
        assert_eq!(s.sample_with_history(&logits, &[0, 0, 0]), 1);
    }

    #[test]
    fn invalid_settings_are_rejected() {
        assert!(Sampler::new(SamplerConfig { temperature: -1.0, ..Default::default() }, 0).is_err());
        assert!(Sampler::new(SamplerConfig { top_p: 0.0, ..Default::default() }, 0).is_err());
        assert!(Sampler::new(SamplerConfig { top_p: 1.5, ..Default::default() }, 0).is_err());
        assert!(Sampler::new(SamplerConfig { repetition_penalty: 0.0, ..Default::default() }, 0).is_err());
    }
}
