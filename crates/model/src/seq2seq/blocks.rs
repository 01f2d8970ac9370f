//! The encoder-decoder's sub-blocks on the training path, post-norm or
//! pre-norm:
//!   post: out = N(x + f(x))        (the paper, Marian, BART)
//!   pre:  out = x + f(N(x))        (mBART; a final norm closes each stack)
//! where f is attention (queries from x, keys and values from x or the
//! encoder's output) or the feed-forward network. Each backward takes
//! d(out) in `sc.d0` and leaves d(x) there.

use attn_kernels::activation::{activation_backward, activation_forward};
use attn_kernels::cross_attention::{cross_attention_backward, cross_attention_forward, CrossShape};
use attn_kernels::layernorm::{layernorm_backward, layernorm_forward};
use attn_kernels::matmul::{matmul_backward, matmul_backward_set, matmul_forward, WeightLayout::OutIn};
use attn_kernels::residual::residual_forward;

use super::acts::{AttnActs, FfnActs, LayerActs, Scratch, StackActs};
use super::{AttnIdx, FfnIdx, Seq2Seq, StackIdx};
use crate::config::NormPosition;
use crate::params::{lin_mut, Lin};

impl AttnActs {
    /// The sub-block's output: the residual sum (pre-norm) or its norm (post-norm).
    pub(super) fn out(&self, pre: bool) -> &[f32] {
        if pre {
            &self.res
        } else {
            &self.ln
        }
    }
}

impl FfnActs {
    pub(super) fn out(&self, pre: bool) -> &[f32] {
        if pre {
            &self.res
        } else {
            &self.ln
        }
    }
}

pub(super) fn bias<'a>(p: &'a [f32], l: &Lin) -> Option<&'a [f32]> {
    l.b.clone().map(|r| &p[r])
}

pub(super) fn norm_params<'a>(p: &'a [f32], n: &Lin) -> (&'a [f32], &'a [f32]) {
    (&p[n.w.clone()], &p[n.b.clone().expect("LayerNorm has a bias")])
}

impl Seq2Seq {
    pub(crate) fn pre_norm(&self) -> bool {
        self.config.norm_position == NormPosition::Pre
    }

    /// LayerNorm of `n` rows of `x` into `out`, saving the statistics.
    fn ln(&self, out: &mut [f32], mean: &mut [f32], rstd: &mut [f32], x: &[f32], w: &Lin, n: usize) {
        let (nw, nb) = norm_params(&self.params, w);
        layernorm_forward(out, mean, rstd, x, nw, nb, n, self.config.d_model, self.config.norm_eps);
    }

    /// Accumulates d(x) of a LayerNorm into `dx`, and its parameters' gradients.
    #[allow(clippy::too_many_arguments)]
    fn ln_backward(&self, g: &mut [f32], dx: &mut [f32], dout: &[f32], x: &[f32], w: &Lin, mean: &[f32], rstd: &[f32], n: usize) {
        let (dw, db) = lin_mut(g, w);
        let (nw, _) = norm_params(&self.params, w);
        layernorm_backward(dx, dw, db.expect("LayerNorm bias"), dout, x, nw, mean, rstd, n, self.config.d_model);
    }

    /// Attention sub-block; `mem` is the encoder's output for cross-attention,
    /// None for self-attention (keys and values from the same input as the queries).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attn_forward(
        &self,
        a: &mut AttnActs,
        w: &AttnIdx,
        x: &[f32],
        mem: Option<&[f32]>,
        nq: usize,
        nk: usize,
        shape: CrossShape,
        key_len: &[usize],
    ) {
        let (c, p, pre) = (self.config.d_model, &self.params, self.pre_norm());
        if pre {
            self.ln(&mut a.ln, &mut a.mean, &mut a.rstd, x, &w.norm, nq);
        }
        let q_in: &[f32] = if pre { &a.ln } else { x };
        matmul_forward(&mut a.q, q_in, &p[w.q.w.clone()], bias(p, &w.q), nq, c, c, OutIn);
        matmul_forward(&mut a.kv, mem.unwrap_or(q_in), &p[w.kv.w.clone()], bias(p, &w.kv), nk, c, 2 * c, OutIn);
        cross_attention_forward(&mut a.atty, &mut a.att, &a.q, &a.kv, key_len, shape);
        matmul_forward(&mut a.res, &a.atty, &p[w.out.w.clone()], bias(p, &w.out), nq, c, c, OutIn);
        residual_forward(&mut a.res[..nq * c], &x[..nq * c]);
        if !pre {
            self.ln(&mut a.ln, &mut a.mean, &mut a.rstd, &a.res, &w.norm, nq);
        }
    }

    /// Feed-forward sub-block on the layer's last attention output.
    pub(super) fn ffn_forward(&self, l: &mut LayerActs, w: &FfnIdx, n: usize, f: usize, decoder: bool) {
        let (c, p, pre) = (self.config.d_model, &self.params, self.pre_norm());
        let x: &[f32] = if decoder { l.ca.as_ref().expect("decoder").out(pre) } else { l.sa.out(pre) };
        let a = &mut l.ffn;
        if pre {
            self.ln(&mut a.ln, &mut a.mean, &mut a.rstd, x, &w.norm, n);
        }
        let h_in: &[f32] = if pre { &a.ln } else { x };
        matmul_forward(&mut a.h, h_in, &p[w.fc1.w.clone()], bias(p, &w.fc1), n, c, f, OutIn);
        activation_forward(self.config.act, &mut a.act[..n * f], &a.h[..n * f]);
        matmul_forward(&mut a.res, &a.act, &p[w.fc2.w.clone()], bias(p, &w.fc2), n, f, c, OutIn);
        residual_forward(&mut a.res[..n * c], &x[..n * c]);
        if !pre {
            self.ln(&mut a.ln, &mut a.mean, &mut a.rstd, &a.res, &w.norm, n);
        }
    }

    /// The final norm of a pre-norm stack (nothing for post-norm).
    pub(super) fn final_norm(&self, st: &mut StackActs, stack: &StackIdx, n: usize) {
        if let Some(fw) = &stack.final_norm {
            let last = st.layers.last().expect("at least one layer").ffn.out(true);
            let (nw, nb) = norm_params(&self.params, fw);
            layernorm_forward(&mut st.fin, &mut st.fin_mean, &mut st.fin_rstd, last, nw, nb, n, self.config.d_model, self.config.norm_eps);
        }
    }

    /// d(stack output) -> d(last block output) in `dlast` (overwritten).
    pub(super) fn final_norm_backward(&self, g: &mut [f32], st: &StackActs, stack: &StackIdx, dout: &[f32], dlast: &mut [f32], n: usize) {
        let c = self.config.d_model;
        match &stack.final_norm {
            Some(fw) => {
                attn_kernels::zero(&mut dlast[..n * c]);
                let last = st.layers.last().expect("at least one layer").ffn.out(true);
                self.ln_backward(g, dlast, dout, last, fw, &st.fin_mean, &st.fin_rstd, n);
            }
            None => dlast[..n * c].copy_from_slice(&dout[..n * c]),
        }
    }

    pub(super) fn ffn_backward(&self, g: &mut [f32], sc: &mut Scratch, a: &FfnActs, w: &FfnIdx, x: &[f32], n: usize, f: usize) {
        let (c, p, pre) = (self.config.d_model, &self.params, self.pre_norm());
        if !pre {
            attn_kernels::zero(&mut sc.dres[..n * c]);
            self.ln_backward(g, &mut sc.dres, &sc.d0, &a.res, &w.norm, &a.mean, &a.rstd, n);
        }
        let dres: &[f32] = if pre { &sc.d0 } else { &sc.dres };
        // res = x + fc2(act(fc1(in))): d(x) starts as the residual's share.
        sc.d1[..n * c].copy_from_slice(&dres[..n * c]);
        let (dw, db) = lin_mut(g, &w.fc2);
        matmul_backward_set(Some(&mut sc.dact), dw, db, dres, &a.act, &p[w.fc2.w.clone()], n, f, c, OutIn);
        activation_backward(self.config.act, &mut sc.dh[..n * f], &a.h[..n * f], &sc.dact[..n * f]);
        let (dw, db) = lin_mut(g, &w.fc1);
        if pre {
            // fc1 read N(x): its input gradient goes back through the norm.
            matmul_backward_set(Some(&mut sc.dres), dw, db, &sc.dh, &a.ln, &p[w.fc1.w.clone()], n, c, f, OutIn);
            self.ln_backward(g, &mut sc.d1, &sc.dres, x, &w.norm, &a.mean, &a.rstd, n);
        } else {
            matmul_backward(Some(&mut sc.d1), dw, db, &sc.dh, x, &p[w.fc1.w.clone()], n, c, f, OutIn);
        }
        std::mem::swap(&mut sc.d0, &mut sc.d1);
    }

    /// For cross-attention, `mem` is the encoder's output and `cross` gives
    /// d(mem) to add into and the (Nk, 2C) scratch for d(k | v); for
    /// self-attention both are None and d(k | v) goes back to the input.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attn_backward(
        &self,
        g: &mut [f32],
        sc: &mut Scratch,
        a: &AttnActs,
        w: &AttnIdx,
        x: &[f32],
        mem: Option<&[f32]>,
        cross: Option<(&mut [f32], &mut [f32])>,
        nq: usize,
        nk: usize,
        shape: CrossShape,
        key_len: &[usize],
    ) {
        let (c, p, pre) = (self.config.d_model, &self.params, self.pre_norm());
        if !pre {
            attn_kernels::zero(&mut sc.dres[..nq * c]);
            self.ln_backward(g, &mut sc.dres, &sc.d0, &a.res, &w.norm, &a.mean, &a.rstd, nq);
        }
        let dres: &[f32] = if pre { &sc.d0 } else { &sc.dres };
        sc.d1[..nq * c].copy_from_slice(&dres[..nq * c]);
        let (dw, db) = lin_mut(g, &w.out);
        matmul_backward_set(Some(&mut sc.da), dw, db, dres, &a.atty, &p[w.out.w.clone()], nq, c, c, OutIn);
        attn_kernels::zero(&mut sc.dq[..nq * c]);
        let (dmem, dkv): (Option<&mut [f32]>, &mut [f32]) = match cross {
            Some((dmem, dkv)) => (Some(dmem), dkv),
            None => (None, &mut sc.dkv),
        };
        attn_kernels::zero(&mut dkv[..nk * 2 * c]);
        cross_attention_backward(&mut sc.dq, dkv, &mut sc.datt, &sc.da, &a.q, &a.kv, &a.att, key_len, shape);
        // The queries (and for self-attention the keys and values) read
        // `q_in`: x itself (post-norm) or N(x) (pre-norm, whose gradient
        // collects in dres, free by now, before going back through the norm).
        let q_in: &[f32] = if pre { &a.ln } else { x };
        // Pre-norm: the query product writes dres (free by now); post-norm:
        // it adds into d1, which holds the residual's share.
        let dq_in: &mut [f32] = if pre { &mut sc.dres } else { &mut sc.d1 };
        let first = if pre { matmul_backward_set } else { matmul_backward };
        let (dw, db) = lin_mut(g, &w.q);
        first(Some(&mut *dq_in), dw, db, &sc.dq, q_in, &p[w.q.w.clone()], nq, c, c, OutIn);
        let (dw, db) = lin_mut(g, &w.kv);
        match dmem {
            Some(d) => matmul_backward(Some(d), dw, db, dkv, mem.expect("cross-attention has a memory"), &p[w.kv.w.clone()], nk, c, 2 * c, OutIn),
            None => matmul_backward(Some(&mut *dq_in), dw, db, dkv, q_in, &p[w.kv.w.clone()], nk, c, 2 * c, OutIn),
        }
        if pre {
            self.ln_backward(g, &mut sc.d1, &sc.dres, x, &w.norm, &a.mean, &a.rstd, nq);
        }
        std::mem::swap(&mut sc.d0, &mut sc.d1);
    }
}
