//! The measurement behind the f32 GEMM choice: attn's dense-layer products
//! (forward, input gradient, weight gradient) on training shapes with its
//! own AVX-512 kernel and with the `gemm` crate (each cut into one block per
//! thread the same way), and `matrixmultiply` with its own threading on the
//! forward product, at 1 and 2 threads.
//! Run: MATMUL_NUM_THREADS=2 cargo bench -p attn-kernels --bench gemm_choice -- t2
//! (`attn bench gemm --shapes` times the two f32 GEMMs alternated round by
//! round, which a noisy machine needs.)

use attn_kernels::matmul::{matmul_backward, matmul_forward, set_f32_gemm, F32Gemm, WeightLayout};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn bench(c: &mut Criterion) {
    use WeightLayout::*;
    // (name, rows N, inputs C, outputs OC, layout)
    let shapes = [
        ("baby/qkv", 768, 128, 384, InOut),
        ("baby/fc", 768, 128, 512, InOut),
        ("baby/fcproj", 768, 512, 128, InOut),
        ("gpt2/fc", 256, 768, 3072, InOut),
        ("gpt2/fcproj", 256, 3072, 768, InOut),
        ("gpt2-t1024/qkv", 1024, 768, 2304, InOut),
        ("base/attn", 512, 512, 512, OutIn),
        ("base/fc", 512, 512, 2048, OutIn),
        ("square1024", 1024, 1024, 1024, InOut),
    ];
    let mut g = c.benchmark_group("gemm_choice");
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        for &(name, n, k, oc, layout) in &shapes {
            let (x, w, dy) = (vec![0.1f32; n * k], vec![0.01f32; k * oc], vec![0.02f32; n * oc]);
            let (mut out, mut dx, mut dw) = (vec![0.0f32; n * oc], vec![0.0f32; n * k], vec![0.0f32; k * oc]);
            g.throughput(Throughput::Elements((2 * n * k * oc) as u64));
            for path in [F32Gemm::Avx512, F32Gemm::Crate] {
                set_f32_gemm(path);
                let p = attn_kernels::matmul::f32_gemm().name();
                if path == F32Gemm::Avx512 && p != "avx512" {
                    continue; // this CPU runs the crate only
                }
                let pool = &pool;
                g.bench_function(format!("{name}/fwd/{p}/t{threads}"), |b| {
                    pool.install(|| b.iter(|| matmul_forward(&mut out, &x, &w, None, n, k, oc, layout)))
                });
                g.bench_function(format!("{name}/dinp/{p}/t{threads}"), |b| {
                    pool.install(|| b.iter(|| matmul_backward(Some(&mut dx), &mut [], None, &dy, &x, &w, n, k, oc, layout)))
                });
                g.bench_function(format!("{name}/dw/{p}/t{threads}"), |b| {
                    pool.install(|| b.iter(|| matmul_backward(None, &mut dw, None, &dy, &x, &w, n, k, oc, layout)))
                });
            }
            if layout == InOut {
                // matrixmultiply reads its thread count from MATMUL_NUM_THREADS once per
                // process: set it to the thread count filtered for (`-- t2`).
                g.bench_function(format!("{name}/fwd/matrixmultiply/t{threads}"), |b| {
                    b.iter(|| unsafe {
                        matrixmultiply::sgemm(n, k, oc, 1.0, x.as_ptr(), k as isize, 1, w.as_ptr(), oc as isize, 1, 0.0, out.as_mut_ptr(), oc as isize, 1)
                    })
                });
            }
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(15).warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
