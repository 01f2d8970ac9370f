//! The training loop: seeded batches, gradient accumulation, warmup + cosine
//! learning rate, clipping, periodic validation, metrics, loss curve, and
//! atomic checkpoints that resume bit for bit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use attn_model::checkpoint::WEIGHTS_FILE;
use attn_model::lora::ADAPTER_WEIGHTS;
use attn_model::{Transformer, TransformerConfig};
use serde::{Deserialize, Serialize};

use crate::data::TokenShard;
use crate::error::{Result, TrainError};
use crate::metrics::{plot_run, StepRecord};
use crate::optim::{DecayRule, Dtype, OptimizerKind};
use crate::run_dir;
use crate::session::{self, Session};

pub use crate::run_dir::STATE_FILE;
/// Consecutive skipped steps after which a run stops as diverged.
pub const MAX_NON_FINITE_IN_A_ROW: usize = 5;
/// A run folder's tokenizer file.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Everything that decides the numbers a run produces. Saved in the trainer
/// state, and compared on `--resume`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainConfig {
    /// Optimizer steps (`--steps`).
    pub steps: usize,
    /// Sequences per micro-batch (`--batch-size`).
    pub batch_size: usize,
    /// Tokens per sequence (`--seq-len`).
    pub seq_len: usize,
    /// Micro-batches summed into each step (`--grad-accum`).
    pub grad_accum: usize,
    /// Data-parallel shards each micro-batch splits into (`--data-shards`):
    /// the gradient is summed per shard, so this changes the rounding; the
    /// thread count does not. Runs saved before the option have 1.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub data_shards: usize,
    /// Peak learning rate (`--lr`).
    pub lr: f32,
    /// The cosine schedule's floor (`--min-lr`).
    pub min_lr: f32,
    /// Steps of linear warmup (`--warmup`).
    pub warmup: usize,
    /// Weight decay (`--weight-decay`).
    pub weight_decay: f32,
    /// AdamW or SGD and their settings.
    pub optimizer: OptimizerKind,
    /// Which tensors decay (`--decay-embeddings`).
    pub decay_rule: DecayRule,
    /// How the optimizer stores its moments (`--optimizer-dtype`).
    #[serde(default, skip_serializing_if = "Dtype::is_f32")]
    pub optimizer_dtype: Dtype,
    /// The dense layers' products (`--dtype`): f32, or bf16 operands with
    /// f32 sums (mixed precision; weights, moments and the loss stay f32).
    #[serde(default, skip_serializing_if = "Dtype::is_f32")]
    pub dtype: Dtype,
    /// Global-norm clip; 0 disables.
    pub grad_clip: f32,
    /// Steps between validations (`--eval-every`).
    pub eval_every: usize,
    /// Batches each validation averages (`--eval-batches`).
    pub eval_batches: usize,
    /// The corpus's last fraction held out (`--val-fraction`).
    pub val_fraction: f64,
    /// Seeds the initialisation, the batches and dropout (`--seed`).
    pub seed: u64,
    /// Supervised fine-tuning (`--task sft`): which tokens carry a label.
    /// None for plain language modelling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_on: Option<crate::sft::LossOn>,
    /// A sequence classifier (`--task classify`) on labelled texts.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub classify: bool,
    /// LoRA fine-tuning: the adapters trained on a frozen --init model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<attn_model::lora::LoraConfig>,
}

fn one() -> usize {
    1
}
fn is_one(n: &usize) -> bool {
    *n == 1
}

impl TrainConfig {
    /// Learning rate for 1-based `step`: linear warmup over `warmup` steps, then
    /// cosine decay from `lr` to `min_lr` at the last step.
    pub fn lr_at(&self, step: usize) -> f32 {
        if step <= self.warmup {
            return self.lr * step as f32 / self.warmup.max(1) as f32;
        }
        let span = (self.steps.saturating_sub(self.warmup)).max(1) as f32;
        let progress = ((step - self.warmup) as f32 / span).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f32::consts::PI * progress).cos());
        self.min_lr + (self.lr - self.min_lr) * cosine
    }

    /// Checks every value (and the sequence length against the context
    /// `n_ctx`), naming the flag at fault.
    pub fn validate(&self, n_ctx: usize) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.steps == 0 || self.batch_size == 0 || self.seq_len == 0 || self.grad_accum == 0 || self.data_shards == 0 {
            return bad("--steps, --batch-size, --seq-len, --grad-accum and --data-shards must be positive".into());
        }
        if self.data_shards > self.batch_size {
            return bad(format!(
                "--data-shards {} is more than the {} sequences of a batch; use --data-shards {} or less",
                self.data_shards, self.batch_size, self.batch_size
            ));
        }
        if self.seq_len > n_ctx {
            return bad(format!("--seq-len {} exceeds the model's context of {n_ctx} tokens; use --seq-len {n_ctx} or less", self.seq_len));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) || self.min_lr < 0.0 {
            return bad(format!("--lr must be positive and --min-lr non-negative (got {} and {})", self.lr, self.min_lr));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite() && self.grad_clip >= 0.0 && self.grad_clip.is_finite() && self.min_lr.is_finite()) {
            return bad(format!(
                "--weight-decay, --grad-clip and --min-lr must be finite and non-negative (got {}, {} and {})",
                self.weight_decay, self.grad_clip, self.min_lr
            ));
        }
        match self.optimizer {
            OptimizerKind::AdamW { beta1, beta2, eps } if !((0.0..1.0).contains(&beta1) && (0.0..1.0).contains(&beta2) && eps > 0.0) => {
                return bad(format!("--beta1 and --beta2 must be in [0, 1) (got {beta1} and {beta2}); 0.9 and 0.99 are usual"));
            }
            OptimizerKind::Sgd { momentum } if !(0.0..1.0).contains(&momentum) => {
                return bad(format!("--momentum must be in [0, 1), got {momentum}"));
            }
            _ => {}
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return bad(format!("--val-fraction must be in [0, 1), got {}", self.val_fraction));
        }
        Ok(())
    }
}

/// Where the tokenizer comes from.
#[derive(Clone, Debug)]
pub enum TokenizerSpec {
    /// Train a character-level vocabulary on the corpus.
    Char,
    /// Any tokenizer `attn_tokenizer::load_tokenizer` reads (tokenizer.json,
    /// a vocab.json + merges.txt folder, a .tiktoken file).
    File(PathBuf),
    /// Train a byte-level BPE vocabulary of this many tokens (GPT-2's
    /// pattern, with `<|endoftext|>`) on the training part of the corpus.
    Bpe(usize),
}

/// One invocation of `attn train`.
pub struct TrainRun<'a> {
    /// The run folder (`--out`).
    pub out: PathBuf,
    /// The training files (`--data`).
    pub data: Vec<PathBuf>,
    /// The architecture; its vocab_size is replaced by the tokenizer's.
    pub model: TransformerConfig,
    /// The tokenizer to train or load (`--tokenizer`).
    pub tokenizer: TokenizerSpec,
    /// The recipe.
    pub config: TrainConfig,
    /// Continue the run in `out` from its last checkpoint (`--resume`).
    pub resume: bool,
    /// Replace a run already in `out` (a new run otherwise refuses to).
    pub overwrite: bool,
    /// Fine-tuning: start from this model folder's weights and tokenizer
    /// (an attn run, or a Hugging Face GPT-2, Llama or Qwen2 folder) instead
    /// of a random model; `model` must then be that folder's config.
    pub init: Option<PathBuf>,
    /// Stop after this step as if interrupted (for testing resume).
    pub halt_at: Option<usize>,
    /// Supervised fine-tuning: `data` holds JSONL records (see `sft`), and
    /// these held-out ones (else the last `val_fraction` of them) validate.
    pub val_data: Vec<PathBuf>,
    /// Print only the summary (`--quiet`).
    pub quiet: bool,
    /// Set by the Ctrl-C handler; checked after every step.
    pub stop: &'a AtomicBool,
}

/// What `attn train` prints at the end, as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    /// The last step taken.
    pub step: usize,
    /// Its training loss.
    pub train_loss: f32,
    /// The last validation loss, if one ran.
    pub val_loss: Option<f32>,
    /// Training tokens a second over the run.
    pub tok_per_s: f64,
    /// Stopped early (Ctrl-C, or `halt_at`); the checkpoint is loadable.
    pub interrupted: bool,
    /// Steps whose loss or gradient norm was not finite, skipped without an update.
    pub skipped_steps: usize,
    /// Loss over the whole validation split at the end of training, scored
    /// exactly as `attn eval --data OUT/data/val.bin --seq-len T` scores it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_loss_full: Option<f64>,
    /// A classifier's accuracy on the whole validation split at the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_accuracy: Option<f64>,
}

/// Writes the model, the optimizer state and the commit record as one unit
/// (see `run_dir`): a crash at any instant leaves this checkpoint or the
/// previous one.
fn save_checkpoint(s: &Session, step: usize, cfg: &TrainConfig) -> Result<()> {
    // Updates skip non-finite gradients, so this is a last guard: a checkpoint
    // never holds a weight that cannot be resumed from.
    refuse_non_finite(s.model.trainable_layout(), s.model.trainable_params(), step, &s.dir)?;
    let config = serde_json::to_string(cfg).expect("serializes");
    // A LoRA run is a PEFT folder: the adapter, not a copy of the frozen base.
    if let Some(lora) = &s.model.lora {
        let base = s.lora_base.as_deref().unwrap_or_default();
        lora.save_config(&s.dir, &s.model.config, base)?;
        // A classifier's labels live in its config.json, beside the adapter.
        if s.model.config.is_classifier() {
            s.model.save_config(&s.dir)?;
        }
        return commit_checkpoint(&s.dir, step, ADAPTER_WEIGHTS, &s.opt, s.data_fingerprint, config, |path, meta| Ok(lora.save_weights(path, Some(meta))?));
    }
    s.model.save_config(&s.dir)?;
    commit_checkpoint(&s.dir, step, WEIGHTS_FILE, &s.opt, s.data_fingerprint, config, |path, meta| Ok(s.model.save_weights(path, Some(meta))?))
}

/// The error of a failed checkpoint, naming the one that is intact.
pub(crate) fn checkpoint_failed(step: usize, out: &Path, dir: &Path, e: TrainError) -> TrainError {
    TrainError::Checkpoint { step, dir: out.to_path_buf(), previous: run_dir::committed_step(dir), msg: e.to_string() }
}

/// A new run's first checkpoint: the staging folder moves into --out whole,
/// and the run goes on there. Nothing to do for a run already in --out.
pub(crate) fn publish_at_first_checkpoint(dir: &mut PathBuf, metrics: &mut crate::metrics::MetricsLog, out: &Path) -> Result<()> {
    if dir.as_path() != out {
        run_dir::publish(dir, out)?;
        *dir = out.to_path_buf();
        metrics.path = out.join("metrics.jsonl");
    }
    Ok(())
}

/// Refuses to checkpoint weights holding a non-finite value.
pub(crate) fn refuse_non_finite(layout: &attn_model::params::ParamLayout, params: &[f32], step: usize, dir: &Path) -> Result<()> {
    match layout.entries.iter().find(|e| params[e.range()].iter().any(|x| !x.is_finite())) {
        Some(e) => Err(TrainError::Data(format!(
            "step {step}: tensor {} holds a non-finite value; nothing was saved, the previous checkpoint in {} is intact",
            e.name,
            dir.display()
        ))),
        None => Ok(()),
    }
}

/// One checkpoint commit: the weights (written by `save_weights` with the
/// step in their metadata), then the optimizer moments with the step, the
/// optimizer step, the data fingerprint and the training options.
pub(crate) fn commit_checkpoint(
    dir: &Path,
    step: usize,
    weights: &str,
    opt: &crate::optim::Optimizer,
    data_fingerprint: u64,
    train_config: String,
    save_weights: impl FnOnce(&Path, HashMap<String, String>) -> Result<()>,
) -> Result<()> {
    let mut meta = HashMap::new();
    meta.insert("step".to_string(), step.to_string());
    run_dir::commit(dir, step, weights, |model_next, state_next| {
        save_weights(model_next, meta.clone())?;
        meta.insert("optimizer_step".into(), opt.step.to_string());
        meta.insert("data_fingerprint".into(), data_fingerprint.to_string());
        meta.insert("train_config".into(), train_config);
        attn_model::checkpoint::save_raw(state_next, &opt.state_tensors(), Some(meta))?;
        Ok(())
    })
}

/// Mean loss over a fixed set of validation batches (the same every eval).
pub fn eval_loss(model: &mut Transformer, val: &TokenShard, cfg: &TrainConfig, x: &mut [u32], y: &mut [u32]) -> Result<f32> {
    let (b, t) = (cfg.batch_size, cfg.seq_len);
    let mut sum = 0.0f64;
    for i in 0..cfg.eval_batches.max(1) {
        // A stream range disjoint from the training batches' streams.
        val.sample_batch(x, y, b, t, cfg.seed, (1u64 << 63) + i as u64);
        sum += model.forward(x, Some(y), b, t)?.expect("targets given") as f64;
    }
    Ok((sum / cfg.eval_batches.max(1) as f64) as f32)
}

/// Runs `attn train`: a new run (which moves into `run.out` at its first
/// checkpoint) or a resumed one.
pub fn train(run: &TrainRun) -> Result<TrainSummary> {
    run.config.validate(run.model.n_ctx)?;
    let _lock = run_dir::RunLock::acquire(&run.out)?;
    attn_kernels::mixed::set_matmul_precision(run.config.dtype.precision());
    if run.resume {
        if let Some(note) = run_dir::recover(&run.out)? {
            eprintln!("note: {}: an interrupted checkpoint was found: {note}", run.out.display());
        }
        return run_loop(run, session::resume(run)?);
    }
    run_dir::check_new_target(&run.out, run.overwrite)?;
    if let Some(init) = &run.init {
        let same = |a: &Path, b: &Path| a.canonicalize().ok().zip(b.canonicalize().ok()).is_some_and(|(a, b)| a == b);
        if same(init, &run.out) {
            return Err(TrainError::Config(format!(
                "--init and --out are the same folder ({}); fine-tuning would replace the model it starts from, choose another --out",
                run.out.display()
            )));
        }
    }
    let staging = run_dir::staging_path(&run.out);
    // A staging folder left by a run that crashed before its first checkpoint.
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(TrainError::io(&staging))?;
    let result = session::start_fresh(run, &staging).and_then(|s| run_loop(run, s));
    // Still there only if the run ended before its first checkpoint.
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn run_loop(run: &TrainRun, mut s: Session) -> Result<TrainSummary> {
    let cfg = &run.config;
    let (b, t, accum) = (cfg.batch_size, cfg.seq_len, cfg.grad_accum);
    if !run.quiet {
        println!("model: {}", s.model.describe());
        if let Some(l) = &s.model.lora {
            println!(
                "lora: {} adapters, {} trainable parameters ({:.2}% of the frozen base's)",
                l.adapters.len(),
                l.num_params(),
                100.0 * l.num_params() as f64 / s.model.layout().num_params() as f64
            );
        }
        println!("train: {cfg:?}");
        println!("data: {}; threads: {}", s.data.describe(), rayon::current_num_threads());
        if s.start_step > 0 {
            println!("resuming after step {}", s.start_step);
        }
    }
    // Activations first: a batch too large for memory is refused here,
    // before the buffers below or the first step allocate anything.
    s.model.set_data_shards(cfg.data_shards);
    s.model.reserve_step(b, t)?;
    s.model.reserve(b, t)?; // the validation batches' pass
    let (mut x, mut y) = (vec![0u32; b * t], vec![0u32; b * t]);
    let bar = progress_bar(cfg.steps, s.start_step, run.quiet);
    // Without a terminal the bar is hidden: lines go to stdout instead, and a
    // heartbeat at least every 30 s shows the run is alive (nohup, tee, CI).
    let plain = !run.quiet && bar.is_hidden();
    let say = |line: String| {
        if plain {
            println!("{line}");
        } else if !run.quiet {
            bar.println(line);
        }
    };
    let mut last_line = Instant::now();
    let run_start = Instant::now();
    let mut summary = TrainSummary {
        step: s.start_step,
        train_loss: f32::NAN,
        val_loss: None,
        tok_per_s: 0.0,
        interrupted: false,
        skipped_steps: 0,
        val_loss_full: None,
        val_accuracy: None,
    };
    let mut bad_in_row = 0usize;
    let mut tokens_done = 0usize;
    let title = format!("{} — loss", run.out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    for step in s.start_step + 1..=cfg.steps {
        let t0 = Instant::now();
        let lr = cfg.lr_at(step);
        s.model.zero_grad();
        let mut loss = 0.0f64;
        let mut step_tokens = 0;
        for micro in 0..accum {
            if let Some(l) = &mut s.model.lora {
                // Dropout masks drawn per micro-batch, reproducibly.
                l.training = true;
                l.dropout_stream = cfg.seed ^ ((step - 1) * accum + micro) as u64;
            }
            let stream = ((step - 1) * accum + micro) as u64;
            let (l, tokens) = s.data.train_step(&mut s.model, &mut x, &mut y, b, t, cfg.seed, stream, 1.0 / accum as f32)?;
            loss += l as f64;
            step_tokens += tokens;
        }
        let loss = (loss / accum as f64) as f32;
        if let Some(l) = &mut s.model.lora {
            l.training = false;
        }
        let team = s.model.team_size();
        let (params, grads) = s.model.params_and_grads();
        // A non-finite loss or gradient is never applied: the step is skipped.
        let norm = if loss.is_finite() { s.opt.step_on_team(params, grads, lr, cfg.grad_clip, team) } else { f32::NAN };
        let dt = t0.elapsed().as_secs_f64();
        tokens_done += step_tokens;
        let tok_per_s = step_tokens as f64 / dt;
        if loss.is_finite() && norm.is_finite() {
            bad_in_row = 0;
        } else {
            bad_in_row += 1;
            summary.skipped_steps += 1;
            say(format!("step {step}: loss {loss}, gradient norm {norm}: not finite, step skipped (no update)"));
            if bad_in_row >= MAX_NON_FINITE_IN_A_ROW {
                return Err(TrainError::Diverged {
                    step,
                    count: bad_in_row,
                    loss,
                    norm,
                    last_checkpoint: s.metrics.records.iter().rev().find(|r| r.val_loss.is_some()).map(|r| r.step),
                });
            }
        }
        let signalled = run.stop.load(Ordering::SeqCst);
        if signalled {
            say(format!("step {step}: stop requested, saving a checkpoint"));
        }
        let stopping = signalled || run.halt_at == Some(step);
        let is_eval = step % cfg.eval_every.max(1) == 0 || step == cfg.steps || stopping;
        let val_loss = if is_eval { Some(s.data.eval_loss(&mut s.model, cfg, &mut x, &mut y)?) } else { None };
        s.metrics.push(StepRecord { step, train_loss: loss, lr, tok_per_s, grad_norm: norm, elapsed_s: run_start.elapsed().as_secs_f64(), val_loss })?;
        summary = TrainSummary {
            step,
            train_loss: loss,
            val_loss: val_loss.or(summary.val_loss),
            tok_per_s: tokens_done as f64 / run_start.elapsed().as_secs_f64(),
            interrupted: false,
            skipped_steps: summary.skipped_steps,
            val_loss_full: None,
            val_accuracy: None,
        };
        bar.set_position(step as u64);
        bar.set_message(format!("loss {loss:.4}  lr {lr:.2e}  {tok_per_s:.0} tok/s"));
        if let Some(v) = val_loss {
            save_checkpoint(&s, step, cfg).map_err(|e| checkpoint_failed(step, &run.out, &s.dir, e))?;
            publish_at_first_checkpoint(&mut s.dir, &mut s.metrics, &run.out)?;
            plot_run(&s.dir.join("loss.png"), &title, &s.metrics.records)?;
            say(format!("step {step:>6} | train {loss:.4} | val {v:.4} | lr {lr:.2e} | {tok_per_s:.0} tok/s"));
            last_line = Instant::now();
        } else if plain && last_line.elapsed().as_secs() >= 30 {
            say(format!("step {step:>6} | train {loss:.4} | lr {lr:.2e} | {tok_per_s:.0} tok/s"));
            last_line = Instant::now();
        }
        if stopping {
            summary.interrupted = step != cfg.steps;
            break;
        }
    }
    bar.finish_and_clear();
    if !summary.interrupted && summary.step == cfg.steps {
        // The periodic evals sample random windows (cheap, but an estimate);
        // the final one covers the whole split, in order.
        let (nats, preds) = s.data.full_val(&mut s.model, t, b)?;
        summary.val_loss_full = Some(nats / preds as f64);
        if !run.quiet {
            println!("final val loss over the whole val split ({preds} predictions): {:.4}", nats / preds as f64);
        }
        if let Some(r) = s.data.classify_report(&mut s.model, b)? {
            if !run.quiet {
                println!("val accuracy {:.4}, macro F1 {:.4} over {} texts", r.accuracy, r.macro_f1, r.count);
            }
            summary.val_accuracy = Some(r.accuracy);
        }
    }
    if summary.interrupted && !run.quiet {
        println!("stopped after step {}; checkpoint saved in {}; continue with the same command plus --resume", summary.step, run.out.display());
    }
    Ok(summary)
}

fn progress_bar(steps: usize, start: usize, quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30.cyan/blue} step {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_position(start as u64);
    bar.reset_eta();
    bar
}
