//! Experiment configs: JSON text through the parser and the validator, then everything the
//! trainer derives from a valid config before any work. A valid config must survive the
//! round trip through the copy written into the run directory (resume re-reads it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mnist_train::ExperimentConfig;

fuzz_target!(|data: &[u8]| {
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
});
