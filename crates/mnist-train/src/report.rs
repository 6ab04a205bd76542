//! Report files of a run: the per-epoch metrics and the confusion matrix as CSV, and PNG
//! plots of loss and accuracy per epoch.
//!
//! Every file is written atomically: the content goes to a temporary file in the same
//! directory, which is then renamed over the target, so a killed process leaves either the
//! old file or the new one, never half of one.
//!
//! Plots are drawn by `plotters` into an in-memory RGB bitmap and encoded with `png`. Their
//! text uses DejaVu Sans, embedded in the binary (`assets/DejaVuSans.ttf`, licence beside
//! it), so plotting needs no system fonts, fontconfig or freetype.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::confusion::ConfusionMatrix;
use crate::metrics::{EpochMetrics, SplitMetrics};

/// Width of the PNG plots, in pixels.
pub const PLOT_WIDTH: u32 = 800;
/// Height of the PNG plots, in pixels.
pub const PLOT_HEIGHT: u32 = 500;

/// Header of the metrics CSV written by [`write_metrics_csv`].
pub const METRICS_CSV_HEADER: &str = "epoch,learning_rate,mean_batch_loss,summed_batch_loss,\
train_loss,train_accuracy,validation_loss,validation_accuracy,test_loss,test_accuracy,\
train_seconds,examples_per_second";

/// The font embedded for plot text (DejaVu Sans; see `assets/DejaVuSans-LICENSE.txt`).
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
/// The family name the font is registered under: the one plotters' default styles use.
const FONT_FAMILY: &str = "sans-serif";

/// Why a report file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Creating, writing or renaming the file failed.
    #[error(
        "cannot write report file {}: {source}; check that its directory exists, is writable \
         and that the disk is not full",
        path.display()
    )]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The path names no file (e.g. it ends in `..` or is a root).
    #[error(
        "cannot write report file {}: the path does not end in a file name; \
         pass a file path such as run/metrics.csv",
        path.display()
    )]
    NotAFile { path: PathBuf },
    /// plotters failed to draw (a bug in this module rather than in the data).
    #[error(
        "cannot draw plot {target}: {message}; this is a bug in mnist-train's report \
         module, please report it together with the run's metrics.csv"
    )]
    Draw { target: String, message: String },
    /// The PNG encoder failed on the drawn bitmap.
    #[error("cannot encode plot {target} as PNG: {source}")]
    Encode {
        target: String,
        #[source]
        source: png::EncodingError,
    },
    /// The embedded font could not be parsed.
    #[error(
        "cannot load the font embedded for plot text (assets/DejaVuSans.ttf in mnist-train); \
         the file is damaged: restore it from the repository and rebuild"
    )]
    Font,
}

// ---------------------------------------------------------------------------------------
// Atomic writes

/// Writes `bytes` to `path` through a temporary sibling file and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let Some(name) = path.file_name() else {
        return Err(ReportError::NotAFile {
            path: path.to_path_buf(),
        });
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(
        ".{}-{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = path.with_file_name(tmp_name);
    let io_err = |source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    };

    let written = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if let Err(source) = written {
        // Best effort: the temporary file may not even exist.
        let _ = fs::remove_file(&tmp);
        return Err(io_err(source));
    }
    // Make the rename itself durable; not all platforms can open a directory, so best effort.
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// CSV

fn push_opt(line: &mut String, value: Option<f64>) {
    line.push(',');
    if let Some(v) = value {
        // `Display` for f64 is the shortest text that parses back to the same value.
        let _ = write!(line, "{v}");
    }
}

/// The metrics CSV text: [`METRICS_CSV_HEADER`] then one row per epoch, an empty cell for
/// each split not evaluated that epoch. Numbers are written so that they parse back exactly.
pub fn metrics_csv(history: &[EpochMetrics]) -> String {
    let mut out = String::with_capacity(64 + history.len() * 160);
    out.push_str(METRICS_CSV_HEADER);
    out.push('\n');
    for m in history {
        let _ = write!(out, "{}", m.epoch);
        push_opt(&mut out, Some(m.learning_rate));
        push_opt(&mut out, Some(m.mean_batch_loss));
        push_opt(&mut out, Some(m.summed_batch_loss));
        for split in [m.train, m.validation, m.test] {
            push_opt(&mut out, split.map(|s| s.loss));
            push_opt(&mut out, split.map(|s| s.accuracy));
        }
        push_opt(&mut out, Some(m.train_seconds));
        push_opt(&mut out, Some(m.examples_per_second));
        out.push('\n');
    }
    out
}

/// Writes [`metrics_csv`] of `history` to `path`, atomically.
pub fn write_metrics_csv(
    path: impl AsRef<Path>,
    history: &[EpochMetrics],
) -> Result<(), ReportError> {
    write_atomic(path.as_ref(), metrics_csv(history).as_bytes())
}

/// The confusion matrix CSV text: header `true\predicted,0,...,n-1,total,accuracy`, then one
/// row per true class with its counts per predicted class, its number of examples and the
/// fraction of them classified correctly (empty for a class with no examples).
pub fn confusion_csv(matrix: &ConfusionMatrix) -> String {
    let n = matrix.classes();
    let mut out = String::with_capacity(32 + (n + 1) * (n * 6 + 32));
    out.push_str("true\\predicted");
    for p in 0..n {
        let _ = write!(out, ",{p}");
    }
    out.push_str(",total,accuracy\n");
    let accuracy = matrix.per_class_accuracy();
    for (t, (row, acc)) in matrix.counts().iter().zip(accuracy).enumerate() {
        let _ = write!(out, "{t}");
        for c in row {
            let _ = write!(out, ",{c}");
        }
        let _ = write!(out, ",{}", row.iter().sum::<u64>());
        push_opt(&mut out, acc);
        out.push('\n');
    }
    out
}

/// Writes [`confusion_csv`] of `matrix` to `path`, atomically.
pub fn write_confusion_csv(
    path: impl AsRef<Path>,
    matrix: &ConfusionMatrix,
) -> Result<(), ReportError> {
    write_atomic(path.as_ref(), confusion_csv(matrix).as_bytes())
}

// ---------------------------------------------------------------------------------------
// Plots

/// Registers the embedded font with plotters, once per process.
fn ensure_font() -> Result<(), ReportError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, FONT).is_ok()
    });
    if ok { Ok(()) } else { Err(ReportError::Font) }
}

/// One line of a plot.
struct Series {
    label: &'static str,
    color: RGBColor,
    /// Thinner line without markers, for a secondary curve.
    thin: bool,
    points: Vec<(f64, f64)>,
}

// Colours of the "tab10" palette, distinguishable for most colour-blind readers.
const TRAIN: RGBColor = RGBColor(31, 119, 180);
const VALIDATION: RGBColor = RGBColor(255, 127, 14);
const TEST: RGBColor = RGBColor(44, 160, 44);
const BATCH: RGBColor = RGBColor(150, 150, 150);

/// Up to this many points per line are also marked with dots.
const MAX_MARKED_POINTS: usize = 60;

fn split_series(history: &[EpochMetrics], value: fn(&SplitMetrics) -> f64) -> Vec<Series> {
    let series = |label, color, split: fn(&EpochMetrics) -> Option<SplitMetrics>| Series {
        label,
        color,
        thin: false,
        points: finite_points(history, |m| split(m).map(|s| value(&s))),
    };
    vec![
        series("train", TRAIN, |m| m.train),
        series("validation", VALIDATION, |m| m.validation),
        series("test", TEST, |m| m.test),
    ]
}

/// (epoch, value) for each epoch whose value exists and is finite.
fn finite_points(
    history: &[EpochMetrics],
    value: impl Fn(&EpochMetrics) -> Option<f64>,
) -> Vec<(f64, f64)> {
    history
        .iter()
        .filter_map(|m| Some((m.epoch as f64, value(m)?)))
        .filter(|(_, v)| v.is_finite())
        .collect()
}

/// Which y range a plot uses.
#[derive(Clone, Copy)]
enum YRange {
    /// From the smallest value (less a margin, not below 0 for non-negative data) to the
    /// largest plus a margin.
    Auto,
    /// From a little below the smallest value to exactly 1.
    UpToOne,
}

/// Draws the loss per epoch of each split that has one, plus the training batches' mean loss
/// (with dropout and L2), as an 800x500 PNG at `path`, atomically. Epochs or splits without
/// a finite value are skipped; an empty history gives empty axes.
pub fn plot_loss(
    path: impl AsRef<Path>,
    title: &str,
    history: &[EpochMetrics],
) -> Result<(), ReportError> {
    let path = path.as_ref();
    let png = draw_loss(&path.display().to_string(), title, history)?;
    write_atomic(path, &png)
}

/// Draws the accuracy per epoch of each split that has one as an 800x500 PNG at `path`,
/// atomically. The y axis runs from a little below the lowest accuracy to 1.
pub fn plot_accuracy(
    path: impl AsRef<Path>,
    title: &str,
    history: &[EpochMetrics],
) -> Result<(), ReportError> {
    let path = path.as_ref();
    let png = draw_accuracy(&path.display().to_string(), title, history)?;
    write_atomic(path, &png)
}

/// The PNG bytes [`plot_loss`] writes.
pub fn loss_png(title: &str, history: &[EpochMetrics]) -> Result<Vec<u8>, ReportError> {
    draw_loss("(loss plot in memory)", title, history)
}

/// The PNG bytes [`plot_accuracy`] writes.
pub fn accuracy_png(title: &str, history: &[EpochMetrics]) -> Result<Vec<u8>, ReportError> {
    draw_accuracy("(accuracy plot in memory)", title, history)
}

fn draw_loss(target: &str, title: &str, history: &[EpochMetrics]) -> Result<Vec<u8>, ReportError> {
    let mut series = split_series(history, |s| s.loss);
    series.push(Series {
        label: "train (batch mean)",
        color: BATCH,
        thin: true,
        points: finite_points(history, |m| Some(m.mean_batch_loss)),
    });
    render(target, title, "loss", YRange::Auto, &series)
}

fn draw_accuracy(
    target: &str,
    title: &str,
    history: &[EpochMetrics],
) -> Result<Vec<u8>, ReportError> {
    let series = split_series(history, |s| s.accuracy);
    render(target, title, "accuracy", YRange::UpToOne, &series)
}

/// The epoch axis: continuous (so points can sit inside a margin) but with ticks only at
/// whole epochs. plotters' `with_key_points` would do, but loses f64 tick formatting.
struct EpochAxis {
    inner: RangedCoordf64,
    ticks: Vec<f64>,
}

impl Ranged for EpochAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }
}

impl ValueFormatter<f64> for EpochAxis {
    fn format(value: &f64) -> String {
        format!("{value:.0}")
    }
}

/// X range with a small margin, and integer epoch ticks at a "nice" step (at most ~10).
fn x_axis(series: &[Series]) -> EpochAxis {
    let (lo, hi) =
        min_max(series.iter().flat_map(|s| s.points.iter().map(|p| p.0))).unwrap_or((1.0, 1.0));
    let span = hi - lo;
    let pad = if span == 0.0 {
        1.0
    } else {
        (span * 0.03).max(0.25)
    };
    let mut step = 1.0;
    for candidate in [
        1.0, 2.0, 5.0, 10.0, 20.0, 25.0, 50.0, 100.0, 200.0, 250.0, 500.0,
    ] {
        step = candidate;
        if span / candidate <= 10.0 {
            break;
        }
    }
    while span / step > 10.0 {
        step *= 10.0;
    }
    let first = (lo / step).ceil() * step;
    let ticks: Vec<f64> = (0..)
        .map(|i| first + f64::from(i) * step)
        .take_while(|&t| t <= hi)
        .collect();
    EpochAxis {
        inner: (lo - pad..hi + pad).into(),
        ticks,
    }
}

fn y_axis(series: &[Series], kind: YRange) -> (f64, f64) {
    let values = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    match kind {
        YRange::UpToOne => {
            // Accuracies lie in [0, 1]; should one not, widen the range rather than hide it.
            let (lo, hi) = min_max(values).map_or((0.0, 1.0), |(lo, hi)| (lo.min(1.0), hi));
            let margin = ((1.0 - lo) * 0.08).max(0.002);
            let bottom = if lo >= 0.0 {
                (lo - margin).max(0.0)
            } else {
                lo - margin
            };
            (bottom, hi.max(1.0))
        }
        YRange::Auto => {
            let Some((lo, hi)) = min_max(values) else {
                return (0.0, 1.0);
            };
            let span = hi - lo;
            let margin = if span > 0.0 {
                span * 0.08
            } else {
                (hi.abs() * 0.1).max(0.05)
            };
            let bottom = if lo >= 0.0 {
                (lo - margin).max(0.0)
            } else {
                lo - margin
            };
            (bottom, hi + margin)
        }
    }
}

fn min_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// Most y tick labels plotters is asked for.
const Y_LABELS: usize = 8;

/// Formats y tick labels so that neighbouring ticks differ: fixed decimals (plotters steps by
/// 1, 2 or 5 times a power of ten, at least `span / Y_LABELS`), scientific notation for
/// magnitudes whose fixed form would not fit the label area.
fn y_label_format(lo: f64, hi: f64) -> impl Fn(&f64) -> String {
    let min_step = (hi - lo) / Y_LABELS as f64;
    let decimals = if min_step > 0.0 && min_step.is_finite() {
        // Clamped to 0..=8 before the cast, so it cannot truncate.
        (-min_step.log10()).ceil().clamp(0.0, 8.0) as usize
    } else {
        2
    };
    let scientific = lo.abs().max(hi.abs()) >= 1e5 || decimals > 5;
    move |y: &f64| {
        if scientific {
            format!("{y:.2e}")
        } else {
            format!("{y:.decimals$}")
        }
    }
}

fn render(
    target: &str,
    title: &str,
    y_label: &str,
    y_kind: YRange,
    series: &[Series],
) -> Result<Vec<u8>, ReportError> {
    ensure_font()?;
    let (w, h) = (PLOT_WIDTH, PLOT_HEIGHT);
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    let draw_err = |e: &dyn std::fmt::Display| ReportError::Draw {
        target: target.to_string(),
        message: e.to_string(),
    };
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_err(&e))?;

        let x = x_axis(series);
        let (y_lo, y_hi) = y_axis(series, y_kind);
        let y_format = y_label_format(y_lo, y_hi);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FONT_FAMILY, 24))
            .margin(16)
            .x_label_area_size(52)
            .y_label_area_size(78)
            .build_cartesian_2d(x, y_lo..y_hi)
            .map_err(|e| draw_err(&e))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(y_label)
            .axis_desc_style((FONT_FAMILY, 18))
            .label_style((FONT_FAMILY, 14))
            .y_label_formatter(&y_format)
            .y_labels(Y_LABELS)
            .bold_line_style(RGBColor(225, 225, 225))
            .light_line_style(RGBColor(245, 245, 245))
            .draw()
            .map_err(|e| draw_err(&e))?;

        let mut legend_entries = 0;
        for s in series.iter().filter(|s| !s.points.is_empty()) {
            let color = s.color;
            let width = if s.thin { 1 } else { 2 };
            chart
                .draw_series(LineSeries::new(
                    s.points.iter().copied(),
                    color.stroke_width(width),
                ))
                .map_err(|e| draw_err(&e))?
                .label(s.label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(width))
                });
            legend_entries += 1;
            // A single point makes no line: it always gets a marker.
            if (!s.thin && s.points.len() <= MAX_MARKED_POINTS) || s.points.len() == 1 {
                let radius = if s.thin { 2 } else { 3 };
                chart
                    .draw_series(
                        s.points
                            .iter()
                            .map(|&p| Circle::new(p, radius, color.filled())),
                    )
                    .map_err(|e| draw_err(&e))?;
            }
        }
        if legend_entries > 0 {
            // Losses fall and accuracies rise: keep the legend where the curves usually are not.
            let position = match y_kind {
                YRange::Auto => SeriesLabelPosition::UpperRight,
                YRange::UpToOne => SeriesLabelPosition::LowerRight,
            };
            chart
                .configure_series_labels()
                .position(position)
                .margin(12)
                .label_font((FONT_FAMILY, 15))
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(160, 160, 160))
                .draw()
                .map_err(|e| draw_err(&e))?;
        } else {
            root.draw(&Text::new(
                "no data",
                ((w / 2) as i32 - 30, (h / 2) as i32),
                (FONT_FAMILY, 18)
                    .into_font()
                    .color(&RGBColor(120, 120, 120)),
            ))
            .map_err(|e| draw_err(&e))?;
        }
        root.present().map_err(|e| draw_err(&e))?;
    }
    encode_png(target, &rgb, w, h)
}

fn encode_png(target: &str, rgb: &[u8], w: u32, h: u32) -> Result<Vec<u8>, ReportError> {
    let encode_err = |source| ReportError::Encode {
        target: target.to_string(),
        source,
    };
    let mut out = Vec::with_capacity(64 * 1024);
    let mut encoder = png::Encoder::new(&mut out, w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(encode_err)?;
    writer.write_image_data(rgb).map_err(encode_err)?;
    writer.finish().map_err(encode_err)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(points: &[(f64, f64)]) -> Vec<Series> {
        vec![Series {
            label: "train",
            color: TRAIN,
            thin: false,
            points: points.to_vec(),
        }]
    }

    #[test]
    fn epoch_ticks_are_whole_and_at_most_about_ten() {
        let ticks = |lo: usize, hi: usize| {
            let pts: Vec<(f64, f64)> = (lo..=hi).map(|e| (e as f64, 0.5)).collect();
            x_axis(&series(&pts)).ticks
        };
        assert_eq!(ticks(1, 5), [1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(ticks(1, 10), (1..=10).map(f64::from).collect::<Vec<_>>());
        assert_eq!(ticks(1, 30), [5.0, 10.0, 15.0, 20.0, 25.0, 30.0]);
        assert_eq!(ticks(7, 7), [7.0]);
        assert!(ticks(1, 100_000).len() <= 10);
        let one = x_axis(&series(&[(3.0, 0.5)]));
        assert_eq!(one.inner.range(), 2.0..4.0);
        // No data at all still gives a usable axis.
        assert!(x_axis(&series(&[])).inner.range().end > x_axis(&series(&[])).inner.range().start);
    }

    #[test]
    fn y_labels_follow_the_tick_step() {
        let label = |lo, hi, y| y_label_format(lo, hi)(&y);
        assert_eq!(label(0.1, 0.95, 0.4), "0.4");
        assert_eq!(label(0.87, 1.0, 0.9), "0.90");
        assert_eq!(label(0.99, 1.0, 0.995), "0.995");
        assert_eq!(label(0.0, 300.0, 100.0), "100");
        assert_eq!(label(0.0, 0.0, 0.0), "0.00");
        assert_eq!(label(0.0, 1e30, 5e29), "5.00e29");
        assert_eq!(label(0.0, 1e-9, 5e-10), "5.00e-10");
    }

    #[test]
    fn y_ranges() {
        let (lo, hi) = y_axis(&series(&[(1.0, 0.9), (2.0, 0.98)]), YRange::UpToOne);
        assert!(lo < 0.9 && lo > 0.85, "{lo}");
        assert_eq!(hi, 1.0);
        assert_eq!(y_axis(&series(&[(1.0, 1.0)]), YRange::UpToOne).1, 1.0);
        assert!(y_axis(&series(&[(1.0, 1.0)]), YRange::UpToOne).0 < 1.0);
        assert_eq!(y_axis(&series(&[]), YRange::UpToOne), (0.0, 1.0));

        let (lo, hi) = y_axis(&series(&[(1.0, 0.5), (2.0, 0.1)]), YRange::Auto);
        assert!((0.0..0.1).contains(&lo) && hi > 0.5, "{lo} {hi}");
        let (lo, hi) = y_axis(&series(&[(1.0, 0.0)]), YRange::Auto);
        assert!(lo == 0.0 && hi > 0.0, "{lo} {hi}");
        let (lo, hi) = y_axis(&series(&[(1.0, -2.0)]), YRange::Auto);
        assert!(lo < -2.0 && hi > -2.0, "{lo} {hi}");
    }

    #[test]
    fn atomic_write_cleans_up_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        // Renaming a file over a non-empty directory fails after the temp file was written.
        let target = dir.path().join("occupied");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("x"), b"x").unwrap();
        let err = write_atomic(&target, b"data").unwrap_err();
        assert!(err.to_string().contains("occupied"), "{err}");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temp file left behind"
        );
    }
}

/// Report files written from a synthetic history, through the public API: CSVs parse back to
/// the same numbers, plots are real PNGs of the right size with text, every split's curve and
/// a legend. `MNIST_REPORT_PLOT_DIR=dir` keeps copies of the plots to look at.
#[cfg(test)]
mod file_tests {
    use std::fs;
    use std::path::Path;

    use super::*;
    use crate::confusion::ConfusionMatrix;
    use crate::metrics::{EpochMetrics, SplitMetrics};

    fn split(loss: f64, accuracy: f64) -> Option<SplitMetrics> {
        Some(SplitMetrics { loss, accuracy })
    }

    /// Five epochs; the test split is only evaluated in the last one.
    fn history() -> Vec<EpochMetrics> {
        (1..=5)
            .map(|epoch| {
                let e = epoch as f64;
                EpochMetrics {
                    epoch,
                    learning_rate: 0.1 * 0.5f64.powi(epoch as i32 - 1),
                    mean_batch_loss: 0.9 / e + 0.05,
                    summed_batch_loss: 420.0 / e,
                    train: split(0.8 / e, 1.0 - 0.1 / e),
                    validation: split(0.85 / e + 0.02, 1.0 - 0.12 / e),
                    test: if epoch == 5 { split(0.2, 0.97) } else { None },
                    train_seconds: 1.5 + e / 10.0,
                    examples_per_second: 50_000.0 / (1.5 + e / 10.0),
                }
            })
            .collect()
    }

    /// With MNIST_REPORT_PLOT_DIR set, copies a plot there to be looked at.
    fn keep(path: &Path, name: &str) {
        if let Some(dir) = std::env::var_os("MNIST_REPORT_PLOT_DIR") {
            fs::copy(path, Path::new(&dir).join(name)).unwrap();
        }
    }

    fn parse(cell: &str) -> Option<f64> {
        (!cell.is_empty()).then(|| cell.parse().unwrap())
    }

    #[test]
    fn metrics_csv_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.csv");
        let history = history();
        write_metrics_csv(&path, &history).unwrap();

        let text = fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(METRICS_CSV_HEADER));
        assert_eq!(METRICS_CSV_HEADER.split(',').count(), 12);
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        assert_eq!(rows.len(), 5);
        for (row, m) in rows.iter().zip(&history) {
            assert_eq!(row.len(), 12, "{row:?}");
            assert_eq!(row[0].parse::<usize>().unwrap(), m.epoch);
            let expected = [
                Some(m.learning_rate),
                Some(m.mean_batch_loss),
                Some(m.summed_batch_loss),
                m.train.map(|s| s.loss),
                m.train.map(|s| s.accuracy),
                m.validation.map(|s| s.loss),
                m.validation.map(|s| s.accuracy),
                m.test.map(|s| s.loss),
                m.test.map(|s| s.accuracy),
                Some(m.train_seconds),
                Some(m.examples_per_second),
            ];
            let parsed: Vec<Option<f64>> = row[1..].iter().map(|c| parse(c)).collect();
            // Bit-exact: the writer uses f64's shortest round-trip formatting.
            assert_eq!(parsed, expected);
        }
        // No split evaluated: empty cells, not "None" or "NaN".
        assert!(text.lines().nth(1).unwrap().contains(",,"));
    }

    #[test]
    fn empty_history_gives_header_only() {
        assert_eq!(metrics_csv(&[]), format!("{METRICS_CSV_HEADER}\n"));
    }

    #[test]
    fn confusion_csv_has_counts_totals_and_recall() {
        let mut m = ConfusionMatrix::new(10);
        // Class d: 10 + d examples, d of them predicted as (d + 1) % 10; class 9 has none.
        for d in 0u8..9 {
            for i in 0..10 + d {
                let predicted = if i < d { (d + 1) % 10 } else { d };
                m.add(d, predicted).unwrap();
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("confusion.csv");
        write_confusion_csv(&path, &m).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "true\\predicted,0,1,2,3,4,5,6,7,8,9,total,accuracy"
        );
        assert_eq!(lines.len(), 11);
        for (d, line) in lines[1..].iter().enumerate() {
            let cells: Vec<&str> = line.split(',').collect();
            assert_eq!(cells.len(), 13);
            assert_eq!(cells[0], d.to_string());
            let counts: Vec<u64> = cells[1..11].iter().map(|c| c.parse().unwrap()).collect();
            let total: u64 = cells[11].parse().unwrap();
            assert_eq!(counts.iter().sum::<u64>(), total);
            assert_eq!(counts, m.counts()[d]);
            if d == 9 {
                assert_eq!(total, 0);
                assert_eq!(cells[12], "", "a class without examples has no accuracy");
            } else {
                assert_eq!(total, 10 + d as u64);
                assert_eq!(counts[d], 10);
                let acc: f64 = cells[12].parse().unwrap();
                assert_eq!(acc, 10.0 / (10.0 + d as f64));
            }
        }
    }

    /// Checks the PNG signature and IHDR, then decodes it to RGB rows.
    fn decode_png(path: &Path) -> Vec<u8> {
        let bytes = fs::read(path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        assert_eq!(&bytes[12..16], b"IHDR");
        let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        assert_eq!((width, height), (PLOT_WIDTH, PLOT_HEIGHT));
        assert_eq!((width, height), (800, 500));

        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Rgb);
        buf.truncate(info.buffer_size());
        buf
    }

    /// Pixels within a small distance of `rgb`.
    fn count_color(pixels: &[u8], rgb: [u8; 3]) -> usize {
        pixels
            .chunks_exact(3)
            .filter(|p| p.iter().zip(rgb).all(|(&a, b)| a.abs_diff(b) <= 12))
            .count()
    }

    /// The RGB bytes of a band of rows of a plot.
    fn rows(pixels: &[u8], rows: std::ops::Range<usize>) -> &[u8] {
        let stride = PLOT_WIDTH as usize * 3;
        &pixels[rows.start * stride..rows.end * stride]
    }

    fn dark_pixels(pixels: &[u8]) -> usize {
        pixels
            .chunks_exact(3)
            .filter(|p| p.iter().all(|&c| c < 80))
            .count()
    }

    const TRAIN: [u8; 3] = [31, 119, 180];
    const VALIDATION: [u8; 3] = [255, 127, 14];
    const TEST: [u8; 3] = [44, 160, 44];

    #[test]
    fn plots_are_pngs_with_curves_text_and_legend() {
        let dir = tempfile::tempdir().unwrap();
        let history = history();
        let loss = dir.path().join("loss.png");
        let accuracy = dir.path().join("accuracy.png");
        plot_loss(&loss, "mnist-rs: loss per epoch", &history).unwrap();
        plot_accuracy(&accuracy, "mnist-rs: accuracy per epoch", &history).unwrap();

        keep(&loss, "loss.png");
        keep(&accuracy, "accuracy.png");
        for path in [&loss, &accuracy] {
            let pixels = decode_png(path);
            // Train and validation have lines (5 epochs); test has one marker plus its legend line.
            assert!(count_color(&pixels, TRAIN) > 1000, "{}", path.display());
            assert!(
                count_color(&pixels, VALIDATION) > 1000,
                "{}",
                path.display()
            );
            assert!(count_color(&pixels, TEST) > 40, "{}", path.display());
            // Title, axis descriptions, tick labels and legend text are drawn in black.
            // Text is drawn in black: the title alone in the top band, "epoch" alone in the
            // bottom one, tick labels and the legend in between.
            let title = dark_pixels(rows(&pixels, 0..38));
            let x_desc = dark_pixels(rows(&pixels, 455..500));
            let all = dark_pixels(&pixels);
            assert!(title > 300, "{}: title missing ({title})", path.display());
            assert!(
                x_desc > 30,
                "{}: axis label missing ({x_desc})",
                path.display()
            );
            assert!(all > 2000, "{}: text missing ({all})", path.display());
        }
        // Atomic writes leave no temporary files behind.
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["accuracy.png", "loss.png"]);
    }

    #[test]
    fn plots_survive_one_epoch_missing_splits_and_non_finite_values() {
        let dir = tempfile::tempdir().unwrap();
        let mut one = history();
        one.truncate(1);
        one[0].validation = None;
        one[0].train = split(f64::NAN, f64::INFINITY);

        let path = dir.path().join("one.png");
        plot_loss(&path, "one epoch", &one).unwrap();
        keep(&path, "one-loss.png");
        let pixels = decode_png(&path);
        assert_eq!(count_color(&pixels, VALIDATION), 0);
        plot_accuracy(&path, "one epoch", &one).unwrap();
        keep(&path, "one-accuracy.png");
        let pixels = decode_png(&path);
        assert_eq!(
            count_color(&pixels, TRAIN),
            0,
            "the NaN/inf point is skipped"
        );

        // No epochs at all: still a valid PNG with a title and axes.
        plot_loss(&path, "nothing yet", &[]).unwrap();
        keep(&path, "empty-loss.png");
        plot_accuracy(&path, "nothing yet", &[]).unwrap();
        let pixels = decode_png(&path);
        assert!(dark_pixels(rows(&pixels, 0..38)) > 100, "title missing");

        // A flat and a wildly varying loss.
        let mut flat = history();
        for m in &mut flat {
            m.train = split(0.0, 1.0);
            m.validation = split(0.0, 1.0);
            m.test = None;
            m.mean_batch_loss = 0.0;
        }
        plot_loss(&path, "flat", &flat).unwrap();
        keep(&path, "flat-loss.png");
        plot_accuracy(&path, "flat", &flat).unwrap();
        flat[2].train = split(1e30, -1.0);
        plot_loss(&path, "huge", &flat).unwrap();
        keep(&path, "huge-loss.png");
        plot_accuracy(&path, "huge", &flat).unwrap();
    }

    #[test]
    fn in_memory_png_matches_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("loss.png");
        let history = history();
        plot_loss(&path, "t", &history).unwrap();
        assert_eq!(fs::read(&path).unwrap(), loss_png("t", &history).unwrap());
    }

    #[test]
    fn write_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir").join("metrics.csv");
        let err = write_metrics_csv(&missing, &history()).unwrap_err();
        assert!(matches!(err, ReportError::Io { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("no-such-dir/metrics.csv"), "{message}");
        assert!(message.contains("directory exists"), "{message}");

        let err = plot_loss(dir.path().join("no-such-dir/loss.png"), "t", &history()).unwrap_err();
        assert!(err.to_string().contains("loss.png"), "{err}");

        let err = write_confusion_csv(Path::new("/"), &ConfusionMatrix::new(10)).unwrap_err();
        assert!(matches!(err, ReportError::NotAFile { .. }), "{err:?}");
    }

    #[test]
    fn rewriting_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.csv");
        let history = history();
        write_metrics_csv(&path, &history).unwrap();
        write_metrics_csv(&path, &history[..2]).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap().lines().count(), 3);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
