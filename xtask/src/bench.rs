//! `cargo xtask bench`: epoch times against the dense limit measured in the same run.
//!
//! The dense limit of a recipe is the time faer's GEMM needs, on this machine and in this
//! process, for the matrix products a dense implementation of one epoch performs (forward,
//! weight gradient, input gradient except for the first layer), each product timed on its own
//! shape. Our epoch times (sparse first layer where the data allows it, and forced dense) are
//! reported as a ratio to that limit, together with examples/s and the effective GFLOP/s
//! (dense FLOPs / our time).
//!
//! The host is shared, and its speed drifts by tens of percent within minutes. So every
//! measurement is repeated in interleaved rounds (each round times the limit's GEMMs, then our
//! epochs), and each quantity reports its fastest round: the least-disturbed sample of the
//! limit and of our code, taken minutes apart at most. The limit is the sum of each GEMM
//! shape's fastest time over the rounds (each already the fastest of 7 samples), so it is at
//! most any one round's limit. Both sides run inside a pool of the run's threads. deep-mse
//! takes three rounds (its iterations are long). The peers in `bench/` report their fastest
//! epoch too.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::Context;
use mnist_core::faer::linalg::matmul::matmul;
use mnist_core::faer::{Accum, Mat, Par};
use mnist_core::rand_chacha::ChaCha8Rng;
use mnist_core::{
    Gradients, InputPath, Network, Optimizer, SparseRows, Workspace, evaluate, train_step,
    train_step_rows,
};
use mnist_dataset::{DataSources, Mnist};
use mnist_train::ExperimentConfig;
use mnist_train::config::Shuffle;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde_json::{Value, json};

/// What to run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub threads: usize,
    pub json: PathBuf,
    pub configs_dir: PathBuf,
    /// Fewer repetitions (a smoke run of the harness).
    pub quick: bool,
    /// Also run the Python peers under `bench/`.
    pub peers: bool,
    pub bench_dir: PathBuf,
    /// Measure only this part (a recipe name), for quick comparisons.
    pub only: Option<String>,
}

impl Settings {
    /// Interleaved rounds per measurement (see the module docs).
    fn rounds(&self) -> usize {
        if self.quick { 1 } else { 5 }
    }

    fn wants(&self, part: &str) -> bool {
        self.only.as_deref().is_none_or(|o| o == part)
    }
}

fn par_for(threads: usize) -> Par {
    if threads <= 1 {
        Par::Seq
    } else {
        Par::rayon(threads)
    }
}

/// The fastest of a quantity's samples (one per round).
fn fastest(samples: &[f64]) -> f64 {
    samples.iter().copied().fold(f64::INFINITY, f64::min)
}

/// One matrix product shape: `m x k` times `k x n`, with the operand layouts the engine uses.
#[derive(Debug, Clone, Copy)]
enum Product {
    /// `x W^T`: `[batch, in]` row-major times the transpose of row-major `[out, in]`.
    Forward,
    /// `delta^T x`: transpose of row-major `[batch, out]` times row-major `[batch, in]`.
    WeightGrad,
    /// `delta W`: row-major `[batch, out]` times row-major `[out, in]`.
    InputGrad,
}

/// Seconds per call of faer's GEMM on one product of a layer (fastest of 7 samples).
fn gemm_time(product: Product, batch: usize, inputs: usize, outputs: usize, par: Par) -> f64 {
    let fill = |r: usize, c: usize| {
        Mat::<f32>::from_fn(r, c, |i, j| ((i * 7 + j * 13) % 17) as f32 * 0.01 - 0.08)
    };
    // Row-major operands are the transposes of column-major faer matrices.
    let x_t = fill(inputs, batch); // x^T (col-major) = x row-major
    let w_t = fill(inputs, outputs); // W^T col-major = W row-major [out, in]
    let d_t = fill(outputs, batch); // delta row-major
    let (m, n) = match product {
        Product::Forward => (batch, outputs),
        Product::WeightGrad => (outputs, inputs),
        Product::InputGrad => (batch, inputs),
    };
    // dst row-major = (dst^T) col-major: compute dst^T = rhs^T lhs^T.
    let mut dst_t = Mat::<f32>::zeros(n, m);
    let mut call = || match product {
        // (x W^T)^T = W x^T: lhs W = (W^T col-major)^T ... expressed on views:
        Product::Forward => matmul(
            dst_t.as_mut(),
            Accum::Replace,
            w_t.transpose(),
            x_t.as_ref(),
            1.0f32,
            par,
        ),
        Product::WeightGrad => matmul(
            dst_t.as_mut(),
            Accum::Replace,
            x_t.as_ref(),
            d_t.transpose(),
            1.0f32,
            par,
        ),
        Product::InputGrad => matmul(
            dst_t.as_mut(),
            Accum::Replace,
            w_t.as_ref(),
            d_t.as_ref(),
            1.0f32,
            par,
        ),
    };
    call();
    // Enough calls for ~50 ms per sample, fastest of 7 samples.
    let t = Instant::now();
    call();
    let once = t.elapsed().as_secs_f64().max(1e-7);
    let calls = ((0.05 / once).ceil() as usize).clamp(1, 10_000);
    let samples: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..calls {
                call();
            }
            t.elapsed().as_secs_f64() / calls as f64
        })
        .collect();
    fastest(&samples)
}

/// One timed GEMM of the dense limit.
#[derive(Debug, Clone)]
struct ShapeTime {
    layer: usize,
    product: &'static str,
    batch: usize,
    inputs: usize,
    outputs: usize,
    seconds: f64,
    /// Part of a training step (else of an evaluation batch).
    training: bool,
}

impl ShapeTime {
    fn flops(&self) -> f64 {
        2.0 * (self.batch * self.inputs * self.outputs) as f64
    }
}

/// The GEMMs of one training step and one evaluation batch of an architecture.
#[derive(Debug, Clone, Default)]
struct DenseLimit {
    shapes: Vec<ShapeTime>,
}

impl DenseLimit {
    fn total(&self, training: bool) -> (f64, f64) {
        self.shapes
            .iter()
            .filter(|s| s.training == training)
            .fold((0.0, 0.0), |(t, f), s| (t + s.seconds, f + s.flops()))
    }

    /// Seconds and dense FLOPs of one training step (all products but the first layer's input
    /// gradient).
    fn step(&self) -> (f64, f64) {
        self.total(true)
    }

    /// Seconds and FLOPs of one evaluation batch (forward products).
    fn eval_batch(&self) -> (f64, f64) {
        self.total(false)
    }

    /// Each shape's fastest time over the rounds `limits` (all of the same architecture).
    fn fastest_of(limits: &[DenseLimit]) -> DenseLimit {
        let mut best = limits
            .first()
            .cloned()
            .unwrap_or(DenseLimit { shapes: Vec::new() });
        for l in limits.iter().skip(1) {
            for (b, s) in best.shapes.iter_mut().zip(&l.shapes) {
                b.seconds = b.seconds.min(s.seconds);
            }
        }
        best
    }

    fn shapes_json(&self) -> Vec<Value> {
        self.shapes
            .iter()
            .map(|s| {
                json!({
                    "layer": s.layer, "product": s.product, "batch": s.batch, "in": s.inputs,
                    "out": s.outputs, "seconds": s.seconds, "gflops": s.flops() / s.seconds / 1e9,
                })
            })
            .collect()
    }
}

/// Times the GEMMs of a training step of `batch` rows, and of an evaluation batch when
/// `eval_batch` is given. They run inside a pool of `par`'s threads, as our epochs do, so both
/// sides hand work between threads the same way.
fn dense_limit(sizes: &[usize], batch: usize, eval_batch: Option<usize>, par: Par) -> DenseLimit {
    mnist_core::with_thread_pool(par, || {
        let mut shapes = Vec::new();
        for (layer, pair) in sizes.windows(2).enumerate() {
            let (inputs, outputs) = (pair[0], pair[1]);
            let mut products = vec![
                ("forward", Product::Forward),
                ("weight_grad", Product::WeightGrad),
            ];
            if layer > 0 {
                products.push(("input_grad", Product::InputGrad));
            }
            for (product, p) in products {
                shapes.push(ShapeTime {
                    layer,
                    product,
                    batch,
                    inputs,
                    outputs,
                    seconds: gemm_time(p, batch, inputs, outputs, par),
                    training: true,
                });
            }
            if let Some(eval_batch) = eval_batch {
                shapes.push(ShapeTime {
                    layer,
                    product: "forward_eval",
                    batch: eval_batch,
                    inputs,
                    outputs,
                    seconds: gemm_time(Product::Forward, eval_batch, inputs, outputs, par),
                    training: false,
                });
            }
        }
        DenseLimit { shapes }
    })
}

/// A recipe's network, optimizer and data, ready to time.
struct Recipe {
    name: String,
    config: ExperimentConfig,
    data: mnist_train::PreparedData,
}

fn load_recipe(configs: &Path, file: &str, mnist: &Mnist) -> anyhow::Result<Recipe> {
    let config = ExperimentConfig::load(&configs.join(file))?;
    let data = mnist_train::prepare_from(&config, mnist)?;
    Ok(Recipe {
        name: config.name.clone(),
        config,
        data,
    })
}

/// Trains `steps` batches (None = one epoch) the way the trainer does; returns seconds.
fn train_epoch(
    r: &Recipe,
    path: InputPath,
    par: Par,
    steps: Option<usize>,
    epochs_before: u64,
) -> anyhow::Result<f64> {
    let cfg = &r.config;
    let arch = cfg.architecture()?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut net = Network::<f32>::new(&arch, &cfg.layer_inits(), &mut rng)?;
    let mut opt = Optimizer::new(cfg.training.optimizer, &net)?;
    let opts = cfg.train_options();
    let train = &r.data.train;
    let n = train.len();
    let bs = cfg.training.batch_size.resolve(n);
    let mut ws: Workspace<f32> = net.workspace(bs);
    ws.set_input_path(path);
    // As the trainer does: in fixed order every batch is a slice of the training set.
    ws.set_input_fixed(cfg.training.shuffle == Shuffle::Fixed);
    let mut grads = Gradients::new(&arch);
    let mut order: Vec<usize> = (0..n).collect();
    let (mut xb, mut yb) = (Vec::with_capacity(bs * train.dim()), Vec::with_capacity(bs));
    // As the trainer does: shuffled batches come from the training set compressed once (built
    // before the timed epochs, as once per run), unless the dense path is forced.
    let rows = if cfg.training.shuffle == Shuffle::EachEpoch && path != InputPath::Dense {
        SparseRows::for_batches(train.features(), train.dim(), bs, par)?
    } else {
        None
    };
    let batches = steps.unwrap_or(n.div_ceil(bs));
    let mut run = |timed: bool| -> anyhow::Result<f64> {
        if cfg.training.shuffle == Shuffle::EachEpoch {
            order.shuffle(&mut rng);
        }
        let t = Instant::now();
        for b in 0..batches {
            let start = (b * bs) % n;
            let len = bs.min(n - start);
            let lr =
                cfg.training
                    .schedule
                    .lr_at(cfg.training.learning_rate, epochs_before, b as u64);
            let indices = &order[start..start + len];
            if let Some(rows) = &rows {
                train.labels_into(indices, &mut yb);
                train_step_rows(
                    &mut net,
                    &mut ws,
                    &mut grads,
                    &mut opt,
                    rows,
                    train.features(),
                    indices,
                    &yb,
                    &opts,
                    lr,
                    &mut rng,
                    par,
                )?;
            } else {
                let (x, y) = if cfg.training.shuffle == Shuffle::EachEpoch {
                    train.gather_into(indices, &mut xb, &mut yb);
                    (&xb[..], &yb[..])
                } else {
                    let v = train.batch(start, len);
                    (v.features, v.labels)
                };
                train_step(
                    &mut net, &mut ws, &mut grads, &mut opt, x, y, len, &opts, lr, &mut rng, par,
                )?;
            }
            // In fixed order the warm-up is a whole epoch: the compressed batches are then all
            // kept, as in every epoch of a real run after its first.
            if !timed && b >= 3 && cfg.training.shuffle != Shuffle::Fixed {
                break;
            }
        }
        Ok(t.elapsed().as_secs_f64())
    };
    // As the trainer does: the whole run inside one pool of the run's threads.
    mnist_core::with_thread_pool(par, || -> anyhow::Result<f64> {
        run(false)?; // warm-up: buffers, faer's packing memory, sparse panels
        run(true)
    })
}

/// Seconds of one evaluation pass over the training set after an untimed warm-up pass (which
/// also compresses and keeps its batches, as every epoch's evaluation after the first finds
/// them); the rounds of `run` repeat it.
fn eval_pass(r: &Recipe, path: InputPath, par: Par) -> anyhow::Result<f64> {
    let cfg = &r.config;
    let arch = cfg.architecture()?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let net = Network::<f32>::new(&arch, &cfg.layer_inits(), &mut rng)?;
    let mut ws = net.workspace(cfg.evaluation.batch_size);
    ws.set_input_path(path);
    // As the trainer's evaluation of a split it has seen in an earlier epoch: the set is
    // borrowed immutably, so its batches are compressed in the warm-up pass and kept.
    ws.set_input_fixed(true);
    let train = &r.data.train;
    mnist_core::with_thread_pool(par, || {
        let mut pass = || {
            evaluate(
                &net,
                &mut ws,
                train.features(),
                train.labels(),
                cfg.training.loss,
                par,
            )
        };
        pass()?;
        let t = Instant::now();
        pass()?;
        Ok(t.elapsed().as_secs_f64())
    })
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or_else(|| "unknown".to_string(), |s| s.trim().to_string());
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or_default();
    let simd: Vec<&str> = ["avx2", "fma", "avx512f"]
        .into_iter()
        .filter(|f| flags.split_whitespace().any(|w| w == *f))
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    json!({ "cpu": model, "cores": cores, "simd": simd, "loadavg_at_start": load.trim() })
}

fn commit() -> String {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output();
    let rev = out
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| !o.stdout.is_empty());
    match rev {
        Some(r) if dirty => format!("{r}-dirty"),
        Some(r) => r,
        None => "unknown".into(),
    }
}

/// One result line: the fastest of `samples` (one per round), with the slowest beside it.
fn row(name: &str, samples: &[f64], examples: f64, flops: f64, limit: f64) -> Value {
    let seconds = fastest(samples);
    let slowest = samples.iter().copied().fold(seconds, f64::max);
    println!(
        "  {name:<34} {seconds:>8.3} s  {:>9.0} ex/s  {:>7.1} GFLOP/s eff  {:>5.2} x dense limit ({limit:.3} s); slowest round {slowest:.3} s",
        examples / seconds,
        flops / seconds / 1e9,
        seconds / limit
    );
    json!({ "name": name, "seconds": seconds, "rounds": samples, "examples_per_second": examples / seconds,
            "effective_gflops": flops / seconds / 1e9, "dense_limit_seconds": limit, "ratio_to_dense_limit": seconds / limit })
}

/// Runs the benchmark and writes the JSON report.
pub fn run(settings: &Settings) -> anyhow::Result<Value> {
    let par = par_for(settings.threads);
    let rounds = settings.rounds();
    let mnist = Mnist::load(&DataSources::from_env()).context("loading MNIST")?;
    let machine = machine();
    println!(
        "machine: {machine}\nthreads: {}  commit: {}",
        settings.threads,
        commit()
    );
    let mut recipes_json = Vec::new();
    for (part, file) in [
        ("two-layer-sigmoid", "two_layer_sigmoid.json"),
        ("adam-dropout", "adam_dropout.json"),
    ] {
        if !settings.wants(part) {
            continue;
        }
        let r = load_recipe(&settings.configs_dir, file, &mnist)?;
        let sizes = r.config.architecture()?.sizes.clone();
        let n = r.data.train.len();
        let bs = r.config.training.batch_size.resolve(n);
        let eval_bs = r.config.evaluation.batch_size;
        let steps = n as f64 / bs as f64;
        let eval_batches = n as f64 / eval_bs as f64;
        let time_one_thread = settings.threads > 1;
        // Interleaved rounds: the limit's GEMMs, then each of our epochs, so that every
        // quantity's fastest round comes from the same stretch of the host's weather.
        let mut limits = Vec::new();
        // faer's own GEMMs on one thread: the machine's two-thread scaling on these shapes,
        // the reference for ours.
        let mut limits_one_thread = Vec::new();
        let (mut sparse, mut dense, mut ones, mut eval_sparse, mut eval_dense) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let e = round as u64;
            limits.push(dense_limit(&sizes, bs, Some(eval_bs), par));
            if time_one_thread {
                limits_one_thread.push(dense_limit(&sizes, bs, Some(eval_bs), Par::Seq));
            }
            sparse.push(train_epoch(&r, InputPath::Auto, par, None, e)?);
            dense.push(train_epoch(&r, InputPath::Dense, par, None, e)?);
            if time_one_thread {
                ones.push(train_epoch(&r, InputPath::Auto, Par::Seq, None, e)?);
            }
            eval_sparse.push(eval_pass(&r, InputPath::Auto, par)?);
            eval_dense.push(eval_pass(&r, InputPath::Dense, par)?);
        }
        let limit = DenseLimit::fastest_of(&limits);
        let (step_s, step_flops) = limit.step();
        let (batch_s, batch_flops) = limit.eval_batch();
        let (train_limit, train_flops) = (step_s * steps, step_flops * steps);
        let (eval_limit, eval_flops) = (batch_s * eval_batches, batch_flops * eval_batches);
        println!(
            "\n{} {:?} batch {bs}, {n} examples/epoch: {:.1} GFLOP/epoch training, faer GEMM {:.1} GFLOP/s -> dense limit {:.3} s; eval {:.1} GFLOP, limit {:.3} s (fastest of {rounds} round(s))",
            r.name,
            sizes,
            train_flops / 1e9,
            step_flops / step_s / 1e9,
            train_limit,
            eval_flops / 1e9,
            eval_limit
        );
        for s in &limit.shapes {
            println!(
                "    gemm layer {} {:<12} {}x{}x{}: {:.1} GFLOP/s",
                s.layer,
                s.product,
                s.batch,
                s.inputs,
                s.outputs,
                s.flops() / s.seconds / 1e9
            );
        }
        let mut rows = vec![
            row(
                "train epoch (auto: sparse)",
                &sparse,
                n as f64,
                train_flops,
                train_limit,
            ),
            row(
                "train epoch (forced dense)",
                &dense,
                n as f64,
                train_flops,
                train_limit,
            ),
        ];
        // Dense path against faer alone: the share of its GEMM throughput the whole dense
        // epoch (activations, loss, optimizer included) keeps.
        let dense_share = train_limit / fastest(&dense);
        println!(
            "  dense path keeps {:.0}% of faer's GEMM throughput (target >= 80%)",
            100.0 * dense_share
        );
        // Thread scaling: the same sparse epoch on one thread.
        let mut speedup = Value::Null;
        if time_one_thread {
            let (one, many) = (fastest(&ones), fastest(&sparse));
            let faer_speedup = DenseLimit::fastest_of(&limits_one_thread).step().0 / step_s;
            println!(
                "  1 thread: {one:.3} s -> {} threads are {:.2}x faster (target >= 1.7x; faer's GEMM on these shapes: {faer_speedup:.2}x)",
                settings.threads,
                one / many
            );
            speedup = json!({
                "one_thread_seconds": one,
                "one_thread_rounds": ones,
                "speedup": one / many,
                "faer_gemm_speedup": faer_speedup,
            });
        }
        rows.push(row(
            "eval pass (auto: sparse)",
            &eval_sparse,
            n as f64,
            eval_flops,
            eval_limit,
        ));
        rows.push(row(
            "eval pass (forced dense)",
            &eval_dense,
            n as f64,
            eval_flops,
            eval_limit,
        ));
        recipes_json.push(json!({
            "recipe": r.name, "sizes": sizes, "batch": bs, "examples_per_epoch": n,
            "train_gflop_per_epoch": train_flops / 1e9, "eval_gflop_per_pass": eval_flops / 1e9,
            "dense_limit_train_seconds": train_limit, "dense_limit_eval_seconds": eval_limit,
            "gemm": limit.shapes_json(), "results": rows, "dense_share_of_gemm": dense_share,
            "dense_limit_train_rounds": limits.iter().map(|l| l.step().0 * steps).collect::<Vec<_>>(),
            "dense_limit_eval_rounds": limits.iter().map(|l| l.eval_batch().0 * eval_batches).collect::<Vec<_>>(),
            "thread_speedup": speedup,
        }));
    }

    let mut batch1 = Value::Null;
    let mut full = Value::Null;
    if settings.wants("three-layer-relu") {
        batch1 = bench_batch1(settings, &mnist, par)?;
    }
    if settings.wants("deep-mse") {
        full = bench_full_batch(settings, &mnist, par)?;
    }
    let mut report = json!({
        "machine": machine, "threads": settings.threads, "commit": commit(),
        "recipes": recipes_json, "batch1": batch1, "full_batch": full,
    });
    if settings.peers {
        report["peers"] = run_peers(settings, &report)?;
    }
    if let Some(dir) = settings.json.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&settings.json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("writing {}", settings.json.display()))?;
    println!("\nwritten {}", settings.json.display());
    Ok(report)
}

/// Batch 1: three-layer-relu, single-example SGD steps.
fn bench_batch1(settings: &Settings, mnist: &Mnist, par: Par) -> anyhow::Result<Value> {
    let r = load_recipe(&settings.configs_dir, "three_layer_relu.json", mnist)?;
    let steps = if settings.quick { 2_000 } else { 10_000 };
    let mut times = Vec::new();
    for _ in 0..settings.rounds() {
        times.push(train_epoch(&r, InputPath::Auto, par, Some(steps), 0)?);
    }
    let per_s = steps as f64 / fastest(&times);
    println!(
        "\n{} batch 1: {per_s:.0} steps/s ({:.2} us/step) -> {:.2} s per 60,000-step epoch",
        r.name,
        1e6 / per_s,
        60_000.0 / per_s
    );
    Ok(
        json!({ "recipe": r.name, "steps_timed": steps, "rounds": times, "steps_per_second": per_s, "epoch_seconds_60k": 60_000.0 / per_s }),
    )
}

/// Full batch: deep-mse, a few iterations.
fn bench_full_batch(settings: &Settings, mnist: &Mnist, par: Par) -> anyhow::Result<Value> {
    let r = load_recipe(&settings.configs_dir, "deep_mse.json", mnist)?;
    let iters = if settings.quick { 2 } else { 5 };
    let sizes = r.config.architecture()?.sizes.clone();
    let n = r.data.train.len();
    let (mut limits, mut times) = (Vec::new(), Vec::new());
    for _ in 0..settings.rounds().min(3) {
        limits.push(dense_limit(&sizes, n, None, par));
        times.push(train_epoch(&r, InputPath::Auto, par, Some(iters), 0)? / iters as f64);
    }
    let (limit, _) = DenseLimit::fastest_of(&limits).step();
    let t = fastest(&times);
    println!(
        "{} full batch ({n}): {t:.3} s/iteration ({:.2} x dense limit {limit:.3} s) -> {:.0} s per 2,000 iterations",
        r.name,
        t / limit,
        t * 2000.0
    );
    Ok(
        json!({ "recipe": r.name, "seconds_per_iteration": t, "rounds": times, "dense_limit_seconds": limit,
                "dense_limit_rounds": limits.iter().map(|l| l.step().0).collect::<Vec<_>>(),
                "ratio_to_dense_limit": t / limit, "run_seconds_2000": t * 2000.0 }),
    )
}

/// Runs `bench/peers.py` (NumPy, plus PyTorch/JAX where installed) and prints ours / theirs.
fn run_peers(settings: &Settings, ours: &Value) -> anyhow::Result<Value> {
    let script = settings.bench_dir.join("peers.py");
    println!(
        "\npeers: python3 {} (OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset for this command)",
        script.display()
    );
    let out = Command::new("python3")
        .arg(&script)
        .arg("--threads")
        .arg(settings.threads.to_string())
        .arg("--reps")
        .arg(settings.rounds().to_string())
        .env_remove("OPENBLAS_CORETYPE")
        .env_remove("OPENBLAS_L2_SIZE")
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        anyhow::bail!("{} failed ({})", script.display(), out.status);
    }
    let theirs: Value = serde_json::from_slice(&out.stdout).context("peers.py printed no JSON")?;
    let ours_of = |recipe: &str| {
        ours["recipes"].as_array().and_then(|rs| {
            rs.iter()
                .find(|r| r["recipe"] == recipe)
                .and_then(|r| r["results"][0]["seconds"].as_f64())
        })
    };
    if let Some(runs) = theirs["runs"].as_array() {
        for run in runs {
            let (recipe, framework) = (
                run["recipe"].as_str().unwrap_or(""),
                run["framework"].as_str().unwrap_or(""),
            );
            if let (Some(o), Some(t)) = (ours_of(recipe), run["epoch_seconds"].as_f64()) {
                println!(
                    "  {recipe:<18} {framework:<22} theirs {t:>7.3} s/epoch  ours {o:>7.3} s  ours/theirs {:.2}",
                    o / t
                );
            }
        }
    }
    Ok(theirs)
}
