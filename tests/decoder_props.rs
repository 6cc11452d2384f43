//! Property tests of athena-decode: construction never panics on any parameters and lengths,
//! and on random valid weights every decode path equals a naive transcription of the spec.

use athena_decode::{CodebookType, DecodeError, Encoded, Params, Parts};
use proptest::prelude::*;

fn dim() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..20u64,
        Just(u64::MAX),
        Just(1 << 32),
        Just(1 << 63),
        any::<u64>()
    ]
}

proptest! {
    #[test]
    fn new_never_panics(
        rows in dim(), cols in dim(), tile_rows in dim(), tile_cols in dim(),
        vector_dim in prop_oneof![0..10u32, any::<u32>()],
        centroids in prop_oneof![0..20u32, Just(65536u32), any::<u32>()],
        rank in prop_oneof![0..6u32, any::<u32>()],
        f16 in any::<bool>(),
        rotation in prop_oneof![Just(0u32), Just(4), Just(16), 0..20u32, any::<u32>()],
        row_scales in any::<bool>(),
        lens in proptest::collection::vec(0..80usize, 7),
    ) {
        let params = Params {
            rows, cols, vector_dim, centroids, tile_rows, tile_cols, rank,
            codebook: if f16 { CodebookType::F16 } else { CodebookType::I8 },
            rotation, row_scales,
        };
        let bufs: Vec<Vec<u8>> = lens.iter().map(|&n| vec![0xffu8; n]).collect();
        let parts = Parts {
            indices: &bufs[0], codebook: &bufs[1], scales: &bufs[2],
            lowrank_a: &bufs[3], lowrank_b: &bufs[4], signs: &bufs[5], row_scales: &bufs[6],
        };
        if let Ok(enc) = Encoded::new(params, parts) {
            let _ = enc.check();
            let mut out = vec![0.0; cols as usize];
            prop_assert!(enc.decode_row(0, &mut out).is_ok());
            let _ = format!("{:?}", enc.index(rows, 0));
        }
        // Display never panics either.
        if let Err(e) = params.validate() {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn decode_matches_naive_spec(
        d in 1..=8u32, b in 1..=12u32, rows in 1..=9u64, groups in 1..=9u64,
        tr_frac in 0.0..1.0f64, tc_frac in 0.0..1.0f64, rank_frac in 0.0..1.0f64,
        f16 in any::<bool>(), seed in any::<u64>(), row_scales in any::<bool>(),
        block in prop_oneof![Just(0u64), Just(4), Just(16), Just(64)],
    ) {
        let cols = groups * d as u64;
        let rotation = if block > 0 && cols.is_multiple_of(block) { block as u32 } else { 0 };
        let tile_rows = 1 + ((rows - 1) as f64 * tr_frac) as u64;
        let tile_cols = d as u64 * (1 + ((groups - 1) as f64 * tc_frac) as u64);
        let rank = ((rows.min(cols).min(5) + 1) as f64 * rank_frac) as u32;
        let p = Params {
            rows, cols, vector_dim: d, centroids: 1 << b, tile_rows, tile_cols, rank,
            codebook: if f16 { CodebookType::F16 } else { CodebookType::I8 },
            rotation, row_scales,
        };
        p.validate().unwrap();
        let mut rng = seed | 1;
        let mut next = move || { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; rng };
        let f16s = |n: usize, next: &mut dyn FnMut() -> u64| -> Vec<u8> {
            (0..n).flat_map(|_| loop {
                let h = next() as u16;
                if h & 0x7c00 != 0x7c00 { break h.to_le_bytes(); }
            }).collect()
        };
        let idx_groups: Vec<Vec<u32>> = (0..rows)
            .map(|_| (0..groups).map(|_| (next() % (1u64 << b)) as u32).collect())
            .collect();
        let stride = p.row_stride_bytes().unwrap() as usize;
        let mut indices = vec![0u8; stride * rows as usize];
        for (i, row) in idx_groups.iter().enumerate() {
            for (g, &ix) in row.iter().enumerate() {
                for q in 0..b as usize {
                    let pos = g * b as usize + q;
                    indices[i * stride + pos / 8] |= (((ix >> q) & 1) as u8) << (pos % 8);
                }
            }
        }
        let codebook = if f16 {
            f16s(p.codebook_len().unwrap() / 2, &mut next)
        } else {
            (0..p.codebook_len().unwrap()).map(|_| next() as u8).collect()
        };
        let scales = f16s(p.scales_len().unwrap() / 2, &mut next);
        let lra = f16s(p.lowrank_a_len().unwrap() / 2, &mut next);
        let lrb = f16s(p.lowrank_b_len().unwrap() / 2, &mut next);
        let rs = f16s(p.row_scales_len().unwrap() / 2, &mut next);
        let mut signs: Vec<u8> = (0..p.signs_len().unwrap()).map(|_| next() as u8).collect();
        if let Some(last) = signs.last_mut() {
            // Clear the padding bits, which check() rejects.
            *last &= 0xffu8 >> ((8 - cols % 8) % 8);
        }
        let enc = Encoded::new(p, Parts {
            indices: &indices, codebook: &codebook, scales: &scales, lowrank_a: &lra, lowrank_b: &lrb,
            signs: &signs, row_scales: &rs,
        }).unwrap();
        prop_assert_eq!(enc.check(), Ok(()));

        // Naive spec transcription, with `half` for f16.
        let h = |bytes: &[u8], i: u64| half::f16::from_le_bytes([bytes[2 * i as usize], bytes[2 * i as usize + 1]]).to_f32();
        let (dd, n, r, tcs) = (d as u64, 1u64 << b, rank as u64, cols.div_ceil(tile_cols));
        let mut want = Vec::new();
        for i in 0..rows {
            for j in 0..cols {
                let (g, e) = (j / dd, j % dd);
                let a = idx_groups[i as usize][g as usize] as u64;
                prop_assert_eq!(enc.index(i, g), Ok(a as u32));
                let t = (i / tile_rows) * tcs + j / tile_cols;
                let v = if f16 {
                    h(&codebook, (t * n + a) * dd + e)
                } else {
                    let prod = h(&scales, (t * dd + e) * 2 + 1) * codebook[((t * n + a) * dd + e) as usize] as f32;
                    h(&scales, (t * dd + e) * 2) + prod
                };
                let v = if row_scales { v * h(&rs, i) } else { v };
                let mut acc = 0.0f32;
                for k in 0..r {
                    let prod = h(&lra, i * r + k) * h(&lrb, k * cols + j);
                    acc += prod;
                }
                want.push(if r > 0 { v + acc } else { v });
            }
            if rotation > 0 {
                // Step 5: butterflies h = 1, 2, ..., B/2 per block, * 1/sqrt(B), signs.
                let bsz = rotation as usize;
                let row = &mut want[(i * cols) as usize..];
                for blk in row.chunks_exact_mut(bsz) {
                    let mut hh = 1;
                    while hh < bsz {
                        for a in (0..bsz).filter(|a| (a / hh) % 2 == 0) {
                            let (x, y) = (blk[a], blk[a + hh]);
                            blk[a] = x + y;
                            blk[a + hh] = x - y;
                        }
                        hh *= 2;
                    }
                }
                let c = 1.0 / (bsz as f32).sqrt();
                for (j, x) in row.iter_mut().enumerate() {
                    let y = *x * c;
                    *x = if (signs[j / 8] >> (j % 8)) & 1 == 1 { -y } else { y };
                }
            }
        }
        let got = enc.decode().unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(bits(&got), bits(&want));
        let mut row = vec![0.0f32; cols as usize];
        for i in 0..rows {
            enc.decode_row(i, &mut row).unwrap();
            prop_assert_eq!(bits(&row), bits(&want[(i * cols) as usize..((i + 1) * cols) as usize]));
        }
        prop_assert_eq!(enc.index(rows, 0), Err(DecodeError::RowOutOfRange { row: rows, rows }));
    }
}
