//! The C port (tools/c) against every test vector, and against the Rust decoder on corrupted
//! vectors: same error code and same message. Needs a C compiler: `cc`, or `$CC` if set.
//! A missing compiler fails the test (it is not skipped).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use athena_decode::Encoded;
use common::VectorFiles;

/// Compiles tools/c/*.c into `dir` with the flags the header requires; returns the binary.
fn build_c(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/c");
    let exe = dir.join("run_vectors");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .collect();
    sources.sort();
    assert!(sources.len() >= 2, "tools/c/*.c: {sources:?}");
    let output = Command::new(&cc)
        .args([
            "-std=c99",
            "-O2",
            "-ffp-contract=off",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-o",
        ])
        .arg(&exe)
        .args(&sources)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run the C compiler {cc:?} (install one; this test does not skip): {e}")
        });
    assert!(
        output.status.success(),
        "{cc} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    exe
}

fn run(exe: &Path, path: &Path) -> (i32, String) {
    let out = Command::new(exe)
        .arg(path)
        .output()
        .expect("running run_vectors");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn c_port_decodes_every_vector_bit_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = build_c(tmp.path());
    let (code, stdout) = run(&exe, &common::vectors_root());
    let vectors = common::all();
    for v in &vectors {
        assert!(
            stdout.lines().any(|l| l == format!("ok {}", v.name)),
            "{}:\n{stdout}",
            v.name
        );
    }
    assert_eq!(stdout.lines().count(), vectors.len(), "{stdout}");
    assert_eq!(code, 0, "{stdout}");
}

/// The line run_vectors must print for this vector, computed with the Rust decoder.
fn rust_verdict(v: &VectorFiles) -> String {
    match Encoded::new(v.params, v.parts()).and_then(|e| e.check()) {
        Ok(()) => format!("ok {}", v.name),
        Err(e) => format!("FAIL {}: {}: {}", v.name, e.code(), e),
    }
}

fn set_f16(bytes: &mut [u8], i: usize, bits: u16) {
    bytes[2 * i..2 * i + 2].copy_from_slice(&bits.to_le_bytes());
}

#[test]
fn c_port_and_rust_report_the_same_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = build_c(tmp.path());
    let all = common::all();
    let get = |name: &str| all.iter().find(|v| v.name == name).unwrap().clone();
    let i8v = get("d2_n16_i8_r3_wild"); // 9 x 18, d 2, n 16, tiles 4 x 8 (3 x 3), r 3
    let f16v = get("d3_n4_f16_full_rank_wild"); // 4 x 6, d 3, n 4, tiles 3 x 3, r 4
    let rotv = get("d3_n8_i8_r1_rot4_sign_padding"); // 4 x 12, d 3, n 8, r 1, B 4
    let plain32 = get("d4_n16_f16_r3_nondiv"); // 10 x 32, no rotation
    let rsv = get("d5_n32_i8_r2_rs_wild"); // 9 x 35, d 5, n 32, r 2, row scales
    assert!(rsv.params.row_scales && rsv.row_scales.len() == 18);

    type Corrupt = fn(&mut VectorFiles);
    let cases: Vec<(&str, VectorFiles, &str, Corrupt)> = vec![
        ("trunc_indices", i8v.clone(), "length_mismatch", |v| {
            v.indices.pop();
        }),
        ("long_codebook", i8v.clone(), "length_mismatch", |v| {
            v.codebook.push(0)
        }),
        ("trunc_scales", i8v.clone(), "length_mismatch", |v| {
            v.scales.truncate(v.scales.len() - 2);
        }),
        ("scales_on_f16", f16v.clone(), "length_mismatch", |v| {
            v.scales = vec![0; 4]
        }),
        ("no_lowrank_b", i8v.clone(), "length_mismatch", |v| {
            v.lowrank_b.clear()
        }),
        ("nan_codebook", f16v.clone(), "non_finite_codebook", |v| {
            set_f16(&mut v.codebook, 2 * 12 + 3 * 3 + 2, 0x7e00)
        }),
        ("inf_offset", i8v.clone(), "non_finite_scale", |v| {
            set_f16(&mut v.scales, (4 * 2 + 1) * 2, 0x7c00)
        }),
        ("nan_step", i8v.clone(), "non_finite_scale", |v| {
            set_f16(&mut v.scales, (8 * 2) * 2 + 1, 0xfe00)
        }),
        ("nan_lowrank_a", f16v.clone(), "non_finite_lowrank", |v| {
            set_f16(&mut v.lowrank_a, 3 * 4 + 1, 0x7c01)
        }),
        ("inf_lowrank_b", i8v.clone(), "non_finite_lowrank", |v| {
            set_f16(&mut v.lowrank_b, 2 * 18 + 17, 0xfc00)
        }),
        ("padding", f16v.clone(), "nonzero_padding", |v| {
            // 2 groups x 2 bits = 4 bits per row: the high nibble of row 3 is padding.
            v.indices[3] |= 0x80;
        }),
        ("no_signs", rotv.clone(), "length_mismatch", |v| {
            v.signs.clear()
        }),
        ("long_signs", rotv.clone(), "length_mismatch", |v| {
            v.signs.push(0)
        }),
        ("signs_unrotated", i8v.clone(), "length_mismatch", |v| {
            v.signs = vec![0; 3]
        }),
        (
            "rotation_without_signs",
            plain32.clone(),
            "length_mismatch",
            |v| v.params.rotation = 4,
        ),
        ("sign_padding", rotv.clone(), "nonzero_sign_padding", |v| {
            // M = 12: bits 4..8 of the last sign byte are padding.
            v.signs[1] |= 0x10;
        }),
        (
            "sign_padding_after_lowrank",
            rotv.clone(),
            "non_finite_lowrank",
            |v| {
                // The signs are checked last.
                v.signs[1] |= 0x80;
                set_f16(&mut v.lowrank_b, 11, 0x7c00);
            },
        ),
        ("trunc_row_scales", rsv.clone(), "length_mismatch", |v| {
            v.row_scales.truncate(16);
        }),
        ("long_row_scales", rsv.clone(), "length_mismatch", |v| {
            v.row_scales.extend([0, 0])
        }),
        ("row_scales_unscaled", i8v.clone(), "length_mismatch", |v| {
            // row_scales.bin present but row_scales=0.
            v.row_scales = vec![0; 18]
        }),
        (
            "row_scales_without_file",
            plain32.clone(),
            "length_mismatch",
            |v| v.params.row_scales = true,
        ),
        (
            "row_scales_after_signs",
            rotv.clone(),
            "length_mismatch",
            |v| {
                // Both signs and row scales missing: signs are checked first.
                v.signs.clear();
                v.params.row_scales = true;
            },
        ),
        ("inf_row_scale", rsv.clone(), "non_finite_row_scale", |v| {
            set_f16(&mut v.row_scales, 7, 0x7c00)
        }),
        (
            "nan_row_scale_0",
            rsv.clone(),
            "non_finite_row_scale",
            |v| {
                set_f16(&mut v.row_scales, 0, 0xfe00);
                set_f16(&mut v.row_scales, 8, 0xfc00);
            },
        ),
        (
            "row_scale_after_lowrank",
            rsv.clone(),
            "non_finite_lowrank",
            |v| {
                set_f16(&mut v.row_scales, 3, 0x7c00);
                set_f16(&mut v.lowrank_b, 35 + 4, 0x7e00);
            },
        ),
        (
            "row_scale_before_sign_padding",
            rotv.clone(),
            "non_finite_row_scale",
            |v| {
                v.params.row_scales = true;
                v.row_scales = [0x3c00u16, 0x0001, 0x8000, 0xfc01]
                    .iter()
                    .flat_map(|h| h.to_le_bytes())
                    .collect();
                v.signs[1] |= 0x10;
            },
        ),
        ("zero_rows", i8v.clone(), "invalid_param", |v| {
            v.params.rows = 0
        }),
        ("zero_cols", i8v.clone(), "invalid_param", |v| {
            v.params.cols = 0
        }),
        ("cols_below_d", i8v.clone(), "invalid_param", |v| {
            v.params.cols = 1
        }),
        ("zero_vector_dim", i8v.clone(), "invalid_param", |v| {
            v.params.vector_dim = 0
        }),
        ("vector_dim_9", i8v.clone(), "invalid_param", |v| {
            v.params.vector_dim = 9
        }),
        ("centroids_12", i8v.clone(), "invalid_param", |v| {
            v.params.centroids = 12
        }),
        ("centroids_1", i8v.clone(), "invalid_param", |v| {
            v.params.centroids = 1
        }),
        ("centroids_2_17", i8v.clone(), "invalid_param", |v| {
            v.params.centroids = 1 << 17
        }),
        ("tile_rows_big", i8v.clone(), "invalid_param", |v| {
            v.params.tile_rows = 10
        }),
        ("tile_cols_odd", i8v.clone(), "invalid_param", |v| {
            v.params.tile_cols = 3
        }),
        ("tile_cols_big", i8v.clone(), "invalid_param", |v| {
            v.params.tile_cols = 20
        }),
        ("rank_big", f16v.clone(), "invalid_param", |v| {
            v.params.rank = 5
        }),
        ("rotation_1", rotv.clone(), "invalid_param", |v| {
            v.params.rotation = 1
        }),
        ("rotation_2", rotv.clone(), "invalid_param", |v| {
            v.params.rotation = 2
        }),
        ("rotation_8", plain32.clone(), "invalid_param", |v| {
            v.params.rotation = 8
        }),
        ("rotation_12", rotv.clone(), "invalid_param", |v| {
            v.params.rotation = 12
        }),
        ("rotation_nondiv", rotv.clone(), "invalid_param", |v| {
            v.params.rotation = 16
        }),
        ("rotation_16384", plain32.clone(), "invalid_param", |v| {
            v.params.cols = 16384;
            v.params.rotation = 16384;
        }),
        ("huge_rows_cols", i8v.clone(), "overflow", |v| {
            v.params.rows = 1 << 40;
            v.params.cols = 1 << 40;
        }),
        ("huge_output_bytes", i8v.clone(), "overflow", |v| {
            v.params.rows = 1 << 31;
            v.params.cols = 1 << 31;
        }),
        ("huge_codebooks", i8v.clone(), "overflow", |v| {
            v.params.rows = 1 << 24;
            v.params.cols = 1 << 24;
            v.params.tile_rows = 1;
            v.params.tile_cols = 2;
            v.params.centroids = 65536;
            v.params.vector_dim = 2;
        }),
        ("max_u64_dims", i8v.clone(), "overflow", |v| {
            v.params.rows = u64::MAX;
            v.params.cols = u64::MAX - 1; // a multiple of d = 2
            v.params.tile_rows = u64::MAX;
            v.params.tile_cols = u64::MAX - 1;
        }),
    ];

    let root = tmp.path().join("bad");
    for (name, mut v, code, corrupt) in cases {
        v.name = name.to_string();
        corrupt(&mut v);
        let want = rust_verdict(&v);
        assert!(
            want.starts_with(&format!("FAIL {name}: {code}: ")),
            "Rust said: {want}"
        );
        let dir = v.write(&root);
        let (status, stdout) = run(&exe, &dir);
        println!("{want}");
        assert_eq!(stdout.trim_end(), want, "C and Rust disagree on {name}");
        assert_eq!(status, 1, "{name}");
    }
}

#[test]
fn c_f16_conversion_matches_rust_on_all_65536_values() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = build_c(tmp.path());
    let file = tmp.path().join("f16.f32");
    let status = Command::new(&exe)
        .arg("--dump-f16")
        .arg(&file)
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(bytes.len(), 65536 * 4);
    for (h, c) in bytes.chunks_exact(4).enumerate() {
        let c_bits = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        let rust_bits = athena_decode::f16_to_f32(h as u16).to_bits();
        assert_eq!(c_bits, rust_bits, "f16 {h:#06x}");
    }
}
