//! Shared test helpers: loading the test vectors of fixtures/vectors/ (layout:
//! fixtures/vectors/README.md), and tiny random HF folders.
#![allow(dead_code)]
use std::fs;
use std::path::{Path, PathBuf};

use athena::container::gguf::{GgmlType, GgufFile, GgufWriter, Value as MetaValue};
use athena_decode::{CodebookType, Params, Parts};

pub fn vectors_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/vectors")
}

/// One vector's files, read into memory.
#[derive(Clone)]
pub struct VectorFiles {
    pub name: String,
    pub params: Params,
    pub indices: Vec<u8>,
    pub codebook: Vec<u8>,
    pub scales: Vec<u8>,
    pub lowrank_a: Vec<u8>,
    pub lowrank_b: Vec<u8>,
    pub signs: Vec<u8>,
    pub row_scales: Vec<u8>,
    pub expected: Vec<f32>,
}

pub fn parse_params(text: &str) -> Params {
    let mut p = Params {
        rows: 0,
        cols: 0,
        vector_dim: 0,
        centroids: 0,
        tile_rows: 0,
        tile_cols: 0,
        rank: 0,
        codebook: CodebookType::I8,
        rotation: 0,
        row_scales: false,
    };
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let num = || {
            value
                .trim()
                .parse::<u64>()
                .unwrap_or_else(|e| panic!("{key}: {e}"))
        };
        match key.trim() {
            "rows" => p.rows = num(),
            "cols" => p.cols = num(),
            "vector_dim" => p.vector_dim = num() as u32,
            "centroids" => p.centroids = num() as u32,
            "tile_rows" => p.tile_rows = num(),
            "tile_cols" => p.tile_cols = num(),
            "rank" => p.rank = num() as u32,
            "rotation" => p.rotation = num() as u32,
            "row_scales" => {
                p.row_scales = match num() {
                    0 => false,
                    1 => true,
                    other => panic!("row_scales={other}"),
                }
            }
            "codebook" => p.codebook = CodebookType::from_name(value.trim()).expect("codebook"),
            other => panic!("unknown key {other}"),
        }
    }
    p
}

fn read_opt(dir: &Path, name: &str) -> Vec<u8> {
    fs::read(dir.join(name)).unwrap_or_default()
}

pub fn load(dir: &Path) -> VectorFiles {
    let params = parse_params(&fs::read_to_string(dir.join("params.txt")).expect("params.txt"));
    let expected = read_opt(dir, "expected.f32")
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    VectorFiles {
        name: dir.file_name().unwrap().to_string_lossy().into_owned(),
        params,
        indices: fs::read(dir.join("indices.bin")).expect("indices.bin"),
        codebook: fs::read(dir.join("codebook.bin")).expect("codebook.bin"),
        scales: read_opt(dir, "scales.bin"),
        lowrank_a: read_opt(dir, "lowrank_a.bin"),
        lowrank_b: read_opt(dir, "lowrank_b.bin"),
        signs: read_opt(dir, "signs.bin"),
        row_scales: read_opt(dir, "row_scales.bin"),
        expected,
    }
}

/// Every vector folder, sorted by name.
pub fn all() -> Vec<VectorFiles> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(vectors_root())
        .expect("fixtures/vectors")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("params.txt").is_file())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 20,
        "expected the generated vectors, found {}",
        dirs.len()
    );
    dirs.iter().map(|d| load(d)).collect()
}

impl VectorFiles {
    /// The component buffers, as the decoder takes them.
    pub fn parts(&self) -> Parts<'_> {
        Parts {
            indices: &self.indices,
            codebook: &self.codebook,
            scales: &self.scales,
            lowrank_a: &self.lowrank_a,
            lowrank_b: &self.lowrank_b,
            signs: &self.signs,
            row_scales: &self.row_scales,
        }
    }

    /// Writes this vector as a folder under `root` (for corrupted copies).
    pub fn write(&self, root: &Path) -> PathBuf {
        let dir = root.join(&self.name);
        fs::create_dir_all(&dir).unwrap();
        let p = &self.params;
        let text = format!(
            "rows={}\ncols={}\nvector_dim={}\ncentroids={}\ntile_rows={}\ntile_cols={}\nrank={}\ncodebook={}\nrotation={}\nrow_scales={}\n",
            p.rows, p.cols, p.vector_dim, p.centroids, p.tile_rows, p.tile_cols, p.rank, p.codebook.name(), p.rotation, u8::from(p.row_scales)
        );
        fs::write(dir.join("params.txt"), text).unwrap();
        fs::write(dir.join("indices.bin"), &self.indices).unwrap();
        fs::write(dir.join("codebook.bin"), &self.codebook).unwrap();
        fs::write(dir.join("scales.bin"), &self.scales).unwrap();
        fs::write(dir.join("lowrank_a.bin"), &self.lowrank_a).unwrap();
        fs::write(dir.join("lowrank_b.bin"), &self.lowrank_b).unwrap();
        fs::write(dir.join("signs.bin"), &self.signs).unwrap();
        fs::write(dir.join("row_scales.bin"), &self.row_scales).unwrap();
        let exp: Vec<u8> = self.expected.iter().flat_map(|x| x.to_le_bytes()).collect();
        fs::write(dir.join("expected.f32"), exp).unwrap();
        dir
    }
}

// ---- Tiny random HF folders (from branch model) ----

use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::{json, Value};
use std::collections::BTreeMap;

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

/// The families `tiny_config` knows besides llama, mistral and qwen2.
pub const NEW_FAMILIES: [&str; 4] = ["llama3", "qwen3", "gemma3", "phi3"];

/// config.json of a tiny llama: 2 layers, hidden 16, 4 heads / 2 kv heads, MLP 32, vocab 50.
/// `llama3`, `qwen3`, `gemma3` and `phi3` turn on each family's own options (Llama 3.2's RoPE
/// scaling and tied embeddings; Qwen3's explicit head_dim 8 and q/k norms; Gemma 3's window of 4
/// on layer 0, local RoPE base, GeGLU; Phi-3's partial rotary and longrope).
pub fn tiny_config(arch: &str) -> Value {
    let (architecture, model_type) = match arch {
        "qwen2" => ("Qwen2ForCausalLM", "qwen2"),
        "mistral" => ("MistralForCausalLM", "mistral"),
        "qwen3" => ("Qwen3ForCausalLM", "qwen3"),
        "gemma3" => ("Gemma3ForCausalLM", "gemma3_text"),
        "phi3" => ("Phi3ForCausalLM", "phi3"),
        _ => ("LlamaForCausalLM", "llama"),
    };
    let mut v = tiny_llama(architecture, model_type);
    match arch {
        "llama3" => {
            v["rope_theta"] = json!(500000.0);
            v["tie_word_embeddings"] = json!(true);
            v["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 64});
        }
        "qwen3" => {
            v["head_dim"] = json!(8);
            v["tie_word_embeddings"] = json!(true);
            v["attention_bias"] = json!(false);
            v["rope_theta"] = json!(1000000.0);
        }
        "gemma3" => {
            let o = v.as_object_mut().unwrap();
            o.remove("hidden_act");
            v["hidden_activation"] = json!("gelu_pytorch_tanh");
            v["head_dim"] = json!(8);
            v["query_pre_attn_scalar"] = json!(8);
            v["sliding_window"] = json!(4);
            v["layer_types"] = json!(["sliding_attention", "full_attention"]);
            v["rope_local_base_freq"] = json!(10000.0);
            v["rope_theta"] = json!(1000000.0);
            v["tie_word_embeddings"] = json!(true);
            v["final_logit_softcapping"] = Value::Null;
            v["attn_logit_softcapping"] = Value::Null;
        }
        "phi3" => {
            v["partial_rotary_factor"] = json!(0.5);
            v["original_max_position_embeddings"] = json!(32);
            v["rope_scaling"] = json!({"type": "longrope", "short_factor": [1.0, 1.5],
                "long_factor": [2.0, 3.5]});
            v["tie_word_embeddings"] = json!(true);
        }
        _ => {}
    }
    if arch == "phi3" {
        // Two rotated pairs per head: head 8 (hidden 32, 4 heads).
        v["hidden_size"] = json!(32);
    }
    v
}

fn tiny_llama(architecture: &str, model_type: &str) -> Value {
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

/// Random tensors for a config (names and shapes as the HF checkpoint has them: Phi-3's q/k/v
/// and gate/up fused into `qkv_proj` and `gate_up_proj`).
pub fn random_tensors(config: &Value, seed: u64) -> Tensors {
    let path = Path::new("config.json");
    let c = athena::checkpoint::ModelConfig::from_hf_value(config, path).unwrap();
    let mut rng = Rng::new(seed);
    let mut tensors: Tensors = athena::checkpoint::expected_tensors(&c)
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
        .collect();
    if c.architecture.fused_projections() {
        for layer in 0..c.num_hidden_layers {
            let p = format!("model.layers.{layer}");
            for (fused, parts) in [
                (
                    "self_attn.qkv_proj",
                    &["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"][..],
                ),
                ("mlp.gate_up_proj", &["mlp.gate_proj", "mlp.up_proj"][..]),
            ] {
                let (mut rows, mut cols, mut data) = (0, 0, Vec::new());
                for part in parts {
                    let (shape, d) = tensors.remove(&format!("{p}.{part}.weight")).unwrap();
                    rows += shape[0];
                    cols = shape[1];
                    data.extend(d);
                }
                tensors.insert(format!("{p}.{fused}.weight"), (vec![rows, cols], data));
            }
        }
    }
    tensors
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

/// A tiny byte-level BPE tokenizer.json + tokenizer_config.json (SmolLM2-style specials), which
/// the llama.cpp metadata export understands.
pub fn write_bpe_tokenizer(dir: &Path) {
    let tok = json!({
        "version": "1.0",
        "added_tokens": [
            {"id": 0, "content": "<|endoftext|>", "single_word": false, "lstrip": false, "rstrip": false, "special": true, "normalized": false},
            {"id": 1, "content": "<|im_start|>", "single_word": false, "lstrip": false, "rstrip": false, "special": true, "normalized": false},
            {"id": 2, "content": "<|im_end|>", "single_word": false, "lstrip": false, "rstrip": false, "special": true, "normalized": false}],
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "byte_fallback": false,
            "vocab": {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "a": 3, "b": 4,
                      "Ġ": 5, "ab": 6, "Ġab": 7, "1": 8, "2": 9},
            "merges": ["a b", "Ġ ab"]}
    });
    let tc = json!({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>",
        "clean_up_tokenization_spaces": false, "add_prefix_space": false});
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    std::fs::write(dir.join("tokenizer_config.json"), tc.to_string()).unwrap();
}

/// Tensors of a GGUF file as `rewrite` hands them to its edit: name, dims, type, data.
pub type GgufTensors = Vec<(String, Vec<u64>, GgmlType, Vec<u8>)>;

/// Rewrites a file through our (valid) GGUF writer with its metadata and tensors changed by
/// `edit`.
pub fn rewrite(
    src: &Path,
    dst: &Path,
    edit: impl FnOnce(&mut Vec<(String, MetaValue)>, &mut GgufTensors),
) {
    let file = GgufFile::open(src).unwrap();
    let mut metadata = file.metadata_vec();
    let mut tensors: GgufTensors = file
        .tensors
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.dims.clone(),
                t.ggml_type,
                file.tensor_data(t).to_vec(),
            )
        })
        .collect();
    edit(&mut metadata, &mut tensors);
    let mut w = GgufWriter::new(dst);
    for (k, v) in metadata {
        w.add_metadata(k, v).unwrap();
    }
    for (name, dims, ty, _) in &tensors {
        w.add_tensor(name.clone(), dims, *ty).unwrap();
    }
    for (name, _, _, data) in &tensors {
        w.write_tensor_data(name, data).unwrap();
    }
    w.finish().unwrap();
}

/// Sets an existing metadata key (for `rewrite`'s edits); panics when the key is missing.
pub fn set_meta(metadata: &mut [(String, MetaValue)], key: &str, value: MetaValue) {
    metadata
        .iter_mut()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("no key {key}"))
        .1 = value;
}
