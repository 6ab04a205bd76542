//! End-to-end behaviour: learning works, runs are reproducible and resumable bit for bit.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic, like tests

mod common;

use common::{Run, blobs, ce, mlp};
use faer::Par;
use mnist_core::{
    Decay, Loss, Optimizer, OptimizerConfig, OptimizerState, RngState, Schedule, TrainOptions,
    Unit, evaluate, from_safetensors_bytes, to_safetensors_bytes,
};

#[test]
fn learns_separable_blobs_with_every_optimizer() {
    let (x, y) = blobs(600, 20, 10, 0.3, 1);
    let configs = [
        (OptimizerConfig::Sgd, 0.5),
        (
            OptimizerConfig::Momentum {
                momentum: 0.9,
                nesterov: false,
            },
            0.05,
        ),
        (
            OptimizerConfig::Momentum {
                momentum: 0.9,
                nesterov: true,
            },
            0.05,
        ),
        (OptimizerConfig::adam(), 0.01),
        (
            OptimizerConfig::RmsProp {
                alpha: 0.9,
                epsilon: 1e-8,
            },
            0.005,
        ),
    ];
    for (config, lr) in configs {
        let mut run = Run::new(mlp(vec![20, 32, 10], 2), 64, config, ce(), 3);
        run.base_lr = lr;
        let before = evaluate(&run.net, &mut run.ws, &x, &y, Loss::CrossEntropy, Par::Seq).unwrap();
        run.epochs(&x, &y, 50, 5, Par::Seq);
        let after = evaluate(&run.net, &mut run.ws, &x, &y, Loss::CrossEntropy, Par::Seq).unwrap();
        assert!(
            after.mean_loss < before.mean_loss * 0.5,
            "{config:?}: {before:?} -> {after:?}"
        );
        assert!(after.accuracy > 0.95, "{config:?}: {after:?}");
    }
}

#[test]
fn deep_mse_sigmoid_network_learns() {
    use mnist_core::{
        Activation, Architecture, BiasInit, LayerInit, Network, OutputHead, WeightInit,
    };
    use rand::SeedableRng;
    let (x, y) = blobs(500, 16, 10, 0.2, 40);
    let arch =
        Architecture::uniform(vec![16, 30, 10], Activation::Sigmoid, OutputHead::Sigmoid).unwrap();
    // (With W, b ~ N(0, 1) on these inputs the sigmoids saturate and MSE can leave one class's
    // output unit dead: a known weakness of the quadratic cost, not of the engine.)
    let init = LayerInit::new(WeightInit::XavierNormal, BiasInit::Zero);
    let net = Network::new(
        &arch,
        &[init],
        &mut rand_chacha::ChaCha8Rng::seed_from_u64(5),
    )
    .unwrap();
    let mut run = Run::new(
        net,
        10,
        OptimizerConfig::Sgd,
        TrainOptions::new(Loss::MeanSquaredError),
        6,
    );
    run.base_lr = 3.0;
    run.epochs(&x, &y, 10, 10, Par::Seq);
    let ev = evaluate(
        &run.net,
        &mut run.ws,
        &x,
        &y,
        Loss::MeanSquaredError,
        Par::Seq,
    )
    .unwrap();
    assert!(ev.accuracy > 0.9, "{ev:?}");
}

fn dropout_run(par: Par) -> Run {
    let (x, y) = blobs(300, 40, 10, 0.5, 7);
    let opts = TrainOptions {
        keep_prob: vec![0.8, 0.9],
        l2: 1e-4,
        ..ce()
    };
    let mut run = Run::new(
        mlp(vec![40, 64, 48, 10], 8),
        64,
        OptimizerConfig::adam(),
        opts,
        9,
    );
    run.base_lr = 1e-3;
    run.epochs(&x, &y, 64, 3, par);
    run
}

#[test]
fn same_seed_gives_bit_identical_parameters() {
    let a = dropout_run(Par::Seq);
    let b = dropout_run(Par::Seq);
    assert!(a.net.bit_identical(&b.net));
    assert_eq!(a.opt.state(), b.opt.state());
    assert_eq!(RngState::capture(&a.rng), RngState::capture(&b.rng));
    // And the run did change the parameters.
    assert!(!a.net.bit_identical(&mlp(vec![40, 64, 48, 10], 8)));
}

#[test]
fn thread_count_does_not_change_results() {
    // Sizes large enough that faer takes its blocked GEMM path. The forward products run once
    // per thread on its chunks' rows: the whole batch on one thread, halves on two; batches
    // of 256 (four chunks) on three threads give groups of two, one and one chunk. The second
    // shape's batches of 200 split unevenly; the small layers' weight gradients sum one
    // partial product per chunk.
    for (sizes, examples, batch) in [
        (vec![784, 256, 64, 10], 384, 128),
        (vec![600, 300, 500, 10], 400, 200),
        (vec![784, 96, 48, 10], 512, 256),
    ] {
        let (x, y) = blobs(examples, sizes[0], 10, 0.5, 11);
        let run = |par: Par| {
            let opts = TrainOptions {
                keep_prob: vec![0.7, 0.9],
                l2: 1e-4,
                ..ce()
            };
            let mut r = Run::new(
                mlp(sizes.clone(), 12),
                batch,
                OptimizerConfig::adam(),
                opts,
                13,
            );
            r.base_lr = 1e-3;
            r.epochs(&x, &y, batch, 3, par);
            r
        };
        let seq = run(Par::Seq);
        for threads in [2, 3] {
            let par = run(Par::rayon(threads));
            assert!(
                seq.net.bit_identical(&par.net),
                "{sizes:?}: Par::Seq and Par::rayon({threads}) diverged"
            );
        }
    }
}

#[test]
fn checkpoint_resume_is_bit_identical() {
    let (x, y) = blobs(200, 24, 10, 0.5, 21);
    let make = || {
        let opts = TrainOptions {
            keep_prob: vec![0.75],
            l2: 1e-3,
            ..ce()
        };
        let mut r = Run::new(
            mlp(vec![24, 32, 10], 22),
            32,
            OptimizerConfig::adam(),
            opts,
            23,
        );
        r.schedule = Schedule::new(
            Decay::Cosine {
                total: 40,
                min_lr: 1e-4,
            },
            Unit::Step,
        )
        .with_warmup(5, Unit::Step);
        r.base_lr = 3e-3;
        r
    };
    let steps = 30u64;
    let batch = 32;
    let start_of = |s: u64| (s as usize * batch) % (y.len() - batch);

    let mut straight = make();
    for s in 0..steps {
        straight.step(&x, &y, start_of(s), batch, s / 5, Par::Seq);
    }

    let mut first = make();
    for s in 0..12 {
        first.step(&x, &y, start_of(s), batch, s / 5, Par::Seq);
    }
    // Checkpoint: model bytes, optimizer state, schedule, RNG state, step counter, all via JSON.
    let model = to_safetensors_bytes(&first.net, &Default::default()).unwrap();
    let opt_json = serde_json::to_string(&first.opt.state()).unwrap();
    let rng_json = serde_json::to_string(&RngState::capture(&first.rng)).unwrap();
    let sched_json = serde_json::to_string(&first.schedule).unwrap();
    let step = first.step;
    drop(first);

    let net = from_safetensors_bytes::<f32>(&model).unwrap().network;
    let state: OptimizerState<f32> = serde_json::from_str(&opt_json).unwrap();
    let mut resumed = make();
    resumed.opt = Optimizer::from_state(OptimizerConfig::adam(), state, &net).unwrap();
    resumed.net = net;
    resumed.rng = serde_json::from_str::<RngState>(&rng_json)
        .unwrap()
        .restore();
    resumed.schedule = serde_json::from_str(&sched_json).unwrap();
    resumed.step = step;
    for s in 12..steps {
        resumed.step(&x, &y, start_of(s), batch, s / 5, Par::Seq);
    }
    assert!(resumed.net.bit_identical(&straight.net));
    assert_eq!(resumed.opt.state(), straight.opt.state());
}

#[test]
fn partial_batches_and_frozen_layers() {
    let (x, y) = blobs(103, 12, 10, 0.3, 31);
    let opts = TrainOptions {
        frozen: vec![true, false, false],
        ..ce()
    };
    let mut run = Run::new(
        mlp(vec![12, 16, 16, 10], 32),
        25,
        OptimizerConfig::adam(),
        opts,
        33,
    );
    let frozen_before = run.net.layers()[0].clone();
    let last_before = run.net.layers()[2].clone();
    run.epochs(&x, &y, 25, 2, Par::Seq); // 103 = 4 * 25 + 3: the last batch is partial
    assert_eq!(run.net.layers()[0], frozen_before, "frozen layer changed");
    assert_ne!(
        run.net.layers()[2],
        last_before,
        "trainable layer did not change"
    );
}

#[test]
fn api_errors_instead_of_panics() {
    use mnist_core::{CoreError, Gradients, compute_gradients};
    use rand::SeedableRng;
    let net = mlp(vec![4, 5, 3], 1);
    let mut ws = net.workspace(2);
    let mut grads = Gradients::new(net.architecture());
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let x = [0.0f32; 8];
    let mut call = |x: &[f32], y: &[u8], batch: usize, opts: &TrainOptions| {
        compute_gradients(
            &net,
            &mut ws,
            &mut grads,
            x,
            y,
            batch,
            opts,
            &mut rng,
            Par::Seq,
        )
    };
    assert_eq!(call(&x, &[0, 1], 0, &ce()), Err(CoreError::EmptyBatch));
    assert_eq!(
        call(&x, &[0, 1, 2], 3, &ce()),
        Err(CoreError::BatchTooLarge { batch: 3, max: 2 })
    );
    assert!(matches!(
        call(&x[..7], &[0, 1], 2, &ce()),
        Err(CoreError::InputLength { .. })
    ));
    assert!(matches!(
        call(&x, &[0], 2, &ce()),
        Err(CoreError::LabelCount { .. })
    ));
    assert!(matches!(
        call(&x, &[0, 3], 2, &ce()),
        Err(CoreError::LabelOutOfRange {
            index: 1,
            label: 3,
            ..
        })
    ));
    let bad = TrainOptions {
        keep_prob: vec![0.0],
        ..ce()
    };
    assert!(matches!(
        call(&x, &[0, 1], 2, &bad),
        Err(CoreError::BadOptions(_))
    ));
    let bad = TrainOptions {
        frozen: vec![true],
        ..ce()
    };
    assert!(matches!(
        call(&x, &[0, 1], 2, &bad),
        Err(CoreError::BadOptions(_))
    ));
    let other = mlp(vec![4, 6, 3], 1);
    let mut ws2 = other.workspace(2);
    assert!(matches!(
        net.forward(&mut ws2, &x, 2, Par::Seq),
        Err(CoreError::BufferMismatch { .. })
    ));
}

#[test]
fn thread_count_does_not_change_single_example_batches() {
    // A batch of one makes every product a matrix-vector product, where faer's parallel kernel
    // splits the inner dimension across threads; the engine must keep those sequential.
    let (x, y) = blobs(40, 784, 10, 0.5, 41);
    let run = |par: Par| {
        let mut r = Run::new(
            mlp(vec![784, 300, 300, 10], 42),
            1,
            OptimizerConfig::Sgd,
            ce(),
            43,
        );
        r.epochs(&x, &y, 1, 1, par);
        r
    };
    let seq = run(Par::Seq);
    let par = run(Par::rayon(2));
    assert!(
        seq.net.bit_identical(&par.net),
        "batch-1 training diverged between Par::Seq and Par::rayon(2)"
    );
    let mut ws_a = seq.net.workspace(1);
    let mut ws_b = seq.net.workspace(1);
    let a = seq
        .net
        .forward(&mut ws_a, &x[..784], 1, Par::Seq)
        .unwrap()
        .logits_slice()
        .to_vec();
    let b = seq
        .net
        .forward(&mut ws_b, &x[..784], 1, Par::rayon(2))
        .unwrap()
        .logits_slice()
        .to_vec();
    assert_eq!(
        a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn evaluate_matches_one_big_forward_pass() {
    let (x, y) = blobs(103, 12, 10, 0.8, 51);
    let net = mlp(vec![12, 16, 10], 52);
    let mut small = net.workspace(7); // 14 full batches and a partial one of 5
    let mut big = net.workspace(103);
    let a = evaluate(&net, &mut small, &x, &y, Loss::CrossEntropy, Par::Seq).unwrap();
    let out = net.forward(&mut big, &x, 103, Par::Seq).unwrap();
    let mut pred = vec![0u8; 103];
    out.predictions_into(&mut pred);
    let correct = pred.iter().zip(&y).filter(|(p, t)| p == t).count();
    let loss = Loss::CrossEntropy.mean(
        mnist_core::OutputHead::Softmax,
        out.logits_slice(),
        out.probabilities_slice(),
        &y,
        10,
    );
    assert_eq!(a.correct, correct);
    assert_eq!(a.examples, 103);
    assert!((a.accuracy - correct as f64 / 103.0).abs() < 1e-15);
    assert!(
        (a.mean_loss - loss).abs() < 1e-12,
        "{} vs {loss}",
        a.mean_loss
    );
    assert_eq!(net.predict(&x, 103, Par::Seq).unwrap(), pred);
}

#[test]
fn fused_single_example_sgd_matches_gradients_then_step() {
    // train_step fuses the update into backpropagation for one example under plain SGD; the
    // parameters, the optimizer's step count, the loss and the dropout stream must come out as
    // compute_gradients + Optimizer::step leave them.
    use mnist_core::{Gradients, train_step};
    let (x, y) = blobs(60, 50, 10, 0.5, 51);
    let cases = [
        ce(),
        TrainOptions {
            keep_prob: vec![0.8, 0.6],
            ..ce()
        },
        TrainOptions { l2: 1e-3, ..ce() },
        TrainOptions {
            frozen: vec![true, false, false],
            ..ce()
        },
        TrainOptions {
            frozen: vec![false, true, false],
            keep_prob: vec![0.9, 0.9],
            ..TrainOptions::new(Loss::MeanSquaredError)
        },
        TrainOptions {
            frozen: vec![true, false, false],
            l2: 1e-3,
            label_smoothing: 0.1,
            ..ce()
        },
    ];
    for opts in cases {
        let mut two_calls = Run::new(
            mlp(vec![50, 40, 30, 10], 52),
            1,
            OptimizerConfig::Sgd,
            opts.clone(),
            53,
        );
        two_calls.base_lr = 0.05;
        let two_calls_loss = two_calls.epochs(&x, &y, 1, 2, Par::Seq);

        let mut net = mlp(vec![50, 40, 30, 10], 52);
        let mut ws = net.workspace(1);
        let mut grads = Gradients::new(net.architecture());
        let mut opt = Optimizer::new(OptimizerConfig::Sgd, &net).unwrap();
        let mut rng = <mnist_core::rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(53);
        let mut last = 0.0;
        for _ in 0..2 {
            for i in 0..y.len() {
                last = train_step(
                    &mut net,
                    &mut ws,
                    &mut grads,
                    &mut opt,
                    &x[i * 50..(i + 1) * 50],
                    &y[i..i + 1],
                    1,
                    &opts,
                    0.05,
                    &mut rng,
                    Par::Seq,
                )
                .unwrap();
            }
        }
        assert!(
            net.bit_identical(&two_calls.net),
            "fused step diverged with {opts:?}"
        );
        assert_eq!(opt.steps(), two_calls.opt.steps());
        assert_eq!(RngState::capture(&rng), RngState::capture(&two_calls.rng));
        assert_eq!(last, two_calls_loss);
    }
}
