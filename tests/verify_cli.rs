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
