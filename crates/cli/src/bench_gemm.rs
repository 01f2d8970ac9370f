//! `attn bench gemm --shapes`: the dense layers' products on training shapes
//! with each f32 GEMM this CPU runs, and the bf16 tiles where it has them,
//! alternated round by round so that a noisy machine slows all alike; medians
//! in GFLOP/s.

use std::time::Instant;

use attn_kernels::matmul::{matmul_backward, matmul_forward, set_f32_gemm, F32Gemm, WeightLayout};
use attn_kernels::mixed::{bf16_path, matmul_precision, set_matmul_precision, Precision};

/// (name, rows N, inputs C, outputs OC, layout): `baby`'s, gpt2-124m's and
/// transformer-base's projections.
const SHAPES: [(&str, usize, usize, usize, WeightLayout); 10] = [
    ("baby qkv", 768, 128, 384, WeightLayout::InOut),
    ("baby fc", 768, 128, 512, WeightLayout::InOut),
    ("baby fc-proj", 768, 512, 128, WeightLayout::InOut),
    ("gpt2-124m fc 4x64", 256, 768, 3072, WeightLayout::InOut),
    ("gpt2-124m fc-proj 4x64", 256, 3072, 768, WeightLayout::InOut),
    ("gpt2-124m qkv 1x1024", 1024, 768, 2304, WeightLayout::InOut),
    ("gpt2-124m fc-proj 1x1024", 1024, 3072, 768, WeightLayout::InOut),
    ("gpt2-124m lm-head 1x1024", 1024, 768, 50257, WeightLayout::OutIn),
    ("transformer-base attention 8x64", 512, 512, 512, WeightLayout::OutIn),
    ("transformer-base fc 8x64", 512, 512, 2048, WeightLayout::OutIn),
];

/// A way to run the products: one of the f32 GEMMs, or bf16 operands.
#[derive(Clone, Copy)]
enum Path {
    F32(F32Gemm),
    Bf16,
}

impl Path {
    fn name(self) -> &'static str {
        match self {
            Path::F32(g) => g.name(),
            Path::Bf16 => bf16_path(),
        }
    }

    fn set(self) {
        match self {
            Path::F32(g) => {
                set_f32_gemm(g);
                set_matmul_precision(Precision::F32);
            }
            Path::Bf16 => set_matmul_precision(Precision::Bf16),
        }
    }
}

pub fn bench_shapes(rounds: usize) -> anyhow::Result<()> {
    let (gemm_before, precision_before) = (attn_kernels::matmul::f32_gemm(), matmul_precision());
    let mut paths: Vec<Path> = [F32Gemm::Avx512, F32Gemm::Avx2, F32Gemm::Crate]
        .into_iter()
        .filter(|&p| {
            set_f32_gemm(p);
            attn_kernels::matmul::f32_gemm() == p
        })
        .map(Path::F32)
        .collect();
    set_f32_gemm(gemm_before);
    // The emulated bf16 path is the f32 GEMM plus rounding: not worth a column.
    if bf16_path() != "f32-emulated" {
        paths.push(Path::Bf16);
    }
    let mut rows = Vec::new();
    for &(name, n, c, oc, layout) in &SHAPES {
        // Values of size ~1 whose products neither vanish nor overflow.
        let fill = |len: usize, k: usize| (0..len).map(|i| ((i * k) % 97) as f32 / 97.0 - 0.5).collect::<Vec<f32>>();
        let (x, w, dy) = (fill(n * c, 31), fill(c * oc, 17), fill(n * oc, 7));
        let (mut out, mut dx, mut dw) = (vec![0.0f32; n * oc], vec![0.0f32; n * c], vec![0.0f32; c * oc]);
        let flops = 2.0 * (n * c * oc) as f64;
        // [path][fwd, dinp, dw] -> GFLOP/s per round
        let mut rates = vec![[Vec::new(), Vec::new(), Vec::new()]; paths.len()];
        let time = |f: &mut dyn FnMut()| {
            // The best of three calls: the first may pay for packing buffers.
            (0..3)
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed().as_secs_f64()
                })
                .fold(f64::INFINITY, f64::min)
        };
        for _ in 0..rounds {
            for (p, &path) in paths.iter().enumerate() {
                path.set();
                let t = [
                    time(&mut || matmul_forward(&mut out, &x, &w, None, n, c, oc, layout)),
                    time(&mut || matmul_backward(Some(&mut dx), &mut [], None, &dy, &x, &w, n, c, oc, layout)),
                    time(&mut || matmul_backward(None, &mut dw, None, &dy, &x, &w, n, c, oc, layout)),
                ];
                for (r, t) in rates[p].iter_mut().zip(t) {
                    r.push(flops / t / 1e9);
                }
            }
        }
        let mut row = serde_json::json!({"shape": name, "n": n, "c": c, "oc": oc, "layout": format!("{layout:?}")});
        for (p, path) in paths.iter().enumerate() {
            let [f, i, d] = rates[p].clone().map(crate::bench::median);
            row[path.name()] = serde_json::json!({"fwd": f, "dinp": i, "dw": d});
        }
        eprintln!("{row}");
        rows.push(row);
    }
    set_f32_gemm(gemm_before);
    set_matmul_precision(precision_before);
    crate::bench::report(serde_json::json!({"threads": rayon::current_num_threads(), "rounds": rounds, "gflops": rows}));
    Ok(())
}

/// The time for one cache line to go from CPU 0 to CPU 1 and back, in ns
/// (median of 5 runs of 20,000 round trips; None on one CPU or where the
/// threads cannot be pinned).
///
/// Why it is reported: these VMs' two vCPUs are sometimes ~70 ns apart
/// (one core complex) and sometimes ~320 ns (the host placed them apart).
/// In the far placement a `baby` step takes a third longer while one
/// thread's speed and the GEMM peak do not change: every parallel region
/// hands rows written on one core to the other (docs/PERFORMANCE.md,
/// "The two cores' distance"). A figure without it can't be
/// compared with another.
pub fn core_round_trip_ns() -> Option<f64> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const TRIPS: u32 = 20_000;
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return None;
    }
    let pin = |cpu: usize| -> bool {
        #[cfg(target_os = "linux")]
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = cpu;
            false
        }
    };
    let once = || -> Option<f64> {
        let flag = AtomicU32::new(0);
        std::thread::scope(|s| {
            let echo = s.spawn(|| {
                if !pin(1) {
                    flag.store(u32::MAX, Ordering::Release);
                    return;
                }
                for i in 0..TRIPS {
                    // Wait for ping i (odd), answer with pong (even).
                    while flag.load(Ordering::Acquire) != 2 * i + 1 {
                        if flag.load(Ordering::Relaxed) == u32::MAX {
                            return;
                        }
                        std::hint::spin_loop();
                    }
                    flag.store(2 * i + 2, Ordering::Release);
                }
            });
            // Pinned on a scoped thread too, so the caller's mask is untouched.
            let ping = s.spawn(|| {
                if !pin(0) {
                    flag.store(u32::MAX, Ordering::Release);
                    return None;
                }
                let t0 = std::time::Instant::now();
                for i in 0..TRIPS {
                    flag.store(2 * i + 1, Ordering::Release);
                    loop {
                        let v = flag.load(Ordering::Acquire);
                        if v == u32::MAX {
                            return None;
                        }
                        if v == 2 * i + 2 {
                            break;
                        }
                        std::hint::spin_loop();
                    }
                }
                Some(t0.elapsed().as_secs_f64() * 1e9 / TRIPS as f64)
            });
            let r = ping.join().ok().flatten();
            let _ = echo.join();
            r
        })
    };
    let runs: Option<Vec<f64>> = (0..5).map(|_| once()).collect();
    runs.map(crate::bench::median)
}
