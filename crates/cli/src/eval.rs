use std::path::PathBuf;

use anyhow::Context;
use attn_tokenizer::{CharTokenizer, Tokenizer};
use clap::Args;

#[derive(Args)]
pub struct EvalArgs {
    /// A run folder or model folder (config.json, model.safetensors, tokenizer.json)
    #[arg(long)]
    model: PathBuf,
    /// UTF-8 text file to score
    #[arg(long)]
    data: PathBuf,
    /// Print one JSON object: loss, perplexity, bits_per_byte, tokens
    #[arg(long)]
    json: bool,
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(a: EvalArgs) -> anyhow::Result<()> {
    crate::set_threads(a.threads)?;
    let tok = CharTokenizer::load(&a.model.join("tokenizer.json")).with_context(|| format!("loading the tokenizer of {}", a.model.display()))?;
    let (mut model, _) = attn_model::checkpoint::load_gpt(&a.model).with_context(|| format!("loading the model in {}", a.model.display()))?;
    let text = attn_train::data::read_corpus(std::slice::from_ref(&a.data))?;
    let ids = tok.encode(&text).with_context(|| format!("tokenizing {}", a.data.display()))?;
    let r = attn_train::eval::evaluate(&mut model, &ids, text.len())?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!("loss {:.6} nats/token | perplexity {:.4} | {:.4} bits/byte | {} tokens", r.loss, r.perplexity, r.bits_per_byte, r.tokens);
    }
    Ok(())
}
