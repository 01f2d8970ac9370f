//! `attn`: parse the command line, run the subcommand, map the result to an
//! exit code. The work lives in the library crates.

mod bench;
mod eval;
mod generate;
mod inspect;
mod tokenizer;
mod train;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "attn", version, about = "A transformer language-model system, from tokenizer to training to generation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a GPT on text files
    Train(train::TrainArgs),
    /// Generate text from a trained model
    Generate(generate::GenerateArgs),
    /// Score a text file: loss, perplexity, bits per byte
    Eval(eval::EvalArgs),
    /// Look inside a model: attention maps, next-token distribution, logit lens, embeddings, tokens
    #[command(subcommand)]
    Inspect(inspect::InspectCommand),
    /// Train, encode, decode, show and convert tokenizers
    #[command(subcommand)]
    Tokenizer(tokenizer::TokenizerCommand),
    /// Time training steps or the GEMM peak
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Sets the size of rayon's global pool, used by every kernel.
pub fn set_threads(threads: Option<usize>) -> anyhow::Result<()> {
    if let Some(n) = threads {
        anyhow::ensure!(n > 0, "--threads must be at least 1");
        rayon::ThreadPoolBuilder::new().num_threads(n).build_global()?;
    }
    Ok(())
}

/// A model folder's weights and tokenizer (attn run folders and HF GPT-2 folders).
pub fn load_model_dir(dir: &std::path::Path) -> anyhow::Result<(attn_model::Gpt, Box<dyn attn_tokenizer::Tokenizer>)> {
    use anyhow::Context;
    let tok = attn_tokenizer::load_tokenizer(dir, None).with_context(|| format!("loading the tokenizer of {}", dir.display()))?;
    let (model, _) = attn_model::checkpoint::load_gpt(dir).with_context(|| format!("loading the model in {}", dir.display()))?;
    Ok((model, tok))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => train::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Eval(a) => eval::run(a),
        Command::Bench(c) => bench::run(c),
        Command::Tokenizer(c) => tokenizer::run(c),
        Command::Inspect(c) => inspect::run(c),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
