//! The training loop: mini-batches through mnist-core, evaluation per epoch, checkpoints,
//! early stopping, divergence detection, and the run directory at the end.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use mnist_core::dropout::apply_mask;
use mnist_core::faer::Par;
use mnist_core::rand_chacha::ChaCha8Rng;
use mnist_core::{
    Gradients, Network, Optimizer, RngState, SparseRows, Workspace, evaluate, train_step,
    train_step_rows,
};
use mnist_dataset::Dataset;
use mnist_dataset::augment::Augmenter;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, RunState};
use crate::config::{ExperimentConfig, Shuffle, SplitName, StopMetric};
use crate::confusion::ConfusionMatrix;
use crate::data::{PreparedData, core_preprocessing};
use crate::error::TrainError;
use crate::metrics::{EpochMetrics, SplitMetrics};
use crate::report;

/// File names inside a run directory.
pub mod files {
    pub const CONFIG: &str = "config.json";
    pub const METRICS_JSON: &str = "metrics.json";
    pub const METRICS_CSV: &str = "metrics.csv";
    pub const MODEL: &str = "model.safetensors";
    pub const BEST_MODEL: &str = "best_model.safetensors";
    pub const CHECKPOINT: &str = "checkpoint.safetensors";
    pub const CONFUSION: &str = "confusion.csv";
    pub const LOSS_PLOT: &str = "loss.png";
    pub const ACCURACY_PLOT: &str = "accuracy.png";
}

/// Every file a run writes in its directory.
const OUTPUTS: [&str; 9] = [
    files::CONFIG,
    files::METRICS_JSON,
    files::METRICS_CSV,
    files::MODEL,
    files::BEST_MODEL,
    files::CHECKPOINT,
    files::CONFUSION,
    files::LOSS_PLOT,
    files::ACCURACY_PLOT,
];

/// Removes the temp files a killed run left beside its outputs (atomic writes name them
/// `.<output>.<random>.tmp`). The run owns its directory, so no other writer is using them;
/// failures only leave clutter, so they are ignored.
fn remove_stale_temp_files(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let stale =
            name.ends_with(".tmp") && OUTPUTS.iter().any(|o| name.starts_with(&format!(".{o}.")));
        if stale {
            tracing::debug!("removing {name}, left by an interrupted write");
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The outputs that show a directory already holds a run.
const RUN_OUTPUTS: [&str; 3] = [files::CHECKPOINT, files::MODEL, files::METRICS_JSON];

/// Makes `dir` ready for a fresh run: refuses it when it holds another run's outputs, unless
/// `overwrite`, which deletes every output of that run first.
fn claim_run_dir(dir: &Path, overwrite: bool) -> Result<(), TrainError> {
    let found: Vec<&str> = RUN_OUTPUTS
        .into_iter()
        .filter(|name| dir.join(name).exists())
        .collect();
    if found.is_empty() {
        return Ok(());
    }
    if !overwrite {
        let checkpoint = dir.join(files::CHECKPOINT);
        let state = match checkpoint::load(&checkpoint) {
            Ok(ck) if ck.state.next_batch > 0 => format!(
                "; its checkpoint of {} stopped in epoch {} after batch {}",
                ck.state.experiment,
                ck.state.epoch + 1,
                ck.state.next_batch
            ),
            Ok(ck) => format!(
                "; its checkpoint of {} stands after epoch {}",
                ck.state.experiment, ck.state.epoch
            ),
            Err(_) => String::new(),
        };
        let resume = if found.contains(&files::CHECKPOINT) {
            format!("continue it (--resume {}), ", checkpoint.display())
        } else {
            String::new()
        };
        return Err(TrainError::RunExists {
            dir: dir.to_path_buf(),
            found: found.join(", "),
            state,
            resume,
        });
    }
    for name in OUTPUTS {
        match std::fs::remove_file(dir.join(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(TrainError::Write {
                    path: dir.join(name),
                    source: e,
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// Where `now` differs from the config a run `started` with (dotted paths), leaving out what
/// a resumed run may change: its number of epochs, its description and its checkpointing.
fn resume_differences(started: &serde_json::Value, now: &serde_json::Value) -> Vec<String> {
    fn walk(path: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<String>) {
        const FREE: [&str; 3] = ["training.epochs", "description", "checkpoint"];
        if FREE.contains(&path) || a == b {
            return;
        }
        match (a, b) {
            (serde_json::Value::Object(x), serde_json::Value::Object(y)) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let null = serde_json::Value::Null;
                    let sub = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(
                        &sub,
                        x.get(k).unwrap_or(&null),
                        y.get(k).unwrap_or(&null),
                        out,
                    );
                }
            }
            _ => out.push(format!("`{path}` was {a}, is {b}")),
        }
    }
    let mut out = Vec::new();
    walk("", started, now, &mut out);
    out
}

/// How to run (as opposed to what to run, which is the config).
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The run directory; created if missing.
    pub out_dir: PathBuf,
    /// Continue from this checkpoint instead of starting afresh.
    pub resume: Option<PathBuf>,
    /// Threads for the matrix products, sparse kernels, augmentation, optimizer and max-norm
    /// passes (1 = sequential). Results do not depend on it.
    pub threads: usize,
    /// No progress bar and no per-epoch log lines.
    pub quiet: bool,
    /// Set (e.g. by a Ctrl-C handler) to stop at the next batch boundary with a checkpoint.
    pub interrupt: Option<Arc<AtomicBool>>,
    /// A fresh run into a directory that already holds a run's outputs (checkpoint, model or
    /// metrics) deletes them first when set, and is refused when not, so that an unfinished
    /// run's checkpoint is never replaced by accident and a directory never mixes two runs.
    pub overwrite: bool,
}

impl RunOptions {
    pub fn new(out_dir: impl Into<PathBuf>) -> Self {
        RunOptions {
            out_dir: out_dir.into(),
            resume: None,
            threads: 1,
            quiet: true,
            interrupt: None,
            overwrite: false,
        }
    }
}

/// The final results of a finished run (written as `metrics.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    pub experiment: String,
    /// Accuracy on the test set of the final (or best, with early stopping) model.
    pub test_accuracy: f64,
    pub test_loss: f64,
    /// The same model on the training and validation splits.
    pub train: SplitMetrics,
    pub validation: Option<SplitMetrics>,
    /// Recall per digit on the test set (`None` for a digit absent from it).
    pub per_class_accuracy: Vec<Option<f64>>,
    pub confusion: ConfusionMatrix,
    pub epochs_completed: usize,
    pub stopped_early: bool,
    pub best_epoch: Option<usize>,
    /// Seconds spent in training steps (evaluation excluded), over all epochs.
    pub train_seconds: f64,
    /// Wall time of this invocation, in seconds.
    pub wall_seconds: f64,
    pub threads: usize,
    pub history: Vec<EpochMetrics>,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub enum RunOutcome {
    Finished(Box<RunSummary>),
    /// Stopped by the interrupt flag; the checkpoint continues it exactly.
    Interrupted {
        checkpoint: PathBuf,
        epoch: usize,
        batch: usize,
    },
}

fn par_for(threads: usize) -> Par {
    if threads <= 1 {
        Par::Seq
    } else {
        Par::rayon(threads)
    }
}

/// RNG streams derived from the config seed: one per purpose, so changing one use (e.g.
/// dropout on or off) does not change another (init, shuffling).
fn rng_stream(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}
const INIT_STREAM: u64 = 0;
const SHUFFLE_STREAM: u64 = 1;
const DROPOUT_STREAM: u64 = 2;
const AUGMENT_STREAM: u64 = 3;

fn eval_split(
    net: &Network<f32>,
    ws: &mut Workspace<f32>,
    data: &Dataset,
    loss: mnist_core::Loss,
    par: Par,
) -> Result<SplitMetrics, TrainError> {
    let e = evaluate(net, ws, data.features(), data.labels(), loss, par)?;
    Ok(SplitMetrics {
        loss: e.mean_loss,
        accuracy: e.accuracy,
    })
}

/// Runs `config` on `data`. See [`RunOptions`] for resume, threads, progress and interrupt.
pub fn run(
    config: &ExperimentConfig,
    data: &PreparedData,
    opts: &RunOptions,
) -> Result<RunOutcome, TrainError> {
    // The whole run in one pool of its threads, so each parallel pass hands work between them
    // directly rather than parking and waking this thread.
    mnist_core::with_thread_pool(par_for(opts.threads), || run_in_pool(config, data, opts))
}

fn run_in_pool(
    config: &ExperimentConfig,
    data: &PreparedData,
    opts: &RunOptions,
) -> Result<RunOutcome, TrainError> {
    let started = Instant::now();
    config.validate("config")?;
    let arch = config
        .architecture()
        .map_err(|e| TrainError::Core(e.into()))?;
    let train_options = config.train_options();
    let prep = core_preprocessing(&data.preprocessing);
    let par = par_for(opts.threads);
    let n = data.train.len();
    let batch_size = config.training.batch_size.resolve(n);
    let batches_per_epoch = n.div_ceil(batch_size);
    let out = &opts.out_dir;
    std::fs::create_dir_all(out).map_err(|source| TrainError::Write {
        path: out.clone(),
        source,
    })?;
    remove_stale_temp_files(out);
    if opts.resume.is_none() {
        claim_run_dir(out, opts.overwrite)?;
    }
    let config_json = serde_json::to_value(config).map_err(|e| TrainError::Write {
        path: out.join(files::CONFIG),
        source: e.into(),
    })?;

    // Fresh state, or the checkpoint's.
    let (mut net, mut optimizer, mut state) = match &opts.resume {
        Some(path) => {
            let ck = checkpoint::load(path)?;
            if ck.state.architecture != arch || ck.state.optimizer != config.training.optimizer {
                return Err(TrainError::Checkpoint {
                    path: path.clone(),
                    reason: format!(
                        "it belongs to a different experiment ({}: {:?} with {:?}); this config trains {:?} with {:?}",
                        ck.state.experiment,
                        ck.state.architecture.sizes,
                        ck.state.optimizer,
                        arch.sizes,
                        config.training.optimizer
                    ),
                });
            }
            if let Some(started_with) = &ck.state.config {
                let changed = resume_differences(started_with, &config_json);
                if !changed.is_empty() {
                    const SHOWN: usize = 6;
                    let more = match changed.len().saturating_sub(SHOWN) {
                        0 => String::new(),
                        n => format!(" and {n} more"),
                    };
                    return Err(TrainError::Checkpoint {
                        path: path.clone(),
                        reason: format!(
                            "the run was started with another config ({}{more}); resume with the config it started with (the run directory's {} holds it; only `training.epochs` may change), or start afresh without resuming",
                            changed
                                .iter()
                                .take(SHOWN)
                                .cloned()
                                .collect::<Vec<_>>()
                                .join(", "),
                            files::CONFIG
                        ),
                    });
                }
            }
            tracing::info!(
                "resuming {} from {} at epoch {}, batch {}",
                config.name,
                path.display(),
                ck.state.epoch + 1,
                ck.state.next_batch + 1
            );
            (ck.network, ck.optimizer, ck.state)
        }
        None => {
            let mut init_rng = rng_stream(config.seed, INIT_STREAM);
            let net = Network::<f32>::new(&arch, &config.layer_inits(), &mut init_rng)?;
            let optimizer = Optimizer::new(config.training.optimizer, &net)?;
            let state = RunState {
                experiment: config.name.clone(),
                architecture: arch.clone(),
                preprocessing: prep,
                optimizer: config.training.optimizer,
                epoch: 0,
                next_batch: 0,
                global_step: 0,
                optimizer_step: 0,
                shuffle_rng: RngState::capture(&rng_stream(config.seed, SHUFFLE_STREAM)),
                dropout_rng: RngState::capture(&rng_stream(config.seed, DROPOUT_STREAM)),
                augment_rng: Some(RngState::capture(&rng_stream(config.seed, AUGMENT_STREAM))),
                epoch_loss_sum: 0.0,
                epoch_batches: 0,
                epoch_seconds: 0.0,
                history: Vec::new(),
                best_epoch: None,
                best_metric: None,
                epochs_without_improvement: 0,
                config: Some(config_json.clone()),
            };
            (net, optimizer, state)
        }
    };
    // Written once the run is known to go ahead: a refused resume leaves the directory as it was.
    checkpoint::write_atomically(&out.join(files::CONFIG), config.to_json().as_bytes())?;
    let mut best_net: Option<Network<f32>> = match (&config.early_stopping, state.best_epoch) {
        (Some(stop), Some(_)) if stop.restore_best => {
            let path = out.join(files::BEST_MODEL);
            Some(
                mnist_core::load_model::<f32>(&path)
                    .map_err(|e| TrainError::Checkpoint {
                        path: path.clone(),
                        reason: format!("the best model saved so far cannot be read: {e}"),
                    })?
                    .network,
            )
        }
        _ => None,
    };

    let mut ws = net.workspace(batch_size);
    let mut eval_ws = net.workspace(config.evaluation.batch_size);
    let mut grads = Gradients::<f32>::new(&arch);
    let mut dropout_rng = state.dropout_rng.restore();
    let mut augment_rng = state
        .augment_rng
        .map_or_else(|| rng_stream(config.seed, AUGMENT_STREAM), |s| s.restore());
    let mut augmenter = match config.data.augmentation.filter(|a| a.is_active()) {
        Some(a) => Some(Augmenter::new(a)?),
        None => None,
    };
    // What an empty pixel is in this normalization: it fills what moves into the frame.
    let background = data.preprocessing.apply(0);
    let mut order: Vec<usize> = (0..n).collect();
    let (mut x_buf, mut y_buf) = (
        Vec::with_capacity(batch_size * data.train.dim()),
        Vec::with_capacity(batch_size),
    );
    let input_keep_prob = config.model.input_keep_prob;
    let input_dropout = input_keep_prob < 1.0;
    // In fixed order without augmentation or input dropout every batch is a slice of
    // `data.train`, borrowed immutably for the whole run, so a full batch is compressed for the
    // sparse first layer once.
    let training_inputs_fixed =
        config.training.shuffle == Shuffle::Fixed && augmenter.is_none() && !input_dropout;
    ws.set_input_fixed(training_inputs_fixed);
    // The splits evaluated every epoch are borrowed immutably for the run too: each of their
    // batches is compressed in the first epoch's evaluation and kept for the others (a quarter
    // of an evaluation pass was compression). When the training batches are the same slices
    // of the training set as its evaluation batches, the training workspace already keeps them
    // and evaluates that split, so they are not kept twice (two-layer-sigmoid's peak memory).
    eval_ws.set_input_fixed(true);
    let train_eval_in_training_ws =
        training_inputs_fixed && batch_size == config.evaluation.batch_size;
    // Shuffled batches with nothing applied to them are rows of the training set: the set is
    // compressed once for the sparse first layer and each batch assembled from its rows (no
    // dense gather, no compression per step), when the batches and the set's density let it pay.
    let training_rows =
        if config.training.shuffle == Shuffle::EachEpoch && augmenter.is_none() && !input_dropout {
            SparseRows::for_batches(data.train.features(), data.train.dim(), batch_size, par)?
        } else {
            None
        };
    let wants = |s: SplitName| config.evaluation.every_epoch.contains(&s);
    let show_bar = !opts.quiet && std::io::stderr().is_terminal();
    let mut stopped_early = false;

    while state.epoch < config.training.epochs && !stopped_early {
        let epoch = state.epoch;
        // The epoch's order comes from the shuffle RNG as it was at the epoch's start.
        let mut shuffle_rng = state.shuffle_rng.restore();
        if config.training.shuffle == Shuffle::EachEpoch {
            order.iter_mut().enumerate().for_each(|(i, o)| *o = i);
            order.shuffle(&mut shuffle_rng);
        }
        let bar = show_bar.then(|| epoch_bar(epoch, config.training.epochs, batches_per_epoch));
        let epoch_started = Instant::now();
        let seconds_before = state.epoch_seconds;
        let mut lr = config.training.learning_rate;
        for b in state.next_batch..batches_per_epoch {
            let start = b * batch_size;
            let len = batch_size.min(n - start);
            lr = config.training.schedule.lr_at(
                config.training.learning_rate,
                epoch as u64,
                state.global_step,
            );
            let batch_rows = &order[start..start + len];
            let (x, y) = match (config.training.shuffle, augmenter.as_mut()) {
                _ if training_rows.is_some() => {
                    data.train.labels_into(batch_rows, &mut y_buf);
                    (&[][..], &y_buf[..])
                }
                (Shuffle::Fixed, None) if !input_dropout => {
                    let view = data.train.batch(start, len);
                    (view.features, view.labels)
                }
                (shuffle, augmenter) => {
                    if shuffle == Shuffle::Fixed {
                        let view = data.train.batch(start, len);
                        x_buf.clear();
                        x_buf.extend_from_slice(view.features);
                        y_buf.clear();
                        y_buf.extend_from_slice(view.labels);
                    } else {
                        data.train
                            .gather_into(&order[start..start + len], &mut x_buf, &mut y_buf);
                    }
                    if let Some(aug) = augmenter {
                        aug.augment_batch(&mut x_buf, background, &mut augment_rng, opts.threads);
                    }
                    if input_dropout {
                        // A dropped pixel becomes blank (the background value, 0 for x/255) and
                        // a kept one keeps its ink scaled by 1/keep. The mask draws from the
                        // dropout stream, before the hidden masks.
                        x_buf.iter_mut().for_each(|v| *v -= background);
                        apply_mask(&mut x_buf, None, input_keep_prob, &mut dropout_rng);
                        x_buf.iter_mut().for_each(|v| *v += background);
                    }
                    (&x_buf[..], &y_buf[..])
                }
            };
            // Gradients and update (fused for single examples under plain SGD); a
            // non-finite loss leaves the parameters as they were.
            let loss = match &training_rows {
                Some(rows) => train_step_rows(
                    &mut net,
                    &mut ws,
                    &mut grads,
                    &mut optimizer,
                    rows,
                    data.train.features(),
                    batch_rows,
                    y,
                    &train_options,
                    lr,
                    &mut dropout_rng,
                    par,
                )?,
                None => train_step(
                    &mut net,
                    &mut ws,
                    &mut grads,
                    &mut optimizer,
                    x,
                    y,
                    len,
                    &train_options,
                    lr,
                    &mut dropout_rng,
                    par,
                )?,
            };
            if !loss.is_finite() {
                return Err(TrainError::Diverged {
                    epoch: epoch + 1,
                    batch: b + 1,
                    loss,
                });
            }
            let update_par = mnist_core::step_par(len, par);
            if let Some(c) = config.training.max_norm {
                mnist_core::apply_max_norm(&mut net, c, &train_options.frozen, update_par);
            }
            state.global_step += 1;
            state.epoch_loss_sum += loss;
            state.epoch_batches += 1;
            if let Some(bar) = &bar {
                bar.inc(1);
                if b % 16 == 0 {
                    let secs = epoch_started.elapsed().as_secs_f64().max(1e-9);
                    bar.set_message(format!(
                        "loss {:.4}  {:.0} ex/s",
                        state.epoch_loss_sum / state.epoch_batches as f64,
                        ((b + 1 - state.next_batch.min(b)) * batch_size) as f64 / secs
                    ));
                }
            }
            if opts
                .interrupt
                .as_ref()
                .is_some_and(|f| f.load(Ordering::SeqCst))
                && b + 1 < batches_per_epoch
            {
                state.next_batch = b + 1;
                state.epoch_seconds = seconds_before + epoch_started.elapsed().as_secs_f64();
                state.dropout_rng = RngState::capture(&dropout_rng);
                state.augment_rng = Some(RngState::capture(&augment_rng));
                state.optimizer_step = optimizer.steps();
                let path = out.join(files::CHECKPOINT);
                checkpoint::save(&path, &state, &net, &optimizer)?;
                if let Some(bar) = bar {
                    bar.abandon();
                }
                return Ok(RunOutcome::Interrupted {
                    checkpoint: path,
                    epoch: epoch + 1,
                    batch: b + 1,
                });
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let train_seconds = seconds_before + epoch_started.elapsed().as_secs_f64();

        // Per-epoch evaluation.
        let loss_kind = config.training.loss;
        let train_ws = if train_eval_in_training_ws {
            &mut ws
        } else {
            &mut eval_ws
        };
        let train_m = wants(SplitName::Train)
            .then(|| eval_split(&net, train_ws, &data.train, loss_kind, par))
            .transpose()?;
        let validation_m = match (&data.validation, wants(SplitName::Validation)) {
            (Some(v), true) => Some(eval_split(&net, &mut eval_ws, v, loss_kind, par)?),
            _ => None,
        };
        let test_m = wants(SplitName::Test)
            .then(|| eval_split(&net, &mut eval_ws, &data.test, loss_kind, par))
            .transpose()?;
        let metrics = EpochMetrics {
            epoch: epoch + 1,
            learning_rate: lr,
            mean_batch_loss: state.epoch_loss_sum / state.epoch_batches.max(1) as f64,
            summed_batch_loss: state.epoch_loss_sum,
            train: train_m,
            validation: validation_m,
            test: test_m,
            train_seconds,
            examples_per_second: n as f64 / train_seconds.max(1e-9),
        };
        if !opts.quiet {
            tracing::info!("{}", describe_epoch(&metrics, config.training.epochs));
        }
        state.history.push(metrics);

        // Early stopping on a validation metric.
        if let (Some(stop), Some(v)) = (&config.early_stopping, validation_m) {
            let (value, better) = match stop.metric {
                StopMetric::ValidationLoss => {
                    (v.loss, state.best_metric.is_none_or(|b| v.loss < b))
                }
                StopMetric::ValidationAccuracy => {
                    (v.accuracy, state.best_metric.is_none_or(|b| v.accuracy > b))
                }
            };
            if better {
                state.best_metric = Some(value);
                state.best_epoch = Some(epoch + 1);
                state.epochs_without_improvement = 0;
                if stop.restore_best {
                    save_model(&out.join(files::BEST_MODEL), &net, &prep)?;
                    best_net = Some(net.clone());
                }
            } else {
                state.epochs_without_improvement += 1;
                stopped_early = state.epochs_without_improvement >= stop.patience;
            }
        }

        state.epoch += 1;
        state.next_batch = 0;
        state.epoch_loss_sum = 0.0;
        state.epoch_batches = 0;
        state.epoch_seconds = 0.0;
        state.shuffle_rng = RngState::capture(&shuffle_rng);
        state.dropout_rng = RngState::capture(&dropout_rng);
        state.augment_rng = Some(RngState::capture(&augment_rng));
        state.optimizer_step = optimizer.steps();
        let every = config.checkpoint.every_epochs;
        if every > 0 && (state.epoch % every == 0 || state.epoch == config.training.epochs) {
            checkpoint::save(&out.join(files::CHECKPOINT), &state, &net, &optimizer)?;
        }
    }

    // The model to report: the best one if early stopping keeps it, else the last.
    let final_net = match (&config.early_stopping, best_net) {
        (Some(stop), Some(best)) if stop.restore_best => best,
        _ => net,
    };
    let loss_kind = config.training.loss;
    // Splits evaluated every epoch are kept compressed in `eval_ws` (or `ws`); any other is
    // evaluated in a workspace that keeps nothing, since a kept copy would only cost memory.
    let mut workspaces = [
        ws,
        eval_ws,
        final_net.workspace(config.evaluation.batch_size),
    ];
    let workspace_for = |s: SplitName| {
        if s == SplitName::Train && train_eval_in_training_ws {
            0
        } else if wants(s) {
            1
        } else {
            2
        }
    };
    let test = eval_split(
        &final_net,
        &mut workspaces[workspace_for(SplitName::Test)],
        &data.test,
        loss_kind,
        par,
    )?;
    let train = eval_split(
        &final_net,
        &mut workspaces[workspace_for(SplitName::Train)],
        &data.train,
        loss_kind,
        par,
    )?;
    let validation = match &data.validation {
        Some(v) => Some(eval_split(
            &final_net,
            &mut workspaces[workspace_for(SplitName::Validation)],
            v,
            loss_kind,
            par,
        )?),
        None => None,
    };
    let confusion = confusion_matrix(
        &final_net,
        &mut workspaces[workspace_for(SplitName::Test)],
        &data.test,
        par,
    )?;
    let summary = RunSummary {
        experiment: config.name.clone(),
        test_accuracy: test.accuracy,
        test_loss: test.loss,
        train,
        validation,
        per_class_accuracy: confusion.per_class_accuracy(),
        confusion,
        epochs_completed: state.epoch,
        stopped_early,
        best_epoch: state.best_epoch,
        train_seconds: state.history.iter().map(|m| m.train_seconds).sum(),
        wall_seconds: started.elapsed().as_secs_f64(),
        threads: opts.threads,
        history: state.history.clone(),
    };
    write_outputs(out, config, &summary, &final_net, &prep)?;
    Ok(RunOutcome::Finished(Box::new(summary)))
}

fn save_model(
    path: &Path,
    net: &Network<f32>,
    prep: &mnist_core::Preprocessing,
) -> Result<(), TrainError> {
    mnist_core::save_model(path, net, prep).map_err(|e| TrainError::Model {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Test-set confusion matrix of `net`.
pub fn confusion_matrix(
    net: &Network<f32>,
    ws: &mut Workspace<f32>,
    data: &Dataset,
    par: Par,
) -> Result<ConfusionMatrix, TrainError> {
    let mut cm = ConfusionMatrix::new(net.outputs());
    let mut predicted = vec![0u8; ws.max_batch()];
    for batch in data.batches(ws.max_batch()) {
        let out = net.forward(ws, batch.features, batch.len(), par)?;
        let pred = &mut predicted[..batch.len()];
        out.predictions_into(pred);
        cm.add_batch(batch.labels, pred)
            .map_err(|e| TrainError::Core(mnist_core::CoreError::BadOptions(e.to_string())))?;
    }
    Ok(cm)
}

fn write_outputs(
    out: &Path,
    config: &ExperimentConfig,
    summary: &RunSummary,
    net: &Network<f32>,
    prep: &mnist_core::Preprocessing,
) -> Result<(), TrainError> {
    save_model(&out.join(files::MODEL), net, prep)?;
    let json = serde_json::to_string_pretty(summary).unwrap_or_default();
    checkpoint::write_atomically(&out.join(files::METRICS_JSON), json.as_bytes())?;
    report::write_metrics_csv(out.join(files::METRICS_CSV), &summary.history)?;
    report::write_confusion_csv(out.join(files::CONFUSION), &summary.confusion)?;
    report::plot_loss(out.join(files::LOSS_PLOT), &config.name, &summary.history)?;
    report::plot_accuracy(
        out.join(files::ACCURACY_PLOT),
        &config.name,
        &summary.history,
    )?;
    Ok(())
}

fn epoch_bar(epoch: usize, epochs: usize, batches: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(batches as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "epoch {prefix} [{bar:30}] {pos}/{len} batches  {msg}  eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(format!("{}/{epochs}", epoch + 1));
    bar
}

fn describe_epoch(m: &EpochMetrics, epochs: usize) -> String {
    let mut s = format!(
        "epoch {}/{epochs}: batch loss {:.4}, lr {:.4e}, {:.1} s, {:.0} ex/s",
        m.epoch, m.mean_batch_loss, m.learning_rate, m.train_seconds, m.examples_per_second
    );
    for (name, split) in [
        ("train", m.train),
        ("validation", m.validation),
        ("test", m.test),
    ] {
        if let Some(v) = split {
            s.push_str(&format!(
                "; {name} loss {:.4} acc {:.4}",
                v.loss, v.accuracy
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::resume_differences;
    use serde_json::json;

    #[test]
    fn resume_differences_name_every_changed_field_but_the_free_ones() {
        let started = json!({"seed": 1, "description": "a", "checkpoint": {"every_epochs": 1},
            "training": {"epochs": 3, "learning_rate": 0.1, "batch_size": 128},
            "data": {"train_limit": null}});
        let now = json!({"seed": 1, "description": "b", "checkpoint": {"every_epochs": 0},
            "training": {"epochs": 9, "learning_rate": 0.2, "batch_size": 128},
            "data": {"train_limit": 5000}, "extra": true});
        assert_eq!(
            resume_differences(&started, &now),
            [
                "`data.train_limit` was null, is 5000",
                "`extra` was null, is true",
                "`training.learning_rate` was 0.1, is 0.2",
            ]
        );
        assert!(resume_differences(&started, &started).is_empty());
    }
}
