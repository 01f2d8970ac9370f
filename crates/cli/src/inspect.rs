//! `attn inspect`: terminal and picture views of what `attn_inspect` computes.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use attn_generate::SamplerConfig;
use attn_inspect::plot::{self, label};
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum InspectCommand {
    /// Attention maps: every layer × head, or one head with its tokens
    Attention {
        /// An attn run folder or a Hugging Face model folder (decoder, BERT, Marian or BART)
        #[arg(long)]
        model: PathBuf,
        /// A LoRA adapter (PEFT folder) to merge into --model
        #[arg(long)]
        adapter: Option<PathBuf>,
        /// The text to look at (decoders and encoders)
        #[arg(long, required_unless_present = "source")]
        text: Option<String>,
        /// Encoder-decoders: the source sentence
        #[arg(long, requires = "target", conflicts_with = "text")]
        source: Option<String>,
        /// Encoder-decoders: the target sentence, read by the decoder as in training
        #[arg(long, requires = "source")]
        target: Option<String>,
        /// Which attention: self (decoders, encoders); for encoder-decoders, cross (target x source alignment), encoder or decoder
        #[arg(long, value_enum, default_value = "self")]
        kind: AttnKind,
        /// Worker threads (default: all cores)
        #[arg(long)]
        threads: Option<usize>,
        /// Layer to show (0-based); with --head, one map with the tokens on both axes
        #[arg(long)]
        layer: Option<usize>,
        /// Head to show (0-based), with --layer
        #[arg(long)]
        head: Option<usize>,
        /// FILE.png, FILE.svg, or FILE.json (exact probabilities); without it, a terminal heatmap
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The next-token distribution, before and after temperature / top-k / top-p
    Next {
        #[command(flatten)]
        m: ModelText,
        #[arg(long, default_value_t = 10, value_parser = crate::count)]
        top: usize,
        #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
        temperature: f32,
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        /// Keep the smallest set of tokens whose probability reaches p
        #[arg(long, allow_negative_numbers = true, default_value_t = 1.0)]
        top_p: f32,
        /// Encoder-decoders: the target so far (--text is the source); the distribution is of the target token after it
        #[arg(long)]
        target: Option<String>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Logit lens: each layer's residual stream read through the final norm and head
    Lens {
        #[command(flatten)]
        m: ModelText,
        /// Encoder-decoders: the target so far (--text is the source); the lens reads the decoder at the start token and each prefix token
        #[arg(long)]
        target: Option<String>,
        /// Candidates per cell in --json
        #[arg(long, default_value_t = 3, value_parser = crate::count)]
        top: usize,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Word embeddings: cosine matrix, nearest vocabulary tokens, PCA projection
    Embeddings {
        /// A model folder (config.json, model.safetensors, tokenizer files) or an attn run folder
        #[arg(long)]
        model: PathBuf,
        /// Comma-separated words, e.g. king,queen,man,woman
        #[arg(long, value_delimiter = ',', required = true)]
        words: Vec<String>,
        #[arg(long, default_value_t = 5, value_parser = crate::count)]
        neighbours: usize,
        /// PCA scatter plot: FILE.png or FILE.svg
        #[arg(long)]
        out: Option<PathBuf>,
        /// Three principal components instead of two (in the table and --json)
        #[arg(long)]
        three_d: bool,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Token boundaries of a text, coloured, with ids
    Tokens {
        #[command(flatten)]
        m: ModelText,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AttnKind {
    /// Self-attention (decoders, encoders)
    #[value(name = "self")]
    Self_,
    /// Cross-attention of an encoder-decoder: target rows, source columns
    Cross,
    /// An encoder-decoder's encoder: the source attending to itself
    Encoder,
    /// An encoder-decoder's decoder: masked self-attention over its inputs (the start token, then the target)
    Decoder,
}

#[derive(Args)]
pub struct ModelText {
    /// An attn run folder or a Hugging Face GPT-2 folder
    #[arg(long)]
    model: PathBuf,
    /// A LoRA adapter (PEFT folder) to merge into --model
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// The text to look at
    #[arg(long)]
    text: String,
    /// Worker threads (default: all cores)
    #[arg(long)]
    threads: Option<usize>,
}

pub(crate) fn model_name(dir: &Path) -> String {
    std::fs::canonicalize(dir).ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or_else(|| dir.display().to_string())
}

pub fn run(c: InspectCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let color = crate::use_color();
    match c {
        InspectCommand::Attention { model, adapter, text, source, target, kind, threads, layer, head, out: file } => {
            crate::set_threads(threads)?;
            if attn_model::is_seq2seq_dir(&model) {
                return crate::inspect_seq2seq::attention(&model, source, target, kind, layer, head, file);
            }
            anyhow::ensure!(
                kind == AttnKind::Self_ && source.is_none(),
                "--kind cross, encoder or decoder and --source / --target are for encoder-decoders (Marian, BART, attn translation runs)"
            );
            let text = text.expect("clap requires --text without --source");
            let m = ModelText { model, adapter, text, threads };
            let tr = match crate::load_any_with(&m.model, m.adapter.as_deref())? {
                (crate::Loaded::Decoder(mut model), tok) => attn_inspect::trace(&mut model, tok.as_ref(), &m.text)?,
                (crate::Loaded::Encoder(bert), tok) => attn_inspect::trace_bert(&bert, tok.as_ref(), &m.text)?,
            };
            let name = model_name(&m.model);
            for (what, v, n) in [("--layer", layer, tr.n_layer), ("--head", head, tr.n_head)] {
                if let Some(v) = v {
                    anyhow::ensure!(v < n, "{what} {v} is out of range: the model has {n} (counting from 0)");
                }
            }
            match (file, layer, head) {
                (Some(f), _, _) if f.extension().is_some_and(|e| e == "json") => {
                    let text = serde_json::to_string(&tr.attention_json(&name))?;
                    let tmp = f.with_extension("json.tmp");
                    std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, &f)).with_context(|| format!("writing {}", f.display()))?;
                    eprintln!("wrote {}", f.display());
                }
                (Some(f), Some(l), Some(h)) => {
                    plot::attention_head(&f, &tr, &name, l, h, tr.causal)?;
                    eprintln!("wrote {}", f.display());
                }
                (Some(f), None, None) => {
                    plot::attention_grid(&f, &tr, &name, tr.causal)?;
                    eprintln!("wrote {}", f.display());
                }
                (Some(_), _, _) => anyhow::bail!("give both --layer and --head for one head's picture, or neither for the grid"),
                (None, l, h) => {
                    let layers: Vec<usize> = l.map_or_else(|| (0..tr.n_layer).collect(), |l| vec![l]);
                    let heads: Vec<usize> = h.map_or_else(|| (0..tr.n_head).collect(), |h| vec![h]);
                    if layers.len() * heads.len() > 16 {
                        writeln!(out, "(mean over heads per layer; pass --layer and --head for one head, or --out FILE.png for the full grid)")?;
                        for l in layers {
                            let t = tr.len();
                            let mut mean = vec![0.0f32; t * t];
                            for h in 0..tr.n_head {
                                mean.iter_mut().zip(tr.attention(l, h)).for_each(|(a, b)| *a += b / tr.n_head as f32);
                            }
                            terminal_heatmap(&mut out, &format!("{name}: layer {l}, mean of {} heads", tr.n_head), &tr.tokens, &mean, color)?;
                        }
                    } else {
                        for l in &layers {
                            for h in &heads {
                                terminal_heatmap(&mut out, &format!("{name}: layer {l}, head {h}"), &tr.tokens, tr.attention(*l, *h), color)?;
                            }
                        }
                    }
                }
            }
        }
        InspectCommand::Next { m, top, temperature, top_k, top_p, target, json } => {
            crate::set_threads(m.threads)?;
            let cfg = SamplerConfig { temperature, top_k, top_p, repetition_penalty: 1.0 };
            let (next, what) = if attn_model::is_seq2seq_dir(&m.model) {
                anyhow::ensure!(m.adapter.is_none(), "--adapter is for decoders; {} is an encoder-decoder", m.model.display());
                let (mut model, tok) = crate::translate::load_seq2seq(&m.model)?;
                let prefix = target.unwrap_or_default();
                let (logits, n) = crate::inspect_seq2seq::next_logits(&mut model, tok.as_ref(), &m.text, &prefix)?;
                (attn_inspect::next_token_of(&logits, tok.as_ref(), top, cfg)?, format!("next target token after {prefix:?} ({n} tokens), source {:?}", m.text))
            } else {
                anyhow::ensure!(target.is_none(), "--target is for encoder-decoders (Marian, BART, attn translation runs)");
                let (mut model, tok) = crate::load_model_with(&m.model, m.adapter.as_deref())?;
                let tr = attn_inspect::trace(&mut model, tok.as_ref(), &m.text)?;
                (attn_inspect::next_token(&tr, tok.as_ref(), top, cfg)?, format!("next token after {:?} ({} tokens)", m.text, tr.len()))
            };
            if json {
                writeln!(out, "{}", serde_json::to_string(&next)?)?;
                return Ok(());
            }
            writeln!(out, "{what}; bars are scaled to the largest probability shown")?;
            let scale = next.candidates.iter().map(|c| c.prob.max(c.filtered_prob)).fold(1e-12, f64::max);
            writeln!(
                out,
                "  rank  {:>7}  {:<16}  {:>7}  {:<22}  after filters (T={temperature}, top-k={top_k}, top-p={top_p})",
                "id", "token", "logit", "probability"
            )?;
            for (i, c) in next.candidates.iter().enumerate() {
                writeln!(
                    out,
                    "  {:>4}  {:>7}  {:<16}  {:>7.3}  {:>6.2}% {:<14}  {:>6.2}% {}",
                    i + 1,
                    c.id,
                    format!("{:?}", c.token),
                    c.logit,
                    100.0 * c.prob,
                    bar(c.prob / scale, 14),
                    100.0 * c.filtered_prob,
                    bar(c.filtered_prob / scale, 14)
                )?;
            }
            writeln!(
                out,
                "entropy: {:.3} bits before the filters, {:.3} bits after; the filters keep {} tokens",
                next.entropy, next.filtered_entropy, next.kept
            )?;
        }
        InspectCommand::Lens { m, top, target, json } => {
            crate::set_threads(m.threads)?;
            let (ids, tokens, lens, tok) = if attn_model::is_seq2seq_dir(&m.model) {
                anyhow::ensure!(m.adapter.is_none(), "--adapter is for decoders; {} is an encoder-decoder", m.model.display());
                let (mut model, tok) = crate::translate::load_seq2seq(&m.model)?;
                let (ids, lens) = crate::inspect_seq2seq::decoder_lens(&mut model, tok.as_ref(), &m.text, &target.unwrap_or_default(), top.max(1))?;
                let tokens = ids.iter().map(|&i| tok.piece(i)).collect();
                (ids, tokens, lens, tok)
            } else {
                anyhow::ensure!(target.is_none(), "--target is for encoder-decoders (Marian, BART, attn translation runs)");
                let (mut model, tok) = crate::load_model_with(&m.model, m.adapter.as_deref())?;
                let tr = attn_inspect::trace(&mut model, tok.as_ref(), &m.text)?;
                let lens = attn_inspect::logit_lens(&model, &tr, top.max(1));
                (tr.ids, tr.tokens, lens, tok)
            };
            let piece = |id: u32| tok.piece(id);
            if json {
                let layers: Vec<serde_json::Value> = lens
                    .iter()
                    .enumerate()
                    .map(|(l, rows)| {
                        let pos: Vec<Vec<serde_json::Value>> =
                            rows.iter().map(|r| r.iter().map(|&(id, p)| serde_json::json!({"id": id, "token": piece(id), "prob": p})).collect()).collect();
                        serde_json::json!({"layer": l, "positions": pos})
                    })
                    .collect();
                writeln!(out, "{}", serde_json::json!({"tokens": tokens, "ids": ids, "layers": layers}))?;
                return Ok(());
            }
            writeln!(out, "logit lens: the top next-token guess at each position, read from each layer (0 = embeddings)")?;
            let w = 12;
            write!(out, "{:>7} ", "")?;
            for t in &tokens {
                write!(out, "{:<w$}", fit(&label(t), w - 1))?;
            }
            writeln!(out)?;
            for (l, rows) in lens.iter().enumerate() {
                write!(out, "{:>7} ", if l == 0 { "emb".to_string() } else { format!("layer {l}") })?;
                for r in rows {
                    write!(out, "{:<w$}", fit(&label(&piece(r[0].0)), w - 1))?;
                }
                writeln!(out)?;
            }
        }
        InspectCommand::Embeddings { model: dir, words, neighbours, out: file, three_d, json } => {
            let words: Vec<String> = words.iter().map(|w| w.trim().to_string()).collect();
            anyhow::ensure!(
                words.iter().all(|w| !w.is_empty()),
                "--words has an empty word ({:?}); give words separated by single commas, e.g. king,queen,car",
                words.join(",")
            );
            anyhow::ensure!(words.len() >= 2, "--words needs at least two words, comma-separated");
            let k = if three_d { 3 } else { 2 };
            let name = model_name(&dir);
            if attn_model::is_seq2seq_dir(&dir) {
                // One table for both languages: the source's, the target's and the head's.
                let (model, tok) = crate::translate::load_seq2seq(&dir)?;
                let table = (model.token_embeddings(), model.config.d_model);
                return embeddings(&mut out, table, tok.as_ref(), &name, &words, neighbours, file.as_deref(), k, json);
            }
            match crate::load_any(&dir)? {
                (crate::Loaded::Decoder(model), tok) => {
                    let table = (model.token_embeddings(), model.n_embd());
                    embeddings(&mut out, table, tok.as_ref(), &name, &words, neighbours, file.as_deref(), k, json)?
                }
                (crate::Loaded::Encoder(_), _) => sentence_embeddings(&mut out, &dir, &name, &words, file.as_deref(), k, json)?,
            }
        }
        InspectCommand::Tokens { m, json } => {
            let tok = attn_tokenizer::load_tokenizer(&m.model, None).with_context(|| format!("loading the tokenizer of {}", m.model.display()))?;
            let ids = tok.encode(&m.text)?;
            let pieces: Vec<String> = ids.iter().map(|&i| tok.piece(i)).collect();
            if json {
                writeln!(out, "{}", serde_json::json!({"ids": ids, "tokens": pieces}))?;
                return Ok(());
            }
            // Alternating backgrounds show where each token starts and ends.
            const BG: [u8; 6] = [153, 223, 194, 218, 229, 189];
            for (i, p) in pieces.iter().enumerate() {
                if color {
                    write!(out, "\x1b[48;5;{}m\x1b[30m{}\x1b[0m", BG[i % BG.len()], p.replace('\n', "↵\n"))?;
                } else {
                    write!(out, "{}{}", if i > 0 { "|" } else { "" }, p)?;
                }
            }
            writeln!(out, "\n{} tokens, {} bytes ({:.2} bytes/token)", ids.len(), m.text.len(), m.text.len() as f64 / ids.len().max(1) as f64)?;
            for (id, p) in ids.iter().zip(&pieces) {
                writeln!(out, "{id:>8}  {p:?}")?;
            }
        }
    }
    Ok(())
}

fn bar(p: f64, width: usize) -> String {
    let cells = p * width as f64;
    let full = cells.floor() as usize;
    const PART: [&str; 8] = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"];
    let part = PART[((cells - full as f64) * 8.0) as usize % 8];
    format!("{}{}", "█".repeat(full.min(width)), if full < width { part } else { "" })
}

fn fit(s: &str, w: usize) -> String {
    if s.chars().count() > w {
        s.chars().take(w - 1).chain(std::iter::once('…')).collect()
    } else {
        s.to_string()
    }
}

/// Rows are queries, columns keys, two characters per cell; 256-colour
/// backgrounds on a terminal, Unicode shades otherwise. Masked cells (zero
/// above a causal diagonal) stay blank.
fn terminal_heatmap(out: &mut impl Write, title: &str, tokens: &[String], att: &[f32], color: bool) -> std::io::Result<()> {
    let t = tokens.len();
    writeln!(out, "{title}   (row = query, column = key; scale 0 ·░▒▓█ 1)")?;
    for q in 0..t {
        write!(out, "{:>3} {:>12} ", q, fit(&label(&tokens[q]), 12))?;
        for k in 0..t {
            let p = att[q * t + k];
            if k > q && p == 0.0 {
                write!(out, "  ")?;
            } else if color {
                // The 24-step grey ramp, 232 (dark) to 255 (light), inverted so strong is dark.
                write!(out, "\x1b[48;5;{}m  \x1b[0m", 255 - (p.clamp(0.0, 1.0) * 23.0).round() as u8)?;
            } else {
                let shade = ["·", "░", "▒", "▓", "█"][((p.clamp(0.0, 1.0) * 4.0).round()) as usize];
                write!(out, "{shade}{shade}")?;
            }
        }
        writeln!(out)?;
    }
    write!(out, "{:>17}", "")?;
    for k in 0..t {
        write!(out, "{:<2}", k % 10)?;
    }
    writeln!(out, "\n")
}

fn embeddings(
    out: &mut impl Write,
    (wte, c): (&[f32], usize),
    tok: &dyn attn_tokenizer::Tokenizer,
    name: &str,
    words: &[String],
    neighbours: usize,
    file: Option<&Path>,
    k: usize,
    json: bool,
) -> anyhow::Result<()> {
    let mut vecs = Vec::new();
    let mut ids = Vec::new();
    for w in words {
        let (v, i) = attn_inspect::word_vector(wte, c, tok, w)?;
        vecs.push(v);
        ids.push(i);
    }
    let cos: Vec<Vec<f64>> = vecs.iter().map(|a| vecs.iter().map(|b| attn_inspect::cosine(a, b)).collect()).collect();
    let piece = |id: u32| tok.piece(id);
    let near: Vec<Vec<(String, f64)>> =
        vecs.iter().zip(&ids).map(|(v, own)| attn_inspect::nearest_tokens(wte, v, neighbours, own).into_iter().map(|(i, c)| (piece(i), c)).collect()).collect();
    let proj = project(&vecs, k, words, file, &format!("{name} — token embeddings, PCA"))?;
    if json {
        let near_json: Vec<Vec<serde_json::Value>> =
            near.iter().map(|n| n.iter().map(|(t, c)| serde_json::json!({"token": t, "cosine": c})).collect()).collect();
        writeln!(out, "{}", serde_json::json!({"words": words, "ids": ids, "cosine": cos, "nearest": near_json, "pca": proj}))?;
        return Ok(());
    }
    writeln!(out, "tokens used for each word (a word split into several tokens gets the mean of their embeddings):")?;
    for (w, i) in words.iter().zip(&ids) {
        let pieces: Vec<String> = i.iter().map(|&id| format!("{:?}", piece(id))).collect();
        writeln!(out, "{:>12}  {}", fit(w, 11), pieces.join(" + "))?;
    }
    writeln!(out)?;
    print_cosine(out, &format!("cosine similarity of token embeddings ({name})"), words, &cos)?;
    writeln!(out, "\nnearest tokens in the vocabulary")?;
    for (w, n) in words.iter().zip(&near) {
        let list: Vec<String> = n.iter().map(|(t, c)| format!("{t:?} {c:.2}")).collect();
        writeln!(out, "{:>12}  {}", fit(w, 11), list.join(", "))?;
    }
    print_projection(out, words, &proj)?;
    Ok(())
}

/// PCA of `vecs`, drawn to `file` when given.
fn project(vecs: &[Vec<f32>], k: usize, labels: &[String], file: Option<&Path>, title: &str) -> anyhow::Result<Vec<Vec<f64>>> {
    let proj = attn_inspect::pca(vecs, k);
    if let Some(f) = file {
        let at = |p: &Vec<f64>, i: usize| p.get(i).copied().unwrap_or(0.0);
        if k == 3 {
            let pts: Vec<(f64, f64, f64)> = proj.iter().map(|p| (at(p, 0), at(p, 1), at(p, 2))).collect();
            plot::scatter3d(f, &title.replace("PCA", "PCA (3D)"), labels, &pts)?;
        } else {
            let pts: Vec<(f64, f64)> = proj.iter().map(|p| (at(p, 0), at(p, 1))).collect();
            plot::scatter(f, title, labels, &pts, ("principal component 1", "principal component 2"))?;
        }
        eprintln!("wrote {}", f.display());
    }
    Ok(proj)
}

fn print_cosine(out: &mut impl Write, title: &str, words: &[String], cos: &[Vec<f64>]) -> std::io::Result<()> {
    writeln!(out, "{title}")?;
    write!(out, "{:>12}", "")?;
    for w in words {
        write!(out, "{:>10}", fit(w, 9))?;
    }
    writeln!(out)?;
    for (w, row) in words.iter().zip(cos) {
        write!(out, "{:>12}", fit(w, 11))?;
        for c in row {
            write!(out, "{c:>10.3}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

fn print_projection(out: &mut impl Write, words: &[String], proj: &[Vec<f64>]) -> std::io::Result<()> {
    writeln!(out, "\nPCA projection")?;
    for (w, p) in words.iter().zip(proj) {
        let coords: Vec<String> = p.iter().map(|x| format!("{x:>8.3}")).collect();
        writeln!(out, "{:>12}  {}", fit(w, 11), coords.join(" "))?;
    }
    Ok(())
}

/// The same views over an encoder's sentence embeddings (each word or phrase
/// is embedded as a sentence, as `attn similarity` does).
fn sentence_embeddings(out: &mut impl Write, dir: &Path, name: &str, texts: &[String], file: Option<&Path>, k: usize, json: bool) -> anyhow::Result<()> {
    let enc = crate::embed::Encoder::load(dir)?;
    let vecs = enc.embed(texts)?;
    let cos = crate::embed::cosine_matrix(&vecs);
    let proj = project(&vecs, k, texts, file, &format!("{name} — sentence embeddings, PCA"))?;
    if json {
        writeln!(out, "{}", serde_json::json!({"words": texts, "cosine": cos, "pca": proj}))?;
        return Ok(());
    }
    print_cosine(out, &format!("cosine similarity of sentence embeddings ({name})"), texts, &cos)?;
    print_projection(out, texts, &proj)?;
    Ok(())
}
