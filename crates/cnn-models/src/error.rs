//! The errors a user can cause: each names what is wrong and, where there is one, the fix.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("unknown architecture '{name}' (known: {known})")]
    UnknownArch { name: String, known: String },

    #[error("{arch} needs at least 1 class, got 0")]
    NoClasses { arch: String },

    #[error("{arch} needs an input of at least {min}x{min} pixels, got {height}x{width}")]
    ImageTooSmall {
        arch: String,
        min: usize,
        height: usize,
        width: usize,
    },

    #[error("{arch} computes in f32 or f64, not {dtype:?}")]
    UnsupportedDType {
        arch: String,
        dtype: candle_core::DType,
    },

    #[error("{arch} holds {model:?} tensors but the input is {input:?}: convert one of them (Tensor::to_dtype, Model::to_dtype)")]
    InputDTypeMismatch {
        arch: String,
        model: candle_core::DType,
        input: candle_core::DType,
    },

    #[error("{arch} expects input (batch, 3, height, width), got {shape:?}")]
    BadInput { arch: String, shape: Vec<usize> },

    #[error("class {class} does not exist: the model has {classes} classes (0 to {})", .classes - 1)]
    NoSuchClass { class: usize, classes: usize },

    #[error("{arch} has no module '{layer}' to probe")]
    NoSuchLayer { arch: String, layer: String },

    #[error("{path}: cannot read weights: {reason}")]
    Unreadable { path: PathBuf, reason: String },

    #[error("{path}: holds a classifier for {file_classes} classes but the model has {model_classes}: build the model for {file_classes} classes, or load it with init_from (cnn train --init-from), which starts a new classifier")]
    ClassCountMismatch {
        path: PathBuf,
        file_classes: usize,
        model_classes: usize,
    },

    #[error("{path}: does not match {arch}:{}", describe_mismatch(.missing, .unexpected, .wrong_shapes))]
    WeightsMismatch {
        path: PathBuf,
        arch: String,
        missing: Vec<String>,
        unexpected: Vec<String>,
        /// (name, shape in the file, shape the model expects)
        wrong_shapes: Vec<(String, Vec<usize>, Vec<usize>)>,
    },

    #[error("{path}: no tensor matches {arch} by name and shape (the file holds {sample})")]
    NothingToLoad {
        path: PathBuf,
        arch: String,
        /// A few of the file's tensor names.
        sample: String,
    },

    #[error("{path}: cannot write weights: {reason}")]
    Unwritable { path: PathBuf, reason: String },

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

fn describe_mismatch(
    missing: &[String],
    unexpected: &[String],
    wrong: &[(String, Vec<usize>, Vec<usize>)],
) -> String {
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!(" missing tensors: {}", missing.join(", ")));
    }
    if !unexpected.is_empty() {
        parts.push(format!(" unexpected tensors: {}", unexpected.join(", ")));
    }
    if !wrong.is_empty() {
        let shapes: Vec<_> = wrong
            .iter()
            .map(|(n, file, model)| format!("{n} is {file:?} in the file, {model:?} in the model"))
            .collect();
        parts.push(format!(" wrong shapes: {}", shapes.join("; ")));
    }
    parts.join(";")
}
