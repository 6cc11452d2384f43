//! BoA's row Hessians of q_proj and k_proj (ATHENA-MATH 6, the relaxed form without the softmax
//! Jacobian).
//!
//! An error dW in one head's rows of q_proj moves that head's query at position t by
//! R_t dW x_t (R_t the RoPE rotation at t) and so every score against the keys it attends to:
//! the squared score error is sum_t x_t^T dW^T (R_t^T K_t R_t) dW x_t with K_t = sum over the
//! keys at positions <= t of k k^T (keys after RoPE). Averaging R_t^T K_t R_t over t separates
//! it into tr(dW H dW^T H_row): H the usual input Hessian, H_row = sum_t R_t^T K_t R_t per head.
//! k_proj is the mirror image: the key at t' meets the queries at t >= t' of every query head
//! that shares its kv head. Conjugating by R_t (rather than taking the rotated keys' covariance
//! as it stands) keeps the pairs that RoPE turns at different speeds from coupling.

use faer::Mat;
use rayon::prelude::*;

/// Per kv head, the running sums of the query-side and key-side row Hessians of one block.
#[derive(Debug, Clone)]
pub struct AttentionRowHessians {
    head_dim: usize,
    /// Row Hessian of the q_proj heads that read kv head g (they all see the same keys).
    query: Vec<Vec<f64>>,
    /// Row Hessian of k_proj's kv head g.
    key: Vec<Vec<f64>>,
}

impl AttentionRowHessians {
    pub fn new(kv_heads: usize, head_dim: usize) -> Self {
        let zeros = vec![vec![0f64; head_dim * head_dim]; kv_heads];
        Self {
            head_dim,
            query: zeros.clone(),
            key: zeros,
        }
    }

    /// Adds one sequence: `q` is `heads x tokens x head_dim`, `k` is `kv_heads x tokens x
    /// head_dim` (both after RoPE, row-major), `cos`/`sin` are `tokens x head_dim`.
    pub fn add(&mut self, q: &[f32], k: &[f32], cos: &[f32], sin: &[f32], tokens: usize) {
        let hd = self.head_dim;
        let kv_heads = self.query.len();
        let q_heads: Vec<&[f32]> = q.chunks_exact(tokens * hd).collect();
        let k_heads: Vec<&[f32]> = k.chunks_exact(tokens * hd).collect();
        let per_group = q_heads.len() / kv_heads;
        // One job per (kv head, side); the key side walks the positions backwards.
        let jobs: Vec<(usize, bool)> = (0..kv_heads)
            .flat_map(|g| [(g, true), (g, false)])
            .collect();
        let sums: Vec<Vec<f64>> = jobs
            .par_iter()
            .map(|&(g, query_side)| {
                let vectors = if query_side {
                    &k_heads[g..g + 1]
                } else {
                    &q_heads[g * per_group..(g + 1) * per_group]
                };
                let mut running = vec![0f64; hd * hd];
                let mut sum = vec![0f64; hd * hd];
                for step in 0..tokens {
                    let t = if query_side { step } else { tokens - 1 - step };
                    for v in vectors {
                        add_outer(&mut running, &v[t * hd..(t + 1) * hd]);
                    }
                    add_conjugated(
                        &mut sum,
                        &running,
                        &cos[t * hd..(t + 1) * hd],
                        &sin[t * hd..(t + 1) * hd],
                    );
                }
                sum
            })
            .collect();
        for (&(g, query_side), s) in jobs.iter().zip(sums) {
            let target = if query_side {
                &mut self.query[g]
            } else {
                &mut self.key[g]
            };
            target.iter_mut().zip(s).for_each(|(a, b)| *a += b);
        }
    }

    /// Row Hessian of q_proj (`heads * head_dim` square, HF row order): block-diagonal, head h
    /// gets its kv head's block.
    pub fn query_rows(&self, heads: usize) -> Mat<f64> {
        let per_group = heads / self.query.len();
        block_diagonal(self.head_dim, heads, |h| &self.query[h / per_group])
    }

    /// Row Hessian of k_proj (`kv_heads * head_dim` square, HF row order).
    pub fn key_rows(&self) -> Mat<f64> {
        block_diagonal(self.head_dim, self.key.len(), |g| &self.key[g])
    }
}

fn block_diagonal<'a>(hd: usize, blocks: usize, block: impl Fn(usize) -> &'a Vec<f64>) -> Mat<f64> {
    Mat::from_fn(blocks * hd, blocks * hd, |i, j| match i / hd == j / hd {
        true => block(i / hd)[(i % hd) * hd + j % hd],
        false => 0.0,
    })
}

fn add_outer(m: &mut [f64], v: &[f32]) {
    let n = v.len();
    for (i, &a) in v.iter().enumerate() {
        let row = &mut m[i * n..(i + 1) * n];
        for (x, &b) in row.iter_mut().zip(v) {
            *x += (a * b) as f64;
        }
    }
}

/// out += R^T m R for the RoPE rotation R whose tables at this position are `cos`, `sin`
/// (HF layout: coordinate i < n/2 pairs with i + n/2). Column i of R has two entries: cos at i
/// and +-sin at its partner.
fn add_conjugated(out: &mut [f64], m: &[f64], cos: &[f32], sin: &[f32]) {
    let n = cos.len();
    let half = n / 2;
    let partner = |i: usize| (i + half) % n;
    let alpha = |i: usize| cos[i] as f64;
    let beta = |i: usize| {
        if i < half {
            sin[i] as f64
        } else {
            -sin[i] as f64
        }
    };
    for i in 0..n {
        let (ai, bi, pi) = (alpha(i), beta(i), partner(i));
        for j in 0..n {
            let (aj, bj, pj) = (alpha(j), beta(j), partner(j));
            out[i * n + j] += ai * aj * m[i * n + j]
                + ai * bj * m[i * n + pj]
                + bi * aj * m[pi * n + j]
                + bi * bj * m[pi * n + pj];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// R x for the tables of one position (the model's `rope::apply` on one vector).
    fn rotate(x: &[f32], cos: &[f32], sin: &[f32]) -> Vec<f32> {
        let half = x.len() / 2;
        (0..x.len())
            .map(|i| match i < half {
                true => x[i] * cos[i] - x[i + half] * sin[i],
                false => x[i] * cos[i] + x[i - half] * sin[i],
            })
            .collect()
    }

    #[test]
    fn the_row_hessians_give_the_summed_squared_score_errors() {
        // Two kv heads, four query heads, head_dim 4, 5 positions; pseudo-random values.
        let (heads, kv, hd, tokens) = (4, 2, 4, 5);
        let mut seed = 7u32;
        let mut next = || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        let q: Vec<f32> = (0..heads * tokens * hd).map(|_| next()).collect();
        let k: Vec<f32> = (0..kv * tokens * hd).map(|_| next()).collect();
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for t in 0..tokens {
            for i in 0..hd {
                let angle = t as f32 * [1.0, 0.1][i % 2];
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        let mut acc = AttentionRowHessians::new(kv, hd);
        acc.add(&q, &k, &cos, &sin, tokens);
        let (hq, hk) = (acc.query_rows(heads), acc.key_rows());
        // A fixed pre-RoPE change u of every query (resp. key) of one head.
        let u: Vec<f32> = (0..hd).map(|_| next()).collect();
        let at = |x: &[f32], h: usize, t: usize| {
            x[(h * tokens + t) * hd..(h * tokens + t + 1) * hd].to_vec()
        };
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x * y) as f64).sum::<f64>();
        let quad = |m: &Mat<f64>, base: usize| -> f64 {
            (0..hd)
                .flat_map(|i| (0..hd).map(move |j| (i, j)))
                .map(|(i, j)| u[i] as f64 * m[(base + i, base + j)] * u[j] as f64)
                .sum()
        };
        let c = |t: usize| (&cos[t * hd..(t + 1) * hd], &sin[t * hd..(t + 1) * hd]);
        // Query head 3 reads kv head 1: score error of (t, t') is (R_t u) . k_t'.
        let mut direct = 0.0;
        for t in 0..tokens {
            let du = rotate(&u, c(t).0, c(t).1);
            for tp in 0..=t {
                direct += dot(&du, &at(&k, 1, tp)).powi(2);
            }
        }
        assert!(
            (quad(&hq, 3 * hd) - direct).abs() < 1e-4 * direct,
            "{} vs {direct}",
            quad(&hq, 3 * hd)
        );
        // Key head 0 meets query heads 0 and 1 at t >= t'.
        let mut direct = 0.0;
        for tp in 0..tokens {
            let du = rotate(&u, c(tp).0, c(tp).1);
            for t in tp..tokens {
                for h in 0..2 {
                    direct += dot(&du, &at(&q, h, t)).powi(2);
                }
            }
        }
        assert!(
            (quad(&hk, 0) - direct).abs() < 1e-4 * direct,
            "{} vs {direct}",
            quad(&hk, 0)
        );
        // Heads do not couple.
        assert_eq!(hq[(0, hd)], 0.0);
    }
}
