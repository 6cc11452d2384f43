//! Differential check against llama.cpp's own GGUF reader (`gguf_init_from_file` with `no_alloc = false`,
//! which also reads the padded data section), through tools/llama_gguf_check.cpp built by
//! tools/build_llama_gguf_check.sh. Set `ATHENA_LLAMA_GGUF_CHECK` to the built binary; without it the
//! tests print a SKIP line and pass.
//!
//! 1. Files from our writer are accepted and llama.cpp sees the same tensors, types, offsets and sizes.
//! 2. Random mutations of valid files (flips, interesting values, truncations) are accepted or rejected
//!    alike by Athena's reader and by llama.cpp as its model loader reads files (header parse with
//!    `no_alloc = true`, then each tensor within the file), except where Athena is stricter on purpose
//!    (see `stricter_than_llama`). `ATHENA_LLAMA_DIFF_CASES` sets the number of cases (default 1500).

mod gguf_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use athena::container::gguf::{GgufError, GgufFile};
use gguf_support::*;

fn checker() -> Option<PathBuf> {
    match std::env::var("ATHENA_LLAMA_GGUF_CHECK") {
        Ok(p) => Some(PathBuf::from(p)),
        Err(_) => {
            println!("SKIP gguf_llama_compat: set ATHENA_LLAMA_GGUF_CHECK to a binary built by tools/build_llama_gguf_check.sh");
            None
        }
    }
}

/// (accepted, stdout, last line of stderr). `mmap` selects the model loader's way of reading (no data
/// read, per-tensor bounds check) instead of reading the whole padded data section.
fn llama_reads(bin: &Path, file: &Path, mmap: bool) -> (bool, String, String) {
    let mut cmd = Command::new(bin);
    if mmap {
        cmd.arg("--mmap");
    }
    let out = cmd
        .arg(file)
        .output()
        .expect("running the llama.cpp checker");
    let err = String::from_utf8_lossy(&out.stderr);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        err.lines().last().unwrap_or("").to_string(),
    )
}

#[test]
fn llama_cpp_accepts_our_files() {
    let Some(bin) = checker() else { return };
    let dir = tempfile::tempdir().unwrap();
    for alignment in [None, Some(1u32), Some(64), Some(4096)] {
        let path = dir.path().join("ours.gguf");
        write_sample(&path, alignment);
        let (ok, _, _) = llama_reads(&bin, &path, true);
        assert!(
            ok,
            "llama.cpp's loader rejects our file (alignment {alignment:?})"
        );
        let (ok, text, _) = llama_reads(&bin, &path, false);
        assert!(
            ok,
            "llama.cpp rejects our file (alignment {alignment:?}):\n{text}"
        );
        let f = GgufFile::open(&path).unwrap();
        assert!(
            text.contains(&format!(
                "alignment {}, data offset {}",
                f.alignment, f.data_offset
            )),
            "{text}"
        );
        for t in &f.tensors {
            let mut ne = t.dims.clone();
            ne.resize(4, 1);
            let line = format!(
                "  {} type {} ne [{} {} {} {}] offset {} nbytes {}",
                t.name,
                t.ggml_type.name().to_lowercase(),
                ne[0],
                ne[1],
                ne[2],
                ne[3],
                t.offset,
                t.size_bytes
            );
            assert!(
                text.to_lowercase().contains(&line.to_lowercase()),
                "missing {line:?} in\n{text}"
            );
        }
    }
}

/// Cases where Athena's reader rejects a file llama.cpp accepts, on purpose.
fn stricter_than_llama(e: &GgufError) -> bool {
    matches!(
        e,
        // Bool bytes other than 0/1 would not survive a rewrite byte for byte.
        GgufError::InvalidBool { .. }
            // Strings must be UTF-8 (gguf-py decodes them as UTF-8 as well).
            | GgufError::InvalidUtf8 { .. }
            // Dimensions of 0 (empty tensors) are refused; llama.cpp allows ne >= 0.
            | GgufError::ZeroDim { .. }
            // n_dims = 0 is refused; llama.cpp reads it as a 1-element tensor.
            | GgufError::BadDimCount { n_dims: 0, .. }
    )
}

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn mutate(rng: &mut XorShift, mut b: Vec<u8>) -> Vec<u8> {
    for _ in 0..1 + rng.below(3) {
        if b.is_empty() {
            break;
        }
        let at = rng.below(b.len());
        match rng.below(4) {
            0 => b[at] ^= 1 << rng.below(8),
            1 => {
                let vals = [
                    0u64,
                    1,
                    2,
                    5,
                    9,
                    13,
                    31,
                    32,
                    33,
                    63,
                    64,
                    u32::MAX as u64,
                    u64::MAX,
                ];
                let v = vals[rng.below(vals.len())].to_le_bytes();
                let n = [1usize, 4, 8][rng.below(3)].min(b.len() - at);
                b[at..at + n].copy_from_slice(&v[..n]);
            }
            2 => b[at] = rng.next() as u8,
            _ => b.truncate(at),
        }
    }
    b
}

#[test]
fn llama_cpp_and_athena_agree_on_mutated_files() {
    let Some(bin) = checker() else { return };
    let cases: usize = std::env::var("ATHENA_LLAMA_DIFF_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500);
    let dir = tempfile::tempdir().unwrap();
    let sample = dir.path().join("sample.gguf");
    write_sample(&sample, None);
    let seeds = [std::fs::read(&sample).unwrap(), valid_two_tensor_file()];
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let (mut both_ok, mut both_err, mut stricter) = (0, 0, 0);
    let mut disagreements = Vec::new();
    for i in 0..cases {
        let bytes = mutate(&mut rng, seeds[i % seeds.len()].clone());
        let path = dir.path().join("case.gguf");
        std::fs::write(&path, &bytes).unwrap();
        let (llama_ok, _, llama_err) = llama_reads(&bin, &path, true);
        let ours = GgufFile::from_bytes(bytes.clone());
        match (&ours, llama_ok) {
            (Ok(_), true) => both_ok += 1,
            (Err(_), false) => both_err += 1,
            (Err(e), true) if stricter_than_llama(e) => stricter += 1,
            (Ok(_), false) => disagreements.push(format!(
                "case {i}: Athena accepts, llama.cpp rejects: {llama_err}"
            )),
            (Err(e), true) => {
                disagreements.push(format!("case {i}: llama.cpp accepts, Athena rejects: {e}"))
            }
        }
        if disagreements.len() == 1 && disagreements[0].starts_with(&format!("case {i}:")) {
            let keep = dir.path().join(format!("disagreement-{i}.gguf"));
            std::fs::write(&keep, &bytes).unwrap();
        }
    }
    println!("{cases} mutated files: both accept {both_ok}, both reject {both_err}, Athena stricter {stricter}, disagree {}", disagreements.len());
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}
