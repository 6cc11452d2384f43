//! HF folder source, config.json parsing and tokenizer loading, including every bad input.

mod common;

use athena::checkpoint::{
    Architecture, CheckpointError, HfFolder, ModelConfig, TensorSource, Tokenizer,
};
use common::*;
use safetensors::Dtype;
use serde_json::json;
use std::path::Path;

fn tiny_dir(arch: &str) -> (tempfile::TempDir, Tensors) {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(arch);
    let tensors = random_tensors(&config, 7);
    write_folder(dir.path(), &config, &tensors);
    (dir, tensors)
}

fn err_string(r: Result<HfFolder, CheckpointError>) -> String {
    let e = r.expect_err("expected an error").to_string();
    assert!(!e.contains('\n'), "error is not one line: {e}");
    e
}

#[test]
fn reads_single_file_folder() {
    let (dir, tensors) = tiny_dir("llama");
    let f = HfFolder::open_validated(dir.path()).unwrap();
    assert_eq!(f.config().architecture, Architecture::Llama);
    assert_eq!(f.tensor_names().len(), tensors.len());
    let (shape, data) = &tensors["model.layers.1.mlp.down_proj.weight"];
    let t = f.load("model.layers.1.mlp.down_proj.weight").unwrap();
    assert_eq!(&t.shape, shape);
    assert_eq!(&t.data, data);
    assert_eq!(f.shape("model.norm.weight").unwrap(), vec![16]);
}

#[test]
fn reads_sharded_folder_with_f16_and_bf16() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config("qwen2");
    let tensors = random_tensors(&config, 3);
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let mut shards: [EncodedTensors; 2] = Default::default();
    let mut weight_map = serde_json::Map::new();
    for (i, (name, (shape, data))) in tensors.iter().enumerate() {
        let (dtype, bytes): (Dtype, Vec<u8>) = match i % 3 {
            0 => (Dtype::F32, f32_bytes(data)),
            1 => (
                Dtype::F16,
                data.iter()
                    .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                    .collect(),
            ),
            _ => (
                Dtype::BF16,
                data.iter()
                    .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                    .collect(),
            ),
        };
        let shard = i % 2;
        shards[shard].insert(name.clone(), (dtype, shape.clone(), bytes));
        weight_map.insert(
            name.clone(),
            json!(format!("model-0000{}-of-00002.safetensors", shard + 1)),
        );
    }
    for (i, s) in shards.iter().enumerate() {
        write_safetensors(
            &dir.path()
                .join(format!("model-0000{}-of-00002.safetensors", i + 1)),
            s,
        );
    }
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        json!({"metadata": {}, "weight_map": weight_map}).to_string(),
    )
    .unwrap();
    let f = HfFolder::open_validated(dir.path()).unwrap();
    assert!(f.config().attention_bias);
    for (i, (name, (shape, data))) in tensors.iter().enumerate() {
        let t = f.load(name).unwrap();
        assert_eq!(&t.shape, shape);
        let tol = match i % 3 {
            0 => 0.0,
            1 => 1e-3,
            _ => 1e-2,
        };
        for (a, b) in t.data.iter().zip(data) {
            assert!(
                (a - b).abs() <= tol * b.abs().max(1.0),
                "{name}: {a} vs {b}"
            );
        }
    }
}

#[test]
fn missing_config_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let e = err_string(HfFolder::open(dir.path()));
    assert!(e.contains("config.json"), "{e}");
}

#[test]
fn malformed_config_json() {
    let (dir, _) = tiny_dir("llama");
    std::fs::write(dir.path().join("config.json"), "{\"hidden_size\": 16,").unwrap();
    let e = err_string(HfFolder::open(dir.path()));
    assert!(
        e.contains("config.json") && e.contains("malformed JSON"),
        "{e}"
    );
}

#[test]
fn unsupported_architecture_is_named_with_the_supported_list() {
    let (dir, _) = tiny_dir("llama");
    let mut c = tiny_config("llama");
    c["architectures"] = json!(["GPT2LMHeadModel"]);
    std::fs::write(dir.path().join("config.json"), c.to_string()).unwrap();
    let e = err_string(HfFolder::open(dir.path()));
    assert!(
        e.contains("GPT2LMHeadModel")
            && e.contains("LlamaForCausalLM")
            && e.contains("Qwen2ForCausalLM"),
        "{e}"
    );
}

#[test]
fn missing_key_in_config() {
    let (dir, _) = tiny_dir("llama");
    let mut c = tiny_config("llama");
    c.as_object_mut().unwrap().remove("hidden_size");
    std::fs::write(dir.path().join("config.json"), c.to_string()).unwrap();
    let e = err_string(HfFolder::open(dir.path()));
    assert!(e.contains("hidden_size"), "{e}");
}

#[test]
fn no_weights_file() {
    let (dir, _) = tiny_dir("llama");
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let e = err_string(HfFolder::open(dir.path()));
    assert!(e.contains("model.safetensors"), "{e}");
}

#[test]
fn shard_listed_in_index_but_missing() {
    let (dir, tensors) = tiny_dir("llama");
    let mut map = serde_json::Map::new();
    for (i, name) in tensors.keys().enumerate() {
        let file = if i == 0 {
            "model-00002-of-00002.safetensors"
        } else {
            "model.safetensors"
        };
        map.insert(name.clone(), json!(file));
    }
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        json!({ "weight_map": map }).to_string(),
    )
    .unwrap();
    let e = err_string(HfFolder::open(dir.path()));
    assert!(
        e.contains("model-00002-of-00002.safetensors") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn tensor_listed_in_index_but_not_in_shard() {
    let (dir, tensors) = tiny_dir("llama");
    let mut map: serde_json::Map<String, serde_json::Value> = tensors
        .keys()
        .map(|n| (n.clone(), json!("model.safetensors")))
        .collect();
    map.insert("model.extra.weight".into(), json!("model.safetensors"));
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        json!({ "weight_map": map }).to_string(),
    )
    .unwrap();
    let e = err_string(HfFolder::open(dir.path()));
    assert!(e.contains("model.extra.weight"), "{e}");
}

#[test]
fn missing_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config("llama");
    let mut tensors = random_tensors(&config, 1);
    tensors.remove("model.layers.1.self_attn.k_proj.weight");
    write_folder(dir.path(), &config, &tensors);
    let e = err_string(HfFolder::open_validated(dir.path()));
    assert!(
        e.contains("model.layers.1.self_attn.k_proj.weight") && e.contains("not found"),
        "{e}"
    );
    // Opening without validation works; loading the tensor fails the same way.
    let f = HfFolder::open(dir.path()).unwrap();
    let e = f
        .load("model.layers.1.self_attn.k_proj.weight")
        .unwrap_err()
        .to_string();
    assert!(e.contains("k_proj"), "{e}");
}

#[test]
fn qwen2_without_biases_is_missing_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let tensors = random_tensors(&tiny_config("llama"), 1);
    write_folder(dir.path(), &tiny_config("qwen2"), &tensors);
    let e = err_string(HfFolder::open_validated(dir.path()));
    assert!(e.contains(".bias"), "{e}");
}

#[test]
fn wrong_shape_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config("llama");
    let mut tensors = random_tensors(&config, 1);
    // GQA: k_proj has 2 kv heads x 4 = 8 rows; give it 16 (as if there were no GQA).
    tensors.insert(
        "model.layers.0.self_attn.k_proj.weight".into(),
        (vec![16, 16], vec![0.0; 256]),
    );
    write_folder(dir.path(), &config, &tensors);
    let e = err_string(HfFolder::open_validated(dir.path()));
    assert!(
        e.contains("k_proj") && e.contains("[16, 16]") && e.contains("[8, 16]"),
        "{e}"
    );
}

#[test]
fn unsupported_dtype_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config("llama");
    let tensors = random_tensors(&config, 1);
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let mut enc: EncodedTensors = tensors
        .iter()
        .map(|(n, (s, d))| (n.clone(), (Dtype::F32, s.clone(), f32_bytes(d))))
        .collect();
    let (_, shape, _) = enc["model.norm.weight"].clone();
    enc.insert(
        "model.norm.weight".into(),
        (Dtype::F64, shape, vec![0u8; 16 * 8]),
    );
    write_safetensors(&dir.path().join("model.safetensors"), &enc);
    let e = err_string(HfFolder::open_validated(dir.path()));
    assert!(e.contains("model.norm.weight") && e.contains("F64"), "{e}");
}

#[test]
fn truncated_safetensors_file() {
    let (dir, _) = tiny_dir("llama");
    let p = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 10]).unwrap();
    let e = err_string(HfFolder::open(dir.path()));
    assert!(e.contains("model.safetensors"), "{e}");
}

#[test]
fn config_defaults_and_variants() {
    let p = Path::new("config.json");
    // head_dim defaults to hidden / heads; kv heads default to heads.
    let mut v = tiny_config("llama");
    v.as_object_mut().unwrap().remove("num_key_value_heads");
    let c = ModelConfig::from_hf_value(&v, p).unwrap();
    assert_eq!(
        (c.head_dim, c.num_key_value_heads, c.attention_bias),
        (4, 4, false)
    );
    // Explicit head_dim, llama3 rope scaling, eos list, tied embeddings, model_type only.
    let v = json!({
        "model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 6, "vocab_size": 10,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        "eos_token_id": [5, 6], "tie_word_embeddings": true
    });
    let c = ModelConfig::from_hf_value(&v, p).unwrap();
    assert_eq!(c.head_dim, 6);
    assert_eq!(c.eos_token_id, Some(5));
    assert!(c.tie_word_embeddings);
    assert_eq!(c.rope_scaling.as_ref().unwrap().rope_type, "llama3");
    // Qwen2 always has q/k/v biases; mistral by model_type.
    let c = ModelConfig::from_hf_value(&tiny_config("qwen2"), p).unwrap();
    assert!(c.attention_bias);
    assert_eq!(c.architecture, Architecture::Qwen2);
    let c = ModelConfig::from_hf_value(&tiny_config("mistral"), p).unwrap();
    assert_eq!(c.architecture, Architecture::Mistral);
}

#[test]
fn config_rejections() {
    let p = Path::new("x/config.json");
    let check = |edit: &dyn Fn(&mut serde_json::Value), needle: &str| {
        let mut v = tiny_config("llama");
        edit(&mut v);
        let e = ModelConfig::from_hf_value(&v, p).unwrap_err().to_string();
        assert!(e.contains(needle) && e.contains("x/config.json"), "{e}");
    };
    check(
        &|v| v["rope_scaling"] = json!({"type": "yarn", "factor": 4.0}),
        "yarn",
    );
    check(
        &|v| v["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0}),
        "llama3",
    );
    check(
        &|v| v["num_key_value_heads"] = json!(3),
        "num_key_value_heads",
    );
    check(&|v| v["hidden_act"] = json!("gelu"), "gelu");
    check(&|v| v["attention_bias"] = json!(true), "attention_bias");
    check(&|v| v["hidden_size"] = json!("16"), "hidden_size");
    check(
        &|v| {
            v.as_object_mut().unwrap().remove("architectures");
            v["model_type"] = json!("gemma2");
        },
        "gemma2",
    );
}

#[test]
fn tokenizer_with_config() {
    let dir = tempfile::tempdir().unwrap();
    write_tokenizer(dir.path(), &["hello", "world"], false);
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        json!({"bos_token": "<s>", "eos_token": {"content": "</s>"}, "add_bos_token": true,
               "chat_template": "{{ messages }}"})
        .to_string(),
    )
    .unwrap();
    let t = Tokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(
        (t.bos_token_id, t.eos_token_id, t.add_bos_token),
        (Some(1), Some(2), true)
    );
    assert_eq!(t.chat_template.as_deref(), Some("{{ messages }}"));
    assert_eq!(
        t.encode("hello world hello", true).unwrap(),
        vec![1, 3, 4, 3]
    );
    assert_eq!(t.encode("hello world", false).unwrap(), vec![3, 4]);
    assert_eq!(t.encode("bye", false).unwrap(), vec![0]);
}

#[test]
fn tokenizer_add_bos_from_post_processor() {
    for post_bos in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        write_tokenizer(dir.path(), &["hello"], post_bos);
        std::fs::write(
            dir.path().join("tokenizer_config.json"),
            json!({"bos_token": "<s>"}).to_string(),
        )
        .unwrap();
        let t = Tokenizer::from_dir(dir.path()).unwrap();
        assert_eq!(t.add_bos_token, post_bos);
        let expected = if post_bos { vec![1, 3] } else { vec![3] };
        assert_eq!(t.encode("hello", true).unwrap(), expected);
    }
}

#[test]
fn tokenizer_errors() {
    let dir = tempfile::tempdir().unwrap();
    let e = Tokenizer::from_dir(dir.path()).unwrap_err().to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
    std::fs::write(dir.path().join("tokenizer.json"), "{not json").unwrap();
    let e = Tokenizer::from_dir(dir.path()).unwrap_err().to_string();
    assert!(e.contains("tokenizer.json"), "{e}");
    write_tokenizer(dir.path(), &["hello"], false);
    std::fs::write(dir.path().join("tokenizer_config.json"), "[1,").unwrap();
    let e = Tokenizer::from_dir(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("tokenizer_config.json") && e.contains("malformed"),
        "{e}"
    );
    std::fs::write(
        dir.path().join("tokenizer_config.json"),
        json!({"bos_token": "<nope>"}).to_string(),
    )
    .unwrap();
    let e = Tokenizer::from_dir(dir.path()).unwrap_err().to_string();
    assert!(e.contains("<nope>"), "{e}");
}

#[test]
fn linear_weights_count_every_projection_weight() {
    let p = Path::new("config.json");
    // head_dim 6 makes q (2 x 6) and k/v (1 x 6) narrower than the hidden size 16.
    let v = json!({
        "model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 3,
        "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 6, "vocab_size": 10
    });
    for config in [v, tiny_config("qwen2")] {
        let c = ModelConfig::from_hf_value(&config, p).unwrap();
        let projections: u64 = athena::checkpoint::expected_tensors(&c)
            .into_iter()
            .filter(|(name, _)| name.ends_with("_proj.weight"))
            .map(|(_, shape)| shape.iter().product::<usize>() as u64)
            .sum();
        assert_eq!(c.linear_weights(), projections);
    }
}

#[test]
fn hyperparameters_that_no_model_has_are_refused_by_name() {
    let p = Path::new("x/config.json");
    let refused = |edit: &dyn Fn(&mut serde_json::Value), needle: &str| {
        let mut v = tiny_config("llama");
        edit(&mut v);
        let e = ModelConfig::from_hf_value(&v, p).unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
        assert!(
            e.contains(needle) && e.contains("x/config.json"),
            "expected {needle:?} in {e:?}"
        );
    };
    let cases: [(&str, serde_json::Value, &str); 14] = [
        ("rms_norm_eps", json!(0.0), "'rms_norm_eps' is 0"),
        ("rms_norm_eps", json!(-1e-5), "'rms_norm_eps' is -1e-5"),
        // Positive, but 0 as the f32 the GGUF file stores.
        ("rms_norm_eps", json!(1e-50), "that an f32 holds"),
        ("rope_theta", json!(0), "'rope_theta' is 0"),
        ("rope_theta", json!(-10000.0), "'rope_theta' is -10000.0"),
        ("rope_theta", json!(1e39), "'rope_theta' is 1e39"),
        // Positive and an f32, but its RoPE frequencies are not (the first is 1 / factor).
        (
            "rope_scaling",
            json!({"type": "linear", "factor": 1e-39}),
            "beyond the range of an f32",
        ),
        (
            "max_position_embeddings",
            json!(0),
            "'max_position_embeddings' is 0; it must be positive",
        ),
        ("num_key_value_heads", json!(0), "num_key_value_heads"),
        ("vocab_size", json!(0), "'vocab_size' must be positive"),
        (
            "num_hidden_layers",
            json!(0),
            "'num_hidden_layers' must be positive",
        ),
        ("head_dim", json!(5), "head_dim (5) must be even"),
        (
            "vocab_size",
            json!(1u64 << 62),
            "'vocab_size' x 'hidden_size' (4611686018427387904 x 16 weights) is too large",
        ),
        (
            "num_hidden_layers",
            json!(1u64 << 60),
            "'num_hidden_layers' blocks of this size exceed 2^64 bytes",
        ),
    ];
    for (key, value, needle) in cases {
        refused(&|v| v[key] = value.clone(), needle);
    }
    let llama3 = |low: serde_json::Value, high: serde_json::Value, orig: serde_json::Value| {
        json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": low,
               "high_freq_factor": high, "original_max_position_embeddings": orig})
    };
    refused(
        &|v| v["rope_scaling"] = llama3(json!(4.0), json!(4.0), json!(8192)),
        "'rope_scaling.high_freq_factor' (4) must be greater than 'rope_scaling.low_freq_factor' (4)",
    );
    refused(
        &|v| v["rope_scaling"] = llama3(json!("1"), json!(4.0), json!(8192)),
        "'rope_scaling.low_freq_factor' must be a number",
    );
    refused(
        &|v| v["rope_scaling"] = llama3(json!(1.0), json!(4.0), json!(0)),
        "'rope_scaling.original_max_position_embeddings' is 0",
    );
    refused(
        &|v| v["rope_scaling"] = llama3(json!(0.0), json!(4.0), json!(8192)),
        "'rope_scaling.low_freq_factor' is 0",
    );
    // The valid llama3 scaling still reads.
    let mut v = tiny_config("llama");
    v["rope_scaling"] = llama3(json!(1.0), json!(4.0), json!(8192));
    ModelConfig::from_hf_value(&v, p).unwrap();
}

#[test]
fn a_config_claiming_a_huge_number_of_layers_fails_on_the_first_missing_block() {
    let (dir, _) = tiny_dir("llama");
    let mut c = tiny_config("llama");
    c["num_hidden_layers"] = json!(1u64 << 40);
    std::fs::write(dir.path().join("config.json"), c.to_string()).unwrap();
    let e = err_string(HfFolder::open_validated(dir.path()));
    assert!(
        e.contains("'model.layers.2.input_layernorm.weight': not found"),
        "{e}"
    );
}

/// A tiny folder whose `name` tensor holds `bad` in a few places, stored as `dtype`.
fn folder_with(name: &str, dtype: Dtype, bad: &[(usize, f32)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config("llama");
    let mut tensors = random_tensors(&config, 2);
    for &(at, x) in bad {
        tensors.get_mut(name).unwrap().1[at] = x;
    }
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let enc: EncodedTensors = tensors
        .iter()
        .map(|(n, (s, d))| {
            let bytes = match dtype {
                Dtype::F16 => d
                    .iter()
                    .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                    .collect(),
                Dtype::BF16 => d
                    .iter()
                    .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                    .collect(),
                _ => f32_bytes(d),
            };
            (n.clone(), (dtype, s.clone(), bytes))
        })
        .collect();
    write_safetensors(&dir.path().join("model.safetensors"), &enc);
    dir
}

#[test]
fn non_finite_weights_are_named_with_their_count() {
    let name = "model.layers.1.mlp.up_proj.weight";
    for dtype in [Dtype::F32, Dtype::F16, Dtype::BF16] {
        let dir = folder_with(
            name,
            dtype,
            &[(0, f32::NAN), (7, f32::INFINITY), (511, f32::NEG_INFINITY)],
        );
        let f = HfFolder::open_validated(dir.path()).unwrap();
        // At load, and by the scan of the whole checkpoint that a conversion runs first.
        for e in [
            f.load(name).unwrap_err().to_string(),
            f.check_finite().unwrap_err().to_string(),
        ] {
            assert!(
                e.contains(name) && e.contains("3 of 512 values are not finite"),
                "{dtype:?}: {e}"
            );
        }
        f.load("model.layers.1.mlp.down_proj.weight").unwrap();
    }
    // f16 overflows to infinity at 65520: a large finite f32 weight stored as f16 is caught too.
    let dir = folder_with(name, Dtype::F16, &[(3, 1e5)]);
    let f = HfFolder::open_validated(dir.path()).unwrap();
    assert!(f
        .check_finite()
        .unwrap_err()
        .to_string()
        .contains("1 of 512"));
    let (dir, _) = tiny_dir("llama");
    HfFolder::open_validated(dir.path())
        .unwrap()
        .check_finite()
        .unwrap();
}

#[test]
fn folder_files_lists_what_reading_the_folder_opens() {
    let (dir, _) = tiny_dir("llama");
    write_tokenizer(dir.path(), &["hello"], false);
    std::fs::write(dir.path().join("extra.safetensors"), b"x").unwrap();
    std::fs::write(dir.path().join("README.md"), b"x").unwrap();
    let names: Vec<String> = athena::checkpoint::folder_files(dir.path())
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "config.json",
            "extra.safetensors",
            "model.safetensors",
            "tokenizer.json"
        ]
    );
}
