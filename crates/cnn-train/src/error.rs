//! The crate's one error type: each variant says what is wrong and, where there is one, the fix.

use std::path::PathBuf;

/// Everything that can stop a run, an evaluation or a prediction.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A setting is out of range or settings contradict each other.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A file of the run folder cannot be read or written.
    #[error("{path}: {what}")]
    File { path: PathBuf, what: String },
    /// A fresh run was asked for in a folder that already holds one.
    #[error("{} already holds a run (checkpoint {})", out.display(), checkpoint.display())]
    RunExists { out: PathBuf, checkpoint: PathBuf },
    /// A checkpoint does not fit the run it is resumed into.
    #[error("{path}: cannot resume: {what}")]
    Resume { path: PathBuf, what: String },
    // Boxed: these are large and errors are rare, so `Result`s stay small.
    #[error(transparent)]
    Model(Box<cnn_models::ModelError>),
    #[error(transparent)]
    Data(Box<cnn_data::DataError>),
    #[error(transparent)]
    Candle(Box<candle_core::Error>),
}

impl From<cnn_models::ModelError> for TrainError {
    fn from(e: cnn_models::ModelError) -> Self {
        TrainError::Model(Box::new(e))
    }
}

impl From<cnn_data::DataError> for TrainError {
    fn from(e: cnn_data::DataError) -> Self {
        TrainError::Data(Box::new(e))
    }
}

impl From<candle_core::Error> for TrainError {
    fn from(e: candle_core::Error) -> Self {
        TrainError::Candle(Box::new(e))
    }
}

impl TrainError {
    pub(crate) fn file(path: impl Into<PathBuf>, what: impl ToString) -> Self {
        TrainError::File {
            path: path.into(),
            what: what.to_string(),
        }
    }
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;
