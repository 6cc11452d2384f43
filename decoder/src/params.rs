//! Per-weight parameters and the sizes derived from them.

use crate::error::{DecodeError, Param};

/// How codebook entries are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodebookType {
    /// One u8 per entry, dequantized with a per-(codebook, dimension) f16 offset and step.
    I8,
    /// One little-endian IEEE f16 per entry.
    F16,
}

impl CodebookType {
    /// The metadata spelling: `"i8"` or `"f16"`.
    pub fn name(self) -> &'static str {
        match self {
            CodebookType::I8 => "i8",
            CodebookType::F16 => "f16",
        }
    }

    /// Parses the metadata spelling (`"i8"` or `"f16"`, exact).
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "i8" => Some(CodebookType::I8),
            "f16" => Some(CodebookType::F16),
            _ => None,
        }
    }

    /// Bytes per stored codebook entry.
    pub fn entry_bytes(self) -> u64 {
        match self {
            CodebookType::I8 => 1,
            CodebookType::F16 => 2,
        }
    }
}

/// Parameters of one encoded weight (spec section "Parameters").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// N: rows (outputs).
    pub rows: u64,
    /// M: columns (inputs).
    pub cols: u64,
    /// d: columns per vector group.
    pub vector_dim: u32,
    /// n: centroids per codebook (a power of two).
    pub centroids: u32,
    /// R: rows per codebook tile.
    pub tile_rows: u64,
    /// C: columns per codebook tile.
    pub tile_cols: u64,
    /// r: rank of the low-rank residual (0 = none).
    pub rank: u32,
    /// Codebook storage.
    pub codebook: CodebookType,
    /// B: block size of the column rotation (a power of four in 4..=4096 dividing M), or 0 for
    /// none (encoding version 1).
    pub rotation: u32,
    /// rs: every row has an f16 scale that multiplies its codebook values (encoding version 3).
    pub row_scales: bool,
}

fn mul(a: u64, b: u64, what: &'static str) -> Result<u64, DecodeError> {
    a.checked_mul(b).ok_or(DecodeError::Overflow { what })
}

fn to_usize(v: u64, what: &'static str) -> Result<usize, DecodeError> {
    usize::try_from(v).map_err(|_| DecodeError::Overflow { what })
}

impl Params {
    /// Checks every constraint of the spec and that every derived size fits in u64 and usize.
    pub fn validate(&self) -> Result<(), DecodeError> {
        let invalid = |param, value: u64| Err(DecodeError::InvalidParam { param, value });
        let d = self.vector_dim as u64;
        if self.rows == 0 {
            return invalid(Param::Rows, self.rows);
        }
        if !(1..=8).contains(&self.vector_dim) {
            return invalid(Param::VectorDim, d);
        }
        if self.cols < d {
            return invalid(Param::Cols, self.cols);
        }
        if !(2..=65536).contains(&self.centroids) || !self.centroids.is_power_of_two() {
            return invalid(Param::Centroids, self.centroids as u64);
        }
        if self.tile_rows == 0 || self.tile_rows > self.rows {
            return invalid(Param::TileRows, self.tile_rows);
        }
        if self.tile_cols < d
            || self.tile_cols > self.cols
            || !(self.tile_cols.is_multiple_of(d) || self.tile_cols == self.cols)
        {
            return invalid(Param::TileCols, self.tile_cols);
        }
        if self.rank as u64 > self.rows.min(self.cols) {
            return invalid(Param::Rank, self.rank as u64);
        }
        let b = self.rotation;
        if b != 0
            && (!(4..=4096).contains(&b)
                || !b.is_power_of_two()
                || !b.trailing_zeros().is_multiple_of(2)
                || !self.cols.is_multiple_of(b as u64))
        {
            return invalid(Param::Rotation, b as u64);
        }
        self.output_len()?;
        self.indices_len()?;
        self.codebook_len()?;
        self.scales_len()?;
        self.lowrank_a_len()?;
        self.lowrank_b_len()?;
        self.signs_len()?;
        self.row_scales_len()?;
        Ok(())
    }

    /// b = log2(centroids): bits per packed index. Meaningful only for valid params.
    pub fn index_bits(&self) -> u32 {
        self.centroids.trailing_zeros()
    }

    /// G = ceil(cols / vector_dim): vector groups per row; when vector_dim does not divide
    /// cols, the last group of each row is partial (encoding version 4).
    pub fn groups(&self) -> u64 {
        self.cols.div_ceil(self.vector_dim.max(1) as u64)
    }

    /// S = ceil(G * b / 8): bytes of packed indices per row.
    pub fn row_stride_bytes(&self) -> Result<u64, DecodeError> {
        let bits = mul(
            self.groups(),
            self.index_bits() as u64,
            "index bits per row",
        )?;
        Ok(bits.div_ceil(8))
    }

    /// (TR, TC) = (ceil(N / R), ceil(M / C)): tiles along rows and columns.
    pub fn tiles(&self) -> (u64, u64) {
        (
            self.rows.div_ceil(self.tile_rows.max(1)),
            self.cols.div_ceil(self.tile_cols.max(1)),
        )
    }

    /// T = TR * TC: number of codebooks.
    pub fn codebooks(&self) -> Result<u64, DecodeError> {
        let (tr, tc) = self.tiles();
        mul(tr, tc, "number of codebooks")
    }

    /// N * M: number of decoded f32 values.
    pub fn output_len(&self) -> Result<usize, DecodeError> {
        let n = mul(self.rows, self.cols, "rows * cols")?;
        mul(n, 4, "output bytes")?;
        to_usize(n, "rows * cols")
    }

    /// Bytes of `<W>.athena_idx`: S * N.
    pub fn indices_len(&self) -> Result<usize, DecodeError> {
        let v = mul(self.row_stride_bytes()?, self.rows, "indices bytes")?;
        to_usize(v, "indices bytes")
    }

    /// Bytes of `<W>.athena_cb`: T * n * d * (1 for i8, 2 for f16).
    pub fn codebook_len(&self) -> Result<usize, DecodeError> {
        let what = "codebook bytes";
        let v = mul(self.codebooks()?, self.centroids as u64, what)?;
        let v = mul(v, self.vector_dim as u64, what)?;
        let v = mul(v, self.codebook.entry_bytes(), what)?;
        to_usize(v, what)
    }

    /// Bytes of `<W>.athena_cbs`: T * d * 2 * 2 for i8 codebooks, 0 for f16.
    pub fn scales_len(&self) -> Result<usize, DecodeError> {
        match self.codebook {
            CodebookType::F16 => Ok(0),
            CodebookType::I8 => {
                let what = "scales bytes";
                let v = mul(self.codebooks()?, self.vector_dim as u64, what)?;
                to_usize(mul(v, 4, what)?, what)
            }
        }
    }

    /// Bytes of `<W>.athena_lra`: N * r * 2.
    pub fn lowrank_a_len(&self) -> Result<usize, DecodeError> {
        let what = "lowrank_a bytes";
        let v = mul(self.rows, self.rank as u64, what)?;
        to_usize(mul(v, 2, what)?, what)
    }

    /// Bytes of `<W>.athena_lrb`: r * M * 2.
    pub fn lowrank_b_len(&self) -> Result<usize, DecodeError> {
        let what = "lowrank_b bytes";
        let v = mul(self.cols, self.rank as u64, what)?;
        to_usize(mul(v, 2, what)?, what)
    }

    /// Bytes of `<W>.athena_rot`: ceil(M / 8) with a rotation, 0 without.
    pub fn signs_len(&self) -> Result<usize, DecodeError> {
        let v = if self.rotation == 0 {
            0
        } else {
            self.cols.div_ceil(8)
        };
        to_usize(v, "signs bytes")
    }

    /// Bytes of `<W>.athena_rs`: 2 * N with row scales, 0 without.
    pub fn row_scales_len(&self) -> Result<usize, DecodeError> {
        let v = if self.row_scales {
            mul(self.rows, 2, "row scales bytes")?
        } else {
            0
        };
        to_usize(v, "row scales bytes")
    }

    /// The lowest encoding version that can hold these parameters: 4 with a partial last
    /// group (vector_dim does not divide cols), else 3 with row scales, else 2 with a rotation,
    /// else 1.
    pub fn encoding_version(&self) -> u32 {
        if !self.cols.is_multiple_of(self.vector_dim.max(1) as u64) {
            4
        } else if self.row_scales {
            3
        } else if self.rotation != 0 {
            2
        } else {
            1
        }
    }

    /// Total bytes of all components (the numerator of bpw, divided by 8).
    pub fn total_bytes(&self) -> Result<u64, DecodeError> {
        let mut total = 0u64;
        for len in [
            self.indices_len()?,
            self.codebook_len()?,
            self.scales_len()?,
            self.lowrank_a_len()?,
            self.lowrank_b_len()?,
            self.signs_len()?,
            self.row_scales_len()?,
        ] {
            total = total.checked_add(len as u64).ok_or(DecodeError::Overflow {
                what: "total bytes",
            })?;
        }
        Ok(total)
    }
}

/// The configuration in one short line, as the converter's and athena-verify's tables print it:
/// `d=3 n=512 tile=344x576 i8 r=0`, plus ` rot=B` when rotated and ` rs` with row scales.
///
/// ```
/// # use athena_decode::{CodebookType, Params};
/// let p = Params {
///     rows: 576, cols: 576, vector_dim: 3, centroids: 512, tile_rows: 344, tile_cols: 576,
///     rank: 0, codebook: CodebookType::I8, rotation: 64, row_scales: false,
/// };
/// assert_eq!(p.to_string(), "d=3 n=512 tile=344x576 i8 r=0 rot=64");
/// ```
impl core::fmt::Display for Params {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "d={} n={} tile={}x{} {} r={}",
            self.vector_dim,
            self.centroids,
            self.tile_rows,
            self.tile_cols,
            self.codebook.name(),
            self.rank
        )?;
        if self.rotation > 0 {
            write!(f, " rot={}", self.rotation)?;
        }
        if self.row_scales {
            write!(f, " rs")?;
        }
        Ok(())
    }
}
