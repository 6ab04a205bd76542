//! `cargo xtask`: project chores. See `cargo xtask --help`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use xtask::{bench, reproduce, workspace_root};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "mnist-rs project chores")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Rerun a published reference experiment (or `all`) and compare with the published value.
    Reproduce {
        /// A reference name, `all` (every reference), or `beyond` (the project's own
        /// best-mlp and best-mlp-augmented): two-layer-sigmoid, two-layer-sigmoid-l2,
        /// adam-dropout, three-layer-relu, one-hidden-relu (with its frozen variant),
        /// deep-mse, deep-mse-plateau, best-mlp, best-mlp-augmented.
        name: String,
        /// Short runs (a few thousand examples, 1-2 epochs) to check the pipeline; bands
        /// are not judged.
        #[arg(long)]
        quick: bool,
        /// Threads for the matrix products (default: all cores). Results do not depend on it.
        #[arg(long)]
        threads: Option<usize>,
        /// Where run directories go.
        #[arg(long, default_value_os_t = workspace_root().join("results"))]
        results: PathBuf,
        /// No progress bars or per-epoch lines.
        #[arg(long)]
        quiet: bool,
    },
    /// Time training and evaluation epochs against the dense limit (faer's GEMM on the same
    /// shapes, measured in the same run); batch-1 steps/s; full-batch iterations.
    Bench {
        /// Threads (default: all cores). Results do not depend on it, only the speed.
        #[arg(long)]
        threads: Option<usize>,
        /// Where the JSON report goes.
        #[arg(long, default_value_os_t = workspace_root().join("results").join("bench.json"))]
        json: PathBuf,
        /// One round per measurement instead of five (deep-mse: instead of three).
        #[arg(long)]
        quick: bool,
        /// Also run the NumPy (and PyTorch/JAX where installed) peers in bench/ and print
        /// ours / theirs.
        #[arg(long)]
        peers: bool,
        /// Measure only this part: two-layer-sigmoid, adam-dropout, three-layer-relu (batch 1)
        /// or deep-mse (full batch).
        #[arg(long, value_parser = ["two-layer-sigmoid", "adam-dropout", "three-layer-relu", "deep-mse"])]
        only: Option<String>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Bench {
            threads,
            json,
            quick,
            peers,
            only,
        } => {
            let threads = threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let settings = bench::Settings {
                threads,
                json,
                configs_dir: workspace_root().join("configs"),
                quick,
                peers,
                bench_dir: workspace_root().join("bench"),
                only,
            };
            bench::run(&settings)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Reproduce {
            name,
            quick,
            threads,
            results,
            quiet,
        } => {
            let selected = reproduce::select(&name)?;
            let threads = threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let settings = reproduce::Settings {
                quick,
                threads,
                results_dir: results.clone(),
                configs_dir: workspace_root().join("configs"),
                quiet,
            };
            let outcomes = reproduce::run(&selected, &settings)?;
            let table = reproduce::table(&outcomes, &results);
            println!("{table}");
            if name == "all" {
                let summary = results.join("SUMMARY.md");
                std::fs::write(&summary, reproduce::summary_markdown(&table, &settings))?;
                println!("written {}", summary.display());
            }
            let failed = outcomes.iter().any(|o| o.passed() == Some(false));
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
