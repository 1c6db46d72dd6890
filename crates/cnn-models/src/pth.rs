//! Named tensors from a file: safetensors, or PyTorch's zip `.pth` (`torch.save` since 1.6),
//! told apart by content, with a state dict found under a `state_dict` or `model` key and
//! DataParallel's `module.` prefix dropped.

use crate::error::ModelError;
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// Keys under which training scripts nest the state dict (torchvision's reference scripts
/// and timm write `model`, many others `state_dict`), tried when the top level holds none.
const NESTED_KEYS: [&str; 2] = ["state_dict", "model"];

/// DataParallel and DistributedDataParallel prefix every name with this.
const PARALLEL_PREFIX: &str = "module.";

/// Every tensor in `path` by name, on `device`: a safetensors file, or a PyTorch zip
/// checkpoint read as [`read_pth`] does.
pub fn read_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>, ModelError> {
    let unreadable = |reason: String| ModelError::Unreadable {
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_file() {
        return Err(unreadable("no such file".into()));
    }
    if is_zip(path)? {
        return read_pth(path)?
            .into_iter()
            .map(|(name, t)| Ok((name, t.to_device(device)?)))
            .collect();
    }
    candle_core::safetensors::load(path, device).map_err(|e| {
        unreadable(format!(
            "neither a PyTorch zip checkpoint nor safetensors ({e})"
        ))
    })
}

/// The state dict of a PyTorch zip checkpoint, names as torchvision gives them: the
/// top-level dict's tensors, else those under `state_dict` or `model`; a `module.` prefix
/// on every name is dropped. A file holding no tensors there (an optimiser state, a config,
/// a whole pickled model) is an error that says so, as is a legacy non-zip pickle.
pub fn read_pth(path: &Path) -> Result<Vec<(String, Tensor)>, ModelError> {
    let unreadable = |reason: String| ModelError::Unreadable {
        path: path.to_path_buf(),
        reason,
    };
    if !path.is_file() {
        return Err(unreadable("no such file".into()));
    }
    if !is_zip(path)? {
        return Err(unreadable(
            "not a PyTorch zip checkpoint (a file written by torch.save before PyTorch 1.6, \
             or with _use_new_zipfile_serialization=False, is not read: load and save it \
             again with a newer torch)"
                .into(),
        ));
    }
    let mut tensors = read_with_key(path, None)?.unwrap_or_default();
    for key in NESTED_KEYS {
        if !tensors.is_empty() {
            break;
        }
        tensors = read_with_key(path, Some(key))?.unwrap_or_default();
    }
    if tensors.is_empty() {
        return Err(unreadable(format!(
            "holds no tensors, so it is not a state dict (expected a dict of tensor names to \
             tensors, at the top or under a {:?} or {:?} key, as torch.save(model.state_dict()) \
             writes)",
            NESTED_KEYS[0], NESTED_KEYS[1]
        )));
    }
    strip_parallel_prefix(path, tensors)
}

/// The tensors of the checkpoint's top-level dict, or of the dict under `key`; `None` when
/// there is no such key.
fn read_with_key(
    path: &Path,
    key: Option<&str>,
) -> Result<Option<Vec<(String, Tensor)>>, ModelError> {
    match candle_core::pickle::read_all_with_key(path, key) {
        Ok(tensors) => Ok(Some(tensors)),
        // candle reports a missing key only in its message (candle-core 0.11.1, pickle.rs).
        Err(e) if key.is_some_and(|k| e.to_string().contains(&format!("key {k} not found"))) => {
            Ok(None)
        }
        Err(e) => Err(ModelError::Unreadable {
            path: path.to_path_buf(),
            reason: format!("cannot read the PyTorch checkpoint: {e}"),
        }),
    }
}

/// Names without DataParallel's `module.` prefix, when every name has it.
fn strip_parallel_prefix(
    path: &Path,
    tensors: Vec<(String, Tensor)>,
) -> Result<Vec<(String, Tensor)>, ModelError> {
    if !tensors.iter().all(|(n, _)| n.starts_with(PARALLEL_PREFIX)) {
        return Ok(tensors);
    }
    let stripped: Vec<(String, Tensor)> = tensors
        .into_iter()
        .map(|(n, t)| (n[PARALLEL_PREFIX.len()..].to_string(), t))
        .collect();
    let mut seen = std::collections::HashSet::new();
    if let Some((dup, _)) = stripped.iter().find(|(n, _)| !seen.insert(n.as_str())) {
        return Err(ModelError::Unreadable {
            path: path.to_path_buf(),
            reason: format!("two tensors are named {dup} once the module. prefix is dropped"),
        });
    }
    Ok(stripped)
}

/// Whether `path` starts as a zip archive does (PyTorch's format since 1.6).
fn is_zip(path: &Path) -> Result<bool, ModelError> {
    let mut magic = [0u8; 4];
    let mut file = std::fs::File::open(path).map_err(|e| ModelError::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let n = file.read(&mut magic).unwrap_or(0);
    Ok(n == 4 && magic == *b"PK\x03\x04")
}
