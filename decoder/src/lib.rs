//! Reference dequantizer for the Athena vector-codebook encoding
//! (`format-spec/athena-encoding.md`, encoding versions 1 to 4).
//!
//! `no_std`, no dependencies; the `alloc` feature adds [`Encoded::decode`].
//!
//! ```
//! use athena_decode::{CodebookType, Encoded, Params, Parts};
//! let params = Params {
//!     rows: 1, cols: 4, vector_dim: 2, centroids: 2, tile_rows: 1, tile_cols: 4,
//!     rank: 0, codebook: CodebookType::F16, rotation: 0, row_scales: false,
//! };
//! // Two groups with indices 1, 0 (LSB first: 0b01); codebook entries (1, 2) and (3, 4).
//! let codebook = [0x00, 0x3c, 0x00, 0x40, 0x00, 0x42, 0x00, 0x44];
//! let enc = Encoded::new(params, Parts { indices: &[0b01], codebook: &codebook, ..Parts::default() })?;
//! enc.check()?;
//! let mut out = [0.0f32; 4];
//! enc.decode_row(0, &mut out)?;
//! assert_eq!(out, [3.0, 4.0, 1.0, 2.0]);
//! # Ok::<(), athena_decode::DecodeError>(())
//! ```
//!
//! Bit-exactness: all arithmetic is IEEE-754 binary32 with round-to-nearest-even, each
//! multiply and add rounded separately (the row-scale product is the one that is not exact, so
//! a fused multiply-add would change results). Rust never contracts `a * b + c` into a fused
//! multiply-add (there is no fast-math), so the code below is exact as written.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(test)]
extern crate std;

mod encoded;
mod error;
mod f16;
mod params;

pub use encoded::{rotate_row, Encoded, Parts};
pub use error::{Component, DecodeError, Param, ScaleField};
pub use f16::{f16_is_finite, f16_to_f32};
pub use params::{CodebookType, Params};
