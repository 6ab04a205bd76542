//! Times deep-mse's full-batch step (784-100-64-28-10 ReLU, sigmoid head, MSE, all 60,000
//! training images as one batch, x/255) on real MNIST: forward alone, then forward + backward.
//!
//! `cargo run --release -p mnist-core --example full_batch_timing [threads] [reps] [backward reps]`
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests, benches and examples may panic

use std::time::Instant;

use faer::Par;
use mnist_core::{
    Activation, Architecture, BiasInit, Gradients, LayerInit, Loss, Network, OutputHead,
    TrainOptions, WeightInit, compute_gradients,
};
use mnist_dataset::{DataSources, Mnist, Preprocessing};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let threads = args.first().copied().unwrap_or(2);
    let reps = args.get(1).copied().unwrap_or(10);
    // A third argument of 0 skips the backward timing (for profiling the forward pass).
    let step_reps = args.get(2).copied().unwrap_or(reps);
    let par = if threads <= 1 {
        Par::Seq
    } else {
        Par::rayon(threads)
    };
    let mnist = Mnist::load(&DataSources::directory_only(
        mnist_dataset::source::bundled_dir(),
    ))?;
    let data = mnist.train.to_dataset(None, &Preprocessing::SCALE)?;
    let arch = Architecture::uniform(
        vec![784, 100, 64, 28, 10],
        Activation::Relu,
        OutputHead::Sigmoid,
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let net: Network<f32> = Network::new(
        &arch,
        &[LayerInit::new(WeightInit::LecunNormal, BiasInit::Zero)],
        &mut rng,
    )?;
    let opts = TrainOptions::new(Loss::MeanSquaredError);
    // As the trainer does: the whole run inside one pool of its threads.
    mnist_core::with_thread_pool(par, || {
        time_steps(&net, &data, &opts, threads, reps, step_reps, par)
    })
}

fn time_steps(
    net: &Network<f32>,
    data: &mnist_dataset::Dataset,
    opts: &TrainOptions,
    threads: usize,
    reps: usize,
    step_reps: usize,
    par: Par,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let batch = data.len();
    let arch = net.architecture().clone();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut ws = net.workspace(batch);
    ws.set_input_fixed(true);
    let mut grads = Gradients::new(&arch);
    let b = data.batch(0, batch);
    compute_gradients(
        net, &mut ws, &mut grads, b.features, b.labels, batch, opts, &mut rng, par,
    )?;
    // The fastest repetition: the host is shared, and slow outliers are its noise.
    let mut fwd = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        net.forward(&mut ws, b.features, batch, par)?;
        fwd = fwd.min(t.elapsed().as_secs_f64());
    }
    let mut step = f64::INFINITY;
    for _ in 0..step_reps {
        let t = Instant::now();
        compute_gradients(
            net, &mut ws, &mut grads, b.features, b.labels, batch, opts, &mut rng, par,
        )?;
        step = step.min(t.elapsed().as_secs_f64());
    }
    println!(
        "{threads} thread(s): forward {:.1} ms, forward+backward {:.1} ms (2,000 steps: {:.0} s)",
        fwd * 1e3,
        step * 1e3,
        step * 2000.0
    );
    Ok(())
}
