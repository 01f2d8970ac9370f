//! Training an encoder-decoder on parallel text: a joint BPE over both
//! sides, token-count batches, label smoothing, warmup with cosine decay or
//! the paper's inverse-square-root ("noam") schedule, and the same
//! checkpoint protocol as language-model runs (a crash leaves a loadable
//! checkpoint; `--resume` continues bit for bit).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use attn_model::checkpoint::TensorFile;
use attn_model::{Seq2Seq, Seq2SeqConfig};
use attn_tokenizer::{load_tokenizer, Tokenizer};
use serde::{Deserialize, Serialize};

use crate::data::corpus_fingerprint;
use crate::error::{Result, TrainError};
use crate::metrics::{plot_run, MetricsLog, StepRecord};
use crate::optim::{DecayRule, Dtype, Optimizer, OptimizerKind};
use crate::pairs::{encode_pairs, epoch_order, make_batch, token_batches, Pair, PairIds};
/// `attn eval`'s loss over pairs (kept here, where callers found it).
pub use crate::pairs::{score_pairs, train_joint_bpe, EOS, PAD};
use crate::run_dir::{self, STATE_FILE};
use crate::trainer::{checkpoint_failed, commit_checkpoint, publish_at_first_checkpoint, refuse_non_finite, TokenizerSpec, TOKENIZER_FILE};

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
/// How the learning rate moves (`--schedule`).
pub enum Schedule {
    /// Linear warmup, then cosine decay to min_lr.
    Cosine,
    /// Linear warmup, then decay with 1/sqrt(step) ("Attention Is All You Need").
    Noam,
}

/// Everything that decides the numbers a translation run produces.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TranslationConfig {
    /// Optimizer steps (`--steps`).
    pub steps: usize,
    /// Tokens per micro-batch: pairs x the longest side.
    pub batch_tokens: usize,
    /// Micro-batches summed into each step (`--grad-accum`).
    pub grad_accum: usize,
    /// Peak learning rate (reached at the end of warmup).
    pub lr: f32,
    /// The cosine schedule's floor (`--min-lr`).
    pub min_lr: f32,
    /// Steps of linear warmup (`--warmup`).
    pub warmup: usize,
    /// Cosine or the paper's (`--schedule noam`).
    pub schedule: Schedule,
    /// Weight decay (`--weight-decay`).
    pub weight_decay: f32,
    /// AdamW or SGD and their settings.
    pub optimizer: OptimizerKind,
    /// Which tensors decay (`--decay-embeddings`).
    pub decay_rule: DecayRule,
    /// How the optimizer stores its moments (`--optimizer-dtype`).
    #[serde(default, skip_serializing_if = "Dtype::is_f32")]
    pub optimizer_dtype: Dtype,
    /// The dense layers' products (`--dtype`), as in `TrainConfig`.
    #[serde(default, skip_serializing_if = "Dtype::is_f32")]
    pub dtype: Dtype,
    /// Global-norm clip; 0 disables (`--grad-clip`).
    pub grad_clip: f32,
    /// Mass spread over the vocabulary in the loss (`--label-smoothing`, 0.1).
    pub label_smoothing: f32,
    /// Steps between validations (`--eval-every`).
    pub eval_every: usize,
    /// Pairs with a side longer than this many tokens are left out.
    pub max_len: usize,
    /// The training pairs' last fraction held out when no `--val-data`.
    pub val_fraction: f64,
    /// Seeds the initialisation, the batch order and dropout (`--seed`).
    pub seed: u64,
}

impl TranslationConfig {
    /// Learning rate for 1-based `step`.
    pub fn lr_at(&self, step: usize) -> f32 {
        let w = self.warmup.max(1) as f32;
        match self.schedule {
            // lr * min(step / w, sqrt(w / step)): with lr = d^-0.5 w^-0.5 this
            // is the paper's d^-0.5 min(step^-0.5, step w^-1.5).
            Schedule::Noam => self.lr * (step as f32 / w).min((w / step.max(1) as f32).sqrt()),
            Schedule::Cosine => {
                if step <= self.warmup {
                    return self.lr * step as f32 / w;
                }
                let span = self.steps.saturating_sub(self.warmup).max(1) as f32;
                let progress = ((step - self.warmup) as f32 / span).min(1.0);
                self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + (std::f32::consts::PI * progress).cos())
            }
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.steps == 0 || self.batch_tokens == 0 || self.grad_accum == 0 || self.max_len < 2 {
            return bad("--steps, --batch-tokens and --grad-accum must be positive, --max-len at least 2".into());
        }
        if !(self.lr > 0.0 && self.lr.is_finite() && self.min_lr >= 0.0 && self.min_lr.is_finite()) {
            return bad(format!("--lr must be positive and --min-lr non-negative (got {} and {})", self.lr, self.min_lr));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad(format!("--label-smoothing must be in [0, 1), got {}", self.label_smoothing));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite() && self.grad_clip >= 0.0 && self.grad_clip.is_finite()) {
            return bad("--weight-decay and --grad-clip must be finite and non-negative".into());
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return bad(format!("--val-fraction must be in [0, 1), got {}", self.val_fraction));
        }
        Ok(())
    }
}

/// One invocation of `attn train --task translation`.
pub struct TranslationRun<'a> {
    /// The run folder (`--out`).
    pub out: PathBuf,
    /// The training pairs.
    pub train_pairs: Vec<Pair>,
    /// Held-out pairs; None takes the last `val_fraction` of the training pairs.
    pub val_pairs: Option<Vec<Pair>>,
    /// The files the pairs came from (their fingerprint guards --resume).
    pub data_files: Vec<PathBuf>,
    /// The architecture; vocabulary and special ids come from the tokenizer.
    pub model: Seq2SeqConfig,
    /// The joint tokenizer to train or load (`--tokenizer`).
    pub tokenizer: TokenizerSpec,
    /// Fine-tuning: start from this folder's weights, config and tokenizer
    /// (an attn run, or a Marian / BART / mBART folder) instead of `model`
    /// and `tokenizer`. A resumed run reads its own folder instead.
    pub init: Option<PathBuf>,
    /// The recipe.
    pub config: TranslationConfig,
    /// Continue the run in `out` from its last checkpoint (`--resume`).
    pub resume: bool,
    /// Replace a run already in `out` (`--overwrite`).
    pub overwrite: bool,
    /// Stop after this step as if interrupted (for testing resume).
    pub halt_at: Option<usize>,
    /// Print only the summary (`--quiet`).
    pub quiet: bool,
    /// Set by the Ctrl-C handler; checked after every step.
    pub stop: &'a AtomicBool,
    /// Write the token ids and every micro-batch's pair indices here (JSON),
    /// so that a peer implementation can train on exactly the same batches.
    pub export_plan: Option<PathBuf>,
}

/// What `attn train --task translation` prints at the end, as JSON.
#[derive(Debug, Clone, Serialize)]
pub struct TranslationSummary {
    /// The last step taken.
    pub step: usize,
    /// Its training loss (label-smoothed as optimised).
    pub train_loss: f32,
    /// Plain cross-entropy per target token (EOS included) on the held-out pairs.
    pub val_loss: Option<f32>,
    /// Training tokens a second over the run.
    pub tok_per_s: f64,
    /// Stopped early; the checkpoint is loadable.
    pub interrupted: bool,
    /// Steps whose loss or gradients were not finite, skipped.
    pub skipped_steps: usize,
    /// Pairs trained on and held out.
    pub train_pairs: usize,
    /// (See `train_pairs`.)
    pub val_pairs: usize,
}

struct State {
    dir: PathBuf,
    model: Seq2Seq,
    opt: Optimizer,
    tok: Box<dyn Tokenizer>,
    metrics: MetricsLog,
    start_step: usize,
    fingerprint: u64,
}

/// The files a tokenizer may live in; `load_tokenizer` picks among them in a
/// fixed order, so copying all that exist keeps its choice.
const TOKENIZER_FILES: [&str; 8] =
    ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "source.spm", "target.spm", "vocab.json", "target_vocab.json", "merges.txt"];

/// A new model of `run.model`'s shape (seeded) and its tokenizer: trained
/// on the pairs (`bpe:N`) or read from a file; saved into `dir`.
fn from_preset(run: &TranslationRun, dir: &Path, train: &[Pair]) -> Result<(Seq2Seq, Box<dyn Tokenizer>)> {
    let tok: Box<dyn Tokenizer> = match &run.tokenizer {
        TokenizerSpec::Bpe(n) => Box::new(train_joint_bpe(train, *n)?),
        TokenizerSpec::File(p) => load_tokenizer(p, None)?,
        TokenizerSpec::Char => return Err(TrainError::Config("translation needs a subword vocabulary: --tokenizer bpe:N or a tokenizer file".into())),
    };
    let ids = |s: &str| tok.encode(s).ok().filter(|v| v.len() == 2).map(|v| v[0]);
    // "<pad>" encodes to [pad, eos] under the template.
    let (pad, eos) = (ids(PAD), tok.encode("").ok().and_then(|v| v.last().copied()));
    let (Some(pad), Some(eos)) = (pad, eos) else {
        return Err(TrainError::Config(format!(
            "the tokenizer must know {PAD} and end every encoding with {EOS} (a TemplateProcessing post-processor); use --tokenizer bpe:N to train one"
        )));
    };
    let mut cfg = run.model.clone();
    cfg.vocab_size = tok.vocab_size();
    cfg.pad_token_id = pad;
    cfg.eos_token_id = eos;
    cfg.decoder_start_token_id = pad;
    let model = Seq2Seq::new(cfg, run.config.seed)?;
    tok.save(&dir.join(TOKENIZER_FILE))?;
    Ok((model, tok))
}

/// `--init`: a folder's model and tokenizer, the tokenizer's files copied
/// into `dir` so the run folder loads on its own.
fn from_folder(init: &Path, dir: &Path) -> Result<(Seq2Seq, Box<dyn Tokenizer>)> {
    let bad = |m: String| TrainError::Config(format!("--init {}: {m}", init.display()));
    let (model, _) = Seq2Seq::load(init)?;
    let tok = load_tokenizer(init, None)?;
    if tok.vocab_size() > model.vocab_size() {
        return Err(bad(format!("the tokenizer has {} ids but the model {}; they do not belong together", tok.vocab_size(), model.vocab_size())));
    }
    // Training pairs must end with EOS, or the model never learns to stop.
    let eos = model.config.eos_token_id;
    for (side, ids) in [("sources", tok.encode("a")), ("targets", tok.encode_target("a"))] {
        if ids.as_ref().ok().and_then(|v| v.last()) != Some(&eos) {
            return Err(bad(format!(
                "its tokenizer does not end {side} with the model's eos_token_id {eos}; give the folder a tokenizer.json whose post-processor appends it"
            )));
        }
    }
    for f in TOKENIZER_FILES {
        let from = init.join(f);
        if from.exists() {
            let to = dir.join(f);
            std::fs::copy(&from, &to).map_err(TrainError::io(&to))?;
        }
    }
    Ok((model, tok))
}

fn fresh(run: &TranslationRun, dir: &Path, train: &[Pair]) -> Result<State> {
    let (model, tok) = match &run.init {
        Some(init) => from_folder(init, dir)?,
        None => from_preset(run, dir, train)?,
    };
    let opt = Optimizer::new(run.config.optimizer, run.config.weight_decay, run.config.decay_rule, &model.layout, run.config.optimizer_dtype);
    Ok(State {
        dir: dir.to_path_buf(),
        model,
        opt,
        tok,
        metrics: MetricsLog::open(&dir.join("metrics.jsonl"), None)?,
        start_step: 0,
        fingerprint: corpus_fingerprint(&run.data_files)?,
    })
}

fn resumed(run: &TranslationRun) -> Result<State> {
    let rerr = |msg: String| TrainError::Resume { path: run.out.clone(), msg };
    let state_path = run.out.join(STATE_FILE);
    if !state_path.exists() {
        return Err(rerr(format!("{} not found; start the run without --resume", state_path.display())));
    }
    let (model, model_meta) = Seq2Seq::load(&run.out)?;
    let state = TensorFile::open(&state_path)?;
    let meta = state.metadata()?;
    let step: usize = meta.get("step").and_then(|s| s.parse().ok()).ok_or_else(|| rerr("no valid 'step' in the trainer state".into()))?;
    if model_meta.get("step") != meta.get("step") {
        return Err(rerr(format!("model.safetensors is from step {:?} but {STATE_FILE} from step {step}", model_meta.get("step"))));
    }
    let saved: TranslationConfig =
        meta.get("train_config").and_then(|s| serde_json::from_str(s).ok()).ok_or_else(|| rerr("no valid 'train_config' in the trainer state".into()))?;
    let mut want = run.config.clone();
    (want.steps, want.eval_every) = (saved.steps, saved.eval_every);
    if want != saved {
        return Err(rerr(format!(
            "the training options differ from the saved run's ({saved:?}); give the saved values (or leave the flags out) with --resume"
        )));
    }
    let fingerprint = corpus_fingerprint(&run.data_files)?;
    if meta.get("data_fingerprint").and_then(|s| s.parse::<u64>().ok()).is_some_and(|f| f != fingerprint) {
        return Err(rerr("the data files differ from those the run was started with; pass the original ones to continue it".into()));
    }
    let mut opt = Optimizer::new(run.config.optimizer, run.config.weight_decay, run.config.decay_rule, &model.layout, run.config.optimizer_dtype);
    opt.load_state(&state)?;
    opt.step = meta.get("optimizer_step").and_then(|s| s.parse().ok()).unwrap_or(step as u64);
    Ok(State {
        dir: run.out.clone(),
        model,
        opt,
        tok: load_tokenizer(&run.out, None)?,
        metrics: MetricsLog::open(&run.out.join("metrics.jsonl"), Some(step))?,
        start_step: step,
        fingerprint,
    })
}

/// The options a translation run folder was saved with.
pub fn saved_translation_config(out: &Path) -> Result<TranslationConfig> {
    crate::session::saved_config(out)
}

fn save_checkpoint(s: &State, step: usize, cfg: &TranslationConfig) -> Result<()> {
    refuse_non_finite(&s.model.layout, &s.model.params, step, &s.dir)?;
    s.model.save_config(&s.dir)?;
    let config = serde_json::to_string(cfg).expect("serializes");
    commit_checkpoint(&s.dir, step, attn_model::checkpoint::WEIGHTS_FILE, &s.opt, s.fingerprint, config, |path, meta| {
        Ok(s.model.save_weights(path, Some(meta))?)
    })
}

/// Runs `attn train --task translation`.
pub fn train_translation(run: &TranslationRun) -> Result<TranslationSummary> {
    let cfg = &run.config;
    cfg.validate()?;
    let (train, val): (Vec<Pair>, Vec<Pair>) = match &run.val_pairs {
        Some(v) => (run.train_pairs.clone(), v.clone()),
        None => {
            let cut = run.train_pairs.len() - ((run.train_pairs.len() as f64 * cfg.val_fraction).round() as usize);
            (run.train_pairs[..cut].to_vec(), run.train_pairs[cut..].to_vec())
        }
    };
    if train.is_empty() || val.is_empty() {
        return Err(TrainError::Data(format!(
            "{} training and {} validation pairs; both need at least one (see --val-fraction, --val-data)",
            train.len(),
            val.len()
        )));
    }
    let _lock = run_dir::RunLock::acquire(&run.out)?;
    attn_kernels::mixed::set_matmul_precision(run.config.dtype.precision());
    let staging = run_dir::staging_path(&run.out);
    let mut s = if run.resume {
        if let Some(note) = run_dir::recover(&run.out)? {
            eprintln!("note: {}: an interrupted checkpoint was found: {note}", run.out.display());
        }
        resumed(run)?
    } else {
        run_dir::check_new_target(&run.out, run.overwrite)?;
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).map_err(TrainError::io(&staging))?;
        fresh(run, &staging, &train)?
    };
    let result = run_loop(run, &mut s, &train, &val);
    if !run.resume {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

fn run_loop(run: &TranslationRun, s: &mut State, train: &[Pair], val: &[Pair]) -> Result<TranslationSummary> {
    let cfg = &run.config;
    let max_len = cfg.max_len.min(s.model.config.n_ctx);
    let (train_ids, kept_t) = encode_pairs(s.tok.as_ref(), train, max_len)?;
    let (val_ids, kept_v) = encode_pairs(s.tok.as_ref(), val, max_len)?;
    let (long_t, long_v) = (train.len() - kept_t.len(), val.len() - kept_v.len());
    if train_ids.is_empty() || val_ids.is_empty() {
        return Err(TrainError::Data(format!("no pair fits in --max-len {max_len} tokens on both sides")));
    }
    let batches = token_batches(&train_ids, cfg.batch_tokens);
    let say = |line: String| {
        if !run.quiet {
            println!("{line}");
        }
    };
    say(format!("model: {}", s.model.describe()));
    say(format!(
        "data: {} training pairs in {} batches, {} validation pairs ({} and {} left out as longer than {max_len} tokens); threads: {}",
        train_ids.len(),
        batches.len(),
        val_ids.len(),
        long_t,
        long_v,
        rayon::current_num_threads()
    ));
    let (pad, start) = (s.model.config.pad_token_id, s.model.config.decoder_start_token_id);
    if let Some(path) = &run.export_plan {
        let micro: Vec<&Vec<usize>> =
            (0..cfg.steps * cfg.grad_accum).map(|k| &batches[epoch_order(batches.len(), cfg.seed, k / batches.len())[k % batches.len()]]).collect();
        let side = |p: &[PairIds]| p.iter().map(|x| (x.src.clone(), x.tgt.clone())).collect::<Vec<_>>();
        let plan = serde_json::json!({
            "pad": pad, "start": start, "eos": s.model.config.eos_token_id, "vocab": s.model.config.vocab_size,
            "train": side(&train_ids), "val": side(&val_ids), "micro_batches": micro, "grad_accum": cfg.grad_accum,
            // The recipe (the trainer state's train_config, its numbers the
            // exact f32 values this run uses), so that a peer can start from
            // the plan alone while this run trains.
            "train_config": cfg,
        });
        std::fs::write(path, serde_json::to_vec(&plan).expect("serializes")).map_err(TrainError::io(path))?;
    }
    let mut summary = TranslationSummary {
        step: s.start_step,
        train_loss: f32::NAN,
        val_loss: None,
        tok_per_s: 0.0,
        interrupted: false,
        skipped_steps: 0,
        train_pairs: train_ids.len(),
        val_pairs: val_ids.len(),
    };
    let run_start = Instant::now();
    let mut last_line = Instant::now();
    let (mut tokens_done, mut bad_in_row) = (0usize, 0usize);
    let mut order_cache: (usize, Vec<usize>) = (usize::MAX, Vec::new());
    let title = format!("{} — loss", run.out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    for step in s.start_step + 1..=cfg.steps {
        let t0 = Instant::now();
        let lr = cfg.lr_at(step);
        s.model.zero_grad();
        let (mut loss, mut step_tokens) = (0.0f64, 0usize);
        for micro in 0..cfg.grad_accum {
            let k = (step - 1) * cfg.grad_accum + micro;
            let (epoch, pos) = (k / batches.len(), k % batches.len());
            if order_cache.0 != epoch {
                order_cache = (epoch, epoch_order(batches.len(), cfg.seed, epoch));
            }
            let batch = make_batch(&train_ids, &batches[order_cache.1[pos]], pad, start);
            let l = s.model.forward(&batch, true, cfg.label_smoothing)?.expect("labels given");
            s.model.backward(1.0 / cfg.grad_accum as f32)?;
            loss += l.loss as f64;
            step_tokens += batch.b * (batch.s + batch.t);
        }
        let loss = (loss / cfg.grad_accum as f64) as f32;
        let (params, grads) = s.model.params_and_grads();
        let norm = if loss.is_finite() { s.opt.step(params, grads, lr, cfg.grad_clip) } else { f32::NAN };
        tokens_done += step_tokens;
        let tok_per_s = step_tokens as f64 / t0.elapsed().as_secs_f64();
        if loss.is_finite() && norm.is_finite() {
            bad_in_row = 0;
        } else {
            bad_in_row += 1;
            summary.skipped_steps += 1;
            say(format!("step {step}: loss {loss}, gradient norm {norm}: not finite, step skipped (no update)"));
            if bad_in_row >= crate::trainer::MAX_NON_FINITE_IN_A_ROW {
                return Err(TrainError::Diverged { step, count: bad_in_row, loss, norm, last_checkpoint: run_dir::committed_step(&s.dir) });
            }
        }
        let stopping = run.stop.load(Ordering::SeqCst) || run.halt_at == Some(step);
        let is_eval = step % cfg.eval_every.max(1) == 0 || step == cfg.steps || stopping;
        let val_loss = if is_eval {
            let (nats, n) = score_pairs(&mut s.model, &val_ids, cfg.batch_tokens)?;
            Some((nats / n as f64) as f32)
        } else {
            None
        };
        s.metrics.push(StepRecord { step, train_loss: loss, lr, tok_per_s, grad_norm: norm, elapsed_s: run_start.elapsed().as_secs_f64(), val_loss })?;
        summary.step = step;
        summary.train_loss = loss;
        summary.val_loss = val_loss.or(summary.val_loss);
        summary.tok_per_s = tokens_done as f64 / run_start.elapsed().as_secs_f64();
        if let Some(v) = val_loss {
            save_checkpoint(s, step, cfg).map_err(|e| checkpoint_failed(step, &run.out, &s.dir, e))?;
            publish_at_first_checkpoint(&mut s.dir, &mut s.metrics, &run.out)?;
            plot_run(&s.dir.join("loss.png"), &title, &s.metrics.records)?;
            say(format!("step {step:>6} | train {loss:.4} | val {v:.4} | lr {lr:.2e} | {tok_per_s:.0} tok/s"));
            last_line = Instant::now();
        } else if last_line.elapsed().as_secs() >= 30 {
            // A heartbeat between evals, so a long run visibly lives.
            say(format!("step {step:>6} | train {loss:.4} | lr {lr:.2e} | {tok_per_s:.0} tok/s"));
            last_line = Instant::now();
        }
        if stopping {
            summary.interrupted = step != cfg.steps;
            break;
        }
    }
    if summary.interrupted {
        say(format!("stopped after step {}; checkpoint saved in {}; continue with the same command plus --resume", summary.step, run.out.display()));
    }
    Ok(summary)
}
