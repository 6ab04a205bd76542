//! What a run measures: one [`EpochMetrics`] row per epoch, and the final results.

use serde::{Deserialize, Serialize};

/// Loss and accuracy of the network on one split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SplitMetrics {
    /// Mean loss per example (data loss only, without the L2 term).
    pub loss: f64,
    /// Fraction of examples classified correctly, in [0, 1].
    pub accuracy: f64,
}

/// Everything measured in one epoch. Splits not evaluated that epoch are `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Learning rate in effect at the end of the epoch.
    pub learning_rate: f64,
    /// Mean over the epoch's batches of each batch's training loss (with dropout, L2
    /// included), as a progress bar shows it.
    pub mean_batch_loss: f64,
    /// Sum over the epoch's batches of each batch's mean loss (what the one-hidden-relu
    /// reference prints as "training loss").
    pub summed_batch_loss: f64,
    pub train: Option<SplitMetrics>,
    pub validation: Option<SplitMetrics>,
    pub test: Option<SplitMetrics>,
    /// Wall time of the epoch's training steps, in seconds (evaluation excluded).
    pub train_seconds: f64,
    /// Training examples per second over the epoch.
    pub examples_per_second: f64,
}
