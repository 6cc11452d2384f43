//! Byte-level mutations shared by the fuzz tests (gguf_fuzz: GGUF files; hf_fuzz: config.json,
//! safetensors headers, shard indexes): bit flips, overwrites with values at the edges of the
//! readers' checks, truncations, splices, insertions and deletions.

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config;

#[derive(Debug, Clone)]
pub enum Mutation {
    Flip(Index, u8),
    /// Overwrite 1, 4 or 8 bytes with an interesting little-endian value.
    Overwrite(Index, u64, u8),
    Truncate(Index),
    /// Copy `len` bytes from one place over another.
    Splice(Index, Index, usize),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
}

pub fn interesting() -> impl Strategy<Value = u64> {
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
            16,
            24,
            30,
            31,
            32,
            33,
            63,
            64,
            127,
            255,
            256,
            65535,
            u32::MAX as u64,
            1 << 32,
            1 << 62,
            i64::MAX as u64,
            u64::MAX - 31,
            u64::MAX - 7,
            u64::MAX,
        ]),
        any::<u64>(),
    ]
}

pub fn mutation() -> impl Strategy<Value = Mutation> {
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

pub fn apply(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
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

/// Proptest's configuration for a fuzz target: `ATHENA_FUZZ_CASES` cases (for long runs), else
/// `default_cases`; no persistence file (a panicking input is saved as a fixture instead).
pub fn config(default_cases: u32) -> Config {
    let cases = std::env::var("ATHENA_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_cases);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}
