//! The one error type of this crate: every variant names the file (or URL) it is about, what
//! was wrong, and, where there is one, what to do about it.

use std::path::PathBuf;

/// Everything that can go wrong while reading, fetching or splitting MNIST.
///
/// `origin` is where the bytes came from: a file path, or a URL for a download.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{origin}: cannot read: {source}")]
    Io {
        origin: String,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{origin}: cannot write to the cache: {source} (check free space and permissions, or set MNIST_CACHE_DIR)"
    )]
    CacheWrite {
        origin: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{origin}: not an IDX {expected_kind} file: magic number {found:#010x}, expected {expected:#010x}"
    )]
    WrongMagic {
        origin: String,
        expected_kind: &'static str,
        expected: u32,
        found: u32,
    },

    #[error(
        "{origin}: truncated: expected {expected} bytes, found {found}; delete the file and fetch it again"
    )]
    Truncated {
        origin: String,
        expected: u64,
        found: u64,
    },

    #[error(
        "{origin}: {extra} unexpected trailing bytes after the {expected} bytes the header describes"
    )]
    TrailingBytes {
        origin: String,
        expected: u64,
        extra: u64,
    },

    #[error("{origin}: dimension mismatch: {detail}")]
    DimensionMismatch { origin: String, detail: String },

    #[error("{origin}: label {label} at index {index} is not a digit 0..=9")]
    BadLabel {
        origin: String,
        index: usize,
        label: u8,
    },

    #[error(
        "{images} holds {image_count} images but {labels} holds {label_count} labels; they must be a matching pair"
    )]
    CountMismatch {
        images: String,
        labels: String,
        image_count: usize,
        label_count: usize,
    },

    #[error(
        "{origin}: SHA-256 of the decompressed bytes is {found}, expected {expected}: the file is corrupt or not the original MNIST {file}"
    )]
    ChecksumMismatch {
        origin: String,
        file: &'static str,
        expected: &'static str,
        found: String,
    },

    #[error(
        "{origin}: too large: more than {limit} bytes (decompressed); refusing it rather than exhausting memory"
    )]
    TooLarge { origin: String, limit: u64 },

    #[error("{origin}: corrupt gzip stream: {source}")]
    Gzip {
        origin: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{origin}: download failed: {reason}")]
    Download { origin: String, reason: String },

    #[error("{file} not found in {dir}: expected {file} or {file}.gz there")]
    NotInDirectory { file: &'static str, dir: PathBuf },

    #[error("could not get {file} from any source:\n{attempts}\n{hint}")]
    AllSourcesFailed {
        file: &'static str,
        /// One line per source tried: `  - <source>: <why it failed>`.
        attempts: String,
        hint: &'static str,
    },

    #[error("invalid split: {0}")]
    InvalidSplit(String),

    #[error("invalid augmentation: {0}")]
    InvalidAugmentation(String),
}

impl DatasetError {
    pub(crate) fn io(origin: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            origin: origin.into(),
            source,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = DatasetError> = std::result::Result<T, E>;
