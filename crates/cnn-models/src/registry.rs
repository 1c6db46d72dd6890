//! Architecture names and their builders: adding a network is one new file and one line here.

use crate::error::ModelError;
use crate::network::ArchSpec;
use crate::{alexnet, resnet};

/// Every architecture the crate knows.
pub const ARCHITECTURES: &[ArchSpec] = &[
    alexnet::ALEXNET,
    alexnet::ALEXNET_D2L,
    resnet::RESNET18,
    resnet::RESNET34,
];

/// The architecture called `name` (`_` and `-` are interchangeable, case is ignored).
pub fn find_arch(name: &str) -> std::result::Result<&'static ArchSpec, ModelError> {
    let wanted = name.to_ascii_lowercase().replace('_', "-");
    ARCHITECTURES
        .iter()
        .find(|a| a.name == wanted)
        .ok_or_else(|| ModelError::UnknownArch {
            name: name.to_string(),
            known: ARCHITECTURES
                .iter()
                .map(|a| a.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}
