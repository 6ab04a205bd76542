//! The subcommands other than `predict`: each parses nothing itself (clap did), calls the
//! libraries, and prints for a person.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use mnist_core::faer::Par;
use mnist_core::{Loss, OutputHead, evaluate};
use mnist_dataset::{DataSources, Mirror, Origin, Split, load_split};
use mnist_train::trainer::{self, RunSummary};
use mnist_train::{ExperimentConfig, RunOptions, RunOutcome, checkpoint};

use crate::{DataArgs, EvalArgs, SplitArg, TrainArgs};

/// The user's data sources: environment, then flags (flags win).
fn sources(data_dir: Option<PathBuf>, flags: &DataArgs) -> DataSources {
    let mut sources = DataSources::from_env();
    if data_dir.is_some() {
        sources.data_dir = data_dir;
    }
    if let Some(dir) = &flags.cache_dir {
        sources.cache_dir = Some(dir.clone());
    }
    if let Some(list) = &flags.mirrors {
        sources.mirrors = Mirror::parse_list(list);
    }
    sources
}

fn threads(requested: Option<usize>) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if let Some(n) = requested.filter(|&n| n > cores) {
        // Allowed (results do not depend on it), but each pass then waits on descheduled
        // threads: a short run can take a hundred times longer.
        tracing::warn!(
            "--threads {n} is more than the {cores} core(s) here; the extra threads only wait, so this will be slower than --threads {cores}"
        );
    }
    requested.unwrap_or(cores).max(1)
}

fn par(threads: usize) -> Par {
    if threads <= 1 {
        Par::Seq
    } else {
        Par::rayon(threads)
    }
}

pub fn train(args: TrainArgs, flags: &DataArgs) -> anyhow::Result<ExitCode> {
    let file = args.config.display().to_string();
    let mut config = ExperimentConfig::load(&args.config)?;
    if let Some(epochs) = args.epochs {
        config.training.epochs = epochs;
    }
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    config.validate(&file)?;
    let data = mnist_train::prepare(&config, &sources(args.data_dir.clone(), flags))?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(&config.name));
    let interrupt = Arc::new(AtomicBool::new(false));
    let flag = interrupt.clone();
    // Ctrl-C, and SIGTERM (what `kill`, container runtimes and batch schedulers send).
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            // A second Ctrl-C: the user will not wait. Checkpoints are written atomically, so
            // the last whole one stays usable.
            eprintln!("\ninterrupted again: stopping now; the last saved checkpoint is kept");
            std::process::exit(130);
        }
        eprintln!(
            "\ninterrupted: saving a checkpoint at the next batch boundary (again to stop at once)..."
        );
    })
    .context("installing the Ctrl-C and SIGTERM handler")?;
    let threads = threads(args.threads);
    let opts = RunOptions {
        out_dir: out.clone(),
        resume: args.resume.clone(),
        threads,
        quiet: args.quiet,
        interrupt: Some(interrupt),
        overwrite: args.overwrite,
    };
    match mnist_train::run(&config, &data, &opts)? {
        RunOutcome::Finished(summary) => {
            print_summary(&summary, &out);
            Ok(ExitCode::SUCCESS)
        }
        RunOutcome::Interrupted {
            checkpoint,
            epoch,
            batch,
        } => {
            eprintln!(
                "stopped in epoch {epoch} after batch {batch}; continue with:\n  {}",
                resume_command(&args, &out, &checkpoint)
            );
            Ok(ExitCode::from(130))
        }
    }
}

/// The command that continues an interrupted run: this one's config and overrides, resuming
/// from `checkpoint` (a different seed or data would be refused or give another run).
fn resume_command(args: &TrainArgs, out: &Path, checkpoint: &Path) -> String {
    let mut cmd = format!(
        "mnist train {} --out {} --resume {}",
        args.config.display(),
        out.display(),
        checkpoint.display()
    );
    if let Some(epochs) = args.epochs {
        cmd += &format!(" --epochs {epochs}");
    }
    if let Some(seed) = args.seed {
        cmd += &format!(" --seed {seed}");
    }
    if let Some(dir) = &args.data_dir {
        cmd += &format!(" --data-dir {}", dir.display());
    }
    if let Some(threads) = args.threads {
        cmd += &format!(" --threads {threads}");
    }
    cmd
}

fn print_summary(s: &RunSummary, out: &Path) {
    let stop = if s.stopped_early {
        format!(" (stopped early; best epoch {})", s.best_epoch.unwrap_or(0))
    } else {
        String::new()
    };
    println!("experiment   {}", s.experiment);
    println!("epochs       {}{stop}", s.epochs_completed);
    println!("             {:>10}  {:>9}", "loss", "accuracy");
    println!(
        "train        {:>10.4}  {:>9.4}",
        s.train.loss, s.train.accuracy
    );
    if let Some(v) = s.validation {
        println!("validation   {:>10.4}  {:>9.4}", v.loss, v.accuracy);
    }
    println!(
        "test         {:>10.4}  {:>9.4}",
        s.test_loss, s.test_accuracy
    );
    let examples: f64 = s
        .history
        .iter()
        .map(|m| m.examples_per_second * m.train_seconds)
        .sum();
    println!(
        "train time   {:.1} s ({:.0} examples/s, {} thread(s))",
        s.train_seconds,
        examples / s.train_seconds.max(1e-9),
        s.threads
    );
    if let Some(bytes) = peak_memory() {
        println!("peak memory  {:.0} MB", bytes as f64 / 1e6);
    }
    println!("outputs      {}", out.display());
}

/// The process's peak resident set size (Linux `VmHWM`), if the platform reports it.
fn peak_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub fn eval(args: EvalArgs, flags: &DataArgs) -> anyhow::Result<()> {
    let saved = mnist_core::load_model::<f32>(&args.model)?;
    let split = match args.split {
        SplitArg::Test => Split::Test,
        SplitArg::Train => Split::Train,
    };
    let images = load_split(&sources(args.data_dir, flags), split)?;
    let p = saved.preprocessing;
    let prep = mnist_dataset::Preprocessing {
        scale: p.scale as f32,
        mean: p.mean as f32,
        std: p.std as f32,
    };
    let data = images.to_dataset(None, &prep)?;
    let net = &saved.network;
    if net.inputs() != data.dim() {
        bail!(
            "{}: the model takes {} inputs, MNIST images have {}",
            args.model.display(),
            net.inputs(),
            data.dim()
        );
    }
    // The loss each head is trained with in this project.
    let (loss, loss_name) = match net.architecture().output {
        OutputHead::Softmax => (Loss::CrossEntropy, "cross-entropy"),
        OutputHead::Sigmoid => (Loss::MeanSquaredError, "squared error"),
    };
    let par = par(threads(args.threads));
    let mut ws = net.workspace(1000);
    let (e, cm) = mnist_core::with_thread_pool(par, || -> anyhow::Result<_> {
        let e = evaluate(net, &mut ws, data.features(), data.labels(), loss, par)?;
        let cm = trainer::confusion_matrix(net, &mut ws, &data, par)?;
        Ok((e, cm))
    })?;
    println!("model      {}", args.model.display());
    println!("split      {:?} ({} images)", split, data.len());
    println!(
        "accuracy   {:.4} ({} of {})",
        e.accuracy, e.correct, e.examples
    );
    println!("loss       {:.4} (mean {loss_name})", e.mean_loss);
    println!("\nconfusion matrix (rows: true digit, columns: predicted)");
    print!("     ");
    (0..cm.classes()).for_each(|c| print!("{c:>6}"));
    println!("  accuracy");
    for (t, row) in cm.counts().iter().enumerate() {
        print!("{t:>4} ");
        row.iter().for_each(|n| print!("{n:>6}"));
        match cm.per_class_accuracy().get(t).copied().flatten() {
            Some(a) => println!("  {a:.4}"),
            None => println!("  -"),
        }
    }
    Ok(())
}

pub fn download(data_dir: Option<PathBuf>, flags: &DataArgs) -> anyhow::Result<()> {
    let sources = sources(None, flags);
    let dir = data_dir
        .or_else(|| sources.cache_dir.clone())
        .context("no directory to download into: pass --data-dir or set MNIST_CACHE_DIR")?;
    let report = sources.download_to(&dir)?;
    for (file, origin) in report {
        let how = match origin {
            Origin::Cache(_) => "already there".to_string(),
            other => format!("from {other}"),
        };
        println!("{:<26} verified, {how}", file.file_name());
    }
    println!("all four MNIST files are in {}", dir.display());
    Ok(())
}

/// The `format` entry of a safetensors file's metadata, if it has one.
fn safetensors_format(bytes: &[u8]) -> Option<String> {
    let (json, _) = mnist_core::safetensors_header(bytes)?;
    Some(
        json.get("__metadata__")?
            .get("format")?
            .as_str()?
            .to_string(),
    )
}

/// A config value as the config file spells it (`"each_epoch"` -> `each_epoch`, objects as
/// compact JSON), rather than as Rust's debug form.
fn plain<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".to_string(),
    }
}

pub fn inspect(file: &Path) -> anyhow::Result<()> {
    if file.extension().is_some_and(|e| e == "json") {
        let c = ExperimentConfig::load(file)?;
        let arch = c.architecture()?;
        println!("experiment config (valid): {}", file.display());
        println!("name          {}", c.name);
        if !c.description.is_empty() {
            println!("description   {}", c.description);
        }
        println!("layers        {:?}", arch.sizes);
        println!(
            "activations   {} -> {}",
            plain(&arch.hidden_activations),
            plain(&arch.output)
        );
        println!("parameters    {}", arch.num_params());
        println!(
            "data          split {}, normalization {}",
            plain(&c.data.split),
            plain(&c.data.normalization)
        );
        println!("train size    {}", c.train_size());
        println!(
            "training      loss {}, optimizer {}, lr {}, decay {}, l2 {}",
            plain(&c.training.loss),
            plain(&c.training.optimizer),
            c.training.learning_rate,
            plain(&c.training.schedule.decay),
            c.training.l2
        );
        println!(
            "              batch {}, shuffle {}, {} epochs, seed {}",
            plain(&c.training.batch_size),
            plain(&c.training.shuffle),
            c.training.epochs,
            c.seed
        );
        return Ok(());
    }
    let bytes = mnist_core::read_parameter_file(file, mnist_core::MAX_PARAMETER_FILE_BYTES)
        .with_context(|| format!("{}: cannot read", file.display()))?;
    match safetensors_format(&bytes).as_deref() {
        Some(checkpoint::FORMAT) => {
            let ck = checkpoint::from_bytes(&bytes)
                .map_err(|reason| anyhow::anyhow!("{}: {reason}", file.display()))?;
            let s = &ck.state;
            println!("checkpoint (checksum verified): {}", file.display());
            println!("experiment    {}", s.experiment);
            println!("layers        {:?}", s.architecture.sizes);
            if s.next_batch == 0 {
                println!(
                    "position      {} epoch(s) complete ({} steps taken)",
                    s.epoch, s.global_step
                );
            } else {
                println!(
                    "position      epoch {}, before batch {} ({} steps taken)",
                    s.epoch + 1,
                    s.next_batch + 1,
                    s.global_step
                );
            }
            println!("optimizer     {}", plain(&s.optimizer));
            if let Some(m) = s.history.last() {
                println!(
                    "last epoch    {}: batch loss {:.4}{}",
                    m.epoch,
                    m.mean_batch_loss,
                    m.validation
                        .map(|v| format!(", validation accuracy {:.4}", v.accuracy))
                        .unwrap_or_default()
                );
            }
        }
        _ => {
            let saved = mnist_core::from_safetensors_bytes::<f32>(&bytes)
                .with_context(|| format!("{}: not a valid model or checkpoint", file.display()))?;
            let arch = saved.network.architecture();
            println!("model (valid): {}", file.display());
            println!("layers        {:?}", arch.sizes);
            println!(
                "activations   {} -> {}",
                plain(&arch.hidden_activations),
                plain(&arch.output)
            );
            println!("parameters    {}", arch.num_params());
            let p = saved.preprocessing;
            println!(
                "preprocessing x = (pixel * {:.6} - {:.6}) / {:.6}",
                p.scale, p.mean, p.std
            );
        }
    }
    Ok(())
}

pub fn augment_preview(
    config_path: &Path,
    out: &Path,
    count: usize,
    variants: usize,
    flags: &DataArgs,
) -> anyhow::Result<()> {
    use mnist_core::rand_chacha::ChaCha8Rng;
    use mnist_dataset::augment::Augmenter;
    use rand::SeedableRng;

    let config = ExperimentConfig::load(config_path)?;
    let Some(aug) = config.data.augmentation.filter(|a| a.is_active()) else {
        bail!(
            "{}: data.augmentation is absent or all zero; nothing to show",
            config_path.display()
        );
    };
    let images = load_split(&sources(None, flags), Split::Train)?;
    let mut augmenter = Augmenter::new(aug)?;
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    // Tiles of 28x28 with a 2-pixel gutter, upscaled 2x so details are visible.
    let (side, gap, zoom) = (28usize, 2usize, 2usize);
    let cols = variants + 1;
    let (w, h) = (cols * (side + gap) + gap, count * (side + gap) + gap);
    let mut grid = image::GrayImage::from_pixel(w as u32, h as u32, image::Luma([60]));
    for row in 0..count {
        let raw = images
            .image(row)
            .context("the training set has fewer images than --count")?;
        let original: Vec<f32> = raw.iter().map(|&p| f32::from(p) / 255.0).collect();
        for col in 0..cols {
            let mut tile = original.clone();
            if col > 0 {
                augmenter.augment_image(&mut tile, 0.0, &mut rng);
            }
            for (i, v) in tile.iter().enumerate() {
                let (x, y) = (
                    gap + col * (side + gap) + i % side,
                    gap + row * (side + gap) + i / side,
                );
                let level = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
                grid.put_pixel(x as u32, y as u32, image::Luma([level]));
            }
        }
    }
    let grid = image::imageops::resize(
        &grid,
        (w * zoom) as u32,
        (h * zoom) as u32,
        image::imageops::FilterType::Nearest,
    );
    let mut png = std::io::Cursor::new(Vec::new());
    grid.write_to(&mut png, image::ImageFormat::Png)
        .context("encoding the PNG")?;
    mnist_dataset::atomic::write_file_atomically(out, png.get_ref())
        .with_context(|| format!("{}: cannot write", out.display()))?;
    println!(
        "{}: {count} digits, each followed by {variants} augmented versions (translate {} px, rotate {} degrees, scale {}{})",
        out.display(),
        aug.translate,
        aug.rotate_degrees,
        aug.scale,
        aug.elastic
            .map(|e| format!(", elastic alpha {} sigma {}", e.alpha, e.sigma))
            .unwrap_or_default()
    );
    Ok(())
}
