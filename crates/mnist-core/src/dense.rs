//! One fully connected layer's parameters.

use std::sync::atomic::{AtomicU64, Ordering};

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

use crate::Float;

/// Weights and bias of a dense layer, `y = x W^T + b`.
///
/// The weight is stored row-major with shape `[outputs, inputs]` (PyTorch's `nn.Linear`
/// layout), in one contiguous `Vec`, so parameter updates are plain slice loops and the file
/// format is a straight copy. [`Dense::weight`] views it as a faer matrix without copying.
#[derive(Debug)]
pub struct Dense<T> {
    inputs: usize,
    outputs: usize,
    weight: Vec<T>,
    bias: Vec<T>,
    /// Names the parameters' current values: a number no other layer, and no earlier state of
    /// this one, ever had (renewed by every mutable access and by `clone`). A layer on the sparse
    /// kernels keeps its transposed copy of the weight for as long as the version stays.
    version: u64,
}

/// The next [`Dense::version`]; process-wide, so versions never repeat.
static NEXT_VERSION: AtomicU64 = AtomicU64::new(1);

fn new_version() -> u64 {
    NEXT_VERSION.fetch_add(1, Ordering::Relaxed)
}

impl<T: Clone> Clone for Dense<T> {
    fn clone(&self) -> Self {
        Self {
            inputs: self.inputs,
            outputs: self.outputs,
            weight: self.weight.clone(),
            bias: self.bias.clone(),
            version: new_version(),
        }
    }
}

/// Equal shapes and parameters (the version is not compared).
impl<T: PartialEq> PartialEq for Dense<T> {
    fn eq(&self, other: &Self) -> bool {
        self.inputs == other.inputs
            && self.outputs == other.outputs
            && self.weight == other.weight
            && self.bias == other.bias
    }
}

impl<T: Float> Dense<T> {
    /// A layer with all parameters zero.
    pub fn zeros(inputs: usize, outputs: usize) -> Self {
        let zero = T::from_f64(0.0);
        Self {
            inputs,
            outputs,
            weight: vec![zero; inputs * outputs],
            bias: vec![zero; outputs],
            version: new_version(),
        }
    }

    /// A layer from a row-major `[outputs, inputs]` weight and an `[outputs]` bias; `None` if the
    /// lengths do not match.
    pub fn from_parts(inputs: usize, outputs: usize, weight: Vec<T>, bias: Vec<T>) -> Option<Self> {
        (weight.len() == inputs.checked_mul(outputs)? && bias.len() == outputs).then(|| Self {
            inputs,
            outputs,
            weight,
            bias,
            version: new_version(),
        })
    }

    /// Input width (`fan_in`).
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// Output width (`fan_out`).
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// The weight as an `outputs x inputs` matrix view.
    pub fn weight(&self) -> MatRef<'_, T> {
        MatRef::from_row_major_slice(&self.weight, self.outputs, self.inputs)
    }

    /// The weight's row-major storage (`weight[o * inputs + i]`).
    pub fn weight_slice(&self) -> &[T] {
        &self.weight
    }

    /// Mutable row-major weight storage (the shape cannot change).
    pub fn weight_slice_mut(&mut self) -> &mut [T] {
        self.version = new_version();
        &mut self.weight
    }

    /// The bias, one value per output.
    pub fn bias(&self) -> &[T] {
        &self.bias
    }

    /// Mutable bias.
    pub fn bias_mut(&mut self) -> &mut [T] {
        self.version = new_version();
        &mut self.bias
    }

    /// Both parameter tensors mutably (for optimizers).
    pub(crate) fn params_mut(&mut self) -> (&mut [T], &mut [T]) {
        self.version = new_version();
        (&mut self.weight, &mut self.bias)
    }

    /// Names the parameters' current values (see the field): equal versions mean equal
    /// parameters, whichever layer they are read from.
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// Weights plus biases.
    pub fn num_params(&self) -> usize {
        self.weight.len() + self.bias.len()
    }

    /// `out = x W^T + b` for a row-major `batch x inputs` `x` into a row-major
    /// `batch x outputs` `out` (exact lengths required): the bias is copied into every row,
    /// then one GEMM accumulates onto it.
    pub(crate) fn affine(&self, x: &[T], batch: usize, out: &mut [T], par: Par) {
        for row in out.chunks_exact_mut(self.outputs) {
            row.copy_from_slice(&self.bias);
        }
        gemm(
            MatMut::from_row_major_slice_mut(out, batch, self.outputs),
            Accum::Add,
            MatRef::from_row_major_slice(x, batch, self.inputs),
            self.weight().transpose(),
            par,
        );
    }
}

/// `dst (=|+=) lhs * rhs` through faer, with results that never depend on `par`.
///
/// faer's matrix-matrix kernels split the work by output tiles, so each entry is reduced in the
/// same order on any thread count. Its parallel matrix-*vector* kernel (taken when `dst` has a
/// single row or column, e.g. a batch of one) instead splits the inner dimension across threads
/// and adds the partial sums, which changes the rounding; those products run sequentially.
pub(crate) fn gemm<T: Float>(
    dst: MatMut<'_, T>,
    accum: Accum,
    lhs: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    par: Par,
) {
    let par = if dst.nrows() <= 1 || dst.ncols() <= 1 {
        Par::Seq
    } else {
        par
    };
    matmul(dst, accum, lhs, rhs, T::from_f64(1.0), par);
}
