//! Rotary position embeddings (RoPE), in Hugging Face Llama's "rotate half"
//! layout: within each head, element i (i < HS/2) pairs with i + HS/2 and the
//! pair is rotated by the angle pos * theta^(-2i/HS):
//!   y_i        = x_i cos - x_{i+HS/2} sin
//!   y_{i+HS/2} = x_{i+HS/2} cos + x_i sin
//! A rotation's transpose is the rotation by minus the angle, so the backward
//! pass is the forward pass with sin negated.

use rayon::prelude::*;

use crate::simd::dispatch;

/// How the rotation frequencies are stretched for contexts longer than the
/// model was trained on, as transformers' `rope_type` values compute them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeScaling {
    /// `default`: theta^(-2i/HS).
    None,
    /// `linear`: every frequency divided by `factor` (positions interpolated).
    #[allow(missing_docs)]
    Linear { factor: f32 },
    /// `dynamic` (NTK-aware): past `max_position` tokens the base grows with the
    /// sequence length; within it, the default frequencies.
    #[allow(missing_docs)]
    Dynamic { factor: f32, max_position: usize },
    /// `llama3`: long wavelengths divided by `factor`, short ones kept, and a
    /// smooth blend between `original_max_position / low_freq_factor` and
    /// `original_max_position / high_freq_factor`.
    #[allow(missing_docs)]
    Llama3 { factor: f32, low_freq_factor: f32, high_freq_factor: f32, original_max_position: usize },
}

/// Inverse frequencies (HS/2) for a sequence of `seq_len` positions, in f32
/// as transformers computes them.
pub fn rope_inv_freq(hs: usize, theta: f32, scaling: RopeScaling, seq_len: usize) -> Vec<f32> {
    let half = hs / 2;
    let base_freqs = |theta: f32| (0..half).map(|i| 1.0 / theta.powf((2 * i) as f32 / hs as f32)).collect::<Vec<f32>>();
    match scaling {
        RopeScaling::None => base_freqs(theta),
        RopeScaling::Linear { factor } => base_freqs(theta).into_iter().map(|f| f / factor).collect(),
        RopeScaling::Dynamic { factor, max_position } => {
            if seq_len <= max_position {
                return base_freqs(theta);
            }
            let d = hs as f32;
            let grown = theta * ((factor * seq_len as f32 / max_position as f32) - (factor - 1.0)).powf(d / (d - 2.0));
            base_freqs(grown)
        }
        RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position } => {
            let old = original_max_position as f32;
            let (low_wavelen, high_wavelen) = (old / low_freq_factor, old / high_freq_factor);
            base_freqs(theta)
                .into_iter()
                .map(|f| {
                    let wavelen = 2.0 * std::f32::consts::PI / f;
                    if wavelen < high_wavelen {
                        f
                    } else if wavelen > low_wavelen {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
        }
    }
}

/// cos and sin tables (maxT, HS/2) for the default frequencies.
pub fn rope_table(max_t: usize, hs: usize, theta: f32) -> (Vec<f32>, Vec<f32>) {
    rope_table_from(max_t, &rope_inv_freq(hs, theta, RopeScaling::None, max_t))
}

/// cos and sin tables (maxT, HS/2) from inverse frequencies, computed as
/// transformers does in f32: the angle products are rounded to f32, and only
/// then is the cosine taken. Matching that rounding matters at long
/// positions, where an f64 angle would drift from the reference.
pub fn rope_table_from(max_t: usize, inv: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let half = inv.len();
    let mut cos = vec![0.0; max_t * half];
    let mut sin = vec![0.0; max_t * half];
    for p in 0..max_t {
        for i in 0..half {
            let angle = (p as f32 * inv[i]) as f64;
            cos[p * half + i] = angle.cos() as f32;
            sin[p * half + i] = angle.sin() as f32;
        }
    }
    (cos, sin)
}

/// Rotates, in place, `nh` heads of size `hs` starting at column `offset` of
/// every row of `x` (rows of width `stride`); row r is position `pos0 + r % t`.
pub fn rope_forward(
    x: &mut [f32], // (B, T, stride)
    cos: &[f32],   // (maxT, HS/2)
    sin: &[f32],   // (maxT, HS/2)
    b: usize,
    t: usize,
    stride: usize,
    offset: usize,
    nh: usize,
    hs: usize,
    pos0: usize,
) {
    rotate(x, cos, sin, b, t, stride, offset, nh, hs, pos0, 1.0);
}

/// Accumulation is not needed here: the gradient is rotated in place.
pub fn rope_backward(
    dx: &mut [f32], // (B, T, stride): d(output) in, d(input) out
    cos: &[f32],    // (maxT, HS/2)
    sin: &[f32],    // (maxT, HS/2)
    b: usize,
    t: usize,
    stride: usize,
    offset: usize,
    nh: usize,
    hs: usize,
    pos0: usize,
) {
    rotate(dx, cos, sin, b, t, stride, offset, nh, hs, pos0, -1.0);
}

fn rotate(x: &mut [f32], cos: &[f32], sin: &[f32], b: usize, t: usize, stride: usize, offset: usize, nh: usize, hs: usize, pos0: usize, sign: f32) {
    let half = hs / 2;
    assert!(hs % 2 == 0 && offset + nh * hs <= stride && x.len() >= b * t * stride);
    assert!(cos.len() >= (pos0 + t) * half && sin.len() >= (pos0 + t) * half, "positions past the RoPE table");
    x[..b * t * stride].par_chunks_mut(stride).enumerate().for_each(|(r, row)| {
        let p = pos0 + r % t;
        rotate_row(&mut row[offset..offset + nh * hs], &cos[p * half..(p + 1) * half], &sin[p * half..(p + 1) * half], hs, sign);
    });
}

dispatch! {
    /// Each head of `heads` (nh * hs) rotated by the angles of one position.
    [Avx2]
    fn rotate_row(heads: &mut [f32], c: &[f32], s: &[f32], hs: usize, sign: f32) {
        let half = hs / 2;
        for head in heads.chunks_exact_mut(hs) {
            let (lo, hi) = head.split_at_mut(half);
            for i in 0..half {
                let (x1, x2, si) = (lo[i], hi[i], sign * s[i]);
                lo[i] = x1 * c[i] - x2 * si;
                hi[i] = x2 * c[i] + x1 * si;
            }
        }
    }
}

/// Reference in f64, angles from the same f32 table rule.
pub fn rope_forward_naive(x: &mut [f32], b: usize, t: usize, stride: usize, offset: usize, nh: usize, hs: usize, pos0: usize, theta: f32) {
    let half = hs / 2;
    for r in 0..b * t {
        let p = pos0 + r % t;
        for h in 0..nh {
            let base = r * stride + offset + h * hs;
            for i in 0..half {
                let inv = 1.0 / theta.powf((2 * i) as f32 / hs as f32);
                let a = (p as f32 * inv) as f64;
                let (x1, x2) = (x[base + i] as f64, x[base + half + i] as f64);
                x[base + i] = (x1 * a.cos() - x2 * a.sin()) as f32;
                x[base + half + i] = (x2 * a.cos() + x1 * a.sin()) as f32;
            }
        }
    }
}
