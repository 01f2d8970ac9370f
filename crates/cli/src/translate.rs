//! Translation from the command line: `attn train --task translation`,
//! `attn translate`, and `attn eval` on an encoder-decoder folder.

use std::path::{Path, PathBuf};

use anyhow::Context;
use attn_generate::{search, SamplerConfig, Sampling, SearchConfig, Seq2SeqSettings};
use attn_model::{EncoderMemory, Seq2Seq, Seq2SeqConfig};
use attn_tokenizer::Tokenizer;
use attn_train::optim::DecayRule;
use attn_train::pairs::{read_aligned, read_tsv};
use attn_train::translation::{train_translation, Schedule, TranslationConfig, TranslationRun};
use clap::Args;
use serde::Serialize;

use crate::train::{exit_if_signalled, optimizer_of, stop_flags, tokenizer_spec, TrainArgs};

#[derive(Args)]
pub struct TranslateArgs {
    /// An encoder-decoder folder: an attn translation run, or a Marian / BART folder
    #[arg(long)]
    model: PathBuf,
    /// Texts to translate
    #[arg(conflicts_with = "data")]
    text: Vec<String>,
    /// A file of texts, one a line, or - for standard input (a source<TAB>target file's targets are ignored); a blank line gives a blank line
    #[arg(long)]
    data: Option<PathBuf>,
    /// Beam width, 1 is greedy [default: the folder's num_beams, else 1]
    #[arg(long, value_parser = crate::count)]
    beam: Option<usize>,
    /// Beam scores are log-probability sums divided by length^A [default: the folder's, else 1.0]
    #[arg(long, allow_negative_numbers = true)]
    length_penalty: Option<f32>,
    /// Tokens to generate at most, EOS included [default: the folder's max_new_tokens or max_length - 1, else twice the source's tokens plus 16; within the model's positions]
    #[arg(long, value_parser = crate::count)]
    max_new_tokens: Option<usize>,
    /// No run of N tokens appears twice in a translation; 0 is off [default: the folder's no_repeat_ngram_size, else 0]
    #[arg(long)]
    no_repeat_ngram_size: Option<usize>,
    #[command(flatten)]
    sample: SampleFlags,
    /// Cut a source longer than the model's positions to fit, keeping its end-of-sequence token, rather than refuse it (long documents to summarize)
    #[arg(long)]
    truncate: bool,
    /// Sources per batch (speed only)
    #[arg(long, default_value_t = 16, value_parser = crate::count)]
    batch_size: usize,
    /// Print {"translations": [{"source", "text", "ids", "score"}]}
    #[arg(long)]
    json: bool,
    /// Worker threads (default: all cores)
    #[arg(long)]
    threads: Option<usize>,
}

/// Sampling instead of greedy or beam search, as transformers' `do_sample`.
#[derive(Args, Default)]
pub struct SampleFlags {
    /// Sample each token at this softmax temperature; 0 is greedy or beam search [default: the folder's when its do_sample is true, else 1 once --top-k or --top-p asks to sample]
    #[arg(long, allow_negative_numbers = true)]
    temperature: Option<f32>,
    /// Sample from the k most likely tokens, 0 keeps all; asks to sample [default: the folder's, else 50]
    #[arg(long)]
    top_k: Option<usize>,
    /// Sample from the smallest set of tokens whose probability reaches p; asks to sample [default: the folder's, else 1]
    #[arg(long, allow_negative_numbers = true)]
    top_p: Option<f32>,
    /// Seed of the sampler's random numbers; text i of the input draws from seed + i
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Serialize)]
pub struct Translated {
    pub source: String,
    pub text: String,
    pub ids: Vec<u32>,
    pub score: f32,
}

/// An encoder-decoder folder and its tokenizer.
pub fn load_seq2seq(dir: &Path) -> anyhow::Result<(Seq2Seq, Box<dyn Tokenizer>)> {
    let (m, _) = Seq2Seq::load(dir).with_context(|| format!("loading the model in {}", dir.display()))?;
    let tok = attn_tokenizer::load_tokenizer(dir, None).with_context(|| format!("loading the tokenizer of {}", dir.display()))?;
    if tok.vocab_size() > m.vocab_size() {
        anyhow::bail!("{}: the tokenizer has {} ids but the model {}; they do not belong together", dir.display(), tok.vocab_size(), m.vocab_size());
    }
    Ok((m, tok))
}

/// A source's ids, ending with EOS (tokenizers without a template, such as a
/// plain vocab.json, do not add it), within the model's positions.
pub fn source_ids(model: &Seq2Seq, tok: &dyn Tokenizer, text: &str) -> anyhow::Result<Vec<u32>> {
    ids_with_eos(model, tok.encode(text), text, false)
}

/// A target's ids (Marian folders tokenize targets with target.spm), as `source_ids`.
pub(crate) fn target_ids(model: &Seq2Seq, tok: &dyn Tokenizer, text: &str) -> anyhow::Result<Vec<u32>> {
    ids_with_eos(model, tok.encode_target(text), text, false)
}

/// `ids` ending with the EOS. Past the model's positions: with `cut`, the
/// first n_ctx - 1 and the EOS (what a transformers tokenizer called with
/// truncation=True and max_length = n_ctx gives these models), else an error.
fn ids_with_eos(model: &Seq2Seq, ids: attn_tokenizer::Result<Vec<u32>>, text: &str, cut: bool) -> anyhow::Result<Vec<u32>> {
    let (eos, limit) = (model.config.eos_token_id, model.config.n_ctx);
    let mut v = ids.with_context(|| format!("tokenizing {text:?}"))?;
    if v.last() != Some(&eos) {
        v.push(eos);
    }
    if v.len() > limit && cut {
        v.truncate(limit - 1);
        v.push(eos);
    }
    if v.len() > limit {
        // The start of the text names it; a document to summarize may be pages long.
        let head: String = text.chars().take(80).collect();
        let more = if head.len() < text.len() { "..." } else { "" };
        anyhow::bail!("a text has {} tokens, more than the model's {limit} positions: {head:?}{more} (attn translate --truncate cuts sources to fit)", v.len());
    }
    Ok(v)
}

/// Pads `sources` into one batch and encodes it; returns the memory and the padded length.
pub fn encode_batch(model: &Seq2Seq, sources: &[Vec<u32>]) -> anyhow::Result<(EncoderMemory, usize)> {
    let s = sources.iter().map(Vec::len).max().unwrap_or(1);
    let mut src = vec![model.config.pad_token_id; sources.len() * s];
    for (i, v) in sources.iter().enumerate() {
        src[i * s..][..v.len()].copy_from_slice(v);
    }
    Ok((model.encode_sources(&src, &sources.iter().map(Vec::len).collect::<Vec<_>>(), s)?, s))
}

/// How to decode: the flags given, else the model folder's generation
/// settings (as transformers' `generate()` reads them), else attn's
/// defaults. The folder's settings attn does not apply are named on stderr.
pub struct Decoding {
    /// max_new_tokens is set per batch from `max_new`.
    search: SearchConfig,
    max_new: Option<usize>,
    /// Sources past the model's positions are cut, not refused.
    pub truncate: bool,
}

impl Decoding {
    /// `beam`, `length_penalty`, `max_new`, `no_repeat` and `flags` are the flags' values, when given.
    pub fn new(
        dir: &Path,
        model: &Seq2Seq,
        beam: Option<usize>,
        length_penalty: Option<f32>,
        max_new: Option<usize>,
        no_repeat: Option<usize>,
        flags: &SampleFlags,
    ) -> anyhow::Result<Decoding> {
        let mut s = Seq2SeqSettings::from_dir(dir, model.vocab_size(), model.config.eos_token_id)?;
        if let Some(n) = no_repeat {
            s.rules.no_repeat_ngram_size = n;
        }
        // Whether to sample: the flags, else the folder's do_sample, which
        // with the folder's beams would be beam sampling (not supported).
        let asked = match flags.temperature {
            Some(t) => Some(t != 0.0),
            None => (flags.top_k.is_some() || flags.top_p.is_some()).then_some(true),
        };
        let folder_beams = s.num_beams.unwrap_or(1);
        let sampling = asked.unwrap_or(s.sample.is_some() && beam.unwrap_or(folder_beams) == 1);
        if asked.is_none() && beam.is_none() && s.sample.is_some() && folder_beams > 1 {
            let file = s.file.as_ref().map(|f| f.display().to_string()).unwrap_or_default();
            s.ignored.push(format!("{file}: do_sample = true with num_beams = {folder_beams} (beam sampling; --beam 1 samples)"));
        }
        crate::note_unapplied(&s.ignored, "attn's greedy, sampling and beam search");
        let folder = s.sample.unwrap_or(SamplerConfig { temperature: 1.0, top_k: 50, top_p: 1.0, repetition_penalty: 1.0 });
        let sample = sampling.then(|| Sampling {
            sampler: SamplerConfig {
                temperature: flags.temperature.unwrap_or(folder.temperature),
                top_k: flags.top_k.unwrap_or(folder.top_k),
                top_p: flags.top_p.unwrap_or(folder.top_p),
                repetition_penalty: 1.0,
            },
            seed: flags.seed,
        });
        // Flags that ask to sample overrule the folder's beams, not --beam.
        let num_beams = if asked == Some(true) { beam.unwrap_or(1) } else { beam.unwrap_or(folder_beams) };
        let search = SearchConfig {
            max_new_tokens: 0,
            num_beams,
            length_penalty: length_penalty.or(s.length_penalty).unwrap_or(1.0),
            early_stopping: s.early_stopping.unwrap_or(attn_generate::EarlyStopping::Heuristic),
            rules: s.rules,
            sample,
        };
        // A folder's max_length (opus-mt: 512) may name every position, one of
        // which is the start token's; a flag asking past them is refused.
        let folder_max = s.max_new_tokens.map(|n| n.min(model.config.n_ctx - 1));
        Ok(Decoding { search, max_new: max_new.or(folder_max), truncate: false })
    }

    pub fn beam(&self) -> usize {
        self.search.num_beams
    }
}

/// Translates `texts` in batches; ids are the generated tokens without the EOS.
pub fn translate_texts(model: &Seq2Seq, tok: &dyn Tokenizer, texts: &[String], how: &Decoding, batch: usize) -> anyhow::Result<Vec<Translated>> {
    let mut out = Vec::with_capacity(texts.len());
    for (c, chunk) in texts.chunks(batch.max(1)).enumerate() {
        out.extend(translate_batch(model, tok, chunk, how, c * batch.max(1))?);
    }
    Ok(out)
}

/// One batch of `texts`, the first of which is text `first` of the input
/// (sampling draws text i from seed + i whatever the batch size).
fn translate_batch(model: &Seq2Seq, tok: &dyn Tokenizer, texts: &[String], how: &Decoding, first: usize) -> anyhow::Result<Vec<Translated>> {
    let (pad, eos) = (model.config.pad_token_id, model.config.eos_token_id);
    let ids = texts.iter().map(|t| ids_with_eos(model, tok.encode(t), t, how.truncate)).collect::<anyhow::Result<Vec<_>>>()?;
    let (mem, s) = encode_batch(model, &ids)?;
    let max_new_tokens = how.max_new.unwrap_or((2 * s + 16).min(model.config.n_ctx - 1));
    let sample = how.search.sample.map(|s| Sampling { seed: s.seed.wrapping_add(first as u64), ..s });
    let cfg = SearchConfig { max_new_tokens, sample, ..how.search.clone() };
    let mut out = Vec::with_capacity(texts.len());
    for (h, text) in search(model, &mem, &cfg)?.into_iter().zip(texts) {
        let ids: Vec<u32> = h.ids.iter().copied().filter(|&x| x != eos && x != pad).collect();
        let text_out = tok.decode(&ids)?;
        out.push(Translated { source: text.clone(), text: text_out.trim().to_string(), ids, score: h.score });
    }
    Ok(out)
}

pub fn run(a: TranslateArgs) -> anyhow::Result<()> {
    crate::set_threads(a.threads)?;
    let lines: Vec<String> = match &a.data {
        Some(p) => {
            let text = if p.as_os_str() == "-" {
                let mut t = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut t).context("reading the texts from standard input")?;
                t
            } else {
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?
            };
            text.lines().map(|l| l.split('\t').next().unwrap_or(l).to_string()).collect()
        }
        None => a.text.clone(),
    };
    // Blank lines are kept as blank translations, so that line i of the
    // output is the translation of line i of the input.
    let blank = |l: &String| l.trim().is_empty();
    anyhow::ensure!(lines.iter().any(|l| !blank(l)), "nothing to translate: give TEXT arguments or --data FILE");
    let (model, tok) = load_seq2seq(&a.model)?;
    let mut how = Decoding::new(&a.model, &model, a.beam, a.length_penalty, a.max_new_tokens, a.no_repeat_ngram_size, &a.sample)?;
    how.truncate = a.truncate;
    // Batch by batch, each batch's lines (and the blank ones before them)
    // printed as soon as it is done: a long file shows progress, and what was
    // printed stays if a later line fails. --json prints one object at the end.
    let mut stdout = std::io::stdout().lock();
    let mut all = Vec::new();
    let (mut batch, mut done_texts) = (Vec::new(), 0);
    for (i, line) in lines.iter().enumerate() {
        if !blank(line) {
            batch.push(line.clone());
        }
        // A batch is run when full, at the end, or (empty) to pass on a blank
        // line that no text waits before.
        if !batch.is_empty() && batch.len() < a.batch_size && i + 1 < lines.len() {
            continue;
        }
        // Trailing blank lines end the input with an empty batch.
        let mut translated = if batch.is_empty() { Vec::new() } else { translate_batch(&model, tok.as_ref(), &batch, &how, done_texts)? }.into_iter();
        done_texts += batch.len();
        batch.clear();
        let start = all.len();
        for l in &lines[start..=i] {
            all.push(if blank(l) {
                Translated { source: l.clone(), text: String::new(), ids: Vec::new(), score: 0.0 }
            } else {
                translated.next().expect("one per text")
            });
        }
        if !a.json {
            let text: String = all[start..].iter().map(|t| format!("{}\n", t.text)).collect();
            crate::print_or_quiet(&mut stdout, &text)?;
        }
    }
    if a.json {
        crate::print_or_quiet(&mut stdout, &format!("{}\n", serde_json::to_string(&serde_json::json!({ "translations": all }))?))?;
    }
    Ok(())
}

/// `attn eval` on an encoder-decoder: loss over every target token (EOS
/// included, no label smoothing), and BLEU / chrF of the translations.
pub fn eval(model_dir: &Path, data: &Path, beam: Option<usize>, json: bool) -> anyhow::Result<()> {
    let (mut model, tok) = load_seq2seq(model_dir)?;
    let how = Decoding::new(model_dir, &model, beam, None, None, None, &SampleFlags::default())?;
    let beam = how.beam();
    let pairs = read_tsv(&[data.to_path_buf()])?;
    let (ids, kept) = attn_train::pairs::encode_pairs(tok.as_ref(), &pairs, model.config.n_ctx)?;
    let long = pairs.len() - kept.len();
    anyhow::ensure!(!ids.is_empty(), "no pair in {} fits the model's {} positions", data.display(), model.config.n_ctx);
    let (nats, tokens) = attn_train::translation::score_pairs(&mut model, &ids, 4096)?;
    let sources: Vec<String> = kept.iter().map(|&i| pairs[i].0.clone()).collect();
    let refs: Vec<String> = kept.iter().map(|&i| pairs[i].1.clone()).collect();
    let hyps: Vec<String> = translate_texts(&model, tok.as_ref(), &sources, &how, 16)?.into_iter().map(|t| t.text).collect();
    let loss = nats / tokens as f64;
    let r = serde_json::json!({
        "loss": loss,
        "perplexity": loss.exp(),
        "tokens": tokens,
        "pairs": ids.len(),
        "skipped_long": long,
        "bleu": attn_train::mt_metrics::corpus_bleu(&hyps, &refs),
        "chrf": attn_train::mt_metrics::corpus_chrf(&hyps, &refs),
        "beam": beam,
    });
    if json {
        println!("{r}");
    } else {
        println!(
            "loss {:.6} nats/token | perplexity {:.4} | {} tokens in {} pairs | BLEU {:.2} | chrF {:.2} (beam {beam})",
            loss,
            loss.exp(),
            tokens,
            ids.len(),
            r["bleu"].as_f64().unwrap_or(0.0),
            r["chrf"].as_f64().unwrap_or(0.0)
        );
    }
    Ok(())
}

/// `attn train --task translation`.
pub fn train(a: TrainArgs, matches: &clap::ArgMatches) -> anyhow::Result<()> {
    let given = |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    let preset = if given("preset") { a.preset.clone() } else { "transformer-small".into() };
    // The vocabulary and the special ids come from the tokenizer.
    let mut model =
        Seq2SeqConfig::preset(&preset, 1).with_context(|| format!("--preset {preset}: translation presets are {}", attn_model::SEQ2SEQ_PRESETS.join(", ")))?;
    if a.norm_position == crate::train::NormPos::Pre {
        model = model.pre_norm();
    }
    let (pairs, files) = match (&a.source, &a.target) {
        (Some(s), Some(t)) => (read_aligned(s, t)?, vec![s.clone(), t.clone()]),
        _ => (read_tsv(&a.data)?, a.data.clone()),
    };
    let val_pairs = if a.val_data.is_empty() { None } else { Some(read_tsv(&a.val_data)?) };
    let mut files = files;
    files.extend(a.val_data.iter().cloned());
    let tokenizer = if given("tokenizer") { tokenizer_spec(&a.tokenizer)? } else { attn_train::TokenizerSpec::Bpe(8000) };
    let config = TranslationConfig {
        steps: a.steps,
        batch_tokens: a.batch_tokens,
        grad_accum: a.grad_accum,
        lr: a.lr,
        min_lr: a.min_lr.unwrap_or(a.lr / 10.0),
        warmup: a.warmup,
        schedule: match a.schedule {
            crate::train::Schedule::Cosine => Schedule::Cosine,
            crate::train::Schedule::Noam => Schedule::Noam,
        },
        weight_decay: a.weight_decay,
        // The paper's Adam epsilon.
        optimizer: optimizer_of(&a, 1e-9),
        decay_rule: if a.decay_embeddings { DecayRule::MatricesAndEmbeddings } else { DecayRule::Matrices },
        optimizer_dtype: a.optimizer_dtype.moments(),
        dtype: a.dtype.moments(),
        grad_clip: a.grad_clip,
        label_smoothing: a.label_smoothing,
        eval_every: a.eval_every,
        max_len: a.max_len.unwrap_or(model.n_ctx),
        val_fraction: a.val_fraction,
        seed: a.seed,
    };
    // On --resume the saved options hold, with the flags given now on top;
    // the trainer refuses any change but --steps and --eval-every.
    let config = if a.resume {
        let mut c = attn_train::translation::saved_translation_config(&a.out)?;
        macro_rules! take {
            ($($field:ident: $flag:literal),*) => {$( if given($flag) { c.$field = config.$field.clone(); } )*};
        }
        take!(steps: "steps", batch_tokens: "batch_tokens", grad_accum: "grad_accum", lr: "lr", min_lr: "min_lr", warmup: "warmup",
              schedule: "schedule", weight_decay: "weight_decay", grad_clip: "grad_clip", label_smoothing: "label_smoothing",
              eval_every: "eval_every", max_len: "max_len", val_fraction: "val_fraction", seed: "seed");
        if ["optimizer", "beta1", "beta2", "momentum"].iter().any(|f| given(f)) {
            c.optimizer = config.optimizer;
        }
        c
    } else {
        config
    };
    let (stop, sigterm) = stop_flags()?;
    let run = TranslationRun {
        out: a.out.clone(),
        train_pairs: pairs,
        val_pairs,
        data_files: files,
        model,
        tokenizer,
        init: a.init.clone(),
        config,
        resume: a.resume,
        overwrite: a.overwrite,
        halt_at: a.halt_at,
        quiet: a.quiet,
        stop: &stop,
        export_plan: a.export_plan.clone(),
    };
    let s = train_translation(&run)?;
    println!("{}", serde_json::to_string(&s)?);
    exit_if_signalled(s.interrupted, &stop, &sigterm);
    Ok(())
}
