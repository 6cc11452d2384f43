//! encode -> write -> read -> decode reproduces the quantizer's own dequantized values exactly.

mod common;

use athena::container::athena::{encode, stored_weights, verify_checksum};
use athena::container::gguf::{GgmlType, GgufFile, Value};
use athena::container::model_file::ModelFileWriter;
use athena::quantizer::hessian::HessianAccumulator;
use athena::quantizer::rng::SplitMix64;
use athena::quantizer::{quantize_linear, CodebookKind, VqConfig};

fn layer(rows: usize, cols: usize, seed: u64) -> (Vec<f32>, faer::Mat<f64>) {
    let mut rng = SplitMix64::new(seed);
    let w = (0..rows * cols).map(|_| rng.unit() as f32 - 0.5).collect();
    let x: Vec<f32> = (0..cols * 4 * cols)
        .map(|_| rng.unit() as f32 - 0.5)
        .collect();
    let mut acc = HessianAccumulator::new(cols);
    acc.add(&x, 4 * cols);
    (w, acc.finish())
}

#[test]
fn round_trip_is_bit_exact_for_every_layout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rt.gguf");
    let configs = [
        (
            24,
            36,
            VqConfig {
                rank: 0,
                ..VqConfig::new(1, 8, 24, 1)
            },
        ),
        (
            24,
            36,
            VqConfig {
                rank: 3,
                ..VqConfig::new(2, 16, 7, 10)
            },
        ),
        (
            24,
            36,
            VqConfig {
                codebook: CodebookKind::F16,
                ..VqConfig::new(3, 32, 24, 36)
            },
        ),
        (
            20,
            32,
            VqConfig {
                rank: 2,
                codebook: CodebookKind::F16,
                ..VqConfig::new(4, 64, 9, 12)
            },
        ),
        // Column rotations (encoding version 2): with a low-rank term, and several blocks.
        (
            24,
            64,
            VqConfig {
                rank: 3,
                rotation: 16,
                ..VqConfig::new(2, 16, 7, 10)
            },
        ),
        (
            20,
            36,
            VqConfig {
                codebook: CodebookKind::F16,
                rotation: 4,
                ..VqConfig::new(3, 32, 20, 36)
            },
        ),
        // Row scales (encoding version 3): rotated with a low-rank term, and plain f16.
        (
            24,
            64,
            VqConfig {
                rank: 3,
                rotation: 16,
                row_scales: true,
                ..VqConfig::new(2, 16, 7, 10)
            },
        ),
        (
            20,
            36,
            VqConfig {
                codebook: CodebookKind::F16,
                row_scales: true,
                ..VqConfig::new(3, 32, 20, 36)
            },
        ),
        // A partial last group (encoding version 4: d does not divide the columns): one tile
        // of all columns with a low-rank term; tiles of whole groups whose last one ends in
        // the partial group, rotated with row scales; f16 codebooks.
        (
            20,
            38,
            VqConfig {
                rank: 2,
                ..VqConfig::new(3, 16, 7, 38)
            },
        ),
        (
            24,
            64,
            VqConfig {
                rotation: 16,
                row_scales: true,
                ..VqConfig::new(3, 32, 8, 30)
            },
        ),
        (
            16,
            22,
            VqConfig {
                codebook: CodebookKind::F16,
                ..VqConfig::new(4, 16, 16, 22)
            },
        ),
    ];
    let mut writer = ModelFileWriter::create(&path).unwrap();
    writer.add_metadata("general.architecture", "llama".to_string());
    writer
        .add_tensor("plain.weight", &[4, 2], GgmlType::F32, &[0u8; 32])
        .unwrap();
    let mut expected = Vec::new();
    for (k, (rows, cols, cfg)) in configs.iter().enumerate() {
        let (w, h) = layer(*rows, *cols, k as u64);
        let q = quantize_linear(&w, *rows, *cols, &h, cfg, 5).unwrap();
        let name = format!("blk.{k}.attn_q.weight");
        writer.add_weight(&encode(&name, &q)).unwrap();
        expected.push((name, q.dequantized));
    }
    writer.finish().unwrap();
    assert!(!dir.path().read_dir().unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains(".spill-")));

    let file = GgufFile::open(&path).unwrap();
    assert_eq!(file.get("athena.encoding_version"), Some(&Value::U32(4)));
    for t in &file.tensors {
        verify_checksum(&file, t).unwrap();
    }
    let weights = stored_weights(&file).unwrap();
    assert_eq!(weights.len(), expected.len());
    for (w, (name, want)) in weights.iter().zip(&expected) {
        assert_eq!(&w.name, name);
        w.encoded.check().unwrap();
        let got = w.encoded.decode().unwrap();
        assert_eq!(got.len(), want.len());
        for (j, (a, b)) in got.iter().zip(want).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{name}: element {j}: decoded {a} vs quantizer {b}"
            );
        }
    }
}

/// A file that claims encoding version 3 but holds a weight with a partial last group is
/// rejected with a message naming the weight and the version it needs.
#[test]
fn partial_groups_need_version_4() {
    let dir = tempfile::tempdir().unwrap();
    let (good, bad) = (dir.path().join("v4.gguf"), dir.path().join("v3.gguf"));
    let (w, h) = layer(8, 10, 1);
    let q = quantize_linear(&w, 8, 10, &h, &VqConfig::new(3, 8, 8, 10), 1).unwrap();
    let mut writer = ModelFileWriter::create(&good).unwrap();
    writer
        .add_weight(&encode("blk.0.attn_q.weight", &q))
        .unwrap();
    writer.finish().unwrap();
    assert_eq!(
        stored_weights(&GgufFile::open(&good).unwrap())
            .unwrap()
            .len(),
        1
    );
    common::rewrite(&good, &bad, |metadata, _| {
        common::set_meta(metadata, "athena.encoding_version", Value::U32(3))
    });
    let err = stored_weights(&GgufFile::open(&bad).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("blk.0.attn_q.weight") && err.contains("needs encoding version 4"),
        "{err}"
    );
}
