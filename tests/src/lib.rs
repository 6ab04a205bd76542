//! Shared helpers of the end-to-end tests in `tests/tests/`: the real data, quick configs, and
//! the `mnist` binary as a user runs it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support may panic

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use mnist_dataset::{DataSources, Mnist};
use mnist_train::ExperimentConfig;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// MNIST from the repository's copy only (no cache, no network), loaded once per test binary.
pub fn mnist_data() -> &'static Mnist {
    static MNIST: OnceLock<Mnist> = OnceLock::new();
    MNIST.get_or_init(|| Mnist::load(&offline_sources()).expect("data/mnist"))
}

/// Sources that read only the repository's copy.
pub fn offline_sources() -> DataSources {
    DataSources {
        cache_dir: None,
        mirrors: Vec::new(),
        ..DataSources::default()
    }
}

/// A reference config from `configs/`, shortened to `train` examples and `epochs` epochs
/// (1,000 validation and 2,000 test images).
pub fn quick_config(file: &str, train: usize, epochs: usize) -> ExperimentConfig {
    let mut c = ExperimentConfig::load(&root().join("configs").join(file)).unwrap();
    c.data.train_limit = Some(train);
    c.data.validation_limit = Some(1000);
    c.data.test_limit = Some(2000);
    c.training.epochs = epochs;
    c
}

/// Writes `config` as JSON into `dir` and returns its path.
pub fn write_config(dir: &Path, config: &ExperimentConfig) -> PathBuf {
    let path = dir.join(format!("{}.json", config.name));
    std::fs::write(&path, config.to_json()).unwrap();
    path
}

/// The `mnist` binary of this build (built on first use if this test binary was built alone).
pub fn mnist_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // Test binaries live in target/<profile>/deps; the CLI in target/<profile>.
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
        let bin = profile_dir.join(format!("mnist{}", std::env::consts::EXE_SUFFIX));
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "mnist-cli", "--bin", "mnist"])
            .current_dir(root())
            .status()
            .unwrap();
        assert!(status.success(), "building the mnist binary failed");
        assert!(bin.is_file(), "no binary at {}", bin.display());
        bin
    })
    .clone()
}

/// `mnist <args>` with an offline data lookup, run to completion.
pub fn mnist(args: &[&str]) -> Output {
    mnist_command(args).output().unwrap()
}

/// `mnist <args>` ready to spawn, with the data lookup kept offline and away from the
/// user's cache.
pub fn mnist_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(mnist_bin());
    cmd.args(args)
        .env("MNIST_MIRRORS", root().join("data/mnist"))
        .env(
            "MNIST_CACHE_DIR",
            std::env::temp_dir().join("mnist-rs-e2e-cache"),
        )
        .env("RUST_LOG", "warn");
    cmd
}

/// Standard output and error of a finished command, for assertion messages.
pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
