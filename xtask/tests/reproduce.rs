//! `cargo xtask reproduce two-layer-sigmoid --quick` as a user runs it (the binary itself),
//! on the real data, into a temporary results directory.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

use std::process::Command;

#[test]
fn quick_reproduce_of_two_layer_sigmoid_prints_the_table_and_writes_the_run() {
    let results = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "reproduce",
            "two-layer-sigmoid",
            "--quick",
            "--quiet",
            "--results",
        ])
        .arg(results.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("| experiment | published | ours | band | result | wall time |"),
        "{stdout}"
    );
    let row = stdout
        .lines()
        .find(|l| l.contains("[two-layer-sigmoid]"))
        .unwrap_or_else(|| panic!("no row:\n{stdout}"));
    assert!(
        row.contains("test ~0.93") && row.contains("test >= 0.92") && row.contains("quick run"),
        "{row}"
    );
    // The short run learned something real: the "ours" cell reads "test 0.xxxx (train ...)".
    let cells: Vec<&str> = row.split('|').map(str::trim).collect();
    let ours: f64 = cells
        .get(3)
        .and_then(|c| c.strip_prefix("test "))
        .and_then(|c| c.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no accuracy in {row}"));
    assert!(ours > 0.5, "quick two-layer-sigmoid reached only {ours}");
    let dir = results.path().join("two-layer-sigmoid");
    for f in [
        "config.json",
        "metrics.json",
        "metrics.csv",
        "model.safetensors",
        "confusion.csv",
        "loss.png",
        "accuracy.png",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
}

#[test]
fn unknown_reference_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["reproduce", "two-layer-sigmoud", "--quick"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no reference named \"two-layer-sigmoud\"")
            && stderr.contains("two-layer-sigmoid"),
        "{stderr}"
    );
}
