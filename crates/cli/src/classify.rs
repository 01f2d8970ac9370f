//! `attn classify` (labels and probabilities for texts) and `attn eval` on a
//! classifier (accuracy, macro F1, confusion matrix).

use std::path::{Path, PathBuf};

use anyhow::Context;
use attn_model::Transformer;
use attn_train::classify::{argmax, encode_text, read_labelled, report};
use clap::Args;

#[derive(Args)]
pub struct ClassifyArgs {
    /// A classifier folder: an attn classification run, or a Hugging Face *ForSequenceClassification folder
    #[arg(long)]
    model: PathBuf,
    /// Texts to classify
    #[arg(required_unless_present = "data", conflicts_with = "data")]
    texts: Vec<String>,
    /// Classify the texts of a JSONL ({"text", ...}) or CSV (a text column) file
    #[arg(long)]
    data: Option<PathBuf>,
    /// Longest text in tokens; longer ones are cut [default: the model's context, at most 512]
    #[arg(long)]
    max_len: Option<usize>,
    /// Texts per forward pass (speed only)
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Print {"results": [{"text", "label", "probs": {label: p}, "logits": [...]}]}
    #[arg(long)]
    json: bool,
    /// Worker threads (default: all cores)
    #[arg(long)]
    threads: Option<usize>,
}

/// A classifier folder's model and tokenizer.
fn load(dir: &Path) -> anyhow::Result<(Transformer, Box<dyn attn_tokenizer::Tokenizer>)> {
    // A classifier folder, or a LoRA classifier run (its adapter merged into its base).
    let model = attn_model::lora::load_merged(dir, None).with_context(|| format!("loading the classifier in {}", dir.display()))?;
    anyhow::ensure!(
        model.config.is_classifier(),
        "{} is not a classifier (its config.json has no *ForSequenceClassification architecture with id2label); train one with attn train --task classify",
        dir.display()
    );
    let tok = attn_tokenizer::load_tokenizer(dir, None).with_context(|| format!("loading the tokenizer of {}", dir.display()))?;
    Ok((model, tok))
}

/// Logits (K per text) for `texts`, `b` at a time.
fn logits_of(
    model: &mut Transformer,
    tok: &dyn attn_tokenizer::Tokenizer,
    texts: &[String],
    max_len: Option<usize>,
    b: usize,
) -> anyhow::Result<Vec<Vec<f32>>> {
    let max_len = max_len.unwrap_or(model.context().min(512)).min(model.context());
    let keep_last = !model.config.causal;
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(b.max(1)) {
        let ids: Vec<Vec<u32>> = chunk.iter().map(|t| encode_text(tok, t, max_len, keep_last)).collect::<Result<_, _>>()?;
        let t = ids.iter().map(Vec::len).max().unwrap_or(1);
        let mut x = vec![0u32; ids.len() * t];
        for (r, e) in ids.iter().enumerate() {
            x[r * t..r * t + e.len()].copy_from_slice(e);
        }
        let lens: Vec<usize> = ids.iter().map(Vec::len).collect();
        let (logits, _) = model.classify(&x, &lens, t, None)?;
        out.extend(logits.chunks_exact(model.config.labels.len()).map(<[f32]>::to_vec));
    }
    Ok(out)
}

fn softmax(l: &[f32]) -> Vec<f64> {
    let m = l.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let e: Vec<f64> = l.iter().map(|&x| (x as f64 - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

pub fn run(a: ClassifyArgs) -> anyhow::Result<()> {
    crate::set_threads(a.threads)?;
    let (mut model, tok) = load(&a.model)?;
    let texts: Vec<String> = match &a.data {
        Some(p) => texts_of(p)?,
        None => a.texts.clone(),
    };
    let logits = logits_of(&mut model, tok.as_ref(), &texts, a.max_len, a.batch_size)?;
    let labels = &model.config.labels;
    let mut out = std::io::stdout().lock();
    if a.json {
        let results: Vec<serde_json::Value> = texts
            .iter()
            .zip(&logits)
            .map(|(t, l)| {
                let p = softmax(l);
                let probs: serde_json::Map<String, serde_json::Value> = labels.iter().zip(&p).map(|(k, v)| (k.clone(), (*v).into())).collect();
                serde_json::json!({"text": t, "label": labels[argmax(l) as usize], "probs": probs, "logits": l})
            })
            .collect();
        return crate::print_or_quiet(&mut out, &format!("{}\n", serde_json::json!({ "results": results })));
    }
    let mut lines = String::new();
    for (t, l) in texts.iter().zip(&logits) {
        let (best, p) = (argmax(l) as usize, softmax(l));
        lines.push_str(&format!("{}\t{:.4}\t{}\n", labels[best], p[best], t.replace('\n', " ")));
    }
    crate::print_or_quiet(&mut out, &lines)
}

/// The texts of a JSONL or CSV file (labels, if any, ignored).
fn texts_of(path: &Path) -> anyhow::Result<Vec<String>> {
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) {
        let mut r = csv::Reader::from_path(path).with_context(|| format!("{}", path.display()))?;
        let col = r.headers()?.iter().position(|h| h.trim() == "text").with_context(|| format!("{}: no \"text\" column", path.display()))?;
        return r.records().map(|rec| Ok(rec?.get(col).unwrap_or_default().to_string())).collect();
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let v: serde_json::Value = serde_json::from_str(l).with_context(|| format!("{}:{}: invalid JSON", path.display(), i + 1))?;
            v["text"].as_str().map(str::to_string).with_context(|| format!("{}:{}: field \"text\" must be a string", path.display(), i + 1))
        })
        .collect()
}

/// `attn eval` on a classifier: accuracy, macro F1 and the confusion matrix
/// over labelled texts; `out` draws the matrix (rows: true labels).
pub fn eval(dir: &Path, data: &Path, json: bool, out: Option<&Path>, b: usize, max_len: Option<usize>) -> anyhow::Result<()> {
    let (mut model, tok) = load(dir)?;
    let records = read_labelled(data)?;
    let labels = model.config.labels.clone();
    let truth: Vec<u32> = records
        .iter()
        .map(|(_, l)| {
            labels
                .iter()
                .position(|x| x == l)
                .map(|i| i as u32)
                .with_context(|| format!("{}: label {l:?} is not one of the model's {labels:?}", data.display()))
        })
        .collect::<anyhow::Result<_>>()?;
    let texts: Vec<String> = records.into_iter().map(|r| r.0).collect();
    let pred: Vec<u32> = logits_of(&mut model, tok.as_ref(), &texts, max_len, b)?.iter().map(|l| argmax(l)).collect();
    let r = report(&labels, &truth, &pred);
    if let Some(path) = out {
        let title = format!("{}: accuracy {:.4}, macro F1 {:.4} over {} texts", crate::inspect::model_name(dir), r.accuracy, r.macro_f1, r.count);
        attn_inspect::plot::confusion(path, &title, &labels, &r.confusion).with_context(|| format!("drawing {}", path.display()))?;
    }
    let mut stdout = std::io::stdout().lock();
    if json {
        return crate::print_or_quiet(&mut stdout, &format!("{}\n", serde_json::to_string(&r)?));
    }
    let mut s = format!("accuracy {:.4} | macro F1 {:.4} | {} texts\n", r.accuracy, r.macro_f1, r.count);
    for (l, row) in labels.iter().zip(&r.confusion) {
        s.push_str(&format!("  true {l:>12}: {}\n", labels.iter().zip(row).map(|(p, c)| format!("{p} {c}")).collect::<Vec<_>>().join(", ")));
    }
    crate::print_or_quiet(&mut stdout, &s)
}
