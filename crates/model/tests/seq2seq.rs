//! The encoder-decoder against transformers 5.x (testdata/seq2seq, written by
//! tools/reference/seq2seq_golden.py): random-init Marian, BART and (pre-norm) mBART of odd
//! shapes, loaded from the folders `save_pretrained` wrote, on a right-padded
//! batch with S, T >= 64. Logits within 1e-4, the loss (plain and
//! label-smoothed) within 1e-5, every gradient within 1e-3 of its tensor's
//! largest entry (or of 1e-5, for the key biases whose true gradient is 0). Also: the cached decoder equals the training forward, a
//! padded batch equals each pair alone, and a saved model loads back exactly.

use std::path::PathBuf;

use attn_kernels::crossentropy::IGNORE;
use attn_model::checkpoint::TensorFile;
use attn_model::{Seq2Seq, Seq2SeqBatch, Seq2SeqConfig};

fn testdata(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/seq2seq").join(p)
}

fn golden() -> TensorFile {
    TensorFile::open(&testdata("golden.safetensors")).expect("fixture present")
}

fn batch_of(g: &TensorFile, v: &str) -> Seq2SeqBatch {
    let src = g.read_ids(&format!("{v}.src")).unwrap();
    let src_len: Vec<usize> = g.read_ids(&format!("{v}.src_len")).unwrap().iter().map(|&x| x as usize).collect();
    // -100 read as u32 is IGNORE's neighbour; map it explicitly.
    let labels: Vec<u32> = g.read_ids(&format!("{v}.labels")).unwrap().iter().map(|&x| if x as i32 == -100 { IGNORE } else { x }).collect();
    let tgt_in = g.read_ids(&format!("{v}.decoder_input_ids")).unwrap();
    let (b, s, t) = (src_len.len(), src.len() / src_len.len(), labels.len() / src_len.len());
    Seq2SeqBatch { b, s, t, src, src_len, tgt_in, labels }
}

use attn_kernels::gradcheck::{max_diff, relative_diff};

#[test]
fn marian_bart_and_mbart_match_transformers() {
    let g = golden();
    for v in ["marian", "bart", "mbart"] {
        let (mut m, _) = Seq2Seq::load(&testdata(v)).unwrap();
        let batch = batch_of(&g, v);
        // Our batch builder gives the decoder inputs transformers built.
        let pairs: Vec<(Vec<u32>, Vec<u32>)> = (0..batch.b)
            .map(|i| {
                let src = batch.src[i * batch.s..][..batch.src_len[i]].to_vec();
                let tgt = batch.labels[i * batch.t..][..batch.t].iter().copied().filter(|&x| x != IGNORE).collect();
                (src, tgt)
            })
            .collect();
        let refs: Vec<(&[u32], &[u32])> = pairs.iter().map(|(a, b)| (a.as_slice(), b.as_slice())).collect();
        let built = Seq2SeqBatch::from_pairs(&refs, m.config.pad_token_id, m.config.decoder_start_token_id);
        assert_eq!(
            (built.src.clone(), built.tgt_in.clone(), built.labels.clone()),
            (batch.src.clone(), batch.tgt_in.clone(), batch.labels.clone()),
            "{v}: batch"
        );

        let smoothed = m.forward(&batch, true, 0.1).unwrap().unwrap();
        let want_ls = g.read_f32(&format!("{v}.loss_ls")).unwrap()[0];
        assert!((smoothed.loss - want_ls).abs() < 1e-5, "{v}: smoothed loss {} vs {want_ls}", smoothed.loss);
        let loss = m.forward(&batch, true, 0.0).unwrap().unwrap();
        let want = g.read_f32(&format!("{v}.loss")).unwrap()[0];
        assert!((loss.loss - want).abs() < 1e-5 && (loss.nll - want).abs() < 1e-5, "{v}: loss {loss:?} vs {want}");
        let logits = g.read_f32(&format!("{v}.logits")).unwrap();
        let d = max_diff(m.logits(), &logits);
        assert!(d < 1e-4, "{v}: logits differ by {d}");

        m.zero_grad();
        m.backward(1.0).unwrap();
        let (mut checked, mut worst) = (0, 0.0f32);
        for e in m.layout.entries.clone() {
            let key = format!("{v}.grad.{}", e.name);
            let Ok(want) = g.read_f32(&key) else {
                assert_eq!(e.name, "final_logits_bias", "{v}: no reference gradient for {}", e.name);
                assert!(m.grads()[e.range()].iter().all(|&x| x == 0.0), "{v}: the logits bias is a buffer");
                continue;
            };
            let got = &m.grads()[e.range()];
            // Against the largest entry, floored for the key biases (`relative_diff`).
            let rel = relative_diff(got, &want);
            assert!(rel < 1e-3, "{v}: gradient of {} off by {rel:.2e} of its largest entry", e.name);
            checked += 1;
            worst = worst.max(rel);
        }
        assert!(checked > 40, "{v}: only {checked} gradients compared");
        println!("{v}: loss {} logits max diff {d:.2e}, {checked} gradients, worst {worst:.2e} relative", loss.loss);
    }
}

/// The inference path (encode once, one token per step from the KV cache)
/// gives the training forward's logits at every position, with one
/// hypothesis per source (2 rows: matrix-vector products) and with four (8
/// rows: gemm).
#[test]
fn cached_decoding_equals_training_forward() {
    let g = golden();
    for v in ["marian", "bart", "mbart"] {
        let (mut m, _) = Seq2Seq::load(&testdata(v)).unwrap();
        let batch = batch_of(&g, v);
        m.forward(&batch, false, 0.0).unwrap();
        let full = m.logits().to_vec();
        let mem = m.encode_sources(&batch.src, &batch.src_len, batch.s).unwrap();
        let vsz = m.vocab_size();
        for k in [1, 4] {
            let mut cache = m.new_decoder_cache(&mem, k, batch.t).unwrap();
            let mut worst = 0.0f32;
            for pos in 0..batch.t {
                let tokens: Vec<u32> = (0..batch.b * k).map(|r| batch.tgt_in[(r / k) * batch.t + pos]).collect();
                let step = m.decode_step(&tokens, &mut cache, &mem).unwrap();
                for r in 0..batch.b * k {
                    worst = worst.max(max_diff(&step[r * vsz..][..vsz], &full[((r / k) * batch.t + pos) * vsz..][..vsz]));
                }
            }
            assert!(worst < 2e-5, "{v}, {k} hypotheses a source: cached logits differ by {worst}");
        }
    }
}

/// Each pair of a padded batch gets the logits it gets alone.
#[test]
fn padded_batch_equals_each_pair_alone() {
    let (mut m, _) = Seq2Seq::load(&testdata("bart")).unwrap();
    let batch = batch_of(&golden(), "bart");
    m.forward(&batch, false, 0.0).unwrap();
    let full = m.logits().to_vec();
    let vsz = m.vocab_size();
    for i in 0..batch.b {
        let s = batch.src_len[i];
        let t = batch.labels[i * batch.t..][..batch.t].iter().filter(|&&x| x != IGNORE).count();
        let one = Seq2SeqBatch {
            b: 1,
            s,
            t,
            src: batch.src[i * batch.s..][..s].to_vec(),
            src_len: vec![s],
            tgt_in: batch.tgt_in[i * batch.t..][..t].to_vec(),
            labels: batch.labels[i * batch.t..][..t].to_vec(),
        };
        m.forward(&one, false, 0.0).unwrap();
        let d = max_diff(m.logits(), &full[i * batch.t * vsz..][..t * vsz]);
        assert!(d < 1e-5, "pair {i}: alone and batched differ by {d}");
    }
}

#[test]
fn saved_model_loads_back_exactly() {
    let dir = std::env::temp_dir().join(format!("attn-s2s-save-{}", std::process::id()));
    let m = Seq2Seq::new(Seq2SeqConfig::preset("transformer-tiny", 50).unwrap(), 3).unwrap();
    m.save(&dir, None).unwrap();
    let (back, _) = Seq2Seq::load(&dir).unwrap();
    assert_eq!(back.config.to_hf(), m.config.to_hf());
    assert_eq!(back.params, m.params);
    std::fs::remove_dir_all(&dir).ok();
}

/// Every field that changes the arithmetic and is not implemented is refused by name.
#[test]
fn unsupported_configs_name_the_field() {
    let base: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(testdata("marian/config.json")).unwrap()).unwrap();
    let p = std::path::Path::new("x/config.json");
    for (field, value) in [
        ("activation_function", serde_json::json!("mish")),
        ("share_encoder_decoder_embeddings", serde_json::json!(false)),
        ("tie_word_embeddings", serde_json::json!(false)),
        ("normalize_before", serde_json::json!(true)),
        ("d_model", serde_json::json!(41)),
        ("decoder_vocab_size", serde_json::json!(7)),
        ("pad_token_id", serde_json::json!(1000)),
        ("encoder_layers", serde_json::json!("two")),
    ] {
        let mut v = base.clone();
        v[field] = value;
        let err = Seq2SeqConfig::from_hf(&v, p).unwrap_err().to_string();
        assert!(err.contains(field) || (field == "d_model" && err.contains("attention_heads")), "{field}: {err}");
        assert!(err.contains("x/config.json"), "{err}");
    }
    // A missing or foreign model_type says what it must be, not a Rust debug value.
    let mut v = base.clone();
    v.as_object_mut().unwrap().remove("model_type");
    let err = Seq2SeqConfig::from_hf(&v, p).unwrap_err().to_string();
    assert!(err.contains("model_type") && err.contains("missing") && err.contains("marian") && !err.contains("None"), "{err}");
    v["model_type"] = serde_json::json!("t5");
    let err = Seq2SeqConfig::from_hf(&v, p).unwrap_err().to_string();
    assert!(err.contains("\"t5\"") && !err.contains("Some("), "{err}");
}

/// A folder attn's trainer wrote gives transformers' MarianMTModel the same
/// logits (tools/reference/marian_export_golden.py loaded it with
/// from_pretrained and saved its logits beside it).
#[test]
fn attn_written_marian_folder_matches_transformers() {
    let dir = testdata("attn_marian");
    let (mut m, _) = Seq2Seq::load(&dir).unwrap();
    let g = TensorFile::open(&dir.join("hf_logits.safetensors")).unwrap();
    let src = g.read_ids("src").unwrap();
    let src_len: Vec<usize> = g.read_ids("src_len").unwrap().iter().map(|&x| x as usize).collect();
    let labels: Vec<u32> = g.read_ids("labels").unwrap().iter().map(|&x| if x as i32 == -100 { IGNORE } else { x }).collect();
    let (b, s) = (src_len.len(), src.len() / src_len.len());
    let t = labels.len() / b;
    let pairs: Vec<(Vec<u32>, Vec<u32>)> =
        (0..b).map(|i| (src[i * s..][..src_len[i]].to_vec(), labels[i * t..][..t].iter().copied().filter(|&x| x != IGNORE).collect())).collect();
    let refs: Vec<(&[u32], &[u32])> = pairs.iter().map(|(a, b)| (a.as_slice(), b.as_slice())).collect();
    let batch = Seq2SeqBatch::from_pairs(&refs, m.config.pad_token_id, m.config.decoder_start_token_id);
    let loss = m.forward(&batch, true, 0.0).unwrap().unwrap();
    let want = g.read_f32("logits").unwrap();
    let d = max_diff(m.logits(), &want);
    assert!(d < 1e-4, "logits differ from MarianMTModel's by {d}");
    assert!((loss.loss - g.read_f32("loss").unwrap()[0]).abs() < 1e-5);
}

/// Token-count batches change shape every step while the activation buffers
/// keep the largest size seen: a small batch after a large one gets exactly
/// the loss and gradients it gets in a fresh model.
#[test]
fn a_smaller_batch_after_a_larger_one_is_unaffected() {
    for v in ["marian", "mbart"] {
        let (mut used, _) = Seq2Seq::load(&testdata(v)).unwrap();
        let (mut fresh, _) = Seq2Seq::load(&testdata(v)).unwrap();
        let big = batch_of(&golden(), v);
        let pairs: Vec<(Vec<u32>, Vec<u32>)> =
            (0..2).map(|i| (big.src[i * big.s..][..9 + i].to_vec(), big.labels[i * big.t..][..7 + 3 * i].to_vec())).collect();
        let refs: Vec<(&[u32], &[u32])> = pairs.iter().map(|(a, b)| (a.as_slice(), b.as_slice())).collect();
        let small = Seq2SeqBatch::from_pairs(&refs, used.config.pad_token_id, used.config.decoder_start_token_id);
        used.forward(&big, true, 0.1).unwrap();
        used.zero_grad();
        used.backward(1.0).unwrap();
        used.zero_grad();
        let a = used.forward(&small, true, 0.1).unwrap().unwrap();
        used.backward(1.0).unwrap();
        fresh.zero_grad();
        let b = fresh.forward(&small, true, 0.1).unwrap().unwrap();
        fresh.backward(1.0).unwrap();
        assert_eq!(a.loss.to_bits(), b.loss.to_bits(), "{v}: loss");
        let d = max_diff(used.grads(), fresh.grads());
        assert!(d == 0.0, "{v}: gradients differ by {d} after a larger batch");
    }
}

/// The logit lens read at the decoder's last layer is the model's logits, bit
/// for bit, whether the stack ends in a final norm (mBART, pre-norm) or not
/// (Marian, BART); the embeddings' row has the same shape.
#[test]
fn the_lens_at_the_last_layer_is_the_logits() {
    let g = golden();
    for v in ["marian", "bart", "mbart"] {
        let (mut m, _) = Seq2Seq::load(&testdata(v)).unwrap();
        let batch = batch_of(&g, v);
        m.forward(&batch, false, 0.0).unwrap();
        let last = m.decoder_lens_logits(m.config.decoder_layers);
        assert!(last == m.logits(), "{v}: the last layer's lens is not the logits");
        assert_eq!(m.decoder_lens_logits(0).len(), last.len(), "{v}");
        assert!(m.decoder_lens_logits(0) != last, "{v}: the embeddings read like the last layer");
    }
}
