//! Codebook storage (ATHENA-MATH 3): int8 codes with a per-dimension f16 offset and step, or plain
//! f16 values. The values the quantizer assigns to are exactly the values a decoder reconstructs.

use half::f16;

/// How codebook entries are stored in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodebookKind {
    /// u8 codes, value = offset + step * code per dimension (default).
    Int8,
    /// IEEE half values.
    F16,
}

/// One stored codebook of n centroids of dimension d.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCodebook {
    /// Reconstructed centroids (n x d), bit-identical to the decoder's values.
    pub values: Vec<f32>,
    /// Int8: codes (n x d); F16: the f16 bit patterns (n x d) stored as little-endian pairs.
    pub bytes: Vec<u8>,
    /// Int8 only: (offset, step) f16 bit patterns per dimension, interleaved.
    pub scales: Vec<u16>,
}

/// Stores `centroids` (n x d) in the given kind.
pub fn store(centroids: &[f32], d: usize, kind: CodebookKind) -> StoredCodebook {
    match kind {
        CodebookKind::F16 => {
            let halves: Vec<f16> = centroids.iter().map(|&c| f16::from_f32(c)).collect();
            StoredCodebook {
                values: halves.iter().map(|h| h.to_f32()).collect(),
                bytes: halves
                    .iter()
                    .flat_map(|h| h.to_bits().to_le_bytes())
                    .collect(),
                scales: Vec::new(),
            }
        }
        CodebookKind::Int8 => {
            let n = centroids.len() / d;
            let mut scales = Vec::with_capacity(2 * d);
            let mut codes = vec![0u8; n * d];
            let mut values = vec![0f32; n * d];
            for e in 0..d {
                let column = (0..n).map(|a| centroids[a * d + e]);
                let lo = column.clone().fold(f32::INFINITY, f32::min);
                let hi = column.fold(f32::NEG_INFINITY, f32::max);
                let offset = f16::from_f32(lo);
                // Round the step up so offset + 255 * step still reaches hi after f16 rounding.
                let mut step = f16::from_f32((hi - offset.to_f32()).max(0.0) / 255.0);
                if step.to_f32() * 255.0 + offset.to_f32() < hi {
                    step = f16::from_bits(step.to_bits() + 1);
                }
                let (off, st) = (offset.to_f32(), step.to_f32());
                for a in 0..n {
                    let code = if st > 0.0 {
                        ((centroids[a * d + e] - off) / st)
                            .round()
                            .clamp(0.0, 255.0) as u8
                    } else {
                        0
                    };
                    codes[a * d + e] = code;
                    // Two separate operations, as the spec requires (no fused multiply-add).
                    let scaled = st * code as f32;
                    values[a * d + e] = off + scaled;
                }
                scales.push(offset.to_bits());
                scales.push(step.to_bits());
            }
            StoredCodebook {
                values,
                bytes: codes,
                scales,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_codebook_error_is_at_most_half_a_step() {
        let centroids: Vec<f32> = (0..64)
            .map(|k| ((k * 37 % 64) as f32 - 20.0) * 0.013)
            .collect();
        let stored = store(&centroids, 2, CodebookKind::Int8);
        for e in 0..2 {
            let step = f16::from_bits(stored.scales[2 * e + 1]).to_f32();
            for a in 0..32 {
                let err = (stored.values[a * 2 + e] - centroids[a * 2 + e]).abs();
                assert!(
                    err <= step * 0.5 + 1e-6,
                    "entry {a},{e}: error {err} step {step}"
                );
            }
        }
    }

    #[test]
    fn constant_dimension_has_zero_step() {
        let stored = store(&[0.5, 1.0, 0.5, 2.0], 2, CodebookKind::Int8);
        assert_eq!(stored.values[0], 0.5);
        assert_eq!(stored.values[2], 0.5);
    }
}
