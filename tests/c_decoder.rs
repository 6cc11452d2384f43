//! The C port (tools/c) against every test vector, and against the Rust decoder on corrupted
//! vectors: same error code and same message; and its fused product athena_matvec against the
//! Rust decoder's weight times the same input, within the bound of spec section 10. Needs a C
//! compiler: `cc`, or `$CC` if set.
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

// ---- athena_matvec (spec section 10) ------------------------------------------------------

/// The input `run_vectors --matvec` multiplies a vector by (tools/c/run_vectors.c): x_j =
/// (k_j - 2^23) / 2^23 with k_j the top 24 bits of an LCG state seeded with the FNV-1a hash of
/// the vector's name.
fn matvec_input(name: &str, len: usize) -> Vec<f32> {
    let mut s: u64 = 14695981039346656037;
    for b in name.bytes() {
        s = (s ^ u64::from(b)).wrapping_mul(1099511628211);
    }
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as i32 - (1 << 23)) as f32 / (1 << 23) as f32
        })
        .collect()
}

/// Runs `run_vectors --matvec path`: vector name -> y (binary32) per "matvec" line; panics on
/// any other line or a failing exit status.
fn run_matvec(exe: &Path, path: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    let out = Command::new(exe)
        .arg("--matvec")
        .arg(path)
        .output()
        .expect("running run_vectors --matvec");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "run_vectors --matvec:\n{stdout}");
    stdout
        .lines()
        .map(|line| {
            let mut words = line.split(' ');
            assert_eq!(words.next(), Some("matvec"), "{line}");
            let name = words.next().expect("name").to_string();
            let y = words
                .map(|h| f32::from_bits(u32::from_str_radix(h, 16).expect("hex bits")))
                .collect();
            (name, y)
        })
        .collect()
}

/// The Rust decoder's Ŵ of a vector (row-major N x M), optionally without the rotation (Ŵ',
/// the result of steps 1-4).
fn rust_decode(v: &VectorFiles, rotated: bool) -> Vec<f32> {
    let mut v = v.clone();
    if !rotated {
        v.params.rotation = 0;
        v.signs.clear();
    }
    let e = Encoded::new(v.params, v.parts()).unwrap();
    e.check().unwrap();
    e.decode().unwrap()
}

/// Clears the sign bit of every little-endian f16 of `bytes`.
fn abs_f16(bytes: &mut [u8]) {
    for pair in bytes.chunks_exact_mut(2) {
        pair[1] &= 0x7f;
    }
}

/// Per row, the magnitude m_i of spec section 10: sum_j P_ij X_j with P the unrotated weight
/// decoded from the absolute values of every f16 (offsets, steps or f16 entries, row scales, A,
/// B): |s_i| (|off| + |step| u) + sum_k |A_ik| |B_kj| (or |s_i| |f16 entry| + ...), and X = |Q|^T
/// |x|: the sum of |x| over the column's rotation block divided by sqrt(B) (|x_j| without a
/// rotation).
fn matvec_magnitudes(v: &VectorFiles, x: &[f32]) -> Vec<f64> {
    let mut a = v.clone();
    if a.params.codebook == athena_decode::CodebookType::F16 {
        abs_f16(&mut a.codebook);
    }
    abs_f16(&mut a.scales);
    abs_f16(&mut a.lowrank_a);
    abs_f16(&mut a.lowrank_b);
    abs_f16(&mut a.row_scales);
    let p = rust_decode(&a, false);
    let block = (a.params.rotation as usize).max(1);
    let big_x: Vec<f64> = x
        .chunks(block)
        .flat_map(|c| {
            let sum: f64 = c.iter().map(|&t| f64::from(t).abs()).sum();
            std::iter::repeat_n(sum / (block as f64).sqrt(), c.len())
        })
        .collect();
    p.chunks(x.len())
        .map(|row| {
            row.iter()
                .zip(&big_x)
                .map(|(&w, &s)| f64::from(w) * s)
                .sum()
        })
        .collect()
}

/// W x in f64, W row-major with x.len() columns.
fn product(w: &[f32], x: &[f64]) -> Vec<f64> {
    w.chunks(x.len())
        .map(|row| row.iter().zip(x).map(|(&a, &b)| f64::from(a) * b).sum())
        .collect()
}

/// The error bound of spec section 10: |y_i - (Ŵ x)_i| <= 1e-5 m_i + 1e-30.
fn matvec_tolerance(m: &[f64]) -> Vec<f64> {
    m.iter().map(|&m| 1e-5 * m + 1e-30).collect()
}

/// Whether |a - b| <= tol (false for NaN).
fn within(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

/// The rows where `y` is outside the bound around `reference`.
fn violations(y: &[f64], reference: &[f64], tol: &[f64]) -> Vec<usize> {
    assert_eq!(y.len(), reference.len());
    (0..y.len())
        .filter(|&i| !within(y[i], reference[i], tol[i]))
        .collect()
}

/// Per block of `block` values: signs, Walsh-Hadamard transform, 1/sqrt(block), in f64, with
/// the signs applied before the transform (Q^T x, the right order) or after it (a wrong one).
fn rotate_input(x: &[f32], block: usize, signs: &[u8], signs_first: bool) -> Vec<f64> {
    let sign = |j: usize, t: f64| {
        if (signs[j / 8] >> (j % 8)) & 1 == 1 {
            -t
        } else {
            t
        }
    };
    let mut v: Vec<f64> = x.iter().map(|&t| f64::from(t)).collect();
    if signs_first {
        v = v.iter().enumerate().map(|(j, &t)| sign(j, t)).collect();
    }
    for chunk in v.chunks_mut(block) {
        let mut h = 1;
        while h < block {
            for pair in chunk.chunks_mut(2 * h) {
                let (lo, hi) = pair.split_at_mut(h);
                for (a, b) in lo.iter_mut().zip(hi) {
                    (*a, *b) = (*a + *b, *a - *b);
                }
            }
            h *= 2;
        }
        for t in chunk.iter_mut() {
            *t /= (block as f64).sqrt();
        }
    }
    if !signs_first {
        v = v.iter().enumerate().map(|(j, &t)| sign(j, t)).collect();
    }
    v
}

#[test]
fn c_matvec_matches_rust_decoded_weight_times_x() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = build_c(tmp.path());
    let ys = run_matvec(&exe, &common::vectors_root());
    let vectors = common::all();
    assert_eq!(ys.len(), vectors.len());
    let mut worst = 0f64;
    let mut rotated = 0;
    for v in &vectors {
        let (rows, cols) = (v.params.rows as usize, v.params.cols as usize);
        let x = matvec_input(&v.name, cols);
        let x64: Vec<f64> = x.iter().map(|&t| f64::from(t)).collect();
        let w = rust_decode(v, true);
        let reference = product(&w, &x64);
        let m = matvec_magnitudes(v, &x);
        let tol = matvec_tolerance(&m);
        let y: Vec<f64> = ys[&v.name].iter().map(|&t| f64::from(t)).collect();
        assert_eq!(y.len(), rows, "{}", v.name);
        let bad = violations(&y, &reference, &tol);
        assert!(
            bad.is_empty(),
            "{}: rows {bad:?} outside the bound: C {:?}, Rust {:?}, tolerance {:?}",
            v.name,
            bad.iter().map(|&i| y[i]).collect::<Vec<_>>(),
            bad.iter().map(|&i| reference[i]).collect::<Vec<_>>(),
            bad.iter().map(|&i| tol[i]).collect::<Vec<_>>(),
        );
        for i in 0..rows {
            // Every term is bounded by m_i: the bound is relative to the right magnitude.
            let terms: f64 = (0..cols)
                .map(|j| (f64::from(w[i * cols + j]) * x64[j]).abs())
                .sum();
            assert!(terms <= m[i] * (1.0 + 1e-5) + 1e-30, "{} row {i}", v.name);
            if m[i] > 0.0 {
                worst = worst.max((y[i] - reference[i]).abs() / m[i]);
            }
        }

        // The bound is tight enough to catch a wrong result: flipping the sign of the one
        // input with the largest contribution to a row moves that row out of it.
        let caught = (0..rows).any(|i| {
            let row = &w[i * cols..(i + 1) * cols];
            let j = (0..cols)
                .max_by(|&a, &b| {
                    let ta = (f64::from(row[a]) * x64[a]).abs();
                    let tb = (f64::from(row[b]) * x64[b]).abs();
                    ta.total_cmp(&tb)
                })
                .unwrap();
            let wrong = reference[i] - 2.0 * f64::from(row[j]) * x64[j];
            !within(wrong, reference[i], tol[i])
        });
        assert!(caught, "{}: one flipped input would pass the bound", v.name);

        // And a product that skips the rotation, or applies its signs after the transform
        // instead of before, is caught on every rotated vector.
        if v.params.rotation > 0 {
            rotated += 1;
            let unrotated = rust_decode(v, false);
            let block = v.params.rotation as usize;
            let right = product(&unrotated, &rotate_input(&x, block, &v.signs, true));
            assert!(
                violations(&right, &reference, &tol).is_empty(),
                "{}",
                v.name
            );
            for wrong in [
                product(&unrotated, &x64),
                product(&unrotated, &rotate_input(&x, block, &v.signs, false)),
            ] {
                assert!(
                    !violations(&wrong, &reference, &tol).is_empty(),
                    "{}: a wrong rotation passes the bound",
                    v.name
                );
            }
        }
    }
    assert!(rotated >= 10, "{rotated} rotated vectors");
    println!("largest |C - Rust| / m_i over all rows: {worst:.3e} (bound 1e-5)");
}

#[test]
fn c_matvec_of_a_changed_code_is_caught() {
    // Each vector with the lowest bit of row 0's first index flipped (another valid index):
    // wherever that moves (Ŵ x) out of the bound in the Rust decoder, the C matvec of the
    // changed vector must fail the comparison against the original.
    let tmp = tempfile::tempdir().unwrap();
    let exe = build_c(tmp.path());
    let root = tmp.path().join("changed");
    let vectors = common::all();
    for v in &vectors {
        let mut c = v.clone();
        c.indices[0] ^= 1;
        c.write(&root);
    }
    let ys = run_matvec(&exe, &root);
    let mut caught = 0;
    for v in &vectors {
        let cols = v.params.cols as usize;
        let x = matvec_input(&v.name, cols);
        let x64: Vec<f64> = x.iter().map(|&t| f64::from(t)).collect();
        let reference = product(&rust_decode(v, true), &x64);
        let tol = matvec_tolerance(&matvec_magnitudes(v, &x));
        let mut c = v.clone();
        c.indices[0] ^= 1;
        let changed = product(&rust_decode(&c, true), &x64);
        let y: Vec<f64> = ys[&v.name].iter().map(|&t| f64::from(t)).collect();
        if !violations(&changed, &reference, &tol).is_empty() {
            assert!(
                !violations(&y, &reference, &tol).is_empty(),
                "{}: the C product of a changed code passes",
                v.name
            );
            caught += 1;
        }
    }
    println!("{caught} of {} changed codes caught", vectors.len());
    assert!(
        caught * 4 >= vectors.len() * 3,
        "only {caught} of {} changed codes move the product",
        vectors.len()
    );
}

/// The runtime's kernels (athena-runtime, SIMD where the CPU has it) and the C port's
/// `athena_matvec` on every vector with the same input: both within the section-10 bound of the
/// decoded weight times x, so an edge runtime that copies the C reference computes what
/// athena-run computes.
#[test]
fn runtime_matvec_matches_the_c_port_on_every_vector() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = build_c(tmp.path());
    let ys = run_matvec(&exe, &common::vectors_root());
    for v in &common::all() {
        let cols = v.params.cols as usize;
        let x = matvec_input(&v.name, cols);
        let x64: Vec<f64> = x.iter().map(|&t| f64::from(t)).collect();
        let reference = product(&rust_decode(v, true), &x64);
        let tol = matvec_tolerance(&matvec_magnitudes(v, &x));
        let encoded = Encoded::new(v.params, v.parts()).unwrap();
        let m = athena_runtime::matrix::Matrix::Athena(athena_runtime::matrix::AthenaMatrix::new(
            &encoded,
        ));
        let mut y = vec![0f32; v.params.rows as usize];
        m.matvec(&x, &mut y);
        let runtime: Vec<f64> = y.iter().map(|&t| f64::from(t)).collect();
        let c: Vec<f64> = ys[&v.name].iter().map(|&t| f64::from(t)).collect();
        for (what, got) in [("runtime", &runtime), ("C", &c)] {
            let bad = violations(got, &reference, &tol);
            assert!(
                bad.is_empty(),
                "{} {what}: rows {bad:?} outside the bound",
                v.name
            );
        }
    }
}
