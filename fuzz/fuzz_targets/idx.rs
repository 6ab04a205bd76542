//! IDX reader: raw and gzip bytes through the decompressor (capped), both parsers, the file
//! reader, and the pairing of images with labels. Nothing may panic; every size is checked
//! before it is allocated.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mnist_dataset::LabeledImages;
use mnist_dataset::idx::{decompress, parse_images, parse_labels, read_file};

/// A small cap keeps a gzip bomb from costing the fuzzer more than a megabyte.
const CAP: u64 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let images = parse_images(data.to_vec(), "fuzz");
    let labels = parse_labels(data.to_vec(), "fuzz");
    if let (Ok(images), Ok(labels)) = (images, labels) {
        let _ = LabeledImages::new(images, labels, "images", "labels");
    }
    if let Ok(bytes) = decompress(data.to_vec(), "fuzz", CAP) {
        assert!(bytes.len() as u64 <= CAP, "decompress exceeded its cap");
        if let Ok(images) = parse_images(bytes.clone(), "fuzz") {
            assert_eq!(images.pixels.len(), images.count * images.rows * images.cols);
        }
        if let Ok(labels) = parse_labels(bytes, "fuzz") {
            assert!(labels.iter().all(|&l| l <= 9));
        }
    }
    // The file reader has its own path (magic sniffing on a stream).
    let path = std::env::temp_dir().join(format!("mnist-fuzz-idx-{}", std::process::id()));
    if std::fs::write(&path, data).is_ok() {
        if let Ok(bytes) = read_file(&path, CAP) {
            assert!(bytes.len() as u64 <= CAP, "read_file exceeded its cap");
        }
    }
});
