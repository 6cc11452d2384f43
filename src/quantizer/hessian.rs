//! The layer Hessian H = 2 X X^T / T and the factor GPTQ-style quantizers need: the upper
//! Cholesky factor U of H^-1 (H^-1 = U^T U), found with damping that grows until Cholesky succeeds.

use faer::linalg::solvers::DenseSolveCore;
use faer::{Mat, Side};

use super::QuantError;

/// Accumulates H = 2 X X^T / T over calibration batches (f64, so long runs do not lose precision).
#[derive(Debug, Clone)]
pub struct HessianAccumulator {
    sum: Mat<f64>,
    samples: u64,
}

impl HessianAccumulator {
    pub fn new(dim: usize) -> Self {
        Self {
            sum: Mat::zeros(dim, dim),
            samples: 0,
        }
    }

    pub fn dim(&self) -> usize {
        self.sum.nrows()
    }

    /// Adds `tokens` input vectors of length `dim`, row-major (`tokens x dim`). The batch's
    /// X^T X is formed in f32 (one sequence's worth of terms) and summed across batches in f64.
    pub fn add(&mut self, x: &[f32], tokens: usize) {
        let dim = self.dim();
        assert_eq!(
            x.len(),
            tokens * dim,
            "activation length does not match dim"
        );
        let xm = faer::MatRef::from_row_major_slice(x, tokens, dim);
        let mut batch = Mat::<f32>::zeros(dim, dim);
        faer::linalg::matmul::matmul(
            batch.as_mut(),
            faer::Accum::Replace,
            xm.transpose(),
            xm,
            1.0,
            faer::Par::rayon(0),
        );
        for j in 0..dim {
            for i in 0..dim {
                self.sum[(i, j)] += batch[(i, j)] as f64;
            }
        }
        self.samples += tokens as u64;
    }

    /// Adds a batch of `tokens` inputs given by its product X^T X (`dim x dim`, formed in f32
    /// elsewhere, e.g. on the GPU the activations live on).
    pub fn add_gram(&mut self, gram: &[f32], tokens: usize) {
        let dim = self.dim();
        assert_eq!(gram.len(), dim * dim, "X^T X length does not match dim");
        for j in 0..dim {
            for i in 0..dim {
                self.sum[(i, j)] += gram[i * dim + j] as f64;
            }
        }
        self.samples += tokens as u64;
    }

    /// H = 2 X X^T / T.
    pub fn finish(&self) -> Mat<f64> {
        let scale = if self.samples == 0 {
            0.0
        } else {
            2.0 / self.samples as f64
        };
        Mat::from_fn(self.dim(), self.dim(), |i, j| self.sum[(i, j)] * scale)
    }
}

/// Mean of the diagonal: APTQ's sensitivity is built on the trace, and damping is relative to it.
pub fn mean_diagonal(h: &Mat<f64>) -> f64 {
    let n = h.nrows().max(1);
    (0..h.nrows()).map(|i| h[(i, i)]).sum::<f64>() / n as f64
}

/// Makes H usable: columns that never saw input (zero diagonal) get a unit diagonal, and
/// `damp * mean(diag H)` is added to the diagonal.
pub fn damped(h: &Mat<f64>, damp: f64) -> Mat<f64> {
    let mut out = h.clone();
    let mean = mean_diagonal(h).max(f64::MIN_POSITIVE);
    for i in 0..out.nrows() {
        if out[(i, i)] <= 0.0 {
            out[(i, i)] = 1.0;
        }
        out[(i, i)] += damp * mean;
    }
    out
}

/// Upper Cholesky factor U of (H + damping)^-1, with H^-1 = U^T U. Damping starts at `damp`
/// and is multiplied by 10 (up to four times) while Cholesky fails.
pub fn inverse_cholesky_upper(h: &Mat<f64>, damp: f64) -> Result<(Mat<f64>, f64), QuantError> {
    let mut lambda = damp;
    for _ in 0..5 {
        let hd = damped(h, lambda);
        if let Ok(llt) = hd.llt(Side::Lower) {
            let inv = llt.inverse();
            if let Ok(llt_inv) = inv.llt(Side::Lower) {
                return Ok((llt_inv.L().transpose().to_owned(), lambda));
            }
        }
        lambda *= 10.0;
    }
    Err(QuantError::NotPositiveDefinite { damp: lambda })
}

/// Lower Cholesky factor L of the damped H (H = L L^T), used by the low-rank residual.
pub fn cholesky_lower(h: &Mat<f64>, damp: f64) -> Result<Mat<f64>, QuantError> {
    let mut lambda = damp;
    for _ in 0..5 {
        if let Ok(llt) = damped(h, lambda).llt(Side::Lower) {
            return Ok(llt.L().to_owned());
        }
        lambda *= 10.0;
    }
    Err(QuantError::NotPositiveDefinite { damp: lambda })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_factor_reconstructs_inverse() {
        let m = 6;
        let x: Vec<f32> = (0..m * 40)
            .map(|k| ((k * 7919 % 97) as f32 / 48.0) - 1.0)
            .collect();
        let mut acc = HessianAccumulator::new(m);
        acc.add(&x, 40);
        let h = acc.finish();
        let (u, lambda) = inverse_cholesky_upper(&h, 0.01).unwrap();
        let hd = damped(&h, lambda);
        let prod = &hd * (u.transpose() * &u);
        for i in 0..m {
            for j in 0..m {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!(
                    (prod[(i, j)] - want).abs() < 1e-8,
                    "({i},{j}) = {}",
                    prod[(i, j)]
                );
            }
            for j in 0..i {
                assert_eq!(u[(i, j)], 0.0, "U must be upper triangular");
            }
        }
    }

    #[test]
    fn a_batch_given_by_its_gram_matrix_adds_the_same() {
        let (m, tokens) = (5, 30);
        let x: Vec<f32> = (0..m * tokens)
            .map(|k| ((k * 31 % 17) as f32) / 8.0 - 1.0)
            .collect();
        let gram: Vec<f32> = (0..m * m)
            .map(|ij| {
                (0..tokens)
                    .map(|t| x[t * m + ij / m] * x[t * m + ij % m])
                    .sum()
            })
            .collect();
        let (mut by_rows, mut by_gram) = (HessianAccumulator::new(m), HessianAccumulator::new(m));
        by_rows.add(&x, tokens);
        by_gram.add_gram(&gram, tokens);
        let (a, b) = (by_rows.finish(), by_gram.finish());
        for i in 0..m {
            for j in 0..m {
                assert!((a[(i, j)] - b[(i, j)]).abs() < 1e-5, "({i},{j})");
            }
        }
    }
}
