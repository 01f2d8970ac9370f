//! Classification data: labelled texts from JSONL (`{"text", "label"}`) or
//! CSV (a header with `text` and `label` columns), tokenized, cut to
//! --seq-len, and batched right-padded with each text's length; and the
//! scores of a classifier on them (accuracy, macro F1, confusion matrix).

use std::path::{Path, PathBuf};

use attn_model::Transformer;
use attn_tokenizer::{Tokenizer, TokenizerError};
use serde::Serialize;

use crate::error::{Result, TrainError};
use crate::pairs::epoch_order;

/// A text and its label.
pub type Labelled = (String, String);

/// Reads (text, label) records; the label may be a string or a number.
pub fn read_labelled(path: &Path) -> Result<Vec<Labelled>> {
    let is_csv = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let mut out = Vec::new();
    if is_csv {
        let mut r = csv::Reader::from_path(path).map_err(|e| TrainError::Data(format!("{}: {e}", path.display())))?;
        let headers = r.headers().map_err(|e| TrainError::Data(format!("{}: {e}", path.display())))?.clone();
        let col = |name: &str| {
            headers.iter().position(|h| h.trim() == name).ok_or_else(|| {
                TrainError::Data(format!("{}: the header has no \"{name}\" column (it has {:?}); name the columns text and label", path.display(), headers))
            })
        };
        let (ti, li) = (col("text")?, col("label")?);
        for (i, rec) in r.records().enumerate() {
            let rec = rec.map_err(|e| TrainError::Data(format!("{}: record {}: {e}", path.display(), i + 1)))?;
            let (Some(t), Some(l)) = (rec.get(ti), rec.get(li)) else {
                return Err(TrainError::Data(format!("{}: record {} has no text or label field", path.display(), i + 1)));
            };
            out.push((t.to_string(), l.trim().to_string()));
        }
    } else {
        let text = std::fs::read_to_string(path).map_err(TrainError::io(path))?;
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let at = |m: String| TrainError::Data(format!("{}:{}: {m}", path.display(), i + 1));
            let v: serde_json::Value = serde_json::from_str(line).map_err(|e| at(format!("invalid JSON: {e}")))?;
            let text = v["text"].as_str().ok_or_else(|| at("field \"text\" must be a string".into()))?;
            let label = match &v["label"] {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::Bool(b) => b.to_string(),
                other => return Err(at(format!("field \"label\" must be a string or a number (got {other})"))),
            };
            out.push((text.to_string(), label));
        }
    }
    if out.is_empty() {
        return Err(TrainError::Data(format!("{}: no records", path.display())));
    }
    Ok(out)
}

/// Every label of `records`, sorted: the ids a new classifier gives them.
pub fn label_set(records: &[(String, String)]) -> Vec<String> {
    let mut l: Vec<String> = records.iter().map(|r| r.1.clone()).collect();
    l.sort();
    l.dedup();
    l
}

/// Token ids of `text` cut to `max_len`. An encoder keeps its last token
/// (BERT's `[SEP]`) as transformers' truncation does.
pub fn encode_text(tok: &dyn Tokenizer, text: &str, max_len: usize, keep_last: bool) -> Result<Vec<u32>> {
    // Quote the text around the fault: the records were shuffled, so a
    // position would not find it.
    let mut ids = tok.encode(text).map_err(|e| {
        let at = match &e {
            TokenizerError::UnknownChar { ch, .. } => text.find(*ch).unwrap_or(0),
            _ => 0,
        };
        let from = text[..at].char_indices().rev().nth(29).map_or(0, |(i, _)| i);
        let quote: String = text[from..].chars().take(60).collect();
        TrainError::Data(format!("{e} (in the text ...{quote:?}...)"))
    })?;
    if ids.is_empty() {
        return Err(TrainError::Data("a text is empty after tokenization".into()));
    }
    if ids.len() > max_len {
        let last = *ids.last().expect("non-empty");
        ids.truncate(max_len);
        if keep_last {
            ids[max_len - 1] = last;
        }
    }
    Ok(ids)
}

/// Tokenized examples with label ids.
pub struct ClassifyData {
    /// The label names, in id order.
    pub labels: Vec<String>,
    /// (token ids, label id) of each training text.
    pub train: Vec<(Vec<u32>, u32)>,
    /// The same for the held-out texts.
    pub val: Vec<(Vec<u32>, u32)>,
    /// The id padding takes.
    pub pad: u32,
}

/// (train, val) records: --val-data's, or the last --val-fraction of a seeded shuffle of --data's.
pub fn split_labelled(data: &[PathBuf], val_data: &[PathBuf], val_fraction: f64, seed: u64) -> Result<(Vec<Labelled>, Vec<Labelled>)> {
    let mut train = Vec::new();
    for p in data {
        train.extend(read_labelled(p)?);
    }
    let mut val = Vec::new();
    for p in val_data {
        val.extend(read_labelled(p)?);
    }
    if val.is_empty() {
        if train.len() < 2 {
            return Err(TrainError::Data("need at least 2 records to hold one out for validation, or give --val-data".into()));
        }
        // Files are often sorted by label: shuffle before holding out.
        let order = epoch_order(train.len(), seed ^ 0x5EED, 0);
        let mut shuffled: Vec<(String, String)> = order.iter().map(|&i| train[i].clone()).collect();
        let k = ((shuffled.len() as f64 * val_fraction).round() as usize).clamp(1, shuffled.len() - 1);
        val = shuffled.split_off(shuffled.len() - k);
        train = shuffled;
    }
    Ok((train, val))
}

impl ClassifyData {
    /// Tokenizes the records (texts cut to `max_len` tokens, keeping the
    /// last one with `keep_last`) and maps their labels to ids; a label not in
    /// `labels` is an error.
    pub fn new(
        train: &[(String, String)],
        val: &[(String, String)],
        labels: Vec<String>,
        tok: &dyn Tokenizer,
        max_len: usize,
        keep_last: bool,
    ) -> Result<Self> {
        let enc = |recs: &[(String, String)]| -> Result<Vec<(Vec<u32>, u32)>> {
            recs.iter()
                .map(|(text, label)| {
                    let id = labels
                        .iter()
                        .position(|l| l == label)
                        .ok_or_else(|| TrainError::Data(format!("label {label:?} is not one of the model's labels {labels:?}")))?;
                    Ok((encode_text(tok, text, max_len, keep_last)?, id as u32))
                })
                .collect()
        };
        Ok(ClassifyData { train: enc(train)?, val: enc(val)?, labels, pad: 0 })
    }

    /// Micro-batch `stream`'s texts, in a seeded order reshuffled each epoch.
    pub fn train_batch(&self, b: usize, seed: u64, stream: u64) -> Vec<&(Vec<u32>, u32)> {
        let n = self.train.len();
        let first = stream as usize * b;
        let mut order = (usize::MAX, Vec::new());
        (first..first + b)
            .map(|k| {
                if order.0 != k / n {
                    order = (k / n, epoch_order(n, seed, k / n));
                }
                &self.train[order.1[k % n]]
            })
            .collect()
    }

    /// One forward (and, with `backward`, backward) pass over `batch`:
    /// returns the mean loss and the tokens it ran.
    pub fn run(&self, model: &mut Transformer, batch: &[&(Vec<u32>, u32)], backward: Option<f32>) -> Result<(f32, Vec<f32>, usize)> {
        let t = batch.iter().map(|e| e.0.len()).max().unwrap_or(1);
        let mut x = vec![self.pad; batch.len() * t];
        for (r, e) in batch.iter().enumerate() {
            x[r * t..r * t + e.0.len()].copy_from_slice(&e.0);
        }
        let lens: Vec<usize> = batch.iter().map(|e| e.0.len()).collect();
        let labels: Vec<u32> = batch.iter().map(|e| e.1).collect();
        let (logits, loss) = model.classify(&x, &lens, t, Some(&labels))?;
        if let Some(scale) = backward {
            model.classify_backward(scale)?;
        }
        Ok((loss.expect("labels given"), logits, batch.len() * t))
    }

    /// Loss and predictions over the first `limit` validation texts (all when None), `b` at a time.
    pub fn score_val(&self, model: &mut Transformer, b: usize, limit: Option<usize>) -> Result<(f64, Vec<u32>)> {
        let n = limit.map_or(self.val.len(), |l| l.min(self.val.len()));
        let (mut nats, mut preds) = (0.0f64, Vec::with_capacity(n));
        let k = self.labels.len();
        for chunk in self.val[..n].chunks(b.max(1)) {
            let refs: Vec<&(Vec<u32>, u32)> = chunk.iter().collect();
            let (loss, logits, _) = self.run(model, &refs, None)?;
            nats += loss as f64 * chunk.len() as f64;
            preds.extend(logits.chunks_exact(k).map(argmax));
        }
        Ok((nats, preds))
    }
}

/// The index of the largest value (the first on a tie).
pub fn argmax(row: &[f32]) -> u32 {
    row.iter().enumerate().fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) }).0 as u32
}

/// A classifier's scores on labelled texts.
#[derive(Debug, Clone, Serialize)]
pub struct ClassifyReport {
    /// Correct / count.
    pub accuracy: f64,
    /// The mean over labels of each label's F1 (a label never predicted nor
    /// present counts 0).
    pub macro_f1: f64,
    /// The label names, in id order.
    pub labels: Vec<String>,
    /// `confusion[true][predicted]`
    pub confusion: Vec<Vec<usize>>,
    /// Texts scored.
    pub count: usize,
}

/// Accuracy, macro F1 and the confusion matrix of `pred` against `truth`.
pub fn report(labels: &[String], truth: &[u32], pred: &[u32]) -> ClassifyReport {
    let k = labels.len();
    let mut confusion = vec![vec![0usize; k]; k];
    for (&t, &p) in truth.iter().zip(pred) {
        confusion[t as usize][p as usize] += 1;
    }
    let correct: usize = (0..k).map(|i| confusion[i][i]).sum();
    let f1s: Vec<f64> = (0..k)
        .map(|i| {
            let tp = confusion[i][i] as f64;
            let predicted: usize = (0..k).map(|r| confusion[r][i]).sum();
            let actual: usize = confusion[i].iter().sum();
            if tp == 0.0 {
                0.0
            } else {
                let (p, r) = (tp / predicted as f64, tp / actual as f64);
                2.0 * p * r / (p + r)
            }
        })
        .collect();
    ClassifyReport {
        accuracy: correct as f64 / truth.len().max(1) as f64,
        macro_f1: f1s.iter().sum::<f64>() / k.max(1) as f64,
        labels: labels.to_vec(),
        confusion,
        count: truth.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A text the tokenizer cannot encode is quoted around the fault, which
    /// may lie far from its start.
    #[test]
    fn an_unencodable_text_is_quoted_where_it_fails() {
        let tok = attn_tokenizer::CharTokenizer::train("abc ");
        let text = format!("{}=abc", "a".repeat(200));
        let e = encode_text(&tok, &text, 64, false).unwrap_err().to_string();
        assert!(e.contains(&format!("\"{}=abc\"", "a".repeat(30))), "{e}");
    }

    #[test]
    fn report_counts_and_f1() {
        let labels = vec!["ham".to_string(), "spam".to_string()];
        // truth: 3 ham, 2 spam; predictions: one ham called spam.
        let r = report(&labels, &[0, 0, 0, 1, 1], &[0, 0, 1, 1, 1]);
        assert_eq!(r.confusion, vec![vec![2, 1], vec![0, 2]]);
        assert!((r.accuracy - 0.8).abs() < 1e-12);
        // ham: p 1, r 2/3 -> 0.8; spam: p 2/3, r 1 -> 0.8.
        assert!((r.macro_f1 - 0.8).abs() < 1e-12);
    }

    #[test]
    fn csv_and_jsonl_read_alike() {
        let dir = tempfile::tempdir().unwrap();
        let (c, j) = (dir.path().join("a.csv"), dir.path().join("a.jsonl"));
        std::fs::write(&c, "label,text\nspam,\"Buy now, cheap\"\nham,hello\n").unwrap();
        std::fs::write(&j, "{\"text\": \"Buy now, cheap\", \"label\": \"spam\"}\n{\"text\": \"hello\", \"label\": \"ham\"}\n").unwrap();
        assert_eq!(read_labelled(&c).unwrap(), read_labelled(&j).unwrap());
        std::fs::write(&c, "body,label\nx,1\n").unwrap();
        assert!(read_labelled(&c).unwrap_err().to_string().contains("\"text\" column"));
        std::fs::write(&j, "{\"text\": 3, \"label\": 1}\n").unwrap();
        assert!(read_labelled(&j).unwrap_err().to_string().contains("a.jsonl:1"));
    }
}
