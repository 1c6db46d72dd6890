//! A layer table like torchsummary prints: per layer its name, type, output shape and
//! parameter count; totals, parameter memory and an activation-memory estimate.

use crate::error::ModelError;
use crate::model::Model;
use crate::pass::{ConvLayer, LayerRecord, Pass};
use candle_core::{DType, Tensor};
use std::fmt;

const MIB: f64 = 1024.0 * 1024.0;

/// What `Model::summary` measured by tracing one forward pass.
#[derive(Debug, Clone)]
pub struct Summary {
    pub arch: String,
    /// `(batch, 3, height, width)` the estimate is for.
    pub input_shape: [usize; 4],
    /// One row per module the forward pass went through, in order.
    pub layers: Vec<LayerRecord>,
    /// Every convolution's geometry, in the order the pass ran them.
    pub convs: Vec<ConvLayer>,
    /// Learned parameters (BatchNorm running statistics excluded, as torchsummary does).
    pub trainable_params: usize,
    /// Non-learned tensors (BatchNorm running statistics).
    pub buffer_values: usize,
    /// Bytes of the learned parameters (f32).
    pub param_bytes: usize,
    /// Bytes of the input batch.
    pub input_bytes: usize,
    /// torchsummary's "forward/backward pass size": every layer's output, twice (value and
    /// gradient), for the whole batch. An estimate: candle keeps other temporaries too.
    pub activation_bytes: usize,
}

impl Model {
    /// Traces one eval-mode forward pass of a `(1, 3, size, size)` zero image and sizes the
    /// activations for `batch_size` images.
    pub fn summary(&self, image_size: usize, batch_size: usize) -> Result<Summary, ModelError> {
        let x = Tensor::zeros((1, 3, image_size, image_size), DType::F32, self.device())?;
        let pass = Pass::tracing();
        self.forward(&x, &pass)?;
        let (layers, convs) = pass.take_trace();
        let outputs: usize = layers
            .iter()
            .map(|l| l.output_shape.iter().product::<usize>())
            .sum();
        let trainable_params = self.params().trainable_count();
        Ok(Summary {
            arch: self.spec().name.to_string(),
            input_shape: [batch_size, 3, image_size, image_size],
            layers,
            convs,
            trainable_params,
            buffer_values: self.params().total_count() - trainable_params,
            param_bytes: trainable_params * 4,
            input_bytes: batch_size * 3 * image_size * image_size * 4,
            activation_bytes: 2 * outputs * 4 * batch_size,
        })
    }
}

/// `1234567` -> `1,234,567`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rule = "-".repeat(88);
        writeln!(f, "{} for input {:?}", self.arch, self.input_shape)?;
        writeln!(f, "{rule}")?;
        writeln!(
            f,
            "{:>22} {:<24} {:>24} {:>15}",
            "Layer (type)", "Module", "Output Shape", "Param #"
        )?;
        writeln!(f, "{}", "=".repeat(88))?;
        let mut counts = std::collections::HashMap::<&str, usize>::new();
        for l in &self.layers {
            let n = counts.entry(l.kind).or_default();
            *n += 1;
            let shape = format!(
                "[-1, {}]",
                l.output_shape
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let kind = format!("{}-{}", l.kind, n);
            writeln!(
                f,
                "{kind:>22} {:<24} {shape:>24} {:>15}",
                l.name,
                thousands(l.params)
            )?;
        }
        writeln!(f, "{}", "=".repeat(88))?;
        writeln!(f, "Total params: {}", thousands(self.trainable_params))?;
        writeln!(f, "Trainable params: {}", thousands(self.trainable_params))?;
        writeln!(
            f,
            "Non-trainable params: 0 (plus {} BatchNorm running statistics)",
            thousands(self.buffer_values)
        )?;
        writeln!(f, "{rule}")?;
        let input = self.input_bytes as f64 / MIB;
        let acts = self.activation_bytes as f64 / MIB;
        let params = self.param_bytes as f64 / MIB;
        writeln!(f, "Input size (MB): {input:.2}")?;
        writeln!(f, "Forward/backward pass size (MB): {acts:.2}")?;
        writeln!(f, "Params size (MB): {params:.2}")?;
        writeln!(f, "Estimated Total Size (MB): {:.2}", input + acts + params)?;
        write!(f, "{rule}")
    }
}
