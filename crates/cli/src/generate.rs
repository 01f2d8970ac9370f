use std::io::Write;
use std::path::PathBuf;

use attn_generate::{generate, Sampler, SamplerConfig, StopStrings, Utf8Stream};
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
    /// > 1 discourages repeating tokens already in the text
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Stop when the generated text contains this string (repeatable); it is not printed
    #[arg(long)]
    stop: Vec<String>,
    /// Past the context, keep generating on the most recent tokens instead of failing
    #[arg(long)]
    sliding_window: bool,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(a: GenerateArgs) -> anyhow::Result<()> {
    crate::set_threads(a.threads)?;
    let cfg = SamplerConfig { temperature: a.temperature, top_k: a.top_k, top_p: a.top_p, repetition_penalty: a.repetition_penalty };
    let mut sampler = Sampler::new(cfg, a.seed)?;
    let (mut model, tok) = crate::load_model_dir(&a.model)?;
    let prompt = tok.encode(&a.prompt)?;
    anyhow::ensure!(!prompt.is_empty(), "the prompt is empty after tokenization; give at least one character");
    let mut out = std::io::stdout().lock();
    // The prompt is echoed with the first token, so an up-front error (such as
    // a context overflow) prints nothing else.
    let mut echo = Some(a.prompt.as_str());
    let mut stops = StopStrings::new(a.stop.clone());
    let mut utf8 = Utf8Stream::default();
    let mut io_err = None;
    let mut stopped = false;
    generate(&mut model, &prompt, a.max_new_tokens, a.sliding_window, &mut sampler, |id| {
        // Bytes, not text: a byte-level token may end inside a character.
        let (text, stop) = stops.push(&utf8.push(&tok.decode_bytes(&[id]).unwrap_or_default()));
        let prompt = echo.take().unwrap_or("");
        if let Err(e) = write!(out, "{prompt}{text}").and_then(|_| out.flush()) {
            io_err = Some(e);
            return false;
        }
        stopped = stop;
        !stop
    })?;
    if let Some(e) = io_err {
        return Err(e.into());
    }
    if !stopped {
        let (tail, _) = stops.push(&utf8.finish());
        write!(out, "{tail}{}", stops.finish())?;
    }
    writeln!(out)?;
    Ok(())
}
