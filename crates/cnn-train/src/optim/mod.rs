//! Optimisers with PyTorch's exact update rules (`SGD`, `Adam`, `AdamW`), their state saved to
//! and loaded from safetensors as named tensors for an exact resume.

mod adam;
mod sgd;
mod state_file;

use crate::error::{Result, TrainError};
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Device, InplaceOp2, Layout, Shape, Tensor, Var};
use cnn_models::Param;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Which optimiser, with its own settings. Weight decay and the learning rate live in the
/// run config (they apply to every optimiser); defaults are PyTorch's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Optimizer {
    /// `torch.optim.SGD`: L2 weight decay added to the gradient, then heavy-ball momentum
    /// (first step copies the gradient), optionally Nesterov.
    Sgd {
        momentum: f64,
        dampening: f64,
        nesterov: bool,
    },
    /// `torch.optim.Adam`: L2 weight decay added to the gradient, bias-corrected moments.
    Adam { betas: (f64, f64), eps: f64 },
    /// `torch.optim.AdamW`: decoupled weight decay (`p *= 1 - lr * wd`), then Adam.
    #[serde(rename = "adamw")]
    AdamW { betas: (f64, f64), eps: f64 },
}

impl Optimizer {
    /// SGD with `momentum` (no dampening, no Nesterov).
    pub fn sgd(momentum: f64) -> Self {
        Optimizer::Sgd {
            momentum,
            dampening: 0.0,
            nesterov: false,
        }
    }

    /// Adam with PyTorch's defaults: betas (0.9, 0.999), eps 1e-8.
    pub fn adam() -> Self {
        Optimizer::Adam {
            betas: (0.9, 0.999),
            eps: 1e-8,
        }
    }

    /// AdamW with PyTorch's defaults: betas (0.9, 0.999), eps 1e-8.
    pub fn adamw() -> Self {
        Optimizer::AdamW {
            betas: (0.9, 0.999),
            eps: 1e-8,
        }
    }

    /// `sgd`, `adam` or `adamw`.
    pub fn name(&self) -> &'static str {
        match self {
            Optimizer::Sgd { .. } => "sgd",
            Optimizer::Adam { .. } => "adam",
            Optimizer::AdamW { .. } => "adamw",
        }
    }

    /// The checks PyTorch's constructors make.
    pub fn validate(&self, lr: f64, weight_decay: f64) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        if !(lr.is_finite() && lr >= 0.0) {
            return bad(format!("learning rate must be >= 0, got {lr}"));
        }
        if !(weight_decay.is_finite() && weight_decay >= 0.0) {
            return bad(format!("weight decay must be >= 0, got {weight_decay}"));
        }
        match *self {
            Optimizer::Sgd {
                momentum,
                dampening,
                nesterov,
            } => {
                if !(momentum.is_finite() && momentum >= 0.0) {
                    return bad(format!("momentum must be >= 0, got {momentum}"));
                }
                if !dampening.is_finite() {
                    return bad(format!("dampening must be finite, got {dampening}"));
                }
                if nesterov && (momentum <= 0.0 || dampening != 0.0) {
                    return bad("Nesterov momentum needs momentum > 0 and dampening 0".into());
                }
            }
            Optimizer::Adam { betas, eps } | Optimizer::AdamW { betas, eps } => {
                for (i, b) in [betas.0, betas.1].into_iter().enumerate() {
                    if !(0.0..1.0).contains(&b) {
                        return bad(format!("beta{} must be in [0, 1), got {b}", i + 1));
                    }
                }
                if !(eps.is_finite() && eps >= 0.0) {
                    return bad(format!("eps must be >= 0, got {eps}"));
                }
            }
        }
        Ok(())
    }
}

/// An optimiser and its state: per parameter (by name) the step count and the slots PyTorch
/// keeps (`momentum_buffer`; `exp_avg`, `exp_avg_sq`).
#[derive(Debug, Clone)]
pub struct OptimizerState {
    pub rule: Optimizer,
    pub weight_decay: f64,
    steps: BTreeMap<String, u64>,
    /// Slots as tensors: the tensor-op path's, and a loaded state's until the CPU path
    /// takes them over. A slot is here or in `host_slots`, never both.
    slots: BTreeMap<String, Tensor>,
    /// Slots the CPU path updates in place, as plain vectors with their parameter's shape
    /// (see [`HostStep`]).
    host_slots: BTreeMap<String, (Shape, Vec<f32>)>,
    /// Per-parameter learning-rate factors (PyTorch's parameter groups, one lr each);
    /// absent means 1. A factor of 0 freezes: no update, no slots, no weight decay.
    lr_factors: BTreeMap<String, f64>,
}

impl OptimizerState {
    pub fn new(rule: Optimizer, weight_decay: f64) -> Self {
        Self {
            rule,
            weight_decay,
            steps: BTreeMap::new(),
            slots: BTreeMap::new(),
            host_slots: BTreeMap::new(),
            lr_factors: BTreeMap::new(),
        }
    }

    /// Scales parameter `name`'s learning rate by `factor` in [`Self::step`] (0 freezes it).
    /// Not saved with the state: the run's config sets it each session.
    pub fn set_lr_factor(&mut self, name: &str, factor: f64) {
        self.lr_factors.insert(name.to_string(), factor);
    }

    /// One update of every parameter that has a gradient in `grads` (others are skipped,
    /// as PyTorch skips parameters whose `.grad` is `None`), at `lr` times its factor;
    /// frozen parameters (factor 0) are skipped too, so they stay bit-identical.
    pub fn step<'a>(
        &mut self,
        params: impl IntoIterator<Item = &'a Param>,
        grads: &GradStore,
        lr: f64,
    ) -> Result<()> {
        for p in params {
            let factor = self.lr_factors.get(&p.name).copied().unwrap_or(1.0);
            if factor == 0.0 {
                continue;
            }
            if let Some(g) = grads.get(p.var.as_tensor()) {
                self.update(&p.name, &p.var, g, lr * factor)?;
            }
        }
        Ok(())
    }

    /// One update of the parameter `name` held in `var` given its gradient `grad`.
    pub fn update(&mut self, name: &str, var: &Var, grad: &Tensor, lr: f64) -> Result<()> {
        let host = var.device().is_cpu() && var.is_contiguous();
        if host && var.dtype() == DType::F32 && grad.dtype() == DType::F32 {
            self.update_host(name, var, grad, lr)
        } else {
            self.update_tensors(name, var, grad, lr)
        }
    }

    /// The update as tensor ops (any device).
    fn update_tensors(&mut self, name: &str, var: &Var, grad: &Tensor, lr: f64) -> Result<()> {
        let step = self.steps.get(name).copied().unwrap_or(0) + 1;
        for slot in ["momentum_buffer", "exp_avg", "exp_avg_sq"] {
            let key = slot_name(name, slot);
            if let Some((shape, v)) = self.host_slots.remove(&key) {
                let t = Tensor::from_vec(v, shape, var.device())?;
                self.slots.insert(key, t);
            }
        }
        let p = var.as_tensor();
        let wd = self.weight_decay;
        let new_p = match self.rule {
            Optimizer::Sgd {
                momentum,
                dampening,
                nesterov,
            } => {
                let key = slot_name(name, "momentum_buffer");
                let s = sgd::Sgd {
                    lr,
                    weight_decay: wd,
                    momentum,
                    dampening,
                    nesterov,
                };
                let (new_p, buf) = s.update(p, grad, self.slots.get(&key))?;
                if let Some(buf) = buf {
                    self.slots.insert(key, buf);
                }
                new_p
            }
            Optimizer::Adam { betas, eps } | Optimizer::AdamW { betas, eps } => {
                let decoupled = matches!(self.rule, Optimizer::AdamW { .. });
                let (k1, k2) = (slot_name(name, "exp_avg"), slot_name(name, "exp_avg_sq"));
                let a = adam::Adam {
                    lr,
                    weight_decay: wd,
                    betas,
                    eps,
                    decoupled,
                };
                let moments = match (self.slots.get(&k1), self.slots.get(&k2)) {
                    (Some(m), Some(v)) => Some((m, v)),
                    _ => None,
                };
                let (new_p, m, v) = a.update(p, grad, moments, step)?;
                self.slots.insert(k1, m);
                self.slots.insert(k2, v);
                new_p
            }
        };
        var.set(&new_p)?;
        self.steps.insert(name.to_string(), step);
        Ok(())
    }

    /// The update on the CPU: one parallel pass over the parameter in place, its slots kept
    /// as host vectors between steps. Against the tensor ops (and an earlier version that
    /// copied parameter, gradient and slots out and back each step) it reads and writes each
    /// value once; the per-element arithmetic is the same f32 as [`sgd::Sgd::update_slice`]
    /// and [`adam::Adam::update_slice`].
    fn update_host(&mut self, name: &str, var: &Var, grad: &Tensor, lr: f64) -> Result<()> {
        let step = self.steps.get(name).copied().unwrap_or(0) + 1;
        let wd = self.weight_decay;
        let (rule, keys) = match self.rule {
            Optimizer::Sgd {
                momentum,
                dampening,
                nesterov,
            } => {
                let sgd = sgd::Sgd {
                    lr,
                    weight_decay: wd,
                    momentum,
                    dampening,
                    nesterov,
                };
                let keys = match momentum == 0.0 {
                    true => vec![],
                    false => vec![slot_name(name, "momentum_buffer")],
                };
                (HostRule::Sgd(sgd), keys)
            }
            Optimizer::Adam { betas, eps } | Optimizer::AdamW { betas, eps } => {
                let adam = adam::Adam {
                    lr,
                    weight_decay: wd,
                    betas,
                    eps,
                    decoupled: matches!(self.rule, Optimizer::AdamW { .. }),
                };
                let keys = vec![slot_name(name, "exp_avg"), slot_name(name, "exp_avg_sq")];
                (HostRule::Adam(adam, step), keys)
            }
        };
        for k in &keys {
            self.check_slot(k, var.shape())?;
        }
        let first = !keys.iter().all(|k| self.has_slot(k));
        let mut slots = Vec::with_capacity(keys.len());
        for k in &keys {
            slots.push(self.take_host_slot(k, var.elem_count())?);
        }
        let op = HostStep {
            rule,
            first,
            slots: Mutex::new(&mut slots),
        };
        let result = grad
            .contiguous()
            .and_then(|g| var.as_tensor().inplace_op2(&g, &op));
        // Put the slots back even on an error, so the state stays whole.
        let shaped = slots.into_iter().map(|v| (var.shape().clone(), v));
        self.host_slots.extend(keys.into_iter().zip(shaped));
        result?;
        self.steps.insert(name.to_string(), step);
        Ok(())
    }

    fn has_slot(&self, key: &str) -> bool {
        self.host_slots.contains_key(key) || self.slots.contains_key(key)
    }

    /// An error if slot `key` exists with another shape than its parameter's: checked for
    /// every slot before any is taken out, so a refused update leaves the state whole.
    fn check_slot(&self, key: &str, shape: &Shape) -> Result<()> {
        let dims = match (self.host_slots.get(key), self.slots.get(key)) {
            (Some((s, _)), _) => s.dims(),
            (None, Some(t)) => t.dims(),
            (None, None) => return Ok(()),
        };
        match dims == shape.dims() {
            true => Ok(()),
            false => Err(TrainError::Config(format!(
                "optimiser slot {key} is {dims:?}, its parameter {:?}",
                shape.dims()
            ))),
        }
    }

    /// Slot `key` as a host vector of `len` values (zeros if it does not exist yet), taken out
    /// of the state until the caller puts it back.
    fn take_host_slot(&mut self, key: &str, len: usize) -> Result<Vec<f32>> {
        let slot = match (self.host_slots.remove(key), self.slots.remove(key)) {
            (Some((_, v)), _) => v,
            (None, Some(t)) => t.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?,
            (None, None) => vec![0.0; len],
        };
        if slot.len() != len {
            return Err(TrainError::Config(format!(
                "optimiser slot {key} holds {} values, its parameter {len}",
                slot.len()
            )));
        }
        Ok(slot)
    }

    /// Steps taken by parameter `name` (PyTorch's `state[p]["step"]`).
    pub fn steps(&self, name: &str) -> u64 {
        self.steps.get(name).copied().unwrap_or(0)
    }

    /// The slots as tensors by name, e.g. `fc.weight.exp_avg` (the CPU path's copied out of
    /// its host vectors).
    pub fn slots(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut all = self.slots.clone();
        for (k, (shape, v)) in &self.host_slots {
            all.insert(k.clone(), Tensor::from_slice(v, shape, &Device::Cpu)?);
        }
        Ok(all)
    }

    /// Bytes held by the slots.
    pub fn bytes(&self) -> usize {
        let tensors = self.slots.values();
        let tensor_bytes: usize = tensors
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum();
        let host_bytes: usize = self.host_slots.values().map(|(_, v)| v.len() * 4).sum();
        tensor_bytes + host_bytes
    }
}

/// The CPU update rule of one step, with what it needs beyond the slots.
enum HostRule {
    Sgd(sgd::Sgd),
    /// Adam or AdamW at step `u64` (from 1).
    Adam(adam::Adam, u64),
}

/// One parameter's update as an in-place op on its storage: `slots` are its momentum
/// buffer (SGD, none without momentum) or its two moments (Adam), `first` whether they
/// were just created. Pieces of the parameter run in parallel, each through the rule's
/// `update_slice`.
struct HostStep<'a> {
    rule: HostRule,
    first: bool,
    slots: Mutex<&'a mut Vec<Vec<f32>>>,
}

/// Values per parallel piece: large enough that splitting costs nothing measurable.
const PIECE: usize = 1 << 15;

impl InplaceOp2 for HostStep<'_> {
    fn name(&self) -> &'static str {
        "optimizer-step"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let (CpuStorage::F32(p), CpuStorage::F32(g)) = (s1, s2) else {
            candle_core::bail!("optimizer step: f32 parameter and gradient only")
        };
        let (Some((p0, p1)), Some((g0, g1))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("optimizer step: contiguous parameter and gradient only")
        };
        let (p, g) = (&mut p[p0..p1], &g[g0..g1]);
        if p.len() != g.len() {
            candle_core::bail!("optimizer step: {} values, gradient {}", p.len(), g.len())
        }
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let pieces = p.par_chunks_mut(PIECE).zip(g.par_chunks(PIECE));
        match (&self.rule, slots.as_mut_slice()) {
            (HostRule::Sgd(sgd), []) => pieces.for_each(|(p, g)| {
                sgd.update_slice(p, g, None, self.first);
            }),
            (HostRule::Sgd(sgd), [buf]) => {
                pieces
                    .zip(buf.par_chunks_mut(PIECE))
                    .for_each(|((p, g), b)| sgd.update_slice(p, g, Some(b), self.first));
            }
            (HostRule::Adam(adam, step), [m, v]) => {
                let moments = m.par_chunks_mut(PIECE).zip(v.par_chunks_mut(PIECE));
                pieces.zip(moments).for_each(|((p, g), (m, v))| {
                    adam.update_slice(p, g, m, v, *step);
                });
            }
            _ => candle_core::bail!("optimizer step: wrong number of slots"),
        }
        Ok(())
    }
}

/// `x`, or zero where it is subnormal (nonzero and below `f32::MIN_POSITIVE` in size).
///
/// A moment of a weight whose gradient stays zero (a unit that never fires) shrinks every
/// step, Adam's `exp_avg` by 0.9, and reaches the subnormal range after some 800 steps;
/// x86 cores then take a slow microcode path for every operation on it. The d2l AlexNet on
/// all of Imagenette at 100 px (119 steps an epoch) spent 4.2-4.6 s an epoch in the
/// optimiser for five epochs, then 9.2, 44.6, 52.0 and 53.8 s. Stored as zero, such a
/// moment changes the update by less than `lr * 1.2e-38 / eps`, far below a weight's
/// rounding, and stays zero (at no cost) while the gradient does.
#[inline(always)]
pub(super) fn flush_subnormal(x: f32) -> f32 {
    match x.abs() < f32::MIN_POSITIVE {
        true => 0.0,
        false => x,
    }
}

fn slot_name(param: &str, slot: &str) -> String {
    format!("{param}.{slot}")
}

#[cfg(test)]
mod tests {
    //! The CPU fast path and the tensor-op path (used on CUDA) agree.

    use super::*;
    use candle_core::Device;

    fn t(v: &[f32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    #[test]
    fn host_and_tensor_paths_agree() {
        let rules = [
            Optimizer::sgd(0.0),
            Optimizer::sgd(0.9),
            Optimizer::Sgd {
                momentum: 0.9,
                dampening: 0.2,
                nesterov: false,
            },
            Optimizer::Sgd {
                momentum: 0.8,
                dampening: 0.0,
                nesterov: true,
            },
            Optimizer::adam(),
            Optimizer::adamw(),
        ];
        // 3 values, and enough for several parallel pieces with a short last one.
        let values = |len: usize, s: f32| -> Vec<f32> {
            (0..len)
                .map(|i| ((i as f32) * 0.37 + s).sin() * 2.0)
                .collect()
        };
        for (rule, len) in rules.into_iter().flat_map(|r| [(r, 3), (r, 2 * PIECE + 7)]) {
            for wd in [0.0, 0.05] {
                let (mut a, mut b) = (OptimizerState::new(rule, wd), OptimizerState::new(rule, wd));
                let start = values(len, 0.5);
                let (pa, pb) = (
                    Var::new(&start[..], &Device::Cpu).unwrap(),
                    Var::new(&start[..], &Device::Cpu).unwrap(),
                );
                for s in 0..4 {
                    let g = t(&values(len, 1.0 + s as f32));
                    a.update_host("w", &pa, &g, 0.01).unwrap();
                    b.update_tensors("w", &pb, &g, 0.01).unwrap();
                }
                let (va, vb) = (
                    pa.as_tensor().to_vec1::<f32>().unwrap(),
                    pb.as_tensor().to_vec1::<f32>().unwrap(),
                );
                for (x, y) in va.iter().zip(&vb) {
                    assert!(
                        (x - y).abs() <= 1e-6 * x.abs().max(1.0),
                        "{rule:?} wd {wd}: {x} vs {y}"
                    );
                }
                let (sa, sb) = (a.slots().unwrap(), b.slots().unwrap());
                assert_eq!(sa.keys().collect::<Vec<_>>(), sb.keys().collect::<Vec<_>>());
                for (k, t) in &sa {
                    assert_eq!(t.dims(), sb[k].dims(), "{rule:?} {k}");
                    let (x, y) = (t.to_vec1::<f32>().unwrap(), sb[k].to_vec1::<f32>().unwrap());
                    for (x, y) in x.iter().zip(&y) {
                        assert!((x - y).abs() <= 1e-6 * x.abs().max(1.0), "{rule:?} {k}");
                    }
                }
            }
        }
    }

    #[test]
    fn moments_that_fall_below_the_normal_range_are_stored_as_zero() {
        let tiny = f32::MIN_POSITIVE * 1.05; // normal; times 0.9 it is subnormal
                                             // The first step stores (1 - b1) * g in Adam's exp_avg, g in SGD's buffer.
        for (rule, g) in [(Optimizer::adam(), tiny / 0.1), (Optimizer::sgd(0.9), tiny)] {
            let mut opt = OptimizerState::new(rule, 0.0);
            let p = Var::new(&[1f32, 2.0], &Device::Cpu).unwrap();
            // A first step with gradients tiny and ordinary, then zero gradients.
            opt.update_host("w", &p, &t(&[g, 0.5]), 0.01).unwrap();
            opt.update_host("w", &p, &t(&[0.0, 0.0]), 0.01).unwrap();
            let slots = opt.slots().unwrap();
            let first = slots.keys().next().unwrap().clone();
            let m = slots[&first].to_vec1::<f32>().unwrap();
            assert_eq!(m[0], 0.0, "{rule:?}: {first} kept a subnormal {:e}", m[0]);
            assert!(m[1].is_normal(), "{rule:?}: {first} lost an ordinary value");
        }
        assert_eq!(flush_subnormal(f32::MIN_POSITIVE), f32::MIN_POSITIVE);
        assert_eq!(flush_subnormal(-f32::MIN_POSITIVE / 2.0), 0.0);
        assert_eq!(flush_subnormal(-3.0), -3.0);
    }

    #[test]
    fn lr_factors_scale_each_parameter_and_zero_freezes_it() {
        use cnn_models::{ParamKind, Stored};
        let param = |name: &str| Param {
            name: name.into(),
            var: Var::new(&[1f32, -2.0, 3.0], &Device::Cpu).unwrap(),
            kind: ParamKind::Trainable,
            stored: Stored::AsTorch,
        };
        let (half, frozen) = (param("half"), param("frozen"));
        let w = t(&[0.5, 1.5, -2.5]);
        let mut scaled = OptimizerState::new(Optimizer::sgd(0.9), 0.01);
        scaled.set_lr_factor("half", 0.5);
        scaled.set_lr_factor("frozen", 0.0);
        // Two steps, so momentum and weight decay act on the scaled rate too.
        for _ in 0..2 {
            let loss = (half.var.as_tensor().mul(&w).unwrap().sum_all().unwrap()
                + frozen.var.as_tensor().mul(&w).unwrap().sum_all().unwrap())
            .unwrap();
            scaled
                .step([&half, &frozen], &loss.backward().unwrap(), 0.2)
                .unwrap();
        }
        let mut plain = OptimizerState::new(Optimizer::sgd(0.9), 0.01);
        let reference = param("reference");
        for _ in 0..2 {
            plain
                .step([&reference], &grads_for(&reference, &w), 0.1)
                .unwrap();
        }
        let bits = |p: &Param| -> Vec<u32> {
            let v: Vec<f32> = p.var.as_tensor().to_vec1().unwrap();
            v.iter().map(|x| x.to_bits()).collect()
        };
        // 0.2 x 0.5 is exactly 0.1, so the updates agree bit for bit.
        assert_eq!(bits(&half), bits(&reference));
        assert_eq!(bits(&frozen), bits(&param("x")), "a frozen parameter moved");
        assert_eq!(scaled.steps("frozen"), 0);
        assert!(!scaled
            .slots()
            .unwrap()
            .keys()
            .any(|k| k.starts_with("frozen")));
    }

    fn grads_for(p: &Param, w: &Tensor) -> GradStore {
        p.var
            .as_tensor()
            .mul(w)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap()
    }
}
