//! Weight constraints applied after each optimizer step.

use faer::Par;
use faer::utils::thread::parallelism_degree;

use crate::rows::join_raw;
use crate::{Float, Network};

/// Weight rows per thread below which the projection stays on one thread.
const MIN_PARALLEL_ROWS: usize = 64;

/// Max-norm (Srivastava et al. 2014): every unit's incoming weight vector (a row of the
/// `[out, in]` weight) is rescaled onto the ball of radius `c` if it left it. Biases are not
/// constrained. Layers with `frozen[l] == true` are left alone. Rows are split between the
/// threads of `par`; each row's norm is computed the same way on any thread.
pub fn apply_max_norm<T: Float>(net: &mut Network<T>, c: f64, frozen: &[bool], par: Par) {
    for (l, layer) in net.layers_mut().iter_mut().enumerate() {
        if frozen.get(l).copied().unwrap_or(false) {
            continue;
        }
        let inputs = layer.inputs().max(1);
        project_rows(layer.weight_slice_mut(), inputs, c, par);
    }
}

fn project_rows<T: Float>(weight: &mut [T], inputs: usize, c: f64, par: Par) {
    let rows = weight.len() / inputs;
    if parallelism_degree(par) <= 1 || rows < 2 * MIN_PARALLEL_ROWS {
        pulp::Arch::new().dispatch(ProjectRows { weight, inputs, c });
        return;
    }
    let (a, b) = weight.split_at_mut(rows / 2 * inputs);
    join_raw(
        |par| project_rows(a, inputs, c, par),
        |par| project_rows(b, inputs, c, par),
        par,
    );
}

/// The sequential part of [`project_rows`], compiled for the CPU's widest vectors through
/// pulp (the loop sits in `with_simd` itself: a closure handed to `dispatch` may be compiled
/// out of line for baseline x86-64).
struct ProjectRows<'a, T> {
    weight: &'a mut [T],
    inputs: usize,
    c: f64,
}

impl<T: Float> pulp::WithSimd for ProjectRows<'_, T> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        for row in self.weight.chunks_exact_mut(self.inputs.max(1)) {
            project_row(row, self.c);
        }
    }
}

/// Rescales one row onto the ball of radius `c` if its norm exceeds `c`.
#[inline(always)]
fn project_row<T: Float>(row: &mut [T], c: f64) {
    // Eight partial sums in f64, combined in a fixed order: one serial chain of f64 additions
    // was the constraint's whole cost.
    let mut lanes = [0.0f64; 8];
    let chunks = row.chunks_exact(8);
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|w| w.to_f64() * w.to_f64())
        .sum();
    for chunk in chunks {
        for (lane, w) in lanes.iter_mut().zip(chunk) {
            *lane += w.to_f64() * w.to_f64();
        }
    }
    let sum = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]))
        + tail;
    let norm = sum.sqrt();
    if norm > c {
        let shrink = T::from_f64(c / norm);
        row.iter_mut().for_each(|w| *w *= shrink);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Activation, Architecture, BiasInit, LayerInit, OutputHead, WeightInit};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn rows_outside_the_ball_are_projected_onto_it_and_the_rest_untouched() {
        let arch =
            Architecture::uniform(vec![50, 20, 10], Activation::Relu, OutputHead::Softmax).unwrap();
        let init = LayerInit::new(
            WeightInit::Normal {
                mean: 0.0,
                std: 0.3,
            },
            BiasInit::Normal {
                mean: 0.0,
                std: 1.0,
            },
        );
        let mut net: Network<f64> =
            Network::new(&arch, &[init], &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
        let before = net.clone();
        let c = 2.0;
        apply_max_norm(&mut net, c, &[false, true], Par::Seq);
        let norm = |row: &[f64]| row.iter().map(|w| w * w).sum::<f64>().sqrt();
        let mut shrunk = 0;
        for (row, old) in net.layers()[0]
            .weight_slice()
            .chunks(50)
            .zip(before.layers()[0].weight_slice().chunks(50))
        {
            if norm(old) > c {
                assert!((norm(row) - c).abs() < 1e-12, "projected onto the ball");
                // Same direction: a positive multiple of the old row.
                let k = row[0] / old[0];
                assert!(k > 0.0 && row.iter().zip(old).all(|(a, b)| (a - k * b).abs() < 1e-12));
                shrunk += 1;
            } else {
                assert_eq!(row, old, "rows inside the ball are untouched");
            }
        }
        assert!(shrunk > 0, "the test should exercise the projection");
        assert_eq!(
            net.layers()[0].bias(),
            before.layers()[0].bias(),
            "biases unconstrained"
        );
        assert!(
            net.layers()[1].weight_slice() == before.layers()[1].weight_slice(),
            "frozen layer untouched"
        );
    }

    /// Layers of 128 rows or more are split between threads: same result as one thread.
    #[test]
    fn threaded_projection_matches_one_thread() {
        let arch = Architecture::uniform(vec![60, 300, 10], Activation::Relu, OutputHead::Softmax)
            .unwrap();
        let init = LayerInit::new(
            WeightInit::Normal {
                mean: 0.0,
                std: 0.4,
            },
            BiasInit::Zero,
        );
        let start: Network<f32> =
            Network::new(&arch, &[init], &mut ChaCha8Rng::seed_from_u64(2)).unwrap();
        let project = |par| {
            let mut net = start.clone();
            apply_max_norm(&mut net, 2.5, &[], par);
            net
        };
        let one = project(Par::Seq);
        assert!(!one.bit_identical(&start), "some rows must be projected");
        for threads in [2, 3] {
            assert!(
                one.bit_identical(&project(Par::rayon(threads))),
                "{threads} threads"
            );
        }
    }
}
