//! Rebuilt tokenizer.json files against llama.cpp's tokenizer test vectors (ids from the original
//! Hugging Face tokenizers). The starcoder vectors ship in fixtures/vocab; the others are read from
//! `$ATHENA_CACHE/vocab` (default `~/.cache/athena/vocab`) when present and skipped otherwise.

use std::path::{Path, PathBuf};

use athena::checkpoint::vocab::GgufVocab;
use athena::container::gguf::GgufFile;

const SEP: &str = "\n__ggml_vocab_test__\n";

/// Returns (cases checked, mismatches as messages).
fn check(gguf: &Path) -> (usize, Vec<String>) {
    let f = GgufFile::open(gguf).unwrap();
    let v = GgufVocab::from_gguf(&f).unwrap();
    let json = serde_json::to_vec(&v.tokenizer_json().unwrap()).unwrap();
    let tok = tokenizers::Tokenizer::from_bytes(json).unwrap();
    let inp = std::fs::read_to_string(gguf.with_extension("gguf.inp")).unwrap();
    let out = std::fs::read_to_string(gguf.with_extension("gguf.out")).unwrap();
    // As llama.cpp's test-tokenizer-0 splits: a separator at the very end starts no new case.
    let mut texts: Vec<&str> = inp.split(SEP).collect();
    if inp.ends_with(SEP) {
        texts.pop();
    }
    let expected: Vec<&str> = out.lines().collect();
    assert_eq!(texts.len(), expected.len(), "{}", gguf.display());
    let mut bad = Vec::new();
    for (text, want) in texts.iter().zip(&expected) {
        let want: Vec<u32> = want
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        let got = tok.encode(*text, false).unwrap().get_ids().to_vec();
        if got != want {
            bad.push(format!("{text:?}: got {got:?}, want {want:?}"));
        }
    }
    (texts.len(), bad)
}

fn cache_vocab(name: &str) -> Option<PathBuf> {
    let base = std::env::var_os("ATHENA_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/athena")))?;
    let p = base.join("vocab").join(format!("ggml-vocab-{name}.gguf"));
    p.exists().then_some(p)
}

#[test]
fn starcoder_vectors_match() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/vocab/ggml-vocab-starcoder.gguf");
    let (n, bad) = check(&p);
    assert!(
        bad.is_empty(),
        "{} of {n} cases differ:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

fn cached(name: &str) {
    let Some(p) = cache_vocab(name) else {
        eprintln!("skipped: ggml-vocab-{name}.gguf not in $ATHENA_CACHE/vocab (run tools/fetch-models.sh)");
        return;
    };
    let (n, bad) = check(&p);
    assert!(
        bad.is_empty(),
        "{name}: {} of {n} cases differ:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn qwen2_vectors_match() {
    cached("qwen2");
}

#[test]
fn gpt2_vectors_match() {
    cached("gpt-2");
}

#[test]
fn llama_bpe_vectors_match() {
    cached("llama-bpe");
}

#[test]
fn llama_spm_vectors_match() {
    cached("llama-spm");
}
