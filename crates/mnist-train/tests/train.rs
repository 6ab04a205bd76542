//! Short runs on the real MNIST files: each reference recipe trains, outputs exist and parse,
//! resume equals an uninterrupted run bit for bit, divergence is caught.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use mnist_core::Network;
use mnist_dataset::augment::{AugmentConfig, ElasticConfig};
use mnist_dataset::{DataSources, Mnist};
use mnist_train::config::BatchSize;
use mnist_train::trainer::files;
use mnist_train::{ExperimentConfig, RunOptions, RunOutcome, RunSummary, TrainError};

fn mnist() -> &'static Mnist {
    static MNIST: OnceLock<Mnist> = OnceLock::new();
    MNIST.get_or_init(|| {
        let sources = DataSources {
            cache_dir: None,
            mirrors: Vec::new(),
            ..DataSources::default()
        };
        Mnist::load(&sources).expect("the repository's data/mnist")
    })
}

fn reference(file: &str) -> ExperimentConfig {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs")
        .join(file);
    ExperimentConfig::load(&path).unwrap()
}

/// A short version of a reference: `train` examples, `epochs` epochs, 2,000 test images.
fn short(file: &str, train: usize, epochs: usize) -> ExperimentConfig {
    let mut c = reference(file);
    c.data.train_limit = Some(train);
    c.data.validation_limit = Some(1000);
    c.data.test_limit = Some(2000);
    c.training.epochs = epochs;
    c
}

/// The trained parameters in a run directory.
fn params(dir: &Path) -> Network<f32> {
    mnist_core::load_model::<f32>(dir.join(files::MODEL))
        .unwrap()
        .network
}

fn run(config: &ExperimentConfig, out: &Path) -> RunSummary {
    let data = mnist_train::prepare_from(config, mnist()).unwrap();
    match mnist_train::run(config, &data, &RunOptions::new(out)).unwrap() {
        RunOutcome::Finished(s) => *s,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn short_adam_dropout_run_learns_and_writes_every_output() {
    let dir = tempfile::tempdir().unwrap();
    let config = short("adam_dropout.json", 5000, 2);
    let summary = run(&config, dir.path());
    assert!(
        summary.test_accuracy >= 0.80,
        "test accuracy {}",
        summary.test_accuracy
    );
    assert_eq!(summary.history.len(), 2);
    assert_eq!(summary.confusion.total(), 2000);

    for f in [
        files::CONFIG,
        files::METRICS_JSON,
        files::METRICS_CSV,
        files::MODEL,
        files::CHECKPOINT,
        files::CONFUSION,
        files::LOSS_PLOT,
        files::ACCURACY_PLOT,
    ] {
        assert!(dir.path().join(f).is_file(), "{f} missing");
    }
    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join(files::METRICS_JSON)).unwrap(),
    )
    .unwrap();
    assert_eq!(
        metrics["test_accuracy"].as_f64(),
        Some(summary.test_accuracy)
    );
    let saved = ExperimentConfig::load(&dir.path().join(files::CONFIG)).unwrap();
    assert_eq!(saved, config);
    let csv = std::fs::read_to_string(dir.path().join(files::METRICS_CSV)).unwrap();
    assert_eq!(csv.lines().count(), 3, "header + 2 epochs:\n{csv}");
    let model = mnist_core::load_model::<f32>(dir.path().join(files::MODEL)).unwrap();
    assert_eq!(model.network.architecture().sizes, vec![784, 400, 100, 10]);
    assert!((model.preprocessing.scale - 1.0 / 255.0).abs() < 1e-9);
    for png in [files::LOSS_PLOT, files::ACCURACY_PLOT] {
        let bytes = std::fs::read(dir.path().join(png)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{png} is a PNG");
    }
}

#[test]
fn every_reference_recipe_trains_briefly_on_real_data() {
    // (config, train examples, epochs, accuracy it must reach on 2,000 test images)
    let cases = [
        ("two_layer_sigmoid.json", 10_000, 2, 0.60),
        ("two_layer_sigmoid_l2.json", 10_000, 2, 0.60),
        // N(0,1) weights saturate the softmax and make this recipe chaotic: the rounding of the
        // CPU's vector width alone moved this accuracy between 0.29 and 0.34. 0.2 is twice chance.
        ("three_layer_relu.json", 3000, 1, 0.20),
        ("one_hidden_relu.json", 5000, 1, 0.80),
        ("one_hidden_relu_frozen.json", 5000, 1, 0.70),
        ("deep_mse.json", 3000, 30, 0.30),
    ];
    for (file, train, epochs, floor) in cases {
        let dir = tempfile::tempdir().unwrap();
        let summary = run(&short(file, train, epochs), dir.path());
        assert!(
            summary.test_accuracy >= floor,
            "{file}: test accuracy {} below {floor}",
            summary.test_accuracy
        );
        assert!(
            summary
                .history
                .iter()
                .all(|m| m.mean_batch_loss.is_finite())
        );
    }
    // The faithful deep-mse defaults sit on the plateau: one class, loss near 0.9.
    let dir = tempfile::tempdir().unwrap();
    let plateau = run(&short("deep_mse_plateau.json", 3000, 30), dir.path());
    assert!(
        plateau.test_accuracy < 0.2,
        "plateau accuracy {}",
        plateau.test_accuracy
    );
}

/// Runs `config` whole, and again in parts: stopped after epoch 1, interrupted at the first
/// batch of epoch 2, resumed to the end. Both must end with the same parameters, bit for bit.
fn assert_resume_is_exact(config: &ExperimentConfig) {
    let data = mnist_train::prepare_from(config, mnist()).unwrap();

    let whole = tempfile::tempdir().unwrap();
    mnist_train::run(config, &data, &RunOptions::new(whole.path())).unwrap();

    // Stop after epoch 1 (interrupt mid-epoch 2), then resume twice: from an epoch
    // boundary and from the middle of an epoch.
    let parts = tempfile::tempdir().unwrap();
    let mut first = config.clone();
    first.training.epochs = 1;
    mnist_train::run(&first, &data, &RunOptions::new(parts.path())).unwrap();
    let flag = Arc::new(AtomicBool::new(true));
    let interrupted = mnist_train::run(
        config,
        &data,
        &RunOptions {
            resume: Some(parts.path().join(files::CHECKPOINT)),
            interrupt: Some(flag),
            ..RunOptions::new(parts.path())
        },
    )
    .unwrap();
    assert!(
        matches!(
            interrupted,
            RunOutcome::Interrupted {
                epoch: 2,
                batch: 1,
                ..
            }
        ),
        "{interrupted:?}"
    );
    let resumed = mnist_train::run(
        config,
        &data,
        &RunOptions {
            resume: Some(parts.path().join(files::CHECKPOINT)),
            ..RunOptions::new(parts.path())
        },
    )
    .unwrap();
    assert!(matches!(resumed, RunOutcome::Finished(_)));

    let a = params(whole.path());
    let b = params(parts.path());
    assert!(
        a.bit_identical(&b),
        "resumed model differs from the uninterrupted one"
    );
}

#[test]
fn resuming_from_a_checkpoint_equals_the_uninterrupted_run() {
    let mut config = short("adam_dropout.json", 2048, 3);
    config.training.batch_size = BatchSize::Examples(128);
    // Input dropout draws from the dropout stream and augmentation from its own; the checkpoint
    // must carry both.
    config.model.input_keep_prob = 0.8;
    config.data.augmentation = Some(AugmentConfig {
        translate: 1.5,
        rotate_degrees: 8.0,
        scale: 0.05,
        elastic: Some(ElasticConfig {
            alpha: 34.0,
            sigma: 4.0,
        }),
    });
    assert_resume_is_exact(&config);
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let plain = short("adam_dropout.json", 1024, 1);
    // Augmentation (split between threads per image), input dropout and max-norm too.
    let mut augmented = plain.clone();
    augmented.data.augmentation = Some(AugmentConfig {
        translate: 1.0,
        rotate_degrees: 15.0,
        scale: 0.15,
        elastic: Some(ElasticConfig {
            alpha: 36.0,
            sigma: 6.0,
        }),
    });
    augmented.model.input_keep_prob = 0.8;
    augmented.training.max_norm = Some(2.0);
    for config in [plain, augmented] {
        let data = mnist_train::prepare_from(&config, mnist()).unwrap();
        let models: Vec<Network<f32>> = [1, 2, 3]
            .iter()
            .map(|&threads| {
                let dir = tempfile::tempdir().unwrap();
                let opts = RunOptions {
                    threads,
                    ..RunOptions::new(dir.path())
                };
                mnist_train::run(&config, &data, &opts).unwrap();
                params(dir.path())
            })
            .collect();
        for (threads, model) in [2, 3].iter().zip(&models[1..]) {
            assert!(
                models[0].bit_identical(model),
                "1 and {threads} threads give different parameters ({:?})",
                config.data.augmentation
            );
        }
    }
}

#[test]
fn divergence_stops_with_epoch_and_batch_and_writes_no_results() {
    let mut config = short("three_layer_relu.json", 2000, 2);
    config.training.learning_rate = 1e30;
    let data = mnist_train::prepare_from(&config, mnist()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let err = mnist_train::run(&config, &data, &RunOptions::new(dir.path())).unwrap_err();
    assert!(
        matches!(err, TrainError::Diverged { epoch: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("lower learning rate"), "{err}");
    for file in [files::MODEL, files::METRICS_JSON, files::CHECKPOINT] {
        assert!(!dir.path().join(file).exists(), "{file} written");
    }
}

#[test]
fn a_directory_holding_a_run_is_refused_unless_overwritten() {
    let config = short("one_hidden_relu.json", 500, 1);
    let data = mnist_train::prepare_from(&config, mnist()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(files::MODEL), b"earlier model").unwrap();
    std::fs::write(dir.path().join(files::CONFIG), b"earlier config").unwrap();
    let err = mnist_train::run(&config, &data, &RunOptions::new(dir.path())).unwrap_err();
    assert!(matches!(err, TrainError::RunExists { .. }), "{err}");
    assert!(err.to_string().contains(files::MODEL), "{err}");
    for (file, was) in [
        (files::MODEL, "earlier model"),
        (files::CONFIG, "earlier config"),
    ] {
        assert_eq!(
            std::fs::read(dir.path().join(file)).unwrap(),
            was.as_bytes()
        );
    }
    // Replacing it deletes the earlier run's outputs: none of them survives beside the new run.
    std::fs::write(dir.path().join(files::BEST_MODEL), b"earlier best").unwrap();
    let opts = RunOptions {
        overwrite: true,
        ..RunOptions::new(dir.path())
    };
    mnist_train::run(&config, &data, &opts).unwrap();
    assert!(!dir.path().join(files::BEST_MODEL).exists());
    mnist_core::load_model::<f32>(dir.path().join(files::MODEL)).unwrap();
}

#[test]
fn resuming_with_another_config_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = short("one_hidden_relu.json", 500, 1);
    run(&config, dir.path());
    let before: Vec<Vec<u8>> = [files::CONFIG, files::CHECKPOINT]
        .iter()
        .map(|f| std::fs::read(dir.path().join(f)).unwrap())
        .collect();
    let mut changed = config.clone();
    changed.training.learning_rate *= 2.0;
    changed.seed += 1;
    changed.training.epochs = 2; // allowed: a resumed run may train longer
    let data = mnist_train::prepare_from(&changed, mnist()).unwrap();
    let err = mnist_train::run(
        &changed,
        &data,
        &RunOptions {
            resume: Some(dir.path().join(files::CHECKPOINT)),
            ..RunOptions::new(dir.path())
        },
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("training.learning_rate") && text.contains("`seed`"),
        "{text}"
    );
    assert!(!text.contains("`training.epochs` was"), "{text}");
    for (file, was) in [files::CONFIG, files::CHECKPOINT].iter().zip(&before) {
        assert_eq!(
            &std::fs::read(dir.path().join(file)).unwrap(),
            was,
            "{file}"
        );
    }
}

#[test]
fn checkpoint_of_another_architecture_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = short("one_hidden_relu.json", 500, 1);
    run(&config, dir.path());
    let other = short("adam_dropout.json", 500, 1);
    let data = mnist_train::prepare_from(&other, mnist()).unwrap();
    let err = mnist_train::run(
        &other,
        &data,
        &RunOptions {
            resume: Some(dir.path().join(files::CHECKPOINT)),
            ..RunOptions::new(dir.path().join("other"))
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("different experiment"), "{err}");
}

#[test]
fn damaged_checkpoints_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    run(&short("one_hidden_relu.json", 500, 1), dir.path());
    let bytes = std::fs::read(dir.path().join(files::CHECKPOINT)).unwrap();
    mnist_train::checkpoint::from_bytes(&bytes).expect("intact checkpoint loads");
    let cut = mnist_train::checkpoint::from_bytes(&bytes[..bytes.len() / 2]).unwrap_err();
    assert!(cut.contains("cut short"), "{cut}");
    let mut flipped = bytes.clone();
    let at = bytes.len() - 1000;
    flipped[at] ^= 0x01;
    let bad = mnist_train::checkpoint::from_bytes(&flipped).unwrap_err();
    assert!(bad.contains("SHA-256"), "{bad}");
}

#[test]
fn early_stopping_keeps_the_best_model() {
    use mnist_train::config::{EarlyStopping, StopMetric};
    // A learning rate this high makes validation loss worse after the first epochs.
    let mut config = short("one_hidden_relu.json", 1000, 12);
    config.training.learning_rate = 0.2;
    config.early_stopping = Some(EarlyStopping {
        metric: StopMetric::ValidationLoss,
        patience: 2,
        restore_best: true,
    });
    let dir = tempfile::tempdir().unwrap();
    let summary = run(&config, dir.path());
    let best = summary.best_epoch.expect("a best epoch");
    let losses: Vec<f64> = summary
        .history
        .iter()
        .map(|m| m.validation.unwrap().loss)
        .collect();
    let min = losses.iter().copied().fold(f64::INFINITY, f64::min);
    assert_eq!(
        losses[best - 1],
        min,
        "best epoch has the lowest validation loss: {losses:?}"
    );
    assert!(
        summary.stopped_early,
        "validation loss should rise at this rate: {losses:?}"
    );
    assert_eq!(
        summary.history.len(),
        best + 2,
        "stops after `patience` epochs without gain"
    );
    // The reported model is the best one: its validation loss is the best epoch's.
    let v = summary.validation.unwrap();
    assert!(
        (v.loss - min).abs() < 1e-9,
        "final model validation loss {} vs best {min}",
        v.loss
    );
    let best_model = mnist_core::load_model::<f32>(dir.path().join(files::BEST_MODEL)).unwrap();
    assert!(best_model.network.bit_identical(&params(dir.path())));
}

#[test]
fn augmented_training_still_learns() {
    let mut config = short("adam_dropout.json", 5000, 2);
    config.data.augmentation = Some(AugmentConfig {
        translate: 2.0,
        rotate_degrees: 10.0,
        scale: 0.1,
        elastic: Some(ElasticConfig {
            alpha: 34.0,
            sigma: 4.0,
        }),
    });
    let dir = tempfile::tempdir().unwrap();
    let summary = run(&config, dir.path());
    assert!(
        summary.test_accuracy >= 0.6,
        "augmented run reached {}",
        summary.test_accuracy
    );
    // The saved config records the augmentation that ran.
    let saved = ExperimentConfig::load(&dir.path().join(files::CONFIG)).unwrap();
    assert_eq!(saved.data.augmentation, config.data.augmentation);
}

/// A shuffled run without augmentation or input dropout trains on batches assembled from the
/// training set compressed once (`SparseRows`); stopped after an epoch, resumed, interrupted
/// mid-epoch and resumed again, it ends with the parameters of the run done in one go, bit
/// for bit: with full batches and with a partial last batch, under max-norm.
#[test]
fn resuming_a_run_of_compressed_row_batches_is_exact() {
    for batch in [128usize, 100] {
        let mut config = short("adam_dropout.json", 2048, 3);
        config.training.batch_size = BatchSize::Examples(batch);
        config.training.max_norm = Some(3.0);
        assert_resume_is_exact(&config);
    }
}
