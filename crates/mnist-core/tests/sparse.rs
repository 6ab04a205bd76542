//! The sparse first layer against the dense GEMM on real MNIST batches: forward outputs and
//! every gradient agree to float rounding, for `x/255` and standardized inputs; the automatic
//! choice takes the sparse path on MNIST; results never depend on the thread count.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use faer::Par;
use mnist_core::{
    Activation, Architecture, BiasInit, Gradients, InputPath, LayerInit, Loss, Network, Optimizer,
    OptimizerConfig, OutputHead, SparseRows, TrainOptions, WeightInit, Workspace, apply_max_norm,
    compute_gradients, evaluate, train_step, train_step_rows,
};
use mnist_dataset::{DataSources, Mnist, Normalization, Preprocessing};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn mnist() -> Mnist {
    Mnist::load(&DataSources::directory_only(
        mnist_dataset::source::bundled_dir(),
    ))
    .unwrap()
}

/// Rows `start..start + len` of the training images under `prep`.
fn batch(m: &Mnist, prep: &Preprocessing, start: usize, len: usize) -> (Vec<f32>, Vec<u8>) {
    let ix: Vec<usize> = (start..start + len).collect();
    let d = m.train.to_dataset(Some(&ix), prep).unwrap();
    (d.features().to_vec(), d.labels().to_vec())
}

fn preps(m: &Mnist) -> Vec<(&'static str, Preprocessing)> {
    vec![
        ("x/255", Preprocessing::SCALE),
        (
            "standardized",
            Preprocessing::fit(Normalization::Standardize, &m.train, None),
        ),
    ]
}

fn nets() -> Vec<Network<f32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let a =
        Architecture::uniform(vec![784, 40, 10], Activation::Sigmoid, OutputHead::Softmax).unwrap();
    let b = Architecture::uniform(vec![784, 70, 16, 10], Activation::Relu, OutputHead::Sigmoid)
        .unwrap();
    let normal = LayerInit::new(
        WeightInit::Normal {
            mean: 0.0,
            std: 1.0,
        },
        BiasInit::Normal {
            mean: 0.0,
            std: 1.0,
        },
    );
    // Eight panels of outputs, as in three-layer-relu.
    let c = Architecture::uniform(
        vec![784, 256, 64, 10],
        Activation::Relu,
        OutputHead::Softmax,
    )
    .unwrap();
    let he = LayerInit::new(WeightInit::HeNormal, BiasInit::Zero);
    vec![
        Network::new(&a, &[normal], &mut rng).unwrap(),
        Network::new(&b, &[he], &mut rng).unwrap(),
        Network::new(&c, &[he], &mut rng).unwrap(),
    ]
}

/// `max |a - b| <= tol * max(1, max |b|)`.
fn assert_close(what: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let err = a
        .iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        err <= tol * scale,
        "{what}: max abs difference {err} (scale {scale})"
    );
}

/// Every weight and bias gradient's bits, layer by layer.
fn gradient_bits(g: &Gradients<f32>) -> Vec<u32> {
    g.layers()
        .iter()
        .flat_map(|l| l.weight().iter().chain(l.bias()))
        .map(|v| v.to_bits())
        .collect()
}

struct Run {
    logits: Vec<f32>,
    loss: f64,
    grads: Gradients<f32>,
    sparse: bool,
}

fn run(net: &Network<f32>, x: &[f32], y: &[u8], path: InputPath, par: Par, loss: Loss) -> Run {
    let n = y.len();
    let mut ws = net.workspace(n);
    ws.set_input_path(path);
    let logits = net
        .forward(&mut ws, x, n, par)
        .unwrap()
        .logits_slice()
        .to_vec();
    let mut grads = Gradients::new(net.architecture());
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let loss = compute_gradients(
        net,
        &mut ws,
        &mut grads,
        x,
        y,
        n,
        &TrainOptions::new(loss),
        &mut rng,
        par,
    )
    .unwrap();
    Run {
        logits,
        loss,
        grads,
        sparse: ws.last_input_was_sparse(),
    }
}

#[test]
fn sparse_matches_dense_on_real_batches() {
    let m = mnist();
    for (name, prep) in preps(&m) {
        // 700 rows: the backward pass's blocks of 256 rows, with a partial last block.
        for (start, len) in [
            (0usize, 256usize),
            (10_000, 700),
            (1234, 100),
            (59_000, 37),
            (42, 1),
        ] {
            let (x, y) = batch(&m, &prep, start, len);
            for (k, net) in nets().iter().enumerate() {
                let loss = if k == 0 {
                    Loss::CrossEntropy
                } else {
                    Loss::MeanSquaredError
                };
                let dense = run(net, &x, &y, InputPath::Dense, Par::Seq, loss);
                let sparse = run(net, &x, &y, InputPath::Sparse, Par::Seq, loss);
                assert!(!dense.sparse && sparse.sparse);
                let what = format!("{name}, rows {start}+{len}, net {k}");
                assert_close(
                    &format!("{what}: logits"),
                    &sparse.logits,
                    &dense.logits,
                    1e-5,
                );
                assert!(
                    (sparse.loss - dense.loss).abs() <= 1e-5 * dense.loss.abs().max(1.0),
                    "{what}: loss"
                );
                for (l, (gs, gd)) in sparse
                    .grads
                    .layers()
                    .iter()
                    .zip(dense.grads.layers())
                    .enumerate()
                {
                    assert_close(
                        &format!("{what}: layer {l} weight gradient"),
                        gs.weight(),
                        gd.weight(),
                        1e-4,
                    );
                    assert_close(
                        &format!("{what}: layer {l} bias gradient"),
                        gs.bias(),
                        gd.bias(),
                        1e-4,
                    );
                }
            }
        }
    }
}

#[test]
fn auto_goes_sparse_on_mnist_and_dense_on_dense_data() {
    let m = mnist();
    let net = &nets()[0];
    for (name, prep) in preps(&m) {
        let (x, y) = batch(&m, &prep, 500, 64);
        assert!(
            run(net, &x, &y, InputPath::Auto, Par::Seq, Loss::CrossEntropy).sparse,
            "{name}"
        );
        // Perturb every value: nothing is background any more.
        let noisy: Vec<f32> = x
            .iter()
            .enumerate()
            .map(|(i, v)| v + 1e-3 * (i % 7 + 1) as f32)
            .collect();
        assert!(
            !run(
                net,
                &noisy,
                &y,
                InputPath::Auto,
                Par::Seq,
                Loss::CrossEntropy
            )
            .sparse,
            "{name} noisy"
        );
    }
}

#[test]
fn sparse_kernels_do_not_depend_on_thread_count() {
    let m = mnist();
    for (name, prep) in preps(&m) {
        let (x, y) = batch(&m, &prep, 3000, 300);
        for net in nets() {
            let seq = run(
                &net,
                &x,
                &y,
                InputPath::Sparse,
                Par::Seq,
                Loss::CrossEntropy,
            );
            for threads in [2, 3] {
                let par = run(
                    &net,
                    &x,
                    &y,
                    InputPath::Sparse,
                    Par::rayon(threads),
                    Loss::CrossEntropy,
                );
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&seq.logits),
                    bits(&par.logits),
                    "{name}: logits, {threads} threads"
                );
                assert_eq!(seq.loss.to_bits(), par.loss.to_bits(), "{name}: loss");
                for (gs, gp) in seq.grads.layers().iter().zip(par.grads.layers()) {
                    assert_eq!(
                        bits(gs.weight()),
                        bits(gp.weight()),
                        "{name}: weight gradient, {threads} threads"
                    );
                    assert_eq!(bits(gs.bias()), bits(gp.bias()), "{name}: bias gradient");
                }
            }
        }
    }
}

#[test]
fn fixed_inputs_are_compressed_once_each_and_kept() {
    let m = mnist();
    let (_, prep) = preps(&m).remove(1);
    let (x1, y1) = batch(&m, &prep, 0, 600);
    let (x2, y2) = batch(&m, &prep, 20_000, 600);
    let net = &nets()[0];
    let opts = TrainOptions::new(Loss::CrossEntropy);
    let mut fixed = net.workspace(600);
    fixed.set_input_path(InputPath::Sparse);
    fixed.set_input_fixed(true);
    let mut grads = Gradients::new(net.architecture());
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    // Each slice is compressed once and kept: alternating between them reuses both.
    for (x, y) in [
        (&x1, &y1),
        (&x1, &y1),
        (&x2, &y2),
        (&x2, &y2),
        (&x1, &y1),
        (&x2, &y2),
    ] {
        let loss = compute_gradients(
            net,
            &mut fixed,
            &mut grads,
            x,
            y,
            600,
            &opts,
            &mut rng,
            Par::Seq,
        )
        .unwrap();
        let fresh = run(net, x, y, InputPath::Sparse, Par::Seq, Loss::CrossEntropy);
        assert_eq!(loss.to_bits(), fresh.loss.to_bits());
        assert_eq!(gradient_bits(&grads), gradient_bits(&fresh.grads));
    }
}

/// Evaluation with kept inputs, as the trainer runs it: the evaluated set is compressed by the
/// first pass and reused by later ones (full and partial batches), in a workspace that also
/// trains on slices of the same set, while the weights change between passes. Every pass must
/// equal, bit for bit, a fresh workspace that compresses everything again.
#[test]
fn evaluation_with_kept_inputs_matches_a_fresh_workspace() {
    let m = mnist();
    for (name, prep) in preps(&m) {
        // 650 rows in batches of 300: two full batches and a partial one.
        let (x, y) = batch(&m, &prep, 1_000, 650);
        let mut net = nets().remove(0);
        let mut kept = net.workspace(300);
        kept.set_input_fixed(true);
        let mut opt = Optimizer::new(OptimizerConfig::adam(), &net).unwrap();
        let mut grads = Gradients::new(net.architecture());
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let opts = TrainOptions::new(Loss::CrossEntropy);
        for round in 0..3 {
            for par in [Par::Seq, Par::rayon(2)] {
                let e = evaluate(&net, &mut kept, &x, &y, Loss::CrossEntropy, par).unwrap();
                let mut fresh_ws = net.workspace(300);
                let f = evaluate(&net, &mut fresh_ws, &x, &y, Loss::CrossEntropy, par).unwrap();
                assert!(kept.last_input_was_sparse(), "{name}");
                assert_eq!(
                    (e.mean_loss.to_bits(), e.correct),
                    (f.mean_loss.to_bits(), f.correct),
                    "{name}, round {round}, {par:?}"
                );
            }
            // A training step on the first batch's slice in the same workspace.
            train_step(
                &mut net,
                &mut kept,
                &mut grads,
                &mut opt,
                &x[..300 * 784],
                &y[..300],
                300,
                &opts,
                0.01,
                &mut rng,
                Par::Seq,
            )
            .unwrap();
        }
        // The kept compression is what evaluation reads: changing the values behind a fixed
        // workspace's back (which its contract forbids) does not change its result, while a
        // fresh workspace sees the change.
        let before = evaluate(&net, &mut kept, &x, &y, Loss::CrossEntropy, Par::Seq).unwrap();
        let mut x = x;
        x[..300 * 784].iter_mut().for_each(|v| *v = 0.0);
        let stale = evaluate(&net, &mut kept, &x, &y, Loss::CrossEntropy, Par::Seq).unwrap();
        let fresh = evaluate(
            &net,
            &mut net.workspace(300),
            &x,
            &y,
            Loss::CrossEntropy,
            Par::Seq,
        )
        .unwrap();
        assert_eq!(
            stale.mean_loss.to_bits(),
            before.mean_loss.to_bits(),
            "{name}"
        );
        assert_ne!(
            fresh.mean_loss.to_bits(),
            before.mean_loss.to_bits(),
            "{name}"
        );
    }
}

/// `train_step` writes the first layer's updated weight straight into the sparse panels and
/// the next pass reuses them (and evaluation reuses them between batches and calls) while the
/// parameters keep their version: steps, with a max-norm projection and a hand edit of the
/// weight in between, come out bit for bit as `compute_gradients` + `Optimizer::step`, which
/// never refreshes the panels, on 1 and 2 threads and under SGD and Adam. Every third step runs
/// on the GEMM (so the panels miss its update), some batches are partial and some steps freeze
/// a layer.
#[test]
fn panels_written_by_the_optimizer_match_a_fresh_transposition() {
    let m = mnist();
    let (_, prep) = preps(&m).remove(1);
    let batches: Vec<_> = (0..4).map(|b| batch(&m, &prep, b * 300, 300)).collect();
    // Dropout takes the second layer (2^14 weights) sparse too: its panels are refreshed as
    // well. Some steps freeze one layer.
    let step_options = |step: usize| {
        let opts = TrainOptions {
            keep_prob: vec![0.4, 0.5],
            frozen: match step % 4 {
                2 => vec![true, false, false],
                3 => vec![false, true, false],
                _ => Vec::new(),
            },
            ..TrainOptions::new(Loss::CrossEntropy)
        };
        // Partial batches on some steps (the workspace holds 300 rows).
        let rows = if step % 5 == 3 { 170 } else { 300 };
        // Every third step runs on the GEMM, so the panels miss an update.
        (opts, rows, step % 3 == 1)
    };
    for config in [OptimizerConfig::Sgd, OptimizerConfig::adam()] {
        for par in [Par::Seq, Par::rayon(2)] {
            let mut fused = nets().remove(2);
            let mut plain = fused.clone();
            let mut ws_fused = fused.workspace(300);
            let mut ws_plain = plain.workspace(300);
            let mut opt_fused = Optimizer::new(config, &fused).unwrap();
            let mut opt_plain = Optimizer::new(config, &plain).unwrap();
            let mut grads = Gradients::new(fused.architecture());
            let (mut rng_f, mut rng_p) =
                (ChaCha8Rng::seed_from_u64(5), ChaCha8Rng::seed_from_u64(5));
            for (step, (x, y)) in batches.iter().cycle().take(11).enumerate() {
                let (opts, rows, dense) = step_options(step);
                let path = if dense {
                    InputPath::Dense
                } else {
                    InputPath::Auto
                };
                ws_fused.set_input_path(path);
                ws_plain.set_input_path(path);
                let (x, y) = (&x[..rows * 784], &y[..rows]);
                let lf = train_step(
                    &mut fused,
                    &mut ws_fused,
                    &mut grads,
                    &mut opt_fused,
                    x,
                    y,
                    rows,
                    &opts,
                    0.05,
                    &mut rng_f,
                    par,
                )
                .unwrap();
                assert_eq!(ws_fused.last_input_was_sparse(), !dense, "step {step}");
                assert_eq!(ws_fused.layer_input_was_sparse(1), !dense, "step {step}");
                let lp = compute_gradients(
                    &plain,
                    &mut ws_plain,
                    &mut grads,
                    x,
                    y,
                    rows,
                    &opts,
                    &mut rng_p,
                    par,
                )
                .unwrap();
                opt_plain.step(&mut plain, &grads, 0.05, par).unwrap();
                assert_eq!(lf.to_bits(), lp.to_bits(), "step {step}");
                match step {
                    2 => {
                        for net in [&mut fused, &mut plain] {
                            apply_max_norm(net, 0.5, &[], par);
                        }
                    }
                    4 => {
                        for net in [&mut fused, &mut plain] {
                            net.params_mut(0).unwrap().0[100] += 1.0;
                        }
                    }
                    _ => {}
                }
                let (ef, ep) = (
                    evaluate(&fused, &mut ws_fused, x, y, Loss::CrossEntropy, par).unwrap(),
                    evaluate(&plain, &mut ws_plain, x, y, Loss::CrossEntropy, par).unwrap(),
                );
                assert_eq!(
                    ef.mean_loss.to_bits(),
                    ep.mean_loss.to_bits(),
                    "step {step}"
                );
            }
            assert!(fused == plain, "{config:?} {par:?}");
        }
    }
}

/// With dropout, a hidden layer's input is mostly zero and takes the sparse kernels too
/// (forward product and weight gradient): the loss and every gradient match the dense path to
/// float rounding, bit for bit on 1, 2 and 3 threads.
#[test]
fn dropout_takes_hidden_layers_sparse_and_matches_dense() {
    let m = mnist();
    let (_, prep) = preps(&m).remove(0);
    let (x, y) = batch(&m, &prep, 3000, 300);
    // 784-256-64-10: the second layer has 2^14 weights.
    let net = nets().remove(2);
    let opts = TrainOptions {
        keep_prob: vec![0.4, 0.5],
        ..TrainOptions::new(Loss::CrossEntropy)
    };
    let run = |path: InputPath, par: Par| {
        let mut ws = net.workspace(300);
        ws.set_input_path(path);
        let mut grads = Gradients::new(net.architecture());
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let loss = compute_gradients(&net, &mut ws, &mut grads, &x, &y, 300, &opts, &mut rng, par)
            .unwrap();
        let sparse: Vec<bool> = (0..3).map(|l| ws.layer_input_was_sparse(l)).collect();
        (loss, grads, sparse)
    };
    let (ld, gd, sd) = run(InputPath::Dense, Par::Seq);
    assert_eq!(sd, [false, false, false]);
    let (ls, gs, ss) = run(InputPath::Auto, Par::Seq);
    assert_eq!(
        ss,
        [true, true, false],
        "the 64 x 10 output layer stays dense"
    );
    assert!(
        (ls - ld).abs() <= 1e-5 * ld.abs().max(1.0),
        "loss {ls} vs {ld}"
    );
    for (l, (a, b)) in gs.layers().iter().zip(gd.layers()).enumerate() {
        assert_close(
            &format!("layer {l} weight gradient"),
            a.weight(),
            b.weight(),
            1e-4,
        );
        assert_close(
            &format!("layer {l} bias gradient"),
            a.bias(),
            b.bias(),
            1e-4,
        );
    }
    for threads in [2, 3] {
        let (lt, gt, st) = run(InputPath::Auto, Par::rayon(threads));
        assert_eq!(st, ss);
        assert_eq!(lt.to_bits(), ls.to_bits(), "{threads} threads");
        assert!(
            gradient_bits(&gt) == gradient_bits(&gs),
            "{threads} threads"
        );
    }
    // Evaluation (no dropout) keeps the hidden layer on the GEMM.
    let mut ws = net.workspace(300);
    net.forward(&mut ws, &x, 300, Par::Seq).unwrap();
    assert!(ws.layer_input_was_sparse(0) && !ws.layer_input_was_sparse(1));
}

/// Shuffled batches assembled from the set compressed once (`train_step_rows`) train exactly
/// as gathered batches compressed at every step (`train_step`): same losses and parameters,
/// bit for bit, for `x/255` and standardized inputs, on one and two threads, with dropout and
/// Adam; a partial last batch, a batch under 8 rows and a forced-dense workspace (both
/// gathered by `train_step_rows`) too.
#[test]
fn batches_of_compressed_rows_train_as_gathered_batches() {
    let m = mnist();
    let rows_n = 1200usize;
    for (name, prep) in preps(&m) {
        let (set, labels) = batch(&m, &prep, 0, rows_n);
        let rows = SparseRows::new(&set, 784, Par::Seq).unwrap();
        assert!(
            rows.suits_sparse_path(),
            "{name}: density {}",
            rows.density()
        );
        let mut shuffle = ChaCha8Rng::seed_from_u64(4);
        let mut order: Vec<usize> = (0..rows_n).collect();
        rand::seq::SliceRandom::shuffle(&mut order[..], &mut shuffle);
        // Full batches, a partial one, one under MIN_BATCH rows.
        let batches: Vec<&[usize]> = vec![
            &order[..256],
            &order[256..512],
            &order[512..700],
            &order[700..705],
        ];
        let opts = TrainOptions {
            keep_prob: vec![0.4, 0.5],
            ..TrainOptions::new(Loss::CrossEntropy)
        };
        for (path, par) in [
            (InputPath::Auto, Par::Seq),
            (InputPath::Auto, Par::rayon(2)),
            (InputPath::Dense, Par::Seq),
        ] {
            let train = |use_rows| {
                train_batches(
                    use_rows,
                    &set,
                    &labels,
                    &batches,
                    OptimizerConfig::adam(),
                    &opts,
                    path,
                    false,
                    par,
                )
            };
            let (gathered, from_rows) = (train(false), train(true));
            assert_eq!(gathered.0, from_rows.0, "{name} {path:?} {par:?}: losses");
            assert!(
                gathered.1 == from_rows.1,
                "{name} {path:?} {par:?}: parameters"
            );
            // Batches of 8 rows or more take the sparse path exactly when Auto allows it.
            for (ix, &ran_sparse) in batches.iter().zip(&from_rows.2) {
                if ix.len() >= 8 {
                    assert_eq!(ran_sparse, path == InputPath::Auto, "{name} {path:?}");
                }
            }
        }
    }
}

/// `train_step_rows` refuses rows that do not fit the network or each other, and an index
/// past the last row, naming what is wrong, and leaves the network untouched.
#[test]
fn train_step_rows_names_bad_rows() {
    let m = mnist();
    let (set, labels) = batch(&m, &Preprocessing::SCALE, 0, 64);
    let rows = SparseRows::new(&set, 784, Par::Seq).unwrap();
    let mut net = nets().remove(0);
    let before = net.clone();
    let mut ws = net.workspace(64);
    let mut grads = Gradients::new(net.architecture());
    let mut opt = Optimizer::new(OptimizerConfig::Sgd, &net).unwrap();
    let opts = TrainOptions::new(Loss::CrossEntropy);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let y = &labels[..16];
    let mut refused = |rows: &SparseRows<f32>, dense: &[f32], ix: &[usize]| {
        train_step_rows(
            &mut net,
            &mut ws,
            &mut grads,
            &mut opt,
            rows,
            dense,
            ix,
            y,
            &opts,
            0.1,
            &mut rng,
            Par::Seq,
        )
        .unwrap_err()
        .to_string()
    };
    let ix: Vec<usize> = (0..15).chain([64]).collect();
    let err = refused(&rows, &set, &ix);
    assert!(
        err.contains("index 64 (position 15) is past the set's 64 rows"),
        "{err}"
    );
    let ix: Vec<usize> = (0..16).collect();
    let err = refused(&rows, &set[..784 * 63], &ix);
    assert!(err.contains("the dense rows hold"), "{err}");
    let narrow = SparseRows::new(&set[..64 * 392], 392, Par::Seq).unwrap();
    let err = refused(&narrow, &set, &ix);
    assert!(err.contains("392 inputs, the network takes 784"), "{err}");
    let err = SparseRows::new(&set[..100], 784, Par::Seq)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("100 values are not whole rows of 784 inputs"),
        "{err}"
    );
    let err = SparseRows::new(&set, 0, Par::Seq).unwrap_err().to_string();
    assert!(
        err.contains("rows of 0 inputs cannot be compressed"),
        "{err}"
    );
    // Built for training only where it pays: batches of 8 rows or more, a sparse set.
    assert!(
        SparseRows::for_batches(&set, 784, 5, Par::Seq)
            .unwrap()
            .is_none()
    );
    let built = SparseRows::for_batches(&set, 784, 8, Par::Seq)
        .unwrap()
        .unwrap();
    assert_eq!(built.rows(), 64);
    let dense: Vec<f32> = (0..64 * 784).map(|i| (i % 7 + 1) as f32).collect();
    assert!(
        SparseRows::for_batches(&dense, 784, 64, Par::Seq)
            .unwrap()
            .is_none()
    );
    let same = net
        .layers()
        .iter()
        .zip(before.layers())
        .all(|(a, b)| a.weight_slice() == b.weight_slice() && a.bias() == b.bias());
    assert!(same, "a refused batch changes nothing");
}

fn gather(set: &[f32], ix: &[usize]) -> Vec<f32> {
    ix.iter()
        .flat_map(|&i| set[i * 784..(i + 1) * 784].iter().copied())
        .collect()
}

/// Trains `batches` with `train_step_rows` (or on the gathered rows with `train_step`), with
/// a max-norm projection after each step; returns the losses' and the parameters' bits, and
/// whether each step's first layer ran sparse.
#[allow(clippy::too_many_arguments)]
fn train_batches(
    use_rows: bool,
    set: &[f32],
    labels: &[u8],
    batches: &[&[usize]],
    config: OptimizerConfig,
    opts: &TrainOptions,
    path: InputPath,
    fixed: bool,
    par: Par,
) -> (Vec<u64>, Vec<u32>, Vec<bool>) {
    let rows = SparseRows::new(set, 784, Par::Seq).unwrap();
    let mut net = nets().remove(2);
    let mut ws = net.workspace(batches.iter().map(|b| b.len()).max().unwrap_or(1));
    ws.set_input_path(path);
    ws.set_input_fixed(fixed);
    let mut grads = Gradients::new(net.architecture());
    let mut opt = Optimizer::new(config, &net).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let (mut losses, mut sparse) = (Vec::new(), Vec::new());
    for ix in batches {
        let y: Vec<u8> = ix.iter().map(|&i| labels[i]).collect();
        let loss = if use_rows {
            train_step_rows(
                &mut net, &mut ws, &mut grads, &mut opt, &rows, set, ix, &y, opts, 1e-2, &mut rng,
                par,
            )
        } else {
            let x = gather(set, ix);
            train_step(
                &mut net,
                &mut ws,
                &mut grads,
                &mut opt,
                &x,
                &y,
                ix.len(),
                opts,
                1e-2,
                &mut rng,
                par,
            )
        };
        losses.push(loss.unwrap().to_bits());
        sparse.push(ws.layer_input_was_sparse(0));
        apply_max_norm(&mut net, 2.0, &opts.frozen, par);
    }
    let params = net
        .layers()
        .iter()
        .flat_map(|l| l.weight_slice().iter().chain(l.bias()).map(|v| v.to_bits()))
        .collect();
    (losses, params, sparse)
}

/// `train_step_rows` against `train_step` on the gathered rows in the other training modes:
/// L2 with dropout, frozen first or upper layers, SGD on single examples (the fused path),
/// batches under 8 rows, forced sparse, max-norm after each step, 1 and 2 threads.
#[test]
fn compressed_row_batches_match_gathered_ones_in_every_training_mode() {
    let m = mnist();
    for (name, prep) in preps(&m) {
        let (set, labels) = batch(&m, &prep, 0, 400);
        let mut order: Vec<usize> = (0..400).collect();
        rand::seq::SliceRandom::shuffle(&mut order[..], &mut ChaCha8Rng::seed_from_u64(3));
        let batches: Vec<&[usize]> = vec![
            &order[..1],
            &order[1..9],
            &order[9..73],
            &order[73..74],
            &order[74..81],
            &order[81..145],
        ];
        let plain = TrainOptions::new(Loss::CrossEntropy);
        let l2_dropout = TrainOptions {
            l2: 1e-3,
            keep_prob: vec![0.5, 0.7],
            ..plain.clone()
        };
        let frozen_first = TrainOptions {
            frozen: vec![true, false, false],
            ..plain.clone()
        };
        let frozen_upper = TrainOptions {
            frozen: vec![false, true, true],
            ..plain.clone()
        };
        for (config, opts, path) in [
            (OptimizerConfig::Sgd, &l2_dropout, InputPath::Auto),
            (OptimizerConfig::Sgd, &frozen_first, InputPath::Auto),
            (OptimizerConfig::Sgd, &frozen_first, InputPath::Sparse),
            (OptimizerConfig::adam(), &l2_dropout, InputPath::Sparse),
            (OptimizerConfig::Sgd, &frozen_upper, InputPath::Sparse),
        ] {
            for par in [Par::Seq, Par::rayon(2)] {
                let run = |rows| {
                    train_batches(
                        rows, &set, &labels, &batches, config, opts, path, false, par,
                    )
                };
                let (gathered, from_rows) = (run(false), run(true));
                let what = format!("{name} {config:?} {path:?} {par:?}");
                assert_eq!(gathered.0, from_rows.0, "{what}: losses");
                assert!(gathered.1 == from_rows.1, "{what}: parameters");
            }
        }
    }
}

/// Batches that go dense are gathered into one buffer of the workspace, whose address stays
/// while its rows change: a workspace with fixed inputs must not take the second such batch
/// for the first (it did, before the buffer was marked transient).
#[test]
fn a_fixed_workspace_never_keeps_the_gathered_batch() {
    let m = mnist();
    let (set, labels) = batch(&m, &Preprocessing::SCALE, 0, 200);
    let batches: Vec<Vec<usize>> = (0..4).map(|b| (b * 5..b * 5 + 5).collect()).collect();
    let batches: Vec<&[usize]> = batches.iter().map(Vec::as_slice).collect();
    let opts = TrainOptions::new(Loss::CrossEntropy);
    let adam = OptimizerConfig::adam();
    let run = |rows, fixed| {
        train_batches(
            rows,
            &set,
            &labels,
            &batches,
            adam,
            &opts,
            InputPath::Sparse,
            fixed,
            Par::Seq,
        )
    };
    let reference = run(false, false);
    assert_eq!(run(true, false), reference);
    assert_eq!(run(true, true), reference);
}

/// With a non-zero background (standardized inputs), a batch whose first value is ink would
/// choose another background when gathered than the set's: `train_step_rows` gathers it, so
/// the results stay those of the gathered rows, bit for bit.
#[test]
fn a_batch_with_its_own_background_is_gathered() {
    let m = mnist();
    let (_, prep) = preps(&m).remove(1);
    let (mut set, labels) = batch(&m, &prep, 0, 300);
    let background = set[0];
    assert_ne!(background, 0.0);
    // Row 7 starts with ink: a batch led by it sees 0 and that value as candidates.
    set[7 * 784] = set.iter().copied().fold(f32::MIN, f32::max);
    let rows = SparseRows::new(&set, 784, Par::Seq).unwrap();
    assert_eq!(rows.background(), background);
    let led_by_ink: Vec<usize> = std::iter::once(7).chain(100..163).collect();
    let batches: Vec<&[usize]> = vec![&led_by_ink, &led_by_ink];
    let opts = TrainOptions::new(Loss::CrossEntropy);
    let run = |rows| {
        train_batches(
            rows,
            &set,
            &labels,
            &batches,
            OptimizerConfig::Sgd,
            &opts,
            InputPath::Auto,
            false,
            Par::Seq,
        )
    };
    assert_eq!(run(true), run(false));
}

/// Without L2, `train_step` applies a sparse layer's weight gradient in its panels (moments
/// held in the panel layout between steps). Against `compute_gradients` + `Optimizer::step`
/// (gradient rows, row-major moments) on the same batches: the same losses, parameters and
/// exported optimizer state, bit for bit, for every update rule and net (narrow last panels
/// included), on 1 and 2 threads alike; a run resumed from the exported state continues
/// identically. The first layer's gradient slot, poisoned with NaN, shows the panel path ran.
#[test]
fn updates_in_panels_match_gradients_then_step() {
    let m = mnist();
    let (set, labels) = batch(&m, &Preprocessing::SCALE, 0, 64 * 5);
    let configs = [
        OptimizerConfig::Sgd,
        OptimizerConfig::Momentum {
            momentum: 0.9,
            nesterov: true,
        },
        OptimizerConfig::adam(),
        OptimizerConfig::RmsProp {
            alpha: 0.99,
            epsilon: 1e-8,
        },
    ];
    type Trainer = (
        Network<f32>,
        Workspace<f32>,
        Gradients<f32>,
        Optimizer<f32>,
        ChaCha8Rng,
    );
    let params = |net: &Network<f32>| -> Vec<u32> {
        net.layers()
            .iter()
            .flat_map(|l| l.weight_slice().iter().chain(l.bias()).map(|v| v.to_bits()))
            .collect()
    };
    for (k, net) in nets().into_iter().enumerate() {
        let hidden = net.num_layers() - 1;
        let opts = TrainOptions {
            keep_prob: vec![0.6; hidden],
            ..TrainOptions::new(if k == 1 {
                Loss::MeanSquaredError
            } else {
                Loss::CrossEntropy
            })
        };
        let start = |config: OptimizerConfig| -> Trainer {
            let ws = net.workspace(64);
            let grads = Gradients::new(net.architecture());
            let opt = Optimizer::new(config, &net).unwrap();
            (net.clone(), ws, grads, opt, ChaCha8Rng::seed_from_u64(5))
        };
        let step = |t: &mut Trainer, b: usize, fused: bool, par: Par| -> u64 {
            let (net, ws, grads, opt, rng) = t;
            let x = &set[b * 64 * 784..(b + 1) * 64 * 784];
            let y = &labels[b * 64..(b + 1) * 64];
            grads.layers_mut()[0].weight_mut().fill(f32::NAN);
            let loss = if fused {
                let loss = train_step(net, ws, grads, opt, x, y, 64, &opts, 1e-3, rng, par);
                // Applied from the panels: the row slot was never written.
                assert!(grads.layers()[0].weight().iter().all(|v| v.is_nan()));
                loss.unwrap()
            } else {
                let loss = compute_gradients(net, ws, grads, x, y, 64, &opts, rng, par).unwrap();
                opt.step(net, grads, 1e-3, par).unwrap();
                loss
            };
            assert!(ws.layer_input_was_sparse(0));
            loss.to_bits()
        };
        for config in configs {
            let mut by_threads = Vec::new();
            for par in [Par::Seq, Par::rayon(2)] {
                let what = format!("net {k} {config:?} {par:?}");
                let (mut fused, mut plain) = (start(config), start(config));
                let mut losses = Vec::new();
                for b in 0..3 {
                    losses.push(step(&mut fused, b, true, par));
                    assert_eq!(losses[b], step(&mut plain, b, false, par), "{what}: loss");
                }
                assert_eq!(params(&fused.0), params(&plain.0), "{what}: parameters");
                assert_eq!(fused.3.state(), plain.3.state(), "{what}: optimizer state");
                // Resumed from the exported state (row-major), the run goes on as before.
                let mut resumed = start(config);
                resumed.0 = fused.0.clone();
                resumed.3 = Optimizer::from_state(config, fused.3.state(), &resumed.0).unwrap();
                resumed.4 = fused.4.clone();
                for b in 3..5 {
                    let expected = step(&mut fused, b, true, par);
                    assert_eq!(step(&mut resumed, b, true, par), expected, "{what}: loss");
                    assert_eq!(step(&mut plain, b, false, par), expected, "{what}: loss");
                    losses.push(expected);
                }
                assert_eq!(params(&resumed.0), params(&fused.0), "{what}: resumed");
                assert_eq!(params(&plain.0), params(&fused.0), "{what}: plain");
                assert_eq!(resumed.3.state(), plain.3.state(), "{what}: resumed state");
                by_threads.push((losses, params(&fused.0)));
            }
            assert!(
                by_threads[0] == by_threads[1],
                "net {k} {config:?}: one thread against two"
            );
        }
    }
}

/// A first layer of 15 panels (14 of 32 and a narrow one) on four threads: each half of the
/// panel split has 7 panels, an odd number, and none of them is the narrow one. Training steps
/// give the bits of one thread.
#[test]
fn fifteen_panels_train_the_same_on_four_threads() {
    let m = mnist();
    let (set, labels) = batch(&m, &Preprocessing::SCALE, 0, 64 * 2);
    let arch =
        Architecture::uniform(vec![784, 470, 10], Activation::Relu, OutputHead::Softmax).unwrap();
    let init = LayerInit::new(WeightInit::HeNormal, BiasInit::Zero);
    let net = Network::new(&arch, &[init], &mut ChaCha8Rng::seed_from_u64(3)).unwrap();
    let opts = TrainOptions::new(Loss::CrossEntropy);
    let run = |par: Par| -> Vec<u32> {
        let mut net = net.clone();
        let mut ws = net.workspace(64);
        let mut grads = Gradients::new(net.architecture());
        let mut opt = Optimizer::new(OptimizerConfig::adam(), &net).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for b in 0..2 {
            let x = &set[b * 64 * 784..(b + 1) * 64 * 784];
            let y = &labels[b * 64..(b + 1) * 64];
            train_step(
                &mut net, &mut ws, &mut grads, &mut opt, x, y, 64, &opts, 1e-3, &mut rng, par,
            )
            .unwrap();
            assert!(ws.layer_input_was_sparse(0));
        }
        net.layers()
            .iter()
            .flat_map(|l| l.weight_slice().iter().chain(l.bias()).map(|v| v.to_bits()))
            .collect()
    };
    let one = run(Par::Seq);
    assert!(one == run(Par::rayon(4)), "four threads");
    assert!(one == run(Par::rayon(2)), "two threads");
}
