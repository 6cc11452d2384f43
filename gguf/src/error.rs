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

/// Longest part of a name from a file that a message shows, in characters.
pub const MAX_SHOWN_NAME: usize = 200;

/// Makes a name taken from a file (a key, a tensor or weight name, a string value) safe to print
/// in a one-line message: control characters (newlines, terminal escape sequences) and the
/// invisible characters that reorder or hide text (bidirectional overrides, zero-width
/// characters) are written as Rust escapes, and a name longer than [`MAX_SHOWN_NAME`] characters
/// is cut, saying how long it was. The one helper every layer uses: the GGUF reader's errors,
/// the Athena and checksum checks, the runtime's and athena-verify's messages and table.
pub fn escape_name(s: &str) -> String {
    escape_cut(s, MAX_SHOWN_NAME)
}

/// [`escape_name`] with another limit: for messages that may quote a file's text (cut past
/// `max` characters).
pub fn escape_cut(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(4 * max));
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push_str(&format!("... ({} bytes in all)", s.len()));
            break;
        }
        push_escaped(&mut out, c);
    }
    out
}

/// Characters that would make a name read differently from its bytes on a terminal.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

fn push_escaped(out: &mut String, c: char) {
    if c.is_control() {
        out.extend(c.escape_default());
    } else if needs_escape(c) {
        out.extend(c.escape_unicode());
    } else {
        out.push(c);
    }
}

pub(crate) use escape_name as esc;

/// Escapes without cutting (for messages already built from [`escape_name`]d names).
pub(crate) fn esc_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_and_cut() {
        assert_eq!(escape_name("blk.0.attn_q.weight"), "blk.0.attn_q.weight");
        assert_eq!(escape_name("a\nb\u{1b}[31m"), "a\\nb\\u{1b}[31m");
        // A right-to-left override would make the rest of the line read backwards.
        assert_eq!(escape_name("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(escape_name("naïve"), "naïve");
        let long = "n".repeat(100_000);
        let shown = escape_name(&long);
        assert!(shown.starts_with(&"n".repeat(MAX_SHOWN_NAME)));
        assert!(shown.ends_with("... (100000 bytes in all)"), "{shown}");
        assert!(shown.len() < 300);
    }
}
