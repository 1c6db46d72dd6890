//! Portable seeded randomness: a ChaCha8 stream per (seed, purpose, epoch, item), so results never depend on threads or platform.
//!
//! Values are drawn straight from the ChaCha8 output words (not through `rand`'s distributions,
//! whose algorithms may change between versions), so a seed gives the same numbers forever.

use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What a stream is used for; part of the key so that streams never overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub(crate) enum Purpose {
    Shuffle = 1,
    Augment = 2,
    Split = 3,
    Synthetic = 4,
}

/// A deterministic random stream.
pub(crate) struct Stream(ChaCha8Rng);

impl Stream {
    /// The stream for `(seed, purpose, a, b)`; every distinct key gives an independent stream.
    pub(crate) fn new(seed: u64, purpose: Purpose, a: u64, b: u64) -> Self {
        let mut key = [0u8; 32];
        key[0..8].copy_from_slice(&seed.to_le_bytes());
        key[8..16].copy_from_slice(&(purpose as u64).to_le_bytes());
        key[16..24].copy_from_slice(&a.to_le_bytes());
        key[24..32].copy_from_slice(&b.to_le_bytes());
        Stream(ChaCha8Rng::from_seed(key))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `[0, 1)` with 53 bits.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub(crate) fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform integer in `[0, n)` (`n > 0`), unbiased (Lemire's widening multiply with rejection).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// A standard normal draw (Box-Muller).
    pub(crate) fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit(); // (0, 1]
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Fisher-Yates shuffle.
    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut s = Stream::new(7, Purpose::Shuffle, 1, 2);
                move |_| s.next_u64()
            })
            .collect();
        let mut s = Stream::new(7, Purpose::Shuffle, 1, 2);
        let b: Vec<u64> = (0..4).map(|_| s.next_u64()).collect();
        assert_eq!(a, b);
        let mut t = Stream::new(7, Purpose::Shuffle, 2, 1);
        assert_ne!(a[0], t.next_u64());
    }

    #[test]
    fn below_and_unit_stay_in_range() {
        let mut s = Stream::new(1, Purpose::Augment, 0, 0);
        let mut seen = [0usize; 3];
        for _ in 0..3000 {
            seen[s.below(3) as usize] += 1;
            let u = s.unit();
            assert!((0.0..1.0).contains(&u));
        }
        assert!(seen.iter().all(|&c| c > 800), "{seen:?}");
    }
}
