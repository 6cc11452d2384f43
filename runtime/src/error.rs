//! The runtime's errors. Display is one line naming the key, tensor or limit at fault.

use athena_gguf::athena::AthenaError;
use athena_gguf::{escape_name, GgufError};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Athena(#[from] AthenaError),
    #[error("key '{}': {problem}", escape_name(key))]
    Metadata { key: String, problem: String },
    #[error("architecture '{}' is not supported by the runtime (supported: {archs})", escape_name(.0), archs = crate::config::SUPPORTED_ARCHS)]
    Architecture(String),
    #[error("tensor '{}' is missing", escape_name(.0))]
    MissingTensor(String),
    #[error("tensor '{}': {problem}", escape_name(name))]
    Tensor { name: String, problem: String },
    #[error("tensor '{}': type {ty} is not supported by the runtime (F32, F16, BF16, Q8_0 and Athena weights are)", escape_name(name))]
    UnsupportedType { name: String, ty: String },
    #[error("{tokens} tokens do not fit in the context of {ctx} (raise --ctx, or --truncate the prompt)")]
    ContextFull { tokens: usize, ctx: usize },
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    BadToken { id: u32, vocab: usize },
}
