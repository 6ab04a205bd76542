//! `mnist`: the command line of mnist-rs.
//!
//! A thin clap front end over the library crates: argument parsing, logging set-up and
//! printing live here, the work itself in `mnist-dataset`, `mnist-core` and `mnist-train`.
//! Exit codes: 0 ok, 1 runtime failure, 2 usage error (clap's own), 130 interrupted by
//! Ctrl-C (after saving a checkpoint).

mod commands;
mod predict;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "mnist",
    version,
    about = "Train and run fully connected networks on MNIST",
    after_help = "Data lookup: --data-dir / MNIST_DATA_DIR, then the cache (MNIST_CACHE_DIR), \
                  then the repository's data/mnist, then the mirrors (MNIST_MIRRORS)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    data: DataArgs,
}

/// Where MNIST comes from (each also settable by environment variable).
#[derive(Debug, Clone, clap::Args)]
struct DataArgs {
    /// Cache of verified MNIST files [env: MNIST_CACHE_DIR; default: ~/.cache/mnist-rs].
    #[arg(long, global = true, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Mirrors to download from, in order: comma-separated URLs or directories
    /// [env: MNIST_MIRRORS; default: the two public mirrors].
    #[arg(long, global = true, value_name = "LIST")]
    mirrors: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train a network described by a JSON experiment config.
    ///
    /// Writes config.json, metrics.json, metrics.csv, model.safetensors, confusion.csv,
    /// loss.png, accuracy.png and (unless the config's checkpoint.every_epochs is 0)
    /// checkpoint.safetensors to the output directory, which must not hold another run
    /// (see --overwrite). Ctrl-C or SIGTERM saves a checkpoint at the next batch and exits;
    /// --resume continues it exactly.
    Train(TrainArgs),
    /// Evaluate a saved model on the test or training set: accuracy, loss, confusion matrix.
    Eval(EvalArgs),
    /// Classify image files (PNG, JPEG, BMP) or folders of them with a saved model.
    Predict(predict::PredictArgs),
    /// Fetch and verify the four MNIST files ahead of time.
    ///
    /// Files already present and verified are kept; the rest come from the usual lookup
    /// (cache, the repository's data/mnist, then the mirrors in MNIST_MIRRORS).
    Download {
        /// Directory to fill (default: the cache, MNIST_CACHE_DIR or ~/.cache/mnist-rs).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Write a PNG grid of training digits and augmented versions of them, as a config's
    /// `data.augmentation` would distort them, for a look before training.
    Augment {
        /// An experiment config with `data.augmentation`.
        config: PathBuf,
        /// The PNG to write.
        #[arg(long, default_value = "augmented.png")]
        out: PathBuf,
        /// How many digits, 1-64 (one row each: the original, then `--variants` distortions).
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
        count: u16,
        /// Distorted versions per digit, 1-16.
        #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u16).range(1..=16))]
        variants: u16,
    },
    /// Show what a config, model or checkpoint file contains, after validating it.
    Inspect {
        /// A .json experiment config, a model.safetensors or a checkpoint.safetensors.
        file: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct TrainArgs {
    /// The experiment config (see configs/ for examples).
    config: PathBuf,
    /// Output directory [default: runs/<experiment name>].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Continue from this checkpoint (written by an earlier run of the same config).
    #[arg(long, value_name = "CHECKPOINT")]
    resume: Option<PathBuf>,
    /// Replace the run the output directory already holds (its checkpoint, model and
    /// metrics are deleted first); without it such a directory is refused.
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
    /// Override the number of epochs.
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    epochs: Option<usize>,
    /// Override the seed.
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Read MNIST only from this directory.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Threads for the matrix products [default: all cores]. Results do not depend on it.
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    threads: Option<usize>,
    /// No progress bar or per-epoch lines; only the final summary.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SplitArg {
    Test,
    Train,
}

#[derive(Debug, clap::Args)]
struct EvalArgs {
    /// A model file written by `mnist train`.
    model: PathBuf,
    /// Which MNIST set to evaluate on.
    #[arg(long, value_enum, default_value_t = SplitArg::Test)]
    split: SplitArg,
    /// Read MNIST only from this directory.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Threads for the matrix products [default: all cores].
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    threads: Option<usize>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(args) => commands::train(args, &cli.data),
        Command::Eval(args) => commands::eval(args, &cli.data).map(|()| ExitCode::SUCCESS),
        Command::Predict(args) => predict::run(&args).map(|all_ok| {
            if all_ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }),
        Command::Download { data_dir } => {
            commands::download(data_dir, &cli.data).map(|()| ExitCode::SUCCESS)
        }
        Command::Inspect { file } => commands::inspect(&file).map(|()| ExitCode::SUCCESS),
        Command::Augment {
            config,
            out,
            count,
            variants,
        } => commands::augment_preview(
            &config,
            &out,
            usize::from(count),
            usize::from(variants),
            &cli.data,
        )
        .map(|()| ExitCode::SUCCESS),
    };
    result.unwrap_or_else(|err| {
        eprintln!("error: {}", describe(&err));
        ExitCode::FAILURE
    })
}

/// A count given on the command line: a whole number, at least 1 (0 is a usage error, not a
/// config error).
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// The error and its causes, `: `-separated like anyhow's `{:#}`, but leaving out a cause
/// whose text is already shown: many errors put their source's text in their own message.
fn describe(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::describe;
    use anyhow::Context;

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = Err::<(), _>(io)
            .context("x.json: cannot read: no such file")
            .context("loading the config")
            .unwrap_err();
        assert_eq!(
            describe(&err),
            "loading the config: x.json: cannot read: no such file"
        );
    }
}
