//! # mnist-train
//!
//! Turns `mnist-core` networks and `mnist-dataset` data into experiments: the JSON config
//! schema (validated before any work), the mini-batch loop, per-epoch evaluation, metrics,
//! atomic checkpoints with exact resume, and the run directory (config, metrics, model,
//! confusion matrix, plots).
//!
//! This crate is being built (see ARCHITECTURE.md); for now it only marks its place.
