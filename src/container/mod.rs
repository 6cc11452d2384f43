//! File containers Athena reads and writes.

pub mod athena;
pub mod gguf;
pub mod model_file;
pub mod temp_files;
