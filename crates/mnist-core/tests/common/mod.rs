//! Shared helpers for the integration tests: synthetic data and a minimal training loop.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // shared by several test crates; may panic like tests

use faer::Par;
use mnist_core::{
    Activation, Architecture, BiasInit, Gradients, LayerInit, Loss, Network, Optimizer,
    OptimizerConfig, OutputHead, Schedule, TrainOptions, WeightInit, Workspace, compute_gradients,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// `n` examples of `dim` features in `classes` Gaussian blobs (row-major), with labels.
pub fn blobs(n: usize, dim: usize, classes: usize, noise: f32, seed: u64) -> (Vec<f32>, Vec<u8>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let centers: Vec<f32> = (0..classes * dim)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let mut x = Vec::with_capacity(n * dim);
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let c = i % classes;
        y.push(c as u8);
        for j in 0..dim {
            let e: f32 = StandardNormal.sample(&mut rng);
            x.push(centers[c * dim + j] + noise * e);
        }
    }
    (x, y)
}

/// Everything a training run carries.
pub struct Run {
    pub net: Network<f32>,
    pub ws: Workspace<f32>,
    pub grads: Gradients<f32>,
    pub opt: Optimizer<f32>,
    pub rng: ChaCha8Rng,
    pub opts: TrainOptions,
    pub schedule: Schedule,
    pub base_lr: f64,
    pub step: u64,
}

pub fn mlp(sizes: Vec<usize>, seed: u64) -> Network<f32> {
    let hidden = vec![Activation::Relu; sizes.len() - 2];
    let arch = Architecture::new(sizes, hidden, OutputHead::Softmax).unwrap();
    let init = LayerInit::new(WeightInit::HeNormal, BiasInit::Zero);
    Network::new(&arch, &[init], &mut ChaCha8Rng::seed_from_u64(seed)).unwrap()
}

impl Run {
    pub fn new(
        net: Network<f32>,
        max_batch: usize,
        config: OptimizerConfig,
        opts: TrainOptions,
        seed: u64,
    ) -> Self {
        let ws = net.workspace(max_batch);
        let grads = Gradients::new(net.architecture());
        let opt = Optimizer::new(config, &net).unwrap();
        Self {
            net,
            ws,
            grads,
            opt,
            rng: ChaCha8Rng::seed_from_u64(seed),
            opts,
            schedule: Schedule::constant(),
            base_lr: 0.05,
            step: 0,
        }
    }

    /// One step on the batch starting at example `start` (wrapping is the caller's business).
    pub fn step(
        &mut self,
        x: &[f32],
        y: &[u8],
        start: usize,
        batch: usize,
        epoch: u64,
        par: Par,
    ) -> f64 {
        let dim = self.net.inputs();
        let xb = &x[start * dim..(start + batch) * dim];
        let yb = &y[start..start + batch];
        let loss = compute_gradients(
            &self.net,
            &mut self.ws,
            &mut self.grads,
            xb,
            yb,
            batch,
            &self.opts,
            &mut self.rng,
            par,
        )
        .unwrap();
        let lr = self.schedule.lr_at(self.base_lr, epoch, self.step);
        self.opt.step(&mut self.net, &self.grads, lr, par).unwrap();
        self.step += 1;
        loss
    }

    /// `epochs` passes over `(x, y)` in batches of `batch` (last batch partial).
    pub fn epochs(&mut self, x: &[f32], y: &[u8], batch: usize, epochs: u64, par: Par) -> f64 {
        let mut last = 0.0;
        for epoch in 0..epochs {
            let mut start = 0;
            while start < y.len() {
                let b = batch.min(y.len() - start);
                last = self.step(x, y, start, b, epoch, par);
                start += b;
            }
        }
        last
    }
}

pub fn ce() -> TrainOptions {
    TrainOptions::new(Loss::CrossEntropy)
}
