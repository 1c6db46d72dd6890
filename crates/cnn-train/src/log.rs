//! The assignment's log lines, byte for byte in its format.

use crate::memory::{mb, Memory};
use crate::metrics::EpochRecord;

/// `Total number of images for training: 10400`
pub fn total_images(n: usize) -> String {
    format!("Total number of images for training: {n}")
}

/// `[Epoch 1, Batch 100] loss: 2.12258493` (mean loss of the batches since the last such line).
pub fn batch_line(epoch: usize, batch: usize, loss: f64) -> String {
    format!("[Epoch {epoch}, Batch {batch}] loss: {loss:.8}")
}

/// `Epoch 1 loss: 2.00081805, train accuracy: 35.271%, test accuracy: 33.935%`
pub fn epoch_line(r: &EpochRecord) -> String {
    format!(
        "Epoch {} loss: {:.8}, train accuracy: {:.3}%, test accuracy: {:.3}%",
        r.epoch,
        r.train_loss,
        100.0 * r.train_accuracy,
        100.0 * r.test_accuracy
    )
}

/// The memory line: on CUDA the assignment's `CUDA memory allocated: N MB`, measured (the
/// tensor bytes held at the epoch's end, as `torch.cuda.memory_allocated`) where the device
/// allocates from a memory pool, else parameters + gradients + optimiser state by
/// arithmetic (and says so), then the epoch's tensor peak and the device's peak use; on CPU
/// the tensor bytes and the process's peak resident memory.
pub fn memory_line(m: &Memory, cuda: bool) -> String {
    let tensors = mb(m.tensors_bytes());
    if cuda {
        let mut line = match m.device_tensor_bytes {
            Some(held) => format!("CUDA memory allocated: {:.0} MB", mb(held)),
            None => format!(
                "CUDA memory allocated: {tensors:.0} MB (parameters, gradients, optimiser state)"
            ),
        };
        if let Some(peak) = m.device_tensor_peak_bytes {
            line.push_str(&format!("; epoch peak allocated: {:.0} MB", mb(peak)));
        }
        if let (Some(peak), Some(total)) = (m.device_peak_bytes, m.device_total_bytes) {
            line.push_str(&format!(
                " (device in use, peak: {:.0} MB of {:.0} MB)",
                mb(peak),
                mb(total)
            ));
        }
        line
    } else {
        let rss = m
            .peak_rss_bytes
            .map_or("unknown".to_string(), |b| format!("{:.0} MB", mb(b)));
        format!("CPU memory allocated: {tensors:.0} MB (parameters, gradients, optimiser state); peak resident: {rss}")
    }
}
