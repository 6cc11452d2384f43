//! Validating GGUF reader over a memory map (or an owned buffer).
//!
//! The whole header (key/value pairs and tensor infos) is parsed and checked before a [`GgufFile`] is handed
//! out; after that, [`GgufFile::tensor_data`] is a plain slice of the mapped file. Every length and offset
//! read from the file is checked with overflow-safe arithmetic against the file size before it is used, so a
//! hostile file yields a [`GgufError`] and never a panic or an allocation larger than the file warrants.
//!
//! Metadata is validated completely on open but kept where it lies: a key is an offset into the file
//! (16 bytes) plus its place in a sorted index (4 bytes), and a value is decoded from the file the first
//! time it is asked for. So reading a header of millions of small keys costs about as much memory as the
//! header itself (the mapped pages), not ten times that.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Mutex;

use memmap2::Mmap;

use crate::error::{esc, GgufError};
use crate::types::GgmlType;
use crate::value::{Array, Value, ValueType};

/// The four magic bytes at the start of every GGUF file.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// The version the writer emits. The reader also accepts 2, which has the same little-endian layout.
pub const GGUF_VERSION: u32 = 3;
/// Alignment used when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// The metadata key that overrides the alignment (must be u32, a power of two).
pub const ALIGNMENT_KEY: &str = "general.alignment";
/// Longest tensor name in bytes (ggml's GGML_MAX_NAME is 64 including the NUL).
pub const MAX_NAME_LEN: usize = 63;
/// Most dimensions a tensor may have (GGML_MAX_DIMS).
pub const MAX_DIMS: usize = 4;

/// Smallest encoding of one key/value pair: key length (8) + type (4) + a 1-byte value.
const MIN_KV_BYTES: u64 = 13;
/// Smallest encoding of one tensor info: name length (8) + n_dims (4) + one dim (8) + type (4) + offset (8).
const MIN_TENSOR_INFO_BYTES: u64 = 32;
/// Upper bound on speculative preallocation; vectors grow past it only as real bytes are parsed.
const MAX_PREALLOC: usize = 1 << 16;

/// One tensor's header entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions in ggml `ne` order: `dims[0]` is the innermost (contiguous) one.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset of the data relative to the start of the data section.
    pub offset: u64,
    /// Exact data size in bytes (without padding).
    pub size_bytes: u64,
}

impl TensorInfo {
    /// Number of elements (product of the dims).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

enum Backing {
    Mmap(Mmap),
    Bytes(Vec<u8>),
}

impl Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::Mmap(m) => m,
            Backing::Bytes(b) => b,
        }
    }
}

/// Where one validated key/value pair lies in the file; its value is decoded when first asked for.
#[derive(Debug, Clone, Copy)]
struct KeyEntry {
    /// Absolute offset of the key's bytes (after its u64 length).
    key_at: u64,
    key_len: u32,
    ty: ValueType,
}

impl KeyEntry {
    /// Absolute offset of the value (after the key and its u32 type id).
    fn value_at(&self) -> u64 {
        self.key_at
            .saturating_add(self.key_len as u64)
            .saturating_add(4)
    }
}

/// A validated GGUF file.
pub struct GgufFile {
    backing: Backing,
    /// Key/value pairs in file order.
    keys: Vec<KeyEntry>,
    /// Indices into `keys`, sorted by key name.
    key_order: Vec<u32>,
    /// The values decoded so far, by key index. Boxed, and never removed or replaced, so a value
    /// handed out by [`GgufFile::get`] stays where it is as long as the file.
    values: Mutex<HashMap<u32, Box<Value>>>,
    /// Indices into `tensors`, sorted by tensor name.
    tensor_order: Vec<u32>,
    pub version: u32,
    pub alignment: u64,
    /// Absolute byte offset of the data section (the end of the tensor infos padded to the alignment).
    pub data_offset: u64,
    /// Tensor infos in file order (which is also data order).
    pub tensors: Vec<TensorInfo>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("file_len", &self.file_len())
            .field("version", &self.version)
            .field("alignment", &self.alignment)
            .field("data_offset", &self.data_offset)
            .field("metadata", &self.keys.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps and validates `path`.
    ///
    /// As with any memory map, the file must not be modified while the returned value is alive.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        // Checked before opening: opening a FIFO would block, and mapping a directory fails with
        // the puzzling "No such device".
        let kind = std::fs::metadata(path).map_err(|e| GgufError::io("opening", path, e))?;
        if kind.is_dir() {
            let e = std::io::Error::new(std::io::ErrorKind::IsADirectory, "is a directory");
            return Err(GgufError::io("opening", path, e));
        }
        if !kind.is_file() {
            let e = std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file (a GGUF file is memory-mapped)",
            );
            return Err(GgufError::io("opening", path, e));
        }
        let file = File::open(path).map_err(|e| GgufError::io("opening", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| GgufError::io("reading metadata of", path, e))?
            .len();
        let backing = if len == 0 {
            Backing::Bytes(Vec::new())
        } else {
            // SAFETY: the mapping is read-only; like every mmap-based reader we rely on the file not being
            // truncated or rewritten by another process while it is mapped.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| GgufError::io("mapping", path, e))?;
            Backing::Mmap(map)
        };
        Self::from_backing(backing)
    }

    /// Validates an in-memory file (same checks as [`GgufFile::open`]).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, GgufError> {
        Self::from_backing(Backing::Bytes(bytes))
    }

    fn from_backing(backing: Backing) -> Result<Self, GgufError> {
        let parsed = parse(backing.bytes())?;
        Ok(GgufFile {
            backing,
            keys: parsed.keys,
            key_order: parsed.key_order,
            values: Mutex::new(HashMap::new()),
            tensor_order: parsed.tensor_order,
            version: parsed.version,
            alignment: parsed.alignment,
            data_offset: parsed.data_offset,
            tensors: parsed.tensors,
        })
    }

    /// Size of the file in bytes.
    pub fn file_len(&self) -> u64 {
        self.backing.bytes().len() as u64
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.backing.bytes()
    }

    /// Number of key/value pairs.
    pub fn metadata_len(&self) -> usize {
        self.keys.len()
    }

    /// The keys in file order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.keys.iter().map(|e| self.key_str(e))
    }

    /// The key/value pairs in file order (each value decoded on first use, then kept).
    pub fn metadata(&self) -> impl Iterator<Item = (&str, &Value)> + '_ {
        (0..self.keys.len()).filter_map(|i| Some((self.key_str(&self.keys[i]), self.value(i)?)))
    }

    /// An owned copy of the key/value pairs in file order (to edit and write elsewhere).
    pub fn metadata_vec(&self) -> Vec<(String, Value)> {
        self.keys
            .iter()
            .filter_map(|e| Some((self.key_str(e).to_string(), decode_value(self.bytes(), e)?)))
            .collect()
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.value(self.find_key(key)?)
    }

    fn key_bytes(&self, e: &KeyEntry) -> &[u8] {
        let start = usize::try_from(e.key_at).unwrap_or(usize::MAX);
        let end = start.saturating_add(e.key_len as usize);
        self.bytes().get(start..end).unwrap_or(&[])
    }

    /// The key's name; validated UTF-8 on open (empty only if the mapped file changed since).
    fn key_str(&self, e: &KeyEntry) -> &str {
        std::str::from_utf8(self.key_bytes(e)).unwrap_or("")
    }

    fn find_key(&self, key: &str) -> Option<usize> {
        let found = self
            .key_order
            .binary_search_by(|&i| {
                self.keys
                    .get(i as usize)
                    .map_or(&[][..], |e| self.key_bytes(e))
                    .cmp(key.as_bytes())
            })
            .ok()?;
        Some(self.key_order[found] as usize)
    }

    /// The value of key `i`, decoded on first use. `None` only if the mapped file changed since
    /// it was validated.
    fn value(&self, i: usize) -> Option<&Value> {
        let entry = self.keys.get(i)?;
        let index = u32::try_from(i).ok()?;
        let mut cache = self.values.lock().unwrap_or_else(|p| p.into_inner());
        let value: *const Value = match cache.get(&index) {
            Some(boxed) => &**boxed,
            None => {
                let boxed = Box::new(decode_value(self.bytes(), entry)?);
                let value: *const Value = &*boxed;
                cache.insert(index, boxed);
                value
            }
        };
        drop(cache);
        // SAFETY: `value` points into a Box owned by `self.values`. Boxes are only ever added to
        // that map (never removed, replaced or mutated) until `self` is dropped, and a Box's
        // contents stay put when the map moves the Box itself; so the value lives, unchanged, for
        // as long as the `&self` borrow the returned reference is tied to.
        Some(unsafe { &*value })
    }

    /// The tensor named `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        let found = self
            .tensor_order
            .binary_search_by(|&i| {
                self.tensors
                    .get(i as usize)
                    .map_or("", |t| t.name.as_str())
                    .cmp(name)
            })
            .ok()
            .and_then(|k| self.tensors.get(self.tensor_order[k] as usize));
        match found {
            Some(t) if t.name == name => Some(t),
            // The field is public: fall back to a scan if the caller edited `tensors`.
            Some(_) => self.tensors.iter().find(|t| t.name == name),
            None => None,
        }
    }

    /// The data bytes of `t`, which must be one of this file's tensor infos (validated to lie inside the
    /// file). A `TensorInfo` whose range is not inside the file yields an empty slice.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let range = self
            .data_offset
            .checked_add(t.offset)
            .and_then(|start| Some((start, start.checked_add(t.size_bytes)?)))
            .and_then(|(s, e)| Some((usize::try_from(s).ok()?, usize::try_from(e).ok()?)));
        match range {
            Some((s, e)) => self.backing.bytes().get(s..e).unwrap_or(&[]),
            None => &[],
        }
    }

    fn require(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_string(),
        })
    }

    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &'static str,
        f: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<T, GgufError> {
        let v = self.require(key)?;
        f(v).ok_or_else(|| GgufError::WrongType {
            key: key.to_string(),
            expected,
            found: v.type_description(),
        })
    }

    /// `key` as u32 (any unsigned integer type whose value fits).
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        self.typed(key, "u32", Value::as_u32)
    }

    /// `key` as u64 (any unsigned integer type).
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.typed(key, "u64", Value::as_u64)
    }

    /// `key` as i64 (any signed integer type).
    pub fn get_i64(&self, key: &str) -> Result<i64, GgufError> {
        self.typed(key, "i64", Value::as_i64)
    }

    /// `key` as f32 (f32 only).
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        self.typed(key, "f32", Value::as_f32)
    }

    /// `key` as f64 (f32 or f64).
    pub fn get_f64(&self, key: &str) -> Result<f64, GgufError> {
        self.typed(key, "f64", Value::as_f64)
    }

    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        self.typed(key, "bool", Value::as_bool)
    }

    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        self.typed(key, "string", Value::as_str)
    }

    pub fn get_array(&self, key: &str) -> Result<&Array, GgufError> {
        self.typed(key, "array", Value::as_array)
    }

    /// `key` as an array of strings.
    pub fn get_string_array(&self, key: &str) -> Result<&[String], GgufError> {
        self.typed(key, "array of string", |v| v.as_array()?.as_strings())
    }
}

struct Parsed {
    version: u32,
    alignment: u64,
    data_offset: u64,
    keys: Vec<KeyEntry>,
    key_order: Vec<u32>,
    tensors: Vec<TensorInfo>,
    tensor_order: Vec<u32>,
}

/// Decodes the (validated) value of `e`; `None` only if the bytes changed since validation.
fn decode_value(buf: &[u8], e: &KeyEntry) -> Option<Value> {
    let pos = usize::try_from(e.value_at())
        .ok()
        .filter(|&p| p <= buf.len())?;
    let mut cur = Cursor { buf, pos };
    read_value(&mut cur, e.ty, "").ok()
}

/// `0..n` sorted by `name(i)`, or the first name that occurs twice.
fn sorted_order<'a>(n: usize, name: impl Fn(u32) -> &'a [u8]) -> Result<Vec<u32>, &'a [u8]> {
    // The callers cap the key and tensor counts at u32::MAX.
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_unstable_by(|&a, &b| name(a).cmp(name(b)));
    match order.windows(2).find(|w| name(w[0]) == name(w[1])) {
        Some(w) => Err(name(w[1])),
        None => Ok(order),
    }
}

/// Rounds `x` up to a multiple of `align` (a power of two); `None` on overflow.
pub(crate) fn align_up(x: u64, align: u64) -> Option<u64> {
    let rem = x % align;
    if rem == 0 {
        Some(x)
    } else {
        x.checked_add(align - rem)
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: what(),
                offset: self.pos as u64,
                need: n,
                file_len: self.buf.len() as u64,
            });
        }
        // n <= remaining, which fits in usize.
        let n = n as usize;
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A GGUF string: u64 length, then that many UTF-8 bytes.
    fn str(&mut self, what: &dyn Fn() -> String) -> Result<&'a str, GgufError> {
        let len = self.u64(&|| format!("{} length", what()))?;
        let bytes = self.take(len, what)?;
        std::str::from_utf8(bytes).map_err(|_| GgufError::InvalidUtf8 { what: what() })
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, GgufError> {
        Ok(self.str(what)?.to_string())
    }
}

fn parse(buf: &[u8]) -> Result<Parsed, GgufError> {
    let mut cur = Cursor { buf, pos: 0 };
    let file_len = buf.len() as u64;

    let magic = cur.take(4, &|| "header field 'magic'".into())?;
    if magic != GGUF_MAGIC {
        return Err(GgufError::BadMagic {
            found: magic.to_vec(),
        });
    }
    let version = cur.u32(&|| "header field 'version'".into())?;
    if version != 2 && version != 3 {
        let hint = if version == 1 {
            " (version 1 is not supported; only 2 and 3 are read)"
        } else if matches!(version.swap_bytes(), 2 | 3) {
            " (big-endian GGUF files are not supported)"
        } else {
            " (only 2 and 3 are read)"
        };
        return Err(GgufError::UnsupportedVersion { version, hint });
    }
    let n_tensors = cur.u64(&|| "header field 'n_tensors'".into())?;
    let n_kv = cur.u64(&|| "header field 'n_kv'".into())?;

    // Indices are u32: a file would need 55 GB of keys to reach the limit.
    let max_kv = (cur.remaining() / MIN_KV_BYTES).min(u32::MAX as u64);
    if n_kv > max_kv {
        return Err(GgufError::ImplausibleCount {
            what: "header field 'n_kv'".into(),
            count: n_kv,
            max: max_kv,
        });
    }
    let max_tensors = (cur.remaining() / MIN_TENSOR_INFO_BYTES).min(u32::MAX as u64);
    if n_tensors > max_tensors {
        return Err(GgufError::ImplausibleCount {
            what: "header field 'n_tensors'".into(),
            count: n_tensors,
            max: max_tensors,
        });
    }

    // Both counts are now bounded by the file size, so they fit in usize; the entries (16 bytes for
    // at least 13 of file) cost at most 1.3 times the file.
    let mut keys: Vec<KeyEntry> = Vec::with_capacity(n_kv as usize);
    for i in 0..n_kv {
        let key = cur.str(&|| format!("key #{i} name"))?;
        let key_len = u32::try_from(key.len()).map_err(|_| GgufError::ImplausibleCount {
            what: format!("key #{i} name length"),
            count: key.len() as u64,
            max: u32::MAX as u64,
        })?;
        let key_at = (cur.pos - key.len()) as u64;
        let type_id = cur.u32(&|| format!("key '{}' value type", esc(key)))?;
        let ty = ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
            key: key.to_string(),
            type_id,
        })?;
        skip_value(&mut cur, ty, key)?;
        keys.push(KeyEntry {
            key_at,
            key_len,
            ty,
        });
    }
    let key_name = |i: u32| {
        let e = &keys[i as usize];
        &buf[e.key_at as usize..e.key_at as usize + e.key_len as usize]
    };
    let key_order = sorted_order(keys.len(), key_name).map_err(|key| GgufError::DuplicateKey {
        key: String::from_utf8_lossy(key).into_owned(),
    })?;

    let alignment_key = key_order
        .binary_search_by(|&i| key_name(i).cmp(ALIGNMENT_KEY.as_bytes()))
        .ok()
        .and_then(|k| decode_value(buf, &keys[key_order[k] as usize]));
    let alignment = match alignment_key {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) => {
            if a == 0 || !a.is_power_of_two() {
                return Err(GgufError::BadAlignment {
                    alignment: a as u64,
                });
            }
            a as u64
        }
        Some(v) => {
            return Err(GgufError::WrongType {
                key: ALIGNMENT_KEY.into(),
                expected: "u32",
                found: v.type_description(),
            })
        }
    };

    let max_tensors = cur.remaining() / MIN_TENSOR_INFO_BYTES;
    if n_tensors > max_tensors {
        return Err(GgufError::ImplausibleCount {
            what: "header field 'n_tensors'".into(),
            count: n_tensors,
            max: max_tensors,
        });
    }
    let mut tensors: Vec<TensorInfo> = Vec::with_capacity((n_tensors as usize).min(MAX_PREALLOC));
    for i in 0..n_tensors {
        tensors.push(read_tensor_info(&mut cur, i)?);
    }
    let tensor_order = sorted_order(tensors.len(), |i| tensors[i as usize].name.as_bytes())
        .map_err(|name| GgufError::DuplicateTensor {
            name: String::from_utf8_lossy(name).into_owned(),
        })?;

    let data_offset = align_up(cur.pos as u64, alignment).ok_or_else(|| GgufError::Truncated {
        what: "data section start".into(),
        offset: cur.pos as u64,
        need: alignment,
        file_len,
    })?;

    // Offsets: each tensor starts exactly at the previous end padded to the alignment.
    let mut expected = 0u64;
    for (i, t) in tensors.iter().enumerate() {
        if !t.offset.is_multiple_of(alignment) {
            return Err(GgufError::MisalignedOffset {
                name: t.name.clone(),
                offset: t.offset,
                alignment,
            });
        }
        if t.offset < expected {
            // i > 0 here because `expected` starts at 0.
            let prev = &tensors[i - 1];
            return Err(GgufError::OverlappingTensor {
                name: t.name.clone(),
                offset: t.offset,
                previous: prev.name.clone(),
                previous_end: prev.offset.saturating_add(prev.size_bytes),
            });
        }
        if t.offset > expected {
            return Err(GgufError::UnexpectedOffset {
                name: t.name.clone(),
                offset: t.offset,
                expected,
            });
        }
        let overflow = || GgufError::SizeOverflow {
            name: t.name.clone(),
        };
        let end = t.offset.checked_add(t.size_bytes).ok_or_else(overflow)?;
        let abs_end = data_offset.checked_add(end).ok_or_else(overflow)?;
        if abs_end > file_len {
            return Err(GgufError::DataOutOfBounds {
                name: t.name.clone(),
                end: abs_end,
                file_len,
            });
        }
        expected = align_up(end, alignment).ok_or_else(overflow)?;
    }

    Ok(Parsed {
        version,
        alignment,
        data_offset,
        keys,
        key_order,
        tensors,
        tensor_order,
    })
}

fn read_tensor_info(cur: &mut Cursor<'_>, i: u64) -> Result<TensorInfo, GgufError> {
    let name = cur.string(&|| format!("tensor info #{i} name"))?;
    if name.len() > MAX_NAME_LEN {
        return Err(GgufError::NameTooLong {
            len: name.len(),
            name,
        });
    }
    let n_dims = cur.u32(&|| format!("tensor '{}' n_dims", esc(&name)))?;
    if n_dims == 0 || n_dims as usize > MAX_DIMS {
        return Err(GgufError::BadDimCount {
            name,
            n_dims: n_dims as u64,
        });
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for d in 0..n_dims {
        let ne = cur.u64(&|| format!("tensor '{}' ne[{d}]", esc(&name)))?;
        if ne == 0 {
            return Err(GgufError::ZeroDim {
                name,
                index: d as usize,
            });
        }
        dims.push(ne);
    }
    let type_id = cur.u32(&|| format!("tensor '{}' type", esc(&name)))?;
    let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownGgmlType {
        name: name.clone(),
        type_id,
    })?;
    let offset = cur.u64(&|| format!("tensor '{}' offset", esc(&name)))?;
    let size_bytes = checked_tensor_size(&name, &dims, ggml_type)?;
    Ok(TensorInfo {
        name,
        dims,
        ggml_type,
        offset,
        size_bytes,
    })
}

/// Validates block-size divisibility and computes the byte size without overflow; the element count must
/// also fit in i64 (ggml's `int64_t ne`).
pub(crate) fn checked_tensor_size(
    name: &str,
    dims: &[u64],
    ty: GgmlType,
) -> Result<u64, GgufError> {
    let ne0 = dims.first().copied().unwrap_or(0);
    if !ne0.is_multiple_of(ty.block_size()) {
        return Err(GgufError::BlockSizeMismatch {
            name: name.to_string(),
            ne0,
            ty: ty.name(),
            block_size: ty.block_size(),
        });
    }
    let overflow = || GgufError::SizeOverflow {
        name: name.to_string(),
    };
    let mut n: u64 = 1;
    for &d in dims {
        n = n.checked_mul(d).ok_or_else(overflow)?;
    }
    if n > i64::MAX as u64 {
        return Err(overflow());
    }
    ty.tensor_size(dims).ok_or_else(overflow)
}

fn read_value(cur: &mut Cursor<'_>, ty: ValueType, key: &str) -> Result<Value, GgufError> {
    let what = || format!("key '{}' value", esc(key));
    Ok(match ty {
        ValueType::U8 => Value::U8(cur.array::<1>(&what)?[0]),
        ValueType::I8 => Value::I8(cur.array::<1>(&what)?[0] as i8),
        ValueType::U16 => Value::U16(u16::from_le_bytes(cur.array(&what)?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(cur.array(&what)?)),
        ValueType::U32 => Value::U32(u32::from_le_bytes(cur.array(&what)?)),
        ValueType::I32 => Value::I32(i32::from_le_bytes(cur.array(&what)?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(cur.array(&what)?)),
        ValueType::U64 => Value::U64(u64::from_le_bytes(cur.array(&what)?)),
        ValueType::I64 => Value::I64(i64::from_le_bytes(cur.array(&what)?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(cur.array(&what)?)),
        ValueType::Bool => Value::Bool(to_bool(cur.array::<1>(&what)?[0], key)?),
        ValueType::String => Value::String(cur.string(&what)?),
        ValueType::Array => Value::Array(read_array(cur, key)?),
    })
}

/// Checks one value exactly as [`read_value`] decodes it and moves past it, without building it.
fn skip_value(cur: &mut Cursor<'_>, ty: ValueType, key: &str) -> Result<(), GgufError> {
    let what = || format!("key '{}' value", esc(key));
    match ty {
        ValueType::Bool => {
            to_bool(cur.array::<1>(&what)?[0], key)?;
        }
        ValueType::String => {
            cur.str(&what)?;
        }
        ValueType::Array => {
            let (ty, count) = array_header(cur, key)?;
            let what = || format!("key '{}' array data", esc(key));
            match ty.fixed_size() {
                // count * size <= remaining (checked by array_header), no overflow.
                Some(size) => {
                    let bytes = cur.take(count * size, &what)?;
                    if ty == ValueType::Bool {
                        for &b in bytes {
                            to_bool(b, key)?;
                        }
                    }
                }
                None => {
                    for j in 0..count {
                        cur.str(&|| format!("key '{}' array element {j}", esc(key)))?;
                    }
                }
            }
        }
        fixed => {
            cur.take(fixed.fixed_size().unwrap_or(0), &what)?;
        }
    }
    Ok(())
}

fn to_bool(byte: u8, key: &str) -> Result<bool, GgufError> {
    match byte {
        0 => Ok(false),
        1 => Ok(true),
        byte => Err(GgufError::InvalidBool {
            key: key.to_string(),
            byte,
        }),
    }
}

/// An array's element type and length, the length checked against the bytes left.
fn array_header(cur: &mut Cursor<'_>, key: &str) -> Result<(ValueType, u64), GgufError> {
    let type_id = cur.u32(&|| format!("key '{}' array element type", esc(key)))?;
    let ty = ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
        key: key.to_string(),
        type_id,
    })?;
    if ty == ValueType::Array {
        return Err(GgufError::NestedArray {
            key: key.to_string(),
        });
    }
    let count = cur.u64(&|| format!("key '{}' array length", esc(key)))?;
    let min_elem = ty.fixed_size().unwrap_or(8); // a string is at least its 8-byte length
    let max = cur.remaining() / min_elem;
    if count > max {
        return Err(GgufError::ImplausibleCount {
            what: format!("key '{}' array length", esc(key)),
            count,
            max,
        });
    }
    Ok((ty, count))
}

fn read_array(cur: &mut Cursor<'_>, key: &str) -> Result<Array, GgufError> {
    let (ty, count) = array_header(cur, key)?;
    let what = || format!("key '{}' array data", esc(key));
    if let Some(size) = ty.fixed_size() {
        // count * size <= remaining, no overflow.
        let bytes = cur.take(count * size, &what)?;
        macro_rules! decode {
            ($t:ty, $n:literal) => {
                bytes
                    .chunks_exact($n)
                    .map(|c| {
                        let mut a = [0u8; $n];
                        a.copy_from_slice(c);
                        <$t>::from_le_bytes(a)
                    })
                    .collect()
            };
        }
        return Ok(match ty {
            ValueType::U8 => Array::U8(bytes.to_vec()),
            ValueType::I8 => Array::I8(bytes.iter().map(|&b| b as i8).collect()),
            ValueType::U16 => Array::U16(decode!(u16, 2)),
            ValueType::I16 => Array::I16(decode!(i16, 2)),
            ValueType::U32 => Array::U32(decode!(u32, 4)),
            ValueType::I32 => Array::I32(decode!(i32, 4)),
            ValueType::F32 => Array::F32(decode!(f32, 4)),
            ValueType::U64 => Array::U64(decode!(u64, 8)),
            ValueType::I64 => Array::I64(decode!(i64, 8)),
            ValueType::F64 => Array::F64(decode!(f64, 8)),
            ValueType::Bool => Array::Bool(
                bytes
                    .iter()
                    .map(|&b| to_bool(b, key))
                    .collect::<Result<_, _>>()?,
            ),
            ValueType::String | ValueType::Array => unreachable!("fixed-size types only"),
        });
    }
    let mut v = Vec::with_capacity((count as usize).min(MAX_PREALLOC));
    for j in 0..count {
        v.push(cur.string(&|| format!("key '{}' array element {j}", esc(key)))?);
    }
    Ok(Array::String(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn align_up_is_checked() {
        assert_eq!(align_up(0, 32), Some(0));
        assert_eq!(align_up(1, 32), Some(32));
        assert_eq!(align_up(64, 32), Some(64));
        assert_eq!(align_up(5, 1), Some(5));
        assert_eq!(align_up(u64::MAX, 32), None);
    }

    #[test]
    fn sizes_are_checked() {
        assert_eq!(
            checked_tensor_size("t", &[64, 3], GgmlType::Q8_0).unwrap(),
            204
        );
        assert!(matches!(
            checked_tensor_size("t", &[1 << 40, 1 << 30], GgmlType::I8),
            Err(GgufError::SizeOverflow { .. })
        ));
    }
}
