//! Continuous batching: a sequence decoded among others gives bit for bit
//! the logits it gives alone, whatever joins or leaves the batch.

use attn_model::{Transformer, TransformerConfig};

fn prompts() -> Vec<Vec<u32>> {
    // Different lengths, so the caches sit at different positions; one
    // longer than a prefill chunk's attention block.
    [3usize, 17, 1, 70].iter().enumerate().map(|(i, &n)| (0..n).map(|j| ((i * 7 + j * 13) % 60) as u32).collect()).collect()
}

fn check(cfg: TransformerConfig, threads: usize) {
    let model = Transformer::new(cfg, 7).unwrap();
    let steps = 12;
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        // Alone: prefill, then greedy decode one token at a time.
        let mut alone = Vec::new();
        for p in prompts() {
            let mut cache = model.new_cache(p.len() + steps).unwrap();
            let mut logits = model.prefill(&mut cache, &p).unwrap().to_vec();
            let mut rows = vec![logits.clone()];
            for _ in 0..steps {
                let next = argmax(&logits);
                logits = model.decode(&mut cache, next).unwrap().to_vec();
                rows.push(logits.clone());
            }
            alone.push(rows);
        }
        // Together: sequence i joins at step i and sequence 1 leaves early,
        // so the batch changes size and membership as it goes.
        let v = model.config.vocab_size;
        let ps = prompts();
        let mut caches: Vec<_> = ps.iter().map(|p| model.new_cache(p.len() + steps).unwrap()).collect();
        let mut last: Vec<Vec<f32>> = vec![Vec::new(); ps.len()];
        let mut done = vec![0usize; ps.len()];
        let mut scratch = model.new_batch_scratch(8).unwrap();
        for step in 0..steps + ps.len() {
            if step < ps.len() {
                last[step] = model.prefill(&mut caches[step], &ps[step]).unwrap().to_vec();
                assert_eq!(last[step], alone[step][0], "prefill of sequence {step}");
            }
            let active: Vec<usize> = (0..ps.len()).filter(|&i| i <= step && done[i] < steps && !(i == 1 && done[i] >= 5)).collect();
            if active.is_empty() {
                continue;
            }
            let tokens: Vec<u32> = active.iter().map(|&i| argmax(&last[i])).collect();
            let mut refs: Vec<&mut attn_model::Cache> = Vec::new();
            for (i, c) in caches.iter_mut().enumerate() {
                if active.contains(&i) {
                    refs.push(c);
                }
            }
            let out = model.decode_batch(&mut scratch, &mut refs, &tokens).unwrap();
            for (r, &i) in active.iter().enumerate() {
                last[i] = out[r * v..(r + 1) * v].to_vec();
                done[i] += 1;
                assert_eq!(last[i], alone[i][done[i]], "sequence {i}, token {} among {} sequences", done[i], active.len());
            }
        }
        assert_eq!(done, vec![steps, 5, steps, steps]);
    });
}

fn argmax(x: &[f32]) -> u32 {
    x.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &l)| if l > b.1 { (i, l) } else { b }).0 as u32
}

#[test]
fn gpt2_batched_decode_equals_alone() {
    for threads in [1, 2, 3] {
        check(TransformerConfig::gpt2(65, 128, 2, 4, 64), threads);
    }
}

#[test]
fn llama_gqa_batched_decode_equals_alone() {
    let mut cfg = TransformerConfig::llama_baby();
    cfg.n_ctx = 128;
    for threads in [1, 2, 3] {
        check(cfg.clone(), threads);
    }
}

#[test]
fn bad_batches_are_refused() {
    let model = Transformer::new(TransformerConfig::gpt2(65, 32, 1, 2, 16), 1).unwrap();
    let mut scratch = model.new_batch_scratch(2).unwrap();
    let (mut a, mut b, mut c) = (model.new_cache(2).unwrap(), model.new_cache(2).unwrap(), model.new_cache(2).unwrap());
    let err = model.decode_batch(&mut scratch, &mut [&mut a, &mut b, &mut c], &[1, 2, 3]).err().unwrap().to_string();
    assert!(err.contains("1 to 2"), "{err}");
    let err = model.decode_batch(&mut scratch, &mut [&mut a], &[1, 2]).err().unwrap().to_string();
    assert!(err.contains("2 tokens for 1 caches"), "{err}");
    let err = model.decode_batch(&mut scratch, &mut [&mut a], &[99]).err().unwrap().to_string();
    assert!(err.contains("out of range"), "{err}");
    model.decode_batch(&mut scratch, &mut [&mut a], &[1]).unwrap();
    model.decode_batch(&mut scratch, &mut [&mut a], &[1]).unwrap();
    let err = model.decode_batch(&mut scratch, &mut [&mut a], &[1]).err().unwrap().to_string();
    assert!(err.contains("full"), "{err}");
}
