//! Weight products against references: Athena weights (random valid encodings covering every
//! parameter of the spec, sections 2-5) against the reference decoder's Ŵ, and the plain types
//! (F32, F16, BF16, Q8_0) against an f64 product of their values.
//!
//! For each weight: `matvec` against Ŵ x in f64, `matmul` for 1..=5 tokens against the f64
//! product and against one `matvec` per token, and `row(i)` (the embedding lookup) against row
//! i of Ŵ. Tolerances are relative to sum_j |Ŵ_ij x_j| (the products' magnitudes), since the
//! runtime adds in another order (and rotates the input instead of the weight).

use std::collections::BTreeSet;

use athena_decode::{CodebookType, Encoded, Params, Parts};
use athena_runtime::matrix::{AthenaMatrix, Matrix, PlainMatrix, PlainType};

/// SplitMix64: a small deterministic generator (the tests are seeded, so a failure reproduces).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x8765_4321)
    }

    fn u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.u64() % n as u64) as usize
    }

    /// Uniform in lo..=hi.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn f32s(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.unit()).collect()
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u64() as u8).collect()
    }

    /// n little-endian f16 values, random in [-scale, scale) (finite).
    fn f16s(&mut self, n: usize, scale: f32) -> Vec<u8> {
        (0..n)
            .flat_map(|_| half::f16::from_f32(self.unit() * scale).to_le_bytes())
            .collect()
    }
}

/// The component buffers of one encoded weight.
struct Components {
    params: Params,
    indices: Vec<u8>,
    codebook: Vec<u8>,
    scales: Vec<u8>,
    lowrank_a: Vec<u8>,
    lowrank_b: Vec<u8>,
    signs: Vec<u8>,
    row_scales: Vec<u8>,
}

impl Components {
    fn encoded(&self) -> Encoded<'_> {
        let parts = Parts {
            indices: &self.indices,
            codebook: &self.codebook,
            scales: &self.scales,
            lowrank_a: &self.lowrank_a,
            lowrank_b: &self.lowrank_b,
            signs: &self.signs,
            row_scales: &self.row_scales,
        };
        let e = Encoded::new(self.params, parts).expect("valid parameters and sizes");
        e.check().expect("valid contents");
        e
    }
}

/// Random bytes valid for `p` (spec section 3): every index row with zero padding bits, finite
/// f16 values, sign bytes with zero padding bits; every size from `Params::*_len()`.
fn components(p: Params, rng: &mut Rng) -> Components {
    let (rows, cols) = (p.rows as usize, p.cols as usize);
    let (bits, groups) = (p.index_bits() as usize, p.groups() as usize);
    let stride = p.row_stride_bytes().unwrap() as usize;
    let mut indices = vec![0u8; p.indices_len().unwrap()];
    for row in indices.chunks_exact_mut(stride) {
        for g in 0..groups {
            let a = rng.u64() & ((1 << bits) - 1);
            for q in 0..bits {
                let bit = g * bits + q;
                row[bit / 8] |= (((a >> q) & 1) as u8) << (bit % 8);
            }
        }
    }
    let entries = p.codebook_len().unwrap() / p.codebook.entry_bytes() as usize;
    let (codebook, scales) = match p.codebook {
        CodebookType::F16 => (rng.f16s(entries, 1.0), Vec::new()),
        CodebookType::I8 => {
            let pairs = p.scales_len().unwrap() / 4;
            let mut scales = Vec::with_capacity(4 * pairs);
            for _ in 0..pairs {
                scales.extend(rng.f16s(1, 0.5)); // offset
                scales.extend(rng.f16s(1, 0.01)); // step
            }
            (rng.bytes(entries), scales)
        }
    };
    let mut signs = rng.bytes(p.signs_len().unwrap());
    if let Some(last) = signs.last_mut() {
        if cols % 8 != 0 {
            *last &= (1u8 << (cols % 8)) - 1;
        }
    }
    let c = Components {
        params: p,
        indices,
        codebook,
        scales,
        lowrank_a: rng.f16s(p.lowrank_a_len().unwrap() / 2, 0.3),
        lowrank_b: rng.f16s(p.lowrank_b_len().unwrap() / 2, 0.3),
        signs,
        row_scales: rng.f16s(p.row_scales_len().unwrap() / 2, 2.0),
    };
    assert_eq!(c.scales.len(), p.scales_len().unwrap());
    assert_eq!(c.codebook.len(), p.codebook_len().unwrap());
    assert_eq!(c.lowrank_a.len(), rows * p.rank as usize * 2);
    c
}

/// Which parameter situations the random cases reached (checked at the end, so the sweep
/// provably covers them).
#[derive(Default)]
struct Coverage {
    seen: BTreeSet<String>,
}

impl Coverage {
    fn note(&mut self, p: &Params) {
        let (rows, cols, d) = (p.rows, p.cols, p.vector_dim as u64);
        let mut add = |s: String| {
            self.seen.insert(s);
        };
        add(format!("d={d}"));
        add(format!("bits={}", p.index_bits()));
        add(format!("rotation={}", p.rotation));
        add(format!("codebook={}", p.codebook.name()));
        add(format!("row_scales={}", p.row_scales));
        add(format!("rank>0={}", p.rank > 0));
        add(format!("partial group={}", cols % d != 0));
        add(format!("R divides N={}", rows % p.tile_rows == 0));
        add(format!("C divides M={}", cols % p.tile_cols == 0));
        add(format!("C=M={}", p.tile_cols == cols));
        add(format!("C=d={}", p.tile_cols == d));
        add(format!("R=N={}", p.tile_rows == rows));
        add(format!("rows>64={}", rows > 64));
        add(format!(
            "partial group and rotation={}",
            cols % d != 0 && p.rotation > 0
        ));
        add(format!(
            "partial group, C not dividing M={}",
            cols % d != 0 && cols % p.tile_cols != 0
        ));
    }

    fn assert_complete(&self) {
        let mut want: Vec<String> = Vec::new();
        want.extend((1..=8).map(|d| format!("d={d}")));
        want.extend((1..=12).map(|b| format!("bits={b}")));
        want.extend([0, 4, 16, 64].map(|b| format!("rotation={b}")));
        want.extend(["codebook=f16".into(), "codebook=i8".into()]);
        for flag in [
            "row_scales",
            "rank>0",
            "partial group",
            "R divides N",
            "C divides M",
            "C=M",
            "C=d",
            "R=N",
            "rows>64",
            "partial group and rotation",
            "partial group, C not dividing M",
        ] {
            want.push(format!("{flag}=true"));
            want.push(format!("{flag}=false"));
        }
        let missing: Vec<&String> = want.iter().filter(|w| !self.seen.contains(*w)).collect();
        assert!(missing.is_empty(), "cases never reached: {missing:?}");
    }
}

/// Case `c`: d, codebook type, rotation, row scales and rank > 0 cycle through all 256
/// combinations; the sizes, tiles and n are random (n up to 4096, kept small when the tiles
/// are many).
fn random_params(c: usize, rng: &mut Rng) -> Params {
    let d = 1 + c % 8;
    let codebook = if (c / 8).is_multiple_of(2) {
        CodebookType::F16
    } else {
        CodebookType::I8
    };
    let rotation = [0usize, 4, 16, 64][(c / 16) % 4];
    let row_scales = (c / 64) % 2 == 1;
    let lowrank = (c / 128) % 2 == 1;

    let cols = if rotation > 0 {
        // A multiple of the block, at least d.
        let blocks = rng.range(
            d.div_ceil(rotation),
            (128 / rotation).max(d.div_ceil(rotation)),
        );
        rotation * blocks
    } else if rng.below(2) == 0 && d > 1 {
        // A partial last group.
        d * rng.range(1, 12) + rng.range(1, d - 1)
    } else {
        rng.range(d, 100)
    };
    let rows = if rng.below(6) == 0 {
        rng.range(65, 140)
    } else {
        rng.range(1, 40)
    };
    let tile_rows = match rng.below(3) {
        0 => rows,
        1 => rng.range(1, rows),
        _ => rng.range(1, rows.div_ceil(2)),
    };
    // C: a multiple of d up to cols, or cols itself.
    let multiples = cols / d;
    let tile_cols = match rng.below(4) {
        0 => cols,
        1 => d,
        2 => d * rng.range(1, multiples),
        _ => {
            // A multiple of d that does not divide cols, where one exists.
            let bad: Vec<usize> = (1..=multiples)
                .map(|k| k * d)
                .filter(|&c| cols % c != 0)
                .collect();
            if bad.is_empty() {
                cols
            } else {
                bad[rng.below(bad.len())]
            }
        }
    };
    let rank = if lowrank {
        rng.range(1, rows.min(cols).min(4))
    } else {
        0
    };
    let tiles = rows.div_ceil(tile_rows) * cols.div_ceil(tile_cols);
    // n up to 4096, but at most ~2^18 codebook entries in all.
    let max_bits = ((1usize << 18) / (tiles * d)).max(2).ilog2().clamp(1, 12) as usize;
    let bits = rng.range(1, max_bits);
    let p = Params {
        rows: rows as u64,
        cols: cols as u64,
        vector_dim: d as u32,
        centroids: 1 << bits,
        tile_rows: tile_rows as u64,
        tile_cols: tile_cols as u64,
        rank: rank as u32,
        codebook,
        rotation: rotation as u32,
        row_scales,
    };
    p.validate()
        .unwrap_or_else(|e| panic!("case {c}: {p:?}: {e:?}"));
    p
}

/// sum_j w_j x_j in f64, and sum_j |w_j x_j|.
fn dot64(w: &[f32], x: &[f32]) -> (f64, f64) {
    w.iter().zip(x).fold((0.0, 0.0), |(s, m), (&a, &b)| {
        let p = a as f64 * b as f64;
        (s + p, m + p.abs())
    })
}

fn check(got: f32, want: f64, mag: f64, rel: f64, abs: f64, what: impl Fn() -> String) {
    let tol = rel * mag + abs;
    let err = (got as f64 - want).abs();
    assert!(
        err <= tol,
        "{}: got {got}, want {want} (error {err:e}, tolerance {tol:e})",
        what()
    );
}

/// matvec, matmul and row of `m` against the decoded weight `w` (rows x cols, row-major).
/// `matvec_slack(i, x)` widens the matvec tolerance of row i (Q8_0's quantized activations).
fn check_matrix(
    m: &Matrix,
    w: &[f32],
    rng: &mut Rng,
    rel: f64,
    abs: f64,
    matvec_slack: &dyn Fn(usize, &[f32]) -> f64,
    what: &dyn Fn() -> String,
) {
    let (rows, cols) = (m.rows(), m.cols());
    assert_eq!(w.len(), rows * cols);
    let wrow = |i: usize| &w[i * cols..(i + 1) * cols];

    // One token.
    let x = rng.f32s(cols);
    let mut y = vec![f32::NAN; rows];
    m.matvec(&x, &mut y);
    for (i, &got) in y.iter().enumerate() {
        let (want, mag) = dot64(wrow(i), &x);
        let slack = matvec_slack(i, &x);
        check(got, want, mag, rel, abs + slack, || {
            format!("{}: matvec row {i}", what())
        });
    }

    // Batches: against f64, and against one matvec per token.
    for t in 1..=5 {
        let xs = rng.f32s(t * cols);
        let mut ys = vec![f32::NAN; t * rows];
        m.matmul(&xs, t, &mut ys);
        for (k, (xk, yk)) in xs.chunks_exact(cols).zip(ys.chunks_exact(rows)).enumerate() {
            let mut yv = vec![f32::NAN; rows];
            m.matvec(xk, &mut yv);
            for i in 0..rows {
                let (want, mag) = dot64(wrow(i), xk);
                let slack = if t == 1 { matvec_slack(i, xk) } else { 0.0 };
                let what = |vs: &str| format!("{}: matmul t={t}, token {k}, row {i} {vs}", what());
                check(yk[i], want, mag, rel, abs + slack, || what("vs f64"));
                let slack = matvec_slack(i, xk);
                check(
                    yk[i],
                    yv[i] as f64,
                    mag,
                    2.0 * rel,
                    2.0 * abs + slack,
                    || what("vs matvec"),
                );
            }
        }
    }
}

/// Row i of the decoded weight, against `row(i)`: per element within 1e-5 of (|Ŵ_ij| + |Ŵ_i|_2)
/// plus 1e-6 (the rotation spreads each element's rounding over its block, but it is
/// orthogonal, so the errors stay below the row's 2-norm times the relative error before it).
fn check_rows(m: &Matrix, w: &[f32], what: &dyn Fn() -> String) {
    let cols = m.cols();
    let mut out = vec![f32::NAN; cols];
    for (i, want) in w.chunks_exact(cols).enumerate() {
        m.row(i, &mut out);
        let norm = want
            .iter()
            .map(|&v| v as f64 * v as f64)
            .sum::<f64>()
            .sqrt();
        for (j, (&got, &want)) in out.iter().zip(want).enumerate() {
            check(
                got,
                want as f64,
                (want as f64).abs() + norm,
                1e-5,
                1e-6,
                || format!("{}: row {i}, column {j}", what()),
            );
        }
    }
}

#[test]
fn athena_matches_reference_decoder() {
    let mut rng = Rng::new(1);
    let mut coverage = Coverage::default();
    for c in 0..768 {
        let p = random_params(c, &mut rng);
        coverage.note(&p);
        let comps = components(p, &mut rng);
        let encoded = comps.encoded();
        let w = encoded.decode().unwrap();
        let m = Matrix::Athena(AthenaMatrix::new(&encoded));
        assert_eq!((m.rows(), m.cols()), (p.rows as usize, p.cols as usize));
        let what = || format!("case {c}: {p:?}");
        check_matrix(&m, &w, &mut rng, 1e-4, 1e-5, &|_, _| 0.0, &what);
        check_rows(&m, &w, &what);
    }
    coverage.assert_complete();
}

/// The spec's worked example of the rotation (section 5): one row x = (1, 2, 3, 4) before the
/// rotation, signs 0x05, Ŵ = (-5, -1, 2, 0); and the product with unit vectors picks columns.
#[test]
fn athena_rotation_example() {
    // d = 1, n = 4: indices 0, 1, 2, 3 select the centroids 1, 2, 3, 4.
    let params = Params {
        rows: 1,
        cols: 4,
        vector_dim: 1,
        centroids: 4,
        tile_rows: 1,
        tile_cols: 4,
        rank: 0,
        codebook: CodebookType::F16,
        rotation: 4,
        row_scales: false,
    };
    let codebook: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    let indices = [0b1110_0100u8];
    let signs = [0x05u8];
    let parts = Parts {
        indices: &indices,
        codebook: &codebook,
        signs: &signs,
        ..Parts::default()
    };
    let encoded = Encoded::new(params, parts).unwrap();
    encoded.check().unwrap();
    assert_eq!(encoded.decode().unwrap(), [-5.0, -1.0, 2.0, 0.0]);
    let m = Matrix::Athena(AthenaMatrix::new(&encoded));
    let mut row = [f32::NAN; 4];
    m.row(0, &mut row);
    assert_eq!(row, [-5.0, -1.0, 2.0, 0.0]);
    for (j, want) in [-5.0f32, -1.0, 2.0, 0.0].into_iter().enumerate() {
        let mut x = [0.0f32; 4];
        x[j] = 1.0;
        let mut y = [f32::NAN];
        m.matvec(&x, &mut y);
        assert!(
            (y[0] - want).abs() <= 1e-6,
            "column {j}: {} vs {want}",
            y[0]
        );
    }
}

/// The values of a plain tensor as f32 (exact: every type converts exactly, and a Q8_0 value
/// d * q has at most 19 significant bits).
fn plain_values(ty: PlainType, data: &[u8], cols: usize) -> Vec<f32> {
    let h = |b: &[u8]| u16::from_le_bytes([b[0], b[1]]);
    match ty {
        PlainType::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        PlainType::F16 => data
            .chunks_exact(2)
            .map(|b| half::f16::from_bits(h(b)).to_f32())
            .collect(),
        PlainType::Bf16 => data
            .chunks_exact(2)
            .map(|b| half::bf16::from_bits(h(b)).to_f32())
            .collect(),
        PlainType::Q8_0 => {
            assert_eq!(cols % 32, 0);
            data.chunks_exact(34)
                .flat_map(|b| {
                    let d = half::f16::from_bits(h(b)).to_f32();
                    b[2..].iter().map(move |&q| d * q as i8 as f32)
                })
                .collect()
        }
    }
}

fn plain_data(ty: PlainType, rows: usize, cols: usize, rng: &mut Rng) -> Vec<u8> {
    let n = rows * cols;
    match ty {
        PlainType::F32 => rng.f32s(n).iter().flat_map(|v| v.to_le_bytes()).collect(),
        PlainType::F16 => rng.f16s(n, 2.0),
        PlainType::Bf16 => (0..n)
            .flat_map(|_| half::bf16::from_f32(rng.unit() * 3.0).to_le_bytes())
            .collect(),
        PlainType::Q8_0 => {
            let mut out = Vec::with_capacity(n / 32 * 34);
            for _ in 0..n / 32 {
                out.extend(rng.f16s(1, 0.05));
                out.extend(rng.bytes(32));
            }
            out
        }
    }
}

#[test]
fn plain_matches_f64() {
    let mut rng = Rng::new(2);
    for ty in [
        PlainType::F32,
        PlainType::F16,
        PlainType::Bf16,
        PlainType::Q8_0,
    ] {
        for c in 0..40 {
            let rows = if c % 5 == 0 {
                rng.range(65, 140)
            } else {
                rng.range(1, 40)
            };
            let cols = if ty == PlainType::Q8_0 {
                32 * rng.range(1, 4)
            } else {
                rng.range(1, 100)
            };
            let data = plain_data(ty, rows, cols, &mut rng);
            assert_eq!(data.len(), rows * ty.row_bytes(cols));
            // F32 data both 4-byte aligned and not (the kernels' aligned fast path and the
            // copying one).
            let mut buf = vec![0u8; data.len() + 8];
            let aligned = buf.as_ptr().align_offset(4);
            let start = if c % 2 == 0 { aligned } else { aligned + 1 };
            buf[start..start + data.len()].copy_from_slice(&data);
            let data = &buf[start..start + data.len()];
            let w = plain_values(ty, data, cols);
            let m = Matrix::Plain(PlainMatrix::new(ty, rows, cols, data));
            assert_eq!((m.rows(), m.cols()), (rows, cols));
            // Q8_0 matvec may multiply by x quantized to 8 bits per block of 32 (llama.cpp's
            // scheme): allow each block's weights times half a quantization step of x.
            let q8_slack = |i: usize, x: &[f32]| {
                if ty != PlainType::Q8_0 {
                    return 0.0;
                }
                let wi = &w[i * cols..(i + 1) * cols];
                wi.chunks_exact(32)
                    .zip(x.chunks_exact(32))
                    .map(|(wb, xb)| {
                        let amax = xb.iter().fold(0.0f64, |a, &v| a.max((v as f64).abs()));
                        let wsum: f64 = wb.iter().map(|&v| (v as f64).abs()).sum();
                        wsum * amax / 254.0 * 1.001
                    })
                    .sum()
            };
            let what = || format!("{ty:?} {rows}x{cols}, case {c}");
            check_matrix(&m, &w, &mut rng, 1e-5, 1e-6, &q8_slack, &what);
            let mut out = vec![f32::NAN; cols];
            for i in 0..rows {
                m.row(i, &mut out);
                assert_eq!(out, w[i * cols..(i + 1) * cols], "{}: row {i}", what());
            }
        }
    }
}
