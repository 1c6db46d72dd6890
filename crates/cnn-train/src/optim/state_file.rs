//! Optimiser state in one safetensors file: slot tensors under `<param>.<slot>` names, the
//! rule, weight decay and step counts as JSON in the header's metadata.

use super::{Optimizer, OptimizerState};
use crate::atomic::temporary_path;
use crate::error::{Result, TrainError};
use candle_core::{Device, Tensor};
use safetensors::tensor::{Dtype, SafeTensorError, TensorView, View};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

const RULE: &str = "rule";
const WEIGHT_DECAY: &str = "weight_decay";
const STEPS: &str = "steps";
/// How the 4-D slots (those of convolution kernels) are laid out: `ohwi`, as the models have
/// held their kernels since that layout came in. A file without it is older, its kernels'
/// slots in PyTorch's OIHW order.
const KERNELS: &str = "kernels";
const OHWI: &str = "ohwi";

impl OptimizerState {
    /// Writes the state to `path` atomically (temporary file, then rename).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let json = |v: serde_json::Result<String>| v.map_err(|e| TrainError::file(path, e));
        let meta = HashMap::from([
            (RULE.to_string(), json(serde_json::to_string(&self.rule))?),
            (
                WEIGHT_DECAY.to_string(),
                json(serde_json::to_string(&self.weight_decay))?,
            ),
            (STEPS.to_string(), json(serde_json::to_string(&self.steps))?),
            (KERNELS.to_string(), OHWI.to_string()),
        ]);
        let tmp = temporary_path(path);
        let cannot = |e: SafeTensorError| {
            TrainError::file(&tmp, format!("cannot write optimiser state: {e}"))
        };
        // The CPU path's moments are written from their host vectors in place: gathering them
        // into tensors first held a second copy of the whole state (374 MB for d2l AlexNet).
        let mut views: Vec<(&str, SlotView)> = Vec::new();
        for (k, t) in &self.slots {
            views.push((k, SlotView::Tensor(t)));
        }
        for (k, (shape, v)) in &self.host_slots {
            let bytes = bytemuck::cast_slice(v);
            let view = TensorView::new(Dtype::F32, shape.dims().to_vec(), bytes).map_err(cannot)?;
            views.push((k, SlotView::Host(view)));
        }
        safetensors::serialize_to_file(views, Some(meta), &tmp).map_err(cannot)?;
        std::fs::rename(&tmp, path).map_err(|e| TrainError::file(path, e))
    }

    /// Reads a state written by [`OptimizerState::save`], placing its tensors on `device`.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        let bad =
            |what: String| TrainError::file(path, format!("not an optimiser state file: {what}"));
        let bytes = std::fs::read(path).map_err(|e| TrainError::file(path, e))?;
        let (_, header) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let field = |k: &str| meta.get(k).ok_or_else(|| bad(format!("no '{k}' entry")));
        let rule: Optimizer = serde_json::from_str(field(RULE)?).map_err(|e| bad(e.to_string()))?;
        let weight_decay: f64 =
            serde_json::from_str(field(WEIGHT_DECAY)?).map_err(|e| bad(e.to_string()))?;
        let steps: BTreeMap<String, u64> =
            serde_json::from_str(field(STEPS)?).map_err(|e| bad(e.to_string()))?;
        // An older file's kernel slots are OIHW: laid out as the kernels are now, so that a
        // run resumes where it was (as they were, a resumed Adam would pair each weight
        // with another's moments, silently).
        let older = !meta.contains_key(KERNELS);
        let slots = candle_core::safetensors::load_buffer(&bytes, device)?
            .into_iter()
            .map(|(name, t)| match older && t.rank() == 4 {
                true => Ok((name, t.permute((0, 2, 3, 1))?.contiguous()?)),
                false => Ok((name, t)),
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            rule,
            weight_decay,
            steps,
            slots,
            host_slots: BTreeMap::new(),
            lr_factors: BTreeMap::new(),
        })
    }
}

/// One slot as safetensors writes it: a tensor (copied out by candle), or a host vector's
/// bytes (borrowed).
enum SlotView<'a> {
    Tensor(&'a Tensor),
    Host(TensorView<'a>),
}

impl View for SlotView<'_> {
    fn dtype(&self) -> Dtype {
        match self {
            SlotView::Tensor(t) => View::dtype(t),
            SlotView::Host(v) => v.dtype(),
        }
    }

    fn shape(&self) -> &[usize] {
        match self {
            SlotView::Tensor(t) => t.dims(),
            SlotView::Host(v) => v.shape(),
        }
    }

    fn data(&self) -> Cow<'_, [u8]> {
        match self {
            SlotView::Tensor(t) => View::data(t),
            SlotView::Host(v) => Cow::Borrowed(v.data()),
        }
    }

    fn data_len(&self) -> usize {
        match self {
            SlotView::Tensor(t) => View::data_len(t),
            SlotView::Host(v) => v.data().len(),
        }
    }
}
