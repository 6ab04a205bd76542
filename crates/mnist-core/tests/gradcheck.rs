//! Finite-difference checks of whole-network backpropagation in f64.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic, like tests

use mnist_core::gradcheck::check_network;
use mnist_core::{
    Activation, Architecture, BiasInit, LayerInit, Loss, Network, OutputHead, RngState,
    TrainOptions, WeightInit,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const H: f64 = 1e-5;
const TOL: f64 = 1e-6;

fn data(inputs: usize, batch: usize, classes: usize, seed: u64) -> (Vec<f64>, Vec<u8>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x = (0..inputs * batch)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let y = (0..batch)
        .map(|_| rng.random_range(0..classes as u8))
        .collect();
    (x, y)
}

fn net(sizes: Vec<usize>, hidden: Vec<Activation>, head: OutputHead, seed: u64) -> Network<f64> {
    let arch = Architecture::new(sizes, hidden, head).unwrap();
    let init = LayerInit::new(
        WeightInit::Normal {
            mean: 0.0,
            std: 0.7,
        },
        BiasInit::Normal {
            mean: 0.0,
            std: 0.3,
        },
    );
    Network::new(&arch, &[init], &mut ChaCha8Rng::seed_from_u64(seed)).unwrap()
}

fn check(net: &Network<f64>, opts: &TrainOptions, seed: u64, what: &str) {
    let batch = 3;
    let (x, y) = data(net.inputs(), batch, net.outputs(), seed);
    let rng = RngState::capture(&ChaCha8Rng::seed_from_u64(seed ^ 0xdead));
    let report = check_network(net, &x, &y, batch, opts, &rng, H).unwrap();
    assert!(report.checked > 0, "{what}: nothing checked");
    eprintln!(
        "{what}: max rel {:.2e} over {}",
        report.max_rel_error, report.checked
    );
    assert!(report.max_rel_error < TOL, "{what}: {report:?}");
}

const ACTIVATIONS: [Activation; 5] = [
    Activation::Identity,
    Activation::Sigmoid,
    Activation::Tanh,
    Activation::Relu,
    Activation::LeakyRelu { slope: 0.1 },
];

#[test]
fn two_layer_every_activation_every_loss() {
    for (i, act) in ACTIVATIONS.into_iter().enumerate() {
        for head in [OutputHead::Softmax, OutputHead::Sigmoid] {
            for loss in [Loss::CrossEntropy, Loss::MeanSquaredError] {
                let n = net(vec![5, 6, 4], vec![act], head, 10 + i as u64);
                check(
                    &n,
                    &TrainOptions::new(loss),
                    3,
                    &format!("{act:?}/{head:?}/{loss:?}"),
                );
            }
        }
    }
}

#[test]
fn three_layer_mixed_activations() {
    let n = net(
        vec![6, 7, 5, 4],
        vec![Activation::Tanh, Activation::LeakyRelu { slope: 0.2 }],
        OutputHead::Softmax,
        5,
    );
    check(&n, &TrainOptions::new(Loss::CrossEntropy), 8, "3-layer CE");
    let n = net(
        vec![6, 7, 5, 10],
        vec![Activation::Sigmoid, Activation::Sigmoid],
        OutputHead::Sigmoid,
        6,
    );
    check(
        &n,
        &TrainOptions::new(Loss::MeanSquaredError),
        9,
        "3-layer deep-mse",
    );
}

#[test]
fn l2_regularisation() {
    let n = net(
        vec![5, 6, 5, 4],
        vec![Activation::Relu, Activation::Tanh],
        OutputHead::Softmax,
        21,
    );
    let opts = TrainOptions {
        l2: 0.05,
        ..TrainOptions::new(Loss::CrossEntropy)
    };
    check(&n, &opts, 4, "L2");
}

#[test]
fn dropout_with_fixed_mask() {
    let n = net(
        vec![5, 8, 8, 4],
        vec![Activation::Tanh, Activation::Sigmoid],
        OutputHead::Softmax,
        31,
    );
    let opts = TrainOptions {
        keep_prob: vec![0.6, 0.8],
        l2: 0.01,
        ..TrainOptions::new(Loss::CrossEntropy)
    };
    check(&n, &opts, 5, "dropout");
}

#[test]
fn frozen_layers_still_pass_gradients_down() {
    let n = net(
        vec![5, 6, 6, 4],
        vec![Activation::Tanh, Activation::Tanh],
        OutputHead::Softmax,
        41,
    );
    // Middle layer frozen: layer 0 still needs deltas through it.
    let opts = TrainOptions {
        frozen: vec![false, true, false],
        ..TrainOptions::new(Loss::CrossEntropy)
    };
    check(&n, &opts, 6, "middle frozen");
    // First layer frozen: no backprop below layer 1.
    let opts = TrainOptions {
        frozen: vec![true, false, false],
        ..TrainOptions::new(Loss::MeanSquaredError)
    };
    check(&n, &opts, 7, "first frozen");
}
