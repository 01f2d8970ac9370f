use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;

use anyhow::Context;
use attn_model::{config_from_dir, Family, TransformerConfig};
use attn_train::optim::{DecayRule, OptimizerKind};
use attn_train::{TokenizerSpec, TrainConfig, TrainRun};
use clap::{Args, ValueEnum};

#[derive(Clone, Copy, ValueEnum)]
enum Opt {
    Adamw,
    Sgd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Position {
    Learned,
    Sinusoidal,
}

#[derive(Args)]
// A later flag overrides an earlier one, so scripts can pass defaults and let
// their callers append overrides.
#[command(args_override_self = true)]
pub struct TrainArgs {
    /// Text files to train on (concatenated)
    #[arg(long, num_args = 1.., required = true)]
    data: Vec<PathBuf>,
    /// Run folder: checkpoint, metrics.jsonl, loss.png, token shards
    #[arg(long)]
    out: PathBuf,
    /// Model size: gpt2-124m, gpt2-350m, shakespeare-char, baby, llama-baby
    #[arg(long, default_value = "baby")]
    preset: String,
    /// Fine-tune: start from a model folder's weights, config and tokenizer
    /// (an attn run, or a Hugging Face GPT-2, Llama, Qwen2 or Mistral folder) instead of a random model
    #[arg(long, conflicts_with_all = ["preset", "tokenizer", "position"])]
    init: Option<PathBuf>,
    /// "char" trains a character vocabulary on the data; "bpe:N" trains an N-token byte-level
    /// BPE on it; or a tokenizer file or folder (tokenizer.json, vocab.json + merges.txt, .tiktoken)
    #[arg(long, default_value = "char")]
    tokenizer: String,
    /// Optimizer steps to run (with --resume: the new total)
    #[arg(long, allow_negative_numbers = true, default_value_t = 2000)]
    steps: usize,
    /// Sequences per micro-batch
    #[arg(long, allow_negative_numbers = true, default_value_t = 12)]
    batch_size: usize,
    /// Sequence length (default: the model's context)
    #[arg(long, allow_negative_numbers = true)]
    seq_len: Option<usize>,
    /// Peak learning rate (after warmup, before cosine decay)
    #[arg(long, allow_negative_numbers = true, default_value_t = 1e-3)]
    lr: f32,
    /// Final learning rate of the cosine decay (default: lr / 10)
    #[arg(long, allow_negative_numbers = true)]
    min_lr: Option<f32>,
    /// Linear warmup steps
    #[arg(long, default_value_t = 100)]
    warmup: usize,
    /// Evaluate and checkpoint every this many steps
    #[arg(long, default_value_t = 250)]
    eval_every: usize,
    /// Validation batches per evaluation
    #[arg(long, default_value_t = 20)]
    eval_batches: usize,
    /// Micro-batches accumulated per optimizer step
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// adamw or sgd
    #[arg(long, value_enum, default_value = "adamw")]
    optimizer: Opt,
    /// AdamW / SGD weight decay on matrices
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.1)]
    weight_decay: f32,
    /// Also decay embeddings (nanoGPT's rule); by default only matrices decay
    #[arg(long)]
    decay_embeddings: bool,
    /// AdamW first-moment decay
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.9)]
    beta1: f32,
    /// AdamW second-moment decay
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.99)]
    beta2: f32,
    /// SGD momentum
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.9)]
    momentum: f32,
    /// Global gradient-norm clip (0 disables)
    #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
    grad_clip: f32,
    /// Fraction of the corpus held out for validation
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.1)]
    val_fraction: f64,
    /// Position encoding of GPT presets
    #[arg(long, value_enum, default_value = "learned")]
    position: Position,
    /// Seed for initialisation and batch sampling
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// Worker threads (default: all cores)
    #[arg(long)]
    threads: Option<usize>,
    /// Replace the run already in --out (a new run refuses to otherwise)
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
    /// Continue the run in --out from its last checkpoint
    #[arg(long)]
    resume: bool,
    /// Stop after this step as if interrupted (checkpoints first); for testing --resume
    #[arg(long, hide = true)]
    halt_at: Option<usize>,
    /// No progress bar or per-eval lines
    #[arg(long)]
    quiet: bool,
}

pub fn run(a: TrainArgs, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    crate::set_threads(a.threads)?;
    let given = |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    let saved = if a.resume { Some(attn_train::saved_train_config(&a.out)?) } else { None };
    let model = match &a.init {
        // A resumed run is what its folder says it is, however it began.
        _ if a.resume => config_from_dir(&a.out).with_context(|| format!("--resume: the run in {}", a.out.display()))?,
        Some(dir) => config_from_dir(dir).with_context(|| format!("--init {}", dir.display()))?,
        None => {
            let mut m = TransformerConfig::preset(&a.preset)?;
            match (m.family, a.position) {
                (Family::Gpt2, Position::Sinusoidal) => m.position = attn_model::Position::Sinusoidal,
                (_, Position::Learned) => {}
                _ => anyhow::bail!("--position applies to GPT presets; Llama uses rotary positions"),
            }
            m
        }
    };
    let fresh = TrainConfig {
        steps: a.steps,
        batch_size: a.batch_size,
        seq_len: a.seq_len.unwrap_or(model.n_ctx),
        grad_accum: a.grad_accum,
        lr: a.lr,
        min_lr: a.min_lr.unwrap_or(a.lr / 10.0),
        warmup: a.warmup,
        weight_decay: a.weight_decay,
        optimizer: match a.optimizer {
            Opt::Adamw => OptimizerKind::AdamW { beta1: a.beta1, beta2: a.beta2, eps: 1e-8 },
            Opt::Sgd => OptimizerKind::Sgd { momentum: a.momentum },
        },
        decay_rule: if a.decay_embeddings { DecayRule::MatricesAndEmbeddings } else { DecayRule::Matrices },
        grad_clip: a.grad_clip,
        eval_every: a.eval_every,
        eval_batches: a.eval_batches,
        val_fraction: a.val_fraction,
        seed: a.seed,
    };
    // On --resume the saved options hold, with the flags given now on top;
    // the trainer refuses any change but --steps and --eval-every.
    let config = if let Some(mut c) = saved {
        macro_rules! take {
            ($($field:ident: $flag:literal),*) => {$( if given($flag) { c.$field = fresh.$field.clone(); } )*};
        }
        take!(steps: "steps", batch_size: "batch_size", seq_len: "seq_len", grad_accum: "grad_accum", lr: "lr", min_lr: "min_lr",
              warmup: "warmup", weight_decay: "weight_decay", grad_clip: "grad_clip", eval_every: "eval_every",
              eval_batches: "eval_batches", val_fraction: "val_fraction", seed: "seed");
        if ["optimizer", "beta1", "beta2", "momentum"].iter().any(|f| given(f)) {
            c.optimizer = fresh.optimizer;
        }
        if given("decay_embeddings") {
            c.decay_rule = fresh.decay_rule;
        }
        c
    } else {
        fresh
    };
    let tokenizer = match a.tokenizer.as_str() {
        "char" => TokenizerSpec::Char,
        other if other.starts_with("bpe:") => {
            let n = other[4..].parse().with_context(|| format!("--tokenizer {other}: expected bpe:N with N the vocab size, e.g. bpe:4096"))?;
            TokenizerSpec::Bpe(n)
        }
        path => TokenizerSpec::File(PathBuf::from(path)),
    };
    // SIGINT (Ctrl-C) and SIGTERM both finish the step, checkpoint and exit
    // with 130 / 143; a second signal exits at once.
    let (stop, sigterm) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    for (sig, code) in [(SIGINT, 130), (SIGTERM, 143)] {
        flag::register_conditional_shutdown(sig, code, stop.clone()).context("installing the signal handlers")?;
        flag::register(sig, stop.clone()).context("installing the signal handlers")?;
    }
    flag::register(SIGTERM, sigterm.clone()).context("installing the signal handlers")?;
    let run = TrainRun {
        out: a.out.clone(),
        data: a.data,
        model,
        tokenizer,
        config,
        resume: a.resume,
        overwrite: a.overwrite,
        init: a.init,
        halt_at: a.halt_at,
        quiet: a.quiet,
        stop: &stop,
    };
    let s = attn_train::train(&run)?;
    println!("{}", serde_json::to_string(&s)?);
    if s.interrupted && stop.load(Ordering::SeqCst) {
        std::process::exit(if sigterm.load(Ordering::SeqCst) { 143 } else { 130 });
    }
    Ok(())
}
