//! Counters and gauges for `GET /metrics`, in Prometheus' text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

/// Time-to-first-token histogram bounds, seconds.
const TTFT_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Endpoints counted in `attn_requests_total`.
pub const ENDPOINTS: [&str; 7] = ["chat_completions", "completions", "embeddings", "attention", "tokenize", "detokenize", "models"];

/// The server's counters, rendered at `/metrics` in Prometheus' text format.
#[derive(Default)]
pub struct Metrics {
    requests: [AtomicU64; ENDPOINTS.len()],
    /// Error responses by status code.
    errors: Mutex<Vec<(u16, u64)>>,
    prompt_tokens: AtomicU64,
    prefill_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    cancelled: AtomicU64,
    queued: AtomicUsize,
    busy: AtomicUsize,
    slots: AtomicUsize,
    ttft: Mutex<Histogram>,
    decode: Mutex<Decode>,
}

#[derive(Default)]
struct Histogram {
    counts: [u64; TTFT_BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Decode {
    tokens: u64,
    seconds: f64,
    /// Tokens per second of the latest step (all sequences together).
    last: f64,
}

impl Metrics {
    /// Counts a request to `endpoint` (one of `ENDPOINTS`).
    pub fn request(&self, endpoint: &str) {
        if let Some(i) = ENDPOINTS.iter().position(|e| *e == endpoint) {
            self.requests[i].fetch_add(1, Relaxed);
        }
    }

    /// Counts an error response with `status`.
    pub fn error(&self, status: u16) {
        let mut e = self.errors.lock().expect("metrics lock");
        match e.iter_mut().find(|(s, _)| *s == status) {
            Some((_, n)) => *n += 1,
            None => e.push((status, 1)),
        }
    }

    /// Adds `n` prompt tokens.
    pub fn prompt_tokens(&self, n: usize) {
        self.prompt_tokens.fetch_add(n as u64, Relaxed);
    }

    /// Counts prompt tokens run through the model.
    pub fn prefill_tokens(&self, n: usize) {
        self.prefill_tokens.fetch_add(n as u64, Relaxed);
    }

    /// Counts one generated token.
    pub fn completion_token(&self) {
        self.completion_tokens.fetch_add(1, Relaxed);
    }

    /// Counts a request its client abandoned.
    pub fn cancelled(&self) {
        self.cancelled.fetch_add(1, Relaxed);
    }

    /// Counts a request into the queue unless `limit` are already waiting.
    pub fn try_enqueue(&self, limit: usize) -> bool {
        self.queued.fetch_update(Relaxed, Relaxed, |q| (q < limit).then_some(q + 1)).is_ok()
    }

    /// A queued request has started.
    pub fn dequeued(&self) {
        self.queued.fetch_sub(1, Relaxed);
    }

    /// Requests waiting.
    pub fn queue_len(&self) -> usize {
        self.queued.load(Relaxed)
    }

    /// Sets how many sequences are being decoded.
    pub fn set_busy(&self, n: usize) {
        self.busy.store(n, Relaxed);
    }

    /// Sequences being decoded.
    pub fn busy(&self) -> usize {
        self.busy.load(Relaxed)
    }

    /// Sets how many sequences may decode at once.
    pub fn set_slots(&self, n: usize) {
        self.slots.store(n, Relaxed);
    }

    /// Records a time to first token.
    pub fn first_token(&self, seconds: f64) {
        let mut h = self.ttft.lock().expect("metrics lock");
        for (c, &b) in h.counts.iter_mut().zip(&TTFT_BUCKETS) {
            if seconds <= b {
                *c += 1;
            }
        }
        h.sum += seconds;
        h.count += 1;
    }

    /// A decoding step produced `tokens` tokens in `seconds`.
    pub fn decoded(&self, tokens: usize, seconds: f64) {
        let mut d = self.decode.lock().expect("metrics lock");
        d.tokens += tokens as u64;
        d.seconds += seconds;
        d.last = tokens as f64 / seconds.max(1e-9);
    }

    /// Every counter in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        let mut o = String::new();
        head(&mut o, "attn_requests_total", "counter", "Requests received, by endpoint.");
        for (e, n) in ENDPOINTS.iter().zip(&self.requests) {
            let _ = writeln!(o, "attn_requests_total{{endpoint=\"{e}\"}} {}", n.load(Relaxed));
        }
        head(&mut o, "attn_errors_total", "counter", "Error responses, by HTTP status.");
        for (s, n) in self.errors.lock().expect("metrics lock").iter() {
            let _ = writeln!(o, "attn_errors_total{{status=\"{s}\"}} {n}");
        }
        let d = self.decode.lock().expect("metrics lock");
        let simple = [
            ("attn_prompt_tokens_total", "counter", "Prompt tokens of generation requests.", self.prompt_tokens.load(Relaxed).to_string()),
            (
                "attn_prefill_tokens_total",
                "counter",
                "Prompt tokens run through the model (the choices of one request share one prefill).",
                self.prefill_tokens.load(Relaxed).to_string(),
            ),
            ("attn_completion_tokens_total", "counter", "Tokens generated.", self.completion_tokens.load(Relaxed).to_string()),
            ("attn_requests_cancelled_total", "counter", "Generations stopped because the client went away.", self.cancelled.load(Relaxed).to_string()),
            ("attn_queue_length", "gauge", "Requests waiting for a slot.", self.queued.load(Relaxed).to_string()),
            ("attn_slots_busy", "gauge", "Sequences being generated now.", self.busy.load(Relaxed).to_string()),
            ("attn_slots_total", "gauge", "Sequences that can be generated at once (--parallel).", self.slots.load(Relaxed).to_string()),
            ("attn_decode_tokens_per_second", "gauge", "Tokens per second of the latest decoding step, all sequences together.", format!("{:.3}", d.last)),
            ("attn_decode_tokens_total", "counter", "Tokens from batched decoding steps (first tokens come from prefill).", d.tokens.to_string()),
            ("attn_decode_seconds_total", "counter", "Seconds spent in batched decoding steps.", format!("{:.6}", d.seconds)),
        ];
        drop(d);
        for (name, kind, help, v) in simple {
            head(&mut o, name, kind, help);
            let _ = writeln!(o, "{name} {v}");
        }
        let h = self.ttft.lock().expect("metrics lock");
        head(&mut o, "attn_time_to_first_token_seconds", "histogram", "From arrival to the first generated token.");
        for (c, b) in h.counts.iter().zip(&TTFT_BUCKETS) {
            let _ = writeln!(o, "attn_time_to_first_token_seconds_bucket{{le=\"{b}\"}} {c}");
        }
        let _ = writeln!(o, "attn_time_to_first_token_seconds_bucket{{le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(o, "attn_time_to_first_token_seconds_sum {:.6}\nattn_time_to_first_token_seconds_count {}", h.sum, h.count);
        o
    }
}

fn head(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}
