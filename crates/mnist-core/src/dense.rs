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

/// Whether faer's GEMM computes each row of a product the same way whatever the number of
/// rows in the call, so that one product per thread over a thread-dependent range of rows
/// gives the values of one per fixed chunk. True where faer takes its x86-64 kernels (AVX2 and
/// FMA): they block the inner dimension at `min(k, 512)` and tile the outputs independently
/// (checked bit for bit on our shapes by a test). Elsewhere faer's fallback `gemm` crate
/// chooses its inner blocking from all three dimensions, so the forward pass and the input
/// gradients keep one product per chunk there.
pub(crate) fn gemm_rows_are_independent() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
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

#[cfg(test)]
mod row_independence_tests {
    use super::*;

    /// What `gemm_rows_are_independent` promises, on the machine running the tests: a
    /// product over the whole batch, over halves, and over chunks of 64 and 8 rows give the
    /// same bits, on our layers' shapes and a thin one with more than 512 inputs, in both forms
    /// the passes use: `x W^T` added to the bias (forward) and `delta W` (the backward pass's
    /// input gradient).
    #[test]
    fn products_give_each_row_the_same_bits_however_the_rows_are_cut() {
        if !gemm_rows_are_independent() {
            return; // The passes keep one product per chunk on this machine.
        }
        for (m, k, n) in [
            (1000usize, 784usize, 300usize),
            (256, 784, 400),
            (256, 400, 100),
            (256, 100, 400),
            (128, 784, 40),
            (1000, 100, 10),
            (256, 10, 100),
            (200, 30, 7),
        ] {
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7919) % 1013) as f32 * 1e-3 - 0.5)
                .collect();
            let w: Vec<f32> = (0..n * k)
                .map(|i| ((i * 104729) % 997) as f32 * 1e-3 - 0.5)
                .collect();
            for forward in [true, false] {
                // Forward: `w` is `[n, k]`, used transposed; backward: `[k, n]` as it is.
                let (rhs, accum) = if forward {
                    (
                        MatRef::from_row_major_slice(&w, n, k).transpose(),
                        Accum::Add,
                    )
                } else {
                    (MatRef::from_row_major_slice(&w, k, n), Accum::Replace)
                };
                let product = |cut: usize, par: Par| {
                    let mut out = vec![0.25f32; m * n];
                    for (r0, o) in (0..m).step_by(cut).zip(out.chunks_mut(cut * n)) {
                        let rows = o.len() / n;
                        gemm(
                            MatMut::from_row_major_slice_mut(o, rows, n),
                            accum,
                            MatRef::from_row_major_slice(&x[r0 * k..(r0 + rows) * k], rows, k),
                            rhs,
                            par,
                        );
                    }
                    out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                };
                let whole = product(m, Par::rayon(2));
                for cut in [m.div_ceil(2), 64, 8] {
                    assert!(
                        whole == product(cut, Par::Seq),
                        "{m}x{k}x{n} (forward: {forward}) in rows of {cut}"
                    );
                }
            }
        }
    }
}
