//! AVX2 + FMA + F16C kernels (x86-64), the same signatures as [`super::scalar`].
//!
//! Every function is `unsafe` only because it needs those CPU features; callers go through
//! [`super::isa`], which detects them. Memory accesses stay inside the slices: index reads are
//! bounds-checked per chunk, and an index is always < n (n = 2^b), so centroid loads stay inside
//! `table`.

#![allow(clippy::missing_safety_doc)] // Safety: see the module docs (CPU features only).

use std::arch::x86_64::*;

use super::{scalar, VqSlice};

#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps(v, 1);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// The 64 bits at byte `bit / 8` shifted right by `bit % 8`, or None within 8 bytes of the end.
#[inline(always)]
unsafe fn word_at(indices: &[u8], bit: usize) -> Option<u64> {
    let byte = bit >> 3;
    if byte + 8 > indices.len() {
        return None;
    }
    let w = (indices.as_ptr().add(byte) as *const u64).read_unaligned();
    Some(u64::from_le(w) >> (bit & 7))
}

/// Four consecutive indices starting at `bit` (needs 4b + 7 <= 64, i.e. b <= 14).
#[inline(always)]
unsafe fn four(indices: &[u8], bit: usize, bits: u32, mask: u64) -> Option<[usize; 4]> {
    let w = word_at(indices, bit)?;
    Some([
        (w & mask) as usize,
        ((w >> bits) & mask) as usize,
        ((w >> (2 * bits)) & mask) as usize,
        ((w >> (3 * bits)) & mask) as usize,
    ])
}

/// The groups `done..` of `s` through the scalar kernel.
fn tail(s: &VqSlice, done: usize) -> f32 {
    if done >= s.groups {
        return 0.0;
    }
    scalar::vq_dot(&VqSlice {
        first_bit: s.first_bit + done * s.bits as usize,
        groups: s.groups - done,
        xp: &s.xp[done * s.dp..],
        ..*s
    })
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vq_dot(s: &VqSlice) -> f32 {
    if s.bits > 14 {
        return scalar::vq_dot(s);
    }
    let (b, mask) = (s.bits as usize, (1u64 << s.bits) - 1);
    let tab = s.table.as_ptr();
    let xp = s.xp.as_ptr();
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut g = 0;
    match s.dp {
        4 => {
            while g + 4 <= s.groups {
                let Some([i0, i1, i2, i3]) = four(s.indices, s.first_bit + g * b, s.bits, mask)
                else {
                    break;
                };
                let c01 = _mm256_loadu2_m128(tab.add(i1 * 4), tab.add(i0 * 4));
                let c23 = _mm256_loadu2_m128(tab.add(i3 * 4), tab.add(i2 * 4));
                acc0 = _mm256_fmadd_ps(c01, _mm256_loadu_ps(xp.add(g * 4)), acc0);
                acc1 = _mm256_fmadd_ps(c23, _mm256_loadu_ps(xp.add(g * 4 + 8)), acc1);
                g += 4;
            }
        }
        2 => {
            let pair = |i: usize, j: usize| {
                let lo = _mm_load_sd(tab.add(i * 2) as *const f64);
                _mm_castpd_ps(_mm_loadh_pd(lo, tab.add(j * 2) as *const f64))
            };
            while g + 8 <= s.groups {
                let bit = s.first_bit + g * b;
                let (Some([i0, i1, i2, i3]), Some([i4, i5, i6, i7])) = (
                    four(s.indices, bit, s.bits, mask),
                    four(s.indices, bit + 4 * b, s.bits, mask),
                ) else {
                    break;
                };
                let c03 = _mm256_set_m128(pair(i2, i3), pair(i0, i1));
                let c47 = _mm256_set_m128(pair(i6, i7), pair(i4, i5));
                acc0 = _mm256_fmadd_ps(c03, _mm256_loadu_ps(xp.add(g * 2)), acc0);
                acc1 = _mm256_fmadd_ps(c47, _mm256_loadu_ps(xp.add(g * 2 + 8)), acc1);
                g += 8;
            }
        }
        1 => {
            while g + 8 <= s.groups {
                let bit = s.first_bit + g * b;
                let (Some([i0, i1, i2, i3]), Some([i4, i5, i6, i7])) = (
                    four(s.indices, bit, s.bits, mask),
                    four(s.indices, bit + 4 * b, s.bits, mask),
                ) else {
                    break;
                };
                let idx = _mm256_setr_epi32(
                    i0 as i32, i1 as i32, i2 as i32, i3 as i32, i4 as i32, i5 as i32, i6 as i32,
                    i7 as i32,
                );
                let c = _mm256_i32gather_ps::<4>(tab, idx);
                acc0 = _mm256_fmadd_ps(c, _mm256_loadu_ps(xp.add(g)), acc0);
                g += 8;
            }
        }
        8 => {
            while g + 4 <= s.groups {
                let Some(ids) = four(s.indices, s.first_bit + g * b, s.bits, mask) else {
                    break;
                };
                for (k, &i) in ids.iter().enumerate() {
                    let c = _mm256_loadu_ps(tab.add(i * 8));
                    let x = _mm256_loadu_ps(xp.add((g + k) * 8));
                    if k % 2 == 0 {
                        acc0 = _mm256_fmadd_ps(c, x, acc0);
                    } else {
                        acc1 = _mm256_fmadd_ps(c, x, acc1);
                    }
                }
                g += 4;
            }
        }
        _ => {}
    }
    hsum(_mm256_add_ps(acc0, acc1)) + tail(s, g)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q8_0_dot(blocks: &[u8], x: &[f32]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (block, x) in blocks.chunks_exact(34).zip(x.chunks_exact(32)) {
        let d = _mm_cvtph_ps(_mm_cvtsi32_si128(
            u16::from_le_bytes([block[0], block[1]]) as i32,
        ));
        let q = block.as_ptr().add(2);
        let xp = x.as_ptr();
        let mut sum = _mm256_setzero_ps();
        for k in 0..4 {
            let bytes = _mm_loadl_epi64(q.add(8 * k) as *const __m128i);
            let w = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
            sum = _mm256_fmadd_ps(w, _mm256_loadu_ps(xp.add(8 * k)), sum);
        }
        acc = _mm256_fmadd_ps(_mm256_broadcastss_ps(d), sum, acc);
    }
    hsum(acc)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f16_dot(w: &[u8], x: &[f32]) -> f32 {
    let n = x.len() / 16 * 16;
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut i = 0;
    while i < n {
        let w0 = _mm256_cvtph_ps(_mm_loadu_si128(wp.add(2 * i) as *const __m128i));
        let w1 = _mm256_cvtph_ps(_mm_loadu_si128(wp.add(2 * i + 16) as *const __m128i));
        acc0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xp.add(i)), acc0);
        acc1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xp.add(i + 8)), acc1);
        i += 16;
    }
    hsum(_mm256_add_ps(acc0, acc1)) + scalar::f16_dot(&w[2 * n..], &x[n..])
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn bf16_dot(w: &[u8], x: &[f32]) -> f32 {
    let n = x.len() / 8 * 8;
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i < n {
        let h = _mm256_cvtepu16_epi32(_mm_loadu_si128(wp.add(2 * i) as *const __m128i));
        let wv = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(h));
        acc = _mm256_fmadd_ps(wv, _mm256_loadu_ps(xp.add(i)), acc);
        i += 8;
    }
    hsum(acc) + scalar::bf16_dot(&w[2 * n..], &x[n..])
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f32_dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len() / 16 * 16;
    let (ap, bp) = (a.as_ptr(), b.as_ptr());
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut i = 0;
    while i < n {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(ap.add(i)), _mm256_loadu_ps(bp.add(i)), acc0);
        acc1 = _mm256_fmadd_ps(
            _mm256_loadu_ps(ap.add(i + 8)),
            _mm256_loadu_ps(bp.add(i + 8)),
            acc1,
        );
        i += 16;
    }
    hsum(_mm256_add_ps(acc0, acc1)) + scalar::f32_dot(&a[n..], &b[n..])
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f16_axpy(w: &[u8], a: f32, y: &mut [f32]) {
    let n = y.len() / 8 * 8;
    let (wp, yp) = (w.as_ptr(), y.as_mut_ptr());
    let av = _mm256_set1_ps(a);
    let mut i = 0;
    while i < n {
        let wv = _mm256_cvtph_ps(_mm_loadu_si128(wp.add(2 * i) as *const __m128i));
        _mm256_storeu_ps(yp.add(i), _mm256_fmadd_ps(av, wv, _mm256_loadu_ps(yp.add(i))));
        i += 8;
    }
    scalar::f16_axpy(&w[2 * n..], a, &mut y[n..]);
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn i8_dot(w: &[i8], x: &[f32]) -> f32 {
    let n = x.len() / 8 * 8;
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    while i < n {
        let q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(wp.add(i) as *const __m128i));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(q), _mm256_loadu_ps(xp.add(i)), acc);
        i += 8;
    }
    hsum(acc) + scalar::i8_dot(&w[n..], &x[n..])
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn i8_axpy(w: &[i8], a: f32, y: &mut [f32]) {
    let n = y.len() / 8 * 8;
    let (wp, yp) = (w.as_ptr(), y.as_mut_ptr());
    let av = _mm256_set1_ps(a);
    let mut i = 0;
    while i < n {
        let q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(wp.add(i) as *const __m128i));
        let wv = _mm256_cvtepi32_ps(q);
        _mm256_storeu_ps(yp.add(i), _mm256_fmadd_ps(av, wv, _mm256_loadu_ps(yp.add(i))));
        i += 8;
    }
    scalar::i8_axpy(&w[n..], a, &mut y[n..]);
}
