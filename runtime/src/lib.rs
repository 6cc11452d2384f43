//! Athena's runtime: runs Athena files (and plain F32/F16/BF16/Q8_0 GGUF files of the same
//! models) on the CPU straight from the compressed weights, which stay in the file's memory map.
//!
//! - [`config`]: the model's hyperparameters from the GGUF metadata;
//! - [`matrix`]: weight products (one token, or a batch) on Athena and plain weights;
//! - [`kernels`]: the dot-product kernels (scalar reference, AVX2, NEON);
//! - [`kv_cache`]: keys and values of past positions (f16 or int8);
//! - [`model`]: the forward pass;
//! - [`sampler`]: choosing the next token (greedy, temperature, top-k/p, min-p, repeat penalty);
//! - [`session`]: a conversation kept in the KV cache between turns;
//! - [`chat`]: rendering a conversation with the file's own chat template.
//!
//! It depends on the decoder and the GGUF reader only (no candle, faer or converter), so an
//! edge application links it without the quantizer. Tokenization is the application's: the
//! `athena-run` binary takes it from the `tokenizers` crate.

pub mod chat;
pub mod config;
mod error;
pub mod kernels;
pub mod kv_cache;
pub mod matrix;
pub mod model;
pub mod sampler;
pub mod session;

pub use config::Config;
pub use error::RuntimeError;
pub use kv_cache::{KvCache, KvType};
pub use model::Model;
pub use sampler::{Sampler, SamplerOptions};
pub use session::Session;
