//! Run-time SIMD dispatch for the quantizer's scalar hot loops.
//!
//! Release binaries target baseline x86-64 (SSE2, 4 f32 lanes) so that they run on any x86-64
//! CPU; faer and gemm pick their kernels at run time, but our own loops (nearest-centroid search,
//! k-means++ distances) would stay at SSE2. [`with_best_simd`] runs a closure inside a function
//! compiled for AVX-512 or AVX2 when the CPU has it; the closure, marked `#[inline(always)]`,
//! is inlined there and vectorised for the wider registers. The loops do the same f32
//! operations in the same order on every path (Rust never contracts a multiply and an add into
//! an FMA on its own), so the results, and the converted file, do not depend on the CPU.

/// Calls `f`, compiled for the widest vector extension this CPU supports. `f` should be
/// `#[inline(always)]` (and so should what it calls in its hot loop), or it keeps baseline code.
#[inline(always)]
pub fn with_best_simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU supports AVX-512F, checked just above.
            return unsafe { avx512(f) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { avx2(f) };
        }
    }
    f()
}

/// Calls `f` compiled for AVX2 (the next level down), for tests that compare the paths.
/// `None` when the CPU lacks AVX2.
#[cfg(test)]
pub fn with_avx2<R>(f: impl FnOnce() -> R) -> Option<R> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2, checked just above.
        return Some(unsafe { avx2(f) });
    }
    None
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}
