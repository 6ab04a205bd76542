//! Model files: round trips, layout, and typed errors for every kind of bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers may panic, like tests

use std::collections::HashMap;

use mnist_core::{
    Activation, Architecture, BiasInit, LayerInit, ModelIoError, Network, OutputHead,
    Preprocessing, WeightInit, from_safetensors_bytes, load_model, save_model,
    to_safetensors_bytes,
};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

fn arch() -> Architecture {
    Architecture::new(
        vec![4, 5, 3],
        vec![Activation::LeakyRelu { slope: 0.01 }],
        OutputHead::Softmax,
    )
    .unwrap()
}

fn net<T: mnist_core::Float>(arch: &Architecture, seed: u64) -> Network<T> {
    let init = LayerInit::new(
        WeightInit::XavierUniform,
        BiasInit::Normal {
            mean: 0.0,
            std: 0.1,
        },
    );
    Network::new(arch, &[init], &mut ChaCha8Rng::seed_from_u64(seed)).unwrap()
}

fn prep() -> Preprocessing {
    Preprocessing {
        scale: 1.0 / 255.0,
        mean: 0.1307,
        std: 0.3081,
    }
}

/// Builds a safetensors file from raw parts, to forge bad inputs.
fn forge(tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)], meta: &[(&str, &str)]) -> Vec<u8> {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (*n, TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let meta: HashMap<String, String> = meta
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    safetensors::serialize(views, Some(meta)).unwrap()
}

fn f32_bytes(n: usize, v: f32) -> Vec<u8> {
    (0..n).flat_map(|_| v.to_le_bytes()).collect()
}

fn good_meta(arch_json: &str) -> Vec<(&'static str, String)> {
    vec![
        ("format", "mnist-rs".into()),
        ("format_version", "1".into()),
        ("architecture", arch_json.into()),
        ("preprocessing", serde_json::to_string(&prep()).unwrap()),
    ]
}

fn tensors_for(sizes: &[usize]) -> Vec<(String, Dtype, Vec<usize>, Vec<u8>)> {
    let mut out = Vec::new();
    for (i, w) in sizes.windows(2).enumerate() {
        out.push((
            format!("layers.{i}.weight"),
            Dtype::F32,
            vec![w[1], w[0]],
            f32_bytes(w[0] * w[1], 0.5),
        ));
        out.push((
            format!("layers.{i}.bias"),
            Dtype::F32,
            vec![w[1]],
            f32_bytes(w[1], 0.1),
        ));
    }
    out
}

fn build(
    tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)],
    meta: &[(&'static str, String)],
) -> Vec<u8> {
    let t: Vec<_> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.as_str(), *d, s.clone(), b.clone()))
        .collect();
    let m: Vec<_> = meta.iter().map(|(k, v)| (*k, v.as_str())).collect();
    forge(&t, &m)
}

#[test]
fn layout_matches_pytorch_linear() {
    let a = arch();
    let n: Network<f32> = net(&a, 1);
    let bytes = to_safetensors_bytes(&n, &prep()).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let w = st.tensor("layers.0.weight").unwrap();
    assert_eq!(w.dtype(), Dtype::F32);
    assert_eq!(w.shape(), &[5, 4]);
    // Row-major [out, in]: element (o=2, i=3) is at 2 * 4 + 3.
    let v = f32::from_le_bytes(w.data()[(2 * 4 + 3) * 4..][..4].try_into().unwrap());
    assert_eq!(v, n.layers()[0].weight()[(2, 3)]);
    assert_eq!(st.tensor("layers.1.bias").unwrap().shape(), &[3]);
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().as_ref().unwrap();
    assert_eq!(meta["format_version"], "1");
    let arch_back: Architecture = serde_json::from_str(&meta["architecture"]).unwrap();
    assert_eq!(arch_back, a);
    // f64 networks are stored as F64.
    let n64: Network<f64> = net(&a, 1);
    let st_bytes = to_safetensors_bytes(&n64, &prep()).unwrap();
    assert_eq!(
        SafeTensors::deserialize(&st_bytes)
            .unwrap()
            .tensor("layers.0.weight")
            .unwrap()
            .dtype(),
        Dtype::F64
    );
}

#[test]
fn path_level_save_is_atomic_and_errors_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let n: Network<f32> = net(&arch(), 2);
    save_model(&path, &n, &prep()).unwrap();
    // Overwrite in place; no temp file is left behind.
    save_model(&path, &n, &prep()).unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("model.safetensors")]);
    let loaded = load_model::<f32>(&path).unwrap();
    assert!(loaded.network.bit_identical(&n));
    assert_eq!(loaded.preprocessing, prep());

    let missing = dir.path().join("nope.safetensors");
    let err = load_model::<f32>(&missing).unwrap_err();
    assert!(matches!(err.source, ModelIoError::Io(_)));
    assert!(err.to_string().contains("nope.safetensors"), "{err}");

    let bad = dir.path().join("bad.safetensors");
    std::fs::write(&bad, b"garbage").unwrap();
    let err = load_model::<f32>(&bad).unwrap_err();
    assert!(matches!(err.source, ModelIoError::Truncated(_)), "{err}");
    assert!(err.to_string().contains("bad.safetensors"));

    let err = save_model(
        dir.path().join("no-such-dir").join("m.safetensors"),
        &n,
        &prep(),
    )
    .unwrap_err();
    assert!(matches!(err.source, ModelIoError::Io(_)));
}

#[test]
fn the_same_parameters_always_give_the_same_bytes() {
    let (a, p) = (arch(), prep());
    let n = net::<f32>(&a, 3);
    let first = mnist_core::to_safetensors_bytes(&n, &p).unwrap();
    // The metadata comes from a HashMap, whose order varies between instances: sorted, it
    // cannot.
    for _ in 0..20 {
        assert_eq!(mnist_core::to_safetensors_bytes(&n, &p).unwrap(), first);
    }
    let header_len = u64::from_le_bytes(first[..8].try_into().unwrap());
    assert_eq!(header_len % 8, 0, "tensor data stays 8-byte aligned");
    let loaded = mnist_core::from_safetensors_bytes::<f32>(&first).unwrap();
    assert!(loaded.network.bit_identical(&n));
}

#[test]
fn truncated_files() {
    let bytes = to_safetensors_bytes(&net::<f32>(&arch(), 3), &prep()).unwrap();
    for cut in [0, 4, 7, 8, 20, bytes.len() / 2, bytes.len() - 1] {
        let err = from_safetensors_bytes::<f32>(&bytes[..cut]).unwrap_err();
        assert!(
            matches!(err, ModelIoError::Truncated(_)),
            "cut at {cut}: {err:?}"
        );
    }
}

#[test]
fn wrong_shape() {
    let a = arch();
    let json = serde_json::to_string(&a).unwrap();
    let mut t = tensors_for(&[4, 5, 3]);
    t[2] = (
        "layers.1.weight".into(),
        Dtype::F32,
        vec![5, 3],
        f32_bytes(15, 0.5),
    ); // transposed
    let err = from_safetensors_bytes::<f32>(&build(&t, &good_meta(&json))).unwrap_err();
    match err {
        ModelIoError::ShapeMismatch {
            name,
            expected,
            found,
        } => {
            assert_eq!(name, "layers.1.weight");
            assert_eq!(expected, vec![3, 5]);
            assert_eq!(found, vec![5, 3]);
        }
        other => panic!("{other:?}"),
    }
    // Tensors for a different architecture than the metadata.
    let t = tensors_for(&[4, 6, 3]);
    assert!(matches!(
        from_safetensors_bytes::<f32>(&build(&t, &good_meta(&json))),
        Err(ModelIoError::ShapeMismatch { .. })
    ));
}

#[test]
fn missing_and_unexpected_tensors() {
    let json = serde_json::to_string(&arch()).unwrap();
    let mut t = tensors_for(&[4, 5, 3]);
    t.remove(3);
    let err = from_safetensors_bytes::<f32>(&build(&t, &good_meta(&json))).unwrap_err();
    assert!(
        matches!(&err, ModelIoError::MissingTensor(n) if n == "layers.1.bias"),
        "{err:?}"
    );
    let mut t = tensors_for(&[4, 5, 3]);
    t.push((
        "layers.2.weight".into(),
        Dtype::F32,
        vec![1],
        f32_bytes(1, 0.0),
    ));
    let err = from_safetensors_bytes::<f32>(&build(&t, &good_meta(&json))).unwrap_err();
    assert!(
        matches!(&err, ModelIoError::UnexpectedTensor(n) if n == "layers.2.weight"),
        "{err:?}"
    );
}

#[test]
fn bad_metadata() {
    let json = serde_json::to_string(&arch()).unwrap();
    let t = tensors_for(&[4, 5, 3]);
    let with = |key: &'static str, value: Option<&str>| {
        let mut m = good_meta(&json);
        m.retain(|(k, _)| *k != key);
        if let Some(v) = value {
            m.push((key, v.to_string()));
        }
        from_safetensors_bytes::<f32>(&build(&t, &m)).unwrap_err()
    };
    assert!(matches!(
        with("format", None),
        ModelIoError::MissingMetadata("format")
    ));
    assert!(matches!(
        with("format", Some("other")),
        ModelIoError::BadMetadata { key: "format", .. }
    ));
    assert!(matches!(
        with("format_version", Some("2")),
        ModelIoError::UnsupportedVersion { .. }
    ));
    assert!(matches!(
        with("architecture", None),
        ModelIoError::MissingMetadata("architecture")
    ));
    assert!(matches!(
        with("architecture", Some("{not json")),
        ModelIoError::BadMetadata {
            key: "architecture",
            ..
        }
    ));
    let zero_width = r#"{"sizes":[4,0,3],"hidden_activations":["relu"],"output":"softmax"}"#;
    assert!(matches!(
        with("architecture", Some(zero_width)),
        ModelIoError::BadMetadata {
            key: "architecture",
            ..
        }
    ));
    let bad_prep = r#"{"scale":1.0,"mean":0.0,"std":0.0}"#;
    assert!(matches!(
        with("preprocessing", Some(bad_prep)),
        ModelIoError::BadMetadata {
            key: "preprocessing",
            ..
        }
    ));
    // No metadata at all.
    let err = from_safetensors_bytes::<f32>(&build(&t, &[])).unwrap_err();
    assert!(matches!(err, ModelIoError::MissingMetadata("format")));
}

#[test]
fn unsupported_dtype_and_non_finite() {
    let json = serde_json::to_string(&arch()).unwrap();
    let mut t = tensors_for(&[4, 5, 3]);
    t[1] = ("layers.0.bias".into(), Dtype::I32, vec![5], vec![0; 20]);
    assert!(matches!(
        from_safetensors_bytes::<f32>(&build(&t, &good_meta(&json))),
        Err(ModelIoError::UnsupportedDtype { .. })
    ));
    let mut t = tensors_for(&[4, 5, 3]);
    t[1] = (
        "layers.0.bias".into(),
        Dtype::F32,
        vec![5],
        f32_bytes(5, f32::NAN),
    );
    assert!(matches!(
        from_safetensors_bytes::<f32>(&build(&t, &good_meta(&json))),
        Err(ModelIoError::NonFinite(_))
    ));
}

#[test]
fn dtypes_convert_on_load() {
    let n64: Network<f64> = net(&arch(), 4);
    let bytes = to_safetensors_bytes(&n64, &prep()).unwrap();
    let n32 = from_safetensors_bytes::<f32>(&bytes).unwrap().network;
    assert!(n32.bit_identical(&n64.cast::<f32>()));
    let back = from_safetensors_bytes::<f64>(&to_safetensors_bytes(&n32, &prep()).unwrap())
        .unwrap()
        .network;
    assert!(back.bit_identical(&n32.cast::<f64>()));
}

fn arb_arch() -> impl Strategy<Value = Architecture> {
    let act = prop_oneof![
        Just(Activation::Identity),
        Just(Activation::Sigmoid),
        Just(Activation::Tanh),
        Just(Activation::Relu),
        (-1.0f64..1.0).prop_map(|slope| Activation::LeakyRelu { slope }),
    ];
    let head = prop_oneof![Just(OutputHead::Softmax), Just(OutputHead::Sigmoid)];
    (
        proptest::collection::vec(1usize..9, 2..6),
        proptest::collection::vec(act, 4),
        head,
    )
        .prop_map(|(sizes, acts, output)| {
            let hidden = acts[..sizes.len() - 2].to_vec();
            Architecture::new(sizes, hidden, output).unwrap()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn save_load_is_identity(a in arb_arch(), seed in any::<u64>(), scale in 1e-3f64..10.0, mean in -1.0f64..1.0, std in 0.01f64..5.0) {
        let p = Preprocessing { scale, mean, std };
        let n32: Network<f32> = net(&a, seed);
        let back = from_safetensors_bytes::<f32>(&to_safetensors_bytes(&n32, &p).unwrap()).unwrap();
        prop_assert!(back.network.bit_identical(&n32));
        prop_assert_eq!(back.network.architecture(), &a);
        prop_assert_eq!(back.preprocessing, p);
        let n64: Network<f64> = net(&a, seed);
        let back = from_safetensors_bytes::<f64>(&to_safetensors_bytes(&n64, &p).unwrap()).unwrap();
        prop_assert!(back.network.bit_identical(&n64));
        prop_assert_eq!(back.preprocessing, p);
    }

    #[test]
    fn corrupted_bytes_never_panic(cut in any::<prop::sample::Index>(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4)) {
        let mut bytes = to_safetensors_bytes(&net::<f32>(&arch(), 9), &prep()).unwrap();
        for (i, v) in flips {
            let i = i.index(bytes.len());
            bytes[i] ^= v;
        }
        let cut = cut.index(bytes.len() + 1);
        let _ = from_safetensors_bytes::<f32>(&bytes[..cut]);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = from_safetensors_bytes::<f64>(&bytes);
    }
}

#[test]
fn a_flipped_byte_in_the_weights_is_refused_by_the_checksum() {
    let a = arch();
    let bytes = to_safetensors_bytes(&net::<f32>(&a, 3), &prep()).unwrap();
    from_safetensors_bytes::<f32>(&bytes).expect("intact file loads");
    // After the 8-byte length and the JSON header comes the tensor data: flip one bit at
    // its start, its middle and its end.
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let data_start = 8 + header;
    let middle = data_start + (bytes.len() - data_start) / 2;
    for at in [data_start, middle, bytes.len() - 2] {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x04;
        let err = from_safetensors_bytes::<f32>(&damaged).unwrap_err();
        assert!(err.to_string().contains("SHA-256"), "byte {at}: {err}");
    }
}
