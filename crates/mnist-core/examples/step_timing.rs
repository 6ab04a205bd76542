//! Times training steps and inference on MNIST-shaped random data.
//!
//! `cargo run --release -p mnist-core --example step_timing`
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests, benches and examples may panic

use std::time::Instant;

use faer::Par;
use mnist_core::{
    Activation, Architecture, BiasInit, CoreError, Gradients, LayerInit, Loss, Network, Optimizer,
    OptimizerConfig, OutputHead, TrainOptions, WeightInit, compute_gradients,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn main() -> Result<(), CoreError> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let n = 4096;
    let x: Vec<f32> = (0..n * 784).map(|_| rng.random_range(0.0..1.0)).collect();
    let y: Vec<u8> = (0..n).map(|_| rng.random_range(0..10)).collect();
    let configs = [
        (vec![784, 100, 10], 64, OptimizerConfig::Sgd),
        (vec![784, 100, 10], 64, OptimizerConfig::adam()),
        (vec![784, 100, 10], 128, OptimizerConfig::adam()),
        (vec![784, 256, 128, 10], 128, OptimizerConfig::adam()),
    ];
    for (sizes, batch, config) in configs {
        for (name, par) in [("seq", Par::Seq), ("rayon(2)", Par::rayon(2))] {
            let arch = Architecture::uniform(sizes.clone(), Activation::Relu, OutputHead::Softmax)?;
            let init = LayerInit::new(WeightInit::HeNormal, BiasInit::Zero);
            let mut net: Network<f32> = Network::new(&arch, &[init], &mut rng)?;
            let mut ws = net.workspace(batch);
            let mut grads = Gradients::new(&arch);
            let mut opt = Optimizer::new(config, &net)?;
            let opts = TrainOptions::new(Loss::CrossEntropy);
            let steps = n / batch;
            let mut run = |net: &mut Network<f32>| -> Result<(), CoreError> {
                for s in 0..steps {
                    let xb = &x[s * batch * 784..(s + 1) * batch * 784];
                    let yb = &y[s * batch..(s + 1) * batch];
                    compute_gradients(
                        net, &mut ws, &mut grads, xb, yb, batch, &opts, &mut rng, par,
                    )?;
                    opt.step(net, &grads, 1e-3, mnist_core::step_par(batch, par))?;
                }
                Ok(())
            };
            run(&mut net)?; // warm-up
            let t = Instant::now();
            let reps = 5;
            for _ in 0..reps {
                run(&mut net)?;
            }
            let per_step = t.elapsed().as_secs_f64() / (reps * steps) as f64;
            let per_epoch = per_step * (60_000.0 / batch as f64);
            println!(
                "{sizes:?} batch {batch:>3} {:>4} {name:>8}: {:>7.1} us/step, {:>5.2} s per 60k-example epoch",
                match config {
                    OptimizerConfig::Sgd => "sgd",
                    _ => "adam",
                },
                per_step * 1e6,
                per_epoch
            );
        }
    }
    Ok(())
}
