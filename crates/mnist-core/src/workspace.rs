//! Preallocated buffers for forward and backward passes.

use crate::rows::chunk_count;
use crate::sparse::{InputPath, SparseInput};
use crate::{Architecture, Float};

/// Per-layer activations, derivatives and deltas for batches of up to `max_batch` examples.
///
/// Build it once (it is the only allocation of a training loop besides the network, the
/// gradients and the optimizer state) and reuse it for every step; any batch from 1 to
/// `max_batch` works, e.g. the last partial batch of an epoch. All buffers are row-major
/// `batch x width`; only the first `batch * width` values of each are used.
#[derive(Debug, Clone)]
pub struct Workspace<T> {
    max_batch: usize,
    sizes: Vec<usize>,
    pub(crate) layers: Vec<LayerBuffers<T>>,
    pub(crate) logits: Vec<T>,
    /// The first layer's compressed input and panels (allocated on first sparse use).
    pub(crate) sparse: SparseInput<T>,
    /// The same for the inputs of layers `1..`: sparse when at most 30% of a batch is non-zero
    /// (typical in training under dropout; see [`crate::sparse::MAX_HIDDEN_DENSITY`]).
    pub(crate) hidden_sparse: Vec<SparseInput<T>>,
    /// Per example: its loss, summed in row order after the rows are done in parallel.
    pub(crate) row_loss: Vec<f64>,
    /// Set by [`crate::train_step_rows`] when it has already assembled the first layer's
    /// sparse input from a [`crate::SparseRows`]: the next forward pass takes it as it is.
    pub(crate) first_input_prepared: bool,
    /// [`crate::train_step_rows`]'s gathered batch when it goes dense (allocated then).
    pub(crate) gathered: Vec<T>,
    /// One slot per chunk of rows for the partial column sums of the bias gradients, then the
    /// partial weight gradients of small dense layers (see `crate::train::SMALL_WEIGHT_GRADIENT`).
    pub(crate) partial_grads: Vec<T>,
    input_path: InputPath,
}

#[derive(Debug, Clone)]
pub(crate) struct LayerBuffers<T> {
    /// Hidden: the activation (after dropout). Output layer: the head's output.
    pub(crate) out: Vec<T>,
    /// Hidden: `f'(z)` times the dropout mask. Empty for the output layer.
    pub(crate) deriv: Vec<T>,
    /// `d loss / d z` for this layer.
    pub(crate) delta: Vec<T>,
}

/// Values of [`Workspace::partial_grads`]: a slot per chunk of the largest batch for the
/// largest layer that takes them, or the widest layer's outputs (none when that batch is one
/// chunk).
fn partial_grads_len(arch: &Architecture, max_batch: usize) -> usize {
    let chunks = chunk_count(max_batch);
    if chunks < 2 {
        return 0;
    }
    let largest = arch
        .sizes
        .windows(2)
        .map(|p| p[0] * p[1])
        .filter(|&w| crate::train::takes_partial_grads(w))
        .max()
        .unwrap_or(0);
    // The same slots serve the bias gradients' column sums (one value per output) first.
    let widest = arch.sizes.iter().skip(1).copied().max().unwrap_or(0);
    chunks * largest.max(widest)
}

impl<T: Float> Workspace<T> {
    /// Buffers for `arch` and batches of at most `max_batch` (clamped to at least 1).
    pub fn new(arch: &Architecture, max_batch: usize) -> Self {
        let max_batch = max_batch.max(1);
        let zero = T::from_f64(0.0);
        let n = arch.num_layers();
        let layers = arch
            .sizes
            .iter()
            .skip(1)
            .enumerate()
            .map(|(l, &w)| LayerBuffers {
                out: vec![zero; max_batch * w],
                deriv: if l + 1 < n {
                    vec![zero; max_batch * w]
                } else {
                    Vec::new()
                },
                delta: vec![zero; max_batch * w],
            })
            .collect();
        Self {
            max_batch,
            sizes: arch.sizes.clone(),
            layers,
            logits: vec![zero; max_batch * arch.outputs()],
            sparse: SparseInput::default(),
            hidden_sparse: (1..n).map(|_| SparseInput::for_hidden_layer()).collect(),
            row_loss: vec![0.0; max_batch],
            first_input_prepared: false,
            gathered: Vec::new(),
            partial_grads: vec![zero; partial_grads_len(arch, max_batch)],
            input_path: InputPath::Auto,
        }
    }

    /// Largest batch these buffers hold.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// How the first layer treats its input from now on (default [`InputPath::Auto`]: sparse
    /// kernels when the batch is mostly background, one dense GEMM otherwise; see
    /// [`InputPath`] for the hidden layers). Both paths give
    /// the same results up to float rounding; forcing one is for tests and benchmarks.
    pub fn set_input_path(&mut self, path: InputPath) {
        self.input_path = path;
    }

    /// Declares whether the inputs of the passes from now on stay as they are: slices of
    /// datasets, unchanged, as in full-batch gradient descent, fixed-order mini-batches or the
    /// evaluation of the same splits every epoch. When set, the first layer's compressed form
    /// of each input (recognized by the slice's address, length, batch size and
    /// [`InputPath`]) is built on its first pass and kept for the next passes over the same
    /// slice, up to 256 MiB per workspace (the 60,000 MNIST training images take about 120 MB
    /// in `f32`); beyond that, an input is compressed again
    /// whenever another came in between. Writing new values into a buffer while this is set
    /// would reuse a stale compression, and so would a new buffer of the same length that the
    /// allocator happens to place at a freed one's address: leave it unset (the default) for
    /// anything but inputs that stay borrowed immutably for the whole run. Each call forgets
    /// the compressions kept so far; cloning the workspace copies them.
    pub fn set_input_fixed(&mut self, fixed: bool) {
        self.sparse.set_fixed(fixed);
    }

    /// The current [`InputPath`].
    pub fn input_path(&self) -> InputPath {
        self.input_path
    }

    /// Whether the last forward pass ran the first layer on the sparse kernels.
    pub fn last_input_was_sparse(&self) -> bool {
        self.sparse.background.is_some()
    }

    /// Whether the last forward pass ran layer `l` on the sparse kernels (layer 0: as
    /// [`Self::last_input_was_sparse`]; a hidden layer of at least 2^14 weights goes sparse
    /// when at most 30% of its input batch is non-zero, which dropout makes typical in
    /// training, under [`InputPath::Auto`] and [`InputPath::Sparse`] alike).
    pub fn layer_input_was_sparse(&self, l: usize) -> bool {
        match l.checked_sub(1) {
            None => self.last_input_was_sparse(),
            Some(h) => self
                .hidden_sparse
                .get(h)
                .is_some_and(|s| s.background.is_some()),
        }
    }

    /// Whether the buffers were built for an architecture with these layer widths.
    pub fn fits(&self, arch: &Architecture) -> bool {
        self.sizes == arch.sizes
    }
}
