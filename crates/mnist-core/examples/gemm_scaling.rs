//! faer's f32 GEMM throughput on one thread and on all cores, on large squares and on the
//! layer shapes of the reference recipes: what a second thread can buy on this machine.
//!
//! `cargo run --release -p mnist-core --example gemm_scaling`
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests, benches and examples may panic

use std::time::Instant;

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, Par};

fn gflops(m: usize, k: usize, n: usize, par: Par) -> f64 {
    let a = Mat::<f32>::from_fn(m, k, |i, j| ((i * 7 + j * 3) % 11) as f32 * 0.1);
    let b = Mat::<f32>::from_fn(k, n, |i, j| ((i * 5 + j) % 13) as f32 * 0.1);
    let mut c = Mat::<f32>::zeros(m, n);
    let reps = (2e10 / (2.0 * (m * k * n) as f64)).clamp(3.0, 500.0) as usize;
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        matmul(c.as_mut(), Accum::Replace, a.as_ref(), b.as_ref(), 1.0, par);
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (m * k * n) as f64 / best / 1e9
}

fn main() {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    for (m, k, n) in [
        (2048, 2048, 2048),
        (1000, 784, 300),
        (256, 784, 400),
        (256, 400, 100),
        (128, 800, 800),
    ] {
        let one = gflops(m, k, n, Par::Seq);
        let all = gflops(m, k, n, Par::rayon(threads));
        println!(
            "{m}x{k}x{n}: 1 thread {one:.1} GFLOP/s, {threads} threads {all:.1} GFLOP/s ({:.2}x)",
            all / one
        );
    }
}
