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
