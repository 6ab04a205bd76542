//! Hostile configs and checkpoints, run in CI: the proptest counterpart of the cargo-fuzz
//! targets `config` and `checkpoint` (fuzz/), plus every input the fuzzer ever crashed on
//! (`tests/fuzz_regressions/<target>/`), plus forged checkpoints whose checksum is right but
//! whose content lies.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::collections::HashMap;
use std::path::Path;

use mnist_core::rand_chacha::ChaCha8Rng;
use mnist_core::{
    Activation, Architecture, BiasInit, LayerInit, Network, Optimizer, OptimizerConfig, OutputHead,
    Preprocessing, RngState, WeightInit,
};
use mnist_train::ExperimentConfig;
use mnist_train::checkpoint::{RunState, from_bytes, to_bytes};
use proptest::prelude::*;
use rand::SeedableRng;
use safetensors::SafeTensors;
use safetensors::tensor::TensorView;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The `config` fuzz target's checks.
fn check_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = ExperimentConfig::from_json(text, "fuzz.json") else {
        return;
    };
    if config.validate("fuzz.json").is_err() {
        return;
    }
    let _ = config.architecture();
    let _ = config.layer_inits();
    let _ = config.train_options();
    let _ = config.train_size();
    let _ = config.has_validation();
    let again = ExperimentConfig::from_json(&config.to_json(), "saved.json")
        .unwrap_or_else(|e| panic!("a valid config does not re-read from its saved copy: {e}"));
    assert_eq!(again, config, "saved copy differs");
}

/// Checkpoint tensor order and digest, as `mnist_train::checkpoint` computes them.
fn order(name: &str) -> (u8, usize, u8) {
    let parts: Vec<&str> = name.split('.').collect();
    match parts.as_slice() {
        ["layers", i, kind] => (
            0,
            i.parse().unwrap_or(usize::MAX),
            u8::from(*kind == "bias"),
        ),
        ["optimizer", slot, k] => (
            1 + u8::from(*slot == "second"),
            k.parse().unwrap_or(usize::MAX),
            0,
        ),
        _ => (9, usize::MAX, 0),
    }
}

/// `bytes` with its `sha256` metadata recomputed over its (possibly forged) content.
fn reseal(bytes: &[u8]) -> Option<Vec<u8>> {
    let st = SafeTensors::deserialize(bytes).ok()?;
    let (_, header) = SafeTensors::read_metadata(bytes).ok()?;
    let mut meta: HashMap<String, String> = header.metadata().clone()?;
    let state = meta.get("state")?.clone();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort_by_key(|n| order(n));
    let mut h = Sha256::new();
    h.update(state.as_bytes());
    let mut views = Vec::new();
    for name in &names {
        let view = st.tensor(name).ok()?;
        h.update(name.as_bytes());
        for d in view.shape() {
            h.update((*d as u64).to_le_bytes());
        }
        h.update(view.data());
        views.push((
            name.clone(),
            TensorView::new(view.dtype(), view.shape().to_vec(), view.data()).ok()?,
        ));
    }
    let digest: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    meta.insert("sha256".into(), digest);
    safetensors::serialize(views, Some(meta)).ok()
}

/// The `checkpoint` fuzz target's checks, on the bytes as given and resealed.
fn check_checkpoint(data: &[u8]) {
    let check = |bytes: &[u8]| {
        if let Ok(ck) = from_bytes(bytes) {
            let _ = ck.state.shuffle_rng.restore();
            let _ = ck.state.dropout_rng.restore();
            let _ = ck.network.workspace(1);
            let again = to_bytes(&ck.state, &ck.network, &ck.optimizer).unwrap();
            let back = from_bytes(&again).unwrap();
            assert!(back.network.bit_identical(&ck.network));
        }
    };
    check(data);
    if let Some(resealed) = reseal(data) {
        check(&resealed);
    }
}

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_regressions")
        .join(target);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            continue;
        }
        println!("replaying {}", path.display());
        check(&std::fs::read(&path).unwrap());
    }
}

#[test]
fn config_fuzz_regressions() {
    replay("config", check_config);
}

#[test]
fn checkpoint_fuzz_regressions() {
    replay("checkpoint", check_checkpoint);
}

fn reference_json() -> Value {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/adam_dropout.json"),
    )
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every path (object keys, array indices) in a JSON value.
fn paths(v: &Value, here: Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(here.clone());
    match v {
        Value::Object(m) => m.iter().for_each(|(k, x)| {
            let mut p = here.clone();
            p.push(k.clone());
            paths(x, p, out);
        }),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| {
            let mut p = here.clone();
            p.push(i.to_string());
            paths(x, p, out);
        }),
        _ => {}
    }
}

fn at<'a>(v: &'a mut Value, path: &[String]) -> &'a mut Value {
    path.iter().fold(v, |v, k| match v {
        Value::Array(a) => &mut a[k.parse::<usize>().unwrap()],
        other => &mut other[k.as_str()],
    })
}

fn hostile_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::from(u64::MAX)),
        Just(Value::from(u64::MAX / 2 + 1)),
        Just(Value::from(1u64 << 32)),
        Just(Value::from(0)),
        Just(Value::from(-1)),
        Just(Value::from(1e308)),
        Just(Value::from(-0.0)),
        Just(Value::from(f64::MIN_POSITIVE)),
        Just(Value::Null),
        Just(Value::from("full")),
        Just(Value::from("")),
        Just(Value::Array(vec![])),
        Just(serde_json::json!({})),
        Just(
            serde_json::json!({"kind": "balanced", "train_per_class": u64::MAX, "validation_per_class": u64::MAX, "seed": 1})
        ),
        Just(serde_json::json!({"kind": "holdout", "validation": u64::MAX, "seed": 1})),
        any::<u32>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
    ]
}

/// A tiny real checkpoint (4-3-2, Adam, one epoch of history).
fn tiny_checkpoint() -> Vec<u8> {
    let arch = Architecture::uniform(vec![4, 3, 2], Activation::Relu, OutputHead::Softmax).unwrap();
    let init = LayerInit {
        weight: WeightInit::HeNormal,
        bias: BiasInit::Zero,
    };
    let net = Network::<f32>::new(&arch, &[init, init], &mut ChaCha8Rng::seed_from_u64(7)).unwrap();
    let optimizer = OptimizerConfig::Adam {
        beta1: 0.9,
        beta2: 0.999,
        epsilon: 1e-8,
    };
    let state = RunState {
        experiment: "tiny".into(),
        architecture: arch,
        preprocessing: Preprocessing::default(),
        optimizer,
        epoch: 1,
        next_batch: 0,
        global_step: 3,
        optimizer_step: 3,
        shuffle_rng: RngState::capture(&ChaCha8Rng::seed_from_u64(1)),
        dropout_rng: RngState::capture(&ChaCha8Rng::seed_from_u64(2)),
        augment_rng: None,
        epoch_loss_sum: 0.0,
        epoch_batches: 0,
        epoch_seconds: 0.0,
        history: Vec::new(),
        best_epoch: None,
        best_metric: None,
        epochs_without_improvement: 0,
        config: None,
    };
    to_bytes(&state, &net, &Optimizer::new(optimizer, &net).unwrap()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        check_config(&bytes);
        check_checkpoint(&bytes);
    }

    #[test]
    fn mutated_config_text_never_panics(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
    ) {
        let mut bytes = serde_json::to_vec_pretty(&reference_json()).unwrap();
        let n = bytes.len();
        for (i, v) in edits {
            bytes[i % n] = v;
        }
        check_config(&bytes);
    }

    /// One field anywhere in a valid config replaced by a hostile value: parsed and
    /// validated without panicking, before any work.
    #[test]
    fn hostile_values_anywhere_in_a_config_never_panic(
        picks in proptest::collection::vec((any::<usize>(), hostile_value()), 1..3),
    ) {
        let mut v = reference_json();
        for (which, value) in picks {
            let mut all = Vec::new();
            paths(&v, Vec::new(), &mut all);
            let path = &all[which % all.len()];
            *at(&mut v, path) = value;
        }
        check_config(serde_json::to_string(&v).unwrap().as_bytes());
    }

    #[test]
    fn mutated_checkpoint_never_panics(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        in_header in any::<bool>(),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let mut bytes = tiny_checkpoint();
        let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let span = if in_header { header_end } else { bytes.len() };
        for (i, v) in edits {
            bytes[i % span] = v;
        }
        if let Some(n) = cut {
            bytes.truncate(n % (bytes.len() + 1));
        }
        check_checkpoint(&bytes);
    }
}

/// A checkpoint whose run state claims another shape than its tensors hold, with a checksum
/// recomputed to match: refused by the shape checks, not by the checksum.
#[test]
fn checkpoint_shapes_that_disagree_with_its_metadata_are_refused() {
    let bytes = tiny_checkpoint();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    let state = meta["state"].replace("\"sizes\":[4,3,2]", "\"sizes\":[4,5,2]");
    assert_ne!(state, meta["state"]);
    let mut meta = meta;
    meta.insert("state".into(), state);
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<_> = st.tensors();
    let forged = reseal(&safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
    let err = from_bytes(&forged).unwrap_err();
    assert!(err.contains("shape"), "{err}");
}

/// Sizes that would overflow an estimate of memory are a clear error, not a panic.
#[test]
fn astronomically_large_values_are_refused_cleanly() {
    let cases: Vec<(&str, Value)> = vec![
        ("/model/hidden/0/size", Value::from(u64::MAX)),
        ("/model/hidden/1/size", Value::from(u64::MAX)),
        ("/training/batch_size", Value::from(u64::MAX)),
        ("/data/train_limit", Value::from(u64::MAX)),
        ("/training/epochs", Value::from(u64::MAX)),
        ("/evaluation/batch_size", Value::from(u64::MAX)),
        (
            "/data/split",
            serde_json::json!({"kind": "balanced", "train_per_class": u64::MAX, "validation_per_class": u64::MAX, "seed": 1}),
        ),
        (
            "/data/split",
            serde_json::json!({"kind": "balanced", "train_per_class": u64::MAX, "validation_per_class": 1, "seed": 1}),
        ),
        (
            "/data/split",
            serde_json::json!({"kind": "holdout", "validation": u64::MAX, "seed": 1}),
        ),
    ];
    for (pointer, value) in cases {
        let mut v = reference_json();
        // Both hidden layers astronomically wide: the parameter count itself overflows u128.
        if pointer.ends_with("/1/size") {
            v["model"]["hidden"][0]["size"] = Value::from(u64::MAX);
        }
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        match v.pointer_mut(parent).unwrap() {
            Value::Object(m) => drop(m.insert(key.to_string(), value.clone())),
            Value::Array(a) => a[key.parse::<usize>().unwrap()] = value.clone(),
            other => panic!("{parent} is {other}"),
        }
        let text = serde_json::to_string(&v).unwrap();
        let result = ExperimentConfig::from_json(&text, "huge.json").and_then(|c| {
            c.validate("huge.json")?;
            Ok(c)
        });
        check_config(text.as_bytes());
        if let Err(e) = result {
            assert!(
                e.to_string().starts_with("huge.json"),
                "{pointer}={value}: {e}"
            );
        }
    }
}

/// A model file given to `--resume` is recognised as one and the error says what to do.
#[test]
fn a_model_file_is_not_taken_for_a_checkpoint() {
    let arch = Architecture::uniform(vec![4, 3, 2], Activation::Relu, OutputHead::Softmax).unwrap();
    let init = LayerInit {
        weight: WeightInit::HeNormal,
        bias: BiasInit::Zero,
    };
    let net = Network::<f32>::new(&arch, &[init, init], &mut ChaCha8Rng::seed_from_u64(7)).unwrap();
    let model = mnist_core::to_safetensors_bytes(&net, &Preprocessing::default()).unwrap();
    let err = from_bytes(&model).unwrap_err();
    assert!(err.contains("model file") && err.contains("eval"), "{err}");
}

#[test]
fn devices_directories_and_oversized_files_are_refused_without_being_read() {
    let dir = tempfile::tempdir().unwrap();
    for path in [Path::new("/dev/zero"), dir.path()] {
        let err = mnist_train::checkpoint::load(path).unwrap_err().to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains("not a regular file"),
            "{err}"
        );
        let err = mnist_core::load_model::<f32>(path).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }
    let big = dir.path().join("big.safetensors");
    std::fs::write(&big, vec![0u8; 100]).unwrap();
    let err = mnist_core::read_parameter_file(&big, 99).unwrap_err();
    assert!(err.to_string().contains("100 bytes"), "{err}");
    assert_eq!(
        mnist_core::read_parameter_file(&big, 100).unwrap().len(),
        100
    );
}
