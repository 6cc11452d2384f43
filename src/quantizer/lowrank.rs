//! Hessian-weighted low-rank residual (ATHENA-MATH 4): with H = L L^T and R = W - What,
//! tr(R H R^T) = ||R L||_F^2, so the best rank-r correction is A = u_r D_r, B = v_r^T L^-1 from
//! the thin SVD R L = u D v^T. A and B are stored in f16; the correction uses the stored values.

use faer::Mat;
use half::f16;

use super::hessian::cholesky_lower;
use super::QuantError;

/// Low-rank factors as stored: A (rows x rank) and B (rank x cols), row-major f16.
#[derive(Debug, Clone, PartialEq)]
pub struct LowRank {
    pub rank: usize,
    pub a: Vec<f16>,
    pub b: Vec<f16>,
}

impl LowRank {
    /// Adds A B to `w` (row-major rows x cols) in the spec's order: acc = sum over k of
    /// f32(A[i,k]) * f32(B[k,j]) from k = 0, then w + acc.
    pub fn apply(&self, w: &mut [f32], cols: usize) {
        let r = self.rank;
        for (i, row) in w.chunks_exact_mut(cols).enumerate() {
            let a = &self.a[i * r..i * r + r];
            for (j, x) in row.iter_mut().enumerate() {
                let mut acc = 0f32;
                for (k, ak) in a.iter().enumerate() {
                    let prod = ak.to_f32() * self.b[k * cols + j].to_f32();
                    acc += prod;
                }
                *x += acc;
            }
        }
    }
}

/// Fits the rank-`rank` correction of `original - dequantized` under the Hessian `h`.
pub fn fit(
    original: &[f32],
    dequantized: &[f32],
    rows: usize,
    cols: usize,
    h: &Mat<f64>,
    rank: usize,
    damp: f64,
) -> Result<LowRank, QuantError> {
    let l = cholesky_lower(h, damp)?;
    let residual = Mat::<f64>::from_fn(rows, cols, |i, j| {
        (original[i * cols + j] - dequantized[i * cols + j]) as f64
    });
    let rl = &residual * &l;
    let svd = rl.thin_svd().map_err(|_| QuantError::Svd)?;
    let (u, s, v) = (svd.U(), svd.S(), svd.V());
    let rank = rank.min(s.dim());
    // B^T = L^-T v_r: solve L^T x = v_r.
    let mut bt = v.subcols(0, rank).to_owned();
    l.transpose().solve_upper_triangular_in_place(bt.as_mut());
    let s = s.column_vector();
    let a = (0..rows * rank)
        .map(|ik| f16::from_f64(u[(ik / rank, ik % rank)] * s[ik % rank]))
        .collect();
    let b = (0..rank * cols)
        .map(|kj| f16::from_f64(bt[(kj % cols, kj / cols)]))
        .collect();
    Ok(LowRank { rank, a, b })
}
