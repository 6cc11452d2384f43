//! Athena: Hessian-guided vector quantization of LLM checkpoints into extended GGUF files.
//!
//! The pipeline, one module per stage: `checkpoint` (weights in) -> `model` (forward pass) ->
//! `calibration` (Hessians) -> `quantizer` (the algorithm) -> `container` (GGUF and the Athena
//! encoding) -> `verify`; `export` writes llama.cpp metadata and plain tensors, `convert` drives
//! the whole conversion, `eval` measures perplexity, `progress` draws the tools' progress bars and
//! `signals` gives every binary the same SIGINT/SIGTERM/SIGBUS handling.

pub mod calibration;
pub mod checkpoint;
pub mod container;
pub mod convert;
pub mod eval;
pub mod export;
pub mod model;
pub mod progress;
pub mod quantizer;
pub mod signals;
pub mod verify;
