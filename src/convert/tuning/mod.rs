//! Tuning the stored codebooks after quantization, below the sequential pass that calls it:
//! `block` matches one block's output after the block is quantized (AQLM's block fine-tuning),
//! `end_to_end` matches the whole model's next-token distribution after the last block (AQLM's
//! global fine-tuning, with PV-tuning's discrete step in `recode`). Both train the same thing,
//! `weight::CodebookWeight` (a layer's weight as a function of its codebooks and row scales),
//! with `parallel`'s gradients summed over the CPU threads.

pub mod block;
pub mod end_to_end;
pub(crate) mod parallel;
mod recode;
mod weight;

pub use block::{tune_block, TuneOptions, TuneOutcome};
pub use end_to_end::{FinetuneBlock, FinetuneOptions, FinetuneOutcome};
pub use weight::TuneLayer;
