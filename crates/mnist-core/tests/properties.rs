//! Property tests of the numerics and of the checkpoint data.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic, like tests

use mnist_core::{Loss, OptimizerState, OutputHead, RngState, softmax_row};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

proptest! {
    #[test]
    fn softmax_rows_sum_to_one_f32(z in proptest::collection::vec(-1e4f32..1e4, 1..40)) {
        let mut p = vec![0.0f32; z.len()];
        softmax_row(&z, &mut p);
        prop_assert!(p.iter().all(|v| v.is_finite() && *v >= 0.0 && *v <= 1.0));
        let s: f64 = p.iter().map(|&v| f64::from(v)).sum();
        prop_assert!((s - 1.0).abs() < 1e-5, "sum {}", s);
    }

    #[test]
    fn softmax_rows_sum_to_one_f64(z in proptest::collection::vec(-1e4f64..1e4, 1..40)) {
        let mut p = vec![0.0f64; z.len()];
        softmax_row(&z, &mut p);
        prop_assert!(p.iter().all(|v| v.is_finite() && *v >= 0.0 && *v <= 1.0));
        let s: f64 = p.iter().sum();
        prop_assert!((s - 1.0).abs() < 1e-12, "sum {}", s);
    }

    /// Extreme logits make some probabilities exactly 0; cross-entropy (computed from the
    /// logits) and its gradient stay finite even when the label's probability is 0.
    #[test]
    fn cross_entropy_finite_with_zero_probabilities(
        z in proptest::collection::vec(prop_oneof![Just(-1e4f32), Just(1e4f32), -1e4f32..1e4], 10),
        label in 0u8..10,
    ) {
        for head in [OutputHead::Softmax, OutputHead::Sigmoid] {
            let mut a = vec![0.0f32; 10];
            head.apply_rows(&z, &mut a, 10);
            let mut g = vec![0.0f32; 10];
            let l = Loss::CrossEntropy.mean_and_gradient(head, &z, &a, &[label], 10, &mut g);
            prop_assert!(l.is_finite() && l >= 0.0, "{:?} loss {}", head, l);
            prop_assert!(g.iter().all(|v| v.is_finite()));
            let mse = Loss::MeanSquaredError.mean_and_gradient(head, &z, &a, &[label], 10, &mut g);
            prop_assert!(mse.is_finite() && g.iter().all(|v| v.is_finite()));
        }
    }

    #[test]
    fn optimizer_state_json_round_trip_is_exact(
        vals in proptest::collection::vec(any::<f64>().prop_filter("finite", |v| v.is_finite()), 1..50),
        step in any::<u64>(),
    ) {
        let state = OptimizerState { step, first: vec![vals.clone()], second: vec![vals.clone(), vec![]] };
        let back: OptimizerState<f64> = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        prop_assert!(back.first[0].iter().zip(&vals).all(|(a, b)| a.to_bits() == b.to_bits()));
        prop_assert_eq!(back, state);
        let v32: Vec<f32> = vals.iter().map(|&v| v as f32).filter(|v| v.is_finite()).collect();
        let s32 = OptimizerState { step, first: vec![v32], second: vec![] };
        let back32: OptimizerState<f32> = serde_json::from_str(&serde_json::to_string(&s32).unwrap()).unwrap();
        prop_assert_eq!(back32, s32);
    }

    #[test]
    fn rng_state_round_trip(seed in any::<u64>(), stream in any::<u64>(), draws in 0usize..300) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(stream);
        for _ in 0..draws { let _: u32 = rng.random(); }
        let state = RngState::capture(&rng);
        let back: RngState = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        let mut restored = back.restore();
        prop_assert_eq!(rng.random::<u64>(), restored.random::<u64>());
    }
}

fn gradients_bits(sizes: &[usize], batch: usize, seed: u64, par: faer::Par) -> Vec<u32> {
    use mnist_core::{
        Activation, Architecture, BiasInit, Gradients, LayerInit, Network, TrainOptions,
        WeightInit, compute_gradients,
    };
    let arch =
        Architecture::uniform(sizes.to_vec(), Activation::Tanh, OutputHead::Softmax).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let init = LayerInit::new(
        WeightInit::XavierUniform,
        BiasInit::Normal {
            mean: 0.0,
            std: 0.1,
        },
    );
    let net: Network<f32> = Network::new(&arch, &[init], &mut rng).unwrap();
    let x: Vec<f32> = (0..batch * sizes[0])
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let classes = *sizes.last().unwrap() as u8;
    let y: Vec<u8> = (0..batch).map(|_| rng.random_range(0..classes)).collect();
    let mut ws = net.workspace(batch);
    let mut grads = Gradients::new(&arch);
    let opts = TrainOptions {
        keep_prob: vec![0.9; sizes.len() - 2],
        ..TrainOptions::new(Loss::CrossEntropy)
    };
    let loss = compute_gradients(
        &net, &mut ws, &mut grads, &x, &y, batch, &opts, &mut rng, par,
    )
    .unwrap();
    let mut bits = vec![(loss as f32).to_bits()];
    for l in grads.layers() {
        bits.extend(l.weight().iter().chain(l.bias()).map(|v| v.to_bits()));
    }
    bits
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Gradients are bit-identical on one, two and three threads, over shapes that take faer's
    /// matrix-vector, small-matrix and blocked GEMM paths, and batches of one to four chunks.
    #[test]
    fn gradients_do_not_depend_on_thread_count(
        inputs in prop_oneof![1usize..8, 200usize..400],
        hidden in prop_oneof![1usize..8, 100usize..300],
        outputs in 1usize..11,
        batch in prop_oneof![Just(1usize), 2usize..9, 60usize..300],
        seed in any::<u64>(),
    ) {
        let sizes = [inputs, hidden, hidden, outputs];
        let seq = gradients_bits(&sizes, batch, seed, faer::Par::Seq);
        let par = gradients_bits(&sizes, batch, seed, faer::Par::rayon(2));
        prop_assert!(seq == par, "sizes {:?} batch {}", sizes, batch);
        let three = gradients_bits(&sizes, batch, seed, faer::Par::rayon(3));
        prop_assert!(seq == three, "sizes {:?} batch {} on 3 threads", sizes, batch);
    }
}

/// A case the property above found: on 8 rows, splitting the first layer's weight gradient
/// by columns gave some exact zeros another sign than one whole product.
#[test]
fn zero_gradients_keep_their_sign_on_any_thread_count() {
    let sizes = [201usize, 3, 3, 1];
    let seq = gradients_bits(&sizes, 8, 8269358203640891016, faer::Par::Seq);
    for threads in [2, 3] {
        let par = gradients_bits(&sizes, 8, 8269358203640891016, faer::Par::rayon(threads));
        assert!(seq == par, "{threads} threads");
    }
}
