//! Model files: safetensors bytes through the model loader, as f32 (train, eval, predict)
//! and f64 (gradient checks). A model that loads must save and load back identically.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mnist_core::{from_safetensors_bytes, to_safetensors_bytes};

fuzz_target!(|data: &[u8]| {
    let _ = from_safetensors_bytes::<f64>(data);
    if let Ok(model) = from_safetensors_bytes::<f32>(data) {
        let bytes = to_safetensors_bytes(&model.network, &model.preprocessing)
            .unwrap_or_else(|e| panic!("a loaded model does not save: {e}"));
        let again = from_safetensors_bytes::<f32>(&bytes)
            .unwrap_or_else(|e| panic!("a saved model does not load: {e}"));
        assert!(again.network.bit_identical(&model.network));
    }
});
