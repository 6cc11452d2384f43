//! Every SIMD kernel (`kernels::avx2` on x86-64 with AVX2/FMA/F16C, `kernels::neon` on aarch64)
//! against the scalar reference `kernels::scalar`, and the scalar reference against an f64
//! computation written here independently (its own bit unpacking and f16/bf16 conversions).
//!
//! The codebook kernel runs every lane count dp in {1, 2, 4, 8}, every index width 1..=16 bits,
//! every group count 0..=70 (so every unrolled body and every tail runs) and every starting bit
//! 0..=15, once with the index slice ending right after the row (the kernels' "near the end of
//! the slice" fallback) and once with slack bytes after it. The other kernels run every length
//! 0..=70 (Q8_0: 0..=70 blocks).
//!
//! Every input slice sits between guard values (NaN for f32 and f16/bf16 data, 0xff bytes for
//! the index bytes), so a kernel that reads past its slice gets a NaN or a wrong index and fails,
//! and an axpy that writes past its slice is caught by the guards afterwards.
//!
//! Tolerance: |simd - scalar| <= 1e-5 * sum |a_i b_i| + 1e-6 (likewise scalar against f64).
//! `checks_reject_wrong_kernels` feeds deliberately wrong kernels through the same checks and
//! requires every one of them to be caught.
//!
//! Without the CPU features the SIMD comparison is skipped (with a line in the test output) and
//! the scalar kernels are still checked against f64.

use athena_runtime::kernels::{self, scalar, VqSlice};

/// SplitMix64: a small deterministic generator (the tests are seeded, so a failure reproduces).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x1234_5678)
    }

    fn u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.u64() % n as u64) as usize
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn f32s(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.unit()).collect()
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            out.extend_from_slice(&self.u64().to_le_bytes());
        }
        out.truncate(n);
        out
    }

    /// A random value times 2^k, k in [lo, hi].
    fn scaled(&mut self, lo: i32, hi: i32) -> f32 {
        let k = lo + self.below((hi - lo + 1) as usize) as i32;
        self.unit() * 2f32.powi(k)
    }

    /// Little-endian f16 values (finite: random magnitudes 2^-20..2^6, subnormals included).
    fn f16_bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|_| half::f16::from_f32(self.scaled(-20, 6)).to_le_bytes())
            .collect()
    }

    /// Little-endian bf16 values (finite).
    fn bf16_bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|_| half::bf16::from_f32(self.scaled(-30, 30)).to_le_bytes())
            .collect()
    }
}

const GUARD: usize = 24;

/// A slice with GUARD copies of a guard value on both sides, in one allocation.
struct Guarded<T> {
    buf: Vec<T>,
    len: usize,
}

impl<T: Copy> Guarded<T> {
    fn new(v: &[T], guard: T) -> Self {
        let mut buf = vec![guard; GUARD];
        buf.extend_from_slice(v);
        buf.extend(std::iter::repeat_n(guard, GUARD));
        Guarded { buf, len: v.len() }
    }

    fn get(&self) -> &[T] {
        &self.buf[GUARD..GUARD + self.len]
    }

    fn get_mut(&mut self) -> &mut [T] {
        &mut self.buf[GUARD..GUARD + self.len]
    }
}

impl Guarded<f32> {
    fn guards_intact(&self) -> bool {
        let nan = |v: &f32| v.to_bits() == f32::NAN.to_bits();
        self.buf[..GUARD].iter().all(nan) && self.buf[GUARD + self.len..].iter().all(nan)
    }
}

fn f16(h: &[u8]) -> f64 {
    half::f16::from_le_bytes([h[0], h[1]]).to_f64()
}

fn bf16(h: &[u8]) -> f64 {
    f32::from_bits((u16::from_le_bytes([h[0], h[1]]) as u32) << 16) as f64
}

/// `got` within 1e-5 * `mag` + 1e-6 of `want` (NaN never is).
fn close(got: f32, want: f64, mag: f64, what: impl Fn() -> String) -> Result<(), String> {
    let tol = 1e-5 * mag + 1e-6;
    let err = (got as f64 - want).abs();
    if err <= tol {
        Ok(())
    } else {
        Err(format!(
            "{}: got {got}, want {want} (error {err:e}, tolerance {tol:e})",
            what()
        ))
    }
}

/// One implementation of every kernel, as function pointers (SIMD ones, the scalar reference,
/// or deliberately wrong ones).
#[derive(Clone, Copy)]
struct Kernels {
    name: &'static str,
    vq_dot: unsafe fn(&VqSlice) -> f32,
    q8_0_dot: unsafe fn(&[u8], &[f32]) -> f32,
    f16_dot: unsafe fn(&[u8], &[f32]) -> f32,
    bf16_dot: unsafe fn(&[u8], &[f32]) -> f32,
    f32_dot: unsafe fn(&[f32], &[f32]) -> f32,
    f16_axpy: unsafe fn(&[u8], f32, &mut [f32]),
    i8_dot: unsafe fn(&[i8], &[f32]) -> f32,
    i8_axpy: unsafe fn(&[i8], f32, &mut [f32]),
}

const SCALAR: Kernels = Kernels {
    name: "scalar",
    vq_dot: scalar::vq_dot,
    q8_0_dot: scalar::q8_0_dot,
    f16_dot: scalar::f16_dot,
    bf16_dot: scalar::bf16_dot,
    f32_dot: scalar::f32_dot,
    f16_axpy: scalar::f16_axpy,
    i8_dot: scalar::i8_dot,
    i8_axpy: scalar::i8_axpy,
};

/// This machine's SIMD kernels, or None (with a line in the test output) without the features.
fn simd() -> Option<Kernels> {
    #[cfg(target_arch = "x86_64")]
    {
        use athena_runtime::kernels::avx2;
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            return Some(Kernels {
                name: "avx2",
                vq_dot: avx2::vq_dot,
                q8_0_dot: avx2::q8_0_dot,
                f16_dot: avx2::f16_dot,
                bf16_dot: avx2::bf16_dot,
                f32_dot: avx2::f32_dot,
                f16_axpy: avx2::f16_axpy,
                i8_dot: avx2::i8_dot,
                i8_axpy: avx2::i8_axpy,
            });
        }
        println!("skipped: this CPU lacks avx2+fma+f16c; checking the scalar kernels against f64");
        None
    }
    #[cfg(target_arch = "aarch64")]
    {
        use athena_runtime::kernels::neon;
        if std::arch::is_aarch64_feature_detected!("neon") {
            return Some(Kernels {
                name: "neon",
                vq_dot: neon::vq_dot,
                q8_0_dot: neon::q8_0_dot,
                f16_dot: neon::f16_dot,
                bf16_dot: neon::bf16_dot,
                f32_dot: neon::f32_dot,
                f16_axpy: neon::f16_axpy,
                i8_dot: neon::i8_dot,
                i8_axpy: neon::i8_axpy,
            });
        }
        println!("skipped: this CPU lacks neon; checking the scalar kernels against f64");
        None
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        println!("skipped: no SIMD kernels on this architecture; checking the scalar kernels");
        None
    }
}

/// The kernels to check: the SIMD ones where the CPU has them, else the scalar reference (whose
/// comparison with itself is trivial, but whose comparison with f64 still runs).
fn under_test() -> Kernels {
    simd().unwrap_or(SCALAR)
}

/// The `bits`-wide field at stream bit `bit`, LSB first (spec section 4), bit by bit.
fn field(bytes: &[u8], bit: usize, bits: u32) -> usize {
    (0..bits as usize)
        .map(|q| ((bytes[(bit + q) / 8] >> ((bit + q) % 8)) & 1) as usize)
        .enumerate()
        .map(|(q, v)| v << q)
        .sum()
}

/// The codebook kernel for lane count `dp`: every width, group count and first bit.
fn check_vq(k: &Kernels, dp: usize, rng: &mut Rng) -> Result<(), String> {
    for bits in 1..=16u32 {
        let n = 1usize << bits;
        let table = Guarded::new(&rng.f32s(n * dp), f32::NAN);
        for groups in 0..=70usize {
            for first_bit in 0..16usize {
                for tight in [true, false] {
                    // A row need not start at the slice's first byte.
                    let fb = 8 * rng.below(3) + first_bit;
                    let end = (fb + groups * bits as usize).div_ceil(8);
                    let len = if tight { end } else { end + 1 + rng.below(12) };
                    let indices = Guarded::new(&rng.bytes(len), 0xff);
                    let xp = Guarded::new(&rng.f32s(groups * dp), f32::NAN);
                    let s = VqSlice {
                        table: table.get(),
                        dp,
                        indices: indices.get(),
                        first_bit: fb,
                        bits,
                        groups,
                        xp: xp.get(),
                    };
                    let (mut exact, mut mag) = (0.0f64, 0.0f64);
                    for g in 0..groups {
                        let a = field(indices.get(), fb + g * bits as usize, bits);
                        for e in 0..dp {
                            let p = table.get()[a * dp + e] as f64 * xp.get()[g * dp + e] as f64;
                            exact += p;
                            mag += p.abs();
                        }
                    }
                    let what =
                        |who: &str| {
                            format!(
                            "vq_dot {who}: dp {dp}, bits {bits}, groups {groups}, first_bit {fb}, \
                             index bytes {len} ({})",
                            if tight { "ending at the row" } else { "with slack" }
                        )
                        };
                    let want = scalar::vq_dot(&s);
                    close(want, exact, mag, || what("scalar vs f64"))?;
                    // SAFETY: `k` holds kernels whose CPU features were detected.
                    let got = unsafe { (k.vq_dot)(&s) };
                    close(got, want as f64, mag, || what(k.name))?;
                }
            }
        }
    }
    Ok(())
}

/// Lengths 0..=70, a few random inputs each.
const REPS: usize = 6;

fn check_q8_0_dot(k: &Kernels, rng: &mut Rng) -> Result<(), String> {
    for blocks in 0..=70usize {
        for _ in 0..2 {
            let mut data = Vec::with_capacity(34 * blocks);
            for _ in 0..blocks {
                data.extend(half::f16::from_f32(rng.scaled(-16, 2)).to_le_bytes());
                data.extend(rng.bytes(32));
            }
            let w = Guarded::new(&data, 0xff);
            let x = Guarded::new(&rng.f32s(32 * blocks), f32::NAN);
            let (mut exact, mut mag) = (0.0f64, 0.0f64);
            for (b, xs) in w.get().chunks_exact(34).zip(x.get().chunks_exact(32)) {
                for (&q, &v) in b[2..].iter().zip(xs) {
                    let p = f16(b) * q as i8 as f64 * v as f64;
                    exact += p;
                    mag += p.abs();
                }
            }
            let want = scalar::q8_0_dot(w.get(), x.get());
            close(want, exact, mag, || {
                format!("q8_0_dot scalar vs f64, {blocks} blocks")
            })?;
            // SAFETY: see check_vq.
            let got = unsafe { (k.q8_0_dot)(w.get(), x.get()) };
            close(got, want as f64, mag, || {
                format!("q8_0_dot {}, {blocks} blocks", k.name)
            })?;
        }
    }
    Ok(())
}

/// f16 or bf16 values times x.
fn check_half_dot(
    k: &Kernels,
    rng: &mut Rng,
    bf: bool,
    kernel: unsafe fn(&[u8], &[f32]) -> f32,
) -> Result<(), String> {
    let name = if bf { "bf16_dot" } else { "f16_dot" };
    for len in 0..=70usize {
        for _ in 0..REPS {
            let data = if bf {
                rng.bf16_bytes(len)
            } else {
                rng.f16_bytes(len)
            };
            let w = Guarded::new(&data, 0xff);
            let x = Guarded::new(&rng.f32s(len), f32::NAN);
            let (mut exact, mut mag) = (0.0f64, 0.0f64);
            for (h, &v) in w.get().chunks_exact(2).zip(x.get()) {
                let p = if bf { bf16(h) } else { f16(h) } * v as f64;
                exact += p;
                mag += p.abs();
            }
            let want = if bf {
                scalar::bf16_dot(w.get(), x.get())
            } else {
                scalar::f16_dot(w.get(), x.get())
            };
            close(want, exact, mag, || {
                format!("{name} scalar vs f64, length {len}")
            })?;
            // SAFETY: see check_vq.
            let got = unsafe { kernel(w.get(), x.get()) };
            close(got, want as f64, mag, || {
                format!("{name} {}, length {len}", k.name)
            })?;
        }
    }
    Ok(())
}

fn check_f32_dot(k: &Kernels, rng: &mut Rng) -> Result<(), String> {
    for len in 0..=70usize {
        for _ in 0..REPS {
            let a = Guarded::new(&rng.f32s(len), f32::NAN);
            let b = Guarded::new(&rng.f32s(len), f32::NAN);
            let prods = a
                .get()
                .iter()
                .zip(b.get())
                .map(|(&x, &y)| x as f64 * y as f64);
            let exact = prods.clone().sum::<f64>();
            let mag = prods.map(f64::abs).sum::<f64>();
            let want = scalar::f32_dot(a.get(), b.get());
            close(want, exact, mag, || {
                format!("f32_dot scalar vs f64, length {len}")
            })?;
            // SAFETY: see check_vq.
            let got = unsafe { (k.f32_dot)(a.get(), b.get()) };
            close(got, want as f64, mag, || {
                format!("f32_dot {}, length {len}", k.name)
            })?;
        }
    }
    Ok(())
}

fn check_i8_dot(k: &Kernels, rng: &mut Rng) -> Result<(), String> {
    for len in 0..=70usize {
        for _ in 0..REPS {
            let bytes: Vec<i8> = rng.bytes(len).into_iter().map(|b| b as i8).collect();
            let w = Guarded::new(&bytes, -1i8);
            let x = Guarded::new(&rng.f32s(len), f32::NAN);
            let prods = w
                .get()
                .iter()
                .zip(x.get())
                .map(|(&q, &v)| q as f64 * v as f64);
            let exact = prods.clone().sum::<f64>();
            let mag = prods.map(f64::abs).sum::<f64>();
            let want = scalar::i8_dot(w.get(), x.get());
            close(want, exact, mag, || {
                format!("i8_dot scalar vs f64, length {len}")
            })?;
            // SAFETY: see check_vq.
            let got = unsafe { (k.i8_dot)(w.get(), x.get()) };
            close(got, want as f64, mag, || {
                format!("i8_dot {}, length {len}", k.name)
            })?;
        }
    }
    Ok(())
}

/// y += a * w, for f16 (`i8` false) or signed-byte weights; every element checked, and the
/// guards around y untouched.
fn check_axpy(k: &Kernels, rng: &mut Rng, i8: bool) -> Result<(), String> {
    let name = if i8 { "i8_axpy" } else { "f16_axpy" };
    for len in 0..=70usize {
        for _ in 0..REPS {
            let (wbytes, wvals): (Vec<u8>, Vec<f64>) = if i8 {
                let b = rng.bytes(len);
                let v = b.iter().map(|&q| q as i8 as f64).collect();
                (b, v)
            } else {
                let b = rng.f16_bytes(len);
                let v = b.chunks_exact(2).map(f16).collect();
                (b, v)
            };
            let w = Guarded::new(&wbytes, 0xff);
            let wi8: Vec<i8> = wbytes.iter().map(|&b| b as i8).collect();
            let wi8 = Guarded::new(&wi8, -1i8);
            let a = rng.scaled(-4, 2);
            let y0 = rng.f32s(len);
            let mut want = Guarded::new(&y0, f32::NAN);
            let mut got = Guarded::new(&y0, f32::NAN);
            if i8 {
                scalar::i8_axpy(wi8.get(), a, want.get_mut());
                // SAFETY: see check_vq.
                unsafe { (k.i8_axpy)(wi8.get(), a, got.get_mut()) };
            } else {
                scalar::f16_axpy(w.get(), a, want.get_mut());
                // SAFETY: see check_vq.
                unsafe { (k.f16_axpy)(w.get(), a, got.get_mut()) };
            }
            if !got.guards_intact() {
                return Err(format!("{name} {} wrote outside y, length {len}", k.name));
            }
            for j in 0..len {
                let p = a as f64 * wvals[j];
                let exact = y0[j] as f64 + p;
                let mag = (y0[j] as f64).abs() + p.abs();
                let what = |who: &str| format!("{name} {who}, length {len}, element {j}");
                close(want.get()[j], exact, mag, || what("scalar vs f64"))?;
                close(got.get()[j], want.get()[j] as f64, mag, || what(k.name))?;
            }
        }
    }
    Ok(())
}

fn vq(dp: usize) {
    let k = under_test();
    check_vq(&k, dp, &mut Rng::new(dp as u64)).unwrap();
}

#[test]
fn vq_dot_dp1() {
    vq(1);
}

#[test]
fn vq_dot_dp2() {
    vq(2);
}

#[test]
fn vq_dot_dp4() {
    vq(4);
}

#[test]
fn vq_dot_dp8() {
    vq(8);
}

#[test]
fn q8_0_dot() {
    check_q8_0_dot(&under_test(), &mut Rng::new(10)).unwrap();
}

#[test]
fn f16_dot() {
    let k = under_test();
    check_half_dot(&k, &mut Rng::new(11), false, k.f16_dot).unwrap();
}

#[test]
fn bf16_dot() {
    let k = under_test();
    check_half_dot(&k, &mut Rng::new(12), true, k.bf16_dot).unwrap();
}

#[test]
fn f32_dot() {
    check_f32_dot(&under_test(), &mut Rng::new(13)).unwrap();
}

#[test]
fn f16_axpy() {
    check_axpy(&under_test(), &mut Rng::new(14), false).unwrap();
}

#[test]
fn i8_dot() {
    check_i8_dot(&under_test(), &mut Rng::new(15)).unwrap();
}

#[test]
fn i8_axpy() {
    check_axpy(&under_test(), &mut Rng::new(16), true).unwrap();
}

/// The dispatching entry points use the detected kernels (unless ATHENA_KERNELS=scalar) and
/// give the same bits as calling them directly.
#[test]
fn dispatch_uses_detected_kernels() {
    let forced_scalar = std::env::var("ATHENA_KERNELS").is_ok_and(|v| v == "scalar");
    let k = match simd() {
        Some(k) if !forced_scalar => {
            assert_ne!(kernels::isa(), kernels::Isa::Scalar);
            k
        }
        _ => {
            assert_eq!(kernels::isa(), kernels::Isa::Scalar);
            SCALAR
        }
    };
    let mut rng = Rng::new(17);
    for len in [0, 1, 7, 8, 15, 16, 17, 33, 64, 69] {
        let a = rng.f32s(len);
        let b = rng.f32s(len);
        let h = rng.f16_bytes(len);
        // SAFETY: see check_vq.
        unsafe {
            assert_eq!(
                kernels::f32_dot(&a, &b).to_bits(),
                (k.f32_dot)(&a, &b).to_bits()
            );
            assert_eq!(
                kernels::f16_dot(&h, &b).to_bits(),
                (k.f16_dot)(&h, &b).to_bits()
            );
        }
        let table = rng.f32s(16 * 4);
        let idx = rng.bytes((len * 4).div_ceil(8));
        let xp = rng.f32s(len * 4);
        let s = VqSlice {
            table: &table,
            dp: 4,
            indices: &idx,
            first_bit: 0,
            bits: 4,
            groups: len,
            xp: &xp,
        };
        // SAFETY: see check_vq.
        unsafe { assert_eq!(kernels::vq_dot(&s).to_bits(), (k.vq_dot)(&s).to_bits()) };
    }
}

// Deliberately wrong kernels: the checks above must catch each of them.

fn vq_drops_last_group(s: &VqSlice) -> f32 {
    scalar::vq_dot(&VqSlice {
        groups: s.groups.saturating_sub(1),
        ..*s
    })
}

fn vq_off_by_one_bit(s: &VqSlice) -> f32 {
    if s.groups == 0 {
        return 0.0;
    }
    let mut acc = 0.0;
    for g in 0..s.groups {
        // Reads the index one bit late when the row ends within 8 bytes of the slice's end
        // (a broken fallback path only).
        let late = s.indices.len() * 8 < s.first_bit + s.groups * s.bits as usize + 64;
        let bit = s.first_bit + g * s.bits as usize + usize::from(late && g + 1 == s.groups);
        let mask = (1u64 << s.bits) - 1;
        let a = kernels::read_bits(s.indices, bit, mask) as usize;
        for e in 0..s.dp {
            acc += s.table[a * s.dp + e] * s.xp[g * s.dp + e];
        }
    }
    acc
}

fn vq_loses_precision(s: &VqSlice) -> f32 {
    // An error of 1e-4 relative to sum |products|, for one width and group count only: the
    // sweep must reach it, and the tolerance must be tight enough to see it.
    let v = scalar::vq_dot(s);
    if s.groups != 67 || s.bits != 13 {
        return v;
    }
    let mut stream = kernels::IndexStream::new(s.indices, s.first_bit, s.bits);
    let mut mag = 0.0f32;
    for g in 0..s.groups {
        let a = stream.next() as usize;
        for e in 0..s.dp {
            mag += (s.table[a * s.dp + e] * s.xp[g * s.dp + e]).abs();
        }
    }
    v + 1e-4 * mag
}

fn f32_dot_drops_last(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().saturating_sub(1);
    scalar::f32_dot(&a[..n], &b[..n])
}

fn f32_dot_wrong_tail(a: &[f32], b: &[f32]) -> f32 {
    // A vector body of 16 whose tail skips element 16 * k + 15 when the length ends there.
    if a.len() % 16 == 15 {
        return scalar::f32_dot(a, b) - a[a.len() - 1] * b[b.len() - 1];
    }
    scalar::f32_dot(a, b)
}

fn f16_dot_big_endian(w: &[u8], x: &[f32]) -> f32 {
    w.chunks_exact(2)
        .zip(x)
        .map(|(h, &v)| half::f16::from_be_bytes([h[0], h[1]]).to_f32() * v)
        .sum()
}

fn bf16_dot_as_f16(w: &[u8], x: &[f32]) -> f32 {
    scalar::f16_dot(w, x)
}

fn q8_0_unsigned(blocks: &[u8], x: &[f32]) -> f32 {
    let mut acc = 0.0f32;
    for (block, x) in blocks.chunks_exact(34).zip(x.chunks_exact(32)) {
        let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
        let sum: f32 = block[2..].iter().zip(x).map(|(&q, &v)| q as f32 * v).sum();
        acc += d * sum;
    }
    acc
}

fn f16_axpy_skips_last(w: &[u8], a: f32, y: &mut [f32]) {
    let n = y.len().saturating_sub(1);
    scalar::f16_axpy(&w[..2 * n], a, &mut y[..n]);
}

fn i8_dot_unsigned(w: &[i8], x: &[f32]) -> f32 {
    w.iter().zip(x).map(|(&q, &v)| q as u8 as f32 * v).sum()
}

fn i8_axpy_sub(w: &[i8], a: f32, y: &mut [f32]) {
    scalar::i8_axpy(w, -a, y);
}

#[test]
fn checks_reject_wrong_kernels() {
    let mut rng = Rng::new(99);
    let bad = |f: fn(&mut Kernels)| {
        let mut k = SCALAR;
        k.name = "wrong";
        f(&mut k);
        k
    };
    let vq_bad = [
        bad(|k| k.vq_dot = vq_drops_last_group),
        bad(|k| k.vq_dot = vq_off_by_one_bit),
        bad(|k| k.vq_dot = vq_loses_precision),
    ];
    for k in &vq_bad {
        assert!(check_vq(k, 4, &mut rng).is_err());
    }
    let r = &mut rng;
    let k = bad(|k| k.f32_dot = f32_dot_drops_last);
    assert!(check_f32_dot(&k, r).is_err());
    let k = bad(|k| k.f32_dot = f32_dot_wrong_tail);
    assert!(check_f32_dot(&k, r).is_err());
    let k = bad(|k| k.f16_dot = f16_dot_big_endian);
    assert!(check_half_dot(&k, r, false, k.f16_dot).is_err());
    let k = bad(|k| k.bf16_dot = bf16_dot_as_f16);
    assert!(check_half_dot(&k, r, true, k.bf16_dot).is_err());
    let k = bad(|k| k.q8_0_dot = q8_0_unsigned);
    assert!(check_q8_0_dot(&k, r).is_err());
    let k = bad(|k| k.f16_axpy = f16_axpy_skips_last);
    assert!(check_axpy(&k, r, false).is_err());
    let k = bad(|k| k.i8_axpy = i8_axpy_sub);
    assert!(check_axpy(&k, r, true).is_err());
    let k = bad(|k| k.i8_dot = i8_dot_unsigned);
    assert!(check_i8_dot(&k, r).is_err());
}

/// Q8_0 weights times activations quantized to 8 bits per block (the one-token path of Q8_0
/// weights): the SIMD kernel against the scalar one (the same integer sums, so only the float
/// accumulation differs), and the scalar one against the f64 product of the unquantized
/// activations within the quantization's bound (half a step, max|x| / 254, per element).
#[test]
fn q8_0_q8_dot_and_quantize_q8() {
    let mut rng = Rng::new(21);
    for blocks in 0..=40usize {
        let mut data = Vec::with_capacity(34 * blocks);
        for _ in 0..blocks {
            data.extend(half::f16::from_f32(rng.unit()).to_le_bytes());
            data.extend(rng.bytes(32));
        }
        let x = rng.f32s(32 * blocks);
        let (mut q, mut d) = (vec![0i8; x.len()], vec![0.0f32; blocks]);
        scalar::quantize_q8(&x, &mut q, &mut d);
        let want = scalar::q8_0_q8_dot(&data, &q, &d);
        let (mut exact, mut bound) = (0.0f64, 1e-6f64);
        for ((b, xs), &db) in data.chunks_exact(34).zip(x.chunks_exact(32)).zip(&d) {
            for (&w, &v) in b[2..].iter().zip(xs) {
                let wv = f16(b) * w as i8 as f64;
                exact += wv * v as f64;
                bound += wv.abs() * (db as f64 / 2.0 + 1e-6);
            }
        }
        assert!(
            (want as f64 - exact).abs() <= bound,
            "{blocks} blocks: {want} vs {exact}"
        );
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            use athena_runtime::kernels::avx2;
            let (mut q2, mut d2) = (vec![0i8; x.len()], vec![0.0f32; blocks]);
            // SAFETY: the features were detected just above.
            unsafe { avx2::quantize_q8(&x, &mut q2, &mut d2) };
            assert_eq!((&q2, &d2), (&q, &d));
            let got = unsafe { avx2::q8_0_q8_dot(&data, &q, &d) };
            assert!(
                (got - want).abs() <= 1e-5 * bound as f32,
                "{blocks}: {got} vs {want}"
            );
        }
        // The dispatched entry point is one of the two.
        let dispatched = kernels::q8_0_q8_dot(&data, &q, &d);
        assert!((dispatched - want).abs() <= 1e-5 * bound as f32);
    }
}
