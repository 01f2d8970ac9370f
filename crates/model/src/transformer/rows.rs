//! GPT-2's block matrices held (OC, C) for decoding one sequence.
//!
//! GPT-2 keeps its block matrices as Conv1D (C, OC), so a decoding step's
//! matrix-vector products walk them input row by input row, adding each row
//! into all OC outputs (`matvec`'s (C, OC) loop, which loads and stores the
//! outputs again for every group of rows). The other families' (OC, C) rows
//! are read as one dot product an output, loads only, one stream per thread.
//! Side by side in one process on a Zen 4 EPYC, gpt2-124m's 48 block matrices
//! streamed from memory at 0.86 of the read probe (C, OC) and 0.96 (OC, C).
//! So `attn generate` and `attn chat` hold GPT-2's matrices (OC, C): every
//! kernel takes its layout from `layout_kind`, and only what writes or merges
//! weights in the files' layout (saving, LoRA merging, quantizing) turns them
//! back. Batches (`attn serve`) keep (C, OC), where the loop reads each weight
//! once for every row: 16 rows a step took 20% longer (OC, C).

use std::borrow::Cow;
use std::ops::Range;

use attn_kernels::matmul::WeightLayout;
use attn_kernels::transpose::transpose_into;

use super::Transformer;

impl Transformer {
    /// Holds the block matrices (OC, C), the layout decoding one sequence
    /// reads fastest (see the module comment); a no-op for families that
    /// already do, and for quantized models (whose matrices are (OC, C)).
    pub fn rows_for_decoding(&mut self) {
        if self.quant.is_none() && !self.rows_out_in && super::layout_of(self.config.family) == WeightLayout::InOut {
            self.transpose_blocks();
            self.rows_out_in = true;
        }
    }

    /// Back to the family's own layout, for the code that writes or merges
    /// weights in that layout.
    pub(crate) fn family_layout(&mut self) {
        if self.rows_out_in {
            self.transpose_blocks();
            self.rows_out_in = false;
        }
    }

    /// The parameters in the family's layout: borrowed, or a copy with the
    /// block matrices turned back.
    pub(crate) fn params_in_family_layout(&self) -> Cow<'_, [f32]> {
        if !self.rows_out_in {
            return Cow::Borrowed(&self.params);
        }
        let mut p = self.params.clone();
        transpose_mats(&mut p, &self.block_mats(), true);
        Cow::Owned(p)
    }

    /// Transposes every block matrix in place, (C, OC) <-> (OC, C), and its
    /// gradient if there is one.
    fn transpose_blocks(&mut self) {
        let mats = self.block_mats();
        transpose_mats(&mut self.params, &mats, self.rows_out_in);
        if !self.grads.is_empty() {
            transpose_mats(&mut self.grads, &mats, self.rows_out_in);
        }
    }

    /// Each block matrix as (range, inputs, outputs).
    fn block_mats(&self) -> Vec<(Range<usize>, usize, usize)> {
        let cfg = &self.config;
        let (c, a, f, w) = (cfg.n_embd, cfg.attn_width(), cfg.d_ff, cfg.qkv_width());
        let mut mats = Vec::new();
        for l in &self.idx.layers {
            mats.extend([(l.qkv.w.clone(), c, w), (l.proj.w.clone(), a, c), (l.up.w.clone(), c, f), (l.down.w.clone(), f, c)]);
            if let Some(g) = &l.gate {
                mats.push((g.w.clone(), c, f));
            }
        }
        mats
    }
}

/// Transposes each (range, inputs, outputs) matrix of `buf` in place: from
/// (inputs, outputs) to (outputs, inputs), or back when `held_rows`.
fn transpose_mats(buf: &mut [f32], mats: &[(Range<usize>, usize, usize)], held_rows: bool) {
    let mut tmp = Vec::new();
    for (r, i, o) in mats {
        let (rows, cols) = if held_rows { (*o, *i) } else { (*i, *o) };
        tmp.clear();
        tmp.extend_from_slice(&buf[r.clone()]);
        transpose_into(&mut buf[r.clone()], &tmp, rows, cols);
    }
}
