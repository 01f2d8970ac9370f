//! Streaming generated text: whole UTF-8 characters only, and stop strings
//! held back until they are ruled out.

/// The bytes of one generated token. A model can produce ids its tokenizer
/// does not have (a vocabulary padded past the tokenizer's, as in many
/// checkpoints, or a tokenizer that is not the model's own); such an id
/// gives no bytes, as transformers' decode skips it, and the first one a
/// process meets is reported on stderr, so that a mismatched tokenizer is
/// not a silent empty output.
pub fn token_bytes(tok: &dyn attn_tokenizer::Tokenizer, id: u32) -> Vec<u8> {
    use std::sync::atomic::{AtomicBool, Ordering};
    static REPORTED: AtomicBool = AtomicBool::new(false);
    tok.decode_bytes(&[id]).unwrap_or_else(|e| {
        if !REPORTED.swap(true, Ordering::Relaxed) {
            eprintln!("note: the model generated token id {id}, which its tokenizer cannot decode ({e}); such tokens print as nothing. If most output is missing, the tokenizer is not this model's.");
        }
        Vec::new()
    })
}

/// Turns a stream of byte chunks into text without ever splitting a UTF-8
/// character: an incomplete sequence at the end of a chunk waits for the next
/// one; bytes that can never be valid become U+FFFD.
#[derive(Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// The text that `bytes` completes; an unfinished character waits.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..good]).expect("validated prefix"));
                    match e.error_len() {
                        // Incomplete at the end: keep it for the next chunk.
                        None => {
                            self.pending.drain(..good);
                            return out;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..good + bad);
                        }
                    }
                }
            }
        }
    }

    /// Whatever is left at the end of the stream (an unfinished character).
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

/// Holds back streamed text that might be the start of a stop string, so a
/// stop string is never printed, not even in part.
pub struct StopStrings {
    stops: Vec<String>,
    pending: String,
}

impl StopStrings {
    /// Watches for `stops` (empty strings are dropped).
    pub fn new(stops: Vec<String>) -> Self {
        StopStrings { stops: stops.into_iter().filter(|s| !s.is_empty()).collect(), pending: String::new() }
    }

    /// Adds newly decoded text. Returns the text that is now safe to print,
    /// and whether a stop string was reached (the text before it is included).
    pub fn push(&mut self, text: &str) -> (String, bool) {
        self.pending.push_str(text);
        if let Some(at) = self.stops.iter().filter_map(|s| self.pending.find(s.as_str())).min() {
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return (out, true);
        }
        // Keep the longest tail that is a prefix of some stop string.
        let keep = self
            .stops
            .iter()
            .flat_map(|s| (1..s.len()).filter(|&n| s.is_char_boundary(n)).map(move |n| &s[..n]))
            .filter(|p| self.pending.ends_with(p))
            .map(|p| p.len())
            .max()
            .unwrap_or(0);
        let split = self.pending.len() - keep;
        let out = self.pending[..split].to_string();
        self.pending.drain(..split);
        (out, false)
    }

    /// Text still held back when generation ends without a stop.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

/// Token bytes in, printable text out: whole characters only, and never any
/// part of a stop string. `finish` gives what is held back at the end (none
/// after a stop).
pub struct TextStream {
    utf8: Utf8Stream,
    stops: StopStrings,
    stopped: bool,
}

impl TextStream {
    /// A stream that stops at the first of `stops`.
    pub fn new(stops: Vec<String>) -> Self {
        TextStream { utf8: Utf8Stream::default(), stops: StopStrings::new(stops), stopped: false }
    }

    /// The text that can be shown now, and whether a stop string was reached.
    pub fn push(&mut self, bytes: &[u8]) -> (String, bool) {
        let (piece, stop) = self.stops.push(&self.utf8.push(bytes));
        self.stopped |= stop;
        (piece, stop)
    }

    /// What was held back, at the end of generation (nothing once a stop
    /// string was reached).
    pub fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        let (rest, _) = self.stops.push(&self.utf8.finish());
        rest + &self.stops.finish()
    }
}
