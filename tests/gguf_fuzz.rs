//! Property-based fuzzing of the GGUF reader and of athena-verify's checks, bounded so that it runs
//! in `cargo test`.
//!
//! Inputs are valid files (plain ones, and an Athena file of test-vector weights with plain F32, F16
//! and Q8_0 tensors) mutated by byte flips, interesting-value overwrites, truncations, splices,
//! insertions and deletions, plus arbitrary bytes behind a valid prefix. `GgufFile::from_bytes` must
//! never panic, and whatever it accepts must satisfy the reader's documented invariants and then go
//! through athena-verify's path (the Athena rules, the standard types' values, the checksum rules;
//! with and without checksums) and the runtime's model loader: no panic, every error one line. A
//! panicking input is saved to `fixtures/gguf-regressions/` (first one per run) and then replayed
//! forever by `regression_fixtures_do_not_panic`. Set `ATHENA_FUZZ_CASES` to run more cases (the
//! long run of 88aa858, recorded in fixtures/gguf-regressions/README.md:
//! `ATHENA_FUZZ_CASES=70000000 cargo test --release --test gguf_fuzz -- --test-threads=1`).

mod common;
mod fuzz_support;
mod gguf_support;

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

use athena::container::athena::EncodedWeight;
use athena::container::gguf::{GgmlType, GgufFile};
use athena::container::model_file::ModelFileWriter;
use athena::verify::{self, Options};
use fuzz_support::{apply, mutation};
use gguf_support::*;
use proptest::prelude::*;
use proptest::test_runner::Config;
use sha2::{Digest, Sha256};

fn regressions_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/gguf-regressions")
}

/// Inputs the reader accepted, and those athena-verify then found valid (printed by the long run).
static ACCEPTED: AtomicU64 = AtomicU64::new(0);
static VERIFIED: AtomicU64 = AtomicU64::new(0);

fn one_line(e: &dyn std::fmt::Display) {
    let s = e.to_string();
    assert!(!s.is_empty() && !s.contains('\n'), "bad message {s:?}");
}

/// Parses `bytes`, checks the invariants of an accepted file and runs athena-verify's checks and
/// the runtime's loader on it, and saves the input if anything panics.
fn check(bytes: Vec<u8>) {
    static SAVED: AtomicBool = AtomicBool::new(false);
    let copy = bytes.clone();
    let r = catch_unwind(AssertUnwindSafe(|| match GgufFile::from_bytes(bytes) {
        Ok(f) => {
            invariants(&f);
            ACCEPTED.fetch_add(1, Ordering::Relaxed);
            let path = Path::new("fuzz.gguf");
            for checksums in [true, false] {
                match verify::verify(&f, path, Options { checksums }) {
                    Ok(report) => {
                        assert!(report.valid);
                        if checksums {
                            VERIFIED.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => one_line(&e),
                }
            }
            if let Err(e) = athena_runtime::Model::load(&f) {
                one_line(&e);
            }
        }
        Err(e) => one_line(&e),
    }));
    if let Err(p) = r {
        if !SAVED.swap(true, Ordering::SeqCst) {
            let hash = Sha256::digest(&copy);
            let name: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
            let dir = regressions_dir();
            let _ = std::fs::create_dir_all(&dir);
            let path = dir.join(format!("crash-{name}.gguf"));
            let _ = std::fs::write(&path, &copy);
            eprintln!("saved panicking input to {}", path.display());
        }
        resume_unwind(p);
    }
}

fn invariants(f: &GgufFile) {
    assert!(f.alignment.is_power_of_two());
    assert_eq!(f.data_offset % f.alignment, 0);
    let mut expected = 0u64;
    for t in &f.tensors {
        assert!(t.name.len() <= 63);
        assert!((1..=4).contains(&t.dims.len()));
        assert_eq!(t.offset, expected);
        assert_eq!(t.size_bytes, t.ggml_type.tensor_size(&t.dims).unwrap());
        assert_eq!(f.tensor_data(t).len() as u64, t.size_bytes);
        assert!(std::ptr::eq(f.tensor(&t.name).unwrap(), t));
        expected = (t.offset + t.size_bytes).div_ceil(f.alignment) * f.alignment;
    }
    assert_eq!(f.keys().count(), f.metadata_len());
    for (k, v) in f.metadata() {
        // Pointer equality: metadata may hold NaN, which is not equal to itself.
        assert!(std::ptr::eq(f.get(k).unwrap(), v));
    }
}

/// An Athena file: three test-vector weights (f16 and i8 codebooks, low rank, rotation, row
/// scales, a partial last group) among plain F32, F16 and Q8_0 tensors.
fn athena_seed(path: &Path) {
    let mut w = ModelFileWriter::create(path).unwrap();
    w.add_metadata("general.architecture", "llama".to_string());
    let f32s: Vec<u8> = (0..16)
        .flat_map(|k| (k as f32 * 0.5).to_le_bytes())
        .collect();
    w.add_tensor("token_embd.weight", &[4, 4], GgmlType::F32, &f32s)
        .unwrap();
    for (k, name) in [
        "spec_example",
        "d2_n4_i8_rot4_rs_two_blocks",
        "d2_n4_f16_nondiv",
    ]
    .iter()
    .enumerate()
    {
        let v = common::load(&common::vectors_root().join(name));
        w.add_weight(&EncodedWeight::from_parts(
            &format!("blk.{k}.ffn_up.weight"),
            v.params,
            v.parts(),
        ))
        .unwrap();
    }
    let f16s: Vec<u8> = (0..8u16)
        .flat_map(|k| half::f16::from_f32(k as f32).to_bits().to_le_bytes())
        .collect();
    w.add_tensor("output_norm.weight", &[8], GgmlType::F16, &f16s)
        .unwrap();
    let mut q8 = 0x3c00u16.to_le_bytes().to_vec();
    q8.extend(0..32u8);
    w.add_tensor("output.weight", &[32, 1], GgmlType::Q8_0, &q8)
        .unwrap();
    w.finish().unwrap();
}

/// Valid seed files: the full writer sample at two alignments, the small hand-made file and an
/// Athena file.
fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.gguf");
        let b = dir.path().join("b.gguf");
        let c = dir.path().join("c.gguf");
        write_sample(&a, None);
        write_sample(&b, Some(8));
        athena_seed(&c);
        vec![
            std::fs::read(a).unwrap(),
            std::fs::read(b).unwrap(),
            valid_two_tensor_file(),
            std::fs::read(c).unwrap(),
        ]
    })
}

fn config() -> Config {
    fuzz_support::config(3000)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mutated_valid_files_never_panic(
        seed in 0usize..4,
        muts in prop::collection::vec(mutation(), 1..6),
    ) {
        check(apply(seeds()[seed].clone(), &muts));
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        prefix_len in prop::sample::select(vec![0usize, 4, 8, 24]),
        version in prop::sample::select(vec![2u32, 3]),
        rest in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut b = Vec::new();
        b.extend_from_slice(b"GGUF");
        b.extend_from_slice(&version.to_le_bytes());
        // Small counts so the parser gets past the header.
        b.extend_from_slice(&(rest.first().copied().unwrap_or(0) as u64 % 4).to_le_bytes());
        b.extend_from_slice(&(rest.last().copied().unwrap_or(0) as u64 % 4).to_le_bytes());
        b.truncate(prefix_len);
        b.extend_from_slice(&rest);
        check(b);
    }
}

#[test]
fn seeds_are_valid() {
    for s in seeds() {
        invariants(&GgufFile::from_bytes(s.clone()).unwrap());
    }
    let athena = GgufFile::from_bytes(seeds()[3].clone()).unwrap();
    let report = verify::verify(&athena, Path::new("c.gguf"), Options::default()).unwrap();
    assert_eq!(report.summary.athena_weights, 3);
}

/// Prints what the mutation run reached (visible with --nocapture); runs after the proptest
/// cases only by name order, so it is informative, not asserted.
#[test]
fn zz_report_counts() {
    println!(
        "fuzz: {} inputs accepted by the reader, {} of them valid for athena-verify",
        ACCEPTED.load(Ordering::Relaxed),
        VERIFIED.load(Ordering::Relaxed)
    );
}

#[test]
fn every_truncation_of_a_valid_file_is_an_error() {
    let full = &seeds()[0];
    let f = GgufFile::from_bytes(full.clone()).unwrap();
    let last = f.tensors.last().unwrap();
    let data_end = (f.data_offset + last.offset + last.size_bytes) as usize;
    for len in 0..data_end {
        assert!(
            GgufFile::from_bytes(full[..len].to_vec()).is_err(),
            "accepted a file cut at {len}"
        );
    }
    for len in data_end..=full.len() {
        check(full[..len].to_vec());
    }
}

#[test]
fn regression_fixtures_do_not_panic() {
    let dir = regressions_dir();
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "gguf") {
            check(std::fs::read(&path).unwrap());
            n += 1;
        }
    }
    assert!(n > 0, "no regression inputs in {}", dir.display());
}
