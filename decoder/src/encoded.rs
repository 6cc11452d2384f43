//! A validated view of one encoded weight and its dequantization.

use crate::error::{Component, DecodeError, ScaleField};
use crate::f16::{f16_is_finite, f16_to_f32, le_u16};
use crate::params::{CodebookType, Params};

/// The raw component buffers of one encoded weight, exactly as stored in the GGUF tensors.
///
/// Empty slices stand for absent tensors: `scales` for f16 codebooks, `lowrank_a` and
/// `lowrank_b` for rank 0.
#[derive(Debug, Clone, Copy, Default)]
pub struct Parts<'a> {
    /// `<W>.athena_idx`: N rows of S bytes of packed indices.
    pub indices: &'a [u8],
    /// `<W>.athena_cb`: T * n * d entries, u8 or little-endian f16.
    pub codebook: &'a [u8],
    /// `<W>.athena_cbs`: T * d (offset, step) pairs of little-endian f16; empty for f16 codebooks.
    pub scales: &'a [u8],
    /// `<W>.athena_lra`: A, N x r little-endian f16, row-major.
    pub lowrank_a: &'a [u8],
    /// `<W>.athena_lrb`: B, r x M little-endian f16, row-major.
    pub lowrank_b: &'a [u8],
    /// `<W>.athena_rot`: ceil(M / 8) bytes of sign bits (bit j mod 8 of byte j / 8 set: column
    /// j is negated); empty without a rotation.
    pub signs: &'a [u8],
    /// `<W>.athena_rs`: N little-endian f16 row scales; empty without row scales.
    pub row_scales: &'a [u8],
}

/// One encoded weight whose parameters are valid and whose buffers have the right lengths.
///
/// Construction ([`Encoded::new`]) is O(1). [`Encoded::check`] scans the contents (finite
/// values, zero padding); call it once before trusting the decoded output. The decode
/// functions never read out of bounds and never panic on any buffer contents that passed `new`;
/// without `check`, non-finite inputs simply propagate into the output.
#[derive(Debug, Clone, Copy)]
pub struct Encoded<'a> {
    params: Params,
    parts: Parts<'a>,
    rows: usize,
    cols: usize,
    d: usize,
    n: usize,
    bits: u32,
    groups: usize,
    stride: usize,
    tile_rows: usize,
    tile_cols: usize,
    tiles_c: usize,
    rank: usize,
    rotation: usize,
}

fn expect_len(component: Component, expected: usize, actual: usize) -> Result<(), DecodeError> {
    if expected != actual {
        return Err(DecodeError::LengthMismatch {
            component,
            expected: expected as u64,
            actual: actual as u64,
        });
    }
    Ok(())
}

impl<'a> Encoded<'a> {
    /// Validates `params` and the length of every buffer in `parts`.
    pub fn new(params: Params, parts: Parts<'a>) -> Result<Self, DecodeError> {
        params.validate()?;
        expect_len(
            Component::Indices,
            params.indices_len()?,
            parts.indices.len(),
        )?;
        expect_len(
            Component::Codebook,
            params.codebook_len()?,
            parts.codebook.len(),
        )?;
        expect_len(Component::Scales, params.scales_len()?, parts.scales.len())?;
        expect_len(
            Component::LowRankA,
            params.lowrank_a_len()?,
            parts.lowrank_a.len(),
        )?;
        expect_len(
            Component::LowRankB,
            params.lowrank_b_len()?,
            parts.lowrank_b.len(),
        )?;
        expect_len(Component::Signs, params.signs_len()?, parts.signs.len())?;
        expect_len(
            Component::RowScales,
            params.row_scales_len()?,
            parts.row_scales.len(),
        )?;
        // All casts below are lossless: validate() proved that rows * cols, and every byte
        // size, fit in usize, and every other quantity is bounded by one of them.
        let (_, tiles_c) = params.tiles();
        Ok(Encoded {
            params,
            parts,
            rows: params.rows as usize,
            cols: params.cols as usize,
            d: params.vector_dim as usize,
            n: params.centroids as usize,
            bits: params.index_bits(),
            groups: params.groups() as usize,
            stride: params.row_stride_bytes()? as usize,
            tile_rows: params.tile_rows as usize,
            tile_cols: params.tile_cols as usize,
            tiles_c: tiles_c as usize,
            rank: params.rank as usize,
            rotation: params.rotation as usize,
        })
    }

    /// The parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The component buffers.
    pub fn parts(&self) -> &Parts<'a> {
        &self.parts
    }

    fn index_row(&self, row: usize) -> &'a [u8] {
        &self.parts.indices[row * self.stride..(row + 1) * self.stride]
    }

    /// The centroid index of vector group `group` of row `row`.
    pub fn index(&self, row: u64, group: u64) -> Result<u32, DecodeError> {
        if row >= self.params.rows {
            return Err(DecodeError::RowOutOfRange {
                row,
                rows: self.params.rows,
            });
        }
        if group >= self.groups as u64 {
            return Err(DecodeError::GroupOutOfRange {
                group,
                groups: self.groups as u64,
            });
        }
        let bytes = self.index_row(row as usize);
        let start = group as usize * self.bits as usize;
        let mut v = 0u32;
        for q in 0..self.bits as usize {
            let p = start + q;
            v |= (((bytes[p / 8] >> (p % 8)) & 1) as u32) << q;
        }
        Ok(v)
    }

    /// Scans the contents. Checks, in this order, and reports the first failure:
    /// every index row (index < centroids, padding bits zero), every f16 codebook value
    /// (codebook t, entry a, dimension j), every int8 offset/step, every value of A, then of B
    /// (all must be finite), then every row scale (must be finite), then the padding bits of
    /// the rotation signs (must be zero).
    pub fn check(&self) -> Result<(), DecodeError> {
        for row in 0..self.rows {
            let bytes = self.index_row(row);
            let mut reader = BitReader::new(bytes, self.bits);
            for group in 0..self.groups {
                let index = reader.next();
                if index as usize >= self.n {
                    return Err(DecodeError::IndexOutOfRange {
                        row: row as u64,
                        group: group as u64,
                        index,
                    });
                }
            }
            let used = (self.groups * self.bits as usize) % 8;
            if used != 0 && bytes[self.stride - 1] >> used != 0 {
                return Err(DecodeError::NonZeroPadding { row: row as u64 });
            }
        }
        if self.params.codebook == CodebookType::F16 {
            let cb = self.parts.codebook;
            for i in 0..cb.len() / 2 {
                if !f16_is_finite(le_u16(cb, i)) {
                    let per_cb = self.n * self.d;
                    return Err(DecodeError::NonFiniteCodebook {
                        codebook: (i / per_cb) as u64,
                        entry: ((i % per_cb) / self.d) as u32,
                        dim: (i % self.d) as u32,
                    });
                }
            }
        }
        let scales = self.parts.scales;
        for i in 0..scales.len() / 2 {
            if !f16_is_finite(le_u16(scales, i)) {
                let pair = i / 2;
                return Err(DecodeError::NonFiniteScale {
                    codebook: (pair / self.d) as u64,
                    dim: (pair % self.d) as u32,
                    field: if i % 2 == 0 {
                        ScaleField::Offset
                    } else {
                        ScaleField::Step
                    },
                });
            }
        }
        for (component, buf, width) in [
            (Component::LowRankA, self.parts.lowrank_a, self.rank),
            (Component::LowRankB, self.parts.lowrank_b, self.cols),
        ] {
            for i in 0..buf.len() / 2 {
                if !f16_is_finite(le_u16(buf, i)) {
                    return Err(DecodeError::NonFiniteLowRank {
                        component,
                        row: (i / width) as u64,
                        col: (i % width) as u64,
                    });
                }
            }
        }
        for i in 0..self.parts.row_scales.len() / 2 {
            if !f16_is_finite(le_u16(self.parts.row_scales, i)) {
                return Err(DecodeError::NonFiniteRowScale { row: i as u64 });
            }
        }
        let used = self.cols % 8;
        if let Some(&last) = self.parts.signs.last() {
            if used != 0 && last >> used != 0 {
                return Err(DecodeError::NonZeroSignPadding);
            }
        }
        Ok(())
    }

    /// Decodes row `row` into `out` (length `cols`), reading only that row's indices, its
    /// tiles' codebooks and scales, its row of A, and B.
    pub fn decode_row(&self, row: u64, out: &mut [f32]) -> Result<(), DecodeError> {
        if row >= self.params.rows {
            return Err(DecodeError::RowOutOfRange {
                row,
                rows: self.params.rows,
            });
        }
        expect_len(Component::Output, self.cols, out.len())?;
        self.decode_row_inner(row as usize, out, Converted::default());
        Ok(())
    }

    /// Decodes the whole tensor into `out` (length `rows * cols`, row-major).
    ///
    /// With the `alloc` feature, B and the int8 scales are converted to f32 once for all rows,
    /// and when the codebooks hold fewer than half as many values as the output, every
    /// codebook value v (spec step 3) is computed once into a table (bit-identical, faster).
    pub fn decode_into(&self, out: &mut [f32]) -> Result<(), DecodeError> {
        expect_len(Component::Output, self.rows * self.cols, out.len())?;
        #[cfg(feature = "alloc")]
        let (scales32, b32) = (
            f16_slice_to_f32(self.parts.scales),
            f16_slice_to_f32(self.parts.lowrank_b),
        );
        #[cfg(feature = "alloc")]
        let table = self.value_table();
        #[cfg(feature = "alloc")]
        let pre = Converted {
            scales: Some(&scales32),
            table: table.as_deref(),
            b: Some(&b32),
        };
        #[cfg(not(feature = "alloc"))]
        let pre = Converted::default();
        for (row, chunk) in out.chunks_exact_mut(self.cols).enumerate() {
            self.decode_row_inner(row, chunk, pre);
        }
        Ok(())
    }

    /// Decodes the whole tensor into a new row-major vector of `rows * cols` values.
    #[cfg(feature = "alloc")]
    pub fn decode(&self) -> Result<alloc::vec::Vec<f32>, DecodeError> {
        let mut out = alloc::vec![0.0f32; self.rows * self.cols];
        self.decode_into(&mut out)?;
        Ok(out)
    }

    /// Every codebook value v (spec step 3), if the codebooks hold at most half as many
    /// values as the output (otherwise computing them per output element is cheaper).
    #[cfg(feature = "alloc")]
    fn value_table(&self) -> Option<alloc::vec::Vec<f32>> {
        let count = self.parts.codebook.len() / self.params.codebook.entry_bytes() as usize;
        if count > self.rows * self.cols / 2 {
            return None;
        }
        let d = self.d;
        Some(match self.params.codebook {
            CodebookType::F16 => f16_slice_to_f32(self.parts.codebook),
            CodebookType::I8 => {
                let mut table = alloc::vec::Vec::with_capacity(count);
                let per_cb = self.n * d;
                for (t, cb) in self.parts.codebook.chunks_exact(per_cb).enumerate() {
                    let mut off = [0.0f32; 8];
                    let mut step = [0.0f32; 8];
                    for j in 0..d {
                        off[j] = f16_to_f32(le_u16(self.parts.scales, (t * d + j) * 2));
                        step[j] = f16_to_f32(le_u16(self.parts.scales, (t * d + j) * 2 + 1));
                    }
                    for entry in cb.chunks_exact(d) {
                        for (j, &u) in entry.iter().enumerate() {
                            let p = step[j] * u as f32;
                            table.push(off[j] + p);
                        }
                    }
                }
                table
            }
        })
    }

    /// `out.len() == cols`, `row < rows`.
    fn decode_row_inner(&self, row: usize, out: &mut [f32], pre: Converted<'_>) {
        let mut reader = BitReader::new(self.index_row(row), self.bits);
        let tr = row / self.tile_rows;
        let (d, n) = (self.d, self.n);
        if let Some(table) = pre.table {
            let t0 = tr * self.tiles_c;
            if self.tile_cols == d {
                let table = &table[t0 * n * d..(t0 + self.tiles_c) * n * d];
                match d {
                    1 => paper_f32::<1>(&mut reader, table, n, out),
                    2 => paper_f32::<2>(&mut reader, table, n, out),
                    3 => paper_f32::<3>(&mut reader, table, n, out),
                    4 => paper_f32::<4>(&mut reader, table, n, out),
                    5 => paper_f32::<5>(&mut reader, table, n, out),
                    6 => paper_f32::<6>(&mut reader, table, n, out),
                    7 => paper_f32::<7>(&mut reader, table, n, out),
                    _ => paper_f32::<8>(&mut reader, table, n, out),
                }
            } else {
                for tc in 0..self.tiles_c {
                    let t = t0 + tc;
                    let c0 = tc * self.tile_cols;
                    let seg = &mut out[c0..(c0 + self.tile_cols).min(self.cols)];
                    let cb = &table[t * n * d..(t + 1) * n * d];
                    match d {
                        1 => seg_f32::<1>(&mut reader, cb, seg),
                        2 => seg_f32::<2>(&mut reader, cb, seg),
                        3 => seg_f32::<3>(&mut reader, cb, seg),
                        4 => seg_f32::<4>(&mut reader, cb, seg),
                        5 => seg_f32::<5>(&mut reader, cb, seg),
                        6 => seg_f32::<6>(&mut reader, cb, seg),
                        7 => seg_f32::<7>(&mut reader, cb, seg),
                        _ => seg_f32::<8>(&mut reader, cb, seg),
                    }
                }
            }
        } else if self.tile_cols == d && self.params.codebook == CodebookType::I8 {
            // The paper layout C = d: one tile per group; skip the per-tile set-up.
            let t0 = tr * self.tiles_c;
            let cb = &self.parts.codebook[t0 * n * d..(t0 + self.tiles_c) * n * d];
            let sc = Scales {
                f16: self.parts.scales,
                f32: pre.scales,
                first: t0 * d * 2,
            };
            match d {
                1 => paper_i8::<1>(&mut reader, cb, n, sc, out),
                2 => paper_i8::<2>(&mut reader, cb, n, sc, out),
                3 => paper_i8::<3>(&mut reader, cb, n, sc, out),
                4 => paper_i8::<4>(&mut reader, cb, n, sc, out),
                5 => paper_i8::<5>(&mut reader, cb, n, sc, out),
                6 => paper_i8::<6>(&mut reader, cb, n, sc, out),
                7 => paper_i8::<7>(&mut reader, cb, n, sc, out),
                _ => paper_i8::<8>(&mut reader, cb, n, sc, out),
            }
        } else {
            for tc in 0..self.tiles_c {
                let t = tr * self.tiles_c + tc;
                let c0 = tc * self.tile_cols;
                let c1 = (c0 + self.tile_cols).min(self.cols);
                let seg = &mut out[c0..c1];
                match self.params.codebook {
                    CodebookType::I8 => {
                        let cb = &self.parts.codebook[t * n * d..(t + 1) * n * d];
                        let sc = Scales {
                            f16: self.parts.scales,
                            f32: pre.scales,
                            first: 0,
                        };
                        let mut off = [0.0f32; 8];
                        let mut step = [0.0f32; 8];
                        for e in 0..d {
                            off[e] = sc.get((t * d + e) * 2);
                            step[e] = sc.get((t * d + e) * 2 + 1);
                        }
                        match d {
                            1 => seg_i8::<1>(&mut reader, cb, &off, &step, seg),
                            2 => seg_i8::<2>(&mut reader, cb, &off, &step, seg),
                            3 => seg_i8::<3>(&mut reader, cb, &off, &step, seg),
                            4 => seg_i8::<4>(&mut reader, cb, &off, &step, seg),
                            5 => seg_i8::<5>(&mut reader, cb, &off, &step, seg),
                            6 => seg_i8::<6>(&mut reader, cb, &off, &step, seg),
                            7 => seg_i8::<7>(&mut reader, cb, &off, &step, seg),
                            _ => seg_i8::<8>(&mut reader, cb, &off, &step, seg),
                        }
                    }
                    CodebookType::F16 => {
                        let cb = &self.parts.codebook[t * n * d * 2..(t + 1) * n * d * 2];
                        match d {
                            1 => seg_f16::<1>(&mut reader, cb, seg),
                            2 => seg_f16::<2>(&mut reader, cb, seg),
                            3 => seg_f16::<3>(&mut reader, cb, seg),
                            4 => seg_f16::<4>(&mut reader, cb, seg),
                            5 => seg_f16::<5>(&mut reader, cb, seg),
                            6 => seg_f16::<6>(&mut reader, cb, seg),
                            7 => seg_f16::<7>(&mut reader, cb, seg),
                            _ => seg_f16::<8>(&mut reader, cb, seg),
                        }
                    }
                }
            }
        }
        if self.params.row_scales {
            let s = f16_to_f32(le_u16(self.parts.row_scales, row));
            for v in out.iter_mut() {
                *v *= s;
            }
        }
        if self.rank > 0 {
            self.add_lowrank(row, out, pre.b);
        }
        if self.rotation > 0 {
            rotate_row(out, self.rotation, self.parts.signs);
        }
    }

    /// out[j] = out[j] + acc_j with acc_j = ((0 + A[i,0]*B[0,j]) + A[i,1]*B[1,j]) + ...
    fn add_lowrank(&self, row: usize, out: &mut [f32], b32: Option<&[f32]>) {
        const CHUNK: usize = 64;
        let (r, m) = (self.rank, self.cols);
        let (a, b) = (self.parts.lowrank_a, self.parts.lowrank_b);
        for (ci, chunk) in out.chunks_mut(CHUNK).enumerate() {
            let j0 = ci * CHUNK;
            let w = chunk.len();
            let mut acc = [0.0f32; CHUNK];
            let acc = &mut acc[..w];
            for k in 0..r {
                let ak = f16_to_f32(le_u16(a, row * r + k));
                let base = k * m + j0;
                match b32 {
                    Some(b32) => {
                        for (s, &bv) in acc.iter_mut().zip(&b32[base..base + w]) {
                            // Separate statements document intent; Rust never contracts
                            // a * b + c into an FMA (no fast-math), so each op rounds.
                            let p = ak * bv;
                            *s += p;
                        }
                    }
                    None => {
                        for (jj, s) in acc.iter_mut().enumerate() {
                            let p = ak * f16_to_f32(le_u16(b, base + jj));
                            *s += p;
                        }
                    }
                }
            }
            for (o, s) in chunk.iter_mut().zip(acc.iter()) {
                *o += *s;
            }
        }
    }
}

/// Components already converted from f16 to f32 (by `decode_into` with `alloc`).
#[derive(Clone, Copy, Default)]
struct Converted<'b> {
    scales: Option<&'b [f32]>,
    /// v for every codebook entry (t, a, j) at (t*n + a)*d + j.
    table: Option<&'b [f32]>,
    b: Option<&'b [f32]>,
}

#[cfg(feature = "alloc")]
fn f16_slice_to_f32(bytes: &[u8]) -> alloc::vec::Vec<f32> {
    (0..bytes.len() / 2)
        .map(|i| f16_to_f32(le_u16(bytes, i)))
        .collect()
}

/// The int8 scales, element `first + i` read as `get(i)`, from f32 if converted, else f16.
#[derive(Clone, Copy)]
struct Scales<'s> {
    f16: &'s [u8],
    f32: Option<&'s [f32]>,
    first: usize,
}

impl Scales<'_> {
    #[inline(always)]
    fn get(&self, i: usize) -> f32 {
        match self.f32 {
            Some(s) => s[self.first + i],
            None => f16_to_f32(le_u16(self.f16, self.first + i)),
        }
    }
}

/// Paper layout (C = d), int8 codebooks: group g of the row uses codebook t0 + g, whose
/// entries start at `cb[g * n * D]` and whose scales are `sc.get((g * D + e) * 2 [+ 1])`.
#[inline(always)]
fn paper_i8<const D: usize>(
    reader: &mut BitReader<'_>,
    cb: &[u8],
    n: usize,
    sc: Scales<'_>,
    out: &mut [f32],
) {
    // `chunks_mut`: a partial last group (version 4) uses the first dimensions of its entry.
    for (g, o) in out.chunks_mut(D).enumerate() {
        let base = (g * n + reader.next() as usize) * D;
        let entry = &cb[base..base + D];
        for (e, o) in o.iter_mut().enumerate() {
            let off = sc.get((g * D + e) * 2);
            let step = sc.get((g * D + e) * 2 + 1);
            let p = step * entry[e] as f32;
            *o = off + p;
        }
    }
}

/// Decodes the groups of one tile segment of a row, int8 codebook with D = vector_dim.
#[inline(always)]
fn seg_i8<const D: usize>(
    reader: &mut BitReader<'_>,
    cb: &[u8],
    off: &[f32; 8],
    step: &[f32; 8],
    out: &mut [f32],
) {
    let (table, _) = cb.as_chunks::<D>();
    // Whole groups in fixed-width chunks (the hot loop keeps its D-wide body); a partial last
    // group (version 4) is the remainder.
    let mut groups = out.chunks_exact_mut(D);
    for o in &mut groups {
        let entry = &table[reader.next() as usize];
        for e in 0..D {
            // v = off + step * u, two roundings: Rust does not contract into an FMA.
            let p = step[e] * entry[e] as f32;
            o[e] = off[e] + p;
        }
    }
    let last = groups.into_remainder();
    if !last.is_empty() {
        let entry = &table[reader.next() as usize];
        for (e, o) in last.iter_mut().enumerate() {
            let p = step[e] * entry[e] as f32;
            *o = off[e] + p;
        }
    }
}

/// Decodes the groups of one tile segment of a row, f16 codebook with D = vector_dim.
#[inline(always)]
fn seg_f16<const D: usize>(reader: &mut BitReader<'_>, cb: &[u8], out: &mut [f32]) {
    let (table, _) = cb.as_chunks::<2>();
    for o in out.chunks_mut(D) {
        let base = reader.next() as usize * D;
        let entry = &table[base..base + D];
        for (o, &bytes) in o.iter_mut().zip(entry) {
            *o = f16_to_f32(u16::from_le_bytes(bytes));
        }
    }
}

/// Decodes the groups of one tile segment of a row from a codebook already converted to f32.
#[inline(always)]
fn seg_f32<const D: usize>(reader: &mut BitReader<'_>, cb: &[f32], out: &mut [f32]) {
    let (table, _) = cb.as_chunks::<D>();
    let mut groups = out.chunks_exact_mut(D);
    for o in &mut groups {
        o.copy_from_slice(&table[reader.next() as usize]);
    }
    let last = groups.into_remainder();
    if !last.is_empty() {
        last.copy_from_slice(&table[reader.next() as usize][..last.len()]);
    }
}

/// Paper layout (C = d) from the value table: group g of the row uses codebook t0 + g.
#[inline(always)]
fn paper_f32<const D: usize>(reader: &mut BitReader<'_>, table: &[f32], n: usize, out: &mut [f32]) {
    for (g, o) in out.chunks_mut(D).enumerate() {
        let base = (g * n + reader.next() as usize) * D;
        o.copy_from_slice(&table[base..base + o.len()]);
    }
}

/// Reads consecutive `bits`-wide fields of a little-endian, LSB-first bit stream.
struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
    acc: u64,
    have: u32,
    bits: u32,
    mask: u64,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8], bits: u32) -> Self {
        BitReader {
            bytes,
            pos: 0,
            acc: 0,
            have: 0,
            bits,
            mask: (1u64 << bits) - 1,
        }
    }

    /// The next field. Past the end of the bytes, missing bits read as zero (cannot happen
    /// for a row of S bytes read G times).
    #[inline(always)]
    fn next(&mut self) -> u32 {
        if self.have < self.bits {
            if let Some(word) = self.bytes.get(self.pos..self.pos + 8) {
                // Refill with whole bytes up to 56..=63 bits.
                let word = u64::from_le_bytes([
                    word[0], word[1], word[2], word[3], word[4], word[5], word[6], word[7],
                ]);
                let take = (63 - self.have) / 8;
                let keep = self.have + take * 8;
                self.acc |= (word << self.have) & ((1u64 << keep) - 1);
                self.pos += take as usize;
                self.have = keep;
            } else {
                while self.have <= 56 {
                    match self.bytes.get(self.pos) {
                        Some(&b) => {
                            self.acc |= (b as u64) << self.have;
                            self.pos += 1;
                            self.have += 8;
                        }
                        None => {
                            self.have = 64;
                            break;
                        }
                    }
                }
            }
        }
        let v = (self.acc & self.mask) as u32;
        self.acc >>= self.bits;
        self.have -= self.bits;
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Param;

    fn params(d: u32, n: u32, rows: u64, cols: u64) -> Params {
        Params {
            rows,
            cols,
            vector_dim: d,
            centroids: n,
            tile_rows: rows,
            tile_cols: cols,
            rank: 0,
            codebook: CodebookType::F16,
            rotation: 0,
            row_scales: false,
        }
    }

    #[test]
    fn row_scale_multiplies_the_codebook_value_before_the_lowrank_sum() {
        // One row, d = 1, n = 2, f16 codebook (1 + 2^-10, 3), rank 1, scale 1 + 2^-10.
        let p = Params {
            rank: 1,
            row_scales: true,
            ..params(1, 2, 1, 2)
        };
        let cb = [0x01, 0x3c, 0x00, 0x42];
        let a = [0x00, 0x3c]; // 1.0
        let b = [0x00, 0x00, 0x00, 0x1c]; // +0, 2^-8
        let rs = [0x01, 0x3c];
        let parts = Parts {
            indices: &[0b10],
            codebook: &cb,
            lowrank_a: &a,
            lowrank_b: &b,
            row_scales: &rs,
            ..Parts::default()
        };
        let enc = Encoded::new(p, parts).unwrap();
        enc.check().unwrap();
        let mut out = [0.0f32; 2];
        enc.decode_row(0, &mut out).unwrap();
        let s = 1.0f32 + 2f32.powi(-10);
        // Column 0: index 0, acc = 1 * +0 = +0. Column 1: index 1, acc = 2^-8, added unscaled.
        assert_eq!(out[0].to_bits(), (s * s).to_bits());
        assert_eq!(out[1].to_bits(), (3.0 * s + 2f32.powi(-8)).to_bits());
        assert_ne!(out[1], (3.0 + 2f32.powi(-8)) * s);
        let mut whole = [0.0f32; 2];
        enc.decode_into(&mut whole).unwrap();
        assert_eq!(whole, out);
        let bad = [0x00, 0x7c];
        let enc = Encoded::new(
            p,
            Parts {
                row_scales: &bad,
                ..parts
            },
        )
        .unwrap();
        assert_eq!(enc.check(), Err(DecodeError::NonFiniteRowScale { row: 0 }));
        assert_eq!(
            Encoded::new(
                p,
                Parts {
                    row_scales: &[],
                    ..parts
                }
            )
            .unwrap_err(),
            DecodeError::LengthMismatch {
                component: Component::RowScales,
                expected: 2,
                actual: 0
            }
        );
    }

    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
    }

    #[test]
    fn validate_names_the_bad_param() {
        let ok = params(2, 16, 4, 8);
        assert_eq!(ok.validate(), Ok(()));
        let bad = |p: Params, param: Param| match p.validate() {
            Err(DecodeError::InvalidParam { param: got, .. }) => assert_eq!(got, param),
            other => panic!("{other:?}"),
        };
        bad(Params { rows: 0, ..ok }, Param::Rows);
        bad(Params { cols: 0, ..ok }, Param::Cols);
        bad(Params { cols: 1, ..ok }, Param::Cols);
        // A partial last group (version 4): M need not be a multiple of d, C = M may not be.
        let partial = Params {
            cols: 7,
            tile_cols: 7,
            ..ok
        };
        assert_eq!(partial.validate(), Ok(()));
        assert_eq!((partial.groups(), partial.encoding_version()), (4, 4));
        bad(
            Params {
                tile_cols: 5,
                ..partial
            },
            Param::TileCols,
        );
        bad(
            Params {
                vector_dim: 0,
                ..ok
            },
            Param::VectorDim,
        );
        bad(
            Params {
                vector_dim: 9,
                ..ok
            },
            Param::VectorDim,
        );
        bad(Params { centroids: 1, ..ok }, Param::Centroids);
        bad(
            Params {
                centroids: 12,
                ..ok
            },
            Param::Centroids,
        );
        bad(
            Params {
                centroids: 131072,
                ..ok
            },
            Param::Centroids,
        );
        bad(Params { tile_rows: 0, ..ok }, Param::TileRows);
        bad(Params { tile_rows: 5, ..ok }, Param::TileRows);
        bad(Params { tile_cols: 1, ..ok }, Param::TileCols);
        bad(Params { tile_cols: 3, ..ok }, Param::TileCols);
        bad(
            Params {
                tile_cols: 10,
                ..ok
            },
            Param::TileCols,
        );
        bad(Params { rank: 5, ..ok }, Param::Rank);
        let wide = params(2, 4, 4, 64);
        for b in [1, 2, 8, 32, 128, 8192] {
            bad(
                Params {
                    rotation: b,
                    ..wide
                },
                Param::Rotation,
            );
        }
        bad(
            Params {
                rotation: 16,
                ..params(2, 4, 4, 24)
            },
            Param::Rotation,
        );
        for b in [0, 4, 16, 64] {
            assert_eq!(
                Params {
                    rotation: b,
                    ..wide
                }
                .validate(),
                Ok(())
            );
        }
    }

    #[test]
    fn rotation_is_an_orthonormal_hadamard_transform_with_signs() {
        // Column e_k of the rotation: decoding a unit row gives +-1/sqrt(B) * Hadamard column.
        let signs = [0b0000_0101u8, 0b0000_0001];
        for k in 0..16 {
            let mut row = [0.0f32; 16];
            row[k] = 1.0;
            rotate_row(&mut row, 16, &signs);
            for (j, &v) in row.iter().enumerate() {
                let hadamard = if (j & k).count_ones() % 2 == 0 {
                    0.25
                } else {
                    -0.25
                };
                let negated = (signs[j / 8] >> (j % 8)) & 1 == 1;
                assert_eq!(v, if negated { -hadamard } else { hadamard }, "k {k} j {j}");
            }
        }
        // Two blocks of 4 are independent; the norm is kept.
        let mut row = [1.0f32, 2.0, 3.0, 4.0, -1.0, 0.5, 0.0, 2.0];
        rotate_row(&mut row, 4, &[0]);
        assert_eq!(row, [5.0, -1.0, -2.0, 0.0, 0.75, -1.75, -1.25, 0.25]);
        // The spec's example (section 5, step 5).
        let mut row = [1.0f32, 2.0, 3.0, 4.0];
        rotate_row(&mut row, 4, &[0x05]);
        assert_eq!(row, [-5.0, -1.0, 2.0, 0.0]);
    }

    #[test]
    fn huge_dims_overflow_instead_of_wrapping() {
        let p = Params {
            tile_rows: 1,
            tile_cols: 1,
            ..params(1, 65536, u64::MAX, u64::MAX)
        };
        assert!(matches!(p.validate(), Err(DecodeError::Overflow { .. })));
        let p = Params {
            tile_rows: 1,
            tile_cols: 1,
            ..params(1, 65536, 1 << 24, 1 << 24)
        };
        assert!(
            matches!(p.validate(), Err(DecodeError::Overflow { .. })),
            "{:?}",
            p.validate()
        );
    }

    #[test]
    fn lengths_are_checked() {
        let p = params(2, 4, 3, 6);
        let cb = [0u8; 16];
        let idx = [0u8; 3];
        assert!(Encoded::new(
            p,
            Parts {
                indices: &idx,
                codebook: &cb,
                ..Parts::default()
            }
        )
        .is_ok());
        let err = Encoded::new(
            p,
            Parts {
                indices: &idx[..2],
                codebook: &cb,
                ..Parts::default()
            },
        )
        .unwrap_err();
        assert_eq!(
            err,
            DecodeError::LengthMismatch {
                component: Component::Indices,
                expected: 3,
                actual: 2
            }
        );
        let err = Encoded::new(
            p,
            Parts {
                indices: &idx,
                codebook: &cb,
                scales: &[0, 0, 0, 0],
                ..Parts::default()
            },
        )
        .unwrap_err();
        assert!(matches!(
            err,
            DecodeError::LengthMismatch {
                component: Component::Scales,
                ..
            }
        ));
    }

    #[test]
    fn bit_reader_matches_random_access() {
        let mut rng = Lcg(7);
        for bits in 1..=16u32 {
            let n = 1u32 << bits;
            for cols in [1u64, 2, 3, 7, 8, 9, 31, 64, 65, 200] {
                let p = Params {
                    centroids: n,
                    ..params(1, n, 2, cols)
                };
                let mut idx = std::vec![0u8; p.indices_len().unwrap()];
                idx.iter_mut().for_each(|b| *b = rng.next() as u8);
                let cb = std::vec![0u8; p.codebook_len().unwrap()];
                let e = Encoded::new(
                    p,
                    Parts {
                        indices: &idx,
                        codebook: &cb,
                        ..Parts::default()
                    },
                )
                .unwrap();
                for row in 0..2 {
                    let mut r = BitReader::new(e.index_row(row), bits);
                    for g in 0..cols {
                        assert_eq!(r.next(), e.index(row as u64, g).unwrap(), "b={bits} g={g}");
                    }
                }
            }
        }
    }

    #[test]
    fn check_reports_padding_and_non_finite() {
        let p = params(1, 4, 2, 3); // 3 groups * 2 bits = 6 bits: 2 padding bits per row
        let mut cb = [0u8; 8];
        let e = Encoded::new(
            p,
            Parts {
                indices: &[0x3f, 0x40],
                codebook: &cb,
                ..Parts::default()
            },
        )
        .unwrap();
        assert_eq!(e.check(), Err(DecodeError::NonZeroPadding { row: 1 }));
        cb[5] = 0x7c; // entry 2 = +inf
        let e = Encoded::new(
            p,
            Parts {
                indices: &[0, 0],
                codebook: &cb,
                ..Parts::default()
            },
        )
        .unwrap();
        assert_eq!(
            e.check(),
            Err(DecodeError::NonFiniteCodebook {
                codebook: 0,
                entry: 2,
                dim: 0
            })
        );
    }

    #[test]
    fn decode_row_rejects_bad_arguments() {
        let p = params(1, 2, 2, 3);
        let e = Encoded::new(
            p,
            Parts {
                indices: &[0, 0],
                codebook: &[0; 4],
                ..Parts::default()
            },
        )
        .unwrap();
        let mut out = [0.0f32; 3];
        assert_eq!(
            e.decode_row(2, &mut out),
            Err(DecodeError::RowOutOfRange { row: 2, rows: 2 })
        );
        assert!(matches!(
            e.decode_row(0, &mut out[..2]),
            Err(DecodeError::LengthMismatch {
                component: Component::Output,
                ..
            })
        ));
        assert_eq!(
            e.index(0, 3),
            Err(DecodeError::GroupOutOfRange {
                group: 3,
                groups: 3
            })
        );
    }
}

/// The column rotation of a decoded row (spec section 5, step 5), in place: in every block of
/// `block` columns a Walsh-Hadamard transform (butterfly stages h = 1, 2, 4, ..., block / 2,
/// each pair (x, y) becoming (x + y, x - y)), a multiplication by 1 / sqrt(block) (a power of
/// two, so exact), then column j negated where its sign bit is set.
///
/// `out.len()` must be a multiple of `block` (a power of two) and `signs` must hold
/// ceil(out.len() / 8) bytes.
pub fn rotate_row(out: &mut [f32], block: usize, signs: &[u8]) {
    // block = 4^k, so 1 / sqrt(block) = 2^-k exactly.
    let scale = 1.0 / (1u32 << (block.trailing_zeros() / 2)) as f32;
    for chunk in out.chunks_exact_mut(block) {
        // Stages h = 1 and 2 fused per group of four (the same additions in the same order, so
        // the same bits): one pass instead of two short-stride ones that do not vectorise.
        for q in chunk.chunks_exact_mut(4) {
            let (s0, s1, s2, s3) = (q[0] + q[1], q[0] - q[1], q[2] + q[3], q[2] - q[3]);
            q[0] = s0 + s2;
            q[1] = s1 + s3;
            q[2] = s0 - s2;
            q[3] = s1 - s3;
        }
        let mut h = 4;
        while h < block {
            for pair in chunk.chunks_exact_mut(2 * h) {
                let (lo, hi) = pair.split_at_mut(h);
                for (x, y) in lo.iter_mut().zip(hi) {
                    let (a, b) = (*x, *y);
                    *x = a + b;
                    *y = a - b;
                }
            }
            h *= 2;
        }
    }
    for (eight, &bits) in out.chunks_mut(8).zip(signs) {
        for (k, v) in eight.iter_mut().enumerate() {
            // Negation is exactly a flip of the sign bit; branch-free so the loop vectorises.
            let flip = u32::from((bits >> k) & 1) << 31;
            *v = f32::from_bits((*v * scale).to_bits() ^ flip);
        }
    }
}
