//! # mnist-core
//!
//! The engine of mnist-rs: fully connected networks on [faer] matrices, their gradients,
//! optimizers and learning-rate schedules, and model files in safetensors. No datasets,
//! configs or files other than models: those live in `mnist-dataset` and `mnist-train`.
//!
//! ## The model
//!
//! A [`Network`] is a stack of [`Dense`] layers `z = x W^T + b`. Every hidden layer is followed
//! by an [`Activation`], the last by an [`OutputHead`] (softmax or sigmoid). Its shape is an
//! [`Architecture`]: `sizes = [784, 100, 10]` is 784 inputs, one hidden layer of 100, 10 classes.
//!
//! ## Data layout
//!
//! * A batch is a **row-major** `batch x inputs` slice (`x[i * inputs + j]` is feature `j` of
//!   example `i`), as the dataset crate provides; labels are one `u8` class per example.
//! * Weights are row-major `[outputs, inputs]` (PyTorch `nn.Linear` layout), biases `[outputs]`.
//! * Each layer computes its batch with faer's GEMM (`faer::linalg::matmul::matmul`), one
//!   call per thread over its chunks of rows (per chunk where faer's kernels would round a
//!   row differently with another number of rows) (a layer on sparse kernels when its input is mostly
//!   background: MNIST pixels, or a hidden layer under dropout), into a preallocated [`Workspace`]; a training step ([`compute_gradients`] +
//!   [`Optimizer::step`], or [`train_step`]) performs no heap allocation once the workspace,
//!   [`Gradients`] and optimizer exist and each layer has run once on each path it takes: a
//!   layer's first sparse batch sizes its compressed-input and panel buffers (for the largest
//!   batch). Inputs declared fixed
//!   ([`Workspace::set_input_fixed`]) add one kept compression per slice on its first pass.
//!   [`train_step_rows`] allocates its gather buffer (for the largest batch) the first time a
//!   batch goes dense.
//!
//! ## Reproducibility
//!
//! All randomness (initialisation, dropout masks) comes from a caller-owned
//! [`rand_chacha::ChaCha8Rng`] whose state can be saved as [`RngState`]. Per-example passes
//! run on chunks of rows fixed by the batch size (not by the thread count), one sequential
//! kernel per chunk (a dense forward product once per thread over its chunks, only where
//! faer's kernels give each row the same bits whatever the number of rows: x86-64 with AVX2
//! and FMA); reductions have fixed orders; other matrix products run in parallel only
//! where faer splits them by output tile (its parallel matrix-vector kernel, used for batches
//! of one, splits the inner sum and is avoided). So results are bit-identical for a given seed
//! whether `faer::Par::Seq` or `faer::Par::rayon(n)` is used. Wrap a run in
//! [`with_thread_pool`] so its parallel passes hand work between the pool's threads directly.
//! Optimizer state ([`OptimizerState`]) is plain serde data; schedules are pure functions of
//! `(epoch, step)`.
//!
//! ## Allocation
//!
//! With `Par::Seq`, a training step allocates nothing (tested with a counting allocator).
//! faer's matrix products allocate nothing for small shapes and, for larger ones on x86-64,
//! reuse a per-thread packing buffer that is allocated on the thread's first product: run one
//! warm-up step and the steady state is allocation-free. With `Par::rayon(n)` the thread pool
//! itself may allocate when it schedules work.
//!
//! ## Example: build a tiny network and take one training step
//!
//! ```
//! use mnist_core::{
//!     Activation, Architecture, BiasInit, Gradients, LayerInit, Loss, Network, Optimizer,
//!     OptimizerConfig, OutputHead, Schedule, TrainOptions, WeightInit, compute_gradients,
//! };
//! use faer::Par;
//! use rand::SeedableRng;
//! use rand_chacha::ChaCha8Rng;
//!
//! # fn main() -> Result<(), mnist_core::CoreError> {
//! let arch = Architecture::uniform(vec![4, 8, 3], Activation::Relu, OutputHead::Softmax)?;
//! let mut rng = ChaCha8Rng::seed_from_u64(42);
//! let init = LayerInit::new(WeightInit::HeNormal, BiasInit::Zero);
//! let mut net: Network<f32> = Network::new(&arch, &[init], &mut rng)?;
//!
//! let mut ws = net.workspace(2); // batches of up to 2 examples
//! let mut grads = Gradients::new(&arch);
//! let mut opt = Optimizer::new(OptimizerConfig::adam(), &net)?;
//! let opts = TrainOptions { l2: 1e-4, keep_prob: vec![0.9], ..TrainOptions::new(Loss::CrossEntropy) };
//! let schedule = Schedule::constant();
//!
//! let x = [0.1f32, 0.2, 0.3, 0.4, 0.9, 0.8, 0.7, 0.6]; // 2 examples x 4 features, row-major
//! let labels = [2u8, 0];
//! let loss = compute_gradients(&net, &mut ws, &mut grads, &x, &labels, 2, &opts, &mut rng, Par::Seq)?;
//! opt.step(&mut net, &grads, schedule.lr_at(1e-3, 0, 0), Par::Seq)?;
//! assert!(loss.is_finite());
//!
//! let predicted = net.predict(&x, 2, Par::Seq)?;
//! assert_eq!(predicted.len(), 2);
//! # Ok(())
//! # }
//! ```

mod activation;
mod aligned;
mod arch;
mod constraint;
mod dense;
pub mod dropout;
mod error;
mod float;
pub mod gradcheck;
pub mod init;
mod loss;
mod network;
pub mod optimizer;
mod preprocessing;
mod rows;
pub mod schedule;
pub mod serialize;
mod sparse;
mod train;
mod workspace;

pub use activation::{Activation, OutputHead, sigmoid, softmax_row};
pub use arch::{Architecture, LayerActivation, LayerSpec};
pub use constraint::apply_max_norm;
pub use dense::Dense;
pub use dropout::RngState;
pub use error::{ArchitectureError, CoreError, ModelFileError, ModelIoError};
pub use float::Float;
pub use init::{BiasInit, LayerInit, WeightInit};
pub use loss::Loss;
pub use network::{Network, Outputs, argmax};
pub use optimizer::{Optimizer, OptimizerConfig, OptimizerState};
pub use preprocessing::Preprocessing;
pub use rows::with_thread_pool;
pub use schedule::{Decay, Schedule, Unit, Warmup};
pub use serialize::{
    MAX_PARAMETER_FILE_BYTES, SavedModel, from_safetensors_bytes, load_model, read_parameter_file,
    safetensors_header, save_model, to_safetensors_bytes, with_sorted_header,
};
pub use sparse::{InputPath, SparseRows};
pub use train::{
    Evaluation, Gradients, LayerGradients, TrainOptions, compute_gradients, compute_loss, evaluate,
    step_par, train_step, train_step_rows,
};
pub use workspace::Workspace;

// Re-exported so downstream crates name the same versions.
pub use faer;
pub use rand_chacha;
