//! Dot-product kernels behind one interface: a portable scalar reference ([`scalar`]) and SIMD
//! versions with the same signatures ([`avx2`] on x86-64 with AVX2/FMA/F16C, chosen at run time;
//! [`neon`] on aarch64). Every SIMD kernel is tested against the scalar one.
//!
//! `ATHENA_KERNELS=scalar` in the environment forces the scalar kernels (for comparisons).

#[cfg(target_arch = "x86_64")]
pub mod avx2;
#[cfg(target_arch = "aarch64")]
pub mod neon;
pub mod scalar;

use std::sync::OnceLock;

/// One row's run of codebook-encoded groups that share a codebook, and the input they multiply.
///
/// `table` holds the codebook as f32, each centroid padded to `dp` lanes (dp = 1, 2, 4 or 8, the
/// smallest power of two >= d) with zeros; `xp` holds the matching input, also `dp` lanes per
/// group (the padding lanes and the columns past a partial last group are zero). So the dot
/// product is sum over groups g of `table[a_g * dp + e] * xp[g * dp + e]`, a_g the g-th index.
#[derive(Clone, Copy)]
pub struct VqSlice<'a> {
    pub table: &'a [f32],
    pub dp: usize,
    /// The index bytes; reads may look past the row (up to 8 bytes), never past the slice.
    pub indices: &'a [u8],
    /// Bit position of the first group's index in `indices` (LSB-first packing, spec section 4).
    pub first_bit: usize,
    /// Bits per index b (n = 2^b centroids, so every index is a valid centroid).
    pub bits: u32,
    pub groups: usize,
    pub xp: &'a [f32],
}

/// Reads the b-bit fields of a packed index row one after another.
pub struct IndexStream<'a> {
    data: &'a [u8],
    bit: usize,
    bits: u32,
    mask: u64,
}

impl<'a> IndexStream<'a> {
    pub fn new(data: &'a [u8], first_bit: usize, bits: u32) -> Self {
        Self {
            data,
            bit: first_bit,
            bits,
            mask: (1u64 << bits) - 1,
        }
    }

    #[inline(always)]
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u32 {
        let v = read_bits(self.data, self.bit, self.mask);
        self.bit += self.bits as usize;
        v
    }
}

/// The field of `mask`'s width at bit position `bit` (at most 16 bits wide).
#[inline(always)]
pub fn read_bits(data: &[u8], bit: usize, mask: u64) -> u32 {
    let byte = bit >> 3;
    let word = match data.get(byte..byte + 8) {
        Some(w) => u64::from_le_bytes(w.try_into().unwrap()),
        None => {
            let mut buf = [0u8; 8];
            let tail = &data[byte.min(data.len())..];
            buf[..tail.len()].copy_from_slice(tail);
            u64::from_le_bytes(buf)
        }
    };
    ((word >> (bit & 7)) & mask) as u32
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Isa {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "aarch64")]
    Neon,
}

/// The instruction set the kernels use on this machine (detected once).
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        if std::env::var("ATHENA_KERNELS").is_ok_and(|v| v == "scalar") {
            return Isa::Scalar;
        }
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            return Isa::Avx2;
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("neon") {
            return Isa::Neon;
        }
        Isa::Scalar
    })
}

/// Dispatches `$name(args)` to the kernel of [`isa`].
macro_rules! dispatch {
    ($name:ident($($arg:expr),*)) => {
        match isa() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: isa() returned Avx2 only after detecting avx2, fma and f16c.
            Isa::Avx2 => unsafe { avx2::$name($($arg),*) },
            #[cfg(target_arch = "aarch64")]
            // SAFETY: isa() returned Neon only after detecting neon.
            Isa::Neon => unsafe { neon::$name($($arg),*) },
            Isa::Scalar => scalar::$name($($arg),*),
        }
    };
}

/// See [`VqSlice`].
#[inline]
pub fn vq_dot(s: &VqSlice) -> f32 {
    dispatch!(vq_dot(s))
}

/// Q8_0 blocks (34 bytes each) times `x` (32 values per block).
#[inline]
pub fn q8_0_dot(blocks: &[u8], x: &[f32]) -> f32 {
    debug_assert_eq!(blocks.len() / 34 * 32, x.len());
    dispatch!(q8_0_dot(blocks, x))
}

/// Little-endian f16 values times `x`.
#[inline]
pub fn f16_dot(w: &[u8], x: &[f32]) -> f32 {
    debug_assert_eq!(w.len(), 2 * x.len());
    dispatch!(f16_dot(w, x))
}

/// Little-endian bf16 values times `x`.
#[inline]
pub fn bf16_dot(w: &[u8], x: &[f32]) -> f32 {
    debug_assert_eq!(w.len(), 2 * x.len());
    dispatch!(bf16_dot(w, x))
}

/// f32 dot product.
#[inline]
pub fn f32_dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    dispatch!(f32_dot(a, b))
}

/// y += a * w for little-endian f16 values w.
#[inline]
pub fn f16_axpy(w: &[u8], a: f32, y: &mut [f32]) {
    debug_assert_eq!(w.len(), 2 * y.len());
    dispatch!(f16_axpy(w, a, y))
}

/// Signed bytes times `x`.
#[inline]
pub fn i8_dot(w: &[i8], x: &[f32]) -> f32 {
    debug_assert_eq!(w.len(), x.len());
    dispatch!(i8_dot(w, x))
}

/// y += a * w for signed bytes w.
#[inline]
pub fn i8_axpy(w: &[i8], a: f32, y: &mut [f32]) {
    debug_assert_eq!(w.len(), y.len());
    dispatch!(i8_axpy(w, a, y))
}

/// See [`scalar::quantize_q8`] (`x.len()` a multiple of 32; `q` as long, `d` one per 32).
#[inline]
pub fn quantize_q8(x: &[f32], q: &mut [i8], d: &mut [f32]) {
    debug_assert!(x.len() == q.len() && x.len() == 32 * d.len());
    dispatch!(quantize_q8(x, q, d))
}

/// See [`scalar::q8_0_q8_dot`].
#[inline]
pub fn q8_0_q8_dot(blocks: &[u8], q: &[i8], d: &[f32]) -> f32 {
    debug_assert!(blocks.len() / 34 * 32 == q.len() && q.len() == 32 * d.len());
    dispatch!(q8_0_q8_dot(blocks, q, d))
}
