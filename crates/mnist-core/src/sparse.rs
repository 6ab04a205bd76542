//! The first layer on sparse input.
//!
//! Most MNIST pixels are background (exactly 0 for `x/255`, exactly `-mean/std` once
//! standardized), and the first layer holds most of a network's multiply-adds. Writing each
//! input row as `x = c + d`, with `c` the background value and `d` non-zero only on the ink,
//!
//! * forward: `x W^T + b = d W^T + (b + c * rowsum(W))`: a sparse-times-dense product plus a
//!   per-output constant (the rank-1 correction, nothing when `c = 0`);
//! * weight gradient: `delta^T x = delta^T d + c * colsum(delta) 1^T`, and `colsum(delta)` is the
//!   bias gradient: a scatter-add of the non-zero inputs plus a per-output constant.
//!
//! The batch is compressed once per forward pass (CSR: column index and `x - c` per non-zero)
//! and reused by the backward pass. The kernels work on `W^T` in panels of [`PANEL`] outputs
//! (panel `p` holds `inputs x PANEL` values, rows contiguous), so each non-zero input reads or
//! updates one contiguous run of `PANEL` values; the weight itself stays `[out, in]` (it is
//! transposed into the panels per pass, and the gradient panels are transposed back).
//!
//! Determinism: the forward pass splits the batch by rows and the backward pass by panels, and
//! each output value is reduced in the same order whatever the split, so results do not
//! depend on the thread count. They equal the dense path's up to float rounding (different
//! summation order, and `x - c` rounded).

use faer::Par;
use faer::utils::thread::{join_raw, parallelism_degree};

use crate::Float;

/// Outputs per panel of the transposed weight (four AVX2 vectors of `f32`).
pub(crate) const PANEL: usize = 32;

/// The sparse path is taken when at most this fraction of the inputs differs from the
/// background value (measured per batch; see `cargo xtask bench` for the crossover).
pub(crate) const MAX_DENSITY: f64 = 0.45;

/// Smallest batch for which [`InputPath::Auto`] goes sparse: below it, transposing the weight
/// into panels costs more than the dense product saves.
pub(crate) const MIN_BATCH: usize = 8;

/// Rows per parallel task of the forward pass.
const MIN_ROWS_PER_TASK: usize = 16;

/// How the first layer treats its input (see [`crate::Workspace::set_input_path`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InputPath {
    /// Sparse when the batch is at least 8 rows and at most 45% of its values differ from the
    /// background value (0, or the batch's first value); dense otherwise.
    #[default]
    Auto,
    /// Always one dense GEMM.
    Dense,
    /// Always the sparse kernels (any batch, any density).
    Sparse,
}

/// Compressed batch and panel buffers, allocated on first sparse use and then reused.
#[derive(Debug, Clone, Default)]
pub(crate) struct SparseInput<T> {
    /// Set by the last forward pass: the background value when the first layer ran sparse.
    pub(crate) background: Option<T>,
    row_ptr: Vec<usize>,
    idx: Vec<u32>,
    val: Vec<T>,
    /// Layer 0's `W^T` in panels (zero-padded past the last output).
    wt: Vec<T>,
    /// `delta` in panels (`batch x PANEL` each) for the backward pass.
    dt: Vec<T>,
    /// The batch by input column (CSC) for the backward pass: rows and values.
    col_ptr: Vec<usize>,
    crow: Vec<u32>,
    cval: Vec<T>,
    max_batch: usize,
    /// Per-output constant of the forward pass (`b + c * rowsum(W)`).
    init: Vec<T>,
}

impl<T: Float> SparseInput<T> {
    /// Decides the path for `x` (`batch x inputs`); compresses it when sparse and records the
    /// background value. Allocates (once) on the first sparse batch.
    pub(crate) fn prepare(
        &mut self,
        x: &[T],
        batch: usize,
        inputs: usize,
        max_batch: usize,
        policy: InputPath,
    ) {
        self.background = None;
        self.max_batch = max_batch;
        let zero = T::from_f64(0.0);
        let Some(&first) = x.first() else { return };
        if inputs == 0 || u32::try_from(inputs).is_err() || policy == InputPath::Dense {
            return;
        }
        if policy == InputPath::Auto && batch < MIN_BATCH {
            return;
        }
        // Background: 0, or the first value (the top-left pixel of a standardized image).
        let (nnz_zero, nnz_first) = x.iter().fold((0usize, 0usize), |(a, b), &v| {
            (a + usize::from(v != zero), b + usize::from(v != first))
        });
        let (c, nnz) = if nnz_first < nnz_zero {
            (first, nnz_first)
        } else {
            (zero, nnz_zero)
        };
        let cap = capacity(max_batch, inputs);
        if policy == InputPath::Auto && nnz > cap {
            return;
        }
        // First sparse batch: room for the densest batch Auto accepts (plus one row of slack for
        // the branch-free writes), so later ones never allocate; forced Sparse may grow it once.
        let need = nnz.max(cap) + inputs;
        if self.idx.len() < need {
            self.idx.resize(need, 0);
            self.val.resize(need, zero);
        }
        if self.row_ptr.len() < max_batch + 1 {
            self.row_ptr.resize(max_batch + 1, 0);
        }
        // Branch-free compression: every value is written, the cursor advances on non-zeros.
        let mut k = 0usize;
        for (row, ptr) in x.chunks_exact(inputs).zip(self.row_ptr.iter_mut().skip(1)) {
            let (Some(idx), Some(val)) = (
                self.idx.get_mut(k..k + inputs),
                self.val.get_mut(k..k + inputs),
            ) else {
                return;
            };
            let mut j = 0usize;
            for (i, &v) in (0u32..).zip(row) {
                if let (Some(slot_i), Some(slot_v)) = (idx.get_mut(j), val.get_mut(j)) {
                    *slot_i = i;
                    *slot_v = v - c;
                }
                j += usize::from(v != c);
            }
            k += j;
            *ptr = k;
        }
        if let Some(p0) = self.row_ptr.first_mut() {
            *p0 = 0;
        }
        self.background = Some(c);
    }

    /// `z = x W^T + b` for the batch compressed by [`Self::prepare`] (`weight` row-major
    /// `[outputs, inputs]`, `z` row-major `batch x outputs`).
    pub(crate) fn affine(
        &mut self,
        weight: &[T],
        bias: &[T],
        inputs: usize,
        z: &mut [T],
        par: Par,
    ) {
        let outputs = bias.len();
        let Some(c) = self.background else { return };
        if outputs == 0 || inputs == 0 {
            return;
        }
        let panels = outputs.div_ceil(PANEL);
        let zero = T::from_f64(0.0);
        if self.wt.len() != panels * inputs * PANEL {
            self.wt = vec![zero; panels * inputs * PANEL];
        }
        // Per-output constant b + c * rowsum(W), each row summed in order.
        self.init.clear();
        if self.init.capacity() < outputs {
            self.init.reserve(outputs);
        }
        for (wrow, &b) in weight.chunks_exact(inputs).zip(bias) {
            let corr = if c == zero {
                zero
            } else {
                c * wrow.iter().fold(zero, |s, &w| s + w)
            };
            self.init.push(b + corr);
        }
        transpose_into_panels(weight, inputs, outputs, &mut self.wt);
        let rows = z.len() / outputs;
        let task = Forward {
            row_ptr: &self.row_ptr,
            idx: &self.idx,
            val: &self.val,
            wt: &self.wt,
            init: &self.init,
            inputs,
            outputs,
        };
        split_rows(z, outputs, 0, rows, par, &task);
    }

    /// Layer 0's weight gradient `delta^T x` into `grad` (row-major `[outputs, inputs]`) for the
    /// batch of the last [`Self::prepare`]; `bias_grad` is `colsum(delta)` (already computed).
    pub(crate) fn weight_gradient(
        &mut self,
        delta: &[T],
        bias_grad: &[T],
        inputs: usize,
        grad: &mut [T],
        par: Par,
    ) {
        let outputs = bias_grad.len();
        let Some(c) = self.background else { return };
        if outputs == 0 || inputs == 0 {
            return;
        }
        let zero = T::from_f64(0.0);
        let rows = delta.len() / outputs;
        let panels = outputs.div_ceil(PANEL);
        let stride = self.max_batch.max(rows) * PANEL;
        if self.dt.len() != panels * stride {
            self.dt = vec![zero; panels * stride];
        }
        // CSC of the batch: a counting sort of the CSR by column, rows ascending in each column.
        let nnz = self.row_ptr.get(rows).copied().unwrap_or(0);
        if self.crow.len() < self.idx.len() {
            self.crow.resize(self.idx.len(), 0);
            self.cval.resize(self.val.len(), zero);
        }
        self.col_ptr.clear();
        self.col_ptr.resize(inputs + 1, 0);
        for &i in self.idx.get(..nnz).unwrap_or(&[]) {
            if let Some(cnt) = self.col_ptr.get_mut(i as usize + 1) {
                *cnt += 1;
            }
        }
        for k in 1..=inputs {
            self.col_ptr[k] += self.col_ptr[k - 1];
        }
        // Reuse `col_ptr[i]` as the write cursor of column i, then shift back.
        for (r, span) in (0u32..).zip(self.row_ptr.windows(2).take(rows)) {
            let (Some(ix), Some(vs)) = (
                self.idx.get(span[0]..span[1]),
                self.val.get(span[0]..span[1]),
            ) else {
                continue;
            };
            for (&i, &v) in ix.iter().zip(vs) {
                if let Some(cur) = self.col_ptr.get_mut(i as usize) {
                    if let (Some(cr), Some(cv)) = (self.crow.get_mut(*cur), self.cval.get_mut(*cur))
                    {
                        *cr = r;
                        *cv = v;
                    }
                    *cur += 1;
                }
            }
        }
        for k in (1..=inputs).rev() {
            self.col_ptr[k] = self.col_ptr[k - 1];
        }
        self.col_ptr[0] = 0;
        let task = Backward {
            col_ptr: &self.col_ptr,
            crow: &self.crow,
            cval: &self.cval,
            delta,
            bias_grad,
            c,
            inputs,
            outputs,
            rows,
        };
        split_panels(&mut self.dt, grad, 0, panels, stride, inputs, par, &task);
    }
}

/// Entries reserved for a compressed batch: the densest batch [`InputPath::Auto`] accepts.
fn capacity(max_batch: usize, inputs: usize) -> usize {
    ((max_batch * inputs) as f64 * MAX_DENSITY).floor() as usize
}

/// `weight` `[outputs, inputs]` into panels of [`PANEL`] outputs (`inputs x PANEL` each);
/// padding columns are left as they are (zero from allocation). Blocks of 8 inputs keep the
/// eight destination rows of a block in L1 while the panel's weight rows stream through.
fn transpose_into_panels<T: Float>(weight: &[T], inputs: usize, outputs: usize, wt: &mut [T]) {
    for (p, panel) in wt.chunks_exact_mut(inputs * PANEL).enumerate() {
        let o0 = p * PANEL;
        let rows = weight
            .get(o0 * inputs..(outputs.min(o0 + PANEL)) * inputs)
            .unwrap_or(&[]);
        let (cells, _) = panel.as_chunks_mut::<PANEL>();
        for (b, block) in cells.chunks_mut(8).enumerate() {
            let i0 = b * 8;
            for (j, wrow) in rows.chunks_exact(inputs).enumerate() {
                let src = wrow.get(i0..i0 + block.len()).unwrap_or(&[]);
                for (cell, &w) in block.iter_mut().zip(src) {
                    if let Some(slot) = cell.get_mut(j) {
                        *slot = w;
                    }
                }
            }
        }
    }
}

/// A piece of work over consecutive rows (forward) or panels (backward).
trait RowTask<T>: Sync {
    fn run(&self, first_row: usize, out: &mut [T]);
}

/// Splits `rows` rows of `out` (rows of `width`) between the threads of `par`.
fn split_rows<T: Float, K: RowTask<T>>(
    out: &mut [T],
    width: usize,
    first: usize,
    rows: usize,
    par: Par,
    task: &K,
) {
    if parallelism_degree(par) <= 1 || rows < 2 * MIN_ROWS_PER_TASK {
        task.run(first, out);
        return;
    }
    let half = rows / 2;
    let (a, b) = out.split_at_mut((half * width).min(out.len()));
    join_raw(
        |p| split_rows(a, width, first, half, p, task),
        |p| split_rows(b, width, first + half, rows - half, p, task),
        par,
    );
}

/// Panel-wise work of the backward pass.
trait PanelTask<T>: Sync {
    fn run(&self, first_panel: usize, gt: &mut [T], grad: &mut [T]);
}

/// Splits `panels` panels (`dt`: `stride` values each; `grad`: `PANEL` rows of `inputs` each,
/// the last possibly fewer) between the threads of `par`.
#[allow(clippy::too_many_arguments)]
fn split_panels<T: Float, K: PanelTask<T>>(
    dt: &mut [T],
    grad: &mut [T],
    first: usize,
    panels: usize,
    stride: usize,
    inputs: usize,
    par: Par,
    task: &K,
) {
    if parallelism_degree(par) <= 1 || panels < 2 {
        task.run(first, dt, grad);
        return;
    }
    let half = panels / 2;
    let (da, db) = dt.split_at_mut((half * stride).min(dt.len()));
    let (wa, wb) = grad.split_at_mut((half * PANEL * inputs).min(grad.len()));
    join_raw(
        |p| split_panels(da, wa, first, half, stride, inputs, p, task),
        |p| split_panels(db, wb, first + half, panels - half, stride, inputs, p, task),
        par,
    );
}

/// A kernel call run through [`pulp::Arch::dispatch`]: `with_simd` is inlined into a function
/// compiled for the best instruction set the CPU has (AVX2 + FMA on x86-64), and the kernels
/// are `#[inline(always)]` into it, so their plain loops vectorize and `mul_add` is one
/// instruction.
struct ForwardCall<'k, 'a, T> {
    kernel: &'k Forward<'a, T>,
    first_row: usize,
    out: &'k mut [T],
}

impl<T: Float> pulp::WithSimd for ForwardCall<'_, '_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        self.kernel.kernel(self.first_row, self.out);
    }
}

struct BackwardCall<'k, 'a, T> {
    kernel: &'k Backward<'a, T>,
    first_panel: usize,
    gt: &'k mut [T],
    grad: &'k mut [T],
}

impl<T: Float> pulp::WithSimd for BackwardCall<'_, '_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        self.kernel.kernel(self.first_panel, self.gt, self.grad);
    }
}

struct Forward<'a, T> {
    row_ptr: &'a [usize],
    idx: &'a [u32],
    val: &'a [T],
    wt: &'a [T],
    init: &'a [T],
    inputs: usize,
    outputs: usize,
}

impl<T: Float> RowTask<T> for Forward<'_, T> {
    fn run(&self, first_row: usize, out: &mut [T]) {
        pulp::Arch::new().dispatch(ForwardCall {
            kernel: self,
            first_row,
            out,
        });
    }
}

impl<T: Float> Forward<'_, T> {
    /// For each panel, each row: `acc = init + sum_k val_k * WT[idx_k, panel]`, with two
    /// accumulators (even and odd non-zeros) to hide the FMA latency.
    #[inline(always)]
    fn kernel(&self, first_row: usize, out: &mut [T]) {
        let zero = T::from_f64(0.0);
        let n = self.outputs;
        let rows = out.len() / n;
        let ptrs = self
            .row_ptr
            .get(first_row..first_row + rows + 1)
            .unwrap_or(&[]);
        for (p, panel) in self.wt.chunks_exact(self.inputs * PANEL).enumerate() {
            let (cells, _) = panel.as_chunks::<PANEL>();
            let o0 = p * PANEL;
            let w = PANEL.min(n - o0);
            let mut init = [zero; PANEL];
            init[..w].copy_from_slice(&self.init[o0..o0 + w]);
            for (orow, span) in out.chunks_exact_mut(n).zip(ptrs.windows(2)) {
                let (s, e) = (span[0], span[1]);
                let (Some(ix), Some(vs)) = (self.idx.get(s..e), self.val.get(s..e)) else {
                    continue;
                };
                let acc = panel_dot(init, cells, ix, vs);
                for (o, &a) in orow[o0..o0 + w].iter_mut().zip(&acc) {
                    *o = a;
                }
            }
        }
    }
}

/// `init + sum_k vs[k] * cells[ix[k]]`, even and odd terms in two accumulators (hiding the FMA
/// latency) added at the end. The accumulators are arrays passed by value and indexed only by
/// constants, so they live in registers.
#[inline(always)]
fn panel_dot<T: Float>(init: [T; PANEL], cells: &[[T; PANEL]], ix: &[u32], vs: &[T]) -> [T; PANEL] {
    let mut a = init;
    let mut b = [T::from_f64(0.0); PANEL];
    let (ix2, ix1) = ix.as_chunks::<2>();
    let (vs2, vs1) = vs.as_chunks::<2>();
    for (i, v) in ix2.iter().zip(vs2) {
        let (Some(w0), Some(w1)) = (cells.get(i[0] as usize), cells.get(i[1] as usize)) else {
            break;
        };
        for j in 0..PANEL {
            a[j] = w0[j].mul_add(v[0], a[j]);
            b[j] = w1[j].mul_add(v[1], b[j]);
        }
    }
    for (&i, &v) in ix1.iter().zip(vs1) {
        if let Some(w0) = cells.get(i as usize) {
            for j in 0..PANEL {
                a[j] = w0[j].mul_add(v, a[j]);
            }
        }
    }
    for j in 0..PANEL {
        a[j] += b[j];
    }
    a
}

struct Backward<'a, T> {
    col_ptr: &'a [usize],
    crow: &'a [u32],
    cval: &'a [T],
    delta: &'a [T],
    bias_grad: &'a [T],
    c: T,
    inputs: usize,
    outputs: usize,
    rows: usize,
}

impl<T: Float> PanelTask<T> for Backward<'_, T> {
    fn run(&self, first_panel: usize, dt: &mut [T], grad: &mut [T]) {
        pulp::Arch::new().dispatch(BackwardCall {
            kernel: self,
            first_panel,
            gt: dt,
            grad,
        });
    }
}

impl<T: Float> Backward<'_, T> {
    /// Per panel: copy `delta[:, panel]` into a contiguous `rows x PANEL` block, then for each
    /// input `i`, `grad[panel, i] = sum over the rows b with x[b, i] != c of val * delta[b, panel]`
    /// (rows in order, even and odd terms in two accumulators) `+ c * bias_grad[panel]`.
    #[inline(always)]
    fn kernel(&self, first_panel: usize, dt: &mut [T], grad: &mut [T]) {
        let zero = T::from_f64(0.0);
        let n = self.outputs;
        let stride = dt.len() / grad.len().div_ceil(PANEL * self.inputs).max(1);
        for (k, (block, gw)) in dt
            .chunks_exact_mut(stride)
            .zip(grad.chunks_mut(PANEL * self.inputs))
            .enumerate()
        {
            let o0 = (first_panel + k) * PANEL;
            let w = PANEL.min(n - o0);
            let (cells, _) = block.as_chunks_mut::<PANEL>();
            for (cell, drow) in cells
                .iter_mut()
                .zip(self.delta.chunks_exact(n))
                .take(self.rows)
            {
                cell[..w].copy_from_slice(&drow[o0..o0 + w]);
            }
            let cells = &cells[..self.rows.min(cells.len())];
            let mut corr = [zero; PANEL];
            if self.c != zero {
                for (cj, &b) in corr.iter_mut().zip(&self.bias_grad[o0..o0 + w]) {
                    *cj = self.c * b;
                }
            }
            for (i, span) in self.col_ptr.windows(2).enumerate() {
                let (s, e) = (span[0], span[1]);
                let (Some(rs), Some(vs)) = (self.crow.get(s..e), self.cval.get(s..e)) else {
                    continue;
                };
                let acc = panel_dot(corr, cells, rs, vs);
                for (grow, &a) in gw.chunks_exact_mut(self.inputs).zip(&acc) {
                    if let Some(g) = grow.get_mut(i) {
                        *g = a;
                    }
                }
            }
        }
    }
}
