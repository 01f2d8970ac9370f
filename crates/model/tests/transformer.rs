//! The one Transformer across its configurations: whole-model gradient
//! checks, checkpoint round trips, cached against uncached decoding to the
//! end of the context, and config.json parsing in both transformers layouts.

use std::path::Path;

use attn_kernels::gradcheck::check_gradient;
use attn_model::{hf, Family, ModelError, Position, RopeScaling, Transformer, TransformerConfig};

fn gpt(position: Position) -> TransformerConfig {
    TransformerConfig { position, ..TransformerConfig::gpt2(13, 6, 2, 2, 8) }
}

/// A Llama with everything that can differ from GPT-2 switched on: grouped
/// query heads, an explicit head size that is not C / NH, q/k/v biases, an
/// untied head, and llama3 rope scaling with a short original context so that
/// the blend is exercised.
fn llama(n_ctx: usize) -> TransformerConfig {
    TransformerConfig {
        family: Family::Qwen2,
        vocab_size: 13,
        n_ctx,
        n_layer: 2,
        n_head: 4,
        n_kv_head: 2,
        head_dim: 6,
        n_embd: 8,
        d_ff: 12,
        qkv_bias: true,
        tied_head: false,
        position: Position::Rope {
            theta: 500_000.0,
            scaling: RopeScaling::Llama3 { factor: 8.0, low_freq_factor: 1.0, high_freq_factor: 4.0, original_max_position: 8 },
        },
        ..TransformerConfig::llama_baby()
    }
}

fn configs(n_ctx: usize) -> Vec<(&'static str, TransformerConfig)> {
    let mut dynamic = llama(n_ctx);
    dynamic.position = Position::Rope { theta: 10_000.0, scaling: RopeScaling::Dynamic { factor: 2.0, max_position: 4 } };
    dynamic.family = Family::Llama;
    dynamic.qkv_bias = false;
    // BERT's blocks (post-norm, bidirectional, exact GELU, embedding norm and
    // token types) with a tied head, so that a next-token loss reaches them.
    let bert = TransformerConfig { tied_head: true, norm_eps: 1e-5, ..TransformerConfig::bert(13, n_ctx, 2, 2, 8, 12) };
    vec![
        ("bert blocks", bert),
        ("gpt learned", TransformerConfig { n_ctx, ..gpt(Position::Learned) }),
        ("gpt sinusoidal", TransformerConfig { n_ctx, ..gpt(Position::Sinusoidal) }),
        ("qwen2 gqa llama3", llama(n_ctx)),
        ("llama dynamic", dynamic),
    ]
}

/// The whole model's backward pass against finite differences of its loss,
/// for every parameter. Measured worst error is ~1e-3 (f32 rounding over
/// eps = 1e-3); a wrong term in any backward kernel gives O(1e-1) or more.
#[test]
fn whole_model_gradient_check() {
    for (name, cfg) in configs(6) {
        let mut model = Transformer::new(cfg, 7).unwrap();
        // Larger weights than the 0.02 init so every path carries a visible
        // gradient, but not so large that softmax saturates.
        for x in model.params.iter_mut() {
            *x *= 5.0;
        }
        let (b, t) = (2, 5);
        let tokens: Vec<u32> = vec![1, 5, 12, 5, 0, 3, 3, 7, 11, 2];
        let targets: Vec<u32> = vec![5, 12, 5, 0, 9, 3, 7, 11, 2, 4];
        model.zero_grad();
        model.forward(&tokens, Some(&targets), b, t).unwrap();
        model.backward(1.0).unwrap();
        let analytic = model.grads().to_vec();
        let mut params = model.params.clone();
        let worst = check_gradient(&mut params, &analytic, 1e-3, |p| {
            model.params.copy_from_slice(p);
            model.forward(&tokens, Some(&targets), b, t).unwrap();
            // The mean in f64 from the per-position losses: an f32 mean would
            // add ~1e-4 of rounding noise to each difference quotient.
            model.losses().iter().map(|&x| x as f64).sum::<f64>() / (b * t) as f64
        });
        assert!(worst.max_err < 5e-3, "{name}: {worst:?}");
    }
}

fn argmax(x: &[f32]) -> u32 {
    x.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b }).0 as u32
}

/// Every configuration, to the end of a 300-token context: a 70-token
/// prompt (past the row-loop threshold, so the GEMM path), then one token at
/// a time; and a 290-token prompt, which the inference path takes in two
/// chunks. At every step the cached logits equal those of a full uncached
/// forward pass over the whole sequence within 2e-5 (the two paths sum in
/// different orders: GEMM blocks against matrix-vector strips).
#[test]
fn cached_equals_uncached_to_the_end_of_the_context() {
    let ctx = 300;
    for (name, cfg) in configs(ctx) {
        if name == "llama dynamic" || name == "bert blocks" {
            // Dynamic scaling rotates cached keys with the frequencies of the
            // length at which they were cached, as transformers does, so it
            // is not meant to equal a fresh pass past its original context;
            // an encoder has no cache.
            continue;
        }
        let cfg = TransformerConfig { vocab_size: 50, n_embd: 32, d_ff: 64, head_dim: if cfg.family == Family::Gpt2 { 16 } else { 8 }, ..cfg };
        let mut model = Transformer::new(cfg, 11).unwrap();
        for x in model.params.iter_mut() {
            *x *= 3.0;
        }
        let v = 50;
        let mut ids: Vec<u32> = (0..70).map(|i| (i * 7 % 50) as u32).collect();
        let mut cache = model.new_cache(ctx).unwrap();
        let mut logits = model.prefill(&mut cache, &ids).unwrap().to_vec();
        let mut worst = 0.0f32;
        while ids.len() < ctx {
            let t = ids.len();
            if t % 23 == 0 || t + 1 == ctx {
                model.forward(&ids, None, 1, t).unwrap();
                let full = &model.logits()[(t - 1) * v..t * v];
                worst = worst.max(attn_kernels::gradcheck::max_diff(full, &logits));
                assert_eq!(argmax(&logits), argmax(full), "{name}: greedy choice differs at position {t}");
            }
            let next = argmax(&logits);
            ids.push(next);
            if ids.len() < ctx {
                logits = model.decode(&mut cache, next).unwrap().to_vec();
            }
        }
        assert!(worst < 2e-5, "{name}: worst logit difference {worst:e}");
        assert_eq!(cache.len(), ctx - 1);
        // A long prompt in two chunks gives the same last logits as one pass.
        let mut cache = model.new_cache(ctx).unwrap();
        let chunked = model.prefill(&mut cache, &ids[..290]).unwrap().to_vec();
        model.forward(&ids[..290], None, 1, 290).unwrap();
        let diff = attn_kernels::gradcheck::max_diff(&chunked, &model.logits()[289 * v..290 * v]);
        assert!(diff < 2e-5, "{name}: chunked prefill differs by {diff:e}");
        assert!(model.decode(&mut cache, 1).is_ok());
    }
}

#[test]
fn the_cache_is_sized_to_the_request_and_full_is_an_error() {
    let model = Transformer::new(TransformerConfig { n_ctx: 64, ..llama(64) }, 0).unwrap();
    let mut cache = model.new_cache(5).unwrap();
    assert_eq!(cache.capacity(), 5);
    // 2 layers x 16 positions (whole tiles of keys, attn_kernels::kv_cache)
    // x 2 KV heads x 6 = 384 floats each for K and V.
    assert_eq!(cache.kv_bytes(), 2 * 384 * 4);
    model.prefill(&mut cache, &[1, 2, 3, 4, 5]).unwrap();
    assert!(cache.is_full());
    assert!(model.decode(&mut cache, 1).unwrap_err().to_string().contains("holds 5 positions"));
    assert!(model.prefill(&mut model.new_cache(4).unwrap(), &[13]).is_err(), "token out of range");
    // No gradients exist until something trains.
    assert!(model.grads().is_empty());
}

#[test]
fn checkpoint_round_trip_for_every_family() {
    for (name, cfg) in configs(6) {
        let dir = tempfile::tempdir().unwrap();
        let mut model = Transformer::new(cfg, 3).unwrap();
        model.forward(&[1, 2, 3], None, 1, 3).unwrap();
        let logits = model.logits().to_vec();
        model.save(dir.path(), None).unwrap();
        let (mut loaded, _) = Transformer::load(dir.path()).unwrap();
        assert_eq!(loaded.config.position, model.config.position, "{name}");
        assert_eq!(loaded.params, model.params, "{name}");
        loaded.forward(&[1, 2, 3], None, 1, 3).unwrap();
        assert_eq!(loaded.logits(), &logits[..], "{name}");
        assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp")));
    }
}

#[test]
fn truncated_weights_are_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    Transformer::new(gpt(Position::Learned), 3).unwrap().save(dir.path(), None).unwrap();
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = Transformer::load(dir.path()).err().expect("must fail");
    assert!(matches!(err, ModelError::Safetensors { .. }), "{err}");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(p, v.to_string()).unwrap();
}

#[test]
fn checkpoint_and_config_disagreements_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let model = Transformer::new(gpt(Position::Learned), 3).unwrap();
    model.save(dir.path(), None).unwrap();
    edit_config(dir.path(), |v| v["vocab_size"] = 14.into());
    let err = Transformer::load(dir.path()).err().expect("must fail").to_string();
    assert!(err.contains("transformer.wte.weight") && err.contains("[13, 8]"), "{err}");
    // Fewer layers than the checkpoint: the extra tensors are listed, not ignored.
    model.save(dir.path(), None).unwrap();
    edit_config(dir.path(), |v| v["n_layer"] = 1.into());
    let err = Transformer::load(dir.path()).err().expect("must fail").to_string();
    assert!(err.contains("transformer.h.1.attn.c_attn.bias") && err.contains("not used"), "{err}");
    // A NaN weight is named at load.
    let mut bad = Transformer::new(gpt(Position::Learned), 3).unwrap();
    let r = bad.layout.get("transformer.h.0.mlp.c_fc.weight").unwrap().range();
    bad.params[r.start + 5] = f32::NAN;
    bad.save(dir.path(), None).unwrap();
    let err = Transformer::load(dir.path()).err().expect("must fail").to_string();
    assert!(err.contains("transformer.h.0.mlp.c_fc.weight") && err.contains("NaN"), "{err}");
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let mut model = Transformer::new(gpt(Position::Learned), 3).unwrap();
    assert!(model.forward(&[1; 7], None, 1, 7).is_err(), "longer than the context");
    assert!(model.forward(&[13], None, 1, 1).is_err(), "token out of range");
    assert!(model.backward(1.0).is_err(), "backward without targets");
    assert!(TransformerConfig::preset("nope").is_err());
    assert_eq!(TransformerConfig::gpt2_124m().param_count(), Some(124_439_808));
    assert_eq!(Transformer::preset("gpt2-124m", 0).unwrap().layout.num_params(), 124_439_808);
    // Sizes that no machine holds are refused before allocating.
    let huge = TransformerConfig { n_layer: 1_000_000_000, ..TransformerConfig::baby() };
    assert!(matches!(Transformer::zeros(huge), Err(ModelError::TooLarge { .. })));
}

fn parse(v: serde_json::Value) -> Result<TransformerConfig, ModelError> {
    hf::from_hf(&v, Path::new("config.json"))
}

/// transformers 4.x writes `rope_theta` and `rope_scaling`, 5.x writes
/// `rope_parameters`: both give the same config.
#[test]
fn both_transformers_layouts_load() {
    let base = serde_json::json!({
        "model_type": "llama", "vocab_size": 100, "hidden_size": 96, "intermediate_size": 64, "num_hidden_layers": 3,
        "num_attention_heads": 6, "num_key_value_heads": 2, "head_dim": 48, "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5, "tie_word_embeddings": false, "eos_token_id": [7, 9],
    });
    let scaling =
        serde_json::json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 64});
    let mut v4 = base.clone();
    v4["rope_theta"] = 500000.0.into();
    v4["rope_scaling"] = scaling.clone();
    let mut v5 = base.clone();
    let mut params = scaling.clone();
    params["rope_theta"] = 500000.0.into();
    v5["rope_parameters"] = params;
    let (a, b) = (parse(v4).unwrap(), parse(v5).unwrap());
    assert_eq!(a.position, b.position);
    assert_eq!(a.head_dim, 48);
    assert_eq!(a.eos_token_ids, vec![7, 9]);
    assert!(matches!(a.position, Position::Rope { theta: 500000.0, scaling: RopeScaling::Llama3 { factor: 8.0, .. } }));
    // 5.x default rope_parameters, and the old "type" key.
    let mut v = base.clone();
    v["rope_parameters"] = serde_json::json!({"rope_theta": 1e6, "rope_type": "default"});
    assert!(matches!(parse(v).unwrap().position, Position::Rope { theta: 1e6, scaling: RopeScaling::None }));
    let mut v = base.clone();
    v["rope_scaling"] = serde_json::json!({"type": "linear", "factor": 4.0});
    assert!(matches!(parse(v).unwrap().position, Position::Rope { theta: 10000.0, scaling: RopeScaling::Linear { factor: 4.0 } }));
    // A written config reads back to the same config.
    let cfg = parse(base.clone()).unwrap();
    assert_eq!(parse(hf::to_hf(&cfg)).unwrap(), TransformerConfig { hf: hf::to_hf(&cfg), ..cfg });
}

#[test]
fn missing_fields_take_transformers_defaults_and_bad_ones_are_named() {
    // Qwen2's defaults: biases on q, k, v, theta 10000, 32 KV heads.
    let q = parse(serde_json::json!({"model_type": "qwen2", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 32, "num_hidden_layers": 1, "vocab_size": 50}))
    .unwrap();
    assert!(q.qkv_bias && !q.tied_head && q.n_ctx == 32768);
    let m = parse(serde_json::json!({"model_type": "mistral", "hidden_size": 64, "num_attention_heads": 8, "intermediate_size": 32,
        "num_hidden_layers": 1, "vocab_size": 50, "sliding_window": null}))
    .unwrap();
    assert_eq!((m.n_kv_head, m.head_dim), (8, 8));
    let base = serde_json::json!({"model_type": "mistral", "hidden_size": 64, "num_attention_heads": 8, "intermediate_size": 32,
        "num_hidden_layers": 1, "vocab_size": 50, "max_position_embeddings": 128});
    for (field, value, expect) in [
        ("sliding_window", serde_json::json!(64), "sliding_window"),
        ("num_key_value_heads", serde_json::json!(0), "num_key_value_heads"),
        ("num_key_value_heads", serde_json::json!(3), "num_key_value_heads"),
        ("rms_norm_eps", serde_json::json!(-1.0), "rms_norm_eps"),
        ("rope_theta", serde_json::json!(0.5), "rope_theta"),
        ("rope_scaling", serde_json::json!({"rope_type": "yarn", "factor": 4.0}), "rope_scaling.rope_type"),
        ("rope_scaling", serde_json::json!({"rope_type": "llama3", "factor": 8.0}), "rope_scaling.low_freq_factor"),
        ("hidden_size", serde_json::json!("big"), "hidden_size"),
        ("mlp_bias", serde_json::json!(true), "mlp_bias"),
    ] {
        let mut v = base.clone();
        v[field] = value;
        let err = parse(v).unwrap_err().to_string();
        assert!(err.contains(expect) && err.contains("config.json"), "{field}: {err}");
    }
    let err = parse(serde_json::json!({"model_type": "gpt2", "n_embd": 10, "n_head": 3})).unwrap_err().to_string();
    assert!(err.contains("n_embd") && err.contains("n_head 3"), "{err}");
}
