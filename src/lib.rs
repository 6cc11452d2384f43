//! Athena: Hessian-guided vector quantization of LLM checkpoints into extended GGUF files.

pub mod checkpoint;
pub mod container;
pub mod eval;
pub mod export;
pub mod model;
pub mod quantizer;
pub mod verify;
