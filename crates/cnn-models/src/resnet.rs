//! ResNet18 and ResNet34 (basic blocks) in torchvision's layout, names and initialisation.

use crate::init::Init;
use crate::layers::{self, BatchNorm2d, Builder, Conv2d, Linear};
use crate::network::{ArchSpec, Network};
use crate::pass::Pass;
use candle_core::{Result, Tensor};

/// torchvision's `resnet18`: basic blocks [2, 2, 2, 2].
pub const RESNET18: ArchSpec = ArchSpec {
    name: "resnet18",
    description: "ResNet-18 as torchvision builds it (11.2 M parameters at 10 classes)",
    min_image_size: 1,
    cam_layer: "layer4.1",
    build: |b, classes| build(b, classes, [2, 2, 2, 2]),
};

/// torchvision's `resnet34`: basic blocks [3, 4, 6, 3].
pub const RESNET34: ArchSpec = ArchSpec {
    name: "resnet34",
    description: "ResNet-34 as torchvision builds it (21.3 M parameters at 10 classes)",
    min_image_size: 1,
    cam_layer: "layer4.2",
    build: |b, classes| build(b, classes, [3, 4, 6, 3]),
};

/// Two 3x3 convs with a shortcut; the shortcut is a strided 1x1 conv + BN when the shape changes.
struct BasicBlock {
    name: String,
    conv1: Conv2d,
    bn1: BatchNorm2d,
    conv2: Conv2d,
    bn2: BatchNorm2d,
    downsample: Option<(Conv2d, BatchNorm2d)>,
}

/// `kaiming_normal_(mode="fan_out", nonlinearity="relu")`, as torchvision's ResNet inits convs.
fn conv(
    b: &mut Builder,
    name: &str,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    padding: usize,
) -> Result<Conv2d> {
    b.conv2d(
        name,
        cin,
        cout,
        k,
        stride,
        padding,
        false,
        Init::KaimingNormalFanOut {
            fan_out: cout * k * k,
        },
    )
}

impl BasicBlock {
    fn new(b: &mut Builder, name: String, cin: usize, cout: usize, stride: usize) -> Result<Self> {
        let conv1 = conv(b, &format!("{name}.conv1"), cin, cout, 3, stride, 1)?;
        let bn1 = b.batch_norm2d(&format!("{name}.bn1"), cout)?;
        let conv2 = conv(b, &format!("{name}.conv2"), cout, cout, 3, 1, 1)?;
        let bn2 = b.batch_norm2d(&format!("{name}.bn2"), cout)?;
        let downsample = if stride != 1 || cin != cout {
            let c = conv(b, &format!("{name}.downsample.0"), cin, cout, 1, stride, 0)?;
            Some((c, b.batch_norm2d(&format!("{name}.downsample.1"), cout)?))
        } else {
            None
        };
        Ok(Self {
            name,
            conv1,
            bn1,
            conv2,
            bn2,
            downsample,
        })
    }

    fn forward(&self, x: &Tensor, pass: &Pass) -> Result<Tensor> {
        let relu_name = format!("{}.relu", self.name);
        let y = self
            .bn1
            .forward_relu(&self.conv1.forward(x, pass)?, pass, &relu_name)?;
        let z = self.conv2.forward(&y, pass)?;
        // bn2 runs fused with the residual add and ReLU below; its trace row goes here, in
        // PyTorch's order (before the shortcut's layers).
        self.bn2.record(&z, pass);
        let shortcut = match &self.downsample {
            Some((conv, bn)) => bn.forward(&conv.forward(x, pass)?, pass)?,
            None => x.clone(),
        };
        let y = self.bn2.forward_add_relu(&z, &shortcut, pass, &relu_name)?;
        pass.record(&self.name, "BasicBlock", &y, 0);
        pass.through_probe(&self.name, y)
    }
}

/// A ResNet with basic blocks: stem, four stages of blocks, global average pool, classifier.
pub struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm2d,
    blocks: Vec<BasicBlock>,
    fc: Linear,
}

fn build(
    b: &mut Builder,
    classes: usize,
    blocks_per_stage: [usize; 4],
) -> Result<Box<dyn Network>> {
    let conv1 = conv(b, "conv1", 3, 64, 7, 2, 3)?;
    let bn1 = b.batch_norm2d("bn1", 64)?;
    let mut blocks = Vec::new();
    let mut cin = 64;
    for (stage, &count) in blocks_per_stage.iter().enumerate() {
        let cout = 64 << stage;
        for i in 0..count {
            let stride = if stage > 0 && i == 0 { 2 } else { 1 };
            blocks.push(BasicBlock::new(
                b,
                format!("layer{}.{i}", stage + 1),
                cin,
                cout,
                stride,
            )?);
            cin = cout;
        }
    }
    let fc = b.linear("fc", 512, classes)?;
    Ok(Box::new(ResNet {
        conv1,
        bn1,
        blocks,
        fc,
    }))
}

impl Network for ResNet {
    fn forward(&self, x: &Tensor, pass: &Pass) -> Result<Tensor> {
        let x = self
            .bn1
            .forward_relu(&self.conv1.forward(x, pass)?, pass, "relu")?;
        let mut x = layers::max_pool2d(&x, 3, 2, 1, "maxpool", pass)?;
        for block in &self.blocks {
            x = block.forward(&x, pass)?;
        }
        let x = layers::adaptive_avg_pool2d(&x, 1, 1, "avgpool", pass)?;
        let x = x.flatten_from(1)?; // torch.flatten: a function, not a module
        self.fc.forward(&x, pass)
    }
}
