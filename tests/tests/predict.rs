//! `mnist predict` end to end: train a small model in-process, render real MNIST test digits
//! as image files (as published, inverted and enlarged, off-centre on a larger canvas; PNG,
//! JPEG and BMP), and run the actual `mnist` binary on them and on broken files.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests, benches and examples may panic

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use image::{GrayImage, ImageFormat, imageops};
use mnist_dataset::{DataSources, LabeledImages, Mnist};
use mnist_train::{ExperimentConfig, RunOptions};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn local_sources() -> DataSources {
    DataSources {
        cache_dir: None,
        mirrors: vec![],
        ..Default::default()
    }
}

fn mnist() -> &'static Mnist {
    static MNIST: OnceLock<Mnist> = OnceLock::new();
    MNIST.get_or_init(|| Mnist::load(&local_sources()).expect("the repository's MNIST copy"))
}

/// A model trained once per test run: adam_dropout on 10,000 examples for 2 epochs.
fn model() -> &'static Path {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("predict-e2e-model");
        let mut config =
            ExperimentConfig::load(&workspace_root().join("configs/adam_dropout.json")).unwrap();
        config.data.train_limit = Some(10_000);
        config.data.test_limit = Some(1000);
        config.training.epochs = 2;
        let started = std::time::Instant::now();
        let data = mnist_train::prepare_from(&config, mnist()).unwrap();
        // The directory outlives test runs: each replaces the model the last one trained.
        let opts = RunOptions {
            overwrite: true,
            ..RunOptions::new(&dir)
        };
        let outcome = mnist_train::run(&config, &data, &opts).unwrap();
        eprintln!(
            "trained model in {:.1}s: {}",
            started.elapsed().as_secs_f64(),
            summary_line(&outcome)
        );
        let path = dir.join("model.safetensors");
        assert!(path.is_file(), "training did not write {}", path.display());
        path
    })
}

fn summary_line(outcome: &mnist_train::RunOutcome) -> String {
    format!("{outcome:?}").chars().take(200).collect()
}

/// The `mnist` binary next to this test's deps directory, built (fresh) by cargo first.
fn mnist_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>/deps/<test>")
            .to_path_buf();
        let bin = profile_dir.join(format!("mnist{}", std::env::consts::EXE_SUFFIX));
        let mut build = Command::new(env!("CARGO"));
        build.current_dir(workspace_root()).args([
            "build",
            "--quiet",
            "-p",
            "mnist-cli",
            "--bin",
            "mnist",
        ]);
        match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => {}
            Some("release") => {
                build.arg("--release");
            }
            Some(other) => {
                build.args(["--profile", other]);
            }
        }
        // The target dir is the parent of the profile dir (CARGO_TARGET_DIR may move it).
        if let Some(target) = profile_dir.parent() {
            build.env("CARGO_TARGET_DIR", target);
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "cargo build -p mnist-cli failed");
        assert!(bin.is_file(), "no binary at {}", bin.display());
        bin
    })
}

fn mnist_cmd(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(mnist_bin())
        .arg("predict")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn predict(extra: &[&str], files: &[PathBuf]) -> Output {
    let mut args: Vec<&std::ffi::OsStr> = extra.iter().map(|s| s.as_ref()).collect();
    args.push(model().as_os_str());
    args.extend(files.iter().map(|f| f.as_os_str()));
    mnist_cmd(&args)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn test_digit(test: &LabeledImages, i: usize) -> (GrayImage, u8) {
    let pixels = test.image(i).unwrap().to_vec();
    (
        GrayImage::from_raw(28, 28, pixels).unwrap(),
        test.labels()[i],
    )
}

/// The ink's bounding box of a white-on-black image, cropped.
fn crop_to_ink(img: &GrayImage) -> GrayImage {
    let (mut x0, mut y0, mut x1, mut y1) = (u32::MAX, u32::MAX, 0, 0);
    for (x, y, p) in img.enumerate_pixels() {
        if p.0[0] > 0 {
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
        }
    }
    imageops::crop_imm(img, x0, y0, x1 - x0, y1 - y0).to_image()
}

fn invert(img: &mut GrayImage) {
    img.pixels_mut().for_each(|p| p.0[0] = 255 - p.0[0]);
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Variant {
    /// The 28x28 test image as published.
    AsIs,
    /// Dark on light paper (grey 230), enlarged 3x.
    InvertedLarge,
    /// Enlarged 2x and pasted into a corner of a 60x50 black canvas.
    OffCentre,
}

fn render(test: &LabeledImages, i: usize, variant: Variant) -> GrayImage {
    let (img, _) = test_digit(test, i);
    match variant {
        Variant::AsIs => img,
        Variant::InvertedLarge => {
            let mut big = imageops::resize(&img, 84, 84, imageops::FilterType::Triangle);
            invert(&mut big);
            big.pixels_mut().for_each(|p| p.0[0] = p.0[0].min(230));
            big
        }
        Variant::OffCentre => {
            let digit = crop_to_ink(&img);
            let digit = imageops::resize(
                &digit,
                digit.width() * 2,
                digit.height() * 2,
                imageops::FilterType::Triangle,
            );
            let mut canvas = GrayImage::new(60, 50);
            // Alternate corners: top-left, bottom-right.
            let (x, y) = if i.is_multiple_of(2) {
                (1, 1)
            } else {
                (60 - digit.width() - 1, 50 - digit.height() - 1)
            };
            imageops::replace(&mut canvas, &digit, i64::from(x), i64::from(y));
            canvas
        }
    }
}

/// How many test digits to render: 30, or `MNIST_PREDICT_E2E_COUNT` (for a larger measurement).
fn digit_count() -> usize {
    std::env::var("MNIST_PREDICT_E2E_COUNT")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(30, |n| n.clamp(3, 10_000) / 3 * 3)
}

/// Writes the first `count` test digits rendered in turn as the 3 variants and as PNG, JPEG
/// and BMP; returns (path, label, variant).
fn write_digits(dir: &Path, count: usize) -> Vec<(PathBuf, u8, Variant)> {
    let test = &mnist().test;
    let variants = [Variant::AsIs, Variant::InvertedLarge, Variant::OffCentre];
    let formats = [
        (ImageFormat::Png, "png"),
        (ImageFormat::Jpeg, "jpg"),
        (ImageFormat::Bmp, "bmp"),
    ];
    (0..count)
        .map(|i| {
            let variant = variants[i % 3];
            let (format, ext) = formats[(i / 3) % 3];
            let path = dir.join(format!("digit{i:05}.{ext}"));
            render(test, i, variant)
                .save_with_format(&path, format)
                .unwrap();
            (path, test.labels()[i], variant)
        })
        .collect()
}

#[test]
fn rendered_test_digits_are_mostly_recognised() {
    let dir = tempfile::tempdir().unwrap();
    let count = digit_count();
    let digits = write_digits(dir.path(), count);

    // Text output, one file at a time in the order given.
    let files: Vec<PathBuf> = digits.iter().map(|d| d.0.clone()).collect();
    let out = predict(&["--top", "3"], &files);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), digits.len(), "{stdout}");
    let mut right = [0usize; 3];
    for ((path, label, variant), line) in digits.iter().zip(&lines) {
        let prefix = format!("{}: ", path.display());
        let rest = line
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("line {line:?} should start with {prefix:?}"));
        let (digit, top) = rest
            .split_once("  (")
            .unwrap_or_else(|| panic!("no top list in {line:?}"));
        assert_eq!(
            top.matches(", ").count(),
            2,
            "three top entries in {line:?}"
        );
        let digit: u8 = digit.parse().unwrap();
        if digit == *label {
            right[*variant as usize] += 1;
        } else {
            eprintln!("wrong: {line} (label {label}, {variant:?})");
        }
    }
    let total: usize = right.iter().sum();
    let per_variant = count / 3;
    eprintln!(
        "right out of {per_variant}: as-is {}, inverted 3x {}, off-centre 2x {}; total {total}/{count}; \
         the model on the raw 28x28 images: {}/{count}",
        right[0],
        right[1],
        right[2],
        raw_model_right(count)
    );
    assert!(
        total * 10 >= count * 8,
        "only {total}/{count} right: {right:?}"
    );
    assert!(
        right.iter().all(|&r| r * 10 >= per_variant * 7),
        "a variant is mostly wrong: {right:?}"
    );

    // JSON output for the whole folder: sorted, parseable, consistent with the text output.
    let out = predict(&["--json", "--top", "2"], &[dir.path().to_path_buf()]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let values: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(values.len(), digits.len());
    for (v, ((path, _, _), line)) in values.iter().zip(digits.iter().zip(&lines)) {
        assert_eq!(
            v["file"].as_str(),
            Some(path.display().to_string().as_str())
        );
        let digit = v["digit"].as_u64().unwrap();
        assert!(
            line.contains(&format!(": {digit}  (")),
            "json {v} vs text {line}"
        );
        let probs: Vec<f64> = v["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_f64().unwrap())
            .collect();
        assert_eq!(probs.len(), 10);
        assert!((probs.iter().sum::<f64>() - 1.0).abs() < 1e-3);
        let top = v["top"].as_array().unwrap();
        assert_eq!(top.len(), 2);
        assert_eq!(top[0][0].as_u64(), Some(digit));
        assert!(top[0][1].as_f64() >= top[1][1].as_f64());
    }
}

/// How many of the first `count` test images the model gets right fed directly (baseline).
fn raw_model_right(count: usize) -> usize {
    let model = mnist_core::load_model::<f32>(model()).unwrap();
    let test = &mnist().test;
    let mut x = vec![0.0f32; count * 784];
    for (i, row) in x.chunks_exact_mut(784).enumerate() {
        model.preprocessing.apply_u8(test.image(i).unwrap(), row);
    }
    let predicted = model
        .network
        .predict(&x, count, mnist_core::faer::Par::Seq)
        .unwrap();
    predicted
        .iter()
        .zip(test.labels())
        .filter(|(p, l)| p == l)
        .count()
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut c = (data.len() as u32).to_be_bytes().to_vec();
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    c.extend_from_slice(&body);
    c.extend_from_slice(&crc32(&body).to_be_bytes());
    c
}

/// A PNG whose header claims `width x height` 8-bit grayscale pixels, with a tiny IDAT.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    png.extend(chunk(b"IHDR", &ihdr));
    // zlib stream of a single filter byte 0 and one pixel 0.
    png.extend(chunk(
        b"IDAT",
        &[0x78, 0x01, 0x63, 0x60, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01],
    ));
    png.extend(chunk(b"IEND", &[]));
    png
}

#[test]
fn crc32_matches_the_png_reference() {
    // The CRC of an empty IEND chunk, as every PNG ends with.
    assert_eq!(crc32(b"IEND"), 0xAE42_6082);
}

#[test]
fn bad_files_fail_one_by_one_and_the_rest_is_predicted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let test = &mnist().test;
    let good_a = d.join("a_good.png");
    render(test, 0, Variant::AsIs).save(&good_a).unwrap();
    let good_b = d.join("z_good.bmp");
    render(test, 1, Variant::InvertedLarge)
        .save(&good_b)
        .unwrap();

    let text_file = d.join("text.png");
    std::fs::write(&text_file, "this is not an image\n").unwrap();
    let truncated = d.join("truncated.png");
    let full = std::fs::read(&good_a).unwrap();
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();
    let zero = d.join("zero.png");
    std::fs::write(&zero, png_claiming(0, 0)).unwrap();
    let one = d.join("one_blank.png");
    GrayImage::from_pixel(1, 1, image::Luma([255]))
        .save(&one)
        .unwrap();
    let blank = d.join("blank_white.png");
    GrayImage::from_pixel(40, 40, image::Luma([255]))
        .save(&blank)
        .unwrap();
    let huge = d.join("huge.png");
    std::fs::write(&huge, png_claiming(100_000, 100_000)).unwrap();
    let missing = d.join("missing.png");

    let bad = [&text_file, &truncated, &zero, &one, &blank, &huge, &missing];
    let mut files = vec![good_a.clone()];
    files.extend(bad.iter().map(|p| p.to_path_buf()));
    files.push(good_b.clone());

    // Text mode: predictions on stdout, one error per bad file on stderr, exit 1.
    let out = predict(&[], &files);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with(&format!("{}: {}  (", good_a.display(), test.labels()[0])),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with(&format!("{}: ", good_b.display())),
        "{stdout}"
    );
    let error_lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(error_lines.len(), bad.len(), "{stderr}");
    for path in bad {
        assert!(
            error_lines
                .iter()
                .any(|l| l.contains(&path.display().to_string())),
            "no error naming {}: {stderr}",
            path.display()
        );
    }
    let error_for = |p: &Path| -> String {
        error_lines
            .iter()
            .find(|l| l.contains(&p.display().to_string()))
            .map(|l| l.to_string())
            .unwrap_or_default()
    };
    eprintln!("{stderr}");
    assert!(
        error_for(&blank).contains("blank: no strokes found"),
        "{stderr}"
    );
    assert!(error_for(&one).contains("blank"), "{stderr}");
    assert!(error_for(&huge).contains("refused"), "{stderr}");
    assert!(error_for(&text_file).contains("cannot decode"), "{stderr}");
    assert!(error_for(&truncated).contains("cannot decode"), "{stderr}");
    assert!(error_for(&missing).contains("cannot open"), "{stderr}");

    // JSON mode: one parseable line per file, in order, errors inline.
    let out = predict(&["--json"], &files);
    assert_eq!(out.status.code(), Some(1));
    let values: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(values.len(), files.len());
    for (v, f) in values.iter().zip(&files) {
        assert_eq!(v["file"].as_str(), Some(f.display().to_string().as_str()));
        let is_good = f == &good_a || f == &good_b;
        assert_eq!(v.get("digit").is_some(), is_good, "{v}");
        assert_eq!(v.get("error").is_some(), !is_good, "{v}");
    }
    assert_eq!(
        values[0]["digit"].as_u64(),
        Some(u64::from(test.labels()[0]))
    );
}

#[test]
fn a_folder_without_images_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "no images here").unwrap();
    let out = predict(&[], &[dir.path().to_path_buf()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&dir.path().display().to_string()) && stderr.contains("no .png"),
        "{stderr}"
    );
}

#[test]
fn model_and_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("a.png");
    render(&mnist().test, 0, Variant::AsIs)
        .save(&image)
        .unwrap();

    let no_model = dir.path().join("no-such-model.safetensors");
    let out = mnist_cmd(&[no_model.as_os_str(), image.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&no_model.display().to_string()), "{stderr}");
    assert!(out.stdout.is_empty());

    // A file that is not a model at all.
    let out = mnist_cmd(&[image.as_os_str(), image.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(&image.display().to_string()));

    // No inputs: clap's usage error.
    let out = mnist_cmd(&[model().as_os_str()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = mnist_cmd(&[]);
    assert_eq!(out.status.code(), Some(2));
}
