//! Exact IEEE-754 binary16 to binary32 conversion, written out by hand (no `half`).

/// Converts the IEEE-754 half-precision value with bit pattern `bits` to single precision.
///
/// Exact for every finite half, including subnormals and signed zeros (every half value is
/// representable in single precision). Infinities map to infinities. NaNs keep their sign and
/// payload (shifted into the top of the single mantissa) and are returned quiet, as IEEE-754
/// `convertFormat` and common hardware (x86 F16C, `half`) do.
#[inline]
pub fn f16_to_f32(bits: u16) -> f32 {
    let sign = ((bits as u32) & 0x8000) << 16;
    let exp = ((bits as u32) >> 10) & 0x1f;
    let mant = (bits as u32) & 0x03ff;
    let out = if exp != 0 && exp != 0x1f {
        // Normal: rebias the exponent from 15 to 127.
        sign | ((exp + (127 - 15)) << 23) | (mant << 13)
    } else if exp == 0 {
        if mant == 0 {
            sign
        } else {
            // Subnormal: value = mant * 2^-24. Normalise: shift the leading one of the 10-bit
            // mantissa up to the implicit position (bit 10).
            let shift = mant.leading_zeros() - 21; // 1..=10 for mant in 1..=0x3ff
            let m = (mant << shift) & 0x03ff;
            // The leading one was at bit (10 - shift): value = 2^(-14 - shift) * 1.m
            let e = 127 - 14 - shift;
            sign | (e << 23) | (m << 13)
        }
    } else if mant == 0 {
        sign | 0x7f80_0000
    } else {
        sign | 0x7fc0_0000 | (mant << 13)
    };
    f32::from_bits(out)
}

/// True if the half with bit pattern `bits` is finite (not an infinity or NaN).
#[inline]
pub fn f16_is_finite(bits: u16) -> bool {
    bits & 0x7c00 != 0x7c00
}

/// Reads the little-endian u16 at element `i` of `bytes` (2 bytes per element).
#[inline]
pub(crate) fn le_u16(bytes: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference computed differently: with f32 arithmetic from sign, exponent and mantissa.
    fn reference(bits: u16) -> f32 {
        let sign = if bits & 0x8000 != 0 { -1.0f32 } else { 1.0f32 };
        let exp = ((bits >> 10) & 0x1f) as i32;
        let mant = (bits & 0x3ff) as f32;
        match exp {
            0 => sign * mant * pow2(-24),
            0x1f if mant == 0.0 => sign * f32::INFINITY,
            0x1f => f32::NAN,
            e => sign * (1.0 + mant / 1024.0) * pow2(e - 15),
        }
    }

    fn pow2(e: i32) -> f32 {
        let mut v = 1.0f32;
        if e >= 0 {
            for _ in 0..e {
                v *= 2.0;
            }
        } else {
            for _ in 0..-e {
                v *= 0.5;
            }
        }
        v
    }

    #[test]
    fn all_65536_halves() {
        for bits in 0..=u16::MAX {
            let got = f16_to_f32(bits);
            let want = reference(bits);
            if want.is_nan() {
                assert!(got.is_nan(), "{bits:#06x}");
                let g = got.to_bits();
                assert_eq!(g >> 31, (bits as u32) >> 15, "sign of NaN {bits:#06x}");
                assert_eq!(
                    (g >> 13) & 0x3ff,
                    (bits as u32 & 0x3ff) | 0x200,
                    "payload {bits:#06x}"
                );
                assert_eq!(g & 0x1fff, 0);
            } else {
                // to_bits: distinguishes -0.0 from 0.0.
                assert_eq!(got.to_bits(), want.to_bits(), "{bits:#06x}");
            }
            assert_eq!(f16_is_finite(bits), want.is_finite(), "{bits:#06x}");
        }
    }

    #[test]
    fn known_values() {
        assert_eq!(f16_to_f32(0x0000).to_bits(), 0.0f32.to_bits());
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0400), 6.103_515_6e-5); // smallest normal, 2^-14
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8); // smallest subnormal, 2^-24
        assert_eq!(f16_to_f32(0x03ff), 6.097_555e-5); // largest subnormal, 1023 * 2^-24
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert_eq!(f16_to_f32(0xfc00), f32::NEG_INFINITY);
        assert_eq!(f16_to_f32(0x7e00).to_bits(), 0x7fc0_0000);
        assert_eq!(f16_to_f32(0x7c01).to_bits(), 0x7fc0_2000);
    }
}
