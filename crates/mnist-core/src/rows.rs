//! Row chunks: how a batch is split between threads.
//!
//! Every per-example pass of a step (each layer's affine map, activation, dropout mask, the
//! loss gradient and the deltas) works on rows independently, so a batch is cut into a fixed
//! number of chunks of consecutive rows and each chunk runs on one thread with sequential
//! kernels (faer `Par::Seq` products instead of faer's barrier-synchronized parallel GEMM,
//! which on 128-256-row batches spent much of its time waiting). The cut depends on the batch
//! size only, never on the thread count, so every value is computed the same way on any
//! number of threads. The one exception is a dense layer's forward product, run once per
//! thread over all of its chunks' rows ([`for_chunks_after`]) where faer's kernels give each
//! row the same values whatever the number of rows in the call.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use faer::Par;
use faer::utils::thread::parallelism_degree;

use crate::Float;

/// Runs `a` and `b` on two threads of `par`, each with half of its threads, as faer's
/// `join_raw` does, except for how the caller waits. When it is done with `a` while another
/// thread still runs `b`, it spins until `b` is done (up to [`JOIN_SPIN`]). Waiting in rayon
/// instead puts the thread to sleep after a few rounds of yielding, on a futex that the end of
/// `b` must then wake: about 30 us per pass on this machine's VMs, where the two halves of a
/// pass often end that far apart.
pub(crate) fn join_raw(a: impl Send + FnOnce(Par), b: impl Send + FnOnce(Par), par: Par) {
    let threads = parallelism_degree(par);
    if threads <= 1 {
        a(Par::Seq);
        b(Par::Seq);
        return;
    }
    let inner = Par::rayon(threads - threads / 2);
    let (started, done) = (AtomicBool::new(false), AtomicBool::new(false));
    rayon::join(
        || {
            a(inner);
            // `b` not started: rayon runs it here next, unless another thread takes it first
            // (and then rayon's own wait applies).
            if started.load(Ordering::Acquire) {
                spin_until(&done, JOIN_SPIN);
            }
        },
        || {
            started.store(true, Ordering::Release);
            b(inner);
            done.store(true, Ordering::Release);
        },
    );
}

/// Longest the caller of [`join_raw`] spins for the other half. Past it (a long `b`, or one
/// that panicked) rayon's wait takes over, which also lets the caller run `b`'s nested work.
const JOIN_SPIN: Duration = Duration::from_micros(200);

/// Spins until `flag` is set or `limit` has passed.
fn spin_until(flag: &AtomicBool, limit: Duration) {
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            if flag.load(Ordering::Acquire) {
                return;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= limit {
            return;
        }
    }
}

/// Fewest rows per chunk: below this, a product is too small to be worth its own call.
const MIN_CHUNK_ROWS: usize = 64;

/// Most chunks per batch (enough to balance up to 16 threads).
const MAX_CHUNKS: usize = 16;

/// How many chunks a batch of `batch` rows is cut into: 1 below 128 rows, else the largest
/// power of two that keeps chunks at least 64 rows, at most 16.
pub(crate) fn chunk_count(batch: usize) -> usize {
    let most = (batch / MIN_CHUNK_ROWS).clamp(1, MAX_CHUNKS);
    if most < 2 { 1 } else { 1 << most.ilog2() }
}

/// First row of chunk `c` of `chunks` over `batch` rows (sizes differ by at most one row).
pub(crate) fn chunk_start(batch: usize, chunks: usize, c: usize) -> usize {
    batch * c / chunks.max(1)
}

/// Buffers that can be cut between two consecutive row ranges.
pub(crate) trait SplitRows: Sized + Send {
    /// Cuts after the first `rows` rows.
    fn split_rows(self, rows: usize) -> (Self, Self);
}

/// Row-major rows of `width` values, written by a chunk.
pub(crate) struct RowsMut<'a, T> {
    pub(crate) data: &'a mut [T],
    pub(crate) width: usize,
}

/// Row-major rows of `width` values, read by a chunk.
#[derive(Clone, Copy)]
pub(crate) struct Rows<'a, T> {
    pub(crate) data: &'a [T],
    pub(crate) width: usize,
}

impl<'a, T> RowsMut<'a, T> {
    pub(crate) fn new(data: &'a mut [T], width: usize) -> Self {
        Self { data, width }
    }
}

impl<'a, T> Rows<'a, T> {
    pub(crate) fn new(data: &'a [T], width: usize) -> Self {
        Self { data, width }
    }
}

impl<T: Send> SplitRows for RowsMut<'_, T> {
    fn split_rows(self, rows: usize) -> (Self, Self) {
        let at = (rows * self.width).min(self.data.len());
        let (a, b) = self.data.split_at_mut(at);
        (
            Self {
                data: a,
                width: self.width,
            },
            Self {
                data: b,
                width: self.width,
            },
        )
    }
}

impl<T: Sync> SplitRows for Rows<'_, T> {
    fn split_rows(self, rows: usize) -> (Self, Self) {
        let at = (rows * self.width).min(self.data.len());
        let (a, b) = self.data.split_at(at);
        (
            Self {
                data: a,
                width: self.width,
            },
            Self {
                data: b,
                width: self.width,
            },
        )
    }
}

impl<A: SplitRows> SplitRows for Option<A> {
    fn split_rows(self, rows: usize) -> (Self, Self) {
        match self {
            Some(a) => {
                let (x, y) = a.split_rows(rows);
                (Some(x), Some(y))
            }
            None => (None, None),
        }
    }
}

impl SplitRows for () {
    fn split_rows(self, _rows: usize) -> (Self, Self) {
        ((), ())
    }
}

/// One slot of `size` values per chunk of a batch (a chunk's partial result), cut with the
/// chunks' rows: the slot a chunk's `f` gets is exactly its own.
pub(crate) struct ChunkSlots<'a, T> {
    data: &'a mut [T],
    size: usize,
    batch: usize,
    chunks: usize,
    /// The first row of the first chunk held (a chunk boundary).
    first_row: usize,
}

impl<'a, T> ChunkSlots<'a, T> {
    /// Slots for the [`chunk_count`] chunks of a `batch`-row batch (`data` holds at least
    /// that many slots of `size`).
    pub(crate) fn new(data: &'a mut [T], size: usize, batch: usize) -> Self {
        Self {
            data,
            size,
            batch,
            chunks: chunk_count(batch),
            first_row: 0,
        }
    }

    /// The slot of the first chunk held.
    pub(crate) fn first(&mut self) -> &mut [T] {
        let end = self.size.min(self.data.len());
        &mut self.data[..end]
    }

    /// The chunk starting at `row` (or the number of chunks past the last row).
    fn chunk_at(&self, row: usize) -> usize {
        (0..self.chunks)
            .find(|&c| chunk_start(self.batch, self.chunks, c) >= row)
            .unwrap_or(self.chunks)
    }
}

impl<T: Send> SplitRows for ChunkSlots<'_, T> {
    fn split_rows(self, rows: usize) -> (Self, Self) {
        let at_row = self.first_row + rows;
        let slots = self.chunk_at(at_row) - self.chunk_at(self.first_row);
        let at = (slots * self.size).min(self.data.len());
        let (a, b) = self.data.split_at_mut(at);
        let (size, batch, chunks) = (self.size, self.batch, self.chunks);
        (
            Self {
                data: a,
                size,
                batch,
                chunks,
                first_row: self.first_row,
            },
            Self {
                data: b,
                size,
                batch,
                chunks,
                first_row: at_row,
            },
        )
    }
}

macro_rules! split_tuple {
    ($($name:ident),+) => {
        impl<$($name: SplitRows),+> SplitRows for ($($name,)+) {
            #[allow(non_snake_case)]
            fn split_rows(self, rows: usize) -> (Self, Self) {
                let ($($name,)+) = self;
                $(let $name = $name.split_rows(rows);)+
                (($($name.0,)+), ($($name.1,)+))
            }
        }
    };
}
split_tuple!(A, B);
split_tuple!(A, B, C);
split_tuple!(A, B, C, D);
split_tuple!(A, B, C, D, E);

/// Runs `f(chunk, rows, parts, inner)` for every chunk of a `batch`-row batch
/// ([`chunk_count`]), `parts` cut to the chunk's rows, chunks shared between the threads of
/// `par`. `inner` is the parallelism for the chunk's own kernels: `par` when the batch is one
/// chunk (so a 100-row batch still uses faer's parallel products), else `Par::Seq`.
pub(crate) fn for_chunks<P, F>(batch: usize, parts: P, par: Par, f: &F)
where
    P: SplitRows,
    F: Fn(usize, Range<usize>, P, Par) + Sync,
{
    for_chunks_after(batch, parts, par, &|_, _, _| {}, f);
}

/// [`for_chunks`], where each thread first runs `before(rows, &mut parts, inner)` once on all
/// the rows of the chunks it is given (consecutive), then `f` on each of them in order;
/// `inner` is the parallelism left for those rows (`Par::Seq` unless there are more threads
/// than chunks). A dense layer's product runs there: one GEMM per thread packs the weight
/// once, where one per chunk packed it once per chunk, and each chunk's next passes then read
/// the thread's own rows (a parallel GEMM over the whole batch left half of them in the other
/// core's cache). The rows `before` gets depend on the thread count: it must compute each
/// row the same way whatever the range (see `crate::dense::gemm_rows_are_independent`).
pub(crate) fn for_chunks_after<P, B, F>(batch: usize, parts: P, par: Par, before: &B, f: &F)
where
    P: SplitRows,
    B: Fn(Range<usize>, &mut P, Par) + Sync,
    F: Fn(usize, Range<usize>, P, Par) + Sync,
{
    let chunks = chunk_count(batch);
    if chunks == 1 {
        let mut parts = parts;
        before(0..batch, &mut parts, par);
        f(0, 0..batch, parts, par);
        return;
    }
    split(batch, chunks, 0..chunks, parts, par, before, f);
}

/// [`for_chunks_after`] for passes that start with a row-wise matrix product: `product(rows,
/// &mut parts, inner)` runs once per thread on all its rows when `per_thread` (where faer
/// gives each row the same bits whatever the rows in the call, see
/// `crate::dense::gemm_rows_are_independent`), else at the head of each chunk; then `f` on
/// each chunk.
pub(crate) fn for_chunks_with_product<P, G, F>(
    batch: usize,
    parts: P,
    par: Par,
    per_thread: bool,
    product: &G,
    f: &F,
) where
    P: SplitRows,
    G: Fn(Range<usize>, &mut P, Par) + Sync,
    F: Fn(usize, Range<usize>, P, Par) + Sync,
{
    for_chunks_after(
        batch,
        parts,
        par,
        &|rows, parts, inner| {
            if per_thread {
                product(rows, parts, inner);
            }
        },
        &|c, rows, mut parts, inner| {
            if !per_thread {
                product(rows.clone(), &mut parts, inner);
            }
            f(c, rows, parts, inner);
        },
    );
}

fn split<P, B, F>(
    batch: usize,
    chunks: usize,
    range: Range<usize>,
    parts: P,
    par: Par,
    before: &B,
    f: &F,
) where
    P: SplitRows,
    B: Fn(Range<usize>, &mut P, Par) + Sync,
    F: Fn(usize, Range<usize>, P, Par) + Sync,
{
    let (c0, c1) = (range.start, range.end);
    if parallelism_degree(par) <= 1 || c1 - c0 == 1 {
        // This thread's chunks, in order (a single chunk keeps any threads left for `before`).
        let mut rest = parts;
        let start = chunk_start(batch, chunks, c0);
        before(start..chunk_start(batch, chunks, c1), &mut rest, par);
        for c in c0..c1 {
            let (r0, r1) = (
                chunk_start(batch, chunks, c),
                chunk_start(batch, chunks, c + 1),
            );
            let (mine, tail) = rest.split_rows(r1 - r0);
            f(c, r0..r1, mine, Par::Seq);
            rest = tail;
        }
        return;
    }
    let mid = c0 + (c1 - c0) / 2;
    let rows = chunk_start(batch, chunks, mid) - chunk_start(batch, chunks, c0);
    let (a, b) = parts.split_rows(rows);
    join_raw(
        |p| split(batch, chunks, c0..mid, a, p, before, f),
        |p| split(batch, chunks, mid..c1, b, p, before, f),
        par,
    );
}

/// Fewest columns per thread of [`column_sums`].
const MIN_SPLIT_COLUMNS: usize = 16;

/// Fewest rows for which [`column_sums`] splits its columns between threads.
const MIN_SPLIT_ROWS: usize = 64;

/// `sums[j] = sum over the rows of x[row][j]` for row-major `x` of rows `width` wide, each
/// column summed in row order; the columns are split between the threads of `par` (at least
/// 16 each), which leaves every sum's order, and so its value, unchanged.
pub(crate) fn column_sums<T: Float>(x: &[T], width: usize, sums: &mut [T], par: Par) {
    let cols = sums.len().min(width);
    let (sums, rest) = sums.split_at_mut(cols);
    rest.iter_mut().for_each(|s| *s = T::from_f64(0.0));
    let par = if x.len() < MIN_SPLIT_ROWS * width {
        Par::Seq
    } else {
        par
    };
    column_sums_range(x, width, 0, sums, par);
}

/// [`column_sums`] of a batch's rows (`batch` rows of `width`) summed chunk by chunk: each
/// chunk's rows (in order) into its own slot of `partials` on the thread that holds them, then
/// the slots in chunk order. Where the bias gradient's column sums ran split by columns, each
/// thread read the other core's rows. The chunks depend on the batch size only, so the sums
/// do not depend on the thread count; one chunk (or `partials` short of the slots) is a plain
/// [`column_sums`].
pub(crate) fn column_sums_by_chunks<T: Float>(
    x: &[T],
    width: usize,
    batch: usize,
    sums: &mut [T],
    partials: &mut [T],
    par: Par,
) {
    let chunks = chunk_count(batch);
    let chunked = (chunks > 1 && sums.len() == width)
        .then(|| partials.get_mut(..chunks * width))
        .flatten();
    let (Some(x), Some(partials)) = (x.get(..batch * width), chunked) else {
        column_sums(x, width, sums, par);
        return;
    };
    let parts = (Rows::new(x, width), ChunkSlots::new(partials, width, batch));
    for_chunks(batch, parts, par, &|_, _, (rows, mut slot), _| {
        column_sums(rows.data, width, slot.first(), Par::Seq);
    });
    column_sums(partials, width, sums, Par::Seq);
}

/// [`column_sums`] of columns `first..first + sums.len()`.
fn column_sums_range<T: Float>(x: &[T], width: usize, first: usize, sums: &mut [T], par: Par) {
    let zero = T::from_f64(0.0);
    let cols = sums.len();
    if parallelism_degree(par) <= 1 || cols < 2 * MIN_SPLIT_COLUMNS {
        sums.iter_mut().for_each(|s| *s = zero);
        pulp::Arch::new().dispatch(ColumnSums {
            x,
            width,
            first,
            sums,
        });
        return;
    }
    let half = cols / 2;
    let (a, b) = sums.split_at_mut(half);
    join_raw(
        |p| column_sums_range(x, width, first, a, p),
        |p| column_sums_range(x, width, first + half, b, p),
        par,
    );
}

/// The sequential part of [`column_sums_range`], compiled for the CPU's widest vectors (rows
/// added in order, so the sums are the same on any instruction set).
struct ColumnSums<'a, T> {
    x: &'a [T],
    width: usize,
    first: usize,
    sums: &'a mut [T],
}

impl<T: Float> pulp::WithSimd for ColumnSums<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let cols = self.sums.len();
        for row in self.x.chunks_exact(self.width.max(1)) {
            if let Some(part) = row.get(self.first..self.first + cols) {
                self.sums.iter_mut().zip(part).for_each(|(s, &v)| *s += v);
            }
        }
    }
}

/// Runs `f` inside a rayon pool of `par`'s threads, the calling code on one of them, with the
/// other threads kept awake for the length of the call.
///
/// Every parallel pass of a step hands work between threads. Called from a thread outside any
/// pool, each hand-off parks the caller and wakes a pool thread, and back (futex calls that
/// showed up as ~10% of a training profile); inside the pool, the threads pass work to each
/// other directly. An idle pool thread still goes to sleep between passes and has to be woken
/// by the next one, so each of the other threads runs a keep-warm loop until `f` returns: it takes
/// the passes' work as soon as it is offered. Wrap a whole training run or evaluation in it.
/// Results are the same with or without it (only where work runs changes, not what is
/// computed). With one thread, or if the pool cannot be built, `f` runs directly.
pub fn with_thread_pool<R: Send>(par: Par, f: impl FnOnce() -> R + Send) -> R {
    let threads = parallelism_degree(par);
    if threads <= 1 || rayon::current_thread_index().is_some() {
        return f();
    }
    let Ok(pool) = rayon::ThreadPoolBuilder::new().num_threads(threads).build() else {
        return f();
    };
    pool.install(|| {
        let done = AtomicBool::new(false);
        let caller = rayon::current_thread_index();
        rayon::scope(|s| {
            // Set on return and on unwind alike, so a panic in `f` cannot leave the scope
            // waiting for spinning threads.
            let _stop = StopOnDrop(&done);
            // One copy per pool thread, run only by that thread: each other thread keeps
            // warm, and the caller's copy (run whenever it next looks for work) returns at
            // once, so the caller can never end up spinning under `f`.
            s.spawn_broadcast(|_, ctx| {
                if Some(ctx.index()) != caller {
                    keep_warm(&done);
                }
            });
            f()
        })
    })
}

/// Sets its flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Runs the pool's pending work as it appears until `done` is set. Between passes it yields
/// its core to the OS (so other processes, or other tests, still get it) instead of sleeping
/// on a futex that the next pass would have to wake; only after 10 ms without work (a serial
/// stretch such as a checkpoint) does it sleep, 0.1 ms at first and doubling up to 1 ms.
fn keep_warm(done: &AtomicBool) {
    const AWAKE: Duration = Duration::from_millis(10);
    const FIRST_NAP: Duration = Duration::from_micros(100);
    const LONGEST_NAP: Duration = Duration::from_millis(1);
    let mut idle_since: Option<Instant> = None;
    let mut nap = FIRST_NAP;
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() == Some(rayon::Yield::Executed) {
            idle_since = None;
            nap = FIRST_NAP;
            continue;
        }
        if idle_since.get_or_insert_with(Instant::now).elapsed() < AWAKE {
            std::thread::yield_now();
        } else {
            std::thread::sleep(nap);
            nap = (nap * 2).min(LONGEST_NAP);
        }
    }
}

/// `run(Par::Seq)`, after checking that two and three threads give the same bits (for the
/// tests of the chunked reductions).
#[cfg(test)]
pub(crate) fn same_bits_on_any_thread_count(run: impl Fn(Par) -> Vec<f32>) -> Vec<f32> {
    let seq = run(Par::Seq);
    for threads in [2, 3] {
        let par = run(Par::rayon(threads));
        let same = seq
            .iter()
            .zip(&par)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same && seq.len() == par.len(), "{threads} threads differ");
    }
    seq
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn chunk_counts_depend_on_the_batch_only() {
        assert_eq!(chunk_count(1), 1);
        assert_eq!(chunk_count(127), 1);
        assert_eq!(chunk_count(128), 2);
        assert_eq!(chunk_count(256), 4);
        assert_eq!(chunk_count(1000), 8);
        assert_eq!(chunk_count(60_000), 16);
    }

    #[test]
    fn chunks_cover_the_rows_once_on_any_thread_count() {
        for batch in [1usize, 7, 128, 129, 256, 1000, 4099] {
            for par in [Par::Seq, Par::rayon(2), Par::rayon(3)] {
                let mut data: Vec<usize> = vec![usize::MAX; batch * 3];
                let chunks = chunk_count(batch);
                let mut slots: Vec<usize> = vec![usize::MAX; chunks * 2];
                let seen = Mutex::new(Vec::new());
                let groups = Mutex::new(Vec::new());
                for_chunks_after(
                    batch,
                    (
                        RowsMut::new(&mut data, 3),
                        ChunkSlots::new(&mut slots, 2, batch),
                    ),
                    par,
                    &|rows: Range<usize>, (part, _): &mut (RowsMut<'_, usize>, _), _| {
                        assert_eq!(part.data.len(), rows.len() * 3);
                        groups.lock().unwrap().push(rows);
                    },
                    &|c, rows: Range<usize>, (part, mut slot): (RowsMut<'_, usize>, _), _| {
                        assert_eq!(part.data.len(), rows.len() * 3);
                        part.data.iter_mut().for_each(|v| *v = c);
                        slot.first().iter_mut().for_each(|v| *v = c);
                        seen.lock().unwrap().push((c, rows));
                    },
                );
                let mut seen = seen.into_inner().unwrap();
                seen.sort_by_key(|s| s.0);
                assert_eq!(seen.len(), chunks);
                for (c, rows) in &seen {
                    assert_eq!(rows.start, chunk_start(batch, chunks, *c));
                    assert!(data[rows.start * 3..rows.end * 3].iter().all(|v| v == c));
                    // Each chunk got its own slot.
                    assert_eq!(slots[c * 2..c * 2 + 2], [*c, *c]);
                }
                assert_eq!(seen.last().map(|s| s.1.end), Some(batch));
                // The groups cut the batch into consecutive ranges of whole chunks: the whole
                // batch on one thread, one group per thread on two.
                let mut groups = groups.into_inner().unwrap();
                groups.sort_by_key(|g| g.start);
                let most = match parallelism_degree(par) {
                    0 | 1 => 1,
                    2 => 2,
                    _ => chunks,
                };
                assert!(!groups.is_empty() && groups.len() <= most, "{groups:?}");
                assert_eq!(groups.first().map(|g| g.start), Some(0));
                assert_eq!(groups.last().map(|g| g.end), Some(batch));
                for pair in groups.windows(2) {
                    assert_eq!(pair[0].end, pair[1].start);
                    assert!(seen.iter().any(|(_, rows)| rows.start == pair[1].start));
                }
            }
        }
    }

    /// Column sums chunk by chunk: the sums (against f64), the same bits on any thread count,
    /// and a one-chunk batch equal to a plain sum.
    #[test]
    fn chunked_column_sums_are_sums_on_any_thread_count() {
        for (batch, width) in [(100usize, 7usize), (128, 10), (1000, 300), (777, 33)] {
            let x: Vec<f32> = (0..batch * width)
                .map(|i| ((i * 7919) % 1013) as f32 / 1013.0 - 0.5)
                .collect();
            let run = |par: Par| {
                let mut sums = vec![f32::NAN; width];
                let mut partials = vec![f32::NAN; chunk_count(batch) * width];
                column_sums_by_chunks(&x, width, batch, &mut sums, &mut partials, par);
                sums
            };
            let seq = same_bits_on_any_thread_count(run);
            for (j, &s) in seq.iter().enumerate() {
                let want: f64 = (0..batch).map(|r| f64::from(x[r * width + j])).sum();
                assert!(
                    (f64::from(s) - want).abs() < 1e-3,
                    "column {j}: {s} vs {want}"
                );
            }
            if chunk_count(batch) == 1 {
                let mut plain = vec![0.0f32; width];
                column_sums(&x, width, &mut plain, Par::Seq);
                assert_eq!(plain, seq);
            }
        }
    }

    #[test]
    fn the_kept_warm_pool_runs_the_work_and_returns() {
        for threads in [2usize, 3] {
            let seen = Mutex::new(Vec::new());
            let out = with_thread_pool(Par::rayon(threads), || {
                // Two passes with serial work between them, as in a training step.
                for pass in 0..2usize {
                    for_chunks(1000, (), Par::rayon(threads), &|c, _, (), _| {
                        seen.lock().unwrap().push((pass, c));
                    });
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                rayon::current_thread_index().is_some()
            });
            assert!(out, "f runs on a pool thread");
            let mut seen = seen.into_inner().unwrap();
            seen.sort_unstable();
            let want: Vec<_> = (0..2).flat_map(|p| (0..8).map(move |c| (p, c))).collect();
            assert_eq!(seen, want);
        }
    }

    #[test]
    fn join_runs_both_halves_with_half_the_threads_each() {
        for threads in [1usize, 2, 3, 4] {
            let par = if threads == 1 {
                Par::Seq
            } else {
                Par::rayon(threads)
            };
            let inner = Mutex::new(Vec::new());
            with_thread_pool(par, || {
                // `b` slower than `a`, so the caller waits for it; then the other way round.
                for (wait_a, wait_b) in [(0, 2), (2, 0)] {
                    join_raw(
                        |p| {
                            std::thread::sleep(Duration::from_millis(wait_a));
                            inner.lock().unwrap().push(('a', parallelism_degree(p)));
                        },
                        |p| {
                            std::thread::sleep(Duration::from_millis(wait_b));
                            inner.lock().unwrap().push(('b', parallelism_degree(p)));
                        },
                        par,
                    );
                }
            });
            let mut inner = inner.into_inner().unwrap();
            inner.sort_unstable();
            let half = threads - threads / 2;
            assert_eq!(inner, [('a', half), ('a', half), ('b', half), ('b', half)]);
        }
    }

    #[test]
    fn nested_joins_cover_every_leaf_once() {
        fn leaves(range: Range<usize>, out: &Mutex<Vec<usize>>, par: Par) {
            if range.len() == 1 {
                out.lock().unwrap().push(range.start);
                return;
            }
            let mid = range.start + range.len() / 2;
            join_raw(
                |p| leaves(range.start..mid, out, p),
                |p| leaves(mid..range.end, out, p),
                par,
            );
        }
        for threads in [2usize, 4] {
            let out = Mutex::new(Vec::new());
            with_thread_pool(Par::rayon(threads), || {
                leaves(0..37, &out, Par::rayon(threads))
            });
            let mut out = out.into_inner().unwrap();
            out.sort_unstable();
            assert_eq!(out, (0..37).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_panic_in_either_half_of_a_join_reaches_the_caller() {
        for panics_in_b in [false, true] {
            let r = std::panic::catch_unwind(|| {
                with_thread_pool(Par::rayon(2), || {
                    join_raw(
                        |_| assert!(panics_in_b, "boom in a"),
                        |_| {
                            std::thread::sleep(Duration::from_millis(1));
                            assert!(!panics_in_b, "boom in b");
                        },
                        Par::rayon(2),
                    );
                })
            });
            assert!(r.is_err());
        }
    }

    #[test]
    fn a_panic_in_the_pool_reaches_the_caller_instead_of_hanging() {
        let r = std::panic::catch_unwind(|| {
            with_thread_pool(Par::rayon(2), || -> usize { panic!("boom") })
        });
        assert!(r.is_err());
    }
}
