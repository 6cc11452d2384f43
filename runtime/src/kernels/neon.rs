//! NEON kernels (aarch64), the same signatures as [`super::scalar`]. The codebook kernel and the
//! f32 dot product are vectorized; the others use the scalar reference for now (not yet
//! measured on an ARM device).

#![allow(clippy::missing_safety_doc)] // Safety: the CPU must have NEON.

use std::arch::aarch64::*;

use super::{scalar, IndexStream, VqSlice};

#[target_feature(enable = "neon")]
pub unsafe fn vq_dot(s: &VqSlice) -> f32 {
    if s.dp != 4 && s.dp != 8 {
        return scalar::vq_dot(s);
    }
    let mut stream = IndexStream::new(s.indices, s.first_bit, s.bits);
    let (tab, xp) = (s.table.as_ptr(), s.xp.as_ptr());
    let mut acc = vdupq_n_f32(0.0);
    for g in 0..s.groups {
        let a = stream.next() as usize;
        for lane in (0..s.dp).step_by(4) {
            let c = vld1q_f32(tab.add(a * s.dp + lane));
            acc = vfmaq_f32(acc, c, vld1q_f32(xp.add(g * s.dp + lane)));
        }
    }
    vaddvq_f32(acc)
}

#[target_feature(enable = "neon")]
pub unsafe fn f32_dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len() / 4 * 4;
    let mut acc = vdupq_n_f32(0.0);
    for i in (0..n).step_by(4) {
        acc = vfmaq_f32(
            acc,
            vld1q_f32(a.as_ptr().add(i)),
            vld1q_f32(b.as_ptr().add(i)),
        );
    }
    vaddvq_f32(acc) + scalar::f32_dot(&a[n..], &b[n..])
}

#[target_feature(enable = "neon")]
pub unsafe fn q8_0_dot(blocks: &[u8], x: &[f32]) -> f32 {
    scalar::q8_0_dot(blocks, x)
}

#[target_feature(enable = "neon")]
pub unsafe fn f16_dot(w: &[u8], x: &[f32]) -> f32 {
    scalar::f16_dot(w, x)
}

#[target_feature(enable = "neon")]
pub unsafe fn bf16_dot(w: &[u8], x: &[f32]) -> f32 {
    scalar::bf16_dot(w, x)
}

#[target_feature(enable = "neon")]
pub unsafe fn f16_axpy(w: &[u8], a: f32, y: &mut [f32]) {
    scalar::f16_axpy(w, a, y)
}

#[target_feature(enable = "neon")]
pub unsafe fn i8_dot(w: &[i8], x: &[f32]) -> f32 {
    scalar::i8_dot(w, x)
}

#[target_feature(enable = "neon")]
pub unsafe fn i8_axpy(w: &[i8], a: f32, y: &mut [f32]) {
    scalar::i8_axpy(w, a, y)
}

#[target_feature(enable = "neon")]
pub unsafe fn quantize_q8(x: &[f32], q: &mut [i8], d: &mut [f32]) {
    scalar::quantize_q8(x, q, d)
}

#[target_feature(enable = "neon")]
pub unsafe fn q8_0_q8_dot(blocks: &[u8], q: &[i8], d: &[f32]) -> f32 {
    scalar::q8_0_q8_dot(blocks, q, d)
}
