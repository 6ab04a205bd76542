//! Hot kernels of a training step on real MNIST batches: the first layer's forward pass and a
//! whole forward + backward step, sparse kernels against the dense GEMM, and a batch-1 step.
//!
//! `cargo bench -p mnist-core --bench kernels`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use faer::Par;
use mnist_core::{
    Activation, Architecture, BiasInit, Gradients, InputPath, LayerInit, Loss, Network, Optimizer,
    OptimizerConfig, OutputHead, TrainOptions, WeightInit, compute_gradients, train_step,
};
use mnist_dataset::{DataSources, Mnist, Normalization, Preprocessing};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn kernels(c: &mut Criterion) {
    let mnist = Mnist::load(&DataSources::directory_only(
        mnist_dataset::source::bundled_dir(),
    ))
    .unwrap();
    let standardize = Preprocessing::fit(Normalization::Standardize, &mnist.train, None);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let cases = [
        (
            "two-layer-sigmoid",
            vec![784, 300, 10],
            Activation::Sigmoid,
            1000usize,
            standardize,
        ),
        (
            "adam-dropout-shape",
            vec![784, 400, 100, 10],
            Activation::Relu,
            256,
            Preprocessing::SCALE,
        ),
    ];
    for (name, sizes, act, batch, prep) in cases {
        let ix: Vec<usize> = (0..batch).collect();
        let data = mnist.train.to_dataset(Some(&ix), &prep).unwrap();
        let arch = Architecture::uniform(sizes, act, OutputHead::Softmax).unwrap();
        let net: Network<f32> = Network::new(
            &arch,
            &[LayerInit::new(WeightInit::HeNormal, BiasInit::Zero)],
            &mut rng,
        )
        .unwrap();
        let opts = TrainOptions::new(Loss::CrossEntropy);
        for (path_name, path) in [("sparse", InputPath::Sparse), ("dense", InputPath::Dense)] {
            let mut ws = net.workspace(batch);
            ws.set_input_path(path);
            let mut grads = Gradients::new(&arch);
            c.bench_function(&format!("{name}/forward/{path_name}"), |b| {
                b.iter(|| {
                    net.forward(&mut ws, data.features(), batch, Par::Seq)
                        .unwrap();
                })
            });
            c.bench_function(&format!("{name}/forward+backward/{path_name}"), |b| {
                b.iter(|| {
                    compute_gradients(
                        &net,
                        &mut ws,
                        &mut grads,
                        data.features(),
                        data.labels(),
                        batch,
                        &opts,
                        &mut rng,
                        Par::Seq,
                    )
                    .unwrap()
                })
            });
        }
    }

    // Batch 1: three-layer-relu's single-example SGD step.
    let data = mnist
        .train
        .to_dataset(Some(&(0..1000).collect::<Vec<_>>()), &Preprocessing::SCALE)
        .unwrap();
    let arch = Architecture::uniform(
        vec![784, 256, 64, 10],
        Activation::Relu,
        OutputHead::Softmax,
    )
    .unwrap();
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
    let mut net: Network<f32> = Network::new(&arch, &[init], &mut rng).unwrap();
    let mut ws = net.workspace(1);
    let mut grads = Gradients::new(&arch);
    let mut opt = Optimizer::new(OptimizerConfig::Sgd, &net).unwrap();
    let opts = TrainOptions::new(Loss::CrossEntropy);
    let mut i = 0usize;
    c.bench_function("three-layer-relu/batch-1 SGD step", |b| {
        b.iter(|| {
            let x = data.batch(i % 1000, 1);
            i += 1;
            train_step(
                &mut net,
                &mut ws,
                &mut grads,
                &mut opt,
                x.features,
                x.labels,
                1,
                &opts,
                1e-3,
                &mut rng,
                Par::Seq,
            )
            .unwrap()
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = kernels
}
criterion_main!(benches);
