//! Downloads against HTTP servers this test starts on 127.0.0.1: the real files served
//! faithfully, and every way a mirror can fail. The cache must never hold an unverified file.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

mod common;

use std::time::{Duration, Instant};

use common::{Reply, TestServer, dir_entries, gzip, mirrors_only, real_gz};
use mnist_dataset::files::{TEST_CLASS_COUNTS, TRAIN_CLASS_COUNTS};
use mnist_dataset::idx;
use mnist_dataset::{DatasetError, Mirror, Mnist, MnistFile, Origin};

/// Serves the real `.gz` file for any `/mnist/<name>.gz`.
fn faithful(path: &str) -> Reply {
    match path
        .strip_prefix("/mnist/")
        .and_then(|p| p.strip_suffix(".gz"))
    {
        Some(name) if common::real_dir().join(format!("{name}.gz")).is_file() => {
            Reply::Bytes(real_gz(name))
        }
        _ => Reply::Status(404),
    }
}

fn labels_file() -> MnistFile {
    MnistFile::TestLabels
}

/// The error text of fetching the test labels from a server answering `reply`.
fn fetch_error(reply: impl Fn(&str) -> Reply + Send + Sync + 'static) -> (String, Vec<String>) {
    let server = TestServer::start(reply);
    let cache = tempfile::tempdir().unwrap();
    let sources = mirrors_only(
        vec![Mirror::parse(&server.url())],
        Some(cache.path().into()),
    );
    let err = sources.fetch(labels_file()).unwrap_err();
    assert!(
        matches!(err, DatasetError::AllSourcesFailed { .. }),
        "{err}"
    );
    (err.to_string(), dir_entries(cache.path()))
}

#[test]
fn corrupt_first_mirror_falls_back_to_the_second_and_caches_verified_files() {
    // The first mirror serves well-formed gzip of the wrong bytes for every file.
    let corrupt = TestServer::start(|path| {
        let name = path.trim_start_matches("/mnist/").trim_end_matches(".gz");
        match MnistFile::ALL.iter().find(|f| f.file_name() == name) {
            Some(f) => Reply::Bytes(gzip(&vec![1u8; f.decompressed_len() as usize])),
            None => Reply::Status(404),
        }
    });
    let good = TestServer::start(faithful);
    let cache = tempfile::tempdir().unwrap();
    let sources = mirrors_only(
        vec![Mirror::parse(&corrupt.url()), Mirror::parse(&good.url())],
        Some(cache.path().into()),
    );

    let mnist = Mnist::load(&sources).unwrap();
    assert_eq!(mnist.train.class_counts(), TRAIN_CLASS_COUNTS);
    assert_eq!(mnist.test.class_counts(), TEST_CLASS_COUNTS);
    assert_eq!(
        corrupt.requests.load(std::sync::atomic::Ordering::SeqCst),
        4
    );

    // The cache holds exactly the four verified, decompressed files, and is used next time.
    let names: Vec<String> = MnistFile::ALL
        .iter()
        .map(|f| f.file_name().to_string())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(dir_entries(cache.path()), sorted);
    drop((corrupt, good));
    let cached = mnist_dataset::DataSources {
        mirrors: vec![],
        ..sources
    };
    for file in MnistFile::ALL {
        let fetched = cached.fetch(file).unwrap();
        assert!(
            matches!(fetched.origin, Origin::Cache(_)),
            "{:?}",
            fetched.origin
        );
    }
}

#[test]
fn interrupted_transfer_leaves_no_poisoned_cache() {
    let gz = real_gz("t10k-labels-idx1-ubyte");
    let half = gz.len() / 2;
    let (msg, cache_entries) = fetch_error(move |_| Reply::CutAfter(gz.clone(), half));
    assert!(msg.contains("cut short"), "{msg}");
    assert!(
        cache_entries.is_empty(),
        "cache must stay empty: {cache_entries:?}"
    );

    // Interrupted on the first mirror, completed by the second: only verified data cached.
    let gz = real_gz("t10k-labels-idx1-ubyte");
    let cut = TestServer::start(move |_| Reply::CutAfter(gz.clone(), 1000));
    let good = TestServer::start(faithful);
    let cache = tempfile::tempdir().unwrap();
    let sources = mirrors_only(
        vec![Mirror::parse(&cut.url()), Mirror::parse(&good.url())],
        Some(cache.path().into()),
    );
    let fetched = sources.fetch(labels_file()).unwrap();
    assert_eq!(fetched.origin, Origin::Mirror(good.url()));
    assert_eq!(dir_entries(cache.path()), vec!["t10k-labels-idx1-ubyte"]);
}

#[test]
fn connection_refused_is_reported() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }; // closed again: nothing listens there now
    let cache = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{port}/mnist/");
    let sources = mirrors_only(vec![Mirror::parse(&url)], Some(cache.path().into()));
    let msg = sources.fetch(labels_file()).unwrap_err().to_string();
    assert!(
        msg.contains(&url) && msg.to_lowercase().contains("connection refused"),
        "{msg}"
    );
    assert!(dir_entries(cache.path()).is_empty());
}

#[test]
fn not_found_is_reported() {
    let (msg, cache) = fetch_error(|_| Reply::Status(404));
    assert!(msg.contains("404"), "{msg}");
    assert!(cache.is_empty());
}

#[test]
fn html_instead_of_data_is_refused() {
    let (msg, cache) = fetch_error(|_| Reply::Html);
    assert!(msg.contains("HTML"), "{msg}");
    assert!(cache.is_empty());
}

#[test]
fn garbage_instead_of_gzip_is_refused() {
    let (msg, cache) = fetch_error(|_| Reply::Bytes(b"this is not a gzip file at all".to_vec()));
    assert!(
        msg.contains("truncated") || msg.contains("SHA-256"),
        "{msg}"
    );
    assert!(cache.is_empty());
}

#[test]
fn wrong_bytes_with_right_size_fail_the_checksum() {
    let mut labels = idx::parse_labels(
        idx::decompress(real_gz("t10k-labels-idx1-ubyte"), "real", 1 << 20).unwrap(),
        "real",
    )
    .unwrap();
    labels.swap(0, 1); // still 10,008 valid bytes, just not MNIST's
    let forged = gzip(&idx::encode_labels(&labels));
    let (msg, cache) = fetch_error(move |_| Reply::Bytes(forged.clone()));
    assert!(msg.contains("SHA-256") && msg.contains("ff7bcfd4"), "{msg}");
    assert!(cache.is_empty());
}

#[test]
fn stalled_server_times_out_within_bounds() {
    let gz = real_gz("t10k-labels-idx1-ubyte");
    let started = Instant::now();
    let (msg, cache) = fetch_error(move |_| Reply::Stall(gz.clone(), Duration::from_secs(6)));
    let waited = started.elapsed();
    assert!(msg.contains("timed out"), "{msg}");
    assert!(
        waited < Duration::from_secs(5),
        "bounded by the 2 s timeout, took {waited:?}"
    );
    assert!(cache.is_empty());
}

#[test]
fn redirect_loop_is_cut() {
    let (msg, cache) = fetch_error(|path| Reply::Redirect(path.to_string()));
    assert!(msg.contains("redirect"), "{msg}");
    assert!(cache.is_empty());
}

#[test]
fn every_failing_mirror_is_listed_with_its_reason() {
    let a = TestServer::start(|_| Reply::Status(500));
    let b = TestServer::start(|_| Reply::Html);
    let sources = mirrors_only(vec![Mirror::parse(&a.url()), Mirror::parse(&b.url())], None);
    let msg = sources.fetch(labels_file()).unwrap_err().to_string();
    assert!(msg.contains(&a.url()) && msg.contains("500"), "{msg}");
    assert!(msg.contains(&b.url()) && msg.contains("HTML"), "{msg}");
    assert!(msg.contains("MNIST_MIRRORS"), "says what to do: {msg}");
}

#[test]
fn gzip_bomb_from_a_mirror_is_refused() {
    let bomb = gzip(&vec![0u8; 8 << 20]);
    let server = TestServer::start(move |_| Reply::Bytes(bomb.clone()));
    let mut sources = mirrors_only(vec![Mirror::parse(&server.url())], None);
    sources.max_bytes = 1 << 20;
    let msg = sources.fetch(labels_file()).unwrap_err().to_string();
    assert!(msg.contains("too large"), "{msg}");
}

#[test]
fn unverified_cache_file_is_replaced_from_a_mirror() {
    let good = TestServer::start(faithful);
    let cache = tempfile::tempdir().unwrap();
    let cached = cache.path().join("t10k-labels-idx1-ubyte");
    std::fs::write(&cached, idx::encode_labels(&[1; 10_000])).unwrap();
    let sources = mirrors_only(vec![Mirror::parse(&good.url())], Some(cache.path().into()));
    let fetched = sources.fetch(labels_file()).unwrap();
    assert_eq!(fetched.origin, Origin::Mirror(good.url()));
    mnist_dataset::source::verify(labels_file(), &std::fs::read(&cached).unwrap(), "cache")
        .expect("the cache now holds the verified file");
}
