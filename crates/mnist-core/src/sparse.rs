//! Dense layers on sparse input: the first layer on MNIST pixels, and hidden layers whose input
//! (after ReLU and dropout) is mostly zero.
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
//! The batch is compressed once per forward pass (CSR: column index and `x - c` per non-zero,
//! rows compressed in parallel) and reused by the backward pass; inputs declared fixed
//! ([`crate::Workspace::set_input_fixed`]) are compressed once per slice and kept, with the
//! block-CSC the backward pass builds. Both kernels work on `W^T` in
//! panels of [`PANEL`] outputs (panel `p` holds `inputs x PANEL` values, rows contiguous), so
//! each non-zero input reads or updates one contiguous run of `PANEL` values in a panel that
//! stays in L2; the layer's weight itself stays `[out, in]` in [`Dense`], always current. The
//! panels are rebuilt from it when its [`Dense::version`] changed. In `train_step` (without
//! L2) the gradient stays in its panels and the optimizer updates the panels in place, on the
//! thread that summed each, then rewrites the weight's rows from them
//! ([`SparseInput::take_panel_gradient`]); otherwise the gradient panels are transposed into
//! rows, and the optimizer writes each updated panel's rows into the panels. Each row's
//! non-zeros are read once from memory and then serve every panel from L1.
//!
//! Determinism: the forward pass splits the batch by rows (by panels in training, for batches
//! up to [`MAX_PANEL_SPLIT_ROWS`]) and the backward pass by panels, and each output value is
//! reduced in the same order whatever the split (the backward pass adds the blocks of rows in
//! order), so results do not depend on the thread count. They equal the dense path's up to
//! float rounding (different summation order, and `x - c` rounded).

use std::ops::Range;

use faer::Par;
use faer::utils::thread::parallelism_degree;

use crate::aligned::AlignedVec;
use crate::rows::join_raw;
use crate::{CoreError, Dense, Float};

/// Outputs per panel of the transposed weight (four AVX2 vectors of `f32`).
pub(crate) const PANEL: usize = 32;

/// The sparse path is taken when at most this fraction of the inputs differs from the
/// background value (measured per batch; see `cargo xtask bench` for the crossover).
pub(crate) const MAX_DENSITY: f64 = 0.45;

/// The same for a hidden layer's input (after ReLU and dropout): [`InputPath::Auto`] takes
/// the sparse kernels there only at most this dense, which dropout makes typical in training
/// (adam-dropout's second layer sees about 20% non-zeros), while an evaluation pass (no
/// dropout, about half the ReLU units active) stays on the GEMM.
pub(crate) const MAX_HIDDEN_DENSITY: f64 = 0.3;

/// Hidden layers with fewer weights than this always take the GEMM: a sparse pass would not
/// pay for compressing its input.
pub(crate) const MIN_HIDDEN_SPARSE_WEIGHTS: usize = 1 << 14;

/// Smallest batch for which [`InputPath::Auto`] goes sparse: below it, transposing the weight
/// into panels costs more than the dense product saves.
pub(crate) const MIN_BATCH: usize = 8;

/// Largest batch whose training forward pass splits the panels between threads
/// ([`SparseInput::affine_by_panels`]): each thread reads every row's non-zeros once per
/// panel, which stay in its L2 up to about a thousand MNIST rows. A full batch of 60,000
/// (deep-mse) split that way took 0.058 s per iteration against 0.053 split by rows.
pub(crate) const MAX_PANEL_SPLIT_ROWS: usize = 1024;

/// Rows per parallel task of the forward pass.
const MIN_ROWS_PER_TASK: usize = 16;

/// Rows per block of the forward kernel: their non-zeros (~100 KB on MNIST) stay in L1/L2
/// while each weight panel serves the whole block.
const ROW_BLOCK: usize = 64;

/// Rows per block of the backward kernel: a block's slice of one `delta` panel
/// (`GRAD_BLOCK x PANEL` values, 16 KB in `f32`) stays in L1 while its columns are summed.
const GRAD_BLOCK: usize = 128;

// The block-CSC stores rows within a block as `u8`, counted by a `0u8..` range (whose
// iterator steps past the last row it yields, so 255 rows at most).
const _: () = assert!(GRAD_BLOCK <= u8::MAX as usize);

/// Most bytes [`crate::Workspace::set_input_fixed`] keeps compressed across passes, counting
/// each entry's CSR, its block-CSC (reserved when the entry is made) and its share of the map.
/// The 60,000 MNIST training images (about 9 million non-zeros) take about 120 MB in `f32`.
const CACHE_BYTES: usize = 256 << 20;

/// What one cache entry costs beyond its arrays (key, map slot, `Compressed` itself).
const CACHE_ENTRY_OVERHEAD: usize = 256;

/// How the first layer treats its input (see [`crate::Workspace::set_input_path`]). Hidden
/// layers of at least 2^14 weights follow [`InputPath::Auto`] under `Auto` and `Sparse`, with
/// a threshold of 30% non-zero inputs instead of 45%; `Dense` keeps them on the GEMM too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
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

/// What a fixed input is recognized by: the slice's address and length, the batch size and
/// the policy it was compressed under.
type InputKey = (usize, usize, usize, InputPath);

/// One batch in compressed form: its path, the CSR of `x - c` and (built by the first
/// backward pass that needs it) the block-CSC.
#[derive(Debug, Clone, Default)]
struct Compressed<T> {
    /// The background value `c` when the batch takes the sparse path.
    background: Option<T>,
    /// Rows `row_ptr[r]..row_ptr[r + 1]` of `idx`/`val` (column and `x - c` per non-zero).
    row_ptr: Vec<usize>,
    idx: Vec<u32>,
    val: Vec<T>,
    /// The batch by column within each block of [`GRAD_BLOCK`] rows (block-CSC): per block
    /// `inputs + 1` offsets into `crow`/`cval`, which hold the rows (within the block) and
    /// values; block `b`'s entries sit where its rows' CSR entries do.
    col_ptr: Vec<usize>,
    crow: Vec<u8>,
    cval: Vec<T>,
    /// Whether `col_ptr`/`crow`/`cval` belong to this batch.
    csc_ready: bool,
}

impl<T> Compressed<T> {
    /// Non-zeros held.
    fn entries(&self) -> usize {
        self.row_ptr.last().copied().unwrap_or(0)
    }

    /// What keeping this batch costs in the cache: its CSR, the block-CSC its first backward
    /// pass builds, and [`CACHE_ENTRY_OVERHEAD`].
    fn kept_bytes(&self, inputs: usize) -> usize {
        use std::mem::size_of;
        let (nnz, rows) = (self.entries(), self.row_ptr.len().saturating_sub(1));
        let csr =
            nnz * (size_of::<u32>() + size_of::<T>()) + self.row_ptr.len() * size_of::<usize>();
        let blocks = if self.background.is_some() {
            rows.div_ceil(GRAD_BLOCK)
        } else {
            0
        };
        let csc =
            nnz * (size_of::<u8>() + size_of::<T>()) + blocks * (inputs + 1) * size_of::<usize>();
        csr + csc + CACHE_ENTRY_OVERHEAD
    }

    /// An exact-sized copy of the CSR, for keeping (its block-CSC is built when needed).
    fn kept(&self) -> Self
    where
        T: Clone,
    {
        let nnz = self.entries();
        Self {
            background: self.background.clone(),
            row_ptr: self.row_ptr.clone(),
            idx: self.idx.get(..nnz).unwrap_or(&[]).to_vec(),
            val: self.val.get(..nnz).unwrap_or(&[]).to_vec(),
            col_ptr: Vec::new(),
            crow: Vec::new(),
            cval: Vec::new(),
            csc_ready: false,
        }
    }
}

/// A whole set of inputs compressed once for the sparse first layer, so that a shuffled batch
/// is assembled from its rows ([`crate::train_step_rows`]) instead of being gathered densely
/// and compressed again at every step (on adam-dropout the gather and the compression were
/// about a fifth of a one-thread epoch).
///
/// The background value `c` is chosen for the whole set as a batch chooses it: 0, or the
/// first value (the top-left pixel of a standardized image) when fewer values differ from
/// it. Each row holds its non-background columns and `x - c`. Under [`InputPath::Auto`] a
/// batch assembled from these rows is the batch [`crate::train_step`] would compress from the
/// gathered rows, bit for bit (`train_step_rows` gathers the rare batch whose own background
/// would differ). In `f32` it takes 8 bytes per non-background value (about 72 MB for the
/// 60,000 MNIST training images).
#[derive(Debug, Clone)]
pub struct SparseRows<T> {
    inputs: usize,
    background: T,
    /// Rows `row_ptr[r]..row_ptr[r + 1]` of `idx`/`val`.
    row_ptr: Vec<usize>,
    idx: Vec<u32>,
    val: Vec<T>,
}

impl<T: Float> SparseRows<T> {
    /// Compresses the rows of `x` (row-major, `inputs` values per row), rows split between the
    /// threads of `par`.
    ///
    /// # Errors
    /// [`CoreError::BadRows`] when `inputs` is 0 or beyond `u32`, or `x` is not whole rows.
    pub fn new(x: &[T], inputs: usize, par: Par) -> Result<Self, CoreError> {
        let (background, row_ptr) = Self::layout(x, inputs, par)?;
        Ok(Self::compressed(x, inputs, background, row_ptr, par))
    }

    /// [`Self::new`] when it pays for training in batches of `batch` rows: `None` (before
    /// allocating the compressed entries) when such batches never take the set's rows (under
    /// 8 rows) or the set is too dense for the sparse path ([`Self::suits_sparse_path`]).
    ///
    /// # Errors
    /// As [`Self::new`].
    pub fn for_batches(
        x: &[T],
        inputs: usize,
        batch: usize,
        par: Par,
    ) -> Result<Option<Self>, CoreError> {
        if batch < MIN_BATCH {
            return Ok(None);
        }
        let (background, row_ptr) = Self::layout(x, inputs, par)?;
        let nnz = row_ptr.last().copied().unwrap_or(0);
        if nnz as f64 > MAX_DENSITY * x.len() as f64 {
            return Ok(None);
        }
        Ok(Some(Self::compressed(x, inputs, background, row_ptr, par)))
    }

    /// Checks the shape, counts each row's values against 0 and against the first value, and
    /// returns the background with fewer of them and the rows' offsets against it.
    fn layout(x: &[T], inputs: usize, par: Par) -> Result<(T, Vec<usize>), CoreError> {
        if inputs == 0 || u32::try_from(inputs).is_err() {
            return Err(CoreError::BadRows(format!(
                "rows of {inputs} inputs cannot be compressed; give at least 1 and at most 2^32 - 1 inputs per row"
            )));
        }
        let rows = x.len() / inputs;
        if rows * inputs != x.len() {
            return Err(CoreError::BadRows(format!(
                "{} values are not whole rows of {inputs} inputs; pass the set's rows complete",
                x.len()
            )));
        }
        let zero = T::from_f64(0.0);
        let first = x.first().copied().unwrap_or(zero);
        let mut counts = vec![[0u32; 2]; rows];
        for_rows(x, inputs, &mut counts, par, &|xs, cs| {
            count_rows(xs, inputs, first, cs);
        });
        let (nnz_zero, nnz_first) = counts.iter().fold((0usize, 0usize), |(a, b), c| {
            (a + c[0] as usize, b + c[1] as usize)
        });
        let (background, which) = if nnz_first < nnz_zero {
            (first, 1)
        } else {
            (zero, 0)
        };
        let mut row_ptr = Vec::with_capacity(rows + 1);
        row_ptr.push(0);
        let mut k = 0usize;
        for c in &counts {
            k += c[which] as usize;
            row_ptr.push(k);
        }
        Ok((background, row_ptr))
    }

    /// The set's entries at the offsets [`Self::layout`] gave.
    fn compressed(x: &[T], inputs: usize, background: T, row_ptr: Vec<usize>, par: Par) -> Self {
        let nnz = row_ptr.last().copied().unwrap_or(0);
        let (mut idx, mut val) = (vec![0u32; nnz], vec![T::from_f64(0.0); nnz]);
        compress_rows(x, inputs, background, &row_ptr, &mut idx, &mut val, par);
        Self {
            inputs,
            background,
            row_ptr,
            idx,
            val,
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.row_ptr.len().saturating_sub(1)
    }

    /// Values per row.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// The background value the rows are compressed against.
    pub fn background(&self) -> T {
        self.background
    }

    /// Fraction of the values that differ from the background.
    pub fn density(&self) -> f64 {
        let all = self.rows() * self.inputs;
        if all == 0 {
            return 0.0;
        }
        self.idx.len() as f64 / all as f64
    }

    /// Whether [`InputPath::Auto`] would take the sparse path on a typical batch of these rows
    /// (the set's density at most the first layer's threshold): else compressing the set
    /// does not pay.
    pub fn suits_sparse_path(&self) -> bool {
        self.density() <= MAX_DENSITY
    }

    /// Entries of row `r` (empty past the last row).
    fn row_len(&self, r: usize) -> usize {
        match (self.row_ptr.get(r), self.row_ptr.get(r + 1)) {
            (Some(&s), Some(&e)) => e - s,
            _ => 0,
        }
    }
}

/// Copies rows `indices` of `set` into `idx`/`val` at the offsets `row_ptr` gives (relative
/// to `row_ptr[0]`), rows split between the threads of `par`.
fn copy_set_rows<T: Float>(
    set: &SparseRows<T>,
    indices: &[usize],
    row_ptr: &[usize],
    idx: &mut [u32],
    val: &mut [T],
    par: Par,
) {
    let rows = indices.len();
    let base = row_ptr.first().copied().unwrap_or(0);
    if parallelism_degree(par) <= 1 || rows < 2 * MIN_ROWS_PER_TASK {
        for (&r, span) in indices.iter().zip(row_ptr.windows(2)) {
            let (Some(&s), Some(&e)) = (set.row_ptr.get(r), set.row_ptr.get(r + 1)) else {
                continue;
            };
            let (d0, d1) = (span[0] - base, span[1] - base);
            if let (Some(di), Some(dv), Some(si), Some(sv)) = (
                idx.get_mut(d0..d1),
                val.get_mut(d0..d1),
                set.idx.get(s..e),
                set.val.get(s..e),
            ) {
                di.copy_from_slice(si);
                dv.copy_from_slice(sv);
            }
        }
        return;
    }
    let half = rows / 2;
    let split = (row_ptr[half] - base).min(idx.len());
    let (ia, ib) = idx.split_at_mut(split);
    let (va, vb) = val.split_at_mut(split.min(val.len()));
    let (xa, xb) = indices.split_at(half);
    join_raw(
        |p| copy_set_rows(set, xa, &row_ptr[..=half], ia, va, p),
        |p| copy_set_rows(set, xb, &row_ptr[half..], ib, vb, p),
        par,
    );
}

/// Compressed batch and panel buffers, allocated on first sparse use and then reused.
#[derive(Debug, Clone, Default)]
pub(crate) struct SparseInput<T> {
    /// Set by the last forward pass: the background value when this layer ran sparse.
    pub(crate) background: Option<T>,
    /// The batch compressed by the last forward pass, unless it came from `cache`.
    scratch: Compressed<T>,
    /// Per row: how many values differ from 0 and from the batch's first value.
    counts: Vec<[u32; 2]>,
    /// The layer's `W^T` in panels (zero-padded past the last output).
    wt: AlignedVec<T>,
    /// The weight gradient's transpose in panels, accumulated by the backward pass.
    gt: AlignedVec<T>,
    /// Per panel, one block's slice of `delta` (`GRAD_BLOCK x PANEL`).
    dt: AlignedVec<T>,
    /// Set by a backward pass that left the weight gradient in `gt` only (for the optimizer to
    /// apply there: [`Self::take_panel_gradient`]) instead of transposing it into its rows.
    gradient_in_panels: bool,
    /// Set through [`crate::Workspace::set_input_fixed`]: every input stays as it is.
    fixed: bool,
    /// While `fixed`: each input seen so far, compressed once (up to [`CACHE_BYTES`] in all),
    /// by key.
    cache: std::collections::HashMap<InputKey, Compressed<T>>,
    /// Bytes `cache` holds or has reserved (see [`Compressed::kept_bytes`]).
    cached_bytes: usize,
    /// At most this many bytes in `cache` (`None`: [`CACHE_BYTES`]; tests set less).
    cache_limit: Option<usize>,
    /// The cache entry the last forward pass used (`None`: `scratch`).
    active: Option<InputKey>,
    /// While `fixed`: the input `scratch` was built from, when it did not fit in the cache.
    built_for: Option<InputKey>,
    /// Per-output constant of the forward pass (`b + c * rowsum(W)`).
    init: Vec<T>,
    /// [`Self::affine_by_panels`]'s output: per panel, the batch's rows of [`PANEL`] values.
    zt: AlignedVec<T>,
    /// The layer's [`Dense::version`] `wt` holds; `wt` is rebuilt when it changes.
    panels_version: Option<u64>,
    /// The version and background value `init` was computed for.
    init_for: Option<(u64, T)>,
    /// Set for a hidden layer's input: [`MAX_HIDDEN_DENSITY`] instead of [`MAX_DENSITY`].
    hidden: bool,
    /// Set by `train_step_rows` before it passes its own gather buffer: the next input is
    /// compressed without being kept or looked up, even when `fixed` (the buffer's address
    /// stays while its contents change).
    pub(crate) next_input_transient: bool,
}

impl<T: Float> SparseInput<T> {
    /// See [`crate::Workspace::set_input_fixed`]; forgets the compression built so far.
    pub(crate) fn set_fixed(&mut self, fixed: bool) {
        self.fixed = fixed;
        self.cache = std::collections::HashMap::new();
        self.cached_bytes = 0;
        self.active = None;
        self.built_for = None;
        self.scratch.csc_ready = false;
    }

    /// For a hidden layer's input (see [`MAX_HIDDEN_DENSITY`]).
    pub(crate) fn for_hidden_layer() -> Self {
        Self {
            hidden: true,
            ..Self::default()
        }
    }

    /// The batch the last forward pass compressed (or found in the cache).
    fn current(&self) -> &Compressed<T> {
        self.active
            .and_then(|k| self.cache.get(&k))
            .unwrap_or(&self.scratch)
    }

    /// Decides the path for `x` (`batch x inputs`); compresses it when sparse and records the
    /// background value. Allocates (once) on the first sparse batch.
    pub(crate) fn prepare(
        &mut self,
        x: &[T],
        batch: usize,
        inputs: usize,
        max_batch: usize,
        policy: InputPath,
        par: Par,
    ) {
        let key = (x.as_ptr() as usize, x.len(), batch, policy);
        let fixed = self.fixed && !std::mem::take(&mut self.next_input_transient);
        if fixed {
            // A fixed input seen before: its path and compression are still valid.
            if let Some(kept) = self.cache.get(&key) {
                self.background = kept.background;
                self.active = Some(key);
                return;
            }
            if self.built_for == Some(key) {
                self.background = self.scratch.background;
                self.active = None;
                return;
            }
        }
        self.active = None;
        self.built_for = None;
        self.compress(x, batch, inputs, max_batch, policy, par);
        self.background = self.scratch.background;
        if !fixed {
            return;
        }
        let bytes = self.scratch.kept_bytes(inputs);
        if self.cached_bytes + bytes <= self.cache_limit.unwrap_or(CACHE_BYTES) {
            self.cached_bytes += bytes;
            self.cache.insert(key, self.scratch.kept());
            self.active = Some(key);
        } else {
            self.built_for = Some(key);
        }
    }

    /// [`Self::prepare`] for a batch of rows `indices` (each below `set.rows()`) of a set
    /// compressed once: decides the path as for the gathered rows and, when sparse, copies the
    /// rows' entries into the scratch batch. Returns whether the batch takes the sparse path;
    /// when not, the caller runs the gathered rows through [`Self::prepare`].
    pub(crate) fn prepare_rows(
        &mut self,
        set: &SparseRows<T>,
        indices: &[usize],
        max_batch: usize,
        policy: InputPath,
        par: Par,
    ) -> bool {
        // Nothing kept describes this batch.
        self.active = None;
        self.built_for = None;
        self.background = None;
        let scratch = &mut self.scratch;
        scratch.csc_ready = false;
        scratch.background = None;
        let (rows, inputs) = (indices.len(), set.inputs);
        if rows == 0
            || policy == InputPath::Dense
            || (policy == InputPath::Auto && rows < MIN_BATCH)
        {
            return false;
        }
        let nnz: usize = indices.iter().map(|&r| set.row_len(r)).sum();
        if policy == InputPath::Auto && nnz > capacity(rows, inputs, MAX_DENSITY) {
            return false;
        }
        let need = nnz.max(capacity(max_batch.max(rows), inputs, MAX_DENSITY));
        if scratch.idx.len() < need {
            let zero = T::from_f64(0.0);
            scratch.idx.resize(need, 0);
            scratch.val.resize(need, zero);
        }
        scratch.row_ptr.resize(max_batch.max(rows) + 1, 0);
        let mut k = 0usize;
        scratch.row_ptr[0] = 0;
        for (ptr, &r) in scratch.row_ptr[1..=rows].iter_mut().zip(indices) {
            k += set.row_len(r);
            *ptr = k;
        }
        scratch.row_ptr.truncate(rows + 1);
        copy_set_rows(
            set,
            indices,
            &scratch.row_ptr,
            &mut scratch.idx[..nnz],
            &mut scratch.val[..nnz],
            par,
        );
        scratch.background = Some(set.background);
        self.background = scratch.background;
        true
    }

    /// [`Self::prepare`]'s work on a new input: decides the path and compresses into
    /// `scratch` when sparse.
    fn compress(
        &mut self,
        x: &[T],
        batch: usize,
        inputs: usize,
        max_batch: usize,
        policy: InputPath,
        par: Par,
    ) {
        let scratch = &mut self.scratch;
        scratch.csc_ready = false;
        scratch.background = None;
        if let Some(first) = scratch.row_ptr.first_mut() {
            *first = 0;
        }
        scratch.row_ptr.truncate(1);
        let zero = T::from_f64(0.0);
        let Some(&first) = x.first() else { return };
        if inputs == 0 || u32::try_from(inputs).is_err() || policy == InputPath::Dense {
            return;
        }
        if policy == InputPath::Auto && batch < MIN_BATCH {
            return;
        }
        let x = x.get(..batch * inputs).unwrap_or(x);
        let rows = x.len() / inputs;
        if self.counts.len() < rows {
            self.counts.resize(max_batch.max(rows), [0, 0]);
        }
        let counts = &mut self.counts[..rows];
        // Background: 0, or the first value (the top-left pixel of a standardized image).
        for_rows(x, inputs, counts, par, &|xs, cs| {
            count_rows(xs, inputs, first, cs);
        });
        let (nnz_zero, nnz_first) = counts.iter().fold((0usize, 0usize), |(a, b), c| {
            (a + c[0] as usize, b + c[1] as usize)
        });
        let (c, which, nnz) = if nnz_first < nnz_zero {
            (first, 1, nnz_first)
        } else {
            (zero, 0, nnz_zero)
        };
        let density = if self.hidden {
            MAX_HIDDEN_DENSITY
        } else {
            MAX_DENSITY
        };
        // The density is judged on this batch's rows; the buffers are sized for the largest
        // batch, so a partial batch cannot go sparse at a density a full one would not.
        if policy == InputPath::Auto && nnz > capacity(rows, inputs, density) {
            return;
        }
        // First sparse batch: room for the densest batch Auto accepts, so later ones never
        // allocate; forced Sparse may grow it once.
        let need = nnz.max(capacity(max_batch.max(rows), inputs, density));
        if scratch.idx.len() < need {
            scratch.idx.resize(need, 0);
            scratch.val.resize(need, zero);
        }
        scratch.row_ptr.resize(max_batch.max(rows) + 1, 0);
        let mut k = 0usize;
        scratch.row_ptr[0] = 0;
        for (ptr, cnt) in scratch.row_ptr[1..=rows].iter_mut().zip(counts.iter()) {
            k += cnt[which] as usize;
            *ptr = k;
        }
        scratch.row_ptr.truncate(rows + 1);
        compress_rows(
            x,
            inputs,
            c,
            &scratch.row_ptr,
            &mut scratch.idx[..nnz],
            &mut scratch.val[..nnz],
            par,
        );
        scratch.background = Some(c);
    }

    /// Readies the layer for [`Self::affine_rows`]: `W^T` in panels and the per-output
    /// constant `b + c * rowsum(W)`, each rebuilt only when the layer's parameters changed
    /// since (or `c` did). Does nothing unless the last [`Self::prepare`] chose the sparse path.
    pub(crate) fn prepare_affine(&mut self, layer: &Dense<T>, par: Par) {
        let (weight, bias, inputs) = (layer.weight_slice(), layer.bias(), layer.inputs());
        let outputs = bias.len();
        let Some(c) = self.background else { return };
        if outputs == 0 || inputs == 0 {
            return;
        }
        let version = layer.version();
        let panels = outputs.div_ceil(PANEL);
        let zero = T::from_f64(0.0);
        if self.wt.len() != panels * inputs * PANEL {
            self.wt = AlignedVec::filled(panels * inputs * PANEL, zero);
            self.panels_version = None;
        }
        if self.init_for != Some((version, c)) {
            // Per-output constant b + c * rowsum(W), each row summed in order.
            self.init.clear();
            self.init.extend_from_slice(bias);
            if c == zero {
                // As `b + c * rowsum` would: adding +0 turns a bias of -0 into +0.
                self.init.iter_mut().for_each(|b| *b += zero);
            } else {
                row_sums_times(weight, inputs, c, &mut self.init, par);
            }
            self.init_for = Some((version, c));
        }
        if self.panels_version != Some(version) {
            transpose_into_panels(weight, inputs, outputs, &mut self.wt, par);
            self.panels_version = Some(version);
        }
    }

    /// The panels for [`crate::Optimizer`] to write the layer's updated weight into,
    /// when the last pass ran sparse (and so the next one likely does too) on a layer of this
    /// shape; then [`Self::panels_refreshed`].
    pub(crate) fn panels_to_refresh(&mut self, inputs: usize, outputs: usize) -> Option<&mut [T]> {
        // Forgotten first: an update stopped half-way must not leave panels claimed valid.
        self.panels_version = None;
        let size = outputs.div_ceil(PANEL) * inputs * PANEL;
        (self.background.is_some() && size > 0 && self.wt.len() == size).then_some(&mut self.wt[..])
    }

    /// Records that the panels hold `layer`'s weight as it is now.
    pub(crate) fn panels_refreshed(&mut self, layer: &Dense<T>) {
        self.panels_version = Some(layer.version());
    }

    /// `z = x W^T + b` for rows `first_row..` of the batch compressed by [`Self::prepare`]
    /// (`z` row-major, as many rows as it holds, `outputs` wide), after
    /// [`Self::prepare_affine`]. Each row is computed the same way whatever the split.
    pub(crate) fn affine_rows(
        &self,
        inputs: usize,
        outputs: usize,
        first_row: usize,
        z: &mut [T],
        par: Par,
    ) {
        if self.background.is_none() || outputs == 0 || inputs == 0 {
            return;
        }
        let rows = z.len() / outputs;
        let batch = self.current();
        let task = Forward {
            row_ptr: &batch.row_ptr,
            idx: &batch.idx,
            val: &batch.val,
            wt: &self.wt,
            init: &self.init,
            inputs,
            outputs,
        };
        split_rows(z, outputs, first_row, rows, par, &task);
    }

    /// `z = x W^T + b` for all `rows` rows of the batch, as [`Self::affine_rows`] computes each
    /// value, into a buffer read by [`Self::rows_from_panels`]; the panels are split between
    /// the threads of `par` as the backward pass and the optimizer split them
    /// ([`split_panels`]). In training, each thread then reads only the panels it summed and
    /// updated in the last step, still in its core's cache, where a split by rows has every
    /// thread read every panel, half of them from the other core.
    pub(crate) fn affine_by_panels(
        &mut self,
        inputs: usize,
        outputs: usize,
        rows: usize,
        par: Par,
    ) {
        if self.background.is_none() || outputs == 0 || inputs == 0 {
            return;
        }
        let panels = outputs.div_ceil(PANEL);
        let need = panels * rows * PANEL;
        let mut zt = std::mem::take(&mut self.zt);
        if zt.len() < need {
            zt = AlignedVec::filled(need, T::from_f64(0.0));
        }
        let batch = self.current();
        let task = Forward {
            row_ptr: batch.row_ptr.get(..=rows).unwrap_or(&[]),
            idx: &batch.idx,
            val: &batch.val,
            wt: &self.wt,
            init: &self.init,
            inputs,
            outputs,
        };
        fn split<T: Float>(
            task: &Forward<'_, T>,
            zt: &mut [T],
            first: usize,
            count: usize,
            par: Par,
        ) {
            if parallelism_degree(par) > 1 && count >= 2 {
                let half = panels_in_first_half(count);
                let rows = task.row_ptr.len().saturating_sub(1);
                let (a, b) = zt.split_at_mut((half * rows * PANEL).min(zt.len()));
                join_raw(
                    |p| split(task, a, first, half, p),
                    |p| split(task, b, first + half, count - half, p),
                    par,
                );
                return;
            }
            pulp::Arch::new().dispatch(PanelForwardCall {
                kernel: task,
                first_panel: first,
                zt,
            });
        }
        let zt_used = &mut zt[..need];
        if splits_narrow_panel(panels, outputs, par) {
            // Half of the narrow panel's rows each.
            let full = panels - 1;
            let half = panels_in_first_half(panels);
            let (whole, narrow) = zt_used.split_at_mut(full * rows * PANEL);
            let (za, zb) = whole.split_at_mut(half * rows * PANEL);
            let mid = rows / 2;
            let (na, nb) = narrow.split_at_mut(mid * PANEL);
            join_raw(
                |p| {
                    split(&task, za, 0, half, p);
                    task.panel_rows(full, 0..mid, na);
                },
                |p| {
                    split(&task, zb, half, full - half, p);
                    task.panel_rows(full, mid..rows, nb);
                },
                par,
            );
        } else {
            split(&task, zt_used, 0, panels, par);
        }
        self.zt = zt;
    }

    /// Rows `first_row..` of the batch's `z` from [`Self::affine_by_panels`] (over `rows` rows)
    /// into `z` (row-major, `outputs` wide).
    pub(crate) fn rows_from_panels(
        &self,
        outputs: usize,
        rows: usize,
        first_row: usize,
        z: &mut [T],
    ) {
        let (cells, _) = self.zt.as_chunks::<PANEL>();
        for (o0, panel) in (0..outputs).step_by(PANEL).zip(cells.chunks(rows.max(1))) {
            let w = PANEL.min(outputs - o0);
            for (zrow, cell) in z
                .chunks_exact_mut(outputs)
                .zip(panel.get(first_row..).unwrap_or(&[]))
            {
                zrow[o0..o0 + w].copy_from_slice(&cell[..w]);
            }
        }
    }

    /// The layer's weight gradient `delta^T x` into `grad` (row-major `[outputs, inputs]`) for the
    /// batch of the last [`Self::prepare`]; `bias_grad` is `colsum(delta)` (already computed).
    ///
    /// With `keep_in_panels`, when the panels of `W^T` have this layer's shape (the forward
    /// pass ran sparse on it), the gradient stays in its panels for
    /// [`Self::take_panel_gradient`] and `grad` is left as it was: the optimizer then updates
    /// each panel on the thread that summed it, while it is still in that core's cache, and
    /// the transposition into rows and the reading back of those rows are saved.
    pub(crate) fn weight_gradient(
        &mut self,
        delta: &[T],
        bias_grad: &[T],
        inputs: usize,
        grad: &mut [T],
        keep_in_panels: bool,
        par: Par,
    ) {
        self.gradient_in_panels = false;
        let outputs = bias_grad.len();
        let Some(c) = self.background else { return };
        if outputs == 0 || inputs == 0 {
            return;
        }
        let zero = T::from_f64(0.0);
        let rows = delta.len() / outputs;
        let panels = outputs.div_ceil(PANEL);
        if self.gt.len() != panels * inputs * PANEL {
            self.gt = AlignedVec::filled(panels * inputs * PANEL, zero);
        }
        if self.dt.len() != panels * GRAD_BLOCK * PANEL {
            self.dt = AlignedVec::filled(panels * GRAD_BLOCK * PANEL, zero);
        }
        let batch = match self.active {
            Some(key) => self.cache.get_mut(&key),
            None => None,
        };
        let batch = batch.unwrap_or(&mut self.scratch);
        let Compressed {
            row_ptr,
            idx,
            val,
            col_ptr,
            crow,
            cval,
            csc_ready,
            ..
        } = batch;
        let row_ptr = row_ptr.get(..=rows).unwrap_or(&[]);
        let nnz = row_ptr.last().copied().unwrap_or(0);
        let blocks = rows.div_ceil(GRAD_BLOCK);
        if crow.len() < nnz {
            // Scratch: room for any batch its CSR can hold, so later ones never allocate.
            crow.resize(idx.len().max(nnz), 0);
            cval.resize(val.len().max(nnz), zero);
        }
        let ptr_len = blocks * (inputs + 1);
        if col_ptr.len() < ptr_len {
            col_ptr.resize(ptr_len, 0);
        }
        let (Some(idx), Some(val), Some(crow), Some(cval), Some(col_ptr)) = (
            idx.get(..nnz),
            val.get(..nnz),
            crow.get_mut(..nnz),
            cval.get_mut(..nnz),
            col_ptr.get_mut(..ptr_len),
        ) else {
            return;
        };
        let csr = Csr { row_ptr, idx, val };
        if !*csc_ready {
            block_csc(&csr, inputs, 0, blocks, col_ptr, crow, cval, par);
        }
        *csc_ready = true;
        let in_panels = keep_in_panels && self.wt.len() == self.gt.len();
        let task = Backward {
            col_ptr,
            crow,
            cval,
            row_ptr,
            delta,
            bias_grad,
            c,
            inputs,
            outputs,
            into_rows: !in_panels,
        };
        if in_panels && splits_narrow_panel(panels, outputs, par) {
            // Half of the narrow panel's inputs each (its cells are summed independently).
            let full = panels - 1;
            let half = panels_in_first_half(panels);
            let (whole, narrow) = self.gt.split_at_mut(full * inputs * PANEL);
            let (ga, gb) = whole.split_at_mut(half * inputs * PANEL);
            let mid = inputs / 2;
            let (na, nb) = narrow.split_at_mut(mid * PANEL);
            // Each thread's narrow part reuses the delta buffer of its first panel.
            let (da, db) = self.dt.split_at_mut(half * GRAD_BLOCK * PANEL);
            let task = &task;
            join_raw(
                |p| {
                    split_panels(ga, da, &mut [], 0, half, inputs, p, task);
                    task.run_inputs(full, 0..mid, na, da, &mut []);
                },
                |p| {
                    split_panels(gb, db, &mut [], half, full - half, inputs, p, task);
                    task.run_inputs(full, mid..inputs, nb, db, &mut []);
                },
                par,
            );
        } else {
            split_panels(
                &mut self.gt,
                &mut self.dt,
                grad,
                0,
                panels,
                inputs,
                par,
                &task,
            );
        }
        self.gradient_in_panels = in_panels;
    }

    /// Whether the last backward pass kept the weight gradient in panels (not yet applied).
    pub(crate) fn holds_panel_gradient(&self) -> bool {
        self.gradient_in_panels
    }

    /// Drops a weight gradient kept in panels that no step has applied.
    pub(crate) fn forget_panel_gradient(&mut self) {
        self.gradient_in_panels = false;
    }

    /// After a backward pass that kept the weight gradient in panels: the panels of `W^T`
    /// (to update in place; rebuilt from `layer` first unless they hold its current weight)
    /// and of the gradient, each [`PANEL`] outputs by `inputs`; the gradient is handed out
    /// once. The panels count as stale until [`Self::panels_refreshed`].
    pub(crate) fn take_panel_gradient(&mut self, layer: &Dense<T>) -> Option<(&mut [T], &[T])> {
        if !std::mem::take(&mut self.gradient_in_panels) {
            return None;
        }
        if self.panels_version != Some(layer.version()) {
            transpose_into_panels(
                layer.weight_slice(),
                layer.inputs(),
                layer.outputs(),
                &mut self.wt,
                Par::Seq,
            );
        }
        self.panels_version = None;
        Some((&mut self.wt[..], &self.gt[..]))
    }
}

/// Values of a weight `[outputs, inputs]` in the panel layout of [`SparseInput`]'s panels.
pub(crate) fn panel_layout_len(inputs: usize, outputs: usize) -> usize {
    outputs.div_ceil(PANEL) * inputs * PANEL
}

/// `rows` (`[outputs, inputs]`, row-major) into `panels` in the layout of [`SparseInput`]'s
/// weight panels ([`panel_layout_len`] values: `inputs x PANEL` per panel, zero past the last
/// output). For optimizer moments kept beside the weight panels.
pub(crate) fn rows_to_panel_layout<T: Float>(
    rows: &[T],
    inputs: usize,
    outputs: usize,
    panels: &mut [T],
) {
    panels.fill(T::from_f64(0.0));
    transpose_into_panels(rows, inputs, outputs, panels, Par::Seq);
}

/// The inverse of [`rows_to_panel_layout`]: `panels` back into `rows` (`outputs * inputs`).
pub(crate) fn panel_layout_to_rows<T: Float>(panels: &[T], inputs: usize, rows: &mut [T]) {
    for (panel, block) in panels
        .chunks_exact(inputs * PANEL)
        .zip(rows.chunks_mut(PANEL * inputs.max(1)))
    {
        let (cells, _) = panel.as_chunks::<PANEL>();
        panel_into_rows(cells, block, inputs);
    }
}

/// A compressed batch: rows `row_ptr[r]..row_ptr[r + 1]` of `idx`/`val` (absolute offsets).
struct Csr<'a, T> {
    row_ptr: &'a [usize],
    idx: &'a [u32],
    val: &'a [T],
}

/// Builds the block-CSC of blocks `first..first + blocks` (see [`SparseInput::col_ptr`]):
/// `col_ptr`, `crow` and `cval` hold exactly these blocks' parts (`crow`/`cval` starting at
/// the first block's first CSR entry). Blocks are split between the threads of `par`.
#[allow(clippy::too_many_arguments)]
fn block_csc<T: Float>(
    csr: &Csr<'_, T>,
    inputs: usize,
    first: usize,
    blocks: usize,
    col_ptr: &mut [usize],
    crow: &mut [u8],
    cval: &mut [T],
    par: Par,
) {
    let rows = csr.row_ptr.len().saturating_sub(1);
    let start = |b: usize| {
        csr.row_ptr
            .get((b * GRAD_BLOCK).min(rows))
            .copied()
            .unwrap_or(0)
    };
    let base = start(first);
    if parallelism_degree(par) <= 1 || blocks < 2 {
        for b in 0..blocks {
            let r0 = (first + b) * GRAD_BLOCK;
            let r1 = (r0 + GRAD_BLOCK).min(rows);
            let (s, e) = (start(first + b), start(first + b + 1));
            let (Some(ptr), Some(cr), Some(cv)) = (
                col_ptr.get_mut(b * (inputs + 1)..(b + 1) * (inputs + 1)),
                crow.get_mut(s - base..e - base),
                cval.get_mut(s - base..e - base),
            ) else {
                return;
            };
            // Counting sort by column, rows ascending within each column.
            ptr.iter_mut().for_each(|p| *p = 0);
            for &i in csr.idx.get(s..e).unwrap_or(&[]) {
                if let Some(cnt) = ptr.get_mut(i as usize + 1) {
                    *cnt += 1;
                }
            }
            for k in 1..=inputs {
                ptr[k] += ptr[k - 1];
            }
            // `ptr[i]` serves as column i's write cursor, then is shifted back.
            for (r, span) in (0u8..).zip(csr.row_ptr.get(r0..=r1).unwrap_or(&[]).windows(2)) {
                let (Some(ix), Some(vs)) =
                    (csr.idx.get(span[0]..span[1]), csr.val.get(span[0]..span[1]))
                else {
                    continue;
                };
                for (&i, &v) in ix.iter().zip(vs) {
                    if let Some(cur) = ptr.get_mut(i as usize) {
                        if let (Some(slot_r), Some(slot_v)) = (cr.get_mut(*cur), cv.get_mut(*cur)) {
                            *slot_r = r;
                            *slot_v = v;
                        }
                        *cur += 1;
                    }
                }
            }
            for k in (1..=inputs).rev() {
                ptr[k] = ptr[k - 1];
            }
            ptr[0] = 0;
        }
        return;
    }
    let half = blocks / 2;
    let split = start(first + half) - base;
    let (pa, pb) = col_ptr.split_at_mut((half * (inputs + 1)).min(col_ptr.len()));
    let (ra, rb) = crow.split_at_mut(split.min(crow.len()));
    let (va, vb) = cval.split_at_mut(split.min(cval.len()));
    join_raw(
        |p| block_csc(csr, inputs, first, half, pa, ra, va, p),
        |p| block_csc(csr, inputs, first + half, blocks - half, pb, rb, vb, p),
        par,
    );
}

/// `acc[o] += c * sum(weight row o)` for the rows of `weight` (`inputs` wide), each row summed
/// left to right. Rows are split between the threads of `par` and summed eight at a time, so
/// eight independent addition chains hide the add latency; each row's sum is the same sequence
/// of additions either way.
fn row_sums_times<T: Float>(weight: &[T], inputs: usize, c: T, acc: &mut [T], par: Par) {
    const ROWS: usize = 8;
    let rows = acc.len();
    debug_assert_eq!(weight.len(), rows * inputs);
    if inputs == 0 || weight.len() < rows * inputs {
        return;
    }
    if parallelism_degree(par) > 1 && rows >= 4 * ROWS {
        let half = rows / 2;
        let (wa, wb) = weight.split_at(half * inputs);
        let (aa, ab) = acc.split_at_mut(half);
        join_raw(
            |p| row_sums_times(wa, inputs, c, aa, p),
            |p| row_sums_times(wb, inputs, c, ab, p),
            par,
        );
        return;
    }
    let zero = T::from_f64(0.0);
    for (group, out) in weight.chunks(ROWS * inputs).zip(acc.chunks_mut(ROWS)) {
        let mut sums = [zero; ROWS];
        // A full group with a constant row count unrolls into eight chains; one loop for both
        // cases (`take(rows in group)`) measured 107 us against 63 us for 300 x 784.
        if out.len() == ROWS {
            let r: [&[T]; ROWS] = core::array::from_fn(|j| &group[j * inputs..][..inputs]);
            for k in 0..inputs {
                for (s, row) in sums.iter_mut().zip(&r) {
                    *s += row[k];
                }
            }
        } else {
            for (s, row) in sums.iter_mut().zip(group.chunks_exact(inputs)) {
                *s = row.iter().fold(zero, |s, &w| s + w);
            }
        }
        for (o, &s) in out.iter_mut().zip(&sums) {
            *o += c * s;
        }
    }
}

/// Entries reserved for a compressed batch: the densest batch [`InputPath::Auto`] accepts.
fn capacity(max_batch: usize, inputs: usize, density: f64) -> usize {
    ((max_batch * inputs) as f64 * density).floor() as usize
}

/// Runs `f` on consecutive rows of `x` (rows of `inputs` values) and the matching entries of
/// `out` (one per row), split between the threads of `par`.
fn for_rows<T: Float, A: Send>(
    x: &[T],
    inputs: usize,
    out: &mut [A],
    par: Par,
    f: &(dyn Fn(&[T], &mut [A]) + Sync),
) {
    let rows = out.len();
    if parallelism_degree(par) <= 1 || rows < 2 * MIN_ROWS_PER_TASK {
        f(x, out);
        return;
    }
    let half = rows / 2;
    let (xa, xb) = x.split_at((half * inputs).min(x.len()));
    let (oa, ob) = out.split_at_mut(half);
    join_raw(
        |p| for_rows(xa, inputs, oa, p, f),
        |p| for_rows(xb, inputs, ob, p, f),
        par,
    );
}

/// Compresses the rows of `x` into `idx`/`val` at the offsets `row_ptr` gives (relative to
/// `row_ptr[0]`), rows split between the threads of `par`.
fn compress_rows<T: Float>(
    x: &[T],
    inputs: usize,
    c: T,
    row_ptr: &[usize],
    idx: &mut [u32],
    val: &mut [T],
    par: Par,
) {
    let rows = row_ptr.len().saturating_sub(1);
    let base = row_ptr.first().copied().unwrap_or(0);
    if parallelism_degree(par) <= 1 || rows < 2 * MIN_ROWS_PER_TASK {
        #[cfg(target_arch = "x86_64")]
        if let (Some(x), Some(val), Some(simd)) = (
            T::as_f32_slice(x),
            T::as_f32_slice_mut(val),
            pulp::x86::V4::try_new(),
        ) {
            simd.vectorize(avx512::CompressF32 {
                simd,
                x,
                inputs,
                c: c.to_f64() as f32,
                row_ptr,
                idx,
                val,
            });
            return;
        }
        pulp::Arch::new().dispatch(CompressCall {
            x,
            inputs,
            c,
            row_ptr,
            idx,
            val,
        });
        return;
    }
    let half = rows / 2;
    let split = (row_ptr[half] - base).min(idx.len());
    let (xa, xb) = x.split_at((half * inputs).min(x.len()));
    let (ia, ib) = idx.split_at_mut(split);
    let (va, vb) = val.split_at_mut(split.min(val.len()));
    join_raw(
        |p| compress_rows(xa, inputs, c, &row_ptr[..=half], ia, va, p),
        |p| compress_rows(xb, inputs, c, &row_ptr[half..], ib, vb, p),
        par,
    );
}

/// Per row of `x` (rows of `inputs` values): how many values differ from 0 and from `first`,
/// compiled for the CPU's widest vectors (AVX-512 mask compares for `f32` where the CPU has them).
fn count_rows<T: Float>(x: &[T], inputs: usize, first: T, counts: &mut [[u32; 2]]) {
    #[cfg(target_arch = "x86_64")]
    if let (Some(x), Some(simd)) = (T::as_f32_slice(x), pulp::x86::V4::try_new()) {
        simd.vectorize(avx512::CountF32 {
            simd,
            x,
            inputs,
            first: first.to_f64() as f32,
            counts,
        });
        return;
    }
    pulp::Arch::new().dispatch(CountCall {
        x,
        inputs,
        first,
        counts,
    });
}

/// Per row of `x`: how many values differ from 0 and from `first` (the sequential part of
/// [`SparseInput::prepare`]'s count, compiled for the CPU's widest vectors).
struct CountCall<'a, T> {
    x: &'a [T],
    inputs: usize,
    first: T,
    counts: &'a mut [[u32; 2]],
}

impl<T: Float> pulp::WithSimd for CountCall<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let (zero, first) = (T::from_f64(0.0), self.first);
        for (row, cnt) in self.x.chunks_exact(self.inputs).zip(self.counts.iter_mut()) {
            let (a, b) = row.iter().fold((0u32, 0u32), |(a, b), &v| {
                (a + u32::from(v != zero), b + u32::from(v != first))
            });
            *cnt = [a, b];
        }
    }
}

/// The sequential part of [`compress_rows`], compiled for the CPU's best instruction set so
/// the mask of each run is one vector compare.
struct CompressCall<'a, T> {
    x: &'a [T],
    inputs: usize,
    c: T,
    row_ptr: &'a [usize],
    idx: &'a mut [u32],
    val: &'a mut [T],
}

impl<T: Float> pulp::WithSimd for CompressCall<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let base = self.row_ptr.first().copied().unwrap_or(0);
        for (row, span) in self
            .x
            .chunks_exact(self.inputs)
            .zip(self.row_ptr.windows(2))
        {
            let (s, e) = (span[0] - base, span[1] - base);
            if let (Some(ix), Some(vs)) = (self.idx.get_mut(s..e), self.val.get_mut(s..e)) {
                compress_row(row, self.c, ix, vs);
            }
        }
    }
}

/// AVX-512 compression of `f32` rows: each run of 16 values is one compare into a lane mask
/// and two in-register compresses (values `v - c`, column indices), about four times faster
/// than testing the mask's bits one by one. Same output as [`compress_row`].
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use core::arch::x86_64::{__m512, __m512i};
    use pulp::x86::V4;

    use super::PANEL;

    /// The 16 values at the start of `s` as a vector (zeros if `s` is shorter).
    #[inline(always)]
    fn load16(s: &[f32]) -> __m512 {
        let a: [f32; LANES] = s
            .get(..LANES)
            .and_then(|s| s.try_into().ok())
            .unwrap_or([0.0; LANES]);
        pulp::cast(a)
    }

    /// Writes `v` over the first 16 values of `s` (if it has them).
    #[inline(always)]
    fn store16(s: &mut [f32], v: __m512) {
        if let Some(d) = s.get_mut(..LANES) {
            d.copy_from_slice(&pulp::cast::<__m512, [f32; LANES]>(v));
        }
    }

    /// 16 vectors of 16 values (rows) into 16 vectors (columns) in registers: pairs of rows
    /// interleaved, then pairs of pairs, then 128-bit lanes shuffled twice (64 shuffles).
    #[inline(always)]
    fn transpose16(simd: V4, r: [__m512; LANES]) -> [__m512; LANES] {
        let f = simd.avx512f;
        // t[2i], t[2i + 1]: rows 2i and 2i + 1 interleaved (low and high halves of each lane).
        let t: [__m512; LANES] = core::array::from_fn(|i| {
            let (a, b) = (r[i & !1], r[i | 1]);
            if i % 2 == 0 {
                f._mm512_unpacklo_ps(a, b)
            } else {
                f._mm512_unpackhi_ps(a, b)
            }
        });
        // u[4g + c]: in lane L, column 4L + c of rows 4g..4g + 4.
        let u: [__m512; LANES] = core::array::from_fn(|i| {
            let (g, c) = (i / 4, i % 4);
            let (a, b) = (
                f._mm512_castps_pd(t[4 * g + c / 2]),
                f._mm512_castps_pd(t[4 * g + c / 2 + 2]),
            );
            f._mm512_castpd_ps(if c % 2 == 0 {
                f._mm512_unpacklo_pd(a, b)
            } else {
                f._mm512_unpackhi_pd(a, b)
            })
        });
        // v[c], v[4 + c]: lanes 0, 2 (resp. 1, 3) of rows 0-3 and 4-7; v[8 + ..] rows 8-15.
        let v: [__m512; LANES] = core::array::from_fn(|i| {
            let (hi, odd, c) = (i / 8, (i / 4) % 2, i % 4);
            let (a, b) = (u[8 * hi + c], u[8 * hi + 4 + c]);
            if odd == 0 {
                f._mm512_shuffle_f32x4::<0x88>(a, b)
            } else {
                f._mm512_shuffle_f32x4::<0xdd>(a, b)
            }
        });
        // Column 4q + c: lane q of each group of rows.
        core::array::from_fn(|i| {
            let (q, c) = (i / 4, i % 4);
            let (a, b) = (v[4 * (q % 2) + c], v[8 + 4 * (q % 2) + c]);
            if q < 2 {
                f._mm512_shuffle_f32x4::<0x88>(a, b)
            } else {
                f._mm512_shuffle_f32x4::<0xdd>(a, b)
            }
        })
    }

    /// [`super::TransposeCall`] for `f32`: each block of 16 inputs x 16 outputs of a panel is
    /// one [`transpose16`] (about four times fewer shuffles than the generic 8-wide tiles).
    /// Panels whose used width, or inputs whose count, is not a multiple of 16 take the
    /// generic code.
    pub(super) struct TransposeF32<'a> {
        pub(super) simd: V4,
        pub(super) weight: &'a [f32],
        pub(super) inputs: usize,
        pub(super) outputs: usize,
        pub(super) first: usize,
        pub(super) wt: &'a mut [f32],
    }

    impl pulp::NullaryFnOnce for TransposeF32<'_> {
        type Output = ();
        #[inline(always)]
        fn call(self) {
            let Self {
                simd,
                weight,
                inputs,
                outputs,
                first,
                wt,
            } = self;
            for (p, panel) in (first..).zip(wt.chunks_exact_mut(inputs * PANEL)) {
                let o0 = p * PANEL;
                let used = outputs.min(o0 + PANEL).saturating_sub(o0);
                let rows = weight.get(o0 * inputs..(o0 + used) * inputs).unwrap_or(&[]);
                if !used.is_multiple_of(LANES) || !inputs.is_multiple_of(LANES) {
                    super::rows_into_panel(rows, inputs, panel);
                    continue;
                }
                for (h, half) in rows.chunks_exact(LANES * inputs).enumerate() {
                    for i0 in (0..inputs).step_by(LANES) {
                        let r = core::array::from_fn(|j| {
                            load16(half.get(j * inputs + i0..).unwrap_or(&[]))
                        });
                        for (k, col) in transpose16(simd, r).into_iter().enumerate() {
                            let at = (i0 + k) * PANEL + h * LANES;
                            store16(panel.get_mut(at..).unwrap_or(&mut []), col);
                        }
                    }
                }
            }
        }
    }

    /// [`super::panel_into_rows`] for `f32` (`cells` flattened): blocks of 16 cells x 16
    /// outputs, one [`transpose16`] each. Returns false (writing nothing) when the used
    /// outputs or the inputs are not a multiple of 16, for the generic code to do it.
    #[inline(always)]
    pub(super) fn panel_into_rows(
        simd: V4,
        cells: &[f32],
        rows: &mut [f32],
        inputs: usize,
    ) -> bool {
        let used = rows.len() / inputs.max(1);
        if !used.is_multiple_of(LANES)
            || !inputs.is_multiple_of(LANES)
            || cells.len() < inputs * PANEL
        {
            return false;
        }
        simd.vectorize(PanelIntoRowsF32 {
            simd,
            cells,
            rows,
            inputs,
        });
        true
    }

    struct PanelIntoRowsF32<'a> {
        simd: V4,
        cells: &'a [f32],
        rows: &'a mut [f32],
        inputs: usize,
    }

    impl pulp::NullaryFnOnce for PanelIntoRowsF32<'_> {
        type Output = ();
        #[inline(always)]
        fn call(self) {
            let Self {
                simd,
                cells,
                rows,
                inputs,
            } = self;
            for (h, half) in rows.chunks_exact_mut(LANES * inputs).enumerate() {
                for i0 in (0..inputs).step_by(LANES) {
                    let r = core::array::from_fn(|k| {
                        load16(cells.get((i0 + k) * PANEL + h * LANES..).unwrap_or(&[]))
                    });
                    for (j, row) in transpose16(simd, r).into_iter().enumerate() {
                        store16(half.get_mut(j * inputs + i0..).unwrap_or(&mut []), row);
                    }
                }
            }
        }
    }

    /// Values per staging segment: a row's compressed entries are written as whole vectors into
    /// a buffer on the stack (the last vector may run past the row's count), then copied out.
    const SEGMENT: usize = 1024;
    const LANES: usize = 16;

    /// Per row: how many values differ from 0 and from `first` ([`super::CountCall`] with one
    /// compare into a lane mask and a population count per 16 values).
    pub(super) struct CountF32<'a> {
        pub(super) simd: V4,
        pub(super) x: &'a [f32],
        pub(super) inputs: usize,
        pub(super) first: f32,
        pub(super) counts: &'a mut [[u32; 2]],
    }

    impl pulp::NullaryFnOnce for CountF32<'_> {
        type Output = ();
        #[inline(always)]
        fn call(self) {
            let f = self.simd.avx512f;
            let (zero, first) = (f._mm512_set1_ps(0.0), f._mm512_set1_ps(self.first));
            for (row, cnt) in self
                .x
                .chunks_exact(self.inputs.max(1))
                .zip(self.counts.iter_mut())
            {
                let (runs, tail) = row.as_chunks::<LANES>();
                let (mut a, mut b) = (0u32, 0u32);
                for run in runs {
                    let v: __m512 = pulp::cast(*run);
                    a += f._mm512_cmpneq_ps_mask(v, zero).count_ones();
                    b += f._mm512_cmpneq_ps_mask(v, first).count_ones();
                }
                for &v in tail {
                    a += u32::from(v != 0.0);
                    b += u32::from(v != self.first);
                }
                *cnt = [a, b];
            }
        }
    }

    pub(super) struct CompressF32<'a> {
        pub(super) simd: V4,
        pub(super) x: &'a [f32],
        pub(super) inputs: usize,
        pub(super) c: f32,
        pub(super) row_ptr: &'a [usize],
        pub(super) idx: &'a mut [u32],
        pub(super) val: &'a mut [f32],
    }

    impl pulp::NullaryFnOnce for CompressF32<'_> {
        type Output = ();
        #[inline(always)]
        fn call(self) {
            let Self {
                simd,
                x,
                inputs,
                c,
                row_ptr,
                idx,
                val,
            } = self;
            let f = simd.avx512f;
            let cv = f._mm512_set1_ps(c);
            let iota = f._mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
            let mut stage_v = [0.0f32; SEGMENT + LANES];
            let mut stage_i = [0u32; SEGMENT + LANES];
            let base = row_ptr.first().copied().unwrap_or(0);
            for (row, span) in x.chunks_exact(inputs.max(1)).zip(row_ptr.windows(2)) {
                let mut out = span[0] - base;
                for (s, seg) in (0..).step_by(SEGMENT).zip(row.chunks(SEGMENT)) {
                    let mut j = 0usize;
                    let (runs, tail) = seg.as_chunks::<LANES>();
                    for (r, run) in (0..).zip(runs) {
                        let v: __m512 = pulp::cast(*run);
                        let mask = f._mm512_cmpneq_ps_mask(v, cv);
                        let first = i32::try_from(s + r * LANES).unwrap_or(i32::MAX);
                        let cols = f._mm512_add_epi32(iota, f._mm512_set1_epi32(first));
                        let d: [f32; LANES] =
                            pulp::cast(f._mm512_maskz_compress_ps(mask, f._mm512_sub_ps(v, cv)));
                        let k: [u32; LANES] =
                            pulp::cast::<__m512i, _>(f._mm512_maskz_compress_epi32(mask, cols));
                        if let (Some(dv), Some(di)) =
                            (stage_v.get_mut(j..j + LANES), stage_i.get_mut(j..j + LANES))
                        {
                            dv.copy_from_slice(&d);
                            di.copy_from_slice(&k);
                        }
                        j += mask.count_ones() as usize;
                    }
                    let tail_start = s + runs.len() * LANES;
                    for (t, &v) in (tail_start..).zip(tail) {
                        if v != c {
                            if let (Some(dv), Some(di)) = (stage_v.get_mut(j), stage_i.get_mut(j)) {
                                *dv = v - c;
                                *di = t as u32;
                            }
                            j += 1;
                        }
                    }
                    if let (Some(dst_v), Some(dst_i), Some(src_v), Some(src_i)) = (
                        val.get_mut(out..out + j),
                        idx.get_mut(out..out + j),
                        stage_v.get(..j),
                        stage_i.get(..j),
                    ) {
                        dst_v.copy_from_slice(src_v);
                        dst_i.copy_from_slice(src_i);
                    }
                    out += j;
                }
            }
        }
    }
}

/// Column index and `v - c` of each value of `row` that differs from `c`, into `idx`/`val`
/// (sized to the row's count). Each run of 32 values becomes a bit mask in one vectorized
/// pass, so the blank border of a digit costs one test and each non-zero one write.
#[inline(always)]
fn compress_row<T: Float>(row: &[T], c: T, idx: &mut [u32], val: &mut [T]) {
    const RUN: usize = 32;
    let mut j = 0usize;
    for (b, run) in (0u32..).zip(row.chunks(RUN)) {
        let mut mask = run
            .iter()
            .enumerate()
            .fold(0u32, |m, (k, &v)| m | (u32::from(v != c) << k));
        while mask != 0 {
            let k = mask.trailing_zeros();
            mask &= mask - 1;
            if let (Some(si), Some(sv), Some(&v)) =
                (idx.get_mut(j), val.get_mut(j), run.get(k as usize))
            {
                *si = b * RUN as u32 + k;
                *sv = v - c;
            }
            j += 1;
        }
    }
}

/// `weight` `[outputs, inputs]` into panels of [`PANEL`] outputs (`inputs x PANEL` each);
/// padding columns are left as they are (zero from allocation). The panels are split between
/// the threads of `par`; within one, tiles of 8 inputs x [`PANEL`] outputs are gathered from
/// the weight's rows into registers and written out as 8 contiguous panel rows.
fn transpose_into_panels<T: Float>(
    weight: &[T],
    inputs: usize,
    outputs: usize,
    wt: &mut [T],
    par: Par,
) {
    let panels = wt.len() / (inputs * PANEL).max(1);
    transpose_panels(weight, inputs, outputs, 0, panels, wt, par);
}

pub(crate) fn transpose_panels<T: Float>(
    weight: &[T],
    inputs: usize,
    outputs: usize,
    first: usize,
    panels: usize,
    wt: &mut [T],
    par: Par,
) {
    if parallelism_degree(par) > 1 && panels >= 2 {
        let half = panels_in_first_half(panels);
        let (a, b) = wt.split_at_mut((half * inputs * PANEL).min(wt.len()));
        join_raw(
            |p| transpose_panels(weight, inputs, outputs, first, half, a, p),
            |p| transpose_panels(weight, inputs, outputs, first + half, panels - half, b, p),
            par,
        );
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if let (Some(w), Some(t), Some(simd)) = (
        T::as_f32_slice(weight),
        T::as_f32_slice_mut(wt),
        pulp::x86::V4::try_new(),
    ) {
        simd.vectorize(avx512::TransposeF32 {
            simd,
            weight: w,
            inputs,
            outputs,
            first,
            wt: t,
        });
        return;
    }
    pulp::Arch::new().dispatch(TransposeCall {
        weight,
        inputs,
        outputs,
        first,
        wt,
    });
}

/// The sequential part of [`transpose_panels`], compiled for the CPU's widest vectors.
struct TransposeCall<'a, T> {
    weight: &'a [T],
    inputs: usize,
    outputs: usize,
    first: usize,
    wt: &'a mut [T],
}

impl<T: Float> pulp::WithSimd for TransposeCall<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let Self {
            weight,
            inputs,
            outputs,
            first,
            wt,
        } = self;
        for (p, panel) in (first..).zip(wt.chunks_exact_mut(inputs * PANEL)) {
            let o0 = p * PANEL;
            let rows = weight
                .get(o0 * inputs..(outputs.min(o0 + PANEL)) * inputs)
                .unwrap_or(&[]);
            rows_into_panel(rows, inputs, panel);
        }
    }
}

/// One panel's rows (`[used outputs, inputs]`, at most [`PANEL`]) into its cells (`inputs x
/// PANEL` values): tiles of 8 inputs x [`PANEL`] outputs, gathered from the rows into
/// registers and written out as 8 contiguous cells.
#[inline(always)]
fn rows_into_panel<T: Float>(rows: &[T], inputs: usize, panel: &mut [T]) {
    let zero = T::from_f64(0.0);
    let used = rows.len() / inputs.max(1);
    let (cells, _) = panel.as_chunks_mut::<PANEL>();
    for (b, block) in cells.chunks_mut(8).enumerate() {
        let i0 = b * 8;
        if block.len() == 8 && i0 + 8 <= inputs {
            // Full tile: 8 values from each used row, then 8 panel rows.
            let mut tile = [[zero; 8]; PANEL];
            for (t, wrow) in tile.iter_mut().zip(rows.chunks_exact(inputs)) {
                if let Some(src) = wrow.get(i0..i0 + 8) {
                    t.copy_from_slice(src);
                }
            }
            for (k, cell) in block.iter_mut().enumerate() {
                if used == PANEL {
                    // Constant trip counts: the copy becomes shuffles.
                    *cell = core::array::from_fn(|j| tile[j][k]);
                } else {
                    for (j, slot) in cell.iter_mut().enumerate().take(used) {
                        *slot = tile[j][k];
                    }
                }
            }
            continue;
        }
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

/// How every pass split by panels divides `count` panels between the two sides of a hand-off
/// (recursively, while `par` has threads to spare, and at least 2 panels). One rule for all:
/// in training each thread then meets the same panels in the forward pass
/// ([`SparseInput::affine_by_panels`]), the backward pass ([`split_panels`]) and the
/// optimizer's update in panels, so they stay in its core's cache.
pub(crate) fn panels_in_first_half(count: usize) -> usize {
    count / 2
}

/// Whether a pass split by panels between two threads also splits the last panel: when it is
/// narrow and the others are even in number (400 outputs: 12 panels of 32 and one of 16).
/// Each thread then takes [`panels_in_first_half`] of the whole panels and half of the narrow
/// one's rows (forward) or inputs (backward, and the optimizer's update in panels): the
/// kernels' loads are per term, so a narrow
/// panel costs about as much as a whole one, and 6 against 7 panels left one core waiting for
/// the other in every pass. Values are unchanged (each row and each input is summed alone).
pub(crate) fn splits_narrow_panel(panels: usize, outputs: usize, par: Par) -> bool {
    parallelism_degree(par) > 1 && panels % 2 == 1 && !outputs.is_multiple_of(PANEL)
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
    fn run(&self, first_panel: usize, gt: &mut [T], dt: &mut [T], grad: &mut [T]);
}

/// Splits `panels` panels (`gt`: `inputs x PANEL` values each; `dt`: `GRAD_BLOCK x PANEL`
/// each; `grad`: `PANEL` rows of `inputs` each, the last possibly fewer) between the threads
/// of `par`.
#[allow(clippy::too_many_arguments)]
fn split_panels<T: Float, K: PanelTask<T>>(
    gt: &mut [T],
    dt: &mut [T],
    grad: &mut [T],
    first: usize,
    panels: usize,
    inputs: usize,
    par: Par,
    task: &K,
) {
    if parallelism_degree(par) <= 1 || panels < 2 {
        task.run(first, gt, dt, grad);
        return;
    }
    let half = panels_in_first_half(panels);
    let (ga, gb) = gt.split_at_mut((half * inputs * PANEL).min(gt.len()));
    let (da, db) = dt.split_at_mut((half * GRAD_BLOCK * PANEL).min(dt.len()));
    let (wa, wb) = grad.split_at_mut((half * PANEL * inputs).min(grad.len()));
    join_raw(
        |p| split_panels(ga, da, wa, first, half, inputs, p, task),
        |p| split_panels(gb, db, wb, first + half, panels - half, inputs, p, task),
        par,
    );
}

/// A kernel call run through [`pulp::Arch::dispatch`]: `with_simd` is inlined into a function
/// compiled for the best instruction set the CPU has (AVX2 + FMA, or AVX-512, on x86-64), and
/// the kernels are `#[inline(always)]` into it, so their plain loops vectorize and `mul_add`
/// is one instruction.
struct ForwardCall<'k, 'a, T> {
    kernel: &'k Forward<'a, T>,
    first_row: usize,
    out: &'k mut [T],
}

impl<T: Float> pulp::WithSimd for ForwardCall<'_, '_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        self.kernel
            .kernel(self.first_row, self.out, group_lanes::<T, S>());
    }
}

/// Panels `first_panel..` of [`Forward`] for every row of its batch, each panel's rows
/// into `zt` (one cell of [`PANEL`] values per row).
struct PanelForwardCall<'k, 'a, T> {
    kernel: &'k Forward<'a, T>,
    first_panel: usize,
    zt: &'k mut [T],
}

impl<T: Float> pulp::WithSimd for PanelForwardCall<'_, '_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let k = self.kernel;
        let lanes = group_lanes::<T, S>();
        let rows = k.row_ptr.len().saturating_sub(1);
        let (zcells, _) = self.zt.as_chunks_mut::<PANEL>();
        for (p, zpanel) in (self.first_panel..).zip(zcells.chunks_mut(rows.max(1))) {
            let Some((cells, init, w)) = k.panel(p) else {
                return;
            };
            for (cell, span) in zpanel.iter_mut().zip(k.row_ptr.windows(2)) {
                let (s, e) = (span[0], span[1]);
                let (Some(ix), Some(vs)) = (k.idx.get(s..e), k.val.get(s..e)) else {
                    continue;
                };
                *cell = panel_dot(init, cells, ix, vs, lanes, w);
            }
        }
    }
}

struct BackwardCall<'k, 'a, T> {
    kernel: &'k Backward<'a, T>,
    first_panel: usize,
    cols: Range<usize>,
    gt: &'k mut [T],
    dt: &'k mut [T],
    grad: &'k mut [T],
}

impl<T: Float> pulp::WithSimd for BackwardCall<'_, '_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        self.kernel.kernel(
            self.first_panel,
            self.cols,
            self.gt,
            self.dt,
            self.grad,
            group_lanes::<T, S>(),
        );
    }
}

#[derive(Clone, Copy)]
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

/// A weight panel's cells, its outputs' constants and its number of outputs.
type PanelView<'a, T> = (&'a [[T; PANEL]], [T; PANEL], usize);

impl<T: Float> Forward<'_, T> {
    /// Panel `p` for `rows` of the batch only, into `zt` (one cell per row).
    fn panel_rows(&self, p: usize, rows: Range<usize>, zt: &mut [T]) {
        let sub = Forward {
            row_ptr: self.row_ptr.get(rows.start..=rows.end).unwrap_or(&[]),
            ..*self
        };
        pulp::Arch::new().dispatch(PanelForwardCall {
            kernel: &sub,
            first_panel: p,
            zt,
        });
    }

    /// Panel `p`: its cells (one per input), its outputs' constants (zero past the last
    /// output) and how many outputs it has.
    #[inline(always)]
    fn panel(&self, p: usize) -> Option<PanelView<'_, T>> {
        let size = self.inputs * PANEL;
        let o0 = p * PANEL;
        let panel = self.wt.get(p * size..(p + 1) * size)?;
        let binit = self.init.get(o0..(o0 + PANEL).min(self.outputs))?;
        let mut init = [T::from_f64(0.0); PANEL];
        init[..binit.len()].copy_from_slice(binit);
        Some((panel.as_chunks::<PANEL>().0, init, binit.len()))
    }

    /// For each block of rows, each panel, each row: `acc = init + sum_k val_k * WT[idx_k,
    /// panel]` ([`panel_dot`]: several accumulators hide the FMA latency). A block's non-zeros
    /// are read from memory once and stay in cache for the other panels.
    #[inline(always)]
    fn kernel(&self, first_row: usize, out: &mut [T], lanes: usize) {
        let n = self.outputs;
        let rows = out.len() / n;
        let ptrs = self
            .row_ptr
            .get(first_row..first_row + rows + 1)
            .unwrap_or(&[]);
        // Blocks of rows whose non-zeros stay in L2 while each panel (in L1) serves them all.
        for b0 in (0..rows).step_by(ROW_BLOCK) {
            let b1 = (b0 + ROW_BLOCK).min(rows);
            let (Some(oblock), Some(pblock)) = (out.get_mut(b0 * n..b1 * n), ptrs.get(b0..=b1))
            else {
                break;
            };
            for p in 0..n.div_ceil(PANEL) {
                let Some((cells, init, w)) = self.panel(p) else {
                    break;
                };
                let o0 = p * PANEL;
                for (orow, span) in oblock.chunks_exact_mut(n).zip(pblock.windows(2)) {
                    let (s, e) = (span[0], span[1]);
                    let (Some(ix), Some(vs)) = (self.idx.get(s..e), self.val.get(s..e)) else {
                        continue;
                    };
                    let acc = panel_dot(init, cells, ix, vs, lanes, w);
                    // A full panel as one fixed-size store (a run-time length is a memcpy
                    // call per row and panel).
                    match <&mut [T; PANEL]>::try_from(&mut orow[o0..o0 + w]) {
                        Ok(dst) => *dst = acc,
                        Err(_) => orow[o0..o0 + w].copy_from_slice(&acc[..w]),
                    }
                }
            }
        }
    }
}

/// An index into a panel's rows: a column (`u32`, forward) or a row within a block of the
/// batch (`u8`, backward).
trait PanelIndex: Copy {
    fn at(self) -> usize;
}

impl PanelIndex for u32 {
    #[inline(always)]
    fn at(self) -> usize {
        self as usize
    }
}

impl PanelIndex for u8 {
    #[inline(always)]
    fn at(self) -> usize {
        usize::from(self)
    }
}

/// `init + sum_k vs[k] * cells[ix[k]]`, the terms spread over several accumulators (hiding the
/// FMA and load latencies) added at the end.
///
/// The accumulators must fit in the vector registers (AVX2 has sixteen of 32 bytes, AVX-512
/// thirty-two of 64), or they spill to the stack on every term. With 32 lanes per vector
/// (AVX-512 `f32`), four accumulators of the whole panel; with 16 (AVX2 `f32`, AVX-512 `f64`),
/// two ([`two_accumulator_dot`]), or four of the first 16 lanes when no more are used; with
/// fewer, four accumulators per group of 8 lanes ([`lane_group_dot`]), groups wholly past the
/// `width` used outputs skipped. The choice depends on the vector width and `width` only, so
/// results do not depend on the thread count.
#[inline(always)]
fn panel_dot<T: Float, I: PanelIndex>(
    init: [T; PANEL],
    cells: &[[T; PANEL]],
    ix: &[I],
    vs: &[T],
    lanes: usize,
    width: usize,
) -> [T; PANEL] {
    let mut out = init;
    match lanes {
        32.. => four_accumulator_dot(&mut out, cells, ix, vs),
        // A narrow last panel: one group of 16 lanes.
        16 if width <= 16 => lane_group_dot::<T, I, 16>(&mut out, 0, cells, ix, vs),
        16 => two_accumulator_dot(&mut out, cells, ix, vs),
        _ => {
            for off in (0..width.min(PANEL)).step_by(8) {
                lane_group_dot::<T, I, 8>(&mut out, off, cells, ix, vs);
            }
        }
    }
    out
}

/// [`panel_dot`] over all lanes with two accumulators (terms `k mod 2`): for vectors of 16
/// lanes (AVX2 `f32`, AVX-512 `f64`), where four accumulators of the whole panel would not fit
/// in the registers. Each term then loads its index and value once for the panel's 32 lanes
/// instead of once per group of 16, which made the first layer's kernels about 25% faster
/// on an AVX2 machine than two groups of four accumulators.
#[inline(always)]
fn two_accumulator_dot<T: Float, I: PanelIndex>(
    out: &mut [T; PANEL],
    cells: &[[T; PANEL]],
    ix: &[I],
    vs: &[T],
) {
    let zero = T::from_f64(0.0);
    let mut a = *out;
    let mut b = [zero; PANEL];
    let (ix2, ix1) = ix.as_chunks::<2>();
    let (vs2, vs1) = vs.as_chunks::<2>();
    for (i, v) in ix2.iter().zip(vs2) {
        let (Some(w0), Some(w1)) = (cells.get(i[0].at()), cells.get(i[1].at())) else {
            break;
        };
        for j in 0..PANEL {
            a[j] = w0[j].mul_add(v[0], a[j]);
            b[j] = w1[j].mul_add(v[1], b[j]);
        }
    }
    for (&i, &v) in ix1.iter().zip(vs1) {
        if let Some(w0) = cells.get(i.at()) {
            for j in 0..PANEL {
                a[j] = w0[j].mul_add(v, a[j]);
            }
        }
    }
    for j in 0..PANEL {
        a[j] += b[j];
    }
    *out = a;
}

/// [`panel_dot`] over all lanes with four accumulators (terms `k mod 4`, added as
/// `a + (b + (c + d))`): for vectors of 32 lanes (AVX-512 `f32`), where the eight vectors of
/// accumulators fit in the registers. The terms index the panel rows directly, as in
/// [`two_accumulator_dot`]: copying each row into a local array first (as
/// [`lane_group_dot`] does) kept every accumulator on the stack under AVX-512, a load and a
/// store around each FMA, and made the sparse path slower than the dense one.
#[inline(always)]
fn four_accumulator_dot<T: Float, I: PanelIndex>(
    out: &mut [T; PANEL],
    cells: &[[T; PANEL]],
    ix: &[I],
    vs: &[T],
) {
    let zero = T::from_f64(0.0);
    let mut a = *out;
    let mut b = [zero; PANEL];
    let mut c = [zero; PANEL];
    let mut d = [zero; PANEL];
    let (ix4, ix1) = ix.as_chunks::<4>();
    let (vs4, vs1) = vs.as_chunks::<4>();
    for (i, v) in ix4.iter().zip(vs4) {
        let (Some(w0), Some(w1), Some(w2), Some(w3)) = (
            cells.get(i[0].at()),
            cells.get(i[1].at()),
            cells.get(i[2].at()),
            cells.get(i[3].at()),
        ) else {
            break;
        };
        for j in 0..PANEL {
            a[j] = w0[j].mul_add(v[0], a[j]);
            b[j] = w1[j].mul_add(v[1], b[j]);
            c[j] = w2[j].mul_add(v[2], c[j]);
            d[j] = w3[j].mul_add(v[3], d[j]);
        }
    }
    for (&i, &v) in ix1.iter().zip(vs1) {
        if let Some(w0) = cells.get(i.at()) {
            for j in 0..PANEL {
                a[j] = w0[j].mul_add(v, a[j]);
            }
        }
    }
    for j in 0..PANEL {
        a[j] += b[j] + (c[j] + d[j]);
    }
    *out = a;
}

/// Lanes `off..off + W` of [`panel_dot`]. The accumulators are arrays passed by value and
/// indexed only by constants, so they live in registers.
#[inline(always)]
fn lane_group_dot<T: Float, I: PanelIndex, const W: usize>(
    out: &mut [T; PANEL],
    off: usize,
    cells: &[[T; PANEL]],
    ix: &[I],
    vs: &[T],
) {
    let zero = T::from_f64(0.0);
    let Some(init) = out.get(off..off + W) else {
        return;
    };
    let mut a = [zero; W];
    a.copy_from_slice(init);
    let mut b = [zero; W];
    let mut c = [zero; W];
    let mut d = [zero; W];
    let lane = |cell: &[T; PANEL]| -> [T; W] {
        let mut r = [zero; W];
        if let Some(src) = cell.get(off..off + W) {
            r.copy_from_slice(src);
        }
        r
    };
    let (ix4, ix1) = ix.as_chunks::<4>();
    let (vs4, vs1) = vs.as_chunks::<4>();
    for (i, v) in ix4.iter().zip(vs4) {
        let (Some(w0), Some(w1), Some(w2), Some(w3)) = (
            cells.get(i[0].at()),
            cells.get(i[1].at()),
            cells.get(i[2].at()),
            cells.get(i[3].at()),
        ) else {
            break;
        };
        let (w0, w1, w2, w3) = (lane(w0), lane(w1), lane(w2), lane(w3));
        for j in 0..W {
            a[j] = w0[j].mul_add(v[0], a[j]);
            b[j] = w1[j].mul_add(v[1], b[j]);
            c[j] = w2[j].mul_add(v[2], c[j]);
            d[j] = w3[j].mul_add(v[3], d[j]);
        }
    }
    for (&i, &v) in ix1.iter().zip(vs1) {
        if let Some(w0) = cells.get(i.at()) {
            let w0 = lane(w0);
            for j in 0..W {
                a[j] = w0[j].mul_add(v, a[j]);
            }
        }
    }
    for j in 0..W {
        a[j] += b[j] + (c[j] + d[j]);
    }
    if let Some(dst) = out.get_mut(off..off + W) {
        dst.copy_from_slice(&a);
    }
}

/// Lanes per group of [`panel_dot`] for vectors of `S`: four accumulators in eight registers.
#[inline(always)]
fn group_lanes<T: Float, S: pulp::Simd>() -> usize {
    2 * core::mem::size_of::<S::f32s>() / T::BYTES
}

struct Backward<'a, T> {
    col_ptr: &'a [usize],
    crow: &'a [u8],
    cval: &'a [T],
    row_ptr: &'a [usize],
    delta: &'a [T],
    bias_grad: &'a [T],
    c: T,
    inputs: usize,
    outputs: usize,
    /// Whether the summed panels are transposed into the rows of `grad` at the end.
    into_rows: bool,
}

impl<T: Float> PanelTask<T> for Backward<'_, T> {
    fn run(&self, first_panel: usize, gt: &mut [T], dt: &mut [T], grad: &mut [T]) {
        self.run_inputs(first_panel, 0..self.inputs, gt, dt, grad);
    }
}

impl<T: Float> Backward<'_, T> {
    /// [`PanelTask::run`] over the cells of inputs `cols` only (`gt` holds those cells of each
    /// panel); `grad` is written only for all inputs.
    fn run_inputs(
        &self,
        first_panel: usize,
        cols: Range<usize>,
        gt: &mut [T],
        dt: &mut [T],
        grad: &mut [T],
    ) {
        pulp::Arch::new().dispatch(BackwardCall {
            kernel: self,
            first_panel,
            cols,
            gt,
            dt,
            grad,
        });
    }

    /// For this task's panels: `GT[i, panel] = c * bias_grad[panel]`; then per block of
    /// [`GRAD_BLOCK`] rows, the block's `delta[:, panel]` is copied into a contiguous buffer
    /// and each input column `i` adds `sum over the block's rows b with x[b, i] != c of
    /// val * delta[b, panel]` (in registers, in a fixed order: [`panel_dot`]) to
    /// `GT[i, panel]`; finally (if `into_rows`, and `cols` are all the inputs) `GT` is
    /// transposed into `grad`. Only the cells of inputs `cols` are summed (`gt` holds those).
    #[inline(always)]
    fn kernel(
        &self,
        first_panel: usize,
        cols: Range<usize>,
        gt: &mut [T],
        dt: &mut [T],
        grad: &mut [T],
        lanes: usize,
    ) {
        let zero = T::from_f64(0.0);
        let n = self.outputs;
        let inputs = self.inputs;
        let span = cols.len();
        let panel_cols = |k: usize| {
            let o0 = (first_panel + k) * PANEL;
            (o0, PANEL.min(n - o0))
        };
        for (k, block) in gt.chunks_exact_mut(span * PANEL).enumerate() {
            let (o0, w) = panel_cols(k);
            let mut corr = [zero; PANEL];
            if self.c != zero {
                for (cj, &b) in corr.iter_mut().zip(&self.bias_grad[o0..o0 + w]) {
                    *cj = self.c * b;
                }
            }
            let (cells, _) = block.as_chunks_mut::<PANEL>();
            cells.iter_mut().for_each(|cell| *cell = corr);
        }
        let rows = self.row_ptr.len().saturating_sub(1);
        for (b, b0) in (0..rows).step_by(GRAD_BLOCK).enumerate() {
            let b1 = (b0 + GRAD_BLOCK).min(rows);
            let first_ptr = b * (inputs + 1);
            let (Some(dblock), Some(ptr), Some(&base)) = (
                self.delta.get(b0 * n..b1 * n),
                self.col_ptr
                    .get(first_ptr + cols.start..=first_ptr + cols.end),
                self.row_ptr.get(b0),
            ) else {
                break;
            };
            for (k, (block, dpanel)) in gt
                .chunks_exact_mut(span * PANEL)
                .zip(dt.chunks_exact_mut(GRAD_BLOCK * PANEL))
                .enumerate()
            {
                let (o0, w) = panel_cols(k);
                let (dcells, _) = dpanel.as_chunks_mut::<PANEL>();
                for (cell, drow) in dcells.iter_mut().zip(dblock.chunks_exact(n)) {
                    match <&[T; PANEL]>::try_from(&drow[o0..o0 + w]) {
                        Ok(src) => *cell = *src,
                        // Zero lanes past the layer: the buffer may have held a whole panel.
                        Err(_) => {
                            cell[..w].copy_from_slice(&drow[o0..o0 + w]);
                            cell[w..].fill(zero);
                        }
                    }
                }
                let dcells = &dcells[..b1 - b0];
                let (cells, _) = block.as_chunks_mut::<PANEL>();
                for (cell, span) in cells.iter_mut().zip(ptr.windows(2)) {
                    let (s, e) = (base + span[0], base + span[1]);
                    if s == e {
                        continue;
                    }
                    let (Some(rs), Some(vs)) = (self.crow.get(s..e), self.cval.get(s..e)) else {
                        continue;
                    };
                    *cell = panel_dot(*cell, dcells, rs, vs, lanes, w);
                }
            }
        }
        if !self.into_rows || span != inputs {
            return;
        }
        for (block, gw) in gt
            .chunks_exact(inputs * PANEL)
            .zip(grad.chunks_mut(PANEL * inputs))
        {
            let (cells, _) = block.as_chunks::<PANEL>();
            panel_into_rows(cells, gw, inputs);
        }
    }
}

/// One panel's cells (`inputs` cells of [`PANEL`] outputs) back into the rows of `rows`
/// (`[used outputs, inputs]`): tiles of 8 cells become [`PANEL`] runs of 8 values, so each
/// row is written 8 values at a time instead of one value per cell (whose stride would be a
/// whole cell).
#[inline(always)]
pub(crate) fn panel_into_rows<T: Float>(cells: &[[T; PANEL]], rows: &mut [T], inputs: usize) {
    #[cfg(target_arch = "x86_64")]
    if let (Some(c), Some(r), Some(simd)) = (
        T::as_f32_slice(cells.as_flattened()),
        T::as_f32_slice_mut(rows),
        pulp::x86::V4::try_new(),
    ) && avx512::panel_into_rows(simd, c, r, inputs)
    {
        return;
    }
    let used = rows.len() / inputs.max(1);
    let (tiles, rest) = cells.as_chunks::<8>();
    for (t, tile) in tiles.iter().enumerate() {
        let i0 = t * 8;
        // Constant trip counts: the transposition becomes shuffles.
        let runs: [[T; 8]; PANEL] = core::array::from_fn(|j| core::array::from_fn(|k| tile[k][j]));
        for (run, grow) in runs.iter().zip(rows.chunks_exact_mut(inputs)).take(used) {
            if let Some(dst) = grow.get_mut(i0..i0 + 8) {
                dst.copy_from_slice(run);
            }
        }
    }
    let i0 = tiles.len() * 8;
    for (j, grow) in rows.chunks_exact_mut(inputs).enumerate() {
        for (g, cell) in grow.iter_mut().skip(i0).zip(rest) {
            *g = cell[j];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows with runs of background, ink, NaN and -0 (which equals 0), of lengths around the
    /// vector width and the AVX-512 staging segment.
    fn awkward_rows(rows: usize, inputs: usize, c: f32) -> Vec<f32> {
        (0..rows * inputs)
            .map(|i| match (i * 2_654_435_761) % 11 {
                0..=5 => c,
                6 => -0.0,
                7 => f32::NAN,
                _ => (i % 97) as f32 * 0.37 - 3.0,
            })
            .collect()
    }

    /// The tiled transposition of a gradient panel writes what one value per cell would.
    #[test]
    fn panel_into_rows_matches_the_plain_transposition() {
        for inputs in [1usize, 7, 8, 9, 16, 70, 400, 784] {
            for used in [1usize, 16, 31, PANEL] {
                let cells: Vec<[f32; PANEL]> = (0..inputs)
                    .map(|i| core::array::from_fn(|j| (i * PANEL + j) as f32))
                    .collect();
                let mut rows = vec![-1.0f32; used * inputs];
                panel_into_rows(&cells, &mut rows, inputs);
                for (j, row) in rows.chunks_exact(inputs).enumerate() {
                    for (i, &g) in row.iter().enumerate() {
                        assert_eq!(g, cells[i][j], "{inputs} inputs, {used} rows: ({j}, {i})");
                    }
                }
            }
        }
    }

    /// The weight's rows into panels, for shapes the AVX-512 blocks of 16 x 16 take whole, in
    /// part (a half-used last panel) or not at all (widths or inputs not a multiple of 16):
    /// each cell holds its input's value of each used output, the padding stays zero, on one
    /// thread or split between two.
    #[test]
    fn panels_match_the_plain_transposition() {
        for inputs in [7usize, 16, 40, 400, 784] {
            for outputs in [5usize, 16, 32, 48, 100, 400] {
                let weight: Vec<f32> = (0..outputs * inputs).map(|v| v as f32 + 0.5).collect();
                let panels = outputs.div_ceil(PANEL);
                for par in [Par::Seq, Par::rayon(2)] {
                    let mut wt = vec![0.0f32; panels * inputs * PANEL];
                    transpose_panels(&weight, inputs, outputs, 0, panels, &mut wt, par);
                    for (n, &v) in wt.iter().enumerate() {
                        let (p, i, j) = (n / (inputs * PANEL), (n / PANEL) % inputs, n % PANEL);
                        let o = p * PANEL + j;
                        let want = if o < outputs {
                            weight[o * inputs + i]
                        } else {
                            0.0
                        };
                        assert_eq!(
                            v, want,
                            "{outputs} x {inputs}: panel {p}, input {i}, lane {j}"
                        );
                    }
                }
            }
        }
    }

    /// Optimizer moments move between the layouts without loss: rows into panels is the
    /// weight's transposition into panels, and back gives the rows bit for bit.
    #[test]
    fn panel_layout_round_trips() {
        for (inputs, outputs) in [(7usize, 5usize), (40, 48), (784, 100), (13, 400)] {
            let rows: Vec<f32> = (0..outputs * inputs)
                .map(|v| v as f32 * 0.37 - 9.0)
                .collect();
            // Garbage first: the padding past the last output must come out zero.
            let mut panels = vec![f32::NAN; panel_layout_len(inputs, outputs)];
            rows_to_panel_layout(&rows, inputs, outputs, &mut panels);
            let mut wt = vec![0.0f32; outputs.div_ceil(PANEL) * inputs * PANEL];
            transpose_into_panels(&rows, inputs, outputs, &mut wt, Par::Seq);
            assert!(panels == wt, "{outputs} x {inputs}: panels");
            let mut back = vec![f32::NAN; outputs * inputs];
            panel_layout_to_rows(&panels, inputs, &mut back);
            assert!(back == rows, "{outputs} x {inputs}: back to rows");
        }
    }

    /// Auto judges a batch's density on its own rows, not on the workspace's largest batch: a
    /// partial batch of a big workspace goes sparse exactly when a full one that dense would.
    #[test]
    fn auto_judges_partial_batches_by_their_own_rows() {
        let (rows, inputs, max_batch) = (16, 50, 64);
        let batch_at = |percent: usize| -> Vec<f32> {
            (0..rows * inputs)
                .map(|i| {
                    if (i * 7) % 100 < percent {
                        1.0 + (i % 3) as f32
                    } else {
                        0.0
                    }
                })
                .collect()
        };
        for (percent, sparse) in [(30, true), (44, true), (46, false), (60, false)] {
            let x = batch_at(percent);
            let mut s = SparseInput::<f32>::default();
            s.prepare(&x, rows, inputs, max_batch, InputPath::Auto, Par::Seq);
            assert_eq!(s.background.is_some(), sparse, "{percent}% non-zero");
            // The same density in a full batch decides the same way.
            let full: Vec<f32> = x.iter().copied().cycle().take(max_batch * inputs).collect();
            s.prepare(
                &full,
                max_batch,
                inputs,
                max_batch,
                InputPath::Auto,
                Par::Seq,
            );
            assert_eq!(
                s.background.is_some(),
                sparse,
                "{percent}% non-zero, full batch"
            );
        }
    }

    /// A fixed input is kept while the cache has room; one that does not fit stays in the
    /// scratch buffers and is compressed again only when another input came in between. Either
    /// way each pass sees exactly the compression a fresh workspace would build.
    #[test]
    fn fixed_inputs_are_kept_up_to_the_budget() {
        let (rows, inputs) = (24, 70);
        let x1 = awkward_rows(rows, inputs, 0.0);
        let x2: Vec<f32> = x1.iter().rev().map(|v| v * 0.5).collect();
        let fresh = |x: &[f32]| {
            let mut s = SparseInput::<f32>::default();
            s.prepare(x, rows, inputs, rows, InputPath::Sparse, Par::Seq);
            s.current().clone()
        };
        let (f1, f2) = (fresh(&x1), fresh(&x2));
        let same = |a: &Compressed<f32>, b: &Compressed<f32>| {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            a.row_ptr == b.row_ptr
                && a.idx.get(..a.entries()) == b.idx.get(..b.entries())
                && bits(a.val.get(..a.entries()).unwrap_or(&[]))
                    == bits(b.val.get(..b.entries()).unwrap_or(&[]))
                && a.background.map(f32::to_bits) == b.background.map(f32::to_bits)
        };
        let mut s = SparseInput::<f32>::default();
        s.set_fixed(true);
        s.cache_limit = Some(f1.kept_bytes(inputs));
        for (x, f, kept) in [
            (&x1, &f1, true),
            (&x2, &f2, false),
            (&x2, &f2, false),
            (&x1, &f1, true),
            (&x2, &f2, false),
        ] {
            s.prepare(x, rows, inputs, rows, InputPath::Sparse, Par::Seq);
            assert!(same(s.current(), f));
            assert_eq!(s.active.is_some(), kept);
        }
        assert_eq!(s.cache.len(), 1);
        assert_eq!(s.cached_bytes, f1.kept_bytes(inputs));
        // Forgetting: the next pass compresses afresh.
        s.set_fixed(true);
        assert!(s.cache.is_empty() && s.active.is_none() && s.built_for.is_none());
    }

    /// The compression (AVX-512 where the CPU has it) against the plain per-value loop.
    #[test]
    fn compressed_rows_match_a_plain_loop() {
        for inputs in [1usize, 15, 16, 17, 784, 1023, 1024, 1025, 2100] {
            for c in [0.0f32, -0.424_212_4] {
                let rows = 37;
                let x = awkward_rows(rows, inputs, c);
                let (mut want_i, mut want_v) = (Vec::new(), Vec::new());
                let mut want_counts = Vec::new();
                let mut row_ptr = vec![0usize];
                for row in x.chunks_exact(inputs) {
                    for (k, &v) in row.iter().enumerate() {
                        if v != c {
                            want_i.push(k as u32);
                            want_v.push(v - c);
                        }
                    }
                    row_ptr.push(want_i.len());
                    let zeros = row.iter().filter(|&&v| v != 0.0).count() as u32;
                    let firsts = row.iter().filter(|&&v| v != c).count() as u32;
                    want_counts.push([zeros, firsts]);
                }
                let mut idx = vec![0u32; want_i.len()];
                let mut val = vec![0.0f32; want_v.len()];
                compress_rows(&x, inputs, c, &row_ptr, &mut idx, &mut val, Par::Seq);
                assert_eq!(idx, want_i, "{inputs} inputs, c = {c}");
                let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&val), bits(&want_v), "{inputs} inputs, c = {c}");
                let mut counts = vec![[0u32; 2]; rows];
                count_rows(&x, inputs, c, &mut counts);
                assert_eq!(counts, want_counts, "{inputs} inputs, c = {c}");
            }
        }
    }

    #[test]
    fn row_sums_match_a_left_to_right_sum_bit_for_bit() {
        for (rows, inputs) in [
            (1usize, 784usize),
            (7, 5),
            (8, 1),
            (9, 784),
            (33, 13),
            (300, 784),
        ] {
            let weight: Vec<f32> = (0..rows * inputs)
                .map(|i| ((i * 7919 % 1013) as f32 - 506.0) * 1.37e-3)
                .collect();
            let bias: Vec<f32> = (0..rows).map(|o| o as f32 * 0.01 - 0.3).collect();
            let c = -0.424_212_4_f32;
            let want: Vec<u32> = weight
                .chunks_exact(inputs)
                .zip(&bias)
                .map(|(row, &b)| (b + c * row.iter().fold(0.0f32, |s, &w| s + w)).to_bits())
                .collect();
            for par in [Par::Seq, Par::rayon(2), Par::rayon(3)] {
                let mut got = bias.clone();
                row_sums_times(&weight, inputs, c, &mut got, par);
                let got: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
                assert_eq!(got, want, "{rows} rows of {inputs}, {par:?}");
            }
        }
    }
}
