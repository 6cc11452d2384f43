//! The table of standard ggml tensor types: id, name, block size and bytes per block.
//!
//! Ids and sizes mirror ggml's `ggml_type` enum and `type_traits` table (ggml.h / ggml.c), cross-checked
//! against gguf-py 0.19.0's `GGML_QUANT_SIZES`. Ids 4, 5 (Q4_2, Q4_3), 31..=33 (Q4_0_4_4, Q4_0_4_8,
//! Q4_0_8_8) and 36..=38 (IQ4_NL_4_4, IQ4_NL_4_8, IQ4_NL_8_8) were removed from ggml and are unknown here,
//! as in llama.cpp: a file using them is rejected.

/// A standard ggml tensor type. The discriminant is the on-disk type id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    IQ2_XXS = 16,
    IQ2_XS = 17,
    IQ3_XXS = 18,
    IQ1_S = 19,
    IQ4_NL = 20,
    IQ3_S = 21,
    IQ2_S = 22,
    IQ4_XS = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    IQ1_M = 29,
    BF16 = 30,
    TQ1_0 = 34,
    TQ2_0 = 35,
    MXFP4 = 39,
    NVFP4 = 40,
    Q1_0 = 41,
}

/// (type, name, block size in elements, bytes per block), in id order.
const TABLE: &[(GgmlType, &str, u64, u64)] = &[
    (GgmlType::F32, "F32", 1, 4),
    (GgmlType::F16, "F16", 1, 2),
    (GgmlType::Q4_0, "Q4_0", 32, 18),
    (GgmlType::Q4_1, "Q4_1", 32, 20),
    (GgmlType::Q5_0, "Q5_0", 32, 22),
    (GgmlType::Q5_1, "Q5_1", 32, 24),
    (GgmlType::Q8_0, "Q8_0", 32, 34),
    (GgmlType::Q8_1, "Q8_1", 32, 40),
    (GgmlType::Q2_K, "Q2_K", 256, 84),
    (GgmlType::Q3_K, "Q3_K", 256, 110),
    (GgmlType::Q4_K, "Q4_K", 256, 144),
    (GgmlType::Q5_K, "Q5_K", 256, 176),
    (GgmlType::Q6_K, "Q6_K", 256, 210),
    (GgmlType::Q8_K, "Q8_K", 256, 292),
    (GgmlType::IQ2_XXS, "IQ2_XXS", 256, 66),
    (GgmlType::IQ2_XS, "IQ2_XS", 256, 74),
    (GgmlType::IQ3_XXS, "IQ3_XXS", 256, 98),
    (GgmlType::IQ1_S, "IQ1_S", 256, 50),
    (GgmlType::IQ4_NL, "IQ4_NL", 32, 18),
    (GgmlType::IQ3_S, "IQ3_S", 256, 110),
    (GgmlType::IQ2_S, "IQ2_S", 256, 82),
    (GgmlType::IQ4_XS, "IQ4_XS", 256, 136),
    (GgmlType::I8, "I8", 1, 1),
    (GgmlType::I16, "I16", 1, 2),
    (GgmlType::I32, "I32", 1, 4),
    (GgmlType::I64, "I64", 1, 8),
    (GgmlType::F64, "F64", 1, 8),
    (GgmlType::IQ1_M, "IQ1_M", 256, 56),
    (GgmlType::BF16, "BF16", 1, 2),
    (GgmlType::TQ1_0, "TQ1_0", 256, 54),
    (GgmlType::TQ2_0, "TQ2_0", 256, 66),
    (GgmlType::MXFP4, "MXFP4", 32, 17),
    (GgmlType::NVFP4, "NVFP4", 64, 36),
    (GgmlType::Q1_0, "Q1_0", 128, 18),
];

impl GgmlType {
    /// Every known type, in id order.
    pub fn all() -> impl Iterator<Item = GgmlType> {
        TABLE.iter().map(|e| e.0)
    }

    /// The type with on-disk id `id`, or `None` for an unknown or removed id.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        TABLE.iter().find(|e| e.0 as u32 == id).map(|e| e.0)
    }

    /// The type whose ggml name (e.g. `"Q8_0"`) is `name`.
    pub fn from_name(name: &str) -> Option<GgmlType> {
        TABLE.iter().find(|e| e.1 == name).map(|e| e.0)
    }

    fn entry(self) -> &'static (GgmlType, &'static str, u64, u64) {
        // Every variant has exactly one table row (checked by a unit test), so the search succeeds.
        TABLE.iter().find(|e| e.0 == self).unwrap_or(&TABLE[0])
    }

    /// On-disk type id.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// ggml's name for the type, e.g. `"Q8_0"`.
    pub fn name(self) -> &'static str {
        self.entry().1
    }

    /// Elements per block (1 for plain types).
    pub fn block_size(self) -> u64 {
        self.entry().2
    }

    /// Bytes per block.
    pub fn type_size(self) -> u64 {
        self.entry().3
    }

    /// True for the types whose elements are stored one by one (block size 1).
    pub fn is_plain(self) -> bool {
        self.block_size() == 1
    }

    /// Bytes of a row of `ne0` elements; `None` if `ne0` is not a multiple of the block size or on overflow.
    pub fn row_size(self, ne0: u64) -> Option<u64> {
        let bs = self.block_size();
        if !ne0.is_multiple_of(bs) {
            return None;
        }
        (ne0 / bs).checked_mul(self.type_size())
    }

    /// Bytes of a tensor with dims `dims` (ne order, innermost first); `None` if `dims` is empty, a dim is
    /// zero, `dims[0]` is not a multiple of the block size, or on overflow.
    pub fn tensor_size(self, dims: &[u64]) -> Option<u64> {
        let (&ne0, rest) = dims.split_first()?;
        if dims.contains(&0) {
            return None;
        }
        let mut size = self.row_size(ne0)?;
        for &d in rest {
            size = size.checked_mul(d)?;
        }
        Some(size)
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        let mut last = None;
        for &(t, name, bs, ts) in TABLE {
            assert!(
                last.is_none_or(|l| l < t.id()),
                "table not in id order at {name}"
            );
            last = Some(t.id());
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            assert_eq!(GgmlType::from_name(name), Some(t));
            assert_eq!(t.name(), name);
            assert_eq!(t.block_size(), bs);
            assert_eq!(t.type_size(), ts);
        }
        assert_eq!(TABLE.len(), 34);
    }

    #[test]
    fn removed_and_unknown_ids() {
        for id in [4, 5, 31, 32, 33, 36, 37, 38, 42, 1000, u32::MAX] {
            assert_eq!(GgmlType::from_id(id), None, "id {id}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(GgmlType::Q8_0.row_size(64), Some(68));
        assert_eq!(GgmlType::Q8_0.row_size(33), None);
        assert_eq!(GgmlType::BF16.tensor_size(&[3, 5]), Some(30));
        assert_eq!(GgmlType::I8.tensor_size(&[7]), Some(7));
        assert_eq!(GgmlType::F32.tensor_size(&[]), None);
        assert_eq!(GgmlType::F32.tensor_size(&[2, 0]), None);
        assert_eq!(GgmlType::F32.tensor_size(&[u64::MAX / 2, 2]), None);
        assert_eq!(GgmlType::Q4_K.tensor_size(&[256, 2]), Some(288));
    }
}
