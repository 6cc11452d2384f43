//! Property-based fuzzing of the Hugging Face folder reader, bounded so that it runs in `cargo
//! test`: config.json (`ModelConfig::from_hf_json`), the safetensors header of model.safetensors
//! and the shard index (`HfFolder::open`, `validate`, `check_finite`, `load`), and the model
//! built on an accepted folder (`Model::new` and a forward pass).
//!
//! Inputs are the files of a valid tiny folder, mutated by bytes (flips, interesting-value
//! overwrites, truncations, splices, insertions, deletions), as JSON (a value replaced by an
//! interesting one, a key removed, a value wrapped in an array or object) or as text (a number
//! literal replaced by one out of range, -0, NaN, ...). The reader must answer with a one-line
//! error or a folder whose invariants hold, never a panic, and never an abort on a huge
//! allocation (which kills the test process: the temporary folder it prints at the start then
//! holds the input). A panicking input is saved to `fixtures/hf-regressions/` (first one per
//! run) and replayed forever by `regression_fixtures_are_answered`, with the `reject-*` inputs
//! that were once accepted. Each of the eight property tests runs `ATHENA_FUZZ_CASES` inputs
//! (default 600); for long runs, `cargo test --release --test hf_fuzz`.

mod common;
mod fuzz_support;

use std::cell::RefCell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use athena::checkpoint::{HfFolder, ModelConfig, TensorSource};
use athena::model::Model;
use candle_core::Device;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use fuzz_support::{apply, interesting, mutation};

fn regressions_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/hf-regressions")
}

/// The file of the folder a case replaces, and the extension its saved copy gets.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    Config,
    Safetensors,
    Index,
}

impl Target {
    fn extension(self) -> &'static str {
        match self {
            Target::Config => "config.json",
            Target::Safetensors => "safetensors",
            Target::Index => "index.json",
        }
    }
}

// ---- The valid folders the mutations start from ----

/// The seed files: config.json texts (llama, llama with llama3 RoPE scaling, qwen2) with
/// weights to match, model.safetensors files (f32; f16 and bf16 mixed) and index texts (for
/// the two shards in `shards`).
struct Seeds {
    configs: Vec<Vec<u8>>,
    /// model.safetensors for each of `configs`.
    config_weights: Vec<Vec<u8>>,
    safetensors: Vec<Vec<u8>>,
    indexes: Vec<Vec<u8>>,
    /// The two shards the index seeds point at.
    shards: [Vec<u8>; 2],
}

fn seeds() -> &'static Seeds {
    static SEEDS: OnceLock<Seeds> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let llama = common::tiny_config("llama");
        let mut llama3 = llama.clone();
        llama3["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64});
        llama3["head_dim"] = json!(4);
        let qwen2 = common::tiny_config("qwen2");
        let configs = [&llama, &llama3, &qwen2]
            .iter()
            .map(|c| serde_json::to_vec_pretty(c).unwrap())
            .collect();
        let tensors = common::random_tensors(&llama, 11);
        let encode = |mixed: bool| -> common::EncodedTensors {
            tensors
                .iter()
                .enumerate()
                .map(|(i, (n, (s, d)))| {
                    let (dtype, bytes) = match (mixed, i % 3) {
                        (true, 1) => (
                            safetensors::Dtype::F16,
                            d.iter()
                                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                                .collect(),
                        ),
                        (true, 2) => (
                            safetensors::Dtype::BF16,
                            d.iter()
                                .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                                .collect(),
                        ),
                        _ => (safetensors::Dtype::F32, common::f32_bytes(d)),
                    };
                    (n.clone(), (dtype, s.clone(), bytes))
                })
                .collect()
        };
        let bytes = |t: &common::EncodedTensors| {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("m.safetensors");
            common::write_safetensors(&p, t);
            std::fs::read(p).unwrap()
        };
        let all = encode(false);
        let mut halves: [common::EncodedTensors; 2] = Default::default();
        let mut weight_map = serde_json::Map::new();
        for (i, (name, t)) in all.iter().enumerate() {
            halves[i % 2].insert(name.clone(), t.clone());
            weight_map.insert(name.clone(), json!(shard_name(i % 2)));
        }
        let index = json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
        let qwen2_weights = common::random_tensors(&qwen2, 12)
            .into_iter()
            .map(|(n, (s, d))| (n, (safetensors::Dtype::F32, s, common::f32_bytes(&d))))
            .collect();
        Seeds {
            configs,
            config_weights: vec![bytes(&all), bytes(&all), bytes(&qwen2_weights)],
            safetensors: vec![bytes(&all), bytes(&encode(true))],
            indexes: vec![serde_json::to_vec_pretty(&index).unwrap()],
            shards: [bytes(&halves[0]), bytes(&halves[1])],
        }
    })
}

fn shard_name(i: usize) -> String {
    format!("model-0000{}-of-00002.safetensors", i + 1)
}

// ---- Running one case ----

thread_local! {
    /// Each test thread's folder, rewritten for every case.
    static FOLDER: RefCell<Option<tempfile::TempDir>> = const { RefCell::new(None) };
}

/// Writes the folder of a case: the target file replaced by `bytes`, the others valid (for a
/// config, the weights of seed config `seed`; else the llama config).
fn write_case(dir: &Path, target: Target, seed: usize, bytes: &[u8]) {
    let s = seeds();
    for name in std::fs::read_dir(dir).unwrap() {
        std::fs::remove_file(name.unwrap().path()).unwrap();
    }
    let (config, weights) = match target {
        Target::Config => (bytes, &s.config_weights[seed]),
        _ => (&s.configs[0][..], &s.config_weights[0]),
    };
    std::fs::write(dir.join("config.json"), config).unwrap();
    match target {
        Target::Index => {
            std::fs::write(dir.join("model.safetensors.index.json"), bytes).unwrap();
            for (i, shard) in s.shards.iter().enumerate() {
                std::fs::write(dir.join(shard_name(i)), shard).unwrap();
            }
        }
        Target::Safetensors => std::fs::write(dir.join("model.safetensors"), bytes).unwrap(),
        Target::Config => std::fs::write(dir.join("model.safetensors"), weights).unwrap(),
    }
}

/// Runs the reader on one input and checks what it answers; saves the input if anything panics.
fn check(target: Target, seed: usize, bytes: Vec<u8>) {
    static SAVED: AtomicBool = AtomicBool::new(false);
    let r = catch_unwind(AssertUnwindSafe(|| {
        FOLDER.with(|f| {
            let mut f = f.borrow_mut();
            let dir = f.get_or_insert_with(|| {
                let d = tempfile::tempdir().unwrap();
                eprintln!("hf_fuzz: cases of this thread in {}", d.path().display());
                d
            });
            write_case(dir.path(), target, seed, &bytes);
            read_folder(dir.path());
        })
    }));
    if let Err(p) = r {
        if !SAVED.swap(true, Ordering::SeqCst) {
            let hash = Sha256::digest(&bytes);
            let name: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
            let dir = regressions_dir();
            let _ = std::fs::create_dir_all(&dir);
            let path = dir.join(format!("crash-{name}.{}", target.extension()));
            let _ = std::fs::write(&path, &bytes);
            eprintln!("saved panicking input to {}", path.display());
        }
        resume_unwind(p);
    }
}

fn one_line(e: &dyn std::fmt::Display) -> String {
    let s = e.to_string();
    assert!(!s.is_empty() && !s.contains('\n'), "bad message {s:?}");
    s
}

/// Opens the folder the way the converter does and checks what an accepted one promises.
fn read_folder(dir: &Path) {
    match ModelConfig::from_hf_json(&dir.join("config.json")) {
        Ok(c) => config_invariants(&c),
        Err(e) => {
            one_line(&e);
        }
    }
    let folder = match HfFolder::open(dir) {
        Ok(f) => f,
        Err(e) => {
            one_line(&e);
            return;
        }
    };
    for name in folder.tensor_names() {
        let shape = folder.shape(&name).unwrap();
        match folder.load(&name) {
            Ok(t) => {
                assert_eq!(t.shape, shape);
                assert_eq!(Some(t.data.len()), checked_product(&shape), "{name}");
                assert!(t.data.iter().all(|x| x.is_finite()), "{name}");
            }
            Err(e) => {
                one_line(&e);
            }
        }
    }
    if let Err(e) = folder.check_finite() {
        one_line(&e);
    }
    if let Err(e) = folder.validate() {
        one_line(&e);
        return;
    }
    // Every tensor the config implies is present, in its shape: the model runs or says why.
    let model = Model::new(&folder, Device::Cpu).unwrap();
    if let Err(e) = model.logits(&[vec![1, 5, 9]]) {
        one_line(&e);
    }
}

fn checked_product(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b))
}

/// What the rest of the pipeline relies on in an accepted config.
fn config_invariants(c: &ModelConfig) {
    c.check(&|k| k.to_string()).unwrap();
    let _ = c.linear_weights();
    let _ = athena::convert::tuning::end_to_end::estimated_peak_bytes(c, 4);
    // The first tensors' sizes fit (the list itself is as long as the layer count says).
    for (name, shape) in athena::checkpoint::each_expected_tensor(c).take(64) {
        let n = checked_product(&shape).unwrap_or_else(|| panic!("{name}: {shape:?}"));
        assert!(n.checked_mul(4).is_some(), "{name}: {shape:?}");
    }
    if c.head_dim <= 1 << 16 {
        let rope = athena::model::Rope::new(c);
        assert!(rope.inv_freq().iter().all(|f| f.is_finite()), "{c:?}");
    }
}

/// A JSON edit at one of the value's nodes (chosen by index over all of them, depth first).
#[derive(Debug, Clone)]
enum JsonEdit {
    Set(Index, Value),
    Remove(Index),
    /// Wrap the node in an array or an object.
    Wrap(Index, bool),
    /// Add a key with an interesting value to the object at (or holding) the node.
    Add(Index, String, Value),
}

fn interesting_json() -> impl Strategy<Value = Value> {
    let numbers = prop::sample::select(vec![
        json!(0),
        json!(1),
        json!(-1),
        json!(2),
        json!(3),
        json!(5),
        json!(16),
        json!(64),
        json!(1u64 << 31),
        json!(1u64 << 32),
        json!(1u64 << 53),
        json!(1u64 << 62),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(0.0),
        json!(-0.0),
        json!(0.5),
        json!(1e-5),
        json!(1e-45),
        json!(1e-50),
        json!(1e-320),
        json!(1e38),
        json!(1e39),
        json!(1e308),
        json!(-1e308),
    ]);
    let others = prop::sample::select(vec![
        json!(null),
        json!(true),
        json!(""),
        json!("x"),
        json!("F32"),
        json!("F16"),
        json!("BF16"),
        json!("F64"),
        json!("I8"),
        json!("BOOL"),
        json!("F8_E4M3"),
        json!("linear"),
        json!("llama3"),
        json!("model.safetensors"),
        json!("../model.safetensors"),
        json!("/etc/passwd"),
        json!("model-00001-of-00002.safetensors"),
        json!("a\nb\u{1b}[31m"),
        json!([]),
        json!({}),
        json!([0, 0]),
        json!([16, 16]),
        json!([u64::MAX, 2]),
        json!([1u64 << 62, 1u64 << 62]),
        json!([0, u64::MAX]),
        json!([0, 1u64 << 40]),
        json!({"rope_type": "llama3", "factor": 8.0}),
    ]);
    prop_oneof![
        3 => numbers,
        2 => others,
        1 => any::<i64>().prop_map(|n| json!(n)),
        1 => any::<f64>().prop_filter("JSON numbers are finite", |x| x.is_finite())
            .prop_map(|x| json!(x)),
    ]
}

fn json_edit() -> impl Strategy<Value = JsonEdit> {
    let keys = prop::sample::select(vec![
        "hidden_size",
        "num_hidden_layers",
        "head_dim",
        "rope_scaling",
        "rms_norm_eps",
        "rope_theta",
        "max_position_embeddings",
        "tie_word_embeddings",
        "__metadata__",
        "dtype",
        "shape",
        "data_offsets",
        "weight_map",
        "model.norm.weight",
        "lm_head.weight",
    ]);
    prop_oneof![
        4 => (any::<Index>(), interesting_json()).prop_map(|(i, v)| JsonEdit::Set(i, v)),
        2 => any::<Index>().prop_map(JsonEdit::Remove),
        1 => (any::<Index>(), any::<bool>()).prop_map(|(i, a)| JsonEdit::Wrap(i, a)),
        1 => (any::<Index>(), keys, interesting_json())
            .prop_map(|(i, k, v)| JsonEdit::Add(i, k.to_string(), v)),
    ]
}

/// Paths (object keys and array indices) of every node below the root, depth first.
fn node_paths(v: &Value, prefix: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                prefix.push(json!(k));
                out.push(prefix.clone());
                node_paths(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                prefix.push(json!(i));
                out.push(prefix.clone());
                node_paths(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {}
    }
}

fn node_mut<'a>(v: &'a mut Value, path: &[Value]) -> &'a mut Value {
    path.iter().fold(v, |node, step| match step {
        Value::String(k) => &mut node[k.as_str()],
        Value::Number(i) => &mut node[i.as_u64().unwrap() as usize],
        _ => unreachable!(),
    })
}

fn edit_json(mut v: Value, edits: &[JsonEdit]) -> Value {
    for e in edits {
        let mut paths = Vec::new();
        node_paths(&v, &mut Vec::new(), &mut paths);
        if paths.is_empty() {
            break;
        }
        let pick = |i: &Index| paths[i.index(paths.len())].clone();
        match e {
            JsonEdit::Set(i, x) => *node_mut(&mut v, &pick(i)) = x.clone(),
            JsonEdit::Remove(i) => {
                let path = pick(i);
                let (last, parent) = path.split_last().unwrap();
                match (node_mut(&mut v, parent), last) {
                    (Value::Object(m), Value::String(k)) => {
                        m.remove(k);
                    }
                    (Value::Array(a), Value::Number(n)) => {
                        a.remove(n.as_u64().unwrap() as usize);
                    }
                    _ => {}
                }
            }
            JsonEdit::Wrap(i, array) => {
                let node = node_mut(&mut v, &pick(i));
                let inner = node.take();
                *node = match array {
                    true => json!([inner]),
                    false => json!({ "value": inner }),
                };
            }
            JsonEdit::Add(i, key, x) => {
                let path = pick(i);
                let node = node_mut(&mut v, &path);
                let object = match node.is_object() {
                    true => node,
                    false => node_mut(&mut v, &path[..path.len() - 1]),
                };
                if let Value::Object(m) = object {
                    m.insert(key.clone(), x.clone());
                }
            }
        }
    }
    v
}

/// Byte ranges of the number literals of a JSON text (outside strings).
fn number_spans(text: &[u8]) -> Vec<std::ops::Range<usize>> {
    let (mut spans, mut in_string, mut escaped, mut i) = (Vec::new(), false, false, 0);
    while i < text.len() {
        let c = text[i];
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            i += 1;
        } else if c == b'"' {
            in_string = true;
            i += 1;
        } else if c == b'-' || c.is_ascii_digit() {
            let start = i;
            while i < text.len()
                && matches!(text[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
            {
                i += 1;
            }
            spans.push(start..i);
        } else {
            i += 1;
        }
    }
    spans
}

/// Number literals that JSON readers get wrong: out of every integer and float range, negative
/// zero, exponents, and words some writers emit for non-finite floats.
fn literal() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "0",
        "-0",
        "-1",
        "1",
        "3",
        "0.0",
        "-0.0",
        "1e-400",
        "1e309",
        "-1e309",
        "1e-45",
        "1.5",
        "4294967296",
        "9007199254740993",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775809",
        "1e19",
        "NaN",
        "Infinity",
        "-Infinity",
        "00",
        "1.",
        "1e",
    ])
}

/// Replaces number literals (chosen by index among all of them) with `literal`s.
fn edit_numbers(text: &[u8], edits: &[(Index, &str)]) -> Vec<u8> {
    let mut out = text.to_vec();
    for (i, lit) in edits {
        let spans = number_spans(&out);
        if spans.is_empty() {
            break;
        }
        let span = spans[i.index(spans.len())].clone();
        out.splice(span, lit.bytes());
    }
    out
}

/// A safetensors file's header JSON and data section.
fn split_safetensors(bytes: &[u8]) -> (Value, &[u8]) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (
        serde_json::from_slice(&bytes[8..8 + n]).unwrap(),
        &bytes[8 + n..],
    )
}

/// A safetensors file from a header and data; `length` overrides the header's length prefix.
fn join_safetensors(header: &Value, data: &[u8], length: Option<u64>) -> Vec<u8> {
    let mut text = serde_json::to_vec(header).unwrap();
    // The format pads the header with spaces to a multiple of 8.
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let mut out = length.unwrap_or(text.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&text);
    out.extend_from_slice(data);
    out
}

// ---- The targets ----

fn config() -> Config {
    fuzz_support::config(600)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn config_json_bytes(seed in 0usize..3, muts in prop::collection::vec(mutation(), 1..6)) {
        check(Target::Config, seed, apply(seeds().configs[seed].clone(), &muts));
    }

    #[test]
    fn config_json_values(seed in 0usize..3, edits in prop::collection::vec(json_edit(), 1..5)) {
        let v: Value = serde_json::from_slice(&seeds().configs[seed]).unwrap();
        check(Target::Config, seed, serde_json::to_vec(&edit_json(v, &edits)).unwrap());
    }

    #[test]
    fn config_json_numbers(
        seed in 0usize..3,
        edits in prop::collection::vec((any::<Index>(), literal()), 1..4),
    ) {
        check(Target::Config, seed, edit_numbers(&seeds().configs[seed], &edits));
    }

    #[test]
    fn safetensors_header_numbers(
        seed in 0usize..2,
        edits in prop::collection::vec((any::<Index>(), literal()), 1..4),
    ) {
        // The header's text edited, its length prefix kept right.
        let bytes = &seeds().safetensors[seed];
        let n = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header = edit_numbers(&bytes[8..n], &edits);
        let mut input = (header.len() as u64).to_le_bytes().to_vec();
        input.extend_from_slice(&header);
        input.extend_from_slice(&bytes[n..]);
        check(Target::Safetensors, 0, input);
    }

    #[test]
    fn safetensors_header_bytes(
        seed in 0usize..2,
        muts in prop::collection::vec(mutation(), 1..6),
        whole_file in any::<bool>(),
    ) {
        let bytes = &seeds().safetensors[seed];
        let input = if whole_file {
            apply(bytes.clone(), &muts)
        } else {
            // The length prefix and header only, then the data as it was.
            let n = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
            let mut head = apply(bytes[..n].to_vec(), &muts);
            head.extend_from_slice(&bytes[n..]);
            head
        };
        check(Target::Safetensors, 0, input);
    }

    #[test]
    fn safetensors_header_values(
        seed in 0usize..2,
        edits in prop::collection::vec(json_edit(), 1..5),
        length in prop_oneof![
            4 => Just(None),
            1 => interesting().prop_map(Some),
        ],
    ) {
        let (header, data) = split_safetensors(&seeds().safetensors[seed]);
        let input = join_safetensors(&edit_json(header, &edits), data, length);
        check(Target::Safetensors, 0, input);
    }

    #[test]
    fn shard_index_values(edits in prop::collection::vec(json_edit(), 1..5)) {
        let v: Value = serde_json::from_slice(&seeds().indexes[0]).unwrap();
        check(Target::Index, 0, serde_json::to_vec(&edit_json(v, &edits)).unwrap());
    }

    #[test]
    fn shard_index_bytes(muts in prop::collection::vec(mutation(), 1..6)) {
        check(Target::Index, 0, apply(seeds().indexes[0].clone(), &muts));
    }
}

#[test]
fn seeds_are_valid_folders() {
    let dir = tempfile::tempdir().unwrap();
    let s = seeds();
    let cases = (s.configs.iter().enumerate())
        .map(|(i, c)| (Target::Config, i, c))
        .chain(s.safetensors.iter().map(|b| (Target::Safetensors, 0, b)))
        .chain(s.indexes.iter().map(|b| (Target::Index, 0, b)));
    for (target, seed, bytes) in cases {
        write_case(dir.path(), target, seed, bytes);
        let folder = HfFolder::open_validated(dir.path()).unwrap();
        folder.check_finite().unwrap();
        let model = Model::new(&folder, Device::Cpu).unwrap();
        model.logits(&[vec![1, 5, 9]]).unwrap();
    }
}

/// Every saved input is answered without a panic; the `reject-*` ones (inputs that once passed
/// as valid and led to a wrong model or an abort) with an error.
#[test]
fn regression_fixtures_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    let mut paths: Vec<PathBuf> = std::fs::read_dir(regressions_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    for path in paths {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(target) = [Target::Config, Target::Safetensors, Target::Index]
            .into_iter()
            .find(|t| name.ends_with(&format!(".{}", t.extension())))
        else {
            continue;
        };
        let bytes = std::fs::read(&path).unwrap();
        write_case(dir.path(), target, 0, &bytes);
        read_folder(dir.path());
        if name.starts_with("reject-") {
            let e = HfFolder::open_validated(dir.path())
                .and_then(|f| f.check_finite())
                .expect_err(&name);
            one_line(&e);
        }
        n += 1;
    }
    assert!(
        n > 0,
        "no regression inputs in {}",
        regressions_dir().display()
    );
}
