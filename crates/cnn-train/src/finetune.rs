//! Fine-tuning settings applied to a run: the initial weights read from the config's file,
//! and the backbone's learning-rate factor set on the optimiser.

use crate::config::RunConfig;
use crate::error::Result;
use crate::optim::OptimizerState;
use cnn_models::Model;

/// Loads `cfg.init_from` into `model` (every tensor whose name and shape match) and returns
/// the lines that say what was loaded and what started fresh; none without a file.
pub(crate) fn load_initial_weights(cfg: &RunConfig, model: &Model) -> Result<Vec<String>> {
    let Some(init) = &cfg.init_from else {
        return Ok(Vec::new());
    };
    let report = model.init_from(&init.path)?;
    let mut lines = vec![format!("Initial weights: {}", init.source)];
    lines.extend(report.describe().lines().map(str::to_string));
    Ok(lines)
}

/// Gives every trainable tensor but the classifier `cfg.backbone_lr_factor` times the
/// learning rate (0: frozen).
pub(crate) fn scale_backbone(cfg: &RunConfig, model: &Model, opt: &mut OptimizerState) {
    if cfg.backbone_lr_factor == 1.0 {
        return;
    }
    let head: Vec<&str> = model.classifier().iter().map(|p| p.name.as_str()).collect();
    for p in model.params().trainable() {
        if !head.contains(&p.name.as_str()) {
            opt.set_lr_factor(&p.name, cfg.backbone_lr_factor);
        }
    }
}
