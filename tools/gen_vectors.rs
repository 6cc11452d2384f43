//! Deterministic generator of the Athena decoder test vectors (fixtures/vectors/).
//!
//! `cargo run --example gen-vectors [-- OUT_DIR]` (default: fixtures/vectors in the repository).
//!
//! Contents come from a fixed-seed SplitMix64. `expected.f32` is computed here with a
//! deliberately naive, independent transcription of the spec formula (bit-by-bit index
//! extraction, `half` for f16 -> f32, the row scale and the rotation's butterfly stages as the
//! spec words them); it does not use the athena-decode crate.

use athena::quantizer::rng::SplitMix64;
use std::fs;
use std::path::{Path, PathBuf};

/// The project's SplitMix64 (quantizer::rng), with the draws this tool needs.
struct Rng(SplitMix64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in [0, n).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    /// Roughly normal with standard deviation `sd` (sum of 4 uniforms).
    fn normal(&mut self, sd: f32) -> f32 {
        let s: f32 = (0..4)
            .map(|_| (self.below(1 << 24) as f32) / (1 << 24) as f32)
            .sum();
        (s - 2.0) * 1.732 * sd
    }
}

/// How f16 contents are drawn.
#[derive(Clone, Copy)]
enum Style {
    /// Magnitudes like a real quantized weight.
    Realistic,
    /// Any finite f16 bit pattern: subnormals, huge values, signed zeros; stresses rounding.
    Wild,
    /// Only +-0, +-smallest subnormal, +-1: stresses signed-zero handling of the sums.
    Zeros,
}

#[derive(Clone, Copy)]
struct Spec {
    name: &'static str,
    rows: u64,
    cols: u64,
    d: u32,
    n: u32,
    tile_rows: u64,
    tile_cols: u64,
    rank: u32,
    f16_codebook: bool,
    style: Style,
    /// B, the rotation's block size; 0 = none (encoding version 1).
    rotation: u32,
    /// rs: per-row scales (encoding version 3).
    row_scales: bool,
}

#[allow(clippy::too_many_arguments)]
const fn v(
    name: &'static str,
    rows: u64,
    cols: u64,
    d: u32,
    n: u32,
    tile_rows: u64,
    tile_cols: u64,
    rank: u32,
    cb: &str,
    style: Style,
) -> Spec {
    let f16_codebook = cb.len() == 3; // "f16" vs "i8"
    Spec {
        name,
        rows,
        cols,
        d,
        n,
        tile_rows,
        tile_cols,
        rank,
        f16_codebook,
        style,
        rotation: 0,
        row_scales: false,
    }
}

impl Spec {
    /// This spec with a column rotation of block size `b`.
    const fn rot(self, b: u32) -> Spec {
        Spec {
            rotation: b,
            ..self
        }
    }

    /// This spec with per-row scales.
    const fn rs(self) -> Spec {
        Spec {
            row_scales: true,
            ..self
        }
    }
}

use Style::{Realistic as Re, Wild as Wi, Zeros as Ze};

/// The vectors. Names: d<d>_n<n>_<cb>[_r<rank>][_rot<B>][_rs]_<what is special>. Rotated vectors
/// come after the version 1 vectors, then the row-scaled ones (version 3), then those with a
/// partial last group (version 4): their extra draws must not shift the random contents of the
/// vectors before them.
const SPECS: &[Spec] = &[
    v("d1_n2_i8_one_row", 1, 37, 1, 2, 1, 5, 0, "i8", Re),
    v("d1_n2_f16_one_col_r1", 9, 1, 1, 2, 4, 1, 1, "f16", Re),
    v("d2_n4_f16_nondiv", 13, 22, 2, 4, 5, 6, 0, "f16", Re),
    v("d3_n8_i8_r2_nondiv", 11, 27, 3, 8, 4, 9, 2, "i8", Re),
    v("d4_n16_f16_r3_nondiv", 10, 32, 4, 16, 3, 12, 3, "f16", Re),
    v("d2_n32_i8_R_eq_N", 7, 30, 2, 32, 7, 10, 0, "i8", Re),
    v("d5_n32_i8_wild", 6, 35, 5, 32, 4, 15, 2, "i8", Wi),
    v("d6_n64_f16_r1", 5, 36, 6, 64, 2, 24, 1, "f16", Re),
    v("d7_n8_i8_r5_wild", 5, 28, 7, 8, 2, 14, 5, "i8", Wi),
    v("d8_n64_f16_r2_nondiv", 6, 40, 8, 64, 4, 16, 2, "f16", Re),
    v("d1_n128_f16_wide_wild", 5, 50, 1, 128, 2, 50, 0, "f16", Wi),
    v("d2_n256_i8_paper_layout", 16, 24, 2, 256, 8, 2, 0, "i8", Re),
    v(
        "d2_n256_f16_paper_layout_r4",
        12,
        20,
        2,
        256,
        5,
        2,
        4,
        "f16",
        Re,
    ),
    v(
        "d1_n256_i8_paper_layout_wild",
        7,
        9,
        1,
        256,
        3,
        1,
        2,
        "i8",
        Wi,
    ),
    v(
        "d4_n256_i8_single_tile_r8",
        20,
        64,
        4,
        256,
        20,
        64,
        8,
        "i8",
        Re,
    ),
    v("d2_n512_i8_single_tile", 6, 34, 2, 512, 6, 34, 0, "i8", Re),
    v("d3_n1024_f16_r1_wild", 5, 21, 3, 1024, 2, 9, 1, "f16", Wi),
    v("d2_n2048_i8_nondiv", 9, 26, 2, 2048, 4, 8, 0, "i8", Re),
    v("d2_n4096_i8_r4_wide", 16, 48, 2, 4096, 8, 48, 4, "i8", Re),
    v("d1_n4096_f16_nondiv", 4, 40, 1, 4096, 3, 16, 0, "f16", Re),
    v(
        "d2_n4096_i8_r8_64x192",
        64,
        192,
        2,
        4096,
        64,
        192,
        8,
        "i8",
        Re,
    ),
    v(
        "d2_n8192_i8_single_tile",
        3,
        14,
        2,
        8192,
        3,
        14,
        0,
        "i8",
        Re,
    ),
    v(
        "d1_n16384_f16_single_tile",
        2,
        11,
        1,
        16384,
        2,
        11,
        0,
        "f16",
        Wi,
    ),
    v(
        "d1_n32768_i8_single_tile",
        3,
        9,
        1,
        32768,
        3,
        9,
        0,
        "i8",
        Re,
    ),
    v(
        "d1_n65536_f16_single_tile",
        4,
        16,
        1,
        65536,
        4,
        16,
        0,
        "f16",
        Re,
    ),
    v(
        "d2_n65536_i8_r2_single_tile",
        3,
        10,
        2,
        65536,
        3,
        10,
        2,
        "i8",
        Wi,
    ),
    v("d3_n4_f16_full_rank_wild", 4, 6, 3, 4, 3, 3, 4, "f16", Wi),
    v("d2_n4_f16_r2_signed_zeros", 6, 8, 2, 4, 2, 4, 2, "f16", Ze),
    v("d2_n16_i8_r3_signed_zeros", 5, 12, 2, 16, 5, 6, 3, "i8", Ze),
    v("d2_n16_i8_r3_wild", 9, 18, 2, 16, 4, 8, 3, "i8", Wi),
    // Few codebook values per output value: decode() then takes its value-table paths.
    v(
        "d2_n4_i8_paper_layout_tall",
        40,
        12,
        2,
        4,
        40,
        2,
        0,
        "i8",
        Wi,
    ),
    v(
        "d1_n2_f16_r1_paper_layout_tall",
        24,
        5,
        1,
        2,
        12,
        1,
        1,
        "f16",
        Re,
    ),
    v(
        "d2_n16_i8_r2_tall_nondiv",
        48,
        40,
        2,
        16,
        20,
        12,
        2,
        "i8",
        Wi,
    ),
    v(
        "d4_n16_f16_tall_nondiv",
        40,
        32,
        4,
        16,
        16,
        12,
        0,
        "f16",
        Wi,
    ),
    v("d2_n4_i8_rot4_two_blocks", 3, 8, 2, 4, 2, 4, 0, "i8", Re).rot(4),
    v(
        "d2_n16_i8_r2_rot16_nondiv",
        5,
        32,
        2,
        16,
        3,
        12,
        2,
        "i8",
        Re,
    )
    .rot(16),
    v(
        "d4_n64_f16_r1_rot64_wild",
        3,
        128,
        4,
        64,
        2,
        32,
        1,
        "f16",
        Wi,
    )
    .rot(64),
    // M = 12: the last sign byte has 4 padding bits.
    v(
        "d3_n8_i8_r1_rot4_sign_padding",
        4,
        12,
        3,
        8,
        3,
        6,
        1,
        "i8",
        Wi,
    )
    .rot(4),
    v(
        "d2_n4_f16_r2_rot4_signed_zeros",
        4,
        16,
        2,
        4,
        2,
        8,
        2,
        "f16",
        Ze,
    )
    .rot(4),
    v(
        "d2_n16_i8_r3_rot16_signed_zeros",
        3,
        16,
        2,
        16,
        3,
        8,
        3,
        "i8",
        Ze,
    )
    .rot(16),
    // The largest block: 12 butterfly stages.
    v(
        "d8_n2_f16_rot4096_one_row",
        1,
        4096,
        8,
        2,
        1,
        4096,
        0,
        "f16",
        Re,
    )
    .rot(4096),
    // The table path of decode() followed by the rotation.
    v(
        "d2_n4_i8_rot16_paper_layout_tall",
        24,
        16,
        2,
        4,
        24,
        2,
        0,
        "i8",
        Wi,
    )
    .rot(16),
    // Version 3: per-row scales. Only now may new draws happen (see above).
    // i8 codebook values have up to 24 significant bits, so v * s is rounded and
    // fma(v, s, acc) differs from the separately rounded v * s + acc (emit() asserts it).
    v("d2_n16_i8_r2_rs_fma", 8, 24, 2, 16, 4, 8, 2, "i8", Re).rs(),
    v("d3_n8_f16_rs_nondiv", 7, 21, 3, 8, 3, 9, 0, "f16", Re).rs(),
    v(
        "d2_n4_f16_r2_rs_signed_zeros",
        6,
        8,
        2,
        4,
        2,
        4,
        2,
        "f16",
        Ze,
    )
    .rs(),
    v(
        "d2_n16_i8_r3_rs_signed_zeros",
        5,
        12,
        2,
        16,
        5,
        6,
        3,
        "i8",
        Ze,
    )
    .rs(),
    v("d5_n32_i8_r2_rs_wild", 9, 35, 5, 32, 4, 15, 2, "i8", Wi).rs(),
    v(
        "d1_n128_f16_rs_wide_wild",
        8,
        50,
        1,
        128,
        3,
        50,
        0,
        "f16",
        Wi,
    )
    .rs(),
    // The table paths of decode() (paper layout; tiles of several groups) with row scales.
    v(
        "d2_n4_i8_rs_paper_layout_tall",
        40,
        12,
        2,
        4,
        40,
        2,
        0,
        "i8",
        Wi,
    )
    .rs(),
    v(
        "d4_n16_f16_r1_rs_tall_nondiv",
        40,
        32,
        4,
        16,
        16,
        12,
        1,
        "f16",
        Re,
    )
    .rs(),
    v("d2_n4_i8_rot4_rs_two_blocks", 3, 8, 2, 4, 2, 4, 0, "i8", Re)
        .rot(4)
        .rs(),
    v(
        "d2_n16_i8_r2_rot16_rs_fma",
        5,
        32,
        2,
        16,
        3,
        12,
        2,
        "i8",
        Re,
    )
    .rot(16)
    .rs(),
    v(
        "d4_n64_f16_r1_rot64_rs_wild",
        6,
        128,
        4,
        64,
        2,
        32,
        1,
        "f16",
        Wi,
    )
    .rot(64)
    .rs(),
    v(
        "d2_n16_i8_r3_rot16_rs_signed_zeros",
        4,
        16,
        2,
        16,
        3,
        8,
        3,
        "i8",
        Ze,
    )
    .rot(16)
    .rs(),
    // Version 4: d does not divide M, so the last group of each row is partial.
    v("d3_n8_i8_r1_partial_wide", 5, 11, 3, 8, 2, 11, 1, "i8", Re),
    v(
        "d3_n16_f16_partial_nondiv",
        4,
        16,
        3,
        16,
        3,
        6,
        0,
        "f16",
        Wi,
    ),
    v(
        "d3_n256_i8_partial_paper_layout",
        4,
        10,
        3,
        256,
        2,
        3,
        0,
        "i8",
        Re,
    ),
    v(
        "d2_n4_i8_partial_paper_layout_tall",
        40,
        7,
        2,
        4,
        40,
        2,
        0,
        "i8",
        Re,
    ),
    v("d3_n4_f16_partial_tall", 40, 8, 3, 4, 16, 8, 0, "f16", Re),
    v(
        "d3_n16_i8_r2_rot4_rs_partial",
        6,
        8,
        3,
        16,
        4,
        8,
        2,
        "i8",
        Re,
    )
    .rot(4)
    .rs(),
    v(
        "d5_n32_i8_r3_partial_signed_zeros",
        3,
        12,
        5,
        32,
        2,
        12,
        3,
        "i8",
        Ze,
    ),
    // A slice of a token embedding table stored as an Athena weight (spec section 1.1): the
    // shape of a planned configuration (d = 4, n = 1024, all columns in one tile, i8, B = 64,
    // row scales), with R = 300 not dividing the 640 rows. A lookup decodes one row.
    v(
        "d4_n1024_i8_rot64_rs_embedding",
        640,
        64,
        4,
        1024,
        300,
        64,
        0,
        "i8",
        Re,
    )
    .rot(64)
    .rs(),
];

/// All the stored contents of one vector.
struct Vector {
    spec: Spec,
    indices: Vec<Vec<u32>>, // [row][group]
    codebook: Vec<u8>,
    scales: Vec<u8>,
    lowrank_a: Vec<u8>,
    lowrank_b: Vec<u8>,
    signs: Vec<bool>,    // [column]; empty without a rotation
    row_scales: Vec<u8>, // N f16 LE; empty without row scales
}

fn f16_bits(rng: &mut Rng, style: Style, sd: f32) -> u16 {
    match style {
        Style::Realistic => half::f16::from_f32(rng.normal(sd)).to_bits(),
        Style::Wild => loop {
            let b = rng.below(1 << 16) as u16;
            if b & 0x7c00 != 0x7c00 {
                break b;
            }
        },
        Style::Zeros => [0x0000, 0x8000, 0x0001, 0x8001, 0x3c00, 0xbc00][rng.below(6) as usize],
    }
}

fn push_f16(out: &mut Vec<u8>, bits: u16) {
    out.extend_from_slice(&bits.to_le_bytes());
}

fn tiles(s: &Spec) -> (u64, u64) {
    (s.rows.div_ceil(s.tile_rows), s.cols.div_ceil(s.tile_cols))
}

fn random_vector(spec: Spec, rng: &mut Rng) -> Vector {
    let (tr, tc) = tiles(&spec);
    let t = tr * tc;
    let groups = spec.cols.div_ceil(spec.d as u64);
    let indices = (0..spec.rows)
        .map(|_| {
            (0..groups)
                .map(|_| rng.below(spec.n as u64) as u32)
                .collect()
        })
        .collect();
    let entries = t * spec.n as u64 * spec.d as u64;
    let mut codebook = Vec::new();
    let mut scales = Vec::new();
    if spec.f16_codebook {
        for _ in 0..entries {
            push_f16(&mut codebook, f16_bits(rng, spec.style, 0.05));
        }
    } else {
        codebook = (0..entries).map(|_| rng.below(256) as u8).collect();
        for _ in 0..t * spec.d as u64 {
            let (off, step) = match spec.style {
                Style::Realistic => {
                    let lo = -0.1 + rng.normal(0.02);
                    let hi = 0.1 + rng.normal(0.02);
                    let off = half::f16::from_f32(lo).to_bits();
                    (off, half::f16::from_f32((hi - lo) / 255.0).to_bits())
                }
                style => (f16_bits(rng, style, 0.0), f16_bits(rng, style, 0.0)),
            };
            push_f16(&mut scales, off);
            push_f16(&mut scales, step);
        }
    }
    let mut lowrank_a = Vec::new();
    let mut lowrank_b = Vec::new();
    for _ in 0..spec.rows * spec.rank as u64 {
        push_f16(&mut lowrank_a, f16_bits(rng, spec.style, 0.05));
    }
    for _ in 0..spec.cols * spec.rank as u64 {
        push_f16(&mut lowrank_b, f16_bits(rng, spec.style, 0.05));
    }
    let signs = if spec.rotation > 0 {
        (0..spec.cols).map(|_| rng.below(2) == 1).collect()
    } else {
        Vec::new()
    };
    let mut row_scales = Vec::new();
    if spec.row_scales {
        for i in 0..spec.rows {
            push_f16(&mut row_scales, row_scale_bits(rng, spec.style, i));
        }
    }
    Vector {
        spec,
        indices,
        codebook,
        scales,
        lowrank_a,
        lowrank_b,
        signs,
        row_scales,
    }
}

/// The scale of row i. Realistic: positive, 2^-3 <= s < 2^3 with a random 10-bit mantissa (built
/// from bits, so no libm function makes the draw platform-dependent). Wild: rows 0..6 are
/// 65504, -65504, the smallest subnormal, minus the largest subnormal, +0 and -0, then any
/// finite f16. Zeros: +0, -0, +1, -1 in turn.
fn row_scale_bits(rng: &mut Rng, style: Style, i: u64) -> u16 {
    const WILD_FIRST: [u16; 6] = [0x7bff, 0xfbff, 0x0001, 0x83ff, 0x0000, 0x8000];
    match style {
        Style::Realistic => {
            let exp = 12 + rng.below(6) as u16; // biased exponent: 2^-3 .. 2^2
            (exp << 10) | rng.below(1 << 10) as u16
        }
        Style::Wild => match WILD_FIRST.get(i as usize) {
            Some(&b) => b,
            None => f16_bits(rng, style, 0.0),
        },
        Style::Zeros => [0x0000, 0x8000, 0x3c00, 0xbc00][(i % 4) as usize],
    }
}

/// The worked example of format-spec/athena-encoding.md, byte for byte.
fn spec_example() -> Vector {
    let spec = v("spec_example", 2, 6, 2, 8, 1, 4, 1, "i8", Re);
    // T = 4 codebooks of 8 entries x 2 dims: entry (t, a, j) = (t*37 + a*11 + j*5) mod 256.
    let codebook = (0..4u32)
        .flat_map(|t| {
            (0..8u32)
                .flat_map(move |a| (0..2u32).map(move |j| ((t * 37 + a * 11 + j * 5) % 256) as u8))
        })
        .collect();
    // (offset, step) for (t, j): offset = -(t + 1) / 4 - j / 8, step = 0.01 (f16 0x211f).
    let mut scales = Vec::new();
    for t in 0..4 {
        for j in 0..2 {
            let off = -((t + 1) as f32) / 4.0 - j as f32 / 8.0;
            push_f16(&mut scales, half::f16::from_f32(off).to_bits());
            push_f16(&mut scales, 0x211f);
        }
    }
    let mut lowrank_a = Vec::new();
    for x in [0.5f32, -0.25] {
        push_f16(&mut lowrank_a, half::f16::from_f32(x).to_bits());
    }
    let mut lowrank_b = Vec::new();
    for x in [0.1f32, -0.2, 0.3, 0.0, 1.0, -0.0] {
        push_f16(&mut lowrank_b, half::f16::from_f32(x).to_bits());
    }
    Vector {
        spec,
        indices: vec![vec![5, 2, 7], vec![3, 6, 1]],
        codebook,
        scales,
        lowrank_a,
        lowrank_b,
        signs: Vec::new(),
        row_scales: Vec::new(),
    }
}

/// Packs one row: index g at stream bits [g*b, g*b + b), LSB first, bit p in byte p / 8.
fn pack_row(indices: &[u32], bits: u32) -> Vec<u8> {
    let total = indices.len() * bits as usize;
    let mut out = vec![0u8; total.div_ceil(8)];
    for (g, &ix) in indices.iter().enumerate() {
        for q in 0..bits as usize {
            if (ix >> q) & 1 == 1 {
                let p = g * bits as usize + q;
                out[p / 8] |= 1 << (p % 8);
            }
        }
    }
    out
}

/// Packs the sign bits: s_j is bit j mod 8 of byte j / 8; the padding bits stay zero.
fn pack_signs(signs: &[bool]) -> Vec<u8> {
    let mut out = vec![0u8; signs.len().div_ceil(8)];
    for (j, &s) in signs.iter().enumerate() {
        if s {
            out[j / 8] |= 1 << (j % 8);
        }
    }
    out
}

fn h(bytes: &[u8], i: u64) -> f32 {
    let i = i as usize;
    half::f16::from_bits(u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]])).to_f32()
}

/// The spec formula, transcribed as literally as possible, reading the packed bytes. Also
/// returns how many elements (before the rotation) a decoder that fuses the row-scale product
/// with the low-rank addition, fma(v, s, acc), would get wrong.
fn expected(vec: &Vector, packed: &[Vec<u8>], signs: &[u8]) -> (Vec<f32>, usize) {
    let s = &vec.spec;
    let (d, n, m, r) = (s.d as u64, s.n as u64, s.cols, s.rank as u64);
    let b = s.n.trailing_zeros() as u64;
    let (_, tiles_c) = tiles(s);
    let mut out = Vec::with_capacity((s.rows * s.cols) as usize);
    let mut fma_differs = 0;
    for i in 0..s.rows {
        for j in 0..s.cols {
            let g = j / d;
            let e = j - g * d;
            let mut a = 0u64;
            for q in 0..b {
                let p = g * b + q;
                let bit = (packed[i as usize][(p / 8) as usize] >> (p % 8)) & 1;
                a |= (bit as u64) << q;
            }
            let t = (i / s.tile_rows) * tiles_c + j / s.tile_cols;
            let v = if s.f16_codebook {
                h(&vec.codebook, (t * n + a) * d + e)
            } else {
                let off = h(&vec.scales, (t * d + e) * 2);
                let step = h(&vec.scales, (t * d + e) * 2 + 1);
                let u = vec.codebook[((t * n + a) * d + e) as usize] as f32;
                let prod = step * u;
                off + prod
            };
            // Row scale: v = v * f32(rs[i]), rounded (Rust never fuses it with the sum below).
            let (unscaled, row_scale) = (v, s.row_scales.then(|| h(&vec.row_scales, i)));
            let v = match row_scale {
                Some(scale) => v * scale,
                None => v,
            };
            let w = if r > 0 {
                let mut acc = 0.0f32;
                for k in 0..r {
                    let prod = h(&vec.lowrank_a, i * r + k) * h(&vec.lowrank_b, k * m + j);
                    acc += prod;
                }
                if let Some(scale) = row_scale {
                    if unscaled.mul_add(scale, acc).to_bits() != (v + acc).to_bits() {
                        fma_differs += 1;
                    }
                }
                v + acc
            } else {
                v
            };
            out.push(w);
        }
        if s.rotation > 0 {
            let start = (i * m) as usize;
            rotate(&mut out[start..], s.rotation as usize, signs);
        }
    }
    (out, fma_differs)
}

/// Step 5 on row x, worded as in the spec.
fn rotate(x: &mut [f32], b: usize, signs: &[u8]) {
    for k in 0..x.len() / b {
        let block = &mut x[k * b..(k + 1) * b];
        let mut h = 1;
        while h <= b / 2 {
            for a in 0..b {
                if (a / h) % 2 == 0 {
                    let (p, q) = (block[a], block[a + h]);
                    block[a] = p + q;
                    block[a + h] = p - q;
                }
            }
            h *= 2;
        }
    }
    // sqrt is correctly rounded, and exact for B = 4^k.
    let c = 1.0 / (b as f32).sqrt();
    for (j, xj) in x.iter_mut().enumerate() {
        let y = *xj * c;
        let s = (signs[j / 8] >> (j % 8)) & 1;
        *xj = if s == 1 { -y } else { y };
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::write(dir.join(name), bytes)
        .unwrap_or_else(|e| panic!("writing {}: {e}", dir.join(name).display()));
}

fn emit(root: &Path, vec: &Vector) {
    let s = &vec.spec;
    let dir = root.join(s.name);
    fs::create_dir_all(&dir).unwrap();
    let mut params = format!(
        "rows={}\ncols={}\nvector_dim={}\ncentroids={}\ntile_rows={}\ntile_cols={}\nrank={}\ncodebook={}\n",
        s.rows,
        s.cols,
        s.d,
        s.n,
        s.tile_rows,
        s.tile_cols,
        s.rank,
        if s.f16_codebook { "f16" } else { "i8" }
    );
    if s.rotation > 0 {
        params += &format!("rotation={}\n", s.rotation);
    }
    if s.row_scales {
        params += "row_scales=1\n";
    }
    write(&dir, "params.txt", params.as_bytes());
    let bits = s.n.trailing_zeros();
    let packed: Vec<Vec<u8>> = vec.indices.iter().map(|row| pack_row(row, bits)).collect();
    write(&dir, "indices.bin", &packed.concat());
    write(&dir, "codebook.bin", &vec.codebook);
    if !s.f16_codebook {
        write(&dir, "scales.bin", &vec.scales);
    }
    if s.rank > 0 {
        write(&dir, "lowrank_a.bin", &vec.lowrank_a);
        write(&dir, "lowrank_b.bin", &vec.lowrank_b);
    }
    let signs = pack_signs(&vec.signs);
    if s.rotation > 0 {
        write(&dir, "signs.bin", &signs);
    }
    if s.row_scales {
        write(&dir, "row_scales.bin", &vec.row_scales);
    }
    let (values, fma_differs) = expected(vec, &packed, &signs);
    // The `_fma` vectors must catch a decoder that contracts v * s + acc.
    assert!(
        !s.name.ends_with("_fma") || fma_differs > 0,
        "{}: fma(v, s, acc) never differs from v * s + acc; change the vector",
        s.name
    );
    let exp: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
    write(&dir, "expected.f32", &exp);
}

#[allow(dead_code)] // unused when included by tests/vectors_fresh.rs
fn main() {
    let root: PathBuf = match std::env::args_os().nth(1) {
        Some(p) => p.into(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/vectors"),
    };
    let count = generate(&root);
    println!("wrote {count} vectors to {}", root.display());
}

/// Writes every vector under `root`; returns how many.
pub fn generate(root: &Path) -> usize {
    fs::create_dir_all(root).unwrap();
    // Remove stale vectors (folders holding a params.txt); keep README.md and anything else.
    for entry in fs::read_dir(root).unwrap() {
        let path = entry.unwrap().path();
        if path.join("params.txt").is_file() {
            fs::remove_dir_all(&path).unwrap();
        }
    }
    let mut rng = Rng(SplitMix64::new(0x4154_4845_4e41_0001)); // "ATHENA" 1
    let mut vectors = vec![spec_example()];
    vectors.extend(SPECS.iter().map(|&s| random_vector(s, &mut rng)));
    for vec in &vectors {
        emit(root, vec);
    }
    vectors.len()
}
