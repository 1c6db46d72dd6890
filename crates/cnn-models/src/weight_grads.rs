//! Weight gradients that the convolution and linear ops hand over beside candle's gradient
//! store, to be moved into it after `backward`: stock candle's store adds every gradient it
//! receives into a zeroed tensor of the parameter's size, two passes over every weight per
//! step. The workspace's patched candle-core (vendor/candle-core/PATCHED.md) now stores a
//! custom op's first gradient as it is, for every argument, which makes this collector
//! redundant while the patch is in; it stays so that dropping the patch (on a candle
//! upgrade) does not bring the weights' zero-and-add back.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor};
use std::sync::{Arc, Mutex, MutexGuard};

/// Collects weight gradients during one backward pass (see [`crate::Pass::collecting`]).
///
/// Stock candle's backward gives each op's gradient to `GradStore::or_insert`, which creates a
/// zero tensor the parameter's size, then adds the gradient into it: a memset and a
/// three-stream add over every weight each step, for a result equal to the gradient
/// itself. On these 2 cores that took ~10 % of ResNet18's training step at 32 px and
/// ~15 % of AlexNet's at 64 px (docs/PERFORMANCE.md, session 5). The ops of a collecting pass give
/// their weights' gradients here instead, and [`Self::move_into`] puts them in the store.
#[derive(Clone, Default)]
pub(crate) struct WeightGrads(Arc<Collected>);

/// The gradients waiting to be moved, shared by the pass and its ops.
#[derive(Default)]
struct Collected {
    waiting: Mutex<Vec<(Tensor, Tensor)>>,
}

impl Drop for Collected {
    /// Gradients still here when the pass and its graph are gone were never moved into a
    /// store: most likely `loss.backward()` was called instead of `Pass::backward`, and
    /// those weights got no gradient. An optimiser skips parameters without one, so say so.
    fn drop(&mut self) {
        let left = self.waiting.get_mut().map_or(0, |v| v.len());
        if left > 0 {
            eprintln!(
                "cnn-models: {left} weight gradients of a collecting pass were never moved into \
                 a gradient store; take gradients with Pass::backward, not loss.backward()"
            );
        }
    }
}

impl WeightGrads {
    /// Files `grad` as (a part of) the gradient of `weight`.
    pub(crate) fn push(&self, weight: &Tensor, grad: Tensor) {
        self.lock().push((weight.clone(), grad));
    }

    /// Moves every collected gradient into `grads`, adding it to what the store already
    /// holds for the same weight (a weight used twice in a pass, or one candle also saw),
    /// as candle's own backward would. Leaves the collector empty.
    pub(crate) fn move_into(&self, grads: &mut GradStore) -> Result<()> {
        let collected = std::mem::take(&mut *self.lock());
        for (weight, grad) in collected {
            let sum = match grads.remove(&weight) {
                Some(earlier) => (earlier + grad)?,
                None => grad,
            };
            grads.insert(&weight, sum);
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(Tensor, Tensor)>> {
        // A panic elsewhere while holding the lock leaves a plain list: still usable.
        let waiting = self.0.waiting.lock();
        waiting.unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn gradients_of_one_weight_add_up_with_what_the_store_holds() {
        let dev = Device::Cpu;
        let w = Var::new(&[1f32, 2.0], &dev).unwrap();
        let other = Var::new(&[5f32], &dev).unwrap();
        // The store already holds a gradient for `w` (from candle's own backward).
        let mut grads = (w.as_tensor() * 3.0)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let collected = WeightGrads::default();
        collected.push(w.as_tensor(), Tensor::new(&[10f32, 20.0], &dev).unwrap());
        collected.push(w.as_tensor(), Tensor::new(&[100f32, 200.0], &dev).unwrap());
        collected.push(other.as_tensor(), Tensor::new(&[7f32], &dev).unwrap());
        assert_eq!(collected.lock().len(), 3);
        collected.move_into(&mut grads).unwrap();
        assert!(collected.lock().is_empty());
        let got = |v: &Var| grads.get(v.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(got(&w), [113.0, 223.0]);
        assert_eq!(got(&other), [7.0]);
    }
}
