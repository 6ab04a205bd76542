//! The experiment config: one JSON schema that describes every reference recipe without code.
//!
//! Reading a config is two steps, both before any work is done:
//! 1. [`ExperimentConfig::from_json`]: syntax and schema (unknown keys, wrong types), with the
//!    field path and line/column of the first problem;
//! 2. [`ExperimentConfig::validate`]: values (ranges, sizes that must agree, memory).
//!
//! The saved copy in a run directory ([`ExperimentConfig::to_json`]) writes every default out,
//! so it says exactly what ran.

use std::path::Path;

use mnist_core::{
    Activation, Architecture, LayerInit, Loss, OptimizerConfig, OutputHead, Schedule, TrainOptions,
};
use mnist_dataset::augment::AugmentConfig;
use mnist_dataset::files::TRAIN_CLASS_COUNTS;
use serde::{Deserialize, Serialize};

/// Examples in the official training set.
pub const TRAIN_SET_SIZE: usize = 60_000;
/// Pixels per MNIST image, the input width of every model here.
pub const INPUTS: usize = 784;
/// Digit classes, the output width.
pub const CLASSES: usize = 10;
/// A model whose parameters, optimizer state and batch buffers would need more than this is
/// refused before allocation (8 GiB).
pub const MEMORY_LIMIT_BYTES: u64 = 8 << 30;

/// A whole experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Short name, used for run directories and reports.
    pub name: String,
    /// What this experiment is and where its recipe comes from.
    #[serde(default)]
    pub description: String,
    /// Seed of every random choice (split, init, shuffling, dropout).
    #[serde(default)]
    pub seed: u64,
    pub data: DataConfig,
    pub model: ModelConfig,
    pub training: TrainingConfig,
    #[serde(default)]
    pub evaluation: EvaluationConfig,
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// Stop when a validation metric stops improving, and keep the best model.
    #[serde(default)]
    pub early_stopping: Option<EarlyStopping>,
}

/// Which examples train, validate and test, and how pixels are scaled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub split: SplitConfig,
    pub normalization: NormalizationConfig,
    /// Use only the first N examples of the training split (quick runs, tests).
    #[serde(default)]
    pub train_limit: Option<usize>,
    /// Use only the first N examples of the validation split.
    #[serde(default)]
    pub validation_limit: Option<usize>,
    /// Use only the first N examples of the test set.
    #[serde(default)]
    pub test_limit: Option<usize>,
    /// Random distortions of each training batch (off when absent).
    #[serde(default)]
    pub augmentation: Option<AugmentConfig>,
}

/// How the 60,000 training images are divided. The 10,000 test images are always the test set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SplitConfig {
    /// All 60,000 train; no validation split.
    FullTrain,
    /// Shuffle with `seed`; the first `validation` examples validate, the rest train.
    Holdout { validation: usize, seed: u64 },
    /// Class-balanced subsets: `train_per_class` and `validation_per_class` of every digit,
    /// disjoint, chosen with `seed`.
    Balanced {
        train_per_class: usize,
        validation_per_class: usize,
        seed: u64,
    },
}

/// Input scaling; see `mnist_dataset::Normalization`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormalizationConfig {
    /// Bytes 0..=255 as they are.
    Raw,
    /// `x / 255`.
    Scale,
    /// One scalar mean and std over the training split's pixels, applied to every split.
    Standardize,
}

impl From<NormalizationConfig> for mnist_dataset::Normalization {
    fn from(n: NormalizationConfig) -> Self {
        match n {
            NormalizationConfig::Raw => mnist_dataset::Normalization::Raw,
            NormalizationConfig::Scale => mnist_dataset::Normalization::Scale,
            NormalizationConfig::Standardize => mnist_dataset::Normalization::Standardize,
        }
    }
}

/// The network: 784 inputs, hidden layers, a 10-way output layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    #[serde(default = "default_inputs")]
    pub inputs: usize,
    /// Inverted-dropout keep probability on the input pixels while training (1 = none): each
    /// pixel of a training batch is kept with this probability (its ink, the difference from
    /// the background value, scaled by the inverse) or else set to the background.
    #[serde(default = "one")]
    pub input_keep_prob: f64,
    pub hidden: Vec<HiddenLayerConfig>,
    pub output: OutputLayerConfig,
}

/// One hidden layer: width, activation, initialization, dropout, freezing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HiddenLayerConfig {
    pub size: usize,
    pub activation: Activation,
    pub init: LayerInit,
    /// Inverted-dropout keep probability on this layer's output (1 = no dropout).
    #[serde(default = "one")]
    pub keep_prob: f64,
    /// `false` freezes the layer at its initial values.
    #[serde(default = "yes")]
    pub trainable: bool,
}

/// The output layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputLayerConfig {
    #[serde(default = "default_classes")]
    pub size: usize,
    pub head: OutputHead,
    pub init: LayerInit,
    #[serde(default = "yes")]
    pub trainable: bool,
}

/// How the parameters are fitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingConfig {
    pub loss: Loss,
    pub optimizer: OptimizerConfig,
    pub learning_rate: f64,
    #[serde(default = "Schedule::constant")]
    pub schedule: Schedule,
    /// L2 coefficient on the weights: loss += l2 * sum ||W||^2.
    #[serde(default)]
    pub l2: f64,
    /// Label smoothing in [0, 1): targets (1 - eps) one_hot + eps / 10.
    #[serde(default)]
    pub label_smoothing: f64,
    /// Max-norm constraint: after each step, every unit's incoming weight vector longer than
    /// this is scaled back to this length.
    #[serde(default)]
    pub max_norm: Option<f64>,
    pub batch_size: BatchSize,
    pub shuffle: Shuffle,
    pub epochs: usize,
}

/// Examples per step: a number, or `"full"` for the whole training split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "a number of examples per step (e.g. 128) or \"full\" for the whole training split"
)]
pub enum BatchSize {
    Examples(usize),
    Full(FullBatch),
}

/// The literal `"full"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FullBatch {
    Full,
}

impl BatchSize {
    /// The batch size for a training split of `n` examples.
    pub fn resolve(self, n: usize) -> usize {
        match self {
            BatchSize::Examples(b) => b.min(n).max(1),
            BatchSize::Full(_) => n.max(1),
        }
    }
}

/// Order of the training examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shuffle {
    /// A new seeded permutation every epoch.
    EachEpoch,
    /// The split's order, every epoch.
    Fixed,
}

/// A data split that can be evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitName {
    Train,
    Validation,
    Test,
}

/// What is measured when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluationConfig {
    /// Splits evaluated (loss and accuracy) after every epoch. The test set is always
    /// evaluated once at the end; listing it here also tracks it per epoch.
    #[serde(default = "default_every_epoch")]
    pub every_epoch: Vec<SplitName>,
    /// Examples per evaluation batch (no effect on results).
    #[serde(default = "default_eval_batch")]
    pub batch_size: usize,
}

impl Default for EvaluationConfig {
    fn default() -> Self {
        EvaluationConfig {
            every_epoch: default_every_epoch(),
            batch_size: default_eval_batch(),
        }
    }
}

/// When checkpoints are written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Write a checkpoint every this many epochs (0 = never; the final model is always saved).
    #[serde(default = "one_usize")]
    pub every_epochs: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig { every_epochs: 1 }
    }
}

/// Early stopping on a validation metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    pub metric: StopMetric,
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// Keep (and save) the parameters of the best epoch rather than the last.
    #[serde(default = "yes")]
    pub restore_best: bool,
}

/// The metric early stopping watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopMetric {
    ValidationLoss,
    ValidationAccuracy,
}

fn default_inputs() -> usize {
    INPUTS
}
fn default_classes() -> usize {
    CLASSES
}
fn one() -> f64 {
    1.0
}
fn one_usize() -> usize {
    1
}
fn yes() -> bool {
    true
}
fn default_every_epoch() -> Vec<SplitName> {
    vec![SplitName::Validation]
}
fn default_eval_batch() -> usize {
    1000
}

/// The largest config file read (a config is a few kilobytes of JSON).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads a config's text, at most [`MAX_CONFIG_BYTES`] of it: a device such as `/dev/zero`
/// or a data file given by mistake is refused at that point instead of filling the memory.
/// Pipes are fine (`mnist train <(jq ... config.json)`).
fn read_config_text(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("longer than {MAX_CONFIG_BYTES} bytes; is it a config file?"),
        ));
    }
    Ok(text)
}

/// Why a config was refused. Every message names the file, the field and what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}:{line}:{column}: at `{field}`: {message}")]
    Schema {
        file: String,
        field: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{file}: `{field}`: {message}")]
    Invalid {
        file: String,
        field: String,
        message: String,
    },
}

impl ExperimentConfig {
    /// Parses a config from JSON text; `file` names it in errors.
    pub fn from_json(text: &str, file: &str) -> Result<Self, ConfigError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let parsed: Result<ExperimentConfig, _> = serde_path_to_error::deserialize(de);
        parsed.map_err(|err| {
            let field = err.path().to_string();
            let inner = err.into_inner();
            let (line, column) = (inner.line(), inner.column());
            // serde_json appends " at line L column C"; we print that position up front.
            let message = inner.to_string();
            let message = message
                .rsplit_once(" at line ")
                .map_or(message.as_str(), |(m, _)| m)
                .to_string();
            if inner.is_syntax() || inner.is_eof() || field == "." {
                ConfigError::Syntax {
                    file: file.to_string(),
                    line,
                    column,
                    message,
                }
            } else {
                ConfigError::Schema {
                    file: file.to_string(),
                    field,
                    line,
                    column,
                    message,
                }
            }
        })
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let text = read_config_text(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        let config = Self::from_json(&text, &file)?;
        config.validate(&file)?;
        Ok(config)
    }

    /// The config with every default written out.
    pub fn to_json(&self) -> String {
        // Serializing plain data structs into a String cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The network shape this config describes.
    pub fn architecture(&self) -> Result<Architecture, mnist_core::ArchitectureError> {
        let mut sizes = vec![self.model.inputs];
        sizes.extend(self.model.hidden.iter().map(|h| h.size));
        sizes.push(self.model.output.size);
        Architecture::new(
            sizes,
            self.model.hidden.iter().map(|h| h.activation).collect(),
            self.model.output.head,
        )
    }

    /// Initializers, one per dense layer.
    pub fn layer_inits(&self) -> Vec<LayerInit> {
        self.model
            .hidden
            .iter()
            .map(|h| h.init)
            .chain(std::iter::once(self.model.output.init))
            .collect()
    }

    /// Loss, L2, dropout and freezing as mnist-core takes them.
    pub fn train_options(&self) -> TrainOptions {
        let hidden = &self.model.hidden;
        TrainOptions {
            loss: self.training.loss,
            l2: self.training.l2,
            keep_prob: if hidden.iter().all(|h| h.keep_prob == 1.0) {
                Vec::new()
            } else {
                hidden.iter().map(|h| h.keep_prob).collect()
            },
            frozen: hidden
                .iter()
                .map(|h| !h.trainable)
                .chain(std::iter::once(!self.model.output.trainable))
                .collect(),
            label_smoothing: self.training.label_smoothing,
        }
    }

    /// Number of training examples the split (and limit) yields, known without loading data.
    pub fn train_size(&self) -> usize {
        let n = match self.data.split {
            SplitConfig::FullTrain => TRAIN_SET_SIZE,
            SplitConfig::Holdout { validation, .. } => TRAIN_SET_SIZE.saturating_sub(validation),
            SplitConfig::Balanced {
                train_per_class, ..
            } => train_per_class * CLASSES,
        };
        self.data.train_limit.map_or(n, |l| l.min(n))
    }

    /// Whether the split has a validation part.
    pub fn has_validation(&self) -> bool {
        match self.data.split {
            SplitConfig::FullTrain => false,
            SplitConfig::Holdout { validation, .. } => validation > 0,
            SplitConfig::Balanced {
                validation_per_class,
                ..
            } => validation_per_class > 0,
        }
    }

    /// Checks every value; the first problem is returned, naming its field.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            file: file.to_string(),
            field: field.to_string(),
            message,
        };
        if self.name.trim().is_empty() {
            return Err(invalid("name", "must not be empty".into()));
        }
        // The name is the default run directory (`runs/<name>`): a path in it would let a
        // config write anywhere.
        if self.name.starts_with('.')
            || self
                .name
                .chars()
                .any(|c| c == '/' || c == '\\' || c.is_control())
        {
            return Err(invalid(
                "name",
                format!(
                    "{:?} is not a plain name: it names the run directory, so it must not hold `/`, `\\` or control characters, nor start with `.`",
                    self.name
                ),
            ));
        }
        self.validate_data().map_err(|(f, m)| invalid(&f, m))?;
        self.validate_training().map_err(|(f, m)| invalid(&f, m))?;
        self.validate_model().map_err(|(f, m)| invalid(&f, m))?;
        if self.evaluation.batch_size == 0 {
            return Err(invalid(
                "evaluation.batch_size",
                "must be at least 1".into(),
            ));
        }
        let needs_validation = self.evaluation.every_epoch.contains(&SplitName::Validation)
            || self.early_stopping.is_some();
        if needs_validation && !self.has_validation() {
            let field = if self.early_stopping.is_some() {
                "early_stopping"
            } else {
                "evaluation.every_epoch"
            };
            return Err(invalid(
                field,
                "needs a validation split, but data.split has none (use \"holdout\" or \"balanced\")"
                    .into(),
            ));
        }
        if let Some(stop) = &self.early_stopping
            && stop.patience == 0
        {
            return Err(invalid(
                "early_stopping.patience",
                "must be at least 1".into(),
            ));
        }
        Ok(())
    }

    fn validate_data(&self) -> Result<(), (String, String)> {
        let field = |f: &str| f.to_string();
        match self.data.split {
            SplitConfig::FullTrain => {}
            SplitConfig::Holdout { validation, .. } => {
                if validation >= TRAIN_SET_SIZE {
                    return Err((
                        field("data.split.validation"),
                        format!("{validation} leaves nothing to train on out of {TRAIN_SET_SIZE}"),
                    ));
                }
            }
            SplitConfig::Balanced {
                train_per_class,
                validation_per_class,
                ..
            } => {
                let rarest = TRAIN_CLASS_COUNTS.iter().copied().min().unwrap_or(0);
                if train_per_class == 0 {
                    return Err((
                        field("data.split.train_per_class"),
                        "must be at least 1".into(),
                    ));
                }
                if train_per_class.saturating_add(validation_per_class) > rarest {
                    return Err((
                        field("data.split"),
                        format!(
                            "{train_per_class} + {validation_per_class} per class exceeds the {rarest} images of the rarest digit"
                        ),
                    ));
                }
            }
        }
        if let Some(aug) = &self.data.augmentation {
            aug.validate()
                .map_err(|e| (field("data.augmentation"), e.to_string()))?;
        }
        for (name, limit) in [
            ("data.train_limit", self.data.train_limit),
            ("data.validation_limit", self.data.validation_limit),
            ("data.test_limit", self.data.test_limit),
        ] {
            if limit == Some(0) {
                return Err((field(name), "must be at least 1 (or absent)".into()));
            }
        }
        Ok(())
    }

    fn validate_model(&self) -> Result<(), (String, String)> {
        let m = &self.model;
        if m.inputs != INPUTS {
            return Err((
                "model.inputs".into(),
                format!("MNIST images have {INPUTS} pixels, got {}", m.inputs),
            ));
        }
        if m.output.size != CLASSES {
            return Err((
                "model.output.size".into(),
                format!("MNIST has {CLASSES} classes, got {}", m.output.size),
            ));
        }
        if !(m.input_keep_prob > 0.0 && m.input_keep_prob <= 1.0) {
            return Err((
                "model.input_keep_prob".into(),
                format!("must be in (0, 1], got {}", m.input_keep_prob),
            ));
        }
        for (i, layer) in m.hidden.iter().enumerate() {
            if layer.size == 0 {
                return Err((
                    format!("model.hidden[{i}].size"),
                    "must be at least 1".into(),
                ));
            }
            if !(layer.keep_prob > 0.0 && layer.keep_prob <= 1.0) {
                return Err((
                    format!("model.hidden[{i}].keep_prob"),
                    format!("must be in (0, 1], got {}", layer.keep_prob),
                ));
            }
        }
        // Parameters (+ gradients + up to two optimizer moments) and the batch buffers.
        let mut widths = vec![m.inputs];
        widths.extend(m.hidden.iter().map(|h| h.size));
        widths.push(m.output.size);
        // Saturating: widths come straight from the file and may be absurd (u64::MAX each).
        let params: u128 = widths
            .windows(2)
            .map(|w| (w[0] as u128 + 1).saturating_mul(w[1] as u128))
            .fold(0, u128::saturating_add);
        let batch = self.training.batch_size.resolve(self.train_size()) as u128;
        let activations: u128 = widths
            .iter()
            .map(|&w| w as u128)
            .fold(0, u128::saturating_add)
            .saturating_mul(batch * 4);
        let bytes = params
            .saturating_mul(4 * 4)
            .saturating_add(activations.saturating_mul(4));
        if bytes > u128::from(MEMORY_LIMIT_BYTES) {
            return Err((
                "model.hidden".into(),
                format!(
                    "this network needs about {:.1} GiB for parameters, optimizer state and batch buffers, over the {} GiB limit; use smaller layers or batches",
                    bytes as f64 / f64::from(1u32 << 30),
                    MEMORY_LIMIT_BYTES >> 30
                ),
            ));
        }
        self.architecture()
            .map_err(|e| ("model".to_string(), e.to_string()))?;
        self.train_options()
            .validate(
                &self
                    .architecture()
                    .map_err(|e| ("model".to_string(), e.to_string()))?,
            )
            .map_err(|e| ("model".to_string(), e.to_string()))?;
        Ok(())
    }

    fn validate_training(&self) -> Result<(), (String, String)> {
        let t = &self.training;
        if !(t.learning_rate.is_finite() && t.learning_rate > 0.0) {
            return Err((
                "training.learning_rate".into(),
                format!("must be a positive number, got {}", t.learning_rate),
            ));
        }
        if !(t.l2.is_finite() && t.l2 >= 0.0) {
            return Err(("training.l2".into(), format!("must be >= 0, got {}", t.l2)));
        }
        if !(0.0..1.0).contains(&t.label_smoothing) {
            return Err((
                "training.label_smoothing".into(),
                format!("must be in [0, 1), got {}", t.label_smoothing),
            ));
        }
        if let Some(c) = t.max_norm
            && !(c.is_finite() && c > 0.0)
        {
            return Err((
                "training.max_norm".into(),
                format!("must be a positive number, got {c}"),
            ));
        }
        if t.epochs == 0 {
            return Err(("training.epochs".into(), "must be at least 1".into()));
        }
        if t.batch_size == BatchSize::Examples(0) {
            return Err((
                "training.batch_size".into(),
                "must be at least 1 (or \"full\")".into(),
            ));
        }
        t.optimizer
            .validate()
            .map_err(|e| ("training.optimizer".to_string(), e.to_string()))?;
        t.schedule
            .validate()
            .map_err(|e| ("training.schedule".to_string(), e.to_string()))?;
        Ok(())
    }
}
