//! Image preprocessing of `mnist predict`: bytes decoded as PNG/JPEG/BMP under the same
//! limits as the CLI (`crates/mnist-cli/src/predict.rs`), flattened to luminance and
//! digitized; and raw luminance buffers of any shape straight into `digitize`.
#![no_main]

use image::{ImageReader, Limits};
use libfuzzer_sys::fuzz_target;
use mnist_dataset::digitize::digitize;

/// The CLI's `MAX_SIDE` and `MAX_ALLOC`.
const MAX_SIDE: u32 = 10_000;
const MAX_ALLOC: u64 = 256 * 1024 * 1024;

fuzz_target!(|data: &[u8]| {
    // Raw path: the first two bytes give width and height (0..=255 each), the rest pixels,
    // of any length (mismatches must be refused, not indexed).
    if let [w, h, pixels @ ..] = data {
        if let Ok(d) = digitize(usize::from(*w), usize::from(*h), pixels) {
            assert_eq!(d.pixels.len(), 28 * 28);
        }
        // And a buffer that fits its shape exactly.
        let (w, h) = (usize::from(*w % 64) + 1, usize::from(*h % 64) + 1);
        let mut exact = pixels.to_vec();
        exact.resize(w * h, 0);
        let _ = digitize(w, h, &exact);
    }
    // Decoder path, as `mnist predict` reads a file.
    let Ok(mut reader) = ImageReader::new(std::io::Cursor::new(data)).with_guessed_format() else {
        return;
    };
    if reader.format().is_none() {
        return;
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    reader.limits(limits);
    if let Ok(image) = reader.decode() {
        let luma = image.to_luma8();
        let (w, h) = (luma.width() as usize, luma.height() as usize);
        let _ = digitize(w, h, luma.as_raw());
    }
});
