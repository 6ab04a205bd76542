//! The real MNIST files: they load, verify and give the published class counts, from every
//! kind of local source, in the documented lookup order.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

mod common;

use common::{dir_entries, mirrors_only, real_dir};
use mnist_dataset::files::{TEST_CLASS_COUNTS, TRAIN_CLASS_COUNTS};
use mnist_dataset::{
    DataSources, DatasetError, Mirror, Mnist, MnistFile, Normalization, Origin, Preprocessing,
    split,
};

fn bundled_only() -> DataSources {
    DataSources {
        cache_dir: None,
        bundled_dir: Some(real_dir()),
        ..mirrors_only(vec![], None)
    }
}

#[test]
fn repository_copy_loads_with_published_counts() {
    let mnist = Mnist::load(&bundled_only()).unwrap();
    assert_eq!((mnist.train.len(), mnist.test.len()), (60_000, 10_000));
    assert_eq!((mnist.train.rows(), mnist.train.cols()), (28, 28));
    assert_eq!(mnist.train.class_counts(), TRAIN_CLASS_COUNTS);
    assert_eq!(mnist.test.class_counts(), TEST_CLASS_COUNTS);
}

#[test]
fn directory_mirror_fills_the_cache_which_then_comes_first() {
    let cache = tempfile::tempdir().unwrap();
    let sources = mirrors_only(
        vec![Mirror::Directory(real_dir())],
        Some(cache.path().into()),
    );
    let fetched = sources.fetch(MnistFile::TestImages).unwrap();
    assert!(matches!(fetched.origin, Origin::Mirror(_)));
    assert_eq!(dir_entries(cache.path()), vec!["t10k-images-idx3-ubyte"]);
    // Cache before the repository copy.
    let both = DataSources {
        bundled_dir: Some(real_dir()),
        ..sources
    };
    let again = both.fetch(MnistFile::TestImages).unwrap();
    assert!(
        matches!(again.origin, Origin::Cache(_)),
        "{:?}",
        again.origin
    );
    assert_eq!(again.bytes, fetched.bytes);
}

#[test]
fn explicit_data_dir_is_authoritative() {
    let empty = tempfile::tempdir().unwrap();
    let sources = DataSources {
        data_dir: Some(empty.path().into()),
        ..bundled_only()
    };
    let err = sources.fetch(MnistFile::TestLabels).unwrap_err();
    assert!(matches!(err, DatasetError::NotInDirectory { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&empty.path().display().to_string())
    );

    let ok = DataSources::directory_only(real_dir())
        .fetch(MnistFile::TestLabels)
        .unwrap();
    assert!(matches!(ok.origin, Origin::DataDir(_)));
}

#[test]
fn truncated_real_file_names_the_file_and_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let gz = std::fs::read(real_dir().join("t10k-labels-idx1-ubyte.gz")).unwrap();
    let path = dir.path().join("t10k-labels-idx1-ubyte.gz");
    std::fs::write(&path, &gz[..gz.len() - 100]).unwrap();
    let err = DataSources::directory_only(dir.path())
        .fetch(MnistFile::TestLabels)
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");

    // As a bad first mirror it is skipped in favour of a good one.
    let sources = mirrors_only(
        vec![
            Mirror::Directory(dir.path().into()),
            Mirror::Directory(real_dir()),
        ],
        None,
    );
    assert!(sources.fetch(MnistFile::TestLabels).is_ok());
}

#[test]
fn download_to_makes_a_complete_verified_directory() {
    let dir = tempfile::tempdir().unwrap();
    let sources = mirrors_only(vec![Mirror::Directory(real_dir())], None);
    let report = sources.download_to(dir.path()).unwrap();
    assert_eq!(report.len(), 4);
    let loaded = Mnist::load(&DataSources::directory_only(dir.path())).unwrap();
    assert_eq!(loaded.test.class_counts(), TEST_CLASS_COUNTS);
    // Running it again finds everything in place.
    let again = sources.download_to(dir.path()).unwrap();
    assert!(again.iter().all(|(_, o)| matches!(o, Origin::Cache(_))));
}

#[test]
fn download_to_keeps_verified_gzipped_files_and_replaces_a_corrupt_one() {
    let dir = tempfile::tempdir().unwrap();
    for file in MnistFile::ALL {
        let name = format!("{}.gz", file.file_name());
        std::fs::copy(real_dir().join(&name), dir.path().join(&name)).unwrap();
    }
    let labels = dir
        .path()
        .join(format!("{}.gz", MnistFile::TestLabels.file_name()));
    std::fs::write(&labels, b"not gzip").unwrap();
    let sources = mirrors_only(vec![Mirror::Directory(real_dir())], None);
    let report = sources.download_to(dir.path()).unwrap();
    for (file, origin) in &report {
        let kept = matches!(origin, Origin::Cache(_));
        assert_eq!(kept, *file != MnistFile::TestLabels, "{file:?}: {origin}");
    }
    // Only the corrupt file got a verified plain copy beside it, which reads take first.
    let plain: Vec<_> = MnistFile::ALL
        .iter()
        .filter(|f| dir.path().join(f.file_name()).exists())
        .collect();
    assert_eq!(plain, [&MnistFile::TestLabels]);
    let loaded = Mnist::load(&DataSources::directory_only(dir.path())).unwrap();
    assert_eq!(loaded.test.class_counts(), TEST_CLASS_COUNTS);
}

#[test]
fn reference_split_and_standardization_on_real_data() {
    let mnist = Mnist::load(&bundled_only()).unwrap();
    let (dev, train) = split::shuffled_split(mnist.train.len(), 10_000, 100).unwrap();
    let prep = Preprocessing::fit(Normalization::Standardize, &mnist.train, Some(&train));
    // The well-known MNIST statistics (0.1307, 0.3081) up to the 50k subset's variation.
    assert!((prep.mean - 0.1307).abs() < 0.002, "{prep:?}");
    assert!((prep.std - 0.3081).abs() < 0.002, "{prep:?}");
    let train = mnist.train.to_dataset(Some(&train), &prep).unwrap();
    let dev = mnist.train.to_dataset(Some(&dev), &prep).unwrap();
    assert_eq!((train.len(), dev.len(), train.dim()), (50_000, 10_000, 784));
    let mean =
        train.features().iter().map(|&x| f64::from(x)).sum::<f64>() / train.features().len() as f64;
    assert!(
        mean.abs() < 1e-3,
        "standardized training split has mean ~0, got {mean}"
    );

    let subsets = split::balanced_subsets(mnist.train.labels(), &[500, 100], 42).unwrap();
    let subset = mnist
        .train
        .to_dataset(Some(&subsets[0]), &Preprocessing::SCALE)
        .unwrap();
    assert_eq!(subset.len(), 5_000);
    assert!(subset.features().iter().all(|&x| (0.0..=1.0).contains(&x)));
}
