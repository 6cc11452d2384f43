//! The Rust reference decoder against every test vector: bit-identical output required.

mod common;

use athena_decode::{Component, DecodeError, Encoded, ScaleField};
use common::VectorFiles;

fn encoded(v: &VectorFiles) -> Result<Encoded<'_>, DecodeError> {
    Encoded::new(v.params, v.parts())
}

fn first_mismatch(got: &[f32], want: &[f32]) -> Option<(usize, f32, f32)> {
    got.iter()
        .zip(want)
        .enumerate()
        .find(|(_, (g, w))| g.to_bits() != w.to_bits())
        .map(|(i, (g, w))| (i, *g, *w))
}

#[test]
fn every_vector_decodes_bit_identically() {
    for v in common::all() {
        let enc = encoded(&v).unwrap_or_else(|e| panic!("{}: {e}", v.name));
        enc.check().unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert_eq!(
            v.expected.len() as u64,
            v.params.rows * v.params.cols,
            "{}",
            v.name
        );

        let whole = enc.decode().unwrap();
        if let Some((i, g, w)) = first_mismatch(&whole, &v.expected) {
            panic!(
                "{}: decode() element {i}: got {g:e} ({:#x}), want {w:e} ({:#x})",
                v.name,
                g.to_bits(),
                w.to_bits()
            );
        }

        let cols = v.params.cols as usize;
        let mut row_out = vec![f32::NAN; cols];
        for row in 0..v.params.rows {
            enc.decode_row(row, &mut row_out).unwrap();
            let want = &v.expected[row as usize * cols..][..cols];
            if let Some((j, g, w)) = first_mismatch(&row_out, want) {
                panic!(
                    "{}: decode_row({row}) column {j}: got {g:e}, want {w:e}",
                    v.name
                );
            }
        }
    }
}

#[test]
fn decode_row_touches_only_its_row() {
    // Corrupting every other row's indices must not change a row's output.
    for v in common::all().into_iter().filter(|v| v.params.rows > 1) {
        let stride = v.params.row_stride_bytes().unwrap() as usize;
        let mut bad = v.clone();
        for (r, chunk) in bad.indices.chunks_mut(stride).enumerate() {
            if r != 0 {
                chunk.iter_mut().for_each(|b| *b = !*b);
            }
        }
        let enc = encoded(&bad).unwrap();
        let mut out = vec![0.0; v.params.cols as usize];
        enc.decode_row(0, &mut out).unwrap();
        assert!(
            first_mismatch(&out, &v.expected[..out.len()]).is_none(),
            "{}",
            v.name
        );
    }
}

fn find(name: &str) -> VectorFiles {
    common::all().into_iter().find(|v| v.name == name).unwrap()
}

#[test]
fn truncated_component_is_a_length_mismatch() {
    let v = find("d2_n16_i8_r3_wild");
    type Corrupt = fn(&mut VectorFiles);
    let cases: [(Component, Corrupt); 5] = [
        (Component::Indices, |v| {
            v.indices.pop();
        }),
        (Component::Codebook, |v| {
            v.codebook.pop();
        }),
        (Component::Scales, |v| {
            v.scales.truncate(v.scales.len() - 2);
        }),
        (Component::LowRankA, |v| v.lowrank_a.extend([0, 0])),
        (Component::LowRankB, |v| v.lowrank_b.clear()),
    ];
    for (component, corrupt) in cases {
        let mut bad = v.clone();
        corrupt(&mut bad);
        match encoded(&bad) {
            Err(DecodeError::LengthMismatch { component: c, .. }) => assert_eq!(c, component),
            other => panic!("{component:?}: {other:?}"),
        }
    }
    // Row scales: short or long with row_scales, present without, missing with.
    let scaled = find("d5_n32_i8_r2_rs_wild");
    let plain = v.clone();
    let mut cases = vec![
        (scaled.clone(), 18, 16),
        (scaled, 18, 20),
        (plain.clone(), 0, 18),
    ];
    cases[0].0.row_scales.truncate(16);
    cases[1].0.row_scales.extend([0, 0]);
    cases[2].0.row_scales = vec![0; 18];
    let mut missing = plain;
    missing.params.row_scales = true;
    cases.push((missing, 18, 0));
    for (bad, expected, actual) in cases {
        assert_eq!(
            encoded(&bad).err(),
            Some(DecodeError::LengthMismatch {
                component: Component::RowScales,
                expected,
                actual
            }),
            "{}",
            bad.name
        );
    }
    // Signs: missing with a rotation, present without one.
    let rotated = find("d3_n8_i8_r1_rot4_sign_padding");
    for (mut bad, signs) in [(rotated, vec![]), (v, vec![0; 3])] {
        bad.signs = signs;
        assert!(
            matches!(
                encoded(&bad),
                Err(DecodeError::LengthMismatch {
                    component: Component::Signs,
                    ..
                })
            ),
            "{}",
            bad.name
        );
    }
}

#[test]
fn sign_padding_is_checked_last() {
    // M = 12: bits 4..8 of the last sign byte are padding.
    let mut v = find("d3_n8_i8_r1_rot4_sign_padding");
    v.signs[1] |= 0x10;
    assert_eq!(
        encoded(&v).unwrap().check(),
        Err(DecodeError::NonZeroSignPadding)
    );
    // Low-rank B, row 0, column 7 := +inf: reported before the signs.
    v.lowrank_b[14..16].copy_from_slice(&0x7c00u16.to_le_bytes());
    assert_eq!(
        encoded(&v).unwrap().check(),
        Err(DecodeError::NonFiniteLowRank {
            component: Component::LowRankB,
            row: 0,
            col: 7
        })
    );
}

#[test]
fn non_finite_row_scales_are_located_after_lowrank_and_before_sign_padding() {
    let mut v = find("d5_n32_i8_r2_rs_wild"); // 9 rows, rank 2, cols 35
    v.row_scales[14..16].copy_from_slice(&0x7c00u16.to_le_bytes());
    v.row_scales[16..18].copy_from_slice(&0xfe00u16.to_le_bytes());
    let err = encoded(&v).unwrap().check().unwrap_err();
    assert_eq!(err, DecodeError::NonFiniteRowScale { row: 7 });
    assert_eq!(err.code(), "non_finite_row_scale");
    assert_eq!(err.to_string(), "non-finite row scale at row 7");
    // Low-rank B, row 1, column 4 := NaN: reported first.
    let i = 35 + 4;
    v.lowrank_b[2 * i..2 * i + 2].copy_from_slice(&0x7e00u16.to_le_bytes());
    assert_eq!(
        encoded(&v).unwrap().check(),
        Err(DecodeError::NonFiniteLowRank {
            component: Component::LowRankB,
            row: 1,
            col: 4
        })
    );
    // Set sign padding is reported after the row scales.
    let mut v = find("d3_n8_i8_r1_rot4_sign_padding"); // 4 rows, cols 12
    v.params.row_scales = true;
    v.row_scales = [0x3c00u16, 0xfc00, 0x0001, 0x7bff]
        .iter()
        .flat_map(|h| h.to_le_bytes())
        .collect();
    v.signs[1] |= 0x10;
    assert_eq!(
        encoded(&v).unwrap().check(),
        Err(DecodeError::NonFiniteRowScale { row: 1 })
    );
}

/// The `_fma` vectors catch a decoder that fuses the row-scale product with the low-rank sum:
/// recomputed from the unscaled codebook values (the decoder without rs and low-rank), the
/// separately rounded v * s + acc matches expected.f32 everywhere, fma(v, s, acc) somewhere not.
#[test]
fn fma_vectors_catch_a_fused_row_scale() {
    let vectors: Vec<_> = common::all()
        .into_iter()
        .filter(|v| v.name.ends_with("_rs_fma") && v.params.rotation == 0)
        .collect();
    assert!(!vectors.is_empty());
    for v in vectors {
        assert!(v.params.row_scales && v.params.rank > 0, "{}", v.name);
        assert_eq!(v.params.encoding_version(), 3);
        let mut plain = v.clone();
        plain.params.row_scales = false;
        plain.params.rank = 0;
        plain.row_scales.clear();
        plain.lowrank_a.clear();
        plain.lowrank_b.clear();
        let unscaled = encoded(&plain).unwrap().decode().unwrap();
        let f16 = |b: &[u8], i: usize| {
            athena_decode::f16_to_f32(u16::from_le_bytes([b[2 * i], b[2 * i + 1]]))
        };
        let (cols, r) = (v.params.cols as usize, v.params.rank as usize);
        let mut fused_differs = 0;
        for (e, (&v0, &want)) in unscaled.iter().zip(&v.expected).enumerate() {
            let (i, j) = (e / cols, e % cols);
            let s = f16(&v.row_scales, i);
            let mut acc = 0.0f32;
            for k in 0..r {
                acc += f16(&v.lowrank_a, i * r + k) * f16(&v.lowrank_b, k * cols + j);
            }
            let separate = v0 * s + acc;
            assert_eq!(separate.to_bits(), want.to_bits(), "{} ({i}, {j})", v.name);
            if v0.mul_add(s, acc).to_bits() != want.to_bits() {
                fused_differs += 1;
            }
        }
        println!(
            "{}: fma differs at {fused_differs} of {} elements",
            v.name,
            unscaled.len()
        );
        assert!(fused_differs > 0, "{}", v.name);
    }
}

#[test]
fn non_finite_values_are_located() {
    // f16 codebook: codebook 1, entry 3, dimension 1 := NaN.
    let mut v = find("d2_n4_f16_nondiv");
    let d = 2;
    let i = (4 + 3) * d + 1; // codebook 1 of n = 4: (t * n + a) * d + j
    v.codebook[2 * i..2 * i + 2].copy_from_slice(&0x7e00u16.to_le_bytes());
    assert_eq!(
        encoded(&v).unwrap().check(),
        Err(DecodeError::NonFiniteCodebook {
            codebook: 1,
            entry: 3,
            dim: 1
        })
    );
    // int8 scale: codebook 2, dimension 1, step := -inf.
    let mut v = find("d2_n16_i8_r3_wild");
    let i = (2 * 2 + 1) * 2 + 1;
    v.scales[2 * i..2 * i + 2].copy_from_slice(&0xfc00u16.to_le_bytes());
    assert_eq!(
        encoded(&v).unwrap().check(),
        Err(DecodeError::NonFiniteScale {
            codebook: 2,
            dim: 1,
            field: ScaleField::Step
        })
    );
    // Low-rank B: row 2, column 5 := NaN.
    let mut v = find("d2_n16_i8_r3_wild");
    let i = 2 * 18 + 5;
    v.lowrank_b[2 * i..2 * i + 2].copy_from_slice(&0x7c01u16.to_le_bytes());
    assert_eq!(
        encoded(&v).unwrap().check(),
        Err(DecodeError::NonFiniteLowRank {
            component: Component::LowRankB,
            row: 2,
            col: 5
        })
    );
}
