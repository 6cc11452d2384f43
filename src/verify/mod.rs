//! Validating a file against the spec: the GGUF structure (the reader checks it on open), every
//! Athena weight (format-spec/athena-encoding.md section 8, rules 1-8), NaN and infinity in the
//! standard tensor types (elements of F32/F16/BF16, block scales of Q8_0 and the other quantized
//! types) and the checksums, and a per-tensor report of encodings and bits per weight.

pub mod reference;
pub mod report;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::container::athena::{self, AthenaError};
use crate::container::gguf::finite::{self, NonFinite};
use crate::container::gguf::{escape_name, GgufError, GgufFile};

/// Why a file is not valid. Display is one line naming the file and the tensor or key.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{}", gguf_message(path, source))]
    Gguf {
        path: PathBuf,
        #[source]
        source: GgufError,
    },
    #[error("{}: {source}", path.display())]
    Athena {
        path: PathBuf,
        #[source]
        source: AthenaError,
    },
    /// A standard-type tensor holds NaN or infinity.
    #[error("{}: tensor '{}': {found}", path.display(), escape_name(tensor))]
    NonFinite {
        path: PathBuf,
        tensor: String,
        found: NonFinite,
    },
}

/// An I/O error names the path already ("opening 'x.gguf': is a directory").
fn gguf_message(path: &Path, e: &GgufError) -> String {
    match e {
        GgufError::Io { .. } => e.to_string(),
        _ => format!("{}: {e}", path.display()),
    }
}

/// One tensor of the report: a plain GGUF tensor or a whole Athena weight.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TensorReport {
    pub name: String,
    /// The ggml type name, or `athena` for an Athena weight.
    pub encoding: String,
    /// Athena parameters in words (`d=2 n=256 tile=64x576 i8 r=0`), empty for plain tensors.
    pub params: String,
    /// Row-major shape, outermost first (rows, cols for a matrix).
    pub shape: Vec<u64>,
    pub bytes: u64,
    pub bpw: f64,
}

/// Whole-file figures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    pub file_bytes: u64,
    /// GGUF tensors in the file (Athena components counted one by one).
    pub gguf_tensors: usize,
    pub athena_weights: usize,
    pub plain_tensors: usize,
    /// Weights the file represents: Athena weights' N*M plus plain tensors' elements.
    pub parameters: u64,
    /// 8 * file bytes / parameters.
    pub file_bpw: f64,
    /// 8 * tensor data bytes / parameters (metadata and padding excluded): what
    /// `athena-convert --file-bits` budgets.
    pub tensor_bpw: f64,
    /// Bits per weight of the Athena-encoded linear weights (every Athena weight but the token
    /// embedding and output head): what `athena-convert --bits` budgets; 0 when there are none.
    pub linear_bpw: f64,
    /// Bits per weight of every Athena-encoded weight, the embedding and head included.
    pub athena_bpw: f64,
    /// File bytes that are not tensor data: header, metadata, tensor infos and alignment padding.
    pub container_overhead_bytes: u64,
    /// Tensors whose checksum was verified.
    pub checksums_verified: usize,
}

/// The vocabulary-sized matrices, which `--bits` does not count (the embedding and the head).
const VOCABULARY_MATRICES: [&str; 2] = ["token_embd.weight", "output.weight"];

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub file: String,
    pub valid: bool,
    pub tensors: Vec<TensorReport>,
    pub summary: Summary,
}

/// What to check beyond the structure.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Verify `athena.sha256.<tensor>` for every tensor (required when any such key exists).
    pub checksums: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self { checksums: true }
    }
}

/// Validates `path`; returns the report of a valid file or the first problem found.
pub fn verify_file(path: &Path, options: Options) -> Result<Report, VerifyError> {
    let file = GgufFile::open(path).map_err(|source| VerifyError::Gguf {
        path: path.to_path_buf(),
        source,
    })?;
    verify(&file, path, options)
}

/// Validates an opened file; see [`verify_file`].
pub fn verify(file: &GgufFile, path: &Path, options: Options) -> Result<Report, VerifyError> {
    let athena_err = |source| VerifyError::Athena {
        path: path.to_path_buf(),
        source,
    };
    let weights = athena::stored_weights(file).map_err(athena_err)?;
    for w in &weights {
        w.encoded.check().map_err(|error| {
            athena_err(AthenaError::Decode {
                weight: w.name.clone(),
                error,
            })
        })?;
    }
    let component_of_weight = |name: &str| {
        weights
            .iter()
            .any(|w| w.components.iter().any(|c| c.name == name))
    };
    // The standard-type tensors' values (the Athena components were checked by rule 7 above).
    for t in file
        .tensors
        .iter()
        .filter(|t| !component_of_weight(&t.name))
    {
        if let Some(found) = finite::non_finite(t, file.tensor_data(t)) {
            return Err(VerifyError::NonFinite {
                path: path.to_path_buf(),
                tensor: t.name.clone(),
                found,
            });
        }
    }
    athena::check_checksum_keys(file).map_err(athena_err)?;
    let has_checksums = file.keys().any(|k| k.starts_with(athena::SHA256_PREFIX));
    let mut checksums_verified = 0;
    if options.checksums && (has_checksums || !weights.is_empty()) {
        for t in &file.tensors {
            athena::verify_checksum(file, t).map_err(athena_err)?;
            checksums_verified += 1;
        }
    }

    let mut tensors = Vec::new();
    let mut parameters = 0u64;
    let (mut linear_bits, mut linear_weights) = (0u64, 0u64);
    let (mut athena_bits, mut athena_weights) = (0u64, 0u64);
    for t in &file.tensors {
        if let Some(w) = weights.iter().find(|w| w.components[0].name == t.name) {
            let p = &w.params;
            let params = p.to_string();
            let elements = p.rows * p.cols;
            parameters += elements;
            athena_bits += 8 * w.stored_bytes();
            athena_weights += elements;
            if !VOCABULARY_MATRICES.contains(&w.name.as_str()) {
                linear_bits += 8 * w.stored_bytes();
                linear_weights += elements;
            }
            tensors.push(TensorReport {
                name: w.name.clone(),
                encoding: "athena".into(),
                params,
                shape: vec![p.rows, p.cols],
                bytes: w.stored_bytes(),
                bpw: w.bpw(),
            });
        } else if !component_of_weight(&t.name) {
            let elements = t.n_elements();
            parameters += elements;
            tensors.push(TensorReport {
                name: t.name.clone(),
                encoding: t.ggml_type.name().to_string(),
                params: String::new(),
                shape: t.dims.iter().rev().copied().collect(),
                bytes: t.size_bytes,
                bpw: if elements > 0 {
                    8.0 * t.size_bytes as f64 / elements as f64
                } else {
                    0.0
                },
            });
        }
    }
    let data_bytes: u64 = file.tensors.iter().map(|t| t.size_bytes).sum();
    let file_bytes = file.file_len();
    let summary = Summary {
        file_bytes,
        gguf_tensors: file.tensors.len(),
        athena_weights: weights.len(),
        plain_tensors: tensors.len() - weights.len(),
        parameters,
        file_bpw: if parameters > 0 {
            8.0 * file_bytes as f64 / parameters as f64
        } else {
            0.0
        },
        tensor_bpw: if parameters > 0 {
            8.0 * data_bytes as f64 / parameters as f64
        } else {
            0.0
        },
        linear_bpw: if linear_weights > 0 {
            linear_bits as f64 / linear_weights as f64
        } else {
            0.0
        },
        athena_bpw: if athena_weights > 0 {
            athena_bits as f64 / athena_weights as f64
        } else {
            0.0
        },
        container_overhead_bytes: file_bytes.saturating_sub(data_bytes),
        checksums_verified,
    };
    Ok(Report {
        file: path.display().to_string(),
        valid: true,
        tensors,
        summary,
    })
}
