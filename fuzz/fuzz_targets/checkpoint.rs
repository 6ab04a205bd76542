//! Checkpoints: safetensors bytes through the checkpoint loader, and what `--resume` does
//! with a loaded one right away (restore both RNG streams).
//!
//! A SHA-256 guards the content, which a mutation almost never keeps valid, so each input is
//! also tried with its checksum recomputed ("resealed"): that lets the fuzzer reach the
//! run-state, shape and optimizer checks behind the checksum, as a hostile file with a
//! correct checksum would.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use mnist_train::checkpoint::{from_bytes, to_bytes};
use safetensors::SafeTensors;
use safetensors::tensor::TensorView;
use sha2::{Digest, Sha256};

/// The same ordering and digest as `mnist_train::checkpoint` (layers, then optimizer slots).
fn order(name: &str) -> (u8, usize, u8) {
    let parts: Vec<&str> = name.split('.').collect();
    match parts.as_slice() {
        ["layers", i, kind] => (0, i.parse().unwrap_or(usize::MAX), u8::from(*kind == "bias")),
        ["optimizer", slot, k] => (
            1 + u8::from(*slot == "second"),
            k.parse().unwrap_or(usize::MAX),
            0,
        ),
        _ => (9, usize::MAX, 0),
    }
}

/// The input with its `sha256` metadata replaced by the digest of its content.
fn reseal(bytes: &[u8]) -> Option<Vec<u8>> {
    let st = SafeTensors::deserialize(bytes).ok()?;
    let (_, header) = SafeTensors::read_metadata(bytes).ok()?;
    let mut meta: HashMap<String, String> = header.metadata().clone()?;
    let state = meta.get("state")?.clone();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort_by_key(|n| order(n));
    let mut h = Sha256::new();
    h.update(state.as_bytes());
    let mut views = Vec::new();
    for name in &names {
        let view = st.tensor(name).ok()?;
        h.update(name.as_bytes());
        for d in view.shape() {
            h.update((*d as u64).to_le_bytes());
        }
        h.update(view.data());
        views.push((
            name.clone(),
            TensorView::new(view.dtype(), view.shape().to_vec(), view.data()).ok()?,
        ));
    }
    let digest: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    meta.insert("sha256".into(), digest);
    safetensors::serialize(views, Some(meta)).ok()
}

fn check(bytes: &[u8]) {
    if let Ok(ck) = from_bytes(bytes) {
        // What the trainer does with a loaded checkpoint before the first batch.
        let _ = ck.state.shuffle_rng.restore();
        let _ = ck.state.dropout_rng.restore();
        let _ = ck.network.workspace(1);
        // A loaded checkpoint writes back and reloads to the same parameters.
        let again = to_bytes(&ck.state, &ck.network, &ck.optimizer)
            .unwrap_or_else(|e| panic!("a loaded checkpoint does not save: {e}"));
        let back = from_bytes(&again)
            .unwrap_or_else(|e| panic!("a saved checkpoint does not load: {e}"));
        assert!(back.network.bit_identical(&ck.network));
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if let Some(resealed) = reseal(data) {
        check(&resealed);
    }
});
