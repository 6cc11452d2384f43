//! File containers Athena reads and writes.

pub mod gguf;
