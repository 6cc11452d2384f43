//! The Athena vector-codebook encoding inside a GGUF file (format-spec/athena-encoding.md):
//! packing a quantized layer into its component tensors and `athena.*` keys, and finding and
//! validating those tensors in a file so the reference decoder can turn them back into f32.

use std::collections::HashSet;

use athena_decode::{CodebookType, DecodeError, Encoded, Params, Parts};

use crate::error::{esc, esc_controls};
use crate::{Array, GgmlType, GgufFile, TensorInfo, Value};

/// The newest encoding version this code writes and reads (spec section 9): 1, 2 for rotated
/// weights, 3 for row scales, 4 for partial last groups (d not dividing the columns). A file is
/// written with the lowest version its weights need.
pub const ENCODING_VERSION: u32 = 4;
pub const VERSION_KEY: &str = "athena.encoding_version";
pub const TENSORS_KEY: &str = "athena.tensors";

/// Component tensor suffixes, appended to the weight name `<W>`.
pub const IDX: &str = ".athena_idx";
pub const CB: &str = ".athena_cb";
pub const CBS: &str = ".athena_cbs";
pub const LRA: &str = ".athena_lra";
pub const LRB: &str = ".athena_lrb";
pub const ROT: &str = ".athena_rot";
pub const RS: &str = ".athena_rs";

/// The prefix of the checksum keys.
pub const SHA256_PREFIX: &str = "athena.sha256.";

/// The metadata key holding the checksum of a tensor's data.
pub fn sha256_key(tensor: &str) -> String {
    format!("{SHA256_PREFIX}{tensor}")
}

fn weight_key(weight: &str, field: &str) -> String {
    format!("athena.{weight}.{field}")
}

/// Errors of the Athena layer of a file. Display is one line naming the weight or key; names
/// from the file are escaped and cut by [`crate::escape_name`] (the fields hold them raw).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AthenaError {
    #[error("key '{}': {}", esc(key), esc_controls(problem))]
    Key { key: String, problem: String },
    #[error("weight '{}': {}", esc(weight), esc_controls(problem))]
    Weight { weight: String, problem: String },
    #[error("weight '{}': {error}", esc(weight))]
    Decode { weight: String, error: DecodeError },
    #[error("tensor '{}': {}", esc(tensor), esc_controls(problem))]
    Checksum { tensor: String, problem: String },
}

/// One component tensor ready to be written: name, GGUF dims (ne order), type and bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    pub data: Vec<u8>,
}

/// A quantized weight in its stored form.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedWeight {
    pub name: String,
    pub params: Params,
    pub components: Vec<Component>,
}

impl EncodedWeight {
    /// Bytes of all components: what the weight costs in the file, padding inside rows included.
    pub fn stored_bytes(&self) -> u64 {
        self.components.iter().map(|c| c.data.len() as u64).sum()
    }

    /// The `athena.<W>.*` keys describing the parameters.
    pub fn metadata(&self) -> Vec<(String, Value)> {
        let p = &self.params;
        let mut keys = vec![
            (
                weight_key(&self.name, "shape"),
                Value::Array(Array::U64(vec![p.rows, p.cols])),
            ),
            (
                weight_key(&self.name, "vector_dim"),
                Value::U32(p.vector_dim),
            ),
            (weight_key(&self.name, "centroids"), Value::U32(p.centroids)),
            (
                weight_key(&self.name, "tile"),
                Value::Array(Array::U32(vec![p.tile_rows as u32, p.tile_cols as u32])),
            ),
            (
                weight_key(&self.name, "codebook_type"),
                Value::String(p.codebook.name().to_string()),
            ),
            (weight_key(&self.name, "lowrank_rank"), Value::U32(p.rank)),
        ];
        if p.rotation > 0 {
            keys.push((weight_key(&self.name, "rotation"), Value::U32(p.rotation)));
        }
        if p.row_scales {
            keys.push((weight_key(&self.name, "row_scales"), Value::Bool(true)));
        }
        keys
    }
}

/// Packs `indices` (row-major rows x groups, each < 2^bits) LSB-first into rows of `stride` bytes.
pub fn pack_indices(indices: &[u32], rows: usize, groups: usize, bits: u32) -> Vec<u8> {
    let stride = (groups * bits as usize).div_ceil(8);
    let mut out = vec![0u8; rows * stride];
    for (row, dst) in indices
        .chunks_exact(groups)
        .zip(out.chunks_exact_mut(stride))
    {
        let mut bit = 0usize;
        for &index in row {
            for b in 0..bits as usize {
                if index >> b & 1 == 1 {
                    let p = bit + b;
                    dst[p / 8] |= 1 << (p % 8);
                }
            }
            bit += bits as usize;
        }
    }
    out
}

/// One component tensor of an encoded weight: name suffix, ggml type and GGUF dims.
pub type ComponentShape = (&'static str, GgmlType, Vec<u64>);

/// The component tensors' suffix, ggml type and GGUF dims for `params` (spec section 3).
pub fn component_layout(params: &Params) -> Result<Vec<ComponentShape>, DecodeError> {
    let (rows, cols) = (params.rows, params.cols);
    let (d, n, rank) = (
        params.vector_dim as u64,
        params.centroids as u64,
        params.rank as u64,
    );
    let tiles = params.codebooks()?;
    let cb_type = if params.codebook == CodebookType::I8 {
        GgmlType::I8
    } else {
        GgmlType::F16
    };
    let mut layout = vec![
        (IDX, GgmlType::I8, vec![params.row_stride_bytes()?, rows]),
        (CB, cb_type, vec![d, n, tiles]),
    ];
    if params.codebook == CodebookType::I8 {
        layout.push((CBS, GgmlType::F16, vec![2, d, tiles]));
    }
    if rank > 0 {
        layout.push((LRA, GgmlType::F16, vec![rank, rows]));
        layout.push((LRB, GgmlType::F16, vec![cols, rank]));
    }
    if params.rotation > 0 {
        layout.push((ROT, GgmlType::I8, vec![params.signs_len()? as u64]));
    }
    if params.row_scales {
        layout.push((RS, GgmlType::F16, vec![rows]));
    }
    Ok(layout)
}

impl EncodedWeight {
    /// Wraps raw component buffers (as the decoder sees them) as the weight `name`.
    /// Panics if `params` are invalid: callers build them from a validated quantizer config.
    pub fn from_parts(name: &str, params: Params, parts: Parts<'_>) -> EncodedWeight {
        let layout = component_layout(&params).expect("valid Athena parameters");
        let components = layout
            .into_iter()
            .map(|(suffix, ty, dims)| {
                let data = match suffix {
                    IDX => parts.indices,
                    CB => parts.codebook,
                    CBS => parts.scales,
                    LRA => parts.lowrank_a,
                    LRB => parts.lowrank_b,
                    ROT => parts.signs,
                    _ => parts.row_scales,
                };
                Component {
                    name: format!("{name}{suffix}"),
                    dims,
                    ty,
                    data: data.to_vec(),
                }
            })
            .collect();
        EncodedWeight {
            name: name.to_string(),
            params,
            components,
        }
    }
}

/// An Athena weight found in a file, its parameters checked and its components located (rules 1-6).
#[derive(Debug, Clone)]
pub struct StoredWeight<'a> {
    pub name: String,
    pub params: Params,
    pub components: Vec<&'a TensorInfo>,
    pub encoded: Encoded<'a>,
}

impl StoredWeight<'_> {
    pub fn stored_bytes(&self) -> u64 {
        self.components.iter().map(|t| t.size_bytes).sum()
    }

    pub fn bpw(&self) -> f64 {
        8.0 * self.stored_bytes() as f64 / (self.params.rows * self.params.cols) as f64
    }
}

fn key_err(key: &str, problem: impl Into<String>) -> AthenaError {
    AthenaError::Key {
        key: key.to_string(),
        problem: problem.into(),
    }
}

fn get<'f>(file: &'f GgufFile, key: &str) -> Result<&'f Value, AthenaError> {
    file.get(key).ok_or_else(|| key_err(key, "missing"))
}

fn get_u32(file: &GgufFile, key: &str) -> Result<u32, AthenaError> {
    match get(file, key)? {
        Value::U32(v) => Ok(*v),
        other => Err(key_err(
            key,
            format!("expected u32, found {}", other.type_description()),
        )),
    }
}

fn get_pair(file: &GgufFile, key: &str, u64s: bool) -> Result<[u64; 2], AthenaError> {
    let value = get(file, key)?;
    let pair = match (value, u64s) {
        (Value::Array(Array::U64(v)), true) if v.len() == 2 => [v[0], v[1]],
        (Value::Array(Array::U32(v)), false) if v.len() == 2 => [v[0] as u64, v[1] as u64],
        _ => {
            let want = if u64s {
                "array of 2 u64"
            } else {
                "array of 2 u32"
            };
            return Err(key_err(
                key,
                format!("expected {want}, found {}", value.type_description()),
            ));
        }
    };
    Ok(pair)
}

/// Reads the weights listed in `athena.tensors`. A file without Athena keys or tensors has none.
pub fn stored_weights(file: &GgufFile) -> Result<Vec<StoredWeight<'_>>, AthenaError> {
    let has_components = file.tensors.iter().any(|t| t.name.contains(".athena_"));
    let version = match file.get(VERSION_KEY) {
        None if file.get(TENSORS_KEY).is_none() && !has_components => return Ok(Vec::new()),
        None => {
            return Err(key_err(
                VERSION_KEY,
                "missing, but the file has Athena tensors",
            ))
        }
        Some(_) => get_u32(file, VERSION_KEY)?,
    };
    if !(1..=ENCODING_VERSION).contains(&version) {
        return Err(key_err(
            VERSION_KEY,
            format!(
                "version {version} is not supported (this reader implements 1 to {ENCODING_VERSION})"
            ),
        ));
    }
    let names = match get(file, TENSORS_KEY)? {
        Value::Array(Array::String(names)) => names,
        other => {
            return Err(key_err(
                TENSORS_KEY,
                format!(
                    "expected array of string, found {}",
                    other.type_description()
                ),
            ))
        }
    };
    let mut seen = HashSet::new();
    let mut owned = HashSet::new();
    let mut weights = Vec::with_capacity(names.len());
    for name in names {
        if !seen.insert(name.as_str()) {
            return Err(key_err(
                TENSORS_KEY,
                format!("weight '{}' is listed twice", esc(name)),
            ));
        }
        let weight = stored_weight(file, name)?;
        owned.extend(weight.components.iter().map(|t| t.name.clone()));
        weights.push(weight);
    }
    if let Some(stray) = file
        .tensors
        .iter()
        .find(|t| t.name.contains(".athena_") && !owned.contains(&t.name))
    {
        return Err(AthenaError::Weight {
            weight: stray.name.clone(),
            problem: "Athena component tensor of no weight listed in athena.tensors".into(),
        });
    }
    // Section 6: the list follows the file order of the weights' index tensors. Every
    // `.athena_idx` tensor belongs to a listed weight (checked above), so the two sequences have
    // the same length.
    let idx_in_file = file.tensors.iter().filter(|t| t.name.ends_with(IDX));
    for (k, (listed, t)) in names.iter().zip(idx_in_file).enumerate() {
        if t.name.strip_suffix(IDX) != Some(listed.as_str()) {
            return Err(key_err(
                TENSORS_KEY,
                format!(
                    "entry {k} is '{}', but the file's index tensor number {k} is '{}': the list \
                     must follow the file order of the .athena_idx tensors",
                    esc(listed),
                    esc(&t.name)
                ),
            ));
        }
    }
    Ok(weights)
}

/// Every `athena.sha256.<tensor>` key names a tensor of the file (spec section 8, rule 8): a
/// checksum of nothing is a sign of a file edited by hand or cut short.
pub fn check_checksum_keys(file: &GgufFile) -> Result<(), AthenaError> {
    for key in file.keys() {
        if let Some(tensor) = key.strip_prefix(SHA256_PREFIX) {
            if file.tensor(tensor).is_none() {
                return Err(key_err(key, "names no tensor of the file"));
            }
        }
    }
    Ok(())
}

/// `athena.<W>.rotation`: absent means 0; present only in files of version 2 or later.
fn rotation_key(file: &GgufFile, name: &str) -> Result<u32, AthenaError> {
    let key = weight_key(name, "rotation");
    if file.get(&key).is_none() {
        return Ok(0);
    }
    let version = get_u32(file, VERSION_KEY)?;
    if version < 2 {
        return Err(key_err(
            &key,
            format!("not allowed in encoding version {version} (rotations need version 2)"),
        ));
    }
    get_u32(file, &key)
}

/// `athena.<W>.row_scales`: absent means false; present only in files of version 3 or later.
fn row_scales_key(file: &GgufFile, name: &str) -> Result<bool, AthenaError> {
    let key = weight_key(name, "row_scales");
    let value = match file.get(&key) {
        None => return Ok(false),
        Some(v) => v,
    };
    let version = get_u32(file, VERSION_KEY)?;
    if version < 3 {
        return Err(key_err(
            &key,
            format!("not allowed in encoding version {version} (row scales need version 3)"),
        ));
    }
    match value {
        Value::Bool(b) => Ok(*b),
        other => Err(key_err(
            &key,
            format!("expected bool, found {}", other.type_description()),
        )),
    }
}

/// Reads one weight `name` (listed in `athena.tensors`): its keys, parameters and components.
pub fn stored_weight<'f>(file: &'f GgufFile, name: &str) -> Result<StoredWeight<'f>, AthenaError> {
    let werr = |problem: String| AthenaError::Weight {
        weight: name.to_string(),
        problem,
    };
    if name.starts_with("sha256.") {
        return Err(key_err(
            TENSORS_KEY,
            format!(
                "weight name '{}' collides with the checksum keys",
                esc(name)
            ),
        ));
    }
    if file.tensor(name).is_some() {
        return Err(werr("a plain tensor of the same name exists".into()));
    }
    let [rows, cols] = get_pair(file, &weight_key(name, "shape"), true)?;
    let [tile_rows, tile_cols] = get_pair(file, &weight_key(name, "tile"), false)?;
    let cb_key = weight_key(name, "codebook_type");
    let codebook = match get(file, &cb_key)? {
        Value::String(s) => CodebookType::from_name(s).ok_or_else(|| {
            key_err(
                &cb_key,
                format!(
                    "unknown codebook type '{}' (expected \"i8\" or \"f16\")",
                    esc(s)
                ),
            )
        })?,
        other => {
            return Err(key_err(
                &cb_key,
                format!("expected string, found {}", other.type_description()),
            ))
        }
    };
    let params = Params {
        rows,
        cols,
        vector_dim: get_u32(file, &weight_key(name, "vector_dim"))?,
        centroids: get_u32(file, &weight_key(name, "centroids"))?,
        tile_rows,
        tile_cols,
        rank: get_u32(file, &weight_key(name, "lowrank_rank"))?,
        codebook,
        rotation: rotation_key(file, name)?,
        row_scales: row_scales_key(file, name)?,
    };
    let decode_err = |error| AthenaError::Decode {
        weight: name.to_string(),
        error,
    };
    params.validate().map_err(decode_err)?;
    let version = get_u32(file, VERSION_KEY)?;
    if params.encoding_version() == 4 && version < 4 {
        return Err(werr(format!(
            "vector_dim {} does not divide cols {} (a partial last group), which needs encoding \
             version 4, but the file has version {version}",
            params.vector_dim, params.cols
        )));
    }
    let expected = component_layout(&params).map_err(decode_err)?;
    let mut components = Vec::new();
    for (suffix, ty, dims) in &expected {
        let tname = format!("{name}{suffix}");
        let t = file
            .tensor(&tname)
            .ok_or_else(|| werr(format!("component tensor '{}' is missing", esc(&tname))))?;
        if t.ggml_type != *ty || &t.dims != dims {
            return Err(werr(format!(
                "component '{}' is {} {:?}, the spec requires {} {:?}",
                esc(&tname),
                t.ggml_type.name(),
                t.dims,
                ty.name(),
                dims
            )));
        }
        components.push(t);
    }
    for suffix in [CBS, LRA, LRB, ROT, RS] {
        let tname = format!("{name}{suffix}");
        if !expected.iter().any(|e| e.0 == suffix) && file.tensor(&tname).is_some() {
            return Err(werr(format!(
                "component tensor '{}' must be absent for these parameters",
                esc(&tname)
            )));
        }
    }
    let data = |suffix: &str| {
        components
            .iter()
            .find(|t| t.name.ends_with(suffix))
            .map_or(&[][..], |t| file.tensor_data(t))
    };
    let parts = Parts {
        indices: data(IDX),
        codebook: data(CB),
        scales: data(CBS),
        lowrank_a: data(LRA),
        lowrank_b: data(LRB),
        signs: data(ROT),
        row_scales: data(RS),
    };
    let encoded = Encoded::new(params, parts).map_err(decode_err)?;
    Ok(StoredWeight {
        name: name.to_string(),
        params,
        components,
        encoded,
    })
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks one tensor's data against its `athena.sha256.<tensor>` key.
pub fn verify_checksum(file: &GgufFile, t: &TensorInfo) -> Result<(), AthenaError> {
    let key = sha256_key(&t.name);
    let err = |problem: String| AthenaError::Checksum {
        tensor: t.name.clone(),
        problem,
    };
    let want = match file.get(&key) {
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(err(format!(
                "key '{}' is {}, expected string",
                esc(&key),
                other.type_description()
            )))
        }
        None => return Err(err(format!("no checksum key '{}'", esc(&key)))),
    };
    let got = sha256_hex(file.tensor_data(t));
    if &got != want {
        return Err(err(format!(
            "sha256 mismatch: data has {got}, key says {}",
            esc(want)
        )));
    }
    Ok(())
}
