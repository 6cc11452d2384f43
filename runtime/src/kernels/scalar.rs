//! Portable reference kernels: every SIMD kernel in this folder computes what these compute
//! (up to the order of the additions) and is tested against them.

use super::{IndexStream, VqSlice};

/// Dot product of codebook-encoded groups with a padded input: sum over groups g of
/// `table[idx_g * dp + e] * xp[g * dp + e]` for e < dp (see [`VqSlice`]).
pub fn vq_dot(s: &VqSlice) -> f32 {
    let mut stream = IndexStream::new(s.indices, s.first_bit, s.bits);
    let mut acc = 0.0f32;
    for g in 0..s.groups {
        let a = stream.next() as usize;
        let centroid = &s.table[a * s.dp..(a + 1) * s.dp];
        let x = &s.xp[g * s.dp..(g + 1) * s.dp];
        for (c, v) in centroid.iter().zip(x) {
            acc += c * v;
        }
    }
    acc
}

/// Dot product of Q8_0 blocks (34 bytes: f16 scale, 32 signed bytes) with `x`.
pub fn q8_0_dot(blocks: &[u8], x: &[f32]) -> f32 {
    let mut acc = 0.0f32;
    for (block, x) in blocks.chunks_exact(34).zip(x.chunks_exact(32)) {
        let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
        let mut sum = 0.0f32;
        for (&q, &v) in block[2..].iter().zip(x) {
            sum += q as i8 as f32 * v;
        }
        acc += d * sum;
    }
    acc
}

/// Dot product of little-endian f16 values with `x`.
pub fn f16_dot(w: &[u8], x: &[f32]) -> f32 {
    w.chunks_exact(2)
        .zip(x)
        .map(|(h, &v)| half::f16::from_le_bytes([h[0], h[1]]).to_f32() * v)
        .sum()
}

/// Dot product of little-endian bf16 values with `x`.
pub fn bf16_dot(w: &[u8], x: &[f32]) -> f32 {
    w.chunks_exact(2)
        .zip(x)
        .map(|(h, &v)| f32::from_bits((u16::from_le_bytes([h[0], h[1]]) as u32) << 16) * v)
        .sum()
}

/// Dot product of two f32 slices.
pub fn f32_dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// y += a * w for little-endian f16 values w.
pub fn f16_axpy(w: &[u8], a: f32, y: &mut [f32]) {
    for (h, v) in w.chunks_exact(2).zip(y) {
        *v += a * half::f16::from_le_bytes([h[0], h[1]]).to_f32();
    }
}

/// Dot product of signed bytes with `x`.
pub fn i8_dot(w: &[i8], x: &[f32]) -> f32 {
    w.iter().zip(x).map(|(&q, &v)| q as f32 * v).sum()
}

/// y += a * w for signed bytes w.
pub fn i8_axpy(w: &[i8], a: f32, y: &mut [f32]) {
    for (&q, v) in w.iter().zip(y) {
        *v += a * q as f32;
    }
}

/// Quantizes `x` (a multiple of 32 values) to Q8_0-style blocks for [`q8_0_q8_dot`]: per block
/// of 32, d = max|x| / 127 and q = round(x / d). llama.cpp multiplies its Q8_0 (and Q4_0)
/// weights by activations quantized the same way.
pub fn quantize_q8(x: &[f32], q: &mut [i8], d: &mut [f32]) {
    for ((xb, qb), db) in x
        .chunks_exact(32)
        .zip(q.chunks_exact_mut(32))
        .zip(d.iter_mut())
    {
        let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        *db = amax / 127.0;
        let inv = if amax > 0.0 { 127.0 / amax } else { 0.0 };
        for (qv, &v) in qb.iter_mut().zip(xb) {
            *qv = (v * inv).round() as i8;
        }
    }
}

/// Q8_0 blocks times activations quantized by [`quantize_q8`]: sum over blocks of
/// d_w * d_x * (integer dot product of the 32 bytes).
pub fn q8_0_q8_dot(blocks: &[u8], q: &[i8], d: &[f32]) -> f32 {
    let mut acc = 0.0f32;
    for ((block, qb), &dx) in blocks.chunks_exact(34).zip(q.chunks_exact(32)).zip(d) {
        let dw = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
        let sum: i32 = block[2..]
            .iter()
            .zip(qb)
            .map(|(&w, &x)| w as i8 as i32 * x as i32)
            .sum();
        acc += dw * dx * sum as f32;
    }
    acc
}
