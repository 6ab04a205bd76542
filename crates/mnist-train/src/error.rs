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
        "training diverged at epoch {epoch}, batch {batch}: the loss is {loss}; try a lower learning rate (the checkpoints of earlier epochs are kept)"
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

    #[error(
        "{dir}: already holds a run ({found}{state}); {resume}replace it (--overwrite), or train into another directory (--out)"
    )]
    RunExists {
        dir: PathBuf,
        /// The run's outputs found there.
        found: String,
        /// Where its checkpoint stands, if it has a readable one ("; its checkpoint ...").
        state: String,
        /// How to continue it, when it has a checkpoint ("continue it (--resume PATH), ").
        resume: String,
    },

    #[error("{path}: not a usable checkpoint: {reason}")]
    Checkpoint { path: PathBuf, reason: String },

    #[error("{path}: cannot save the model: {reason}")]
    Model { path: PathBuf, reason: String },

    #[error(transparent)]
    Report(#[from] ReportError),
}
