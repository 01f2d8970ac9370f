//! What the last training-path forward pass left behind, read back: the
//! logits and per-position losses, each layer's attention probabilities and
//! residual stream (for `attn inspect`), and the final hidden states (for the
//! classification and embedding heads).

use attn_kernels::flash::flash_probs;

use super::acts::{Acts, LayerActs};
use super::Transformer;
use crate::config::NormPosition;

impl Transformer {
    /// Logits (B, T, V) of the last forward pass. Overwritten by `backward`.
    pub fn logits(&self) -> &[f32] {
        let (b, t) = self.last_bt;
        self.acts.as_ref().map_or(&[], |a| &a.logits[..b * t * self.config.vocab_size])
    }

    /// Per-position losses (B, T) of the last forward pass with targets.
    pub fn losses(&self) -> &[f32] {
        let (b, t) = self.last_bt;
        self.acts.as_ref().map_or(&[], |a| &a.losses[..b * t])
    }

    /// Attention probabilities (B, NH, T, T) of layer `l` from the last
    /// forward pass: row q holds how much query q attends to each key; a
    /// causal model's entries above the diagonal are zero. Training keeps
    /// no (T, T) buffers, so they are rebuilt here from the saved queries,
    /// keys and log-sum-exps.
    pub fn attention_probs(&self, l: usize) -> Vec<f32> {
        let (b, t) = self.last_bt;
        let Some(a) = &self.acts else { return Vec::new() };
        let mut att = vec![0.0f32; b * self.config.n_head * t * t];
        flash_probs(&mut att, &a.layers[l].qkv, &a.layers[l].lse, self.attn_shape(b, t), &a.key_lens);
        att
    }

    /// The residual stream (B, T, C) entering block `l` of the last forward
    /// pass: `l = 0` is the embeddings, `l = n_layer` the last block's output.
    pub fn residual_stream(&self, l: usize) -> &[f32] {
        let (b, t) = self.last_bt;
        let n = b * t * self.config.n_embd;
        let post = self.config.norm_position == NormPosition::Post;
        self.acts.as_ref().map_or(&[], |a| if l == 0 { &a.x0[..n] } else { &block_output(post, &a.layers[l - 1])[..n] })
    }

    /// The final hidden states (B, T, C) of the last forward pass in `a`:
    /// the final norm's output, or the last block's without one.
    pub(super) fn final_hidden<'a>(&self, a: &'a Acts) -> &'a [f32] {
        let post = self.config.norm_position == NormPosition::Post;
        match (&self.idx.norm_f, self.config.n_layer) {
            (Some(_), _) => &a.lnf,
            (None, 0) => &a.x0,
            (None, l) => block_output(post, &a.layers[l - 1]),
        }
    }
}

/// What a block passes on: the residual stream (pre-norm) or its normed sum (post-norm).
pub(super) fn block_output(post: bool, l: &LayerActs) -> &[f32] {
    if post {
        &l.ln1
    } else {
        &l.res3
    }
}
