//! `attn`: parse the command line, run the subcommand, map the result to an
//! exit code. The work lives in the library crates.
// Doc comments here are clap's help text, written for a terminal
// (`source<TAB>target`), not for rustdoc.
#![allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]

mod bench;
mod bench_decode;
mod bench_gemm;
mod bench_seq2seq;
mod chat;
mod classify;
mod embed;
mod eval;
mod generate;
mod inspect;
mod inspect_seq2seq;
mod lora;
mod quantize;
mod serve;
mod spin_yield;
mod tokenizer;
mod train;
mod translate;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "attn", version, about = "A transformer language-model system, from tokenizer to training to generation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print shell completions (bash, zsh, fish, elvish, powershell) to stdout
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Train a GPT on text files, fine-tune one on prompts and chats (--task sft), or an encoder-decoder on translation pairs
    Train(Box<train::TrainArgs>),
    /// Generate text from a trained model
    Generate(generate::GenerateArgs),
    /// Classify texts with a classifier: labels and probabilities
    Classify(classify::ClassifyArgs),
    /// Chat with a model through its chat template (multi-turn, streamed); --render prints the prompt
    Chat(chat::ChatArgs),
    /// Translate or summarize with an encoder-decoder (greedy or beam search, as the folder's generation settings say)
    #[command(visible_alias = "summarize")]
    Translate(translate::TranslateArgs),
    /// Score a text file (loss, perplexity, bits per byte), translations (BLEU, chrF) or a classifier (accuracy, F1)
    Eval(eval::EvalArgs),
    /// Sentence embeddings from an encoder (BERT, e.g. all-MiniLM-L6-v2): one vector per text
    Embed(embed::EmbedArgs),
    /// Cosine similarity of the sentence embeddings of two or more texts
    Similarity(embed::SimilarityArgs),
    /// Look inside a model: attention maps, next-token distribution, logit lens, embeddings, tokens
    #[command(subcommand)]
    Inspect(inspect::InspectCommand),
    /// Serve a model over an OpenAI-compatible HTTP API, with a web page to chat and look inside it
    Serve(serve::ServeArgs),
    /// Write a model's dense weights as bf16 or int8 (a folder generate, chat, eval and serve load)
    Quantize(quantize::QuantizeArgs),
    /// LoRA adapters: merge one into its base model
    #[command(subcommand)]
    Lora(lora::LoraCommand),
    /// Train, encode, decode, show and convert tokenizers
    #[command(subcommand)]
    Tokenizer(tokenizer::TokenizerCommand),
    /// Time training steps, generation, translation, tokenizers, embeddings or the GEMM peak
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Sets the size of rayon's global pool, used by every kernel.
/// A closed pipe (`attn ... | head`) ends the program quietly with status 0.
pub fn quiet_on_broken_pipe(e: std::io::Error) -> anyhow::Result<()> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    Err(e.into())
}

/// Names on stderr the generation settings of a model folder that `what`
/// does not apply, rather than dropping them silently.
pub fn note_unapplied(fields: &[String], what: &str) {
    for f in fields {
        eprintln!("note: {f}: not applied by {what}");
    }
}

/// A decoder folder's generation_config.json, the settings the sampler does
/// not apply named on stderr (generate, chat and serve).
pub fn generation_config(dir: &std::path::Path) -> anyhow::Result<attn_generate::GenerationConfig> {
    let g = attn_generate::GenerationConfig::from_dir(dir)?;
    note_unapplied(&g.ignored, "attn's sampler");
    Ok(g)
}

/// Writes `text` and flushes, treating a closed pipe as a normal end.
pub fn print_or_quiet(out: &mut impl std::io::Write, text: &str) -> anyhow::Result<()> {
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) => quiet_on_broken_pipe(e),
    }
}

/// Colour on a terminal, unless NO_COLOR is set (no-color.org).
pub fn use_color() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

/// clap's parser for counts where 0 means nothing (steps, rounds, batch
/// sizes, beams): refused when parsed, with the flag named, rather than
/// quietly read as 1 or left to fail deep inside (a median of no rounds).
pub fn count(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

pub fn set_threads(threads: Option<usize>) -> anyhow::Result<()> {
    if let Some(n) = threads {
        anyhow::ensure!(n > 0, "--threads must be at least 1");
        // More threads than cores only add switching; cap with a note.
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        let n = if n > cores {
            eprintln!("note: --threads {n} is more than the {cores} cores here; using {cores}");
            cores
        } else {
            n
        };
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global()?;
    }
    Ok(())
}

/// Any model attn runs: a decoder (GPT-2, Llama, Qwen2) or an encoder (BERT).
// One lives per process, so the size difference between variants is moot.
#[allow(clippy::large_enum_variant)]
pub enum Loaded {
    Decoder(attn_model::Transformer),
    Encoder(attn_model::Transformer),
}

/// A model folder's weights and tokenizer, by config.json's `model_type`:
/// attn run folders, and Hugging Face GPT-2, Llama, Qwen2 and BERT folders.
pub fn load_any(dir: &std::path::Path) -> anyhow::Result<(Loaded, Box<dyn attn_tokenizer::Tokenizer>)> {
    load_any_with(dir, None)
}

/// `load_any` with a LoRA adapter (a PEFT folder) merged into the weights.
/// `dir` may itself be an adapter folder (an attn LoRA run): its
/// `base_model_name_or_path` names the base.
pub fn load_any_with(dir: &std::path::Path, adapter: Option<&std::path::Path>) -> anyhow::Result<(Loaded, Box<dyn attn_tokenizer::Tokenizer>)> {
    use anyhow::Context;
    use attn_model::lora::{adapter_base, is_adapter_dir};
    let m = attn_model::lora::load_merged(dir, adapter).with_context(|| match adapter {
        Some(a) => format!("loading the model in {} with the LoRA adapter in {}", dir.display(), a.display()),
        None => format!("loading the model in {}", dir.display()),
    })?;
    let model = if m.config.has_head() { Loaded::Decoder(m) } else { Loaded::Encoder(m) };
    // An adapter folder's own tokenizer (its run saved one) wins over the base's.
    let adapter_dir = adapter.map(std::path::Path::to_path_buf).or_else(|| is_adapter_dir(dir).then(|| dir.to_path_buf()));
    let tok_dir = match &adapter_dir {
        Some(a) if a.join("tokenizer.json").exists() => a.clone(),
        Some(a) if adapter.is_none() => std::path::PathBuf::from(adapter_base(a)?),
        _ => dir.to_path_buf(),
    };
    let tok = attn_tokenizer::load_tokenizer(&tok_dir, None).with_context(|| format!("loading the tokenizer of {}", tok_dir.display()))?;
    Ok((model, tok))
}

/// `--dtype`: how generation holds the dense weights.
#[derive(Clone, Copy, Debug)]
pub struct DtypeArg(pub Option<attn_model::quant::WeightDtype>);

impl std::str::FromStr for DtypeArg {
    type Err = String;
    /// `auto` (the folder's own: int8 or bf16 when it was saved so, else f32), `f32`, `bf16`, `int8`, `int8:G`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DtypeArg(None)),
            _ => attn_model::quant::WeightDtype::parse(s).map(|d| DtypeArg(Some(d))).map_err(|e| format!("{e}, or auto")),
        }
    }
}

/// `--kv-dtype`: how the KV cache holds keys and values.
#[derive(Clone, Copy, Debug)]
pub struct KvDtypeArg(pub Option<attn_model::KvDtype>);

impl std::str::FromStr for KvDtypeArg {
    type Err = String;
    /// `auto` (f32 for f32 weights, bf16 for bf16 or int8 ones), `f32`, `bf16`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(KvDtypeArg(None)),
            _ => attn_model::KvDtype::parse(s).map(|d| KvDtypeArg(Some(d))).ok_or_else(|| format!("unknown KV cache dtype {s:?}: expected auto, f32 or bf16")),
        }
    }
}

impl KvDtypeArg {
    pub fn apply(self, m: &mut attn_model::Transformer) {
        if let Some(d) = self.0 {
            m.set_kv_dtype(d);
        }
    }
}

/// How the commands that only run the inference path (generate, chat,
/// eval, serve) hold a decoder: an adapter merged in, and the number
/// formats of its dense weights and its KV cache.
#[derive(clap::Args, Clone, Debug)]
pub struct WeightArgs {
    /// A LoRA adapter (PEFT folder: adapter_config.json, adapter_model.safetensors) to merge into --model
    #[arg(long)]
    pub adapter: Option<std::path::PathBuf>,
    /// Dense weights: auto (the folder's own: bf16 or int8 when saved so, else f32), f32, bf16, int8 (a scale per 64 inputs) or int8:G
    #[arg(long, default_value = "auto")]
    pub dtype: DtypeArg,
    /// KV cache: auto (f32 for f32 weights, bf16 for bf16 or int8 ones), f32 or bf16 (bf16 halves its memory and what attention reads a token)
    #[arg(long, default_value = "auto")]
    pub kv_dtype: KvDtypeArg,
}

impl WeightArgs {
    /// The decoder in `dir` and its tokenizer, held as these arguments ask.
    pub fn load(&self, dir: &std::path::Path) -> anyhow::Result<(attn_model::Transformer, Box<dyn attn_tokenizer::Tokenizer>)> {
        use anyhow::Context;
        let (adapter, dtype) = (self.adapter.as_deref(), self.dtype);
        let plain = adapter.is_none() && !attn_model::lora::is_adapter_dir(dir);
        let (mut m, tok) = if plain && !attn_model::is_seq2seq_dir(dir) && dtype.0 != Some(attn_model::quant::WeightDtype::F32) {
            let (m, _) = attn_model::Transformer::load_as(dir, dtype.0).with_context(|| format!("loading the model in {}", dir.display()))?;
            if !m.config.has_head() {
                return Err(not_a_decoder(dir));
            }
            let tok = attn_tokenizer::load_tokenizer(dir, None).with_context(|| format!("loading the tokenizer of {}", dir.display()))?;
            (m, tok)
        } else {
            let (mut m, tok) = load_model_with(dir, adapter)?;
            if let Some(d) = dtype.0 {
                m.quantize(d).with_context(|| format!("converting the model in {} to {}", dir.display(), d.name()))?;
            }
            (m, tok)
        };
        self.kv_dtype.apply(&mut m);
        Ok((m, tok))
    }
}

/// Refuses an `--out` that holds anything: a new model folder never
/// overwrites a user's files.
pub fn check_new_folder(out: &std::path::Path, what: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    if out.exists() {
        let empty = std::fs::read_dir(out).with_context(|| format!("--out {}", out.display()))?.next().is_none();
        anyhow::ensure!(empty, "--out {} is not empty; {what} writes a new model folder, choose a new or empty --out", out.display());
    }
    Ok(())
}

/// Copies the tokenizer and chat-template files into `out`, each from the
/// first of `from` that has it.
pub fn copy_tokenizer_files(from: &[&std::path::Path], out: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context;
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "generation_config.json",
        "special_tokens_map.json",
        "vocab.json",
        "merges.txt",
        "source.spm",
        "target.spm",
        "target_vocab.json",
    ] {
        if let Some(src) = from.iter().map(|d| d.join(f)).find(|p| p.exists()) {
            std::fs::copy(&src, out.join(f)).with_context(|| format!("copying {}", src.display()))?;
        }
    }
    Ok(())
}

/// A decoder and its tokenizer, for the commands that predict tokens.
pub fn load_model_dir(dir: &std::path::Path) -> anyhow::Result<(attn_model::Transformer, Box<dyn attn_tokenizer::Tokenizer>)> {
    load_model_with(dir, None)
}

/// `load_model_dir` with an optional LoRA adapter merged in.
pub fn load_model_with(
    dir: &std::path::Path,
    adapter: Option<&std::path::Path>,
) -> anyhow::Result<(attn_model::Transformer, Box<dyn attn_tokenizer::Tokenizer>)> {
    match load_any_with(dir, adapter)? {
        (Loaded::Decoder(m), tok) => Ok((m, tok)),
        (Loaded::Encoder(_), _) => Err(not_a_decoder(dir)),
    }
}

fn not_a_decoder(dir: &std::path::Path) -> anyhow::Error {
    anyhow::anyhow!(
        "{} holds a BERT encoder, which does not predict next tokens; use `attn embed`, `attn similarity` or `attn inspect attention|embeddings|tokens`",
        dir.display()
    )
}

fn main() -> std::process::ExitCode {
    // The matches are kept so that `train --resume` can tell flags given on
    // the command line from defaults.
    // A closed pipe (`attn ... | head`) ends the program quietly with status
    // 0: Rust ignores SIGPIPE, which would turn the next write into an error
    // or a panic; exiting on it is what a command-line filter should do.
    #[cfg(unix)]
    let _ = signal_hook::flag::register_conditional_shutdown(signal_hook::consts::SIGPIPE, 0, std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)));
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = simd_override().and_then(|()| match cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "attn", &mut std::io::stdout());
            Ok(())
        }
        Command::Train(a) => train::run(*a, matches.subcommand_matches("train").expect("the train subcommand")),
        Command::Generate(a) => generate::run(a),
        Command::Chat(a) => chat::run(a),
        Command::Classify(a) => classify::run(a),
        Command::Translate(a) => translate::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Bench(c) => bench::run(c),
        Command::Tokenizer(c) => tokenizer::run(c),
        Command::Lora(c) => lora::run(c),
        Command::Quantize(a) => quantize::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Inspect(c) => inspect::run(c),
        Command::Embed(a) => embed::run_embed(a),
        Command::Similarity(a) => embed::run_similarity(a),
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `ATTN_SIMD=avx512|avx2|avx|portable` runs attn's own loop kernels at that
/// level or the best one below it the CPU has (to compare paths, or to test
/// a lower one); the kernels ignore a name they do not know, so it is
/// refused here. `ATTN_F32_GEMM=avx512|avx2|gemm-crate` likewise picks the f32 GEMM.
fn simd_override() -> anyhow::Result<()> {
    use attn_kernels::simd::Level;
    if let Ok(v) = std::env::var("ATTN_SIMD") {
        match Level::parse(&v) {
            Some(l) => attn_kernels::simd::set_level(l),
            None => anyhow::bail!("ATTN_SIMD={v:?} is not a level: use avx512, avx2, avx or portable (or unset it for the best this CPU has)"),
        };
    }
    // The same for the f32 GEMM (`attn_kernels::matmul::f32_gemm`).
    match std::env::var("ATTN_F32_GEMM").as_deref() {
        Ok("avx512" | "avx2" | "gemm-crate") | Err(_) => {}
        Ok(v) => anyhow::bail!("ATTN_F32_GEMM={v:?} is not a GEMM: use avx512, avx2 or gemm-crate (or unset it for the default, the gemm crate)"),
    }
    // And the bf16 path (`attn_kernels::mixed::bf16_path`), which the kernels
    // would otherwise quietly replace by the default when the name is unknown
    // or the CPU lacks the path.
    match std::env::var("ATTN_BF16_PATH").as_deref() {
        Err(_) => Ok(()),
        Ok(v @ ("amx" | "avx512-bf16" | "f32-emulated")) => {
            let got = attn_kernels::mixed::bf16_path();
            anyhow::ensure!(got == v, "ATTN_BF16_PATH={v:?}: this CPU lacks that path (it runs {got:?}); unset it for the best this CPU has");
            Ok(())
        }
        Ok(v) => anyhow::bail!("ATTN_BF16_PATH={v:?} is not a bf16 path: use amx, avx512-bf16 or f32-emulated (or unset it for the best this CPU has)"),
    }
}
