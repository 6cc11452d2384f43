//! Property-based fuzzing of the GGUF reader, bounded so that it runs in `cargo test`.
//!
//! Inputs are valid files mutated by byte flips, interesting-value overwrites, truncations, splices,
//! insertions and deletions, plus arbitrary bytes behind a valid prefix. `GgufFile::from_bytes` must never
//! panic, and whatever it accepts must satisfy the reader's documented invariants. A panicking input is
//! saved to `fixtures/gguf-regressions/` (first one per run) and then replayed forever by
//! `regression_fixtures_do_not_panic`. Set `ATHENA_FUZZ_CASES` to run more cases.

mod gguf_support;

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use athena::container::gguf::GgufFile;
use gguf_support::*;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config;
use sha2::{Digest, Sha256};

fn regressions_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/gguf-regressions")
}

/// Parses `bytes`, checks the invariants of an accepted file, and saves the input if anything panics.
fn check(bytes: Vec<u8>) {
    static SAVED: AtomicBool = AtomicBool::new(false);
    let copy = bytes.clone();
    let r = catch_unwind(AssertUnwindSafe(|| {
        if let Ok(f) = GgufFile::from_bytes(bytes) {
            invariants(&f);
        } else if let Err(e) = GgufFile::from_bytes(copy.clone()) {
            let s = e.to_string();
            assert!(!s.is_empty() && !s.contains('\n'), "bad message {s:?}");
        }
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
    for (k, v) in &f.metadata {
        // Pointer equality: metadata may hold NaN, which is not equal to itself.
        assert!(std::ptr::eq(f.get(k).unwrap(), v));
    }
}

/// Valid seed files: the full writer sample at two alignments and the small hand-made file.
fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.gguf");
        let b = dir.path().join("b.gguf");
        write_sample(&a, None);
        write_sample(&b, Some(8));
        vec![
            std::fs::read(a).unwrap(),
            std::fs::read(b).unwrap(),
            valid_two_tensor_file(),
        ]
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    /// Overwrite 1, 4 or 8 bytes with an interesting little-endian value.
    Overwrite(Index, u64, u8),
    Truncate(Index),
    /// Copy `len` bytes from one place over another.
    Splice(Index, Index, usize),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
}

fn interesting() -> impl Strategy<Value = u64> {
    prop_oneof![
        prop::sample::select(vec![
            0u64,
            1,
            2,
            3,
            4,
            5,
            7,
            8,
            9,
            12,
            13,
            24,
            30,
            31,
            32,
            33,
            63,
            64,
            255,
            256,
            65535,
            u32::MAX as u64,
            1 << 32,
            1 << 62,
            i64::MAX as u64,
            u64::MAX - 31,
            u64::MAX,
        ]),
        any::<u64>(),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 1u8..=255).prop_map(|(i, m)| Mutation::Flip(i, m)),
        3 => (any::<Index>(), interesting(), prop::sample::select(vec![1u8, 4, 8]))
            .prop_map(|(i, v, w)| Mutation::Overwrite(i, v, w)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), any::<Index>(), 1usize..64).prop_map(|(a, b, n)| Mutation::Splice(a, b, n)),
        1 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(i, v)| Mutation::Insert(i, v)),
        1 => (any::<Index>(), 1usize..32).prop_map(|(i, n)| Mutation::Delete(i, n)),
    ]
}

fn apply(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        if b.is_empty() {
            break;
        }
        let len = b.len();
        match m {
            Mutation::Flip(i, mask) => b[i.index(len)] ^= mask,
            Mutation::Overwrite(i, v, w) => {
                let at = i.index(len);
                let bytes = v.to_le_bytes();
                let n = (*w as usize).min(len - at);
                b[at..at + n].copy_from_slice(&bytes[..n]);
            }
            Mutation::Truncate(i) => b.truncate(i.index(len)),
            Mutation::Splice(src, dst, n) => {
                let (s, d) = (src.index(len), dst.index(len));
                let n = (*n).min(len - s).min(len - d);
                let chunk = b[s..s + n].to_vec();
                b[d..d + n].copy_from_slice(&chunk);
            }
            Mutation::Insert(i, v) => {
                let at = i.index(len + 1);
                b.splice(at..at, v.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let at = i.index(len);
                let end = (at + n).min(len);
                b.drain(at..end);
            }
        }
    }
    b
}

fn config() -> Config {
    let cases = std::env::var("ATHENA_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mutated_valid_files_never_panic(
        seed in 0usize..3,
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
