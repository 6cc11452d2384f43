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
