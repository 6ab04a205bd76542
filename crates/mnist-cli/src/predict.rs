//! `mnist predict`: classify image files with a trained model.
//!
//! Each file is decoded (PNG, JPEG or BMP, recognised by content, under size limits so a
//! forged header cannot make us allocate gigabytes), flattened to luminance (transparent
//! pixels composited onto a background that contrasts with the strokes), turned into a
//! centred 28x28 MNIST-style digit by [`mnist_dataset::digitize`], transformed with the
//! preprocessing stored in the model and classified. A file that fails is reported and the
//! others go on; the command then exits 1.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use image::{DynamicImage, ImageError, ImageReader, Limits};
use mnist_core::faer::Par;
use mnist_core::{Network, Preprocessing, SavedModel, Workspace};
use mnist_dataset::IMAGE_PIXELS;
use mnist_dataset::digitize::digitize;

/// Largest accepted width and height of an input image.
pub const MAX_SIDE: u32 = 10_000;
/// Most memory a decoder may allocate for one image.
pub const MAX_ALLOC: u64 = 256 * 1024 * 1024;
/// File extensions picked up when a folder is given.
const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "bmp"];

/// Arguments of `mnist predict`.
#[derive(Debug, clap::Args)]
pub struct PredictArgs {
    /// A model file written by `mnist train` (model.safetensors).
    pub model: PathBuf,
    /// Image files (PNG, JPEG, BMP) or folders of them.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Print one JSON object per file instead of text.
    #[arg(long)]
    pub json: bool,
    /// How many of the most probable digits to show.
    #[arg(long, default_value_t = 3)]
    pub top: usize,
}

/// One classified file.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The most probable class.
    pub digit: usize,
    /// The model's output for each class.
    pub probabilities: Vec<f32>,
}

impl Prediction {
    /// The `n` most probable classes, most probable first (ties: smaller class first).
    pub fn top(&self, n: usize) -> Vec<(usize, f32)> {
        let mut ranked: Vec<(usize, f32)> =
            self.probabilities.iter().copied().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(n);
        ranked
    }
}

/// A loaded model and its scratch space, ready to classify one image at a time.
#[derive(Debug)]
pub struct Predictor {
    network: Network<f32>,
    preprocessing: Preprocessing,
    workspace: Workspace<f32>,
    input: Vec<f32>,
}

impl Predictor {
    /// Loads a model file; it must take 28x28 = 784 inputs.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let SavedModel {
            network,
            preprocessing,
        } = mnist_core::load_model::<f32>(path).context(
            "cannot load the model (expected a model.safetensors written by `mnist train`)",
        )?;
        if network.inputs() != IMAGE_PIXELS {
            bail!(
                "model file {}: the network takes {} inputs, but predict feeds it 28x28 = {IMAGE_PIXELS} pixels",
                path.display(),
                network.inputs()
            );
        }
        let workspace = network.workspace(1);
        Ok(Predictor {
            network,
            preprocessing,
            workspace,
            input: vec![0.0; IMAGE_PIXELS],
        })
    }

    /// Classifies one 28x28 MNIST-style digit (raw bytes, white on black).
    pub fn classify(&mut self, digit: &[u8; IMAGE_PIXELS]) -> anyhow::Result<Prediction> {
        self.preprocessing.apply_u8(digit, &mut self.input);
        let out = self
            .network
            .forward(&mut self.workspace, &self.input, 1, Par::Seq)?;
        let probabilities = out.probabilities_slice().to_vec();
        let digit = usize::from(mnist_core::argmax(&probabilities));
        Ok(Prediction {
            digit,
            probabilities,
        })
    }

    /// Reads, digitizes and classifies one image file.
    pub fn predict_file(&mut self, path: &Path) -> anyhow::Result<Prediction> {
        let (width, height, luma) = load_luma(path)?;
        let digit = digitize(width, height, &luma)?;
        self.classify(&digit.pixels)
    }
}

/// The decoder limits: at most [`MAX_SIDE`] pixels a side and [`MAX_ALLOC`] bytes.
pub fn decoder_limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    limits
}

/// Decodes an image file (format from its content, then its extension) to luminance bytes.
pub fn load_luma(path: &Path) -> anyhow::Result<(usize, usize, Vec<u8>)> {
    let mut reader = ImageReader::open(path)
        .context("cannot open")?
        .with_guessed_format()
        .context("cannot read")?;
    if reader.format().is_none() {
        bail!("not a PNG, JPEG or BMP image (its content and extension match none of them)");
    }
    reader.limits(decoder_limits());
    let image = reader.decode().map_err(|e| match e {
        ImageError::Limits(l) => anyhow::anyhow!(
            "image refused: {l} (at most {MAX_SIDE}x{MAX_SIDE} pixels and {} MiB to decode); scale it down",
            MAX_ALLOC >> 20
        ),
        ImageError::Unsupported(u) => anyhow::anyhow!("unsupported image: {u}"),
        other => anyhow::anyhow!("cannot decode the image (corrupt or truncated?): {other}"),
    })?;
    let (width, height) = (image.width() as usize, image.height() as usize);
    Ok((width, height, luminance(&image)))
}

/// Luminance of every pixel. Transparent parts are composited onto white if the visible
/// strokes are dark, onto black if they are light, so a drawing on a transparent canvas keeps
/// its contrast whatever colour the invisible pixels happen to store.
fn luminance(image: &DynamicImage) -> Vec<u8> {
    if !image.color().has_alpha() {
        return image.to_luma8().into_raw();
    }
    let la = image.to_luma_alpha8().into_raw();
    let (mut weighted, mut alpha_sum) = (0u64, 0u64);
    for px in la.chunks_exact(2) {
        if let [l, a] = *px {
            weighted += u64::from(l) * u64::from(a);
            alpha_sum += u64::from(a);
        }
    }
    let opaque_mean = weighted.checked_div(alpha_sum).unwrap_or(0);
    let background: u32 = if opaque_mean < 128 { 255 } else { 0 };
    la.chunks_exact(2)
        .map(|px| match *px {
            [l, a] => {
                let (l, a) = (u32::from(l), u32::from(a));
                ((l * a + background * (255 - a) + 127) / 255) as u8
            }
            _ => 0,
        })
        .collect()
}

/// Whether `path` has one of the image extensions (case-insensitive).
fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// One entry of the work list: a file to classify, or an input that failed to expand.
type Job = (PathBuf, Option<anyhow::Error>);

/// Expands folders to their image files (sorted, not recursive); files are kept as given.
fn expand(inputs: &[PathBuf]) -> Vec<Job> {
    let mut jobs = Vec::new();
    for input in inputs {
        if !input.is_dir() {
            jobs.push((input.clone(), None));
            continue;
        }
        let listing = std::fs::read_dir(input).and_then(|entries| {
            entries
                .map(|e| e.map(|e| e.path()))
                .collect::<std::io::Result<Vec<_>>>()
        });
        match listing {
            Err(e) => jobs.push((
                input.clone(),
                Some(anyhow::Error::new(e).context("cannot list the folder")),
            )),
            Ok(mut files) => {
                files.retain(|p| p.is_file() && has_image_extension(p));
                files.sort();
                if files.is_empty() {
                    let e =
                        anyhow::anyhow!("the folder contains no .png, .jpg, .jpeg or .bmp files");
                    jobs.push((input.clone(), Some(e)));
                }
                jobs.extend(files.into_iter().map(|f| (f, None)));
            }
        }
    }
    jobs
}

/// Rounds a probability for printing (f32 has about 7 significant digits).
fn rounded(p: f32) -> f64 {
    (f64::from(p) * 1e6).round() / 1e6
}

fn json_line(file: &Path, result: &anyhow::Result<Prediction>, top: usize) -> serde_json::Value {
    let file = file.display().to_string();
    match result {
        Ok(p) => serde_json::json!({
            "file": file,
            "digit": p.digit,
            "probabilities": p.probabilities.iter().map(|&v| rounded(v)).collect::<Vec<_>>(),
            "top": p.top(top).into_iter().map(|(c, v)| serde_json::json!([c, rounded(v)])).collect::<Vec<_>>(),
        }),
        Err(e) => serde_json::json!({ "file": file, "error": format!("{e:#}") }),
    }
}

fn text_line(file: &Path, p: &Prediction, top: usize) -> String {
    let mut line = format!("{}: {}", file.display(), p.digit);
    let ranked = p.top(top);
    if !ranked.is_empty() {
        let parts: Vec<String> = ranked.iter().map(|(c, v)| format!("{c} {v:.3}")).collect();
        line.push_str(&format!("  ({})", parts.join(", ")));
    }
    line
}

/// Predicts every file; returns `Ok(false)` if any file could not be read as a digit.
pub fn run(args: &PredictArgs) -> anyhow::Result<bool> {
    let mut predictor = Predictor::load(&args.model)?;
    let mut stdout = std::io::stdout().lock();
    let mut all_ok = true;
    for (file, expand_error) in expand(&args.inputs) {
        let result = match expand_error {
            Some(e) => Err(e),
            None => predictor.predict_file(&file),
        };
        all_ok &= result.is_ok();
        if args.json {
            writeln!(stdout, "{}", json_line(&file, &result, args.top))?;
        } else {
            match &result {
                Ok(p) => writeln!(stdout, "{}", text_line(&file, p, args.top))?,
                Err(e) => {
                    stdout.flush()?;
                    eprintln!("error: {}: {e:#}", file.display());
                }
            }
        }
    }
    stdout.flush()?;
    Ok(all_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_ranks_and_formats() {
        let p = Prediction {
            digit: 7,
            probabilities: vec![0.0, 0.012, 0.0, 0.0, 0.0, 0.0, 0.0, 0.981, 0.0, 0.004],
        };
        assert_eq!(p.top(3), vec![(7, 0.981), (1, 0.012), (9, 0.004)]);
        assert_eq!(
            text_line(Path::new("a.png"), &p, 3),
            "a.png: 7  (7 0.981, 1 0.012, 9 0.004)"
        );
        assert_eq!(text_line(Path::new("a.png"), &p, 0), "a.png: 7");
        assert_eq!(p.top(50).len(), 10);
        let j = json_line(Path::new("a.png"), &Ok(p), 2);
        assert_eq!(j["digit"], 7);
        assert_eq!(j["top"][0][0], 7);
        assert_eq!(j["top"][0][1], 0.981);
        assert_eq!(j["probabilities"].as_array().map(Vec::len), Some(10));
    }

    #[test]
    fn transparent_canvas_keeps_its_strokes() {
        // Black strokes on a fully transparent (and black-valued) canvas.
        let mut img = image::RgbaImage::new(4, 1);
        img.put_pixel(1, 0, image::Rgba([0, 0, 0, 255]));
        let luma = luminance(&DynamicImage::ImageRgba8(img));
        assert_eq!(luma, vec![255, 0, 255, 255]);
    }

    #[test]
    fn extensions() {
        assert!(has_image_extension(Path::new("x/a.PNG")));
        assert!(has_image_extension(Path::new("a.jpeg")));
        assert!(!has_image_extension(Path::new("a.txt")));
        assert!(!has_image_extension(Path::new("png")));
    }
}
