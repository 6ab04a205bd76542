//! Writes the small seed inputs of the fuzz corpora that cannot simply be copied from the
//! repository: a tiny model file and tiny checkpoints (SGD and Adam, with history), tiny IDX
//! files plain and gzip, and a few tiny images. Run from `fuzz/`:
//! `cargo run --example seeds` (it writes into `corpus/<target>/seed-*`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;

use mnist_core::rand_chacha::ChaCha8Rng;
use mnist_core::{
    Activation, Architecture, BiasInit, LayerInit, Network, Optimizer, OptimizerConfig,
    OutputHead, Preprocessing, RngState, WeightInit, to_safetensors_bytes,
};
use mnist_dataset::idx::{encode_images, encode_labels};
use mnist_train::checkpoint::{RunState, to_bytes};
use mnist_train::metrics::{EpochMetrics, SplitMetrics};
use rand::SeedableRng;

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn main() {
    // IDX: two 3x3 images, their labels; plain and gzip.
    let images = encode_images(3, 3, &[0, 10, 20, 30, 40, 50, 60, 70, 80, 255, 0, 255, 0, 255, 0, 255, 0, 255]);
    let labels = encode_labels(&[3, 9]);
    write("idx", "images.idx", &images);
    write("idx", "labels.idx", &labels);
    write("idx", "images.idx.gz", &gzip(&images));
    write("idx", "labels.idx.gz", &gzip(&labels));

    // Models and checkpoints: 4 inputs, 3 hidden, 2 outputs.
    let arch = Architecture::uniform(vec![4, 3, 2], Activation::Relu, OutputHead::Softmax).unwrap();
    let init = LayerInit { weight: WeightInit::HeNormal, bias: BiasInit::Zero };
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let net = Network::<f32>::new(&arch, &[init, init], &mut rng).unwrap();
    let prep = Preprocessing { scale: 1.0 / 255.0, mean: 0.1307, std: 0.3081 };
    write("model", "tiny.safetensors", &to_safetensors_bytes(&net, &prep).unwrap());
    let net64 = Network::<f64>::new(&arch, &[init, init], &mut rng).unwrap();
    write("model", "tiny-f64.safetensors", &to_safetensors_bytes(&net64, &prep).unwrap());

    for (name, config) in [
        ("sgd", OptimizerConfig::Sgd),
        ("adam", OptimizerConfig::Adam { beta1: 0.9, beta2: 0.999, epsilon: 1e-8 }),
    ] {
        let optimizer = Optimizer::new(config, &net).unwrap();
        let metrics = SplitMetrics { loss: 0.5, accuracy: 0.75 };
        let state = RunState {
            experiment: "tiny".into(),
            architecture: arch.clone(),
            preprocessing: prep,
            optimizer: config,
            epoch: 1,
            next_batch: 2,
            global_step: 7,
            optimizer_step: 7,
            shuffle_rng: RngState::capture(&ChaCha8Rng::seed_from_u64(1)),
            dropout_rng: RngState::capture(&ChaCha8Rng::seed_from_u64(2)),
            augment_rng: None,
            epoch_loss_sum: 1.25,
            epoch_batches: 2,
            epoch_seconds: 0.5,
            history: vec![EpochMetrics {
                epoch: 1,
                learning_rate: 0.1,
                mean_batch_loss: 0.7,
                summed_batch_loss: 2.8,
                train: Some(metrics),
                validation: Some(metrics),
                test: None,
                train_seconds: 0.25,
                examples_per_second: 100.0,
            }],
            best_epoch: Some(1),
            best_metric: Some(0.5),
            epochs_without_improvement: 0,
        };
        write("checkpoint", &format!("{name}.safetensors"), &to_bytes(&state, &net, &optimizer).unwrap());
    }

    // Images: a tiny dark digit on white, as PNG, BMP and JPEG.
    let mut img = image::GrayImage::from_pixel(12, 12, image::Luma([255]));
    for i in 3..9 {
        img.put_pixel(6, i, image::Luma([0]));
        img.put_pixel(i, 3, image::Luma([20]));
    }
    for (name, format) in [
        ("digit.png", image::ImageFormat::Png),
        ("digit.bmp", image::ImageFormat::Bmp),
        ("digit.jpg", image::ImageFormat::Jpeg),
    ] {
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        write("digitize", name, &out.into_inner());
    }
    let mut raw = vec![12u8, 12];
    raw.extend_from_slice(img.as_raw());
    write("digitize", "raw-12x12", &raw);
}
