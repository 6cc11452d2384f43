//! File containers Athena reads and writes. The GGUF reader and writer and the reading side of
//! the Athena encoding live in the `athena-gguf` crate (shared with the runtime); this module
//! adds what needs the quantizer: encoding layers and writing whole model files.

pub use athena_gguf as gguf;
pub use athena_gguf::temp_files;

pub mod athena;
pub mod model_file;
