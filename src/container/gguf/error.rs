//! The one error type of the GGUF module. Every message is a single line that names the file-level field,
//! the key or the tensor concerned, and the problem.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// An I/O operation failed.
    #[error("{op} '{}': {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A field or byte range runs past the end of the file.
    #[error("{what}: needs {need} bytes at byte {offset} but the file has {file_len} bytes")]
    Truncated {
        what: String,
        offset: u64,
        need: u64,
        file_len: u64,
    },

    #[error("header: bad magic {found:02x?}, expected \"GGUF\" (47 47 55 46)")]
    BadMagic { found: Vec<u8> },

    #[error("header: unsupported GGUF version {version}{hint}")]
    UnsupportedVersion { version: u32, hint: &'static str },

    /// A count (tensor count, kv count, array length) that the file cannot possibly hold.
    #[error("{what}: count {count} is implausible, the rest of the file can hold at most {max}")]
    ImplausibleCount { what: String, count: u64, max: u64 },

    #[error("{what}: not valid UTF-8")]
    InvalidUtf8 { what: String },

    #[error("key '{key}': unknown value type id {type_id}")]
    UnknownValueType { key: String, type_id: u32 },

    #[error("key '{key}': nested arrays are not allowed")]
    NestedArray { key: String },

    #[error("key '{key}': bool byte {byte} is neither 0 nor 1")]
    InvalidBool { key: String, byte: u8 },

    #[error("key '{key}': duplicate key")]
    DuplicateKey { key: String },

    #[error("key '{key}': missing")]
    MissingKey { key: String },

    #[error("key '{key}': expected {expected}, found {found}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },

    #[error("key 'general.alignment': {alignment} is not a power of two")]
    BadAlignment { alignment: u64 },

    #[error("tensor '{name}': name is {len} bytes, at most 63 are allowed")]
    NameTooLong { name: String, len: usize },

    #[error("tensor '{name}': {n_dims} dimensions, 1 to 4 are allowed")]
    BadDimCount { name: String, n_dims: u64 },

    #[error("tensor '{name}': dimension {index} is 0")]
    ZeroDim { name: String, index: usize },

    #[error("tensor '{name}': unknown ggml type id {type_id}")]
    UnknownGgmlType { name: String, type_id: u32 },

    #[error(
        "tensor '{name}': ne[0] = {ne0} is not a multiple of the {ty} block size {block_size}"
    )]
    BlockSizeMismatch {
        name: String,
        ne0: u64,
        ty: &'static str,
        block_size: u64,
    },

    #[error("tensor '{name}': element count or byte size overflows")]
    SizeOverflow { name: String },

    #[error("tensor '{name}': duplicate tensor name")]
    DuplicateTensor { name: String },

    #[error(
        "tensor '{name}': data offset {offset} is not a multiple of the alignment {alignment}"
    )]
    MisalignedOffset {
        name: String,
        offset: u64,
        alignment: u64,
    },

    #[error("tensor '{name}': data offset {offset} overlaps tensor '{previous}', which ends at {previous_end}")]
    OverlappingTensor {
        name: String,
        offset: u64,
        previous: String,
        previous_end: u64,
    },

    #[error("tensor '{name}': data offset {offset}, expected {expected} (the previous data end padded to the alignment)")]
    UnexpectedOffset {
        name: String,
        offset: u64,
        expected: u64,
    },

    #[error("tensor '{name}': data ends at byte {end} but the file has {file_len} bytes")]
    DataOutOfBounds {
        name: String,
        end: u64,
        file_len: u64,
    },

    // Writer-side errors.
    #[error("writer: {what} after the header was written")]
    HeaderAlreadyWritten { what: String },

    #[error("tensor '{name}': data written out of order, expected {expected}")]
    OutOfOrder { name: String, expected: String },

    #[error("tensor '{name}': got {got} bytes of data, expected {expected}")]
    WrongDataLength {
        name: String,
        got: u64,
        expected: u64,
    },

    #[error("tensor '{name}': no data was written before finish")]
    MissingTensorData { name: String },
}

impl GgufError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        GgufError::Io {
            op,
            path: path.into(),
            source,
        }
    }
}
