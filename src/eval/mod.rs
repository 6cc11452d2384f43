//! Measuring a model: perplexity exactly as llama.cpp's `llama-perplexity` computes it.

pub mod file;
pub mod greedy;
pub mod perplexity;

pub use perplexity::{
    make_chunks, perplexity, perplexity_runtime, token_nll, NllStats, PerplexityError,
    PerplexityProgress, PerplexityReport,
};
