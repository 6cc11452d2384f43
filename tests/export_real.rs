//! Real-model metadata check: the llama.cpp metadata we build must reproduce the original SmolLM2
//! GGUF's tokenizer keys and hyperparameters after GGUF -> HF tokenizer files -> our export.
//!
//! - `ATHENA_REAL_GGUF`: the original GGUF (e.g. SmolLM2-135M-Instruct.Q4_1.gguf). Required; without
//!   it the test prints SKIP and passes.
//! - `ATHENA_REAL_MODEL_DIR`: optional, the folder athena-materialize wrote from that GGUF; its
//!   tokenizer.json / tokenizer_config.json (and config.json) are used. Without it the same files are
//!   rebuilt in memory with `checkpoint::vocab` (what athena-materialize uses).
//!
//! Hyperparameters come from the GGUF's config (GgufSource), as the HF config reader is not on
//! this branch yet.

use std::path::PathBuf;

use athena::checkpoint::gguf_source::GgufSource;
use athena::checkpoint::TensorSource;
use athena::container::gguf::{GgufFile, Value};
use athena::export::metadata::model_metadata;
use athena::export::pretokenizer::PreMethod;
use athena::export::TokenizerFiles;

/// Keys the original file does not have but current llama.cpp writes, with their value: gguf-py's
/// `SpecialVocab` sets `add_eos_token = false` for a `ByteLevel` post-processor (the original was
/// converted by an older llama.cpp).
const ALLOWED_EXTRA: &[(&str, Value)] = &[("tokenizer.ggml.add_eos_token", Value::Bool(false))];

#[test]
fn smollm2_metadata_matches_original() {
    let Ok(gguf) = std::env::var("ATHENA_REAL_GGUF") else {
        println!("SKIP export_real: set ATHENA_REAL_GGUF to SmolLM2-135M-Instruct.Q4_1.gguf (and optionally ATHENA_REAL_MODEL_DIR to its materialised folder)");
        return;
    };
    let gguf = PathBuf::from(gguf);
    let original = GgufFile::open(&gguf).unwrap();
    let src = GgufSource::open(&gguf).unwrap();
    let files = match std::env::var("ATHENA_REAL_MODEL_DIR") {
        Ok(dir) => {
            println!("tokenizer files from {dir}");
            TokenizerFiles::read(&PathBuf::from(dir)).unwrap()
        }
        Err(_) => {
            println!("tokenizer files rebuilt in memory from {}", gguf.display());
            TokenizerFiles::from_gguf(&gguf, src.gguf()).unwrap()
        }
    };
    let file_type = original.get_u32("general.file_type").unwrap();
    let meta = model_metadata(src.config(), &files, "SmolLM2", file_type).unwrap();
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
    for (key, value) in &original.metadata {
        let is_tok = key.starts_with("tokenizer.");
        let is_hparam = key.starts_with(&format!("{arch}."));
        if !(is_tok || is_hparam || key == "general.architecture" || key == "general.file_type") {
            continue;
        }
        assert_eq!(ours(key), Some(value), "key {key}");
        compared += 1;
    }
    for (key, value) in &meta.keys {
        if key.starts_with("tokenizer.") || key.starts_with(&format!("{arch}.")) {
            if original.get(key).is_none() {
                assert!(
                    ALLOWED_EXTRA.iter().any(|(k, v)| k == key && v == value),
                    "extra key {key} = {value:?}"
                );
                println!("extra key (llama.cpp's current converter writes it): {key} = {value:?}");
            }
        }
    }
    println!("{compared} keys equal to the original's");
    assert!(compared >= 20, "only {compared} keys compared");
}
