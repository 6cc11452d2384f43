//! athena-eval's peak memory does not grow with the text beyond the chunks it evaluates (issue
//! 33: 10 MB of digits and --chunks 1 took 3.4 GB, the whole text tokenized). Its own test
//! binary: the peak of the children of this process is the one athena-eval run's.
#![cfg(unix)]

mod common;

use std::process::Command;

use common::*;

#[test]
fn one_chunk_of_a_long_text_costs_what_one_chunk_costs() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config("llama");
    write_folder(dir.path(), &config, &random_tensors(&config, 4));
    // Its pre-tokenizer splits digits one by one: 10 million tokens for the whole text.
    write_bpe_tokenizer(dir.path());
    let text = dir.path().join("digits.txt");
    let digits: String = (0..10_000_000u64)
        .map(|k| char::from(b'1' + (k * 7 % 2) as u8))
        .collect();
    std::fs::write(&text, digits).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_athena-eval"))
        .arg(dir.path())
        .arg("--text")
        .arg(&text)
        .args(["--ctx", "64", "--chunks", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("the first 128 tokens, 1 chunks of 64"),
        "{stderr}"
    );
    // SAFETY: getrusage with a valid out-pointer.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) },
        0
    );
    // ru_maxrss is in KiB on Linux, bytes on macOS.
    let peak_mib = if cfg!(target_os = "macos") {
        usage.ru_maxrss as f64 / (1 << 20) as f64
    } else {
        usage.ru_maxrss as f64 / 1024.0
    };
    println!("athena-eval peak resident memory: {peak_mib:.1} MiB");
    assert!(
        peak_mib < 300.0,
        "peak {peak_mib:.0} MiB for one chunk of 64 tokens"
    );
}
