//! Kernel timings on the shapes of the `baby` (B=12, T=64, C=128) and
//! `gpt2-124m` (B=4, T=64, C=768) training benchmarks, at 1 and 2 threads.
//! Run: cargo bench -p attn-kernels -- [filter]

use attn_kernels::attention::{attention_backward, attention_forward, AttnShape};
use attn_kernels::gelu::{gelu_backward, gelu_forward};
use attn_kernels::kv_cache::{attention_cached_scratch_len, kv_layer_len, KvDtype, KvStore};
use attn_kernels::layernorm::layernorm_forward;
use attn_kernels::matmul::{matmul_backward, matmul_forward, WeightLayout};
use attn_kernels::matvec::{matvec_forward, matvec_scratch_len};
use attn_kernels::quant::{bf16_bits, qmatvec_forward, shared_bytes, QMatrix, Reading, Together};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn pool(n: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap()
}

fn bench_matmul(c: &mut Criterion) {
    // (name, N, C, OC): the four projections of one block, for both presets.
    let shapes = [
        ("baby/qkv", 768, 128, 384),
        ("baby/fc", 768, 128, 512),
        ("baby/fcproj", 768, 512, 128),
        ("gpt2/qkv", 256, 768, 2304),
        ("gpt2/fc", 256, 768, 3072),
        ("gpt2/lm_head", 256, 768, 50257),
    ];
    let mut g = c.benchmark_group("matmul");
    for threads in [1, 2] {
        let p = pool(threads);
        for &(name, n, ci, oc) in &shapes {
            let layout = if name.ends_with("lm_head") { WeightLayout::OutIn } else { WeightLayout::InOut };
            let (x, w, bias) = (vec![0.1f32; n * ci], vec![0.01f32; ci * oc], vec![0.0f32; oc]);
            let mut out = vec![0.0f32; n * oc];
            let (mut dx, mut dw, mut db) = (vec![0.0f32; n * ci], vec![0.0f32; ci * oc], vec![0.0f32; oc]);
            g.throughput(Throughput::Elements((2 * n * ci * oc) as u64));
            g.bench_function(format!("{name}/fwd/t{threads}"), |bch| {
                p.install(|| bch.iter(|| matmul_forward(&mut out, &x, &w, Some(&bias), n, ci, oc, layout)))
            });
            g.throughput(Throughput::Elements((4 * n * ci * oc) as u64));
            g.bench_function(format!("{name}/bwd/t{threads}"), |bch| {
                p.install(|| bch.iter(|| matmul_backward(Some(&mut dx), &mut dw, Some(&mut db), &out, &x, &w, n, ci, oc, layout)))
            });
        }
    }
    g.finish();
}

/// Dense layers with bf16 products (`--dtype bf16`), 2 threads: gpt2-124m's
/// (C, OC) weights at B=4 T=64, and transformer-base's (OC, C) weights at
/// B=8 T=64. Forward, and backward (dX and dW: a transposed operand).
fn bench_matmul_bf16(c: &mut Criterion) {
    use attn_kernels::mixed::{set_matmul_precision, Precision};
    let shapes = [
        ("gpt2/fc", 256, 768, 3072, WeightLayout::InOut),
        ("gpt2/lm_head", 256, 768, 50257, WeightLayout::OutIn),
        ("tbase/fc1", 512, 512, 2048, WeightLayout::OutIn),
        ("tbase/fc2", 512, 2048, 512, WeightLayout::OutIn),
        ("tbase/head", 512, 512, 8000, WeightLayout::OutIn),
    ];
    let mut g = c.benchmark_group("matmul_bf16");
    let p = pool(2);
    set_matmul_precision(Precision::Bf16);
    for &(name, n, ci, oc, layout) in &shapes {
        let (x, w) = (vec![0.1f32; n * ci], vec![0.01f32; ci * oc]);
        let mut out = vec![0.0f32; n * oc];
        let (mut dx, mut dw) = (vec![0.0f32; n * ci], vec![0.0f32; ci * oc]);
        g.throughput(Throughput::Elements((2 * n * ci * oc) as u64));
        g.bench_function(format!("{name}/fwd/t2"), |bch| p.install(|| bch.iter(|| matmul_forward(&mut out, &x, &w, None, n, ci, oc, layout))));
        g.bench_function(format!("{name}/bwd-dx/t2"), |bch| {
            p.install(|| bch.iter(|| matmul_backward(Some(&mut dx), &mut [], None, &out, &x, &w, n, ci, oc, layout)))
        });
        g.bench_function(format!("{name}/bwd-dw/t2"), |bch| p.install(|| bch.iter(|| matmul_backward(None, &mut dw, None, &out, &x, &w, n, ci, oc, layout))));
    }
    set_matmul_precision(Precision::F32);
    g.finish();
}

/// gpt2-124m's attention at T = 1024 (B = 1, 12 heads of 64), forward and
/// backward, 2 threads: with the saved (T, T) probabilities, and flash.
fn bench_long_attention(c: &mut Criterion) {
    use attn_kernels::flash::{flash_backward, flash_forward, flash_scratch_len};
    use attn_kernels::mixed::Precision;
    let mut g = c.benchmark_group("attention_t1024");
    g.sample_size(10);
    let s = AttnShape::mha(1, 1024, 768, 12, true);
    let (w, oc, n) = (s.qkv_width(), s.out_width(), s.b * s.t);
    let qkv: Vec<f32> = (0..n * w).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
    let dout: Vec<f32> = (0..n * oc).map(|i| ((i * 104729) % 1000) as f32 * 1e-3 - 0.5).collect();
    let (mut out, mut att, mut datt, mut dqkv) = (vec![0.0; n * oc], vec![0.0; s.nh * s.t * s.t], vec![0.0; s.nh * s.t * s.t], vec![0.0; n * w]);
    let (mut lse, mut scratch) = (vec![0.0; s.nh * s.t], vec![0.0; flash_scratch_len(s.hs)]);
    let p = pool(2);
    g.bench_function("saved_probs/fwd+bwd", |b| {
        p.install(|| {
            b.iter(|| {
                attention_forward(&mut out, &mut att, &qkv, s);
                attention_backward(&mut dqkv, &mut datt, &dout, &qkv, &att, s);
            })
        })
    });
    for prec in [Precision::F32, Precision::Bf16] {
        g.bench_function(format!("flash/fwd+bwd/{}", prec.name()), |b| {
            p.install(|| {
                b.iter(|| {
                    flash_forward(&mut out, &mut lse, &mut scratch, &qkv, s, &[], prec);
                    flash_backward(&mut dqkv, &mut scratch, &dout, &qkv, &out, &lse, s, &[], prec);
                })
            })
        });
    }
}

/// One AdamW step over gpt2-124m's 124M parameters (reads parameters,
/// gradients and both moments, writes three: 28 bytes a parameter).
fn bench_optimizer(c: &mut Criterion) {
    use attn_kernels::optim::{adamw_update, AdamW};
    let mut g = c.benchmark_group("optimizer");
    let n = 124_439_808usize;
    let (mut p, grads, mut m, mut v) = (vec![0.01f32; n], vec![0.001f32; n], vec![0.0f32; n], vec![0.0f32; n]);
    g.throughput(Throughput::Bytes((n * 28) as u64));
    g.sample_size(10);
    let pl = pool(2);
    let h = AdamW { lr: 1e-4, beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.1, step: 1, grad_scale: 1.0 };
    g.bench_function("adamw/gpt2-124m/t2", |b| pl.install(|| b.iter(|| adamw_update(&mut p, &grads, &mut m, &mut v, h))));
    drop((m, v));
    // bf16 moments: 20 bytes a parameter.
    let (mut m, mut v) = (vec![attn_kernels::optim::Bf16::default(); n], vec![attn_kernels::optim::Bf16::default(); n]);
    g.throughput(Throughput::Bytes((n * 20) as u64));
    g.bench_function("adamw-bf16-moments/gpt2-124m/t2", |b| pl.install(|| b.iter(|| adamw_update(&mut p, &grads, &mut m, &mut v, h))));
}

fn bench_other(c: &mut Criterion) {
    let mut g = c.benchmark_group("other");
    for threads in [1, 2] {
        let p = pool(threads);
        // baby, gpt2-124m at T=64, and shakespeare-char at T=256.
        for (name, s) in [
            ("baby", AttnShape::mha(12, 64, 128, 4, true)),
            ("gpt2", AttnShape::mha(4, 64, 768, 12, true)),
            ("shakespeare-char", AttnShape::mha(4, 256, 384, 6, true)),
        ] {
            let qkv: Vec<f32> = (0..s.b * s.t * s.qkv_width()).map(|i| (i % 17) as f32 * 0.01).collect();
            let (mut out, mut att) = (vec![0.0f32; s.b * s.t * s.out_width()], vec![0.0f32; s.b * s.nh * s.t * s.t]);
            let (mut dqkv, mut scratch) = (vec![0.0f32; qkv.len()], vec![0.0f32; att.len()]);
            g.bench_function(format!("{name}/attention/fwd/t{threads}"), |b| p.install(|| b.iter(|| attention_forward(&mut out, &mut att, &qkv, s))));
            g.bench_function(format!("{name}/attention/bwd/t{threads}"), |b| {
                p.install(|| b.iter(|| attention_backward(&mut dqkv, &mut scratch, &out, &qkv, &att, s)))
            });
        }
        let x = vec![0.3f32; 768 * 512];
        let mut y = vec![0.0f32; x.len()];
        g.bench_function(format!("baby/gelu/fwd/t{threads}"), |b| p.install(|| b.iter(|| gelu_forward(&mut y, &x))));
        g.bench_function(format!("baby/gelu/bwd/t{threads}"), |b| p.install(|| b.iter(|| gelu_backward(&mut y, &x, &x))));
        let (w, bias) = (vec![1.0f32; 128], vec![0.0f32; 128]);
        let (mut o, mut m, mut r) = (vec![0.0f32; 768 * 128], vec![0.0f32; 768], vec![0.0f32; 768]);
        g.bench_function(format!("baby/layernorm/fwd/t{threads}"), |b| {
            p.install(|| b.iter(|| layernorm_forward(&mut o, &mut m, &mut r, &x[..768 * 128], &w, &bias, 768, 128, 1e-5)))
        });
    }
    g.finish();
}

/// A beam-search step's 32 rows (8 sources x 4 beams) through
/// transformer-base's (OC, C) layers, 2 threads: the few-rows kernel against
/// gemm (`matmul_forward`).
fn bench_few_rows(c: &mut Criterion) {
    use attn_kernels::few_rows::few_rows_forward;
    let mut g = c.benchmark_group("few_rows");
    let p = pool(2);
    for (name, ic, oc) in [("tbase/fc1", 512usize, 2048usize), ("tbase/fc2", 2048, 512), ("tbase/head", 512, 8000)] {
        let n = 32;
        let (x, w) = (vec![0.1f32; n * ic], vec![0.01f32; ic * oc]);
        let mut out = vec![0.0f32; n * oc];
        g.throughput(Throughput::Elements((2 * n * ic * oc) as u64));
        g.bench_function(format!("{name}/few_rows/t2"), |b| p.install(|| b.iter(|| few_rows_forward(&mut out, &x, &w, None, n, ic, oc))));
        g.bench_function(format!("{name}/gemm/t2"), |b| p.install(|| b.iter(|| matmul_forward(&mut out, &x, &w, None, n, ic, oc, WeightLayout::OutIn))));
    }
    g.finish();
}

/// One decoded query through the attention of all 12 layers of gpt2-124m
/// (12 heads of 64) over 288 cached positions, 2 threads. Throughput is the
/// cache's bytes read (keys and values).
fn bench_decode_attention(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_attention");
    let p = pool(2);
    let (layers, nh, hs, s) = (12usize, 12usize, 64usize, 288usize);
    let per = kv_layer_len(nh, hs, s);
    let k: Vec<f32> = (0..layers * per).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
    let v = k.iter().rev().copied().collect::<Vec<f32>>();
    let q: Vec<f32> = (0..3 * nh * hs).map(|i| (i % 13) as f32 * 0.1).collect();
    let (mut out, mut scratch) = (vec![0.0f32; nh * hs], vec![0.0f32; attention_cached_scratch_len(nh, s)]);
    // f32, and the same cache in bf16 (half the bytes; throughput counts the bytes read).
    let bf16 = |x: &[f32]| x.iter().map(|&y| bf16_bits(y)).collect::<Vec<u16>>();
    let caches = [KvStore::Bf16 { k: bf16(&k), v: bf16(&v) }, KvStore::F32 { k, v }];
    for kv in caches.iter().rev() {
        let name = if kv.dtype() == KvDtype::F32 { "gpt2-124m/s288/t2" } else { "gpt2-124m/s288/bf16/t2" };
        g.throughput(Throughput::Bytes((2 * layers * s * nh * hs * kv.dtype().size()) as u64));
        g.bench_function(name, |b| {
            p.install(|| {
                b.iter(|| {
                    for l in 0..layers {
                        kv.attention(l * per..(l + 1) * per, &mut out, &mut scratch, &q, 3 * nh * hs, 1, s - 1, (nh, nh, hs, s));
                    }
                })
            })
        });
    }
}

/// One decoding row through gpt2-124m's MLP up-projection (768 -> 3072)
/// and its head (768 -> 50257): f32, bf16 and int8 weights, 2 threads.
/// Throughput is weight bytes read.
fn bench_decode_weights(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_weights");
    let p = pool(2);
    for (name, ic, oc) in [("mlp_up", 768usize, 3072usize), ("head", 768, 50257)] {
        let w: Vec<f32> = (0..ic * oc).map(|i| ((i * 7919) % 1000) as f32 * 1e-4 - 0.05).collect();
        let x: Vec<f32> = (0..ic).map(|i| (i % 13) as f32 * 0.1).collect();
        let mut out = vec![0.0f32; oc];
        let mut scratch = vec![0.0f32; matvec_scratch_len(1, oc)];
        g.throughput(Throughput::Bytes((ic * oc * 4) as u64));
        g.bench_function(format!("{name}/f32"), |b| {
            p.install(|| b.iter(|| matvec_forward(&mut out, &mut scratch, &x, &w, None, 1, ic, oc, WeightLayout::OutIn)))
        });
        for (dt, q) in [("bf16", QMatrix::bf16(&w, ic, oc, WeightLayout::OutIn)), ("int8", QMatrix::int8(&w, ic, oc, WeightLayout::OutIn, 32))] {
            g.throughput(Throughput::Bytes(q.bytes() as u64));
            g.bench_function(format!("{name}/{dt}"), |b| p.install(|| b.iter(|| qmatvec_forward(&mut out, &mut [], &x, &q, None, 1))));
            // The streaming kernels on a matrix the caches hold: their
            // arithmetic's ceiling, which a fast memory can reach.
            let q = QMatrix { reading: Reading::Streamed, ..q };
            g.bench_function(format!("{name}/{dt}-streamed"), |b| p.install(|| b.iter(|| qmatvec_forward(&mut out, &mut [], &x, &q, None, 1))));
        }
    }
    // Eight head-sized matrices in turn: more than any cache holds, as a
    // whole model's weights are, so this times streaming from memory.
    let (ic, oc) = (768usize, 50257usize);
    let x: Vec<f32> = (0..ic).map(|i| (i % 13) as f32 * 0.1).collect();
    let mut out = vec![0.0f32; oc];
    let mut scratch = vec![0.0f32; matvec_scratch_len(1, oc)];
    let ws: Vec<Vec<f32>> = (0..8).map(|k| (0..ic * oc).map(|i| ((i * 7919 + k) % 1000) as f32 * 1e-4 - 0.05).collect()).collect();
    g.throughput(Throughput::Bytes((ic * oc * 4) as u64));
    let mut k = 0;
    g.bench_function("stream8/f32", |b| {
        p.install(|| {
            b.iter(|| {
                k = (k + 1) % 8;
                matvec_forward(&mut out, &mut scratch, &x, &ws[k], None, 1, ic, oc, WeightLayout::OutIn)
            })
        })
    });
    g.bench_function("stream8/f32-inout", |b| {
        p.install(|| {
            b.iter(|| {
                k = (k + 1) % 8;
                matvec_forward(&mut out, &mut scratch, &x, &ws[k], None, 1, ic, oc, WeightLayout::InOut)
            })
        })
    });
    // Rows one at a time (as a model larger than the last-level cache
    // reads them) and four side by side (as one that fits does).
    for (dt, reading) in [("bf16", Reading::Streamed), ("bf16-four-rows", Reading::InCache), ("int8", Reading::Streamed), ("int8-four-rows", Reading::InCache)]
    {
        let qs: Vec<QMatrix> = ws
            .iter()
            .map(|w| match dt.starts_with("bf16") {
                true => QMatrix::bf16(w, ic, oc, WeightLayout::OutIn),
                false => QMatrix::int8(w, ic, oc, WeightLayout::OutIn, 32),
            })
            .map(|q| QMatrix { reading, ..q })
            .collect();
        g.throughput(Throughput::Bytes(qs[0].bytes() as u64));
        g.bench_function(format!("stream8/{dt}"), |b| {
            p.install(|| {
                b.iter(|| {
                    k = (k + 1) % 8;
                    qmatvec_forward(&mut out, &mut [], &x, &qs[k], None, 1)
                })
            })
        });
    }
}

/// The 48 matrices of gpt2-124m's 12 blocks in their shapes (qkv 768 ->
/// 2304, proj 768 -> 768, fc 768 -> 3072, fc-proj 3072 -> 768), each read
/// once an iteration as a decoding step reads them: 170 MB of f32, more than
/// the last-level cache, in pieces of 2.4-9.4 MB. Weights in memory order
/// as GPT-2 keeps them, (C, OC) for f32; (OC, C) rows streamed one at a
/// time for bf16 and int8, as `attn generate` picks for a model this size.
/// The f32 matrices are one buffer and the small ones share one, on huge
/// pages where the kernel gives them, as a loaded model's are: on 4 KiB
/// pages a Zen 4 EPYC streamed the same kernels 20% slower.
fn bench_decode_blocks(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_blocks");
    g.sample_size(10);
    let p = pool(2);
    let shapes: Vec<(usize, usize)> = (0..12).flat_map(|_| [(768, 2304), (768, 768), (768, 3072), (3072, 768)]).collect();
    let mut all = attn_kernels::pages::zeroed::<f32>(shapes.iter().map(|&(ic, oc)| ic * oc).sum());
    all.iter_mut().enumerate().for_each(|(i, v)| *v = ((i * 7919) % 1000) as f32 * 1e-4 - 0.05);
    let mut ws: Vec<&[f32]> = Vec::new();
    let mut rest = &all[..];
    for &(ic, oc) in &shapes {
        let (w, r) = rest.split_at(ic * oc);
        ws.push(w);
        rest = r;
    }
    let x: Vec<f32> = (0..3072).map(|i| (i % 13) as f32 * 0.1).collect();
    let mut out = vec![0.0f32; 3072];
    let mut scratch = vec![0.0f32; matvec_scratch_len(1, 3072)];
    g.throughput(Throughput::Bytes(ws.iter().map(|w| w.len() as u64 * 4).sum()));
    // The same matrices read (C, OC) as GPT-2 stores them, and (OC, C) as
    // `attn generate` holds them (`Transformer::rows_for_decoding`).
    for (name, lay) in [("f32", WeightLayout::InOut), ("f32-rows", WeightLayout::OutIn)] {
        g.bench_function(format!("gpt2-124m/{name}"), |b| {
            p.install(|| {
                b.iter(|| {
                    for (w, &(ic, oc)) in ws.iter().zip(&shapes) {
                        matvec_forward(&mut out, &mut scratch, &x[..ic], w, None, 1, ic, oc, lay)
                    }
                })
            })
        });
    }
    for dt in ["bf16", "int8"] {
        let group = (dt == "int8").then_some(32);
        let mut together = Together::with_bytes(shapes.iter().map(|&(ic, oc)| shared_bytes(oc, ic, group)).sum());
        for (w, &(ic, oc)) in ws.iter().zip(&shapes) {
            let q = match group {
                None => QMatrix::bf16(w, ic, oc, WeightLayout::InOut),
                Some(g) => QMatrix::int8(w, ic, oc, WeightLayout::InOut, g),
            };
            together.push(QMatrix { reading: Reading::Streamed, ..q });
        }
        let qs = together.finish();
        g.throughput(Throughput::Bytes(qs.iter().map(|q| q.bytes() as u64).sum()));
        g.bench_function(format!("gpt2-124m/{dt}"), |b| {
            p.install(|| b.iter(|| qs.iter().for_each(|q| qmatvec_forward(&mut out, &mut [], &x[..q.cols], q, None, 1))))
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(1));
    targets = bench_matmul, bench_matmul_bf16, bench_few_rows, bench_other, bench_decode_weights, bench_decode_blocks, bench_decode_attention, bench_optimizer, bench_long_attention
}
criterion_main!(benches);
