//! Incoherence processing (QuIP#, Tseng et al. 2024) for the vector quantizer: the codes describe
//! W' = W Q instead of W, with Q orthogonal and block-diagonal, each block D H / sqrt(B) (random
//! signs D, Sylvester-Hadamard H of size B, a power of four). Mixing B columns spreads outlier
//! input channels over the block, so the rows' d-vectors look alike and a shared codebook fits
//! them better. The layer loss is unchanged: tr(dW H dW^T) = tr(dW' (Q^T H Q) dW'^T), so the
//! quantizer runs as before on W' and the rotated Hessian. The decoder undoes Q row by row
//! (`athena_decode::rotate_row`, format-spec section 5 step 5).

use faer::Mat;

use super::rng::SplitMix64;

/// Largest rotation block the format allows.
pub const MAX_BLOCK: usize = 4096;

/// The largest power of four in 4..=min(`limit`, [`MAX_BLOCK`]) dividing `cols`, or 0 if none.
pub fn block_size(cols: usize, limit: usize) -> usize {
    let mut block = 0;
    let mut b = 4;
    while b <= limit.min(MAX_BLOCK) && cols.is_multiple_of(b) {
        block = b;
        b *= 4;
    }
    block
}

/// One layer's column rotation: block size and packed sign bits (format-spec `athena_rot`).
#[derive(Debug, Clone, PartialEq)]
pub struct Rotation {
    pub block: usize,
    /// Bit j mod 8 of byte j / 8 set: column j is negated.
    pub signs: Vec<u8>,
}

impl Rotation {
    /// Random signs for `cols` columns from `seed`; `block` must divide `cols`.
    pub fn new(cols: usize, block: usize, seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        let mut signs = vec![0u8; cols.div_ceil(8)];
        for j in 0..cols {
            if rng.next_u64() >> 63 == 1 {
                signs[j / 8] |= 1 << (j % 8);
            }
        }
        Self { block, signs }
    }

    fn negated(&self, j: usize) -> bool {
        (self.signs[j / 8] >> (j % 8)) & 1 == 1
    }

    /// D as factors: -1 for negated columns, else 1.
    pub fn sign_factors(&self, cols: usize) -> Vec<f32> {
        (0..cols)
            .map(|j| if self.negated(j) { -1.0 } else { 1.0 })
            .collect()
    }

    /// H / sqrt(B), row-major B x B (symmetric): Q^T = H D / sqrt(B) per block, for a
    /// differentiable reconstruction (`x Q^T` = (x H / sqrt(B)) * signs).
    pub fn scaled_hadamard(&self) -> Vec<f32> {
        let b = self.block;
        let scale = 1.0 / (b as f32).sqrt();
        (0..b * b)
            .map(|k| match ((k / b) & (k % b)).count_ones() % 2 {
                0 => scale,
                _ => -scale,
            })
            .collect()
    }

    /// x <- x D H / sqrt(B) for a row x (the encoder's direction; the decoder applies the
    /// transpose, H D / sqrt(B)).
    fn forward_row(&self, x: &mut [f64]) {
        for (j, v) in x.iter_mut().enumerate() {
            if self.negated(j) {
                *v = -*v;
            }
        }
        let scale = 1.0 / (self.block as f64).sqrt();
        for chunk in x.chunks_exact_mut(self.block) {
            let mut h = 1;
            while h < self.block {
                for start in (0..self.block).step_by(2 * h) {
                    for a in start..start + h {
                        let (p, q) = (chunk[a], chunk[a + h]);
                        chunk[a] = p + q;
                        chunk[a + h] = p - q;
                    }
                }
                h *= 2;
            }
            chunk.iter_mut().for_each(|v| *v *= scale);
        }
    }

    /// W Q for W `rows x cols` row-major (f64 inside, rounded once).
    pub fn rotate_weights(&self, w: &[f32], cols: usize) -> Vec<f32> {
        let mut row = vec![0f64; cols];
        let mut out = Vec::with_capacity(w.len());
        for src in w.chunks_exact(cols) {
            row.iter_mut().zip(src).for_each(|(r, &s)| *r = s as f64);
            self.forward_row(&mut row);
            out.extend(row.iter().map(|&v| v as f32));
        }
        out
    }

    /// Q^T H Q for a symmetric `cols x cols` H.
    pub fn rotate_hessian(&self, h: &Mat<f64>) -> Mat<f64> {
        let n = h.nrows();
        // Rows of H Q, then rows of (H Q)^T Q = Q^T H Q.
        let mut hq = Mat::<f64>::zeros(n, n);
        let mut row = vec![0f64; n];
        for i in 0..n {
            row.iter_mut().enumerate().for_each(|(j, r)| *r = h[(i, j)]);
            self.forward_row(&mut row);
            row.iter().enumerate().for_each(|(j, &r)| hq[(j, i)] = r);
        }
        let mut out = Mat::<f64>::zeros(n, n);
        for i in 0..n {
            row.iter_mut()
                .enumerate()
                .for_each(|(j, r)| *r = hq[(i, j)]);
            self.forward_row(&mut row);
            row.iter().enumerate().for_each(|(j, &r)| out[(i, j)] = r);
        }
        out
    }

    /// Turns rows of rotated-domain values (`rows x cols`, row-major) back into the weight's
    /// domain, bit-exactly as the reference decoder does.
    pub fn unrotate(&self, rotated: &mut [f32], cols: usize) {
        for row in rotated.chunks_exact_mut(cols) {
            athena_decode::rotate_row(row, self.block, &self.signs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_size_is_the_largest_dividing_power_of_four() {
        assert_eq!(block_size(576, usize::MAX), 64);
        assert_eq!(block_size(1536, usize::MAX), 256);
        assert_eq!(block_size(1536, 100), 64);
        assert_eq!(block_size(8192, usize::MAX), 4096);
        assert_eq!(block_size(6, usize::MAX), 0);
    }

    #[test]
    fn decoding_undoes_the_rotation_and_the_loss_is_invariant() {
        let (rows, cols) = (3, 32);
        let rot = Rotation::new(cols, 16, 7);
        let w: Vec<f32> = (0..rows * cols)
            .map(|k| ((k * 37 % 23) as f32 - 11.0) / 8.0)
            .collect();
        let mut back = rot.rotate_weights(&w, cols);
        rot.unrotate(&mut back, cols);
        for (a, b) in w.iter().zip(&back) {
            assert!((a - b).abs() < 1e-5, "{a} {b}");
        }
        // x^T H x = (x Q)^T (Q^T H Q) (x Q) for a symmetric positive H.
        let h = Mat::<f64>::from_fn(cols, cols, |i, j| {
            if i == j {
                2.0 + i as f64
            } else {
                1.0 / (1.0 + (i + j) as f64)
            }
        });
        let hr = rot.rotate_hessian(&h);
        let x: Vec<f32> = w[..cols].to_vec();
        let xr = rot.rotate_weights(&x, cols);
        let quad = |v: &[f32], m: &Mat<f64>| {
            (0..cols)
                .flat_map(|i| (0..cols).map(move |j| (i, j)))
                .map(|(i, j)| v[i] as f64 * m[(i, j)] * v[j] as f64)
                .sum::<f64>()
        };
        let (a, b) = (quad(&x, &h), quad(&xr, &hr));
        assert!((a - b).abs() < 1e-5 * a.abs(), "{a} {b}");
        assert!((0..cols).all(|i| (0..cols).all(|j| (hr[(i, j)] - hr[(j, i)]).abs() < 1e-12)));
    }
}
