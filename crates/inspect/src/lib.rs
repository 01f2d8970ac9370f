//! Looking inside a model: what each head attends to, what the model would
//! predict next and how sampling filters reshape it, what each layer would
//! predict (the logit lens), and where tokens sit in embedding space.
//!
//! [`trace`] runs one forward pass over a text and keeps what inspection
//! needs. It uses the training forward pass, which stores attention
//! probabilities and the residual stream anyway for its backward pass;
//! generation uses the KV-cache path, which stores neither, so inspection
//! costs generation nothing.

#![warn(missing_docs)]

pub mod curves;
pub mod plot;

use attn_generate::{Sampler, SamplerConfig};
use attn_model::Transformer;
use attn_tokenizer::Tokenizer;
use serde::Serialize;

/// Why an inspection failed.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The model refused the pass.
    #[error(transparent)]
    Model(#[from] attn_model::ModelError),
    /// The text could not be tokenized.
    #[error(transparent)]
    Tokenizer(#[from] attn_tokenizer::TokenizerError),
    /// A sampling setting was invalid.
    #[error(transparent)]
    Generate(#[from] attn_generate::GenerateError),
    /// A request the model cannot answer (the message says which field).
    #[error("{0}")]
    Input(String),
    /// A picture or file could not be written.
    #[error("{path}: {msg}")]
    #[allow(missing_docs)]
    Output { path: std::path::PathBuf, msg: String },
}

/// The inspections' result.
pub type Result<T> = std::result::Result<T, InspectError>;

/// One forward pass over a text, with everything inspection reads.
pub struct Trace {
    /// The token ids of the text.
    pub ids: Vec<u32>,
    /// Each token's text, as `decode` gives it (lossy for partial UTF-8).
    pub tokens: Vec<String>,
    /// The model's layers, heads, channels and vocabulary, as its config says.
    pub n_layer: usize,
    #[allow(missing_docs)]
    pub n_head: usize,
    #[allow(missing_docs)]
    pub n_embd: usize,
    #[allow(missing_docs)]
    pub vocab_size: usize,
    /// A decoder's attention is masked above the diagonal; an encoder's is not.
    pub causal: bool,
    /// Attention probabilities (L, NH, T, T).
    pub attention: Vec<f32>,
    /// The residual stream (L + 1, T, C): embeddings, then each block's
    /// output. Decoders only.
    pub hidden: Vec<f32>,
    /// Logits (T, V). Decoders only.
    pub logits: Vec<f32>,
}

/// Tokenizes `text` exactly as generation does and runs the model on it.
pub fn trace(model: &mut Transformer, tok: &dyn Tokenizer, text: &str) -> Result<Trace> {
    let ids = tok.encode(text)?;
    if ids.is_empty() {
        return Err(InspectError::Input("the text is empty after tokenization".into()));
    }
    let ctx = model.context();
    if ids.len() > ctx {
        return Err(InspectError::Input(format!("the text is {} tokens; the model's context holds {ctx}: shorten --text", ids.len())));
    }
    let tokens = ids.iter().map(|&i| tok.piece(i)).collect();
    trace_ids(model, &ids, tokens)
}

/// Runs the model on `ids` (T), keeping attention, residual stream and logits.
/// `tokens` are the display strings of `ids`.
pub fn trace_ids(model: &mut Transformer, ids: &[u32], tokens: Vec<String>) -> Result<Trace> {
    let ids = ids.to_vec();
    let t = ids.len();
    model.forward(&ids, None, 1, t)?;
    let attention = (0..model.n_layer()).flat_map(|l| model.attention_probs(l)).collect();
    let hidden = (0..=model.n_layer()).flat_map(|l| model.residual_stream(l).iter().copied()).collect();
    Ok(Trace {
        ids,
        tokens,
        n_layer: model.n_layer(),
        n_head: model.n_head(),
        n_embd: model.n_embd(),
        vocab_size: model.vocab_size(),
        causal: true,
        attention,
        hidden,
        logits: model.logits().to_vec(),
    })
}

/// An encoder's trace: the text as its tokenizer encodes it (`[CLS] ... [SEP]`
/// for BERT), with every layer's attention probabilities.
pub fn trace_bert(bert: &Transformer, tok: &dyn Tokenizer, text: &str) -> Result<Trace> {
    let ids = tok.encode(text)?;
    let cfg = &bert.config;
    if ids.len() > cfg.n_ctx {
        return Err(InspectError::Input(format!("the text is {} tokens; the model has {} positions: shorten --text", ids.len(), cfg.n_ctx)));
    }
    let out = bert.encode(&ids, &[ids.len()], true)?;
    let tokens = ids.iter().map(|&i| tok.piece(i)).collect();
    Ok(Trace {
        ids,
        tokens,
        n_layer: cfg.n_layer,
        n_head: cfg.n_head,
        n_embd: cfg.n_embd,
        vocab_size: cfg.vocab_size,
        causal: false,
        attention: out.attention.concat(),
        hidden: Vec::new(),
        logits: Vec::new(),
    })
}

impl Trace {
    /// Tokens traced (T).
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no token was traced.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Layer `l`, head `h`: (T, T), row = query, column = key.
    pub fn attention(&self, l: usize, h: usize) -> &[f32] {
        let t = self.len();
        let at = (l * self.n_head + h) * t * t;
        &self.attention[at..at + t * t]
    }

    /// `{"model", "tokens", "ids", "attention": [layer][head][query][key]}`.
    pub fn attention_json(&self, model: &str) -> serde_json::Value {
        let t = self.len();
        let maps: Vec<Vec<Vec<&[f32]>>> = (0..self.n_layer).map(|l| (0..self.n_head).map(|h| self.attention(l, h).chunks(t).collect()).collect()).collect();
        serde_json::json!({"model": model, "tokens": self.tokens, "ids": self.ids, "attention": maps})
    }

    /// Logits (V) for the token after position `pos`.
    pub fn logits_at(&self, pos: usize) -> &[f32] {
        &self.logits[pos * self.vocab_size..(pos + 1) * self.vocab_size]
    }
}

/// Softmax with a max shift, in f64 for the entropy's sake.
pub fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
    let e: Vec<f64> = logits.iter().map(|&x| (x as f64 - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

/// Entropy in bits.
pub fn entropy_bits(p: &[f64]) -> f64 {
    -p.iter().filter(|&&x| x > 0.0).map(|&x| x * x.log2()).sum::<f64>()
}

/// One possible next token.
#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    /// Its id.
    pub id: u32,
    /// Its text.
    pub token: String,
    /// Softmax of the raw logits, before any sampling filter.
    pub prob: f64,
    /// The raw logit.
    pub logit: f32,
    /// After temperature, top-k and top-p, renormalized; 0 if filtered out.
    pub filtered_prob: f64,
}

/// The next-token distribution after a text.
#[derive(Clone, Debug, Serialize)]
pub struct NextToken {
    /// The most likely tokens, the likeliest first.
    pub candidates: Vec<Candidate>,
    /// Bits, before the filters.
    pub entropy: f64,
    /// Bits, of what the sampler would draw from.
    pub filtered_entropy: f64,
    /// How many tokens the filters keep.
    pub kept: usize,
}

/// The next-token distribution after the last token: the `top` most likely,
/// with their probabilities before and after the sampler's filters.
pub fn next_token(trace: &Trace, tok: &dyn Tokenizer, top: usize, sampler: SamplerConfig) -> Result<NextToken> {
    next_token_of(trace.logits_at(trace.len() - 1), tok, top, sampler)
}

/// The next-token distribution of one position's `logits` (V), as
/// `next_token` gives it (an encoder-decoder's decoder, for one).
pub fn next_token_of(logits: &[f32], tok: &dyn Tokenizer, top: usize, sampler: SamplerConfig) -> Result<NextToken> {
    let p = softmax(logits);
    let mut s = Sampler::new(sampler, 0)?;
    let filtered = s.distribution(logits);
    let mut fp = vec![0.0f64; p.len()];
    for &(q, id) in filtered {
        fp[id as usize] = q as f64;
    }
    let mut order: Vec<u32> = (0..p.len() as u32).collect();
    order.sort_by(|&a, &b| p[b as usize].total_cmp(&p[a as usize]).then(a.cmp(&b)));
    let candidates = order
        .iter()
        .take(top)
        .map(|&id| Candidate { id, token: tok.piece(id), prob: p[id as usize], logit: logits[id as usize], filtered_prob: fp[id as usize] })
        .collect();
    Ok(NextToken { candidates, entropy: entropy_bits(&p), filtered_entropy: entropy_bits(&fp), kept: filtered.len() })
}

/// A logit lens: `[layer][position][rank]` (id, probability).
pub type Lens = Vec<Vec<Vec<(u32, f64)>>>;

/// For each layer's residual stream (0 = embeddings, L = the last block), the
/// top-`k` (id, probability) the output head reads from it at each position:
/// `[layer][position][rank]`.
pub fn logit_lens(model: &Transformer, trace: &Trace, k: usize) -> Lens {
    let (t, c) = (trace.len(), trace.n_embd);
    (0..=trace.n_layer)
        .map(|l| {
            let logits = model.head(&trace.hidden[l * t * c..(l + 1) * t * c], t);
            logits.chunks(trace.vocab_size).map(|row| top_probs(row, k)).collect()
        })
        .collect()
}

/// The `k` most likely ids of one row of logits and their probabilities,
/// most likely first (ties: the lower id).
pub fn top_probs(logits: &[f32], k: usize) -> Vec<(u32, f64)> {
    let p = softmax(logits);
    let mut idx: Vec<u32> = (0..p.len() as u32).collect();
    let k = k.clamp(1, idx.len().max(1));
    idx.select_nth_unstable_by(k - 1, |&a, &b| p[b as usize].total_cmp(&p[a as usize]).then(a.cmp(&b)));
    idx.truncate(k);
    idx.sort_by(|&a, &b| p[b as usize].total_cmp(&p[a as usize]).then(a.cmp(&b)));
    idx.into_iter().map(|i| (i, p[i as usize])).collect()
}

/// A word's vector: its token's embedding row, or the mean of its tokens'
/// rows when the tokenizer splits it.
///
/// Byte-level BPE vocabularies spell a word inside a sentence with its
/// leading space (" king"), and that is usually the form that got a token
/// of its own; so the spelling with fewer tokens is used, the spaced one on
/// a tie. Character-level models take the word as given.
///
/// `wte` is the token embedding table (V, C): a decoder's
/// `token_embeddings()`, or an encoder-decoder's shared table.
pub fn word_vector(wte: &[f32], c: usize, tok: &dyn Tokenizer, word: &str) -> Result<(Vec<f32>, Vec<u32>)> {
    // The word's own pieces: no BOS, EOS, CLS or SEP a post-processor adds.
    let bare = tok.encode_plain(word)?;
    let ids = match tok.encode_plain(&format!(" {word}")) {
        Ok(spaced) if !spaced.is_empty() && (bare.is_empty() || spaced.len() <= bare.len()) => spaced,
        _ => bare,
    };
    if ids.is_empty() {
        return Err(InspectError::Input(format!("{word:?} has no tokens")));
    }
    if let Some(&bad) = ids.iter().find(|&&id| (id as usize + 1) * c > wte.len()) {
        return Err(InspectError::Input(format!("{word:?} has token {bad}, past the embedding table's {} rows", wte.len() / c.max(1))));
    }
    let mut v = vec![0.0f32; c];
    for &id in &ids {
        for (a, b) in v.iter_mut().zip(&wte[id as usize * c..(id as usize + 1) * c]) {
            *a += b / ids.len() as f32;
        }
    }
    Ok((v, ids))
}

/// The cosine similarity of two vectors, in f64.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let na: f64 = a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

/// The `k` vocabulary tokens whose embeddings (rows of `wte`, C wide) are
/// closest (by cosine) to `v`, leaving out `exclude`.
pub fn nearest_tokens(wte: &[f32], v: &[f32], k: usize, exclude: &[u32]) -> Vec<(u32, f64)> {
    let c = v.len().max(1);
    let mut all: Vec<(u32, f64)> =
        wte.chunks(c).enumerate().filter(|(i, _)| !exclude.contains(&(*i as u32))).map(|(i, row)| (i as u32, cosine(v, row))).collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

/// Projects rows (N, D) onto their top `k` principal components (N, k), by
/// power iteration with deflation on the centred covariance. Deterministic:
/// the start vector is fixed and each component's sign is chosen so that its
/// largest coordinate is positive.
pub fn pca(rows: &[Vec<f32>], k: usize) -> Vec<Vec<f64>> {
    let n = rows.len();
    let d = rows.first().map_or(0, Vec::len);
    let mean: Vec<f64> = (0..d).map(|j| rows.iter().map(|r| r[j] as f64).sum::<f64>() / n as f64).collect();
    let x: Vec<Vec<f64>> = rows.iter().map(|r| r.iter().zip(&mean).map(|(&a, m)| a as f64 - m).collect()).collect();
    let mut comps: Vec<Vec<f64>> = Vec::new();
    for _ in 0..k.min(d) {
        let mut v: Vec<f64> = (0..d).map(|j| 1.0 + (j % 7) as f64 * 0.1).collect();
        for _ in 0..500 {
            // w = X^T X v, with earlier components projected out.
            let xv: Vec<f64> = x.iter().map(|r| r.iter().zip(&v).map(|(a, b)| a * b).sum()).collect();
            let mut w = vec![0.0; d];
            for (r, s) in x.iter().zip(&xv) {
                w.iter_mut().zip(r).for_each(|(wj, rj)| *wj += rj * s);
            }
            for c in &comps {
                let dot: f64 = w.iter().zip(c).map(|(a, b)| a * b).sum();
                w.iter_mut().zip(c).for_each(|(wj, cj)| *wj -= dot * cj);
            }
            let norm = w.iter().map(|a| a * a).sum::<f64>().sqrt();
            if norm == 0.0 {
                break;
            }
            w.iter_mut().for_each(|a| *a /= norm);
            let delta: f64 = w.iter().zip(&v).map(|(a, b)| (a - b).abs()).sum();
            v = w;
            if delta < 1e-12 {
                break;
            }
        }
        let big = v.iter().fold(0.0f64, |m, &a| if a.abs() > m.abs() { a } else { m });
        if big < 0.0 {
            v.iter_mut().for_each(|a| *a = -*a);
        }
        comps.push(v);
    }
    x.iter().map(|r| comps.iter().map(|c| r.iter().zip(c).map(|(a, b)| a * b).sum()).collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pca_finds_the_dominant_direction() {
        // Points along (1, 1, 0) with a little spread along (0, 0, 1).
        let rows: Vec<Vec<f32>> = (0..10).map(|i| vec![i as f32, i as f32, 0.1 * ((i % 3) as f32 - 1.0)]).collect();
        let p = pca(&rows, 2);
        let first: Vec<f64> = p.iter().map(|r| r[0]).collect();
        for w in first.windows(2) {
            assert!((w[1] - w[0] - 2f64.sqrt()).abs() < 1e-3, "{first:?}");
        }
        assert!(p.iter().all(|r| r[1].abs() < 0.12), "the rest is the small spread: {p:?}");
    }

    /// A Llama-3-style tokenizer.json adds <|begin_of_text|> to every
    /// encoding; a word's vector averages the word's own pieces only.
    #[test]
    fn a_word_vector_leaves_out_the_bos_a_post_processor_adds() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/bpe_template_tokenizer.json");
        let tok = attn_tokenizer::load_tokenizer(&path, None).unwrap();
        let bos = tok.encode("king").unwrap()[0];
        let (c, rows) = (4, tok.vocab_size());
        // Row r of the table is (r, r, r, r): the vector is the ids' mean.
        let wte: Vec<f32> = (0..rows * c).map(|i| (i / c) as f32).collect();
        let (v, ids) = word_vector(&wte, c, tok.as_ref(), "king").unwrap();
        assert!(!ids.is_empty() && !ids.contains(&bos), "{ids:?} (BOS {bos})");
        assert_eq!(&tok.encode(" king").unwrap()[1..], &ids[..], "the spaced word's pieces after the BOS");
        let mean = ids.iter().map(|&i| i as f32).sum::<f32>() / ids.len() as f32;
        assert!(v.iter().all(|&x| (x - mean).abs() < 1e-3), "{v:?} vs {mean}");
    }

    #[test]
    fn entropy_of_uniform_is_log2_n() {
        assert!((entropy_bits(&softmax(&[0.5; 8])) - 3.0).abs() < 1e-12);
    }
}
