//! athena-materialize end to end on a tiny generated llama GGUF (Q8_0 and F32 tensors, gpt2 vocab).

use std::path::Path;
use std::process::Command;

use athena::checkpoint::names;
use athena::container::gguf::{Array, GgmlType, GgufWriter, Value};

fn le_f32(xs: &[f32]) -> Vec<u8> {
    xs.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Q8_0 blocks with scale 1/64 and values i - 64 (exactly representable after dequantization).
fn q8_0(xs: &[i8]) -> Vec<u8> {
    let mut out = Vec::new();
    for block in xs.chunks(32) {
        out.extend(half::f16::from_f32(1.0 / 64.0).to_le_bytes());
        out.extend(block.iter().map(|&x| x as u8));
    }
    out
}

fn write_tiny(path: &Path) -> Vec<f32> {
    let mut w = GgufWriter::new(path);
    let s = |x: &str| Value::String(x.to_string());
    let strings =
        |xs: &[&str]| Value::Array(Array::String(xs.iter().map(|x| x.to_string()).collect()));
    let meta = vec![
        ("general.architecture", s("llama")),
        ("llama.block_count", Value::U32(1)),
        ("llama.context_length", Value::U32(256)),
        ("llama.embedding_length", Value::U32(64)),
        ("llama.feed_forward_length", Value::U32(96)),
        ("llama.attention.head_count", Value::U32(4)),
        ("llama.attention.head_count_kv", Value::U32(2)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.rope.freq_base", Value::F32(10000.0)),
        ("tokenizer.ggml.model", s("gpt2")),
        ("tokenizer.ggml.pre", s("smollm")),
        (
            "tokenizer.ggml.tokens",
            strings(&["<|endoftext|>", "a", "b", "Ġ", "ab", "Ġab"]),
        ),
        (
            "tokenizer.ggml.token_type",
            Value::Array(Array::I32(vec![3, 1, 1, 1, 1, 1])),
        ),
        ("tokenizer.ggml.merges", strings(&["a b", "Ġ ab"])),
        ("tokenizer.ggml.bos_token_id", Value::U32(0)),
        ("tokenizer.ggml.eos_token_id", Value::U32(0)),
        ("tokenizer.chat_template", s("{{ x }}")),
    ];
    for (k, v) in meta {
        w.add_metadata(k, v).unwrap();
    }
    // q_proj in HF order: row r holds r/64 in every column... made distinct per element instead.
    let q_hf: Vec<i8> = (0..64 * 64).map(|i| ((i * 7) % 127) as i8 - 63).collect();
    let q_hf_f32: Vec<f32> = q_hf.iter().map(|&x| x as f32 / 64.0).collect();
    let q_file: Vec<i8> = names::permute_qk(&q_hf_f32, 64, 64, 4)
        .unwrap()
        .iter()
        .map(|&x| (x * 64.0) as i8)
        .collect();
    let tensors: Vec<(&str, Vec<u64>, GgmlType, Vec<u8>)> = vec![
        (
            "token_embd.weight",
            vec![64, 6],
            GgmlType::F32,
            le_f32(&vec![0.5; 6 * 64]),
        ),
        (
            "output_norm.weight",
            vec![64],
            GgmlType::F32,
            le_f32(&[1.0; 64]),
        ),
        (
            "blk.0.attn_norm.weight",
            vec![64],
            GgmlType::F32,
            le_f32(&[1.0; 64]),
        ),
        (
            "blk.0.attn_q.weight",
            vec![64, 64],
            GgmlType::Q8_0,
            q8_0(&q_file),
        ),
        (
            "blk.0.attn_k.weight",
            vec![64, 32],
            GgmlType::Q8_0,
            q8_0(&[1; 64 * 32]),
        ),
        (
            "blk.0.attn_v.weight",
            vec![64, 32],
            GgmlType::Q8_0,
            q8_0(&[2; 64 * 32]),
        ),
        (
            "blk.0.attn_output.weight",
            vec![64, 64],
            GgmlType::Q8_0,
            q8_0(&[3; 64 * 64]),
        ),
        (
            "blk.0.ffn_norm.weight",
            vec![64],
            GgmlType::F32,
            le_f32(&[1.0; 64]),
        ),
        (
            "blk.0.ffn_gate.weight",
            vec![64, 96],
            GgmlType::Q8_0,
            q8_0(&[4; 64 * 96]),
        ),
        (
            "blk.0.ffn_up.weight",
            vec![64, 96],
            GgmlType::Q8_0,
            q8_0(&[5; 64 * 96]),
        ),
        (
            "blk.0.ffn_down.weight",
            vec![96, 64],
            GgmlType::Q8_0,
            q8_0(&[6; 64 * 96]),
        ),
    ];
    for (name, dims, ty, _) in &tensors {
        w.add_tensor(*name, dims, *ty).unwrap();
    }
    for (name, _, _, data) in &tensors {
        w.write_tensor_data(name, data).unwrap();
    }
    w.finish().unwrap();
    q_hf_f32
}

#[test]
fn materializes_a_loadable_hf_folder() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("tiny.gguf");
    let q_hf = write_tiny(&gguf);
    let out = dir.path().join("models/tiny");
    let bin = env!("CARGO_BIN_EXE_athena-materialize");
    let st = Command::new(bin).arg(&gguf).arg(&out).output().unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );

    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "LlamaForCausalLM");
    assert_eq!(config["num_key_value_heads"], 2);
    assert_eq!(config["rms_norm_eps"], 1e-5);
    assert_eq!(config["tie_word_embeddings"], true);
    assert_eq!(config["torch_dtype"], "float32");

    let bytes = std::fs::read(out.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), 11);
    let q = st.tensor("model.layers.0.self_attn.q_proj.weight").unwrap();
    assert_eq!(q.shape(), &[64, 64]);
    assert_eq!(q.dtype(), safetensors::Dtype::F32);
    let q_got: Vec<f32> = q
        .data()
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(q_got, q_hf, "q_proj comes back in HF row order");
    assert_eq!(
        st.tensor("model.layers.0.mlp.down_proj.weight")
            .unwrap()
            .shape(),
        &[64, 96]
    );
    assert_eq!(
        st.tensor("model.embed_tokens.weight").unwrap().shape(),
        &[6, 64]
    );
    assert!(st.tensor("lm_head.weight").is_err(), "tied: no lm_head");

    let tok = tokenizers::Tokenizer::from_file(out.join("tokenizer.json")).unwrap();
    assert_eq!(tok.encode("ab ab", false).unwrap().get_ids(), &[4, 5]);
    let tc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!(tc["eos_token"], "<|endoftext|>");
    assert_eq!(tc["chat_template"], "{{ x }}");

    // A second run refuses to overwrite; --force replaces; no temp folders are left behind.
    let again = Command::new(bin).arg(&gguf).arg(&out).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let forced = Command::new(bin)
        .arg(&gguf)
        .arg(&out)
        .arg("--force")
        .output()
        .unwrap();
    assert!(forced.status.success());
    let left: Vec<_> = std::fs::read_dir(dir.path().join("models"))
        .unwrap()
        .collect();
    assert_eq!(left.len(), 1);
}

#[test]
fn bad_input_fails_with_the_file_name() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = dir.path().join("not-a-model.gguf");
    std::fs::write(&gguf, b"nope").unwrap();
    let bin = env!("CARGO_BIN_EXE_athena-materialize");
    let st = Command::new(bin)
        .arg(&gguf)
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    assert!(!st.status.success());
    let err = String::from_utf8_lossy(&st.stderr);
    assert!(err.contains("not-a-model.gguf"), "{err}");
    assert!(!dir.path().join("out").exists());
}
