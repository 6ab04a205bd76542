//! MNIST in memory: the raw bytes as published ([`LabeledImages`]), and the `f32` matrices a
//! network trains on ([`Dataset`]), one contiguous row-major buffer of `n x 784`.

use crate::error::{DatasetError, Result};
use crate::files::{IMAGE_PIXELS, IMAGE_SIDE, MnistFile, NUM_CLASSES};
use crate::idx;
use crate::normalize::Preprocessing;
use crate::source::DataSources;
use rayon::prelude::*;

/// Images as bytes 0..=255 (row-major, `rows x cols` each) with their labels 0..=9.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabeledImages {
    pixels: Vec<u8>,
    labels: Vec<u8>,
    rows: usize,
    cols: usize,
}

impl LabeledImages {
    /// Pairs parsed images with labels; the counts must agree.
    pub fn new(
        images: idx::IdxImages,
        labels: Vec<u8>,
        images_origin: &str,
        labels_origin: &str,
    ) -> Result<Self> {
        if images.count != labels.len() {
            return Err(DatasetError::CountMismatch {
                images: images_origin.to_string(),
                labels: labels_origin.to_string(),
                image_count: images.count,
                label_count: labels.len(),
            });
        }
        Ok(LabeledImages {
            pixels: images.pixels,
            labels,
            rows: images.rows,
            cols: images.cols,
        })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels per image.
    pub fn image_len(&self) -> usize {
        self.rows * self.cols
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// The bytes of image `i`, or `None` past the end.
    pub fn image(&self, i: usize) -> Option<&[u8]> {
        let d = self.image_len();
        self.pixels.get(i * d..(i + 1) * d)
    }

    /// How many images of each digit.
    pub fn class_counts(&self) -> [usize; NUM_CLASSES] {
        let mut counts = [0; NUM_CLASSES];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(usize::from(l)) {
                *c += 1;
            }
        }
        counts
    }

    /// Converts the images at `indices` (all, in order, if `None`) to `f32` with `prep`.
    pub fn to_dataset(&self, indices: Option<&[usize]>, prep: &Preprocessing) -> Result<Dataset> {
        let d = self.image_len();
        let all: Vec<usize>;
        let indices = match indices {
            Some(ix) => ix,
            None => {
                all = (0..self.len()).collect();
                &all
            }
        };
        let lut = prep.lookup_table();
        let mut features = Vec::with_capacity(indices.len() * d);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            let (image, label) = self.image(i).zip(self.labels.get(i)).ok_or_else(|| {
                DatasetError::InvalidSplit(format!(
                    "index {i} is out of range for {} images",
                    self.len()
                ))
            })?;
            features.extend(image.iter().map(|&p| lut[usize::from(p)]));
            labels.push(*label);
        }
        Ok(Dataset {
            features,
            labels,
            dim: d,
        })
    }
}

/// The training and test sets as published.
#[derive(Debug, Clone)]
pub struct Mnist {
    pub train: LabeledImages,
    pub test: LabeledImages,
}

/// Which half of MNIST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl Mnist {
    /// Loads and verifies all four files from `sources`.
    pub fn load(sources: &DataSources) -> Result<Mnist> {
        Ok(Mnist {
            train: load_split(sources, Split::Train)?,
            test: load_split(sources, Split::Test)?,
        })
    }
}

/// Loads and verifies one half of MNIST (images and labels) from `sources`.
pub fn load_split(sources: &DataSources, split: Split) -> Result<LabeledImages> {
    let (images_file, labels_file) = match split {
        Split::Train => (MnistFile::TrainImages, MnistFile::TrainLabels),
        Split::Test => (MnistFile::TestImages, MnistFile::TestLabels),
    };
    let images = sources.fetch(images_file)?;
    let labels = sources.fetch(labels_file)?;
    let images_origin = format!("{} ({})", images_file.file_name(), images.origin);
    let labels_origin = format!("{} ({})", labels_file.file_name(), labels.origin);
    let images = idx::parse_images(images.bytes, &images_origin)?;
    if (images.rows, images.cols) != (IMAGE_SIDE, IMAGE_SIDE) {
        return Err(DatasetError::DimensionMismatch {
            origin: images_origin,
            detail: format!(
                "images are {}x{}, MNIST images are 28x28",
                images.rows, images.cols
            ),
        });
    }
    let labels = idx::parse_labels(labels.bytes, &labels_origin)?;
    LabeledImages::new(images, labels, &images_origin, &labels_origin)
}

/// Examples as `f32` features in one contiguous row-major `len x dim` buffer, with labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    features: Vec<f32>,
    labels: Vec<u8>,
    dim: usize,
}

/// A contiguous run of examples: `labels.len()` rows of `dim` features each.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    pub features: &'a [f32],
    pub labels: &'a [u8],
    pub dim: usize,
}

impl Batch<'_> {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

impl Dataset {
    /// Builds a dataset from row-major features; `features.len()` must be `labels.len() * dim`.
    pub fn new(features: Vec<f32>, labels: Vec<u8>, dim: usize) -> Result<Self> {
        if features.len() != labels.len() * dim {
            return Err(DatasetError::InvalidSplit(format!(
                "{} features do not make {} rows of {dim}",
                features.len(),
                labels.len()
            )));
        }
        Ok(Dataset {
            features,
            labels,
            dim,
        })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Features per example (784 for MNIST).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// All features, row-major.
    pub fn features(&self) -> &[f32] {
        &self.features
    }

    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// The examples `start..start+len` (clamped to the end) as a view, without copying.
    pub fn batch(&self, start: usize, len: usize) -> Batch<'_> {
        let start = start.min(self.len());
        let end = start.saturating_add(len).min(self.len());
        Batch {
            features: &self.features[start * self.dim..end * self.dim],
            labels: &self.labels[start..end],
            dim: self.dim,
        }
    }

    /// Consecutive batches of `batch_size` (the last may be shorter) in stored order.
    pub fn batches(&self, batch_size: usize) -> impl Iterator<Item = Batch<'_>> {
        let size = batch_size.max(1);
        (0..self.len())
            .step_by(size)
            .map(move |start| self.batch(start, size))
    }

    /// Copies the labels of the rows at `indices` into `labels` (cleared first; indices past
    /// the end are skipped): the labels of a batch whose features are taken elsewhere.
    pub fn labels_into(&self, indices: &[usize], labels: &mut Vec<u8>) {
        labels.clear();
        labels.extend(indices.iter().filter_map(|&i| self.labels.get(i)));
    }

    /// Copies the rows at `indices` into `features`/`labels` (cleared first, capacity reused):
    /// a shuffled batch without allocating once the buffers have grown to batch size.
    ///
    /// Large batches are copied on the threads of the current rayon pool: the rows are scattered
    /// over a dataset far larger than the caches, and one thread alone does not keep memory busy.
    pub fn gather_into(&self, indices: &[usize], features: &mut Vec<f32>, labels: &mut Vec<u8>) {
        /// Rows per parallel task (about 100 KB of pixels).
        const ROWS_PER_TASK: usize = 32;
        labels.clear();
        let dim = self.dim;
        if indices.len() >= 2 * ROWS_PER_TASK
            && dim > 0
            && rayon::current_num_threads() > 1
            && indices.iter().all(|&i| i < self.len())
        {
            // Every row is valid: the buffer is sized once and each row written exactly once.
            features.resize(indices.len() * dim, 0.0);
            features
                .par_chunks_mut(dim)
                .with_min_len(ROWS_PER_TASK)
                .zip(indices.par_iter())
                .for_each(|(dst, &i)| {
                    if let Some(row) = self.features.get(i * dim..(i + 1) * dim) {
                        dst.copy_from_slice(row);
                    }
                });
            self.labels_into(indices, labels);
            return;
        }
        features.clear();
        for &i in indices {
            if let Some(row) = self.features.get(i * self.dim..(i + 1) * self.dim) {
                features.extend_from_slice(row);
                labels.push(self.labels[i]);
            }
        }
    }
}

const _: () = assert!(IMAGE_PIXELS == IMAGE_SIDE * IMAGE_SIDE);

#[cfg(test)]
mod tests {
    use super::*;

    /// The parallel copy (valid indices, a pool of several threads) and the sequential one (any
    /// index out of range, or one thread) give the rows in the order asked.
    #[test]
    fn gathered_batches_hold_the_indexed_rows_in_order() {
        let (n, dim) = (500usize, 7usize);
        let features: Vec<f32> = (0..n * dim).map(|v| v as f32).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let data = Dataset::new(features, labels, dim).unwrap();
        let valid: Vec<usize> = (0..300).map(|k| (k * 7919) % n).collect();
        let mut with_bad = valid.clone();
        with_bad[5] = n + 3;
        let expect = |idx: &[usize]| {
            let rows: Vec<usize> = idx.iter().copied().filter(|&i| i < n).collect();
            let f: Vec<f32> = rows
                .iter()
                .flat_map(|&i| (i * dim..(i + 1) * dim).map(|v| v as f32))
                .collect();
            let l: Vec<u8> = rows.iter().map(|&i| (i % 10) as u8).collect();
            (f, l)
        };
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            for idx in [&valid[..], &with_bad[..], &valid[..10]] {
                // Buffers left longer than needed by an earlier batch.
                let (mut f, mut l) = (vec![-1.0; 5000], vec![99; 900]);
                pool.install(|| data.gather_into(idx, &mut f, &mut l));
                assert_eq!(
                    (f, l),
                    expect(idx),
                    "{threads} thread(s), {} rows",
                    idx.len()
                );
                let mut only = vec![99; 900];
                data.labels_into(idx, &mut only);
                assert_eq!(only, expect(idx).1, "labels alone, {} rows", idx.len());
            }
        }
    }
}
