//! athena-eval end to end on a tiny random model with a word-level tokenizer.

mod common;

use common::*;
use std::process::Command;

#[test]
fn eval_cli_reports_perplexity_and_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config("llama");
    write_folder(dir.path(), &config, &random_tensors(&config, 4));
    let words: Vec<String> = (0..47).map(|i| format!("w{i}")).collect();
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    write_tokenizer(dir.path(), &refs, false);
    let text_path = dir.path().join("text.txt");
    let text: Vec<String> = (0..100).map(|i| format!("w{}", (i * 13) % 47)).collect();
    std::fs::write(&text_path, text.join(" ")).unwrap();

    let exe = env!("CARGO_BIN_EXE_athena-eval");
    let out = Command::new(exe)
        .arg(dir.path())
        .args([
            "--text",
            text_path.to_str().unwrap(),
            "--ctx",
            "16",
            "--chunks",
            "3",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("[3]") && stdout.contains("ppl = "),
        "{stdout}"
    );
    assert!(
        stdout.contains("3 chunks x 16 tokens, 21 scored"),
        "{stdout}"
    );

    // Too little text for the context.
    let out = Command::new(exe)
        .arg(dir.path())
        .args(["--text", text_path.to_str().unwrap(), "--ctx", "64"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("needs at least 128"), "{stderr}");

    // Not a model folder.
    let out = Command::new(exe)
        .arg(dir.path().join("nope"))
        .args(["--text", text_path.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("nope: no such model folder or GGUF file") && stderr.lines().count() == 1,
        "{stderr}"
    );

    // A file that is not a GGUF model.
    let out = Command::new(exe)
        .arg(&text_path)
        .args(["--text", text_path.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("text.txt") && stderr.lines().count() == 1,
        "{stderr}"
    );
}
