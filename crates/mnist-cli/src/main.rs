//! `mnist`: the command line of mnist-rs.
//!
//! A thin clap front end over the library crates: argument parsing, logging set-up and
//! printing live here, the work itself in `mnist-dataset`, `mnist-core` and `mnist-train`.
//! Exit codes: 0 ok, 1 runtime failure, 2 usage error (clap's own).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mnist_dataset::DataSources;

#[derive(Debug, Parser)]
#[command(
    name = "mnist",
    version,
    about = "Train and run fully connected networks on MNIST"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fetch and verify the four MNIST files ahead of time.
    ///
    /// Files already present and verified are kept; the rest come from the usual lookup
    /// (cache, the repository's data/mnist, then the mirrors in MNIST_MIRRORS).
    Download {
        /// Directory to fill (default: the cache, MNIST_CACHE_DIR or ~/.cache/mnist-rs).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
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
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Download { data_dir } => download(data_dir),
    }
}

fn download(data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let sources = DataSources::from_env();
    let dir = data_dir
        .or_else(|| sources.cache_dir.clone())
        .context("no directory to download into: pass --data-dir or set MNIST_CACHE_DIR")?;
    let report = sources.download_to(&dir)?;
    for (file, origin) in report {
        let how = match origin {
            mnist_dataset::Origin::Cache(_) => "already there".to_string(),
            other => format!("from {other}"),
        };
        println!("{:<26} verified, {how}", file.file_name());
    }
    println!("all four MNIST files are in {}", dir.display());
    Ok(())
}
