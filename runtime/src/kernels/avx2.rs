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

/// Extracts eight consecutive b-bit indices at a time with vector shuffles and shifts. Eight
/// indices take exactly b bytes, so the bit offset inside the first byte (s0) is the same for
/// every block of eight, and one shuffle pattern serves the whole run: lane k takes the three
/// bytes at (s0 + k b) / 8 (b <= 15 with s0 <= 7 keeps every index inside 16 bytes and three
/// bytes), shifts them right by (s0 + k b) mod 8 and masks b bits.
struct Indices8 {
    shuffle: __m256i,
    shifts: __m256i,
    mask: __m256i,
}

impl Indices8 {
    #[inline(always)]
    unsafe fn new(first_bit: usize, bits: u32) -> Self {
        let s0 = first_bit & 7;
        let mut shuffle = [0x80u8; 32];
        let mut shifts = [0i32; 8];
        for k in 0..8 {
            let bit = s0 + k * bits as usize;
            for j in 0..3 {
                let byte = (bit >> 3) + j;
                if byte < 16 {
                    shuffle[k * 4 + j] = byte as u8;
                }
            }
            shifts[k] = (bit & 7) as i32;
        }
        Self {
            shuffle: _mm256_loadu_si256(shuffle.as_ptr() as *const __m256i),
            shifts: _mm256_loadu_si256(shifts.as_ptr() as *const __m256i),
            mask: _mm256_set1_epi32((1i32 << bits) - 1),
        }
    }

    /// The eight indices whose bits start in the 16 bytes at `p`.
    #[inline(always)]
    unsafe fn get(&self, p: *const u8) -> __m256i {
        let raw = _mm256_broadcastsi128_si256(_mm_loadu_si128(p as *const __m128i));
        let v = _mm256_shuffle_epi8(raw, self.shuffle);
        _mm256_and_si256(_mm256_srlv_epi32(v, self.shifts), self.mask)
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn vq_dot(s: &VqSlice) -> f32 {
    if s.bits > 15 {
        return scalar::vq_dot(s);
    }
    let b = s.bits as usize;
    let tab = s.table.as_ptr();
    let xp = s.xp.as_ptr();
    let ix = Indices8::new(s.first_bit, s.bits);
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut g = 0;
    let mut byte = s.first_bit >> 3;
    let mut idx = [0u32; 8];
    // Each block of eight groups reads 16 bytes from `byte` and advances it by b.
    while g + 8 <= s.groups && byte + 16 <= s.indices.len() {
        let v = ix.get(s.indices.as_ptr().add(byte));
        let xg = xp.add(g * s.dp);
        match s.dp {
            4 => {
                _mm256_storeu_si256(idx.as_mut_ptr() as *mut __m256i, _mm256_slli_epi32::<2>(v));
                let c = |k: usize| tab.add(idx[k] as usize);
                for p in 0..4 {
                    let cv = _mm256_loadu2_m128(c(2 * p + 1), c(2 * p));
                    let x = _mm256_loadu_ps(xg.add(8 * p));
                    if p % 2 == 0 {
                        acc0 = _mm256_fmadd_ps(cv, x, acc0);
                    } else {
                        acc1 = _mm256_fmadd_ps(cv, x, acc1);
                    }
                }
            }
            2 => {
                _mm256_storeu_si256(idx.as_mut_ptr() as *mut __m256i, _mm256_slli_epi32::<1>(v));
                let pair = |i: u32, j: u32| {
                    let lo = _mm_load_sd(tab.add(i as usize) as *const f64);
                    _mm_castpd_ps(_mm_loadh_pd(lo, tab.add(j as usize) as *const f64))
                };
                let c03 = _mm256_set_m128(pair(idx[2], idx[3]), pair(idx[0], idx[1]));
                let c47 = _mm256_set_m128(pair(idx[6], idx[7]), pair(idx[4], idx[5]));
                acc0 = _mm256_fmadd_ps(c03, _mm256_loadu_ps(xg), acc0);
                acc1 = _mm256_fmadd_ps(c47, _mm256_loadu_ps(xg.add(8)), acc1);
            }
            1 => {
                let c = _mm256_i32gather_ps::<4>(tab, v);
                acc0 = _mm256_fmadd_ps(c, _mm256_loadu_ps(xg), acc0);
            }
            8 => {
                _mm256_storeu_si256(idx.as_mut_ptr() as *mut __m256i, _mm256_slli_epi32::<3>(v));
                for (k, &i) in idx.iter().enumerate() {
                    let cv = _mm256_loadu_ps(tab.add(i as usize));
                    let x = _mm256_loadu_ps(xg.add(8 * k));
                    if k % 2 == 0 {
                        acc0 = _mm256_fmadd_ps(cv, x, acc0);
                    } else {
                        acc1 = _mm256_fmadd_ps(cv, x, acc1);
                    }
                }
            }
            _ => break,
        }
        g += 8;
        byte += b;
    }
    hsum(_mm256_add_ps(acc0, acc1)) + tail(s, g)
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q8_0_dot(blocks: &[u8], x: &[f32]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (block, x) in blocks.chunks_exact(34).zip(x.chunks_exact(32)) {
        let d = _mm_set1_ps(f16_at(block));
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
        _mm256_storeu_ps(
            yp.add(i),
            _mm256_fmadd_ps(av, wv, _mm256_loadu_ps(yp.add(i))),
        );
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
        _mm256_storeu_ps(
            yp.add(i),
            _mm256_fmadd_ps(av, wv, _mm256_loadu_ps(yp.add(i))),
        );
        i += 8;
    }
    scalar::i8_axpy(&w[n..], a, &mut y[n..]);
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn quantize_q8(x: &[f32], q: &mut [i8], d: &mut [f32]) {
    scalar::quantize_q8(x, q, d)
}

/// The f16 at `p` as f32, converted with integer operations: the compiler turned every vector
/// form of this load (`_mm_cvtsi32_si128`, `_mm_loadu_si16`) into an insert into a live
/// accumulator's register, a false dependency that serialized the loops on the FMA latency.
#[inline(always)]
fn f16_at(p: &[u8]) -> f32 {
    half::f16::from_le_bytes([p[0], p[1]]).to_f32()
}

#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q8_0_q8_dot(blocks: &[u8], q: &[i8], d: &[f32]) -> f32 {
    let ones = _mm256_set1_epi16(1);
    // The integer dot product of block k, as 8 f32 partial sums.
    let block_sums = |k: usize| {
        let w = _mm256_loadu_si256(blocks.as_ptr().add(34 * k + 2) as *const __m256i);
        let xv = _mm256_loadu_si256(q.as_ptr().add(32 * k) as *const __m256i);
        // maddubs multiplies unsigned by signed bytes: |w| times x with w's sign moved onto x.
        let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(xv, w));
        _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, ones))
    };
    let scale = |k: usize| _mm256_set1_ps(f16_at(&blocks[34 * k..]) * d[k]);
    let n = d.len().min(blocks.len() / 34);
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut k = 0;
    while k + 2 <= n {
        acc0 = _mm256_fmadd_ps(scale(k), block_sums(k), acc0);
        acc1 = _mm256_fmadd_ps(scale(k + 1), block_sums(k + 1), acc1);
        k += 2;
    }
    if k < n {
        acc0 = _mm256_fmadd_ps(scale(k), block_sums(k), acc0);
    }
    hsum(_mm256_add_ps(acc0, acc1))
}
