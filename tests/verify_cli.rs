//! athena-verify on a file built from the test vectors: snapshots of the table and JSON, and one
//! test per corruption class asserting the specific one-line error and exit status 1.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use athena::container::athena::EncodedWeight;
use athena::container::gguf::{GgmlType, GgufFile, Value};
use athena::container::model_file::ModelFileWriter;

const VECTORS: [&str; 4] = [
    "spec_example",
    "d2_n256_i8_paper_layout",
    "d4_n16_f16_r3_nondiv",
    "d2_n4096_i8_r8_64x192",
];

/// A valid Athena file: four test-vector weights and two plain tensors.
fn build_fixture(dir: &Path) -> PathBuf {
    let path = dir.join("fixture.gguf");
    let mut w = ModelFileWriter::create(&path).unwrap();
    w.add_metadata("general.architecture", "llama".to_string());
    let embd: Vec<u8> = (0..8 * 4)
        .flat_map(|k| (k as f32 * 0.25).to_le_bytes())
        .collect();
    w.add_tensor("token_embd.weight", &[8, 4], GgmlType::F32, &embd)
        .unwrap();
    for (k, name) in VECTORS.iter().enumerate() {
        let v = common::load(&common::vectors_root().join(name));
        w.add_weight(&EncodedWeight::from_parts(
            &format!("blk.{k}.ffn_up.weight"),
            v.params,
            v.parts(),
        ))
        .unwrap();
    }
    let norm: Vec<u8> = (0..8u16)
        .flat_map(|k| half::f16::from_f32(k as f32).to_bits().to_le_bytes())
        .collect();
    w.add_tensor("output_norm.weight", &[8], GgmlType::F16, &norm)
        .unwrap();
    w.finish().unwrap();
    path
}

fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_athena-verify"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn table_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    build_fixture(dir.path());
    let (code, stdout, stderr) = run(dir.path(), &["fixture.gguf"]);
    assert_eq!(code, 0, "{stderr}");
    insta::assert_snapshot!(stdout);
}

#[test]
fn json_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    build_fixture(dir.path());
    let (code, stdout, stderr) = run(dir.path(), &["fixture.gguf", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    insta::assert_json_snapshot!(json);
}

fn expect_invalid(dir: &Path, file: &str, needle: &str) {
    let (code, stdout, stderr) = run(dir, &[file]);
    assert_eq!(code, 1, "expected exit 1 for {needle}; stdout {stdout}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in {stderr:?}");
    assert!(stderr.contains(file), "names the file: {stderr}");
}

#[test]
fn each_corruption_gets_its_specific_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = build_fixture(dir.path());
    let bytes = std::fs::read(&good).unwrap();
    let file = GgufFile::open(&good).unwrap();
    let data_at = |name: &str| {
        let t = file.tensor(name).unwrap();
        (file.data_offset + t.offset) as usize
    };

    // Truncated file.
    std::fs::write(
        dir.path().join("truncated.gguf"),
        &bytes[..bytes.len() - 100],
    )
    .unwrap();
    expect_invalid(dir.path(), "truncated.gguf", "data ends at byte");

    // A NaN in an f16 codebook (0x7e00), found before the checksum.
    let mut nan = bytes.clone();
    let at = data_at("blk.2.ffn_up.weight.athena_cb");
    nan[at..at + 2].copy_from_slice(&0x7e00u16.to_le_bytes());
    std::fs::write(dir.path().join("nan.gguf"), &nan).unwrap();
    expect_invalid(dir.path(), "nan.gguf", "blk.2.ffn_up.weight");

    // A NaN in an int8 codebook's step.
    let mut nan_scale = bytes.clone();
    let at = data_at("blk.1.ffn_up.weight.athena_cbs") + 2;
    nan_scale[at..at + 2].copy_from_slice(&0x7e00u16.to_le_bytes());
    std::fs::write(dir.path().join("nan-scale.gguf"), &nan_scale).unwrap();
    expect_invalid(dir.path(), "nan-scale.gguf", "blk.1.ffn_up.weight");

    // A flipped byte in a plain tensor: only the checksum catches it.
    let mut flipped = bytes.clone();
    flipped[data_at("token_embd.weight") + 5] ^= 0x40;
    std::fs::write(dir.path().join("flipped.gguf"), &flipped).unwrap();
    expect_invalid(
        dir.path(),
        "flipped.gguf",
        "tensor 'token_embd.weight': sha256 mismatch",
    );

    // Metadata and tensor edits, written back through our (valid) GGUF writer.
    type Edit = Box<dyn FnOnce(&mut Vec<(String, Value)>, &mut common::GgufTensors)>;
    let cases: Vec<(&str, &str, Edit)> = vec![
        (
            "wrong-key-type.gguf",
            "key 'athena.blk.0.ffn_up.weight.vector_dim': expected u32",
            Box::new(|m, _| {
                common::set_meta(m, "athena.blk.0.ffn_up.weight.vector_dim", Value::U64(2))
            }),
        ),
        (
            "bad-version.gguf",
            "version 7 is not supported",
            Box::new(|m, _| common::set_meta(m, "athena.encoding_version", Value::U32(7))),
        ),
        (
            "rotation-in-version-1.gguf",
            "not allowed in encoding version 1",
            Box::new(|m, _| m.push(("athena.blk.0.ffn_up.weight.rotation".into(), Value::U32(4)))),
        ),
        (
            "row-scales-in-version-1.gguf",
            "not allowed in encoding version 1 (row scales need version 3)",
            Box::new(|m, _| {
                m.push((
                    "athena.blk.0.ffn_up.weight.row_scales".into(),
                    Value::Bool(true),
                ))
            }),
        ),
        (
            "row-scales-not-bool.gguf",
            "key 'athena.blk.0.ffn_up.weight.row_scales': expected bool, found u32",
            Box::new(|m, _| {
                common::set_meta(m, "athena.encoding_version", Value::U32(3));
                m.push((
                    "athena.blk.0.ffn_up.weight.row_scales".into(),
                    Value::U32(1),
                ));
            }),
        ),
        (
            "row-scales-missing.gguf",
            "component tensor 'blk.0.ffn_up.weight.athena_rs' is missing",
            Box::new(|m, _| {
                common::set_meta(m, "athena.encoding_version", Value::U32(3));
                m.push((
                    "athena.blk.0.ffn_up.weight.row_scales".into(),
                    Value::Bool(true),
                ));
            }),
        ),
        (
            "bad-codebook-type.gguf",
            "unknown codebook type 'int4'",
            Box::new(|m, _| {
                common::set_meta(
                    m,
                    "athena.blk.1.ffn_up.weight.codebook_type",
                    Value::String("int4".into()),
                )
            }),
        ),
        (
            "bad-param.gguf",
            "weight 'blk.1.ffn_up.weight'",
            Box::new(|m, _| {
                common::set_meta(m, "athena.blk.1.ffn_up.weight.centroids", Value::U32(100))
            }),
        ),
        (
            "missing-component.gguf",
            "component tensor 'blk.3.ffn_up.weight.athena_lrb' is missing",
            Box::new(|m, t| {
                t.retain(|x| x.0 != "blk.3.ffn_up.weight.athena_lrb");
                m.retain(|x| x.0 != "athena.sha256.blk.3.ffn_up.weight.athena_lrb");
            }),
        ),
        (
            "wrong-shape.gguf",
            "the spec requires",
            Box::new(|_, t| {
                let x = t
                    .iter_mut()
                    .find(|x| x.0 == "blk.1.ffn_up.weight.athena_idx")
                    .unwrap();
                x.1 = vec![x.1[0] * 2, x.1[1] / 2];
            }),
        ),
        (
            "missing-checksum.gguf",
            "no checksum key 'athena.sha256.output_norm.weight'",
            Box::new(|m, _| m.retain(|x| x.0 != "athena.sha256.output_norm.weight")),
        ),
        (
            "stray-component.gguf",
            "Athena component tensor of no weight",
            Box::new(|m, _| {
                let Value::Array(athena::container::gguf::Array::String(names)) =
                    &mut m.iter_mut().find(|x| x.0 == "athena.tensors").unwrap().1
                else {
                    panic!()
                };
                names.retain(|n| n != "blk.0.ffn_up.weight");
            }),
        ),
    ];
    for (name, needle, edit) in cases {
        common::rewrite(&good, &dir.path().join(name), edit);
        expect_invalid(dir.path(), name, needle);
    }
}

/// The regression fixtures of issue 33 (fixtures/verify-regressions/, README there): standard
/// types with NaN or infinity, the spec rules on `athena.tensors` order and orphan checksum
/// keys, and names from the file that must be printed escaped.
fn regressions_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/verify-regressions")
}

/// A plain GGUF file of one tensor (checksummed, so only the values are wrong).
fn one_tensor(path: &Path, name: &str, dims: &[u64], ty: GgmlType, data: &[u8]) {
    let mut w = ModelFileWriter::create(path).unwrap();
    w.add_metadata("general.architecture", "llama".to_string());
    w.add_tensor(name, dims, ty, data).unwrap();
    w.finish().unwrap();
}

fn halves(v: &[u16]) -> Vec<u8> {
    v.iter().flat_map(|h| h.to_le_bytes()).collect()
}

/// Writes the fixtures (run with `cargo test --test verify_cli -- --ignored` after a change
/// to their recipe; the committed bytes are what the tests read).
#[test]
#[ignore]
fn regenerate_regression_fixtures() {
    let dir = regressions_dir();
    std::fs::create_dir_all(&dir).unwrap();
    // Two Q8_0 blocks (scale 1.0, quants 1..32), the second's scale +infinity.
    let mut q8 = Vec::new();
    for scale in [0x3c00u16, 0x7c00] {
        q8.extend(scale.to_le_bytes());
        q8.extend(1..=32u8);
    }
    one_tensor(
        &dir.join("q8_0-inf-scale.gguf"),
        "blk.0.ffn_down.weight",
        &[32, 2],
        GgmlType::Q8_0,
        &q8,
    );
    // f16 NaN (0x7e00) and -infinity (0xfc00) among finite values.
    one_tensor(
        &dir.join("f16-nan.gguf"),
        "output_norm.weight",
        &[6],
        GgmlType::F16,
        &halves(&[0x3c00, 0x7e00, 0x4000, 0xfc00, 0, 0x8000]),
    );
    // bf16 +infinity (0x7f80).
    one_tensor(
        &dir.join("bf16-inf.gguf"),
        "token_embd.weight",
        &[2, 2],
        GgmlType::BF16,
        &halves(&[0x3f80, 0x3f80, 0x3f80, 0x7f80]),
    );
    let f32s: Vec<u8> = [0.5f32, 1.0, f32::NAN]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    one_tensor(
        &dir.join("f32-nan.gguf"),
        "blk.0.attn_norm.weight",
        &[3],
        GgmlType::F32,
        &f32s,
    );

    // Two Athena weights, listed in the opposite of their file order.
    let tmp = tempfile::tempdir().unwrap();
    let two = tmp.path().join("two.gguf");
    let mut w = ModelFileWriter::create(&two).unwrap();
    w.add_metadata("general.architecture", "llama".to_string());
    for (k, name) in ["spec_example", "d2_n4_f16_nondiv"].iter().enumerate() {
        let v = common::load(&common::vectors_root().join(name));
        w.add_weight(&EncodedWeight::from_parts(
            &format!("blk.{k}.ffn_up.weight"),
            v.params,
            v.parts(),
        ))
        .unwrap();
    }
    w.finish().unwrap();
    common::rewrite(
        &two,
        &dir.join("athena-tensors-out-of-order.gguf"),
        |m, _| {
            let Value::Array(athena::container::gguf::Array::String(names)) =
                &mut m.iter_mut().find(|x| x.0 == "athena.tensors").unwrap().1
            else {
                panic!()
            };
            names.reverse();
        },
    );
    // A checksum key for a tensor the file does not have.
    common::rewrite(&two, &dir.join("sha256-orphan.gguf"), |m, _| {
        m.push((
            "athena.sha256.blk.9.ffn_up.weight".into(),
            Value::String("0".repeat(64)),
        ))
    });
    // ... whose name is 100 000 bytes of terminal escapes and newlines.
    common::rewrite(&two, &dir.join("long-orphan-key.gguf"), |m, _| {
        m.push((
            format!("athena.sha256.{}", "\u{1b}[2J\n".repeat(20_000)),
            Value::String("0".repeat(64)),
        ))
    });
    // A valid file whose tensor and key names hold a terminal escape, a newline and a
    // right-to-left override.
    one_tensor(
        &dir.join("escaped-names.gguf"),
        "evil\u{1b}[31m\nname\u{202e}",
        &[2],
        GgmlType::F32,
        &f32s[..8],
    );
    // ... and the same tensor with a wrong checksum, so that an error names it.
    common::rewrite(
        &dir.join("escaped-names.gguf"),
        &dir.join("escaped-names-bad-checksum.gguf"),
        |m, _| {
            let key = "athena.sha256.evil\u{1b}[31m\nname\u{202e}";
            common::set_meta(m, key, Value::String("f".repeat(64)));
        },
    );
}

#[test]
fn regression_fixtures_get_their_specific_error() {
    let dir = regressions_dir();
    let cases = [
        (
            "q8_0-inf-scale.gguf",
            "tensor 'blk.0.ffn_down.weight': 1 non-finite block scale (NaN or infinity; the first in block 1)",
        ),
        (
            "f16-nan.gguf",
            "tensor 'output_norm.weight': 2 non-finite values (NaN or infinity; the first at element 1)",
        ),
        (
            "bf16-inf.gguf",
            "tensor 'token_embd.weight': 1 non-finite value (NaN or infinity; the first at element 3)",
        ),
        (
            "f32-nan.gguf",
            "tensor 'blk.0.attn_norm.weight': 1 non-finite value (NaN or infinity; the first at element 2)",
        ),
        (
            "athena-tensors-out-of-order.gguf",
            "key 'athena.tensors': entry 0 is 'blk.1.ffn_up.weight', but the file's index tensor \
             number 0 is 'blk.0.ffn_up.weight.athena_idx'",
        ),
        (
            "sha256-orphan.gguf",
            "key 'athena.sha256.blk.9.ffn_up.weight': names no tensor of the file",
        ),
        (
            "escaped-names-bad-checksum.gguf",
            "tensor 'evil\\u{1b}[31m\\nname\\u{202e}': sha256 mismatch",
        ),
    ];
    for (file, needle) in cases {
        expect_invalid(&dir, file, needle);
    }
    // With --no-checksums the values are still checked.
    let (code, _, stderr) = run(&dir, &["q8_0-inf-scale.gguf", "--no-checksums"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("non-finite block scale"), "{stderr}");

    // A 100 000-byte key of escapes: one short line, nothing raw.
    let (code, _, stderr) = run(&dir, &["long-orphan-key.gguf"]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.len() < 700 && !stderr.contains('\u{1b}'), "{stderr}");
    assert!(
        stderr.contains("\\u{1b}[2J\\n") && stderr.contains("bytes in all)': names no tensor"),
        "{stderr}"
    );
}

#[test]
fn names_from_the_file_are_printed_escaped() {
    let dir = regressions_dir();
    let (code, stdout, stderr) = run(&dir, &["escaped-names.gguf"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        !stdout.contains('\u{1b}') && !stdout.contains('\u{202e}'),
        "{stdout}"
    );
    assert!(
        stdout.contains("evil\\u{1b}[31m\\nname\\u{202e}  F32"),
        "{stdout}"
    );
    // The JSON report escapes by itself and keeps the name whole.
    let (code, stdout, _) = run(&dir, &["escaped-names.gguf", "--json"]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["tensors"][0]["name"], "evil\u{1b}[31m\nname\u{202e}");
}

#[test]
fn a_directory_or_a_special_file_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("model.gguf")).unwrap();
    let (code, _, stderr) = run(dir.path(), &["model.gguf"]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        stderr.trim(),
        "athena-verify: invalid: opening 'model.gguf': is a directory"
    );
    let (code, _, stderr) = run(dir.path(), &["/dev/null"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");
    let (code, _, stderr) = run(dir.path(), &["missing.gguf"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("opening 'missing.gguf': No such file"),
        "{stderr}"
    );
}
