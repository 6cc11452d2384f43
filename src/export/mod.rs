//! Standard llama.cpp GGUF export: any [`TensorSource`] to a GGUF file stock llama.cpp runs, with
//! tensors in F32, F16, BF16 or Q8_0.
//!
//! One concern per file: [`metadata`] (general and `<arch>.*` keys), [`tokenizer`] (`tokenizer.*`
//! keys from HF tokenizer files), [`pretokenizer`] (which llama.cpp pre-tokenizer), [`plain`] (the
//! tensor encodings). This module plans the tensors (GGUF names, dims, the llama q/k permutation,
//! tied embeddings) and drives [`ModelFileWriter`]. The planning pieces ([`plan_tensors`],
//! [`to_gguf_layout`], [`metadata::model_metadata`]) are public so the Athena quantizing pipeline
//! writes the same names, layout and metadata into its own file.
//!
//! Memory: one tensor at a time (its f32 data, a permuted copy for q/k, and its encoded bytes);
//! [`ModelFileWriter`] spills the bytes to disk until the header can be written.

pub mod metadata;
pub mod plain;
pub mod pretokenizer;
pub mod tokenizer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use plain::PlainType;
pub use tokenizer::TokenizerFiles;

use crate::checkpoint::names::{self, QkRole};
use crate::checkpoint::{Architecture, CheckpointError, DenseTensor, ModelConfig, TensorSource};
use crate::container::gguf::{GgmlType, MAX_DIMS, MAX_NAME_LEN};
use crate::container::model_file::{ModelFileWriter, WriteError};
use pretokenizer::PreMatch;

/// Errors of an export. Display is one line naming the file or tensor at fault.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("tensor '{name}': {message}")]
    Tensor { name: String, message: String },
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// One source tensor as it goes into the GGUF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorPlan {
    pub hf_name: String,
    pub gguf_name: String,
    /// HF shape, outermost first.
    pub hf_shape: Vec<usize>,
    /// GGUF dims, innermost first (`ne` order): the reversed HF shape.
    pub dims: Vec<u64>,
    /// `Some(n_head)` when the rows are permuted for llama's RoPE layout (q/k of llama/mistral).
    pub qk_heads: Option<usize>,
    /// Gemma's norms: llama.cpp stores `1 + weight`.
    pub adds_one: bool,
    /// HF tensors whose rows are stacked into this one (Phi-3's `ffn_up` holds gate then up);
    /// empty for a tensor of its own.
    pub parts: Vec<String>,
}

/// Source tensors that carry no weights and are dropped, as llama.cpp's converter does.
fn is_ignored(hf_name: &str) -> bool {
    hf_name.ends_with(".rotary_emb.inv_freq")
}

/// Plans every tensor of a source: GGUF name, dims and q/k permutation, in llama.cpp's usual
/// order (token embedding, blocks by layer, output norm, output). With tied embeddings an
/// `lm_head.weight` in the source is left out (llama.cpp reuses `token_embd.weight`).
pub fn plan_tensors(source: &dyn TensorSource) -> Result<Vec<TensorPlan>, ExportError> {
    let config = source.config();
    let mut plans = Vec::new();
    for hf_name in source.tensor_names() {
        if is_ignored(&hf_name) || (config.tie_word_embeddings && hf_name == "lm_head.weight") {
            continue;
        }
        let shape = source.shape(&hf_name)?;
        if config.architecture.fused_projections() {
            // Phi-3: llama.cpp's phi3 takes gate and up as one ffn_up of 2 x intermediate rows.
            if hf_name.ends_with(".mlp.up_proj.weight") {
                continue;
            }
            if let Some(layer) = hf_name.strip_suffix(".mlp.gate_proj.weight") {
                let up = format!("{layer}.mlp.up_proj.weight");
                let up_shape = source.shape(&up)?;
                if up_shape != shape || shape.len() != 2 {
                    return Err(ExportError::Tensor {
                        name: up,
                        message: format!("shape {up_shape:?} differs from the gate's {shape:?}"),
                    });
                }
                let mut plan = plan_tensor(config, &up, &[2 * shape[0], shape[1]])?;
                plan.parts = vec![hf_name.clone(), up];
                plans.push(plan);
                continue;
            }
        }
        plans.push(plan_tensor(config, &hf_name, &shape)?);
    }
    if !plans.iter().any(|p| p.gguf_name == "token_embd.weight") {
        return Err(ExportError::Tensor {
            name: "model.embed_tokens.weight".into(),
            message: "missing from the source".into(),
        });
    }
    plans.sort_by_key(|p| order_key(&p.gguf_name));
    Ok(plans)
}

/// Plans one tensor (see [`plan_tensors`]).
pub fn plan_tensor(
    config: &ModelConfig,
    hf_name: &str,
    hf_shape: &[usize],
) -> Result<TensorPlan, ExportError> {
    let err = |message: String| ExportError::Tensor {
        name: hf_name.to_string(),
        message,
    };
    let gguf_name = names::hf_to_gguf(config.architecture, hf_name).ok_or_else(|| {
        err("no llama.cpp name for this tensor (unsupported model variant)".into())
    })?;
    if gguf_name.len() > MAX_NAME_LEN {
        return Err(err(format!(
            "GGUF name '{gguf_name}' is longer than {MAX_NAME_LEN} bytes"
        )));
    }
    if hf_shape.is_empty() || hf_shape.len() > MAX_DIMS || hf_shape.contains(&0) {
        return Err(err(format!(
            "shape {hf_shape:?} is not 1 to {MAX_DIMS} non-zero dims"
        )));
    }
    let qk_heads = match (config.architecture, names::qk_role(hf_name)) {
        (Architecture::Llama | Architecture::Mistral, Some(QkRole::Query)) => {
            Some(config.num_attention_heads)
        }
        (Architecture::Llama | Architecture::Mistral, Some(QkRole::Key)) => {
            Some(config.num_key_value_heads)
        }
        _ => None,
    };
    if let Some(n_head) = qk_heads {
        let rows = hf_shape[0];
        if n_head == 0 || !rows.is_multiple_of(n_head) || !(rows / n_head).is_multiple_of(2) {
            return Err(err(format!(
                "{rows} rows do not split into {n_head} heads of even size for the RoPE permutation"
            )));
        }
    }
    Ok(TensorPlan {
        hf_name: hf_name.to_string(),
        gguf_name,
        hf_shape: hf_shape.to_vec(),
        dims: hf_shape.iter().rev().map(|&d| d as u64).collect(),
        qk_heads,
        adds_one: config.architecture.norm_adds_one() && hf_name.ends_with("norm.weight"),
        parts: Vec::new(),
    })
}

/// Loads the source tensor(s) of a plan: its own, or its parts stacked by rows.
pub fn load_planned(
    source: &dyn TensorSource,
    plan: &TensorPlan,
) -> Result<DenseTensor, ExportError> {
    if plan.parts.is_empty() {
        return Ok(source.load(&plan.hf_name)?);
    }
    let mut data = Vec::with_capacity(plan.hf_shape.iter().product());
    for part in &plan.parts {
        data.extend(source.load(part)?.data);
    }
    Ok(DenseTensor {
        shape: plan.hf_shape.clone(),
        data,
    })
}

/// Sort key: token_embd, then blocks by layer (source order within a layer), output_norm, output.
fn order_key(gguf_name: &str) -> (u8, usize) {
    match gguf_name {
        "token_embd.weight" => (0, 0),
        "output_norm.weight" => (2, 0),
        "output.weight" => (3, 0),
        _ => {
            let layer = gguf_name
                .strip_prefix("blk.")
                .and_then(|r| r.split('.').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(usize::MAX);
            (1, layer)
        }
    }
}

/// Converts a loaded tensor to GGUF element order: checks its shape against the plan and applies
/// the llama q/k row permutation when planned. The element order is otherwise unchanged (HF
/// row-major equals GGUF `ne` order).
pub fn to_gguf_layout(plan: &TensorPlan, t: DenseTensor) -> Result<Vec<f32>, ExportError> {
    let err = |message: String| ExportError::Tensor {
        name: plan.hf_name.clone(),
        message,
    };
    if t.shape != plan.hf_shape {
        return Err(err(format!(
            "loaded shape {:?} differs from the declared {:?}",
            t.shape, plan.hf_shape
        )));
    }
    let n: usize = plan.hf_shape.iter().product();
    if t.data.len() != n {
        return Err(err(format!(
            "{} values for shape {:?}",
            t.data.len(),
            plan.hf_shape
        )));
    }
    if plan.adds_one {
        return Ok(t.data.into_iter().map(|x| x + 1.0).collect());
    }
    match plan.qk_heads {
        None => Ok(t.data),
        Some(n_head) => {
            let rows = plan.hf_shape[0];
            names::permute_qk(&t.data, rows, n / rows, n_head)
                .map_err(|e| err(format!("RoPE permutation: {e}")))
        }
    }
}

/// Writes [`metadata::rope_tensors`] (F32, first in the file as llama.cpp's converter writes
/// them); returns how many and their data bytes.
pub fn add_rope_tensors(
    writer: &mut ModelFileWriter,
    config: &ModelConfig,
) -> Result<(usize, u64), ExportError> {
    let tensors = metadata::rope_tensors(config)?;
    let mut bytes_total = 0;
    for (name, data) in &tensors {
        let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        writer.add_tensor(name, &[data.len() as u64], GgmlType::F32, &bytes)?;
        bytes_total += bytes.len() as u64;
    }
    Ok((tensors.len(), bytes_total))
}

/// Options of [`export_plain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainOptions {
    pub ty: PlainType,
    /// `general.name`.
    pub name: String,
}

/// Progress of an export, reported to the caller's callback.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Progress<'a> {
    /// Metadata is built; `tensors` tensors follow.
    Start { tensors: usize },
    /// Tensor `index` (0-based) has been encoded and spilled.
    Tensor {
        index: usize,
        name: &'a str,
        ty: GgmlType,
        bytes: usize,
    },
    /// All tensors are in; the GGUF file is being assembled.
    Writing,
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSummary {
    pub tensors: usize,
    /// Output file size in bytes.
    pub file_bytes: u64,
    /// Number of tensors per ggml type name.
    pub types: BTreeMap<&'static str, usize>,
    pub pre: Option<PreMatch>,
}

/// Writes `source` as a standard llama.cpp GGUF file at `out`. The tokenizer metadata comes from
/// `tokenizer` ([`TokenizerFiles::read`] for an HF folder). The metadata is built before any file
/// is created; on any error no output (and no spill file) is left behind.
pub fn export_plain(
    source: &dyn TensorSource,
    tokenizer: &TokenizerFiles,
    out: &Path,
    opts: &PlainOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<ExportSummary, ExportError> {
    let config = source.config();
    let meta = metadata::model_metadata(config, tokenizer, &opts.name, opts.ty.file_type())?;
    let plans = plan_tensors(source)?;
    let mut writer = ModelFileWriter::create(out)?;
    for (key, value) in meta.keys {
        writer.add_metadata(key, value);
    }
    progress(Progress::Start {
        tensors: plans.len(),
    });
    let mut types = BTreeMap::new();
    let (rope_tensors, _) = add_rope_tensors(&mut writer, config)?;
    if rope_tensors > 0 {
        types.insert(GgmlType::F32.name(), rope_tensors);
    }
    for (index, plan) in plans.iter().enumerate() {
        let data = to_gguf_layout(plan, load_planned(source, plan)?)?;
        let ty = plain::tensor_type(opts.ty, &plan.gguf_name, &plan.dims);
        let bytes = plain::encode(ty, &data).map_err(|e| ExportError::Tensor {
            name: plan.hf_name.clone(),
            message: e.to_string(),
        })?;
        drop(data);
        writer.add_tensor(&plan.gguf_name, &plan.dims, ty, &bytes)?;
        *types.entry(ty.name()).or_insert(0) += 1;
        progress(Progress::Tensor {
            index,
            name: &plan.gguf_name,
            ty,
            bytes: bytes.len(),
        });
    }
    progress(Progress::Writing);
    let file_bytes = writer.finish()?;
    Ok(ExportSummary {
        tensors: plans.len(),
        file_bytes,
        types,
        pre: meta.pre,
    })
}
