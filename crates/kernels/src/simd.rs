//! Small loops written so that LLVM vectorizes them. Float reductions are not
//! reassociated by the compiler, so `dot` keeps eight independent partial sums
//! by hand; callers compiled with AVX2 (via `multiversion`) get 8-wide FMA.

#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let chunks = n / 8;
    for i in 0..chunks {
        let (x, y) = (&a[i * 8..i * 8 + 8], &b[i * 8..i * 8 + 8]);
        for j in 0..8 {
            acc[j] += x[j] * y[j];
        }
    }
    let mut s = 0.0f32;
    for i in chunks * 8..n {
        s += a[i] * b[i];
    }
    let p = [acc[0] + acc[4], acc[1] + acc[5], acc[2] + acc[6], acc[3] + acc[7]];
    s + (p[0] + p[2]) + (p[1] + p[3])
}

/// y += alpha * x
#[inline(always)]
pub fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// exp(x) in straight-line f32 arithmetic, so a loop of it vectorizes (libm's
/// `expf` is a call per element). Range reduction x = n ln2 + r with ln2 split
/// in two for exactness, then the Cephes minimax polynomial on |r| <= ln2/2:
/// about 1 ulp over the clamped range [-87, 88].
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer without
    // a rounding instruction that baseline x86-64 lacks.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    // The integer n also sits in the low mantissa bits of `shifted`; reading it
    // there avoids a float-to-int cast, which Rust saturates and which then
    // blocks vectorization.
    let n_int = shifted.to_bits() as i32 - ROUND.to_bits() as i32;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    // Multiply by 2^n by building the float's exponent bits directly.
    e * f32::from_bits(((n_int + 127) as u32) << 23)
}

/// tanh through `exp`: 1 - 2 / (exp(2x) + 1). Absolute error ~1e-7, which is
/// what GELU needs (it multiplies tanh by 0.5 x).
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

/// erf(x) by Abramowitz & Stegun 7.1.26: 1 - t (a1 + a2 t + ... + a5 t^4)
/// exp(-x^2) with t = 1 / (1 + p |x|), odd in x. Absolute error below 1.5e-7
/// plus `exp`'s; written without branches so that loops over it vectorize,
/// which libm's `erff` does not.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_7, -1.453_152_1, 1.061_405_4];
    let ax = x.abs();
    let t = 1.0 / (1.0 + P * ax);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let y = 1.0 - poly * exp(-ax * ax);
    y.copysign(x)
}

/// The widest vector path this CPU takes, as the kernels choose it at run
/// time: "avx512" (AVX-512 F + VL: gemm's x86-v4 kernels and the
/// AVX-512 versions of attn's loops), "avx2" (AVX2 + FMA), "avx", "sse2" on
/// older x86-64, "neon" on aarch64, else "scalar". Benchmarks report it.
pub fn level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl") {
            return "avx512";
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return "avx2";
        }
        if is_x86_feature_detected!("avx") {
            return "avx";
        }
        "sse2"
    }
    #[cfg(target_arch = "aarch64")]
    {
        "neon"
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        "scalar"
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn erf_matches_libm() {
        let mut worst = 0.0f64;
        let mut x = -6.0f32;
        while x < 6.0 {
            worst = worst.max((super::erf(x) as f64 - libm::erf(x as f64)).abs());
            x += 1e-3;
        }
        // 1.5e-7 from the formula, the rest from evaluating it in f32.
        assert!(worst < 1e-6, "erf absolute error {worst:e}");
    }

    #[test]
    fn exp_and_tanh_match_libm() {
        let mut worst_exp = 0.0f64;
        let mut worst_tanh = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let rel = ((super::exp(x) as f64 - (x as f64).exp()) / (x as f64).exp()).abs();
            worst_exp = worst_exp.max(rel);
            let abs = (super::tanh(x / 8.0) as f64 - ((x / 8.0) as f64).tanh()).abs();
            worst_tanh = worst_tanh.max(abs);
            x += 0.0137;
        }
        assert!(worst_exp < 3e-7, "exp relative error {worst_exp:e}");
        assert!(worst_tanh < 3e-7, "tanh absolute error {worst_tanh:e}");
    }
}
