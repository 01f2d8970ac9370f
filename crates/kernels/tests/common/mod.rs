//! Helpers shared by the kernel test files (each is its own crate, and not
//! every one uses every helper).
#![allow(dead_code)]

use rand::{Rng, SeedableRng};

/// `len` values uniform in [-scale, scale), reproducible from `seed`.
pub fn randn_scaled(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.gen_range(-1.0f32..1.0) * scale).collect()
}

pub fn randn(len: usize, seed: u64) -> Vec<f32> {
    randn_scaled(len, seed, 1.0)
}

pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Runs `f` inside a rayon pool of `n` threads.
pub fn with_threads(n: usize, f: impl FnOnce() + Send) {
    rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap().install(f);
}
