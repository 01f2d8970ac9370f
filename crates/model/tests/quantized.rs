//! bf16 and int8 weights: a quantized model computes the function of its
//! dequantized f32 twin, batches stay bit-exact, folders round-trip, and
//! what needs f32 weights says so.

use attn_model::quant::WeightDtype;
use attn_model::{Family, KvDtype, Transformer, TransformerConfig};

/// GPT-2 (tied, Conv1D layout), Llama (GQA, tied), and a Qwen2-like model
/// (q/k/v biases, untied head, C = 96 so int8:40 leaves a short group).
fn configs() -> Vec<(&'static str, TransformerConfig)> {
    let mut qwen = TransformerConfig::llama_baby();
    qwen.family = Family::Qwen2;
    qwen.qkv_bias = true;
    qwen.tied_head = false;
    qwen.n_embd = 96;
    qwen.head_dim = 24;
    qwen.d_ff = 200;
    vec![("gpt2", TransformerConfig::baby()), ("llama", TransformerConfig::llama_baby()), ("qwen2", qwen)]
}

fn dtypes() -> Vec<WeightDtype> {
    vec![WeightDtype::Bf16, WeightDtype::Int8 { group: 32 }, WeightDtype::Int8 { group: 40 }]
}

fn prompt(n: usize) -> Vec<u32> {
    (0..n).map(|j| ((j * 13 + 5) % 60) as u32).collect()
}

fn argmax(v: &[f32]) -> u32 {
    v.iter().enumerate().fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b }).0 as u32
}

/// Prefill (a GEMM over widened weights) and 8 decoding steps (the
/// quantized matrix-vector kernel) against the f32 model holding the
/// dequantized weights.
#[test]
fn quantized_equals_its_dequantized_twin() {
    for (name, cfg) in configs() {
        for dtype in dtypes() {
            let mut q = Transformer::new(cfg.clone(), 3).unwrap();
            let before = q.weight_bytes();
            q.quantize(dtype).unwrap();
            assert_eq!(q.weight_dtype(), dtype);
            let r = q.dequantized().unwrap();
            // Both caches f32, so the two differ only in how the weights are
            // read (a bf16 cache, a quantized model's default, would round
            // keys differing in their last bits to different bf16 values).
            assert_eq!((q.kv_dtype(), r.kv_dtype()), (KvDtype::Bf16, KvDtype::F32));
            q.set_kv_dtype(KvDtype::F32);
            let ratio = q.weight_bytes() as f64 / before as f64;
            let bound = if dtype == WeightDtype::Bf16 { 0.55 } else { 0.35 };
            assert!(ratio < bound, "{name} {dtype:?}: weights {ratio:.2} of f32");
            let p = prompt(40);
            let (mut cq, mut cr) = (q.new_cache(60).unwrap(), r.new_cache(60).unwrap());
            let mut lq = q.prefill(&mut cq, &p).unwrap().to_vec();
            let mut lr = r.prefill(&mut cr, &p).unwrap().to_vec();
            for step in 0..9 {
                let scale = 1.0 + lr.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                let worst = attn_kernels::gradcheck::max_diff(&lq, &lr);
                // int8 rows round each input to 16-bit fixed point per group
                // (kernels::quant::fixed16: up to 1/65534 of the group's
                // largest input), which the f32 twin does not: a drift of a
                // few 1e-5 over 12 layers and 9 steps. bf16 rows read exactly
                // what the twin holds: under 1% of their bound here.
                let tol = if dtype == WeightDtype::Bf16 { 2e-5 } else { 5e-5 };
                assert!(worst <= tol * scale, "{name} {dtype:?} step {step}: logits differ by {worst}");
                let next = argmax(&lr);
                lq = q.decode(&mut cq, next).unwrap().to_vec();
                lr = r.decode(&mut cr, next).unwrap().to_vec();
            }
        }
    }
}

/// An f32 model's cache in bf16: half the bytes, the logits of prompt and
/// decoding steps close to the f32 cache's (the keys and values rounded to
/// 8 bits of mantissa), and the same greedy tokens.
#[test]
fn bf16_cache_stays_close_to_f32() {
    for (name, cfg) in configs() {
        let mut m = Transformer::new(cfg, 4).unwrap();
        let (mut cf, mut lf) = (m.new_cache(50).unwrap(), Vec::new());
        m.set_kv_dtype(KvDtype::Bf16);
        let (mut cb, mut lb) = (m.new_cache(50).unwrap(), Vec::new());
        assert_eq!((cf.kv_dtype(), cb.kv_dtype()), (KvDtype::F32, KvDtype::Bf16));
        assert_eq!(cb.kv_bytes() * 2, cf.kv_bytes(), "{name}");
        lf.push(m.prefill(&mut cf, &prompt(30)).unwrap().to_vec());
        lb.push(m.prefill(&mut cb, &prompt(30)).unwrap().to_vec());
        for _ in 0..8 {
            let next = argmax(&lf[lf.len() - 1]);
            assert_eq!(next, argmax(&lb[lb.len() - 1]), "{name}: greedy tokens part");
            lf.push(m.decode(&mut cf, next).unwrap().to_vec());
            lb.push(m.decode(&mut cb, next).unwrap().to_vec());
        }
        for (step, (a, b)) in lf.iter().zip(&lb).enumerate() {
            let scale = a.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let worst = attn_kernels::gradcheck::max_diff(a, b);
            assert!(worst > 0.0 && worst < 1e-2 * scale, "{name} step {step}: {worst} of {scale}");
        }
    }
}

/// A row of a batched step equals the row decoded alone, bit for bit.
#[test]
fn quantized_batches_are_bit_exact() {
    for (name, cfg) in configs() {
        let mut m = Transformer::new(cfg, 5).unwrap();
        m.quantize(WeightDtype::Int8 { group: 32 }).unwrap();
        let prompts = [prompt(3), prompt(17), prompt(9)];
        let v = m.config.vocab_size;
        let mut alone = Vec::new();
        let mut caches = Vec::new();
        for p in &prompts {
            let mut c = m.new_cache(30).unwrap();
            m.prefill(&mut c, p).unwrap();
            let mut c2 = m.new_cache(30).unwrap();
            m.prefill(&mut c2, p).unwrap();
            alone.push(m.decode(&mut c, 7).unwrap().to_vec());
            caches.push(c2);
        }
        let mut scratch = m.new_batch_scratch(4).unwrap();
        let mut refs: Vec<&mut attn_model::Cache> = caches.iter_mut().collect();
        let out = m.decode_batch(&mut scratch, &mut refs, &[7, 7, 7]).unwrap();
        for (i, a) in alone.iter().enumerate() {
            assert!(out[i * v..(i + 1) * v].iter().zip(a).all(|(x, y)| x.to_bits() == y.to_bits()), "{name}: row {i}");
        }
    }
}

fn logits(m: &Transformer) -> Vec<f32> {
    let mut c = m.new_cache(20).unwrap();
    m.prefill(&mut c, &prompt(12)).unwrap().to_vec()
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Saved and loaded back, on the fly from an f32 folder, and a bf16 folder
/// read as plain f32 (it is an ordinary Hugging Face folder).
#[test]
fn folders_round_trip() {
    for (name, cfg) in configs() {
        let f32_dir = tempfile::tempdir().unwrap();
        Transformer::new(cfg.clone(), 9).unwrap().save(f32_dir.path(), None).unwrap();
        for dtype in dtypes() {
            let mut q = Transformer::new(cfg.clone(), 9).unwrap();
            q.quantize(dtype).unwrap();
            let want = logits(&q);
            let dir = tempfile::tempdir().unwrap();
            q.save(dir.path(), None).unwrap();
            let (back, _) = Transformer::load_as(dir.path(), None).unwrap();
            assert_eq!(back.weight_dtype(), dtype, "{name}: the folder's own dtype");
            assert!(same_bits(&logits(&back), &want), "{name} {dtype:?}: saved and loaded");
            let (fly, _) = Transformer::load_as(f32_dir.path(), Some(dtype)).unwrap();
            assert!(same_bits(&logits(&fly), &want), "{name} {dtype:?}: quantized while loading");
            let (wide, _) = Transformer::load_as(dir.path(), Some(WeightDtype::F32)).unwrap();
            assert_eq!(wide.weight_dtype(), WeightDtype::F32);
            assert!(same_bits(&logits(&wide), &logits(&q.dequantized().unwrap())), "{name} {dtype:?}: widened to f32");
            if dtype == WeightDtype::Bf16 {
                let (plain, _) = Transformer::load(dir.path()).unwrap();
                assert!(same_bits(&logits(&plain), &logits(&wide)), "{name}: bf16 folder read as f32");
            }
        }
    }
}

#[test]
fn what_needs_f32_weights_says_so() {
    let mut m = Transformer::new(TransformerConfig::baby(), 1).unwrap();
    m.quantize(WeightDtype::Int8 { group: 32 }).unwrap();
    let err = m.forward(&prompt(8), None, 1, 8).unwrap_err().to_string();
    assert!(err.contains("f32") && err.contains("int8"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    m.save(dir.path(), None).unwrap();
    let err = Transformer::load(dir.path()).err().unwrap().to_string();
    assert!(err.contains("quantization_config") && err.contains("--dtype"), "{err}");
    let err = Transformer::load_as(dir.path(), Some(WeightDtype::Bf16)).err().unwrap().to_string();
    assert!(err.contains("int8") && err.contains("bf16"), "{err}");
    assert!(WeightDtype::parse("int4").unwrap_err().contains("int8:G"));
    assert_eq!(WeightDtype::parse("int8:64"), Ok(WeightDtype::Int8 { group: 64 }));
    // Plain int8 is groups of 64, and names itself so; other groups keep their G.
    assert_eq!(WeightDtype::parse("int8"), Ok(WeightDtype::Int8 { group: 64 }));
    for (d, name) in [(WeightDtype::Int8 { group: 64 }, "int8"), (WeightDtype::Int8 { group: 32 }, "int8:32")] {
        assert_eq!(d.name(), name);
        assert_eq!(WeightDtype::parse(name), Ok(d));
    }
    // An encoder has no decoding path to quantize.
    let mut bert = Transformer::new(TransformerConfig::bert(50, 16, 1, 2, 32, 64), 1).unwrap();
    assert!(bert.quantize(WeightDtype::Bf16).unwrap_err().to_string().contains("decoders"));
}

/// The inference path's scoring (what `attn eval` uses for bf16 / int8
/// weights) sums the training forward pass's losses; a quantized model
/// scores as its dequantized twin does.
#[test]
fn scoring_through_the_cache_equals_the_training_loss() {
    for (name, cfg) in configs() {
        let mut m = Transformer::new(cfg.clone(), 11).unwrap();
        let t = 50;
        let ids = prompt(t + 1);
        m.forward(&ids[..t], Some(&ids[1..]), 1, t).unwrap();
        let want: f64 = m.losses().iter().map(|&l| l as f64).sum();
        let got = m.score_cached(&ids[..t], &ids[1..]).unwrap();
        assert!((got - want).abs() < 1e-4 * want, "{name}: {got} vs {want}");
        m.quantize(WeightDtype::Int8 { group: 32 }).unwrap();
        let mut twin = m.dequantized().unwrap();
        twin.forward(&ids[..t], Some(&ids[1..]), 1, t).unwrap();
        let want: f64 = twin.losses().iter().map(|&l| l as f64).sum();
        let got = m.score_cached(&ids[..t], &ids[1..]).unwrap();
        assert!((got - want).abs() < 1e-4 * want, "{name} int8: {got} vs {want}");
    }
}

/// Passes run inside rayon's pool (`attn_kernels::in_pool`), so a worker
/// waiting on one pass's parallel region may take up another caller's pass
/// meanwhile: several threads prefilling int8 prompts (the GEMM over
/// weights widened into a reused per-thread buffer) at once get what each
/// gets alone, and nothing panics.
#[test]
fn concurrent_passes_share_the_pool() {
    let mut m = Transformer::new(TransformerConfig::baby(), 5).unwrap();
    m.quantize(WeightDtype::Int8 { group: 32 }).unwrap();
    let run = |n: usize| {
        let mut cache = m.new_cache(n).unwrap();
        m.prefill(&mut cache, &prompt(n)).unwrap().to_vec()
    };
    let alone: Vec<Vec<f32>> = (0..4).map(|k| run(20 + 7 * k)).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|k| s.spawn(move || (0..10).map(|_| run(20 + 7 * k)).collect::<Vec<_>>())).collect();
        for (k, h) in handles.into_iter().enumerate() {
            for got in h.join().expect("a pass panicked") {
                assert_eq!(got, alone[k], "prompt {k}");
            }
        }
    });
}
