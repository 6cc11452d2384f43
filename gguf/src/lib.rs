//! GGUF v3 container: a validating memory-mapped reader and a streaming writer, and the Athena
//! weights inside such a file (finding and validating their component tensors). Its own crate so
//! that the runtime reads files without linking the converter.
//!
//! This is our own implementation, on purpose: gguf-rs computes wrong sizes for I8/BF16 tensors and
//! candle's GGUF writer emits version 2 with a fixed alignment. What we read and write is specified in
//! `format-spec/gguf-container.md`; the rules follow llama.cpp's gguf reader (see that document).
//!
//! One concern per file: [`types`] (the ggml type table), [`value`] (metadata values), [`reader`],
//! [`writer`], [`error`] (and [`escape_name`], the one way a name from a file is printed), [`finite`]
//! (NaN and infinity in standard tensor types), [`temp_files`] (outputs a signal handler deletes)
//! and [`athena`].

pub mod athena;
pub mod error;
pub mod finite;
pub mod reader;
pub mod temp_files;
pub mod types;
pub mod value;
pub mod writer;

pub use error::{escape_cut, escape_name, GgufError};
pub use reader::{
    GgufFile, TensorInfo, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION, MAX_DIMS,
    MAX_NAME_LEN,
};
pub use types::GgmlType;
pub use value::{Array, Value, ValueType};
pub use writer::GgufWriter;
