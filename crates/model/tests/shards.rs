//! Data-parallel shards (`Transformer::train_step` with `set_data_shards`):
//! the same loss and gradient as the whole batch in one pass, up to the
//! rounding of a sum split in parts; bits that depend on the shard count
//! alone, not on the thread count; labels counted over the whole batch.

use attn_model::{Transformer, TransformerConfig};
use rand::{Rng, SeedableRng};

const IGNORE: u32 = u32::MAX;

fn batch(b: usize, t: usize, v: u32, seed: u64) -> (Vec<u32>, Vec<u32>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let x = (0..b * t).map(|_| rng.gen_range(0..v)).collect();
    let y = (0..b * t).map(|_| rng.gen_range(0..v)).collect();
    (x, y)
}

/// (loss, gradient) of one step on a fresh copy of `cfg` with `shards`.
fn step(cfg: &TransformerConfig, shards: usize, x: &[u32], y: &[u32], b: usize, t: usize, scale: f32) -> (f32, Vec<f32>) {
    let mut m = Transformer::new(cfg.clone(), 7).unwrap();
    m.set_data_shards(shards);
    m.zero_grad();
    let loss = m.train_step(x, y, b, t, scale).unwrap();
    (loss, m.grads().to_vec())
}

fn max_rel(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    attn_kernels::gradcheck::max_diff(a, b) / scale
}

#[test]
fn shards_match_the_whole_batch() {
    let (b, t) = (5, 64);
    for cfg in [TransformerConfig::baby(), TransformerConfig::llama_baby()] {
        let (x, mut y) = batch(b, t, cfg.vocab_size as u32, 1);
        // Unlabelled positions, more in the first sequences than the last:
        // the mean must be over the whole batch's labels, not each shard's.
        for (i, l) in y.iter_mut().enumerate() {
            if i % t < 40 - 6 * (i / t) {
                *l = IGNORE;
            }
        }
        let (loss1, g1) = step(&cfg, 1, &x, &y, b, t, 0.5);
        for s in [2, 3, 5] {
            let (loss, g) = step(&cfg, s, &x, &y, b, t, 0.5);
            assert!((loss - loss1).abs() <= 1e-5 * loss1.abs(), "{s} shards: loss {loss} against {loss1}");
            let err = max_rel(&g, &g1);
            assert!(err < 1e-4, "{s} shards: gradient off by {err} of its largest entry");
            assert!(g.iter().all(|x| x.is_finite()));
        }
    }
}

#[test]
fn the_thread_count_changes_no_bit() {
    let cfg = TransformerConfig::baby();
    let (b, t) = (4, 64);
    let (x, y) = batch(b, t, cfg.vocab_size as u32, 2);
    // Started inside pools of 1 and 2 threads (which set the threads of the
    // zeroing), and from outside any pool, as `attn train` starts them.
    let inside = |threads: usize| rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| step(&cfg, 2, &x, &y, b, t, 1.0));
    let (l0, g0) = step(&cfg, 2, &x, &y, b, t, 1.0);
    for (threads, (l, g)) in [(1, inside(1)), (2, inside(2))] {
        assert_eq!(l.to_bits(), l0.to_bits(), "2 shards started in a pool of {threads}: another loss");
        assert!(g.iter().zip(&g0).all(|(a, b)| a.to_bits() == b.to_bits()), "2 shards started in a pool of {threads}: another gradient");
    }
}

#[test]
fn accumulated_micro_batches_add_up() {
    // Two calls with scale 1/2 and no zeroing between them: the mean of
    // the two micro-batches' gradients, as `--grad-accum 2` uses it.
    let cfg = TransformerConfig::baby();
    let (b, t) = (4, 64);
    let (x, y) = batch(b, t, cfg.vocab_size as u32, 3);
    let (x2, y2) = batch(b, t, cfg.vocab_size as u32, 4);
    let grads = |shards: usize| {
        let mut m = Transformer::new(cfg.clone(), 7).unwrap();
        m.set_data_shards(shards);
        m.zero_grad();
        m.train_step(&x, &y, b, t, 0.5).unwrap();
        m.train_step(&x2, &y2, b, t, 0.5).unwrap();
        m.grads().to_vec()
    };
    let err = max_rel(&grads(2), &grads(1));
    assert!(err < 1e-4, "accumulated over 2 shards: off by {err}");
}

#[test]
fn the_default_count_follows_the_threads_within_the_memory_bound() {
    let baby = TransformerConfig::baby();
    assert_eq!(baby.auto_data_shards(12, 2), 2);
    assert_eq!(baby.auto_data_shards(12, 64), 12, "no more shards than sequences");
    assert_eq!(baby.auto_data_shards(1, 8), 1);
    // ~13M parameters: 53 MB a gradient copy, so at most 1 + 5 shards.
    let mid = TransformerConfig::gpt2(4096, 256, 6, 8, 384);
    let p = mid.param_count().unwrap();
    assert!(p > 8 << 20 && p <= 16 << 20, "{p}");
    let s = mid.auto_data_shards(64, 64);
    assert!(s > 1 && (s as u128 - 1) * 4 * p <= 256 << 20, "{s} shards of {p} parameters");
    assert_eq!(TransformerConfig::preset("gpt2-124m").unwrap().auto_data_shards(12, 2), 1);
}

#[test]
fn a_batch_past_memory_is_refused_with_a_fix_that_fits() {
    let mut m = Transformer::new(TransformerConfig::baby(), 7).unwrap();
    m.set_data_shards(2);
    // ~280 TB of activations: more than any machine here, sharded or not,
    // so the error must not suggest one shard as the way out.
    let err = m.reserve_step(100_000_000, 64).unwrap_err().to_string();
    assert!(err.contains("2 data-parallel shards") && err.contains("lower --batch-size"), "{err}");
    assert!(!err.contains("--data-shards 1"), "{err}");
}
