//! # mnist-train
//!
//! Turns `mnist-core` networks and `mnist-dataset` data into experiments a user describes in
//! a file, watches, stops, resumes and reads:
//!
//! - [`config`]: the JSON experiment schema, validated before any work;
//! - [`data`]: split, limit and normalize the data as the config says;
//! - [`trainer`]: the mini-batch loop, per-epoch evaluation, early stopping, divergence
//!   detection, Ctrl-C handling and the run directory;
//! - [`checkpoint`]: verified, atomic checkpoints that resume bit for bit;
//! - [`metrics`], [`confusion`], [`report`]: what is measured and how it is written
//!   (`metrics.json`, `metrics.csv`, `confusion.csv`, loss and accuracy plots).

pub mod checkpoint;
pub mod config;
pub mod confusion;
pub mod data;
pub mod error;
pub mod metrics;
pub mod report;
pub mod trainer;

pub use config::{ConfigError, ExperimentConfig};
pub use data::{PreparedData, prepare, prepare_from};
pub use error::TrainError;
pub use trainer::{RunOptions, RunOutcome, RunSummary, run};
