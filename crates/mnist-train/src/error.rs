//! Errors of a training run. Each says what failed, where, and what to do.

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::report::ReportError;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Config(#[from] ConfigError),

    #[error(transparent)]
    Data(#[from] mnist_dataset::DatasetError),

    #[error("network: {0}")]
    Core(#[from] mnist_core::CoreError),

    #[error(
        "training diverged at epoch {epoch}, batch {batch}: the loss is {loss}; try a lower learning rate (nothing saved earlier was overwritten)"
    )]
    Diverged {
        epoch: usize,
        batch: usize,
        loss: f64,
    },

    #[error("{path}: cannot write: {source} (check free space and permissions)")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: not a usable checkpoint: {reason}")]
    Checkpoint { path: PathBuf, reason: String },

    #[error("{path}: cannot save the model: {reason}")]
    Model { path: PathBuf, reason: String },

    #[error(transparent)]
    Report(#[from] ReportError),
}
