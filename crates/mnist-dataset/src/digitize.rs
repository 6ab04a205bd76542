//! From any grayscale picture of a digit to a 28x28 MNIST-style image.
//!
//! MNIST was made by fitting each digit into a 20x20 box (keeping its aspect ratio, with
//! anti-aliasing) and then translating it so that its centre of mass sits at the centre of
//! a 28x28 field. [`digitize`] repeats those steps on an arbitrary luminance image:
//!
//! 1. **Polarity**: the background level is the median of the border pixels. If it is light
//!    (dark ink on paper), the image is inverted so that ink is bright, as in MNIST.
//! 2. **Ink**: a pixel's ink is its brightness above the background. A pixel counts as ink
//!    for cropping if it exceeds a threshold relative to the strongest ink (and above the
//!    border's noise level), and has at least one ink neighbour, so isolated specks of noise
//!    do not stretch the box. Nothing above the noise: [`DigitizeError::Blank`], or
//!    [`DigitizeError::BusyBackground`] when the border itself is noisy. Ink shaped as no
//!    MNIST digit is (far wider than tall, or a solid square-ish blob):
//!    [`DigitizeError::NotADigit`].
//! 3. **Contrast**: ink is stretched so that the typical stroke is 255 and faint background
//!    is 0.
//! 4. **Scale**: the crop is resampled (area averaging when shrinking, bilinear when
//!    enlarging) so that its longer side is 20 pixels.
//! 5. **Centre**: the result is placed in a 28x28 black frame with its centre of mass at
//!    pixel (14, 14) (row and column indices; MNIST's mean), rounded to whole pixels and
//!    clamped so the digit stays inside the frame.
//!
//! The function is pure (no image decoding: callers hand it luminance bytes) and never
//! panics on any size or content.
//!
//! ```
//! use mnist_dataset::digitize::digitize;
//!
//! // A dark vertical bar on white paper, 40 x 60.
//! let (w, h) = (40, 60);
//! let mut pixels = vec![255u8; w * h];
//! for y in 10..50 {
//!     for x in 18..23 {
//!         pixels[y * w + x] = 0;
//!     }
//! }
//! let digit = digitize(w, h, &pixels)?;
//! assert!(digit.inverted);
//! assert_eq!(digit.pixels.len(), 28 * 28);
//! assert_eq!(digit.pixels[14 * 28 + 14], 255); // the bar is at the centre, bright
//! assert_eq!(digit.pixels[0], 0); // the background is black
//! # Ok::<(), mnist_dataset::digitize::DigitizeError>(())
//! ```

use crate::files::{IMAGE_PIXELS, IMAGE_SIDE};

/// Side of the box the digit is scaled to fit (MNIST: 20).
pub const FIT_SIDE: usize = 20;

/// Where the centre of mass is placed, in pixel indices (row and column).
pub const CENTRE: f64 = 14.0;

/// The smallest difference from the background (on 0..=255) that can count as ink.
const MIN_CONTRAST: u8 = 40;

/// Border noise (median absolute deviation, on 0..=255) from which an image without ink is
/// called busy rather than blank.
const BUSY_NOISE: f64 = 16.0;

/// Ink boxes wider than this many times their height are refused (MNIST's widest: 2.5).
const MAX_WIDTH_TO_HEIGHT: f64 = 3.0;

/// Square-ish ink boxes (at least half as wide as tall) fuller than this are refused
/// (MNIST's fullest: 0.855).
const MAX_SOLID_FILL: f64 = 0.92;

/// Why an image could not be turned into a digit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigitizeError {
    #[error(
        "the image is empty ({width}x{height} pixels); use an image that contains a drawn digit"
    )]
    Empty { width: usize, height: usize },

    #[error(
        "the pixel buffer has {got} bytes but a {width}x{height} grayscale image needs {expected}; \
         pass one luminance byte per pixel, row by row"
    )]
    BufferLength {
        width: usize,
        height: usize,
        expected: usize,
        got: usize,
    },

    #[error("the image is too large ({width}x{height} pixels); scale it down first")]
    TooLarge { width: usize, height: usize },

    #[error("the image is blank: no strokes found; draw the digit darker/thicker")]
    Blank,

    #[error(
        "the background is not plain (its border varies by about {noise} levels of 255), so no \
         digit stands out; crop the image to one digit on a plain background"
    )]
    BusyBackground { noise: u8 },

    #[error("no digit found: {0}; use an image of one handwritten digit")]
    NotADigit(String),
}

/// Where the ink was found in the input image (pixel indices, inclusive start, exclusive end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InkBox {
    pub x0: usize,
    pub y0: usize,
    pub x1: usize,
    pub y1: usize,
}

impl InkBox {
    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.x1 - self.x0
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.y1 - self.y0
    }
}

/// A digit in MNIST's format and how it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digitized {
    /// 28x28 row-major pixels, white (255) ink on black (0), as in the MNIST files.
    pub pixels: [u8; IMAGE_PIXELS],
    /// Whether the input was dark ink on a light background (and so was inverted).
    pub inverted: bool,
    /// The crop of the input that was scaled into the 20x20 box.
    pub ink_box: InkBox,
    /// The background level of the input (after inversion), 0..=255.
    pub background: u8,
}

/// Turns a `width x height` row-major luminance image into a 28x28 MNIST-style digit.
///
/// See the [module documentation](self) for the steps.
///
/// # Errors
///
/// [`DigitizeError::Empty`] for a 0-pixel image, [`DigitizeError::BufferLength`] if
/// `pixels.len() != width * height`, [`DigitizeError::Blank`] if no ink stands out from the
/// background.
pub fn digitize(width: usize, height: usize, pixels: &[u8]) -> Result<Digitized, DigitizeError> {
    if width == 0 || height == 0 {
        return Err(DigitizeError::Empty { width, height });
    }
    let expected = width
        .checked_mul(height)
        .ok_or(DigitizeError::TooLarge { width, height })?;
    if pixels.len() != expected {
        return Err(DigitizeError::BufferLength {
            width,
            height,
            expected,
            got: pixels.len(),
        });
    }

    // 1. Polarity from the border's median.
    let border = border_pixels(width, height, pixels);
    let raw_background = median(&border);
    let inverted = raw_background > 127;
    let value = |v: u8| if inverted { 255 - v } else { v };
    let background = value(raw_background);

    // 2. Ink above the background, and the noise level of the border.
    let ink: Vec<u8> = pixels
        .iter()
        .map(|&v| value(v).saturating_sub(background))
        .collect();
    let peak = ink.iter().copied().max().unwrap_or(0);
    // Noise: the median absolute deviation of the border from the background (robust to ink
    // touching the border). Gaussian noise of scale s has a MAD of about 0.67 s, so 4.5 MAD
    // plus a margin keeps almost all of it below the threshold.
    let deviations: Vec<u8> = border
        .iter()
        .map(|&v| value(v).abs_diff(background))
        .collect();
    let noise = f64::from(median(&deviations));
    let floor_from_noise = (noise * 4.5 + 8.0).min(255.0);
    let threshold = (f64::from(peak) / 8.0).max(floor_from_noise);
    // No ink: on a noisy border, say that rather than "blank".
    let nothing = || {
        if noise >= BUSY_NOISE {
            DigitizeError::BusyBackground { noise: noise as u8 }
        } else {
            DigitizeError::Blank
        }
    };
    if peak < MIN_CONTRAST || f64::from(peak) <= threshold {
        return Err(nothing());
    }
    let ink_box = ink_box(width, height, &ink, threshold).ok_or_else(nothing)?;
    if let Some(reason) = unlike_any_digit(&ink, width, ink_box, threshold) {
        return Err(DigitizeError::NotADigit(reason));
    }

    // 3. Contrast: `floor` and below -> 0, the typical stroke (90th percentile of strong ink)
    //    and above -> 1.
    let stroke = stroke_level(&ink, peak);
    let floor = threshold / 2.0;
    let span = (stroke - floor).max(1.0);
    let (cw, ch) = (ink_box.width(), ink_box.height());
    let mut crop = Vec::with_capacity(cw * ch);
    for y in ink_box.y0..ink_box.y1 {
        let row = ink
            .get(y * width + ink_box.x0..y * width + ink_box.x1)
            .unwrap_or(&[]);
        crop.extend(
            row.iter()
                .map(|&d| ((f64::from(d) - floor) / span).clamp(0.0, 1.0) as f32),
        );
    }

    // 4. Fit the longer side to FIT_SIDE.
    let longer = cw.max(ch);
    let fit = |n: usize| {
        ((n * FIT_SIDE) as f64 / longer as f64)
            .round()
            .clamp(1.0, FIT_SIDE as f64) as usize
    };
    let (ow, oh) = (fit(cw), fit(ch));
    let scaled = resample(&crop, cw, ch, ow, oh);

    // 5. Centre of mass to CENTRE.
    let (mut mass, mut mx, mut my) = (0.0f64, 0.0f64, 0.0f64);
    for (i, &v) in scaled.iter().enumerate() {
        let v = f64::from(v);
        mass += v;
        mx += v * (i % ow) as f64;
        my += v * (i / ow) as f64;
    }
    if mass <= 0.0 || !mass.is_finite() {
        return Err(DigitizeError::Blank);
    }
    let place = |centroid: f64, size: usize| -> usize {
        let max = (IMAGE_SIDE - size) as f64;
        (CENTRE - centroid).round().clamp(0.0, max) as usize
    };
    let (left, top) = (place(mx / mass, ow), place(my / mass, oh));
    let mut out = [0u8; IMAGE_PIXELS];
    for (i, &v) in scaled.iter().enumerate() {
        let (x, y) = (left + i % ow, top + i / ow);
        if let Some(o) = out.get_mut(y * IMAGE_SIDE + x) {
            *o = (v * 255.0).round().clamp(0.0, 255.0) as u8;
        }
    }
    Ok(Digitized {
        pixels: out,
        inverted,
        ink_box,
        background,
    })
}

/// Why the ink in `b` has a shape no MNIST digit has, if it does. Among the 60,000 training
/// digits the ink's box is at most 2.5 times wider than tall, and a box at least half as wide
/// as tall is at most 86% ink (a bar-shaped "1" may be solid; a square-ish blob never is).
fn unlike_any_digit(ink: &[u8], width: usize, b: InkBox, threshold: f64) -> Option<String> {
    let (w, h) = (b.width() as f64, b.height() as f64);
    if w > MAX_WIDTH_TO_HEIGHT * h {
        return Some(format!(
            "the ink is {:.0} times wider than tall, like a line or a word (a digit is at most \
             about 2.5 times)",
            w / h
        ));
    }
    let inked: usize = (b.y0..b.y1)
        .map(|y| {
            let row = ink.get(y * width + b.x0..y * width + b.x1).unwrap_or(&[]);
            row.iter().filter(|&&v| f64::from(v) > threshold).count()
        })
        .sum();
    let fill = inked as f64 / (w * h);
    if b.width() >= 3 && b.height() >= 3 && w >= 0.5 * h && fill > MAX_SOLID_FILL {
        return Some(format!(
            "the ink is a solid blob ({:.0}% of its box), not strokes",
            fill * 100.0
        ));
    }
    None
}

/// The outer ring of pixels (every pixel of an image 1 or 2 pixels thin).
fn border_pixels(width: usize, height: usize, pixels: &[u8]) -> Vec<u8> {
    let mut border = Vec::with_capacity(2 * (width + height));
    for (y, row) in pixels.chunks_exact(width).enumerate() {
        if y == 0 || y + 1 == height {
            border.extend_from_slice(row);
        } else {
            border.extend(row.first());
            if width > 1 {
                border.extend(row.last());
            }
        }
    }
    border
}

fn histogram(values: &[u8]) -> [usize; 256] {
    let mut h = [0usize; 256];
    for &v in values {
        h[usize::from(v)] += 1;
    }
    h
}

/// The value at rank `rank` (0-based) of the histogram's values.
fn rank_value(h: &[usize; 256], rank: usize) -> u8 {
    let mut seen = 0;
    for (v, &count) in h.iter().enumerate() {
        seen += count;
        if seen > rank {
            return v as u8;
        }
    }
    255
}

/// The (lower) median; 0 for no values.
fn median(values: &[u8]) -> u8 {
    if values.is_empty() {
        return 0;
    }
    rank_value(&histogram(values), (values.len() - 1) / 2)
}

/// The typical brightness of a stroke: the 90th percentile of the ink at least half the peak.
fn stroke_level(ink: &[u8], peak: u8) -> f64 {
    let mut h = histogram(ink);
    let half = usize::from(peak / 2);
    h.iter_mut().take(half).for_each(|c| *c = 0);
    let n: usize = h.iter().sum();
    if n == 0 {
        return f64::from(peak);
    }
    f64::from(rank_value(&h, (n - 1) * 9 / 10))
}

/// The bounding box of the pixels above `threshold` that have an 8-neighbour above it too.
fn ink_box(width: usize, height: usize, ink: &[u8], threshold: f64) -> Option<InkBox> {
    let is_ink = |x: usize, y: usize| {
        ink.get(y * width + x)
            .is_some_and(|&d| f64::from(d) > threshold)
    };
    let mut found: Option<InkBox> = None;
    for y in 0..height {
        for x in 0..width {
            if !is_ink(x, y) {
                continue;
            }
            let neighbour = (y.saturating_sub(1)..(y + 2).min(height)).any(|ny| {
                (x.saturating_sub(1)..(x + 2).min(width))
                    .any(|nx| (nx, ny) != (x, y) && is_ink(nx, ny))
            });
            if !neighbour {
                continue;
            }
            found = Some(match found {
                None => InkBox {
                    x0: x,
                    y0: y,
                    x1: x + 1,
                    y1: y + 1,
                },
                Some(b) => InkBox {
                    x0: b.x0.min(x),
                    y0: b.y0.min(y),
                    x1: b.x1.max(x + 1),
                    y1: b.y1.max(y + 1),
                },
            });
        }
    }
    found
}

/// For each output index, the first input index and the weights of consecutive inputs.
fn axis_weights(n_in: usize, n_out: usize) -> Vec<(usize, Vec<f32>)> {
    let ratio = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|o| {
            if n_out <= n_in {
                // Area averaging: output pixel o covers [o r, (o + 1) r) of the input.
                let (lo, hi) = (o as f64 * ratio, (o + 1) as f64 * ratio);
                let first = (lo.floor() as usize).min(n_in - 1);
                let last = (hi.ceil() as usize).clamp(first + 1, n_in);
                let weights = (first..last)
                    .map(|i| {
                        let overlap = (hi.min((i + 1) as f64) - lo.max(i as f64)).max(0.0);
                        (overlap / ratio) as f32
                    })
                    .collect();
                (first, weights)
            } else {
                // Bilinear between the two nearest input pixel centres.
                let c = ((o as f64 + 0.5) * ratio - 0.5).clamp(0.0, (n_in - 1) as f64);
                let i0 = (c.floor() as usize).min(n_in - 1);
                let frac = (c - i0 as f64) as f32;
                if i0 + 1 < n_in {
                    (i0, vec![1.0 - frac, frac])
                } else {
                    (i0, vec![1.0])
                }
            }
        })
        .collect()
}

/// Separable resampling of a `w x h` image to `ow x oh`.
fn resample(src: &[f32], w: usize, h: usize, ow: usize, oh: usize) -> Vec<f32> {
    let wx = axis_weights(w, ow);
    let wy = axis_weights(h, oh);
    let mut rows = vec![0.0f32; h * ow];
    for (y, out_row) in rows.chunks_exact_mut(ow).enumerate() {
        let row = src.get(y * w..(y + 1) * w).unwrap_or(&[]);
        for (o, (first, weights)) in out_row.iter_mut().zip(&wx) {
            *o = weights
                .iter()
                .zip(row.iter().skip(*first))
                .map(|(a, b)| a * b)
                .sum();
        }
    }
    let mut out = vec![0.0f32; ow * oh];
    for (out_row, (first, weights)) in out.chunks_exact_mut(ow).zip(&wy) {
        for (k, weight) in weights.iter().enumerate() {
            let Some(row) = rows.get((first + k) * ow..(first + k + 1) * ow) else {
                continue;
            };
            out_row
                .iter_mut()
                .zip(row)
                .for_each(|(o, v)| *o += weight * v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A "7"-like stroke: a horizontal bar and a diagonal, `thickness` px, ink `ink` on `bg`.
    fn seven(w: usize, h: usize, x0: usize, y0: usize, size: usize, ink: u8, bg: u8) -> Vec<u8> {
        let mut p = vec![bg; w * h];
        let t = (size / 8).max(1);
        for y in y0..y0 + size {
            for x in x0..x0 + size {
                let (dx, dy) = (x - x0, y - y0);
                let top_bar = dy < t;
                let diagonal = (dx as isize - (size - 1 - dy * 2 / 3) as isize).unsigned_abs() < t;
                if top_bar || diagonal {
                    p[y * w + x] = ink;
                }
            }
        }
        p
    }

    fn centroid(p: &[u8]) -> (f64, f64) {
        let (mut m, mut x, mut y) = (0.0, 0.0, 0.0);
        for (i, &v) in p.iter().enumerate() {
            let v = f64::from(v);
            m += v;
            x += v * (i % IMAGE_SIDE) as f64;
            y += v * (i / IMAGE_SIDE) as f64;
        }
        (x / m, y / m)
    }

    fn bbox(p: &[u8]) -> (usize, usize) {
        let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
        for (i, &v) in p.iter().enumerate() {
            if v > 0 {
                let (x, y) = (i % IMAGE_SIDE, i / IMAGE_SIDE);
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
            }
        }
        (x1 - x0, y1 - y0)
    }

    #[test]
    fn off_centre_stroke_ends_up_centred_and_fits_20x20() {
        let (w, h) = (200, 150);
        let img = seven(w, h, 5, 3, 90, 255, 0);
        let d = digitize(w, h, &img).unwrap();
        assert!(!d.inverted);
        let (cx, cy) = centroid(&d.pixels);
        assert!(
            (cx - 14.0).abs() <= 1.0 && (cy - 14.0).abs() <= 1.0,
            "centroid ({cx}, {cy})"
        );
        let (bw, bh) = bbox(&d.pixels);
        assert!(bw <= FIT_SIDE && bh <= FIT_SIDE, "ink box {bw}x{bh}");
        assert!(
            bw.max(bh) >= FIT_SIDE - 1,
            "ink box {bw}x{bh} should fill the 20 px box"
        );
        assert_eq!(d.pixels.iter().copied().max(), Some(255));
        assert_eq!(d.ink_box.x0, 5);
        assert_eq!(d.ink_box.y0, 3);
    }

    #[test]
    fn small_stroke_is_enlarged() {
        let img = seven(30, 30, 20, 20, 8, 200, 10);
        let d = digitize(30, 30, &img).unwrap();
        let (bw, bh) = bbox(&d.pixels);
        assert!(
            bw.max(bh) >= FIT_SIDE - 1 && bw <= FIT_SIDE && bh <= FIT_SIDE,
            "{bw}x{bh}"
        );
        let (cx, cy) = centroid(&d.pixels);
        assert!(
            (cx - 14.0).abs() <= 1.0 && (cy - 14.0).abs() <= 1.0,
            "centroid ({cx}, {cy})"
        );
    }

    #[test]
    fn inverted_input_gives_the_same_digit() {
        let (w, h) = (64, 80);
        let light = seven(w, h, 10, 12, 50, 255, 0);
        let dark: Vec<u8> = light.iter().map(|&v| 255 - v).collect();
        let a = digitize(w, h, &light).unwrap();
        let b = digitize(w, h, &dark).unwrap();
        assert!(!a.inverted && b.inverted);
        assert_eq!(a.pixels, b.pixels);
    }

    #[test]
    fn grey_paper_and_mild_noise_still_centre() {
        let (w, h) = (120, 100);
        let clean = seven(w, h, 60, 40, 50, 40, 190);
        // Deterministic +-12 noise.
        let mut state = 12345u32;
        let noisy: Vec<u8> = clean
            .iter()
            .map(|&v| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let n = (state >> 24) as i32 % 25 - 12;
                (i32::from(v) + n).clamp(0, 255) as u8
            })
            .collect();
        let a = digitize(w, h, &clean).unwrap();
        let b = digitize(w, h, &noisy).unwrap();
        assert!(a.inverted && b.inverted);
        assert_eq!(a.ink_box, b.ink_box);
        let (cx, cy) = centroid(&b.pixels);
        assert!(
            (cx - 14.0).abs() <= 1.0 && (cy - 14.0).abs() <= 1.0,
            "centroid ({cx}, {cy})"
        );
        // The background stays black after the contrast stretch.
        assert_eq!(b.pixels[0], 0);
        assert_eq!(b.pixels[IMAGE_PIXELS - 1], 0);
    }

    #[test]
    fn an_isolated_speck_does_not_stretch_the_box() {
        let (w, h) = (100, 100);
        let mut img = seven(w, h, 40, 40, 30, 255, 0);
        img[2 * w + 95] = 255;
        let d = digitize(w, h, &img).unwrap();
        assert_eq!((d.ink_box.x0, d.ink_box.y0), (40, 40));
    }

    #[test]
    fn real_mnist_digits_come_back_nearly_unchanged() {
        // MNIST digits are already in this format: digitizing them must not move or reshape them.
        let sources = crate::DataSources {
            cache_dir: None,
            mirrors: vec![],
            ..Default::default()
        };
        let test = crate::load_split(&sources, crate::Split::Test).unwrap();
        let (mut worst_shift, mut total_diff, n) = (0.0f64, 0.0f64, 300usize);
        for i in 0..n {
            let img = test.image(i).unwrap();
            let d = digitize(IMAGE_SIDE, IMAGE_SIDE, img).unwrap_or_else(|e| {
                panic!(
                    "test image {i}: {e}; border {:?}",
                    border_pixels(28, 28, img)
                )
            });
            let (cx0, cy0) = centroid(img);
            let (cx, cy) = centroid(&d.pixels);
            worst_shift = worst_shift.max((cx - cx0).abs()).max((cy - cy0).abs());
            let diff: f64 = img
                .iter()
                .zip(&d.pixels)
                .map(|(&a, &b)| (f64::from(a) - f64::from(b)).abs())
                .sum();
            total_diff += diff / IMAGE_PIXELS as f64;
        }
        let mean_diff = total_diff / n as f64;
        // None of the 10,000 test digits is taken for something else.
        let refused: Vec<String> = (0..test.len())
            .filter_map(|i| {
                let e = digitize(IMAGE_SIDE, IMAGE_SIDE, test.image(i)?).err()?;
                Some(format!("{i}: {e}"))
            })
            .collect();
        assert!(refused.is_empty(), "refused test digits: {refused:?}");
        eprintln!(
            "worst centroid shift {worst_shift:.2} px, mean abs pixel difference {mean_diff:.2}"
        );
        assert!(worst_shift <= 1.5, "worst centroid shift {worst_shift}");
        assert!(
            mean_diff < 20.0,
            "mean absolute pixel difference {mean_diff}"
        );
    }

    #[test]
    fn blank_and_empty_images_are_refused() {
        assert_eq!(
            digitize(0, 0, &[]),
            Err(DigitizeError::Empty {
                width: 0,
                height: 0
            })
        );
        assert_eq!(
            digitize(5, 0, &[]),
            Err(DigitizeError::Empty {
                width: 5,
                height: 0
            })
        );
        assert_eq!(digitize(10, 10, &[255; 100]), Err(DigitizeError::Blank));
        assert_eq!(digitize(10, 10, &[0; 100]), Err(DigitizeError::Blank));
        // Faint, near-uniform variation is not a digit.
        let faint: Vec<u8> = (0..400).map(|i| 120 + (i % 7) as u8 * 3).collect();
        assert_eq!(digitize(20, 20, &faint), Err(DigitizeError::Blank));
        // One stray pixel is not a digit either.
        let mut speck = vec![255u8; 400];
        speck[210] = 0;
        assert_eq!(digitize(20, 20, &speck), Err(DigitizeError::Blank));
        let err = digitize(10, 10, &[0; 100]).unwrap_err().to_string();
        assert!(err.contains("blank") && err.contains("darker"), "{err}");
    }

    #[test]
    fn shapes_no_digit_has_are_refused_and_bars_are_not() {
        let canvas = |w: usize, h: usize, x: std::ops::Range<usize>, y: std::ops::Range<usize>| {
            let mut p = vec![255u8; w * h];
            for row in y {
                for col in x.clone() {
                    p[row * w + col] = 0;
                }
            }
            p
        };
        // A filled square, and a dash.
        let square = canvas(60, 60, 15..45, 15..45);
        let err = digitize(60, 60, &square).unwrap_err();
        assert!(err.to_string().contains("solid blob"), "{err}");
        let dash = canvas(200, 200, 20..180, 95..105);
        let err = digitize(200, 200, &dash).unwrap_err();
        assert!(err.to_string().contains("wider than tall"), "{err}");
        // A solid upright bar is a "1".
        digitize(60, 60, &canvas(60, 60, 26..34, 10..50)).unwrap();
        // Uniform noise has no plain background: said so, not "blank".
        let mut state = 7u32;
        let noise: Vec<u8> = (0..64 * 64)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 24) as u8
            })
            .collect();
        let err = digitize(64, 64, &noise).unwrap_err();
        assert!(matches!(err, DigitizeError::BusyBackground { .. }), "{err}");
    }

    #[test]
    fn buffer_length_is_checked() {
        let e = digitize(4, 4, &[0; 15]).unwrap_err();
        assert_eq!(
            e,
            DigitizeError::BufferLength {
                width: 4,
                height: 4,
                expected: 16,
                got: 15
            }
        );
        assert!(e.to_string().contains("16"));
        assert!(matches!(
            digitize(usize::MAX, 2, &[]),
            Err(DigitizeError::TooLarge { .. })
        ));
    }

    #[test]
    fn resampling_preserves_mass() {
        let src: Vec<f32> = (0..37 * 23).map(|i| (i % 11) as f32 / 10.0).collect();
        let total: f32 = src.iter().sum();
        let out = resample(&src, 37, 23, 20, 12);
        let scale = (20.0 * 12.0) / (37.0 * 23.0);
        let out_total: f32 = out.iter().sum();
        assert!(
            (out_total - total * scale).abs() < 1e-2 * total,
            "{out_total} vs {}",
            total * scale
        );
        // The identity is exact.
        assert_eq!(resample(&src, 37, 23, 37, 23), src);
    }

    proptest! {
        #[test]
        fn never_panics(w in 0usize..40, h in 0usize..40, bytes in proptest::collection::vec(any::<u8>(), 0..1700), extra in 0usize..3) {
            let n = (w * h).min(bytes.len());
            let pixels = &bytes[..n];
            let _ = digitize(w, h, pixels);
            let _ = digitize(w, h + extra, pixels);
            if let Ok(d) = digitize(w, h, pixels) {
                prop_assert_eq!(d.pixels.len(), IMAGE_PIXELS);
                prop_assert!(d.pixels.iter().any(|&v| v > 0));
            }
        }

        #[test]
        fn blocks_are_centred(w in 8usize..60, h in 8usize..60, bx in 0usize..50, by in 0usize..50, bw in 2usize..30, bh in 2usize..30, dark in any::<bool>()) {
            let (bg, ink) = if dark { (255u8, 0u8) } else { (0, 255) };
            let mut p = vec![bg; w * h];
            for y in by.min(h)..(by + bh).min(h) {
                for x in bx.min(w)..(bx + bw).min(w) {
                    p[y * w + x] = ink;
                }
            }
            match digitize(w, h, &p) {
                Ok(d) => {
                    let (cx, cy) = centroid(&d.pixels);
                    prop_assert!((cx - 14.0).abs() <= 1.0 && (cy - 14.0).abs() <= 1.0, "centroid ({}, {})", cx, cy);
                    let (ibw, ibh) = bbox(&d.pixels);
                    prop_assert!(ibw <= FIT_SIDE && ibh <= FIT_SIDE);
                }
                // A solid block at least half as wide as tall, or 3 times wider than tall,
                // is not a digit.
                Err(DigitizeError::NotADigit(_)) => {}
                Err(e) => prop_assert_eq!(e, DigitizeError::Blank),
            }
        }
    }
}
