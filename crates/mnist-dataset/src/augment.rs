//! Data augmentation for 28x28 digits, applied on the fly per batch: random translation,
//! rotation and scaling (one affine map, bilinear sampling), and elastic distortion (Simard,
//! Steinkraus & Platt 2003: a random displacement field smoothed by a Gaussian of `sigma`
//! pixels and scaled by `alpha`).
//!
//! Every draw comes from the caller's seeded RNG, so an augmented run repeats exactly. The
//! [`Augmenter`] owns its scratch buffers: augmenting a batch allocates nothing.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
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
    dx: Vec<f32>,
    dy: Vec<f32>,
    tmp: Vec<f32>,
    source: Vec<f32>,
}

impl Augmenter {
    pub fn new(config: AugmentConfig) -> Result<Self> {
        config.validate()?;
        let kernel = config
            .elastic
            .map_or_else(Vec::new, |e| gaussian_kernel(e.sigma));
        Ok(Augmenter {
            config,
            kernel,
            dx: vec![0.0; PIXELS],
            dy: vec![0.0; PIXELS],
            tmp: vec![0.0; PIXELS],
            source: vec![0.0; PIXELS],
        })
    }

    pub fn config(&self) -> &AugmentConfig {
        &self.config
    }

    /// Augments every 784-pixel row of `batch` in place. `background` is the value of an
    /// empty pixel in this data's normalization (0 for x/255, `-mean/std` standardized); it
    /// fills whatever moves in from outside the frame.
    pub fn augment_batch(&mut self, batch: &mut [f32], background: f32, rng: &mut ChaCha8Rng) {
        for image in batch.chunks_exact_mut(PIXELS) {
            self.augment_image(image, background, rng);
        }
    }

    /// Augments one 28x28 image in place.
    pub fn augment_image(&mut self, image: &mut [f32], background: f32, rng: &mut ChaCha8Rng) {
        if image.len() != PIXELS || !self.config.is_active() {
            return;
        }
        let c = self.config;
        let mut uniform = |limit: f32| {
            if limit > 0.0 {
                rng.random_range(-limit..=limit)
            } else {
                0.0
            }
        };
        let (tx, ty) = (uniform(c.translate), uniform(c.translate));
        let angle = uniform(c.rotate_degrees).to_radians();
        let scale = 1.0 + uniform(c.scale);
        if let Some(e) = c.elastic {
            for v in self.dx.iter_mut().chain(self.dy.iter_mut()) {
                *v = rng.random_range(-1.0f32..=1.0);
            }
            smooth(&mut self.dx, &mut self.tmp, &self.kernel);
            smooth(&mut self.dy, &mut self.tmp, &self.kernel);
            self.dx
                .iter_mut()
                .chain(self.dy.iter_mut())
                .for_each(|v| *v *= e.alpha);
        }
        // Output pixel p samples the source at A^-1 (p - centre - t) + centre + elastic(p).
        let (sin, cos) = angle.sin_cos();
        let inv = 1.0 / scale;
        self.source.copy_from_slice(image);
        let elastic = c.elastic.is_some();
        for (i, out) in image.iter_mut().enumerate() {
            let (px, py) = (
                (i % SIDE) as f32 - CENTRE - tx,
                (i / SIDE) as f32 - CENTRE - ty,
            );
            let mut sx = inv * (cos * px + sin * py) + CENTRE;
            let mut sy = inv * (-sin * px + cos * py) + CENTRE;
            if elastic {
                sx += self.dx[i];
                sy += self.dy[i];
            }
            *out = bilinear(&self.source, sx, sy, background);
        }
    }
}

/// Bilinear sample of a 28x28 image at `(x, y)`; outside the frame is `background`.
fn bilinear(image: &[f32], x: f32, y: f32, background: f32) -> f32 {
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let at = |xi: f32, yi: f32| -> f32 {
        if xi < 0.0 || yi < 0.0 || xi >= SIDE as f32 || yi >= SIDE as f32 {
            background
        } else {
            image[yi as usize * SIDE + xi as usize]
        }
    };
    let top = at(x0, y0) * (1.0 - fx) + at(x0 + 1.0, y0) * fx;
    let bottom = at(x0, y0 + 1.0) * (1.0 - fx) + at(x0 + 1.0, y0 + 1.0) * fx;
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

/// Separable Gaussian blur of a 28x28 field in place (edges replicated).
fn smooth(field: &mut [f32], tmp: &mut [f32], kernel: &[f32]) {
    let radius = (kernel.len() / 2) as isize;
    let clamp = |v: isize| v.clamp(0, SIDE as isize - 1) as usize;
    for y in 0..SIDE {
        for x in 0..SIDE {
            tmp[y * SIDE + x] = kernel
                .iter()
                .enumerate()
                .map(|(k, w)| w * field[y * SIDE + clamp(x as isize + k as isize - radius)])
                .sum();
        }
    }
    for y in 0..SIDE {
        for x in 0..SIDE {
            field[y * SIDE + x] = kernel
                .iter()
                .enumerate()
                .map(|(k, w)| w * tmp[clamp(y as isize + k as isize - radius) * SIDE + x])
                .sum();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

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
