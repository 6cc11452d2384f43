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

fn eval(args: &[&std::ffi::OsStr]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_athena-eval"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue 33: options checked before the model is loaded, a directory named as one, and a
/// perplexity that is not finite an error naming the model, never a result.
#[test]
fn bad_options_and_non_finite_perplexity_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config("llama");
    let mut tensors = random_tensors(&config, 4);
    write_folder(dir.path(), &config, &tensors);
    let words: Vec<String> = (0..47).map(|i| format!("w{i}")).collect();
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    write_tokenizer(dir.path(), &refs, false);
    let text_path = dir.path().join("text.txt");
    let text: Vec<String> = (0..100).map(|i| format!("w{}", (i * 13) % 47)).collect();
    std::fs::write(&text_path, text.join(" ")).unwrap();
    let os = |s: &str| std::ffi::OsString::from(s);
    let model = dir.path().as_os_str().to_owned();
    let text_arg = text_path.as_os_str().to_owned();

    let (code, _, stderr) = eval(&[&model, &os("--text"), &text_arg, &os("--chunks"), &os("0")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("'--chunks <N>': at least 1 chunk is needed"),
        "{stderr}"
    );
    let (code, _, stderr) = eval(&[&model, &os("--text"), &text_arg, &os("--ctx"), &os("3")]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("a context needs at least 4 tokens"),
        "{stderr}"
    );

    // A directory as the text.
    let (code, _, stderr) = eval(&[&model, &os("--text"), &model, &os("--ctx"), &os("16")]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr
            .trim_end()
            .ends_with("is a directory, not a text file")
            && stderr.lines().count() == 1,
        "{stderr}"
    );

    // Weights so large that the logits overflow: the perplexity is infinite.
    tensors.get_mut("model.norm.weight").unwrap().1.fill(1e30);
    write_folder(dir.path(), &config, &tensors);
    let (code, stdout, stderr) = eval(&[
        &model,
        &os("--text"),
        &text_arg,
        &os("--ctx"),
        &os("16"),
        &os("--chunks"),
        &os("3"),
    ]);
    assert_eq!(code, Some(1), "{stdout} {stderr}");
    assert!(!stdout.contains("ppl = "), "{stdout}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "athena-eval: {}: perplexity is ",
            dir.path().display()
        )) && last.contains("after chunk 1 of 3: the model's logits are not finite"),
        "{stderr}"
    );
}
