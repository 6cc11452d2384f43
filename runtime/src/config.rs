//! Model hyperparameters from a GGUF file's llama.cpp metadata (`<arch>.*` keys).

use athena_gguf::{escape_name, GgufFile, Value};

use crate::RuntimeError;

/// Architectures whose forward the runtime implements. Mistral checkpoints are exported as
/// `llama` (as llama.cpp does).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arch {
    Llama,
    Qwen2,
}

pub const SUPPORTED_ARCHS: &str = "llama, qwen2";

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
    /// NeoX-style RoPE (rotating dimension i with i + head_dim / 2, qwen2) instead of adjacent
    /// pairs (llama, whose q/k rows llama.cpp's converter permutes to fit).
    pub rope_neox: bool,
}

impl Config {
    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    pub fn from_gguf(f: &GgufFile) -> Result<Self, RuntimeError> {
        let arch_name = f.get_str("general.architecture")?;
        let arch = match arch_name {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
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
        if f.tensor("rope_freqs.weight").is_some() {
            return Err(RuntimeError::Tensor {
                name: "rope_freqs.weight".into(),
                problem: "RoPE frequency factors (llama3 scaling) are not supported yet".into(),
            });
        }
        Ok(Config {
            arch,
            dim,
            layers: count("block_count")?,
            ffn: count("feed_forward_length")?,
            heads,
            kv_heads,
            head_dim,
            vocab: 0,
            train_ctx: count("context_length")?,
            eps: float("attention.layer_norm_rms_epsilon", None)?,
            rope_base: float("rope.freq_base", Some(10000.0))?,
            rope_scale,
            rope_neox: arch == Arch::Qwen2,
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
