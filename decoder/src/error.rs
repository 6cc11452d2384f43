//! The typed error of the decoder.

use core::fmt;

/// A parameter of [`crate::Params`], named in [`DecodeError::InvalidParam`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Param {
    /// `rows` (N): must be >= 1.
    Rows,
    /// `cols` (M): must be >= `vector_dim`.
    Cols,
    /// `vector_dim` (d): must be in 1..=8.
    VectorDim,
    /// `centroids` (n): must be a power of two in 2..=65536.
    Centroids,
    /// `tile_rows` (R): must be in 1..=rows.
    TileRows,
    /// `tile_cols` (C): must be a multiple of `vector_dim` in vector_dim..=cols.
    TileCols,
    /// `rank` (r): must be <= min(rows, cols).
    Rank,
    /// `rotation` (B): must be 0 or a power of four in 4..=4096 that divides cols.
    Rotation,
}

impl Param {
    /// The parameter's name as written in `params.txt` and in the spec.
    pub fn name(self) -> &'static str {
        match self {
            Param::Rows => "rows",
            Param::Cols => "cols",
            Param::VectorDim => "vector_dim",
            Param::Centroids => "centroids",
            Param::TileRows => "tile_rows",
            Param::TileCols => "tile_cols",
            Param::Rank => "rank",
            Param::Rotation => "rotation",
        }
    }

    /// The constraint the parameter violated, in words.
    pub fn constraint(self) -> &'static str {
        match self {
            Param::Rows => "must be >= 1",
            Param::Cols => "must be >= vector_dim",
            Param::VectorDim => "must be in 1..=8",
            Param::Centroids => "must be a power of two in 2..=65536",
            Param::TileRows => "must be in 1..=rows",
            Param::TileCols => "must be in vector_dim..=cols, a multiple of vector_dim or cols",
            Param::Rank => "must be <= min(rows, cols)",
            Param::Rotation => "must be 0 or a power of four in 4..=4096 that divides cols",
        }
    }
}

/// One of the component byte buffers of an encoded tensor (or the caller's output buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// `<W>.athena_idx`: packed indices.
    Indices,
    /// `<W>.athena_cb`: codebooks.
    Codebook,
    /// `<W>.athena_cbs`: int8 codebook offsets and steps.
    Scales,
    /// `<W>.athena_lra`: low-rank factor A (N x r).
    LowRankA,
    /// `<W>.athena_lrb`: low-rank factor B (r x M).
    LowRankB,
    /// `<W>.athena_rot`: the column rotation's sign bits.
    Signs,
    /// `<W>.athena_rs`: the per-row scales.
    RowScales,
    /// The caller's output buffer (counted in f32 values, not bytes).
    Output,
}

impl Component {
    /// Short name, as used in file names of the test vectors.
    pub fn name(self) -> &'static str {
        match self {
            Component::Indices => "indices",
            Component::Codebook => "codebook",
            Component::Scales => "scales",
            Component::LowRankA => "lowrank_a",
            Component::LowRankB => "lowrank_b",
            Component::Signs => "signs",
            Component::RowScales => "row_scales",
            Component::Output => "output",
        }
    }
}

/// Which half of an int8 codebook scale pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleField {
    /// The offset (`lo`), element `(t*d + j)*2`.
    Offset,
    /// The step, element `(t*d + j)*2 + 1`.
    Step,
}

/// Everything that can be wrong with an encoded tensor or a decode call.
///
/// Every variant names the offending field or position. [`DecodeError::code`] gives a stable
/// snake_case name shared with the C port (`athena_status_name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[allow(missing_docs)] // the fields are named for what they hold
pub enum DecodeError {
    /// A parameter violates its constraint.
    InvalidParam { param: Param, value: u64 },
    /// A size derived from the parameters does not fit in u64 / usize.
    Overflow { what: &'static str },
    /// A component buffer has the wrong length (bytes; f32 values for [`Component::Output`]).
    LengthMismatch {
        component: Component,
        expected: u64,
        actual: u64,
    },
    /// A row number is >= rows.
    RowOutOfRange { row: u64, rows: u64 },
    /// A group number is >= cols / vector_dim.
    GroupOutOfRange { group: u64, groups: u64 },
    /// An index is >= centroids (cannot happen while centroids is a power of two).
    IndexOutOfRange { row: u64, group: u64, index: u32 },
    /// A padding bit at the end of a row of packed indices is set.
    NonZeroPadding { row: u64 },
    /// A padding bit at the end of the rotation's sign bits is set.
    NonZeroSignPadding,
    /// A codebook value is infinite or NaN (f16 codebooks only).
    NonFiniteCodebook { codebook: u64, entry: u32, dim: u32 },
    /// An int8 codebook offset or step is infinite or NaN.
    NonFiniteScale {
        codebook: u64,
        dim: u32,
        field: ScaleField,
    },
    /// A low-rank factor value is infinite or NaN; `component` is LowRankA or LowRankB.
    NonFiniteLowRank {
        component: Component,
        row: u64,
        col: u64,
    },
    /// A row scale is infinite or NaN.
    NonFiniteRowScale { row: u64 },
}

impl DecodeError {
    /// Stable machine-readable name, identical to the C port's status names.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::InvalidParam { .. } => "invalid_param",
            DecodeError::Overflow { .. } => "overflow",
            DecodeError::LengthMismatch { .. } => "length_mismatch",
            DecodeError::RowOutOfRange { .. } => "row_out_of_range",
            DecodeError::GroupOutOfRange { .. } => "group_out_of_range",
            DecodeError::IndexOutOfRange { .. } => "index_out_of_range",
            DecodeError::NonZeroPadding { .. } => "nonzero_padding",
            DecodeError::NonZeroSignPadding => "nonzero_sign_padding",
            DecodeError::NonFiniteCodebook { .. } => "non_finite_codebook",
            DecodeError::NonFiniteScale { .. } => "non_finite_scale",
            DecodeError::NonFiniteLowRank { .. } => "non_finite_lowrank",
            DecodeError::NonFiniteRowScale { .. } => "non_finite_row_scale",
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DecodeError::InvalidParam { param, value } => {
                write!(
                    f,
                    "invalid {} = {}: {}",
                    param.name(),
                    value,
                    param.constraint()
                )
            }
            DecodeError::Overflow { what } => write!(f, "size overflow computing {}", what),
            DecodeError::LengthMismatch {
                component,
                expected,
                actual,
            } => write!(
                f,
                "{} has length {}, expected {}",
                component.name(),
                actual,
                expected
            ),
            DecodeError::RowOutOfRange { row, rows } => {
                write!(f, "row {} out of range (rows = {})", row, rows)
            }
            DecodeError::GroupOutOfRange { group, groups } => {
                write!(f, "group {} out of range (groups = {})", group, groups)
            }
            DecodeError::IndexOutOfRange { row, group, index } => {
                write!(
                    f,
                    "index {} at row {}, group {} is >= centroids",
                    index, row, group
                )
            }
            DecodeError::NonZeroPadding { row } => {
                write!(f, "non-zero padding bits at the end of index row {}", row)
            }
            DecodeError::NonZeroSignPadding => {
                write!(f, "non-zero padding bits at the end of the rotation signs")
            }
            DecodeError::NonFiniteCodebook {
                codebook,
                entry,
                dim,
            } => write!(
                f,
                "non-finite value in codebook {}, entry {}, dimension {}",
                codebook, entry, dim
            ),
            DecodeError::NonFiniteScale {
                codebook,
                dim,
                field,
            } => write!(
                f,
                "non-finite {} in codebook {}, dimension {}",
                match field {
                    ScaleField::Offset => "offset",
                    ScaleField::Step => "step",
                },
                codebook,
                dim
            ),
            DecodeError::NonFiniteLowRank {
                component,
                row,
                col,
            } => write!(
                f,
                "non-finite value in {} at row {}, column {}",
                component.name(),
                row,
                col
            ),
            DecodeError::NonFiniteRowScale { row } => {
                write!(f, "non-finite row scale at row {}", row)
            }
        }
    }
}

impl core::error::Error for DecodeError {}
