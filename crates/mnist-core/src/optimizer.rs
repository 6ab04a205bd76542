//! Parameter update rules and their state.
//!
//! The state is plain data ([`OptimizerState`]: a step count and moment buffers, one `Vec<T>` per
//! parameter tensor) so it can be serialized and restored for a bit-identical continuation.
//! Conventions follow PyTorch (`torch.optim`), so runs can be compared:
//!
//! * SGD: `p -= lr g`
//! * Momentum: `v = mu v + g; p -= lr v`; Nesterov: `v = mu v + g; p -= lr (g + mu v)`
//! * Adam: `m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
//!   p -= lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)`
//! * RMSprop: `v = a v + (1-a) g^2; p -= lr g / (sqrt(v) + eps)`
//!
//! Moments that decay towards zero are set to exactly zero before they turn subnormal. Why: a
//! weight whose gradient stays zero (the inputs of a dead ReLU unit) has its moment multiplied
//! by `b1` every step, and rounding keeps it at the smallest subnormals for ever (`0.9 x` one
//! ulp rounds back to one ulp). On an Intel Xeon a fifth of adam-dropout's first-layer moments
//! sat there after six epochs, and every Adam step paid a microcode assist on each: the update
//! took a fifth of the training time. The rules drop only what cannot move a weight:
//!
//! * Adam's first moment, when the step it gives is below `2^-50` of the bias-corrected
//!   learning rate (`|m| < 2^-50 (sqrt(v_hat) + eps)`; `2^-400` in `f64`: [`Float::FLUSH_BELOW`]),
//!   or when it is below [`Float::NEAR_SUBNORMAL`] (with `eps` at least [`MIN_EPSILON`], such a
//!   moment's step is below that bound too).
//! * Adam's second moment and RMSprop's average, when below [`Float::NEAR_SUBNORMAL`] and either
//!   no step depends on them (a zero first moment, or a zero gradient) or they cannot change a
//!   denominator: when `eps + sqrt(NEAR_SUBNORMAL) / sqrt(1 - b2^t)` rounds to `eps`, as it
//!   does for any usual `eps` (1e-8), every denominator comes out bit for bit the same. With
//!   an `eps` so small that it does not, a second moment can stay subnormal while its first
//!   moment is still in use (only a matter of speed).
//! * A momentum velocity below [`Float::FLUSH_BELOW`] (a step below `lr 2^-50`).
//!
//! All are branch-free selects, so the update loops still vectorize; NaN stays NaN.

use faer::utils::thread::parallelism_degree;
use faer::{MatMut, Par};
use serde::{Deserialize, Serialize};

use crate::rows::join_raw;
use crate::sparse::{
    PANEL, SparseInput, panel_into_rows, panel_layout_len, panel_layout_to_rows,
    panels_in_first_half, rows_to_panel_layout, splits_narrow_panel, transpose_panels,
};
use crate::{CoreError, Float, Gradients, Network};

/// Tensors shorter than twice this are updated on one thread: a hand-off costs more. (At
/// 2^15, adam-dropout's 40,000-weight second layer was updated on one thread while the other
/// waited.)
const MIN_PARALLEL_LEN: usize = 1 << 13;

/// Smallest `epsilon` Adam and RMSprop accept. Smaller ones would round to zero in `f32` (the
/// step of a weight whose moments are both zero would be `0 / 0`), or make `2^-50 eps` itself
/// subnormal, so that testing a first moment against it would cost an assist every step.
pub const MIN_EPSILON: f64 = 1e-20;

/// Which update rule and its hyperparameters (the learning rate comes per step, from a
/// [`crate::Schedule`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerConfig {
    /// Plain stochastic gradient descent.
    Sgd,
    /// Heavy-ball momentum, optionally Nesterov.
    Momentum {
        /// Momentum coefficient `mu` in `[0, 1)`.
        momentum: f64,
        /// Nesterov's look-ahead variant.
        #[serde(default)]
        nesterov: bool,
    },
    /// Adam with bias correction.
    Adam {
        /// First-moment decay (0.9).
        beta1: f64,
        /// Second-moment decay (0.999).
        beta2: f64,
        /// Denominator epsilon (1e-8), added after the square root.
        epsilon: f64,
    },
    /// RMSprop (no momentum, not centered).
    RmsProp {
        /// Decay of the squared-gradient average (0.99 in PyTorch, 0.9 in Keras).
        alpha: f64,
        /// Denominator epsilon, added after the square root.
        epsilon: f64,
    },
}

impl OptimizerConfig {
    /// Adam with the usual defaults `(0.9, 0.999, 1e-8)`.
    pub fn adam() -> Self {
        Self::Adam {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
        }
    }

    /// Checks hyperparameter ranges.
    pub fn validate(&self) -> Result<(), CoreError> {
        let unit = |v: f64| (0.0..1.0).contains(&v);
        let ok = match *self {
            Self::Sgd => true,
            Self::Momentum { momentum, .. } => unit(momentum),
            Self::Adam {
                beta1,
                beta2,
                epsilon,
            } => unit(beta1) && unit(beta2) && epsilon.is_finite() && epsilon >= MIN_EPSILON,
            Self::RmsProp { alpha, epsilon } => {
                unit(alpha) && epsilon.is_finite() && epsilon >= MIN_EPSILON
            }
        };
        if ok {
            Ok(())
        } else {
            Err(CoreError::BadOptimizer(format!(
                "{self:?}: momentum/betas/alpha must be in [0, 1) and epsilon at least {MIN_EPSILON:e} (1e-8 is usual)"
            )))
        }
    }

    /// Moment buffers needed: (first, second).
    fn slots(&self) -> (bool, bool) {
        match self {
            Self::Sgd => (false, false),
            Self::Momentum { .. } => (true, false),
            Self::Adam { .. } => (true, true),
            Self::RmsProp { .. } => (false, true),
        }
    }
}

/// Everything an optimizer remembers between steps.
///
/// JSON (serde_json, with the `float_roundtrip` feature this crate enables) restores every
/// finite value bit for bit; NaN and infinities (a diverged run) serialize as `null` and fail
/// to load with an error.
///
/// Buffers are indexed per parameter tensor: `2 l` is layer `l`'s weight (row-major `[out, in]`),
/// `2 l + 1` its bias. Unused buffers are empty. Momentum keeps its velocity in `first`,
/// RMSprop its squared average in `second`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerState<T> {
    /// Number of steps taken (Adam's `t` after the step is `step`).
    pub step: u64,
    /// First-moment / velocity buffers.
    pub first: Vec<Vec<T>>,
    /// Second-moment buffers.
    pub second: Vec<Vec<T>>,
}

/// An update rule with its state. Two optimizers are equal when their configurations and
/// their (row-major) states are, whatever layout each holds its moments in.
#[derive(Debug, Clone)]
pub struct Optimizer<T> {
    config: OptimizerConfig,
    state: OptimizerState<T>,
    /// Per parameter tensor: `Some((inputs, outputs))` while its moment buffers are held in
    /// the panel layout of a weight `[outputs, inputs]` (see [`update_by_panels`]), beside
    /// the weight's panels; [`Self::state`] gives them row-major.
    panel_moments: Vec<Option<(usize, usize)>>,
    /// The source of a layout conversion (grown once to the largest tensor converted).
    scratch: Vec<T>,
}

impl<T: Float> PartialEq for Optimizer<T> {
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config && self.state() == other.state()
    }
}

impl<T: Float> Optimizer<T> {
    /// A fresh optimizer (zeroed moments) for `net`.
    pub fn new(config: OptimizerConfig, net: &Network<T>) -> Result<Self, CoreError> {
        config.validate()?;
        let (first, second) = config.slots();
        let zero = T::from_f64(0.0);
        let buffers = |on: bool| -> Vec<Vec<T>> {
            if !on {
                return Vec::new();
            }
            net.layers()
                .iter()
                .flat_map(|l| {
                    [
                        vec![zero; l.weight_slice().len()],
                        vec![zero; l.bias().len()],
                    ]
                })
                .collect()
        };
        Ok(Self {
            config,
            state: OptimizerState {
                step: 0,
                first: buffers(first),
                second: buffers(second),
            },
            panel_moments: vec![None; 2 * net.num_layers()],
            scratch: Vec::new(),
        })
    }

    /// Resumes from saved state; checks the buffers match `config` and `net`.
    pub fn from_state(
        config: OptimizerConfig,
        state: OptimizerState<T>,
        net: &Network<T>,
    ) -> Result<Self, CoreError> {
        let fresh = Self::new(config, net)?;
        let shape = |b: &Vec<Vec<T>>| b.iter().map(Vec::len).collect::<Vec<_>>();
        if shape(&state.first) != shape(&fresh.state.first)
            || shape(&state.second) != shape(&fresh.state.second)
        {
            return Err(CoreError::BadOptimizer(
                "saved state does not match this optimizer kind or network shape; start a fresh optimizer".into(),
            ));
        }
        Ok(Self {
            config,
            state,
            panel_moments: fresh.panel_moments,
            scratch: Vec::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// Counts a step whose update was applied elsewhere (the fused single-example SGD step).
    pub(crate) fn count_step(&mut self) {
        self.state.step += 1;
    }

    /// Steps taken (Adam's `t` after the last step).
    pub fn steps(&self) -> u64 {
        self.state.step
    }

    /// A copy of the state, for checkpoints, with every buffer row-major as
    /// [`OptimizerState`] documents (a layer trained on sparse input keeps its weight's
    /// moments in panels between steps).
    pub fn state(&self) -> OptimizerState<T> {
        self.clone().into_state()
    }

    /// Consumes the optimizer, returning its state (row-major, as [`Self::state`]).
    pub fn into_state(mut self) -> OptimizerState<T> {
        for idx in 0..self.panel_moments.len() {
            self.set_moment_layout(idx, None);
        }
        self.state
    }

    /// Holds tensor `idx`'s moment buffers in the panel layout of a weight
    /// `[outputs, inputs]` (`Some((inputs, outputs))`) or row-major (`None`), converting them
    /// in place when they are held the other way. Only the first conversion of a tensor
    /// allocates (the buffer keeps the padded capacity, `scratch` the largest size).
    fn set_moment_layout(&mut self, idx: usize, layout: Option<(usize, usize)>) {
        let Some(held) = self.panel_moments.get_mut(idx) else {
            return;
        };
        if *held == layout {
            return;
        }
        let from = std::mem::replace(held, layout);
        let zero = T::from_f64(0.0);
        for buffers in [&mut self.state.first, &mut self.state.second] {
            let Some(buf) = buffers.get_mut(idx).filter(|b| !b.is_empty()) else {
                continue;
            };
            self.scratch.clear();
            self.scratch.extend_from_slice(buf);
            match (from, layout) {
                (None, Some((inputs, outputs))) => {
                    buf.resize(panel_layout_len(inputs, outputs), zero);
                    rows_to_panel_layout(&self.scratch, inputs, outputs, buf);
                }
                (Some((inputs, outputs)), None) => {
                    buf.truncate(outputs * inputs);
                    panel_layout_to_rows(&self.scratch, inputs, buf);
                }
                // One layer's tensor has one shape: never from one panel layout to another.
                _ => {}
            }
        }
    }

    /// Applies one update with learning rate `lr` to every layer whose gradient is active
    /// (frozen layers are skipped). Increments the step count. With `Par::Seq` it does not
    /// allocate (a thread pool may, when it schedules work), except the first time it brings
    /// back to row-major the moments that [`crate::train_step`] kept in panels. Tensors of at
    /// least 16 Ki values
    /// are split recursively in halves between the threads of `par`; the update is
    /// element-wise, so the result is the same for any thread count.
    pub fn step(
        &mut self,
        net: &mut Network<T>,
        grads: &Gradients<T>,
        lr: f64,
        par: Par,
    ) -> Result<(), CoreError> {
        self.step_with_panels(net, grads, lr, par, None)
    }

    /// [`Self::step`], which also writes the new weight of each layer whose last pass ran
    /// sparse into its panels (`sparse`: the first layer's, then the hidden layers'), each
    /// panel's rows as soon as they are updated and still in cache: the next forward pass then
    /// finds them ready instead of transposing the whole weight from memory. The values are the
    /// same either way.
    ///
    /// A layer whose backward pass kept its weight gradient in panels
    /// (`SparseInput::take_panel_gradient`) is updated there instead ([`update_by_panels`]),
    /// with its moments in the same layout, and its rows rewritten from the updated panels;
    /// its slot in `grads` is not read.
    pub(crate) fn step_with_panels(
        &mut self,
        net: &mut Network<T>,
        grads: &Gradients<T>,
        lr: f64,
        par: Par,
        mut sparse: Option<(&mut SparseInput<T>, &mut [SparseInput<T>])>,
    ) -> Result<(), CoreError> {
        if !grads.fits(net.architecture()) {
            return Err(CoreError::BufferMismatch { what: "gradients" });
        }
        let expected = if self.config.slots() == (false, false) {
            0
        } else {
            2 * net.num_layers()
        };
        if self.state.first.len().max(self.state.second.len()) != expected {
            return Err(CoreError::BufferMismatch {
                what: "optimizer state",
            });
        }
        check_learning_rate(lr)?;
        self.state.step += 1;
        let t = self.state.step;
        let cfg = self.config;
        for (l, (layer, g)) in net.layers_mut().iter_mut().zip(grads.layers()).enumerate() {
            if !g.is_active() {
                continue;
            }
            let (inputs, outputs) = (layer.inputs(), layer.outputs());
            let mut layer_sparse = sparse.as_mut().and_then(|(first, hidden)| match l {
                0 => Some(&mut **first),
                _ => hidden.get_mut(l - 1),
            });
            let weight_layout = layer_sparse
                .as_deref()
                .is_some_and(SparseInput::holds_panel_gradient)
                .then_some((inputs, outputs));
            self.set_moment_layout(2 * l, weight_layout);
            if let Some(s) = layer_sparse.as_deref_mut()
                && let Some((wt, gt)) = s.take_panel_gradient(layer)
            {
                let (w, b) = layer.params_mut();
                let (m, v) = self.state.moments(2 * l);
                let all = Panels::all(inputs, outputs);
                update_by_panels(cfg, (t, lr), (wt, gt, m, v), w, HeldIn::Panels, all, par);
                let (m, v) = self.state.moments(2 * l + 1);
                update_par(cfg, t, lr, b, g.bias(), m, v, par);
                s.panels_refreshed(layer);
                continue;
            }
            let mut panels = layer_sparse
                .as_deref_mut()
                .and_then(|s| s.panels_to_refresh(inputs, outputs));
            let (w, b) = layer.params_mut();
            for (k, (p, grad)) in [(w, g.weight()), (b, g.bias())].into_iter().enumerate() {
                let (m, v) = self.state.moments(2 * l + k);
                match panels.as_deref_mut() {
                    Some(wt) if k == 0 => {
                        update_by_panels(
                            cfg,
                            (t, lr),
                            (p, grad, m, v),
                            wt,
                            HeldIn::Rows,
                            Panels::all(inputs, outputs),
                            par,
                        );
                    }
                    _ => update_par(cfg, t, lr, p, grad, m, v, par),
                }
            }
            if panels.is_some()
                && let Some(s) = layer_sparse
            {
                s.panels_refreshed(layer);
            }
        }
        Ok(())
    }
}

impl<T> OptimizerState<T> {
    /// Tensor `idx`'s first- and second-moment buffers (empty when unused).
    fn moments(&mut self, idx: usize) -> (&mut [T], &mut [T]) {
        let m = self
            .first
            .get_mut(idx)
            .map(Vec::as_mut_slice)
            .unwrap_or_default();
        let v = self
            .second
            .get_mut(idx)
            .map(Vec::as_mut_slice)
            .unwrap_or_default();
        (m, v)
    }
}

/// The learning rate of a step must be finite (checked by every update path).
pub(crate) fn check_learning_rate(lr: f64) -> Result<(), CoreError> {
    if lr.is_finite() {
        Ok(())
    } else {
        Err(CoreError::BadOptimizer(format!(
            "learning rate must be finite, got {lr}"
        )))
    }
}

/// [`update`] on halves of the tensor on the threads of `par`, each half compiled for the
/// CPU's widest vectors through pulp.
#[allow(clippy::too_many_arguments)]
fn update_par<T: Float>(
    cfg: OptimizerConfig,
    t: u64,
    lr: f64,
    p: &mut [T],
    g: &[T],
    m: &mut [T],
    v: &mut [T],
    par: Par,
) {
    if parallelism_degree(par) <= 1 || p.len() < 2 * MIN_PARALLEL_LEN {
        pulp::Arch::new().dispatch(Update {
            cfg,
            t,
            lr,
            p,
            g,
            m,
            v,
        });
        return;
    }
    let ((pa, ga, ma, va), (pb, gb, mb, vb)) = split_state(p, g, m, v, p.len() / 2);
    join_raw(
        |par| update_par(cfg, t, lr, pa, ga, ma, va, par),
        |par| update_par(cfg, t, lr, pb, gb, mb, vb, par),
        par,
    );
}

/// A parameter tensor with its gradient and moment buffers, split after `len` values.
type State<'a, T> = (&'a mut [T], &'a [T], &'a mut [T], &'a mut [T]);

/// Splits `p`, `g`, `m` and `v` after their first `len` values; unused moment buffers are
/// empty and stay so on both sides.
fn split_state<'a, T>(
    p: &'a mut [T],
    g: &'a [T],
    m: &'a mut [T],
    v: &'a mut [T],
    len: usize,
) -> (State<'a, T>, State<'a, T>) {
    let (pa, pb) = p.split_at_mut(len.min(p.len()));
    let (ga, gb) = g.split_at(len.min(g.len()));
    let (ma, mb) = m.split_at_mut(len.min(m.len()));
    let (va, vb) = v.split_at_mut(len.min(v.len()));
    ((pa, ga, ma, va), (pb, gb, mb, vb))
}

/// Panels `first..first + count` of a weight `[outputs, inputs]` (see [`update_by_panels`]).
#[derive(Clone, Copy)]
struct Panels {
    inputs: usize,
    outputs: usize,
    first: usize,
    count: usize,
}

impl Panels {
    /// Every panel of a weight `[outputs, inputs]`.
    fn all(inputs: usize, outputs: usize) -> Self {
        Self {
            inputs,
            outputs,
            first: 0,
            count: outputs.div_ceil(PANEL),
        }
    }
}

/// Where a weight updated panel by panel holds its state (the values updated, with the
/// gradient and moments in the same layout), the other copy being rewritten from it.
#[derive(Clone, Copy, PartialEq)]
enum HeldIn {
    /// Rows `[outputs, inputs]`; each updated panel's rows are transposed into the panels of
    /// `W^T` (the gradient came in rows).
    Rows,
    /// The panels of `W^T` (`inputs x PANEL` values each); each updated panel is transposed
    /// into the weight's rows, so the layer stays current (the gradient stayed in panels).
    Panels,
}

/// [`update`] on a weight one panel of [`PANEL`] outputs at a time: `state` (the values, the
/// gradient and the moments, laid out as `held` says) is updated and the panel at once
/// copied into `other` (the other layout) while in cache. Panels are split between the
/// threads of `par` as every pass split by panels splits them
/// ([`panels_in_first_half`]), so each thread updates the panels whose gradient it summed
/// and that its forward pass reads next. Padding past the last output stays zero (its
/// gradient and moments are zero).
fn update_by_panels<T: Float>(
    cfg: OptimizerConfig,
    (t, lr): (u64, f64),
    (p, g, m, v): State<'_, T>,
    other: &mut [T],
    held: HeldIn,
    rows: Panels,
    par: Par,
) {
    let Panels {
        inputs,
        outputs,
        first,
        count,
    } = rows;
    // Values of `k` panels from `from` in the state's layout and in the other one.
    let lens = |from: usize, k: usize| {
        let in_rows = row_len_of(Panels {
            first: from,
            count: k,
            ..rows
        });
        let in_panels = k * inputs * PANEL;
        match held {
            HeldIn::Rows => (in_rows, in_panels),
            HeldIn::Panels => (in_panels, in_rows),
        }
    };
    let whole_weight = first == 0 && count == outputs.div_ceil(PANEL);
    if held == HeldIn::Panels && whole_weight && splits_narrow_panel(count, outputs, par) {
        // As the forward and backward passes split it: half of the whole panels each, and
        // half of the narrow last panel's inputs (its update is element-wise).
        let full = count - 1;
        let half = panels_in_first_half(count);
        let (state, narrow) = split_state(p, g, m, v, full * inputs * PANEL);
        let (other, narrow_rows) = other.split_at_mut((full * PANEL * inputs).min(other.len()));
        let (sa, sb) = split_state(state.0, state.1, state.2, state.3, half * inputs * PANEL);
        let (oa, ob) = other.split_at_mut((half * PANEL * inputs).min(other.len()));
        let mid = inputs / 2;
        let (na, nb) = split_state(narrow.0, narrow.1, narrow.2, narrow.3, mid * PANEL);
        let used = narrow_rows.len() / inputs.max(1);
        let narrow_rows = MatMut::from_row_major_slice_mut(narrow_rows, used, inputs);
        let (ra, rb) = narrow_rows.split_at_col_mut(mid);
        let a = Panels {
            count: half,
            ..rows
        };
        let b = Panels {
            first: half,
            count: full - half,
            ..rows
        };
        join_raw(
            |par| {
                update_by_panels(cfg, (t, lr), sa, oa, held, a, par);
                update_narrow_cells(cfg, (t, lr), na, ra);
            },
            |par| {
                update_by_panels(cfg, (t, lr), sb, ob, held, b, par);
                update_narrow_cells(cfg, (t, lr), nb, rb);
            },
            par,
        );
        return;
    }
    if parallelism_degree(par) > 1 && count >= 2 {
        let half = panels_in_first_half(count);
        let (state_len, other_len) = lens(first, half);
        let (sa, sb) = split_state(p, g, m, v, state_len);
        let (oa, ob) = other.split_at_mut(other_len.min(other.len()));
        let a = Panels {
            count: half,
            ..rows
        };
        let b = Panels {
            first: first + half,
            count: count - half,
            ..rows
        };
        join_raw(
            |par| update_by_panels(cfg, (t, lr), sa, oa, held, a, par),
            |par| update_by_panels(cfg, (t, lr), sb, ob, held, b, par),
            par,
        );
        return;
    }
    let (mut p, mut g, mut m, mut v, mut other) = (p, g, m, v, other);
    for panel in first..first + count {
        let (state_len, other_len) = lens(panel, 1);
        let ((pp, gp, mp, vp), (pr, gr, mr, vr)) = split_state(p, g, m, v, state_len);
        let (op, or) = other.split_at_mut(other_len.min(other.len()));
        update_par(cfg, t, lr, pp, gp, mp, vp, Par::Seq);
        match held {
            HeldIn::Rows => {
                transpose_panels(pp, inputs, pp.len() / inputs.max(1), 0, 1, op, Par::Seq)
            }
            HeldIn::Panels => panel_into_rows(pp.as_chunks::<PANEL>().0, op, inputs),
        }
        (p, g, m, v, other) = (pr, gr, mr, vr, or);
    }
}

/// The update of some inputs' cells of a narrow last panel (`state` in panel layout), and
/// their values written into the matching columns of the panel's rows.
fn update_narrow_cells<T: Float>(
    cfg: OptimizerConfig,
    (t, lr): (u64, f64),
    (p, g, m, v): State<'_, T>,
    mut rows: MatMut<'_, T>,
) {
    update_par(cfg, t, lr, p, g, m, v, Par::Seq);
    let (cells, _) = p.as_chunks::<PANEL>();
    for (i, cell) in cells.iter().enumerate().take(rows.ncols()) {
        for (j, &w) in cell.iter().enumerate().take(rows.nrows()) {
            rows[(j, i)] = w;
        }
    }
}

/// Values of `panels`' rows in a weight `[outputs, inputs]`.
fn row_len_of(panels: Panels) -> usize {
    let end = ((panels.first + panels.count) * PANEL).min(panels.outputs);
    (end - panels.first * PANEL) * panels.inputs
}

/// [`update`] as a pulp kernel: `with_simd` is inlined into a function compiled for the CPU's
/// widest vectors, and [`update`] into it. (A closure handed to `dispatch` was compiled out of
/// line for baseline x86-64: SSE, four lanes, no AVX.)
struct Update<'a, T> {
    cfg: OptimizerConfig,
    t: u64,
    lr: f64,
    p: &'a mut [T],
    g: &'a [T],
    m: &'a mut [T],
    v: &'a mut [T],
}

impl<T: Float> pulp::WithSimd for Update<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        update(self.cfg, self.t, self.lr, self.p, self.g, self.m, self.v);
    }
}

/// One fused pass over a parameter tensor.
#[inline(always)]
fn update<T: Float>(
    cfg: OptimizerConfig,
    t: u64,
    lr: f64,
    p: &mut [T],
    g: &[T],
    m: &mut [T],
    v: &mut [T],
) {
    let (zero, one) = (T::from_f64(0.0), T::from_f64(1.0));
    let lr_t = T::from_f64(lr);
    match cfg {
        OptimizerConfig::Sgd => {
            p.iter_mut().zip(g).for_each(|(p, &g)| *p -= lr_t * g);
        }
        OptimizerConfig::Momentum { momentum, nesterov } => {
            let mu = T::from_f64(momentum);
            let it = p.iter_mut().zip(g).zip(m.iter_mut());
            if nesterov {
                it.for_each(|((p, &g), v)| {
                    *v = (mu * *v + g).flush_tiny();
                    *p -= lr_t * (g + mu * *v);
                });
            } else {
                it.for_each(|((p, &g), v)| {
                    *v = (mu * *v + g).flush_tiny();
                    *p -= lr_t * *v;
                });
            }
        }
        OptimizerConfig::Adam {
            beta1,
            beta2,
            epsilon,
        } => {
            let (b1, b2) = (T::from_f64(beta1), T::from_f64(beta2));
            let (c1, c2) = (one - b1, one - b2);
            // Bias corrections in f64, folded into the step size and the sqrt divisor.
            let exp = i32::try_from(t).unwrap_or(i32::MAX);
            let bc1 = 1.0 - beta1.powi(exp);
            let bc2 = 1.0 - beta2.powi(exp);
            let step = T::from_f64(lr / bc1);
            let inv_sqrt_bc2 = T::from_f64(1.0 / bc2.sqrt());
            let eps = T::from_f64(epsilon);
            // Whether zeroing a second moment below NEAR_SUBNORMAL leaves every denominator
            // as it is (see the module docs).
            let v_never_counts = eps + T::NEAR_SUBNORMAL.sqrt() * inv_sqrt_bc2 == eps;
            // Equal-length reslices let the compiler drop the indexed loop's bounds checks.
            let n = p.len().min(g.len()).min(m.len()).min(v.len());
            let (p, g, m, v) = (&mut p[..n], &g[..n], &mut m[..n], &mut v[..n]);
            for i in 0..n {
                let gi = g[i];
                let mi = b1 * m[i] + c1 * gi;
                let vi = b2 * v[i] + c2 * gi * gi;
                let denom = vi.sqrt() * inv_sqrt_bc2 + eps;
                // Negligible or nearly subnormal first moments, then second moments that no
                // longer serve a step (see the module docs).
                let negligible = mi.abs() < T::FLUSH_BELOW * denom || mi.abs() < T::NEAR_SUBNORMAL;
                let mi = if negligible { zero } else { mi };
                let vi = if (v_never_counts || mi == zero) && vi < T::NEAR_SUBNORMAL {
                    zero
                } else {
                    vi
                };
                m[i] = mi;
                v[i] = vi;
                p[i] -= step * mi / denom;
            }
        }
        OptimizerConfig::RmsProp { alpha, epsilon } => {
            let a = T::from_f64(alpha);
            let c = one - a;
            let eps = T::from_f64(epsilon);
            let v_never_counts = eps + T::NEAR_SUBNORMAL.sqrt() == eps;
            p.iter_mut()
                .zip(g)
                .zip(v.iter_mut())
                .for_each(|((p, &g), v)| {
                    let vi = a * *v + c * g * g;
                    *v = if (v_never_counts || g == zero) && vi < T::NEAR_SUBNORMAL {
                        zero
                    } else {
                        vi
                    };
                    *p -= lr_t * g / (v.sqrt() + eps);
                });
        }
    }
}
