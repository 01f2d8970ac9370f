//! Setting up a training session: a fresh run (corpus, tokenizer, shards,
//! model) or a resumed one (the run folder's model, optimizer state and
//! options).

use std::path::{Path, PathBuf};

use attn_model::checkpoint::TensorFile;
use attn_model::Transformer;
use attn_tokenizer::bpe::GPT2_PATTERN;
use attn_tokenizer::train::BpeTrainer;
use attn_tokenizer::{load_tokenizer, CharTokenizer, Tokenizer};

use crate::data::{corpus_fingerprint, read_corpus, split, tokenizer_fingerprint, write_shard, TokenShard};
use crate::error::{Result, TrainError};
use crate::metrics::MetricsLog;
use crate::optim::Optimizer;
use crate::run_dir::{self, STATE_FILE};
use crate::sft::SftData;
use crate::trainer::{TokenizerSpec, TrainConfig, TrainRun, TOKENIZER_FILE};

pub(crate) struct Session {
    /// The folder the run writes to: the staging folder of a new run until its first checkpoint.
    pub dir: PathBuf,
    pub model: Transformer,
    pub opt: Optimizer,
    pub data: Data,
    pub metrics: MetricsLog,
    pub start_step: usize,
    /// Fingerprint of the --data files the run was started with.
    pub data_fingerprint: u64,
    /// A LoRA run's base model folder (the adapter config's `base_model_name_or_path`).
    pub lora_base: Option<String>,
}

/// A new classification run: --init's body with a head over the labels of
/// the data (or the labels of --init when it is a classifier already).
fn start_classify(run: &TrainRun, dir: &Path) -> Result<Session> {
    let init = run.init.as_ref().ok_or_else(|| TrainError::Config("--task classify fine-tunes a model: give it with --init DIR".into()))?;
    let (train, val) = crate::classify::split_labelled(&run.data, &run.val_data, run.config.val_fraction, run.config.seed)?;
    let existing = attn_model::config_from_dir(init)?.labels;
    let labels = if existing.is_empty() { crate::classify::label_set(&train) } else { existing };
    if labels.len() < 2 {
        return Err(TrainError::Data(format!("the training data has {} label(s) ({labels:?}); a classifier needs at least 2", labels.len())));
    }
    let mut model = Transformer::load_as_classifier(init, labels.clone(), run.config.seed)?;
    // LoRA: adapters on the body, and the head trained in full beside them.
    let lora_base = attach_lora(run, &mut model)?;
    if let Some(mut l) = model.lora.take() {
        l.add_head(&model);
        model.lora = Some(l);
    }
    let tok = load_tokenizer(init, None)?;
    let data = crate::classify::ClassifyData::new(&train, &val, labels, tok.as_ref(), run.config.seq_len, !model.config.causal)?;
    tok.save(&dir.join(TOKENIZER_FILE))?;
    for f in ["tokenizer_config.json", "special_tokens_map.json", "vocab.txt"] {
        if init.join(f).exists() {
            std::fs::copy(init.join(f), dir.join(f)).map_err(TrainError::io(&dir.join(f)))?;
        }
    }
    let opt = Optimizer::new(run.config.optimizer, run.config.weight_decay, run.config.decay_rule, model.trainable_layout(), run.config.optimizer_dtype);
    Ok(Session {
        model,
        opt,
        data: Data::Classify(data),
        metrics: MetricsLog::open(&dir.join("metrics.jsonl"), None)?,
        start_step: 0,
        dir: dir.to_path_buf(),
        data_fingerprint: corpus_fingerprint(&[run.data.as_slice(), &run.val_data].concat())?,
        lora_base,
    })
}

/// Puts new LoRA adapters on the model when the run asks for them; returns
/// the base folder the adapter config will name.
pub(crate) fn attach_lora(run: &TrainRun, model: &mut Transformer) -> Result<Option<String>> {
    let Some(cfg) = &run.config.lora else { return Ok(None) };
    let init = run.init.as_ref().ok_or_else(|| TrainError::Config("LoRA trains adapters on an existing model: give it with --init DIR".into()))?;
    model.lora = Some(attn_model::lora::Lora::new(&model.config, cfg.clone(), run.config.seed)?);
    Ok(Some(init.canonicalize().unwrap_or_else(|_| init.clone()).display().to_string()))
}

/// What a run trains and validates on.
pub(crate) enum Data {
    /// Plain text: token shards, sampled in windows of --seq-len.
    Text { train: TokenShard, val: TokenShard },
    /// Supervised fine-tuning examples.
    Sft(SftData),
    /// Labelled texts for a classifier.
    Classify(crate::classify::ClassifyData),
}

impl Data {
    pub fn describe(&self) -> String {
        match self {
            Data::Text { train, val } => format!("{} train tokens, {} val tokens", train.len(), val.len()),
            Data::Sft(d) => format!("{} train examples ({} tokens), {} val examples ({} tokens)", d.train.len(), d.train_tokens(), d.val.len(), d.val_tokens()),
            Data::Classify(d) => format!("{} train texts, {} val texts, labels {:?}", d.train.len(), d.val.len(), d.labels),
        }
    }

    /// One micro-batch's forward and backward pass (gradients scaled by
    /// `scale`): its mean loss and the tokens it ran.
    pub fn train_step(
        &self,
        model: &mut Transformer,
        x: &mut [u32],
        y: &mut [u32],
        b: usize,
        t: usize,
        seed: u64,
        stream: u64,
        scale: f32,
    ) -> Result<(f32, usize)> {
        if let Data::Classify(d) = self {
            let batch = d.train_batch(b, seed, stream);
            let (loss, _, tokens) = d.run(model, &batch, Some(scale))?;
            return Ok((loss, tokens));
        }
        let tb = self.train_batch(x, y, b, t, seed, stream);
        let loss = model.train_step(&x[..b * tb], &y[..b * tb], b, tb, scale)?;
        Ok((loss, b * tb))
    }

    /// Fills micro-batch `stream` into x, y; returns its sequence length.
    pub fn train_batch(&self, x: &mut [u32], y: &mut [u32], b: usize, t: usize, seed: u64, stream: u64) -> usize {
        match self {
            Data::Text { train, .. } => {
                train.sample_batch(x, y, b, t, seed, stream);
                t
            }
            Data::Sft(d) => d.train_batch(x, y, b, seed, stream),
            Data::Classify(_) => unreachable!("classification batches run through train_step"),
        }
    }

    /// The periodic validation loss: the same batches every time.
    pub fn eval_loss(&self, model: &mut Transformer, cfg: &TrainConfig, x: &mut [u32], y: &mut [u32]) -> Result<f32> {
        match self {
            Data::Text { val, .. } => crate::trainer::eval_loss(model, val, cfg, x, y),
            Data::Sft(d) => {
                let (nats, n) = d.val_nats(model, cfg.batch_size, Some(cfg.eval_batches.max(1) * cfg.batch_size), &mut Vec::new(), &mut Vec::new())?;
                Ok((nats / n.max(1) as f64) as f32)
            }
            Data::Classify(d) => {
                let limit = cfg.eval_batches.max(1) * cfg.batch_size;
                let (nats, preds) = d.score_val(model, cfg.batch_size, Some(limit))?;
                Ok((nats / preds.len().max(1) as f64) as f32)
            }
        }
    }

    /// (nats, predictions) over the whole validation split.
    pub fn full_val(&self, model: &mut Transformer, t: usize, b: usize) -> Result<(f64, usize)> {
        match self {
            Data::Text { val, .. } => crate::eval::score_tokens(model, &val.to_vec(), t, b),
            Data::Sft(d) => d.val_nats(model, b, None, &mut Vec::new(), &mut Vec::new()),
            Data::Classify(d) => {
                let (nats, preds) = d.score_val(model, b, None)?;
                Ok((nats, preds.len()))
            }
        }
    }

    /// A classifier's scores on the whole validation split.
    pub fn classify_report(&self, model: &mut Transformer, b: usize) -> Result<Option<crate::classify::ClassifyReport>> {
        let Data::Classify(d) = self else { return Ok(None) };
        let (_, preds) = d.score_val(model, b, None)?;
        let truth: Vec<u32> = d.val.iter().map(|e| e.1).collect();
        Ok(Some(crate::classify::report(&d.labels, &truth, &preds)))
    }
}

pub(crate) fn data_dir(out: &Path) -> PathBuf {
    out.join("data")
}

/// Tokenizes the corpus, writes the shards and a fresh model.
pub(crate) fn start_fresh(run: &TrainRun, dir: &Path) -> Result<Session> {
    if run.config.loss_on.is_some() {
        return crate::sft::start_fresh(run, dir);
    }
    if run.config.classify {
        return start_classify(run, dir);
    }
    let text = read_corpus(&run.data)?;
    let tok: Box<dyn Tokenizer> = match (&run.init, &run.tokenizer) {
        // Fine-tuning keeps the model's own tokenizer: its ids are what the weights know.
        (Some(dir), _) => load_tokenizer(dir, None)?,
        (None, spec) => tokenizer_for(spec, &text, run, &["<|endoftext|>"])?,
    };
    let ids = tok.encode(&text)?;
    let (train_ids, val_ids) = split(&ids, run.config.val_fraction);
    let t = run.config.seq_len;
    if train_ids.len() <= t {
        return Err(TrainError::Data(format!(
            "the corpus is shorter than one batch: {} training tokens, need more than --seq-len {t}; add text or lower --seq-len",
            train_ids.len()
        )));
    }
    if val_ids.len() <= t {
        return Err(TrainError::Data(format!(
            "the validation split has {} tokens, need more than --seq-len {t}; add text, raise --val-fraction or lower --seq-len",
            val_ids.len()
        )));
    }
    std::fs::create_dir_all(data_dir(dir)).map_err(TrainError::io(dir))?;
    let arch = run.model.with_vocab(tok.vocab_size());
    let fp = tokenizer_fingerprint(tok.as_ref());
    write_shard(&data_dir(dir).join("train.bin"), train_ids, tok.vocab_size(), fp)?;
    write_shard(&data_dir(dir).join("val.bin"), val_ids, tok.vocab_size(), fp)?;
    tok.save(&dir.join(TOKENIZER_FILE))?;
    let model = match &run.init {
        Some(dir) => {
            let (model, _) = Transformer::load(dir)?;
            // A tokenizer may have fewer ids than the embedding has rows
            // (vocabularies padded for speed), never more.
            if model.vocab_size() < tok.vocab_size() {
                return Err(TrainError::Data(format!(
                    "{}: the model has {} token ids but its tokenizer {}; the folder's config.json and tokenizer do not belong together",
                    dir.display(),
                    model.vocab_size(),
                    tok.vocab_size()
                )));
            }
            model
        }
        None => Transformer::new(arch, run.config.seed)?,
    };
    let mut model = model;
    let lora_base = attach_lora(run, &mut model)?;
    let opt = Optimizer::new(run.config.optimizer, run.config.weight_decay, run.config.decay_rule, model.trainable_layout(), run.config.optimizer_dtype);
    Ok(Session {
        model,
        opt,
        data: Data::Text { train: TokenShard::open(&data_dir(dir).join("train.bin"))?, val: TokenShard::open(&data_dir(dir).join("val.bin"))? },
        metrics: MetricsLog::open(&dir.join("metrics.jsonl"), None)?,
        start_step: 0,
        dir: dir.to_path_buf(),
        data_fingerprint: corpus_fingerprint(&run.data)?,
        lora_base,
    })
}

/// The tokenizer a fresh run asks for: character-level, a file, or BPE
/// trained here (with `specials`).
pub(crate) fn tokenizer_for(spec: &TokenizerSpec, text: &str, run: &TrainRun, specials: &[&str]) -> Result<Box<dyn Tokenizer>> {
    Ok(match spec {
        TokenizerSpec::Char => Box::new(CharTokenizer::train(text)),
        TokenizerSpec::File(p) => load_tokenizer(p, None)?,
        TokenizerSpec::Bpe(n) => {
            // Only the training part: the validation text stays unseen.
            let mut cut = ((text.len() as f64) * (1.0 - run.config.val_fraction)) as usize;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            let trainer = BpeTrainer { vocab_size: *n, pattern: GPT2_PATTERN.into(), specials: specials.iter().map(|s| s.to_string()).collect() };
            let (tok, stats) = trainer.train(&text[..cut])?;
            if !run.quiet {
                eprintln!("trained a BPE tokenizer: {} tokens, {} merges over {} distinct pieces", tok.vocab_size(), stats.merges, stats.words);
            }
            Box::new(tok)
        }
    })
}

/// The training options a run folder was saved with. Finishes or discards a
/// checkpoint a crash interrupted first, so the options are the last
/// committed ones.
pub fn saved_train_config(out: &Path) -> Result<TrainConfig> {
    saved_config(out)
}

/// The options (of any kind of run) in a run folder's trainer state.
pub(crate) fn saved_config<T: serde::de::DeserializeOwned>(out: &Path) -> Result<T> {
    // Recovering writes to the folder: under the run's lock, so that a
    // `--resume` into a folder a live run is writing is refused here rather
    // than deleting that run's checkpoint files in the middle of a commit.
    let _lock = out.is_dir().then(|| run_dir::RunLock::acquire(out)).transpose()?;
    if out.is_dir() {
        run_dir::recover(out)?;
    }
    let state_path = out.join(STATE_FILE);
    let rerr = |msg: String| TrainError::Resume { path: out.to_path_buf(), msg };
    if !state_path.exists() {
        return Err(rerr(format!("{} not found; start the run without --resume", state_path.display())));
    }
    let meta = TensorFile::open(&state_path)?.metadata()?;
    meta.get("train_config")
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| rerr(format!("{}: no valid 'train_config' for this kind of run in its metadata", state_path.display())))
}

pub(crate) fn resume(run: &TrainRun) -> Result<Session> {
    let state_path = run.out.join(STATE_FILE);
    let rerr = |msg: String| TrainError::Resume { path: run.out.clone(), msg };
    if !state_path.exists() {
        return Err(rerr(format!("{} not found; start the run without --resume", state_path.display())));
    }
    // A LoRA run holds the adapter; its config names the frozen base.
    let (model, model_meta, lora_base) = if attn_model::lora::is_adapter_dir(&run.out) {
        let base = attn_model::lora::adapter_base(&run.out)?;
        let mut m = attn_model::lora::load_base(&run.out)?;
        let (lora, meta) = attn_model::lora::Lora::load(&run.out, &m.config)?;
        m.lora = Some(lora);
        (m, meta, Some(base))
    } else {
        let (m, meta) = Transformer::load(&run.out)?;
        (m, meta, None)
    };
    let state = TensorFile::open(&state_path)?;
    let meta = state.metadata()?;
    let step: usize =
        meta.get("step").and_then(|s| s.parse().ok()).ok_or_else(|| rerr(format!("{}: no valid 'step' in its metadata", state_path.display())))?;
    if model_meta.get("step") != meta.get("step") {
        return Err(rerr(format!(
            "model.safetensors is from step {:?} but {STATE_FILE} from step {step}; the save was interrupted between files, restart the run",
            model_meta.get("step")
        )));
    }
    let saved: TrainConfig = meta
        .get("train_config")
        .and_then(|s| serde_json::from_str(s).ok())
        .ok_or_else(|| rerr(format!("{}: no valid 'train_config' in its metadata", state_path.display())))?;
    // Everything but the total step count must match, or the resumed run would
    // silently differ from the one it continues.
    let mut want = run.config.clone();
    want.steps = saved.steps;
    want.eval_every = saved.eval_every;
    // The products' precision may change (a machine without AMX runs bf16
    // no faster than f32); the weights and optimizer state mean the same.
    want.dtype = saved.dtype;
    if want != saved {
        // Name each option that differs, as flags, with both values.
        let (a, b) = (serde_json::to_value(&saved).expect("serializes"), serde_json::to_value(&want).expect("serializes"));
        // Over the keys of both: an option left at its default is not
        // written (`--dtype f32`), so it may be missing from either side.
        let (a, b) = (a.as_object().expect("a struct"), b.as_object().expect("a struct"));
        let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
        keys.sort();
        keys.dedup();
        let shown = |v: Option<&serde_json::Value>| v.map_or("the default".to_string(), |v| v.to_string());
        let diffs: Vec<String> = keys
            .into_iter()
            .filter(|k| a.get(k.as_str()) != b.get(k.as_str()))
            .map(|k| format!("--{}: saved {}, given {}", k.replace('_', "-"), shown(a.get(k.as_str())), shown(b.get(k.as_str()))))
            .collect();
        return Err(rerr(format!(
            "the training options differ from the saved run's: {}; give the saved values (or leave the flags out) with --resume",
            diffs.join("; ")
        )));
    }
    if run.config.steps != saved.steps {
        eprintln!("note: --steps changed from {} to {}; the learning-rate schedule stretches to the new total", saved.steps, run.config.steps);
    }
    if saved.dtype != run.config.dtype {
        eprintln!("note: --dtype changed from {} to {}: the products from here on are in the new precision", saved.dtype.name(), run.config.dtype.name());
    }
    // The run trains on its own shards; other --data would be silently ignored.
    let data_fingerprint = corpus_fingerprint(&[run.data.as_slice(), &run.val_data].concat())?;
    if meta.get("data_fingerprint").and_then(|s| s.parse::<u64>().ok()).is_some_and(|saved| saved != data_fingerprint) {
        return Err(rerr(format!(
            "--data differs from the text this run was started with (the run trains on its own shards in {}); pass the original --data to continue it, or start a new run to train on other text",
            data_dir(&run.out).display()
        )));
    }
    let tok = load_tokenizer(&run.out, None)?;
    let data = if saved.classify {
        let (train, val) = crate::classify::split_labelled(&run.data, &run.val_data, saved.val_fraction, saved.seed)?;
        Data::Classify(crate::classify::ClassifyData::new(&train, &val, model.config.labels.clone(), tok.as_ref(), saved.seq_len, !model.config.causal)?)
    } else if saved.loss_on.is_some() {
        Data::Sft(crate::sft::load_data(run, tok.as_ref(), &attn_tokenizer::chat::ChatTemplate::for_dir(&run.out)?)?)
    } else {
        let (train, val) = (TokenShard::open(&data_dir(&run.out).join("train.bin"))?, TokenShard::open(&data_dir(&run.out).join("val.bin"))?);
        for shard in [&train, &val] {
            shard.check_tokenizer(tok.as_ref(), &format!("the run's {}", run.out.join(TOKENIZER_FILE).display()))?;
        }
        Data::Text { train, val }
    };
    let mut opt = Optimizer::new(run.config.optimizer, run.config.weight_decay, run.config.decay_rule, model.trainable_layout(), run.config.optimizer_dtype);
    opt.load_state(&state)?;
    opt.step = meta.get("optimizer_step").and_then(|s| s.parse().ok()).unwrap_or(step as u64);
    Ok(Session {
        model,
        opt,
        data,
        metrics: MetricsLog::open(&run.out.join("metrics.jsonl"), Some(step))?,
        start_step: step,
        dir: run.out.clone(),
        data_fingerprint,
        lora_base,
    })
}
