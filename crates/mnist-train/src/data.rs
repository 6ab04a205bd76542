//! From a config's `data` section to the three `f32` datasets a run uses.

use mnist_dataset::{DataSources, Dataset, Mnist, Preprocessing, split};

use crate::config::{ExperimentConfig, SplitConfig};
use crate::error::TrainError;

/// The datasets of one experiment, normalized with the preprocessing fitted on `train`.
#[derive(Debug, Clone)]
pub struct PreparedData {
    pub train: Dataset,
    pub validation: Option<Dataset>,
    pub test: Dataset,
    pub preprocessing: Preprocessing,
}

/// Loads MNIST from `sources` and prepares it as `config` says.
pub fn prepare(
    config: &ExperimentConfig,
    sources: &DataSources,
) -> Result<PreparedData, TrainError> {
    let mnist = Mnist::load(sources)?;
    prepare_from(config, &mnist)
}

/// Prepares already-loaded MNIST as `config` says (split, limits, normalization).
pub fn prepare_from(config: &ExperimentConfig, mnist: &Mnist) -> Result<PreparedData, TrainError> {
    let n = mnist.train.len();
    let (mut train_ix, mut validation_ix): (Vec<usize>, Option<Vec<usize>>) =
        match &config.data.split {
            SplitConfig::FullTrain => ((0..n).collect(), None),
            SplitConfig::Holdout { validation, seed } => {
                let (dev, train) = split::shuffled_split(n, *validation, *seed)?;
                (train, Some(dev))
            }
            SplitConfig::Balanced {
                train_per_class,
                validation_per_class,
                seed,
            } => {
                let mut subsets = split::balanced_subsets(
                    mnist.train.labels(),
                    &[*train_per_class, *validation_per_class],
                    *seed,
                )?
                .into_iter();
                let train = subsets.next().unwrap_or_default();
                let validation = subsets.next().filter(|v| !v.is_empty());
                (train, validation)
            }
        };
    // A limit above what the split holds changes nothing; say so, since it was meant to.
    let limit_to = |what: &str, ix: &mut Vec<usize>, limit: usize| {
        if limit > ix.len() {
            tracing::warn!(
                "data.{what}_limit is {limit}, but the split has only {} examples: all are used",
                ix.len()
            );
        }
        ix.truncate(limit);
    };
    if let Some(limit) = config.data.train_limit {
        limit_to("train", &mut train_ix, limit);
    }
    if let (Some(v), Some(limit)) = (validation_ix.as_mut(), config.data.validation_limit) {
        limit_to("validation", v, limit);
    }
    let preprocessing = Preprocessing::fit(
        config.data.normalization.into(),
        &mnist.train,
        Some(&train_ix),
    );
    let train = mnist.train.to_dataset(Some(&train_ix), &preprocessing)?;
    let validation = validation_ix
        .map(|ix| mnist.train.to_dataset(Some(&ix), &preprocessing))
        .transpose()?;
    let test_n = config
        .data
        .test_limit
        .map_or(mnist.test.len(), |l| l.min(mnist.test.len()));
    let test_ix: Vec<usize> = (0..test_n).collect();
    let test = mnist.test.to_dataset(Some(&test_ix), &preprocessing)?;
    Ok(PreparedData {
        train,
        validation,
        test,
        preprocessing,
    })
}

/// The dataset crate's fitted preprocessing as mnist-core records it in model files.
pub fn core_preprocessing(p: &Preprocessing) -> mnist_core::Preprocessing {
    mnist_core::Preprocessing {
        scale: f64::from(p.scale),
        mean: f64::from(p.mean),
        std: f64::from(p.std),
    }
}
