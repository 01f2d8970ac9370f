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
pub(crate) enum Opt {
    Adamw,
    Sgd,
}

/// How the optimizer stores its moments.
#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub(crate) enum OptDtype {
    F32,
    Bf16,
}

impl OptDtype {
    pub(crate) fn moments(self) -> attn_train::optim::Dtype {
        match self {
            OptDtype::F32 => attn_train::optim::Dtype::F32,
            OptDtype::Bf16 => attn_train::optim::Dtype::Bf16,
        }
    }
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub(crate) enum Task {
    /// Next-token prediction on plain text
    Lm,
    /// An encoder-decoder on source/target pairs
    Translation,
    /// Supervised fine-tuning of a decoder on JSONL prompt/completion or chat records
    Sft,
    /// A sequence classifier (a head on --init's model) on JSONL or CSV text/label records
    Classify,
}

/// Which tokens of an SFT record carry the loss.
#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub(crate) enum LossOn {
    /// The completion of prompt/completion records, the assistant turns of conversations
    Auto,
    /// The completion (prompt/completion records)
    Completion,
    /// The assistant turns (conversations)
    Assistant,
    /// Every token
    All,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub(crate) enum NormPos {
    Post,
    Pre,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Schedule {
    Cosine,
    Noam,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum Position {
    Learned,
    Sinusoidal,
}

#[derive(Args)]
// A later flag overrides an earlier one, so scripts can pass defaults and let
// their callers append overrides.
#[command(args_override_self = true)]
pub struct TrainArgs {
    /// lm: a language model on text; translation: an encoder-decoder on pairs; sft: supervised
    /// fine-tuning on JSONL records
    #[arg(long, value_enum, default_value = "lm")]
    pub(crate) task: Task,
    /// LoRA: train rank-R adapters on a frozen --init model instead of every weight;
    /// --out becomes a PEFT folder (adapter_config.json, adapter_model.safetensors)
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) lora_r: Option<usize>,
    /// LoRA: the adapters' scale is alpha / r [default: 2 r]
    #[arg(long, allow_negative_numbers = true, requires = "lora_r")]
    pub(crate) lora_alpha: Option<f32>,
    /// LoRA: the projections adapted, comma-separated among q, k, v, o, mlp (GPT-2's q, k and v share c_attn)
    #[arg(long, default_value = "q,v", requires = "lora_r")]
    pub(crate) lora_targets: String,
    /// LoRA: dropout on the adapters' input during training
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0, requires = "lora_r")]
    pub(crate) lora_dropout: f32,
    /// SFT: the tokens that carry the loss
    #[arg(long, value_enum, default_value = "auto")]
    pub(crate) loss_on: LossOn,
    /// Text files to train on (concatenated); with --task translation, source<TAB>target lines;
    /// with --task sft, JSONL lines {"prompt", "completion"} or {"messages": [{"role", "content"}, ...]}
    #[arg(long, num_args = 1.., required_unless_present = "source")]
    pub(crate) data: Vec<PathBuf>,
    /// Translation: source sentences, one a line (with --target, instead of --data)
    #[arg(long, requires = "target", conflicts_with = "data")]
    pub(crate) source: Option<PathBuf>,
    /// Translation: target sentences aligned line by line with --source
    #[arg(long, requires = "source")]
    pub(crate) target: Option<PathBuf>,
    /// Translation and SFT: held-out pairs or records (default: the last --val-fraction of --data's)
    #[arg(long, num_args = 1..)]
    pub(crate) val_data: Vec<PathBuf>,
    /// Translation: tokens per micro-batch (pairs x the longer side, padding included)
    #[arg(long, allow_negative_numbers = true, default_value_t = 4096)]
    pub(crate) batch_tokens: usize,
    /// Translation: label smoothing of the training loss
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.1)]
    pub(crate) label_smoothing: f32,
    /// Translation: cosine (warmup, then cosine decay) or noam (warmup, then 1/sqrt(step))
    #[arg(long, value_enum, default_value = "cosine")]
    pub(crate) schedule: Schedule,
    /// Translation: post (N(x + f(x)), the paper's, saved as Marian) or pre (x + f(N(x)) with final norms,
    /// learned positions and an embedding norm, saved as mBART)
    #[arg(long, value_enum, default_value = "post")]
    pub(crate) norm_position: NormPos,
    /// Translation: leave out pairs with a side longer than this many tokens (default: the model's positions)
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) max_len: Option<usize>,
    /// Run folder: checkpoint, metrics.jsonl, loss.png, token shards
    #[arg(long)]
    pub(crate) out: PathBuf,
    /// Model size: gpt2-124m, gpt2-350m, shakespeare-char, baby, llama-baby;
    /// translation: transformer-tiny, transformer-small, transformer-base [default: baby, or transformer-small]
    #[arg(long, default_value = "baby", hide_default_value = true)]
    pub(crate) preset: String,
    /// Fine-tune: start from a model folder's weights, config and tokenizer
    /// (an attn run, or a Hugging Face GPT-2, Llama, Qwen2 or Mistral folder; with --task translation,
    /// a Marian, BART or mBART folder) instead of a random model
    #[arg(long, conflicts_with_all = ["preset", "tokenizer", "position", "norm_position"])]
    pub(crate) init: Option<PathBuf>,
    /// "char" trains a character vocabulary on the data; "bpe:N" trains an N-token byte-level
    /// BPE on it; or a tokenizer file or folder (tokenizer.json, vocab.json + merges.txt, .tiktoken)
    #[arg(long, default_value = "char")]
    pub(crate) tokenizer: String,
    /// Optimizer steps to run (with --resume: the new total)
    #[arg(long, allow_negative_numbers = true, default_value_t = 2000)]
    pub(crate) steps: usize,
    /// Classify: passes over the training texts, instead of --steps
    #[arg(long, allow_negative_numbers = true, conflicts_with = "steps")]
    pub(crate) epochs: Option<f64>,
    /// Sequences per micro-batch
    #[arg(long, allow_negative_numbers = true, default_value_t = 12)]
    pub(crate) batch_size: usize,
    /// Sequence length (default: the model's context)
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) seq_len: Option<usize>,
    /// Peak learning rate (after warmup, before cosine decay)
    #[arg(long, allow_negative_numbers = true, default_value_t = 1e-3)]
    pub(crate) lr: f32,
    /// Final learning rate of the cosine decay (default: lr / 10)
    #[arg(long, allow_negative_numbers = true)]
    pub(crate) min_lr: Option<f32>,
    /// Linear warmup steps
    #[arg(long, default_value_t = 100)]
    pub(crate) warmup: usize,
    /// Evaluate and checkpoint every this many steps
    #[arg(long, default_value_t = 250, value_parser = crate::count)]
    pub(crate) eval_every: usize,
    /// Validation batches per evaluation
    #[arg(long, default_value_t = 20, value_parser = crate::count)]
    pub(crate) eval_batches: usize,
    /// Micro-batches accumulated per optimizer step
    #[arg(long, default_value_t = 1)]
    pub(crate) grad_accum: usize,
    /// Data-parallel shards: each batch's sequences split into this many runs
    /// that train on threads of their own, their gradients then summed. The
    /// rounding depends on it (saved with the run), not on --threads.
    /// Default: one per thread for models of at most 16M parameters (as many
    /// as keep the extra gradient copies within 256 MiB), else 1
    #[arg(long)]
    pub(crate) data_shards: Option<usize>,
    /// adamw or sgd
    #[arg(long, value_enum, default_value = "adamw")]
    pub(crate) optimizer: Opt,
    /// AdamW / SGD weight decay on matrices
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.1)]
    pub(crate) weight_decay: f32,
    /// Also decay embeddings (nanoGPT's rule); by default only matrices decay
    #[arg(long)]
    pub(crate) decay_embeddings: bool,
    /// Optimizer moments in f32, or bf16 (half their memory; updates computed in f32)
    #[arg(long, value_enum, default_value = "f32")]
    pub(crate) optimizer_dtype: OptDtype,
    /// The dense layers' matrix products: f32, or bf16 operands with f32 sums
    /// (mixed precision, attention's products included: AMX tiles where the
    /// CPU has them; weights, optimizer, norms, softmax and loss stay f32)
    #[arg(long, value_enum, default_value = "f32")]
    pub(crate) dtype: OptDtype,
    /// AdamW first-moment decay
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.9)]
    beta1: f32,
    /// AdamW second-moment decay
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.99)]
    beta2: f32,
    /// SGD momentum
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.9)]
    pub(crate) momentum: f32,
    /// Global gradient-norm clip (0 disables)
    #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
    pub(crate) grad_clip: f32,
    /// Fraction of the corpus held out for validation
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.1)]
    pub(crate) val_fraction: f64,
    /// Position encoding of GPT presets
    #[arg(long, value_enum, default_value = "learned")]
    pub(crate) position: Position,
    /// Seed for initialisation and batch sampling
    #[arg(long, default_value_t = 1337)]
    pub(crate) seed: u64,
    /// Worker threads (default: all cores)
    #[arg(long)]
    pub(crate) threads: Option<usize>,
    /// Replace the run already in --out (a new run refuses to otherwise)
    #[arg(long, conflicts_with = "resume")]
    pub(crate) overwrite: bool,
    /// Continue the run in --out from its last checkpoint
    #[arg(long)]
    pub(crate) resume: bool,
    /// Translation: write the token ids and every micro-batch's pairs as JSON (for a peer implementation)
    #[arg(long, hide = true)]
    pub(crate) export_plan: Option<PathBuf>,
    /// Stop after this step as if interrupted (checkpoints first); for testing --resume
    #[arg(long, hide = true)]
    pub(crate) halt_at: Option<usize>,
    /// No progress bar or per-eval lines
    #[arg(long)]
    pub(crate) quiet: bool,
}

pub fn run(a: TrainArgs, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    crate::set_threads(a.threads)?;
    if a.task == Task::Translation {
        return crate::translate::train(a, matches);
    }
    anyhow::ensure!(a.source.is_none(), "--source and --target are for --task translation; a language model trains on --data");
    let given = |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    let sft = a.task == Task::Sft;
    let classify = a.task == Task::Classify;
    anyhow::ensure!(classify || a.epochs.is_none(), "--epochs is for --task classify; other tasks count --steps");
    for flag in ["val_data", "batch_tokens", "label_smoothing", "schedule", "max_len", "norm_position"] {
        if !((sft || classify) && flag == "val_data") {
            anyhow::ensure!(!given(flag), "--{} is for --task translation; it does nothing for a language model", flag.replace('_', "-"));
        }
    }
    anyhow::ensure!(sft || !given("loss_on"), "--loss-on is for --task sft; plain-text training puts the loss on every token");
    anyhow::ensure!(a.lora_r.is_none() || a.init.is_some() || a.resume, "--lora-r trains adapters on an existing model: give the model with --init DIR");
    let given = |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    let saved = if a.resume { Some(attn_train::saved_train_config(&a.out)?) } else { None };
    let model = match &a.init {
        // A resumed run is what its folder says it is, however it began; a
        // LoRA run's adapter config names its base.
        _ if a.resume && attn_model::lora::is_adapter_dir(&a.out) => {
            let base = attn_model::lora::adapter_base(&a.out)?;
            config_from_dir(std::path::Path::new(&base)).with_context(|| format!("--resume: the base model {base} of the LoRA run in {}", a.out.display()))?
        }
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
    // --epochs: the steps that pass over the training texts that many times.
    let steps = match a.epochs {
        Some(e) => {
            anyhow::ensure!(e > 0.0 && e.is_finite(), "--epochs must be positive, got {e}");
            let (train, _) = attn_train::classify::split_labelled(&a.data, &a.val_data, a.val_fraction, a.seed)?;
            ((e * train.len() as f64) / (a.batch_size.max(1) * a.grad_accum.max(1)) as f64).ceil().max(1.0) as usize
        }
        None => a.steps,
    };
    let fresh = TrainConfig {
        steps,
        batch_size: a.batch_size,
        seq_len: a.seq_len.unwrap_or(model.n_ctx),
        grad_accum: a.grad_accum,
        // LoRA and classifier steps run unsharded.
        data_shards: match a.data_shards {
            Some(n) => n,
            None if a.lora_r.is_some() || classify => 1,
            None => model.auto_data_shards(a.batch_size, rayon::current_num_threads()),
        },
        lr: a.lr,
        min_lr: a.min_lr.unwrap_or(a.lr / 10.0),
        warmup: a.warmup,
        weight_decay: a.weight_decay,
        optimizer: optimizer_of(&a, 1e-8),
        decay_rule: if a.decay_embeddings { DecayRule::MatricesAndEmbeddings } else { DecayRule::Matrices },
        optimizer_dtype: a.optimizer_dtype.moments(),
        dtype: a.dtype.moments(),
        grad_clip: a.grad_clip,
        eval_every: a.eval_every,
        eval_batches: a.eval_batches,
        val_fraction: a.val_fraction,
        seed: a.seed,
        classify,
        lora: a.lora_r.map(|r| attn_model::lora::LoraConfig {
            r,
            alpha: a.lora_alpha.unwrap_or(2.0 * r as f32),
            dropout: a.lora_dropout,
            targets: a.lora_targets.split(',').map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect(),
            rslora: false,
        }),
        loss_on: sft.then_some(match a.loss_on {
            LossOn::Auto => attn_train::sft::LossOn::Auto,
            LossOn::Completion => attn_train::sft::LossOn::Completion,
            LossOn::Assistant => attn_train::sft::LossOn::Assistant,
            LossOn::All => attn_train::sft::LossOn::All,
        }),
    };
    // On --resume the saved options hold, with the flags given now on top;
    // the trainer refuses any change but --steps and --eval-every.
    let config = if let Some(mut c) = saved {
        macro_rules! take {
            ($($field:ident: $flag:literal),*) => {$( if given($flag) { c.$field = fresh.$field.clone(); } )*};
        }
        take!(steps: "steps", batch_size: "batch_size", seq_len: "seq_len", grad_accum: "grad_accum", data_shards: "data_shards", lr: "lr", min_lr: "min_lr",
              warmup: "warmup", weight_decay: "weight_decay", grad_clip: "grad_clip", eval_every: "eval_every",
              eval_batches: "eval_batches", val_fraction: "val_fraction", seed: "seed");
        if ["optimizer", "beta1", "beta2", "momentum"].iter().any(|f| given(f)) {
            c.optimizer = fresh.optimizer;
        }
        if given("decay_embeddings") {
            c.decay_rule = fresh.decay_rule;
        }
        if given("optimizer_dtype") {
            c.optimizer_dtype = fresh.optimizer_dtype;
        }
        if given("dtype") {
            c.dtype = fresh.dtype;
        }
        if given("loss_on") || given("task") {
            c.loss_on = fresh.loss_on;
            c.classify = fresh.classify;
        }
        if given("epochs") {
            c.steps = fresh.steps;
        }
        if ["lora_r", "lora_alpha", "lora_targets", "lora_dropout"].iter().any(|f| given(f)) {
            c.lora = fresh.lora.clone();
        }
        c
    } else {
        fresh
    };
    let tokenizer = tokenizer_spec(&a.tokenizer)?;
    let (stop, sigterm) = stop_flags()?;
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
        val_data: a.val_data,
    };
    let s = attn_train::train(&run)?;
    println!("{}", serde_json::to_string(&s)?);
    exit_if_signalled(s.interrupted, &stop, &sigterm);
    Ok(())
}

/// SIGINT (Ctrl-C) and SIGTERM both finish the step, checkpoint and exit
/// with 130 / 143; a second signal exits at once. Returns (stop, sigterm).
pub(crate) fn stop_flags() -> anyhow::Result<(Arc<AtomicBool>, Arc<AtomicBool>)> {
    let (stop, sigterm) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    for (sig, code) in [(SIGINT, 130), (SIGTERM, 143)] {
        flag::register_conditional_shutdown(sig, code, stop.clone()).context("installing the signal handlers")?;
        flag::register(sig, stop.clone()).context("installing the signal handlers")?;
    }
    flag::register(SIGTERM, sigterm.clone()).context("installing the signal handlers")?;
    Ok((stop, sigterm))
}

/// After a run a signal stopped (and that checkpointed), exit with 130 / 143.
pub(crate) fn exit_if_signalled(interrupted: bool, stop: &AtomicBool, sigterm: &AtomicBool) {
    if interrupted && stop.load(Ordering::SeqCst) {
        std::process::exit(if sigterm.load(Ordering::SeqCst) { 143 } else { 130 });
    }
}

/// The optimizer the flags describe.
pub(crate) fn optimizer_of(a: &TrainArgs, eps: f32) -> OptimizerKind {
    match a.optimizer {
        Opt::Adamw => OptimizerKind::AdamW { beta1: a.beta1, beta2: a.beta2, eps },
        Opt::Sgd => OptimizerKind::Sgd { momentum: a.momentum },
    }
}

/// `--tokenizer`: char, bpe:N, or a file.
pub(crate) fn tokenizer_spec(s: &str) -> anyhow::Result<TokenizerSpec> {
    Ok(match s {
        "char" => TokenizerSpec::Char,
        other if other.starts_with("bpe:") => {
            let n = other[4..].parse().with_context(|| format!("--tokenizer {other}: expected bpe:N with N the vocab size, e.g. bpe:4096"))?;
            TokenizerSpec::Bpe(n)
        }
        path => TokenizerSpec::File(PathBuf::from(path)),
    })
}
