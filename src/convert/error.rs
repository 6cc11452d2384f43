//! A conversion's errors: one line each, naming the file, layer or option.

use super::sequential::SequentialError;
use crate::export::ExportError;

/// Errors of a conversion. Display is one line naming the file, layer or option.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{0}")]
    Options(String),
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Sequential(#[from] SequentialError),
    #[error(transparent)]
    Plan(#[from] crate::quantizer::plan::PlanError),
    #[error(transparent)]
    Write(#[from] crate::container::model_file::WriteError),
}
