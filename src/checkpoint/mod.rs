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

pub use config::{Activation, Architecture, LocalAttention, ModelConfig, RopeScaling};
pub use hf::{each_expected_tensor, expected_tensors, folder_files, HfFolder};
pub use tokenizer::Tokenizer;

use std::path::PathBuf;

/// Errors from reading a checkpoint. Display is one line naming the file, tensor or key; names
/// and messages that carry text from the file have control characters escaped and are cut
/// ([`printable`]).
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{}: {}", path.display(), one_line(&source.to_string()))]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {}", path.display(), one_line(message))]
    Invalid { path: PathBuf, message: String },
    #[error("{}: unsupported architecture '{}' (supported: {supported})", path.display(), printable(found))]
    UnsupportedArchitecture {
        path: PathBuf,
        found: String,
        supported: String,
    },
    #[error("tensor '{}': not found in {}", printable(name), path.display())]
    MissingTensor { path: PathBuf, name: String },
    #[error("tensor '{}' in {}: {}", printable(name), path.display(), one_line(message))]
    BadTensor {
        path: PathBuf,
        name: String,
        message: String,
    },
}

/// A name from a file made safe for a one-line message: the container's one escaping rule
/// (control, bidirectional and zero-width characters escaped; cut past 200 characters).
pub fn printable(name: &str) -> String {
    athena_gguf::escape_name(name)
}

/// A message that may quote a file's text: as [`printable`], cut only past 1000 characters.
fn one_line(message: &str) -> String {
    athena_gguf::escape_cut(message, 1000)
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
