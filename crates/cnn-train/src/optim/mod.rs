//! Optimisers with PyTorch's exact update rules (`SGD`, `Adam`, `AdamW`), their state kept as
//! named tensors so it saves to and loads from safetensors for an exact resume.

mod adam;
mod sgd;
mod state_file;

use crate::error::{Result, TrainError};
use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use cnn_models::Param;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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

/// An optimiser and its state: per parameter (by name) the step count and the slot tensors
/// PyTorch keeps (`momentum_buffer`; `exp_avg`, `exp_avg_sq`).
#[derive(Debug, Clone)]
pub struct OptimizerState {
    pub rule: Optimizer,
    pub weight_decay: f64,
    steps: BTreeMap<String, u64>,
    slots: BTreeMap<String, Tensor>,
}

impl OptimizerState {
    pub fn new(rule: Optimizer, weight_decay: f64) -> Self {
        Self {
            rule,
            weight_decay,
            steps: BTreeMap::new(),
            slots: BTreeMap::new(),
        }
    }

    /// One update of every parameter that has a gradient in `grads` (others are skipped,
    /// as PyTorch skips parameters whose `.grad` is `None`).
    pub fn step<'a>(
        &mut self,
        params: impl IntoIterator<Item = &'a Param>,
        grads: &GradStore,
        lr: f64,
    ) -> Result<()> {
        for p in params {
            if let Some(g) = grads.get(p.var.as_tensor()) {
                self.update(&p.name, &p.var, g, lr)?;
            }
        }
        Ok(())
    }

    /// One update of the parameter `name` held in `var` given its gradient `grad`.
    pub fn update(&mut self, name: &str, var: &Var, grad: &Tensor, lr: f64) -> Result<()> {
        if var.device().is_cpu() && var.dtype() == DType::F32 && grad.dtype() == DType::F32 {
            self.update_host(name, var, grad, lr)
        } else {
            self.update_tensors(name, var, grad, lr)
        }
    }

    /// The update as tensor ops (any device).
    fn update_tensors(&mut self, name: &str, var: &Var, grad: &Tensor, lr: f64) -> Result<()> {
        let step = self.steps.get(name).copied().unwrap_or(0) + 1;
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

    /// The update on host memory in one pass per tensor (CPU): about 3x fewer memory passes
    /// than the tensor ops, with the same f32 arithmetic.
    fn update_host(&mut self, name: &str, var: &Var, grad: &Tensor, lr: f64) -> Result<()> {
        let step = self.steps.get(name).copied().unwrap_or(0) + 1;
        let shape = var.shape().clone();
        let device = var.device().clone();
        let host = |t: &Tensor| t.flatten_all().and_then(|t| t.to_vec1::<f32>());
        let mut p = host(var.as_tensor())?;
        let g = host(grad)?;
        let wd = self.weight_decay;
        let to_tensor = |v: Vec<f32>| Tensor::from_vec(v, shape.clone(), &device);
        match self.rule {
            Optimizer::Sgd {
                momentum,
                dampening,
                nesterov,
            } => {
                let s = sgd::Sgd {
                    lr,
                    weight_decay: wd,
                    momentum,
                    dampening,
                    nesterov,
                };
                if momentum == 0.0 {
                    s.update_slice(&mut p, &g, None, true);
                } else {
                    let key = slot_name(name, "momentum_buffer");
                    let (mut buf, first) = match self.slots.get(&key) {
                        Some(b) => (host(b)?, false),
                        None => (vec![0.0; p.len()], true),
                    };
                    s.update_slice(&mut p, &g, Some(&mut buf), first);
                    self.slots.insert(key, to_tensor(buf)?);
                }
            }
            Optimizer::Adam { betas, eps } | Optimizer::AdamW { betas, eps } => {
                let decoupled = matches!(self.rule, Optimizer::AdamW { .. });
                let a = adam::Adam {
                    lr,
                    weight_decay: wd,
                    betas,
                    eps,
                    decoupled,
                };
                let (k1, k2) = (slot_name(name, "exp_avg"), slot_name(name, "exp_avg_sq"));
                let mut m = self
                    .slots
                    .get(&k1)
                    .map(host)
                    .transpose()?
                    .unwrap_or_else(|| vec![0.0; p.len()]);
                let mut v = self
                    .slots
                    .get(&k2)
                    .map(host)
                    .transpose()?
                    .unwrap_or_else(|| vec![0.0; p.len()]);
                a.update_slice(&mut p, &g, &mut m, &mut v, step);
                self.slots.insert(k1, to_tensor(m)?);
                self.slots.insert(k2, to_tensor(v)?);
            }
        }
        var.set(&to_tensor(p)?)?;
        self.steps.insert(name.to_string(), step);
        Ok(())
    }

    /// Steps taken by parameter `name` (PyTorch's `state[p]["step"]`).
    pub fn steps(&self, name: &str) -> u64 {
        self.steps.get(name).copied().unwrap_or(0)
    }

    /// The slot tensors by name, e.g. `fc.weight.exp_avg`.
    pub fn slots(&self) -> &BTreeMap<String, Tensor> {
        &self.slots
    }

    /// Bytes held by the slot tensors.
    pub fn bytes(&self) -> usize {
        self.slots
            .values()
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum()
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
        for rule in rules {
            for wd in [0.0, 0.05] {
                let (mut a, mut b) = (OptimizerState::new(rule, wd), OptimizerState::new(rule, wd));
                let (pa, pb) = (
                    Var::new(&[0.3f32, -1.2, 2.5][..], &Device::Cpu).unwrap(),
                    Var::new(&[0.3f32, -1.2, 2.5][..], &Device::Cpu).unwrap(),
                );
                for s in 0..4 {
                    let g = t(&[0.1 * s as f32 - 0.2, 0.7, -1.5 + s as f32]);
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
                        "{rule:?} wd {wd}: {va:?} vs {vb:?}"
                    );
                }
                assert_eq!(
                    a.slots.keys().collect::<Vec<_>>(),
                    b.slots.keys().collect::<Vec<_>>()
                );
            }
        }
    }
}
