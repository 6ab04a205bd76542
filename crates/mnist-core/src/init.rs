//! Parameter initializers.
//!
//! Values are drawn in `f64` (then rounded to the network's scalar), weights first in
//! row-major `[out, in]` order, then the biases, layer after layer, from one
//! [`ChaCha8Rng`]: the same seed gives the same network on every platform and thread count,
//! and an `f32` and an `f64` network from one seed agree up to rounding.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::{CoreError, Float};

/// How a layer's weight matrix is drawn (`fan_in` = inputs, `fan_out` = outputs of the layer).
///
/// Examples: `W ~ N(0,1)` is `Normal { mean: 0.0, std: 1.0 }`; `N(0,1) * 0.01` is
/// `Normal { mean: 0.0, std: 0.01 }`; `N(0, 0.1^2)` is `Normal { mean: 0.0, std: 0.1 }`;
/// `He N(0, 2/fan_in)` is `HeNormal`; `LeCun N(0, 1/fan_in)` is `LecunNormal`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum WeightInit {
    /// `N(mean, std^2)`.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation (not variance).
        std: f64,
    },
    /// `U(low, high)`.
    Uniform {
        /// Lower bound.
        low: f64,
        /// Upper bound.
        high: f64,
    },
    /// He/Kaiming normal: `N(0, 2/fan_in)`.
    HeNormal,
    /// He/Kaiming uniform: `U(-sqrt(6/fan_in), sqrt(6/fan_in))`.
    HeUniform,
    /// Xavier/Glorot normal: `N(0, 2/(fan_in+fan_out))`.
    XavierNormal,
    /// Xavier/Glorot uniform: `U(-sqrt(6/(fan_in+fan_out)), +...)`.
    XavierUniform,
    /// LeCun normal: `N(0, 1/fan_in)`.
    LecunNormal,
    /// LeCun uniform: `U(-sqrt(3/fan_in), sqrt(3/fan_in))`.
    LecunUniform,
}

/// How a layer's bias vector is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum BiasInit {
    /// All zeros (draws nothing from the RNG).
    Zero,
    /// Every bias equal to `value` (draws nothing from the RNG).
    Constant {
        /// The value.
        value: f64,
    },
    /// `N(mean, std^2)`.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
}

/// Initializer of one layer: weights and bias chosen separately.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerInit {
    /// Weight initializer.
    pub weight: WeightInit,
    /// Bias initializer.
    pub bias: BiasInit,
}

impl LayerInit {
    /// Convenience constructor.
    pub fn new(weight: WeightInit, bias: BiasInit) -> Self {
        Self { weight, bias }
    }
}

enum Sampler {
    Normal { mean: f64, std: f64 },
    Uniform { low: f64, high: f64 },
}

impl WeightInit {
    fn sampler(self, fan_in: usize, fan_out: usize) -> Sampler {
        let fi = fan_in as f64;
        let fo = fan_out as f64;
        let normal = |var: f64| Sampler::Normal {
            mean: 0.0,
            std: var.sqrt(),
        };
        let uniform = |limit: f64| Sampler::Uniform {
            low: -limit,
            high: limit,
        };
        match self {
            Self::Normal { mean, std } => Sampler::Normal { mean, std },
            Self::Uniform { low, high } => Sampler::Uniform { low, high },
            Self::HeNormal => normal(2.0 / fi),
            Self::HeUniform => uniform((6.0 / fi).sqrt()),
            Self::XavierNormal => normal(2.0 / (fi + fo)),
            Self::XavierUniform => uniform((6.0 / (fi + fo)).sqrt()),
            Self::LecunNormal => normal(1.0 / fi),
            Self::LecunUniform => uniform((3.0 / fi).sqrt()),
        }
    }
}

fn check_sampler(s: &Sampler, layer: usize, what: &str) -> Result<(), CoreError> {
    let bad = |reason: String| Err(CoreError::BadInit { layer, reason });
    match *s {
        Sampler::Normal { mean, std } => {
            if !mean.is_finite() || !std.is_finite() || std < 0.0 {
                return bad(format!(
                    "{what}: normal needs finite mean and std >= 0, got mean {mean}, std {std}"
                ));
            }
        }
        Sampler::Uniform { low, high } => {
            if !low.is_finite() || !high.is_finite() || low > high {
                return bad(format!(
                    "{what}: uniform needs finite low <= high, got [{low}, {high})"
                ));
            }
        }
    }
    Ok(())
}

fn fill<T: Float>(out: &mut [T], s: &Sampler, rng: &mut ChaCha8Rng) {
    match *s {
        Sampler::Normal { mean, std } => {
            // Sample the standard normal and scale it ourselves so std = 0 is allowed.
            let dist = StandardNormal;
            for v in out.iter_mut() {
                let n: f64 = dist.sample(rng);
                *v = T::from_f64(mean + std * n);
            }
        }
        Sampler::Uniform { low, high } => {
            for v in out.iter_mut() {
                let u: f64 = rng.random::<f64>();
                *v = T::from_f64(low + (high - low) * u);
            }
        }
    }
}

/// Validates `init` for a layer with the given fan-in/out (does not touch the RNG).
pub(crate) fn validate(
    init: &LayerInit,
    layer: usize,
    fan_in: usize,
    fan_out: usize,
) -> Result<(), CoreError> {
    check_sampler(&init.weight.sampler(fan_in, fan_out), layer, "weight")?;
    match init.bias {
        BiasInit::Zero => Ok(()),
        BiasInit::Constant { value } if value.is_finite() => Ok(()),
        BiasInit::Constant { value } => Err(CoreError::BadInit {
            layer,
            reason: format!("bias constant must be finite, got {value}"),
        }),
        BiasInit::Normal { mean, std } => {
            check_sampler(&Sampler::Normal { mean, std }, layer, "bias")
        }
    }
}

/// Fills a row-major `[fan_out, fan_in]` weight and a `[fan_out]` bias (validate first).
pub(crate) fn initialize<T: Float>(
    init: &LayerInit,
    weight: &mut [T],
    bias: &mut [T],
    fan_in: usize,
    fan_out: usize,
    rng: &mut ChaCha8Rng,
) {
    fill(weight, &init.weight.sampler(fan_in, fan_out), rng);
    match init.bias {
        BiasInit::Zero => bias.iter_mut().for_each(|b| *b = T::from_f64(0.0)),
        BiasInit::Constant { value } => bias.iter_mut().for_each(|b| *b = T::from_f64(value)),
        BiasInit::Normal { mean, std } => fill(bias, &Sampler::Normal { mean, std }, rng),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn moments(init: WeightInit, fan_in: usize, fan_out: usize) -> (f64, f64, f64, f64) {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut w = vec![0.0f64; 40_000];
        let li = LayerInit::new(init, BiasInit::Zero);
        validate(&li, 0, fan_in, fan_out).unwrap();
        let mut b = vec![1.0f64; 3];
        initialize(&li, &mut w, &mut b, fan_in, fan_out, &mut rng);
        assert_eq!(b, vec![0.0; 3]);
        let n = w.len() as f64;
        let mean = w.iter().sum::<f64>() / n;
        let var = w.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        let min = w.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = w.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        (mean, var, min, max)
    }

    #[test]
    fn variances_match_their_definitions() {
        let (fi, fo) = (100usize, 50usize);
        let cases = [
            (
                WeightInit::Normal {
                    mean: 0.0,
                    std: 1.0,
                },
                1.0,
            ),
            (
                WeightInit::Normal {
                    mean: 0.0,
                    std: 0.01,
                },
                1e-4,
            ),
            (WeightInit::HeNormal, 2.0 / 100.0),
            (WeightInit::XavierNormal, 2.0 / 150.0),
            (WeightInit::LecunNormal, 1.0 / 100.0),
            (WeightInit::HeUniform, 2.0 / 100.0),
            (WeightInit::XavierUniform, 2.0 / 150.0),
            (WeightInit::LecunUniform, 1.0 / 100.0),
            (
                WeightInit::Uniform {
                    low: -0.5,
                    high: 0.5,
                },
                1.0 / 12.0,
            ),
        ];
        for (init, var) in cases {
            let (m, v, _, _) = moments(init, fi, fo);
            assert!(m.abs() < 0.03 * var.sqrt() * 2.0, "{init:?} mean {m}");
            assert!((v / var - 1.0).abs() < 0.03, "{init:?} var {v} vs {var}");
        }
        let (_, _, min, max) = moments(WeightInit::HeUniform, fi, fo);
        let lim = (6.0f64 / 100.0).sqrt();
        assert!(min >= -lim && max < lim);
    }

    #[test]
    fn bias_normal_and_bad_params() {
        let li = LayerInit::new(
            WeightInit::Normal {
                mean: 0.0,
                std: 0.1,
            },
            BiasInit::Normal {
                mean: 1.0,
                std: 0.0,
            },
        );
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (mut w, mut b) = (vec![0.0f32; 6], vec![0.0f32; 3]);
        initialize(&li, &mut w, &mut b, 2, 3, &mut rng);
        assert_eq!(b, vec![1.0; 3]);
        let bad = LayerInit::new(
            WeightInit::Normal {
                mean: 0.0,
                std: -1.0,
            },
            BiasInit::Zero,
        );
        assert!(matches!(
            validate(&bad, 2, 2, 3),
            Err(CoreError::BadInit { layer: 2, .. })
        ));
        let bad = LayerInit::new(
            WeightInit::Uniform {
                low: 1.0,
                high: 0.0,
            },
            BiasInit::Zero,
        );
        assert!(validate(&bad, 0, 2, 3).is_err());
    }

    #[test]
    fn serde_shape() {
        let li = LayerInit::new(
            WeightInit::HeNormal,
            BiasInit::Normal {
                mean: 0.0,
                std: 0.1,
            },
        );
        let json = serde_json::to_string(&li).unwrap();
        assert_eq!(
            json,
            r#"{"weight":{"kind":"he_normal"},"bias":{"kind":"normal","mean":0.0,"std":0.1}}"#
        );
        assert_eq!(serde_json::from_str::<LayerInit>(&json).unwrap(), li);
    }
}
