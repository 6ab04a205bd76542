//! Hostile model files, run in CI: the proptest counterpart of the cargo-fuzz target `model`
//! (fuzz/), plus every input the fuzzer ever crashed on (`tests/fuzz_regressions/model/`).
//! Nothing may panic; a model that loads must save and load back bit for bit.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::path::Path;

use mnist_core::rand_chacha::ChaCha8Rng;
use mnist_core::{
    Activation, Architecture, BiasInit, LayerInit, Network, OutputHead, Preprocessing, WeightInit,
    from_safetensors_bytes, to_safetensors_bytes,
};
use proptest::prelude::*;
use rand::SeedableRng;

/// The `model` fuzz target's checks.
fn check_model(data: &[u8]) {
    let _ = from_safetensors_bytes::<f64>(data);
    if let Ok(model) = from_safetensors_bytes::<f32>(data) {
        let bytes = to_safetensors_bytes(&model.network, &model.preprocessing).unwrap();
        let again = from_safetensors_bytes::<f32>(&bytes).unwrap();
        assert!(again.network.bit_identical(&model.network));
    }
}

#[test]
fn model_fuzz_regressions() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions/model");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            continue;
        }
        println!("replaying {}", path.display());
        check_model(&std::fs::read(&path).unwrap());
    }
}

/// A real (tiny) model file: 4-3-2, f32.
fn tiny_model() -> Vec<u8> {
    let arch = Architecture::uniform(vec![4, 3, 2], Activation::Relu, OutputHead::Softmax).unwrap();
    let init = LayerInit {
        weight: WeightInit::HeNormal,
        bias: BiasInit::Zero,
    };
    let net = Network::<f32>::new(&arch, &[init, init], &mut ChaCha8Rng::seed_from_u64(7)).unwrap();
    to_safetensors_bytes(&net, &Preprocessing::default()).unwrap()
}

/// Where the JSON header of a safetensors file ends.
fn header_end(bytes: &[u8]) -> usize {
    8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        check_model(&bytes);
    }

    #[test]
    fn mutated_real_model_never_panics(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        in_header in any::<bool>(),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let mut bytes = tiny_model();
        // Aim at the JSON header (shapes, offsets, metadata) or anywhere.
        let span = if in_header { header_end(&bytes) } else { bytes.len() };
        for (at, v) in edits {
            bytes[at % span] = v;
        }
        if let Some(n) = cut {
            bytes.truncate(n % (bytes.len() + 1));
        }
        check_model(&bytes);
    }

    /// The header's JSON rewritten with a number replaced by a hostile one (huge shapes,
    /// offsets past the end, sizes in the metadata that overflow).
    #[test]
    fn hostile_numbers_in_the_header_never_panic(
        which in any::<usize>(),
        value in prop_oneof![
            Just(u64::MAX.to_string()),
            Just((1u64 << 32).to_string()),
            Just("0".to_string()),
            Just("-1".to_string()),
            Just("1e308".to_string()),
            any::<u32>().prop_map(|v| v.to_string()),
        ],
    ) {
        let bytes = tiny_model();
        let end = header_end(&bytes);
        let header = std::str::from_utf8(&bytes[8..end]).unwrap();
        // Positions of the digit runs in the header (its own and the metadata's).
        let runs: Vec<(usize, usize)> = header
            .char_indices()
            .filter(|&(i, c)| c.is_ascii_digit() && !header[..i].ends_with(|p: char| p.is_ascii_digit()))
            .map(|(i, _)| (i, header[i..].find(|c: char| !c.is_ascii_digit()).map_or(header.len(), |n| i + n)))
            .collect();
        let (start, stop) = runs[which % runs.len()];
        let new_header = format!("{}{}{}", &header[..start], value, &header[stop..]);
        let mut forged = (new_header.len() as u64).to_le_bytes().to_vec();
        forged.extend_from_slice(new_header.as_bytes());
        forged.extend_from_slice(&bytes[end..]);
        check_model(&forged);
    }
}
