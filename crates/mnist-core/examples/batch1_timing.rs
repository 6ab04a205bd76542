//! Times single-example SGD steps of three-layer-relu (784-256-64-10) on real MNIST (x/255).
//!
//! `cargo run --release -p mnist-core --example batch1_timing [steps]`
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests, benches and examples may panic

use std::time::Instant;

use faer::Par;
use mnist_core::{
    Activation, Architecture, BiasInit, Gradients, LayerInit, Loss, Network, Optimizer,
    OptimizerConfig, OutputHead, TrainOptions, WeightInit, train_step,
};
use mnist_dataset::{DataSources, Mnist, Preprocessing};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let steps: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000);
    let mnist = Mnist::load(&DataSources::directory_only(
        mnist_dataset::source::bundled_dir(),
    ))?;
    let data = mnist.train.to_dataset(None, &Preprocessing::SCALE)?;
    let arch = Architecture::uniform(
        vec![784, 256, 64, 10],
        Activation::Relu,
        OutputHead::Softmax,
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let init = LayerInit::new(
        WeightInit::Normal {
            mean: 0.0,
            std: 1.0,
        },
        BiasInit::Normal {
            mean: 0.0,
            std: 1.0,
        },
    );
    let mut net: Network<f32> = Network::new(&arch, &[init], &mut rng)?;
    let mut ws = net.workspace(1);
    let mut grads = Gradients::new(&arch);
    let mut opt = Optimizer::new(OptimizerConfig::Sgd, &net)?;
    let opts = TrainOptions::new(Loss::CrossEntropy);
    let t = Instant::now();
    for s in 0..steps {
        let b = data.batch(s % data.len(), 1);
        train_step(
            &mut net,
            &mut ws,
            &mut grads,
            &mut opt,
            b.features,
            b.labels,
            1,
            &opts,
            1e-3,
            &mut rng,
            Par::rayon(2),
        )?;
    }
    let per = t.elapsed().as_secs_f64() / steps as f64;
    println!(
        "{:.2} us/step, {:.0} steps/s, {:.2} s per 60,000-step epoch",
        per * 1e6,
        1.0 / per,
        per * 60_000.0
    );
    Ok(())
}
