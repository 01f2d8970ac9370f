//! Helpers shared by the kernel test files (each is its own crate, and not
//! every one uses every helper).
#![allow(dead_code, unused_imports)]

use rand::{Rng, SeedableRng};

/// `len` values uniform in [-scale, scale), reproducible from `seed`.
pub fn randn_scaled(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.gen_range(-1.0f32..1.0) * scale).collect()
}

pub fn randn(len: usize, seed: u64) -> Vec<f32> {
    randn_scaled(len, seed, 1.0)
}

pub use attn_kernels::gradcheck::max_diff;

/// Runs `f` inside a rayon pool of `n` threads.
pub fn with_threads(n: usize, f: impl FnOnce() + Send) {
    rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap().install(f);
}

/// Runs this test binary again at every lower SIMD level the CPU has
/// (`ATTN_SIMD`), so each compiled version of the loop kernels meets the
/// same checks against the naive loops; the levels above the CPU's are
/// named as not tested. Call it from one test named `every_simd_level`.
pub fn rerun_at_every_level() {
    use attn_kernels::simd::{self, Level};
    if std::env::var_os("ATTN_SIMD").is_some() {
        // A child run (or a level chosen from outside): say which level ran.
        eprintln!("kernels ran at {} in this process", simd::active().name());
        return;
    }
    let top = simd::active();
    eprintln!("kernels ran at {} in this process", top.name());
    for l in Level::ALL.into_iter().filter(|&l| l > simd::detected()) {
        eprintln!("NOT TESTED: the {} versions of the loop kernels (this CPU lacks it)", l.name());
    }
    let exe = std::env::current_exe().unwrap();
    for l in simd::levels().into_iter().filter(|&l| l < top) {
        let o = std::process::Command::new(&exe).env("ATTN_SIMD", l.name()).args(["--test-threads", "2", "--nocapture"]).output().unwrap();
        let out = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "at ATTN_SIMD={}:\n{out}", l.name());
        assert!(out.contains("test result: ok"), "at ATTN_SIMD={}: no test ran:\n{out}", l.name());
        assert!(out.contains(&format!("kernels ran at {} in this process", l.name())), "ATTN_SIMD={} did not take:\n{out}", l.name());
        eprintln!("kernels ran at {}: every test passed", l.name());
    }
}
