//! A training step allocates nothing once its buffers exist (each layer on each of its paths).
//!
//! A counting global allocator wraps the system one; after a warm-up step (faer's GEMM keeps a
//! per-thread packing buffer that it allocates on first use and then reuses), full and partial
//! batches of forward + loss + backward + optimizer update, evaluation and inference into a
//! workspace are run with `Par::Seq`, and the allocation counters must not move.
//! This file holds a single test so no other test thread allocates concurrently.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic, like tests

use std::alloc::System;

use faer::Par;
use mnist_core::{
    Activation, Architecture, BiasInit, Gradients, LayerInit, Loss, Network, Optimizer,
    OptimizerConfig, OutputHead, Schedule, TrainOptions, WeightInit, compute_gradients, evaluate,
    train_step,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

struct Setup {
    net: Network<f32>,
    ws: mnist_core::Workspace<f32>,
    grads: Gradients<f32>,
    opt: Optimizer<f32>,
    opts: TrainOptions,
    rng: ChaCha8Rng,
    x: Vec<f32>,
    y: Vec<u8>,
    max_batch: usize,
}

fn setup(
    sizes: Vec<usize>,
    head: OutputHead,
    loss: Loss,
    config: OptimizerConfig,
    max_batch: usize,
) -> Setup {
    let hidden = sizes.len() - 2;
    let arch = Architecture::uniform(sizes, Activation::Relu, head).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let init = LayerInit::new(
        WeightInit::HeNormal,
        BiasInit::Normal {
            mean: 0.0,
            std: 0.01,
        },
    );
    let net = Network::new(&arch, &[init], &mut rng).unwrap();
    let n = 3 * max_batch;
    let x = (0..n * net.inputs())
        .map(|_| rng.random_range(0.0f32..1.0))
        .collect();
    let y = (0..n)
        .map(|_| rng.random_range(0..net.outputs() as u8))
        .collect();
    Setup {
        ws: net.workspace(max_batch),
        grads: Gradients::new(&arch),
        opt: Optimizer::new(config, &net).unwrap(),
        opts: TrainOptions {
            loss,
            l2: 1e-4,
            keep_prob: vec![0.8; hidden],
            frozen: Vec::new(),
            label_smoothing: 0.1,
        },
        rng,
        net,
        x,
        y,
        max_batch,
    }
}

impl Setup {
    /// Without L2, even steps take `train_step` (a sparse layer's update in its panels, the
    /// moments in the panel layout) and odd ones gradients + `Optimizer::step` (the moments
    /// back to row-major): the conversions must not allocate once both have run.
    fn step(&mut self, batch: usize, step: u64) {
        let d = self.net.inputs();
        let lr = Schedule::constant()
            .with_warmup(3, mnist_core::Unit::Step)
            .lr_at(1e-3, 0, step);
        if self.opts.l2 == 0.0 && step.is_multiple_of(2) {
            let loss = train_step(
                &mut self.net,
                &mut self.ws,
                &mut self.grads,
                &mut self.opt,
                &self.x[..batch * d],
                &self.y[..batch],
                batch,
                &self.opts,
                lr,
                &mut self.rng,
                Par::Seq,
            )
            .unwrap();
            assert!(loss.is_finite());
            return;
        }
        let loss = compute_gradients(
            &self.net,
            &mut self.ws,
            &mut self.grads,
            &self.x[..batch * d],
            &self.y[..batch],
            batch,
            &self.opts,
            &mut self.rng,
            Par::Seq,
        )
        .unwrap();
        assert!(loss.is_finite());
        self.opt
            .step(&mut self.net, &self.grads, lr, Par::Seq)
            .unwrap();
    }

    fn inference(&mut self, batch: usize, preds: &mut [u8]) {
        let d = self.net.inputs();
        let out = self
            .net
            .forward(&mut self.ws, &self.x[..batch * d], batch, Par::Seq)
            .unwrap();
        out.predictions_into(preds);
        let ev = evaluate(
            &self.net,
            &mut self.ws,
            &self.x,
            &self.y,
            self.opts.loss,
            Par::Seq,
        )
        .unwrap();
        assert!(ev.mean_loss.is_finite());
    }
}

#[test]
fn training_steps_do_not_allocate() {
    let configs = [
        // MNIST-sized, blocked GEMM path.
        (
            vec![784, 128, 64, 10],
            OutputHead::Softmax,
            Loss::CrossEntropy,
            OptimizerConfig::adam(),
            64,
        ),
        // Batches of four chunks: one forward product over all of them, and the small
        // output layer's weight gradient summed from per-chunk partials.
        (
            vec![784, 64, 10],
            OutputHead::Softmax,
            Loss::CrossEntropy,
            OptimizerConfig::adam(),
            256,
        ),
        // Tiny shapes, small-matrix GEMM path; deep-mse head and loss.
        (
            vec![12, 9, 10],
            OutputHead::Sigmoid,
            Loss::MeanSquaredError,
            OptimizerConfig::Momentum {
                momentum: 0.9,
                nesterov: true,
            },
            8,
        ),
        (
            vec![30, 20, 20, 10],
            OutputHead::Softmax,
            Loss::CrossEntropy,
            OptimizerConfig::RmsProp {
                alpha: 0.9,
                epsilon: 1e-8,
            },
            16,
        ),
    ];
    // MNIST-like sparse inputs (80% background, 0 or a standardized-style constant): the sparse
    // first-layer kernels and their buffers. The last also takes its 200 x 100 hidden layer
    // sparse in training (keep 0.4 after ReLU leaves about 20% non-zero) and dense in
    // evaluation, so both paths of that layer run after the warm-up.
    let sparse_configs = [
        (
            vec![784, 100, 10],
            OutputHead::Softmax,
            Loss::CrossEntropy,
            OptimizerConfig::Sgd,
            64,
            Some(0.0f32),
            0.8,
        ),
        (
            vec![784, 40, 10],
            OutputHead::Softmax,
            Loss::CrossEntropy,
            OptimizerConfig::adam(),
            32,
            Some(-0.42f32),
            0.8,
        ),
        (
            vec![784, 200, 100, 10],
            OutputHead::Softmax,
            Loss::CrossEntropy,
            OptimizerConfig::adam(),
            64,
            Some(0.0f32),
            0.4,
        ),
    ];
    let dense_configs = configs
        .into_iter()
        .map(|(a, b, c, d, e)| (a, b, c, d, e, None, 0.8));
    for (sizes, head, loss, config, max_batch, background, keep) in
        dense_configs.chain(sparse_configs)
    {
        let label = format!("{sizes:?} background {background:?} keep {keep}");
        let hidden_sparse = keep < 0.5;
        let mut s = setup(sizes, head, loss, config, max_batch);
        s.opts.keep_prob.iter_mut().for_each(|k| *k = keep);
        if let Some(c) = background {
            s.opts.l2 = 0.0;
            for (i, v) in s.x.iter_mut().enumerate() {
                if (i * 7919) % 10 < 8 {
                    *v = c;
                }
            }
        }
        let mut preds = vec![0u8; s.max_batch];
        let partial = s.max_batch / 2 + 1;
        // Warm-up: first use of every shape.
        s.step(s.max_batch, 0);
        s.step(partial, 1);
        s.inference(s.max_batch, &mut preds);

        let region = Region::new(GLOBAL);
        for step in 2..22 {
            let batch = if step % 3 == 0 { partial } else { s.max_batch };
            s.step(batch, step);
        }
        assert_eq!(
            s.ws.layer_input_was_sparse(1),
            hidden_sparse,
            "{label}: hidden path in training"
        );
        s.inference(partial, &mut preds);
        assert!(
            !s.ws.layer_input_was_sparse(1),
            "{label}: hidden path in evaluation"
        );
        assert_eq!(
            s.ws.last_input_was_sparse(),
            background.is_some(),
            "{label}: path"
        );
        let stats = region.change();
        assert_eq!(
            (stats.allocations, stats.reallocations, stats.deallocations),
            (0, 0, 0),
            "{label}: {stats:?}"
        );
    }
}
