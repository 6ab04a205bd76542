//! Input normalization: how raw pixel bytes become the numbers a network sees.
//!
//! Every choice is the affine map `x = (byte * scale - mean) / std`, so a trained model can
//! record exactly what it was trained on (three numbers) and a user image can be prepared
//! the same way. Standardization is fitted on the training split only and then applied to
//! every split.

use crate::dataset::LabeledImages;

/// What the user asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Normalization {
    /// Raw bytes as floats, 0..=255.
    Raw,
    /// `byte / 255`, in [0, 1].
    #[default]
    Scale,
    /// `(byte/255 - mean) / std` with one scalar mean and std over all pixels of the
    /// training split (population std, as NumPy's default).
    Standardize,
}

/// A fitted normalization: `x = (byte * scale - mean) / std`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preprocessing {
    pub scale: f32,
    pub mean: f32,
    pub std: f32,
}

impl Preprocessing {
    /// The identity map on bytes (0..=255 as floats).
    pub const RAW: Preprocessing = Preprocessing {
        scale: 1.0,
        mean: 0.0,
        std: 1.0,
    };
    /// `byte / 255`.
    pub const SCALE: Preprocessing = Preprocessing {
        scale: 1.0 / 255.0,
        mean: 0.0,
        std: 1.0,
    };

    /// Fits `norm` on the images at `train_indices` (all if `None`) of `train`.
    pub fn fit(
        norm: Normalization,
        train: &LabeledImages,
        train_indices: Option<&[usize]>,
    ) -> Self {
        match norm {
            Normalization::Raw => Self::RAW,
            Normalization::Scale => Self::SCALE,
            Normalization::Standardize => {
                // Exact integer sums: no rounding drift over 47 million pixels.
                let (mut sum, mut sum_sq, mut n) = (0u64, 0u64, 0u64);
                let mut add = |image: &[u8]| {
                    for &p in image {
                        sum += u64::from(p);
                        sum_sq += u64::from(p) * u64::from(p);
                    }
                    n += image.len() as u64;
                };
                match train_indices {
                    Some(ix) => ix.iter().filter_map(|&i| train.image(i)).for_each(&mut add),
                    None => add(train.pixels()),
                }
                let n = n.max(1) as f64;
                let mean = sum as f64 / n;
                let var = (sum_sq as f64 / n - mean * mean).max(0.0);
                let std = var.sqrt();
                Preprocessing {
                    scale: 1.0 / 255.0,
                    mean: (mean / 255.0) as f32,
                    // A blank training set has no spread; keep the map finite.
                    std: if std > 0.0 { (std / 255.0) as f32 } else { 1.0 },
                }
            }
        }
    }

    /// Applies the map to one byte.
    pub fn apply(&self, byte: u8) -> f32 {
        (f32::from(byte) * self.scale - self.mean) / self.std
    }

    /// The map for all 256 byte values, so converting a dataset is one lookup per pixel.
    pub fn lookup_table(&self) -> [f32; 256] {
        std::array::from_fn(|b| self.apply(b as u8))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idx::IdxImages;

    fn images(pixels: Vec<u8>) -> LabeledImages {
        let count = pixels.len() / 4;
        let labels = vec![0; count];
        let images = IdxImages {
            count,
            rows: 2,
            cols: 2,
            pixels,
        };
        LabeledImages::new(images, labels, "i", "l").unwrap()
    }

    #[test]
    fn standardize_matches_numpy_population_std() {
        let train = images(vec![0, 255, 0, 255, 0, 0, 0, 0]);
        let p = Preprocessing::fit(Normalization::Standardize, &train, None);
        // bytes/255 = [0,1,0,1,0,0,0,0]: mean 0.25, population std sqrt(0.1875).
        assert!((p.mean - 0.25).abs() < 1e-7);
        assert!((p.std - 0.1875f32.sqrt()).abs() < 1e-7);
        let standardized: f32 = [0u8, 255, 0, 255, 0, 0, 0, 0]
            .iter()
            .map(|&b| p.apply(b))
            .sum();
        assert!(standardized.abs() < 1e-5, "mean after standardizing is 0");
    }

    #[test]
    fn standardize_uses_only_the_given_indices() {
        let train = images(vec![10, 10, 10, 10, 200, 200, 200, 200]);
        let p = Preprocessing::fit(Normalization::Standardize, &train, Some(&[0]));
        assert!((p.mean - 10.0 / 255.0).abs() < 1e-7);
        assert_eq!(p.std, 1.0, "no spread falls back to std 1");
    }

    #[test]
    fn scale_maps_to_unit_interval() {
        let lut = Preprocessing::SCALE.lookup_table();
        assert_eq!(lut[0], 0.0);
        assert_eq!(lut[255], 1.0);
    }
}
