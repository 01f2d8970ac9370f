use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use attn_generate::{generate, GenerationConfig, Sampler, SamplerConfig, TextStream};
use clap::Args;

/// How the next token is chosen; shared by `generate` and `chat`.
#[derive(Args)]
pub struct SamplingArgs {
    /// Softmax temperature; 0 is greedy [default: generation_config.json's, else 0.8]
    #[arg(long, allow_negative_numbers = true)]
    temperature: Option<f32>,
    /// Keep the k most likely tokens, 0 keeps all [default: generation_config.json's, else 0]
    #[arg(long)]
    top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches p [default: generation_config.json's, else 1]
    #[arg(long, allow_negative_numbers = true)]
    top_p: Option<f32>,
    /// Above 1 discourages repeating tokens already in the text [default: generation_config.json's, else 1]
    #[arg(long, allow_negative_numbers = true)]
    repetition_penalty: Option<f32>,
    /// Seed of the sampler's random numbers
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl SamplingArgs {
    /// The sampler: flags win over the model folder's generation_config.json,
    /// which wins over attn's defaults.
    pub fn sampler(&self, gen_cfg: &GenerationConfig) -> anyhow::Result<Sampler> {
        let greedy_by_default = gen_cfg.do_sample == Some(false);
        let cfg = SamplerConfig {
            temperature: self.temperature.or(if greedy_by_default { Some(0.0) } else { gen_cfg.temperature }).unwrap_or(0.8),
            top_k: self.top_k.or(gen_cfg.top_k).unwrap_or(0),
            top_p: self.top_p.or(gen_cfg.top_p).unwrap_or(1.0),
            repetition_penalty: self.repetition_penalty.or(gen_cfg.repetition_penalty).unwrap_or(1.0),
        };
        Ok(Sampler::new(cfg, self.seed)?)
    }
}

#[derive(Args)]
pub struct GenerateArgs {
    /// A run folder or model folder (config.json, model.safetensors, tokenizer.json)
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    weights: crate::WeightArgs,
    /// The text to continue; "-" reads it from standard input
    #[arg(long, required_unless_present = "prompt_file", conflicts_with = "prompt_file")]
    prompt: Option<String>,
    /// Read the prompt from this file
    #[arg(long)]
    prompt_file: Option<PathBuf>,
    /// Most tokens to generate [default: generation_config.json's, else up to an end-of-sequence token or the end of the context]
    #[arg(long, allow_negative_numbers = true)]
    max_new_tokens: Option<usize>,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Stop when the generated text contains this string (repeatable); it is not printed
    #[arg(long)]
    stop: Vec<String>,
    /// Keep going past an end-of-sequence token
    #[arg(long)]
    ignore_eos: bool,
    /// Past the context, keep generating on the most recent tokens instead of failing
    #[arg(long)]
    sliding_window: bool,
    /// Print one JSON object (text, tokens, finish_reason, usage, timings) instead of streaming text
    #[arg(long)]
    json: bool,
    /// Worker threads (default: all cores)
    #[arg(long)]
    threads: Option<usize>,
}

fn read_prompt(a: &GenerateArgs) -> anyhow::Result<String> {
    match (&a.prompt, &a.prompt_file) {
        (Some(p), _) if p == "-" => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).context("reading the prompt from standard input")?;
            Ok(s)
        }
        (Some(p), _) => Ok(p.clone()),
        (None, Some(f)) => std::fs::read_to_string(f).with_context(|| format!("--prompt-file {}", f.display())),
        (None, None) => anyhow::bail!("give --prompt TEXT, --prompt - (standard input) or --prompt-file FILE"),
    }
}

pub fn run(a: GenerateArgs) -> anyhow::Result<()> {
    crate::set_threads(a.threads)?;
    let gen_cfg = crate::generation_config(&a.model)?;
    let mut sampler = a.sampling.sampler(&gen_cfg)?;
    let text = read_prompt(&a)?;
    let (mut model, tok) = a.weights.load(&a.model)?;
    // One sequence at a time: the layout its matrix-vector products read fastest.
    model.rows_for_decoding();
    let prompt = tok.encode(&text)?;
    anyhow::ensure!(!prompt.is_empty(), "the prompt is empty after tokenization; give at least one character");
    let mut eos: Vec<u32> = model.config.eos_token_ids.clone();
    eos.extend(&gen_cfg.eos_token_ids);
    if a.ignore_eos {
        eos.clear();
    }
    let max_new = a.max_new_tokens.or(gen_cfg.max_new_tokens.filter(|&n| a.sliding_window || prompt.len() + n <= model.context()));
    let mut out = std::io::stdout().lock();
    // The prompt is echoed with the first token, so an up-front error (such as
    // a context overflow) prints nothing else.
    let mut echo = (!a.json).then_some(text.as_str());
    let mut text = TextStream::new(a.stop.clone());
    let (mut io_err, mut generated) = (None, String::new());
    let t0 = Instant::now();
    let mut first_token_s = None;
    let done = generate(&model, &prompt, max_new, a.sliding_window, &eos, &mut sampler, |id| {
        first_token_s.get_or_insert_with(|| t0.elapsed().as_secs_f64());
        // Bytes, not text: a byte-level token may end inside a character.
        let (piece, stop) = text.push(&attn_generate::token_bytes(tok.as_ref(), id));
        if a.json {
            generated.push_str(&piece);
        } else if let Err(e) = write!(out, "{}{piece}", echo.take().unwrap_or("")).and_then(|_| out.flush()) {
            io_err = Some(e);
            return false;
        }
        !stop
    })?;
    if let Some(e) = io_err {
        return crate::quiet_on_broken_pipe(e);
    }
    let tail = text.finish();
    let total_s = t0.elapsed().as_secs_f64();
    if a.json {
        generated.push_str(&tail);
        let completion = done.completion_tokens;
        let first = first_token_s.unwrap_or(total_s);
        let json = serde_json::json!({
            "text": generated,
            "tokens": &done.ids[prompt.len()..],
            "finish_reason": done.finish_reason,
            "usage": {"prompt_tokens": prompt.len(), "completion_tokens": completion, "total_tokens": prompt.len() + completion},
            "timings": {"total_s": total_s, "first_token_s": first,
                        "decode_tok_per_s": if completion > 1 { (completion - 1) as f64 / (total_s - first).max(1e-9) } else { 0.0 }},
        });
        return crate::print_or_quiet(&mut out, &format!("{json}\n"));
    }
    crate::print_or_quiet(&mut out, &format!("{}{tail}\n", echo.unwrap_or("")))
}
