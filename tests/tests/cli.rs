//! The `mnist` binary end to end, as a user runs it: train a quick config, evaluate and
//! inspect what it wrote, stop it with Ctrl-C and resume, and every bad input with its
//! message and exit code.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests, benches and examples may panic

use mnist_e2e::{mnist, mnist_command, quick_config, text, write_config};

#[test]
fn train_then_eval_then_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &quick_config("adam_dropout.json", 6000, 2));
    let run = dir.path().join("run");
    let out = mnist(&[
        "train",
        config.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--quiet",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let test_line = stdout
        .lines()
        .find(|l| l.starts_with("test "))
        .unwrap_or_else(|| panic!("{stdout}"));
    let accuracy: f64 = test_line
        .split_whitespace()
        .last()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        accuracy > 0.85,
        "quick adam-dropout reached only {accuracy}:\n{stdout}"
    );

    let model = run.join("model.safetensors");
    let out = mnist(&["eval", model.to_str().unwrap()]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("10000 images") && stdout.contains("confusion matrix"),
        "{stdout}"
    );
    let eval_accuracy: f64 = stdout
        .lines()
        .find(|l| l.starts_with("accuracy"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(eval_accuracy > 0.85, "{stdout}");

    for (file, expect) in [
        (model.clone(), "model (valid)"),
        (
            run.join("checkpoint.safetensors"),
            "checkpoint (checksum verified)",
        ),
        (run.join("config.json"), "experiment config (valid)"),
    ] {
        let out = mnist(&["inspect", file.to_str().unwrap()]);
        let (stdout, stderr) = text(&out);
        assert!(
            out.status.success() && stdout.contains(expect),
            "{stdout}\n{stderr}"
        );
    }
}

#[test]
fn ctrl_c_or_sigterm_saves_a_checkpoint_and_the_printed_command_finishes_identically() {
    let dir = tempfile::tempdir().unwrap();
    // Batch size 1 over 10,000 examples: many batch boundaries, a few seconds of work.
    let config = write_config(
        dir.path(),
        &quick_config("three_layer_relu.json", 10_000, 2),
    );
    let cfg = config.to_str().unwrap();
    // A seed override, which the printed command must carry.
    let whole = dir.path().join("whole");
    let out = mnist(&[
        "train",
        cfg,
        "--out",
        whole.to_str().unwrap(),
        "--quiet",
        "--seed",
        "5",
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    let a = mnist_core::load_model::<f32>(whole.join("model.safetensors")).unwrap();

    for signal in ["INT", "TERM"] {
        let parts = dir.path().join(format!("parts-{signal}"));
        let child = mnist_command(&[
            "train",
            cfg,
            "--out",
            parts.to_str().unwrap(),
            "--quiet",
            "--seed",
            "5",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
        // Wait until training is under way (the config is written first), then signal.
        let started = std::time::Instant::now();
        while !parts.join("config.json").exists() && started.elapsed().as_secs() < 60 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
        let kill = std::process::Command::new("kill")
            .args([format!("-{signal}"), child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let out = child.wait_with_output().unwrap();
        let (stdout, stderr) = text(&out);
        assert_eq!(
            out.status.code(),
            Some(130),
            "SIG{signal}: {stdout}\n{stderr}"
        );
        let checkpoint = parts.join("checkpoint.safetensors");
        let saved = std::fs::read(&checkpoint).unwrap();

        // A fresh run into the same directory is refused and leaves the checkpoint as it was.
        let out = mnist(&["train", cfg, "--out", parts.to_str().unwrap(), "--quiet"]);
        let (_, refused) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{refused}");
        assert!(
            refused.contains("already holds a run")
                && refused.contains("--overwrite")
                && refused.contains(checkpoint.to_str().unwrap()),
            "{refused}"
        );
        assert_eq!(std::fs::read(&checkpoint).unwrap(), saved);

        // The command it printed continues the same run (seed included).
        let command = stderr
            .lines()
            .skip_while(|l| !l.contains("continue with:"))
            .nth(1)
            .unwrap_or_else(|| panic!("says how to continue: {stderr}"));
        let words: Vec<&str> = command.split_whitespace().collect();
        assert_eq!(words.first(), Some(&"mnist"), "{command}");
        assert!(command.contains("--seed 5"), "{command}");
        let mut args = words[1..].to_vec();
        args.push("--quiet");
        let out = mnist(&args);
        assert!(out.status.success(), "{:?}", text(&out));
        let b = mnist_core::load_model::<f32>(parts.join("model.safetensors")).unwrap();
        assert!(
            a.network.bit_identical(&b.network),
            "interrupted (SIG{signal}) + resumed differs from uninterrupted"
        );
    }
}

#[test]
fn bad_inputs_get_their_message_and_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo.json");
    let text_with_typo =
        std::fs::read_to_string(mnist_e2e::root().join("configs/adam_dropout.json"))
            .unwrap()
            .replace("\"learning_rate\"", "\"lerning_rate\"");
    std::fs::write(&typo, text_with_typo).unwrap();
    let half_model = dir.path().join("half.safetensors");
    std::fs::write(&half_model, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":").unwrap();

    let cases: Vec<(Vec<&str>, i32, Vec<&str>)> = vec![
        (
            vec!["train", typo.to_str().unwrap()],
            1,
            vec!["typo.json", "lerning_rate"],
        ),
        (
            vec!["train", "/no/such/config.json"],
            1,
            vec!["/no/such/config.json"],
        ),
        (
            vec!["eval", half_model.to_str().unwrap()],
            1,
            vec!["half.safetensors"],
        ),
        (
            vec!["inspect", half_model.to_str().unwrap()],
            1,
            vec!["half.safetensors"],
        ),
        (vec!["train"], 2, vec!["Usage"]),
        (vec!["fly"], 2, vec!["unrecognized subcommand"]),
        (
            vec!["eval", "m.safetensors", "--split", "dev"],
            2,
            vec!["invalid value 'dev'"],
        ),
    ];
    for (args, code, needles) in cases {
        let out = mnist(&args);
        let (stdout, stderr) = text(&out);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{args:?}\n{stdout}\n{stderr}"
        );
        for n in needles {
            assert!(
                stderr.contains(n),
                "{args:?}: stderr should mention {n:?}:\n{stderr}"
            );
        }
    }
}

#[test]
fn augment_writes_a_preview_grid() {
    use mnist_dataset::augment::{AugmentConfig, ElasticConfig};
    let dir = tempfile::tempdir().unwrap();
    let mut config = quick_config("adam_dropout.json", 1000, 1);
    config.data.augmentation = Some(AugmentConfig {
        translate: 2.0,
        rotate_degrees: 10.0,
        scale: 0.1,
        elastic: Some(ElasticConfig {
            alpha: 34.0,
            sigma: 4.0,
        }),
    });
    let cfg = write_config(dir.path(), &config);
    let png = dir.path().join("grid.png");
    let out = mnist(&[
        "augment",
        cfg.to_str().unwrap(),
        "--out",
        png.to_str().unwrap(),
        "--count",
        "3",
        "--variants",
        "2",
    ]);
    assert!(out.status.success(), "{:?}", text(&out));
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
    // IHDR width and height: 3 tiles of 30 px + 2 px, doubled; 3 rows likewise.
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), (184, 184));

    // Without augmentation in the config there is nothing to show: a clear error.
    let plain = write_config(dir.path(), &quick_config("one_hidden_relu.json", 1000, 1));
    let out = mnist(&[
        "augment",
        plain.to_str().unwrap(),
        "--out",
        png.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).1.contains("data.augmentation"),
        "{:?}",
        text(&out)
    );
}
