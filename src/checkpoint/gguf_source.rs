//! A llama.cpp GGUF file as a [`TensorSource`]: HF names, HF shapes, f32 data.
//!
//! - Config: from the `<arch>.*` metadata keys llama.cpp's converter writes (see [`config_from_gguf`]).
//! - Names: [`super::names`] maps `blk.N.attn_q.weight` to `model.layers.N.self_attn.q_proj.weight`
//!   and so on; GGUF tensors without an HF counterpart are refused (see [`GgufSource::open`]).
//! - Shapes: GGUF dims are innermost first (`ne[0]` is the row length), HF shapes outermost first,
//!   so the shape is the reversed dims and the element order is already row-major.
//! - Data: dequantized with candle's ggml block types (the same code candle runs models with).
//! - Layout: for the llama architecture the q/k row permutation of llama.cpp's converter is undone.

use std::path::{Path, PathBuf};

use candle_core::quantized::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8K, BlockQ8_0, GgmlType as CandleBlock,
};

use super::config::FREQUENCY_FACTORS;
use super::names::{self, QkRole};
use super::{
    Architecture, CheckpointError, DenseTensor, LocalAttention, ModelConfig, RopeScaling,
    TensorSource,
};
use crate::container::athena;
use crate::container::gguf::{GgmlType, GgufFile, TensorInfo};

/// llama.cpp's llama3 RoPE frequency factors (one per rotated pair, dividing its frequency).
pub const ROPE_FREQS: &str = "rope_freqs.weight";
/// Phi-3's longrope factor lists (read into the config).
const ROPE_FACTORS_LONG: &str = "rope_factors_long.weight";
const ROPE_FACTORS_SHORT: &str = "rope_factors_short.weight";

/// A GGUF checkpoint, memory-mapped; tensors are dequantized on each [`TensorSource::load`].
pub struct GgufSource {
    path: PathBuf,
    file: GgufFile,
    config: ModelConfig,
    /// One entry per tensor, in GGUF file order.
    entries: Vec<Entry>,
}

struct Entry {
    hf_name: String,
    /// Where the data is: a plain tensor or an Athena weight.
    storage: Storage,
    /// HF shape (outermost first).
    shape: Vec<usize>,
}

enum Storage {
    /// Index into `file.tensors`.
    Plain(usize),
    /// Rows `first..first + count` of a plain tensor (a part of Phi-3's fused `attn_qkv` or
    /// `ffn_up`).
    PlainRows { index: usize, first: usize },
    /// An Athena weight (format-spec/athena-encoding.md) with this GGUF name, decoded by the
    /// reference decoder.
    Athena(String),
}

impl std::fmt::Debug for GgufSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufSource")
            .field("path", &self.path)
            .field("config", &self.config)
            .field("tensors", &self.entries.len())
            .finish()
    }
}

impl GgufSource {
    /// Opens and validates a GGUF file: reads the config, maps every tensor name, and checks every
    /// tensor's shape against the config. Fails on a tensor without an HF name (e.g. llama3's
    /// `rope_freqs.weight`), since dropping it would silently change the model.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        let path = path.as_ref().to_path_buf();
        let file = GgufFile::open(&path).map_err(|e| invalid(&path, e.to_string()))?;
        Self::from_file(path, file)
    }

    /// As [`GgufSource::open`], for an already parsed file; `path` is used in messages.
    pub fn from_file(path: PathBuf, file: GgufFile) -> Result<Self, CheckpointError> {
        let config = config_from_gguf(&path, &file)?;
        let mut entries = Vec::with_capacity(file.tensors.len());
        let weights = athena::stored_weights(&file).map_err(|e| invalid(&path, e.to_string()))?;
        for w in &weights {
            let hf_name = names::gguf_to_hf(config.architecture, &w.name).ok_or_else(|| {
                bad(
                    &path,
                    &w.name,
                    "no Hugging Face counterpart for this Athena weight",
                )
            })?;
            let shape = vec![w.params.rows as usize, w.params.cols as usize];
            if let Some(want) = expected_shape(&config, &hf_name) {
                if want != shape {
                    return Err(bad(
                        &path,
                        &w.name,
                        format!("shape {shape:?} does not match the config, expected {want:?}"),
                    ));
                }
            }
            entries.push(Entry {
                hf_name,
                storage: Storage::Athena(w.name.clone()),
                shape,
            });
        }
        let components: std::collections::HashSet<&str> = weights
            .iter()
            .flat_map(|w| w.components.iter().map(|t| t.name.as_str()))
            .collect();
        for (index, t) in file.tensors.iter().enumerate() {
            // The RoPE factor tensors are read into the config.
            if components.contains(t.name.as_str())
                || [ROPE_FREQS, ROPE_FACTORS_LONG, ROPE_FACTORS_SHORT].contains(&t.name.as_str())
            {
                continue;
            }
            if let Some(parts) = fused_parts(&config, &file, &t.name) {
                let cols = t.dims.first().copied().unwrap_or(0) as usize;
                let rows: usize = parts.iter().map(|(_, r)| r).sum();
                if t.dims.len() != 2 || t.dims[1] as usize != rows {
                    return Err(bad(
                        &path,
                        &t.name,
                        format!("dims {:?}, expected [{cols}, {rows}]", t.dims),
                    ));
                }
                let mut first = 0;
                for (hf_name, rows) in parts {
                    entries.push(Entry {
                        hf_name,
                        storage: Storage::PlainRows { index, first },
                        shape: vec![rows, cols],
                    });
                    first += rows;
                }
                continue;
            }
            let hf_name = names::gguf_to_hf(config.architecture, &t.name).ok_or_else(|| {
                bad(
                    &path,
                    &t.name,
                    "no Hugging Face counterpart for this GGUF tensor (unsupported model variant)",
                )
            })?;
            let shape = t
                .dims
                .iter()
                .rev()
                .map(|&d| {
                    usize::try_from(d).map_err(|_| bad(&path, &t.name, "dimension too large"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(want) = expected_shape(&config, &hf_name) {
                if want != shape {
                    return Err(bad(
                        &path,
                        &t.name,
                        format!("shape {shape:?} (HF order) does not match the config, expected {want:?}"),
                    ));
                }
            }
            entries.push(Entry {
                hf_name,
                storage: Storage::Plain(index),
                shape,
            });
        }
        // Every tensor the config implies is here (the shapes of those present were checked
        // above), so a model never fails on a missing tensor after its first blocks have run.
        // And nothing else: a block beyond block_count or a bias the first block lacks would be
        // carried along or dropped without a word.
        let present: std::collections::HashSet<&str> =
            entries.iter().map(|e| e.hf_name.as_str()).collect();
        let mut expected = std::collections::HashSet::new();
        for (hf_name, _) in super::each_expected_tensor(&config) {
            if !present.contains(hf_name.as_str()) {
                return Err(missing(&path, config.architecture, &hf_name));
            }
            expected.insert(hf_name);
        }
        if let Some(extra) = entries.iter().find(|e| !expected.contains(&e.hf_name)) {
            let name = match &extra.storage {
                Storage::Plain(index) | Storage::PlainRows { index, .. } => {
                    file.tensors[*index].name.as_str()
                }
                Storage::Athena(w) => w.as_str(),
            };
            return Err(bad(
                &path,
                name,
                format!(
                    "not part of the model the metadata describes ({} blocks{})",
                    config.num_hidden_layers,
                    match config.attention_bias {
                        true => ", q/k/v biases",
                        false => ", no q/k/v biases as blk.0 has none",
                    }
                ),
            ));
        }
        Ok(GgufSource {
            path,
            file,
            config,
            entries,
        })
    }

    /// The path the source was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The parsed GGUF file (metadata, including the tokenizer vocabulary).
    pub fn gguf(&self) -> &GgufFile {
        &self.file
    }

    /// The GGUF tensor info behind an HF name.
    pub fn tensor_info(&self, hf_name: &str) -> Option<&TensorInfo> {
        match self.entry(hf_name)?.storage {
            Storage::Plain(index) => Some(&self.file.tensors[index]),
            Storage::PlainRows { .. } | Storage::Athena(_) => None,
        }
    }

    fn entry(&self, hf_name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.hf_name == hf_name)
    }
}

impl TensorSource for GgufSource {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn tensor_names(&self) -> Vec<String> {
        self.entries.iter().map(|e| e.hf_name.clone()).collect()
    }

    fn shape(&self, name: &str) -> Result<Vec<usize>, CheckpointError> {
        self.entry(name)
            .map(|e| e.shape.clone())
            .ok_or_else(|| missing(&self.path, self.config.architecture, name))
    }

    fn load(&self, name: &str) -> Result<DenseTensor, CheckpointError> {
        let entry = self
            .entry(name)
            .ok_or_else(|| missing(&self.path, self.config.architecture, name))?;
        let n = entry.shape.iter().product::<usize>();
        let (gguf_name, data) = match &entry.storage {
            Storage::Plain(index) => {
                let info = &self.file.tensors[*index];
                let bytes = self.file.tensor_data(info);
                let data = dequantize(info.ggml_type, bytes, n)
                    .map_err(|m| bad(&self.path, &info.name, m))?;
                (info.name.as_str(), data)
            }
            Storage::PlainRows { index, first } => {
                let info = &self.file.tensors[*index];
                let all = dequantize(
                    info.ggml_type,
                    self.file.tensor_data(info),
                    info.n_elements() as usize,
                )
                .map_err(|m| bad(&self.path, &info.name, m))?;
                let cols = entry.shape[1];
                (
                    info.name.as_str(),
                    all[first * cols..first * cols + n].to_vec(),
                )
            }
            Storage::Athena(w) => {
                let weight = athena::stored_weight(&self.file, w)
                    .map_err(|e| invalid(&self.path, e.to_string()))?;
                let decoded = weight
                    .encoded
                    .check()
                    .and_then(|()| weight.encoded.decode())
                    .map_err(|e| bad(&self.path, w, e.to_string()))?;
                (w.as_str(), decoded)
            }
        };
        let non_finite = data.iter().filter(|x| !x.is_finite()).count();
        if non_finite > 0 {
            return Err(bad(
                &self.path,
                gguf_name,
                format!("{non_finite} of {n} values are not finite (NaN or infinity)"),
            ));
        }
        // Gemma: llama.cpp's converter stores 1 + the HF weight of every norm.
        let data = if self.config.architecture.norm_adds_one() && name.ends_with("norm.weight") {
            data.into_iter().map(|x| x - 1.0).collect()
        } else {
            data
        };
        let data = match (self.config.architecture, names::qk_role(name)) {
            (Architecture::Llama | Architecture::Mistral, Some(role)) => {
                let n_head = match role {
                    QkRole::Query => self.config.num_attention_heads,
                    QkRole::Key => self.config.num_key_value_heads,
                };
                let rows = entry.shape[0];
                let cols = n / rows.max(1);
                names::unpermute_qk(&data, rows, cols, n_head).map_err(|e| {
                    bad(
                        &self.path,
                        gguf_name,
                        format!("undoing the q/k permutation: {e}"),
                    )
                })?
            }
            _ => data,
        };
        Ok(DenseTensor {
            shape: entry.shape.clone(),
            data,
        })
    }
}

/// Phi-3's fused tensors as llama.cpp stores them: `blk.N.attn_qkv.weight` (q, k, v rows) and,
/// without `blk.N.ffn_gate.weight`, `blk.N.ffn_up.weight` of twice the MLP rows (gate, up):
/// the HF names and row counts of the parts, in order.
fn fused_parts(c: &ModelConfig, f: &GgufFile, name: &str) -> Option<Vec<(String, usize)>> {
    if !c.architecture.fused_projections() {
        return None;
    }
    let rest = name.strip_prefix("blk.")?;
    let (layer, suffix) = rest.split_once('.')?;
    let p = format!("model.layers.{layer}");
    let (q, kv) = (
        c.num_attention_heads * c.head_dim,
        c.num_key_value_heads * c.head_dim,
    );
    match suffix {
        "attn_qkv.weight" => Some(vec![
            (format!("{p}.self_attn.q_proj.weight"), q),
            (format!("{p}.self_attn.k_proj.weight"), kv),
            (format!("{p}.self_attn.v_proj.weight"), kv),
        ]),
        "ffn_up.weight"
            if f.tensor(&format!("blk.{layer}.ffn_gate.weight")).is_none()
                && !is_athena_weight(f, &format!("blk.{layer}.ffn_gate.weight")) =>
        {
            Some(vec![
                (format!("{p}.mlp.gate_proj.weight"), c.intermediate_size),
                (format!("{p}.mlp.up_proj.weight"), c.intermediate_size),
            ])
        }
        _ => None,
    }
}

/// The HF shape the config implies for a tensor (`None` for names it says nothing about).
fn expected_shape(c: &ModelConfig, hf_name: &str) -> Option<Vec<usize>> {
    let h = c.hidden_size;
    let q = c.num_attention_heads * c.head_dim;
    let kv = c.num_key_value_heads * c.head_dim;
    let shape = match hf_name {
        "model.embed_tokens.weight" | "lm_head.weight" => vec![c.vocab_size, h],
        "model.norm.weight" => vec![h],
        _ => {
            let rest = hf_name.strip_prefix("model.layers.")?;
            let (_, suffix) = rest.split_once('.')?;
            match suffix {
                "input_layernorm.weight"
                | "post_attention_layernorm.weight"
                | "pre_feedforward_layernorm.weight"
                | "post_feedforward_layernorm.weight" => vec![h],
                "self_attn.q_norm.weight" | "self_attn.k_norm.weight" => vec![c.head_dim],
                "self_attn.q_proj.weight" => vec![q, h],
                "self_attn.q_proj.bias" => vec![q],
                "self_attn.k_proj.weight" | "self_attn.v_proj.weight" => vec![kv, h],
                "self_attn.k_proj.bias" | "self_attn.v_proj.bias" => vec![kv],
                "self_attn.o_proj.weight" => vec![h, q],
                "mlp.gate_proj.weight" | "mlp.up_proj.weight" => vec![c.intermediate_size, h],
                "mlp.down_proj.weight" => vec![h, c.intermediate_size],
                _ => return None,
            }
        }
    };
    Some(shape)
}

/// Builds the model config from GGUF metadata. Keys, with `<arch>` = `general.architecture`:
/// `<arch>.block_count`, `.embedding_length`, `.feed_forward_length`, `.attention.head_count`,
/// `.attention.head_count_kv` (default: head_count), `.attention.key_length` (default:
/// width / heads), `.attention.layer_norm_rms_epsilon`, `.rope.freq_base` (default 10000),
/// `.context_length`, `.rope.scaling.{type,factor,original_context_length}`. The vocabulary
/// size is the number of `tokenizer.ggml.tokens` (else `<arch>.vocab_size`, else the embedding's
/// rows); embeddings are tied when there is no `output.weight`; q/k/v biases when
/// `blk.0.attn_q.bias` exists.
/// Whether `athena.tensors` lists `name` (an Athena weight has no tensor of its own name).
fn is_athena_weight(f: &GgufFile, name: &str) -> bool {
    f.get("athena.tensors")
        .and_then(|v| {
            v.as_array()
                .and_then(|a| a.as_strings())
                .map(|s| s.iter().any(|n| n == name))
        })
        .unwrap_or(false)
}

pub fn config_from_gguf(path: &Path, f: &GgufFile) -> Result<ModelConfig, CheckpointError> {
    let arch_name = f
        .get_str("general.architecture")
        .map_err(|e| invalid(path, e.to_string()))?;
    let architecture = match arch_name {
        "llama" => Architecture::Llama,
        "qwen2" => Architecture::Qwen2,
        "qwen3" => Architecture::Qwen3,
        "gemma3" => Architecture::Gemma3,
        "phi3" => Architecture::Phi3,
        other => {
            return Err(CheckpointError::UnsupportedArchitecture {
                path: path.to_path_buf(),
                found: other.to_string(),
                supported: "llama, qwen2, qwen3, gemma3, phi3".to_string(),
            })
        }
    };
    let key = |k: &str| format!("{arch_name}.{k}");
    let req_usize = |k: &str| -> Result<usize, CheckpointError> {
        let v = f
            .get_u64(&key(k))
            .map_err(|e| invalid(path, e.to_string()))?;
        usize::try_from(v).map_err(|_| invalid(path, format!("key '{}': {v} too large", key(k))))
    };
    let opt_usize = |k: &str| -> Result<Option<usize>, CheckpointError> {
        match f.get(&key(k)) {
            None => Ok(None),
            Some(_) => req_usize(k).map(Some),
        }
    };
    let opt_f64 = |k: &str| -> Result<Option<f64>, CheckpointError> {
        match f.get(&key(k)) {
            None => Ok(None),
            Some(_) => f
                .get_f64(&key(k))
                .map(|x| Some(decimal(f.get(&key(k)), x)))
                .map_err(|e| invalid(path, e.to_string())),
        }
    };

    let hidden_size = req_usize("embedding_length")?;
    let num_attention_heads = req_usize("attention.head_count")?;
    let num_key_value_heads = opt_usize("attention.head_count_kv")?.unwrap_or(num_attention_heads);
    if num_attention_heads == 0
        || num_key_value_heads == 0
        || num_attention_heads % num_key_value_heads != 0
    {
        return Err(invalid(
            path,
            format!("{num_attention_heads} attention heads do not split into {num_key_value_heads} key/value groups"),
        ));
    }
    let head_dim = match opt_usize("attention.key_length")? {
        Some(d) => d,
        None if hidden_size % num_attention_heads == 0 => hidden_size / num_attention_heads,
        None => {
            return Err(invalid(
                path,
                format!("width {hidden_size} is not a multiple of {num_attention_heads} heads and attention.key_length is missing"),
            ))
        }
    };
    let eps_key = key("attention.layer_norm_rms_epsilon");
    let rms_norm_eps = f
        .get_f64(&eps_key)
        .map(|x| decimal(f.get(&eps_key), x))
        .map_err(|e| invalid(path, e.to_string()))?;

    let vocab_size = if let Some(v) = f.get("tokenizer.ggml.tokens") {
        v.as_array().map(|a| a.len()).ok_or_else(|| {
            invalid(
                path,
                "key 'tokenizer.ggml.tokens': not an array".to_string(),
            )
        })?
    } else if let Some(v) = opt_usize("vocab_size")? {
        v
    } else if let Some(t) = f.tensor("token_embd.weight") {
        t.dims.get(1).copied().unwrap_or(0) as usize
    } else if is_athena_weight(f, "token_embd.weight") {
        athena::stored_weight(f, "token_embd.weight")
            .map_err(|e| invalid(path, e.to_string()))?
            .params
            .rows as usize
    } else {
        return Err(CheckpointError::MissingTensor {
            path: path.to_path_buf(),
            name: "token_embd.weight".to_string(),
        });
    };

    let mut rope_scaling = match f.get(&key("rope.scaling.type")).and_then(|v| v.as_str()) {
        None | Some("none") => None,
        Some(t) => Some(RopeScaling {
            rope_type: t.to_string(),
            factor: opt_f64("rope.scaling.factor")?.unwrap_or(1.0),
            original_max_position_embeddings: opt_usize("rope.scaling.original_context_length")?,
            ..RopeScaling::default()
        }),
    };
    // Phi-3 rotates the first rope.dimension_count dimensions of each head; the others rotate
    // it all (and the forward uses one head size for queries, keys and values).
    let rotary_dim = match (architecture, opt_usize("rope.dimension_count")?) {
        (Architecture::Phi3, Some(n)) => n,
        _ => head_dim,
    };
    for other in ["attention.value_length", "rope.dimension_count"] {
        if let Some(n) = opt_usize(other)? {
            if n != head_dim && !(other == "rope.dimension_count" && n == rotary_dim) {
                return Err(invalid(
                    path,
                    format!(
                        "key '{}' is {n}, but the head size is {head_dim} (only equal sizes are supported)",
                        key(other)
                    ),
                ));
            }
        }
    }
    let pairs = rotary_dim / 2;
    if let Some(factors) = rope_factors(path, f, ROPE_FREQS, pairs)? {
        if rope_scaling.is_some() {
            return Err(bad(
                path,
                ROPE_FREQS,
                "given together with rope.scaling.type",
            ));
        }
        rope_scaling = Some(RopeScaling {
            rope_type: FREQUENCY_FACTORS.into(),
            factor: 1.0,
            short_factor: Some(factors),
            ..RopeScaling::default()
        });
    }
    let long = rope_factors(path, f, ROPE_FACTORS_LONG, pairs)?;
    let short = rope_factors(path, f, ROPE_FACTORS_SHORT, pairs)?;
    if long.is_some() || short.is_some() {
        let (Some(long), Some(short)) = (long, short) else {
            return Err(missing(
                path,
                architecture,
                "rope_factors_long and _short (both or neither)",
            ));
        };
        let context = req_usize("context_length")?;
        let original = opt_usize("rope.scaling.original_context_length")?.unwrap_or(context);
        rope_scaling = Some(RopeScaling {
            rope_type: "longrope".into(),
            factor: context as f64 / original.max(1) as f64,
            original_max_position_embeddings: Some(original),
            short_factor: Some(short),
            long_factor: Some(long),
            attention_factor: Some(opt_f64("rope.scaling.attn_factor")?.unwrap_or(1.0)),
            ..RopeScaling::default()
        });
    }
    let num_hidden_layers = req_usize("block_count")?;
    let local_attention = match (architecture, opt_usize("attention.sliding_window")?) {
        (Architecture::Gemma3, Some(window)) if window > 0 => {
            // llama.cpp's gemma3 default: every 6th layer global.
            let pattern = match f.get(&key("attention.sliding_window_pattern")) {
                Some(v) => match v.as_array().and_then(|a| a.as_bools()) {
                    Some(flags) => flags.to_vec(),
                    None => {
                        let n = req_usize("attention.sliding_window_pattern")?.max(1);
                        (0..num_hidden_layers).map(|l| l % n < n - 1).collect()
                    }
                },
                None => (0..num_hidden_layers).map(|l| l % 6 < 5).collect(),
            };
            Some(LocalAttention {
                window,
                layers: pattern,
                rope_theta: opt_f64("rope.freq_base_swa")?.unwrap_or(10000.0),
            })
        }
        _ => None,
    };
    let token_id = |k: &str| f.get(k).and_then(|v| v.as_u32());

    let config = ModelConfig {
        architecture,
        hidden_size,
        intermediate_size: req_usize("feed_forward_length")?,
        num_hidden_layers,
        num_attention_heads,
        num_key_value_heads,
        head_dim,
        vocab_size,
        max_position_embeddings: req_usize("context_length")?,
        rms_norm_eps,
        rope_theta: opt_f64("rope.freq_base")?.unwrap_or(10000.0),
        rope_scaling,
        tie_word_embeddings: f.tensor("output.weight").is_none()
            && !is_athena_weight(f, "output.weight"),
        attention_bias: f.tensor("blk.0.attn_q.bias").is_some(),
        rotary_dim,
        local_attention,
        bos_token_id: token_id("tokenizer.ggml.bos_token_id"),
        eos_token_id: token_id("tokenizer.ggml.eos_token_id"),
    };
    let vocab_from_tokens = f.get("tokenizer.ggml.tokens").is_some();
    config
        .check(&|hf_key| {
            let gguf_key = match hf_key {
                "hidden_size" => "embedding_length",
                "intermediate_size" => "feed_forward_length",
                "num_hidden_layers" => "block_count",
                "num_attention_heads" => "attention.head_count",
                "num_key_value_heads" => "attention.head_count_kv",
                "head_dim" => "attention.key_length",
                "max_position_embeddings" => "context_length",
                "rms_norm_eps" => "attention.layer_norm_rms_epsilon",
                "rope_theta" => "rope.freq_base",
                "sliding_window" => "attention.sliding_window",
                "layer_types" => "attention.sliding_window_pattern",
                "rope_local_base_freq" => "rope.freq_base_swa",
                "rope_scaling.factor" => "rope.scaling.factor",
                "rope_scaling.original_max_position_embeddings" => {
                    "rope.scaling.original_context_length"
                }
                "vocab_size" if vocab_from_tokens => {
                    return "the number of 'tokenizer.ggml.tokens'".into()
                }
                other => other,
            };
            format!("key '{}'", key(gguf_key))
        })
        .map_err(|m| invalid(path, m))?;
    Ok(config)
}

/// A RoPE factor tensor (`rope_freqs`, `rope_factors_{long,short}`): F32, one positive value
/// per rotated pair; `None` when the file has none.
fn rope_factors(
    path: &Path,
    f: &GgufFile,
    name: &str,
    pairs: usize,
) -> Result<Option<Vec<f64>>, CheckpointError> {
    let Some(t) = f.tensor(name) else {
        return Ok(None);
    };
    let n = t.n_elements() as usize;
    if t.ggml_type != GgmlType::F32 || n != pairs {
        return Err(bad(
            path,
            name,
            format!("expected F32 of {pairs} values (one per rotated pair)"),
        ));
    }
    let factors = dequantize(t.ggml_type, f.tensor_data(t), n).map_err(|m| bad(path, name, m))?;
    if let Some(x) = factors.iter().find(|x| !(x.is_finite() && **x > 0.0)) {
        return Err(bad(
            path,
            name,
            format!("factor {x} is not a positive number"),
        ));
    }
    Ok(Some(factors.into_iter().map(f64::from).collect()))
}

/// An f32 metadata value as the f64 with the same shortest decimal form (1e-5 stored as f32 gives
/// 1e-5, not 9.999999747378752e-6), which is what the original HF config said.
fn decimal(v: Option<&crate::container::gguf::Value>, x: f64) -> f64 {
    match v {
        Some(crate::container::gguf::Value::F32(f)) => f.to_string().parse().unwrap_or(x),
        _ => x,
    }
}

/// Dequantizes `n` elements of type `ty` from `bytes` (little-endian, ggml block layout).
/// Covers F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 and Q2_K..Q8_K; other types are an error
/// naming the type.
pub fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Result<Vec<f32>, String> {
    let block = ty.block_size() as usize;
    let type_size = ty.type_size() as usize;
    if block == 0 || !n.is_multiple_of(block) {
        return Err(format!(
            "{n} elements are not a whole number of {} blocks of {block}",
            ty.name()
        ));
    }
    let need = (n / block)
        .checked_mul(type_size)
        .ok_or_else(|| "size overflows".to_string())?;
    if bytes.len() != need {
        return Err(format!(
            "{} data is {} bytes, {n} elements need {need}",
            ty.name(),
            bytes.len()
        ));
    }
    let mut out = vec![0f32; n];
    match ty {
        GgmlType::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::Q4_0 => blocks_to_f32::<BlockQ4_0>(bytes, &mut out),
        GgmlType::Q4_1 => blocks_to_f32::<BlockQ4_1>(bytes, &mut out),
        GgmlType::Q5_0 => blocks_to_f32::<BlockQ5_0>(bytes, &mut out),
        GgmlType::Q5_1 => blocks_to_f32::<BlockQ5_1>(bytes, &mut out),
        GgmlType::Q8_0 => blocks_to_f32::<BlockQ8_0>(bytes, &mut out),
        GgmlType::Q2_K => blocks_to_f32::<BlockQ2K>(bytes, &mut out),
        GgmlType::Q3_K => blocks_to_f32::<BlockQ3K>(bytes, &mut out),
        GgmlType::Q4_K => blocks_to_f32::<BlockQ4K>(bytes, &mut out),
        GgmlType::Q5_K => blocks_to_f32::<BlockQ5K>(bytes, &mut out),
        GgmlType::Q6_K => blocks_to_f32::<BlockQ6K>(bytes, &mut out),
        GgmlType::Q8_K => blocks_to_f32::<BlockQ8K>(bytes, &mut out),
        other => {
            return Err(format!(
                "type {} cannot be dequantized (supported: F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q3_K Q4_K Q5_K Q6_K Q8_K)",
                other.name()
            ))
        }
    }
    Ok(out)
}

/// Decodes whole ggml blocks with candle's `to_float`. The caller checked that `bytes` holds
/// exactly `out.len() / B::BLCK_SIZE` blocks of `size_of::<B>()` bytes.
fn blocks_to_f32<B: CandleBlock>(bytes: &[u8], out: &mut [f32]) {
    let size = std::mem::size_of::<B>();
    let n_blocks = bytes.len() / size;
    debug_assert_eq!(n_blocks * size, bytes.len());
    debug_assert_eq!(n_blocks * B::BLCK_SIZE, out.len());
    if (bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<B>()) {
        // SAFETY: candle's block types are `#[repr(C)]` structs of integers, f16 and f32 (every bit
        // pattern is valid) whose size is the ggml block size; the pointer is aligned for `B` and the
        // slice covers exactly `n_blocks` blocks inside `bytes`.
        let blocks = unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<B>(), n_blocks) };
        B::to_float(blocks, out);
    } else {
        let mut blocks = vec![B::zeros(); n_blocks];
        // SAFETY: as above; the destination holds `n_blocks * size` bytes and does not overlap `bytes`.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                blocks.as_mut_ptr().cast::<u8>(),
                bytes.len(),
            );
        }
        B::to_float(&blocks, out);
    }
}

/// A tensor the file lacks, named as the file would name it (the HF name where the GGUF one
/// is unknown).
fn missing(path: &Path, arch: Architecture, hf_name: &str) -> CheckpointError {
    CheckpointError::MissingTensor {
        path: path.to_path_buf(),
        name: names::hf_to_gguf(arch, hf_name).unwrap_or_else(|| hf_name.to_string()),
    }
}

fn invalid(path: &Path, message: String) -> CheckpointError {
    CheckpointError::Invalid {
        path: path.to_path_buf(),
        message,
    }
}

fn bad(path: &Path, name: &str, message: impl Into<String>) -> CheckpointError {
    CheckpointError::BadTensor {
        path: path.to_path_buf(),
        name: name.to_string(),
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::gguf::{GgufWriter, Value};

    fn le_f32(xs: &[f32]) -> Vec<u8> {
        xs.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn dequantize_plain_types() {
        let xs = [1.5f32, -2.0, 0.0, 3.25];
        assert_eq!(dequantize(GgmlType::F32, &le_f32(&xs), 4).unwrap(), xs);
        let f16: Vec<u8> = xs
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect();
        assert_eq!(dequantize(GgmlType::F16, &f16, 4).unwrap(), xs);
        let bf16: Vec<u8> = xs
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect();
        assert_eq!(dequantize(GgmlType::BF16, &bf16, 4).unwrap(), xs);
    }

    /// Q8_0 block: f16 scale, then 32 i8. Q4_1 block: f16 d, f16 m, 16 bytes of nibbles, element
    /// j from the low nibble of byte j and element j+16 from its high nibble (ggml-common.h).
    #[test]
    fn dequantize_q8_0_and_q4_1_by_hand() {
        let mut b = half::f16::from_f32(0.5).to_le_bytes().to_vec();
        b.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let got = dequantize(GgmlType::Q8_0, &b, 32).unwrap();
        let want: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) * 0.5).collect();
        assert_eq!(got, want);

        let mut b = half::f16::from_f32(2.0).to_le_bytes().to_vec();
        b.extend(half::f16::from_f32(-1.0).to_le_bytes());
        b.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
        let got = dequantize(GgmlType::Q4_1, &b, 32).unwrap();
        let want: Vec<f32> = (0..32)
            .map(|i| if i < 16 { i as f32 } else { (31 - i) as f32 } * 2.0 - 1.0)
            .collect();
        assert_eq!(got, want);
        // Misaligned input goes through the copying path and gives the same result.
        let mut shifted = vec![0u8];
        shifted.extend(&b);
        assert_eq!(dequantize(GgmlType::Q4_1, &shifted[1..], 32).unwrap(), want);
    }

    #[test]
    fn dequantize_errors_name_the_type() {
        let e = dequantize(GgmlType::IQ2_XXS, &[0u8; 66], 256).unwrap_err();
        assert!(e.contains("IQ2_XXS"), "{e}");
        let e = dequantize(GgmlType::Q4_0, &[0u8; 17], 32).unwrap_err();
        assert!(e.contains("Q4_0") && e.contains("17"), "{e}");
        assert!(dequantize(GgmlType::Q4_0, &[0u8; 18], 31).is_err());
    }

    /// A tiny llama GGUF: 2 heads of dim 4, 1 kv head, width 8, MLP 12, 1 layer, vocab 5, tied
    /// embeddings. q/k are stored permuted, as llama.cpp's converter writes them.
    pub(super) fn tiny_llama(dir: &Path, arch: &str) -> (PathBuf, Vec<f32>, Vec<f32>) {
        tiny_llama_edited(dir, arch, |_, _| {})
    }

    /// Metadata and tensors (name, dims, data) of a tiny file, for edits.
    pub(super) type Meta = Vec<(String, Value)>;
    pub(super) type Tensors = Vec<(String, Vec<u64>, Vec<f32>)>;

    /// As `tiny_llama`, with the metadata and tensors changed by `edit` before writing.
    pub(super) fn tiny_llama_edited(
        dir: &Path,
        arch: &str,
        edit: impl FnOnce(&mut Meta, &mut Tensors),
    ) -> (PathBuf, Vec<f32>, Vec<f32>) {
        let path = dir.join(format!("tiny-{arch}.gguf"));
        let mut w = GgufWriter::new(&path);
        let mut meta: Vec<(String, Value)> = vec![
            ("general.architecture".into(), Value::String(arch.into())),
            (format!("{arch}.block_count"), Value::U32(1)),
            (format!("{arch}.context_length"), Value::U32(64)),
            (format!("{arch}.embedding_length"), Value::U32(8)),
            (format!("{arch}.feed_forward_length"), Value::U32(12)),
            (format!("{arch}.attention.head_count"), Value::U32(2)),
            (format!("{arch}.attention.head_count_kv"), Value::U32(1)),
            (
                format!("{arch}.attention.layer_norm_rms_epsilon"),
                Value::F32(1e-5),
            ),
            (format!("{arch}.rope.freq_base"), Value::F32(100000.0)),
            (
                "tokenizer.ggml.tokens".into(),
                Value::Array(crate::container::gguf::Array::String(
                    ["a", "b", "c", "d", "e"]
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                )),
            ),
            ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
        ];

        let q_hf: Vec<f32> = (0..64).map(|i| i as f32).collect();
        let k_hf: Vec<f32> = (0..32).map(|i| 100.0 + i as f32).collect();
        let (q_file, k_file) = if arch == "llama" {
            (
                names::permute_qk(&q_hf, 8, 8, 2).unwrap(),
                names::permute_qk(&k_hf, 4, 8, 1).unwrap(),
            )
        } else {
            (q_hf.clone(), k_hf.clone())
        };
        let tensors: Vec<(&str, Vec<u64>, Vec<f32>)> = vec![
            (
                "token_embd.weight",
                vec![8, 5],
                (0..40).map(|i| i as f32 * 0.5).collect(),
            ),
            ("output_norm.weight", vec![8], vec![1.0; 8]),
            ("blk.0.attn_norm.weight", vec![8], vec![1.0; 8]),
            ("blk.0.attn_q.weight", vec![8, 8], q_file),
            ("blk.0.attn_k.weight", vec![8, 4], k_file),
            ("blk.0.attn_v.weight", vec![8, 4], vec![0.25; 32]),
            ("blk.0.attn_output.weight", vec![8, 8], vec![0.5; 64]),
            ("blk.0.ffn_norm.weight", vec![8], vec![1.0; 8]),
            ("blk.0.ffn_gate.weight", vec![8, 12], vec![0.1; 96]),
            ("blk.0.ffn_up.weight", vec![8, 12], vec![0.2; 96]),
            ("blk.0.ffn_down.weight", vec![12, 8], vec![0.3; 96]),
        ];
        let mut tensors: Tensors = tensors
            .into_iter()
            .map(|(n, d, x)| (n.to_string(), d, x))
            .collect();
        edit(&mut meta, &mut tensors);
        for (k, v) in meta {
            w.add_metadata(&k, v).unwrap();
        }
        for (name, dims, _) in &tensors {
            w.add_tensor(name.as_str(), dims, GgmlType::F32).unwrap();
        }
        for (name, _, data) in &tensors {
            w.write_tensor_data(name, &le_f32(data)).unwrap();
        }
        w.finish().unwrap();
        (path, q_hf, k_hf)
    }

    #[test]
    fn tiny_llama_config_shapes_and_unpermuted_qk() {
        let dir = tempfile::tempdir().unwrap();
        let (path, q_hf, k_hf) = tiny_llama(dir.path(), "llama");
        let src = GgufSource::open(&path).unwrap();
        let c = src.config();
        assert_eq!(c.architecture, Architecture::Llama);
        assert_eq!(
            (c.hidden_size, c.intermediate_size, c.num_hidden_layers),
            (8, 12, 1)
        );
        assert_eq!(
            (c.num_attention_heads, c.num_key_value_heads, c.head_dim),
            (2, 1, 4)
        );
        assert_eq!((c.vocab_size, c.max_position_embeddings), (5, 64));
        assert_eq!(c.rope_theta, 100000.0);
        assert_eq!(c.rms_norm_eps, 1e-5);
        assert!(c.tie_word_embeddings && !c.attention_bias);
        assert_eq!(c.bos_token_id, Some(1));
        assert_eq!(src.tensor_names().len(), 11);
        assert!(src
            .tensor_names()
            .contains(&"model.layers.0.mlp.down_proj.weight".to_string()));
        assert_eq!(src.shape("model.embed_tokens.weight").unwrap(), vec![5, 8]);
        assert_eq!(
            src.shape("model.layers.0.mlp.down_proj.weight").unwrap(),
            vec![8, 12]
        );
        assert_eq!(
            src.shape("model.layers.0.self_attn.k_proj.weight").unwrap(),
            vec![4, 8]
        );
        let q = src.load("model.layers.0.self_attn.q_proj.weight").unwrap();
        assert_eq!(q.shape, vec![8, 8]);
        assert_eq!(q.data, q_hf);
        let k = src.load("model.layers.0.self_attn.k_proj.weight").unwrap();
        assert_eq!(k.data, k_hf);
        let e = src.load("model.embed_tokens.weight").unwrap();
        assert_eq!(e.data[8], 4.0, "row 1 of the embedding starts at element 8");
        // A tensor the file lacks is named as the file would name it.
        let err = src.load("lm_head.weight").unwrap_err().to_string();
        assert!(
            err.contains("'output.weight'") && err.contains("tiny-llama.gguf"),
            "{err}"
        );
    }

    #[test]
    fn qwen2_is_not_unpermuted() {
        let dir = tempfile::tempdir().unwrap();
        let (path, q_hf, _) = tiny_llama(dir.path(), "qwen2");
        let src = GgufSource::open(&path).unwrap();
        assert_eq!(src.config().architecture, Architecture::Qwen2);
        assert_eq!(
            src.load("model.layers.0.self_attn.q_proj.weight")
                .unwrap()
                .data,
            q_hf
        );
    }

    #[test]
    fn unsupported_architecture_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _, _) = tiny_llama(dir.path(), "gemma");
        let err = GgufSource::open(&path).unwrap_err().to_string();
        assert!(
            err.contains("gemma") && err.contains("tiny-gemma.gguf"),
            "{err}"
        );
    }
}

#[cfg(test)]
mod checks {
    use super::tests::{tiny_llama_edited, Meta, Tensors};
    use super::*;
    use crate::container::gguf::Value;

    /// Opening the tiny file edited by `edit` fails with one line holding every `needles`.
    fn refused(edit: impl FnOnce(&mut Meta, &mut Tensors), needles: &[&str]) {
        let dir = tempfile::tempdir().unwrap();
        let (path, _, _) = tiny_llama_edited(dir.path(), "llama", edit);
        let e = GgufSource::open(&path).unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
        for n in needles {
            assert!(e.contains(n), "expected {n:?} in {e:?}");
        }
    }

    fn set(meta: &mut Meta, key: &str, value: Value) {
        match meta.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => meta.push((key.to_string(), value)),
        }
    }

    #[test]
    fn hyperparameters_are_checked_and_named_by_their_gguf_keys() {
        let cases: [(&str, Value, &str); 8] = [
            (
                "llama.block_count",
                Value::U32(0),
                "'llama.block_count' is 0",
            ),
            (
                "llama.context_length",
                Value::U32(0),
                "'llama.context_length' is 0",
            ),
            (
                "llama.attention.layer_norm_rms_epsilon",
                Value::F32(0.0),
                "'llama.attention.layer_norm_rms_epsilon' is 0",
            ),
            (
                "llama.attention.layer_norm_rms_epsilon",
                Value::F32(f32::NAN),
                "is NaN",
            ),
            (
                "llama.rope.freq_base",
                Value::F32(-1.0),
                "'llama.rope.freq_base' is -1",
            ),
            (
                "llama.rope.freq_base",
                Value::F32(f32::INFINITY),
                "'llama.rope.freq_base' is inf",
            ),
            (
                "llama.attention.value_length",
                Value::U32(6),
                "'llama.attention.value_length' is 6, but the head size is 4",
            ),
            (
                "llama.rope.dimension_count",
                Value::U32(2),
                "'llama.rope.dimension_count' is 2",
            ),
        ];
        for (key, value, needle) in cases {
            refused(|m, _| set(m, key, value), &["tiny-llama.gguf", needle]);
        }
        refused(
            |m, _| {
                set(m, "llama.rope.scaling.type", Value::String("linear".into()));
                set(m, "llama.rope.scaling.factor", Value::F32(f32::NAN));
            },
            &["'llama.rope.scaling.factor' is NaN"],
        );
    }

    #[test]
    fn a_missing_tensor_is_named_by_its_gguf_name_at_open() {
        refused(
            |_, t| t.retain(|(n, _, _)| n != "blk.0.ffn_up.weight"),
            &["'blk.0.ffn_up.weight'", "not found", "tiny-llama.gguf"],
        );
        // Two blocks in the metadata, one in the file: block 1 is missing, found at open.
        refused(
            |m, _| set(m, "llama.block_count", Value::U32(2)),
            &["'blk.1.attn_norm.weight': not found"],
        );
        // A huge block count costs no memory: the first missing block ends the check.
        refused(
            |m, _| set(m, "llama.block_count", Value::U32(u32::MAX)),
            &["'blk.1.attn_norm.weight': not found"],
        );
    }

    #[test]
    fn a_tensor_the_metadata_does_not_describe_is_refused() {
        refused(
            |_, t| {
                let extra = t
                    .iter()
                    .find(|(n, _, _)| n == "blk.0.attn_norm.weight")
                    .unwrap();
                let extra = (
                    "blk.3.attn_norm.weight".to_string(),
                    extra.1.clone(),
                    extra.2.clone(),
                );
                t.push(extra);
            },
            &["'blk.3.attn_norm.weight'", "1 blocks"],
        );
    }

    #[test]
    fn non_finite_weights_are_named_with_their_count_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _, _) = tiny_llama_edited(dir.path(), "llama", |_, t| {
            let down = t
                .iter_mut()
                .find(|(n, _, _)| n == "blk.0.ffn_down.weight")
                .unwrap();
            down.2[3] = f32::NAN;
            down.2[50] = f32::NEG_INFINITY;
        });
        let src = GgufSource::open(&path).unwrap();
        let e = src
            .load("model.layers.0.mlp.down_proj.weight")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("'blk.0.ffn_down.weight'") && e.contains("2 of 96 values are not finite"),
            "{e}"
        );
        src.load("model.layers.0.mlp.up_proj.weight").unwrap();
    }
}
