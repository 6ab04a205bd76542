//! Model files in safetensors, laid out like PyTorch's `nn.Linear` stack.
//!
//! * Tensors `layers.{i}.weight` (shape `[out, in]`, row-major) and `layers.{i}.bias` (`[out]`),
//!   dtype `F32` for `Network<f32>`, `F64` for `Network<f64>`.
//! * `__metadata__` (a string map): `format` = `"mnist-rs"`, `format_version` = `"1"`,
//!   `architecture` = JSON of [`Architecture`], `preprocessing` = JSON of [`Preprocessing`],
//!   `sha256` = hex SHA-256 over those two JSON strings and every tensor's bytes in layer
//!   order, so a flipped byte anywhere in the content is refused.
//!
//! Loading checks everything against the metadata and returns a typed [`ModelIoError`]; it
//! never panics on bad input. Either dtype can be loaded into either scalar type (`F64` into
//! `f32` rounds).

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensorError, SafeTensors};

use crate::{Architecture, Dense, Float, ModelFileError, ModelIoError, Network, Preprocessing};

/// Value of the `format` metadata key.
pub const FORMAT_NAME: &str = "mnist-rs";
/// The model format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// A network together with the input preprocessing it was trained with.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedModel<T> {
    /// The network.
    pub network: Network<T>,
    /// Input transform to apply to raw pixels before [`Network::forward`].
    pub preprocessing: Preprocessing,
}

fn weight_name(i: usize) -> String {
    format!("layers.{i}.weight")
}

fn bias_name(i: usize) -> String {
    format!("layers.{i}.bias")
}

fn to_bytes<T: Float>(v: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * T::BYTES);
    v.iter().for_each(|x| x.extend_le_bytes(&mut out));
    out
}

/// Serializes `net` and `preprocessing` to safetensors bytes.
pub fn to_safetensors_bytes<T: Float>(
    net: &Network<T>,
    preprocessing: &Preprocessing,
) -> Result<Vec<u8>, ModelIoError> {
    let arch_json =
        serde_json::to_string(net.architecture()).map_err(|e| ModelIoError::BadMetadata {
            key: "architecture",
            reason: e.to_string(),
        })?;
    let prep_json =
        serde_json::to_string(preprocessing).map_err(|e| ModelIoError::BadMetadata {
            key: "preprocessing",
            reason: e.to_string(),
        })?;
    let mut buffers = Vec::with_capacity(2 * net.num_layers());
    for (i, l) in net.layers().iter().enumerate() {
        buffers.push((
            weight_name(i),
            vec![l.outputs(), l.inputs()],
            to_bytes(l.weight_slice()),
        ));
        buffers.push((bias_name(i), vec![l.outputs()], to_bytes(l.bias())));
    }
    let checksum = content_digest(
        &arch_json,
        &prep_json,
        buffers.iter().map(|(_, _, data)| data.as_slice()),
    );
    let metadata = HashMap::from([
        ("format".to_string(), FORMAT_NAME.to_string()),
        ("format_version".to_string(), FORMAT_VERSION.to_string()),
        ("architecture".to_string(), arch_json),
        ("preprocessing".to_string(), prep_json),
        ("sha256".to_string(), checksum),
    ]);
    let mut views = Vec::with_capacity(buffers.len());
    for (name, shape, data) in &buffers {
        let view = TensorView::new(T::DTYPE, shape.clone(), data)
            .map_err(|e| ModelIoError::Corrupt(e.to_string()))?;
        views.push((name.as_str(), view));
    }
    safetensors::serialize(views, Some(metadata))
        .map(with_sorted_header)
        .map_err(|e| ModelIoError::Corrupt(e.to_string()))
}

/// A safetensors file's JSON header (tensor entries and `__metadata__`) and the offset where
/// its tensor data starts, if the first 8 bytes announce a header that is there and parses.
pub fn safetensors_header(bytes: &[u8]) -> Option<(serde_json::Value, usize)> {
    let len = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let end = len.checked_add(8)?;
    let header = serde_json::from_slice(bytes.get(8..end)?).ok()?;
    Some((header, end))
}

/// The same safetensors bytes with the header's keys in sorted order. `safetensors` writes the
/// metadata from a `HashMap`, whose order changes from one call to the next; sorted, the same
/// parameters always give the same file, so files can be compared by their SHA-256. Bytes
/// whose header does not parse are returned as they are (the reader will refuse them).
pub fn with_sorted_header(bytes: Vec<u8>) -> Vec<u8> {
    // serde_json's objects are sorted maps (its `preserve_order` feature is off).
    let Some((mut header, end)) =
        safetensors_header(&bytes).and_then(|(h, end)| Some((serde_json::to_vec(&h).ok()?, end)))
    else {
        return bytes;
    };
    // Padded with spaces to a multiple of 8 bytes, as safetensors does, to keep the tensor data
    // aligned.
    header.resize(header.len().next_multiple_of(8), b' ');
    let data = bytes.get(end..).unwrap_or(&[]);
    let mut out = Vec::with_capacity(8 + header.len() + data.len());
    out.extend_from_slice(&(header.len() as u64).to_le_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(data);
    out
}

/// Hex SHA-256 of the metadata JSON and the tensors' bytes, in layer order.
fn content_digest<'a>(
    arch_json: &str,
    prep_json: &str,
    tensors: impl Iterator<Item = &'a [u8]>,
) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(arch_json.as_bytes());
    h.update(prep_json.as_bytes());
    for data in tensors {
        h.update((data.len() as u64).to_le_bytes());
        h.update(data);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn map_st_error(e: SafeTensorError) -> ModelIoError {
    match e {
        SafeTensorError::HeaderTooSmall
        | SafeTensorError::InvalidHeaderLength
        | SafeTensorError::MetadataIncompleteBuffer => ModelIoError::Truncated(e.to_string()),
        other => ModelIoError::Corrupt(other.to_string()),
    }
}

fn meta<'a>(map: &'a HashMap<String, String>, key: &'static str) -> Result<&'a str, ModelIoError> {
    map.get(key)
        .map(String::as_str)
        .ok_or(ModelIoError::MissingMetadata(key))
}

/// Reads a model from safetensors bytes, validating names, shapes, dtypes and metadata.
pub fn from_safetensors_bytes<T: Float>(bytes: &[u8]) -> Result<SavedModel<T>, ModelIoError> {
    let st = SafeTensors::deserialize(bytes).map_err(map_st_error)?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(map_st_error)?;
    let empty = HashMap::new();
    let map = header.metadata().as_ref().unwrap_or(&empty);

    let format = meta(map, "format")?;
    if format != FORMAT_NAME {
        return Err(ModelIoError::BadMetadata {
            key: "format",
            reason: format!("expected \"{FORMAT_NAME}\", got {format:?}"),
        });
    }
    let version = meta(map, "format_version")?;
    if version.trim().parse::<u32>().ok() != Some(FORMAT_VERSION) {
        return Err(ModelIoError::UnsupportedVersion {
            found: version.to_string(),
            supported: FORMAT_VERSION,
        });
    }
    let arch: Architecture = serde_json::from_str(meta(map, "architecture")?).map_err(|e| {
        ModelIoError::BadMetadata {
            key: "architecture",
            reason: e.to_string(),
        }
    })?;
    arch.validate().map_err(|e| ModelIoError::BadMetadata {
        key: "architecture",
        reason: e.to_string(),
    })?;
    let preprocessing: Preprocessing =
        serde_json::from_str(meta(map, "preprocessing")?).map_err(|e| {
            ModelIoError::BadMetadata {
                key: "preprocessing",
                reason: e.to_string(),
            }
        })?;
    preprocessing
        .validate()
        .map_err(|e| ModelIoError::BadMetadata {
            key: "preprocessing",
            reason: e.to_string(),
        })?;

    let mut expected_names = Vec::with_capacity(2 * arch.num_layers());
    let mut layers = Vec::with_capacity(arch.num_layers());
    for (i, spec) in arch.layers().enumerate() {
        let (wn, bn) = (weight_name(i), bias_name(i));
        let weight = read_tensor::<T>(&st, &wn, &[spec.outputs, spec.inputs])?;
        let bias = read_tensor::<T>(&st, &bn, &[spec.outputs])?;
        let layer =
            Dense::from_parts(spec.inputs, spec.outputs, weight, bias).ok_or_else(|| {
                ModelIoError::ShapeMismatch {
                    name: wn.clone(),
                    expected: vec![spec.outputs, spec.inputs],
                    found: vec![],
                }
            })?;
        layers.push(layer);
        expected_names.push(wn);
        expected_names.push(bn);
    }
    if let Some(extra) = st
        .names()
        .into_iter()
        .find(|n| !expected_names.iter().any(|e| e == n))
    {
        return Err(ModelIoError::UnexpectedTensor(extra.to_string()));
    }
    // Last, the checksum: every structural error above has its own, more precise message.
    let raw: Vec<&[u8]> = expected_names
        .iter()
        .filter_map(|n| st.tensor(n).ok().map(|v| v.data()))
        .collect();
    let found = content_digest(
        meta(map, "architecture")?,
        meta(map, "preprocessing")?,
        raw.into_iter(),
    );
    if found != meta(map, "sha256")? {
        return Err(ModelIoError::Corrupt(
            "SHA-256 of the content does not match the one recorded in the file: it was \
             damaged or edited after saving; use another copy or retrain"
                .into(),
        ));
    }
    let network = Network::from_layers(&arch, layers)
        .map_err(|e| ModelIoError::BadMetadata {
            key: "architecture",
            reason: e.to_string(),
        })?
        .ok_or_else(|| ModelIoError::BadMetadata {
            key: "architecture",
            reason: "layer shapes disagree".into(),
        })?;
    Ok(SavedModel {
        network,
        preprocessing,
    })
}

fn read_tensor<T: Float>(
    st: &SafeTensors<'_>,
    name: &str,
    shape: &[usize],
) -> Result<Vec<T>, ModelIoError> {
    let view = st.tensor(name).map_err(|e| match e {
        SafeTensorError::TensorNotFound(_) => ModelIoError::MissingTensor(name.to_string()),
        other => map_st_error(other),
    })?;
    if view.shape() != shape {
        return Err(ModelIoError::ShapeMismatch {
            name: name.to_string(),
            expected: shape.to_vec(),
            found: view.shape().to_vec(),
        });
    }
    let data = view.data();
    let values: Option<Vec<T>> = match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_chunk(c).map(|v| T::from_f64(f64::from(v))))
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_chunk(c).map(T::from_f64))
            .collect(),
        other => {
            return Err(ModelIoError::UnsupportedDtype {
                name: name.to_string(),
                dtype: format!("{other:?}"),
            });
        }
    };
    let values = values
        .ok_or_else(|| ModelIoError::Corrupt(format!("tensor `{name}` has a partial element")))?;
    if values.len() != shape.iter().product::<usize>() {
        return Err(ModelIoError::Corrupt(format!(
            "tensor `{name}` data length disagrees with its shape"
        )));
    }
    if values.iter().any(|v| !v.to_f64().is_finite()) {
        return Err(ModelIoError::NonFinite(name.to_string()));
    }
    Ok(values)
}

/// Writes a model file atomically: the bytes go to a temporary file in the same directory,
/// which is flushed to disk and then renamed over `path`. A crash leaves either the old file
/// or the new one, never a partial file at `path`.
pub fn save_model<T: Float>(
    path: impl AsRef<Path>,
    net: &Network<T>,
    preprocessing: &Preprocessing,
) -> Result<(), ModelFileError> {
    let path = path.as_ref();
    let err = |source: ModelIoError| ModelFileError {
        path: path.to_path_buf(),
        source,
    };
    let bytes = to_safetensors_bytes(net, preprocessing).map_err(err)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let file_name = path.file_name().ok_or_else(|| {
        err(ModelIoError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "path has no file name",
        )))
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    // Process id plus a per-process counter: concurrent saves never share a temporary file.
    static SAVES: AtomicU64 = AtomicU64::new(0);
    tmp_name.push(format!(
        ".{}-{}.tmp",
        std::process::id(),
        SAVES.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.join(tmp_name);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(ModelIoError::Io(e))
    })
}

/// The largest model or checkpoint file read: as much as the parameters and optimizer state
/// of the largest network a config may ask for (8 GiB).
pub const MAX_PARAMETER_FILE_BYTES: u64 = 8 << 30;

/// Reads a whole model or checkpoint file. It must be a regular file of at most `limit`
/// bytes, so that a device (`/dev/zero`), a pipe or a huge file is refused at once instead of
/// being read into memory.
pub fn read_parameter_file(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    let file = std::fs::File::open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "not a regular file (a directory, device or pipe); pass the file itself",
        ));
    }
    let too_large = |len: u64| {
        Error::new(
            ErrorKind::InvalidData,
            format!(
                "{len} bytes, more than the {limit} a model or checkpoint can take; is it the right file?"
            ),
        )
    };
    if meta.len() > limit {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // Bounded even if the file grows while it is read.
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// Reads a model file (see [`from_safetensors_bytes`]); errors carry the path.
pub fn load_model<T: Float>(path: impl AsRef<Path>) -> Result<SavedModel<T>, ModelFileError> {
    let path = path.as_ref();
    let err = |source: ModelIoError| ModelFileError {
        path: path.to_path_buf(),
        source,
    };
    let bytes = read_parameter_file(path, MAX_PARAMETER_FILE_BYTES)
        .map_err(|e| err(ModelIoError::Io(e)))?;
    from_safetensors_bytes(&bytes).map_err(err)
}
