//! The measurement behind the GEMM choice: attn's `matmul_forward` (the `gemm`
//! crate, one block per thread) against `matrixmultiply` with its own
//! threading, on training shapes, at 1 and 2 threads.
//! Run: cargo bench -p attn-kernels --bench gemm_choice
//! (attn's own AVX-512 f32 kernel against the crate: `attn bench gemm
//! --shapes`, the two alternated round by round, which a noisy machine needs.)

use attn_kernels::matmul::{matmul_forward, WeightLayout};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn bench(c: &mut Criterion) {
    let shapes = [("baby/qkv", 768, 128, 384), ("baby/fcproj", 768, 512, 128), ("gpt2/fc", 256, 768, 3072), ("square1024", 1024, 1024, 1024)];
    let mut g = c.benchmark_group("gemm_choice");
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        for &(name, m, k, n) in &shapes {
            let (a, b) = (vec![0.1f32; m * k], vec![0.01f32; k * n]);
            let mut out = vec![0.0f32; m * n];
            g.throughput(Throughput::Elements((2 * m * k * n) as u64));
            g.bench_function(format!("{name}/gemm/t{threads}"), |bch| {
                pool.install(|| bch.iter(|| matmul_forward(&mut out, &a, &b, None, m, k, n, WeightLayout::InOut)))
            });
            // matrixmultiply reads its thread count from MATMUL_NUM_THREADS once per process;
            // it is set by the run command in docs/PERFORMANCE.md.
            g.bench_function(format!("{name}/matrixmultiply/t{threads}"), |bch| {
                bch.iter(|| unsafe {
                    matrixmultiply::sgemm(m, k, n, 1.0, a.as_ptr(), k as isize, 1, b.as_ptr(), n as isize, 1, 0.0, out.as_mut_ptr(), n as isize, 1)
                })
            });
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
