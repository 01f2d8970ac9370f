//! The feed-forward activations of encoder-decoder models, behind one enum:
//! ReLU (the original Transformer), SiLU (Marian's `swish`), and the two GELUs
//! of `gelu.rs` (BART's exact `gelu`, GPT-2's tanh `gelu_new`).

use rayon::prelude::*;

use crate::gelu::{gelu_backward, gelu_erf_backward, gelu_erf_forward, gelu_forward};
use crate::simd::dispatch;

const CHUNK: usize = 16 * 1024;

/// The nonlinearity between a feed-forward network's two products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// max(0, x), the original Transformer's and Marian's.
    Relu,
    /// x * sigmoid(x), Hugging Face's `silu` and `swish`.
    Silu,
    /// Exact GELU with erf (`gelu`).
    GeluErf,
    /// tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
}

impl Activation {
    /// The name Hugging Face's `activation_function` uses.
    pub fn hf_name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Silu => "swish",
            Activation::GeluErf => "gelu",
            Activation::GeluTanh => "gelu_new",
        }
    }
    /// The activation a Hugging Face `activation_function` (or
    /// `hidden_act`) names; `None` for one attn does not have.
    pub fn from_hf(name: &str) -> Option<Self> {
        Some(match name {
            "relu" => Activation::Relu,
            "silu" | "swish" => Activation::Silu,
            "gelu" => Activation::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            _ => return None,
        })
    }
}

/// out = act(inp), element by element.
pub fn activation_forward(
    act: Activation,
    out: &mut [f32], // (N)
    inp: &[f32],     // (N)
) {
    assert!(out.len() == inp.len());
    let each = |f: fn(&mut [f32], &[f32]), out: &mut [f32]| out.par_chunks_mut(CHUNK).zip(inp.par_chunks(CHUNK)).for_each(|(o, x)| f(o, x));
    match act {
        Activation::Relu => each(relu_chunk, out),
        Activation::Silu => each(silu_chunk, out),
        Activation::GeluErf => gelu_erf_forward(out, inp),
        Activation::GeluTanh => gelu_forward(out, inp),
    }
}

/// Writes dinp = dout * act'(inp) (not added: nothing else feeds it).
pub fn activation_backward(
    act: Activation,
    dinp: &mut [f32], // (N)
    inp: &[f32],      // (N)
    dout: &[f32],     // (N)
) {
    assert!(dinp.len() == inp.len() && dout.len() == inp.len());
    let each = |f: fn(&mut [f32], &[f32], &[f32]), dinp: &mut [f32]| {
        dinp.par_chunks_mut(CHUNK).zip(inp.par_chunks(CHUNK).zip(dout.par_chunks(CHUNK))).for_each(|(di, (x, dy))| f(di, x, dy))
    };
    match act {
        Activation::Relu => each(relu_backward_chunk, dinp),
        Activation::Silu => each(silu_backward_chunk, dinp),
        Activation::GeluErf => gelu_erf_backward(dinp, inp, dout),
        Activation::GeluTanh => gelu_backward(dinp, inp, dout),
    }
}

dispatch! {
    [Avx2]
    fn relu_chunk(out: &mut [f32], inp: &[f32]) {
        for (o, &x) in out.iter_mut().zip(inp) {
            *o = x.max(0.0);
        }
    }
}

dispatch! {
    [Avx2]
    fn silu_chunk(out: &mut [f32], inp: &[f32]) {
        for (o, &x) in out.iter_mut().zip(inp) {
            *o = x / (1.0 + crate::simd::exp(-x));
        }
    }
}

dispatch! {
    /// dinp = dout * relu'(inp); relu'(0) = 0, as PyTorch takes it.
    [Avx2]
    fn relu_backward_chunk(dinp: &mut [f32], inp: &[f32], dout: &[f32]) {
        for ((di, &x), &dy) in dinp.iter_mut().zip(inp).zip(dout) {
            *di = (if x > 0.0 { 1.0 } else { 0.0 }) * dy;
        }
    }
}

dispatch! {
    /// dinp = dout * silu'(inp), silu' = s (1 + x (1 - s)).
    [Avx2]
    fn silu_backward_chunk(dinp: &mut [f32], inp: &[f32], dout: &[f32]) {
        for ((di, &x), &dy) in dinp.iter_mut().zip(inp).zip(dout) {
            let s = 1.0 / (1.0 + crate::simd::exp(-x));
            *di = s * (1.0 + x * (1.0 - s)) * dy;
        }
    }
}

/// Reference forward in f64.
pub fn activation_forward_naive(act: Activation, out: &mut [f32], inp: &[f32]) {
    for (o, &x) in out.iter_mut().zip(inp) {
        let x = x as f64;
        let y = match act {
            Activation::Relu => x.max(0.0),
            Activation::Silu => x / (1.0 + (-x).exp()),
            Activation::GeluErf => 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)),
            Activation::GeluTanh => 0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh()),
        };
        *o = y as f32;
    }
}
