//! The experiment schema: every reference config validates, round-trips, and every broken
//! config is refused with one error naming its field, before any work.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

use std::path::PathBuf;

use mnist_train::config::{BatchSize, SplitConfig};
use mnist_train::{ConfigError, ExperimentConfig};

fn configs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs")
}

fn reference_json() -> String {
    std::fs::read_to_string(configs_dir().join("two_layer_sigmoid.json")).unwrap()
}

#[test]
fn every_config_in_the_repository_validates_and_round_trips() {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(configs_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let config = ExperimentConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
            let again = ExperimentConfig::from_json(&config.to_json(), "saved").unwrap();
            assert_eq!(again, config, "{}", path.display());
            names.push(config.name);
        }
    }
    names.sort();
    for reference in [
        "adam-dropout",
        "deep-mse",
        "deep-mse-plateau",
        "one-hidden-relu",
        "one-hidden-relu-frozen",
        "three-layer-relu",
        "two-layer-sigmoid",
        "two-layer-sigmoid-l2",
    ] {
        assert!(names.iter().any(|n| n == reference), "missing {reference}");
    }
}

#[test]
fn reference_recipes_say_what_the_paper_says() {
    let load = |f: &str| ExperimentConfig::load(&configs_dir().join(f)).unwrap();
    let tls = load("two_layer_sigmoid.json");
    assert_eq!(tls.architecture().unwrap().sizes, vec![784, 300, 10]);
    assert_eq!(tls.training.batch_size, BatchSize::Examples(1000));
    assert_eq!(tls.train_size(), 50_000);
    let mse = load("deep_mse.json");
    assert!(matches!(mse.training.batch_size, BatchSize::Full(_)));
    assert_eq!(
        mse.architecture().unwrap().sizes,
        vec![784, 100, 64, 28, 10]
    );
    let frozen = load("one_hidden_relu_frozen.json");
    assert_eq!(frozen.train_options().frozen, vec![true, false]);
    assert!(matches!(
        frozen.data.split,
        SplitConfig::Balanced {
            train_per_class: 500,
            ..
        }
    ));
    assert_eq!(
        load("adam_dropout.json").train_options().keep_prob,
        vec![0.4, 0.5]
    );
}

#[test]
fn defaults_are_written_out_in_the_saved_copy() {
    let minimal = r#"{
      "name": "minimal",
      "data": {"split": {"kind": "full_train"}, "normalization": "scale"},
      "model": {"hidden": [{"size": 32, "activation": "relu",
                            "init": {"weight": {"kind": "he_normal"}, "bias": {"kind": "zero"}}}],
                "output": {"head": "softmax",
                           "init": {"weight": {"kind": "he_normal"}, "bias": {"kind": "zero"}}}},
      "training": {"loss": "cross_entropy", "optimizer": {"kind": "sgd"}, "learning_rate": 0.1,
                   "batch_size": 32, "shuffle": "each_epoch", "epochs": 1},
      "evaluation": {"every_epoch": ["train"]}
    }"#;
    let config = ExperimentConfig::from_json(minimal, "m").unwrap();
    config.validate("m").unwrap();
    let saved = config.to_json();
    for key in [
        "\"seed\"",
        "\"keep_prob\"",
        "\"trainable\"",
        "\"schedule\"",
        "\"l2\"",
        "\"every_epochs\"",
        "\"inputs\"",
    ] {
        assert!(saved.contains(key), "saved copy lacks {key}:\n{saved}");
    }
}

/// A change to a config's JSON.
type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;

/// Applies `edit` to the reference config's JSON and returns the error.
fn broken(edit: impl FnOnce(&mut serde_json::Value)) -> ConfigError {
    let mut v: serde_json::Value = serde_json::from_str(&reference_json()).unwrap();
    edit(&mut v);
    let text = serde_json::to_string_pretty(&v).unwrap();
    match ExperimentConfig::from_json(&text, "broken.json") {
        Err(e) => e,
        Ok(c) => c
            .validate("broken.json")
            .expect_err("config should be refused"),
    }
}

fn assert_mentions(err: &ConfigError, parts: &[&str]) {
    let msg = err.to_string();
    assert!(msg.starts_with("broken.json"), "names the file: {msg}");
    for p in parts {
        assert!(msg.contains(p), "{msg:?} should mention {p:?}");
    }
}

#[test]
fn syntax_errors_give_line_and_column() {
    let err =
        ExperimentConfig::from_json("{\n  \"name\": \"x\",\n  oops\n}", "broken.json").unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { line: 3, .. }), "{err}");
    assert_mentions(&err, &["broken.json:3:"]);
    let err = ExperimentConfig::from_json("", "broken.json").unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
}

#[test]
fn a_typo_in_a_key_names_the_key_and_its_place() {
    let err = broken(|v| {
        let t = v["training"].as_object_mut().unwrap();
        let lr = t.remove("learning_rate").unwrap();
        t.insert("lerning_rate".into(), lr);
    });
    assert!(matches!(err, ConfigError::Schema { .. }), "{err}");
    assert_mentions(&err, &["training", "lerning_rate"]);
}

#[test]
fn wrong_types_are_refused_with_the_field_path() {
    let err = broken(|v| v["training"]["epochs"] = "thirty".into());
    assert_mentions(&err, &["training.epochs", "invalid type"]);
    let err = broken(|v| v["model"]["hidden"][0]["activation"] = "swish".into());
    assert_mentions(&err, &["model.hidden[0].activation", "swish"]);
    let err = broken(|v| v["training"]["batch_size"] = "half".into());
    assert_mentions(&err, &["training.batch_size"]);
}

#[test]
fn impossible_values_are_refused_naming_the_field() {
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|v| v["training"]["learning_rate"] = (-1.0).into()),
            "training.learning_rate",
        ),
        (
            Box::new(|v| v["training"]["learning_rate"] = 0.0.into()),
            "training.learning_rate",
        ),
        (
            Box::new(|v| v["training"]["epochs"] = 0.into()),
            "training.epochs",
        ),
        (
            Box::new(|v| v["training"]["batch_size"] = 0.into()),
            "training.batch_size",
        ),
        (
            Box::new(|v| v["training"]["l2"] = (-0.1).into()),
            "training.l2",
        ),
        (
            Box::new(|v| v["model"]["hidden"][0]["size"] = 0.into()),
            "model.hidden[0].size",
        ),
        (
            Box::new(|v| v["model"]["hidden"][0]["keep_prob"] = 1.5.into()),
            "model.hidden[0].keep_prob",
        ),
        (
            Box::new(|v| v["model"]["input_keep_prob"] = 0.0.into()),
            "model.input_keep_prob",
        ),
        (
            Box::new(|v| v["model"]["inputs"] = 100.into()),
            "model.inputs",
        ),
        (
            Box::new(|v| v["model"]["output"]["size"] = 26.into()),
            "model.output.size",
        ),
        (
            Box::new(|v| v["data"]["split"]["validation"] = 60_000.into()),
            "data.split.validation",
        ),
        (
            Box::new(|v| {
                v["training"]["optimizer"] = serde_json::json!({"kind": "adam", "beta1": 1.5, "beta2": 0.999, "epsilon": 1e-8})
            }),
            "training.optimizer",
        ),
        (
            Box::new(
                |v| v["data"]["split"] = serde_json::json!({"kind": "balanced", "train_per_class": 5000, "validation_per_class": 1000, "seed": 1}),
            ),
            "data.split",
        ),
        (
            Box::new(|v| v["data"]["split"] = serde_json::json!({"kind": "full_train"})),
            "evaluation.every_epoch",
        ),
    ];
    for (edit, field) in cases {
        let err = broken(edit);
        assert!(
            matches!(
                err,
                ConfigError::Invalid { .. } | ConfigError::Schema { .. }
            ),
            "{err}"
        );
        assert_mentions(&err, &[field]);
    }
}

#[test]
fn a_network_too_large_for_memory_is_refused_before_allocating() {
    let err = broken(|v| v["model"]["hidden"][0]["size"] = 2_000_000_000u64.into());
    assert_mentions(&err, &["model.hidden", "GiB"]);
}

#[test]
fn a_name_that_is_a_path_is_refused() {
    for name in ["../escape", "/tmp/abs", "a/b", ".hidden", "tab\tname"] {
        let err = broken(|v| v["name"] = name.into());
        assert_mentions(&err, &["name", "plain name"]);
    }
}

#[test]
fn an_endless_or_huge_config_file_is_refused_without_reading_it_all() {
    let err = ExperimentConfig::load(std::path::Path::new("/dev/zero")).unwrap_err();
    assert!(
        err.to_string().contains("/dev/zero") && err.to_string().contains("is it a config file"),
        "{err}"
    );
}

#[test]
fn missing_file_names_the_file() {
    let err = ExperimentConfig::load(std::path::Path::new("/no/such/config.json")).unwrap_err();
    assert!(err.to_string().contains("/no/such/config.json"), "{err}");
}

#[test]
fn the_readme_example_config_is_valid() {
    let readme = std::fs::read_to_string(configs_dir().join("../README.md")).unwrap();
    let block = readme
        .split("```json\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README has a ```json block");
    let config = ExperimentConfig::from_json(block, "README.md").unwrap();
    config.validate("README.md").unwrap();
}
