//! Model hyperparameters from a GGUF file's llama.cpp metadata (`<arch>.*` keys).

use athena_gguf::{escape_name, GgufFile, Value};

use crate::RuntimeError;

/// Architectures whose forward the runtime implements. Mistral checkpoints are exported as
/// `llama` (as llama.cpp does).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arch {
    Llama,
    Qwen2,
    Qwen3,
    Gemma3,
    Phi3,
}

pub const SUPPORTED_ARCHS: &str = "llama, qwen2, qwen3, gemma3, phi3";

/// Gemma 3's sliding-window attention.
#[derive(Clone, Debug)]
pub struct SlidingWindow {
    /// A query at position p sees keys p - window + 1 ..= p.
    pub window: usize,
    /// Per layer: whether it uses the window.
    pub layers: Vec<bool>,
    /// RoPE base of the windowed layers (no scaling there).
    pub rope_base: f32,
}

/// Phi-3's longrope: per rotated pair, frequency divisors for contexts up to the original length
/// and beyond (chosen by the cache's size, as llama.cpp chooses by its context), and the
/// factor on cos and sin.
#[derive(Clone, Debug)]
pub struct LongRope {
    pub original_ctx: usize,
    pub short: Vec<f32>,
    pub long: Vec<f32>,
    pub attn_factor: f32,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub arch: Arch,
    pub dim: usize,
    pub layers: usize,
    pub ffn: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Rows of the token embedding (set by the model loader).
    pub vocab: usize,
    /// The context the model was trained with (`<arch>.context_length`).
    pub train_ctx: usize,
    pub eps: f32,
    pub rope_base: f32,
    /// Positions are divided by this (linear RoPE scaling; 1 without).
    pub rope_scale: f32,
    /// NeoX-style RoPE (rotating dimension i with i + rope_dims / 2: every family but llama)
    /// instead of adjacent pairs (llama, whose q/k rows llama.cpp's converter permutes to fit).
    pub rope_neox: bool,
    /// Dimensions of each head that RoPE rotates (`<arch>.rope.dimension_count`; Phi-3 rotates
    /// part of the head).
    pub rope_dims: usize,
    /// llama3 scaling as llama.cpp stores it (`rope_freqs.weight`): per pair, a frequency divisor.
    pub rope_freq_factors: Option<Vec<f32>>,
    pub longrope: Option<LongRope>,
    pub sliding_window: Option<SlidingWindow>,
}

impl Config {
    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// The sliding window of layer `l`, if it has one.
    pub fn window(&self, l: usize) -> Option<usize> {
        self.sliding_window
            .as_ref()
            .filter(|s| s.layers.get(l).copied().unwrap_or(false))
            .map(|s| s.window)
    }

    pub fn from_gguf(f: &GgufFile) -> Result<Self, RuntimeError> {
        let arch_name = f.get_str("general.architecture")?;
        let arch = match arch_name {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            "gemma3" => Arch::Gemma3,
            "phi3" => Arch::Phi3,
            other => return Err(RuntimeError::Architecture(other.to_string())),
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let bad = |k: &str, problem: String| RuntimeError::Metadata {
            key: key(k),
            problem,
        };
        let count = |k: &str| -> Result<usize, RuntimeError> {
            let v = f.get_u64(&key(k))?;
            match usize::try_from(v) {
                Ok(v) if v > 0 && v <= 1 << 24 => Ok(v),
                _ => Err(bad(k, format!("{v} is out of range (1 to 2^24)"))),
            }
        };
        let float = |k: &str, default: Option<f32>| -> Result<f32, RuntimeError> {
            let v = match (f.get(&key(k)), default) {
                (None, Some(d)) => d,
                _ => f.get_f64(&key(k))? as f32,
            };
            if v.is_finite() && v > 0.0 {
                Ok(v)
            } else {
                Err(bad(k, format!("{v} must be a positive finite number")))
            }
        };
        let dim = count("embedding_length")?;
        let heads = count("attention.head_count")?;
        let kv_heads = match f.get(&key("attention.head_count_kv")) {
            None => heads,
            Some(_) => count("attention.head_count_kv")?,
        };
        if heads % kv_heads != 0 {
            return Err(bad(
                "attention.head_count_kv",
                format!("{heads} heads do not split into {kv_heads} key/value groups"),
            ));
        }
        let head_dim = match f.get(&key("attention.key_length")) {
            Some(_) => count("attention.key_length")?,
            None if dim % heads == 0 => dim / heads,
            None => {
                return Err(bad(
                    "attention.key_length",
                    format!("missing, and the width {dim} is not a multiple of {heads} heads"),
                ))
            }
        };
        if head_dim % 2 != 0 {
            return Err(bad(
                "attention.key_length",
                format!("head size {head_dim} is odd"),
            ));
        }
        let rope_scale = match f.get(&key("rope.scaling.type")) {
            None => 1.0,
            Some(Value::String(s)) if s == "none" => 1.0,
            Some(Value::String(s)) if s == "linear" => float("rope.scaling.factor", Some(1.0))?,
            Some(other) => {
                let found = match other {
                    Value::String(s) => format!("'{}'", escape_name(s)),
                    v => v.type_description(),
                };
                return Err(bad(
                    "rope.scaling.type",
                    format!("{found} is not supported by the runtime (none, linear)"),
                ));
            }
        };
        let rope_dims = match f.get(&key("rope.dimension_count")) {
            None => head_dim,
            Some(_) => count("rope.dimension_count")?,
        };
        if rope_dims % 2 != 0 || rope_dims > head_dim {
            return Err(bad(
                "rope.dimension_count",
                format!("{rope_dims} rotated dimensions of a head of {head_dim}"),
            ));
        }
        let factors = |name: &str| -> Result<Option<Vec<f32>>, RuntimeError> {
            let Some(t) = f.tensor(name) else {
                return Ok(None);
            };
            let values: Vec<f32> = f
                .tensor_data(t)
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            if t.ggml_type != athena_gguf::GgmlType::F32
                || values.len() != rope_dims / 2
                || values.iter().any(|v| !(v.is_finite() && *v > 0.0))
            {
                return Err(RuntimeError::Tensor {
                    name: name.into(),
                    problem: format!(
                        "expected F32 of {} positive factors (one per rotated pair)",
                        rope_dims / 2
                    ),
                });
            }
            Ok(Some(values))
        };
        let rope_freq_factors = factors("rope_freqs.weight")?;
        let longrope = match (
            factors("rope_factors_short.weight")?,
            factors("rope_factors_long.weight")?,
        ) {
            (Some(short), Some(long)) => Some(LongRope {
                original_ctx: match f.get(&key("rope.scaling.original_context_length")) {
                    Some(_) => count("rope.scaling.original_context_length")?,
                    None => count("context_length")?,
                },
                short,
                long,
                attn_factor: float("rope.scaling.attn_factor", Some(1.0))?,
            }),
            (None, None) => None,
            _ => {
                return Err(RuntimeError::MissingTensor(
                    "rope_factors_short.weight / rope_factors_long.weight (both or neither)".into(),
                ))
            }
        };
        let layers = count("block_count")?;
        let window = match f.get(&key("attention.sliding_window")) {
            Some(_) if arch == Arch::Gemma3 => f.get_u64(&key("attention.sliding_window"))?,
            _ => 0,
        };
        let sliding_window = if window > 0 {
            let pattern = match f.get(&key("attention.sliding_window_pattern")) {
                Some(Value::Array(a)) => a
                    .as_bools()
                    .filter(|b| b.len() == layers)
                    .map(<[bool]>::to_vec)
                    .ok_or_else(|| {
                        bad(
                            "attention.sliding_window_pattern",
                            format!("expected {layers} booleans"),
                        )
                    })?,
                Some(_) => {
                    let n = count("attention.sliding_window_pattern")?;
                    (0..layers).map(|l| l % n < n - 1).collect()
                }
                // llama.cpp's gemma3 default: every 6th layer global.
                None => (0..layers).map(|l| l % 6 < 5).collect(),
            };
            Some(SlidingWindow {
                window: usize::try_from(window).unwrap_or(usize::MAX),
                layers: pattern,
                rope_base: float("rope.freq_base_swa", Some(10000.0))?,
            })
        } else {
            None
        };
        Ok(Config {
            arch,
            dim,
            layers,
            ffn: count("feed_forward_length")?,
            heads,
            kv_heads,
            head_dim,
            vocab: 0,
            train_ctx: count("context_length")?,
            eps: float("attention.layer_norm_rms_epsilon", None)?,
            rope_base: float("rope.freq_base", Some(10000.0))?,
            rope_scale,
            rope_neox: arch != Arch::Llama,
            rope_dims,
            rope_freq_factors,
            longrope,
            sliding_window,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use athena_gguf::GgufWriter;

    /// A llama config with `edit` applied to its keys, read back through the GGUF reader.
    fn config_with(edit: impl FnOnce(&mut Vec<(String, Value)>)) -> Result<Config, RuntimeError> {
        let mut keys: Vec<(String, Value)> = vec![
            ("general.architecture".into(), "llama".into()),
            ("llama.embedding_length".into(), Value::U32(64)),
            ("llama.attention.head_count".into(), Value::U32(4)),
            ("llama.attention.head_count_kv".into(), Value::U32(2)),
            ("llama.block_count".into(), Value::U32(2)),
            ("llama.feed_forward_length".into(), Value::U32(128)),
            ("llama.context_length".into(), Value::U32(256)),
            (
                "llama.attention.layer_norm_rms_epsilon".into(),
                Value::F32(1e-5),
            ),
            ("llama.rope.freq_base".into(), Value::F32(10000.0)),
        ];
        edit(&mut keys);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.gguf");
        let mut w = GgufWriter::new(&path);
        for (k, v) in keys {
            w.add_metadata(k, v).unwrap();
        }
        w.finish().unwrap();
        Config::from_gguf(&GgufFile::open(&path).unwrap())
    }

    fn set(keys: &mut [(String, Value)], key: &str, value: Value) {
        keys.iter_mut().find(|(k, _)| k == key).unwrap().1 = value;
    }

    fn refused(edit: impl FnOnce(&mut Vec<(String, Value)>), want: &str) {
        let e = config_with(edit).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains(want), "{want:?} in {e:?}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn a_sane_config_is_read() {
        let c = config_with(|_| {}).unwrap();
        assert_eq!((c.layers, c.heads, c.kv_heads, c.head_dim), (2, 4, 2, 16));
        assert_eq!((c.eps, c.rope_base), (1e-5, 10000.0));
    }

    #[test]
    fn non_finite_and_out_of_range_hyperparameters_are_refused() {
        let eps = "llama.attention.layer_norm_rms_epsilon";
        let base = "llama.rope.freq_base";
        for bad in [0.0, -1e-5, f32::NAN, f32::INFINITY] {
            refused(|k| set(k, eps, Value::F32(bad)), eps);
            refused(|k| set(k, base, Value::F32(bad)), base);
        }
        refused(
            |k| set(k, "llama.block_count", Value::U32(0)),
            "llama.block_count': 0 is out of range",
        );
        refused(
            |k| set(k, "llama.attention.head_count", Value::U32(0)),
            "llama.attention.head_count': 0 is out of range",
        );
        refused(
            |k| set(k, "llama.attention.head_count_kv", Value::U32(0)),
            "llama.attention.head_count_kv': 0 is out of range",
        );
        refused(
            |k| set(k, "llama.attention.head_count_kv", Value::U32(3)),
            "4 heads do not split into 3 key/value groups",
        );
        refused(
            |k| set(k, "llama.attention.head_count", Value::U32(6)),
            "the width 64 is not a multiple of 6 heads",
        );
        refused(
            |k| set(k, "llama.context_length", Value::U32(0)),
            "llama.context_length': 0 is out of range",
        );
        refused(
            |k| {
                k.push(("llama.rope.scaling.type".into(), "linear".into()));
                k.push(("llama.rope.scaling.factor".into(), Value::F32(f32::NAN)));
            },
            "llama.rope.scaling.factor",
        );
    }

    #[test]
    fn names_from_the_file_are_escaped() {
        refused(
            |k| set(k, "general.architecture", "ll\u{1b}[2Jama\n".into()),
            "architecture 'll\\u{1b}[2Jama\\n'",
        );
        refused(
            |k| k.push(("llama.rope.scaling.type".into(), "yarn\n".into())),
            "'yarn\\n' is not supported",
        );
    }
}
