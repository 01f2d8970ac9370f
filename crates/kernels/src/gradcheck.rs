//! Finite-difference gradient checking, shared by the kernel and model tests.
//!
//! The kernels compute in f32; the check sums the scalar loss in f64 and uses
//! central differences, so the remaining error is f32 rounding of the forward
//! pass divided by `eps`. Tolerances in the tests are set from that.

/// Compares `analytic` with central differences of `loss` at `x`.
/// Returns the worst error, measured as |num - ana| / max(1, |num|, |ana|)
pub fn check_gradient(x: &mut [f32], analytic: &[f32], eps: f32, mut loss: impl FnMut(&[f32]) -> f64) -> GradCheck {
    assert_eq!(x.len(), analytic.len());
    let mut worst = GradCheck { max_err: 0.0, index: 0, numeric: 0.0, analytic: 0.0 };
    for i in 0..x.len() {
        let orig = x[i];
        x[i] = orig + eps;
        let lp = loss(x);
        x[i] = orig - eps;
        let lm = loss(x);
        x[i] = orig;
        let num = (lp - lm) / (2.0 * eps as f64);
        let ana = analytic[i] as f64;
        let err = (num - ana).abs() / num.abs().max(ana.abs()).max(1.0);
        // A NaN compares false with everything: count it as the worst error.
        let err = if err.is_nan() { f64::INFINITY } else { err };
        if err > worst.max_err {
            worst = GradCheck { max_err: err, index: i, numeric: num, analytic: ana };
        }
    }
    worst
}

/// The worst element of a gradient check.
#[derive(Debug, Clone, Copy)]
pub struct GradCheck {
    /// |numeric - analytic| / max(1, |numeric|, |analytic|) at `index`.
    pub max_err: f64,
    /// The element with the largest error.
    pub index: usize,
    /// Its central finite difference.
    pub numeric: f64,
    /// Its gradient from the backward kernel.
    pub analytic: f64,
}

/// A fixed random projection used as the scalar loss: sum(out * proj). Its
/// gradient with respect to `out` is `proj`, which exercises every output.
pub fn projection(len: usize, seed: u64) -> Vec<f32> {
    // A small LCG keeps this helper free of dependencies.
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The scalar loss of a check: sum(out * proj), in f64.
pub fn weighted_sum(out: &[f32], proj: &[f32]) -> f64 {
    out.iter().zip(proj).map(|(&a, &b)| a as f64 * b as f64).sum()
}

/// The largest `|a[i] - b[i]|`, for the tests that compare a result with its
/// reference. A NaN (or an infinity) on one side only counts as infinitely
/// far: `f32::max` drops NaNs, so a plain fold would let a broken result
/// pass. Equal infinities (masked logits on both sides) are no difference.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "compared slices differ in length");
    let d = |x: f32, y: f32| {
        if x == y {
            0.0
        } else if (x - y).is_nan() || (x - y).is_infinite() {
            f32::INFINITY
        } else {
            (x - y).abs()
        }
    };
    a.iter().zip(b).map(|(&x, &y)| d(x, y)).fold(0.0, f32::max)
}

/// `max_diff(got, want)` over `want`'s largest magnitude, that magnitude
/// taken as at least 1e-5: how the model tests compare a gradient tensor
/// with transformers'. The floor is for tensors whose true gradient is 0,
/// the attention key biases (softmax ignores a shift shared by a row's
/// scores): both sides hold f32 noise there, whose size depends on the
/// GEMM's summation order (under attn's AVX2 GEMM, classify's came to
/// 1.08e-3 of a 1e-6 floor).
pub fn relative_diff(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-5);
    max_diff(got, want) / scale
}

#[cfg(test)]
mod tests {
    #[test]
    fn max_diff_sees_nans_and_infinities() {
        assert_eq!(super::max_diff(&[1.0, 2.0], &[1.0, 2.5]), 0.5);
        assert_eq!(super::max_diff(&[f32::NAN, 2.0], &[1.0, 2.0]), f32::INFINITY);
        assert_eq!(super::max_diff(&[1.0, f32::NEG_INFINITY], &[1.0, f32::NEG_INFINITY]), 0.0);
        assert_eq!(super::max_diff(&[1.0, f32::INFINITY], &[1.0, 3.0]), f32::INFINITY);
        let r = super::check_gradient(&mut [1.0], &[f32::NAN], 1e-3, |x| x[0] as f64);
        assert_eq!(r.max_err, f64::INFINITY);
    }
}
