//! `attn bench train` for the translation presets and `attn bench translate`.

use std::path::Path;
use std::time::Instant;

use attn_generate::{search, SearchConfig};
use attn_model::{Seq2Seq, Seq2SeqBatch, Seq2SeqConfig};
use attn_train::optim::{DecayRule, Optimizer, OptimizerKind};
use rand::{Rng, SeedableRng};

use crate::bench::{median, merge, peak_rss_mb, report, Peaks};

/// Full steps (forward, backward, clip, AdamW) on B random pairs of T source
/// and T target tokens, label smoothing 0.1.
pub fn bench_train(preset: &str, b: usize, t: usize, steps: usize, vocab: usize, peak: Peaks) -> anyhow::Result<()> {
    let cfg = Seq2SeqConfig::preset(preset, vocab)?;
    anyhow::ensure!(t >= 2 && t <= cfg.n_ctx, "--seq-len must be in 2..={} for {preset}", cfg.n_ctx);
    anyhow::ensure!(b >= 1 && steps >= 1 && vocab > 2, "--batch-size, --steps must be positive and --vocab above 2");
    let mut model = Seq2Seq::new(cfg, 0)?;
    let mut opt =
        Optimizer::new(OptimizerKind::AdamW { beta1: 0.9, beta2: 0.98, eps: 1e-9 }, 0.0, DecayRule::Matrices, &model.layout, attn_train::optim::Dtype::F32);
    // Refused here if the activations would not fit, before any batch buffer.
    model.reserve(b, t, t)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    // Ids 2.. leave out pad (0) and EOS (1); every position is real, as in the peer.
    let mut ids = |n: usize| -> Vec<u32> { (0..n).map(|_| rng.gen_range(2..vocab as u32)).collect() };
    let batch = Seq2SeqBatch { b, s: t, t, src: ids(b * t), src_len: vec![t; b], tgt_in: ids(b * t), labels: ids(b * t) };
    let threads = rayon::current_num_threads();
    println!("bench train: {preset} ({:.1}M params), B={b} S=T={t}, {threads} threads, GEMM peak {:.1} GFLOP/s", model.num_params() as f64 / 1e6, peak.gemm);
    let mut times: Vec<[f64; 4]> = Vec::with_capacity(steps);
    for i in 0..steps + 2 {
        let t0 = Instant::now();
        model.zero_grad();
        model.forward(&batch, true, 0.1)?;
        let t1 = Instant::now();
        model.backward(1.0)?;
        let t2 = Instant::now();
        let (params, grads) = model.params_and_grads();
        opt.step(params, grads, 1e-4, 1.0);
        let t3 = Instant::now();
        if i >= 2 {
            times.push([(t3 - t0).as_secs_f64(), (t1 - t0).as_secs_f64(), (t2 - t1).as_secs_f64(), (t3 - t2).as_secs_f64()]);
        }
    }
    let col = |k: usize| median(times.iter().map(|r| r[k]).collect());
    let med = col(0);
    let gflops = model.train_flops(b, t, t) / med / 1e9;
    let out = serde_json::json!({
        "preset": preset, "batch_size": b, "seq_len": t, "vocab": vocab, "threads": threads, "steps": steps,
        "ms_per_step": med * 1e3, "tok_per_s": (2 * b * t) as f64 / med,
        "forward_ms": col(1) * 1e3, "backward_ms": col(2) * 1e3, "optimizer_ms": col(3) * 1e3,
        "gflops": gflops, "peak_rss_mb": peak_rss_mb(),
        "core_round_trip_ns": crate::bench_gemm::core_round_trip_ns(),
    });
    report(merge(out, peak.fields(gflops)));
    Ok(())
}

/// Encodes every source and decodes exactly `max_new` tokens each (a model
/// that stops early is timed on fewer tokens, reported as they are).
pub fn bench_translate(dir: &Path, data: &Path, beam: usize, max_new: usize, batch: usize, rounds: usize) -> anyhow::Result<()> {
    let (model, tok) = crate::translate::load_seq2seq(dir)?;
    let text = std::fs::read_to_string(data)?;
    let texts: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).map(|l| l.split('\t').next().unwrap_or(l)).collect();
    anyhow::ensure!(!texts.is_empty() && beam >= 1 && batch >= 1, "need sources in --data, --beam >= 1 and --batch-size >= 1");
    let sources = texts.iter().map(|t| crate::translate::source_ids(&model, tok.as_ref(), t)).collect::<anyhow::Result<Vec<_>>>()?;
    let cfg = SearchConfig { max_new_tokens: max_new, num_beams: beam, ..Default::default() };
    let run = || -> anyhow::Result<(f64, usize)> {
        let t0 = Instant::now();
        let mut generated = 0;
        for chunk in sources.chunks(batch) {
            let (mem, _) = crate::translate::encode_batch(&model, chunk)?;
            generated += search(&model, &mem, &cfg)?.iter().map(|h| h.ids.len()).sum::<usize>();
        }
        Ok((t0.elapsed().as_secs_f64(), generated))
    };
    run()?;
    let results = (0..rounds).map(|_| run()).collect::<anyhow::Result<Vec<_>>>()?;
    let generated = results[0].1;
    let secs = median(results.iter().map(|r| r.0).collect());
    report(serde_json::json!({
        "model": dir.display().to_string(), "sources": sources.len(), "beam": beam, "batch_size": batch,
        "max_new_tokens": max_new, "generated_tokens": generated, "threads": rayon::current_num_threads(),
        "seconds": secs, "tok_per_s": generated as f64 / secs, "peak_rss_mb": peak_rss_mb(),
        "core_round_trip_ns": crate::bench_gemm::core_round_trip_ns(),
    }));
    Ok(())
}
