//! Each optimizer against two update steps worked out by hand.
//!
//! Setup shared by every test: one layer 2 -> 1 (identity-free: the optimizer never looks at
//! activations), parameters `w = [1.0, -2.0]`, `b = 0.5`, learning rate 0.1, gradients
//! `g1 = (w: [0.5, -1.0], b: 0.25)` at step 1 and `g2 = (w: [0.1, 0.2], b: -0.5)` at step 2.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic, like tests

use mnist_core::faer::Par;
use mnist_core::{
    Activation, Architecture, Dense, Gradients, Network, Optimizer, OptimizerConfig,
    OptimizerState, OutputHead,
};

const LR: f64 = 0.1;
const G1: [f64; 3] = [0.5, -1.0, 0.25];
const G2: [f64; 3] = [0.1, 0.2, -0.5];

fn setup() -> (Network<f64>, Gradients<f64>) {
    let arch = Architecture::uniform(vec![2, 1], Activation::Relu, OutputHead::Sigmoid).unwrap();
    let layer = Dense::from_parts(2, 1, vec![1.0, -2.0], vec![0.5]).unwrap();
    let net = Network::from_layers(&arch, vec![layer]).unwrap().unwrap();
    (net, Gradients::new(&arch))
}

fn set(grads: &mut Gradients<f64>, g: [f64; 3]) {
    let l = &mut grads.layers_mut()[0];
    l.weight_mut().copy_from_slice(&g[..2]);
    l.bias_mut()[0] = g[2];
    l.set_active(true);
}

/// Runs two steps and returns `[w1, w2, b]` after each.
fn run(config: OptimizerConfig) -> ([f64; 3], [f64; 3]) {
    let (mut net, mut grads) = setup();
    let mut opt = Optimizer::new(config, &net).unwrap();
    let params = |n: &Network<f64>| {
        let l = &n.layers()[0];
        [l.weight_slice()[0], l.weight_slice()[1], l.bias()[0]]
    };
    set(&mut grads, G1);
    opt.step(&mut net, &grads, LR, Par::Seq).unwrap();
    let after1 = params(&net);
    set(&mut grads, G2);
    opt.step(&mut net, &grads, LR, Par::Seq).unwrap();
    assert_eq!(opt.state().step, 2);
    (after1, params(&net))
}

fn assert_close(got: [f64; 3], want: [f64; 3]) {
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-12, "got {got:?}, want {want:?}");
    }
}

#[test]
fn sgd() {
    // p -= 0.1 g.  Step 1: w1 = 1 - 0.05 = 0.95, w2 = -2 + 0.1 = -1.9, b = 0.5 - 0.025 = 0.475.
    // Step 2: w1 = 0.95 - 0.01 = 0.94, w2 = -1.9 - 0.02 = -1.92, b = 0.475 + 0.05 = 0.525.
    let (s1, s2) = run(OptimizerConfig::Sgd);
    assert_close(s1, [0.95, -1.9, 0.475]);
    assert_close(s2, [0.94, -1.92, 0.525]);
}

#[test]
fn momentum() {
    // mu = 0.9. Step 1: v = g1 = [0.5, -1, 0.25]; p = p0 - 0.1 v = [0.95, -1.9, 0.475].
    // Step 2: v = 0.9 v + g2 = [0.45 + 0.1, -0.9 + 0.2, 0.225 - 0.5] = [0.55, -0.7, -0.275];
    // p -= 0.1 v: [0.95 - 0.055, -1.9 + 0.07, 0.475 + 0.0275] = [0.895, -1.83, 0.5025].
    let (s1, s2) = run(OptimizerConfig::Momentum {
        momentum: 0.9,
        nesterov: false,
    });
    assert_close(s1, [0.95, -1.9, 0.475]);
    assert_close(s2, [0.895, -1.83, 0.5025]);
}

#[test]
fn nesterov() {
    // mu = 0.9. Step 1: v = g1; p -= 0.1 (g1 + 0.9 v) = 0.19 g1 -> [1 - 0.095, -2 + 0.19, 0.5 - 0.0475]
    // = [0.905, -1.81, 0.4525].
    // Step 2: v = [0.55, -0.7, -0.275] (as for momentum); g2 + 0.9 v = [0.1 + 0.495, 0.2 - 0.63,
    // -0.5 - 0.2475] = [0.595, -0.43, -0.7475]; p -= 0.1 * that -> [0.8455, -1.767, 0.52725].
    let (s1, s2) = run(OptimizerConfig::Momentum {
        momentum: 0.9,
        nesterov: true,
    });
    assert_close(s1, [0.905, -1.81, 0.4525]);
    assert_close(s2, [0.8455, -1.767, 0.52725]);
}

#[test]
fn adam() {
    // b1 = 0.9, b2 = 0.999, eps = 1e-8.
    // Step 1: m = 0.1 g, v = 0.001 g^2; m_hat = m / 0.1 = g, v_hat = v / 0.001 = g^2;
    // p -= 0.1 * g / (|g| + 1e-8), i.e. about 0.1 * sign(g):
    //   w1 = 1 - 0.1 * 0.5 / 0.50000001, w2 = -2 + 0.1 * 1 / 1.00000001, b = 0.5 - 0.1 * 0.25 / 0.25000001.
    // Step 2 for w1: m = 0.9 * 0.05 + 0.1 * 0.1 = 0.055; v = 0.999 * 0.00025 + 0.001 * 0.01 = 0.00025975;
    //   m_hat = 0.055 / (1 - 0.81) = 0.055 / 0.19; v_hat = 0.00025975 / (1 - 0.998001) = 0.00025975 / 0.001999.
    // w2: m = 0.9 * -0.1 + 0.1 * 0.2 = -0.07; v = 0.999 * 0.001 + 0.001 * 0.04 = 0.001039.
    // b:  m = 0.9 * 0.025 + 0.1 * -0.5 = -0.0275; v = 0.999 * 0.0000625 + 0.001 * 0.25 = 0.0003124375.
    let w1a = 1.0 - 0.1 * 0.5 / 0.50000001;
    let w2a = -2.0 + 0.1 * 1.0 / 1.00000001;
    let ba = 0.5 - 0.1 * 0.25 / 0.25000001;
    let upd = |m: f64, v: f64| 0.1 * (m / 0.19) / ((v / 0.001999f64).sqrt() + 1e-8);
    let (s1, s2) = run(OptimizerConfig::Adam {
        beta1: 0.9,
        beta2: 0.999,
        epsilon: 1e-8,
    });
    assert_close(s1, [w1a, w2a, ba]);
    assert_close(
        s2,
        [
            w1a - upd(0.055, 0.00025975),
            w2a - upd(-0.07, 0.001039),
            ba - upd(-0.0275, 0.0003124375),
        ],
    );
    // Spot value: w1 after step 2 is about 0.9 - 0.0803043 = 0.8196957.
    assert!((s2[0] - 0.8196957).abs() < 1e-6);
}

#[test]
fn rmsprop() {
    // alpha = 0.9, eps = 1e-8.
    // Step 1: v = 0.1 g^2 = [0.025, 0.1, 0.00625]; p -= 0.1 g / (sqrt(v) + eps):
    //   w1 = 1 - 0.05 / (sqrt(0.025) + 1e-8) = 1 - 0.316227746... = 0.683772...
    // Step 2: v = 0.9 v + 0.1 g2^2 = [0.0225 + 0.001, 0.09 + 0.004, 0.005625 + 0.025]
    //   = [0.0235, 0.094, 0.030625]; p -= 0.1 g2 / (sqrt(v) + eps).
    let w1 = 1.0 - 0.1 * 0.5 / (0.025f64.sqrt() + 1e-8);
    let w2 = -2.0 + 0.1 * 1.0 / (0.1f64.sqrt() + 1e-8);
    let b = 0.5 - 0.1 * 0.25 / (0.00625f64.sqrt() + 1e-8);
    let (s1, s2) = run(OptimizerConfig::RmsProp {
        alpha: 0.9,
        epsilon: 1e-8,
    });
    assert_close(s1, [w1, w2, b]);
    assert_close(
        s2,
        [
            w1 - 0.1 * 0.1 / (0.0235f64.sqrt() + 1e-8),
            w2 - 0.1 * 0.2 / (0.094f64.sqrt() + 1e-8),
            b + 0.1 * 0.5 / (0.030625f64.sqrt() + 1e-8),
        ],
    );
    assert!((s1[0] - 0.683772234).abs() < 1e-6);
}

#[test]
fn inactive_layers_are_not_updated() {
    let (mut net, mut grads) = setup();
    let before = net.clone();
    set(&mut grads, G1);
    grads.layers_mut()[0].set_active(false);
    let mut opt = Optimizer::new(OptimizerConfig::adam(), &net).unwrap();
    opt.step(&mut net, &grads, LR, Par::Seq).unwrap();
    assert!(net.bit_identical(&before));
}

#[test]
fn bad_config_and_mismatched_state_are_errors() {
    let (net, _) = setup();
    assert!(
        Optimizer::new(
            OptimizerConfig::Momentum {
                momentum: 1.5,
                nesterov: false
            },
            &net
        )
        .is_err()
    );
    assert!(
        Optimizer::new(
            OptimizerConfig::Adam {
                beta1: 0.9,
                beta2: 0.999,
                epsilon: 0.0
            },
            &net
        )
        .is_err()
    );
    // Positive, but below MIN_EPSILON (1e-20): `2^-50 eps` would be subnormal in f32.
    assert!(
        Optimizer::new(
            OptimizerConfig::RmsProp {
                alpha: 0.9,
                epsilon: 1e-21
            },
            &net
        )
        .is_err()
    );
    let bad = OptimizerState::<f64> {
        step: 3,
        first: vec![vec![0.0; 5]],
        second: vec![],
    };
    assert!(
        Optimizer::from_state(
            OptimizerConfig::Momentum {
                momentum: 0.9,
                nesterov: false
            },
            bad,
            &net
        )
        .is_err()
    );
    let json = r#"{"kind":"momentum","momentum":0.9}"#;
    let cfg: OptimizerConfig = serde_json::from_str(json).unwrap();
    assert_eq!(
        cfg,
        OptimizerConfig::Momentum {
            momentum: 0.9,
            nesterov: false
        }
    );
}

/// Tensors large enough to be split between threads get exactly the single-thread update,
/// for every rule, f32 and with a constraint after each step.
#[test]
fn threaded_steps_match_single_threaded_ones_bit_for_bit() {
    use rand::{Rng, SeedableRng};
    let arch =
        Architecture::uniform(vec![784, 300, 10], Activation::Relu, OutputHead::Softmax).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
    let weights = |n: usize, rng: &mut rand_chacha::ChaCha8Rng| -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-0.3..0.3)).collect()
    };
    let layers = vec![
        Dense::from_parts(
            784,
            300,
            weights(784 * 300, &mut rng),
            weights(300, &mut rng),
        )
        .unwrap(),
        Dense::from_parts(300, 10, weights(3000, &mut rng), weights(10, &mut rng)).unwrap(),
    ];
    let start = Network::from_layers(&arch, layers).unwrap().unwrap();
    let mut grads = Gradients::<f32>::new(&arch);
    for config in [
        OptimizerConfig::Sgd,
        OptimizerConfig::Momentum {
            momentum: 0.9,
            nesterov: true,
        },
        OptimizerConfig::adam(),
        OptimizerConfig::RmsProp {
            alpha: 0.99,
            epsilon: 1e-8,
        },
    ] {
        let mut nets = Vec::new();
        for par in [Par::Seq, Par::rayon(2), Par::rayon(3)] {
            let mut net = start.clone();
            let mut opt = Optimizer::new(config, &net).unwrap();
            let mut grad_rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
            for _ in 0..3 {
                for l in grads.layers_mut() {
                    l.weight_mut()
                        .iter_mut()
                        .for_each(|g| *g = grad_rng.random_range(-1.0..1.0));
                    l.bias_mut()
                        .iter_mut()
                        .for_each(|g| *g = grad_rng.random_range(-1.0..1.0));
                    l.set_active(true);
                }
                opt.step(&mut net, &grads, 0.05, par).unwrap();
                mnist_core::apply_max_norm(&mut net, 3.0, &[], par);
            }
            nets.push(net);
        }
        assert!(!nets[0].bit_identical(&start), "{config:?} changed nothing");
        assert!(
            nets[0].bit_identical(&nets[1]),
            "{config:?}: 2 threads differ"
        );
        assert!(
            nets[0].bit_identical(&nets[2]),
            "{config:?}: 3 threads differ"
        );
    }
}

/// A weight whose gradient turns zero (the inputs of a dead ReLU unit) has its moments decay
/// geometrically; unflushed, they stop at the smallest subnormals for ever (`0.9 x` one ulp
/// rounds back to one ulp), and every later step pays a microcode assist on Intel cores. Every
/// moment must follow the plain recurrence bit for bit while it matters, then become exactly
/// zero (velocities only below `FLUSH_BELOW`; Adam's first moments only once their step is
/// below `2^-50` of the bias-corrected rate or they are near subnormal; second moments only
/// below `NEAR_SUBNORMAL`), never passing through a subnormal value, in f32 and f64, also with
/// `b1 > sqrt(b2)` (the second moment then falls faster than the first).
#[test]
fn decaying_moments_reach_zero_without_turning_subnormal() {
    fn check<T: mnist_core::Float>() {
        let smallest_normal = if T::BYTES == 4 {
            f64::from(f32::MIN_POSITIVE)
        } else {
            f64::MIN_POSITIVE
        };
        let arch =
            Architecture::uniform(vec![2, 1], Activation::Relu, OutputHead::Sigmoid).unwrap();
        let one = T::from_f64(1.0);
        let layer = Dense::from_parts(2, 1, vec![one, -one], vec![one]).unwrap();
        let start = Network::from_layers(&arch, vec![layer]).unwrap().unwrap();
        // (config, decay of the first buffer, decay of the second)
        let adam = |beta1: f64, beta2: f64, epsilon: f64| {
            (
                OptimizerConfig::Adam {
                    beta1,
                    beta2,
                    epsilon,
                },
                beta1,
                beta2,
            )
        };
        let configs = [
            (
                OptimizerConfig::Momentum {
                    momentum: 0.9,
                    nesterov: false,
                },
                0.9,
                0.0,
            ),
            (
                OptimizerConfig::Momentum {
                    momentum: 0.9,
                    nesterov: true,
                },
                0.9,
                0.0,
            ),
            adam(0.8, 0.95, 1e-8),
            adam(0.95, 0.85, 1e-8),
            adam(0.8, 0.95, 1e-20),
            (
                OptimizerConfig::RmsProp {
                    alpha: 0.9,
                    epsilon: 1e-8,
                },
                0.0,
                0.9,
            ),
        ];
        for (config, decay_first, decay_second) in configs {
            let mut net = start.clone();
            let mut grads = Gradients::<T>::new(&arch);
            let mut opt = Optimizer::new(config, &net).unwrap();
            // The unflushed recurrence, in T, from the state after the first step.
            let mut expected: Option<(Vec<T>, Vec<T>)> = None;
            let (d1, d2) = (T::from_f64(decay_first), T::from_f64(decay_second));
            for step in 0..20_000 {
                let g = if step == 0 { 0.5 } else { 0.0 };
                let l = &mut grads.layers_mut()[0];
                l.weight_mut().fill(T::from_f64(g));
                l.bias_mut().fill(T::from_f64(-g));
                l.set_active(true);
                opt.step(&mut net, &grads, 0.1, Par::Seq).unwrap();
                let state = opt.state();
                let first: Vec<T> = state.first.iter().flatten().copied().collect();
                let second: Vec<T> = state.second.iter().flatten().copied().collect();
                for &x in first.iter().chain(&second) {
                    let x = x.to_f64();
                    assert!(
                        x == 0.0 || x.abs() >= smallest_normal,
                        "{config:?}, step {step}: moment {x:e} is subnormal"
                    );
                }
                let (e1, e2) = expected.get_or_insert_with(|| (first.clone(), second.clone()));
                if step > 0 {
                    e1.iter_mut().for_each(|e| *e = d1 * *e);
                    e2.iter_mut().for_each(|e| *e = d2 * *e);
                }
                // The largest first moment that may be zeroed: Adam's is relative to its
                // denominator (from the unflushed second moment), a velocity's is absolute.
                let bound = |k: usize| match config {
                    OptimizerConfig::Adam { beta2, epsilon, .. } => {
                        let t = step + 1;
                        let inv_sqrt_bc2 = T::from_f64(1.0 / (1.0 - beta2.powi(t)).sqrt());
                        let denom = e2[k].sqrt() * inv_sqrt_bc2 + T::from_f64(epsilon);
                        (T::FLUSH_BELOW * denom)
                            .to_f64()
                            .max(T::NEAR_SUBNORMAL.to_f64())
                    }
                    _ => T::FLUSH_BELOW.to_f64(),
                };
                for (k, (got, want)) in first.iter().zip(e1.iter()).enumerate() {
                    let (got, want) = (got.to_f64(), want.to_f64());
                    assert!(
                        got == want || (got == 0.0 && want.abs() < bound(k)),
                        "{config:?}, step {step}: first moment {got:e}, unflushed {want:e}"
                    );
                }
                for (got, want) in second.iter().zip(e2.iter()) {
                    let (got, want) = (got.to_f64(), want.to_f64());
                    assert!(
                        got == want || (got == 0.0 && want < T::NEAR_SUBNORMAL.to_f64()),
                        "{config:?}, step {step}: second moment {got:e}, unflushed {want:e}"
                    );
                }
            }
            let state = opt.state();
            let moments: Vec<f64> = state
                .first
                .iter()
                .chain(&state.second)
                .flatten()
                .map(|&x| x.to_f64())
                .collect();
            assert!(!moments.is_empty(), "{config:?} keeps moments");
            assert!(
                moments.iter().all(|&x| x == 0.0),
                "{config:?}: moments after a long run of zero gradients: {moments:?}"
            );
            assert!(
                net.layers()[0]
                    .weight_slice()
                    .iter()
                    .all(|w| w.to_f64().is_finite())
            );
        }
    }
    check::<f32>();
    check::<f64>();
}
