//! The scheduler: one thread owns the model and runs continuous batching.
//!
//! Requests wait in a queue; up to `parallel` of them are active at once,
//! each with its own KV cache sized to its own prompt + `max_tokens`. Every
//! loop the scheduler takes in new work, prefills newly admitted requests
//! (which gives their first token), drops requests whose client has gone, and
//! runs one batched decoding step for all the others (`decode_batch`: the
//! weights are read once for every sequence). Finished requests leave between
//! steps and free their slot for the next in the queue.
//!
//! Results go back to the HTTP side over a channel per request; a closed
//! channel (the client disconnected, so its handler was dropped) cancels the
//! request before the next step.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Instant;

use attn_generate::{Sampler, SamplerConfig, TextStream};
use attn_model::{Cache, Transformer};
use attn_tokenizer::Tokenizer;
use tokio::sync::{mpsc::UnboundedSender, oneshot};

use crate::metrics::Metrics;

/// One generation request, validated and tokenized.
pub struct GenRequest {
    pub prompt: Vec<u32>,
    /// Most tokens to generate; prompt + max_tokens fits the context.
    pub max_tokens: usize,
    pub sampling: SamplerConfig,
    pub seed: u64,
    /// OpenAI's penalties: each logit is lowered by `frequency * count +
    /// presence * (count > 0)`, counting the tokens generated so far.
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    /// OpenAI's `logit_bias`: (id, bias) added to the logits before each
    /// draw (ids within the vocabulary, biases within +-100).
    pub logit_bias: Vec<(u32, f32)>,
    /// Strings that end the text (not included).
    pub stop: Vec<String>,
    /// Token ids that end generation (not shown).
    pub eos: Vec<u32>,
    /// Log probabilities of each generated token, with this many alternatives.
    pub logprobs: Option<usize>,
    /// The next request sent is another choice of the same request: the
    /// same prompt and length, so this one's prefill is kept for it.
    pub prompt_for_next: bool,
    pub events: UnboundedSender<Event>,
}

/// A generated token's log probability under the model (the softmax of its
/// raw logits, before temperature and filters), and the most likely
/// alternatives at that position.
#[derive(Clone, Debug)]
pub struct TokenLogprob {
    pub bytes: Vec<u8>,
    pub logprob: f32,
    pub top: Vec<(u32, Vec<u8>, f32)>,
}

pub enum Event {
    /// Newly generated text (whole characters, never part of a stop
    /// string; may be empty) and the tokens it came from.
    Text {
        text: String,
        logprobs: Vec<TokenLogprob>,
    },
    Done {
        finish_reason: &'static str,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    Error(String),
}

/// An attention-and-next-token inspection, run between decoding steps.
pub struct InspectRequest {
    pub text: String,
    pub layer: Option<usize>,
    pub head: Option<usize>,
    pub top: usize,
    pub sampling: SamplerConfig,
    pub reply: oneshot::Sender<Result<serde_json::Value, String>>,
}

/// The log probability of each prompt token after the first, given the ones
/// before it (`echo` with `logprobs`), run between decoding steps.
pub struct ScoreRequest {
    pub prompt: Vec<u32>,
    /// Alternatives per position.
    pub top: usize,
    pub reply: oneshot::Sender<Result<Vec<TokenLogprob>, String>>,
}

pub enum Work {
    Generate(GenRequest, Instant),
    Inspect(InspectRequest),
    Score(ScoreRequest),
}

struct Seq {
    req: GenRequest,
    enqueued: Instant,
    cache: Cache,
    sampler: Sampler,
    text: TextStream,
    /// The token fed at the next step.
    next: u32,
    generated: usize,
    counts: HashMap<u32, u32>,
    /// Log probabilities of tokens whose text is still held back.
    pending: Vec<TokenLogprob>,
    /// The logits after the penalties and the bias, reused between steps.
    adjusted: Vec<f32>,
}

/// A prompt run through the model, kept for the next choice of its request.
struct Prefilled {
    prompt: Vec<u32>,
    cache: Cache,
    logits: Vec<f32>,
}

pub struct Engine {
    pub model: Transformer,
    pub tok: Arc<dyn Tokenizer>,
    pub name: String,
    pub parallel: usize,
    pub metrics: Arc<Metrics>,
}

impl Engine {
    /// Runs until every sender of `rx` is gone and all work is done, in
    /// `scratch` (buffers for `parallel` rows, made by the caller so that a
    /// size too large for memory is an error before the engine starts).
    pub fn run(mut self, rx: Receiver<Work>, mut scratch: attn_model::BatchScratch) {
        let mut waiting: VecDeque<(GenRequest, Instant)> = VecDeque::new();
        let mut active: Vec<Seq> = Vec::new();
        let mut shared: Option<Prefilled> = None;
        self.metrics.set_slots(self.parallel);
        loop {
            if active.is_empty() && waiting.is_empty() {
                match rx.recv() {
                    Ok(w) => self.take(w, &mut waiting),
                    Err(_) => return,
                }
            }
            while let Ok(w) = rx.try_recv() {
                self.take(w, &mut waiting);
            }
            while active.len() < self.parallel {
                let Some((req, enqueued)) = waiting.pop_front() else { break };
                self.metrics.dequeued();
                if req.events.is_closed() {
                    self.metrics.cancelled();
                    continue;
                }
                // Busy from the prefill on: its first token reaches the client before the step.
                self.metrics.set_busy(active.len() + 1);
                if let Some(seq) = self.admit(req, enqueued, &mut shared) {
                    active.push(seq);
                }
                self.metrics.set_busy(active.len());
            }
            let before = active.len();
            active.retain(|s| !s.req.events.is_closed());
            for _ in active.len()..before {
                self.metrics.cancelled();
            }
            self.metrics.set_busy(active.len());
            if active.is_empty() {
                continue;
            }
            let t0 = Instant::now();
            let tokens: Vec<u32> = active.iter().map(|s| s.next).collect();
            let mut caches: Vec<&mut Cache> = active.iter_mut().map(|s| &mut s.cache).collect();
            let v = self.model.config.vocab_size;
            let logits = match self.model.decode_batch(&mut scratch, &mut caches, &tokens) {
                Ok(l) => l,
                Err(e) => {
                    for s in active.drain(..) {
                        let _ = s.req.events.send(Event::Error(e.to_string()));
                    }
                    continue;
                }
            };
            let mut done = vec![false; active.len()];
            for (i, s) in active.iter_mut().enumerate() {
                done[i] = step(s, &logits[i * v..(i + 1) * v], self.tok.as_ref(), &self.metrics);
            }
            self.metrics.decoded(active.len(), t0.elapsed().as_secs_f64());
            let mut i = 0;
            active.retain(|_| {
                i += 1;
                !done[i - 1]
            });
            self.metrics.set_busy(active.len());
        }
    }

    fn take(&mut self, w: Work, waiting: &mut VecDeque<(GenRequest, Instant)>) {
        match w {
            Work::Generate(req, at) => waiting.push_back((req, at)),
            Work::Inspect(r) => {
                let out = self.inspect(&r).map_err(|e| e.to_string());
                let _ = r.reply.send(out);
            }
            Work::Score(r) => {
                let out = self.score(&r);
                let _ = r.reply.send(out);
            }
        }
    }

    /// Prefills a request and samples its first token. None when it is
    /// already finished (or failed; its client has been told).
    fn admit(&mut self, req: GenRequest, enqueued: Instant, shared: &mut Option<Prefilled>) -> Option<Seq> {
        let (cache, sampler, logits) = match self.start(&req, shared) {
            Ok(started) => started,
            Err(e) => {
                let _ = req.events.send(Event::Error(e));
                return None;
            }
        };
        let text = TextStream::new(req.stop.clone());
        let mut seq = Seq { req, enqueued, cache, sampler, text, next: 0, generated: 0, counts: HashMap::new(), pending: Vec::new(), adjusted: Vec::new() };
        (!step(&mut seq, &logits, self.tok.as_ref(), &self.metrics)).then_some(seq)
    }

    /// The request's cache, filled with its prompt; its sampler; the logits
    /// of its first token. The prompt is run through the model unless
    /// `shared` holds it already (the choice before, of the same request);
    /// a copy is kept there when the next request is another choice.
    fn start(&mut self, req: &GenRequest, shared: &mut Option<Prefilled>) -> Result<(Cache, Sampler, Vec<f32>), String> {
        let sampler = Sampler::new(req.sampling, req.seed).map_err(|e| e.to_string())?;
        let capacity = req.prompt.len() + req.max_tokens;
        let (cache, logits) = match shared.take() {
            Some(p) if p.prompt == req.prompt && p.cache.capacity() == capacity => (p.cache, p.logits),
            _ => {
                let mut cache = self.model.new_cache(capacity).map_err(|e| e.to_string())?;
                let logits = self.model.prefill(&mut cache, &req.prompt).map_err(|e| e.to_string())?.to_vec();
                self.metrics.prefill_tokens(req.prompt.len());
                (cache, logits)
            }
        };
        if req.prompt_for_next {
            *shared = Some(Prefilled { prompt: req.prompt.clone(), cache: cache.clone(), logits: logits.clone() });
        }
        Ok((cache, sampler, logits))
    }

    /// One forward pass over the whole prompt: position i's logits score
    /// token i + 1, in the same form as a generated token's log probability.
    fn score(&mut self, r: &ScoreRequest) -> Result<Vec<TokenLogprob>, String> {
        let t = r.prompt.len();
        if t < 2 {
            return Ok(Vec::new()); // nothing before any token to score it by
        }
        self.model.forward(&r.prompt, None, 1, t).map_err(|e| e.to_string())?;
        let logits = self.model.logits();
        let v = logits.len() / t;
        Ok((1..t).map(|i| token_logprob(&logits[(i - 1) * v..i * v], r.prompt[i], r.top, self.tok.as_ref())).collect())
    }

    fn inspect(&mut self, r: &InspectRequest) -> Result<serde_json::Value, crate::ServeError> {
        let tr = attn_inspect::trace(&mut self.model, self.tok.as_ref(), &r.text)?;
        for (what, v, n) in [("layer", r.layer, tr.n_layer), ("head", r.head, tr.n_head)] {
            if let Some(v) = v.filter(|&v| v >= n) {
                return Err(crate::ServeError::Input(format!("{what} {v} is out of range: the model has {n} (counting from 0)")));
            }
        }
        let next = attn_inspect::next_token(&tr, self.tok.as_ref(), r.top, r.sampling)?;
        let t = tr.len();
        let layers: Vec<usize> = r.layer.map_or_else(|| (0..tr.n_layer).collect(), |l| vec![l]);
        let heads: Vec<usize> = r.head.map_or_else(|| (0..tr.n_head).collect(), |h| vec![h]);
        let maps: Vec<Vec<Vec<&[f32]>>> = layers.iter().map(|&l| heads.iter().map(|&h| tr.attention(l, h).chunks(t).collect()).collect()).collect();
        Ok(serde_json::json!({
            "model": self.name, "tokens": tr.tokens, "ids": tr.ids,
            "n_layer": tr.n_layer, "n_head": tr.n_head, "layers": layers, "heads": heads,
            "attention": maps, "next_token": next,
        }))
    }
}

/// Takes the next logits of a sequence: samples a token and sends what it
/// adds. True when the sequence is finished (its Done has been sent).
fn step(s: &mut Seq, logits: &[f32], tok: &dyn Tokenizer, metrics: &Metrics) -> bool {
    let (fp, pp) = (s.req.frequency_penalty, s.req.presence_penalty);
    let penalize = (fp != 0.0 || pp != 0.0) && !s.counts.is_empty();
    let id = if penalize || !s.req.logit_bias.is_empty() {
        let l = &mut s.adjusted;
        l.clear();
        l.extend_from_slice(logits);
        if penalize {
            for (&t, &c) in &s.counts {
                l[t as usize] -= fp * c as f32 + pp;
            }
        }
        // A model whose output is narrower than its tokenizer has no logit
        // for the ids past it: nothing to bias.
        for &(t, b) in &s.req.logit_bias {
            if let Some(x) = l.get_mut(t as usize) {
                *x += b;
            }
        }
        s.sampler.sample(l)
    } else {
        s.sampler.sample(logits)
    };
    if s.generated == 0 {
        metrics.first_token(s.enqueued.elapsed().as_secs_f64());
    }
    s.generated += 1;
    metrics.completion_token();
    *s.counts.entry(id).or_insert(0) += 1;
    if let Some(k) = s.req.logprobs {
        s.pending.push(token_logprob(logits, id, k, tok));
    }
    let finish = if s.req.eos.contains(&id) {
        Some("stop")
    } else {
        let (text, stop) = s.text.push(&attn_generate::token_bytes(tok, id));
        if !text.is_empty() || stop {
            let logprobs = std::mem::take(&mut s.pending);
            let _ = s.req.events.send(Event::Text { text, logprobs });
        }
        if stop {
            Some("stop")
        } else if s.generated >= s.req.max_tokens {
            Some("length")
        } else {
            None
        }
    };
    let Some(finish_reason) = finish else {
        s.next = id;
        return false;
    };
    let rest = s.text.finish();
    if !rest.is_empty() || !s.pending.is_empty() {
        let _ = s.req.events.send(Event::Text { text: rest, logprobs: std::mem::take(&mut s.pending) });
    }
    let _ = s.req.events.send(Event::Done { finish_reason, prompt_tokens: s.req.prompt.len(), completion_tokens: s.generated });
    true
}

/// log softmax at `id`, and the `k` most likely tokens with theirs.
fn token_logprob(logits: &[f32], id: u32, k: usize, tok: &dyn Tokenizer) -> TokenLogprob {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let lse = max as f64 + logits.iter().map(|&x| ((x - max) as f64).exp()).sum::<f64>().ln();
    let lp = |i: u32| (logits[i as usize] as f64 - lse) as f32;
    let bytes = |i: u32| tok.decode_bytes(&[i]).unwrap_or_default();
    let mut top: Vec<u32> = Vec::new();
    if k > 0 {
        let mut order: Vec<u32> = (0..logits.len() as u32).collect();
        let by = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]).then(a.cmp(b));
        let k = k.min(order.len());
        order.select_nth_unstable_by(k - 1, by);
        order.truncate(k);
        order.sort_by(by);
        top = order;
    }
    TokenLogprob { bytes: bytes(id), logprob: lp(id), top: top.into_iter().map(|i| (i, bytes(i), lp(i))).collect() }
}
