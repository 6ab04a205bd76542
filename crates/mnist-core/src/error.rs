//! Error types. Each message says what was wrong and, where it helps, what to do about it.

use std::path::PathBuf;

/// A network description that cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ArchitectureError {
    /// Fewer than two sizes (an input and an output width) were given.
    #[error("an architecture needs at least an input and an output size, got {0} size(s)")]
    TooFewSizes(usize),
    /// A layer width of zero.
    #[error("layer size #{index} is 0; every layer needs at least one unit")]
    ZeroWidth {
        /// Position in `sizes`.
        index: usize,
    },
    /// `hidden_activations` does not have one entry per hidden layer.
    #[error("{hidden} hidden layer(s) need {hidden} hidden activation(s), got {got}")]
    ActivationCount {
        /// Number of hidden layers (`sizes.len() - 2`).
        hidden: usize,
        /// Number of activations given.
        got: usize,
    },
    /// A leaky ReLU slope that is not a finite number.
    #[error("leaky ReLU slope of hidden layer {layer} must be finite, got {slope}")]
    BadSlope {
        /// Hidden layer index.
        layer: usize,
        /// The slope given.
        slope: f64,
    },
    /// More output classes than a `u8` label can name.
    #[error("{0} outputs, but labels are u8: at most 256 classes are supported")]
    TooManyOutputs(usize),
}

/// Misuse of the engine API: mismatched shapes, bad hyperparameters, bad labels.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CoreError {
    /// The architecture is invalid.
    #[error(transparent)]
    Architecture(#[from] ArchitectureError),
    /// Wrong number of per-layer initializers.
    #[error(
        "got {got} layer initializer(s) for {layers} layer(s); pass one for all layers or one per layer"
    )]
    InitCount {
        /// Layers in the network.
        layers: usize,
        /// Initializers given.
        got: usize,
    },
    /// An initializer whose parameters make no sense (negative std, low > high, ...).
    #[error("layer {layer}: invalid initializer: {reason}")]
    BadInit {
        /// Layer index.
        layer: usize,
        /// What is wrong.
        reason: String,
    },
    /// A batch of zero examples.
    #[error("batch size is 0; pass at least one example")]
    EmptyBatch,
    /// A batch larger than the workspace was sized for.
    #[error("batch of {batch} exceeds the workspace's max batch {max}; build a larger Workspace")]
    BatchTooLarge {
        /// Requested batch size.
        batch: usize,
        /// Workspace capacity.
        max: usize,
    },
    /// The input slice does not hold `batch * inputs` values.
    #[error("input slice has {got} values, expected batch {batch} x {inputs} inputs = {expected}")]
    InputLength {
        /// Batch size.
        batch: usize,
        /// Network input width.
        inputs: usize,
        /// `batch * inputs`.
        expected: usize,
        /// Actual length.
        got: usize,
    },
    /// A set of rows that cannot be compressed (`SparseRows`), or rows given to
    /// `train_step_rows` that do not match the network or each other, or an index past the
    /// set's last row.
    #[error("batch of set rows: {0}")]
    BadRows(String),
    /// The label slice does not hold one label per example.
    #[error("got {got} labels for a batch of {batch}")]
    LabelCount {
        /// Batch size.
        batch: usize,
        /// Labels given.
        got: usize,
    },
    /// A label that is not a valid class index.
    #[error("label {label} at position {index} is out of range for {classes} classes")]
    LabelOutOfRange {
        /// Position in the batch.
        index: usize,
        /// The label.
        label: u8,
        /// Number of network outputs.
        classes: usize,
    },
    /// A workspace, gradient or optimizer buffer built for a different architecture.
    #[error(
        "{what} was built for a different architecture (layer widths differ); build it from this network"
    )]
    BufferMismatch {
        /// Which buffer.
        what: &'static str,
    },
    /// Invalid training options (dropout, freezing, L2).
    #[error("invalid training options: {0}")]
    BadOptions(String),
    /// Invalid optimizer hyperparameters or state.
    #[error("invalid optimizer: {0}")]
    BadOptimizer(String),
    /// Invalid learning-rate schedule.
    #[error("invalid learning-rate schedule: {0}")]
    BadSchedule(String),
    /// Invalid input preprocessing.
    #[error("invalid preprocessing: {0}")]
    BadPreprocessing(String),
}

/// A model file (safetensors bytes) that cannot be written or read back.
#[derive(Debug, thiserror::Error)]
pub enum ModelIoError {
    /// The data ends before the header or the tensors it announces.
    #[error(
        "model data is truncated or its header length is wrong ({0}); the file is incomplete, re-save or re-copy it"
    )]
    Truncated(String),
    /// The bytes are not a valid safetensors container.
    #[error("not a valid safetensors file: {0}")]
    Corrupt(String),
    /// A required `__metadata__` key is absent (not an mnist-rs model, or written by another tool).
    #[error("metadata key `{0}` is missing; this is not an mnist-rs model file")]
    MissingMetadata(&'static str),
    /// A metadata value could not be parsed or is inconsistent.
    #[error("metadata `{key}` is invalid: {reason}")]
    BadMetadata {
        /// The metadata key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The file was written by a newer (or unknown) format version.
    #[error(
        "model format version {found} is not supported (this build reads version {supported}); upgrade mnist-rs"
    )]
    UnsupportedVersion {
        /// Version in the file.
        found: String,
        /// Version this build understands.
        supported: u32,
    },
    /// A tensor required by the architecture is absent.
    #[error("tensor `{0}` is missing")]
    MissingTensor(String),
    /// A tensor the architecture does not account for.
    #[error("unexpected tensor `{0}`: the metadata architecture has no such layer")]
    UnexpectedTensor(String),
    /// A tensor's shape disagrees with the architecture in the metadata.
    #[error("tensor `{name}` has shape {found:?}, but the architecture needs {expected:?}")]
    ShapeMismatch {
        /// Tensor name.
        name: String,
        /// Shape implied by the metadata.
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// A tensor stored in a dtype other than F32/F64.
    #[error("tensor `{name}` has dtype {dtype}; only F32 and F64 are supported")]
    UnsupportedDtype {
        /// Tensor name.
        name: String,
        /// Dtype in the file.
        dtype: String,
    },
    /// A parameter that is NaN or infinite.
    #[error("tensor `{0}` contains a NaN or infinite value")]
    NonFinite(String),
    /// Reading or writing failed at the OS level.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// A [`ModelIoError`] tied to the file it happened on.
#[derive(Debug, thiserror::Error)]
#[error("model file {}: {source}", path.display())]
pub struct ModelFileError {
    /// The file being read or written.
    pub path: PathBuf,
    /// What went wrong.
    #[source]
    pub source: ModelIoError,
}
