//! Non-finite values in tensors of the standard ggml types: the elements of F32, F16, BF16 and
//! F64 tensors, and the floating-point block scales of the quantized types. A NaN or infinity
//! there is never a weight a model was trained with; it is the file's fault, and a model run
//! from it silently computes NaN. (Athena weights have their own check, spec section 8 rule 7.)
//!
//! The scale offsets mirror the block structs of ggml's ggml-common.h; types whose scales are
//! not plain f16/f32 fields (IQ1_M, the ternary and FP4 types, Q1_0) have nothing checked here.

use crate::{GgmlType, TensorInfo};

/// What was found non-finite in one tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonFinite {
    /// Number of non-finite values (elements, or scales of quantized blocks).
    pub count: u64,
    /// Index of the first one (an element, or a block).
    pub first: u64,
    /// Whether the values are block scales (quantized types) rather than elements.
    pub in_scales: bool,
}

impl std::fmt::Display for NonFinite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.in_scales {
            write!(
                f,
                "{} non-finite block scale{} (NaN or infinity; the first in block {})",
                self.count,
                if self.count == 1 { "" } else { "s" },
                self.first
            )
        } else {
            write!(
                f,
                "{} non-finite value{} (NaN or infinity; the first at element {})",
                self.count,
                if self.count == 1 { "" } else { "s" },
                self.first
            )
        }
    }
}

/// How one value of a type is checked: its width and whether its bits are non-finite.
#[derive(Clone, Copy)]
enum Float {
    F16,
    Bf16,
    F32,
    F64,
}

impl Float {
    fn width(self) -> usize {
        match self {
            Float::F16 | Float::Bf16 => 2,
            Float::F32 => 4,
            Float::F64 => 8,
        }
    }

    /// True when the little-endian value at the start of `b` is a NaN or an infinity (all
    /// exponent bits set).
    fn non_finite(self, b: &[u8]) -> bool {
        match self {
            Float::F16 => u16::from_le_bytes([b[0], b[1]]) & 0x7c00 == 0x7c00,
            Float::Bf16 => u16::from_le_bytes([b[0], b[1]]) & 0x7f80 == 0x7f80,
            Float::F32 => u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x7f80_0000 == 0x7f80_0000,
            Float::F64 => {
                let mut a = [0u8; 8];
                a.copy_from_slice(&b[..8]);
                u64::from_le_bytes(a) & 0x7ff0_0000_0000_0000 == 0x7ff0_0000_0000_0000
            }
        }
    }
}

/// The floating-point fields of one block of `ty`: their kind and byte offsets in the block.
fn block_scales(ty: GgmlType) -> Option<(Float, &'static [usize])> {
    use GgmlType::*;
    Some(match ty {
        // ggml_half d (and m or s) at the start of the block.
        Q4_0 | Q5_0 | Q8_0 | IQ2_XXS | IQ2_XS | IQ2_S | IQ3_XXS | IQ3_S | IQ1_S | IQ4_NL
        | IQ4_XS => (Float::F16, &[0]),
        Q4_1 | Q5_1 | Q8_1 | Q4_K | Q5_K => (Float::F16, &[0, 2]),
        // scales[16], qs[64], then d and dmin.
        Q2_K => (Float::F16, &[80, 82]),
        // hmask[32], qs[64], scales[12], then d.
        Q3_K => (Float::F16, &[108]),
        // ql[128], qh[64], scales[16], then d.
        Q6_K => (Float::F16, &[208]),
        // float d first.
        Q8_K => (Float::F32, &[0]),
        _ => return None,
    })
}

/// The non-finite values of `t` (whose data is `data`), or `None` when every checked value is
/// finite or the type has no floating-point values to check.
pub fn non_finite(t: &TensorInfo, data: &[u8]) -> Option<NonFinite> {
    let (float, offsets, stride, in_scales) = match t.ggml_type {
        GgmlType::F32 => (Float::F32, &[0][..], 4, false),
        GgmlType::F16 => (Float::F16, &[0][..], 2, false),
        GgmlType::BF16 => (Float::Bf16, &[0][..], 2, false),
        GgmlType::F64 => (Float::F64, &[0][..], 8, false),
        ty => {
            let (float, offsets) = block_scales(ty)?;
            (float, offsets, ty.type_size() as usize, true)
        }
    };
    let mut count = 0u64;
    let mut first = None;
    for (index, unit) in data.chunks_exact(stride).enumerate() {
        let bad = offsets
            .iter()
            .filter(|&&o| {
                unit.get(o..o + float.width())
                    .is_some_and(|b| float.non_finite(b))
            })
            .count() as u64;
        if bad > 0 {
            count += bad;
            first.get_or_insert(index as u64);
        }
    }
    first.map(|first| NonFinite {
        count,
        first,
        in_scales,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(ty: GgmlType, ne0: u64) -> TensorInfo {
        TensorInfo {
            name: "t".into(),
            dims: vec![ne0],
            ggml_type: ty,
            offset: 0,
            size_bytes: ty.tensor_size(&[ne0]).unwrap(),
        }
    }

    #[test]
    fn plain_types_count_their_non_finite_elements() {
        let mut f32s: Vec<u8> = [1.0f32, f32::NAN, 2.0, f32::INFINITY, -f32::INFINITY]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let t = tensor(GgmlType::F32, 5);
        assert_eq!(
            non_finite(&t, &f32s),
            Some(NonFinite {
                count: 3,
                first: 1,
                in_scales: false
            })
        );
        f32s.truncate(4);
        assert_eq!(non_finite(&t, &f32s), None);
        // f16: 0x7c00 = inf, 0xfe00 = NaN, 0x7bff = the largest finite value.
        let f16s: Vec<u8> = [0x3c00u16, 0x7bff, 0x7c00, 0xfe00]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let r = non_finite(&tensor(GgmlType::F16, 4), &f16s).unwrap();
        assert_eq!((r.count, r.first), (2, 2));
        // bf16: 0x7f80 = inf, 0x7f7f = the largest finite value.
        let bf16s: Vec<u8> = [0x7f7fu16, 0x7f80]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let r = non_finite(&tensor(GgmlType::BF16, 2), &bf16s).unwrap();
        assert_eq!((r.count, r.first), (1, 1));
        assert!(non_finite(&tensor(GgmlType::I8, 4), &[0xff; 4]).is_none());
    }

    #[test]
    fn quantized_blocks_check_their_scales_only() {
        // Two Q8_0 blocks: quants of 0xff everywhere (an f16 NaN pattern, but quants are not
        // floats), then an infinite scale in block 1.
        let mut q8 = vec![0xffu8; 68];
        q8[0..2].copy_from_slice(&0x3c00u16.to_le_bytes());
        q8[34..36].copy_from_slice(&0x3c00u16.to_le_bytes());
        let t = tensor(GgmlType::Q8_0, 64);
        assert_eq!(non_finite(&t, &q8), None);
        q8[34..36].copy_from_slice(&0x7c00u16.to_le_bytes());
        assert_eq!(
            non_finite(&t, &q8),
            Some(NonFinite {
                count: 1,
                first: 1,
                in_scales: true
            })
        );
        // Q6_K keeps d at the end of its 210-byte block.
        let mut q6 = vec![0u8; 210];
        q6[208..210].copy_from_slice(&0x7e00u16.to_le_bytes());
        let r = non_finite(&tensor(GgmlType::Q6_K, 256), &q6).unwrap();
        assert_eq!((r.count, r.first, r.in_scales), (1, 0, true));
        assert!(r.to_string().contains("1 non-finite block scale "), "{r}");
    }
}
