//! `cargo xtask reproduce <name>|all [--quick]`: the reference experiments, end to end.
//!
//! Each reference names its config, the number the original author published, and the
//! acceptance band from `REFERENCE_EXPERIMENTS.md`. A run writes the usual run directory
//! under `results/<name>/`; the table printed at the end (and, for `all`, written to
//! `results/SUMMARY.md`) puts ours beside the published value.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use mnist_dataset::{DataSources, Mnist};
use mnist_train::{ExperimentConfig, RunOptions, RunOutcome, RunSummary};

/// What a reference's band judges.
#[derive(Debug, Clone, Copy)]
pub enum Band {
    /// Test accuracy at least this.
    TestAtLeast(f64),
    /// Validation accuracy after the last epoch at least this.
    ValidationAtLeast(f64),
    /// The plateau is reproduced: final training loss above `loss`, test accuracy below `acc`.
    Plateau { loss: f64, acc: f64 },
    /// Shown for comparison, not judged.
    None,
}

/// One published experiment.
#[derive(Debug, Clone, Copy)]
pub struct Reference {
    pub name: &'static str,
    pub config: &'static str,
    pub published: &'static str,
    pub band: Band,
    /// Extra configs run with it (e.g. the frozen-layer variant).
    pub variants: &'static [&'static str],
}

/// The references, in the order `all` runs them.
pub const REFERENCES: &[Reference] = &[
    Reference {
        name: "two-layer-sigmoid",
        config: "two_layer_sigmoid.json",
        published: "test ~0.93 (numpy reruns 0.9310-0.9331)",
        band: Band::TestAtLeast(0.920),
        variants: &[],
    },
    Reference {
        name: "two-layer-sigmoid-l2",
        config: "two_layer_sigmoid_l2.json",
        published: "test ~0.967 (numpy reruns 0.9652-0.9682)",
        band: Band::TestAtLeast(0.960),
        variants: &[],
    },
    Reference {
        name: "adam-dropout",
        config: "adam_dropout.json",
        published: "test ~0.97, train 0.9913 (numpy reruns 0.9706-0.9748)",
        band: Band::TestAtLeast(0.965),
        variants: &[],
    },
    Reference {
        name: "three-layer-relu",
        config: "three_layer_relu.json",
        published: "~85% (on training data; numpy reruns test 0.753-0.874)",
        band: Band::TestAtLeast(0.74),
        variants: &[],
    },
    Reference {
        name: "one-hidden-relu",
        config: "one_hidden_relu.json",
        published: "validation 0.934 after epoch 10 (numpy reruns 0.924-0.949)",
        band: Band::ValidationAtLeast(0.915),
        variants: &["one-hidden-relu-frozen"],
    },
    Reference {
        name: "one-hidden-relu-frozen",
        config: "one_hidden_relu_frozen.json",
        published: "frozen first layer: validation 0.869 -> 0.911 (numpy rerun)",
        band: Band::None,
        variants: &[],
    },
    Reference {
        name: "deep-mse",
        config: "deep_mse.json",
        published: "test 0.9639 (numpy rerun of this recipe 0.9675)",
        band: Band::TestAtLeast(0.955),
        variants: &[],
    },
    Reference {
        name: "deep-mse-plateau",
        config: "deep_mse_plateau.json",
        published: "loss stuck near 0.9, one class predicted (numpy: 0.949, test 0.1135)",
        band: Band::Plateau {
            loss: 0.85,
            acc: 0.2,
        },
        variants: &[],
    },
];

/// The project's own experiments beyond the references, run by `reproduce beyond` (kept out
/// of `all`, whose time budget they would break).
pub const BEYOND: &[Reference] = &[
    Reference {
        name: "best-mlp",
        config: "best_mlp.json",
        published: "plain MLP without distortions: 98.4% (Simard 2003), 98.95% (Srivastava 2014)",
        band: Band::TestAtLeast(0.988),
        variants: &[],
    },
    Reference {
        name: "best-mlp-augmented",
        config: "best_mlp_augmented.json",
        published: "MLP with elastic distortions: 99.3% (Simard 2003), 99.65% (Ciresan 2010, much larger)",
        band: Band::TestAtLeast(0.992),
        variants: &[],
    },
];

/// Names `reproduce` accepts besides `all` and `beyond`.
pub fn names() -> Vec<&'static str> {
    REFERENCES.iter().chain(BEYOND).map(|r| r.name).collect()
}

/// The references to run for a name (`all`, or one name plus its variants).
pub fn select(name: &str) -> anyhow::Result<Vec<&'static Reference>> {
    if name == "all" {
        return Ok(REFERENCES.iter().collect());
    }
    if name == "beyond" {
        return Ok(BEYOND.iter().collect());
    }
    let Some(main) = REFERENCES.iter().chain(BEYOND).find(|r| r.name == name) else {
        bail!(
            "no reference named {name:?}; choose one of: all, beyond, {}",
            names().join(", ")
        );
    };
    let mut chosen = vec![main];
    chosen.extend(
        REFERENCES
            .iter()
            .filter(|r| main.variants.contains(&r.name)),
    );
    Ok(chosen)
}

/// How to run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub quick: bool,
    pub threads: usize,
    pub results_dir: PathBuf,
    pub configs_dir: PathBuf,
    pub quiet: bool,
}

/// Shortens a config for `--quick`: a few thousand examples, one or two epochs.
pub fn quicken(config: &mut ExperimentConfig) {
    config.data.train_limit = Some(config.train_size().min(5000));
    config.data.validation_limit = Some(1000);
    config.data.test_limit = Some(2000);
    let epochs = &mut config.training.epochs;
    *epochs = if *epochs > 100 { 50 } else { (*epochs).min(2) };
    config.checkpoint.every_epochs = 1;
}

/// One finished reference run.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub reference: Reference,
    pub summary: RunSummary,
    pub seconds: f64,
    pub quick: bool,
    pub dir: PathBuf,
}

impl Outcome {
    /// The metric the band judges, as text.
    pub fn ours(&self) -> String {
        let s = &self.summary;
        match self.reference.band {
            Band::ValidationAtLeast(_) => format!(
                "validation {:.4} (test {:.4})",
                s.validation.map_or(f64::NAN, |v| v.accuracy),
                s.test_accuracy
            ),
            Band::Plateau { .. } => {
                format!("loss {:.3}, test {:.4}", self.final_loss(), s.test_accuracy)
            }
            Band::None => format!(
                "validation {}",
                s.history
                    .iter()
                    .filter_map(|m| m.validation.map(|v| format!("{:.3}", v.accuracy)))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            Band::TestAtLeast(_) => {
                format!(
                    "test {:.4} (train {:.4})",
                    s.test_accuracy, s.train.accuracy
                )
            }
        }
    }

    fn final_loss(&self) -> f64 {
        self.summary
            .history
            .last()
            .map_or(f64::NAN, |m| m.mean_batch_loss)
    }

    /// `Some(pass)` when the band applies (full runs only).
    pub fn passed(&self) -> Option<bool> {
        if self.quick {
            return None;
        }
        let s = &self.summary;
        match self.reference.band {
            Band::TestAtLeast(t) => Some(s.test_accuracy >= t),
            Band::ValidationAtLeast(t) => Some(s.validation.is_some_and(|v| v.accuracy >= t)),
            Band::Plateau { loss, acc } => Some(self.final_loss() > loss && s.test_accuracy < acc),
            Band::None => None,
        }
    }

    pub fn band_text(&self) -> String {
        match self.reference.band {
            Band::TestAtLeast(t) => format!("test >= {t}"),
            Band::ValidationAtLeast(t) => format!("validation >= {t}"),
            Band::Plateau { loss, acc } => format!("loss > {loss}, test < {acc}"),
            Band::None => "(variant, not judged)".into(),
        }
    }
}

/// Runs the selected references and returns their outcomes.
pub fn run(selected: &[&Reference], settings: &Settings) -> anyhow::Result<Vec<Outcome>> {
    let sources = DataSources::from_env();
    let mnist = Mnist::load(&sources).context("loading MNIST")?;
    let mut outcomes = Vec::new();
    for reference in selected {
        let path = settings.configs_dir.join(reference.config);
        let mut config = ExperimentConfig::load(&path)?;
        if settings.quick {
            quicken(&mut config);
        }
        let dir = settings.results_dir.join(reference.name);
        tracing::info!("{}: training ({})", reference.name, path.display());
        let started = Instant::now();
        let data = mnist_train::prepare_from(&config, &mnist)?;
        let opts = RunOptions {
            threads: settings.threads,
            quiet: settings.quiet,
            // `results/` holds the last reproduction of each reference; a rerun replaces it.
            overwrite: true,
            ..RunOptions::new(&dir)
        };
        let summary = match mnist_train::run(&config, &data, &opts)? {
            RunOutcome::Finished(s) => *s,
            RunOutcome::Interrupted { checkpoint, .. } => {
                bail!(
                    "interrupted; the run can be resumed from {}",
                    checkpoint.display()
                )
            }
        };
        outcomes.push(Outcome {
            reference: **reference,
            summary,
            seconds: started.elapsed().as_secs_f64(),
            quick: settings.quick,
            dir,
        });
    }
    Ok(outcomes)
}

/// The results table in Markdown.
pub fn table(outcomes: &[Outcome], results_dir: &Path) -> String {
    let mut t = String::from(
        "| experiment | published | ours | band | result | wall time |\n|---|---|---|---|---|---|\n",
    );
    for o in outcomes {
        let result = match o.passed() {
            Some(true) => "pass",
            Some(false) => "FAIL",
            None if o.quick => "quick run, not judged",
            None => "-",
        };
        let plots = o
            .dir
            .strip_prefix(results_dir)
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| o.dir.display().to_string());
        let _ = writeln!(
            t,
            "| [{}]({plots}/accuracy.png) | {} | {} | {} | {} | {:.1} s |",
            o.reference.name,
            o.reference.published,
            o.ours(),
            o.band_text(),
            result,
            o.seconds
        );
    }
    t
}

/// `results/SUMMARY.md`: the table, how it was made, and the plots.
pub fn summary_markdown(table: &str, settings: &Settings) -> String {
    let mut s = String::from("# Reference experiments: ours vs published\n\n");
    let _ = writeln!(
        s,
        "Made by `cargo xtask reproduce all{}` with {} thread(s). Each link opens the run's accuracy plot; \
         the run directories hold config, metrics (JSON and CSV), model, confusion matrix and plots.\n",
        if settings.quick { " --quick" } else { "" },
        settings.threads
    );
    s.push_str(table);
    s
}
