//! Cached decoding against the uncached forward pass.

use attn_model::{Gpt, GptConfig, KvCache, PositionEncoding};

fn argmax(x: &[f32]) -> u32 {
    x.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0 as u32
}

/// 200 greedy tokens: at every step the cached logits equal the logits of a
/// full uncached forward over the whole sequence within 1e-5, so the greedy
/// choices are identical. (The two paths sum in different orders: GEMM
/// blocks versus matrix-vector strips.)
#[test]
fn cached_decoding_matches_uncached_for_200_tokens() {
    for position in [PositionEncoding::Learned, PositionEncoding::Sinusoidal] {
        let cfg = GptConfig { vocab_size: 50, n_ctx: 256, n_layer: 2, n_head: 4, n_embd: 32, position, layer_norm_eps: 1e-5 };
        let mut model = Gpt::new(cfg, 11).unwrap();
        // Weights 3x the init so the logits are far from uniform (max |logit|
        // ~3.7) and attention is not flat. The gap between the two paths is f32
        // rounding amplified by the network's conditioning: measured 2e-7, 7e-7,
        // 5e-6 and 1e-3 at 1x, 2x, 4x and 8x; a wrong position or cache index
        // would show at 1x as differences the size of the logits.
        for x in model.params.iter_mut() {
            *x *= 3.0;
        }
        let mut cache = KvCache::new(&model);
        let mut ids = vec![3u32, 17, 42, 8, 8, 1];
        let mut logits = model.prefill(&mut cache, &ids).unwrap().to_vec();
        let mut worst = 0.0f32;
        for _ in 0..200 {
            let t = ids.len();
            model.forward(&ids, None, 1, t).unwrap();
            let full = &model.logits()[(t - 1) * 50..t * 50];
            worst = worst.max(full.iter().zip(&logits).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max));
            let next = argmax(&logits);
            assert_eq!(next, argmax(full), "greedy choice differs at position {t}");
            ids.push(next);
            logits = model.decode(&mut cache, next).unwrap().to_vec();
        }
        assert!(worst < 1e-5, "{position:?}: worst logit difference {worst:e}");
        assert_eq!(cache.len(), 206);
    }
}

#[test]
fn full_cache_and_foreign_model_are_errors() {
    let cfg = GptConfig { vocab_size: 10, n_ctx: 4, n_layer: 1, n_head: 1, n_embd: 8, position: PositionEncoding::Learned, layer_norm_eps: 1e-5 };
    let model = Gpt::new(cfg.clone(), 0).unwrap();
    let mut model2 = Gpt::new(GptConfig { n_embd: 16, ..cfg }, 0).unwrap();
    let mut cache = KvCache::new(&model);
    for t in 0..4 {
        model.decode(&mut cache, t).unwrap();
    }
    assert!(cache.is_full());
    assert!(model.decode(&mut cache, 1).unwrap_err().to_string().contains("context is 4 tokens"));
    assert!(model2.prefill(&mut cache, &[1]).is_err());
}
