//! Confusion matrix of a classifier: how often each true class was predicted as each class.
//!
//! `counts[truth][predicted]` is the number of examples of class `truth` that the network
//! classified as `predicted`; the diagonal holds the correct answers. Rows are true classes,
//! so a row's diagonal share is that class's recall ([`ConfusionMatrix::per_class_accuracy`]).

use serde::{Deserialize, Serialize};

/// Why a confusion matrix update was refused. Nothing is counted when an error is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfusionError {
    /// A true or predicted label is not a class of this matrix.
    #[error(
        "{which} label {label} is out of range for a {classes}-class confusion matrix; \
         labels must be in 0..{classes}"
    )]
    LabelOutOfRange {
        /// "true" or "predicted".
        which: &'static str,
        label: u8,
        classes: usize,
    },
    /// `add_batch` was given slices of different lengths.
    #[error(
        "cannot count a batch of {truth} true labels against {predicted} predictions; \
         pass one prediction per example"
    )]
    LengthMismatch { truth: usize, predicted: usize },
    /// `merge` was given a matrix with another number of classes.
    #[error(
        "cannot merge a {other}-class confusion matrix into a {classes}-class one; \
         both must count the same classes"
    )]
    ClassMismatch { classes: usize, other: usize },
    /// Deserialized data whose rows do not form a `classes` x `classes` square.
    #[error(
        "confusion matrix data is not {classes}x{classes} ({detail}); \
         the file is corrupt or was written by another program"
    )]
    NotSquare { classes: usize, detail: String },
}

/// Counts of (true class, predicted class) pairs over `classes` classes.
///
/// Serializes as `{"classes": n, "counts": [[...], ...]}` with `counts[truth][predicted]`;
/// deserializing checks that `counts` is `n` rows of `n` entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawConfusion")]
pub struct ConfusionMatrix {
    classes: usize,
    counts: Vec<Vec<u64>>,
}

/// Unchecked serde form of [`ConfusionMatrix`].
#[derive(Deserialize)]
struct RawConfusion {
    classes: usize,
    counts: Vec<Vec<u64>>,
}

impl TryFrom<RawConfusion> for ConfusionMatrix {
    type Error = ConfusionError;

    fn try_from(raw: RawConfusion) -> Result<Self, Self::Error> {
        if raw.counts.len() != raw.classes {
            return Err(ConfusionError::NotSquare {
                classes: raw.classes,
                detail: format!("it has {} rows", raw.counts.len()),
            });
        }
        if let Some((row, r)) = raw
            .counts
            .iter()
            .enumerate()
            .find(|(_, r)| r.len() != raw.classes)
        {
            return Err(ConfusionError::NotSquare {
                classes: raw.classes,
                detail: format!("row {row} has {} entries", r.len()),
            });
        }
        Ok(Self {
            classes: raw.classes,
            counts: raw.counts,
        })
    }
}

impl ConfusionMatrix {
    /// Number of classes of MNIST digits.
    pub const DIGITS: usize = 10;

    /// An all-zero matrix over `classes` classes (labels `0..classes`).
    pub fn new(classes: usize) -> Self {
        Self {
            classes,
            counts: vec![vec![0; classes]; classes],
        }
    }

    /// Number of classes (rows and columns).
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The rows: `counts()[truth][predicted]`.
    pub fn counts(&self) -> &[Vec<u64>] {
        &self.counts
    }

    /// Examples of class `truth` predicted as `predicted`; `None` if either is not a class.
    pub fn get(&self, truth: usize, predicted: usize) -> Option<u64> {
        self.counts.get(truth)?.get(predicted).copied()
    }

    fn check(&self, which: &'static str, label: u8) -> Result<usize, ConfusionError> {
        let index = usize::from(label);
        if index < self.classes {
            Ok(index)
        } else {
            Err(ConfusionError::LabelOutOfRange {
                which,
                label,
                classes: self.classes,
            })
        }
    }

    /// Counts one example of class `truth` classified as `predicted`.
    pub fn add(&mut self, truth: u8, predicted: u8) -> Result<(), ConfusionError> {
        let t = self.check("true", truth)?;
        let p = self.check("predicted", predicted)?;
        self.counts[t][p] += 1;
        Ok(())
    }

    /// Counts `truth[i]` classified as `predicted[i]` for every `i`. All labels are checked
    /// before anything is counted, so on error the matrix is unchanged.
    pub fn add_batch(&mut self, truth: &[u8], predicted: &[u8]) -> Result<(), ConfusionError> {
        if truth.len() != predicted.len() {
            return Err(ConfusionError::LengthMismatch {
                truth: truth.len(),
                predicted: predicted.len(),
            });
        }
        for (&t, &p) in truth.iter().zip(predicted) {
            self.check("true", t)?;
            self.check("predicted", p)?;
        }
        for (&t, &p) in truth.iter().zip(predicted) {
            self.counts[usize::from(t)][usize::from(p)] += 1;
        }
        Ok(())
    }

    /// Adds `other`'s counts to this matrix (e.g. to combine per-thread or per-batch matrices).
    pub fn merge(&mut self, other: &ConfusionMatrix) -> Result<(), ConfusionError> {
        if other.classes != self.classes {
            return Err(ConfusionError::ClassMismatch {
                classes: self.classes,
                other: other.classes,
            });
        }
        for (row, other_row) in self.counts.iter_mut().zip(&other.counts) {
            for (c, o) in row.iter_mut().zip(other_row) {
                *c += o;
            }
        }
        Ok(())
    }

    /// Number of examples counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Number of examples classified correctly (the diagonal).
    pub fn correct(&self) -> u64 {
        self.counts.iter().enumerate().map(|(i, row)| row[i]).sum()
    }

    /// Examples whose true class is `truth` (the row sum); 0 if it is not a class.
    pub fn class_total(&self, truth: usize) -> u64 {
        self.counts.get(truth).map_or(0, |row| row.iter().sum())
    }

    /// Fraction of all examples classified correctly; 0.0 when nothing was counted.
    pub fn accuracy(&self) -> f64 {
        ratio(self.correct(), self.total()).unwrap_or(0.0)
    }

    /// Per true class, the fraction of its examples classified correctly (recall), or `None`
    /// for a class with no examples.
    pub fn per_class_accuracy(&self) -> Vec<Option<f64>> {
        self.counts
            .iter()
            .enumerate()
            .map(|(i, row)| ratio(row[i], row.iter().sum()))
            .collect()
    }
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    // u64 -> f64 loses precision only beyond 2^53 examples.
    (whole > 0).then(|| part as f64 / whole as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_is_square_and_empty() {
        let m = ConfusionMatrix::new(ConfusionMatrix::DIGITS);
        assert_eq!(m.classes(), 10);
        assert_eq!(m.counts().len(), 10);
        assert!(
            m.counts()
                .iter()
                .all(|r| r.len() == 10 && r.iter().all(|&c| c == 0))
        );
        assert_eq!(m.total(), 0);
        assert_eq!(m.accuracy(), 0.0);
        assert_eq!(m.per_class_accuracy(), vec![None; 10]);
    }

    #[test]
    fn add_counts_truth_by_row_and_prediction_by_column() {
        let mut m = ConfusionMatrix::new(3);
        m.add(0, 0).unwrap();
        m.add(0, 2).unwrap();
        m.add(2, 2).unwrap();
        m.add(2, 2).unwrap();
        assert_eq!(m.get(0, 2), Some(1));
        assert_eq!(m.get(2, 0), Some(0));
        assert_eq!(m.get(2, 2), Some(2));
        assert_eq!(m.get(3, 0), None);
        assert_eq!(m.total(), 4);
        assert_eq!(m.correct(), 3);
        assert_eq!(m.class_total(0), 2);
        assert_eq!(m.accuracy(), 0.75);
        // Class 1 has no examples: None, not NaN.
        assert_eq!(m.per_class_accuracy(), vec![Some(0.5), None, Some(1.0)]);
    }

    #[test]
    fn add_batch_matches_repeated_add() {
        let truth = [3u8, 1, 4, 1, 5, 9, 2, 6, 5, 3];
        let predicted = [3u8, 1, 4, 7, 5, 9, 2, 6, 3, 3];
        let mut batch = ConfusionMatrix::new(10);
        batch.add_batch(&truth, &predicted).unwrap();
        let mut single = ConfusionMatrix::new(10);
        for (&t, &p) in truth.iter().zip(&predicted) {
            single.add(t, p).unwrap();
        }
        assert_eq!(batch, single);
        assert_eq!(batch.correct(), 8);
        assert_eq!(batch.per_class_accuracy()[1], Some(0.5));
        assert_eq!(batch.per_class_accuracy()[5], Some(0.5));
        assert_eq!(batch.per_class_accuracy()[0], None);
    }

    #[test]
    fn bad_labels_are_errors_and_change_nothing() {
        let mut m = ConfusionMatrix::new(10);
        assert_eq!(
            m.add(10, 0),
            Err(ConfusionError::LabelOutOfRange {
                which: "true",
                label: 10,
                classes: 10
            })
        );
        assert!(matches!(
            m.add(0, 255),
            Err(ConfusionError::LabelOutOfRange {
                which: "predicted",
                ..
            })
        ));
        // The bad label is last: the good pairs before it must not be counted either.
        let err = m.add_batch(&[1, 2, 3], &[1, 2, 12]).unwrap_err();
        assert!(err.to_string().contains("predicted label 12"), "{err}");
        assert_eq!(
            m.add_batch(&[1, 2], &[1]),
            Err(ConfusionError::LengthMismatch {
                truth: 2,
                predicted: 1
            })
        );
        assert_eq!(m, ConfusionMatrix::new(10));
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = ConfusionMatrix::new(2);
        a.add_batch(&[0, 1, 1], &[0, 1, 0]).unwrap();
        let mut b = ConfusionMatrix::new(2);
        b.add_batch(&[0, 0, 1], &[1, 0, 1]).unwrap();
        let mut all = ConfusionMatrix::new(2);
        all.add_batch(&[0, 1, 1, 0, 0, 1], &[0, 1, 0, 1, 0, 1])
            .unwrap();
        a.merge(&b).unwrap();
        assert_eq!(a, all);
        assert_eq!(
            a.merge(&ConfusionMatrix::new(3)),
            Err(ConfusionError::ClassMismatch {
                classes: 2,
                other: 3
            })
        );
        assert_eq!(a, all);
    }

    #[test]
    fn serde_round_trip_and_validation() {
        let mut m = ConfusionMatrix::new(3);
        m.add_batch(&[0, 1, 2, 2], &[0, 2, 2, 1]).unwrap();
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"classes":3,"counts":[[1,0,0],[0,0,1],[0,1,1]]}"#);
        let back: ConfusionMatrix = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);

        let ragged = r#"{"classes":2,"counts":[[1,0],[0]]}"#;
        let err = serde_json::from_str::<ConfusionMatrix>(ragged).unwrap_err();
        assert!(err.to_string().contains("not 2x2"), "{err}");
        let short = r#"{"classes":3,"counts":[[1,0,0]]}"#;
        assert!(serde_json::from_str::<ConfusionMatrix>(short).is_err());
    }
}
