//! Checkpoint input: where the weights of a model come from.
//!
//! A [`TensorSource`] hands out the weights of one model under their Hugging Face names, in the HF
//! layout (row-major, `[out, in]` for linear layers, q/k rows in HF order), dequantized to f32 one
//! tensor at a time, so the pipeline never needs the whole model in memory. Two sources exist:
//! an HF folder (config.json + *.safetensors + tokenizer.json) and a GGUF file.

pub mod config;
pub mod gguf_source;
pub mod hf;
pub mod names;
pub mod tokenizer;
pub mod vocab;

pub use config::{Architecture, ModelConfig, RopeScaling};
pub use hf::{expected_tensors, HfFolder};
pub use tokenizer::Tokenizer;

use std::path::PathBuf;

/// Errors from reading a checkpoint. Display is one line naming the file, tensor or key.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: unsupported architecture '{found}' (supported: {supported})")]
    UnsupportedArchitecture {
        path: PathBuf,
        found: String,
        supported: String,
    },
    #[error("tensor '{name}': not found in {path}")]
    MissingTensor { path: PathBuf, name: String },
    #[error("tensor '{name}' in {path}: {message}")]
    BadTensor {
        path: PathBuf,
        name: String,
        message: String,
    },
}

/// A dense f32 tensor in row-major order (`shape[0]` outermost, as in PyTorch/safetensors).
#[derive(Debug, Clone, PartialEq)]
pub struct DenseTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Where a model's weights come from, under HF names and in HF layout.
pub trait TensorSource: Send + Sync {
    /// The model hyperparameters.
    fn config(&self) -> &ModelConfig;
    /// HF names of all tensors the source holds, in a stable order.
    fn tensor_names(&self) -> Vec<String>;
    /// Shape of one tensor (row-major, outermost first) without reading its data.
    fn shape(&self, name: &str) -> Result<Vec<usize>, CheckpointError>;
    /// Reads one tensor, converted to f32.
    fn load(&self, name: &str) -> Result<DenseTensor, CheckpointError>;
}
