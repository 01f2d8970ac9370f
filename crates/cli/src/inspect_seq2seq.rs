//! Looking inside an encoder-decoder: `attn inspect attention` (cross,
//! encoder or decoder), `next` and `lens` with a source and a target prefix.
//! The model always runs teacher-forced, as in training.

use std::path::{Path, PathBuf};

use anyhow::Context;
use attn_model::Seq2Seq;
use attn_tokenizer::Tokenizer;

use crate::inspect::AttnKind;
use crate::translate::{load_seq2seq, source_ids, target_ids};

/// Runs an encoder-decoder on `source` with the decoder reading the start
/// token and the target `prefix` (as `inspect next` and `inspect lens` look
/// at it); returns the decoder's inputs. Row i of the logits is the guess for
/// the token after input i.
fn forward_prefix(model: &mut Seq2Seq, tok: &dyn Tokenizer, source: &str, prefix: &str) -> anyhow::Result<Vec<u32>> {
    let src = source_ids(model, tok, source)?;
    let eos = model.config.eos_token_id;
    let mut tgt = if prefix.is_empty() { Vec::new() } else { tok.encode_target(prefix).with_context(|| format!("tokenizing {prefix:?}"))? };
    if tgt.last() == Some(&eos) {
        tgt.pop();
    }
    anyhow::ensure!(tgt.len() < model.config.n_ctx, "the target prefix has {} tokens, as many as the model's {} positions", tgt.len(), model.config.n_ctx);
    // The last label is a placeholder: only the decoder's inputs matter.
    let inputs: Vec<u32> = std::iter::once(model.config.decoder_start_token_id).chain(tgt.iter().copied()).collect();
    tgt.push(eos);
    teacher_forced(model, &src, &tgt)?;
    Ok(inputs)
}

/// `attn inspect next` on an encoder-decoder: the decoder's logits (V) for
/// the target token after `prefix`, given `source`; and the number of prefix tokens.
pub fn next_logits(model: &mut Seq2Seq, tok: &dyn Tokenizer, source: &str, prefix: &str) -> anyhow::Result<(Vec<f32>, usize)> {
    let inputs = forward_prefix(model, tok, source, prefix)?;
    let v = model.vocab_size();
    Ok((model.logits()[(inputs.len() - 1) * v..][..v].to_vec(), inputs.len() - 1))
}

/// `attn inspect lens` on an encoder-decoder: the decoder's inputs (the start
/// token and the target prefix) and, for the embeddings and each decoder
/// layer, the top-`k` guesses (id, probability) at every input.
pub fn decoder_lens(model: &mut Seq2Seq, tok: &dyn Tokenizer, source: &str, prefix: &str, k: usize) -> anyhow::Result<(Vec<u32>, attn_inspect::Lens)> {
    let inputs = forward_prefix(model, tok, source, prefix)?;
    let v = model.vocab_size();
    let lens = (0..=model.config.decoder_layers).map(|l| model.decoder_lens_logits(l).chunks(v).map(|row| attn_inspect::top_probs(row, k)).collect()).collect();
    Ok((inputs, lens))
}

/// `attn inspect attention` on an encoder-decoder: the model reads the source
/// and, teacher-forced as in training, the target; one of its attentions is
/// drawn. Without --layer / --head, the mean over the heads of the last layer.
pub fn attention(
    dir: &Path,
    source: Option<String>,
    target: Option<String>,
    kind: AttnKind,
    layer: Option<usize>,
    head: Option<usize>,
    out: Option<PathBuf>,
) -> anyhow::Result<()> {
    if kind == AttnKind::Self_ {
        anyhow::bail!("{} is an encoder-decoder: use --kind cross, encoder or decoder with --source and --target", dir.display());
    }
    let (Some(source), Some(target)) = (source, target) else {
        anyhow::bail!("an encoder-decoder needs --source TEXT and --target TEXT");
    };
    let (mut model, tok) = load_seq2seq(dir)?;
    let (side, nl, nh) = match kind {
        AttnKind::Encoder => ("encoder", model.config.encoder_layers, model.config.encoder_heads),
        _ => ("decoder", model.config.decoder_layers, model.config.decoder_heads),
    };
    for (what, v, n) in [("--layer", layer, nl), ("--head", head, nh)] {
        anyhow::ensure!(v.is_none_or(|v| v < n), "{what} {} is out of range: the {side} has {n} (counting from 0)", v.unwrap_or(0));
    }
    let (src, tgt) = (source_ids(&model, tok.as_ref(), &source)?, target_ids(&model, tok.as_ref(), &target)?);
    let start = model.config.decoder_start_token_id;
    teacher_forced(&mut model, &src, &tgt)?;
    let piece = |i: u32| tok.piece(i);
    let dec_in: Vec<u32> = std::iter::once(start).chain(tgt[..tgt.len() - 1].iter().copied()).collect();
    let (row_ids, col_ids, key) = match kind {
        AttnKind::Encoder => (&src, &src, "encoder_attention"),
        AttnKind::Decoder => (&dec_in, &dec_in, "decoder_attention"),
        // Self_ was refused above.
        AttnKind::Cross | AttnKind::Self_ => (&tgt, &src, "cross_attention"),
    };
    let (t, s) = (row_ids.len(), col_ids.len());
    let pieces = |ids: &[u32]| ids.iter().map(|&i| piece(i)).collect::<Vec<String>>();
    let (rows, cols) = (pieces(row_ids), pieces(col_ids));
    let maps: Vec<Vec<f32>> = (0..nl)
        .map(|l| match kind {
            AttnKind::Cross => model.cross_attention_probs(l).to_vec(),
            k => model.self_attention_probs(k == AttnKind::Decoder, l).to_vec(),
        })
        .collect();
    let l = layer.unwrap_or(nl - 1);
    let map: Vec<f32> = match head {
        Some(h) => maps[l][h * t * s..][..t * s].to_vec(),
        None => (0..t * s).map(|i| (0..nh).map(|h| maps[l][h * t * s + i]).sum::<f32>() / nh as f32).collect(),
    };
    let name = crate::inspect::model_name(dir);
    let what = key.replace('_', "-");
    let title = match head {
        Some(h) => format!("{name} — {what}, layer {l}, head {h}"),
        None => format!("{name} — {what}, layer {l}, mean of {nh} heads"),
    };
    match out {
        Some(f) if f.extension().is_some_and(|e| e == "json") => {
            let all: Vec<Vec<Vec<&[f32]>>> = maps.iter().map(|m| (0..nh).map(|h| m[h * t * s..][..t * s].chunks(s).collect()).collect()).collect();
            let v = serde_json::json!({
                "model": name, "source_tokens": pieces(&src), "target_tokens": pieces(&tgt), "source_ids": src, "target_ids": tgt,
                "decoder_input_ids": dec_in, "row_tokens": rows, "column_tokens": cols, key: all,
            });
            std::fs::write(&f, v.to_string()).with_context(|| format!("writing {}", f.display()))?;
            eprintln!("wrote {}", f.display());
        }
        Some(f) => {
            attn_inspect::plot::alignment(&f, &title, &rows, &cols, &map)?;
            eprintln!("wrote {}", f.display());
        }
        None => {
            // A terminal table: for each row token, the column token it attends to most.
            for (r, row) in map.chunks(s).enumerate() {
                let (best, p) = row.iter().enumerate().fold((0, 0.0f32), |b, (i, &p)| if p > b.1 { (i, p) } else { b });
                println!("{:>16} -> {:<16} {:.2}", attn_inspect::plot::label(&rows[r]), attn_inspect::plot::label(&cols[best]), p);
            }
        }
    }
    Ok(())
}

/// One forward pass over `src` with the decoder reading the start token and
/// `tgt` but its last token, as in training.
fn teacher_forced(model: &mut Seq2Seq, src: &[u32], tgt: &[u32]) -> anyhow::Result<()> {
    let batch = attn_model::Seq2SeqBatch::from_pairs(&[(src, tgt)], model.config.pad_token_id, model.config.decoder_start_token_id);
    model.forward(&batch, false, 0.0)?;
    Ok(())
}
