//! Plain llama.cpp tensor encodings: F32, F16, BF16 and Q8_0, and which one each tensor gets.
//!
//! The choice follows llama.cpp's `convert_hf_to_gguf.py` (`prepare_tensors`):
//! - 1-D tensors, `*_norm.weight` and anything not named `*.weight` (biases) stay F32;
//! - every other tensor gets the requested type;
//! - Q8_0 needs the row length (`ne[0]`) to be a multiple of 32; a tensor whose rows are not falls
//!   back to F16, as gguf-py's `QuantError` handler does.
//!
//! Rounding: F16 and BF16 round to nearest, ties to even (numpy's `astype(float16)` and ggml's
//! `ggml_compute_fp32_to_bf16`; NaN stays NaN). Q8_0 is ggml's `quantize_row_q8_0_ref`: blocks of
//! 32, `d = amax / 127` in f32, `q = roundf(x / d)` computed as `x * (1 / d)` (0 when `d == 0`),
//! ties away from zero, and `d` stored as f16.

use crate::container::gguf::GgmlType;

/// The output types of a plain (llama.cpp-compatible) export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlainType {
    F32,
    F16,
    BF16,
    Q8_0,
}

/// Elements per Q8_0 block.
pub const Q8_0_BLOCK: usize = 32;
/// Bytes per Q8_0 block: an f16 scale and 32 signed bytes.
pub const Q8_0_BLOCK_BYTES: usize = 2 + Q8_0_BLOCK;

impl PlainType {
    pub const ALL: [PlainType; 4] = [
        PlainType::F32,
        PlainType::F16,
        PlainType::BF16,
        PlainType::Q8_0,
    ];

    /// The lowercase name used on the command line (`f32`, `f16`, `bf16`, `q8_0`).
    pub fn name(self) -> &'static str {
        match self {
            PlainType::F32 => "f32",
            PlainType::F16 => "f16",
            PlainType::BF16 => "bf16",
            PlainType::Q8_0 => "q8_0",
        }
    }

    /// The ggml type of the bulk of the tensors.
    pub fn ggml_type(self) -> GgmlType {
        match self {
            PlainType::F32 => GgmlType::F32,
            PlainType::F16 => GgmlType::F16,
            PlainType::BF16 => GgmlType::BF16,
            PlainType::Q8_0 => GgmlType::Q8_0,
        }
    }

    /// `general.file_type`: llama.cpp's `LlamaFileType` (ALL_F32 0, MOSTLY_F16 1, MOSTLY_Q8_0 7,
    /// MOSTLY_BF16 32).
    pub fn file_type(self) -> u32 {
        match self {
            PlainType::F32 => 0,
            PlainType::F16 => 1,
            PlainType::Q8_0 => 7,
            PlainType::BF16 => 32,
        }
    }
}

impl std::fmt::Display for PlainType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for PlainType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PlainType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown type '{s}' (expected f32, f16, bf16 or q8_0)"))
    }
}

/// The ggml type one tensor is written as, given the requested type, its GGUF name and its dims
/// (GGUF order, `ne[0]` first). See the module documentation for the rules.
pub fn tensor_type(requested: PlainType, gguf_name: &str, dims: &[u64]) -> GgmlType {
    let n_dims = dims.len();
    if n_dims <= 1 || gguf_name.ends_with("_norm.weight") || !gguf_name.ends_with(".weight") {
        return GgmlType::F32;
    }
    match requested {
        PlainType::Q8_0 if !dims[0].is_multiple_of(Q8_0_BLOCK as u64) => GgmlType::F16,
        t => t.ggml_type(),
    }
}

/// Errors from [`encode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("type {0} is not a plain export type (F32, F16, BF16, Q8_0)")]
    UnsupportedType(&'static str),
    #[error("{len} elements are not a whole number of Q8_0 blocks of 32")]
    PartialBlock { len: usize },
}

/// Encodes f32 values (row-major) as little-endian bytes of `ty`.
pub fn encode(ty: GgmlType, data: &[f32]) -> Result<Vec<u8>, EncodeError> {
    match ty {
        GgmlType::F32 => Ok(data.iter().flat_map(|x| x.to_le_bytes()).collect()),
        GgmlType::F16 => Ok(data
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect()),
        GgmlType::BF16 => Ok(data
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect()),
        GgmlType::Q8_0 => quantize_q8_0(data),
        other => Err(EncodeError::UnsupportedType(other.name())),
    }
}

/// ggml's reference Q8_0 quantization (see the module documentation).
pub fn quantize_q8_0(data: &[f32]) -> Result<Vec<u8>, EncodeError> {
    if !data.len().is_multiple_of(Q8_0_BLOCK) {
        return Err(EncodeError::PartialBlock { len: data.len() });
    }
    let mut out = Vec::with_capacity(data.len() / Q8_0_BLOCK * Q8_0_BLOCK_BYTES);
    for block in data.chunks_exact(Q8_0_BLOCK) {
        let amax = block.iter().fold(0f32, |m, x| m.max(x.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend(half::f16::from_f32(d).to_le_bytes());
        out.extend(block.iter().map(|&x| ((x * id).round() as i8) as u8));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::k_quants::{BlockQ8_0, GgmlType as CandleBlock};

    fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32 - 0.5) * 4.0
            })
            .collect()
    }

    /// Our Q8_0 bytes are exactly candle's `BlockQ8_0::from_float` (a transcription of ggml's).
    #[test]
    fn q8_0_matches_candle() {
        let mut xs = pseudo_random(32 * 64, 7);
        // Edge cases: an all-zero block, a block with ties at .5 after scaling, huge and tiny values.
        xs[..32].fill(0.0);
        for (i, x) in xs[32..64].iter_mut().enumerate() {
            *x = if i == 0 { 127.0 } else { i as f32 + 0.5 };
        }
        xs[64] = 1e30;
        xs[100] = -1e-30;
        let ours = quantize_q8_0(&xs).unwrap();
        let mut blocks = vec![BlockQ8_0::zeros(); xs.len() / 32];
        BlockQ8_0::from_float(&xs, &mut blocks);
        assert_eq!(std::mem::size_of::<BlockQ8_0>(), Q8_0_BLOCK_BYTES);
        // SAFETY: BlockQ8_0 is repr(C) { d: f16, qs: [i8; 32] }, 34 bytes without padding.
        let theirs: &[u8] =
            unsafe { std::slice::from_raw_parts(blocks.as_ptr().cast::<u8>(), blocks.len() * 34) };
        assert_eq!(ours, theirs);
    }

    #[test]
    fn q8_0_error_is_within_half_a_step() {
        let xs = pseudo_random(32 * 16, 3);
        let q = quantize_q8_0(&xs).unwrap();
        let back =
            crate::checkpoint::gguf_source::dequantize(GgmlType::Q8_0, &q, xs.len()).unwrap();
        for (b, (block, back)) in xs.chunks(32).zip(back.chunks(32)).enumerate() {
            let amax = block.iter().fold(0f32, |m, x| m.max(x.abs()));
            // Half a step of the f16-rounded scale, plus the scale's own rounding over 127 steps.
            let bound = amax / 127.0 * 0.5 + amax * 1e-3;
            for (x, y) in block.iter().zip(back) {
                assert!(
                    (x - y).abs() <= bound,
                    "block {b}: {x} -> {y} (bound {bound})"
                );
            }
        }
    }

    #[test]
    fn half_types_round_to_nearest_even() {
        let xs = [1.0f32, -2.5, 65504.0, 1.0 + 1.0 / 2048.0, f32::NAN];
        let f16 = encode(GgmlType::F16, &xs).unwrap();
        assert_eq!(&f16[..2], &0x3c00u16.to_le_bytes());
        // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even gives 1.
        assert_eq!(&f16[6..8], &0x3c00u16.to_le_bytes());
        assert!(half::f16::from_le_bytes([f16[8], f16[9]]).is_nan());
        let bf = encode(GgmlType::BF16, &[1.0, 1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0]).unwrap();
        assert_eq!(bf, [0x80, 0x3f, 0x80, 0x3f, 0x82, 0x3f]);
        let f32b = encode(GgmlType::F32, &[1.5]).unwrap();
        assert_eq!(f32b, 1.5f32.to_le_bytes());
        assert!(encode(GgmlType::Q4_0, &[0.0; 32]).is_err());
        assert!(quantize_q8_0(&[0.0; 33]).is_err());
    }

    #[test]
    fn type_choice_follows_llama_cpp() {
        use GgmlType as G;
        let w = [576u64, 1536];
        assert_eq!(
            tensor_type(PlainType::F16, "blk.0.ffn_up.weight", &w),
            G::F16
        );
        assert_eq!(
            tensor_type(PlainType::BF16, "token_embd.weight", &w),
            G::BF16
        );
        assert_eq!(
            tensor_type(PlainType::Q8_0, "blk.0.ffn_up.weight", &w),
            G::Q8_0
        );
        assert_eq!(
            tensor_type(PlainType::F16, "blk.0.attn_norm.weight", &[576]),
            G::F32
        );
        assert_eq!(
            tensor_type(PlainType::Q8_0, "blk.0.attn_q.bias", &[576]),
            G::F32
        );
        assert_eq!(
            tensor_type(PlainType::Q8_0, "output_norm.weight", &[576]),
            G::F32
        );
        // Rows of 40 are not whole Q8_0 blocks: F16, as llama.cpp falls back.
        assert_eq!(
            tensor_type(PlainType::Q8_0, "blk.0.attn_k.weight", &[40, 64]),
            G::F16
        );
        assert_eq!(
            tensor_type(PlainType::F32, "blk.0.attn_k.weight", &[40, 64]),
            G::F32
        );
        for t in PlainType::ALL {
            assert_eq!(t.name().parse::<PlainType>().unwrap(), t);
        }
        assert!("q4_0".parse::<PlainType>().unwrap_err().contains("q8_0"));
    }
}
