//! Real-model metadata check: the llama.cpp metadata we build must reproduce the original SmolLM2
//! GGUF's tokenizer keys and hyperparameters after GGUF -> materialised HF folder -> our export.
//!
//! - `ATHENA_REAL_MODEL_DIR`: the folder athena-materialize wrote from the original GGUF
//!   (tools/fetch-models.sh puts it in `~/.cache/athena/models/SmolLM2-135M-Instruct`); its
//!   config.json, tokenizer.json and tokenizer_config.json are used.
//! - `ATHENA_REAL_GGUF`: the original GGUF; default `$ATHENA_CACHE/gguf/SmolLM2-135M-Instruct.Q4_1.gguf`
//!   (`ATHENA_CACHE` defaults to `~/.cache/athena`). When only this is set, the tokenizer files are
//!   rebuilt in memory with `checkpoint::vocab` (what athena-materialize uses) and the config is
//!   read from the GGUF.
//!
//! With neither variable set the test prints SKIP and passes.

use std::path::PathBuf;

use athena::checkpoint::gguf_source::GgufSource;
use athena::checkpoint::{ModelConfig, TensorSource};
use athena::container::gguf::{GgufFile, Value};
use athena::export::metadata::model_metadata;
use athena::export::pretokenizer::PreMethod;
use athena::export::TokenizerFiles;

/// Keys the original file does not have but current llama.cpp writes, with their value: gguf-py's
/// `SpecialVocab` sets `add_eos_token = false` for a `ByteLevel` post-processor (the original was
/// converted by an older llama.cpp).
const ALLOWED_EXTRA: &[(&str, Value)] = &[("tokenizer.ggml.add_eos_token", Value::Bool(false))];

fn cache() -> PathBuf {
    std::env::var_os("ATHENA_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/athena")))
        .unwrap_or_default()
}

#[test]
fn smollm2_metadata_matches_original() {
    let dir = std::env::var_os("ATHENA_REAL_MODEL_DIR").map(PathBuf::from);
    let gguf = std::env::var_os("ATHENA_REAL_GGUF").map(PathBuf::from);
    if dir.is_none() && gguf.is_none() {
        println!("SKIP export_real: set ATHENA_REAL_MODEL_DIR to the materialised SmolLM2 folder (and/or ATHENA_REAL_GGUF to the original GGUF)");
        return;
    }
    let gguf = gguf.unwrap_or_else(|| cache().join("gguf/SmolLM2-135M-Instruct.Q4_1.gguf"));
    check(dir, gguf, ALLOWED_EXTRA);
}

/// Qwen2.5-Coder-0.5B (`ATHENA_REAL_QWEN_DIR`, the materialised folder; the original GGUF is
/// `$ATHENA_CACHE/gguf/Qwen2.5-Coder-0.5B-Instruct.gguf` or `ATHENA_REAL_QWEN_GGUF`). Besides
/// add_eos_token, we write `qwen2.vocab_size` and `qwen2.rope.dimension_count`, which llama.cpp
/// writes for llama only (see export::metadata).
#[test]
fn qwen25_metadata_matches_original() {
    let Some(dir) = std::env::var_os("ATHENA_REAL_QWEN_DIR").map(PathBuf::from) else {
        println!("SKIP export_real qwen: set ATHENA_REAL_QWEN_DIR to the materialised Qwen2.5-Coder-0.5B-Instruct folder");
        return;
    };
    let gguf = std::env::var_os("ATHENA_REAL_QWEN_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache().join("gguf/Qwen2.5-Coder-0.5B-Instruct.gguf"));
    let extra = [
        ("tokenizer.ggml.add_eos_token", Value::Bool(false)),
        ("qwen2.vocab_size", Value::U32(151936)),
        ("qwen2.rope.dimension_count", Value::U32(64)),
    ];
    check(Some(dir), gguf, &extra);
}

fn check(dir: Option<PathBuf>, gguf: PathBuf, allowed_extra: &[(&str, Value)]) {
    let original = GgufFile::open(&gguf).unwrap_or_else(|e| panic!("original GGUF: {e}"));
    let (config, files) = match &dir {
        Some(dir) => {
            println!("config and tokenizer files from {}", dir.display());
            (
                ModelConfig::from_hf_json(&dir.join("config.json")).unwrap(),
                TokenizerFiles::read(dir).unwrap(),
            )
        }
        None => {
            println!("tokenizer files rebuilt in memory from {}", gguf.display());
            let src = GgufSource::open(&gguf).unwrap();
            let files = TokenizerFiles::from_gguf(&gguf, src.gguf()).unwrap();
            (src.config().clone(), files)
        }
    };
    let file_type = original.get_u32("general.file_type").unwrap();
    let meta = model_metadata(&config, &files, "real", file_type).unwrap();
    let pre = meta.pre.clone().unwrap();
    println!(
        "pre-tokenizer '{}' by {:?} (digest {:?})",
        pre.name, pre.method, pre.hash
    );
    assert_eq!(
        pre.method,
        PreMethod::Hash,
        "the rebuilt tokenizer should tokenize the check text like the original"
    );
    let ours = |k: &str| meta.keys.iter().find(|(key, _)| key == k).map(|(_, v)| v);

    let arch = original.get_str("general.architecture").unwrap();
    let mut compared = 0;
    for (key, value) in original.metadata() {
        let is_tok = key.starts_with("tokenizer.");
        let is_hparam = key.starts_with(&format!("{arch}."));
        if !(is_tok || is_hparam || key == "general.architecture" || key == "general.file_type") {
            continue;
        }
        assert_eq!(ours(key), Some(value), "key {key}");
        compared += 1;
    }
    for (key, value) in &meta.keys {
        let ours_only = original.get(key).is_none();
        if ours_only && (key.starts_with("tokenizer.") || key.starts_with(&format!("{arch}."))) {
            assert!(
                allowed_extra.iter().any(|(k, v)| k == key && v == value),
                "extra key {key} = {value:?}"
            );
            println!("extra key (allowed, see the test doc): {key} = {value:?}");
        }
    }
    println!("{compared} keys equal to the original's");
    assert!(compared >= 20, "only {compared} keys compared");
}
