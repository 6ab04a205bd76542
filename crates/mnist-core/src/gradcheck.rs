//! Finite-difference gradient checks (in `f64`), used by the tests and available to users who
//! add their own layers or losses.

use faer::Par;

use crate::{
    CoreError, Gradients, Network, RngState, TrainOptions, compute_gradients, compute_loss,
};

/// Default floor of [`relative_error`]'s denominator: below it the error is effectively
/// absolute, so gradients that are zero up to round-off do not fail a check.
pub const DEFAULT_FLOOR: f64 = 1e-7;

/// `|a - n| / max(|a| + |n|, DEFAULT_FLOOR)`.
pub fn relative_error(analytic: f64, numeric: f64) -> f64 {
    relative_error_with_floor(analytic, numeric, DEFAULT_FLOOR)
}

/// `|a - n| / max(|a| + |n|, floor)`.
pub fn relative_error_with_floor(analytic: f64, numeric: f64, floor: f64) -> f64 {
    (analytic - numeric).abs() / (analytic.abs() + numeric.abs()).max(floor)
}

/// The parameter with the largest relative error in a check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradCheckEntry {
    /// Layer index.
    pub layer: usize,
    /// `true` for a bias entry, `false` for a weight entry.
    pub bias: bool,
    /// Index into the row-major weight or the bias.
    pub index: usize,
    /// Backpropagated gradient.
    pub analytic: f64,
    /// Central-difference estimate.
    pub numeric: f64,
    /// Their relative error.
    pub rel_error: f64,
}

/// Outcome of [`check_network`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradCheckReport {
    /// Largest relative error over all checked parameters.
    pub max_rel_error: f64,
    /// Where it occurred.
    pub worst: Option<GradCheckEntry>,
    /// Number of parameters checked (frozen layers are skipped).
    pub checked: usize,
}

/// Compares [`compute_gradients`] with central differences `(L(p+h) - L(p-h)) / 2h` of
/// [`compute_loss`] for every trainable parameter of `net`.
///
/// Every loss evaluation restarts the RNG from `rng`, so dropout uses one fixed mask throughout.
#[allow(clippy::too_many_arguments)]
pub fn check_network(
    net: &Network<f64>,
    x: &[f64],
    labels: &[u8],
    batch: usize,
    opts: &TrainOptions,
    rng: &RngState,
    h: f64,
) -> Result<GradCheckReport, CoreError> {
    let mut ws = net.workspace(batch);
    let mut grads = Gradients::new(net.architecture());
    compute_gradients(
        net,
        &mut ws,
        &mut grads,
        x,
        labels,
        batch,
        opts,
        &mut rng.restore(),
        Par::Seq,
    )?;
    let mut probe = net.clone();
    let mut report = GradCheckReport {
        max_rel_error: 0.0,
        worst: None,
        checked: 0,
    };
    for (l, g) in grads.layers().iter().enumerate() {
        if !g.is_active() {
            continue;
        }
        for bias in [false, true] {
            let analytic = if bias { g.bias() } else { g.weight() };
            for (index, &a) in analytic.iter().enumerate() {
                let mut loss_at = |delta: f64| -> Result<f64, CoreError> {
                    let layer = &mut probe.layers_mut()[l];
                    let slot = if bias {
                        &mut layer.bias_mut()[index]
                    } else {
                        &mut layer.weight_slice_mut()[index]
                    };
                    let orig = *slot;
                    *slot = orig + delta;
                    let v = compute_loss(
                        &probe,
                        &mut ws,
                        x,
                        labels,
                        batch,
                        opts,
                        &mut rng.restore(),
                        Par::Seq,
                    );
                    let layer = &mut probe.layers_mut()[l];
                    let slot = if bias {
                        &mut layer.bias_mut()[index]
                    } else {
                        &mut layer.weight_slice_mut()[index]
                    };
                    *slot = orig;
                    v
                };
                let numeric = (loss_at(h)? - loss_at(-h)?) / (2.0 * h);
                let rel_error = relative_error(a, numeric);
                report.checked += 1;
                if rel_error >= report.max_rel_error {
                    report.max_rel_error = rel_error;
                    report.worst = Some(GradCheckEntry {
                        layer: l,
                        bias,
                        index,
                        analytic: a,
                        numeric,
                        rel_error,
                    });
                }
            }
        }
    }
    Ok(report)
}
