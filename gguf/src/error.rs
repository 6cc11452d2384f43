//! The one error type of the GGUF module. Every message is a single line that names the file-level field,
//! the key or the tensor concerned, and the problem.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
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
    #[error(
        "{}: needs {need} bytes at byte {offset} but the file has {file_len} bytes",
        esc_controls(what)
    )]
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
    #[error(
        "{}: count {count} is implausible, the rest of the file can hold at most {max}",
        esc_controls(what)
    )]
    ImplausibleCount { what: String, count: u64, max: u64 },

    #[error("{}: not valid UTF-8", esc_controls(what))]
    InvalidUtf8 { what: String },

    #[error("key '{}': unknown value type id {type_id}", esc(key))]
    UnknownValueType { key: String, type_id: u32 },

    #[error("key '{}': nested arrays are not allowed", esc(key))]
    NestedArray { key: String },

    #[error("key '{}': bool byte {byte} is neither 0 nor 1", esc(key))]
    InvalidBool { key: String, byte: u8 },

    #[error("key '{}': duplicate key", esc(key))]
    DuplicateKey { key: String },

    #[error("key '{}': missing", esc(key))]
    MissingKey { key: String },

    #[error("key '{}': expected {expected}, found {}", esc(key), esc(found))]
    WrongType {
        key: String,
        expected: &'static str,
        found: String,
    },

    #[error("key 'general.alignment': {alignment} is not a power of two")]
    BadAlignment { alignment: u64 },

    #[error("tensor '{}': name is {len} bytes, at most 63 are allowed", esc(name))]
    NameTooLong { name: String, len: usize },

    #[error("tensor '{}': {n_dims} dimensions, 1 to 4 are allowed", esc(name))]
    BadDimCount { name: String, n_dims: u64 },

    #[error("tensor '{}': dimension {index} is 0", esc(name))]
    ZeroDim { name: String, index: usize },

    #[error("tensor '{}': unknown ggml type id {type_id}", esc(name))]
    UnknownGgmlType { name: String, type_id: u32 },

    #[error(
        "tensor '{}': ne[0] = {ne0} is not a multiple of the {ty} block size {block_size}",
        esc(name)
    )]
    BlockSizeMismatch {
        name: String,
        ne0: u64,
        ty: &'static str,
        block_size: u64,
    },

    #[error("tensor '{}': element count or byte size overflows", esc(name))]
    SizeOverflow { name: String },

    #[error("tensor '{}': duplicate tensor name", esc(name))]
    DuplicateTensor { name: String },

    #[error(
        "tensor '{}': data offset {offset} is not a multiple of the alignment {alignment}",
        esc(name)
    )]
    MisalignedOffset {
        name: String,
        offset: u64,
        alignment: u64,
    },

    #[error(
        "tensor '{}': data offset {offset} overlaps tensor '{}', which ends at {previous_end}",
        esc(name),
        esc(previous)
    )]
    OverlappingTensor {
        name: String,
        offset: u64,
        previous: String,
        previous_end: u64,
    },

    #[error("tensor '{}': data offset {offset}, expected {expected} (the previous data end padded to the alignment)", esc(name))]
    UnexpectedOffset {
        name: String,
        offset: u64,
        expected: u64,
    },

    #[error(
        "tensor '{}': data ends at byte {end} but the file has {file_len} bytes",
        esc(name)
    )]
    DataOutOfBounds {
        name: String,
        end: u64,
        file_len: u64,
    },

    // Writer-side errors.
    #[error("writer: {} after the header was written", esc_controls(what))]
    HeaderAlreadyWritten { what: String },

    #[error(
        "tensor '{}': data written out of order, expected {expected}",
        esc(name)
    )]
    OutOfOrder { name: String, expected: String },

    #[error("tensor '{}': got {got} bytes of data, expected {expected}", esc(name))]
    WrongDataLength {
        name: String,
        got: u64,
        expected: u64,
    },

    #[error("tensor '{}': no data was written before finish", esc(name))]
    MissingTensorData { name: String },
}

/// Makes a name from a file safe for a one-line message: control characters are escaped and very long
/// names are cut.
pub(crate) fn esc(s: &str) -> String {
    const MAX: usize = 200;
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == MAX {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Escapes control characters only (for messages already built from [`esc`]aped names).
pub(crate) fn esc_controls(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let e: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            e
        })
        .collect()
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
