//! `attn quantize`: a decoder folder with its dense weights as bf16 or
//! int8, written as a new folder that generate, chat, eval and serve load
//! as it is (see docs/PERFORMANCE.md, "Smaller weights").

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

#[derive(Args)]
pub struct QuantizeArgs {
    /// The model folder (attn run or Hugging Face GPT-2, Llama, Qwen2 folder)
    #[arg(long)]
    model: PathBuf,
    /// A LoRA adapter to merge in first
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// bf16 (a Hugging Face folder of BF16 matrices), int8 (a scale per 64 inputs) or int8:G
    #[arg(long)]
    dtype: crate::DtypeArg,
    /// Folder to write (new or empty)
    #[arg(long)]
    out: PathBuf,
}

pub fn run(a: QuantizeArgs) -> anyhow::Result<()> {
    let Some(dtype) = a.dtype.0 else { anyhow::bail!("--dtype auto keeps the folder as it is; give bf16, int8 or int8:G") };
    anyhow::ensure!(
        dtype != attn_model::quant::WeightDtype::F32,
        "--dtype f32: the folder is f32 already, or `attn quantize` has nothing to widen to; give bf16, int8 or int8:G"
    );
    crate::check_new_folder(&a.out, "quantizing")?;
    let mut model = match &a.adapter {
        Some(_) => crate::load_model_with(&a.model, a.adapter.as_deref())?.0,
        None => {
            attn_model::Transformer::load_as(&a.model, Some(attn_model::quant::WeightDtype::F32))
                .with_context(|| format!("loading the model in {}", a.model.display()))?
                .0
        }
    };
    let before = model.weight_bytes();
    model.quantize(dtype).with_context(|| format!("converting {} to {}", a.model.display(), dtype.name()))?;
    model.save(&a.out, None).with_context(|| format!("writing {}", a.out.display()))?;
    let mut from = vec![a.model.as_path()];
    from.extend(a.adapter.as_deref());
    crate::copy_tokenizer_files(&from, &a.out)?;
    println!(
        "{} -> {} ({}): weights {:.1} MB -> {:.1} MB",
        a.model.display(),
        a.out.display(),
        dtype.name(),
        before as f64 / 1e6,
        model.weight_bytes() as f64 / 1e6
    );
    Ok(())
}
