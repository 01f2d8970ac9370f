//! `attn bench generate` and `attn bench decode`: decoding at batch 1
//! against the read-bandwidth bound, and batched decoding steps.

use std::time::Instant;

use rand::{Rng, SeedableRng};

use crate::bench::{median, peak_rss_mb, report};

/// The probe's buffer: 512 MB, about what decoding gpt2-124m reads a
/// token, on huge pages where the kernel gives them (as the weights are).
fn probe_buffer() -> Vec<f32> {
    let mut buf = attn_kernels::pages::zeroed::<f32>(128 << 20);
    buf.fill(1.0);
    buf
}

/// One parallel sum over `buf`, in GB/s: the rate decoding reads weights
/// at, at best.
fn probe_once(buf: &[f32]) -> f64 {
    use rayon::prelude::*;
    let t0 = Instant::now();
    // 32 independent partial sums: a short chain of adds measures the
    // adder, not memory. At the binary's baseline (SSE2, 4 lanes) 8 sums
    // were two chains, one 3-cycle add per 32 bytes each: ~40 GB/s a core,
    // near what memory gives in this machine's fast minutes; 32 are eight
    // chains, four times that.
    let s: f32 = buf
        .par_chunks(1 << 16)
        .map(|c| {
            let mut acc = [0.0f32; 32];
            for x in c.chunks_exact(32) {
                for j in 0..32 {
                    acc[j] += x[j];
                }
            }
            acc.iter().sum::<f32>()
        })
        .sum();
    let dt = t0.elapsed().as_secs_f64();
    assert!(s > 0.0);
    std::mem::size_of_val(buf) as f64 / dt / 1e9
}

/// Read bandwidth in GB/s: the best of five probes.
fn read_bandwidth(buf: &[f32]) -> f64 {
    (0..5).map(|_| probe_once(buf)).fold(0.0, f64::max)
}

/// A decoder to time: a folder's (as `dtype` asks) or a random preset.
fn bench_model(dir: Option<&std::path::Path>, preset: &str, dtype: crate::DtypeArg, kv: crate::KvDtypeArg) -> anyhow::Result<attn_model::Transformer> {
    let mut m = match dir {
        Some(d) => attn_model::Transformer::load_as(d, dtype.0)?.0,
        None => {
            let mut m = attn_model::Transformer::preset(preset, 0)?;
            m.quantize(dtype.0.unwrap_or(attn_model::quant::WeightDtype::F32))?;
            m
        }
    };
    kv.apply(&mut m);
    Ok(m)
}

pub(crate) fn bench_generate(
    dir: Option<std::path::PathBuf>,
    preset: &str,
    prompt_len: usize,
    new_tokens: usize,
    dtype: crate::DtypeArg,
    kv: crate::KvDtypeArg,
) -> anyhow::Result<()> {
    let mut model = bench_model(dir.as_deref(), preset, dtype, kv)?;
    // As `attn generate` and `attn chat` hold it; `bench decode` times
    // batches as `attn serve` runs them, in the family's layout.
    model.rows_for_decoding();
    let ctx = model.context();
    anyhow::ensure!(prompt_len >= 1 && prompt_len + new_tokens <= ctx, "prompt + new tokens must fit in the context of {ctx}");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let prompt: Vec<u32> = (0..prompt_len).map(|_| rng.gen_range(0..model.vocab_size() as u32)).collect();
    let mut sampler = attn_generate::Sampler::new(attn_generate::SamplerConfig { temperature: 0.0, ..Default::default() }, 0)?;
    // (seconds in all, seconds to the first token, tokens)
    let mut run = || -> anyhow::Result<(f64, f64, usize)> {
        let t0 = Instant::now();
        let mut first = None;
        let mut n = 0;
        attn_generate::generate(&model, &prompt, Some(new_tokens), false, &[], &mut sampler, |_| {
            first.get_or_insert_with(|| t0.elapsed().as_secs_f64());
            n += 1;
            true
        })?;
        Ok((t0.elapsed().as_secs_f64(), first.unwrap_or(0.0), n))
    };
    // One untimed run warms caches and page tables. Peak memory is read
    // before the bandwidth probe, whose 512 MB buffer would hide it.
    run()?;
    let peak_rss = peak_rss_mb();
    let buf = probe_buffer();
    // Then timed rounds between bandwidth probes, for tokens per second.
    const ROUNDS: usize = 3;
    let mut probes = vec![read_bandwidth(&buf)];
    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        rounds.push(run()?);
        probes.push(read_bandwidth(&buf));
    }
    // Decoding reads every weight once per token (a tied embedding twice: as
    // the embedding row, negligible, and as the output head).
    let weight_bytes = model.weight_bytes() as f64;
    let decode = |&(total, prefill, n): &(f64, f64, usize)| (n - 1) as f64 / (total - prefill);
    let round_fractions: Vec<f64> = rounds.iter().zip(probes.windows(2)).map(|(r, p)| decode(r) / (p[0].max(p[1]) * 1e9 / weight_bytes)).collect();
    let paired = paired_fractions(&model, &prompt, new_tokens, &buf, weight_bytes)?;
    let n = rounds[0].2;
    let decode_tok_s = median(rounds.iter().map(decode).collect());
    let bw = median(probes.clone());
    let bound = bw * 1e9 / weight_bytes;
    let (total, prefill) = (median(rounds.iter().map(|r| r.0).collect()), median(rounds.iter().map(|r| r.1).collect()));
    report(serde_json::json!({
        "model": dir.map(|d| d.display().to_string()).unwrap_or_else(|| format!("{preset} (random init)")),
        "threads": rayon::current_num_threads(), "prompt_len": prompt_len, "new_tokens": n,
        "tok_per_s": n as f64 / total, "decode_tok_per_s": decode_tok_s, "prefill_ms": prefill * 1e3,
        "read_bandwidth_gbps": bw, "bandwidth_bound_tok_per_s": bound,
        "fraction_of_bound": median(paired.clone()), "fraction_of_bound_steps": paired,
        "fraction_of_bound_rounds": round_fractions, "read_bandwidth_gbps_probes": probes, "rounds": ROUNDS,
        "peak_rss_mb": peak_rss, "weights_mb": weight_bytes / 1e6,
        "kv_cache_mb": attn_model::kv_cache_bytes(&model.config, prompt_len + new_tokens, model.kv_dtype()) as f64 / 1e6,
        "dtype": model.weight_dtype().name(), "kv_dtype": model.kv_dtype().name(),
    }));
    Ok(())
}

/// Each decoding step set against the bandwidth at that moment: a probe
/// pass after every token, and the step's rate against the faster of the
/// probes on either side of it. The machines this runs on share memory
/// with neighbours whose load moves the bandwidth by 2x within seconds
/// (probes of 26 to 61 GB/s a few seconds apart on a Zen 4 EPYC), so a
/// whole run against probes before and after it measures the neighbours
/// more than the decoder. Each step starts after a probe has filled the
/// caches with its own buffer, which can only slow it: a model small enough
/// to stay in the cache between tokens (which the bound does not describe)
/// scores far lower here than in the rounds.
fn paired_fractions(model: &attn_model::Transformer, prompt: &[u32], new_tokens: usize, buf: &[f32], weight_bytes: f64) -> anyhow::Result<Vec<f64>> {
    let mut sampler = attn_generate::Sampler::new(attn_generate::SamplerConfig { temperature: 0.0, ..Default::default() }, 0)?;
    let (mut steps, mut probes) = (Vec::new(), Vec::new());
    let mut last: Option<Instant> = None;
    attn_generate::generate(model, prompt, Some(new_tokens), false, &[], &mut sampler, |_| {
        // The first call ends the prefill; each later one ends a step.
        if let Some(t) = last {
            steps.push(t.elapsed().as_secs_f64());
        }
        probes.push(probe_once(buf));
        last = Some(Instant::now());
        true
    })?;
    Ok(steps.iter().zip(probes.windows(2)).map(|(dt, p)| weight_bytes / dt / (p[0].max(p[1]) * 1e9)).collect())
}

/// Median step time of `decode_batch` for each batch size; tokens per
/// second is rows / step time.
pub(crate) fn bench_decode(
    dir: Option<std::path::PathBuf>,
    preset: &str,
    rows: &[usize],
    prompt_len: usize,
    steps: usize,
    dtype: crate::DtypeArg,
    kv: crate::KvDtypeArg,
) -> anyhow::Result<()> {
    let model = bench_model(dir.as_deref(), preset, dtype, kv)?;
    anyhow::ensure!(prompt_len >= 1 && prompt_len + steps + 2 <= model.context(), "prompt + steps must fit in the context of {}", model.context());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut out = Vec::new();
    for &n in rows {
        // All n caches and the step's buffers, checked together before any
        // is made (each cache alone would pass).
        let need = n as u128 * attn_model::kv_cache_bytes(&model.config, prompt_len + steps + 2, model.kv_dtype());
        attn_model::ensure_memory(need, || format!("--rows {n}: {n} KV caches"), "ask for fewer --rows")?;
        let mut scratch = model.new_batch_scratch(n)?;
        let mut caches = Vec::new();
        for _ in 0..n {
            let prompt: Vec<u32> = (0..prompt_len).map(|_| rng.gen_range(0..model.vocab_size() as u32)).collect();
            let mut c = model.new_cache(prompt_len + steps + 2)?;
            model.prefill(&mut c, &prompt)?;
            caches.push(c);
        }
        let tokens: Vec<u32> = (0..n as u32).collect();
        let mut times = Vec::new();
        for step in 0..steps + 2 {
            let mut refs: Vec<&mut attn_model::Cache> = caches.iter_mut().collect();
            let t0 = Instant::now();
            std::hint::black_box(model.decode_batch(&mut scratch, &mut refs, &tokens)?);
            if step >= 2 {
                times.push(t0.elapsed().as_secs_f64());
            }
        }
        let med = median(times);
        out.push(serde_json::json!({"rows": n, "step_ms": med * 1e3, "tok_per_s": n as f64 / med}));
    }
    let base = out[0]["tok_per_s"].as_f64().unwrap_or(1.0);
    for o in &mut out {
        o["vs_first"] = serde_json::json!(o["tok_per_s"].as_f64().unwrap_or(0.0) / base);
    }
    report(serde_json::json!({"model": dir.map(|d| d.display().to_string()).unwrap_or_else(|| format!("{preset} (random init)")),
        "threads": rayon::current_num_threads(), "prompt_len": prompt_len, "steps": steps, "peak_rss_mb": peak_rss_mb(), "batches": out,
        "dtype": model.weight_dtype().name(), "kv_dtype": model.kv_dtype().name()}));
    Ok(())
}
