//! Tiny random HF folders for tests.
#![allow(dead_code)]

use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// HF tensor name -> (shape, f32 data).
pub type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;
/// HF tensor name -> (dtype, shape, encoded bytes).
pub type EncodedTensors = BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>;

/// Deterministic pseudo-random numbers in [-scale, scale).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407))
    }
    pub fn next_f32(&mut self, scale: f32) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next_f32(scale)).collect()
    }
}

/// config.json of a tiny llama: 2 layers, hidden 16, 4 heads / 2 kv heads, MLP 32, vocab 50.
pub fn tiny_config(arch: &str) -> Value {
    let (architecture, model_type) = match arch {
        "qwen2" => ("Qwen2ForCausalLM", "qwen2"),
        "mistral" => ("MistralForCausalLM", "mistral"),
        _ => ("LlamaForCausalLM", "llama"),
    };
    json!({
        "architectures": [architecture],
        "model_type": model_type,
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 50,
        "max_position_embeddings": 128,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": false,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu"
    })
}

/// Random tensors for a config (names and shapes as the HF checkpoint has them).
pub fn random_tensors(config: &Value, seed: u64) -> Tensors {
    let path = Path::new("config.json");
    let c = athena::checkpoint::ModelConfig::from_hf_value(config, path).unwrap();
    let mut rng = Rng::new(seed);
    athena::checkpoint::expected_tensors(&c)
        .into_iter()
        .map(|(name, shape)| {
            let n = shape.iter().product();
            let data = if name.ends_with("norm.weight") {
                (0..n).map(|_| 1.0 + rng.next_f32(0.2)).collect()
            } else {
                rng.vec(n, 0.5)
            };
            (name, (shape, data))
        })
        .collect()
}

pub fn f32_bytes(data: &[f32]) -> Vec<u8> {
    data.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Writes tensors (already encoded as `dtype` bytes) to a safetensors file.
pub fn write_safetensors(path: &Path, tensors: &EncodedTensors) {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, (dt, shape, bytes))| {
            (
                n.clone(),
                TensorView::new(*dt, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Writes config.json and a single model.safetensors (f32).
pub fn write_folder(dir: &Path, config: &Value, tensors: &Tensors) {
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_string_pretty(config).unwrap(),
    )
    .unwrap();
    let enc = tensors
        .iter()
        .map(|(n, (s, d))| (n.clone(), (Dtype::F32, s.clone(), f32_bytes(d))))
        .collect();
    write_safetensors(&dir.join("model.safetensors"), &enc);
}

/// A tiny word-level tokenizer.json: "<unk>"=0, "<s>"=1, "</s>"=2, then words.
pub fn write_tokenizer(dir: &Path, words: &[&str], post_bos: bool) {
    let mut vocab = serde_json::Map::new();
    for (i, w) in ["<unk>", "<s>", "</s>"].iter().chain(words).enumerate() {
        vocab.insert(w.to_string(), json!(i));
    }
    let special = |id: u32, c: &str| {
        json!({"id": id, "content": c, "single_word": false, "lstrip": false, "rstrip": false,
               "normalized": false, "special": true})
    };
    let post = if post_bos {
        json!({"type": "TemplateProcessing",
               "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
               "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
               "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}})
    } else {
        Value::Null
    };
    let tok = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0, "<unk>"), special(1, "<s>"), special(2, "</s>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": post,
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
}
