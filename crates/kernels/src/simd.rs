//! Small loops written so that LLVM vectorizes them. Float reductions are not
//! reassociated by the compiler, so `dot` keeps eight independent partial sums
//! by hand; callers compiled with AVX2 (via `dispatch!`) get 8-wide FMA.

use std::sync::atomic::{AtomicU8, Ordering};

/// The dot product of the common length of `a` and `b`, eight partial sums
/// in a fixed order.
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

/// Asks for the cache lines of `len` f32 from `p` into L1; never faults.
#[inline(always)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn prefetch(p: *const f32, len: usize) {
    prefetch_to::<3>(p, len) // _MM_HINT_T0
}

/// Asks for the cache lines of `len` f32 from `p` into L2, not L1; never
/// faults. For streams read from memory: a prefetch into L1 holds one of
/// the core's few L1 miss buffers until its line arrives, which on a Zen 4
/// EPYC capped one core's stream below what its L2 prefetcher reaches
/// (gpt2-124m's (C, OC) block matrices at decoding: 21-24 GiB/s with
/// prefetches into L1, 20-24 without, 26-27 into L2; 2 threads).
#[inline(always)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) fn prefetch_l2(p: *const f32, len: usize) {
    prefetch_to::<2>(p, len) // _MM_HINT_T1
}

/// A prefetch of every cache line of `len` f32 from `p`, with x86's hint
/// HINT (the `_MM_HINT_*` value); nothing elsewhere.
#[inline(always)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn prefetch_to<const HINT: i32>(p: *const f32, len: usize) {
    #[cfg(target_arch = "x86_64")]
    for off in (0..len).step_by(16) {
        // SAFETY: a prefetch is a hint; it reads nothing and cannot fault.
        unsafe { core::arch::x86_64::_mm_prefetch::<HINT>(p.wrapping_add(off) as *const i8) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, len);
}

/// y += alpha * x
#[inline(always)]
pub fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// The fixed reduction of 16 partial sums.
#[inline(always)]
pub fn sum16(a: &[f32; 16]) -> f32 {
    let mut h = [0.0f32; 8];
    for j in 0..8 {
        h[j] = a[j] + a[j + 8];
    }
    ((h[0] + h[4]) + (h[2] + h[6])) + ((h[1] + h[5]) + (h[3] + h[7]))
}

/// The sum of a slice as 16 running partial sums (so that it vectorizes),
/// then `sum16` and the tail in order.
#[inline(always)]
pub fn sum_lanes(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let whole = x.len() / 16 * 16;
    for c in x[..whole].chunks_exact(16) {
        for l in 0..16 {
            acc[l] += c[l];
        }
    }
    x[whole..].iter().fold(sum16(&acc), |s, &v| s + v)
}

/// The sum of f(i) over 0..n as 16 running partial sums (lane i % 16),
/// `sum16`, then the tail in order. One running sum would be a serial chain
/// the compiler must keep in order, scalar; lanes let the loop vectorize.
#[inline(always)]
pub fn lane_sum(n: usize, f: impl Fn(usize) -> f32) -> f32 {
    let mut acc = [0.0f32; 16];
    let whole = n / 16 * 16;
    for i in (0..whole).step_by(16) {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += f(i + l);
        }
    }
    (whole..n).fold(sum16(&acc), |s, i| s + f(i))
}

/// Two such sums in one pass: (sum of f(i).0, sum of f(i).1).
#[inline(always)]
pub fn lane_sum2(n: usize, f: impl Fn(usize) -> (f32, f32)) -> (f32, f32) {
    let (mut a, mut b) = ([0.0f32; 16], [0.0f32; 16]);
    let whole = n / 16 * 16;
    for i in (0..whole).step_by(16) {
        for l in 0..16 {
            let (x, y) = f(i + l);
            a[l] += x;
            b[l] += y;
        }
    }
    (whole..n).fold((sum16(&a), sum16(&b)), |(s, t), i| {
        let (x, y) = f(i);
        (s + x, t + y)
    })
}

/// x -> exp(x * scale - sub) in place, returning the sum of the results as
/// 16 running partial sums, `sum16`, then the tail in order: the form that
/// vectorizes (one running sum would keep every `exp` scalar).
#[inline(always)]
pub fn exp_sum_lanes(x: &mut [f32], scale: f32, sub: f32) -> f32 {
    let mut acc = [0.0f32; 16];
    let whole = x.len() / 16 * 16;
    let (body, tail) = x.split_at_mut(whole);
    for c in body.chunks_exact_mut(16) {
        for l in 0..16 {
            c[l] = exp(c[l] * scale - sub);
            acc[l] += c[l];
        }
    }
    tail.iter_mut().fold(sum16(&acc), |s, v| {
        *v = exp(*v * scale - sub);
        s + *v
    })
}

/// The sum of exp(x - sub) over a slice, summed as `exp_sum_lanes` sums.
#[inline(always)]
pub fn sum_exp_lanes(x: &[f32], sub: f32) -> f32 {
    let mut acc = [0.0f32; 16];
    let whole = x.len() / 16 * 16;
    for c in x[..whole].chunks_exact(16) {
        for l in 0..16 {
            acc[l] += exp(c[l] - sub);
        }
    }
    x[whole..].iter().fold(sum16(&acc), |s, &v| s + exp(v - sub))
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

/// The x86-64 levels attn's loop kernels are compiled for, lowest first.
/// `Avx512` means AVX-512 F + BW + VL with AVX2 and FMA (every AVX-512
/// server CPU since Skylake-SP); `Avx2` means AVX2 + FMA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// The baseline of the target: SSE2 on x86-64, NEON on aarch64, scalar
    /// code elsewhere.
    Portable = 0,
    /// AVX without FMA.
    Avx = 1,
    /// AVX2 + FMA.
    Avx2 = 2,
    /// AVX-512 F + BW + VL, with AVX2 and FMA.
    Avx512 = 3,
}

impl Level {
    /// Every level, the highest first.
    pub const ALL: [Level; 4] = [Level::Avx512, Level::Avx2, Level::Avx, Level::Portable];

    /// The name `ATTN_SIMD` takes and the benchmarks report as `"simd"`.
    pub fn name(self) -> &'static str {
        match self {
            Level::Avx512 => "avx512",
            Level::Avx2 => "avx2",
            Level::Avx => "avx",
            Level::Portable => portable_name(),
        }
    }

    /// Parses the names `ATTN_SIMD` takes.
    pub fn parse(s: &str) -> Option<Level> {
        match s.trim().to_ascii_lowercase().as_str() {
            "avx512" => Some(Level::Avx512),
            "avx2" => Some(Level::Avx2),
            "avx" => Some(Level::Avx),
            "portable" | "sse2" | "neon" | "scalar" => Some(Level::Portable),
            _ => None,
        }
    }
}

fn portable_name() -> &'static str {
    if cfg!(target_arch = "x86_64") {
        "sse2"
    } else if cfg!(target_arch = "aarch64") {
        "neon"
    } else {
        "scalar"
    }
}

/// The best level this CPU supports.
pub fn detected() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        if avx2 && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("avx512vl") {
            return Level::Avx512;
        }
        if avx2 {
            return Level::Avx2;
        }
        if is_x86_feature_detected!("avx") {
            return Level::Avx;
        }
    }
    Level::Portable
}

/// Every level this CPU runs, the best first: what a test sweeps.
pub fn levels() -> Vec<Level> {
    Level::ALL.into_iter().filter(|&l| l <= detected()).collect()
}

const UNSET: u8 = u8::MAX;
static ACTIVE: AtomicU8 = AtomicU8::new(UNSET);

/// The level the kernels run at: the detected one, or lower where
/// `set_level` or the `ATTN_SIMD` environment variable (avx512, avx2, avx,
/// portable; read once, unknown names ignored here; the CLI refuses them)
/// asked for it. Never above what the CPU has, so the dispatch is sound.
pub fn active() -> Level {
    match ACTIVE.load(Ordering::Relaxed) {
        UNSET => {
            let want = std::env::var("ATTN_SIMD").ok().and_then(|v| Level::parse(&v)).unwrap_or(Level::Avx512);
            set_level(want)
        }
        l => Level::ALL.into_iter().find(|&x| x as u8 == l).unwrap_or(Level::Portable),
    }
}

/// Runs attn's loop kernels at `want`, or at the best level below it the
/// CPU has; returns the level now active. Process-wide, so the kernel tests
/// sweep the levels by running themselves again with `ATTN_SIMD` set.
pub fn set_level(want: Level) -> Level {
    let l = want.min(detected());
    ACTIVE.store(l as u8, Ordering::Relaxed);
    l
}

/// The name of the active level ("avx512", "avx2", "avx", or "sse2" /
/// "neon" / "scalar"): what benchmarks report as `"simd"`. gemm's f32
/// products choose their own kernels by CPU.
pub fn level() -> &'static str {
    active().name()
}

/// Compiles a loop kernel for AVX-512, AVX2 + FMA and AVX (plain loops that
/// LLVM vectorizes for each) and calls the version `active()` picks, at
/// most `[$cap]`; portable code below AVX and off x86-64. Unlike an
/// attribute that picks the best version once, this lets the tests run
/// every version the machine has against the naive loops.
macro_rules! dispatch {
    (
        $(#[$meta:meta])*
        [$cap:ident]
        $vis:vis fn $name:ident $(<$($g:ident : $b:path),+>)? ($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block
    ) => {
        $(#[$meta])*
        $vis fn $name $(<$($g: $b),+>)? ($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body $(<$($g: $b),+>)? ($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                use $crate::simd::Level;
                #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
                unsafe fn v4 $(<$($g: $b),+>)? ($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3 $(<$($g: $b),+>)? ($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                #[target_feature(enable = "avx")]
                unsafe fn v2 $(<$($g: $b),+>)? ($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                // SAFETY: `active()` never exceeds the CPU's own level.
                match $crate::simd::active().min(Level::$cap) {
                    Level::Avx512 => return unsafe { v4($($arg),*) },
                    Level::Avx2 => return unsafe { v3($($arg),*) },
                    Level::Avx => return unsafe { v2($($arg),*) },
                    Level::Portable => {}
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use dispatch;

dispatch! {
    /// Sampling weights: `out[i] = exp((x[i] - max) / temp)`, the unnormalized
    /// softmax of `x / temp` (x <= max), and exactly 0 where the exponent is
    /// below -87: `exp` clamps there, and a token suppressed with a logit of
    /// -inf must keep no mass at all.
    [Avx512]
    pub fn exp_weights(out: &mut [f32], x: &[f32], max: f32, temp: f32) {
        assert_eq!(out.len(), x.len());
        for (o, &l) in out.iter_mut().zip(x) {
            let z = (l - max) / temp;
            let e = exp(z);
            *o = if z < -87.0 { 0.0 } else { e };
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_weights_match_libm_and_give_suppressed_tokens_nothing() {
        let x = [0.0f32, -1.5, 3.0, f32::NEG_INFINITY, -200.0, 2.25, -80.0, 1.0, 0.5, -3.0, 2.0, -0.25, 1.75, -5.0, 0.125, 2.5, -9.0];
        let (max, temp) = (3.0f32, 0.7f32);
        let mut w = vec![0.0f32; x.len()];
        super::exp_weights(&mut w, &x, max, temp);
        for (i, (&l, &got)) in x.iter().zip(&w).enumerate() {
            let want = ((l as f64 - max as f64) / temp as f64).exp();
            assert!((got as f64 - want).abs() <= 2e-6 * want.max(1e-30), "{i}: {got} vs {want}");
        }
        assert_eq!((w[3], w[4]), (0.0, 0.0), "-inf and far-below-max logits weigh exactly 0");
        assert_eq!(w[2], 1.0);
    }

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

    /// Lane sums add every term once, the tail after the last 16 included.
    #[test]
    fn lane_sums_add_every_term() {
        for n in [0usize, 7, 16, 50] {
            let f = |i: usize| (i * i % 17) as f32;
            let want: f32 = (0..n).map(f).sum();
            assert_eq!(super::lane_sum(n, f), want, "n = {n}");
            assert_eq!(super::lane_sum2(n, |i| (f(i), 2.0 * f(i))), (want, 2.0 * want), "n = {n}");
        }
    }

    /// Both lane sums store / add exp(x * scale - sub) for every element,
    /// the tail after the last 16 included, and agree with each other.
    #[test]
    fn exp_lane_sums_cover_every_element() {
        for n in [0usize, 5, 16, 37] {
            let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
            let want: f64 = x.iter().map(|&v| (v as f64 * 0.5 - 1.0).exp()).sum();
            let mut y = x.clone();
            let got = super::exp_sum_lanes(&mut y, 0.5, 1.0);
            assert!((got as f64 - want).abs() <= 1e-6 * want.max(1.0), "n = {n}: {got} vs {want}");
            for (a, b) in y.iter().zip(&x) {
                assert!((*a as f64 - (*b as f64 * 0.5 - 1.0).exp()).abs() < 1e-6, "n = {n}");
            }
            let scaled: Vec<f32> = x.iter().map(|v| v * 0.5).collect();
            assert_eq!(super::sum_exp_lanes(&scaled, 1.0).to_bits(), got.to_bits(), "n = {n}");
        }
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
