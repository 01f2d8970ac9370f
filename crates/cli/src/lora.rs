//! `attn lora merge`: a base model with a LoRA adapter added into its
//! weights, saved as an ordinary model folder.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum LoraCommand {
    /// Add an adapter into its base model's weights and save the result as a model folder
    Merge(MergeArgs),
}

#[derive(Args)]
pub struct MergeArgs {
    /// The base model folder
    #[arg(long)]
    model: PathBuf,
    /// The adapter: a PEFT folder (adapter_config.json, adapter_model.safetensors), e.g. an attn LoRA run
    #[arg(long)]
    adapter: PathBuf,
    /// Folder to write (new or empty): config.json, model.safetensors and the tokenizer files
    #[arg(long)]
    out: PathBuf,
}

pub fn run(c: LoraCommand) -> anyhow::Result<()> {
    let LoraCommand::Merge(a) = c;
    if a.out.exists() {
        let empty = std::fs::read_dir(&a.out).with_context(|| format!("--out {}", a.out.display()))?.next().is_none();
        anyhow::ensure!(empty, "--out {} is not empty; merging writes a new model folder, choose a new or empty --out", a.out.display());
    }
    let (model, _) = crate::load_model_with(&a.model, Some(&a.adapter))?;
    model.save(&a.out, None).with_context(|| format!("writing {}", a.out.display()))?;
    // The tokenizer and chat template the adapter was trained with, else the base's.
    for f in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json", "vocab.json", "merges.txt"] {
        if let Some(src) = [&a.adapter, &a.model].iter().map(|d| d.join(f)).find(|p| p.exists()) {
            std::fs::copy(&src, a.out.join(f)).with_context(|| format!("copying {}", src.display()))?;
        }
    }
    println!("merged {} into {}: {}", a.adapter.display(), a.model.display(), a.out.display());
    Ok(())
}
