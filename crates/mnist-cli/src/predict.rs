//! `mnist predict`: classify image files with a trained model. (Being written.)

use std::path::PathBuf;

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

/// Predicts every file; returns `Ok(false)` if any file could not be read as a digit.
pub fn run(args: &PredictArgs) -> anyhow::Result<bool> {
    anyhow::bail!(
        "predict is not implemented yet ({} inputs)",
        args.inputs.len()
    )
}
