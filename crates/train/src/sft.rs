//! Supervised fine-tuning data: JSONL records of a prompt and its completion,
//! or of a conversation, turned into token ids with next-token labels on the
//! part the model should learn to write and `IGNORE` everywhere else.
//!
//! A conversation is rendered by the model's chat template. The span of each
//! assistant turn is found by rendering the conversation turn by turn: the
//! turn's text runs from the end of the prompt up to it
//! (`add_generation_prompt=True`) to the end of the conversation through it,
//! so the template's end-of-turn token is learned too. The whole rendering
//! is tokenized at once, as it is when the model is prompted, and a token is
//! labelled when any of its bytes lies in such a span.
//!
//! Batches are right-padded to their longest example: in a causal model no
//! real position attends to a later padded one, so no attention mask is
//! needed, and padded positions carry no label.

use std::ops::Range;
use std::path::{Path, PathBuf};

use attn_kernels::crossentropy::IGNORE;
use attn_model::Transformer;
use attn_tokenizer::chat::ChatTemplate;
use attn_tokenizer::{load_tokenizer, Tokenizer};
use serde::{Deserialize, Serialize};

use crate::data::corpus_fingerprint;
use crate::error::{Result, TrainError};
use crate::metrics::MetricsLog;
use crate::optim::Optimizer;
use crate::pairs::epoch_order;
use crate::session::{tokenizer_for, Data, Session};
use crate::trainer::{TrainRun, TOKENIZER_FILE};

/// Which tokens carry a label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossOn {
    /// The completion of prompt/completion records, the assistant turns of conversations.
    Auto,
    /// The completion (prompt/completion records only).
    Completion,
    /// The assistant turns (conversations only).
    Assistant,
    /// Every token.
    All,
}

/// One line of an SFT file.
#[derive(Clone, Debug)]
pub enum SftRecord {
    /// `{"prompt": ..., "completion": ...}`: the loss covers the completion.
    #[allow(missing_docs)]
    Completion { prompt: String, completion: String },
    /// Messages as written: `role` and `content`, and whatever else the template reads.
    #[allow(missing_docs)]
    Chat { messages: Vec<serde_json::Value> },
}

/// Reads `{"prompt", "completion"}` and `{"messages": [...]}` lines (blank
/// lines skipped); an error names the file, the line and the field.
pub fn read_sft(path: &Path) -> Result<Vec<SftRecord>> {
    let text = std::fs::read_to_string(path).map_err(TrainError::io(path))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |msg: String| TrainError::Data(format!("{}:{}: {msg}", path.display(), i + 1));
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| at(format!("invalid JSON: {e}")))?;
        let field = |k: &str| -> Result<String> {
            v[k].as_str().map(str::to_string).ok_or_else(|| at(format!("field \"{k}\" must be a string (got {})", short(&v[k]))))
        };
        if v.get("messages").is_some() {
            let msgs = v["messages"].as_array().ok_or_else(|| at("field \"messages\" must be a list of {\"role\", \"content\"} objects".into()))?;
            for (j, m) in msgs.iter().enumerate() {
                if !m["role"].is_string() || m.get("content").is_none() {
                    return Err(at(format!("messages[{j}] needs a string \"role\" and a \"content\" (got {})", short(m))));
                }
            }
            if msgs.is_empty() {
                return Err(at("field \"messages\" is empty".into()));
            }
            out.push(SftRecord::Chat { messages: msgs.clone() });
        } else if v.get("prompt").is_some() || v.get("completion").is_some() {
            out.push(SftRecord::Completion { prompt: field("prompt")?, completion: field("completion")? });
        } else {
            return Err(at("expected {\"prompt\": ..., \"completion\": ...} or {\"messages\": [{\"role\": ..., \"content\": ...}, ...]}".into()));
        }
    }
    if out.is_empty() {
        return Err(TrainError::Data(format!("{}: no records; each line is a JSON object with prompt/completion or messages", path.display())));
    }
    Ok(out)
}

fn short(v: &serde_json::Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        s.chars().take(57).chain("...".chars()).collect()
    } else {
        s
    }
}

/// Token ids and their next-token targets (`IGNORE` where unlabelled).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SftExample {
    /// The tokens.
    pub ids: Vec<u32>,
    /// Each position's next token, or `IGNORE`.
    pub targets: Vec<u32>,
}

impl SftExample {
    /// Positions that carry a label.
    pub fn labelled(&self) -> usize {
        self.targets.iter().filter(|&&t| t != IGNORE).count()
    }
}

/// The text a record trains on and the byte spans that carry labels.
pub fn record_text(rec: &SftRecord, template: &ChatTemplate, loss_on: LossOn) -> std::result::Result<(String, Vec<Range<usize>>), String> {
    match rec {
        SftRecord::Completion { prompt, completion } => {
            if loss_on == LossOn::Assistant {
                return Err("--loss-on assistant needs {\"messages\": ...} records; this one is prompt/completion (use --loss-on completion)".into());
            }
            // BOS (when the model has one) + prompt + completion + EOS, so
            // the model learns where a completion ends.
            let bos = template.bos_token.clone().unwrap_or_default();
            let eos = template.eos_token.clone().unwrap_or_default();
            let text = format!("{bos}{prompt}{completion}{eos}");
            let span = if loss_on == LossOn::All { 0..text.len() } else { bos.len() + prompt.len()..text.len() };
            Ok((text, vec![span]))
        }
        SftRecord::Chat { messages } => {
            if loss_on == LossOn::Completion {
                return Err("--loss-on completion needs {\"prompt\", \"completion\"} records; this one is a conversation (use --loss-on assistant)".into());
            }
            let render = |m: &[serde_json::Value], gen: bool| template.render_json(m, gen).map_err(|e| e.to_string());
            let text = render(messages, false)?;
            if loss_on == LossOn::All {
                let whole = 0..text.len();
                return Ok((text, vec![whole]));
            }
            let mut spans = Vec::new();
            for (i, _) in messages.iter().enumerate().filter(|(_, m)| m["role"] == "assistant") {
                let (before, through) = (render(&messages[..i], true)?, render(&messages[..=i], false)?);
                if !(through.starts_with(&before) && text.starts_with(&through)) {
                    return Err(format!(
                        "the chat template does not render this conversation turn by turn (message {i} changes what came before it), so its assistant turns cannot be located; use --loss-on all"
                    ));
                }
                spans.push(before.len()..through.len());
            }
            if spans.is_empty() {
                return Err("the conversation has no assistant turn to learn from (use --loss-on all to train on every token)".into());
            }
            Ok((text, spans))
        }
    }
}

/// Tokenizes `text` and labels the tokens whose first byte lies in `spans`.
pub fn label_text(tok: &dyn Tokenizer, text: &str, spans: &[Range<usize>]) -> std::result::Result<SftExample, String> {
    let ids = tok.encode_plain(text).map_err(|e| e.to_string())?;
    // Byte offset of each token, from its own bytes: exact for byte-level
    // and character tokenizers, whose tokens spell the text.
    let mut starts = Vec::with_capacity(ids.len());
    let mut spelled = Vec::with_capacity(text.len());
    for &id in &ids {
        starts.push(spelled.len());
        spelled.extend(tok.decode_bytes(&[id]).map_err(|e| e.to_string())?);
    }
    if spelled != text.as_bytes() {
        return Err("the tokenizer's tokens do not spell the text back byte for byte (it normalizes or adds spaces), so labels cannot be placed on tokens; use --loss-on all".into());
    }
    // A token is labelled when any of its bytes is: a token that straddles
    // the start of a completion (" 12" after "4?") is the completion's first.
    let end = |i: usize| starts.get(i + 1).copied().unwrap_or(spelled.len());
    let labelled = |i: usize| spans.iter().any(|r| starts[i] < r.end && end(i) > r.start);
    let targets = (0..ids.len()).map(|i| if i + 1 < ids.len() && labelled(i + 1) { ids[i + 1] } else { IGNORE }).collect();
    Ok(SftExample { ids, targets })
}

/// Examples for training: every record encoded, cut to `max_len` tokens;
/// records left with no label are dropped (and counted).
pub fn encode_records(
    records: &[SftRecord],
    tok: &dyn Tokenizer,
    template: &ChatTemplate,
    loss_on: LossOn,
    max_len: usize,
    path: &Path,
) -> Result<(Vec<SftExample>, usize)> {
    if let Some(ch) = records.iter().any(|r| matches!(r, SftRecord::Chat { .. })).then(|| template.unwritable_char(tok)).flatten() {
        return Err(TrainError::Data(format!(
            "{}: the chat template writes {ch:?}, which the model's tokenizer does not know, so it cannot learn to chat; start from a model whose tokenizer covers the template (a byte-level BPE), or give prompt / completion records",
            path.display()
        )));
    }
    let mut out = Vec::with_capacity(records.len());
    let mut dropped = 0;
    for (i, rec) in records.iter().enumerate() {
        let at = |msg: String| TrainError::Data(format!("{} record {}: {msg}", path.display(), i + 1));
        let (text, spans) = record_text(rec, template, loss_on).map_err(at)?;
        let mut ex = label_text(tok, &text, &spans).map_err(at)?;
        ex.ids.truncate(max_len);
        ex.targets.truncate(max_len);
        if ex.labelled() == 0 {
            dropped += 1;
        } else {
            out.push(ex);
        }
    }
    Ok((out, dropped))
}

/// Training and validation examples, batched.
pub struct SftData {
    /// Training examples.
    pub train: Vec<SftExample>,
    /// Held-out examples.
    pub val: Vec<SftExample>,
    /// The id padding takes.
    pub pad: u32,
}

impl SftData {
    /// Fills `x`, `y` with micro-batch `stream` (examples in a seeded order,
    /// reshuffled each epoch), right-padded to its longest example; returns
    /// that length.
    pub fn train_batch(&self, x: &mut [u32], y: &mut [u32], b: usize, seed: u64, stream: u64) -> usize {
        let n = self.train.len();
        let first = stream as usize * b;
        let mut picked = Vec::with_capacity(b);
        let mut order = (usize::MAX, Vec::new());
        for k in first..first + b {
            if order.0 != k / n {
                order = (k / n, epoch_order(n, seed, k / n));
            }
            picked.push(&self.train[order.1[k % n]]);
        }
        fill(x, y, &picked, self.pad)
    }

    /// Loss per labelled token over the first `limit` validation examples
    /// (all of them when None), `b` at a time: (nats, labelled tokens).
    pub fn val_nats(&self, model: &mut Transformer, b: usize, limit: Option<usize>, x: &mut Vec<u32>, y: &mut Vec<u32>) -> Result<(f64, usize)> {
        let n = limit.map_or(self.val.len(), |l| l.min(self.val.len()));
        let (mut nats, mut count) = (0.0f64, 0usize);
        for chunk in self.val[..n].chunks(b.max(1)) {
            let refs: Vec<&SftExample> = chunk.iter().collect();
            let t = refs.iter().map(|e| e.ids.len()).max().unwrap_or(1);
            x.resize(chunk.len() * t, 0);
            y.resize(chunk.len() * t, 0);
            fill(x, y, &refs, self.pad);
            model.forward(&x[..chunk.len() * t], Some(&y[..chunk.len() * t]), chunk.len(), t)?;
            nats += model.losses().iter().map(|&l| l as f64).sum::<f64>();
            count += refs.iter().map(|e| e.labelled()).sum::<usize>();
        }
        Ok((nats, count))
    }

    /// Tokens in the training examples, labelled or not.
    pub fn train_tokens(&self) -> usize {
        self.train.iter().map(|e| e.ids.len()).sum()
    }
    /// Tokens in the held-out examples, labelled or not.
    pub fn val_tokens(&self) -> usize {
        self.val.iter().map(|e| e.ids.len()).sum()
    }
}

/// Right-pads `examples` into (B, T) rows of `x` (with `pad`) and `y` (with
/// IGNORE); returns T, the longest example's length.
fn fill(x: &mut [u32], y: &mut [u32], examples: &[&SftExample], pad: u32) -> usize {
    let t = examples.iter().map(|e| e.ids.len()).max().unwrap_or(1);
    for (r, e) in examples.iter().enumerate() {
        let (xr, yr) = (&mut x[r * t..(r + 1) * t], &mut y[r * t..(r + 1) * t]);
        xr.fill(pad);
        yr.fill(IGNORE);
        xr[..e.ids.len()].copy_from_slice(&e.ids);
        yr[..e.targets.len()].copy_from_slice(&e.targets);
    }
    t
}

/// The records to train and validate on: --data's, and --val-data's or
/// the last --val-fraction of --data's (at least one).
fn split_records(run: &TrainRun) -> Result<(Vec<SftRecord>, Vec<SftRecord>)> {
    let mut train = Vec::new();
    for p in &run.data {
        train.extend(read_sft(p)?);
    }
    let mut val = Vec::new();
    for p in &run.val_data {
        val.extend(read_sft(p)?);
    }
    if val.is_empty() {
        if train.len() < 2 {
            return Err(TrainError::Data(format!("{} record(s): need at least 2 to hold one out for validation, or give --val-data", train.len())));
        }
        let k = ((train.len() as f64 * run.config.val_fraction).round() as usize).clamp(1, train.len() - 1);
        val = train.split_off(train.len() - k);
    }
    Ok((train, val))
}

/// Encodes the run's records with its tokenizer and chat template.
pub(crate) fn load_data(run: &TrainRun, tok: &dyn Tokenizer, template: &ChatTemplate) -> Result<SftData> {
    let loss_on = run.config.loss_on.unwrap_or(LossOn::Auto);
    let (train, val) = split_records(run)?;
    let t = run.config.seq_len;
    let label = |v: &[PathBuf]| v.first().cloned().unwrap_or_default();
    let (train, dropped) = encode_records(&train, tok, template, loss_on, t, &label(&run.data))?;
    let (val, val_dropped) = encode_records(&val, tok, template, loss_on, t, &label(if run.val_data.is_empty() { &run.data } else { &run.val_data }))?;
    if train.is_empty() || val.is_empty() {
        return Err(TrainError::Data(format!(
            "no training or no validation example keeps a label within --seq-len {t} tokens; raise --seq-len or shorten the prompts"
        )));
    }
    if (dropped > 0 || val_dropped > 0) && !run.quiet {
        eprintln!("note: {dropped} training and {val_dropped} validation records left out: nothing to learn within --seq-len {t} tokens");
    }
    Ok(SftData { train, val, pad: 0 })
}

/// Tokens the template writes that the tokenizer has no single id for: they
/// are learned as text, which works but costs tokens.
fn template_tokens_missing(tok: &dyn Tokenizer, template: &ChatTemplate) -> Vec<String> {
    let mut names: Vec<String> = ["<|im_start|>", "<|im_end|>"].iter().filter(|s| template.source.contains(*s)).map(|s| s.to_string()).collect();
    names.extend(template.end_of_turn());
    names.sort();
    names.dedup();
    names.into_iter().filter(|s| tok.encode_plain(s).map_or(true, |ids| ids.len() != 1)).collect()
}

/// A new SFT run: the model (random, or --init's), its tokenizer and chat
/// template (ChatML for a new model), and the encoded records.
pub(crate) fn start_fresh(run: &TrainRun, dir: &Path) -> Result<Session> {
    let (template, tok, model) = match &run.init {
        Some(init) => {
            let tok = load_tokenizer(init, None)?;
            let (model, _) = Transformer::load(init)?;
            (ChatTemplate::for_dir(init)?, tok, model)
        }
        None => {
            let template = ChatTemplate::chatml();
            let (train, val) = split_records(run)?;
            let mut text = String::new();
            for rec in train.iter().chain(&val) {
                let (t, _) = record_text(rec, &template, LossOn::All).map_err(TrainError::Data)?;
                text.push_str(&t);
                text.push('\n');
            }
            let tok = tokenizer_for(&run.tokenizer, &text, run, &["<|endoftext|>", "<|im_start|>", "<|im_end|>"])?;
            let mut arch = run.model.with_vocab(tok.vocab_size());
            // A new chat model ends its turns with <|im_end|>: its EOS, so
            // that `attn generate` stops there too.
            if let Some(id) = tok.encode_plain("<|im_end|>").ok().filter(|ids| ids.len() == 1) {
                arch.eos_token_ids = id;
            }
            let model = Transformer::new(arch, run.config.seed)?;
            (template, tok, model)
        }
    };
    let mut model = model;
    let lora_base = crate::session::attach_lora(run, &mut model)?;
    let missing = template_tokens_missing(tok.as_ref(), &template);
    if !missing.is_empty() && !run.quiet {
        eprintln!("note: the tokenizer has no single token for {}; the model learns them as text", missing.join(", "));
    }
    tok.save(&dir.join(TOKENIZER_FILE))?;
    template.save_to_dir(dir)?;
    let data = load_data(run, tok.as_ref(), &template)?;
    let opt = Optimizer::new(run.config.optimizer, run.config.weight_decay, run.config.decay_rule, model.trainable_layout(), run.config.optimizer_dtype);
    Ok(Session {
        model,
        opt,
        data: Data::Sft(data),
        metrics: MetricsLog::open(&dir.join("metrics.jsonl"), None)?,
        start_step: 0,
        dir: dir.to_path_buf(),
        data_fingerprint: corpus_fingerprint(&[run.data.as_slice(), &run.val_data].concat())?,
        lora_base,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use attn_tokenizer::CharTokenizer;

    /// The labelled targets, as text.
    fn labelled_text(tok: &CharTokenizer, ex: &SftExample) -> String {
        let ids: Vec<u32> = ex.targets.iter().copied().filter(|&t| t != IGNORE).collect();
        tok.decode(&ids).unwrap()
    }

    #[test]
    fn completion_labels_cover_the_completion_and_eos_only() {
        let template = ChatTemplate::chatml();
        let rec = SftRecord::Completion { prompt: "2+2=".into(), completion: "4".into() };
        let (text, spans) = record_text(&rec, &template, LossOn::Auto).unwrap();
        assert_eq!(text, "2+2=4<|im_end|>");
        let tok = CharTokenizer::train(&text);
        let ex = label_text(&tok, &text, &spans).unwrap();
        assert_eq!(labelled_text(&tok, &ex), "4<|im_end|>");
        // Every target is the next id, where there is a label.
        for i in 0..ex.ids.len() - 1 {
            assert!(ex.targets[i] == IGNORE || ex.targets[i] == ex.ids[i + 1]);
        }
        let (_, all) = record_text(&rec, &template, LossOn::All).unwrap();
        assert_eq!(labelled_text(&tok, &label_text(&tok, &text, &all).unwrap()), "+2=4<|im_end|>");
    }

    #[test]
    fn chat_labels_cover_each_assistant_turn_and_its_end() {
        let template = ChatTemplate::chatml();
        let m = |r: &str, c: &str| serde_json::json!({"role": r, "content": c});
        let rec = SftRecord::Chat { messages: vec![m("system", "S"), m("user", "Q1"), m("assistant", "A1"), m("user", "Q2"), m("assistant", "A2")] };
        let (text, spans) = record_text(&rec, &template, LossOn::Auto).unwrap();
        let tok = CharTokenizer::train(&text);
        let ex = label_text(&tok, &text, &spans).unwrap();
        assert_eq!(labelled_text(&tok, &ex), "A1<|im_end|>\nA2<|im_end|>\n");
        let e = record_text(&rec, &template, LossOn::Completion).unwrap_err();
        assert!(e.contains("--loss-on assistant"), "{e}");
        let no_reply = SftRecord::Chat { messages: vec![m("user", "Q")] };
        assert!(record_text(&no_reply, &template, LossOn::Auto).unwrap_err().contains("no assistant turn"));
    }

    #[test]
    fn batches_are_right_padded_and_cover_every_example_each_epoch() {
        let ex = |n: usize| SftExample { ids: vec![n as u32; n], targets: vec![7; n] };
        let data = SftData { train: (1..=5).map(ex).collect(), val: vec![], pad: 0 };
        let (mut x, mut y) = (vec![0u32; 2 * 5], vec![0u32; 2 * 5]);
        let mut seen = Vec::new();
        for stream in 0..5 {
            let t = data.train_batch(&mut x, &mut y, 2, 9, stream);
            for r in 0..2 {
                let row = &x[r * t..(r + 1) * t];
                let len = row[0] as usize;
                assert_eq!(t, t.max(len));
                assert!(row[..len].iter().all(|&v| v as usize == len) && row[len..].iter().all(|&v| v == 0));
                assert!(y[r * t + len..(r + 1) * t].iter().all(|&v| v == IGNORE));
                seen.push(len);
            }
        }
        // Two epochs of five: each example twice.
        seen.sort();
        assert_eq!(seen, vec![1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
    }
}
