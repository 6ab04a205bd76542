//! Times the first layer's dense and sparse paths on real MNIST (x/255) batches.
//!
//! `cargo run --release -p mnist-core --example sparse_timing [batch] [outputs] [threads]`
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests, benches and examples may panic

use std::time::Instant;

use faer::Par;
use mnist_core::{
    Activation, Architecture, BiasInit, Gradients, InputPath, LayerInit, Loss, Network, OutputHead,
    TrainOptions, WeightInit, compute_gradients,
};
use mnist_dataset::{DataSources, Mnist, Preprocessing};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let batch = args.first().copied().unwrap_or(1000);
    let hidden = args.get(1).copied().unwrap_or(300);
    let threads = args.get(2).copied().unwrap_or(1);
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
        vec![784, hidden, 10],
        if std::env::var("RELU").is_ok() {
            Activation::Relu
        } else {
            Activation::Sigmoid
        },
        OutputHead::Softmax,
    )?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let net: Network<f32> = Network::new(
        &arch,
        &[LayerInit::new(WeightInit::HeNormal, BiasInit::Zero)],
        &mut rng,
    )?;
    let opts = TrainOptions::new(Loss::CrossEntropy);
    let reps = if batch < 8 { 20_000 } else { 20 };
    for path in [InputPath::Dense, InputPath::Sparse] {
        let mut ws = net.workspace(batch);
        ws.set_input_path(path);
        let mut grads = Gradients::new(&arch);
        let b = data.batch(0, batch);
        net.forward(&mut ws, b.features, batch, par)?;
        let t = Instant::now();
        for _ in 0..reps {
            net.forward(&mut ws, b.features, batch, par)?;
        }
        let fwd = t.elapsed().as_secs_f64() / reps as f64;
        compute_gradients(
            &net, &mut ws, &mut grads, b.features, b.labels, batch, &opts, &mut rng, par,
        )?;
        let t = Instant::now();
        for _ in 0..reps {
            compute_gradients(
                &net, &mut ws, &mut grads, b.features, b.labels, batch, &opts, &mut rng, par,
            )?;
        }
        let step = t.elapsed().as_secs_f64() / reps as f64;
        let flops = 2.0 * (batch * 784 * hidden) as f64;
        println!(
            "{path:?}: forward {:.3} ms ({:.1} dense-GFLOP/s), forward+backward {:.3} ms ({:.1} dense-GFLOP/s)",
            fwd * 1e3,
            flops / fwd / 1e9,
            step * 1e3,
            2.0 * flops / step / 1e9
        );
    }
    Ok(())
}
