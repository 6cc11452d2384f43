//! The complete llama.cpp metadata of an export: `general.*`, the `<arch>.*` hyperparameters and
//! the `tokenizer.*` keys ([`super::tokenizer`]).
//!
//! Hyperparameters follow `convert_hf_to_gguf.py` (`TextModel.set_gguf_parameters` and
//! `LlamaModel.set_gguf_parameters`); the architecture name is `llama` for llama and mistral (as
//! llama.cpp converts `MistralForCausalLM`) and `qwen2` for qwen2:
//!
//! | key | value |
//! |---|---|
//! | `general.architecture`, `general.type`, `general.name` | arch, `"model"`, the model name |
//! | `general.file_type` | llama.cpp `LlamaFileType` of the requested type (u32) |
//! | `general.quantization_version` | 2 (u32) |
//! | `<arch>.block_count`, `.context_length`, `.embedding_length`, `.feed_forward_length` | u32 |
//! | `<arch>.attention.head_count`, `.attention.head_count_kv` | u32 |
//! | `<arch>.rope.freq_base`, `.attention.layer_norm_rms_epsilon` | f32 |
//! | `<arch>.rope.scaling.type` / `.factor` / `.original_context_length` | linear and yarn only |
//! | `<arch>.attention.key_length`, `.value_length` | u32, only when `head_dim != hidden / heads` |
//! | `<arch>.vocab_size`, `<arch>.rope.dimension_count` | u32 (`rope.dimension_count` = `head_dim`) |
//!
//! llama.cpp writes `vocab_size` and `rope.dimension_count` for llama only; we write them for
//! qwen2 too (the values are what its loader derives anyway). RoPE scaling types that llama.cpp
//! turns into an extra tensor (`llama3`: `rope_freqs.weight`) or handles per model (`longrope`,
//! `dynamic`) are refused rather than silently dropped.

use super::pretokenizer::PreMatch;
use super::tokenizer::{tokenizer_keys, Meta, TokenizerFiles};
use super::ExportError;
use crate::checkpoint::config::FREQUENCY_FACTORS;
use crate::checkpoint::gguf_source::ROPE_FREQS;
use crate::checkpoint::{Architecture, ModelConfig};
use crate::container::gguf::Value;

/// ggml's `GGML_QNT_VERSION`, written as `general.quantization_version`.
pub const QUANTIZATION_VERSION: u32 = 2;

/// The llama.cpp architecture name (`general.architecture`).
pub fn arch_name(a: Architecture) -> &'static str {
    match a {
        Architecture::Llama | Architecture::Mistral => "llama",
        Architecture::Qwen2 => "qwen2",
        Architecture::Qwen3 => "qwen3",
        Architecture::Gemma3 => "gemma3",
        Architecture::Phi3 => "phi3",
    }
}

/// Tensors llama.cpp's converter derives from the config rather than the checkpoint: llama3
/// RoPE scaling as `rope_freqs.weight` (per rotated pair, the divisor of its frequency) and
/// Phi-3's longrope factor lists as `rope_factors_{long,short}.weight`. Written first, as
/// `generate_extra_tensors` does.
pub fn rope_tensors(c: &ModelConfig) -> Result<Vec<(&'static str, Vec<f32>)>, ExportError> {
    let Some(s) = &c.rope_scaling else {
        return Ok(Vec::new());
    };
    let list = |v: &Option<Vec<f64>>, what: &str| -> Result<Vec<f32>, ExportError> {
        v.as_ref()
            .map(|v| v.iter().map(|&x| x as f32).collect())
            .ok_or_else(|| ExportError::Unsupported(format!("rope_scaling without {what}")))
    };
    Ok(match s.rope_type.as_str() {
        "llama3" => {
            // The ratio of the unscaled to the scaled frequency, exactly the model's.
            let plain = crate::model::Rope::new(&ModelConfig {
                rope_scaling: None,
                ..c.clone()
            });
            let scaled = crate::model::Rope::new(c);
            let factors = plain
                .inv_freq()
                .iter()
                .zip(scaled.inv_freq())
                .map(|(a, b)| a / b)
                .collect();
            vec![(ROPE_FREQS, factors)]
        }
        FREQUENCY_FACTORS => vec![(ROPE_FREQS, list(&s.short_factor, "factors")?)],
        "longrope" => vec![
            (
                "rope_factors_long.weight",
                list(&s.long_factor, "long_factor")?,
            ),
            (
                "rope_factors_short.weight",
                list(&s.short_factor, "short_factor")?,
            ),
        ],
        _ => Vec::new(),
    })
}

/// All metadata of a model file, in writing order.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMetadata {
    pub keys: Vec<(String, Value)>,
    /// How `tokenizer.ggml.pre` was found (`None` for a SentencePiece vocabulary).
    pub pre: Option<PreMatch>,
}

/// `general.*` and `<arch>.*` keys for a config; `file_type` is `general.file_type`.
pub fn hyperparameter_keys(
    config: &ModelConfig,
    name: &str,
    file_type: u32,
) -> Result<Vec<(String, Value)>, ExportError> {
    let c = config;
    let arch = arch_name(c.architecture);
    let k = |s: &str| format!("{arch}.{s}");
    let u = |x: usize, what: &str| -> Result<u32, ExportError> {
        u32::try_from(x)
            .map_err(|_| ExportError::Unsupported(format!("{what} {x} does not fit a u32")))
    };
    // Config readers refuse it; a config built by hand must not give llama.cpp a context of 0.
    if c.max_position_embeddings == 0 {
        return Err(ExportError::Unsupported(
            "max_position_embeddings is 0: the file's context_length must be positive".into(),
        ));
    }
    let mut m = Meta::default();
    m.set("general.architecture", arch);
    m.set("general.type", "model");
    m.set("general.name", name);
    m.set("general.quantization_version", QUANTIZATION_VERSION);
    m.set(
        k("block_count"),
        u(c.num_hidden_layers, "num_hidden_layers")?,
    );
    m.set(
        k("context_length"),
        u(c.max_position_embeddings, "max_position_embeddings")?,
    );
    m.set(k("embedding_length"), u(c.hidden_size, "hidden_size")?);
    m.set(
        k("feed_forward_length"),
        u(c.intermediate_size, "intermediate_size")?,
    );
    m.set(
        k("attention.head_count"),
        u(c.num_attention_heads, "num_attention_heads")?,
    );
    m.set(
        k("attention.head_count_kv"),
        u(c.num_key_value_heads, "num_key_value_heads")?,
    );
    if let Some(rs) = &c.rope_scaling {
        match rs.rope_type.as_str() {
            "linear" => {
                m.set(k("rope.scaling.type"), "linear");
                m.set(k("rope.scaling.factor"), rs.factor as f32);
            }
            "yarn" => {
                let orig = rs.original_max_position_embeddings.ok_or_else(|| {
                    ExportError::Unsupported(
                        "rope_scaling 'yarn' without original_max_position_embeddings".into(),
                    )
                })?;
                m.set(k("rope.scaling.type"), "yarn");
                m.set(k("rope.scaling.factor"), rs.factor as f32);
                m.set(
                    k("rope.scaling.original_context_length"),
                    u(orig, "original_max_position_embeddings")?,
                );
            }
            "longrope" => {
                // llama.cpp's Phi3MiniModel: no scaling type, the factor lists as tensors.
                let orig = rs.original_max_position_embeddings.unwrap_or(c.max_position_embeddings);
                m.set(
                    k("rope.scaling.original_context_length"),
                    u(orig, "original_max_position_embeddings")?,
                );
                m.set(
                    k("rope.scaling.attn_factor"),
                    rs.attention_factor.unwrap_or(1.0) as f32,
                );
            }
            // As rope_freqs.weight (rope_tensors).
            "llama3" | FREQUENCY_FACTORS => {}
            "default" | "none" => {}
            other => {
                return Err(ExportError::Unsupported(format!(
                    "rope_scaling type '{other}' is not supported by the plain export (supported: linear, yarn, llama3, longrope)"
                )))
            }
        }
    }
    if let Some(local) = &c.local_attention {
        m.set(
            k("attention.sliding_window"),
            u(local.window, "sliding_window")?,
        );
        m.set(
            k("attention.sliding_window_pattern"),
            Value::Array(crate::container::gguf::Array::Bool(local.layers.clone())),
        );
        m.set(k("rope.freq_base_swa"), local.rope_theta as f32);
    }
    if c.architecture == Architecture::Phi3 {
        // Phi-4-mini has no sliding window; llama.cpp's converter writes 0 for "none".
        m.set(k("attention.sliding_window"), 0u32);
    }
    m.set(k("rope.freq_base"), c.rope_theta as f32);
    m.set(k("attention.layer_norm_rms_epsilon"), c.rms_norm_eps as f32);
    let default_head_dim = c.hidden_size.checked_div(c.num_attention_heads);
    if default_head_dim != Some(c.head_dim) || c.architecture == Architecture::Gemma3 {
        m.set(k("attention.key_length"), u(c.head_dim, "head_dim")?);
        m.set(k("attention.value_length"), u(c.head_dim, "head_dim")?);
    }
    m.set("general.file_type", file_type);
    m.set(k("vocab_size"), u(c.vocab_size, "vocab_size")?);
    m.set(
        k("rope.dimension_count"),
        u(c.rotary_dim, "rotary dimensions")?,
    );
    Ok(m.0)
}

/// Hyperparameters followed by the tokenizer keys.
pub fn model_metadata(
    config: &ModelConfig,
    tokenizer: &TokenizerFiles,
    name: &str,
    file_type: u32,
) -> Result<ModelMetadata, ExportError> {
    let mut keys = hyperparameter_keys(config, name, file_type)?;
    let tok = tokenizer_keys(tokenizer, config)?;
    keys.extend(tok.keys);
    Ok(ModelMetadata { keys, pre: tok.pre })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::RopeScaling;

    fn config() -> ModelConfig {
        ModelConfig {
            architecture: Architecture::Llama,
            hidden_size: 576,
            intermediate_size: 1536,
            num_hidden_layers: 30,
            num_attention_heads: 9,
            num_key_value_heads: 3,
            head_dim: 64,
            vocab_size: 49152,
            max_position_embeddings: 8192,
            rms_norm_eps: 1e-5,
            rope_theta: 100000.0,
            rope_scaling: None,
            tie_word_embeddings: true,
            attention_bias: false,
            rotary_dim: 64,
            local_attention: None,
            bos_token_id: Some(1),
            eos_token_id: Some(2),
        }
    }

    fn get<'a>(keys: &'a [(String, Value)], k: &str) -> Option<&'a Value> {
        keys.iter().find(|(key, _)| key == k).map(|(_, v)| v)
    }

    #[test]
    fn a_context_length_of_0_is_refused() {
        let mut c = config();
        c.max_position_embeddings = 0;
        let e = hyperparameter_keys(&c, "x", 1).unwrap_err().to_string();
        assert!(e.contains("max_position_embeddings is 0"), "{e}");
    }

    #[test]
    fn llama_hyperparameters() {
        let keys = hyperparameter_keys(&config(), "SmolLM2", 1).unwrap();
        for (k, v) in [
            ("general.architecture", Value::from("llama")),
            ("general.name", Value::from("SmolLM2")),
            ("general.file_type", Value::U32(1)),
            ("general.quantization_version", Value::U32(2)),
            ("llama.block_count", Value::U32(30)),
            ("llama.context_length", Value::U32(8192)),
            ("llama.embedding_length", Value::U32(576)),
            ("llama.feed_forward_length", Value::U32(1536)),
            ("llama.attention.head_count", Value::U32(9)),
            ("llama.attention.head_count_kv", Value::U32(3)),
            ("llama.rope.freq_base", Value::F32(100000.0)),
            ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
            ("llama.vocab_size", Value::U32(49152)),
            ("llama.rope.dimension_count", Value::U32(64)),
        ] {
            assert_eq!(get(&keys, k), Some(&v), "{k}");
        }
        // head_dim = width / heads: no key_length; no rope scaling.
        assert!(get(&keys, "llama.attention.key_length").is_none());
        assert!(!keys.iter().any(|(k, _)| k.contains("scaling")));
        let mut unique: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), keys.len());
    }

    #[test]
    fn qwen2_head_dim_and_rope_scaling() {
        let mut c = config();
        c.architecture = Architecture::Qwen2;
        c.head_dim = 128;
        c.rope_scaling = Some(RopeScaling {
            rope_type: "yarn".into(),
            factor: 4.0,
            low_freq_factor: None,
            high_freq_factor: None,
            original_max_position_embeddings: Some(32768),
            ..RopeScaling::default()
        });
        let keys = hyperparameter_keys(&c, "q", 7).unwrap();
        assert_eq!(
            get(&keys, "general.architecture"),
            Some(&Value::from("qwen2"))
        );
        assert_eq!(
            get(&keys, "qwen2.attention.key_length"),
            Some(&Value::U32(128))
        );
        assert_eq!(
            get(&keys, "qwen2.attention.value_length"),
            Some(&Value::U32(128))
        );
        assert_eq!(
            get(&keys, "qwen2.rope.scaling.type"),
            Some(&Value::from("yarn"))
        );
        assert_eq!(
            get(&keys, "qwen2.rope.scaling.factor"),
            Some(&Value::F32(4.0))
        );
        assert_eq!(
            get(&keys, "qwen2.rope.scaling.original_context_length"),
            Some(&Value::U32(32768))
        );
        c.rope_scaling.as_mut().unwrap().rope_type = "linear".into();
        let keys = hyperparameter_keys(&c, "q", 7).unwrap();
        assert_eq!(
            get(&keys, "qwen2.rope.scaling.type"),
            Some(&Value::from("linear"))
        );
        assert!(get(&keys, "qwen2.rope.scaling.original_context_length").is_none());
        c.rope_scaling.as_mut().unwrap().rope_type = "dynamic".into();
        let e = hyperparameter_keys(&c, "q", 7).unwrap_err().to_string();
        assert!(e.contains("dynamic"), "{e}");
        c.architecture = Architecture::Mistral;
        c.rope_scaling = None;
        let keys = hyperparameter_keys(&c, "m", 1).unwrap();
        assert_eq!(
            get(&keys, "general.architecture"),
            Some(&Value::from("llama"))
        );
    }

    /// llama3 scaling goes into the file as llama.cpp's converter writes it: no scaling keys,
    /// `rope_freqs.weight` with its factors (convert_hf_to_gguf.py's loop, computed here
    /// independently of the model's RoPE).
    #[test]
    fn llama3_rope_becomes_rope_freqs() {
        let mut c = config();
        c.rope_theta = 500000.0;
        c.rope_scaling = Some(RopeScaling {
            rope_type: "llama3".into(),
            factor: 32.0,
            low_freq_factor: Some(1.0),
            high_freq_factor: Some(4.0),
            original_max_position_embeddings: Some(8192),
            ..RopeScaling::default()
        });
        let keys = hyperparameter_keys(&c, "l", 1).unwrap();
        assert!(keys.iter().all(|(k, _)| !k.contains("rope.scaling")));
        let tensors = rope_tensors(&c).unwrap();
        assert_eq!(tensors.len(), 1);
        let (name, got) = &tensors[0];
        assert_eq!(*name, "rope_freqs.weight");
        let dim = c.head_dim;
        assert_eq!(got.len(), dim / 2);
        let (low_wavelen, high_wavelen) = (8192.0 / 1.0, 8192.0 / 4.0);
        for (i, &g) in got.iter().enumerate() {
            let freq = 1.0 / 500000f64.powf((2 * i) as f64 / dim as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            let want = if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                32.0
            } else {
                let smooth = (8192.0 / wavelen - 1.0) / (4.0 - 1.0);
                1.0 / ((1.0 - smooth) / 32.0 + smooth)
            };
            assert!(
                (g as f64 - want).abs() < 1e-4 * want,
                "pair {i}: {g} vs {want}"
            );
        }
        assert!(got.contains(&1.0) && got.iter().any(|&g| g > 31.9));
    }

    /// The per-family keys llama.cpp's loaders read: gemma3's window, pattern and local RoPE
    /// base (and key_length always), phi3's rotated dimensions, original context and attention
    /// factor with its factor tensors, qwen3's architecture name.
    #[test]
    fn family_keys() {
        let mut c = config();
        c.architecture = Architecture::Gemma3;
        c.head_dim = 64;
        c.hidden_size = 576;
        c.num_attention_heads = 9;
        c.num_hidden_layers = 3;
        c.local_attention = Some(crate::checkpoint::LocalAttention {
            window: 512,
            layers: vec![true, true, false],
            rope_theta: 10000.0,
        });
        let keys = hyperparameter_keys(&c, "g", 1).unwrap();
        assert_eq!(
            get(&keys, "general.architecture"),
            Some(&Value::from("gemma3"))
        );
        assert_eq!(
            get(&keys, "gemma3.attention.sliding_window"),
            Some(&Value::U32(512))
        );
        assert_eq!(
            get(&keys, "gemma3.attention.sliding_window_pattern"),
            Some(&Value::Array(crate::container::gguf::Array::Bool(vec![
                true, true, false
            ])))
        );
        assert_eq!(
            get(&keys, "gemma3.rope.freq_base_swa"),
            Some(&Value::F32(10000.0))
        );
        assert_eq!(
            get(&keys, "gemma3.attention.key_length"),
            Some(&Value::U32(64))
        );

        let mut c = config();
        c.architecture = Architecture::Phi3;
        c.rotary_dim = 48;
        c.max_position_embeddings = 131072;
        c.rope_scaling = Some(RopeScaling {
            rope_type: "longrope".into(),
            factor: 32.0,
            original_max_position_embeddings: Some(4096),
            short_factor: Some(vec![1.0; 24]),
            long_factor: Some(vec![2.0; 24]),
            attention_factor: Some(1.19),
            ..RopeScaling::default()
        });
        let keys = hyperparameter_keys(&c, "p", 1).unwrap();
        assert_eq!(
            get(&keys, "phi3.rope.dimension_count"),
            Some(&Value::U32(48))
        );
        assert_eq!(
            get(&keys, "phi3.rope.scaling.original_context_length"),
            Some(&Value::U32(4096))
        );
        assert_eq!(
            get(&keys, "phi3.rope.scaling.attn_factor"),
            Some(&Value::F32(1.19))
        );
        assert!(get(&keys, "phi3.rope.scaling.type").is_none());
        let names: Vec<&str> = rope_tensors(&c).unwrap().iter().map(|t| t.0).collect();
        assert_eq!(
            names,
            ["rope_factors_long.weight", "rope_factors_short.weight"]
        );

        let mut c = config();
        c.architecture = Architecture::Qwen3;
        let keys = hyperparameter_keys(&c, "q", 1).unwrap();
        assert_eq!(
            get(&keys, "general.architecture"),
            Some(&Value::from("qwen3"))
        );
        assert!(rope_tensors(&c).unwrap().is_empty());
    }
}
