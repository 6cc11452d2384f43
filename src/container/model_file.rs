//! Writing a complete model file: tensors arrive one at a time (as the quantizer finishes them),
//! but GGUF puts every tensor's checksum key in the header, before the data. So the data goes to
//! a spill file beside the output first, hashed on the way; `finish` then streams header and data
//! into the GGUF writer, which renames its temp file onto the output only when everything is in.
//! Memory stays at one tensor; neither the spill nor a partial output survives an error.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::athena::{self, EncodedWeight};
use super::gguf::{Array, GgmlType, GgufError, GgufWriter, Value};

/// Errors while writing a model file. Display is one line naming the file.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Gguf(#[from] GgufError),
}

struct Entry {
    name: String,
    dims: Vec<u64>,
    ty: GgmlType,
    offset: u64,
    len: u64,
    sha256: String,
}

/// Collects metadata and tensors, then writes the GGUF file; see the module documentation.
pub struct ModelFileWriter {
    out: PathBuf,
    spill_path: PathBuf,
    spill: BufWriter<File>,
    spilled: u64,
    metadata: Vec<(String, Value)>,
    entries: Vec<Entry>,
    athena_weights: Vec<String>,
    /// The lowest encoding version that holds every weight added so far.
    encoding_version: u32,
}

impl ModelFileWriter {
    pub fn create(out: &Path) -> Result<Self, WriteError> {
        let mut spill_name = out.file_name().unwrap_or_default().to_os_string();
        spill_name.push(format!(".spill-{}", std::process::id()));
        let spill_path = out.with_file_name(spill_name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&spill_path)
            .map_err(|source| WriteError::Io {
                path: spill_path.clone(),
                source,
            })?;
        super::temp_files::register(&spill_path);
        Ok(Self {
            out: out.to_path_buf(),
            spill_path,
            spill: BufWriter::new(file),
            spilled: 0,
            metadata: Vec::new(),
            entries: Vec::new(),
            athena_weights: Vec::new(),
            encoding_version: 1,
        })
    }

    pub fn add_metadata(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        self.metadata.push((key.into(), value.into()));
    }

    /// Adds one tensor (GGUF dims, innermost first). The bytes are copied to the spill file.
    pub fn add_tensor(
        &mut self,
        name: &str,
        dims: &[u64],
        ty: GgmlType,
        data: &[u8],
    ) -> Result<(), WriteError> {
        self.spill
            .write_all(data)
            .map_err(|source| WriteError::Io {
                path: self.spill_path.clone(),
                source,
            })?;
        self.entries.push(Entry {
            name: name.to_string(),
            dims: dims.to_vec(),
            ty,
            offset: self.spilled,
            len: data.len() as u64,
            sha256: athena::sha256_hex(data),
        });
        self.spilled += data.len() as u64;
        Ok(())
    }

    /// Adds an Athena weight: its component tensors and its `athena.<W>.*` keys.
    pub fn add_weight(&mut self, weight: &EncodedWeight) -> Result<(), WriteError> {
        for c in &weight.components {
            self.add_tensor(&c.name, &c.dims, c.ty, &c.data)?;
        }
        self.metadata.extend(weight.metadata());
        self.athena_weights.push(weight.name.clone());
        self.encoding_version = self.encoding_version.max(weight.params.encoding_version());
        Ok(())
    }

    /// Writes the GGUF file and renames it onto the output path. Returns the file size.
    pub fn finish(mut self) -> Result<u64, WriteError> {
        let spill_err = |source| WriteError::Io {
            path: self.spill_path.clone(),
            source,
        };
        self.spill.flush().map_err(spill_err)?;
        let mut writer = GgufWriter::new(&self.out);
        for (key, value) in std::mem::take(&mut self.metadata) {
            writer.add_metadata(key, value)?;
        }
        if !self.athena_weights.is_empty() {
            writer.add_metadata(athena::VERSION_KEY, Value::U32(self.encoding_version))?;
            writer.add_metadata(
                athena::TENSORS_KEY,
                Value::Array(Array::String(self.athena_weights.clone())),
            )?;
        }
        for e in &self.entries {
            writer.add_metadata(athena::sha256_key(&e.name), Value::String(e.sha256.clone()))?;
        }
        for e in &self.entries {
            writer.add_tensor(e.name.clone(), &e.dims, e.ty)?;
        }
        let spill = self.spill.get_mut();
        let mut buf = Vec::new();
        for e in &self.entries {
            buf.resize(e.len as usize, 0);
            spill.seek(SeekFrom::Start(e.offset)).map_err(spill_err)?;
            spill.read_exact(&mut buf).map_err(spill_err)?;
            writer.write_tensor_data(&e.name, &buf)?;
        }
        writer.finish()?;
        std::fs::metadata(&self.out)
            .map(|m| m.len())
            .map_err(|source| WriteError::Io {
                path: self.out.clone(),
                source,
            })
    }
}

impl Drop for ModelFileWriter {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.spill_path);
        super::temp_files::forget(&self.spill_path);
    }
}
