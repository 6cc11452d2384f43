//! Streaming GGUF v3 writer.
//!
//! Usage: add metadata and tensor infos, then [`GgufWriter::write_header`] (or let the first tensor write do
//! it), then each tensor's data in tensor-info order, then [`GgufWriter::finish`]. Only the header and one
//! caller-provided buffer are ever in memory.
//!
//! The file is written to `<out>.tmp-<pid>` in the output directory; `finish` flushes, fsyncs and renames
//! it onto `<out>` (then fsyncs the directory, best effort). A writer dropped before `finish` (an error,
//! a panic) deletes its temp file, so `<out>` is never created half-written. A process killed by a signal
//! does not unwind: the command-line tools catch SIGINT/SIGTERM and call `container::temp_files::remove_all`; after
//! SIGKILL the temp file may remain, but `<out>` still never appears.
//!
//! Choices (see format-spec/gguf-container.md): version 3, little-endian; keys and tensors in insertion
//! order; `general.alignment` is written only when the caller sets it (with [`GgufWriter::set_alignment`]
//! or as a u32 metadata value), otherwise the default 32 applies; every tensor's data, including the last,
//! is zero-padded to the alignment, and so is the header.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::GgufError;
use crate::reader::{
    align_up, checked_tensor_size, ALIGNMENT_KEY, DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION,
    MAX_DIMS, MAX_NAME_LEN,
};
use crate::types::GgmlType;
use crate::value::{Array, Value};

struct PendingTensor {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    size: u64,
}

/// Streaming writer; see the module documentation.
pub struct GgufWriter {
    path: PathBuf,
    tmp_path: PathBuf,
    metadata: Vec<(String, Value)>,
    keys: HashSet<String>,
    tensors: Vec<PendingTensor>,
    names: HashSet<String>,
    alignment: u64,
    out: Option<BufWriter<File>>,
    tmp_created: bool,
    /// Index of the next tensor whose data is expected.
    next: usize,
    /// Bytes written so far of the tensor `next`, if it has been begun.
    current: Option<u64>,
    finished: bool,
}

impl GgufWriter {
    /// A writer that will produce `path`. Nothing is created on disk before the header is written.
    pub fn new(path: impl AsRef<Path>) -> Self {
        let path = path.as_ref().to_path_buf();
        let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp_path = path.with_file_name(tmp_name);
        GgufWriter {
            path,
            tmp_path,
            metadata: Vec::new(),
            keys: HashSet::new(),
            tensors: Vec::new(),
            names: HashSet::new(),
            alignment: DEFAULT_ALIGNMENT,
            out: None,
            tmp_created: false,
            next: 0,
            current: None,
            finished: false,
        }
    }

    /// The temporary path the file is written to before `finish`.
    pub fn temp_path(&self) -> &Path {
        &self.tmp_path
    }

    /// The alignment in effect (32 unless `general.alignment` was set).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    fn check_open(&self, what: &str) -> Result<(), GgufError> {
        if self.out.is_some() || self.finished {
            return Err(GgufError::HeaderAlreadyWritten {
                what: what.to_string(),
            });
        }
        Ok(())
    }

    /// Sets the alignment by adding `general.alignment` as u32 (must be a power of two).
    pub fn set_alignment(&mut self, alignment: u32) -> Result<(), GgufError> {
        self.add_metadata(ALIGNMENT_KEY, Value::U32(alignment))
    }

    /// Adds a key/value pair. Keys must be unique; `general.alignment` must be a u32 power of two and sets
    /// the alignment.
    pub fn add_metadata(
        &mut self,
        key: impl Into<String>,
        value: impl Into<Value>,
    ) -> Result<(), GgufError> {
        let key = key.into();
        let value = value.into();
        self.check_open(&format!("adding key '{key}'"))?;
        if self.keys.contains(&key) {
            return Err(GgufError::DuplicateKey { key });
        }
        if key == ALIGNMENT_KEY {
            match value {
                Value::U32(a) if a.is_power_of_two() => self.alignment = a as u64,
                Value::U32(a) => {
                    return Err(GgufError::BadAlignment {
                        alignment: a as u64,
                    })
                }
                ref v => {
                    return Err(GgufError::WrongType {
                        key,
                        expected: "u32",
                        found: v.type_description(),
                    })
                }
            }
        }
        self.keys.insert(key.clone());
        self.metadata.push((key, value));
        Ok(())
    }

    /// Declares a tensor: `dims` in ggml ne order (innermost first).
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: &[u64],
        ty: GgmlType,
    ) -> Result<(), GgufError> {
        let name = name.into();
        self.check_open(&format!("adding tensor '{name}'"))?;
        if name.len() > MAX_NAME_LEN {
            return Err(GgufError::NameTooLong {
                len: name.len(),
                name,
            });
        }
        if self.names.contains(&name) {
            return Err(GgufError::DuplicateTensor { name });
        }
        if dims.is_empty() || dims.len() > MAX_DIMS {
            return Err(GgufError::BadDimCount {
                name,
                n_dims: dims.len() as u64,
            });
        }
        if let Some(index) = dims.iter().position(|&d| d == 0) {
            return Err(GgufError::ZeroDim { name, index });
        }
        let size = checked_tensor_size(&name, dims, ty)?;
        self.names.insert(name.clone());
        self.tensors.push(PendingTensor {
            name,
            dims: dims.to_vec(),
            ty,
            size,
        });
        Ok(())
    }

    /// Exact data size of the declared tensor `name`.
    pub fn tensor_size(&self, name: &str) -> Option<u64> {
        self.tensors.iter().find(|t| t.name == name).map(|t| t.size)
    }

    /// Serializes the header (magic, counts, key/value pairs, tensor infos, padding).
    fn header_bytes(&self) -> Result<Vec<u8>, GgufError> {
        let mut h = Vec::new();
        h.extend_from_slice(&GGUF_MAGIC);
        h.extend_from_slice(&GGUF_VERSION.to_le_bytes());
        h.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        h.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut h, k);
            h.extend_from_slice(&v.value_type().id().to_le_bytes());
            put_value(&mut h, v);
        }
        let mut offset = 0u64;
        for t in &self.tensors {
            let overflow = || GgufError::SizeOverflow {
                name: t.name.clone(),
            };
            put_str(&mut h, &t.name);
            h.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                h.extend_from_slice(&d.to_le_bytes());
            }
            h.extend_from_slice(&t.ty.id().to_le_bytes());
            h.extend_from_slice(&offset.to_le_bytes());
            offset = offset.checked_add(t.size).ok_or_else(overflow)?;
            offset = align_up(offset, self.alignment).ok_or_else(overflow)?;
        }
        let padded = align_up(h.len() as u64, self.alignment).unwrap_or(h.len() as u64);
        h.resize(padded as usize, 0);
        Ok(h)
    }

    /// Creates the temp file and writes the header. Later `add_*` calls fail.
    pub fn write_header(&mut self) -> Result<(), GgufError> {
        self.check_open("writing the header")?;
        let header = self.header_bytes()?;
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.tmp_path)
            .map_err(|e| GgufError::io("creating", &self.tmp_path, e))?;
        self.tmp_created = true;
        crate::temp_files::register(&self.tmp_path);
        let mut out = BufWriter::with_capacity(1 << 20, file);
        out.write_all(&header)
            .map_err(|e| GgufError::io("writing", &self.tmp_path, e))?;
        self.out = Some(out);
        Ok(())
    }

    fn ensure_header(&mut self) -> Result<(), GgufError> {
        if self.out.is_none() {
            self.write_header()?;
        }
        Ok(())
    }

    /// Writes the complete data of tensor `name`, which must be the next one in tensor-info order, and
    /// pads it to the alignment.
    pub fn write_tensor_data(&mut self, name: &str, data: &[u8]) -> Result<(), GgufError> {
        let expected = self.check_next(name)?;
        if self.current.is_none() && data.len() as u64 != expected {
            return Err(GgufError::WrongDataLength {
                name: name.to_string(),
                got: data.len() as u64,
                expected,
            });
        }
        self.begin_tensor(name)?;
        self.write_chunk(data)?;
        self.end_tensor()
    }

    fn check_next(&self, name: &str) -> Result<u64, GgufError> {
        match self.tensors.get(self.next) {
            Some(t) if t.name == name => Ok(t.size),
            Some(t) => Err(GgufError::OutOfOrder {
                name: name.to_string(),
                expected: format!("'{}'", t.name),
            }),
            None => Err(GgufError::OutOfOrder {
                name: name.to_string(),
                expected: "no more tensors".into(),
            }),
        }
    }

    /// Starts streaming the data of tensor `name` in pieces with [`GgufWriter::write_chunk`].
    pub fn begin_tensor(&mut self, name: &str) -> Result<(), GgufError> {
        self.check_next(name)?;
        if self.current.is_some() {
            return Err(GgufError::OutOfOrder {
                name: name.to_string(),
                expected: format!("the end of '{}'", self.tensors[self.next].name),
            });
        }
        self.ensure_header()?;
        self.current = Some(0);
        Ok(())
    }

    /// Appends bytes to the tensor begun with [`GgufWriter::begin_tensor`].
    pub fn write_chunk(&mut self, data: &[u8]) -> Result<(), GgufError> {
        let (t, done) = match (self.tensors.get(self.next), self.current) {
            (Some(t), Some(done)) => (t, done),
            _ => {
                return Err(GgufError::OutOfOrder {
                    name: "(chunk)".into(),
                    expected: "begin_tensor first".into(),
                })
            }
        };
        let got = done.saturating_add(data.len() as u64);
        if got > t.size {
            return Err(GgufError::WrongDataLength {
                name: t.name.clone(),
                got,
                expected: t.size,
            });
        }
        let out = self.out.as_mut().expect("header written by begin_tensor");
        out.write_all(data)
            .map_err(|e| GgufError::io("writing", &self.tmp_path, e))?;
        self.current = Some(got);
        Ok(())
    }

    /// Ends the current tensor: checks its length and writes the padding.
    pub fn end_tensor(&mut self) -> Result<(), GgufError> {
        let (t, done) = match (self.tensors.get(self.next), self.current) {
            (Some(t), Some(done)) => (t, done),
            _ => {
                return Err(GgufError::OutOfOrder {
                    name: "(end)".into(),
                    expected: "begin_tensor first".into(),
                })
            }
        };
        if done != t.size {
            return Err(GgufError::WrongDataLength {
                name: t.name.clone(),
                got: done,
                expected: t.size,
            });
        }
        let pad = align_up(t.size, self.alignment).unwrap_or(t.size) - t.size;
        let out = self.out.as_mut().expect("header written by begin_tensor");
        out.write_all(&vec![0u8; pad as usize])
            .map_err(|e| GgufError::io("writing", &self.tmp_path, e))?;
        self.current = None;
        self.next += 1;
        Ok(())
    }

    /// Checks that every tensor was written, then flushes, fsyncs and renames the temp file onto the
    /// output path.
    pub fn finish(mut self) -> Result<(), GgufError> {
        self.ensure_header()?;
        if let Some(t) = self.tensors.get(self.next) {
            return Err(GgufError::MissingTensorData {
                name: t.name.clone(),
            });
        }
        let out = self.out.take().expect("header written");
        let file = out
            .into_inner()
            .map_err(|e| GgufError::io("writing", &self.tmp_path, e.into_error()))?;
        file.sync_all()
            .map_err(|e| GgufError::io("syncing", &self.tmp_path, e))?;
        drop(file);
        std::fs::rename(&self.tmp_path, &self.path)
            .map_err(|e| GgufError::io("renaming temp file onto", &self.path, e))?;
        self.finished = true;
        crate::temp_files::forget(&self.tmp_path);
        // Make the rename durable; not every platform can open a directory, so this is best effort.
        if let Some(dir) = self.path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Drop for GgufWriter {
    fn drop(&mut self) {
        if !self.finished && self.tmp_created {
            drop(self.out.take());
            let _ = std::fs::remove_file(&self.tmp_path);
            crate::temp_files::forget(&self.tmp_path);
        }
    }
}

fn put_str(h: &mut Vec<u8>, s: &str) {
    h.extend_from_slice(&(s.len() as u64).to_le_bytes());
    h.extend_from_slice(s.as_bytes());
}

fn put_value(h: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => h.push(*x),
        Value::I8(x) => h.push(*x as u8),
        Value::U16(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => h.push(*x as u8),
        Value::String(s) => put_str(h, s),
        Value::U64(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => h.extend_from_slice(&x.to_le_bytes()),
        Value::Array(a) => {
            h.extend_from_slice(&a.elem_type().id().to_le_bytes());
            h.extend_from_slice(&(a.len() as u64).to_le_bytes());
            macro_rules! each {
                ($v:expr) => {
                    for x in $v {
                        h.extend_from_slice(&x.to_le_bytes());
                    }
                };
            }
            match a {
                Array::U8(v) => h.extend_from_slice(v),
                Array::I8(v) => each!(v),
                Array::U16(v) => each!(v),
                Array::I16(v) => each!(v),
                Array::U32(v) => each!(v),
                Array::I32(v) => each!(v),
                Array::F32(v) => each!(v),
                Array::Bool(v) => h.extend(v.iter().map(|&b| b as u8)),
                Array::String(v) => v.iter().for_each(|s| put_str(h, s)),
                Array::U64(v) => each!(v),
                Array::I64(v) => each!(v),
                Array::F64(v) => each!(v),
            }
        }
    }
}
