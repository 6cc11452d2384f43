//! Model hyperparameters, as in an HF config.json (llama incl. Llama 3.x, mistral, qwen2, qwen3,
//! gemma3 text, phi3).

use serde::{Deserialize, Serialize};

/// Decoder architectures the pipeline understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Architecture {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    /// Gemma 3, text only (`Gemma3ForCausalLM`, the 270M and 1B checkpoints).
    Gemma3,
    /// Phi-3 and Phi-4-mini.
    Phi3,
}

/// The MLP's gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// SwiGLU (`silu`).
    Silu,
    /// GeGLU with the tanh approximation of GELU (`gelu_pytorch_tanh`, Gemma).
    GeluTanh,
}

impl Architecture {
    /// The HF `model_type` string.
    pub fn model_type(self) -> &'static str {
        SUPPORTED
            .iter()
            .find(|s| s.2 == self)
            .map(|s| s.1)
            .unwrap_or("llama")
    }

    /// Per-head RMSNorm of q and k before RoPE (`self_attn.{q,k}_norm`).
    pub fn qk_norm(self) -> bool {
        matches!(self, Architecture::Qwen3 | Architecture::Gemma3)
    }

    /// Gemma's RMSNorm multiplies by `1 + weight`: HF stores the offset, llama.cpp's converter
    /// adds the 1 (every `*norm.weight`), and the model here loads `1 + weight`.
    pub fn norm_adds_one(self) -> bool {
        self == Architecture::Gemma3
    }

    /// Gemma 3's norms around the attention and MLP outputs: `post_attention_layernorm` scales
    /// the attention output, `pre_feedforward_layernorm` is the MLP's input norm and
    /// `post_feedforward_layernorm` scales the MLP output.
    pub fn sandwich_norms(self) -> bool {
        self == Architecture::Gemma3
    }

    /// Token embeddings multiplied by sqrt(hidden_size) (Gemma).
    pub fn scales_embeddings(self) -> bool {
        self == Architecture::Gemma3
    }

    pub fn activation(self) -> Activation {
        match self {
            Architecture::Gemma3 => Activation::GeluTanh,
            _ => Activation::Silu,
        }
    }

    /// Phi-3 checkpoints fuse q/k/v into `qkv_proj` and gate/up into `gate_up_proj`; the HF
    /// reader splits them, so every later stage sees the llama layers.
    pub fn fused_projections(self) -> bool {
        self == Architecture::Phi3
    }
}

/// Gemma 3's local attention: a sliding window on most layers, with their own RoPE base.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalAttention {
    /// A query at position p sees keys at positions p - window + 1 ..= p.
    pub window: usize,
    /// Per layer: whether it is a sliding-window layer.
    pub layers: Vec<bool>,
    /// RoPE base of the sliding-window layers (which have no RoPE scaling).
    pub rope_theta: f64,
}

/// RoPE scaling as HF describes it (`rope_scaling` in config.json).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    /// "linear", "llama3", "longrope", "yarn", ... (HF `rope_type` or `type`).
    pub rope_type: String,
    /// The context extension (longrope: max_position_embeddings / original).
    pub factor: f64,
    pub low_freq_factor: Option<f64>,
    pub high_freq_factor: Option<f64>,
    pub original_max_position_embeddings: Option<usize>,
    /// longrope (Phi-3): per rotated pair, the divisor of its frequency for contexts up to the
    /// original length (`short_factor`) and beyond (`long_factor`).
    pub short_factor: Option<Vec<f64>>,
    pub long_factor: Option<Vec<f64>>,
    /// longrope: the factor cos and sin are multiplied by.
    pub attention_factor: Option<f64>,
}

/// The hyperparameters every stage needs. Filled from config.json or GGUF metadata.
///
/// Mistral/Qwen2 `sliding_window` is not represented: attention is full causal, as in llama.cpp's
/// llama architecture (which Mistral GGUFs use), and exact for contexts up to the window anyway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<RopeScaling>,
    pub tie_word_embeddings: bool,
    /// q/k/v projections carry a bias (qwen2).
    pub attention_bias: bool,
    /// Dimensions of each head that RoPE rotates (the first ones); `head_dim` except for
    /// Phi-3's `partial_rotary_factor`.
    pub rotary_dim: usize,
    /// Gemma 3's sliding-window layers (`None`: every layer attends to the whole context).
    pub local_attention: Option<LocalAttention>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

use super::CheckpointError;
use serde_json::Value;
use std::path::Path;

/// `architectures` entries and `model_type` values accepted in config.json.
const SUPPORTED: &[(&str, &str, Architecture)] = &[
    ("LlamaForCausalLM", "llama", Architecture::Llama),
    ("MistralForCausalLM", "mistral", Architecture::Mistral),
    ("Qwen2ForCausalLM", "qwen2", Architecture::Qwen2),
    ("Qwen3ForCausalLM", "qwen3", Architecture::Qwen3),
    ("Gemma3ForCausalLM", "gemma3_text", Architecture::Gemma3),
    ("Phi3ForCausalLM", "phi3", Architecture::Phi3),
];

/// The RoPE scaling of a GGUF file's `rope_freqs.weight` (llama.cpp's form of llama3 scaling):
/// `short_factor` holds the per-pair divisors of the frequencies, for every context length.
/// Only GGUF input gives it; the export writes it back as `rope_freqs.weight`.
pub const FREQUENCY_FACTORS: &str = "frequency_factors";

/// RoPE scaling types the model forward implements.
const SUPPORTED_ROPE: &[&str] = &["linear", "llama3", "longrope"];

impl ModelConfig {
    /// Whether block `layer` attends through Gemma 3's sliding window.
    pub fn is_local(&self, layer: usize) -> bool {
        self.local_attention
            .as_ref()
            .is_some_and(|l| l.layers.get(layer).copied().unwrap_or(false))
    }

    /// Number of query heads sharing one key/value head.
    pub fn kv_groups(&self) -> usize {
        self.num_attention_heads / self.num_key_value_heads.max(1)
    }

    /// Weights in the decoder blocks' linear layers (q, k, v, o, gate, up, down): the ones a
    /// conversion quantizes.
    pub fn linear_weights(&self) -> u64 {
        let (h, i) = (self.hidden_size as u64, self.intermediate_size as u64);
        let q = (self.num_attention_heads * self.head_dim) as u64;
        let kv = (self.num_key_value_heads * self.head_dim) as u64;
        let per_block = 2 * h * q + 2 * h * kv + 3 * h * i;
        per_block * self.num_hidden_layers as u64
    }

    /// Checks what every later stage relies on, whichever file the config came from: every size
    /// positive, the heads splitting into the key/value groups, an even head size (RoPE rotates
    /// pairs), finite positive norm epsilon, RoPE base and scaling factors that an f32 (the GGUF
    /// type) holds, finite RoPE frequencies, and tensors whose sizes fit in memory. `key` names
    /// a hyperparameter, given by its config.json key, the way the source spells it. The error
    /// is one line naming the key.
    pub fn check(&self, key: &dyn Fn(&str) -> String) -> Result<(), String> {
        let sizes = [
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        if let Some((k, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{} is 0; it must be positive", key(k)));
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return Err(format!(
                "{} ({}) is not a multiple of {} ({})",
                key("num_attention_heads"),
                self.num_attention_heads,
                key("num_key_value_heads"),
                self.num_key_value_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(format!(
                "{} ({}) must be even (RoPE rotates pairs of values)",
                key("head_dim"),
                self.head_dim
            ));
        }
        if self.rotary_dim == 0
            || self.rotary_dim > self.head_dim
            || !self.rotary_dim.is_multiple_of(2)
        {
            return Err(format!(
                "{} gives {} rotated dimensions of a head of {}; they must be even, positive and at most the head",
                key("partial_rotary_factor"),
                self.rotary_dim,
                self.head_dim
            ));
        }
        if let Some(local) = &self.local_attention {
            if local.window == 0 || local.layers.len() != self.num_hidden_layers {
                return Err(format!(
                    "{} ({}) and {} ({} layers) do not describe {} layers",
                    key("sliding_window"),
                    local.window,
                    key("layer_types"),
                    local.layers.len(),
                    self.num_hidden_layers
                ));
            }
            positive_f32(local.rope_theta, &key("rope_local_base_freq"))?;
        }
        positive_f32(self.rms_norm_eps, &key("rms_norm_eps"))?;
        positive_f32(self.rope_theta, &key("rope_theta"))?;
        if let Some(s) = &self.rope_scaling {
            positive_f32(s.factor, &key("rope_scaling.factor"))?;
            if let Some(low) = s.low_freq_factor {
                positive_f32(low, &key("rope_scaling.low_freq_factor"))?;
            }
            if let Some(high) = s.high_freq_factor {
                positive_f32(high, &key("rope_scaling.high_freq_factor"))?;
            }
            if let (Some(low), Some(high)) = (s.low_freq_factor, s.high_freq_factor) {
                if high <= low {
                    return Err(format!(
                        "{} ({high}) must be greater than {} ({low})",
                        key("rope_scaling.high_freq_factor"),
                        key("rope_scaling.low_freq_factor")
                    ));
                }
            }
            if s.original_max_position_embeddings == Some(0) {
                return Err(format!(
                    "{} is 0; it must be positive",
                    key("rope_scaling.original_max_position_embeddings")
                ));
            }
        }
        // The largest RoPE frequency: the first pair's (1) or, for a base below 1, the last
        // pair's; scaling divides by the factor (llama3 by at most the factor).
        let dim = self.head_dim as f64;
        let mut fastest = self.rope_theta.powf(-(dim - 2.0) / dim).max(1.0);
        if let Some(s) = &self.rope_scaling {
            fastest /= s.factor.min(1.0);
        }
        if !(fastest as f32).is_finite() {
            return Err(format!(
                "{} ({}) gives RoPE frequencies beyond the range of an f32",
                key("rope_theta"),
                self.rope_theta
            ));
        }
        self.check_tensor_sizes(key)
    }

    /// Every tensor's f32 copy fits in one allocation, and the whole model's bytes in a u64.
    fn check_tensor_sizes(&self, key: &dyn Fn(&str) -> String) -> Result<(), String> {
        let (h, ff, vocab) = (
            self.hidden_size as u128,
            self.intermediate_size as u128,
            self.vocab_size as u128,
        );
        let q = self.num_attention_heads as u128 * self.head_dim as u128;
        let kv = self.num_key_value_heads as u128 * self.head_dim as u128;
        let largest = isize::MAX as u128 / 4;
        let q_name = format!("{} x {}", key("num_attention_heads"), key("head_dim"));
        for (rows, what) in [
            (vocab, key("vocab_size")),
            (q, q_name),
            (ff, key("intermediate_size")),
        ] {
            if rows.checked_mul(h).is_none_or(|n| n > largest) {
                return Err(format!(
                    "{what} x {} ({rows} x {h} weights) is too large for a tensor in memory",
                    key("hidden_size")
                ));
            }
        }
        let biases = if self.attention_bias { q + 2 * kv } else { 0 };
        let per_block = 2 * h + 2 * q * h + 2 * kv * h + 3 * ff * h + biases;
        let heads = if self.tie_word_embeddings { 1 } else { 2 };
        let total = per_block
            .checked_mul(self.num_hidden_layers as u128)
            .and_then(|blocks| blocks.checked_add(heads * vocab * h + h))
            .filter(|&n| n <= u64::MAX as u128 / 4);
        if total.is_none() {
            return Err(format!(
                "{} blocks of this size exceed 2^64 bytes",
                key("num_hidden_layers")
            ));
        }
        Ok(())
    }

    /// Reads an HF `config.json` (llama, mistral, qwen2).
    pub fn from_hf_json(path: &Path) -> Result<Self, CheckpointError> {
        let text = std::fs::read_to_string(path).map_err(|source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let value: Value = serde_json::from_str(&text).map_err(|e| CheckpointError::Invalid {
            path: path.to_path_buf(),
            message: format!("malformed JSON: {e}"),
        })?;
        Self::from_hf_value(&value, path)
    }

    /// Interprets a parsed config.json; `path` is only used in error messages.
    pub fn from_hf_value(v: &Value, path: &Path) -> Result<Self, CheckpointError> {
        let invalid = |message: String| CheckpointError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        if !v.is_object() {
            return Err(invalid("expected a JSON object".into()));
        }
        let architecture = detect_architecture(v, path)?;
        let get_usize = |key: &str| -> Result<Option<usize>, CheckpointError> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => x
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .map(Some)
                    .ok_or_else(|| invalid(format!("'{key}' must be a non-negative integer"))),
            }
        };
        let need = |key: &str| -> Result<usize, CheckpointError> {
            match get_usize(key)? {
                Some(0) => Err(invalid(format!("'{key}' must be positive"))),
                Some(n) => Ok(n),
                None => Err(invalid(format!("missing key '{key}'"))),
            }
        };
        let get_f64 = |key: &str| -> Result<Option<f64>, CheckpointError> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => x
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| invalid(format!("'{key}' must be a number"))),
            }
        };
        let get_bool = |key: &str| -> Result<Option<bool>, CheckpointError> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => x
                    .as_bool()
                    .map(Some)
                    .ok_or_else(|| invalid(format!("'{key}' must be true or false"))),
            }
        };
        // bos/eos may be a single id or a list (llama 3); the first one is kept.
        let get_token = |key: &str| -> Result<Option<u32>, CheckpointError> {
            let x = match v.get(key) {
                None | Some(Value::Null) => return Ok(None),
                Some(Value::Array(a)) if a.is_empty() => return Ok(None),
                Some(Value::Array(a)) => &a[0],
                Some(x) => x,
            };
            x.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| invalid(format!("'{key}' must be a token id")))
        };

        let hidden_size = need("hidden_size")?;
        let num_attention_heads = need("num_attention_heads")?;
        let num_key_value_heads = get_usize("num_key_value_heads")?.unwrap_or(num_attention_heads);
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(invalid(format!(
                "num_attention_heads ({num_attention_heads}) is not a multiple of num_key_value_heads ({num_key_value_heads})"
            )));
        }
        let head_dim = match get_usize("head_dim")? {
            Some(d) => d,
            None if hidden_size % num_attention_heads == 0 => hidden_size / num_attention_heads,
            None => {
                return Err(invalid(format!(
                    "hidden_size ({hidden_size}) is not a multiple of num_attention_heads ({num_attention_heads}) and head_dim is not given"
                )))
            }
        };
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(invalid(format!(
                "head_dim ({head_dim}) must be even and positive"
            )));
        }
        // Gemma names it hidden_activation (and may carry hidden_act too).
        let wanted_act = match architecture.activation() {
            Activation::Silu => &["silu"][..],
            Activation::GeluTanh => &["gelu_pytorch_tanh", "gelu_tanh"][..],
        };
        for key in ["hidden_act", "hidden_activation"] {
            if let Some(act) = v.get(key).and_then(Value::as_str) {
                if !wanted_act.contains(&act) {
                    return Err(invalid(format!(
                        "{key} '{act}' is not supported for {} (only {})",
                        architecture.model_type(),
                        wanted_act[0]
                    )));
                }
            }
        }
        if get_bool("mlp_bias")?.unwrap_or(false) {
            return Err(invalid("mlp_bias = true is not supported".into()));
        }
        let attention_bias = match architecture {
            Architecture::Qwen2 => true,
            _ => {
                if get_bool("attention_bias")?.unwrap_or(false) {
                    return Err(invalid(format!(
                        "attention_bias = true (biases on q/k/v/o) is not supported for {}",
                        architecture.model_type()
                    )));
                }
                false
            }
        };
        let default_max_pos = match architecture {
            Architecture::Llama => 2048,
            Architecture::Gemma3 => 131072,
            Architecture::Phi3 => 4096,
            _ => 32768,
        };
        let num_hidden_layers = need("num_hidden_layers")?;
        let mut rope_scaling = parse_rope_scaling(v.get("rope_scaling"), path)?;
        if architecture == Architecture::Gemma3 {
            gemma3_checks(v, head_dim).map_err(invalid)?;
        }
        let local_attention = match architecture {
            Architecture::Gemma3 => {
                gemma3_local_attention(v, num_hidden_layers).map_err(invalid)?
            }
            _ => None,
        };
        let rotary_dim = match get_f64("partial_rotary_factor")? {
            None => head_dim,
            Some(f) if f > 0.0 && f <= 1.0 => {
                // llama.cpp's converter: int(factor * hidden) // heads.
                let dim =
                    (f * (num_attention_heads * head_dim) as f64) as usize / num_attention_heads;
                if dim == 0 || !dim.is_multiple_of(2) {
                    return Err(invalid(format!(
                        "partial_rotary_factor {f} gives {dim} rotated dimensions per head; it must be even and positive"
                    )));
                }
                dim
            }
            Some(f) => {
                return Err(invalid(format!(
                    "'partial_rotary_factor' ({f}) must be in (0, 1]"
                )))
            }
        };
        let max_position_embeddings =
            get_usize("max_position_embeddings")?.unwrap_or(default_max_pos);
        if let Some(s) = rope_scaling.as_mut().filter(|s| s.rope_type == "longrope") {
            finish_longrope(
                s,
                get_usize("original_max_position_embeddings")?,
                max_position_embeddings,
                rotary_dim,
            )
            .map_err(invalid)?;
        }
        let config = ModelConfig {
            architecture,
            hidden_size,
            intermediate_size: need("intermediate_size")?,
            num_hidden_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            vocab_size: need("vocab_size")?,
            max_position_embeddings,
            rms_norm_eps: get_f64("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta: get_f64("rope_theta")?.unwrap_or(10000.0),
            rope_scaling,
            tie_word_embeddings: get_bool("tie_word_embeddings")?
                .unwrap_or(architecture == Architecture::Gemma3),
            attention_bias,
            rotary_dim,
            local_attention,
            bos_token_id: get_token("bos_token_id")?,
            eos_token_id: get_token("eos_token_id")?,
        };
        config.check(&|k| format!("'{k}'")).map_err(invalid)?;
        Ok(config)
    }
}

/// A hyperparameter stored as an f32 in GGUF: finite, above 0, and not 0 or infinite as an f32.
fn positive_f32(x: f64, name: &str) -> Result<(), String> {
    let single = x as f32;
    if x.is_finite() && x > 0.0 && single.is_finite() && single > 0.0 {
        Ok(())
    } else {
        Err(format!(
            "{name} is {x:?}; it must be a positive number that an f32 holds"
        ))
    }
}

fn detect_architecture(v: &Value, path: &Path) -> Result<Architecture, CheckpointError> {
    let supported = || {
        SUPPORTED
            .iter()
            .map(|s| format!("{} ({})", s.0, s.1))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let unsupported = |found: String| CheckpointError::UnsupportedArchitecture {
        path: path.to_path_buf(),
        found,
        supported: supported(),
    };
    if let Some(archs) = v.get("architectures").and_then(Value::as_array) {
        if let Some(name) = archs.first().and_then(Value::as_str) {
            return SUPPORTED
                .iter()
                .find(|s| s.0 == name)
                .map(|s| s.2)
                .ok_or_else(|| unsupported(name.to_string()));
        }
    }
    match v.get("model_type").and_then(Value::as_str) {
        Some(mt) => SUPPORTED
            .iter()
            .find(|s| s.1 == mt)
            .map(|s| s.2)
            .ok_or_else(|| unsupported(mt.to_string())),
        None => Err(CheckpointError::Invalid {
            path: path.to_path_buf(),
            message: "neither 'architectures' nor 'model_type' is given".into(),
        }),
    }
}

/// What Gemma 3 options the forward (and llama.cpp's gemma3) implements: no logit soft-capping,
/// and queries scaled by 1/sqrt(head_dim), which llama.cpp assumes for every size but 27B.
fn gemma3_checks(v: &Value, head_dim: usize) -> Result<(), String> {
    for key in ["final_logit_softcapping", "attn_logit_softcapping"] {
        if v.get(key).is_some_and(|x| !x.is_null()) {
            return Err(format!("'{key}' is set; soft-capping is not supported"));
        }
    }
    if let Some(s) = v.get("query_pre_attn_scalar").filter(|x| !x.is_null()) {
        let s = s
            .as_f64()
            .ok_or_else(|| "'query_pre_attn_scalar' must be a number".to_string())?;
        if s != head_dim as f64 {
            return Err(format!(
                "query_pre_attn_scalar ({s}) differs from head_dim ({head_dim}); only 1/sqrt(head_dim) query scaling is supported"
            ));
        }
    }
    Ok(())
}

/// Gemma 3's sliding-window layers from `sliding_window` and `layer_types` (transformers >= 4.53)
/// or `sliding_window_pattern` (every n-th layer global, the others local).
fn gemma3_local_attention(v: &Value, layers: usize) -> Result<Option<LocalAttention>, String> {
    let window = match v.get("sliding_window") {
        None | Some(Value::Null) => return Ok(None),
        Some(x) => x
            .as_u64()
            .filter(|&w| w > 0)
            .and_then(|w| usize::try_from(w).ok())
            .ok_or_else(|| "'sliding_window' must be a positive integer".to_string())?,
    };
    let types = match v.get("layer_types") {
        Some(Value::Array(types)) => types
            .iter()
            .map(|t| match t.as_str() {
                Some("sliding_attention") => Ok(true),
                Some("full_attention") => Ok(false),
                _ => Err(format!(
                    "'layer_types' entry {t} is neither \"sliding_attention\" nor \"full_attention\""
                )),
            })
            .collect::<Result<Vec<bool>, String>>()?,
        Some(x) if !x.is_null() => return Err("'layer_types' must be a list".into()),
        _ => {
            let pattern = match v.get("sliding_window_pattern") {
                None | Some(Value::Null) => 6,
                Some(x) => x
                    .as_u64()
                    .filter(|&p| p > 0)
                    .ok_or_else(|| "'sliding_window_pattern' must be a positive integer".to_string())?,
            } as usize;
            (0..layers).map(|l| (l + 1) % pattern != 0).collect()
        }
    };
    if types.len() != layers {
        return Err(format!(
            "'layer_types' lists {} layers; num_hidden_layers is {layers}",
            types.len()
        ));
    }
    let rope_theta = match v.get("rope_local_base_freq") {
        None | Some(Value::Null) => 10000.0,
        Some(x) => x
            .as_f64()
            .ok_or_else(|| "'rope_local_base_freq' must be a number".to_string())?,
    };
    positive_f32(rope_theta, "'rope_local_base_freq'")?;
    Ok(Some(LocalAttention {
        window,
        layers: types,
        rope_theta,
    }))
}

/// longrope (Phi-3): the factor lists must cover the rotated pairs; the extension factor and the
/// attention factor follow HF's `_compute_longrope_parameters`.
fn finish_longrope(
    s: &mut RopeScaling,
    top_level_original: Option<usize>,
    max_position_embeddings: usize,
    rotary_dim: usize,
) -> Result<(), String> {
    for (name, list) in [
        ("short_factor", &s.short_factor),
        ("long_factor", &s.long_factor),
    ] {
        match list {
            Some(l) if l.len() == rotary_dim / 2 => {
                if let Some(bad) = l.iter().find(|f| !(f.is_finite() && **f > 0.0)) {
                    return Err(format!(
                        "'rope_scaling.{name}' holds {bad}; factors must be positive"
                    ));
                }
            }
            Some(l) => {
                return Err(format!(
                    "'rope_scaling.{name}' has {} entries; {} are rotated pairs per head",
                    l.len(),
                    rotary_dim / 2
                ))
            }
            None => return Err(format!("longrope rope_scaling needs '{name}'")),
        }
    }
    let original = s
        .original_max_position_embeddings
        .or(top_level_original)
        .unwrap_or(max_position_embeddings);
    s.original_max_position_embeddings = Some(original);
    s.factor = max_position_embeddings as f64 / original as f64;
    if s.attention_factor.is_none() {
        s.attention_factor = Some(if s.factor <= 1.0 {
            1.0
        } else {
            (1.0 + s.factor.ln() / (original as f64).ln()).sqrt()
        });
    }
    Ok(())
}

fn parse_rope_scaling(
    v: Option<&Value>,
    path: &Path,
) -> Result<Option<RopeScaling>, CheckpointError> {
    let invalid = |message: String| CheckpointError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let obj = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(invalid("'rope_scaling' must be an object or null".into())),
    };
    let mut rope_type = obj
        .get("rope_type")
        .or_else(|| obj.get("type"))
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("'rope_scaling' has no 'rope_type'".into()))?
        .to_string();
    if rope_type == "su" {
        // Phi-3's first releases call longrope "su".
        rope_type = "longrope".into();
    }
    if rope_type == "default" {
        return Ok(None);
    }
    if !SUPPORTED_ROPE.contains(&rope_type.as_str()) {
        return Err(invalid(format!(
            "rope_scaling type '{rope_type}' is not supported (supported: {})",
            SUPPORTED_ROPE.join(", ")
        )));
    }
    let factor = match obj.get("factor") {
        // longrope derives its factor from the context lengths (finish_longrope).
        None | Some(Value::Null) if rope_type == "longrope" => 1.0,
        x => x
            .and_then(Value::as_f64)
            .filter(|f| *f > 0.0)
            .ok_or_else(|| invalid("'rope_scaling.factor' must be a positive number".into()))?,
    };
    let factors = |k: &str| -> Result<Option<Vec<f64>>, CheckpointError> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| x.as_f64())
                .collect::<Option<Vec<f64>>>()
                .map(Some)
                .ok_or_else(|| invalid(format!("'rope_scaling.{k}' must be a list of numbers"))),
            Some(_) => Err(invalid(format!(
                "'rope_scaling.{k}' must be a list of numbers"
            ))),
        }
    };
    // Present but of the wrong type is an error, not a field left out.
    let number = |k: &str| match obj.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_f64()
            .map(Some)
            .ok_or_else(|| invalid(format!("'rope_scaling.{k}' must be a number"))),
    };
    let low_freq_factor = number("low_freq_factor")?;
    let high_freq_factor = number("high_freq_factor")?;
    let original_max_position_embeddings = match obj.get("original_max_position_embeddings") {
        None | Some(Value::Null) => None,
        Some(x) => Some(
            x.as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    invalid(
                        "'rope_scaling.original_max_position_embeddings' must be a non-negative integer"
                            .into(),
                    )
                })?,
        ),
    };
    if rope_type == "llama3"
        && (low_freq_factor.is_none()
            || high_freq_factor.is_none()
            || original_max_position_embeddings.is_none())
    {
        return Err(invalid(
            "llama3 rope_scaling needs low_freq_factor, high_freq_factor and original_max_position_embeddings".into(),
        ));
    }
    Ok(Some(RopeScaling {
        rope_type,
        factor,
        low_freq_factor,
        high_freq_factor,
        original_max_position_embeddings,
        short_factor: factors("short_factor")?,
        long_factor: factors("long_factor")?,
        attention_factor: number("attention_factor")?,
    }))
}
