//! Where the MNIST files come from, in a fixed order, each source verified the same way.
//!
//! Lookup order for each of the four files:
//! 1. an explicit data directory (`--data-dir` / `MNIST_DATA_DIR`): authoritative, so a bad
//!    or missing file there is an error, never a silent fall-through to other data;
//! 2. the cache directory (`MNIST_CACHE_DIR`, default `$XDG_CACHE_HOME/mnist-rs` or
//!    `~/.cache/mnist-rs`): a file failing verification is removed and the lookup goes on;
//! 3. the repository's own copy under `data/mnist` (so a fresh clone needs no network);
//! 4. the mirrors (`MNIST_MIRRORS`, comma-separated URLs or local directories), in order. A
//!    mirror that fails or serves wrong bytes is skipped with a warning; a verified download
//!    is written to the cache atomically (temp file + rename).
//!
//! "Verified" means: decompressed (capped), exactly the published length, and the published
//! SHA-256 of the decompressed bytes. Nothing unverified is ever returned or cached.

use std::fmt;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::error::{DatasetError, Result};
use crate::files::MnistFile;
use crate::idx;

/// The two public mirrors that still serve the canonical `.gz` files.
pub const DEFAULT_MIRRORS: [&str; 2] = [
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
];

/// Environment variable naming an explicit data directory (highest priority).
pub const ENV_DATA_DIR: &str = "MNIST_DATA_DIR";
/// Environment variable naming the cache directory.
pub const ENV_CACHE_DIR: &str = "MNIST_CACHE_DIR";
/// Environment variable with a comma-separated mirror list (URLs or directories).
pub const ENV_MIRRORS: &str = "MNIST_MIRRORS";

/// A place that serves `<name>.gz` (or plain `<name>`) files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mirror {
    /// An `http://` or `https://` base URL.
    Http(String),
    /// A local directory (a path, or a `file://` URL).
    Directory(PathBuf),
}

impl Mirror {
    /// Reads a mirror from user text: URLs by scheme, anything else is a directory.
    pub fn parse(text: &str) -> Mirror {
        let text = text.trim();
        if text.starts_with("http://") || text.starts_with("https://") {
            Mirror::Http(text.to_string())
        } else {
            Mirror::Directory(PathBuf::from(text.strip_prefix("file://").unwrap_or(text)))
        }
    }
}

impl Mirror {
    /// Reads a comma-separated list of mirrors, skipping empty entries.
    pub fn parse_list(text: &str) -> Vec<Mirror> {
        text.split(',')
            .filter(|m| !m.trim().is_empty())
            .map(Mirror::parse)
            .collect()
    }
}

impl fmt::Display for Mirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mirror::Http(url) => f.write_str(url),
            Mirror::Directory(dir) => write!(f, "{}", dir.display()),
        }
    }
}

/// Which kind of source a verified file came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    DataDir(PathBuf),
    Cache(PathBuf),
    Bundled(PathBuf),
    Mirror(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::DataDir(p) => write!(f, "data dir {}", p.display()),
            Origin::Cache(p) => write!(f, "cache {}", p.display()),
            Origin::Bundled(p) => write!(f, "repository copy {}", p.display()),
            Origin::Mirror(u) => write!(f, "mirror {u}"),
        }
    }
}

/// Verified, decompressed bytes of one MNIST file and where they came from.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub file: MnistFile,
    pub bytes: Vec<u8>,
    pub origin: Origin,
}

/// How downloads report progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A progress bar when stderr is a terminal, log lines otherwise.
    Auto,
    /// Log lines only.
    LogOnly,
}

/// The configured sources, in lookup order. Build with [`DataSources::from_env`] for the
/// user's settings, or set the fields directly (tests do).
#[derive(Debug, Clone)]
pub struct DataSources {
    /// Explicit directory: if set, the only place looked at.
    pub data_dir: Option<PathBuf>,
    /// Cache of verified, decompressed files; `None` disables caching.
    pub cache_dir: Option<PathBuf>,
    /// The repository's copy (`data/mnist`); `None` skips it.
    pub bundled_dir: Option<PathBuf>,
    /// Mirrors tried in order when nothing local verifies.
    pub mirrors: Vec<Mirror>,
    /// Bound on each network read and on connecting; a stalled server fails after this.
    pub timeout: Duration,
    /// Cap on any file's decompressed size (gzip bombs, absurd headers).
    pub max_bytes: u64,
    pub progress: Progress,
}

/// The repository's copy of the four files, found relative to this crate's source.
pub fn bundled_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/mnist");
    // Canonical where it exists, so messages show a clean path.
    dir.canonicalize().unwrap_or(dir)
}

/// The default cache directory: `$XDG_CACHE_HOME/mnist-rs`, else `~/.cache/mnist-rs`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    non_empty("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| non_empty("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|base| base.join("mnist-rs"))
}

impl Default for DataSources {
    /// Defaults without reading the environment: cache in the default place, the repository
    /// copy, the public mirrors.
    fn default() -> Self {
        DataSources {
            data_dir: None,
            cache_dir: default_cache_dir(),
            bundled_dir: Some(bundled_dir()),
            mirrors: DEFAULT_MIRRORS.iter().map(|m| Mirror::parse(m)).collect(),
            timeout: Duration::from_secs(30),
            max_bytes: idx::DEFAULT_MAX_BYTES,
            progress: Progress::Auto,
        }
    }
}

impl DataSources {
    /// Defaults overridden by `MNIST_DATA_DIR`, `MNIST_CACHE_DIR` and `MNIST_MIRRORS`.
    pub fn from_env() -> Self {
        let mut sources = DataSources::default();
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        if let Some(dir) = var(ENV_DATA_DIR) {
            sources.data_dir = Some(PathBuf::from(dir));
        }
        if let Some(dir) = var(ENV_CACHE_DIR) {
            sources.cache_dir = Some(PathBuf::from(dir));
        }
        if let Some(list) = var(ENV_MIRRORS) {
            sources.mirrors = Mirror::parse_list(&list);
        }
        sources
    }

    /// Only this directory, nothing else: no cache, no repository copy, no network.
    pub fn directory_only(dir: impl Into<PathBuf>) -> Self {
        DataSources {
            data_dir: Some(dir.into()),
            cache_dir: None,
            bundled_dir: None,
            mirrors: Vec::new(),
            ..DataSources::default()
        }
    }

    /// Returns the verified bytes of `file` from the first source that has them.
    pub fn fetch(&self, file: MnistFile) -> Result<Fetched> {
        if let Some(dir) = &self.data_dir {
            let bytes = read_verified_from_dir(dir, file, self.max_bytes)?;
            return Ok(Fetched {
                file,
                bytes,
                origin: Origin::DataDir(dir.clone()),
            });
        }
        let mut attempts = Vec::new();
        if let Some(cache) = &self.cache_dir {
            let path = cache.join(file.file_name());
            if path.exists() {
                match read_verified(&path, file, self.max_bytes) {
                    Ok(bytes) => {
                        return Ok(Fetched {
                            file,
                            bytes,
                            origin: Origin::Cache(path),
                        });
                    }
                    Err(err) => {
                        tracing::warn!("removing a cached file that does not verify: {err}");
                        let _ = std::fs::remove_file(&path);
                        attempts.push(format!("cache {}: {err}", path.display()));
                    }
                }
            }
        }
        if let Some(dir) = self.bundled_dir.as_ref().filter(|d| d.is_dir()) {
            match read_verified_from_dir(dir, file, self.max_bytes) {
                Ok(bytes) => {
                    return Ok(Fetched {
                        file,
                        bytes,
                        origin: Origin::Bundled(dir.clone()),
                    });
                }
                Err(err) => {
                    tracing::warn!("skipping the repository copy: {err}");
                    attempts.push(format!("repository copy {}: {err}", dir.display()));
                }
            }
        }
        for mirror in &self.mirrors {
            match self.fetch_from_mirror(mirror, file) {
                Ok(bytes) => {
                    if let Some(cache) = &self.cache_dir
                        && let Err(err) = write_atomically(cache, file.file_name(), &bytes)
                    {
                        tracing::warn!("{err}; continuing without caching");
                    }
                    return Ok(Fetched {
                        file,
                        bytes,
                        origin: Origin::Mirror(mirror.to_string()),
                    });
                }
                Err(err) => {
                    tracing::warn!("mirror {mirror} failed for {}: {err}", file.file_name());
                    attempts.push(format!("mirror {mirror}: {err}"));
                }
            }
        }
        if attempts.is_empty() {
            attempts.push("no source configured (no cache, no repository copy, no mirror)".into());
        }
        Err(DatasetError::AllSourcesFailed {
            file: file.file_name(),
            attempts: attempts
                .iter()
                .map(|a| format!("  - {a}"))
                .collect::<Vec<_>>()
                .join("\n"),
            hint: "Set MNIST_MIRRORS to a working mirror (a URL or a directory holding the .gz files), \
                   or MNIST_DATA_DIR / --data-dir to a directory with the four MNIST files.",
        })
    }

    /// Makes sure `dir` holds all four files, verified, fetching what is missing or bad
    /// through the normal lookup (with `dir` as the cache). Returns where each came from.
    pub fn download_to(&self, dir: &Path) -> Result<Vec<(MnistFile, Origin)>> {
        let sources = DataSources {
            data_dir: None,
            cache_dir: Some(dir.to_path_buf()),
            ..self.clone()
        };
        let mut report = Vec::new();
        for file in MnistFile::ALL {
            // Already there and verified, plain or gzipped (as `--data-dir` reads it): kept.
            if read_verified_from_dir(dir, file, self.max_bytes).is_ok() {
                report.push((file, Origin::Cache(dir.to_path_buf())));
                continue;
            }
            let fetched = sources.fetch(file)?;
            if !matches!(fetched.origin, Origin::Cache(_)) {
                write_atomically(dir, file.file_name(), &fetched.bytes)?;
            }
            report.push((file, fetched.origin));
        }
        Ok(report)
    }

    fn fetch_from_mirror(&self, mirror: &Mirror, file: MnistFile) -> Result<Vec<u8>> {
        match mirror {
            Mirror::Directory(dir) => read_verified_from_dir(dir, file, self.max_bytes),
            Mirror::Http(base) => {
                let url = format!("{}/{}.gz", base.trim_end_matches('/'), file.file_name());
                let raw = self.download(&url)?;
                let bytes = idx::decompress(raw, &url, self.max_bytes)?;
                verify(file, &bytes, &url)?;
                Ok(bytes)
            }
        }
    }

    /// Downloads `url` into memory: bounded in size and in time per read.
    fn download(&self, url: &str) -> Result<Vec<u8>> {
        let fail = |reason: String| DatasetError::Download {
            origin: url.to_string(),
            reason,
        };
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(self.timeout))
            .timeout_per_read(Some(self.timeout))
            .timeout_recv_response(Some(self.timeout))
            .max_redirects(5)
            .http_status_as_error(true)
            .build()
            .into();
        let started = Instant::now();
        let response = agent.get(url).call().map_err(|e| fail(describe_ureq(&e)))?;
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if content_type.starts_with("text/html") {
            return Err(fail(
                "the server sent an HTML page, not the data file (a captive portal or an error page?)"
                    .into(),
            ));
        }
        let body = response.into_body();
        let expected_len = body.content_length();
        let mut reader = body.into_with_config().limit(self.max_bytes).reader();
        let bar = progress_bar(self.progress, expected_len, url);
        let mut bytes = Vec::with_capacity(expected_len.unwrap_or(0).min(self.max_bytes) as usize);
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = reader.read(&mut chunk).map_err(|e| fail(describe_io(&e)))?;
            if n == 0 {
                break;
            }
            bytes.extend_from_slice(&chunk[..n]);
            if let Some(bar) = &bar {
                bar.set_position(bytes.len() as u64);
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        if let Some(len) = expected_len
            && bytes.len() as u64 != len
        {
            return Err(fail(format!(
                "transfer cut short: got {} of {len} bytes",
                bytes.len()
            )));
        }
        tracing::info!(
            "downloaded {url}: {} bytes in {:.1} s",
            bytes.len(),
            started.elapsed().as_secs_f64()
        );
        Ok(bytes)
    }
}

fn describe_ureq(err: &ureq::Error) -> String {
    match err {
        ureq::Error::StatusCode(code) => format!("HTTP status {code}"),
        ureq::Error::Timeout(what) => format!("timed out ({what})"),
        ureq::Error::TooManyRedirects => "too many redirects (a redirect loop?)".into(),
        ureq::Error::ConnectionFailed => "connection failed".into(),
        ureq::Error::HostNotFound => "host not found (no network, or a wrong URL?)".into(),
        ureq::Error::BodyExceedsLimit(limit) => format!("larger than the {limit}-byte cap"),
        ureq::Error::Io(e) => describe_io(e),
        other => other.to_string(),
    }
}

fn describe_io(err: &std::io::Error) -> String {
    // ureq wraps its own errors (timeouts, limits) inside io::Error while reading a body.
    match err.get_ref().and_then(|e| e.downcast_ref::<ureq::Error>()) {
        Some(inner) => describe_ureq(inner),
        None if err.kind() == std::io::ErrorKind::UnexpectedEof => {
            "transfer cut short (connection closed mid-body)".into()
        }
        None => err.to_string(),
    }
}

fn progress_bar(progress: Progress, len: Option<u64>, url: &str) -> Option<indicatif::ProgressBar> {
    if progress == Progress::Auto && std::io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(len.unwrap_or(0));
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(url.rsplit('/').next().unwrap_or(url).to_string());
        Some(bar)
    } else {
        tracing::info!(
            "downloading {url}{}",
            len.map(|l| format!(" ({l} bytes)")).unwrap_or_default()
        );
        None
    }
}

/// Checks decompressed bytes against the published length and SHA-256.
pub fn verify(file: MnistFile, bytes: &[u8], origin: &str) -> Result<()> {
    let expected = file.decompressed_len();
    let found = bytes.len() as u64;
    if found < expected {
        return Err(DatasetError::Truncated {
            origin: origin.to_string(),
            expected,
            found,
        });
    }
    if found > expected {
        return Err(DatasetError::TrailingBytes {
            origin: origin.to_string(),
            expected,
            extra: found - expected,
        });
    }
    let digest = Sha256::digest(bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    if hex != file.sha256() {
        return Err(DatasetError::ChecksumMismatch {
            origin: origin.to_string(),
            file: file.file_name(),
            expected: file.sha256(),
            found: hex,
        });
    }
    Ok(())
}

fn read_verified(path: &Path, file: MnistFile, max_bytes: u64) -> Result<Vec<u8>> {
    let bytes = idx::read_file(path, max_bytes)?;
    verify(file, &bytes, &path.display().to_string())?;
    Ok(bytes)
}

/// Reads `<name>` or `<name>.gz` from `dir`, verified.
fn read_verified_from_dir(dir: &Path, file: MnistFile, max_bytes: u64) -> Result<Vec<u8>> {
    let plain = dir.join(file.file_name());
    let gz = dir.join(format!("{}.gz", file.file_name()));
    let path = [plain, gz]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| DatasetError::NotInDirectory {
            file: file.file_name(),
            dir: dir.to_path_buf(),
        })?;
    read_verified(&path, file, max_bytes)
}

/// Writes `bytes` to `dir/name` atomically (see [`crate::atomic`]).
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let target = dir.join(name);
    crate::atomic::write_file_atomically(&target, bytes).map_err(|source| {
        DatasetError::CacheWrite {
            origin: target.clone(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_parse_by_scheme() {
        assert_eq!(
            Mirror::parse("https://x/y/"),
            Mirror::Http("https://x/y/".into())
        );
        assert_eq!(
            Mirror::parse("file:///tmp/m"),
            Mirror::Directory("/tmp/m".into())
        );
        assert_eq!(Mirror::parse(" ./m "), Mirror::Directory("./m".into()));
    }

    #[test]
    fn verify_reports_length_before_hashing() {
        let err = verify(MnistFile::TestLabels, &[0; 10], "x").unwrap_err();
        assert!(matches!(err, DatasetError::Truncated { .. }), "{err}");
        let err = verify(MnistFile::TestLabels, &[0; 10_008], "x").unwrap_err();
        assert!(
            matches!(err, DatasetError::ChecksumMismatch { .. }),
            "{err}"
        );
    }
}
