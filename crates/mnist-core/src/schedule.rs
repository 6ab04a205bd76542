//! Learning-rate schedules.
//!
//! A schedule is a pure function of `(base_lr, epoch, step)` (both counted from 0; `step` is the
//! global optimizer step), so its only state is those two counters, which the trainer saves
//! anyway: restoring them restores the schedule exactly.

use serde::{Deserialize, Serialize};

use crate::CoreError;

/// Whether a schedule's `t` is the epoch or the global step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// `t` = epoch index (the rate changes between epochs).
    #[default]
    Epoch,
    /// `t` = global step index (the rate changes every step).
    Step,
}

/// The decay rule; `t` counts in the schedule's [`Unit`] from 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Decay {
    /// `lr`.
    Constant,
    /// `lr / (1 + k t)`.
    InverseTime {
        /// Decay rate `k >= 0`.
        k: f64,
    },
    /// `lr * gamma^floor(t / every)`.
    Step {
        /// Period (> 0).
        every: u64,
        /// Factor per period.
        gamma: f64,
    },
    /// `lr * gamma^t`.
    Exponential {
        /// Factor per unit of `t`.
        gamma: f64,
    },
    /// `min_lr + (lr - min_lr) (1 + cos(pi min(t, total) / total)) / 2`.
    Cosine {
        /// Length of the half-cosine (> 0); the rate stays at `min_lr` after it.
        total: u64,
        /// Final rate.
        #[serde(default)]
        min_lr: f64,
    },
}

/// Linear warm-up: the decayed rate is multiplied by `min(1, (t + 1) / length)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Warmup {
    /// Warm-up length (> 0) in `unit`s.
    pub length: u64,
    /// Whether `length` counts epochs or steps.
    #[serde(default)]
    pub unit: Unit,
}

/// A learning-rate schedule: a decay rule on epochs or steps, optionally warmed up.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// The decay rule.
    pub decay: Decay,
    /// Whether the decay's `t` is the epoch or the step.
    #[serde(default)]
    pub unit: Unit,
    /// Optional linear warm-up, applied on top of the decay.
    #[serde(default)]
    pub warmup: Option<Warmup>,
}

impl Default for Schedule {
    fn default() -> Self {
        Self::constant()
    }
}

impl Schedule {
    /// A constant rate.
    pub fn constant() -> Self {
        Self {
            decay: Decay::Constant,
            unit: Unit::Epoch,
            warmup: None,
        }
    }

    /// A schedule without warm-up.
    pub fn new(decay: Decay, unit: Unit) -> Self {
        Self {
            decay,
            unit,
            warmup: None,
        }
    }

    /// Adds a linear warm-up.
    pub fn with_warmup(mut self, length: u64, unit: Unit) -> Self {
        self.warmup = Some(Warmup { length, unit });
        self
    }

    /// Checks parameters (periods > 0, finite non-negative factors).
    pub fn validate(&self) -> Result<(), CoreError> {
        let bad = |m: &str| Err(CoreError::BadSchedule(format!("{m}: {self:?}")));
        let ok_factor = |g: f64| g.is_finite() && g >= 0.0;
        match self.decay {
            Decay::Constant => {}
            Decay::InverseTime { k } if !ok_factor(k) => return bad("k must be finite and >= 0"),
            Decay::Step { every, gamma } if every == 0 || !ok_factor(gamma) => {
                return bad("step decay needs every > 0 and a finite gamma >= 0");
            }
            Decay::Exponential { gamma } if !ok_factor(gamma) => {
                return bad("gamma must be finite and >= 0");
            }
            Decay::Cosine { total, min_lr } if total == 0 || !min_lr.is_finite() => {
                return bad("cosine needs total > 0 and a finite min_lr");
            }
            _ => {}
        }
        if let Some(w) = self.warmup
            && w.length == 0
        {
            return bad("warm-up length must be > 0");
        }
        Ok(())
    }

    /// The learning rate for the step that runs in `epoch` as global step `step` (both from 0).
    pub fn lr_at(&self, base_lr: f64, epoch: u64, step: u64) -> f64 {
        let pick = |u: Unit| match u {
            Unit::Epoch => epoch,
            Unit::Step => step,
        };
        let t = pick(self.unit);
        let tf = t as f64;
        let lr = match self.decay {
            Decay::Constant => base_lr,
            Decay::InverseTime { k } => base_lr / (1.0 + k * tf),
            Decay::Step { every, gamma } => base_lr * powu(gamma, t / every.max(1)),
            Decay::Exponential { gamma } => base_lr * powu(gamma, t),
            Decay::Cosine { total, min_lr } => {
                let frac = t.min(total) as f64 / total.max(1) as f64;
                min_lr + (base_lr - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * frac).cos())
            }
        };
        match self.warmup {
            Some(w) => {
                let tw = pick(w.unit);
                if tw < w.length {
                    lr * (tw + 1) as f64 / w.length as f64
                } else {
                    lr
                }
            }
            None => lr,
        }
    }
}

/// `base^e` for a `u64` exponent (clamped; exact repeated squaring via `powi` for the common
/// range).
fn powu(base: f64, e: u64) -> f64 {
    match i32::try_from(e) {
        Ok(e) => base.powi(e),
        Err(_) => base.powf(e as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() <= 1e-12 * b.abs().max(1.0), "{a} vs {b}");
    }

    #[test]
    fn constant() {
        let s = Schedule::constant();
        close(s.lr_at(0.1, 0, 0), 0.1);
        close(s.lr_at(0.1, 50, 9999), 0.1);
    }

    #[test]
    fn inverse_time_per_epoch_and_step() {
        // 0.5 / (1 + 0.1 * 3) = 0.5 / 1.3 = 0.384615384615...
        let s = Schedule::new(Decay::InverseTime { k: 0.1 }, Unit::Epoch);
        close(s.lr_at(0.5, 0, 77), 0.5);
        close(s.lr_at(0.5, 3, 77), 0.5 / 1.3);
        // Per step: t = 10 -> 0.5 / (1 + 1) = 0.25.
        let s = Schedule::new(Decay::InverseTime { k: 0.1 }, Unit::Step);
        close(s.lr_at(0.5, 3, 10), 0.25);
    }

    #[test]
    fn step_decay() {
        // 0.1 * 0.5^floor(t/3): t=2 -> 0.1, t=3 -> 0.05, t=7 -> 0.025.
        let s = Schedule::new(
            Decay::Step {
                every: 3,
                gamma: 0.5,
            },
            Unit::Epoch,
        );
        close(s.lr_at(0.1, 2, 0), 0.1);
        close(s.lr_at(0.1, 3, 0), 0.05);
        close(s.lr_at(0.1, 7, 0), 0.025);
    }

    #[test]
    fn exponential() {
        // 0.2 * 0.9^3 = 0.2 * 0.729 = 0.1458.
        let s = Schedule::new(Decay::Exponential { gamma: 0.9 }, Unit::Step);
        close(s.lr_at(0.2, 0, 0), 0.2);
        close(s.lr_at(0.2, 0, 3), 0.1458);
    }

    #[test]
    fn cosine() {
        // total 10, min 0.01, base 0.11: t=0 -> 0.11; t=5 -> 0.01 + 0.1 * 0.5 = 0.06;
        // t >= 10 -> 0.01; t=2: cos(0.2 pi) = 0.809016994..., 0.01 + 0.05 * 1.809016994 = 0.1004508497.
        let s = Schedule::new(
            Decay::Cosine {
                total: 10,
                min_lr: 0.01,
            },
            Unit::Epoch,
        );
        close(s.lr_at(0.11, 0, 0), 0.11);
        close(s.lr_at(0.11, 5, 0), 0.06);
        close(s.lr_at(0.11, 10, 0), 0.01);
        close(s.lr_at(0.11, 20, 0), 0.01);
        close(
            s.lr_at(0.11, 2, 0),
            0.01 + 0.05 * (1.0 + (0.2 * std::f64::consts::PI).cos()),
        );
        assert!((s.lr_at(0.11, 2, 0) - 0.1004508497).abs() < 1e-9);
    }

    #[test]
    fn warmup_on_top_of_decay() {
        // Warm-up 4 steps on exponential per epoch: step 0 -> 1/4, step 1 -> 2/4, step 3 -> 1.
        let s = Schedule::new(Decay::Exponential { gamma: 0.5 }, Unit::Epoch)
            .with_warmup(4, Unit::Step);
        close(s.lr_at(0.4, 0, 0), 0.1);
        close(s.lr_at(0.4, 0, 1), 0.2);
        close(s.lr_at(0.4, 0, 3), 0.4);
        close(s.lr_at(0.4, 1, 4), 0.2);
    }

    #[test]
    fn validation_and_serde() {
        assert!(
            Schedule::new(
                Decay::Step {
                    every: 0,
                    gamma: 0.5
                },
                Unit::Epoch
            )
            .validate()
            .is_err()
        );
        assert!(
            Schedule::constant()
                .with_warmup(0, Unit::Step)
                .validate()
                .is_err()
        );
        let s = Schedule::new(
            Decay::Cosine {
                total: 30,
                min_lr: 0.0,
            },
            Unit::Step,
        )
        .with_warmup(100, Unit::Step);
        assert!(s.validate().is_ok());
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Schedule>(&json).unwrap(), s);
        let parsed: Schedule =
            serde_json::from_str(r#"{"decay":{"kind":"inverse_time","k":0.5}}"#).unwrap();
        assert_eq!(
            parsed,
            Schedule::new(Decay::InverseTime { k: 0.5 }, Unit::Epoch)
        );
    }
}
