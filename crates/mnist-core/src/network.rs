//! The network: a stack of dense layers with their activations, and inference.

use std::ops::Range;

use faer::utils::thread::parallelism_degree;
use faer::{MatRef, Par};
use rand_chacha::ChaCha8Rng;

use crate::dense::gemm_rows_are_independent;
use crate::dropout::{MaskKey, apply_keyed_mask};
use crate::rows::{Rows, RowsMut, for_chunks_with_product};
use crate::sparse::{InputPath, MAX_PANEL_SPLIT_ROWS, MIN_HIDDEN_SPARSE_WEIGHTS};
use crate::{Architecture, ArchitectureError, CoreError, Dense, Float, LayerInit, Workspace, init};

/// A fully connected network over scalar `T` (`f32` or `f64`).
#[derive(Debug, Clone, PartialEq)]
pub struct Network<T> {
    arch: Architecture,
    layers: Vec<Dense<T>>,
}

/// Training-mode knobs of the internal forward pass.
pub(crate) struct TrainPass<'a> {
    /// Keep probability per hidden layer (empty = no dropout).
    pub keep_prob: &'a [f64],
    /// Hidden layers below this index need no derivative (nothing trainable below them).
    pub first_needed: usize,
    pub rng: &'a mut ChaCha8Rng,
}

impl<T: Float> Network<T> {
    /// Builds a network with initialised parameters.
    ///
    /// `init` holds one [`LayerInit`] for all layers or one per layer. Draws from `rng` in a
    /// fixed order (see [`crate::init`]).
    pub fn new(
        arch: &Architecture,
        init: &[LayerInit],
        rng: &mut ChaCha8Rng,
    ) -> Result<Self, CoreError> {
        arch.validate()?;
        let n = arch.num_layers();
        if init.len() != 1 && init.len() != n {
            return Err(CoreError::InitCount {
                layers: n,
                got: init.len(),
            });
        }
        let pick = |l: usize| if init.len() == 1 { &init[0] } else { &init[l] };
        for (l, spec) in arch.layers().enumerate() {
            init::validate(pick(l), l, spec.inputs, spec.outputs)?;
        }
        let mut net = Self::zeros(arch)?;
        for (l, layer) in net.layers.iter_mut().enumerate() {
            let (fan_in, fan_out) = (layer.inputs(), layer.outputs());
            let (w, b) = layer.params_mut();
            init::initialize(pick(l), w, b, fan_in, fan_out, rng);
        }
        Ok(net)
    }

    /// A network with every parameter zero.
    pub fn zeros(arch: &Architecture) -> Result<Self, ArchitectureError> {
        arch.validate()?;
        let layers = arch
            .layers()
            .map(|s| Dense::zeros(s.inputs, s.outputs))
            .collect();
        Ok(Self {
            arch: arch.clone(),
            layers,
        })
    }

    /// A network from explicit layers; `None` if their shapes do not match `arch`.
    pub fn from_layers(
        arch: &Architecture,
        layers: Vec<Dense<T>>,
    ) -> Result<Option<Self>, ArchitectureError> {
        arch.validate()?;
        let ok = layers.len() == arch.num_layers()
            && arch
                .layers()
                .zip(&layers)
                .all(|(s, d)| s.inputs == d.inputs() && s.outputs == d.outputs());
        Ok(ok.then(|| Self {
            arch: arch.clone(),
            layers,
        }))
    }

    /// The architecture.
    pub fn architecture(&self) -> &Architecture {
        &self.arch
    }

    /// The layers, input side first.
    pub fn layers(&self) -> &[Dense<T>] {
        &self.layers
    }

    /// Crate-internal: whole layers could be replaced through this, breaking the shapes.
    pub(crate) fn layers_mut(&mut self) -> &mut [Dense<T>] {
        &mut self.layers
    }

    /// Layer `l`'s weight (row-major `[out, in]`) and bias, mutably; the shapes stay fixed.
    /// `None` if there is no layer `l`.
    pub fn params_mut(&mut self, l: usize) -> Option<(&mut [T], &mut [T])> {
        self.layers.get_mut(l).map(Dense::params_mut)
    }

    /// Number of dense layers.
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Input width.
    pub fn inputs(&self) -> usize {
        self.arch.inputs()
    }

    /// Output width (classes).
    pub fn outputs(&self) -> usize {
        self.arch.outputs()
    }

    /// Total number of parameters.
    pub fn num_params(&self) -> usize {
        self.layers.iter().map(Dense::num_params).sum()
    }

    /// A workspace sized for this network and batches of up to `max_batch`.
    pub fn workspace(&self, max_batch: usize) -> Workspace<T> {
        Workspace::new(&self.arch, max_batch)
    }

    /// The same network with parameters converted to another scalar type.
    pub fn cast<U: Float>(&self) -> Network<U> {
        let conv = |s: &[T]| {
            s.iter()
                .map(|v| U::from_f64(v.to_f64()))
                .collect::<Vec<U>>()
        };
        let layers = self
            .layers
            .iter()
            .map(|d| {
                Dense::from_parts(
                    d.inputs(),
                    d.outputs(),
                    conv(d.weight_slice()),
                    conv(d.bias()),
                )
                .unwrap_or_else(|| Dense::zeros(d.inputs(), d.outputs()))
            })
            .collect();
        Network {
            arch: self.arch.clone(),
            layers,
        }
    }

    /// Whether every parameter has the same bit pattern as in `other` (and shapes agree).
    pub fn bit_identical(&self, other: &Self) -> bool {
        self.arch == other.arch
            && self.layers.iter().zip(&other.layers).all(|(a, b)| {
                let same = |x: &[T], y: &[T]| {
                    x.iter()
                        .zip(y)
                        .all(|(p, q)| p.to_bits_u64() == q.to_bits_u64())
                };
                same(a.weight_slice(), b.weight_slice()) && same(a.bias(), b.bias())
            })
    }

    /// Checks `ws` fits, `batch` is in range and `x` holds `batch * inputs` values.
    pub(crate) fn check_batch(
        &self,
        ws: &Workspace<T>,
        x: &[T],
        batch: usize,
    ) -> Result<(), CoreError> {
        self.check_batch_size(ws, batch)?;
        let inputs = self.inputs();
        let expected = batch * inputs;
        if x.len() != expected {
            return Err(CoreError::InputLength {
                batch,
                inputs,
                expected,
                got: x.len(),
            });
        }
        Ok(())
    }

    /// Checks `ws` fits and `batch` is in range.
    pub(crate) fn check_batch_size(
        &self,
        ws: &Workspace<T>,
        batch: usize,
    ) -> Result<(), CoreError> {
        if !ws.fits(&self.arch) {
            return Err(CoreError::BufferMismatch { what: "workspace" });
        }
        if batch == 0 {
            return Err(CoreError::EmptyBatch);
        }
        if batch > ws.max_batch() {
            return Err(CoreError::BatchTooLarge {
                batch,
                max: ws.max_batch(),
            });
        }
        Ok(())
    }

    /// Evaluation-mode forward pass (no dropout) of a row-major `batch x inputs` slice.
    ///
    /// Returns views of the logits and of the head's outputs (probabilities), borrowed from
    /// the workspace. Does not allocate, except that a workspace with fixed inputs
    /// ([`Workspace::set_input_fixed`]) keeps a copy of each new slice's compressed form.
    pub fn forward<'w>(
        &self,
        ws: &'w mut Workspace<T>,
        x: &[T],
        batch: usize,
        par: Par,
    ) -> Result<Outputs<'w, T>, CoreError> {
        self.check_batch(ws, x, batch)?;
        self.forward_unchecked(ws, x, batch, None, par);
        let w = self.outputs();
        let Workspace { layers, logits, .. } = ws;
        let probs = layers.last().map_or(&[][..], |l| &l.out[..batch * w]);
        Ok(Outputs {
            logits: &logits[..batch * w],
            probs,
            batch,
            width: w,
        })
    }

    /// Predicted class (argmax of the outputs) of each example; allocates a workspace and the
    /// result. Use [`Network::forward`] + [`Outputs::predictions_into`] in loops.
    pub fn predict(&self, x: &[T], batch: usize, par: Par) -> Result<Vec<u8>, CoreError> {
        let mut ws = self.workspace(batch);
        let out = self.forward(&mut ws, x, batch, par)?;
        let mut pred = vec![0u8; batch];
        out.predictions_into(&mut pred);
        Ok(pred)
    }

    /// Forward pass into `ws` (checked by the caller). In training mode, keeps `f'(z)` times the
    /// dropout mask in each hidden layer's `deriv` buffer.
    pub(crate) fn forward_unchecked(
        &self,
        ws: &mut Workspace<T>,
        x: &[T],
        batch: usize,
        mut train: Option<TrainPass<'_>>,
        par: Par,
    ) {
        let n = self.layers.len();
        let par = crate::train::step_par(batch, par);
        let (policy, max_batch) = (ws.input_path(), ws.max_batch());
        let Workspace {
            layers: bufs,
            logits,
            sparse,
            hidden_sparse,
            first_input_prepared,
            ..
        } = ws;
        // The first layer's path (sparse kernels or one GEMM) is chosen on this batch's density,
        // unless `train_step_rows` already assembled its sparse input (`x` is then unused).
        if !std::mem::take(first_input_prepared) {
            sparse.prepare(x, batch, self.inputs(), max_batch, policy, par);
        }
        let x = x.get(..batch * self.inputs()).unwrap_or(x);
        for (l, layer) in self.layers.iter().enumerate() {
            let (below, rest) = bufs.split_at_mut(l);
            let Some(cur) = rest.first_mut() else { return };
            let (inputs, width) = (layer.inputs(), layer.outputs());
            let input = Rows::new(
                match l.checked_sub(1).and_then(|p| below.get(p)) {
                    Some(prev) => &prev.out[..batch * inputs],
                    None => x,
                },
                inputs,
            );
            let len = batch * width;
            let sparse = match l.checked_sub(1) {
                None => &mut *sparse,
                Some(h) => {
                    let Some(s) = hidden_sparse.get_mut(h) else {
                        return;
                    };
                    // A hidden layer's input exists only now: its path is chosen here.
                    let path = if policy != InputPath::Dense
                        && inputs * width >= MIN_HIDDEN_SPARSE_WEIGHTS
                    {
                        InputPath::Auto
                    } else {
                        InputPath::Dense
                    };
                    s.prepare(input.data, batch, inputs, max_batch, path, par);
                    s
                }
            };
            let sparse_input = sparse.background.is_some();
            if sparse_input {
                sparse.prepare_affine(layer, par);
            }
            // In training the panels are split between threads as the optimizer updated them
            // (see `SparseInput::affine_by_panels`); evaluation, and batches too large for
            // each thread to read them all, split the rows.
            let by_panels = sparse_input
                && train.is_some()
                && parallelism_degree(par) > 1
                && batch <= MAX_PANEL_SPLIT_ROWS;
            if by_panels {
                sparse.affine_by_panels(inputs, width, batch, par);
            }
            let sparse = &*sparse;
            // z = x W^T + b: a dense layer's product once per thread on its rows where that
            // gives the same values (see `for_chunks_with_product`), else once per chunk; a
            // sparse one per chunk (`rows.start` is the chunk's first row).
            let per_thread = !sparse_input && gemm_rows_are_independent();
            let affine = |rows: Range<usize>, input: &[T], z: &mut [T], inner: Par| {
                if by_panels {
                    sparse.rows_from_panels(width, batch, rows.start, z);
                } else if sparse_input {
                    sparse.affine_rows(inputs, width, rows.start, z, inner);
                } else {
                    layer.affine(input, rows.len(), z, inner);
                }
            };
            if l + 1 == n {
                let head = self.arch.output;
                let parts = (
                    input,
                    RowsMut::new(&mut logits[..len], width),
                    RowsMut::new(&mut cur.out[..len], width),
                );
                for_chunks_with_product(
                    batch,
                    parts,
                    par,
                    per_thread,
                    &|rows, (input, z, _), inner| affine(rows, input.data, z.data, inner),
                    &|_, _, (_, z, out), _| head.apply_rows(z.data, out.data, width),
                );
                return;
            }
            let act = self
                .arch
                .hidden_activations
                .get(l)
                .copied()
                .unwrap_or(crate::Activation::Identity);
            let (keep, with_deriv) = match train.as_mut() {
                None => (1.0, false),
                Some(t) => (
                    t.keep_prob.get(l).copied().unwrap_or(1.0),
                    l >= t.first_needed,
                ),
            };
            // One key per layer and batch; each chunk masks its rows' units by their index in
            // the batch, so the mask does not depend on the split.
            let mask = match train.as_mut() {
                Some(t) if keep < 1.0 => Some(MaskKey::draw(t.rng)),
                _ => None,
            };
            let deriv = with_deriv.then(|| RowsMut::new(&mut cur.deriv[..len], width));
            let parts = (input, RowsMut::new(&mut cur.out[..len], width), deriv);
            for_chunks_with_product(
                batch,
                parts,
                par,
                per_thread,
                &|rows, (input, out, _), inner| affine(rows, input.data, out.data, inner),
                &|_, rows, (_, out, deriv), _| {
                    let first = (rows.start * width) as u64;
                    activate_and_mask(act, out.data, deriv.map(|d| d.data), mask, first, keep);
                },
            );
        }
    }
}

/// Values per block of [`activate_and_mask`]: its block of outputs and of derivatives fit in
/// L1 together.
const ACTIVATION_BLOCK: usize = 2048;

/// A hidden layer's activation over `out` (and its derivative into `deriv`), then the dropout
/// mask (`first` is `out[0]`'s index in the batch), block by block: each block is masked while
/// it is still in L1, instead of a second pass over the chunk's rows. Each value goes through
/// the same operations as in two whole passes.
fn activate_and_mask<T: Float>(
    act: crate::Activation,
    out: &mut [T],
    mut deriv: Option<&mut [T]>,
    mask: Option<MaskKey>,
    first: u64,
    keep: f64,
) {
    for (k, block) in out.chunks_mut(ACTIVATION_BLOCK).enumerate() {
        let start = k * ACTIVATION_BLOCK;
        let mut dblock = deriv
            .as_deref_mut()
            .and_then(|d| d.get_mut(start..start + block.len()));
        match dblock.as_deref_mut() {
            Some(d) => act.forward_with_derivative(block, d),
            None => act.forward_in_place(block),
        }
        if let Some(key) = mask {
            apply_keyed_mask(block, dblock, key, first + start as u64, keep);
        }
    }
}

/// The result of a forward pass: row-major `batch x outputs` logits and head outputs.
#[derive(Debug, Clone, Copy)]
pub struct Outputs<'w, T> {
    logits: &'w [T],
    probs: &'w [T],
    batch: usize,
    width: usize,
}

impl<'w, T: Float> Outputs<'w, T> {
    /// Number of examples.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Number of outputs per example.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Logits (pre-head) as a `batch x outputs` matrix.
    pub fn logits(&self) -> MatRef<'w, T> {
        MatRef::from_row_major_slice(self.logits, self.batch, self.width)
    }

    /// Head outputs (softmax probabilities, or per-class sigmoids) as a `batch x outputs` matrix.
    pub fn probabilities(&self) -> MatRef<'w, T> {
        MatRef::from_row_major_slice(self.probs, self.batch, self.width)
    }

    /// Logits, row-major.
    pub fn logits_slice(&self) -> &'w [T] {
        self.logits
    }

    /// Head outputs, row-major.
    pub fn probabilities_slice(&self) -> &'w [T] {
        self.probs
    }

    /// Writes each row's argmax (first maximum; NaN never wins) into `out[..batch]`.
    pub fn predictions_into(&self, out: &mut [u8]) {
        if self.width == 0 {
            return;
        }
        for (o, row) in out.iter_mut().zip(self.probs.chunks_exact(self.width)) {
            *o = argmax(row);
        }
    }
}

/// Index of the first maximum of `row` as a class label (0 for an empty or all-NaN row).
pub fn argmax<T: Float>(row: &[T]) -> u8 {
    let mut best = 0usize;
    let mut best_v: Option<T> = None;
    for (j, &v) in row.iter().enumerate() {
        // `!(v <= b)` would let NaN win; `v > b` keeps the first maximum and skips NaN.
        let better = match best_v {
            None => v.partial_cmp(&v).is_some(),
            Some(b) => v > b,
        };
        if better {
            best = j;
            best_v = Some(v);
        }
    }
    u8::try_from(best).unwrap_or(u8::MAX)
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::dropout::MaskKey;
    use crate::{Activation, Architecture, BiasInit, LayerInit, OutputHead, WeightInit};

    /// The chunks mask their rows by each unit's row-major index under the layer's key: on any
    /// number of threads the mask is the one of the key the stream gave next, unit by unit, and
    /// the stream moves past that key only.
    #[test]
    fn dropout_masks_follow_the_streams_next_key_in_row_major_order() {
        let (inputs, hidden, batch) = (5usize, 37usize, 300usize);
        let arch = Architecture::new(
            vec![inputs, hidden, 3],
            vec![Activation::Identity],
            OutputHead::Softmax,
        )
        .unwrap();
        let init = LayerInit::new(
            WeightInit::Normal {
                mean: 0.0,
                std: 1.0,
            },
            BiasInit::Zero,
        );
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let net = Network::<f32>::new(&arch, &[init], &mut rng).unwrap();
        let x: Vec<f32> = (0..batch * inputs).map(|i| (i % 7) as f32).collect();
        let keep = 0.5;
        for par in [Par::Seq, Par::rayon(2)] {
            let mut ws = net.workspace(batch);
            let mut stream = ChaCha8Rng::seed_from_u64(11);
            // Start mid-block, as after earlier draws.
            let _: u32 = stream.random();
            let mut reference = stream.clone();
            let pass = TrainPass {
                keep_prob: &[keep],
                first_needed: 0,
                rng: &mut stream,
            };
            net.forward_unchecked(&mut ws, &x, batch, Some(pass), par);
            let threshold = (keep * 4_294_967_296.0) as u32;
            let key = MaskKey::draw(&mut reference);
            let want: Vec<f32> = (0..batch * hidden)
                .map(|i| {
                    if key.word(i as u32) < threshold {
                        2.0
                    } else {
                        0.0
                    }
                })
                .collect();
            // Identity units: the derivative is the mask times 1/keep.
            assert_eq!(&ws.layers[0].deriv[..batch * hidden], &want[..], "{par:?}");
            assert_eq!(stream.get_word_pos(), reference.get_word_pos(), "{par:?}");
        }
    }
}
