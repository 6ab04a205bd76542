//! `cargo xtask`: project chores, as a library so tests can drive them.
//!
//! - [`reproduce`]: rerun the published reference experiments (`configs/`), write each run to
//!   `results/<name>/` and print ours next to the published number.

pub mod reproduce;

use std::path::PathBuf;

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}
