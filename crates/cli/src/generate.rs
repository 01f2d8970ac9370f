use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use attn_generate::{generate, Sampler, SamplerConfig};
use attn_tokenizer::{CharTokenizer, Tokenizer};
use clap::Args;

#[derive(Args)]
pub struct GenerateArgs {
    /// A run folder or model folder (config.json, model.safetensors, tokenizer.json)
    #[arg(long)]
    model: PathBuf,
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value_t = 200)]
    max_new_tokens: usize,
    /// 0 is greedy
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    /// Keep the k most likely tokens (0 = all)
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(a: GenerateArgs) -> anyhow::Result<()> {
    crate::set_threads(a.threads)?;
    let mut sampler = Sampler::new(SamplerConfig { temperature: a.temperature, top_k: a.top_k, top_p: a.top_p }, a.seed)?;
    let tok = CharTokenizer::load(&a.model.join("tokenizer.json")).with_context(|| format!("loading the tokenizer of {}", a.model.display()))?;
    let (mut model, _) = attn_model::checkpoint::load_gpt(&a.model).with_context(|| format!("loading the model in {}", a.model.display()))?;
    let prompt = tok.encode(&a.prompt)?;
    anyhow::ensure!(!prompt.is_empty(), "the prompt is empty after tokenization; give at least one character");
    let mut out = std::io::stdout().lock();
    write!(out, "{}", a.prompt)?;
    generate(&mut model, &prompt, a.max_new_tokens, &mut sampler, |id| {
        // A character tokenizer never splits a character, so each id prints whole.
        if let Ok(s) = tok.decode(&[id]) {
            let _ = write!(out, "{s}");
            let _ = out.flush();
        }
    })?;
    writeln!(out)?;
    Ok(())
}
