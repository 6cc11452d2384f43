//! Model hyperparameters, as in an HF config.json (llama, mistral, qwen2).

use serde::{Deserialize, Serialize};

/// Decoder architectures the pipeline understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Architecture {
    Llama,
    Mistral,
    Qwen2,
}

/// RoPE scaling as HF describes it (`rope_scaling` in config.json).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    /// "linear", "llama3", "yarn", ... (HF `rope_type` or `type`).
    pub rope_type: String,
    pub factor: f64,
    pub low_freq_factor: Option<f64>,
    pub high_freq_factor: Option<f64>,
    pub original_max_position_embeddings: Option<usize>,
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
];

/// RoPE scaling types the model forward implements.
const SUPPORTED_ROPE: &[&str] = &["linear", "llama3"];

impl Architecture {
    /// The HF `model_type` string.
    pub fn model_type(self) -> &'static str {
        SUPPORTED
            .iter()
            .find(|s| s.2 == self)
            .map(|s| s.1)
            .unwrap_or("llama")
    }
}

impl ModelConfig {
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
        if let Some(act) = v.get("hidden_act").and_then(Value::as_str) {
            if act != "silu" {
                return Err(invalid(format!(
                    "hidden_act '{act}' is not supported (only silu)"
                )));
            }
        }
        if get_bool("mlp_bias")?.unwrap_or(false) {
            return Err(invalid("mlp_bias = true is not supported".into()));
        }
        let attention_bias = match architecture {
            Architecture::Qwen2 => true,
            _ => {
                if get_bool("attention_bias")?.unwrap_or(false) {
                    return Err(invalid(
                        "attention_bias = true (biases on q/k/v/o) is not supported for llama/mistral".into(),
                    ));
                }
                false
            }
        };
        let default_max_pos = match architecture {
            Architecture::Llama => 2048,
            _ => 32768,
        };
        let config = ModelConfig {
            architecture,
            hidden_size,
            intermediate_size: need("intermediate_size")?,
            num_hidden_layers: need("num_hidden_layers")?,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            vocab_size: need("vocab_size")?,
            max_position_embeddings: get_usize("max_position_embeddings")?
                .unwrap_or(default_max_pos),
            rms_norm_eps: get_f64("rms_norm_eps")?.unwrap_or(1e-6),
            rope_theta: get_f64("rope_theta")?.unwrap_or(10000.0),
            rope_scaling: parse_rope_scaling(v.get("rope_scaling"), path)?,
            tie_word_embeddings: get_bool("tie_word_embeddings")?.unwrap_or(false),
            attention_bias,
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
    let rope_type = obj
        .get("rope_type")
        .or_else(|| obj.get("type"))
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("'rope_scaling' has no 'rope_type'".into()))?
        .to_string();
    if rope_type == "default" {
        return Ok(None);
    }
    if !SUPPORTED_ROPE.contains(&rope_type.as_str()) {
        return Err(invalid(format!(
            "rope_scaling type '{rope_type}' is not supported (supported: {})",
            SUPPORTED_ROPE.join(", ")
        )));
    }
    let factor = obj
        .get("factor")
        .and_then(Value::as_f64)
        .filter(|f| *f > 0.0)
        .ok_or_else(|| invalid("'rope_scaling.factor' must be a positive number".into()))?;
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
    }))
}
