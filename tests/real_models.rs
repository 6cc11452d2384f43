//! Checks on the real materialised models in `$ATHENA_CACHE/models` (default ~/.cache/athena),
//! made by tools/fetch-models.sh. Each test is skipped (with a note) when its inputs are missing.
//! Run with `--nocapture` to see the measured numbers.

use std::path::PathBuf;

use athena::checkpoint::gguf_source::GgufSource;
use athena::checkpoint::{ModelConfig, TensorSource};

fn cache() -> Option<PathBuf> {
    std::env::var_os("ATHENA_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/athena")))
}

fn find(rel: &str) -> Option<PathBuf> {
    let p = cache()?.join(rel);
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "skipped: {} missing (run tools/fetch-models.sh)",
            p.display()
        );
        None
    }
}

/// Every non-empty line of wiki.utf8 decodes back to itself; prints tokens per line statistics.
fn round_trip(model: &str) {
    let (Some(dir), Some(text)) = (find(&format!("models/{model}")), find("text/wiki.utf8")) else {
        return;
    };
    let tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let text = std::fs::read_to_string(text).unwrap();
    let (mut lines, mut tokens, mut chars, mut bad) = (0usize, 0usize, 0usize, Vec::new());
    for line in text.lines().filter(|l| !l.is_empty()) {
        let ids = tok.encode(line, false).unwrap().get_ids().to_vec();
        let back = tok.decode(&ids, false).unwrap();
        if back != line {
            bad.push(line.chars().take(80).collect::<String>());
        }
        lines += 1;
        tokens += ids.len();
        chars += line.chars().count();
    }
    eprintln!(
        "{model}: wiki.utf8 {lines} lines, {chars} chars -> {tokens} tokens ({:.2} chars/token), {} lines fail the round trip",
        chars as f64 / tokens as f64,
        bad.len()
    );
    assert!(bad.is_empty(), "round trip fails on:\n{}", bad.join("\n"));
}

/// config.json agrees with the GGUF source, and every safetensors tensor has the shape the config implies.
fn shapes(model: &str, gguf: &str) {
    let (Some(dir), Some(gguf)) = (
        find(&format!("models/{model}")),
        find(&format!("gguf/{gguf}")),
    ) else {
        return;
    };
    let src = GgufSource::open(&gguf).unwrap();
    let c: &ModelConfig = src.config();
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["hidden_size"], c.hidden_size);
    assert_eq!(cfg["num_hidden_layers"], c.num_hidden_layers);
    assert_eq!(cfg["vocab_size"], c.vocab_size);
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let per_layer = if c.attention_bias { 12 } else { 9 };
    let want = 2 + usize::from(!c.tie_word_embeddings) + per_layer * c.num_hidden_layers;
    assert_eq!(st.len(), want);
    let (h, i, q, kv) = (
        c.hidden_size,
        c.intermediate_size,
        c.num_attention_heads * c.head_dim,
        c.num_key_value_heads * c.head_dim,
    );
    let mut params = 0;
    for (name, view) in st.tensors() {
        let expect: Vec<usize> = match name
            .rsplit_once("layers.")
            .map_or(name.as_str(), |(_, r)| r.split_once('.').unwrap().1)
        {
            "model.embed_tokens.weight" | "lm_head.weight" => vec![c.vocab_size, h],
            "model.norm.weight" | "input_layernorm.weight" | "post_attention_layernorm.weight" => {
                vec![h]
            }
            "self_attn.q_proj.weight" => vec![q, h],
            "self_attn.k_proj.weight" | "self_attn.v_proj.weight" => vec![kv, h],
            "self_attn.o_proj.weight" => vec![h, q],
            "self_attn.q_proj.bias" => vec![q],
            "self_attn.k_proj.bias" | "self_attn.v_proj.bias" => vec![kv],
            "mlp.gate_proj.weight" | "mlp.up_proj.weight" => vec![i, h],
            "mlp.down_proj.weight" => vec![h, i],
            other => panic!("unexpected tensor {name} ({other})"),
        };
        assert_eq!(view.shape(), expect.as_slice(), "{name}");
        assert_eq!(src.shape(&name).unwrap(), expect, "{name}");
        params += expect.iter().product::<usize>();
    }
    eprintln!(
        "{model}: {} tensors, {params} parameters, shapes agree with config.json",
        st.len()
    );
}

#[test]
fn smollm2_tokenizer_round_trip() {
    round_trip("SmolLM2-135M-Instruct");
    if let Some(dir) = find("models/SmolLM2-135M-Instruct") {
        // Chat-template control tokens are matched whole: <|im_start|> = 1, <|im_end|> = 2.
        let tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
        let ids = tok
            .encode("<|im_start|>user\nHi<|im_end|>", false)
            .unwrap()
            .get_ids()
            .to_vec();
        assert_eq!((ids[0], *ids.last().unwrap()), (1, 2), "{ids:?}");
    }
}

#[test]
fn smollm2_shapes_match_config() {
    shapes("SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct.Q4_1.gguf");
}

#[test]
fn qwen_tokenizer_round_trip() {
    round_trip("Qwen2.5-Coder-0.5B-Instruct");
}

#[test]
fn qwen_shapes_match_config() {
    shapes(
        "Qwen2.5-Coder-0.5B-Instruct",
        "Qwen2.5-Coder-0.5B-Instruct.gguf",
    );
}

/// SmolLM2's original HF tokenizer.json splits with `Digits(individual_digits)` followed by a
/// `ByteLevel` pre-tokenizer using its built-in GPT-2 regex; ours uses llama.cpp's two regexes as
/// `Split`s. Both must give the same ids on real text.
#[test]
fn smollm2_split_regexes_agree_with_hf_style_pre_tokenizer() {
    let (Some(dir), Some(text)) = (find("models/SmolLM2-135M-Instruct"), find("text/wiki.utf8"))
    else {
        return;
    };
    let ours_json = std::fs::read(dir.join("tokenizer.json")).unwrap();
    let ours = tokenizers::Tokenizer::from_bytes(&ours_json).unwrap();
    let mut hf: serde_json::Value = serde_json::from_slice(&ours_json).unwrap();
    hf["pre_tokenizer"] = serde_json::json!({"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": true},
        {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
    ]});
    let hf = tokenizers::Tokenizer::from_bytes(serde_json::to_vec(&hf).unwrap()).unwrap();
    let text = std::fs::read_to_string(text).unwrap();
    let mut lines = 0;
    for line in text.lines().filter(|l| !l.is_empty()) {
        let a = ours.encode(line, false).unwrap().get_ids().to_vec();
        let b = hf.encode(line, false).unwrap().get_ids().to_vec();
        assert_eq!(a, b, "line {line:?}");
        lines += 1;
    }
    eprintln!(
        "SmolLM2: {lines} wiki.utf8 lines tokenize identically with the HF-style pre-tokenizer"
    );
}
