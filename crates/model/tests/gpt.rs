use attn_kernels::gradcheck::check_gradient;
use attn_model::checkpoint::{load_gpt, save_gpt};
use attn_model::{Gpt, GptConfig, ModelError, PositionEncoding};

fn tiny(position: PositionEncoding) -> GptConfig {
    GptConfig { vocab_size: 13, n_ctx: 6, n_layer: 2, n_head: 2, n_embd: 8, position, layer_norm_eps: 1e-5 }
}

/// The whole model's backward pass against finite differences of its loss, for
/// every parameter. Measured worst error is ~1e-3 (f32 rounding over eps=1e-3);
/// a wrong term in any backward kernel gives O(1e-1) or more.
#[test]
fn whole_model_gradient_check() {
    for position in [PositionEncoding::Learned, PositionEncoding::Sinusoidal] {
        let mut model = Gpt::new(tiny(position), 7).unwrap();
        // Larger weights than the 0.02 init so every path carries a visible
        // gradient, but not so large that softmax saturates and eps=1e-3 leaves
        // the linear regime.
        for x in model.params.iter_mut() {
            *x *= 5.0;
        }
        let (b, t) = (2, 5);
        let tokens: Vec<u32> = vec![1, 5, 12, 5, 0, 3, 3, 7, 11, 2];
        let targets: Vec<u32> = vec![5, 12, 5, 0, 9, 3, 7, 11, 2, 4];
        model.zero_grad();
        model.forward(&tokens, Some(&targets), b, t).unwrap();
        model.backward(1.0).unwrap();
        let analytic = model.grads.clone();
        let mut params = model.params.clone();
        let worst = check_gradient(&mut params, &analytic, 1e-3, |p| {
            model.params.copy_from_slice(p);
            model.forward(&tokens, Some(&targets), b, t).unwrap();
            // The mean in f64 from the per-position losses: an f32 mean would
            // add ~1e-4 of rounding noise to each difference quotient.
            model.losses().iter().map(|&x| x as f64).sum::<f64>() / (b * t) as f64
        });
        assert!(worst.max_err < 5e-3, "{position:?}: {worst:?}");
    }
}

#[test]
fn checkpoint_round_trip_and_logits() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Gpt::new(tiny(PositionEncoding::Learned), 3).unwrap();
    model.forward(&[1, 2, 3], None, 1, 3).unwrap();
    let logits = model.logits().to_vec();
    save_gpt(dir.path(), &model, None).unwrap();
    let (mut loaded, _) = load_gpt(dir.path()).unwrap();
    assert_eq!(loaded.params, model.params);
    loaded.forward(&[1, 2, 3], None, 1, 3).unwrap();
    assert_eq!(loaded.logits(), &logits[..]);
    // No temp files are left behind.
    assert!(std::fs::read_dir(dir.path()).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".tmp")));
}

#[test]
fn truncated_weights_are_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let model = Gpt::new(tiny(PositionEncoding::Learned), 3).unwrap();
    save_gpt(dir.path(), &model, None).unwrap();
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_gpt(dir.path()).err().expect("must fail");
    assert!(matches!(err, ModelError::Safetensors { .. }), "{err}");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

#[test]
fn wrong_shape_names_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let model = Gpt::new(tiny(PositionEncoding::Learned), 3).unwrap();
    save_gpt(dir.path(), &model, None).unwrap();
    // Claim a larger vocab in config.json than the weights hold.
    let cfg = dir.path().join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap().replace("\"vocab_size\": 13", "\"vocab_size\": 14");
    std::fs::write(&cfg, text).unwrap();
    let err = load_gpt(dir.path()).err().expect("must fail").to_string();
    assert!(err.contains("transformer.wte.weight") && err.contains("[13, 8]"), "{err}");
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let mut model = Gpt::new(tiny(PositionEncoding::Learned), 3).unwrap();
    assert!(model.forward(&[1; 7], None, 1, 7).is_err(), "longer than the context");
    assert!(model.forward(&[13], None, 1, 1).is_err(), "token out of range");
    assert!(model.backward(1.0).is_err(), "backward without targets");
    assert!(GptConfig::preset("nope").is_err());
    assert_eq!(GptConfig::gpt2_124m().num_params(), 124_439_808);
}
