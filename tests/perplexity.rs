//! Perplexity chunking and statistics, as llama.cpp's llama-perplexity computes them.

mod common;

use athena::checkpoint::HfFolder;
use athena::eval::{make_chunks, perplexity, token_nll, NllStats, PerplexityError};
use athena::model::Model;
use candle_core::Device;
use common::*;

#[test]
fn chunks_are_non_overlapping_with_bos_replacement() {
    let tokens: Vec<u32> = (10..40).collect();
    let c = make_chunks(&tokens, 8, None, Some(1)).unwrap();
    assert_eq!(c.len(), 3);
    assert_eq!(c[0], vec![1, 11, 12, 13, 14, 15, 16, 17]);
    assert_eq!(c[2][0], 1);
    assert_eq!(c[2][7], 33);
    let c = make_chunks(&tokens, 8, Some(2), None).unwrap();
    assert_eq!(c.len(), 2);
    assert_eq!(c[1][0], 18);
    assert!(matches!(
        make_chunks(&tokens, 16, None, None),
        Err(PerplexityError::TooFewTokens { tokens: 30, .. })
    ));
}

#[test]
fn nll_and_error_formula() {
    // Uniform logits: nll = ln(vocab).
    assert!((token_nll(&[0.5; 8], 3) - 8f64.ln()).abs() < 1e-9);
    // Shifted logits give the same answer.
    let a = token_nll(&[1.0, 2.0, 3.0], 2);
    let b = token_nll(&[101.0, 102.0, 103.0], 2);
    assert!((a - b).abs() < 1e-5);
    let mut s = NllStats::default();
    for v in [1.0, 2.0, 3.0, 4.0] {
        s.add(v);
    }
    let mean: f64 = 2.5;
    let var: f64 = (1.0 + 4.0 + 9.0 + 16.0) / 4.0 - mean * mean;
    assert!((s.ppl() - mean.exp()).abs() < 1e-12);
    assert!((s.ppl_error() - (var / 3.0).sqrt() * mean.exp()).abs() < 1e-12);
}

#[test]
fn perplexity_of_tiny_model_matches_full_forward() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config("llama");
    write_folder(dir.path(), &config, &random_tensors(&config, 21));
    let folder = HfFolder::open_validated(dir.path()).unwrap();
    let model = Model::new(&folder, Device::Cpu).unwrap();
    let tokens: Vec<u32> = (0..40).map(|i| (i * 7 + 3) % 50).collect();
    let chunks = make_chunks(&tokens, 10, None, None).unwrap();
    let mut events = 0;
    let report = perplexity(&model, &chunks, &mut |_| events += 1).unwrap();
    assert_eq!(events, 2 + 4);
    assert_eq!(report.chunks, 4);
    assert_eq!(report.stats.count, 4 * 4);
    // Same numbers from the plain full forward.
    let mut s = NllStats::default();
    for (c, l) in chunks.iter().zip(model.logits(&chunks).unwrap()) {
        let l = l.to_vec2::<f32>().unwrap();
        for i in 5..9 {
            s.add(token_nll(&l[i], c[i + 1]));
        }
    }
    // Logits of 4 rows vs all rows may differ in the last bits (different matmul blocking).
    let (a, b) = (s.ppl(), report.ppl);
    assert!((a - b).abs() < 1e-5 * a, "{a} vs {b}");
    assert_eq!(report.running.len(), 4);
    assert!(report.ppl > 1.0 && report.ppl_error > 0.0);
}

#[test]
fn zero_chunks_is_its_own_error() {
    let tokens: Vec<u32> = (10..40).collect();
    let e = make_chunks(&tokens, 8, Some(0), None).unwrap_err();
    assert!(matches!(e, PerplexityError::NoChunks));
    assert_eq!(e.to_string(), "0 chunks asked for (at least 1 is needed)");
}

/// `text_tokens` with a limit must return exactly the first tokens of the whole text's
/// tokenization (a perplexity figure must not change because less of the text was read).
fn assert_prefix_tokens(tokenizer: &athena::checkpoint::Tokenizer, path: &std::path::Path) {
    use athena::eval::file::text_tokens;
    let whole = tokenizer
        .encode(&std::fs::read_to_string(path).unwrap(), true)
        .unwrap();
    let all = text_tokens(tokenizer, path, None).unwrap();
    assert!(all.whole);
    assert_eq!(all.tokens, whole);
    for needed in [
        8,
        100,
        1000,
        1024,
        4096,
        16_384,
        70_000,
        whole.len() - 1,
        whole.len() + 1,
    ] {
        let got = text_tokens(tokenizer, path, Some(needed)).unwrap();
        if got.whole {
            assert_eq!(got.tokens, whole, "{}: {needed}", path.display());
        } else {
            assert_eq!(got.tokens.len(), needed);
            assert_eq!(
                got.tokens[..],
                whole[..needed],
                "{}: the first {needed} tokens differ",
                path.display()
            );
        }
    }
}

#[test]
fn a_prefix_of_the_text_gives_the_whole_texts_first_tokens() {
    let dir = tempfile::tempdir().unwrap();
    write_bpe_tokenizer(dir.path());
    let tokenizer = athena::checkpoint::Tokenizer::from_dir(dir.path()).unwrap();
    let mut rng = Rng::new(5);
    let pieces = [
        "ab", "a b", "12", " ", "  ", "\n", "\n\n", "ba2", "\t", "é", "1",
    ];
    let lines: String = (0..40_000)
        .map(|_| pieces[(rng.next_f32(1.0).abs() * 1000.0) as usize % pieces.len()])
        .collect();
    // One line of digits: no newline to cut at, the margin alone keeps the tokens right.
    let digits: String = (0..60_000).map(|k| ["1", "2"][k % 7 % 2]).collect();
    for (name, text) in [("lines.txt", lines), ("digits.txt", digits)] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        assert_prefix_tokens(&tokenizer, &path);
    }
    // A directory as the text is named as such.
    let e = athena::eval::file::text_tokens(&tokenizer, dir.path(), Some(10)).unwrap_err();
    assert!(e.ends_with(": is a directory, not a text file"), "{e}");
}

/// The same on the real texts with SmolLM2's tokenizer, when they are on this machine
/// (~/.cache/athena; see README).
#[test]
fn a_prefix_of_the_real_texts_gives_their_first_tokens() {
    let home = std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default());
    let cache = home.join(".cache/athena");
    let model = cache.join("models/SmolLM2-135M-Instruct");
    if !model.join("tokenizer.json").is_file() {
        eprintln!("skipped: no {}", model.display());
        return;
    }
    let tokenizer = athena::checkpoint::Tokenizer::from_dir(&model).unwrap();
    let mut checked = 0;
    for text in ["wiki.utf8", "code.utf8", "c4.utf8"] {
        let path = cache.join("text").join(text);
        if path.is_file() {
            assert_prefix_tokens(&tokenizer, &path);
            checked += 1;
        }
    }
    eprintln!("{checked} real texts checked");
}
