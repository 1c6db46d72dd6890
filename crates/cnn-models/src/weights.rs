//! Weights in safetensors under torchvision's tensor names, BatchNorm running statistics
//! included, so a torchvision or timm checkpoint converted to safetensors loads as is.

use crate::error::ModelError;
use crate::model::Model;
use crate::params::Param;
use candle_core::{CpuStorage, Device, Storage, Tensor};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// PyTorch's `state_dict` also holds BatchNorm's step counter, which nothing here uses.
fn ignored(name: &str) -> bool {
    name.ends_with(".num_batches_tracked")
}

impl Model {
    /// Writes every tensor to `path` atomically: a temporary file renamed into place, so a
    /// crash mid-write leaves any previous file whole.
    pub fn save_weights(&self, path: impl AsRef<Path>) -> Result<(), ModelError> {
        let path = path.as_ref();
        let unwritable = |reason: String| ModelError::Unwritable {
            path: path.to_path_buf(),
            reason,
        };
        // On the host and contiguous: a no-op for every CPU tensor but the kernels, whose
        // torchvision (OIHW) copies are made here.
        let host = self
            .params()
            .tensors()?
            .into_iter()
            .map(|(name, t)| Ok((name, t.to_device(&Device::Cpu)?.contiguous()?)))
            .collect::<Result<Vec<_>, ModelError>>()?;
        let storages: Vec<_> = host.iter().map(|(_, t)| t.storage_and_layout()).collect();
        let mut views = Vec::with_capacity(host.len());
        for ((name, t), (storage, layout)) in host.iter().zip(&storages) {
            let bytes = host_bytes(storage, layout.start_offset(), t.elem_count())
                .ok_or_else(|| unwritable(format!("{name} is {:?}", t.dtype())))?;
            let view = TensorView::new(bytes.0, t.dims().to_vec(), bytes.1)
                .map_err(|e| unwritable(e.to_string()))?;
            views.push((name.as_str(), view));
        }
        let tmp = temporary_path(path);
        safetensors::serialize_to_file(views, None, &tmp).map_err(|e| unwritable(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| unwritable(e.to_string()))
    }

    /// Replaces every tensor with the one of the same name in `path`. The file must hold
    /// exactly the model's tensors with the same shapes (any float dtype, converted to the
    /// model's); otherwise nothing
    /// is changed and the error lists what is missing, unexpected or of the wrong shape.
    pub fn load_weights(&self, path: impl AsRef<Path>) -> Result<(), ModelError> {
        let path = path.as_ref();
        let unreadable = |reason: String| ModelError::Unreadable {
            path: path.to_path_buf(),
            reason,
        };
        if !path.is_file() {
            return Err(unreadable("no such file".into()));
        }
        let file = candle_core::safetensors::load(path, self.device())
            .map_err(|e| unreadable(e.to_string()))?;
        self.check_matches(path, &file)?;
        for p in self.params().all() {
            let t = file[&p.name].to_dtype(p.var.dtype())?;
            p.var.set(&p.from_torch(&t)?)?;
        }
        Ok(())
    }

    pub(crate) fn check_matches(
        &self,
        path: &Path,
        file: &HashMap<String, Tensor>,
    ) -> Result<(), ModelError> {
        let params = self.params().all();
        let known: BTreeSet<&str> = params.iter().map(|p| p.name.as_str()).collect();
        let missing: Vec<String> = params
            .iter()
            .filter(|p| !file.contains_key(&p.name))
            .map(|p| p.name.clone())
            .collect();
        let mut unexpected: Vec<String> = file
            .keys()
            .filter(|k| !known.contains(k.as_str()) && !ignored(k))
            .cloned()
            .collect();
        unexpected.sort();
        let mut wrong_shapes = Vec::new();
        let mut not_float = Vec::new();
        for p in params {
            if let Some(t) = file.get(&p.name) {
                if t.dims() != p.torch_dims() {
                    wrong_shapes.push((p.name.clone(), t.dims().to_vec(), p.torch_dims()));
                } else if !t.dtype().is_float() {
                    not_float.push(format!("{} is {:?}", p.name, t.dtype()));
                }
            }
        }
        if missing.is_empty() && unexpected.is_empty() {
            if let Some(file_classes) = classifier_mismatch(&self.classifier(), &wrong_shapes) {
                return Err(ModelError::ClassCountMismatch {
                    path: path.to_path_buf(),
                    file_classes,
                    model_classes: self.num_classes(),
                });
            }
            if !not_float.is_empty() {
                let reason = format!("tensors must be floating point: {}", not_float.join(", "));
                return Err(ModelError::Unreadable {
                    path: path.to_path_buf(),
                    reason,
                });
            }
        }
        if missing.is_empty() && unexpected.is_empty() && wrong_shapes.is_empty() {
            return Ok(());
        }
        Err(ModelError::WeightsMismatch {
            path: path.to_path_buf(),
            arch: self.arch().to_string(),
            missing,
            unexpected,
            wrong_shapes,
        })
    }

    /// The final Linear layer's weight and bias (the last two trainable tensors): the head
    /// that fine-tuning replaces.
    pub fn classifier(&self) -> Vec<&Param> {
        let trainable: Vec<&Param> = self.params().trainable().collect();
        trainable[trainable.len().saturating_sub(2)..].to_vec()
    }
}

/// `Some(classes in the file)` when the only shape differences are the classifier's rows.
pub(crate) fn classifier_mismatch(
    classifier: &[&Param],
    wrong: &[(String, Vec<usize>, Vec<usize>)],
) -> Option<usize> {
    if wrong.is_empty()
        || !wrong.iter().all(|(n, file, model)| {
            classifier.iter().any(|p| &p.name == n)
                && file.len() == model.len()
                && file[1..] == model[1..]
        })
    {
        return None;
    }
    Some(wrong[0].1[0])
}

/// The bytes of `len` f32 or f64 values from `start` of a CPU storage, borrowed: the file is
/// written straight from the model's memory. Written by hand because candle's
/// `safetensors::save` first copies each tensor into a fresh vector: for d2l AlexNet a
/// second 190 MB at every checkpoint (the kernel's copy into the page cache remains the
/// larger part of a save, ~0.2-0.5 s here).
fn host_bytes(storage: &Storage, start: usize, len: usize) -> Option<(Dtype, &[u8])> {
    match storage {
        Storage::Cpu(CpuStorage::F32(v)) => {
            Some((Dtype::F32, bytemuck::cast_slice(&v[start..start + len])))
        }
        Storage::Cpu(CpuStorage::F64(v)) => {
            Some((Dtype::F64, bytemuck::cast_slice(&v[start..start + len])))
        }
        _ => None,
    }
}

fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}
