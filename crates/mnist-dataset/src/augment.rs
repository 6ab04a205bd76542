//! Data augmentation for 28x28 digits, applied on the fly per batch: random translation,
//! rotation and scaling (one affine map, bilinear sampling), and elastic distortion (Simard,
//! Steinkraus & Platt 2003: a random displacement field smoothed by a Gaussian of `sigma`
//! pixels and scaled by `alpha`).
//!
//! Every draw comes from the caller's seeded RNG, so an augmented run repeats exactly, on any
//! number of threads. The [`Augmenter`] owns its scratch buffers (one set per worker, made on
//! the first batch): later batches allocate nothing of their own.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{DatasetError, Result};
use crate::files::IMAGE_SIDE;

const SIDE: usize = IMAGE_SIDE;
const PIXELS: usize = SIDE * SIDE;
/// The image centre in pixel coordinates (pixel centres at 0..27).
const CENTRE: f32 = (SIDE as f32 - 1.0) / 2.0;

/// What to randomize; every field off (0 / `None`) by default.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AugmentConfig {
    /// Largest shift in pixels, drawn uniformly in `[-t, t]` for x and y.
    #[serde(default)]
    pub translate: f32,
    /// Largest rotation in degrees, uniform in `[-r, r]`.
    #[serde(default)]
    pub rotate_degrees: f32,
    /// Largest relative change of size, uniform factor in `[1 - s, 1 + s]`.
    #[serde(default)]
    pub scale: f32,
    /// Elastic distortion.
    #[serde(default)]
    pub elastic: Option<ElasticConfig>,
}

/// Simard et al.'s elastic distortion: `alpha` ~34-38, `sigma` ~4-6 pixels for MNIST.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticConfig {
    pub alpha: f32,
    pub sigma: f32,
}

impl AugmentConfig {
    /// Checks the ranges; the error says which field and why.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(DatasetError::InvalidAugmentation(m));
        if !(self.translate.is_finite() && (0.0..=14.0).contains(&self.translate)) {
            return bad(format!(
                "translate must be in [0, 14] pixels, got {}",
                self.translate
            ));
        }
        if !(self.rotate_degrees.is_finite() && (0.0..=180.0).contains(&self.rotate_degrees)) {
            return bad(format!(
                "rotate_degrees must be in [0, 180], got {}",
                self.rotate_degrees
            ));
        }
        if !(self.scale.is_finite() && (0.0..0.9).contains(&self.scale)) {
            return bad(format!("scale must be in [0, 0.9), got {}", self.scale));
        }
        if let Some(e) = self.elastic {
            if !(e.alpha.is_finite() && e.alpha >= 0.0) {
                return bad(format!("elastic.alpha must be >= 0, got {}", e.alpha));
            }
            if !(e.sigma.is_finite() && (0.5..=14.0).contains(&e.sigma)) {
                return bad(format!(
                    "elastic.sigma must be in [0.5, 14] pixels, got {}",
                    e.sigma
                ));
            }
        }
        Ok(())
    }

    /// Whether any augmentation is switched on.
    pub fn is_active(&self) -> bool {
        self.translate > 0.0
            || self.rotate_degrees > 0.0
            || self.scale > 0.0
            || self.elastic.is_some()
    }
}

/// Applies an [`AugmentConfig`] to 28x28 images; reuse one per training run.
#[derive(Debug, Clone)]
pub struct Augmenter {
    config: AugmentConfig,
    /// Normalized Gaussian taps for the elastic field (empty without elastic distortion).
    kernel: Vec<f32>,
    /// One set of buffers per worker; grown on the first batch, reused after.
    scratch: Vec<Scratch>,
}

/// Per-worker buffers for one image at a time.
#[derive(Debug, Clone)]
struct Scratch {
    dx: Vec<f32>,
    dy: Vec<f32>,
    tmp: Vec<f32>,
    source: Vec<f32>,
    /// One row of the field with `radius` replicated pixels on each side.
    padded_row: Vec<f32>,
    /// Random bits for both displacement fields.
    bits: Vec<u32>,
}

impl Scratch {
    fn new(radius: usize) -> Self {
        Scratch {
            dx: vec![0.0; PIXELS],
            dy: vec![0.0; PIXELS],
            tmp: vec![0.0; PIXELS],
            source: vec![0.0; PIXELS],
            padded_row: vec![0.0; SIDE + 2 * radius],
            bits: vec![0; 2 * PIXELS],
        }
    }
}

/// The RNG of image `index` of a batch: its own ChaCha stream of the batch seed, so an image's
/// distortion does not depend on which worker draws it (results are identical for any thread
/// count).
fn image_rng(batch_seed: u64, index: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(batch_seed);
    rng.set_stream(index as u64);
    rng
}

impl Augmenter {
    pub fn new(config: AugmentConfig) -> Result<Self> {
        config.validate()?;
        let kernel = config
            .elastic
            .map_or_else(Vec::new, |e| gaussian_kernel(e.sigma));
        let scratch = vec![Scratch::new(kernel.len() / 2)];
        Ok(Augmenter {
            config,
            kernel,
            scratch,
        })
    }

    pub fn config(&self) -> &AugmentConfig {
        &self.config
    }

    /// Augments every 784-pixel row of `batch` in place, on up to `threads` workers of the
    /// rayon pool. `background` is the value of an empty pixel in this data's normalization
    /// (0 for x/255, `-mean/std` standardized); it fills whatever moves in from outside the
    /// frame. `rng` gives one seed per batch; each image draws from its own stream of it.
    /// `threads` 0 counts as 1. A tail shorter than one image is left as it is.
    pub fn augment_batch(
        &mut self,
        batch: &mut [f32],
        background: f32,
        rng: &mut ChaCha8Rng,
        threads: usize,
    ) {
        if !self.config.is_active() {
            return;
        }
        let batch_seed: u64 = rng.random();
        let images = batch.len() / PIXELS;
        let parts = threads.clamp(1, images.max(1));
        let radius = self.kernel.len() / 2;
        if self.scratch.len() < parts {
            self.scratch.resize_with(parts, || Scratch::new(radius));
        }
        let (config, kernel) = (&self.config, &self.kernel[..]);
        let per_part = images.div_ceil(parts).max(1);
        let work = |part: usize, chunk: &mut [f32], scratch: &mut Scratch| {
            for (j, image) in chunk.chunks_exact_mut(PIXELS).enumerate() {
                let mut rng = image_rng(batch_seed, part * per_part + j);
                distort(config, kernel, scratch, image, background, &mut rng);
            }
        };
        let batch = &mut batch[..images * PIXELS];
        if parts == 1 {
            work(0, batch, &mut self.scratch[0]);
        } else {
            batch
                .par_chunks_mut(per_part * PIXELS)
                .zip(self.scratch.par_iter_mut())
                .enumerate()
                .for_each(|(part, (chunk, scratch))| work(part, chunk, scratch));
        }
    }

    /// Augments one 28x28 image in place, drawing from `rng` directly.
    pub fn augment_image(&mut self, image: &mut [f32], background: f32, rng: &mut ChaCha8Rng) {
        if image.len() != PIXELS || !self.config.is_active() {
            return;
        }
        distort(
            &self.config,
            &self.kernel,
            &mut self.scratch[0],
            image,
            background,
            rng,
        );
    }
}

/// One image's distortion: an affine map (translation, rotation, scale about the centre) plus
/// the elastic field, sampled bilinearly from a copy of the image.
fn distort(
    config: &AugmentConfig,
    kernel: &[f32],
    scratch: &mut Scratch,
    image: &mut [f32],
    background: f32,
    rng: &mut ChaCha8Rng,
) {
    let mut uniform = |limit: f32| {
        if limit > 0.0 {
            rng.random_range(-limit..=limit)
        } else {
            0.0
        }
    };
    let (tx, ty) = (uniform(config.translate), uniform(config.translate));
    let angle = uniform(config.rotate_degrees).to_radians();
    let scale = 1.0 + uniform(config.scale);
    if let Some(e) = config.elastic {
        // Uniform in [-1, 1) from 24 random bits each, drawn in bulk: random_range per value
        // cost as much as the rest of the distortion.
        rng.fill(&mut scratch.bits[..]);
        for (v, &b) in scratch
            .dx
            .iter_mut()
            .chain(scratch.dy.iter_mut())
            .zip(&scratch.bits)
        {
            *v = (b >> 8) as f32 * (2.0 / (1u32 << 24) as f32) - 1.0;
        }
        smooth(
            &mut scratch.dx,
            &mut scratch.tmp,
            &mut scratch.padded_row,
            kernel,
        );
        smooth(
            &mut scratch.dy,
            &mut scratch.tmp,
            &mut scratch.padded_row,
            kernel,
        );
        scratch
            .dx
            .iter_mut()
            .chain(scratch.dy.iter_mut())
            .for_each(|v| *v *= e.alpha);
    }
    // Output pixel p samples the source at A^-1 (p - centre - t) + centre + elastic(p).
    let (sin, cos) = angle.sin_cos();
    let inv = 1.0 / scale;
    scratch.source.copy_from_slice(image);
    let elastic = config.elastic.is_some();
    for (i, out) in image.iter_mut().enumerate() {
        let (px, py) = (
            (i % SIDE) as f32 - CENTRE - tx,
            (i / SIDE) as f32 - CENTRE - ty,
        );
        let mut sx = inv * (cos * px + sin * py) + CENTRE;
        let mut sy = inv * (-sin * px + cos * py) + CENTRE;
        if elastic {
            sx += scratch.dx[i];
            sy += scratch.dy[i];
        }
        *out = bilinear(&scratch.source, sx, sy, background);
    }
}

/// Bilinear sample of a 28x28 image at `(x, y)`; outside the frame is `background`.
fn bilinear(image: &[f32], x: f32, y: f32, background: f32) -> f32 {
    // Beyond one pixel outside the frame every neighbour is background: return it directly
    // (NaN too). Inside that range the floor is an integer cast corrected for negatives
    // (libm's floorf is a call on baseline x86-64).
    let limit = SIDE as f32 + 1.0;
    if !(x > -2.0 && y > -2.0 && x < limit && y < limit) {
        return background;
    }
    let floor = |v: f32| {
        let t = v as i32; // truncates toward zero
        t - i32::from(v < t as f32)
    };
    let (x0, y0) = (floor(x), floor(y));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let at = |xi: i32, yi: i32| -> f32 {
        if (0..SIDE as i32).contains(&xi) && (0..SIDE as i32).contains(&yi) {
            image[yi as usize * SIDE + xi as usize]
        } else {
            background
        }
    };
    let top = at(x0, y0) * (1.0 - fx) + at(x0 + 1, y0) * fx;
    let bottom = at(x0, y0 + 1) * (1.0 - fx) + at(x0 + 1, y0 + 1) * fx;
    top * (1.0 - fy) + bottom * fy
}

/// Taps of a normalized Gaussian of `sigma`, radius `ceil(3 sigma)`.
fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let radius = (3.0 * sigma).ceil() as i32;
    let taps: Vec<f32> = (-radius..=radius)
        .map(|k| (-(k * k) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f32 = taps.iter().sum();
    taps.into_iter().map(|t| t / sum).collect()
}

/// Separable Gaussian blur of a 28x28 field in place (edges replicated). Each pass adds one
/// tap at a time over a whole row, so the inner loops run over contiguous pixels and vectorize
/// (the per-tap edge clamp of a direct convolution kept them scalar).
fn smooth(field: &mut [f32], tmp: &mut [f32], padded_row: &mut [f32], kernel: &[f32]) {
    let radius = kernel.len() / 2;
    for (row, out) in field.chunks_exact(SIDE).zip(tmp.chunks_exact_mut(SIDE)) {
        padded_row[..radius].fill(row[0]);
        padded_row[radius..radius + SIDE].copy_from_slice(row);
        padded_row[radius + SIDE..].fill(row[SIDE - 1]);
        out.fill(0.0);
        for (k, &w) in kernel.iter().enumerate() {
            for (o, &v) in out.iter_mut().zip(&padded_row[k..k + SIDE]) {
                *o += w * v;
            }
        }
    }
    for (y, out) in field.chunks_exact_mut(SIDE).enumerate() {
        out.fill(0.0);
        for (k, &w) in kernel.iter().enumerate() {
            let source_row = (y + k).saturating_sub(radius).min(SIDE - 1);
            for (o, &v) in out.iter_mut().zip(&tmp[source_row * SIDE..][..SIDE]) {
                *o += w * v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A digit-like "0": an ellipse ring, strokes 3 px wide, within the central 20x20 box
    /// as in MNIST; ink 1.0, background 0.
    fn plus() -> Vec<f32> {
        let mut img = vec![0.0; PIXELS];
        for (i, v) in img.iter_mut().enumerate() {
            let (x, y) = ((i % SIDE) as f32 - CENTRE, (i / SIDE) as f32 - CENTRE);
            let r = ((x / 6.0).powi(2) + (y / 9.0).powi(2)).sqrt();
            if (0.72..=1.0).contains(&r) {
                *v = 1.0;
            }
        }
        img
    }

    fn full() -> AugmentConfig {
        AugmentConfig {
            translate: 2.0,
            rotate_degrees: 12.0,
            scale: 0.1,
            elastic: Some(ElasticConfig {
                alpha: 36.0,
                sigma: 5.0,
            }),
        }
    }

    /// The direct convolution the row-wise `smooth` replaced, clamping each tap.
    fn smooth_reference(field: &mut [f32], kernel: &[f32]) {
        let radius = (kernel.len() / 2) as isize;
        let clamp = |v: isize| v.clamp(0, SIDE as isize - 1) as usize;
        let mut tmp = vec![0.0; PIXELS];
        for y in 0..SIDE {
            for x in 0..SIDE {
                tmp[y * SIDE + x] = kernel
                    .iter()
                    .enumerate()
                    .map(|(k, w)| w * field[y * SIDE + clamp(x as isize + k as isize - radius)])
                    .fold(0.0, |a, b| a + b);
            }
        }
        for y in 0..SIDE {
            for x in 0..SIDE {
                field[y * SIDE + x] = kernel
                    .iter()
                    .enumerate()
                    .map(|(k, w)| w * tmp[clamp(y as isize + k as isize - radius) * SIDE + x])
                    .fold(0.0, |a, b| a + b);
            }
        }
    }

    #[test]
    fn row_wise_smoothing_matches_the_direct_convolution() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for sigma in [0.5f32, 1.3, 4.0, 6.0, 14.0] {
            let kernel = gaussian_kernel(sigma);
            let field: Vec<f32> = (0..PIXELS).map(|_| rng.random_range(-1.0..=1.0)).collect();
            let (mut fast, mut slow) = (field.clone(), field);
            let mut tmp = vec![0.0; PIXELS];
            let mut row = vec![0.0; SIDE + kernel.len() - 1];
            smooth(&mut fast, &mut tmp, &mut row, &kernel);
            smooth_reference(&mut slow, &kernel);
            // Same taps added in the same order: bit-identical.
            assert_eq!(fast, slow, "sigma {sigma}");
        }
    }

    #[test]
    fn bilinear_matches_a_floor_based_sample_inside_and_outside_the_frame() {
        let reference = |image: &[f32], x: f32, y: f32| -> f32 {
            let (x0, y0) = (x.floor(), y.floor());
            let (fx, fy) = (x - x0, y - y0);
            let at = |xi: f32, yi: f32| {
                if xi < 0.0 || yi < 0.0 || xi >= SIDE as f32 || yi >= SIDE as f32 {
                    0.0
                } else {
                    image[yi as usize * SIDE + xi as usize]
                }
            };
            let top = at(x0, y0) * (1.0 - fx) + at(x0 + 1.0, y0) * fx;
            let bottom = at(x0, y0 + 1.0) * (1.0 - fx) + at(x0 + 1.0, y0 + 1.0) * fx;
            top * (1.0 - fy) + bottom * fy
        };
        let image = plus();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..20_000 {
            let (x, y) = (rng.random_range(-40.0..70.0), rng.random_range(-40.0..70.0));
            assert_eq!(
                bilinear(&image, x, y, 0.0),
                reference(&image, x, y),
                "({x}, {y})"
            );
        }
        for (x, y) in [
            (-2.0, 3.0),
            (-1.0, -1.0),
            (27.0, 27.0),
            (27.5, 0.25),
            (28.0, 29.0),
        ] {
            assert_eq!(
                bilinear(&image, x, y, 0.0),
                reference(&image, x, y),
                "({x}, {y})"
            );
        }
        assert_eq!(bilinear(&image, f32::NAN, 3.0, 0.25), 0.25);
    }

    #[test]
    fn batches_are_identical_for_any_thread_count() {
        let batch: Vec<f32> = (0..37).flat_map(|_| plus()).collect();
        let run = |threads| {
            let mut aug = Augmenter::new(full()).unwrap();
            let mut rng = ChaCha8Rng::seed_from_u64(11);
            let mut out = batch.clone();
            aug.augment_batch(&mut out, 0.0, &mut rng, threads);
            // A second batch reuses the grown scratch and draws a new seed.
            let mut second = batch.clone();
            aug.augment_batch(&mut second, 0.0, &mut rng, threads);
            assert_ne!(out, second);
            out.extend(second);
            out
        };
        let one = run(1);
        assert_ne!(&one[..PIXELS], &plus()[..]);
        // Images of one batch differ from each other.
        assert_ne!(&one[..PIXELS], &one[PIXELS..2 * PIXELS]);
        for threads in [2, 3, 8, 64] {
            assert_eq!(one, run(threads), "{threads} threads");
        }
    }

    #[test]
    fn identity_when_nothing_is_configured() {
        let mut aug = Augmenter::new(AugmentConfig::default()).unwrap();
        let mut img = plus();
        aug.augment_image(&mut img, 0.0, &mut ChaCha8Rng::seed_from_u64(1));
        assert_eq!(img, plus());
    }

    #[test]
    fn augmented_digits_keep_their_ink_and_stay_in_the_frame() {
        let mut aug = Augmenter::new(full()).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mass = plus().iter().sum::<f32>();
        let mut ratios = Vec::new();
        for _ in 0..200 {
            let mut img = plus();
            aug.augment_image(&mut img, 0.0, &mut rng);
            let m: f32 = img.iter().sum();
            ratios.push(m / mass);
            assert!(img.iter().all(|v| (0.0..=1.0 + 1e-6).contains(v)));
            // The digit stays in the frame: its centre of mass moves by at most the
            // translation (2 px) plus the elastic field's smooth drift (~1-3 px).
            let (cx, cy) = img.iter().enumerate().fold((0.0, 0.0), |(x, y), (i, v)| {
                (x + v * (i % SIDE) as f32, y + v * (i / SIDE) as f32)
            });
            let (cx, cy) = (cx / m - CENTRE, cy / m - CENTRE);
            assert!(
                cx.abs() < 6.0 && cy.abs() < 6.0,
                "centre moved to ({cx}, {cy})"
            );
        }
        ratios.sort_by(f32::total_cmp);
        // Scaling alone changes the area by up to (1.1)^2; the elastic field (alpha 36,
        // sigma 5) stretches strokes locally by roughly +-25%, so ink mass varies per draw
        // but is kept on average and never vanishes or explodes.
        assert!(
            (ratios[100] - 1.0).abs() < 0.1,
            "median ink mass ratio {}",
            ratios[100]
        );
        assert!(
            ratios[10] > 0.6 && ratios[190] < 1.7,
            "5-95% range {ratios:?}"
        );
        assert!(ratios[0] > 0.4 && ratios[199] < 2.5, "extremes {ratios:?}");
    }

    #[test]
    fn seeded_and_different_per_draw() {
        let run = |seed| {
            let mut aug = Augmenter::new(full()).unwrap();
            let mut img = plus();
            aug.augment_image(&mut img, 0.0, &mut ChaCha8Rng::seed_from_u64(seed));
            img
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }

    #[test]
    fn pure_translation_moves_the_centre_of_mass() {
        let config = AugmentConfig {
            translate: 3.0,
            ..AugmentConfig::default()
        };
        let mut aug = Augmenter::new(config).unwrap();
        let centroid = |img: &[f32]| {
            let m: f32 = img.iter().sum();
            let x: f32 = img
                .iter()
                .enumerate()
                .map(|(i, v)| v * (i % SIDE) as f32)
                .sum();
            x / m
        };
        let mut moved = 0;
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for _ in 0..20 {
            let mut img = plus();
            aug.augment_image(&mut img, 0.0, &mut rng);
            let shift = centroid(&img) - centroid(&plus());
            assert!(
                shift.abs() <= 3.0 + 1e-3,
                "shift {shift} beyond the 3 px limit"
            );
            moved += usize::from(shift.abs() > 0.5);
        }
        assert!(moved > 10, "translation rarely moved anything");
    }

    #[test]
    fn background_fills_what_moves_in() {
        let config = AugmentConfig {
            translate: 5.0,
            ..AugmentConfig::default()
        };
        let mut aug = Augmenter::new(config).unwrap();
        let mut img = vec![-0.42; PIXELS];
        aug.augment_image(&mut img, -0.42, &mut ChaCha8Rng::seed_from_u64(2));
        assert!(img.iter().all(|v| (v + 0.42).abs() < 1e-6));
    }

    #[test]
    fn bad_settings_are_refused() {
        for c in [
            AugmentConfig {
                translate: -1.0,
                ..AugmentConfig::default()
            },
            AugmentConfig {
                scale: 2.0,
                ..AugmentConfig::default()
            },
            AugmentConfig {
                rotate_degrees: f32::NAN,
                ..AugmentConfig::default()
            },
            AugmentConfig {
                elastic: Some(ElasticConfig {
                    alpha: 34.0,
                    sigma: 0.0,
                }),
                ..AugmentConfig::default()
            },
        ] {
            assert!(Augmenter::new(c).is_err(), "{c:?}");
        }
    }
}
