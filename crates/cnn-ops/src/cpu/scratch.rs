//! A pool of scratch buffers that the CPU ops lend out and take back, per element type.

use super::Element;

/// Most idle buffers kept per type; the rest are freed.
const POOL_SLOTS: usize = 8;

/// A scratch buffer of `len` elements with stale contents, reused from earlier calls when
/// one is idle. Reuse matters on this kind of VM: a freshly mapped page costs ~15x more to
/// first touch than a reused one. Hand it back with [`give_back`].
pub(crate) fn lend<T: Element>(len: usize) -> Vec<T> {
    let mut pool = T::pool().lock().unwrap_or_else(|e| e.into_inner());
    // The smallest idle buffer that fits, else the largest (grown below).
    let fit = (0..pool.len())
        .filter(|&i| pool[i].len() >= len)
        .min_by_key(|&i| pool[i].len());
    let pick = fit.or_else(|| (0..pool.len()).max_by_key(|&i| pool[i].len()));
    let mut buf = pick.map(|i| pool.swap_remove(i)).unwrap_or_default();
    drop(pool);
    if buf.len() < len {
        buf.resize(len, T::ZERO);
    }
    buf
}

/// Returns a buffer from [`lend`] to the pool.
pub(crate) fn give_back<T: Element>(buf: Vec<T>) {
    let mut pool = T::pool().lock().unwrap_or_else(|e| e.into_inner());
    if pool.len() < POOL_SLOTS {
        pool.push(buf);
    }
}
