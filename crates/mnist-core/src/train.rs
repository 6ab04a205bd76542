//! Training-mode forward + loss + backpropagation into preallocated gradients, and evaluation.

use std::sync::atomic::{AtomicUsize, Ordering};

use faer::utils::thread::parallelism_degree;
use faer::{Accum, MatMut, MatRef, Par};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::dense::{gemm, gemm_rows_are_independent};
use crate::network::TrainPass;
use crate::optimizer::check_learning_rate;
use crate::rows::{
    ChunkSlots, Rows, RowsMut, chunk_count, column_sums, column_sums_by_chunks, for_chunks,
    for_chunks_with_product, join_raw,
};
use crate::sparse::{MIN_BATCH, SparseInput, SparseRows};
use crate::workspace::LayerBuffers;
use crate::{
    Architecture, CoreError, Float, Loss, Network, Optimizer, OptimizerConfig, OutputHead,
    Workspace,
};

/// Batches below this size run single-threaded: thread hand-offs would cost more than they save.
const SMALL_BATCH: usize = 8;

/// The parallelism for every pass of a step on `batch` examples: one thread for batches below
/// 8 rows, else `par`. [`compute_gradients`] applies it itself; pass its result to
/// [`Optimizer::step`] and [`crate::apply_max_norm`] too, since waking a second thread for each
/// single-example step costs more than the whole update (results are the same either way).
pub fn step_par(batch: usize, par: Par) -> Par {
    if batch < SMALL_BATCH { Par::Seq } else { par }
}

/// What a training step computes besides the plain forward pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainOptions {
    /// The data loss.
    pub loss: Loss,
    /// L2 coefficient `lambda` on the weights only (not biases): the loss gains
    /// `lambda * sum ||W||^2` over all layers and each trainable weight's gradient `2 lambda W`.
    #[serde(default)]
    pub l2: f64,
    /// Inverted-dropout keep probability per hidden layer, in `(0, 1]`; empty = no dropout.
    #[serde(default)]
    pub keep_prob: Vec<f64>,
    /// Per-layer freezing; empty = nothing frozen. A frozen layer gets no gradient and is never
    /// updated; deltas still flow through it to trainable layers below.
    #[serde(default)]
    pub frozen: Vec<bool>,
    /// Label smoothing `eps` in `[0, 1)`: training targets become
    /// `(1 - eps) one_hot + eps / classes`. Evaluation losses stay against the hard labels.
    #[serde(default)]
    pub label_smoothing: f64,
}

impl TrainOptions {
    /// Options with the given loss and no regularisation or freezing.
    pub fn new(loss: Loss) -> Self {
        Self {
            loss,
            l2: 0.0,
            keep_prob: Vec::new(),
            frozen: Vec::new(),
            label_smoothing: 0.0,
        }
    }

    /// Checks the options against an architecture.
    pub fn validate(&self, arch: &Architecture) -> Result<(), CoreError> {
        let bad = |m: String| Err(CoreError::BadOptions(m));
        if !self.l2.is_finite() || self.l2 < 0.0 {
            return bad(format!("l2 must be finite and >= 0, got {}", self.l2));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad(format!(
                "label_smoothing must be in [0, 1), got {}",
                self.label_smoothing
            ));
        }
        let hidden = arch.num_hidden();
        if !self.keep_prob.is_empty() && self.keep_prob.len() != hidden {
            return bad(format!(
                "keep_prob has {} entries, the network has {hidden} hidden layer(s); give one per hidden layer or none",
                self.keep_prob.len()
            ));
        }
        if let Some(p) = self.keep_prob.iter().find(|p| !(**p > 0.0 && **p <= 1.0)) {
            return bad(format!("keep_prob must be in (0, 1], got {p}"));
        }
        let layers = arch.num_layers();
        if !self.frozen.is_empty() && self.frozen.len() != layers {
            return bad(format!(
                "frozen has {} entries, the network has {layers} layer(s); give one per layer or none",
                self.frozen.len()
            ));
        }
        Ok(())
    }

    /// Whether layer `l` is frozen.
    pub fn is_frozen(&self, l: usize) -> bool {
        self.frozen.get(l).copied().unwrap_or(false)
    }
}

/// Gradient buffers, shaped like the network's parameters (row-major `[out, in]` weights).
#[derive(Debug, Clone, PartialEq)]
pub struct Gradients<T> {
    sizes: Vec<usize>,
    layers: Vec<LayerGradients<T>>,
}

/// One layer's gradients.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerGradients<T> {
    weight: Vec<T>,
    bias: Vec<T>,
    active: bool,
}

impl<T> LayerGradients<T> {
    /// `d loss / d W`, row-major `[out, in]`.
    pub fn weight(&self) -> &[T] {
        &self.weight
    }

    /// `d loss / d b`.
    pub fn bias(&self) -> &[T] {
        &self.bias
    }

    /// Mutable weight gradient (e.g. for clipping); the length is fixed.
    pub fn weight_mut(&mut self) -> &mut [T] {
        &mut self.weight
    }

    /// Mutable bias gradient.
    pub fn bias_mut(&mut self) -> &mut [T] {
        &mut self.bias
    }

    /// `false` when the last [`compute_gradients`] skipped the layer (frozen): the buffers then
    /// hold stale values and optimizers leave the layer untouched.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Marks the layer as carrying a gradient (or not) for the next optimizer step.
    pub fn set_active(&mut self, active: bool) {
        self.active = active;
    }
}

impl<T: Float> Gradients<T> {
    /// Zeroed, inactive gradients for `arch`.
    pub fn new(arch: &Architecture) -> Self {
        let zero = T::from_f64(0.0);
        let layers = arch
            .layers()
            .map(|s| LayerGradients {
                weight: vec![zero; s.inputs * s.outputs],
                bias: vec![zero; s.outputs],
                active: false,
            })
            .collect();
        Self {
            sizes: arch.sizes.clone(),
            layers,
        }
    }

    /// Per-layer gradients.
    pub fn layers(&self) -> &[LayerGradients<T>] {
        &self.layers
    }

    /// Mutable per-layer gradients (clipping, custom terms, tests).
    pub fn layers_mut(&mut self) -> &mut [LayerGradients<T>] {
        &mut self.layers
    }

    /// Sum of squares of every active gradient entry (for monitoring or norm clipping), in a
    /// fixed order.
    pub fn squared_norm(&self) -> f64 {
        self.layers
            .iter()
            .filter(|l| l.active)
            .flat_map(|l| l.weight.iter().chain(&l.bias))
            .map(|v| v.to_f64() * v.to_f64())
            .sum()
    }

    /// Whether the buffers were built for these layer widths.
    pub fn fits(&self, arch: &Architecture) -> bool {
        self.sizes == arch.sizes
    }
}

/// Training-mode forward pass, loss and backpropagation for one batch.
///
/// * `x`: row-major `batch x inputs`; `labels`: one class per example, `< outputs`.
/// * Dropout masks are drawn from `rng` (nothing is drawn when every keep probability is 1).
/// * Writes the gradient of the returned loss into `grads` (frozen layers are marked inactive).
///
/// Returns the batch loss: the mean data loss **plus** the L2 term `lambda * sum ||W||^2`.
///
/// Does not allocate once warm. Per-example passes run on row chunks fixed by the batch size
/// (see `rows.rs`), every reduction has a fixed order and the remaining matrix products are
/// only parallelised where faer splits by output tile, so the results are bit-identical for
/// any `par`.
#[allow(clippy::too_many_arguments)]
pub fn compute_gradients<T: Float>(
    net: &Network<T>,
    ws: &mut Workspace<T>,
    grads: &mut Gradients<T>,
    x: &[T],
    labels: &[u8],
    batch: usize,
    opts: &TrainOptions,
    rng: &mut ChaCha8Rng,
    par: Par,
) -> Result<f64, CoreError> {
    let first_active = check_train_inputs(net, ws, grads, x, labels, batch, opts)?;
    Ok(gradients_of_checked(
        net,
        ws,
        grads,
        x,
        labels,
        batch,
        opts,
        rng,
        par,
        first_active,
        false,
    ))
}

/// [`compute_gradients`] once its inputs are checked (`first_active`: the lowest trainable
/// layer). `x` is unused when `train_step_rows` has prepared the first layer's input.
///
/// `update_follows`: the optimizer step comes right after, from [`step_if_finite`]. Then a
/// layer whose input ran sparse keeps its weight gradient in panels, where the optimizer
/// applies it (see `SparseInput::weight_gradient`), and its slot in `grads` is left as it
/// was; not under L2, whose term is added to the rows.
#[allow(clippy::too_many_arguments)]
fn gradients_of_checked<T: Float>(
    net: &Network<T>,
    ws: &mut Workspace<T>,
    grads: &mut Gradients<T>,
    x: &[T],
    labels: &[u8],
    batch: usize,
    opts: &TrainOptions,
    rng: &mut ChaCha8Rng,
    par: Par,
    first_active: Option<usize>,
    update_follows: bool,
) -> f64 {
    // A few examples are not worth waking other threads for (results are the same either way).
    let par = step_par(batch, par);
    let arch = net.architecture();
    let n = net.num_layers();
    let first_needed = first_active.unwrap_or(n);
    net.forward_unchecked(
        ws,
        x,
        batch,
        Some(TrainPass {
            keep_prob: &opts.keep_prob,
            first_needed,
            rng,
        }),
        par,
    );

    let width = net.outputs();
    let len = batch * width;
    let Workspace {
        layers: bufs,
        logits,
        sparse,
        hidden_sparse,
        row_loss,
        partial_grads,
        ..
    } = ws;
    let data_loss = match bufs.last_mut() {
        Some(last) => {
            let grad = first_active.is_some().then_some(&mut last.delta[..len]);
            data_loss_by_rows(
                opts,
                arch.output,
                &logits[..len],
                &last.out[..len],
                labels,
                grad,
                row_loss,
                par,
            )
        }
        None => 0.0,
    };

    for g in grads.layers.iter_mut() {
        g.active = false;
    }
    // A gradient left in panels by an earlier pass is never applied by a later step.
    sparse.forget_panel_gradient();
    hidden_sparse
        .iter_mut()
        .for_each(SparseInput::forget_panel_gradient);
    let keep_in_panels = update_follows && opts.l2 == 0.0;
    for l in (first_needed..n).rev() {
        let layer = &net.layers()[l];
        let (inp, out) = (layer.inputs(), layer.outputs());
        let (below, rest) = bufs.split_at_mut(l);
        let Some(cur) = rest.first() else { break };
        let delta = &cur.delta[..batch * out];
        let prev = l.checked_sub(1).and_then(|p| below.get_mut(p));
        if !opts.is_frozen(l)
            && let Some(g) = grads.layers.get_mut(l)
        {
            let input: &[T] = match &prev {
                Some(p) => &p.out[..batch * inp],
                None => x,
            };
            // db = column sums of delta: each chunk's rows in order, then the chunks in order.
            column_sums_by_chunks(delta, out, batch, &mut g.bias, partial_grads, par);
            if batch == 1 {
                // An outer product: no GEMM set-up for single-example steps.
                for (grow, &d) in g.weight.chunks_exact_mut(inp).zip(delta) {
                    grow.iter_mut()
                        .zip(input)
                        .for_each(|(gw, &xv)| *gw = d * xv);
                }
            } else if let Some(sp) = match l.checked_sub(1) {
                None => Some(&mut *sparse),
                Some(h) => hidden_sparse.get_mut(h),
            }
            .filter(|sp| sp.background.is_some())
            {
                // dW = delta^T X as a scatter-add of the non-zero inputs (+ rank-1 term).
                sp.weight_gradient(delta, &g.bias, inp, &mut g.weight, keep_in_panels, par);
            } else {
                let shape = (batch, out, inp);
                dense_weight_gradient(delta, input, shape, &mut g.weight, partial_grads, par);
            }
            g.active = true;
        }
        if l > first_needed
            && let Some(p) = prev
        {
            propagate_delta(layer.weight(), delta, p, batch, par);
        }
    }

    let l2_sum = if opts.l2 > 0.0 {
        l2_pass(net, opts, Some(grads))
    } else {
        0.0
    };
    data_loss + opts.l2 * l2_sum
}

/// Dense layers with fewer weights than this sum their weight gradient from one partial
/// product per chunk of rows (see [`dense_weight_gradient`]).
const SMALL_WEIGHT_GRADIENT: usize = 1 << 14;

/// Whether a dense layer of `weights` weights sums its weight gradient chunk by chunk.
pub(crate) fn takes_partial_grads(weights: usize) -> bool {
    weights < SMALL_WEIGHT_GRADIENT
}

/// `grad = delta^T X` (`[out, in]`) of a dense layer over a batch of `batch` rows.
///
/// A small layer on a batch of several chunks (two-layer-sigmoid's 300 x 10 output layer)
/// sums, chunk by chunk in order, each chunk's `delta_c^T X_c`, computed into its slot of
/// `partials` on the thread that made the chunk's rows: one GEMM over the batch spent its
/// time fetching the other core's rows, and the partials are small. The chunks depend on the
/// batch size only, so the sum does not depend on the thread count. Any other layer (or
/// `partials` short of the slots, which the workspace never is) takes one GEMM.
fn dense_weight_gradient<T: Float>(
    delta: &[T],
    input: &[T],
    (batch, out, inp): (usize, usize, usize),
    grad: &mut [T],
    partials: &mut [T],
    par: Par,
) {
    let size = out * inp;
    let chunks = chunk_count(batch);
    let chunked = (takes_partial_grads(size) && chunks > 1)
        .then(|| partials.get_mut(..chunks * size))
        .flatten();
    let (Some(partials), Some(delta), Some(input)) =
        (chunked, delta.get(..batch * out), input.get(..batch * inp))
    else {
        delta_t_x(grad, delta, input, (batch, out, inp), par);
        return;
    };
    let parts = (
        Rows::new(delta, out),
        Rows::new(input, inp),
        ChunkSlots::new(partials, size, batch),
    );
    for_chunks(batch, parts, par, &|_, rows, (d, x, mut slot), _| {
        delta_t_x(
            slot.first(),
            d.data,
            x.data,
            (rows.len(), out, inp),
            Par::Seq,
        );
    });
    column_sums(partials, size, grad, par);
}

/// `grad = delta^T X`: `[out, rows] x [rows, in]`. Where faer computes each output the same
/// way whatever the outputs in the call, and the batch has at least [`MIN_SPLIT_GRAD_BATCH`]
/// rows, the columns of `grad` are split between the threads of `par` ([`grad_columns`]: one
/// sequential GEMM each, joined by [`join_raw`]) instead of taking faer's parallel GEMM,
/// whose threads wait for each other through rayon.
fn delta_t_x<T: Float>(
    grad: &mut [T],
    delta: &[T],
    input: &[T],
    (rows, out, inp): (usize, usize, usize),
    par: Par,
) {
    let delta = MatRef::from_row_major_slice(delta, rows, out);
    let input = MatRef::from_row_major_slice(input, rows, inp);
    let grad = MatMut::from_row_major_slice_mut(grad, out, inp);
    if gemm_rows_are_independent() && rows >= MIN_SPLIT_GRAD_BATCH {
        grad_columns(grad, delta, input, par);
    } else {
        gemm(grad, Accum::Replace, delta.transpose(), input, par);
    }
}

/// Fewest rows of a batch for [`grad_columns`]. On fewer rows (an inner dimension below 15 in
/// a search over shapes), faer's kernel for some columns gives an exact zero a different sign
/// than the whole product does; from 64 rows up none differed (see the test).
const MIN_SPLIT_GRAD_BATCH: usize = 64;

/// Fewest columns of a weight gradient per thread of [`grad_columns`].
const MIN_SPLIT_GRAD_COLUMNS: usize = 64;

/// `grad = delta^T X` (`X`'s columns are `grad`'s columns), the columns split between threads:
/// each reads only its columns of `X`, which for 1,000-row batches is larger than a core's L2.
fn grad_columns<T: Float>(
    grad: MatMut<'_, T>,
    delta: MatRef<'_, T>,
    input: MatRef<'_, T>,
    par: Par,
) {
    let inp = input.ncols();
    if parallelism_degree(par) > 1 && inp >= 2 * MIN_SPLIT_GRAD_COLUMNS {
        let half = inp / 2;
        let (ga, gb) = grad.split_at_col_mut(half);
        let (xa, xb) = input.split_at_col(half);
        join_raw(
            |p| grad_columns(ga, delta, xa, p),
            |p| grad_columns(gb, delta, xb, p),
            par,
        );
        return;
    }
    gemm(grad, Accum::Replace, delta.transpose(), input, Par::Seq);
}

/// One optimisation step: the gradients (as [`compute_gradients`]), then the update (as
/// [`Optimizer::step`]) with learning rate `lr`. Returns the batch loss (data + L2). Does not
/// allocate once warm (the first step of a layer on sparse input converts its optimizer
/// moments to the panel layout once).
///
/// A non-finite loss leaves the parameters (and the optimizer's step count) untouched, so the
/// caller can stop with the last finite model.
///
/// A single example under plain SGD takes a fused path: each layer's weights are updated as
/// its delta is backpropagated (after the delta below it was computed from the old weights),
/// so no gradient buffer is written or read back, and only the rows of units with a non-zero
/// delta are touched (the others would change by exactly zero). The parameters come out the
/// same as from [`compute_gradients`] + [`Optimizer::step`] (up to the sign of a weight or
/// bias that is exactly zero, and except that a non-finite input value leaves the rows of
/// zero-delta units alone instead of filling them with NaN); `grads` is then left as it was.
///
/// Without L2, the weight gradient of a layer whose input ran sparse is applied where the
/// backward pass summed it (in the panels of `W^T`, on the thread that summed each panel)
/// and is not written to `grads`: that layer's weight slot is left as it was (its bias slot
/// and the other layers' slots hold this step's gradients). The parameters are the same bit
/// for bit (the update is element-wise); only where it runs changes. To read or modify
/// every gradient before the update, call [`compute_gradients`] and [`Optimizer::step`].
#[allow(clippy::too_many_arguments)]
pub fn train_step<T: Float>(
    net: &mut Network<T>,
    ws: &mut Workspace<T>,
    grads: &mut Gradients<T>,
    optimizer: &mut Optimizer<T>,
    x: &[T],
    labels: &[u8],
    batch: usize,
    opts: &TrainOptions,
    lr: f64,
    rng: &mut ChaCha8Rng,
    par: Par,
) -> Result<f64, CoreError> {
    // All layers frozen: nothing to fuse, the general path returns the loss.
    if batch == 1
        && *optimizer.config() == OptimizerConfig::Sgd
        && let Some(first_needed) = check_train_inputs(net, ws, grads, x, labels, batch, opts)?
    {
        check_learning_rate(lr)?;
        let loss = single_example_sgd(net, ws, x, labels, opts, lr, rng, first_needed);
        if loss.is_finite() {
            optimizer.count_step();
        }
        return Ok(loss);
    }
    let first_active = check_train_inputs(net, ws, grads, x, labels, batch, opts)?;
    // Checked before the gradients: a sparse layer's weight gradient lives only until the step.
    check_learning_rate(lr)?;
    let loss = gradients_of_checked(
        net,
        ws,
        grads,
        x,
        labels,
        batch,
        opts,
        rng,
        par,
        first_active,
        true,
    );
    step_if_finite(net, ws, grads, optimizer, loss, lr, batch, par)?;
    Ok(loss)
}

/// [`train_step`] on rows `indices` of a set, with labels `labels` (one per index): the
/// first layer's sparse input is assembled from `rows` (the set compressed once,
/// [`SparseRows::new`]) instead of gathering the dense rows and compressing them. Under
/// [`crate::InputPath::Auto`] the results are those of [`train_step`] on the gathered rows, bit for
/// bit; under a forced [`crate::InputPath::Sparse`] they may differ by float rounding when a batch
/// would have chosen another background value than the set's.
///
/// A batch that goes dense (forced by [`Workspace::set_input_path`], under 8 rows, too
/// dense, or whose own background value would differ from the set's) is gathered from
/// `dense` (the same set, row-major) into a buffer of the workspace (allocated for
/// `max_batch` rows the first time) and takes [`train_step`]; that buffer is never kept
/// compressed, even in a workspace with fixed inputs.
///
/// # Errors
/// As [`train_step`]; [`CoreError::BadRows`] when `rows` or `dense` do not hold rows of the
/// network's inputs, or an index is past the last row.
#[allow(clippy::too_many_arguments)]
pub fn train_step_rows<T: Float>(
    net: &mut Network<T>,
    ws: &mut Workspace<T>,
    grads: &mut Gradients<T>,
    optimizer: &mut Optimizer<T>,
    rows: &SparseRows<T>,
    dense: &[T],
    indices: &[usize],
    labels: &[u8],
    opts: &TrainOptions,
    lr: f64,
    rng: &mut ChaCha8Rng,
    par: Par,
) -> Result<f64, CoreError> {
    let (inputs, batch) = (net.inputs(), indices.len());
    let set = rows.rows();
    if rows.inputs() != inputs {
        return Err(CoreError::BadRows(format!(
            "the compressed rows hold {} inputs, the network takes {inputs}",
            rows.inputs()
        )));
    }
    if dense.len() != set * inputs {
        return Err(CoreError::BadRows(format!(
            "the dense rows hold {} values, not {set} rows x {inputs} inputs; build both from the same set",
            dense.len()
        )));
    }
    if let Some((k, &i)) = indices.iter().enumerate().find(|&(_, &i)| i >= set) {
        return Err(CoreError::BadRows(format!(
            "index {i} (position {k}) is past the set's {set} rows"
        )));
    }
    net.check_batch_size(ws, batch)?;
    let first_active = check_step_inputs(net, grads, labels, batch, opts)?;
    check_learning_rate(lr)?;
    // Batches of one keep the fused SGD path, which reads the dense row. A batch whose first
    // value differs from a non-zero background of the set could choose another background
    // when gathered (0 or that value), so it is gathered.
    let zero = T::from_f64(0.0);
    let background = rows.background();
    let first_value = indices
        .first()
        .and_then(|&i| dense.get(i * inputs))
        .copied();
    let same_background = background == zero || first_value == Some(background);
    let sparse = batch >= MIN_BATCH
        && same_background
        && ws.sparse.prepare_rows(
            rows,
            indices,
            ws.max_batch(),
            ws.input_path(),
            step_par(batch, par),
        );
    if !sparse {
        let mut x = std::mem::take(&mut ws.gathered);
        x.clear();
        x.reserve(ws.max_batch() * inputs);
        for &i in indices {
            x.extend_from_slice(&dense[i * inputs..(i + 1) * inputs]);
        }
        // The buffer keeps its address while its rows change: never look it up among kept
        // inputs.
        ws.sparse.next_input_transient = true;
        let loss = train_step(
            net, ws, grads, optimizer, &x, labels, batch, opts, lr, rng, par,
        );
        ws.sparse.next_input_transient = false;
        ws.gathered = x;
        return loss;
    }
    ws.first_input_prepared = true;
    let loss = gradients_of_checked(
        net,
        ws,
        grads,
        &[],
        labels,
        batch,
        opts,
        rng,
        par,
        first_active,
        true,
    );
    ws.first_input_prepared = false;
    step_if_finite(net, ws, grads, optimizer, loss, lr, batch, par)?;
    Ok(loss)
}

/// The optimizer step of [`train_step`] after its gradients: taken only for a finite `loss`,
/// writing the new weights into the panels of layers whose last pass ran sparse.
#[allow(clippy::too_many_arguments)]
fn step_if_finite<T: Float>(
    net: &mut Network<T>,
    ws: &mut Workspace<T>,
    grads: &Gradients<T>,
    optimizer: &mut Optimizer<T>,
    loss: f64,
    lr: f64,
    batch: usize,
    par: Par,
) -> Result<(), CoreError> {
    if loss.is_finite() {
        optimizer.step_with_panels(
            net,
            grads,
            lr,
            step_par(batch, par),
            Some((&mut ws.sparse, &mut ws.hidden_sparse)),
        )?;
    }
    Ok(())
}

/// The fused single-example SGD step of [`train_step`] (inputs checked by the caller;
/// `first_needed` is the lowest trainable layer).
#[allow(clippy::too_many_arguments)]
fn single_example_sgd<T: Float>(
    net: &mut Network<T>,
    ws: &mut Workspace<T>,
    x: &[T],
    labels: &[u8],
    opts: &TrainOptions,
    lr: f64,
    rng: &mut ChaCha8Rng,
    first_needed: usize,
) -> f64 {
    let n = net.num_layers();
    net.forward_unchecked(
        ws,
        x,
        1,
        Some(TrainPass {
            keep_prob: &opts.keep_prob,
            first_needed,
            rng,
        }),
        Par::Seq,
    );
    let head = net.architecture().output;
    let width = net.outputs();
    let Workspace {
        layers: bufs,
        logits,
        row_loss,
        ..
    } = ws;
    let Some(last) = bufs.last_mut() else {
        return f64::NAN;
    };
    let data_loss = data_loss_by_rows(
        opts,
        head,
        &logits[..width],
        &last.out[..width],
        labels,
        Some(&mut last.delta[..width]),
        row_loss,
        Par::Seq,
    );
    let l2_sum = if opts.l2 > 0.0 {
        l2_pass(net, opts, None)
    } else {
        0.0
    };
    let total = data_loss + opts.l2 * l2_sum;
    if !total.is_finite() {
        return total;
    }
    let lr_t = T::from_f64(lr);
    let two_lambda = T::from_f64(2.0 * opts.l2);
    let x = x.get(..net.inputs()).unwrap_or(x);
    for l in (first_needed..n).rev() {
        let (below, rest) = bufs.split_at_mut(l);
        let Some(cur) = rest.first() else { break };
        let Some(layer) = net.layers_mut().get_mut(l) else {
            break;
        };
        let (inp, out) = (layer.inputs(), layer.outputs());
        let delta = &cur.delta[..out];
        let mut prev = l.checked_sub(1).and_then(|p| below.get_mut(p));
        if l > first_needed
            && let Some(p) = prev.as_deref_mut()
        {
            // From the weights before the update.
            propagate_delta(layer.weight(), delta, p, 1, Par::Seq);
        }
        if opts.is_frozen(l) {
            continue;
        }
        let input: &[T] = match prev {
            Some(p) => &p.out[..inp],
            None => x,
        };
        let (w, b) = layer.params_mut();
        // The same arithmetic as the outer product, the L2 term and the SGD update, compiled
        // for the widest vectors; without L2 a unit whose delta is zero keeps its row.
        b.iter_mut().zip(delta).for_each(|(b, &d)| *b -= lr_t * d);
        pulp::Arch::new().dispatch(SgdRows {
            weight: w,
            delta,
            input,
            lr: lr_t,
            two_lambda,
            l2: opts.l2 > 0.0,
        });
    }
    total
}

/// A batch-1 step's weight update `W -= lr (delta x^T + 2 lambda W)`, fused with the outer
/// product, compiled for the CPU's widest vectors through pulp (the loop sits in `with_simd`
/// itself: a closure handed to `dispatch` may be compiled out of line for baseline x86-64).
struct SgdRows<'a, T> {
    weight: &'a mut [T],
    delta: &'a [T],
    input: &'a [T],
    lr: T,
    two_lambda: T,
    l2: bool,
}

impl<T: Float> pulp::WithSimd for SgdRows<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let zero = T::from_f64(0.0);
        let (lr_t, two_lambda) = (self.lr, self.two_lambda);
        let inp = self.input.len();
        for (wrow, &d) in self.weight.chunks_exact_mut(inp.max(1)).zip(self.delta) {
            if self.l2 {
                for (wv, &xv) in wrow.iter_mut().zip(self.input) {
                    let g = d * xv + two_lambda * *wv;
                    *wv -= lr_t * g;
                }
            } else if d != zero {
                // A contiguous pass over the row: skipping the runs of blank pixels was
                // slower (measured), as the branches cost more than the streaming.
                for (wv, &xv) in wrow.iter_mut().zip(self.input) {
                    *wv -= lr_t * (d * xv);
                }
            }
        }
    }
}

/// `delta_{l-1} = (delta_l W_l) * f'(z_{l-1}) * mask` (components below
/// [`Float::FLUSH_BELOW`] written as 0) into `below.delta` for a batch of
/// `batch` rows (`delta` row-major `batch x outputs` of the layer whose weight is `weight`),
/// chunk by chunk of rows. Where faer computes each row the same way whatever the rows in the
/// call (`gemm_rows_are_independent`), the product runs once per thread on its chunks' rows,
/// packing the weight once per thread instead of once per chunk.
fn propagate_delta<T: Float>(
    weight: MatRef<'_, T>,
    delta: &[T],
    below: &mut LayerBuffers<T>,
    batch: usize,
    par: Par,
) {
    let (out, inp) = (weight.nrows(), weight.ncols());
    let parts = (
        Rows::new(delta, out),
        RowsMut::new(&mut below.delta[..batch * inp], inp),
        Rows::new(&below.deriv[..batch * inp], inp),
    );
    for_chunks_with_product(
        batch,
        parts,
        par,
        gemm_rows_are_independent(),
        &|_, (d, pd, _), inner| {
            let rows = d.data.len() / out.max(1);
            gemm(
                MatMut::from_row_major_slice_mut(pd.data, rows, inp),
                Accum::Replace,
                MatRef::from_row_major_slice(d.data, rows, out),
                weight,
                inner,
            );
        },
        &|_, _, (_, pd, f), _| {
            // Flushed like the loss gradient (see `Float::flush_tiny`): below a saturated
            // sigmoid the product of two tiny factors would be subnormal again.
            pd.data
                .iter_mut()
                .zip(f.data)
                .for_each(|(d, &f)| *d = (*d * f).flush_tiny());
        },
    );
}

/// The mean data loss of a batch, and (when `grad` is given) its gradient with respect to the
/// logits into `grad`: each chunk of rows computes its rows' gradients and per-example losses
/// (into `row_loss`), which are then summed in row order, so the value does not depend on the
/// split. `logits` and `outputs` hold the batch's rows, `labels` one class per row.
#[allow(clippy::too_many_arguments)]
fn data_loss_by_rows<T: Float>(
    opts: &TrainOptions,
    head: OutputHead,
    logits: &[T],
    outputs: &[T],
    labels: &[u8],
    grad: Option<&mut [T]>,
    row_loss: &mut [f64],
    par: Par,
) -> f64 {
    let batch = labels.len();
    let width = logits.len() / batch.max(1);
    let (loss, eps) = (opts.loss, opts.label_smoothing);
    let Some(row_loss) = row_loss.get_mut(..batch) else {
        return f64::NAN;
    };
    if width == 0 {
        return 0.0;
    }
    let parts = (
        Rows::new(logits, width),
        Rows::new(outputs, width),
        Rows::new(labels, 1),
        grad.map(|g| RowsMut::new(g, width)),
        RowsMut::new(&mut *row_loss, 1),
    );
    for_chunks(batch, parts, par, &|_, _, (z, a, y, grad, rl), _| {
        if let Some(g) = grad {
            loss.gradient_rows(head, a.data, y.data, width, eps, batch, g.data);
        }
        for (((zr, ar), yr), l) in z
            .data
            .chunks_exact(width)
            .zip(a.data.chunks_exact(width))
            .zip(y.data.chunks_exact(1))
            .zip(rl.data.iter_mut())
        {
            *l = loss.sum_smoothed(head, zr, ar, yr, width, eps);
        }
    });
    row_loss.iter().sum::<f64>() / batch.max(1) as f64
}

/// `sum ||W||^2` over all layers: element by element through the trainable layers, one
/// subtotal per frozen layer, so every path reports the same loss. With `grads`, also adds
/// `2 lambda W` to each trainable layer's weight gradient in the same pass.
fn l2_pass<T: Float>(
    net: &Network<T>,
    opts: &TrainOptions,
    mut grads: Option<&mut Gradients<T>>,
) -> f64 {
    let two_lambda = T::from_f64(2.0 * opts.l2);
    let mut sum = 0.0f64;
    for (l, layer) in net.layers().iter().enumerate() {
        let w = layer.weight_slice();
        if opts.is_frozen(l) {
            sum += w.iter().map(|v| v.to_f64() * v.to_f64()).sum::<f64>();
            continue;
        }
        match grads.as_deref_mut().and_then(|g| g.layers.get_mut(l)) {
            Some(g) => {
                for (gw, &wv) in g.weight.iter_mut().zip(w) {
                    *gw += two_lambda * wv;
                    let wf = wv.to_f64();
                    sum += wf * wf;
                }
            }
            None => {
                for &wv in w {
                    let wf = wv.to_f64();
                    sum += wf * wf;
                }
            }
        }
    }
    sum
}

/// Validates a training call; returns the index of the lowest trainable layer (`None` if all
/// layers are frozen).
fn check_train_inputs<T: Float>(
    net: &Network<T>,
    ws: &Workspace<T>,
    grads: &Gradients<T>,
    x: &[T],
    labels: &[u8],
    batch: usize,
    opts: &TrainOptions,
) -> Result<Option<usize>, CoreError> {
    net.check_batch(ws, x, batch)?;
    check_step_inputs(net, grads, labels, batch, opts)
}

/// [`check_train_inputs`] but the batch itself: labels, gradient buffers and options.
fn check_step_inputs<T: Float>(
    net: &Network<T>,
    grads: &Gradients<T>,
    labels: &[u8],
    batch: usize,
    opts: &TrainOptions,
) -> Result<Option<usize>, CoreError> {
    check_labels(labels, batch, net.outputs())?;
    if !grads.fits(net.architecture()) {
        return Err(CoreError::BufferMismatch { what: "gradients" });
    }
    opts.validate(net.architecture())?;
    Ok((0..net.num_layers()).find(|&l| !opts.is_frozen(l)))
}

fn check_labels(labels: &[u8], batch: usize, classes: usize) -> Result<(), CoreError> {
    if labels.len() != batch {
        return Err(CoreError::LabelCount {
            batch,
            got: labels.len(),
        });
    }
    if let Some((index, &label)) = labels
        .iter()
        .enumerate()
        .find(|(_, l)| usize::from(**l) >= classes)
    {
        return Err(CoreError::LabelOutOfRange {
            index,
            label,
            classes,
        });
    }
    Ok(())
}

/// Training-mode loss only (forward with dropout, no backward): the value
/// [`compute_gradients`] would return, drawing the same masks from `rng`.
#[allow(clippy::too_many_arguments)]
pub fn compute_loss<T: Float>(
    net: &Network<T>,
    ws: &mut Workspace<T>,
    x: &[T],
    labels: &[u8],
    batch: usize,
    opts: &TrainOptions,
    rng: &mut ChaCha8Rng,
    par: Par,
) -> Result<f64, CoreError> {
    net.check_batch(ws, x, batch)?;
    check_labels(labels, batch, net.outputs())?;
    opts.validate(net.architecture())?;
    let n = net.num_layers();
    net.forward_unchecked(
        ws,
        x,
        batch,
        Some(TrainPass {
            keep_prob: &opts.keep_prob,
            first_needed: n,
            rng,
        }),
        par,
    );
    let width = net.outputs();
    let len = batch * width;
    let Workspace {
        layers,
        logits,
        row_loss,
        ..
    } = ws;
    let probs = layers.last().map_or(&[][..], |l| &l.out[..len]);
    let data = data_loss_by_rows(
        opts,
        net.architecture().output,
        &logits[..len],
        probs,
        labels,
        None,
        row_loss,
        crate::train::step_par(batch, par),
    );
    let l2 = if opts.l2 > 0.0 {
        l2_pass(net, opts, None)
    } else {
        0.0
    };
    Ok(data + opts.l2 * l2)
}

/// Result of [`evaluate`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Mean data loss over all examples (no L2 term, no dropout).
    pub mean_loss: f64,
    /// Fraction of examples whose argmax equals the label.
    pub accuracy: f64,
    /// Number of correct predictions.
    pub correct: usize,
    /// Number of examples.
    pub examples: usize,
}

/// Evaluation-mode loss and accuracy over a whole set (`x` row-major `n x inputs`, `n =
/// labels.len()`), in batches of the workspace's `max_batch`. Does not allocate, except that a
/// workspace with fixed inputs ([`Workspace::set_input_fixed`]) keeps a copy of each batch's
/// compressed form on the first pass over it, and reuses it on later passes.
pub fn evaluate<T: Float>(
    net: &Network<T>,
    ws: &mut Workspace<T>,
    x: &[T],
    labels: &[u8],
    loss: Loss,
    par: Par,
) -> Result<Evaluation, CoreError> {
    let n = labels.len();
    let inputs = net.inputs();
    if x.len() != n * inputs {
        return Err(CoreError::InputLength {
            batch: n,
            inputs,
            expected: n * inputs,
            got: x.len(),
        });
    }
    check_labels(labels, n, net.outputs())?;
    // The first layer's panels for the sparse path are built for the first batch and reused by
    // the others (and by later calls, while the parameters stay the same).
    evaluate_batches(net, ws, x, labels, loss, par)
}

fn evaluate_batches<T: Float>(
    net: &Network<T>,
    ws: &mut Workspace<T>,
    x: &[T],
    labels: &[u8],
    loss: Loss,
    par: Par,
) -> Result<Evaluation, CoreError> {
    // The workspace's per-row loss buffer, borrowed for the call (the forward passes borrow
    // the rest of the workspace), so an evaluation allocates nothing.
    let mut row_loss = std::mem::take(&mut ws.row_loss);
    let result = evaluate_rows(net, ws, x, labels, loss, par, &mut row_loss);
    ws.row_loss = row_loss;
    result
}

fn evaluate_rows<T: Float>(
    net: &Network<T>,
    ws: &mut Workspace<T>,
    x: &[T],
    labels: &[u8],
    loss: Loss,
    par: Par,
    row_loss: &mut [f64],
) -> Result<Evaluation, CoreError> {
    let n = labels.len();
    let inputs = net.inputs();
    let width = net.outputs();
    let step = ws.max_batch();
    let head = net.architecture().output;
    let mut total = 0.0f64;
    let mut correct = 0usize;
    // Softmax cross-entropy sums one term per row: the rows' terms are computed in parallel
    // and added in row order, as one serial pass would. (The other losses add element by
    // element, so they stay one serial pass to keep the same rounding.)
    let by_rows = loss == Loss::CrossEntropy && head == OutputHead::Softmax;
    for (xb, yb) in x.chunks(step * inputs.max(1)).zip(labels.chunks(step)) {
        let rows = yb.len();
        let out = net.forward(ws, xb, rows, par)?;
        let (logits, probs) = (out.logits_slice(), out.probabilities_slice());
        let hits = |p: &[T], y: &[u8]| {
            p.chunks_exact(width)
                .zip(y)
                .filter(|(row, y)| crate::network::argmax(row) == **y)
                .count()
        };
        if let (true, Some(rl)) = (by_rows, row_loss.get_mut(..rows)) {
            let hit = AtomicUsize::new(0);
            let parts = (
                Rows::new(logits, width),
                Rows::new(probs, width),
                Rows::new(yb, 1),
                RowsMut::new(&mut *rl, 1),
            );
            for_chunks(rows, parts, par, &|_, _, (z, p, y, rl), _| {
                let terms = z.data.chunks_exact(width).zip(p.data.chunks_exact(width));
                for (((zr, pr), yr), l) in terms.zip(y.data.chunks_exact(1)).zip(rl.data) {
                    *l = loss.sum(head, zr, pr, yr, width);
                }
                hit.fetch_add(hits(p.data, y.data), Ordering::Relaxed);
            });
            total += rl.iter().fold(0.0f64, |s, &l| s + l);
            correct += hit.into_inner();
        } else {
            total += loss.sum(head, logits, probs, yb, width);
            correct += hits(probs, yb);
        }
    }
    let denom = n.max(1) as f64;
    Ok(Evaluation {
        mean_loss: total / denom,
        accuracy: correct as f64 / denom,
        correct,
        examples: n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_weight_gradients_split_by_columns_give_one_gemms_bits() {
        // `delta^T X` for layers too large for partial gradients, its columns split between
        // threads from 64 rows on: the bits of one whole GEMM, on 1-3 threads. Data with
        // exact zeros, so that some sums are zeros whose sign must match too (on batches of
        // 2-12 rows a split gave some of them another sign). 1,000 rows: an inner dimension
        // faer blocks in two.
        let value = |i: usize, m: usize| ((i * 7919 + m) % 1013) as f32 / 1013.0 - 0.5;
        for (batch, out, inp) in [
            (256usize, 400usize, 784usize),
            (1000, 300, 784),
            (256, 100, 400),
            (64, 3, 200),
            (65, 17, 129),
            (100, 33, 513),
            (8, 3, 201),
            (2, 32, 128),
        ] {
            for zeros in [false, true] {
                let delta: Vec<f32> = (0..batch * out)
                    .map(|i| {
                        if !zeros || i % 3 == 0 {
                            value(i, 2)
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let input: Vec<f32> = (0..batch * inp)
                    .map(|i| match zeros {
                        false => value(i, 3),
                        true if (i * 7) % 5 == 0 => -value(i, 3).abs(),
                        true => 0.0,
                    })
                    .collect();
                let run = |par: Par| {
                    let mut grad = vec![f32::NAN; out * inp];
                    delta_t_x(&mut grad, &delta, &input, (batch, out, inp), par);
                    grad
                };
                let seq: Vec<u32> = crate::rows::same_bits_on_any_thread_count(run)
                    .iter()
                    .map(|g| g.to_bits())
                    .collect();
                let mut whole = vec![f32::NAN; out * inp];
                gemm(
                    MatMut::from_row_major_slice_mut(&mut whole, out, inp),
                    Accum::Replace,
                    MatRef::from_row_major_slice(&delta, batch, out).transpose(),
                    MatRef::from_row_major_slice(&input, batch, inp),
                    Par::Seq,
                );
                let whole: Vec<u32> = whole.iter().map(|g| g.to_bits()).collect();
                assert!(seq == whole, "{batch}x{out}x{inp}, zeros: {zeros}");
            }
        }
    }

    /// The chunked weight gradient is `delta^T X` (against a plain f64 sum) and the same bits
    /// on any thread count.
    #[test]
    fn chunked_weight_gradient_is_delta_t_x_on_any_thread_count() {
        for (batch, out, inp) in [(128usize, 10usize, 30usize), (1000, 10, 300), (200, 3, 7)] {
            let value = |i: usize, m: usize| ((i * 7919 + m) % 1013) as f32 / 1013.0 - 0.5;
            let delta: Vec<f32> = (0..batch * out).map(|i| value(i, 1)).collect();
            let input: Vec<f32> = (0..batch * inp).map(|i| value(i, 5)).collect();
            let chunks = chunk_count(batch);
            assert!(chunks > 1);
            let run = |par: Par| {
                let mut grad = vec![f32::NAN; out * inp];
                let mut partials = vec![f32::NAN; chunks * out * inp];
                dense_weight_gradient(
                    &delta,
                    &input,
                    (batch, out, inp),
                    &mut grad,
                    &mut partials,
                    par,
                );
                grad
            };
            let seq = crate::rows::same_bits_on_any_thread_count(run);
            for (k, &g) in seq.iter().enumerate() {
                let (o, i) = (k / inp, k % inp);
                let want: f64 = (0..batch)
                    .map(|r| f64::from(delta[r * out + o]) * f64::from(input[r * inp + i]))
                    .sum();
                assert!(
                    (f64::from(g) - want).abs() < 1e-4,
                    "({o}, {i}): {g} vs {want}"
                );
            }
        }
    }
}
