//! The rules a model folder's generation settings put on an encoder-decoder's
//! next token (transformers' logits processors of the same names), applied
//! to one hypothesis' scores in transformers' order, so that a folder decodes
//! to the same tokens as `generate()` with no arguments:
//!
//! repetition_penalty, no_repeat_ngram_size, encoder_no_repeat_ngram_size,
//! bad_words_ids, min_length / min_new_tokens, forced_bos_token_id,
//! forced_eos_token_id, and renormalize_logits last.
//!
//! Every rule but the repetition penalty sets a score to -inf (and a forced
//! token's to 0). Greedy applies them to logits and beam search to
//! log-probabilities, as transformers does: the penalty divides a positive
//! score and multiplies a negative one, so which it sees matters.

/// Rules for the next token of every hypothesis. The default is what
/// transformers applies to a folder that sets nothing but the model config's
/// `forced_eos_token_id`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rules {
    /// Scores of tokens already in the decoder sequence (start token
    /// included) are divided by this where positive and multiplied where
    /// negative; `None` is off.
    pub repetition_penalty: Option<f32>,
    /// EOS is refused while the decoder sequence, start token included, is
    /// shorter than this (min_length, or 1 + min_new_tokens, the larger).
    pub min_length: usize,
    /// No n-gram of this many tokens occurs twice in a decoder sequence (the
    /// start token counts); 0 is off.
    pub no_repeat_ngram_size: usize,
    /// No n-gram of this many tokens of the source (its padded row, as given
    /// to the encoder) occurs in the decoder sequence; 0 is off.
    pub encoder_no_repeat_ngram_size: usize,
    /// Token sequences never produced: a sequence's last token is refused
    /// where the hypothesis ends with the rest of it (a one-token sequence:
    /// always). A sequence that is just the EOS is dropped, as transformers
    /// drops it.
    pub bad_words: Vec<Vec<u32>>,
    /// The first generated token.
    pub forced_bos_token_id: Option<u32>,
    /// The token forced at the last position: `None` takes the model config's
    /// `forced_eos_token_id`; `Some(None)` forces none (a generation_config.json
    /// without the field).
    pub forced_eos_token_id: Option<Option<u32>>,
    /// The decoder's first input; `None` takes the model config's.
    pub decoder_start_token_id: Option<u32>,
    /// Tokens never produced (transformers' `suppress_tokens`).
    pub suppress_tokens: Vec<u32>,
    /// Tokens not produced first (`begin_suppress_tokens`): at the first
    /// generated position, or the second after a forced BOS.
    pub begin_suppress_tokens: Vec<u32>,
    /// Log-softmax the scores again after the rules (transformers'
    /// `renormalize_logits`): beam scores then sum probabilities of the
    /// allowed tokens only. Greedy picks the same token either way.
    pub renormalize: bool,
}

impl Rules {
    /// Applies the rules to `scores` (V) of the hypothesis whose decoder
    /// sequence so far is `start` then `ids`, and whose source row is `src`;
    /// the next token is position `ids.len() + 1` of at most `max_length`.
    /// The sequence is copied out only when a rule reads it.
    pub(crate) fn apply(&self, start: u32, ids: &[u32], src: &[u32], scores: &mut [f32], eos: u32, forced_eos: Option<u32>, max_length: usize) {
        let cur_len = ids.len() + 1;
        if self.repetition_penalty.is_some() || self.no_repeat_ngram_size > 0 || self.encoder_no_repeat_ngram_size > 0 || !self.bad_words.is_empty() {
            let seq: Vec<u32> = std::iter::once(start).chain(ids.iter().copied()).collect();
            self.apply_history(&seq, src, scores, eos);
        }
        if cur_len < self.min_length {
            ban(scores, eos);
        }
        let force = |scores: &mut [f32], t: u32| {
            if (t as usize) < scores.len() {
                scores.fill(f32::NEG_INFINITY);
                scores[t as usize] = 0.0;
            }
        };
        if let Some(bos) = self.forced_bos_token_id {
            if cur_len == 1 {
                force(scores, bos);
            }
        }
        if let Some(eos) = self.forced_eos_token_id.unwrap_or(forced_eos) {
            if cur_len + 1 == max_length {
                force(scores, eos);
            }
        }
        for &t in &self.suppress_tokens {
            ban(scores, t);
        }
        // transformers' begin index: the decoder's input length (the start
        // token), one more when the first token is a forced BOS.
        let begin = if self.forced_bos_token_id.is_some() { 2 } else { 1 };
        if cur_len == begin {
            for &t in &self.begin_suppress_tokens {
                ban(scores, t);
            }
        }
    }

    /// The rules that read the sequence so far `seq` (start token first),
    /// which transformers applies before the length rules.
    fn apply_history(&self, seq: &[u32], src: &[u32], scores: &mut [f32], eos: u32) {
        let cur_len = seq.len();
        if let Some(p) = self.repetition_penalty {
            // Each token once, however often it occurs (transformers gathers
            // then scatters the same value).
            let mut seen = seq.to_vec();
            seen.sort_unstable();
            seen.dedup();
            for t in seen {
                if let Some(s) = scores.get_mut(t as usize) {
                    *s = if *s < 0.0 { *s * p } else { *s / p };
                }
            }
        }
        // Every n-gram of `within` whose first n-1 tokens equal the last n-1 of the sequence.
        let mut ngram_ban = |n: usize, within: &[u32]| {
            if n > 0 && cur_len + 1 >= n {
                let prefix = &seq[cur_len + 1 - n..];
                for w in within.windows(n) {
                    if &w[..n - 1] == prefix {
                        ban(scores, w[n - 1]);
                    }
                }
            }
        };
        ngram_ban(self.no_repeat_ngram_size, seq);
        ngram_ban(self.encoder_no_repeat_ngram_size, src);
        for w in &self.bad_words {
            let Some((&last, rest)) = w.split_last() else { continue };
            if (rest.is_empty() && last == eos) || rest.len() > cur_len {
                continue;
            }
            if seq.ends_with(rest) {
                ban(scores, last);
            }
        }
    }
}

/// The token `t` is not a candidate (ids past the scores are ignored).
fn ban(scores: &mut [f32], t: u32) {
    if let Some(s) = scores.get_mut(t as usize) {
        *s = f32::NEG_INFINITY;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn banned(r: &Rules, seq: &[u32]) -> Vec<u32> {
        let mut s = vec![0.0f32; 10];
        r.apply(seq[0], &seq[1..], &[], &mut s, 2, None, 100);
        (0..10).filter(|&i| s[i as usize] == f32::NEG_INFINITY).collect()
    }

    #[test]
    fn no_repeat_ngrams_count_the_start_token() {
        let r = Rules { no_repeat_ngram_size: 2, ..Default::default() };
        // Bigrams (1,5), (5,7), (7,5): after 5 the 7 is refused.
        assert_eq!(banned(&r, &[1, 5, 7, 5]), vec![7]);
        let r = Rules { no_repeat_ngram_size: 1, ..Default::default() };
        assert_eq!(banned(&r, &[1, 5, 7]), vec![1, 5, 7]);
        let r = Rules { no_repeat_ngram_size: 3, ..Default::default() };
        assert_eq!(banned(&r, &[1, 5]), Vec::<u32>::new());
        // The source's bigrams (5, 6) and (5, 8): after 5, both are refused.
        let r = Rules { encoder_no_repeat_ngram_size: 2, ..Default::default() };
        let mut s = vec![0.0f32; 10];
        r.apply(1, &[5], &[5, 6, 7, 5, 8], &mut s, 2, None, 100);
        assert_eq!((0..10).filter(|&i| s[i] == f32::NEG_INFINITY).collect::<Vec<_>>(), [6, 8]);
    }

    #[test]
    fn bad_words_min_length_and_forced_tokens() {
        let r = Rules { bad_words: vec![vec![4], vec![6, 8], vec![2]], min_length: 3, ..Default::default() };
        // [2] alone is the EOS: dropped. min_length refuses the EOS until 3 tokens.
        assert_eq!(banned(&r, &[1, 6]), vec![2, 4, 8]);
        assert_eq!(banned(&r, &[1, 6, 7]), vec![4]);
        let r = Rules { forced_bos_token_id: Some(3), ..Default::default() };
        let mut s = vec![0.5f32; 5];
        r.apply(1, &[], &[], &mut s, 2, Some(2), 10);
        assert_eq!(s, [f32::NEG_INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY]);
        // The forced EOS comes after min_length, so it wins at the limit;
        // Some(None) turns the model's forced EOS off.
        let r = Rules { min_length: 50, ..Default::default() };
        let mut s = vec![0.5f32; 5];
        r.apply(1, &[3], &[], &mut s, 2, Some(2), 3);
        assert_eq!(s[2], 0.0);
        let r = Rules { forced_eos_token_id: Some(None), ..Default::default() };
        let mut s = vec![0.5f32; 5];
        r.apply(1, &[3], &[], &mut s, 2, Some(2), 3);
        assert_eq!(s, [0.5; 5]);
        // Suppressed tokens always; begin-suppressed ones at the first
        // generated position, the second after a forced BOS.
        let r = Rules { suppress_tokens: vec![7], begin_suppress_tokens: vec![4], ..Default::default() };
        assert_eq!(banned(&r, &[1]), vec![4, 7]);
        assert_eq!(banned(&r, &[1, 5]), vec![7]);
        let r = Rules { begin_suppress_tokens: vec![4], forced_bos_token_id: Some(9), ..Default::default() };
        assert_eq!(banned(&r, &[1, 9]), vec![4]);
        // The penalty: once per token seen, divide positive and multiply negative scores.
        let r = Rules { repetition_penalty: Some(2.0), ..Default::default() };
        let mut s = vec![1.0f32, -1.0, 1.0, -1.0];
        r.apply(0, &[1, 1], &[], &mut s, 9, None, 100);
        assert_eq!(s, [0.5, -2.0, 1.0, -1.0]);
    }
}
