//! AlexNet in two layouts: torchvision's (`alexnet`) and the d2l.ai one the assignment's
//! memory figures fit (`alexnet-d2l`), each under its PyTorch tensor names.

use crate::init::Init;
use crate::layers::{self, Builder, Conv2d, Linear};
use crate::network::{ArchSpec, Network};
use crate::pass::Pass;
use candle_core::{Result, Tensor};

/// torchvision's `alexnet`: 64-192-384-256-256 convs, 6x6 adaptive pool, 9216-4096-4096-N.
pub const ALEXNET: ArchSpec = ArchSpec {
    name: "alexnet",
    description: "AlexNet as torchvision builds it (57.0 M parameters at 10 classes)",
    min_image_size: 63,
    cam_layer: "features.11",
    build: build_torchvision,
};

/// The d2l.ai AlexNet: 96-256-384-384-256 convs, 6400-4096-4096-N (46.8 M parameters).
pub const ALEXNET_D2L: ArchSpec = ArchSpec {
    name: "alexnet-d2l",
    description:
        "AlexNet as d2l.ai builds it, the course's variant (46.8 M parameters at 10 classes)",
    min_image_size: 65,
    cam_layer: "11",
    build: build_d2l,
};

/// Where the classifier's input comes from and how wide it is.
struct Head {
    /// Side of the adaptive average pool before flattening (6 for torchvision, 5 for d2l).
    pool: usize,
    /// Module name of that pool in the summary.
    pool_name: &'static str,
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
    /// Module names (torchvision index) of the two dropouts and ReLUs, in order.
    names: [&'static str; 4],
}

/// Both layouts: five convs each followed by ReLU, max-pools after conv 1, 2 and 5.
pub struct AlexNet {
    convs: [Conv2d; 5],
    /// Module names of the ReLU after each conv and of the three pools.
    relu_names: [&'static str; 5],
    pool_names: [&'static str; 3],
    head: Head,
    /// Dropout before each hidden Linear (torchvision) or after it (d2l).
    dropout_first: bool,
    /// Module name of the `nn.Flatten` (d2l has one; torchvision calls `torch.flatten`).
    flatten_name: Option<&'static str>,
}

fn conv(
    b: &mut Builder,
    name: &str,
    cin: usize,
    cout: usize,
    k: usize,
    s: usize,
    p: usize,
) -> Result<Conv2d> {
    b.conv2d(
        name,
        cin,
        cout,
        k,
        s,
        p,
        true,
        Init::TorchDefault {
            fan_in: cin * k * k,
        },
    )
}

fn build_torchvision(b: &mut Builder, classes: usize) -> Result<Box<dyn Network>> {
    let convs = [
        conv(b, "features.0", 3, 64, 11, 4, 2)?,
        conv(b, "features.3", 64, 192, 5, 1, 2)?,
        conv(b, "features.6", 192, 384, 3, 1, 1)?,
        conv(b, "features.8", 384, 256, 3, 1, 1)?,
        conv(b, "features.10", 256, 256, 3, 1, 1)?,
    ];
    let head = Head {
        pool: 6,
        pool_name: "avgpool",
        fc1: b.linear("classifier.1", 256 * 6 * 6, 4096)?,
        fc2: b.linear("classifier.4", 4096, 4096)?,
        fc3: b.linear("classifier.6", 4096, classes)?,
        names: [
            "classifier.0",
            "classifier.2",
            "classifier.3",
            "classifier.5",
        ],
    };
    Ok(Box::new(AlexNet {
        convs,
        relu_names: [
            "features.1",
            "features.4",
            "features.7",
            "features.9",
            "features.11",
        ],
        pool_names: ["features.2", "features.5", "features.12"],
        head,
        dropout_first: true,
        flatten_name: None,
    }))
}

fn build_d2l(b: &mut Builder, classes: usize) -> Result<Box<dyn Network>> {
    let convs = [
        conv(b, "0", 3, 96, 11, 4, 1)?,
        conv(b, "3", 96, 256, 5, 1, 2)?,
        conv(b, "6", 256, 384, 3, 1, 1)?,
        conv(b, "8", 384, 384, 3, 1, 1)?,
        conv(b, "10", 384, 256, 3, 1, 1)?,
    ];
    // d2l flattens a 5x5 map, which only a 224 input gives; the adaptive pool (a no-op at
    // 224) lets the same weights run at other sizes.
    let head = Head {
        pool: 5,
        pool_name: "avgpool",
        fc1: b.linear("14", 256 * 5 * 5, 4096)?,
        fc2: b.linear("17", 4096, 4096)?,
        fc3: b.linear("20", 4096, classes)?,
        names: ["15", "16", "18", "19"],
    };
    Ok(Box::new(AlexNet {
        convs,
        relu_names: ["1", "4", "7", "9", "11"],
        pool_names: ["2", "5", "12"],
        head,
        dropout_first: false,
        flatten_name: Some("13"),
    }))
}

impl Network for AlexNet {
    fn forward(&self, x: &Tensor, pass: &Pass) -> Result<Tensor> {
        let mut x = x.clone();
        for (i, conv) in self.convs.iter().enumerate() {
            x = layers::relu(&conv.forward(&x, pass)?, self.relu_names[i], pass)?;
            let pool = match i {
                0 => Some(0),
                1 => Some(1),
                4 => Some(2),
                _ => None,
            };
            if let Some(p) = pool {
                x = layers::max_pool2d(&x, 3, 2, 0, self.pool_names[p], pass)?;
            }
        }
        let h = &self.head;
        x = layers::adaptive_avg_pool2d(&x, h.pool, h.pool, h.pool_name, pass)?;
        x = x.flatten_from(1)?;
        if let Some(name) = self.flatten_name {
            pass.record(name, "Flatten", &x, 0);
        }
        let [a, b, c, d] = h.names;
        if self.dropout_first {
            // torchvision: Dropout, Linear, ReLU, Dropout, Linear, ReLU, Linear
            x = layers::dropout(&x, 0.5, 0, a, pass)?;
            x = layers::relu(&h.fc1.forward(&x, pass)?, b, pass)?;
            x = layers::dropout(&x, 0.5, 1, c, pass)?;
            x = layers::relu(&h.fc2.forward(&x, pass)?, d, pass)?;
        } else {
            // d2l: Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear
            x = layers::relu(&h.fc1.forward(&x, pass)?, a, pass)?;
            x = layers::dropout(&x, 0.5, 0, b, pass)?;
            x = layers::relu(&h.fc2.forward(&x, pass)?, c, pass)?;
            x = layers::dropout(&x, 0.5, 1, d, pass)?;
        }
        h.fc3.forward(&x, pass)
    }
}
