use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

#[derive(Args)]
pub struct EvalArgs {
    /// A run folder or model folder (config.json, model.safetensors, tokenizer.json)
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    weights: crate::WeightArgs,
    /// UTF-8 text file to score, or a token shard such as RUN/data/val.bin;
    /// for an encoder-decoder, source<TAB>target pairs
    #[arg(long)]
    data: PathBuf,
    /// Encoder-decoders: beam width of the translations BLEU and chrF score, 1 is greedy [default: the folder's num_beams, else 1]
    #[arg(long, value_parser = crate::count)]
    beam: Option<usize>,
    /// Window length (default: the model's context; use the training --seq-len
    /// to reproduce a run's final val loss); classifiers: texts are cut to it (default: at most 512)
    #[arg(long, value_parser = crate::count)]
    seq_len: Option<usize>,
    /// Windows per forward pass (speed only)
    #[arg(long, default_value_t = 8, value_parser = crate::count)]
    batch_size: usize,
    /// Print one JSON object: loss, perplexity, bits_per_byte, tokens (encoder-decoders: loss, perplexity, tokens, bleu, chrf)
    #[arg(long)]
    json: bool,
    /// Classifiers: draw the confusion matrix (FILE.png or FILE.svg)
    #[arg(long)]
    out: Option<PathBuf>,
    /// Worker threads (default: all cores)
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(a: EvalArgs) -> anyhow::Result<()> {
    crate::set_threads(a.threads)?;
    let not_a_language_model = || attn_model::is_seq2seq_dir(&a.model) || attn_model::config_from_dir(&a.model).is_ok_and(|c| c.is_classifier());
    if a.weights.dtype.0.is_some_and(|d| d != attn_model::quant::WeightDtype::F32) && not_a_language_model() {
        anyhow::bail!(
            "--dtype {} applies to decoders (language models); {} is an encoder-decoder or a classifier",
            a.weights.dtype.0.map(|d| d.name()).unwrap_or_default(),
            a.model.display()
        );
    }
    if a.weights.kv_dtype.0 == Some(attn_model::KvDtype::Bf16) && not_a_language_model() {
        anyhow::bail!("--kv-dtype bf16 applies to decoders (language models); {} is an encoder-decoder or a classifier", a.model.display());
    }
    if attn_model::is_seq2seq_dir(&a.model) {
        return crate::translate::eval(&a.model, &a.data, a.beam, a.json);
    }
    if a.weights.adapter.is_none() && attn_model::config_from_dir(&a.model).is_ok_and(|c| c.is_classifier()) {
        return crate::classify::eval(&a.model, &a.data, a.json, a.out.as_deref(), a.batch_size, a.seq_len);
    }
    anyhow::ensure!(a.out.is_none(), "--out draws a classifier's confusion matrix; {} is not a classifier", a.model.display());
    let (mut model, tok) = a.weights.load(&a.model)?;
    let (ids, bytes) = if attn_train::data::TokenShard::is_shard(&a.data) {
        let shard = attn_train::data::TokenShard::open(&a.data)?;
        shard.check_tokenizer(tok.as_ref(), &format!("the model in {}", a.model.display()))?;
        let ids = shard.to_vec();
        let bytes = tok.decode_bytes(&ids).with_context(|| format!("{} does not match this model's tokenizer", a.data.display()))?.len();
        (ids, bytes)
    } else {
        let text = attn_train::data::read_corpus(std::slice::from_ref(&a.data))?;
        (tok.encode(&text).with_context(|| format!("tokenizing {}", a.data.display()))?, text.len())
    };
    let window = a.seq_len.unwrap_or(model.context());
    // A bar on a terminal (stderr), nothing otherwise.
    let bar = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::new(ids.len().saturating_sub(1) as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} tokens [{elapsed_precise} < {eta_precise}]").expect("valid template"));
    let r = attn_train::eval::evaluate_with_progress(&mut model, &ids, bytes, window, a.batch_size, &mut |done, _| bar.set_position(done as u64))?;
    bar.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!("loss {:.6} nats/token | perplexity {:.4} | {:.4} bits/byte | {} tokens", r.loss, r.perplexity, r.bits_per_byte, r.tokens);
    }
    Ok(())
}
