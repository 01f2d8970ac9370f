//! `attn embed` and `attn similarity`: sentence embeddings from an encoder.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use attn_tokenizer::Tokenizer;
use clap::Args;

#[derive(Args)]
pub struct EmbedArgs {
    /// A Hugging Face BERT / sentence-transformers folder, e.g. all-MiniLM-L6-v2
    #[arg(long)]
    model: PathBuf,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
    /// Worker threads (default: all cores)
    #[arg(long)]
    threads: Option<usize>,
    #[arg(required = true)]
    texts: Vec<String>,
}

#[derive(Args)]
pub struct SimilarityArgs {
    /// A model folder (config.json, model.safetensors, tokenizer files) or an attn run folder
    #[arg(long)]
    model: PathBuf,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
    /// Worker threads (default: all cores)
    #[arg(long)]
    threads: Option<usize>,
    /// Two or more texts, e.g. king queen car
    #[arg(required = true, num_args = 2..)]
    texts: Vec<String>,
}

/// An encoder and its tokenizer, with the sequence limit sentence-transformers uses.
pub struct Encoder {
    pub bert: attn_model::Transformer,
    pub tok: Box<dyn Tokenizer>,
    max_len: usize,
}

impl Encoder {
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let (model, tok) = crate::load_any(dir)?;
        let crate::Loaded::Encoder(bert) = model else {
            anyhow::bail!("{} holds a decoder; sentence embeddings need an encoder such as all-MiniLM-L6-v2 (scripts/fetch_minilm.sh)", dir.display())
        };
        // sentence-transformers truncates at max_seq_length (256 for MiniLM);
        // without that file, at the model's positions. No padding: each text
        // is exactly its tokens.
        let st: serde_json::Value =
            std::fs::read_to_string(dir.join("sentence_bert_config.json")).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
        let max_len = st["max_seq_length"].as_u64().map_or(bert.config.n_ctx, |m| m as usize).min(bert.config.n_ctx);
        Ok(Encoder { bert, tok, max_len })
    }

    /// Longest input in tokens.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The ids the model sees for `text`, truncated (keeping the final `[SEP]`).
    pub fn ids(&self, text: &str) -> anyhow::Result<Vec<u32>> {
        let mut ids = self.tok.encode(text)?;
        if ids.len() > self.max_len {
            eprintln!("note: {text:.40?}… is {} tokens; truncated to {}", ids.len(), self.max_len);
            let last = *ids.last().expect("non-empty");
            ids.truncate(self.max_len - 1);
            ids.push(last);
        }
        Ok(ids)
    }

    pub fn embed(&self, texts: &[String]) -> anyhow::Result<Vec<Vec<f32>>> {
        let ids = texts.iter().map(|t| self.ids(t)).collect::<anyhow::Result<Vec<_>>>()?;
        Ok(self.bert.embed(&ids, 8192)?)
    }
}

pub fn cosine_matrix(v: &[Vec<f32>]) -> Vec<Vec<f64>> {
    v.iter().map(|a| v.iter().map(|b| attn_inspect::cosine(a, b)).collect()).collect()
}

pub fn run_embed(a: EmbedArgs) -> anyhow::Result<()> {
    crate::set_threads(a.threads)?;
    let enc = Encoder::load(&a.model)?;
    let vecs = enc.embed(&a.texts).context("embedding")?;
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", serde_json::json!({"texts": a.texts, "dim": enc.bert.config.n_embd, "embeddings": vecs}))?;
    } else {
        for v in &vecs {
            writeln!(out, "{}", v.iter().map(|x| format!("{x:.7}")).collect::<Vec<_>>().join(" "))?;
        }
    }
    Ok(())
}

pub fn run_similarity(a: SimilarityArgs) -> anyhow::Result<()> {
    crate::set_threads(a.threads)?;
    let enc = Encoder::load(&a.model)?;
    let cos = cosine_matrix(&enc.embed(&a.texts)?);
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", serde_json::json!({"texts": a.texts, "cosine": cos}))?;
        return Ok(());
    }
    let w = a.texts.iter().map(|t| t.chars().count()).max().unwrap_or(4).clamp(6, 24);
    let short = |t: &str| if t.chars().count() > w { t.chars().take(w - 1).chain(std::iter::once('…')).collect() } else { t.to_string() };
    write!(out, "{:>w$}", "")?;
    for t in &a.texts {
        write!(out, "  {:>w$}", short(t))?;
    }
    writeln!(out)?;
    for (t, row) in a.texts.iter().zip(&cos) {
        write!(out, "{:>w$}", short(t))?;
        for c in row {
            write!(out, "  {c:>w$.4}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}
