//! Losses over a batch, with their gradient with respect to the logits.
//!
//! Every loss is a **mean over the examples** of a per-example loss. Targets are class labels
//! (`u8`), the one-hot vector being implied. Values are accumulated in `f64`, row by row in
//! order, so they are reproducible.

use serde::{Deserialize, Serialize};

use crate::{Float, OutputHead};

/// The data loss minimised in training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Cross-entropy against the one-hot target.
    ///
    /// * Softmax head: `-ln p_y`, computed from the logits as `logsumexp(z) - z_y` (finite even
    ///   when `p_y` underflows to 0). Gradient wrt the logits: `(p - y) / m`.
    /// * Sigmoid head: the per-output binary cross-entropy summed over the outputs,
    ///   `sum_j -(y_j ln a_j + (1 - y_j) ln(1 - a_j))`, computed as `softplus(z) - y z`.
    ///   Gradient: `(a - y) / m`.
    CrossEntropy,
    /// Squared error summed over the outputs (no 1/2), mean over the examples:
    /// `(1/m) sum_i sum_j (a_ij - y_ij)^2`. Gradient wrt the outputs `2 (a - y) / m`, carried
    /// through the head's Jacobian (sigmoid: `* a (1 - a)`).
    MeanSquaredError,
}

#[inline(always)]
fn one_hot(label: u8, j: usize) -> f64 {
    if usize::from(label) == j { 1.0 } else { 0.0 }
}

/// Target of output `j` for class `label` with label smoothing `eps` over `width` classes:
/// `(1 - eps) * one_hot + eps / width` (plain one-hot for `eps = 0`).
#[inline(always)]
fn target(label: u8, j: usize, eps: f64, width: usize) -> f64 {
    (1.0 - eps) * one_hot(label, j) + eps / width as f64
}

/// `ln(1 + e^z)` without overflow.
#[inline(always)]
fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

impl Loss {
    /// Per-example loss summed over the batch (not yet divided by the batch size).
    ///
    /// `logits` and `outputs` (the head applied to the logits) are row-major `batch x width`;
    /// `labels` has one class per row. Labels must be `< width` (checked by the callers that
    /// take user input).
    pub fn sum<T: Float>(
        self,
        head: OutputHead,
        logits: &[T],
        outputs: &[T],
        labels: &[u8],
        width: usize,
    ) -> f64 {
        self.sum_smoothed(head, logits, outputs, labels, width, 0.0)
    }

    /// [`Loss::sum`] against label-smoothed targets `(1 - eps) one_hot + eps / width`.
    pub fn sum_smoothed<T: Float>(
        self,
        head: OutputHead,
        logits: &[T],
        outputs: &[T],
        labels: &[u8],
        width: usize,
        eps: f64,
    ) -> f64 {
        if width == 0 {
            return 0.0;
        }
        let rows = logits
            .chunks_exact(width)
            .zip(outputs.chunks_exact(width))
            .zip(labels);
        let mut total = 0.0f64;
        match (self, head) {
            (Self::CrossEntropy, OutputHead::Softmax) => {
                for ((z, _), &y) in rows {
                    let max = z.iter().fold(f64::NEG_INFINITY, |m, v| m.max(v.to_f64()));
                    let s: f64 = z.iter().map(|v| (v.to_f64() - max).exp()).sum();
                    // -sum_j t_j ln p_j = logsumexp(z) - sum_j t_j z_j, as the targets sum to 1.
                    let tz: f64 = if eps == 0.0 {
                        z.get(usize::from(y)).map_or(0.0, |v| v.to_f64())
                    } else {
                        z.iter()
                            .enumerate()
                            .map(|(j, v)| target(y, j, eps, width) * v.to_f64())
                            .sum()
                    };
                    total += max + s.ln() - tz;
                }
            }
            (Self::CrossEntropy, OutputHead::Sigmoid) => {
                for ((z, _), &y) in rows {
                    for (j, v) in z.iter().enumerate() {
                        let v = v.to_f64();
                        total += softplus(v) - target(y, j, eps, width) * v;
                    }
                }
            }
            (Self::MeanSquaredError, _) => {
                for ((_, a), &y) in rows {
                    for (j, v) in a.iter().enumerate() {
                        let d = v.to_f64() - target(y, j, eps, width);
                        total += d * d;
                    }
                }
            }
        }
        total
    }

    /// Mean loss over the batch: [`Loss::sum`] divided by the number of rows.
    pub fn mean<T: Float>(
        self,
        head: OutputHead,
        logits: &[T],
        outputs: &[T],
        labels: &[u8],
        width: usize,
    ) -> f64 {
        let rows = labels.len().max(1);
        self.sum(head, logits, outputs, labels, width) / rows as f64
    }

    /// Writes `d(mean loss)/d(logits)` into `grad` (row-major, same shape as `logits`) and
    /// returns the mean loss. The batch size `m` is `labels.len()`.
    pub fn mean_and_gradient<T: Float>(
        self,
        head: OutputHead,
        logits: &[T],
        outputs: &[T],
        labels: &[u8],
        width: usize,
        grad: &mut [T],
    ) -> f64 {
        self.mean_and_gradient_smoothed(head, logits, outputs, labels, width, 0.0, grad)
    }

    /// [`Loss::mean_and_gradient`] against label-smoothed targets (see [`Loss::sum_smoothed`]).
    #[allow(clippy::too_many_arguments)]
    pub fn mean_and_gradient_smoothed<T: Float>(
        self,
        head: OutputHead,
        logits: &[T],
        outputs: &[T],
        labels: &[u8],
        width: usize,
        eps: f64,
        grad: &mut [T],
    ) -> f64 {
        let m = labels.len();
        if width == 0 || m == 0 {
            return 0.0;
        }
        self.gradient_rows(head, outputs, labels, width, eps, m, grad);
        self.sum_smoothed(head, logits, outputs, labels, width, eps) / m as f64
    }

    /// The gradient part of [`Loss::mean_and_gradient_smoothed`] for some rows of a batch of
    /// `m` examples (the mean's divisor): `d(mean loss)/d(logits)` of these rows into `grad`.
    /// Components below [`Float::FLUSH_BELOW`] are written as 0 ([`Float::flush_tiny`]: a
    /// probability near `MIN_POSITIVE` divided by the batch size is subnormal).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn gradient_rows<T: Float>(
        self,
        head: OutputHead,
        outputs: &[T],
        labels: &[u8],
        width: usize,
        eps: f64,
        m: usize,
        grad: &mut [T],
    ) {
        if width == 0 || m == 0 {
            return;
        }
        let inv_m = T::from_f64(1.0 / m as f64);
        let one = T::from_f64(1.0);
        let zero = T::from_f64(0.0);
        // Targets: `hit` for the labelled class, `miss` for the others.
        let miss = T::from_f64(eps / width as f64);
        let hit = T::from_f64(1.0 - eps + eps / width as f64);
        let rows = outputs
            .chunks_exact(width)
            .zip(grad.chunks_exact_mut(width))
            .zip(labels);
        match (self, head) {
            // Fused softmax/sigmoid + cross-entropy: (a - y) / m.
            (Self::CrossEntropy, _) => {
                for ((a, g), &y) in rows {
                    for (j, (gj, &aj)) in g.iter_mut().zip(a).enumerate() {
                        let yj = if usize::from(y) == j { hit } else { miss };
                        *gj = ((aj - yj) * inv_m).flush_tiny();
                    }
                }
            }
            (Self::MeanSquaredError, OutputHead::Sigmoid) => {
                let two_inv_m = T::from_f64(2.0) * inv_m;
                for ((a, g), &y) in rows {
                    for (j, (gj, &aj)) in g.iter_mut().zip(a).enumerate() {
                        let yj = if usize::from(y) == j { hit } else { miss };
                        *gj = (two_inv_m * (aj - yj) * aj * (one - aj)).flush_tiny();
                    }
                }
            }
            (Self::MeanSquaredError, OutputHead::Softmax) => {
                // Softmax Jacobian-vector product: dz = p * (g - <g, p>).
                let two_inv_m = T::from_f64(2.0) * inv_m;
                for ((p, g), &y) in rows {
                    let mut dot = zero;
                    for (j, (gj, &pj)) in g.iter_mut().zip(p).enumerate() {
                        let yj = if usize::from(y) == j { hit } else { miss };
                        *gj = two_inv_m * (pj - yj);
                        dot += *gj * pj;
                    }
                    for (gj, &pj) in g.iter_mut().zip(p) {
                        *gj = (pj * (*gj - dot)).flush_tiny();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::relative_error;

    fn outputs(head: OutputHead, z: &[f64], width: usize) -> Vec<f64> {
        let mut a = vec![0.0; z.len()];
        head.apply_rows(z, &mut a, width);
        a
    }

    /// Value and gradient of the loss with label smoothing `eps` (0 = hard targets) against
    /// central differences.
    fn check_gradient(
        loss: Loss,
        head: OutputHead,
        z: &[f64],
        labels: &[u8],
        width: usize,
        eps: f64,
    ) {
        let mean = |z: &[f64]| {
            loss.sum_smoothed(head, z, &outputs(head, z, width), labels, width, eps)
                / labels.len() as f64
        };
        let a = outputs(head, z, width);
        let mut grad = vec![0.0; z.len()];
        let value = loss.mean_and_gradient_smoothed(head, z, &a, labels, width, eps, &mut grad);
        assert_eq!(value, mean(z));
        let h = 1e-6;
        for i in 0..z.len() {
            let (mut zp, mut zm) = (z.to_vec(), z.to_vec());
            zp[i] += h;
            zm[i] -= h;
            let numeric = (mean(&zp) - mean(&zm)) / (2.0 * h);
            let err = relative_error(grad[i], numeric);
            assert!(
                err < 1e-6,
                "{loss:?}/{head:?} eps {eps} logit {i}: {} vs {numeric}",
                grad[i]
            );
        }
    }

    #[test]
    fn smoothed_cross_entropy_is_the_mix_of_hard_and_uniform_targets() {
        // -sum t_j ln p_j with t = 0.9 one_hot + 0.1/3 uniform, for z = [1, 2, 3], label 0.
        let z = [1.0f64, 2.0, 3.0];
        let lse = (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
        let expected = 0.9 * (lse - 1.0) + 0.1 / 3.0 * ((lse - 1.0) + (lse - 2.0) + (lse - 3.0));
        let got = Loss::CrossEntropy.sum_smoothed(OutputHead::Softmax, &z, &z, &[0], 3, 0.1);
        assert!((got - expected).abs() < 1e-12, "{got} vs {expected}");
    }

    /// Central differences of the mean loss wrt every logit, for every loss/head pair.
    #[test]
    fn gradients_match_central_differences() {
        let width = 4;
        let z: Vec<f64> = vec![
            0.3, -1.2, 2.0, 0.1, -0.7, 0.4, 0.05, 1.3, 1.1, -2.2, 0.6, -0.3,
        ];
        let labels = [2u8, 0, 3];
        for loss in [Loss::CrossEntropy, Loss::MeanSquaredError] {
            for head in [OutputHead::Softmax, OutputHead::Sigmoid] {
                // The hard-target entry points are the smoothed ones at eps = 0.
                let a = outputs(head, &z, width);
                let mut grad = vec![0.0; z.len()];
                let value = loss.mean_and_gradient(head, &z, &a, &labels, width, &mut grad);
                assert_eq!(value, loss.mean(head, &z, &a, &labels, width));
                let mut grad0 = vec![0.0; z.len()];
                loss.mean_and_gradient_smoothed(head, &z, &a, &labels, width, 0.0, &mut grad0);
                assert_eq!(grad, grad0);
                for eps in [0.0, 0.1] {
                    check_gradient(loss, head, &z, &labels, width, eps);
                }
            }
        }
    }

    #[test]
    fn known_values() {
        // One row, logits all 0 over 4 classes: CE = ln 4.
        let z = [0.0f64; 4];
        let a = outputs(OutputHead::Softmax, &z, 4);
        let ce = Loss::CrossEntropy.mean(OutputHead::Softmax, &z, &a, &[1], 4);
        assert!((ce - 4f64.ln()).abs() < 1e-15);
        // Sigmoid outputs all 0.5, label 1: MSE = 3 * 0.25 + 0.25 = 1.0.
        let a = outputs(OutputHead::Sigmoid, &z, 4);
        let mse = Loss::MeanSquaredError.mean(OutputHead::Sigmoid, &z, &a, &[1], 4);
        assert!((mse - 1.0).abs() < 1e-15);
        // Gradient 2(a-y)/m * a(1-a) with m = 1: label entry 2*(-0.5)*0.25 = -0.25, others 0.25.
        let mut g = [0.0; 4];
        Loss::MeanSquaredError.mean_and_gradient(OutputHead::Sigmoid, &z, &a, &[1], 4, &mut g);
        assert_eq!(g, [0.25, -0.25, 0.25, 0.25]);
    }

    #[test]
    fn cross_entropy_finite_when_probability_underflows() {
        let z = [-1e4f32, 1e4, 0.0];
        let a = outputs_f32(&z);
        // p_y underflows (to about the smallest normal f32, `exp_nonpositive`'s floor): its
        // log would be -87, not -2e4.
        assert!(a[0] < 1.000_01 * f32::MIN_POSITIVE, "p_y = {:e}", a[0]);
        let ce = Loss::CrossEntropy.mean(OutputHead::Softmax, &z, &a, &[0], 3);
        assert!(ce.is_finite());
        assert!((ce - 2e4).abs() < 1e-6);
    }

    #[test]
    fn gradients_have_no_subnormal_components() {
        // Probabilities near MIN_POSITIVE, divided by a batch of 1,000, would be subnormal.
        let z = [
            0.0f32, -87.0, -60.0, -40.0, 30.0, -1e4, 5.0, -35.0, -20.0, 1.0,
        ];
        let a = outputs_f32(&z);
        for loss in [Loss::CrossEntropy, Loss::MeanSquaredError] {
            for head in [OutputHead::Softmax, OutputHead::Sigmoid] {
                let mut out = vec![0.0f32; z.len()];
                head.apply_rows(&z, &mut out, z.len());
                let mut g = vec![0.0f32; z.len()];
                loss.gradient_rows(head, &out, &[0], z.len(), 0.0, 1000, &mut g);
                for (j, &gj) in g.iter().enumerate() {
                    assert!(
                        gj == 0.0 || gj.is_normal(),
                        "{loss:?} {head:?} [{j}] = {gj:e}"
                    );
                    assert!(gj == 0.0 || gj.abs() >= f32::FLUSH_BELOW);
                }
                // Cross-entropy: the labelled class (0) and the largest logit (4) keep their
                // gradients (under MSE both saturate to exact zeros).
                if loss == Loss::CrossEntropy {
                    assert!(g[4] != 0.0 && g[0] != 0.0, "{head:?}: {g:?}");
                }
            }
        }
        // The softmax probabilities themselves are not flushed.
        assert!(a[2] > 0.0 && a[2] < f32::FLUSH_BELOW);
    }

    fn outputs_f32(z: &[f32]) -> Vec<f32> {
        let mut a = vec![0.0; z.len()];
        OutputHead::Softmax.apply_rows(z, &mut a, z.len());
        a
    }
}
