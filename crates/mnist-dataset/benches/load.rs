//! Load + verify + decode of the 60k training set, warm from the cache (decompressed IDX
//! files), on one core. Target: under 0.5 s. Also measured: the same from the repository's
//! gzip copy (adds decompression), and the conversion to f32.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may panic

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use mnist_dataset::{DataSources, MnistFile, Preprocessing, Split, load_split, source};

fn sources_for(cache: Option<std::path::PathBuf>, bundled: bool) -> DataSources {
    DataSources {
        data_dir: None,
        cache_dir: cache,
        bundled_dir: bundled.then(source::bundled_dir),
        mirrors: Vec::new(),
        ..DataSources::default()
    }
}

fn bench_load(c: &mut Criterion) {
    let cache = tempfile::tempdir().expect("temp dir");
    let bundled = sources_for(None, true);
    for file in [MnistFile::TrainImages, MnistFile::TrainLabels] {
        let fetched = bundled.fetch(file).expect("bundled MNIST");
        source::write_atomically(cache.path(), file.file_name(), &fetched.bytes).expect("cache");
    }
    let warm = sources_for(Some(cache.path().to_path_buf()), false);

    let mut group = c.benchmark_group("load_train_60k");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    group.bench_function("cache_verify_decode", |b| {
        b.iter(|| black_box(load_split(&warm, Split::Train).expect("load")))
    });
    group.bench_function("bundled_gzip_verify_decode", |b| {
        b.iter(|| black_box(load_split(&bundled, Split::Train).expect("load")))
    });
    let train = load_split(&warm, Split::Train).expect("load");
    group.bench_function("to_f32_scaled", |b| {
        b.iter(|| {
            black_box(
                train
                    .to_dataset(None, &Preprocessing::SCALE)
                    .expect("convert"),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench_load);
criterion_main!(benches);
