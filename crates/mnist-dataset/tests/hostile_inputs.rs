//! Hostile inputs to the dataset crate, run in CI: the proptest counterpart of the cargo-fuzz
//! targets `idx` and `digitize` (fuzz/), plus every input the fuzzer ever crashed on
//! (`tests/fuzz_regressions/<target>/`), plus the image/label pairing.
//!
//! Each input goes through the same checks as the fuzz target: nothing panics, a decompressed
//! file never exceeds its cap, whatever parses is self-consistent.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use std::path::Path;
use std::sync::OnceLock;

use mnist_dataset::digitize::digitize;
use mnist_dataset::idx::{decompress, encode_images, encode_labels, parse_images, parse_labels};
use mnist_dataset::{DatasetError, LabeledImages};
use proptest::prelude::*;

const CAP: u64 = 1 << 20;

/// The `idx` fuzz target's checks.
fn check_idx(data: &[u8]) {
    let images = parse_images(data.to_vec(), "fuzz");
    let labels = parse_labels(data.to_vec(), "fuzz");
    if let (Ok(images), Ok(labels)) = (images, labels) {
        let _ = LabeledImages::new(images, labels, "images", "labels");
    }
    if let Ok(bytes) = decompress(data.to_vec(), "fuzz", CAP) {
        assert!(bytes.len() as u64 <= CAP, "decompress exceeded its cap");
        if let Ok(images) = parse_images(bytes.clone(), "fuzz") {
            assert_eq!(
                images.pixels.len(),
                images.count * images.rows * images.cols
            );
        }
        if let Ok(labels) = parse_labels(bytes, "fuzz") {
            assert!(labels.iter().all(|&l| l <= 9));
        }
    }
}

/// The raw half of the `digitize` fuzz target (the decoder half lives in the CLI).
fn check_digitize(data: &[u8]) {
    if let [w, h, pixels @ ..] = data {
        if let Ok(d) = digitize(usize::from(*w), usize::from(*h), pixels) {
            assert_eq!(d.pixels.len(), 28 * 28);
        }
        let (w, h) = (usize::from(*w % 64) + 1, usize::from(*h % 64) + 1);
        let mut exact = pixels.to_vec();
        exact.resize(w * h, 0);
        let _ = digitize(w, h, &exact);
    }
}

/// Every saved crash input of a fuzz target, through its checks.
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
fn idx_fuzz_regressions() {
    replay("idx", check_idx);
}

#[test]
fn digitize_fuzz_regressions() {
    replay("digitize", check_digitize);
}

/// The real test-set labels (10,008 bytes) and the gzip they ship in.
fn real_labels() -> &'static (Vec<u8>, Vec<u8>) {
    static FILES: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    FILES.get_or_init(|| {
        let gz = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../data/mnist/t10k-labels-idx1-ubyte.gz"),
        )
        .unwrap();
        let plain = decompress(gz.clone(), "t10k-labels", CAP).unwrap();
        (plain, gz)
    })
}

/// A few byte edits, then maybe a cut or an extension.
fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8)], resize: Option<usize>) -> Vec<u8> {
    for &(at, v) in edits {
        if !bytes.is_empty() {
            let i = at % bytes.len();
            bytes[i] = v;
        }
    }
    if let Some(n) = resize {
        bytes.resize(n % (bytes.len() + 64), 0xAB);
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        check_idx(&bytes);
        check_digitize(&bytes);
    }

    #[test]
    fn mutated_real_labels_never_panic(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        resize in proptest::option::of(any::<usize>()),
        header_edit in proptest::option::of((0usize..8, any::<u8>())),
    ) {
        let (plain, gz) = real_labels();
        let mut plain = mutate(plain.clone(), &edits, resize);
        // Edits aimed at the header (magic, count) as well as anywhere.
        if let Some((at, v)) = header_edit
            && at < plain.len()
        {
            plain[at] = v;
        }
        check_idx(&plain);
        check_idx(&mutate(gz.clone(), &edits, resize));
    }

    /// Any header with a valid magic number and any dimensions, over a short payload: refused
    /// (truncated or trailing), never allocated to the size it claims.
    #[test]
    fn any_claimed_dimensions_are_checked_against_the_payload(
        dims in proptest::collection::vec(any::<u32>(), 3),
        payload in 0usize..300,
    ) {
        let mut bytes = 0x0803u32.to_be_bytes().to_vec();
        for d in &dims {
            bytes.extend_from_slice(&d.to_be_bytes());
        }
        bytes.resize(bytes.len() + payload, 7);
        let claimed = dims.iter().map(|&d| u128::from(d)).product::<u128>();
        match parse_images(bytes.clone(), "forged") {
            Ok(images) => prop_assert_eq!(claimed, payload as u128, "{:?}", images.count),
            Err(e) => prop_assert!(
                matches!(e, DatasetError::Truncated { .. } | DatasetError::TrailingBytes { .. } | DatasetError::DimensionMismatch { .. }),
                "{e}"
            ),
        }
        check_idx(&bytes);
    }

    #[test]
    fn any_image_shape_digitizes_or_is_refused(
        w in 0usize..80,
        h in 0usize..80,
        fill in any::<u8>(),
        strokes in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..200),
        len_delta in -2isize..3,
    ) {
        let len = (w * h).saturating_add_signed(len_delta);
        let mut pixels = vec![fill; len];
        for (at, v) in strokes {
            if len > 0 {
                pixels[at % len] = v;
            }
        }
        if let Ok(d) = digitize(w, h, &pixels) {
            prop_assert_eq!(d.pixels.len(), 28 * 28);
            prop_assert_eq!(len, w * h);
        }
    }
}

#[test]
fn image_and_label_counts_must_match() {
    let images = parse_images(encode_images(28, 28, &[0u8; 3 * 784]), "imgs.idx").unwrap();
    let labels = parse_labels(encode_labels(&[1, 2]), "labels.idx").unwrap();
    let err = LabeledImages::new(images, labels, "imgs.idx", "labels.idx").unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            DatasetError::CountMismatch {
                image_count: 3,
                label_count: 2,
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("imgs.idx") && msg.contains("labels.idx") && msg.contains("3 images"),
        "names both files and both counts: {msg}"
    );
}

#[test]
fn huge_dimensions_are_refused_by_the_capped_reader_before_allocating() {
    // 4e9 images of 28x28 claimed by a 16-byte gzip'd header: refused from the header alone.
    let mut header = 0x0803u32.to_be_bytes().to_vec();
    for d in [u32::MAX, 28, 28] {
        header.extend_from_slice(&d.to_be_bytes());
    }
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut e, &header).unwrap();
    let err = decompress(e.finish().unwrap(), "huge.gz", CAP).unwrap_err();
    assert!(matches!(err, DatasetError::TooLarge { .. }), "{err}");
}
