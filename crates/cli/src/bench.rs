//! `attn bench`: whole training steps on random tokens, and the GEMM peak that
//! MFU is measured against. The last line of each is one JSON object.

use std::time::Instant;

use attn_kernels::matmul::{bf16_gemm_peak_probe, sgemm_peak_probe};
use attn_train::optim::{DecayRule, Optimizer, OptimizerKind};
use clap::Subcommand;
use rand::{Rng, SeedableRng};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Time full training steps (forward, backward, clip, AdamW) on random tokens
    Train {
        #[arg(long, default_value = "baby")]
        preset: String,
        /// Sequences (translation presets: pairs) per micro-batch
        #[arg(long, default_value_t = 12, value_parser = crate::count)]
        batch_size: usize,
        /// Default: the model's context (translation presets: 64, for source and target alike)
        #[arg(long, value_parser = crate::count)]
        seq_len: Option<usize>,
        /// Timed steps (after 2 untimed warmup steps)
        #[arg(long, default_value_t = 20, value_parser = crate::count)]
        steps: usize,
        /// Worker threads (default: all cores)
        #[arg(long)]
        threads: Option<usize>,
        /// Vocabulary size for char-level and translation presets (default: the preset's, 8000 for translation)
        #[arg(long)]
        vocab: Option<usize>,
        /// The dense layers' products: f32, or bf16 operands with f32 sums (as `attn train --dtype`)
        #[arg(long, value_enum, default_value = "f32")]
        dtype: crate::train::OptDtype,
        /// Data-parallel shards a step splits the batch into (default: as `attn train` picks)
        #[arg(long, value_parser = crate::count)]
        data_shards: Option<usize>,
    },
    /// Time translation: encode a batch of sources, then greedy or beam search with the KV caches
    Translate {
        /// An encoder-decoder folder (attn translation run, Marian or BART)
        #[arg(long)]
        model: std::path::PathBuf,
        /// Source texts, one a line (a source<TAB>target file's targets are ignored)
        #[arg(long)]
        data: std::path::PathBuf,
        /// Beam width (1: greedy)
        #[arg(long, default_value_t = 4, value_parser = crate::count)]
        beam: usize,
        /// Tokens to generate per source, EOS included
        #[arg(long, default_value_t = 64, value_parser = crate::count)]
        max_new_tokens: usize,
        /// Sources per batch
        #[arg(long, default_value_t = 8, value_parser = crate::count)]
        batch_size: usize,
        /// Timed rounds (after one untimed)
        #[arg(long, default_value_t = 3, value_parser = crate::count)]
        rounds: usize,
        /// Worker threads (default: all cores)
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Time generation at batch 1: prefill a prompt, then decode with the KV cache (median of 3 rounds, each against the read bandwidth measured beside it)
    Generate {
        /// A model folder; without it, a randomly initialised preset
        #[arg(long)]
        model: Option<std::path::PathBuf>,
        #[arg(long, default_value = "gpt2-124m")]
        preset: String,
        #[arg(long, default_value_t = 32, value_parser = crate::count)]
        prompt_len: usize,
        #[arg(long, default_value_t = 256, value_parser = crate::count)]
        new_tokens: usize,
        /// Dense weights: auto (the folder's own), f32, bf16, int8 or int8:G
        #[arg(long, default_value = "auto")]
        dtype: crate::DtypeArg,
        /// KV cache: auto (f32 for f32 weights, bf16 for bf16 or int8 ones), f32 or bf16
        #[arg(long, default_value = "auto")]
        kv_dtype: crate::KvDtypeArg,
        /// Worker threads (default: all cores)
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Time batched decoding steps (continuous batching in `attn serve`): N sequences, one token each per step
    Decode {
        /// A model folder; without it, a randomly initialised preset
        #[arg(long)]
        model: Option<std::path::PathBuf>,
        #[arg(long, default_value = "gpt2-124m")]
        preset: String,
        /// Sequences per step, comma-separated
        #[arg(long, default_value = "1,2,4,8", value_delimiter = ',', value_parser = crate::count)]
        rows: Vec<usize>,
        /// Each sequence's prompt length (its cache position when the timed steps start)
        #[arg(long, default_value_t = 32, value_parser = crate::count)]
        prompt_len: usize,
        /// Timed steps per batch size (after 2 untimed)
        #[arg(long, default_value_t = 32, value_parser = crate::count)]
        steps: usize,
        /// Dense weights: auto (the folder's own), f32, bf16, int8 or int8:G
        #[arg(long, default_value = "auto")]
        dtype: crate::DtypeArg,
        /// KV cache: auto (f32 for f32 weights, bf16 for bf16 or int8 ones), f32 or bf16
        #[arg(long, default_value = "auto")]
        kv_dtype: crate::KvDtypeArg,
        /// Worker threads (default: all cores)
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Time encoding a text file (the whole file as one text, as `attn tokenizer encode` does)
    Tokenizer {
        #[command(flatten)]
        src: crate::tokenizer::Source,
        /// Input text file
        #[arg(long)]
        data: std::path::PathBuf,
        /// Timed encodes (after one untimed)
        #[arg(long, default_value_t = 5, value_parser = crate::count)]
        rounds: usize,
        /// Worker threads (default: all cores)
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Time sentence embeddings: one text per line of --data, all embedded per round
    Embed {
        /// A model folder (config.json, model.safetensors, tokenizer files) or an attn run folder
        #[arg(long)]
        model: std::path::PathBuf,
        /// Input text file
        #[arg(long)]
        data: std::path::PathBuf,
        #[arg(long, default_value_t = 3, value_parser = crate::count)]
        rounds: usize,
        /// Worker threads (default: all cores)
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Measure single-precision GEMM throughput (the MFU denominator)
    Gemm {
        #[arg(long, default_value_t = 1024, value_parser = crate::count)]
        size: usize,
        /// Instead: the dense layers' products on training shapes, with each f32 GEMM this CPU runs, alternated
        #[arg(long)]
        shapes: bool,
        /// Rounds of --shapes (medians reported)
        #[arg(long, default_value_t = 5, value_parser = crate::count)]
        rounds: usize,
        /// Worker threads (default: all cores)
        #[arg(long)]
        threads: Option<usize>,
    },
}

pub fn run(c: BenchCommand) -> anyhow::Result<()> {
    match c {
        BenchCommand::Train { preset, batch_size, seq_len, steps, threads, vocab, dtype, data_shards } => {
            crate::set_threads(threads)?;
            let dtype = dtype.moments();
            attn_kernels::mixed::set_matmul_precision(dtype.precision());
            // MFU against the peak of the products the step runs, and the
            // cores' own rate for that arithmetic above it (where one is probed).
            let peak = match dtype {
                attn_train::optim::Dtype::F32 => Peaks { gemm: gemm_peak(1024, sgemm_peak_probe), core: attn_kernels::peak::fma_gflops(PROBE) },
                attn_train::optim::Dtype::Bf16 => {
                    Peaks { gemm: gemm_peak(1024, bf16_gemm_peak_probe), core: bf16_ceiling(attn_kernels::peak::bf16_dot_gflops(PROBE)) }
                }
            };
            if attn_model::SEQ2SEQ_PRESETS.contains(&preset.as_str()) {
                return crate::bench_seq2seq::bench_train(&preset, batch_size, seq_len.unwrap_or(64), steps, vocab.unwrap_or(8000), peak);
            }
            bench_train(&preset, batch_size, seq_len, steps, vocab, data_shards, peak)
        }
        BenchCommand::Translate { model, data, beam, max_new_tokens, batch_size, rounds, threads } => {
            crate::set_threads(threads)?;
            crate::bench_seq2seq::bench_translate(&model, &data, beam, max_new_tokens, batch_size, rounds)
        }
        BenchCommand::Generate { model, preset, prompt_len, new_tokens, dtype, kv_dtype, threads } => {
            crate::set_threads(threads)?;
            crate::bench_decode::bench_generate(model, &preset, prompt_len, new_tokens, dtype, kv_dtype)
        }
        BenchCommand::Decode { model, preset, rows, prompt_len, steps, dtype, kv_dtype, threads } => {
            crate::set_threads(threads)?;
            crate::bench_decode::bench_decode(model, &preset, &rows, prompt_len, steps, dtype, kv_dtype)
        }
        BenchCommand::Tokenizer { src, data, rounds, threads } => {
            crate::set_threads(threads)?;
            let tok = src.load()?;
            let text = attn_train::data::read_corpus(&[data])?;
            let n = tok.encode(&text)?.len();
            let mut secs: Vec<f64> = (0..rounds)
                .map(|_| {
                    let t = Instant::now();
                    let ids = tok.encode(&text);
                    let s = t.elapsed().as_secs_f64();
                    std::hint::black_box(ids).map(|_| s)
                })
                .collect::<Result<_, _>>()?;
            secs.sort_by(f64::total_cmp);
            let mb = text.len() as f64 / 1e6;
            report(serde_json::json!({"bytes": text.len(), "tokens": n, "threads": rayon::current_num_threads(),
                    "mb_per_s": mb / secs[0], "mb_per_s_median": mb / secs[secs.len() / 2]}));
            Ok(())
        }
        BenchCommand::Embed { model, data, rounds, threads } => {
            crate::set_threads(threads)?;
            let enc = crate::embed::Encoder::load(&model)?;
            let texts: Vec<String> = attn_train::data::read_corpus(&[data])?.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect();
            // Tokenizing is part of the work, as in sentence-transformers' encode().
            let run = || -> anyhow::Result<f64> {
                let t = Instant::now();
                std::hint::black_box(enc.embed(&texts)?);
                Ok(t.elapsed().as_secs_f64())
            };
            run()?;
            let mut secs = (0..rounds).map(|_| run()).collect::<anyhow::Result<Vec<f64>>>()?;
            secs.sort_by(f64::total_cmp);
            let tokens: usize = texts.iter().map(|t| enc.ids(t).map(|i| i.len()).unwrap_or(0)).sum();
            report(serde_json::json!({"sentences": texts.len(), "tokens": tokens, "threads": rayon::current_num_threads(),
                    "sentences_per_s": texts.len() as f64 / secs[0], "sentences_per_s_median": texts.len() as f64 / secs[secs.len() / 2]}));
            Ok(())
        }
        BenchCommand::Gemm { size, shapes, rounds, threads } => {
            crate::set_threads(threads)?;
            if shapes {
                return crate::bench_gemm::bench_shapes(rounds);
            }
            // Three size x size f32 matrices; checked before allocating.
            let bytes = size.checked_mul(size).and_then(|n| n.checked_mul(12));
            let avail = attn_model::available_memory().unwrap_or(u64::MAX);
            anyhow::ensure!(
                size > 0 && bytes.is_some_and(|b| (b as u64) < avail / 2),
                "--size {size} needs {:.1} GB for three {size}x{size} matrices, and {:.1} GB of memory is available; 1024 to 4096 measure the peak",
                bytes.map_or(f64::INFINITY, |b| b as f64 / 1e9),
                avail as f64 / 1e9
            );
            let gflops = gemm_peak(size, sgemm_peak_probe);
            // The same product with bf16 operands and f32 sums (`--dtype bf16`'s dense layers).
            let bf16_gflops = gemm_peak(size, bf16_gemm_peak_probe);
            // The ceilings above those: what the vector units compute with nothing to load.
            let (fma, dot) = (attn_kernels::peak::fma_gflops(PROBE), attn_kernels::peak::bf16_dot_gflops(PROBE));
            report(serde_json::json!({"size": size, "threads": rayon::current_num_threads(), "gflops": gflops,
                "bf16_gflops": bf16_gflops, "bf16_path": attn_kernels::mixed::bf16_path(),
                "fma_gflops": fma, "gemm_of_fma": fma.map(|f| gflops / f),
                "bf16_dot_gflops": dot, "bf16_gemm_of_dot": bf16_ceiling(dot).map(|d| bf16_gflops / d),
                "core_round_trip_ns": crate::bench_gemm::core_round_trip_ns()}));
            Ok(())
        }
    }
}

/// How long each of the cores' peaks (`attn_kernels::peak`) is measured.
const PROBE: std::time::Duration = std::time::Duration::from_millis(300);

/// The dot-product peak as the ceiling of bf16 products: only on the path
/// that runs `vdpbf16ps` (not AMX tiles, not the emulation).
fn bf16_ceiling(dot: Option<f64>) -> Option<f64> {
    dot.filter(|_| attn_kernels::mixed::bf16_path() == "avx512-bf16")
}

/// The two ceilings a training step's rate is read against, in GFLOP/s.
#[derive(Clone, Copy)]
pub(crate) struct Peaks {
    /// The 1024^3 GEMM in the step's precision (the MFU denominator).
    pub(crate) gemm: f64,
    /// The vector units' multiply-adds (f32) or dot products (bf16 on
    /// `vdpbf16ps`), where this CPU's path has a probe (`attn_kernels::peak`).
    pub(crate) core: Option<f64>,
}

impl Peaks {
    /// The JSON fields for a step that ran at `gflops`.
    pub(crate) fn fields(self, gflops: f64) -> serde_json::Value {
        serde_json::json!({"peak_gflops": self.gemm, "mfu": gflops / self.gemm,
            "core_peak_gflops": self.core, "of_core_peak": self.core.map(|c| gflops / c)})
    }
}

/// Adds the fields of `extra` (an object) to `out` (an object).
pub(crate) fn merge(mut out: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    if let (Some(o), serde_json::Value::Object(e)) = (out.as_object_mut(), extra) {
        o.extend(e);
    }
    out
}

/// Best of several square GEMMs, in GFLOP/s.
fn gemm_peak(size: usize, probe: fn(&mut [f32], &[f32], &[f32], usize) -> f64) -> f64 {
    let a = vec![0.5f32; size * size];
    let b = vec![0.25f32; size * size];
    let mut c = vec![0.0f32; size * size];
    let mut best = 0.0f64;
    // Best of 10: the first runs pay for page faults and clock ramp-up.
    for _ in 0..10 {
        let t0 = Instant::now();
        let flops = probe(&mut c, &a, &b, size);
        best = best.max(flops / t0.elapsed().as_secs_f64() / 1e9);
    }
    best
}

/// The median (the upper one for an even count).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Prints a benchmark's JSON with what every figure needs beside it: the
/// vector path the kernels took (`simd`; `f32_gemm` for f32 products), the
/// number format (`dtype`: the weights' for generation, else the products';
/// `bf16_path` when bf16) and the process's peak resident memory.
pub(crate) fn report(mut v: serde_json::Value) {
    if let Some(o) = v.as_object_mut() {
        o.insert("simd".into(), attn_kernels::simd::level().into());
        o.insert("f32_gemm".into(), attn_kernels::matmul::f32_gemm().name().into());
        if attn_kernels::mixed::matmul_precision() == attn_kernels::mixed::Precision::Bf16 {
            o.insert("bf16_path".into(), attn_kernels::mixed::bf16_path().into());
        }
        if !o.contains_key("dtype") {
            o.insert("dtype".into(), attn_kernels::mixed::matmul_precision().name().into());
        }
        if !o.contains_key("peak_rss_mb") {
            o.insert("peak_rss_mb".into(), peak_rss_mb().into());
        }
    }
    println!("{v}");
}

/// Peak resident memory of this process so far, from /proc (Linux), in MB.
pub(crate) fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn bench_train(preset: &str, b: usize, seq_len: Option<usize>, steps: usize, vocab: Option<usize>, shards: Option<usize>, peak: Peaks) -> anyhow::Result<()> {
    let mut arch = attn_model::TransformerConfig::preset(preset)?;
    if let Some(v) = vocab {
        arch = arch.with_vocab(v);
    }
    let t = seq_len.unwrap_or(arch.n_ctx);
    anyhow::ensure!(t <= arch.n_ctx, "--seq-len {t} exceeds the model's context of {}", arch.n_ctx);
    let threads = rayon::current_num_threads();
    let mut model = attn_model::Transformer::new(arch, 0)?;
    let mut opt =
        Optimizer::new(OptimizerKind::AdamW { beta1: 0.9, beta2: 0.95, eps: 1e-8 }, 0.1, DecayRule::Matrices, model.layout(), attn_train::optim::Dtype::F32);
    let shards = shards.unwrap_or_else(|| model.config.auto_data_shards(b, threads));
    model.set_data_shards(shards);
    // Refused here if the activations would not fit, before the batch buffers.
    model.reserve_step(b, t)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let v = model.vocab_size() as u32;
    let x: Vec<u32> = (0..b * t).map(|_| rng.gen_range(0..v)).collect();
    let y: Vec<u32> = (0..b * t).map(|_| rng.gen_range(0..v)).collect();
    let dtype = attn_kernels::mixed::matmul_precision().name();
    println!(
        "bench train: {preset} ({:.1}M params), B={b} T={t}, {threads} threads, {shards} data shard(s), {dtype} products, GEMM peak {:.1} GFLOP/s",
        model.layout().num_params() as f64 / 1e6,
        peak.gemm
    );
    // Per step: (total, forward, backward, optimizer incl. zero_grad) seconds.
    // Shards run both passes in one go: their time is the forward's.
    let mut times: Vec<[f64; 4]> = Vec::with_capacity(steps);
    for i in 0..steps + 2 {
        let t0 = Instant::now();
        model.zero_grad();
        if shards > 1 {
            model.train_step(&x, &y, b, t, 1.0)?;
        } else {
            model.forward(&x, Some(&y), b, t)?;
        }
        let t1 = Instant::now();
        if shards == 1 {
            model.backward(1.0)?;
        }
        let t2 = Instant::now();
        let team = model.team_size();
        let (params, grads) = model.params_and_grads();
        opt.step_on_team(params, grads, 1e-4, 1.0, team);
        let t3 = Instant::now();
        if i >= 2 {
            times.push([(t3 - t0).as_secs_f64(), (t1 - t0).as_secs_f64(), (t2 - t1).as_secs_f64(), (t3 - t2).as_secs_f64()]);
        }
    }
    // Medians resist a stray slow step from the rest of the machine.
    let col = |k: usize| median(times.iter().map(|r| r[k]).collect());
    let med = col(0);
    let flops = model.train_flops(b, t);
    let gflops = flops / med / 1e9;
    let out = serde_json::json!({
        "preset": preset, "batch_size": b, "seq_len": t, "threads": threads, "steps": steps,
        "ms_per_step": med * 1e3, "tok_per_s": (b * t) as f64 / med,
        "data_shards": shards, "optimizer_ms": col(3) * 1e3,
        "forward_ms": (shards == 1).then(|| col(1) * 1e3), "backward_ms": (shards == 1).then(|| col(2) * 1e3),
        "forward_backward_ms": (col(1) + col(2)) * 1e3,
        "gflops": gflops,
        "peak_rss_mb": peak_rss_mb(), "core_round_trip_ns": crate::bench_gemm::core_round_trip_ns(),
    });
    let out = merge(out, peak.fields(gflops));
    report(out);
    Ok(())
}
