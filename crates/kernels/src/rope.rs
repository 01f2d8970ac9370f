//! Rotary position embeddings (RoPE), in Hugging Face Llama's "rotate half"
//! layout: within each head, element i (i < HS/2) pairs with i + HS/2 and the
//! pair is rotated by the angle pos * theta^(-2i/HS):
//!   y_i        = x_i cos - x_{i+HS/2} sin
//!   y_{i+HS/2} = x_{i+HS/2} cos + x_i sin
//! A rotation's transpose is the rotation by minus the angle, so the backward
//! pass is the forward pass with sin negated.

use rayon::prelude::*;

/// cos and sin tables (maxT, HS/2), computed as transformers does in f32: the
/// inverse frequencies and the angle products are rounded to f32, and only
/// then is the cosine taken. Matching that rounding matters at long
/// positions, where an f64 angle would drift from the reference.
pub fn rope_table(max_t: usize, hs: usize, theta: f32) -> (Vec<f32>, Vec<f32>) {
    let half = hs / 2;
    let inv: Vec<f32> = (0..half).map(|i| 1.0 / theta.powf((2 * i) as f32 / hs as f32)).collect();
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
        let (c, s) = (&cos[p * half..(p + 1) * half], &sin[p * half..(p + 1) * half]);
        for h in 0..nh {
            let head = &mut row[offset + h * hs..offset + (h + 1) * hs];
            let (lo, hi) = head.split_at_mut(half);
            for i in 0..half {
                let (x1, x2, si) = (lo[i], hi[i], sign * s[i]);
                lo[i] = x1 * c[i] - x2 * si;
                hi[i] = x2 * c[i] + x1 * si;
            }
        }
    });
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
