//! Starting from weights trained elsewhere: a whole checkpoint read strictly as a new model
//! (its class count from the classifier's shape), or a partial load into a built model that
//! takes every tensor whose name and shape match, as fine-tuning does.

use crate::error::ModelError;
use crate::model::Model;
use crate::params::Param;
use crate::pth::read_tensors;
use crate::weights::classifier_mismatch;
use candle_core::{Device, Tensor};
use std::path::{Path, PathBuf};

/// What [`Model::init_from`] took from a file and what it left.
#[derive(Debug, Clone, PartialEq)]
pub struct InitReport {
    pub path: PathBuf,
    /// The model's tensors given the file's values, in `state_dict` order.
    pub loaded: Vec<String>,
    /// The model's tensors kept at their seeded initial values: absent from the file, or of
    /// another shape there (the classifier, for another class count).
    pub fresh: Vec<String>,
    /// The file's tensors left unused, each with why; BatchNorm's `num_batches_tracked`,
    /// which nothing here uses, is not listed.
    pub ignored: Vec<(String, String)>,
    /// Classes of the file's classifier, where it has the model's but with other rows.
    pub file_classes: Option<usize>,
}

impl InitReport {
    /// Lines for people: counts, then what started fresh and what was ignored.
    pub fn describe(&self) -> String {
        let mut lines = vec![format!(
            "initial weights from {}: loaded {} of {} tensors",
            self.path.display(),
            self.loaded.len(),
            self.loaded.len() + self.fresh.len()
        )];
        if let Some(n) = self.file_classes {
            lines.push(format!(
                "  the file's classifier is for {n} classes: the classifier starts fresh"
            ));
        }
        if !self.fresh.is_empty() {
            lines.push(format!("  started fresh: {}", self.fresh.join(", ")));
        }
        if !self.ignored.is_empty() {
            let ignored: Vec<String> = self
                .ignored
                .iter()
                .map(|(n, why)| format!("{n} ({why})"))
                .collect();
            lines.push(format!("  ignored from the file: {}", ignored.join(", ")));
        }
        lines.join("\n")
    }
}

impl Model {
    /// `arch` with every tensor from `path` (safetensors or a PyTorch `.pth`), its class
    /// count read from the file's classifier. The file must hold exactly the architecture's
    /// tensors, as [`Model::load_weights`] demands, and the errors are the same.
    pub fn from_checkpoint(arch: &str, path: &Path, device: &Device) -> Result<Self, ModelError> {
        let file = read_tensors(path, device)?;
        // A one-class model only names the classifier; its own values are never used.
        let probe = Model::new(arch, 1, 0, device)?;
        let head = probe.classifier()[0].name.clone();
        let classes = file
            .get(&head)
            .and_then(|t| t.dims().first().copied())
            .unwrap_or(1);
        // A file without a classifier (or an empty one) gets the strict check's message.
        let model = Model::new(arch, classes.max(1), 0, device)?;
        model.check_matches(path, &file)?;
        for p in model.params().all() {
            let t = file[&p.name].to_dtype(p.var.dtype())?;
            p.var.set(&p.from_torch(&t)?)?;
        }
        Ok(model)
    }

    /// Sets every tensor whose name and shape match one in `path` (safetensors or a PyTorch
    /// `.pth`) to the file's values; the others keep their initial values. A classifier for
    /// another class count thus starts fresh. Nothing changes when the file cannot be read or
    /// shares no tensor with the model (the error says which names it holds).
    pub fn init_from(&self, path: &Path) -> Result<InitReport, ModelError> {
        let mut file = read_tensors(path, self.device())?;
        file.retain(|name, _| !name.ends_with(".num_batches_tracked"));
        let mut take: Vec<(&Param, Tensor)> = Vec::new();
        let mut fresh = Vec::new();
        let mut ignored = Vec::new();
        let mut wrong_shapes = Vec::new();
        for p in self.params().all() {
            match file.remove(&p.name) {
                Some(t) if t.dims() == p.torch_dims() && t.dtype().is_float() => {
                    let t = p.from_torch(&t.to_dtype(p.var.dtype())?)?;
                    take.push((p, t));
                }
                Some(t) => {
                    let why = if t.dims() != p.torch_dims() {
                        wrong_shapes.push((p.name.clone(), t.dims().to_vec(), p.torch_dims()));
                        format!(
                            "{:?} in the file, {:?} in the model",
                            t.dims(),
                            p.torch_dims()
                        )
                    } else {
                        format!("{:?}, not floating point", t.dtype())
                    };
                    ignored.push((p.name.clone(), why));
                    fresh.push(p.name.clone());
                }
                None => fresh.push(p.name.clone()),
            }
        }
        let mut unknown: Vec<String> = file.into_keys().collect();
        unknown.sort();
        if take.is_empty() {
            return Err(ModelError::NothingToLoad {
                path: path.to_path_buf(),
                arch: self.arch().to_string(),
                sample: sample_names(&unknown, &ignored),
            });
        }
        let file_classes = classifier_mismatch(&self.classifier(), &wrong_shapes);
        ignored.extend(unknown.into_iter().map(|n| (n, "not in the model".into())));
        let loaded = take.iter().map(|(p, _)| p.name.clone()).collect();
        for (p, t) in take {
            p.var.set(&t)?;
        }
        Ok(InitReport {
            path: path.to_path_buf(),
            loaded,
            fresh,
            ignored,
            file_classes,
        })
    }
}

/// A few of a file's names, for an error about a file that matches nothing.
fn sample_names(unknown: &[String], ignored: &[(String, String)]) -> String {
    let names: Vec<&str> = unknown
        .iter()
        .map(String::as_str)
        .chain(ignored.iter().map(|(n, _)| n.as_str()))
        .collect();
    let shown = names.iter().take(5).copied().collect::<Vec<_>>().join(", ");
    match names.len() {
        0 => "no tensors besides num_batches_tracked".into(),
        n if n > 5 => format!("{shown} and {} more", n - 5),
        _ => shown,
    }
}
