//! Weight initialisation from the project's own seeded generator, with torchvision's
//! distributions: same seed, same weights, on any machine.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// How a weight tensor is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`: PyTorch's default for `Conv2d` and `Linear`
    /// weights (kaiming_uniform with a = sqrt(5)) and biases.
    TorchDefault { fan_in: usize },
    /// `N(0, 2/fan_out)`: `kaiming_normal_(mode="fan_out", nonlinearity="relu")`, which
    /// torchvision's ResNet uses for every convolution.
    KaimingNormalFanOut { fan_out: usize },
    /// Every element equal to the value (BatchNorm: weight 1, bias 0, running var 1).
    Constant(f32),
}

/// A seeded stream of initial values (ChaCha8: portable and reproducible across platforms).
pub struct InitRng(ChaCha8Rng);

impl InitRng {
    pub fn new(seed: u64) -> Self {
        Self(ChaCha8Rng::seed_from_u64(seed))
    }

    /// `len` values drawn from `init`.
    pub fn draw(&mut self, init: Init, len: usize) -> Vec<f32> {
        match init {
            Init::TorchDefault { fan_in } => {
                let bound = 1.0 / (fan_in as f64).sqrt();
                (0..len)
                    .map(|_| self.0.random_range(-bound..bound) as f32)
                    .collect()
            }
            Init::KaimingNormalFanOut { fan_out } => {
                let std = (2.0 / fan_out as f64).sqrt();
                (0..len)
                    .map(|_| {
                        let z: f64 = StandardNormal.sample(&mut self.0);
                        (z * std) as f32
                    })
                    .collect()
            }
            Init::Constant(v) => vec![v; len],
        }
    }
}
