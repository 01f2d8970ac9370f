use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use attn_tokenizer::bpe::pattern_by_name;
use attn_tokenizer::train::BpeTrainer;
use attn_tokenizer::{load_tokenizer, Tokenizer};
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum TokenizerCommand {
    /// Train a byte-level BPE vocabulary on text files
    Train {
        /// Input text file
        #[arg(long, num_args = 1.., required = true)]
        data: Vec<PathBuf>,
        /// Total tokens: 256 bytes + merges + special tokens
        #[arg(long)]
        vocab_size: usize,
        /// Pre-tokenizer: gpt2, cl100k, or a regex
        #[arg(long, default_value = "gpt2")]
        pattern: String,
        /// Special tokens, e.g. <|endoftext|> (repeatable)
        #[arg(long)]
        special: Vec<String>,
        /// Where to write the result
        #[arg(long)]
        out: PathBuf,
        /// Worker threads (default: all cores)
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Token ids of a text (or a file) on stdout, or a token shard with --out
    Encode {
        #[command(flatten)]
        src: Source,
        /// Text to encode (or use --data)
        text: Option<String>,
        /// Input text file
        #[arg(long)]
        data: Option<PathBuf>,
        /// Write a token shard instead of printing ids
        #[arg(long)]
        out: Option<PathBuf>,
        /// Worker threads (default: all cores)
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Text of token ids
    Decode {
        #[command(flatten)]
        src: Source,
        ids: Vec<u32>,
    },
    /// Each token of a text with its id, e.g. "unhappiness" -> un|happiness
    Show {
        #[command(flatten)]
        src: Source,
        text: String,
    },
    /// Save any supported tokenizer as a Hugging Face tokenizer.json
    Convert {
        #[command(flatten)]
        src: Source,
        /// Where to write the result
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args)]
pub(crate) struct Source {
    /// tokenizer.json, a folder (tokenizer.json or vocab.json + merges.txt), or a .tiktoken file
    #[arg(long)]
    tokenizer: PathBuf,
    /// Pre-tokenizer regex for .tiktoken files: gpt2, cl100k, or a regex
    #[arg(long)]
    pattern: Option<String>,
}

impl Source {
    pub(crate) fn load(&self) -> anyhow::Result<Box<dyn Tokenizer>> {
        let pattern = self.pattern.as_deref().map(attn_tokenizer::bpe::pattern_by_name);
        load_tokenizer(&self.tokenizer, pattern).with_context(|| format!("loading the tokenizer {}", self.tokenizer.display()))
    }
}

pub fn run(c: TokenizerCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match c {
        TokenizerCommand::Train { data, vocab_size, pattern, special, out: path, threads } => {
            crate::set_threads(threads)?;
            let text = attn_train::data::read_corpus(&data)?;
            let start = std::time::Instant::now();
            let trainer = BpeTrainer { vocab_size, pattern: pattern_by_name(&pattern).to_string(), specials: special };
            let (tok, stats) = trainer.train(&text)?;
            let secs = start.elapsed().as_secs_f64();
            tok.save(&path)?;
            eprintln!(
                "trained {} tokens ({} merges, {} reusing a token) over {} distinct pieces of {:.1} MB in {secs:.2} s -> {}",
                tok.vocab_size(),
                stats.merges,
                stats.repeats,
                stats.words,
                text.len() as f64 / 1e6,
                path.display()
            );
        }
        TokenizerCommand::Encode { src, text, data, out: shard, threads } => {
            crate::set_threads(threads)?;
            let tok = src.load()?;
            let text = match (text, data) {
                (Some(t), None) => t,
                (None, Some(f)) => attn_train::data::read_corpus(&[f])?,
                _ => anyhow::bail!("give either TEXT or --data FILE"),
            };
            // A file is encoded as one text, so the ids are exactly those of the whole.
            let ids = tok.encode(&text)?;
            match shard {
                Some(p) => {
                    attn_train::data::write_shard(&p, &ids, tok.vocab_size(), attn_train::data::tokenizer_fingerprint(tok.as_ref()))?;
                    eprintln!("{} tokens ({:.2} bytes/token) -> {}", ids.len(), text.len() as f64 / ids.len().max(1) as f64, p.display());
                }
                None => writeln!(out, "{}", ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(" "))?,
            }
        }
        TokenizerCommand::Decode { src, ids } => {
            let tok = src.load()?;
            write!(out, "{}", String::from_utf8_lossy(&tok.decode_bytes(&ids)?))?;
        }
        TokenizerCommand::Show { src, text } => {
            let tok = src.load()?;
            let ids = tok.encode(&text)?;
            // A byte-level token can hold part of a character: show its bytes.
            let piece = |i: u32| {
                let b = tok.decode_bytes(&[i]).unwrap_or_default();
                String::from_utf8(b.clone()).unwrap_or_else(|_| b.escape_ascii().to_string())
            };
            let pieces: Vec<String> = ids.iter().map(|&i| piece(i)).collect();
            writeln!(out, "{}", pieces.join("|"))?;
            for (p, i) in pieces.iter().zip(&ids) {
                writeln!(out, "{i:>8}  {p:?}")?;
            }
        }
        TokenizerCommand::Convert { src, out: path } => {
            let tok = src.load()?;
            tok.save(&path)?;
            eprintln!("wrote {} ({} tokens)", path.display(), tok.vocab_size());
        }
    }
    Ok(())
}
