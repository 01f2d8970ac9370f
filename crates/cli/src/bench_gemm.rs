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
    let mut paths: Vec<Path> = [F32Gemm::Avx512, F32Gemm::Crate]
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
