//! One forward pass's settings: train or eval mode, the dropout seed, and optional recorders
//! of each layer's output shape (for the layer summary) or value (for precision checks), or
//! a probe on one layer's output (for Grad-CAM's gradient with respect to it).

use candle_core::{Tensor, Var};
use std::cell::RefCell;

/// Train mode uses batch statistics and dropout; eval mode running statistics and no dropout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// One row of the layer summary: a module's name, type, output shape and own parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerRecord {
    /// torchvision's module path, e.g. `layer1.0.conv1`.
    pub name: String,
    /// Module type, e.g. `Conv2d`.
    pub kind: &'static str,
    /// Output shape of one sample (batch dimension left out).
    pub output_shape: Vec<usize>,
    /// Parameters held directly by this module (not its children).
    pub params: usize,
}

/// One convolution's geometry as a traced pass ran it (see [`crate::Summary::convs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvLayer {
    /// torchvision's module path, e.g. `layer2.0.downsample.0`.
    pub name: String,
    /// Channels, height and width of one input image.
    pub input: [usize; 3],
    pub out_channels: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    pub stride: usize,
    pub padding: usize,
}

/// One layer's output as a pass kept it (see [`Pass::keeping_outputs`]).
#[derive(Debug, Clone)]
pub struct LayerOutput {
    /// torchvision's module path, e.g. `layer1.0.relu`.
    pub name: String,
    /// Module type, e.g. `ReLU`.
    pub kind: &'static str,
    /// The output, detached from the graph.
    pub output: Tensor,
}

/// Settings of one forward pass.
pub struct Pass {
    pub mode: Mode,
    /// Parameters enter the pass detached, so candle keeps no graph and frees each
    /// activation once the next layer has used it (inference; no gradients possible).
    pub no_grad: bool,
    /// Seed of this pass's dropout masks (each dropout layer mixes in its own id).
    pub dropout_seed: u64,
    trace: Option<RefCell<Vec<LayerRecord>>>,
    convs: Option<RefCell<Vec<ConvLayer>>>,
    outputs: Option<RefCell<Vec<LayerOutput>>>,
    probe: Option<Probe>,
}

/// One layer's output followed through the rest of the pass: candle's backward keeps
/// gradients of variables only, so the output continues as `output + zeros`, the zeros a
/// [`Var`] whose gradient is the gradient with respect to the output.
struct Probe {
    layer: String,
    /// The output (detached) and the zeros added to it, once the layer has run.
    taken: RefCell<Option<(Tensor, Var)>>,
}

impl Pass {
    /// Eval mode: running statistics, no dropout (gradients still flow to the parameters).
    pub fn eval() -> Self {
        Self {
            mode: Mode::Eval,
            no_grad: false,
            dropout_seed: 0,
            trace: None,
            convs: None,
            outputs: None,
            probe: None,
        }
    }

    /// Eval mode without gradients: the pass for evaluating and predicting, holding one
    /// layer's activations at a time instead of the whole graph's.
    pub fn infer() -> Self {
        Self {
            no_grad: true,
            ..Self::eval()
        }
    }

    /// Train mode with dropout masks drawn from `dropout_seed`.
    pub fn train(dropout_seed: u64) -> Self {
        Self {
            mode: Mode::Train,
            no_grad: false,
            dropout_seed,
            trace: None,
            convs: None,
            outputs: None,
            probe: None,
        }
    }

    /// This pass keeping every layer's output (in the order the layer summary lists them),
    /// to read back with [`Self::take_outputs`]. It holds them all until then: meant for
    /// checks on small inputs, such as where two passes' ReLUs decide differently.
    pub fn keeping_outputs(self) -> Self {
        Self {
            outputs: Some(RefCell::new(Vec::new())),
            ..self
        }
    }

    /// The outputs kept so far (none unless [`Self::keeping_outputs`]), leaving none.
    pub fn take_outputs(&self) -> Vec<LayerOutput> {
        self.outputs.as_ref().map(RefCell::take).unwrap_or_default()
    }

    /// This pass probing the output of the module `layer` (torchvision's path, e.g.
    /// `layer4.1`): read it and its gradient back with [`Self::take_probe`] after a backward
    /// pass. With [`Self::infer`] the probe is the graph's only variable, so a backward pass
    /// runs through the layers after it and no further.
    pub(crate) fn probing(self, layer: &str) -> Self {
        Self {
            probe: Some(Probe {
                layer: layer.to_string(),
                taken: RefCell::new(None),
            }),
            ..self
        }
    }

    /// The probed layer's output (detached) and the variable whose gradient is the gradient
    /// with respect to it; `None` when the pass did not run that layer.
    pub(crate) fn take_probe(&self) -> Option<(Tensor, Var)> {
        self.probe.as_ref().and_then(|p| p.taken.take())
    }

    /// `output` of module `name` as the rest of the pass uses it: itself, or, for the probed
    /// layer, `output + zeros` with the zeros a variable (see [`Probe`]).
    pub(crate) fn through_probe(&self, name: &str, output: Tensor) -> candle_core::Result<Tensor> {
        let Some(probe) = self.probe.as_ref().filter(|p| p.layer == name) else {
            return Ok(output);
        };
        let zeros = Var::zeros(output.shape(), output.dtype(), output.device())?;
        let followed = (&output + zeros.as_tensor())?;
        *probe.taken.borrow_mut() = Some((output.detach(), zeros));
        Ok(followed)
    }

    /// An eval pass that records every layer's output shape.
    pub(crate) fn tracing() -> Self {
        Self {
            mode: Mode::Eval,
            no_grad: true,
            dropout_seed: 0,
            trace: Some(RefCell::new(Vec::new())),
            convs: Some(RefCell::new(Vec::new())),
            outputs: None,
            probe: None,
        }
    }

    pub fn is_train(&self) -> bool {
        self.mode == Mode::Train
    }

    /// `var` as this pass uses it: detached when the pass keeps no graph.
    pub(crate) fn param(&self, var: &candle_core::Var) -> Tensor {
        if self.no_grad {
            var.as_tensor().detach()
        } else {
            var.as_tensor().clone()
        }
    }

    /// Note a layer's output when tracing or keeping outputs; a no-op otherwise.
    pub(crate) fn record(&self, name: &str, kind: &'static str, output: &Tensor, params: usize) {
        if let Some(outputs) = &self.outputs {
            outputs.borrow_mut().push(LayerOutput {
                name: name.to_string(),
                kind,
                output: output.detach(),
            });
        }
        if let Some(trace) = &self.trace {
            trace.borrow_mut().push(LayerRecord {
                name: name.to_string(),
                kind,
                output_shape: output.dims().iter().skip(1).copied().collect(),
                params,
            });
        }
    }

    /// Note a convolution's geometry when tracing; a no-op otherwise. `kernel` is its
    /// height and width.
    pub(crate) fn record_conv(
        &self,
        name: &str,
        input: &Tensor,
        (out_channels, kernel): (usize, [usize; 2]),
        (stride, padding): (usize, usize),
    ) {
        if let (Some(convs), &[_, c, h, w]) = (&self.convs, input.dims()) {
            convs.borrow_mut().push(ConvLayer {
                name: name.to_string(),
                input: [c, h, w],
                out_channels,
                kernel,
                stride,
                padding,
            });
        }
    }

    /// The layers and the convolutions a tracing pass recorded.
    pub(crate) fn take_trace(self) -> (Vec<LayerRecord>, Vec<ConvLayer>) {
        let layers = self.trace.map(RefCell::into_inner).unwrap_or_default();
        (
            layers,
            self.convs.map(RefCell::into_inner).unwrap_or_default(),
        )
    }
}
