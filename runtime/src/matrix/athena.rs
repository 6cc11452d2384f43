//! An Athena weight prepared for multiplication straight from its packed indices
//! (format-spec/athena-encoding.md, "Notes for implementers" of section 5):
//!
//! - the codebooks are expanded once to f32 centroid tables (off + step * u, exactly the spec's
//!   step 3 without the row scale), each centroid padded to a power-of-two lane count;
//! - the column rotation is applied to the input vector once (Q^T x) instead of to every row;
//! - the row scale multiplies each row's codebook dot product;
//! - the low-rank residual is two thin products, A (B x').
//!
//! The indices stay in the memory-mapped file; the tables cost T * n * dp * 4 bytes (a few
//! percent of the indices at the planned configurations).

use athena_decode::{f16_to_f32, CodebookType, Encoded, Params};

use crate::kernels::{self, VqSlice};

/// An input vector prepared for one Athena weight ([`AthenaMatrix::prepare`]).
pub struct AthenaInput {
    xp: Vec<f32>,
    z: Vec<f32>,
}

pub struct AthenaMatrix<'a> {
    rows: usize,
    cols: usize,
    d: usize,
    /// Lanes per centroid in `table`: the smallest power of two >= d.
    dp: usize,
    n: usize,
    bits: u32,
    tile_rows: usize,
    tile_cols: usize,
    col_tiles: usize,
    groups: usize,
    stride: usize,
    indices: &'a [u8],
    /// Codebook t, centroid a, lane e at (t * n + a) * dp + e.
    table: Vec<f32>,
    row_scales: Option<Vec<f32>>,
    rank: usize,
    /// A (rows x rank) and B (rank x cols), row-major, as f32.
    lowrank: Option<(Vec<f32>, Vec<f32>)>,
    rotation: usize,
    signs: &'a [u8],
}

fn halves(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(2)
        .map(|h| f16_to_f32(u16::from_le_bytes([h[0], h[1]])))
        .collect()
}

impl<'a> AthenaMatrix<'a> {
    /// Prepares a validated weight (its parameters and component sizes checked, spec rules 1-7).
    pub fn new(encoded: &Encoded<'a>) -> Self {
        let p: &Params = encoded.params();
        let parts = encoded.parts();
        let (d, n) = (p.vector_dim as usize, p.centroids as usize);
        let dp = d.next_power_of_two();
        let tiles = p.codebooks().expect("validated parameters") as usize;
        let mut table = vec![0.0f32; tiles * n * dp];
        for t in 0..tiles {
            for a in 0..n {
                for e in 0..d {
                    let at = (t * n + a) * d + e;
                    table[(t * n + a) * dp + e] = match p.codebook {
                        CodebookType::I8 => {
                            let s = (t * d + e) * 4;
                            let h = |k: usize| {
                                u16::from_le_bytes([parts.scales[k], parts.scales[k + 1]])
                            };
                            let (off, step) = (f16_to_f32(h(s)), f16_to_f32(h(s + 2)));
                            off + step * parts.codebook[at] as f32
                        }
                        CodebookType::F16 => f16_to_f32(u16::from_le_bytes([
                            parts.codebook[2 * at],
                            parts.codebook[2 * at + 1],
                        ])),
                    };
                }
            }
        }
        let (tile_rows, tile_cols) = (p.tile_rows as usize, p.tile_cols as usize);
        let cols = p.cols as usize;
        Self {
            rows: p.rows as usize,
            cols,
            d,
            dp,
            n,
            bits: p.index_bits(),
            tile_rows,
            tile_cols,
            col_tiles: cols.div_ceil(tile_cols),
            groups: p.groups() as usize,
            stride: p.row_stride_bytes().expect("validated parameters") as usize,
            indices: parts.indices,
            table,
            row_scales: p.row_scales.then(|| halves(parts.row_scales)),
            rank: p.rank as usize,
            lowrank: (p.rank > 0).then(|| (halves(parts.lowrank_a), halves(parts.lowrank_b))),
            rotation: p.rotation as usize,
            signs: parts.signs,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Q^T x: the signs, then per block of B columns the butterfly stages and 1/sqrt(B) (spec
    /// section 5, applied to the input vector).
    fn rotate_input(&self, x: &mut [f32]) {
        let block = self.rotation;
        for (j, v) in x.iter_mut().enumerate() {
            if self.signs[j / 8] >> (j % 8) & 1 == 1 {
                *v = -*v;
            }
        }
        let scale = 1.0 / (block as f32).sqrt();
        for chunk in x.chunks_exact_mut(block) {
            let mut h = 1;
            while h < block {
                // Pairs (a, a + h) in every 2h-wide run: split so the loop vectorizes.
                for run in chunk.chunks_exact_mut(2 * h) {
                    let (lo, hi) = run.split_at_mut(h);
                    for (u, v) in lo.iter_mut().zip(hi.iter_mut()) {
                        let (a, b) = (*u, *v);
                        *u = a + b;
                        *v = a - b;
                    }
                }
                h *= 2;
            }
            for v in chunk.iter_mut() {
                *v *= scale;
            }
        }
    }

    /// The rotated input as the kernels read it: `dp` lanes per group, zero-padded (also past
    /// a partial last group).
    fn padded_input(&self, x: &[f32]) -> Vec<f32> {
        let mut xp = vec![0.0f32; self.groups * self.dp];
        for (g, chunk) in x.chunks(self.d).enumerate() {
            xp[g * self.dp..g * self.dp + chunk.len()].copy_from_slice(chunk);
        }
        xp
    }

    /// Groups [g0, g1) of column tile `tc`.
    fn tile_groups(&self, tc: usize) -> (usize, usize) {
        let c0 = tc * self.tile_cols;
        let c1 = (c0 + self.tile_cols).min(self.cols);
        (c0 / self.d, c1.div_ceil(self.d))
    }

    /// Row `i` of the codebook part times the padded input (before row scale and low rank).
    fn row_dot(&self, i: usize, xp: &[f32]) -> f32 {
        let tr = i / self.tile_rows;
        let mut acc = 0.0;
        for tc in 0..self.col_tiles {
            let t = tr * self.col_tiles + tc;
            let (g0, g1) = self.tile_groups(tc);
            let cb = self.n * self.dp;
            acc += kernels::vq_dot(&VqSlice {
                table: &self.table[t * cb..(t + 1) * cb],
                dp: self.dp,
                indices: self.indices,
                first_bit: i * self.stride * 8 + g0 * self.bits as usize,
                bits: self.bits,
                groups: g1 - g0,
                xp: &xp[g0 * self.dp..g1 * self.dp],
            });
        }
        acc
    }

    /// The input of [`Self::dot`]: x' = Q^T x padded to the codebook's lanes, and B x' for the
    /// low-rank part.
    pub fn prepare(&self, x: &[f32]) -> AthenaInput {
        let mut xr = x.to_vec();
        self.rotated_input(&mut xr);
        let z = match &self.lowrank {
            Some((_, b)) => b
                .chunks_exact(self.cols)
                .map(|row| kernels::f32_dot(row, &xr))
                .collect(),
            None => Vec::new(),
        };
        AthenaInput {
            xp: self.padded_input(&xr),
            z,
        }
    }

    /// Row `i` of Ŵ times the prepared input: s_i (V x')_i + A_i (B x').
    pub fn dot(&self, i: usize, input: &AthenaInput) -> f32 {
        let mut acc = self.row_dot(i, &input.xp);
        if let Some(s) = &self.row_scales {
            acc *= s[i];
        }
        if let Some((a, _)) = &self.lowrank {
            acc += kernels::f32_dot(&a[i * self.rank..(i + 1) * self.rank], &input.z);
        }
        acc
    }

    /// x becomes Q^T x (unchanged without a rotation), the input of [`Self::decode_rotated_rows`]
    /// and of the kernels.
    pub fn rotated_input(&self, x: &mut [f32]) {
        if self.rotation > 0 {
            self.rotate_input(x);
        }
    }

    /// Row `i` of Ŵ: steps 1-4, then the rotation of step 5 on the row.
    pub fn decode_row(&self, i: usize, out: &mut [f32]) {
        self.decode_rotated_rows(i, i + 1, out);
        if self.rotation > 0 {
            athena_decode::rotate_row(out, self.rotation, self.signs);
        }
    }

    /// Rows [r0, r1) of Ŵ Q (the decoded weight before the column rotation, spec steps 1-4)
    /// into `out`, so that Ŵ x = (Ŵ Q)(Q^T x).
    pub fn decode_rotated_rows(&self, r0: usize, r1: usize, out: &mut [f32]) {
        let mask = (1u64 << self.bits) - 1;
        for (i, row) in (r0..r1).zip(out.chunks_exact_mut(self.cols)) {
            let tr = i / self.tile_rows;
            for tc in 0..self.col_tiles {
                let t = tr * self.col_tiles + tc;
                let (g0, g1) = self.tile_groups(tc);
                for g in g0..g1 {
                    let bit = i * self.stride * 8 + g * self.bits as usize;
                    let a = kernels::read_bits(self.indices, bit, mask) as usize;
                    let centroid = &self.table[(t * self.n + a) * self.dp..];
                    let c0 = g * self.d;
                    let width = self.d.min(self.cols - c0);
                    row[c0..c0 + width].copy_from_slice(&centroid[..width]);
                }
            }
            if let Some(s) = &self.row_scales {
                row.iter_mut().for_each(|v| *v *= s[i]);
            }
            if let Some((a, b)) = &self.lowrank {
                for k in 0..self.rank {
                    let ak = a[i * self.rank + k];
                    for (v, bk) in row.iter_mut().zip(&b[k * self.cols..(k + 1) * self.cols]) {
                        *v += ak * bk;
                    }
                }
            }
        }
    }
}
