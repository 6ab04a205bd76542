//! Checkpoints: everything needed to continue a run bit for bit, in one verified file.
//!
//! The file is safetensors (readable by any safetensors tool): the parameters under the same
//! names as a model file (`layers.{i}.weight` `[out, in]`, `layers.{i}.bias`), the optimizer's
//! moment buffers as `optimizer.first.{k}` / `optimizer.second.{k}`, and in the metadata the
//! run state as JSON (epoch, position in the epoch, RNG states, history) plus a SHA-256 over
//! that state and every tensor. A file cut short, a flipped byte or a checkpoint of another
//! architecture is refused with a clear error. Writes are atomic (temp file + rename).

use std::collections::HashMap;
use std::path::Path;

use mnist_core::{
    Architecture, Dense, Network, Optimizer, OptimizerConfig, OptimizerState, Preprocessing,
    RngState,
};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::TrainError;
use crate::metrics::EpochMetrics;

/// Value of the `format` metadata key.
pub const FORMAT: &str = "mnist-rs-checkpoint";
/// Checkpoint format version written and read by this build.
pub const VERSION: u32 = 1;

/// Where a run stands, besides its tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunState {
    /// Experiment name the checkpoint belongs to.
    pub experiment: String,
    pub architecture: Architecture,
    pub preprocessing: Preprocessing,
    pub optimizer: OptimizerConfig,
    /// 0-based epoch in progress (equal to the number of completed epochs when `next_batch`
    /// is 0).
    pub epoch: usize,
    /// First batch of `epoch` not yet trained.
    pub next_batch: usize,
    /// Optimizer steps taken in the whole run.
    pub global_step: u64,
    pub optimizer_step: u64,
    /// The shuffling RNG as it was at the start of `epoch` (the epoch's order is re-derived).
    pub shuffle_rng: RngState,
    /// The dropout RNG now.
    pub dropout_rng: RngState,
    /// The augmentation RNG now (runs with augmentation only).
    #[serde(default)]
    pub augment_rng: Option<RngState>,
    /// Sums over the batches of `epoch` trained so far: loss, batches, seconds.
    pub epoch_loss_sum: f64,
    pub epoch_batches: usize,
    pub epoch_seconds: f64,
    /// Metrics of every completed epoch.
    pub history: Vec<EpochMetrics>,
    /// Early stopping: best epoch (1-based) and its metric, epochs since it improved.
    pub best_epoch: Option<usize>,
    pub best_metric: Option<f64>,
    pub epochs_without_improvement: usize,
    /// The config the run started with (absent in checkpoints written before it was kept): a
    /// resumed run must use the same one, but for its number of epochs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
}

/// A loaded checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub state: RunState,
    pub network: Network<f32>,
    pub optimizer: Optimizer<f32>,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn digest(state_json: &str, tensors: &[(String, Vec<usize>, Vec<u8>)]) -> String {
    let mut h = Sha256::new();
    h.update(state_json.as_bytes());
    for (name, shape, data) in tensors {
        h.update(name.as_bytes());
        for d in shape {
            h.update((*d as u64).to_le_bytes());
        }
        h.update(data);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Serializes a checkpoint to bytes.
pub fn to_bytes(
    state: &RunState,
    net: &Network<f32>,
    optimizer: &Optimizer<f32>,
) -> Result<Vec<u8>, String> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (i, l) in net.layers().iter().enumerate() {
        tensors.push((
            format!("layers.{i}.weight"),
            vec![l.outputs(), l.inputs()],
            f32_bytes(l.weight_slice()),
        ));
        tensors.push((
            format!("layers.{i}.bias"),
            vec![l.outputs()],
            f32_bytes(l.bias()),
        ));
    }
    let opt = optimizer.state();
    for (slot, buffers) in [("first", &opt.first), ("second", &opt.second)] {
        for (k, b) in buffers.iter().enumerate() {
            tensors.push((format!("optimizer.{slot}.{k}"), vec![b.len()], f32_bytes(b)));
        }
    }
    let state_json = serde_json::to_string(state).map_err(|e| e.to_string())?;
    let checksum = digest(&state_json, &tensors);
    let metadata = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("format_version".to_string(), VERSION.to_string()),
        ("state".to_string(), state_json),
        ("sha256".to_string(), checksum),
    ]);
    let views = tensors
        .iter()
        .map(|(name, shape, data)| {
            TensorView::new(Dtype::F32, shape.clone(), data)
                .map(|v| (name.clone(), v))
                .map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    safetensors::serialize(views, Some(metadata))
        .map(mnist_core::with_sorted_header)
        .map_err(|e| e.to_string())
}

/// Parses and verifies checkpoint bytes; `reason` strings name what was wrong.
pub fn from_bytes(bytes: &[u8]) -> Result<Checkpoint, String> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| {
        format!("cut short or not a safetensors file ({e}); use an earlier checkpoint")
    })?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
    let meta = header.metadata().clone().unwrap_or_default();
    let get = |k: &str| {
        meta.get(k)
            .ok_or_else(|| format!("metadata key `{k}` is missing"))
    };
    if get("format")? != FORMAT {
        return Err(format!(
            "format is {:?}, not {FORMAT:?} (is this a model file? pass it to `eval`, not `--resume`)",
            get("format")?
        ));
    }
    if get("format_version")?.parse::<u32>().ok() != Some(VERSION) {
        return Err(format!(
            "format version {} is not supported (this build reads {VERSION})",
            get("format_version")?
        ));
    }
    let state_json = get("state")?;
    // Collect tensors in the order they were written (names sort to the same order).
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort_by_key(|n| tensor_order(n));
    let mut tensors = Vec::with_capacity(names.len());
    for name in &names {
        let view = st.tensor(name).map_err(|e| e.to_string())?;
        if view.dtype() != Dtype::F32 {
            return Err(format!(
                "tensor `{name}` is {:?}, expected F32",
                view.dtype()
            ));
        }
        tensors.push((name.clone(), view.shape().to_vec(), view.data().to_vec()));
    }
    if &digest(state_json, &tensors) != get("sha256")? {
        return Err(
            "SHA-256 does not match its content: the file is corrupt; use an earlier checkpoint"
                .into(),
        );
    }
    let state: RunState =
        serde_json::from_str(state_json).map_err(|e| format!("run state: {e}"))?;
    state
        .architecture
        .validate()
        .map_err(|e| format!("architecture: {e}"))?;
    let floats = |name: &str| -> Result<Vec<f32>, String> {
        let (_, _, data) = tensors
            .iter()
            .find(|(n, _, _)| n == name)
            .ok_or_else(|| format!("tensor `{name}` is missing"))?;
        Ok(data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    };
    let mut layers = Vec::new();
    for (i, spec) in state.architecture.layers().enumerate() {
        let layer = Dense::from_parts(
            spec.inputs,
            spec.outputs,
            floats(&format!("layers.{i}.weight"))?,
            floats(&format!("layers.{i}.bias"))?,
        )
        .ok_or_else(|| format!("layer {i}: tensor shapes do not match the architecture"))?;
        layers.push(layer);
    }
    let network = Network::from_layers(&state.architecture, layers)
        .map_err(|e| e.to_string())?
        .ok_or("layer shapes disagree with the architecture")?;
    let slot = |prefix: &str| -> Result<Vec<Vec<f32>>, String> {
        let mut out = Vec::new();
        while let Ok(b) = floats(&format!("optimizer.{prefix}.{}", out.len())) {
            out.push(b);
        }
        Ok(out)
    };
    let opt_state = OptimizerState {
        step: state.optimizer_step,
        first: slot("first")?,
        second: slot("second")?,
    };
    let optimizer = Optimizer::from_state(state.optimizer, opt_state, &network)
        .map_err(|e| format!("optimizer state: {e}"))?;
    Ok(Checkpoint {
        state,
        network,
        optimizer,
    })
}

/// Sort key restoring write order: layers by index, then optimizer slots by index.
fn tensor_order(name: &str) -> (u8, usize, u8) {
    let parts: Vec<&str> = name.split('.').collect();
    match parts.as_slice() {
        ["layers", i, kind] => (
            0,
            i.parse().unwrap_or(usize::MAX),
            u8::from(*kind == "bias"),
        ),
        ["optimizer", slot, k] => (
            1 + u8::from(*slot == "second"),
            k.parse().unwrap_or(usize::MAX),
            0,
        ),
        _ => (9, usize::MAX, 0),
    }
}

/// Reads and verifies a checkpoint file.
pub fn load(path: &Path) -> Result<Checkpoint, TrainError> {
    let bytes = mnist_core::read_parameter_file(path, mnist_core::MAX_PARAMETER_FILE_BYTES)
        .map_err(|e| TrainError::Checkpoint {
            path: path.to_path_buf(),
            reason: format!("cannot read: {e}"),
        })?;
    from_bytes(&bytes).map_err(|reason| TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason,
    })
}

/// Writes a checkpoint atomically: a crash leaves the previous file or the new one, whole.
pub fn save(
    path: &Path,
    state: &RunState,
    net: &Network<f32>,
    optimizer: &Optimizer<f32>,
) -> Result<(), TrainError> {
    let bytes = to_bytes(state, net, optimizer).map_err(|reason| TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason,
    })?;
    write_atomically(path, &bytes)
}

/// Writes `bytes` to `path` atomically: a crash leaves the previous file or the new one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    mnist_dataset::atomic::write_file_atomically(path, bytes).map_err(|source| TrainError::Write {
        path: path.to_path_buf(),
        source,
    })
}
