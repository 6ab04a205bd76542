//! `cargo xtask`: project chores, as a library so tests can drive them.
//!
//! - [`reproduce`]: rerun the published reference experiments (`configs/`), write each run to
//!   `results/<name>/` and print ours next to the published number.
//! - [`bench`]: epoch times against the dense limit (faer's GEMM on the same shapes, measured
//!   in the same run), batch-1 and full-batch speed, optional Python peers; JSON report.

pub mod bench;
pub mod reproduce;

use std::path::PathBuf;

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}
