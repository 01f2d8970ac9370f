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
    crate::check_new_folder(&a.out, "merging")?;
    let (model, _) = crate::load_model_with(&a.model, Some(&a.adapter))?;
    model.save(&a.out, None).with_context(|| format!("writing {}", a.out.display()))?;
    // The tokenizer and chat template the adapter was trained with, else the base's.
    crate::copy_tokenizer_files(&[&a.adapter, &a.model], &a.out)?;
    println!("merged {} into {}: {}", a.adapter.display(), a.model.display(), a.out.display());
    Ok(())
}
