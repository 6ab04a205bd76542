//! The input transform a model was trained with, stored in its file.

use serde::{Deserialize, Serialize};

use crate::{CoreError, Float};

/// Maps a raw pixel to a model input: `x = (raw * scale - mean) / std`.
///
/// MNIST in `[0, 1]` is `scale = 1/255, mean = 0, std = 1` (the [`Default`]); the usual
/// standardisation is `scale = 1/255, mean = 0.1307, std = 0.3081`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Preprocessing {
    /// Multiplier applied to the raw value first.
    pub scale: f64,
    /// Subtracted after scaling.
    pub mean: f64,
    /// Divisor applied last (non-zero).
    pub std: f64,
}

impl Default for Preprocessing {
    fn default() -> Self {
        Self {
            scale: 1.0 / 255.0,
            mean: 0.0,
            std: 1.0,
        }
    }
}

impl Preprocessing {
    /// Checks that all fields are finite and `std` is non-zero.
    pub fn validate(&self) -> Result<(), CoreError> {
        if !(self.scale.is_finite() && self.mean.is_finite() && self.std.is_finite())
            || self.std == 0.0
        {
            return Err(CoreError::BadPreprocessing(format!(
                "scale, mean and std must be finite and std non-zero, got {self:?}"
            )));
        }
        Ok(())
    }

    /// Transforms one value.
    #[inline]
    pub fn apply(&self, raw: f64) -> f64 {
        (raw * self.scale - self.mean) / self.std
    }

    /// Transforms raw `u8` pixels into `out` (pairs beyond the shorter slice are ignored).
    pub fn apply_u8<T: Float>(&self, raw: &[u8], out: &mut [T]) {
        for (o, &r) in out.iter_mut().zip(raw) {
            *o = T::from_f64(self.apply(f64::from(r)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_and_validate() {
        let p = Preprocessing {
            scale: 1.0 / 255.0,
            mean: 0.5,
            std: 0.25,
        };
        let mut out = [0.0f64; 3];
        p.apply_u8(&[0, 255, 51], &mut out);
        assert_eq!(out[0], -2.0);
        assert_eq!(out[1], 2.0);
        assert!((out[2] - (0.2 - 0.5) / 0.25).abs() < 1e-12);
        assert!(p.validate().is_ok());
        assert!(Preprocessing { std: 0.0, ..p }.validate().is_err());
        assert!(
            Preprocessing {
                mean: f64::NAN,
                ..p
            }
            .validate()
            .is_err()
        );
    }
}
