use attn_kernels::layernorm::{layernorm_backward, layernorm_forward};
use std::time::Instant;
fn main() {
    let (n, c) = (768usize, 384usize);
    let x: Vec<f32> = (0..n * c).map(|i| ((i * 7919) % 1000) as f32 * 4e-3 - 2.0).collect();
    let w: Vec<f32> = (0..c).map(|i| 1.0 + (i % 7) as f32 * 0.01).collect();
    let b = vec![0.1f32; c];
    let (mut y, mut m, mut r) = (vec![0.0f32; n * c], vec![0.0f32; n], vec![0.0f32; n]);
    let (mut dx, mut dw, mut db) = (vec![0.0f32; n * c], vec![0.0f32; c], vec![0.0f32; c]);
    let p = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let mut res = Vec::new();
    p.install(|| {
        for _ in 0..60 {
            let t = Instant::now();
            for _ in 0..10 {
                layernorm_forward(&mut y, &mut m, &mut r, &x, &w, &b, n, c, 1e-5);
                layernorm_backward(&mut dx, &mut dw, &mut db, &y, &x, &w, &m, &r, n, c);
            }
            res.push(t.elapsed().as_secs_f64() * 100.0);
        }
    });
    res.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!("layernorm fwd+bwd median {:.3} ms", res[30]);
}
