use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

#[derive(Args)]
pub struct EvalArgs {
    /// A run folder or model folder (config.json, model.safetensors, tokenizer.json)
    #[arg(long)]
    model: PathBuf,
    /// UTF-8 text file to score, or a token shard such as RUN/data/val.bin
    #[arg(long)]
    data: PathBuf,
    /// Window length (default: the model's context; use the training --seq-len
    /// to reproduce a run's final val loss)
    #[arg(long)]
    seq_len: Option<usize>,
    /// Windows per forward pass (speed only)
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Print one JSON object: loss, perplexity, bits_per_byte, tokens
    #[arg(long)]
    json: bool,
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(a: EvalArgs) -> anyhow::Result<()> {
    crate::set_threads(a.threads)?;
    let (mut model, tok) = crate::load_model_dir(&a.model)?;
    let (ids, bytes) = if attn_train::data::TokenShard::is_shard(&a.data) {
        let ids = attn_train::data::TokenShard::open(&a.data)?.to_vec();
        let bytes = tok.decode_bytes(&ids).with_context(|| format!("{} does not match this model's tokenizer", a.data.display()))?.len();
        (ids, bytes)
    } else {
        let text = attn_train::data::read_corpus(std::slice::from_ref(&a.data))?;
        (tok.encode(&text).with_context(|| format!("tokenizing {}", a.data.display()))?, text.len())
    };
    let window = a.seq_len.unwrap_or(model.context());
    let r = attn_train::eval::evaluate(&mut model, &ids, bytes, window, a.batch_size)?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!("loss {:.6} nats/token | perplexity {:.4} | {:.4} bits/byte | {} tokens", r.loss, r.perplexity, r.bits_per_byte, r.tokens);
    }
    Ok(())
}
