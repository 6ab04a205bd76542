//! # mnist-dataset
//!
//! MNIST from bytes on disk or on a mirror to `f32` matrices, with nothing unverified in
//! between. This crate knows about files and data, never about networks.
//!
//! - [`idx`]: the IDX format, plain or gzip, every size checked, gzip bombs capped.
//! - [`source`]: where the files come from (explicit dir, cache, the repository's copy,
//!   mirrors), SHA-256 verification of the decompressed bytes, atomic caching.
//! - [`dataset`]: [`LabeledImages`] (bytes as published) and [`Dataset`] (contiguous
//!   row-major `f32`, `n x 784`, plus `u8` labels) with batch views.
//! - [`split`]: seeded train/validation splits and class-balanced subsets.
//! - [`normalize`]: `x/255` and scalar standardization fitted on the training split.
//!
//! ```no_run
//! use mnist_dataset::{DataSources, Mnist, Normalization, Preprocessing, split};
//!
//! let mnist = Mnist::load(&DataSources::from_env())?;
//! let (dev, train) = split::shuffled_split(mnist.train.len(), 10_000, 100)?;
//! let prep = Preprocessing::fit(Normalization::Standardize, &mnist.train, Some(&train));
//! let train = mnist.train.to_dataset(Some(&train), &prep)?;
//! let dev = mnist.train.to_dataset(Some(&dev), &prep)?;
//! assert_eq!(train.features().len(), 50_000 * 784);
//! # Ok::<(), mnist_dataset::DatasetError>(())
//! ```

pub mod atomic;
pub mod augment;
pub mod dataset;
pub mod digitize;
pub mod error;
pub mod files;
pub mod idx;
pub mod normalize;
pub mod source;
pub mod split;

pub use dataset::{Batch, Dataset, LabeledImages, Mnist, Split, load_split};
pub use error::{DatasetError, Result};
pub use files::{IMAGE_PIXELS, IMAGE_SIDE, MnistFile, NUM_CLASSES};
pub use normalize::{Normalization, Preprocessing};
pub use source::{DataSources, Fetched, Mirror, Origin, Progress};
