//! Hessian-guided vector quantization of one linear layer (ATHENA-MATH 1-2), GPTQ style:
//! groups of d columns in a fixed order, each tile's codebook fitted under the inverse-Hessian
//! metric just before its first group is quantized, error feedback to the columns not yet
//! quantized through the Cholesky factor U of H^-1, applied lazily block by block.

use faer::Mat;
use rayon::prelude::*;

use super::codebook::{self, StoredCodebook};
use super::hessian::inverse_cholesky_upper;
use super::kmeans::{self, GroupPoints, MetricCentroids};
use super::rng::SplitMix64;
use super::{GroupOrder, QuantError, VqConfig};

/// The vector-quantized layer before any low-rank residual.
#[derive(Debug, Clone)]
pub struct VqLayer {
    pub rows: usize,
    pub cols: usize,
    /// Centroid index per (row, group), row-major `rows x ceil(cols/d)`, in the original column
    /// order; when d does not divide cols, each row's last group is partial (its first
    /// `cols mod d` dimensions are the weights).
    pub indices: Vec<u32>,
    /// One codebook per tile, tile t = tile_row * tile_columns + tile_column.
    pub codebooks: Vec<StoredCodebook>,
    /// Per-row scales (`VqConfig::row_scales`), or empty: row i decodes to s_i times its
    /// codebook values.
    pub row_scales: Vec<half::f16>,
    /// The reconstructed weights (row-major), exactly what a decoder returns without low-rank.
    pub dequantized: Vec<f32>,
}

/// Scale of row `i` (1 without row scales).
fn row_scale(scales: &[half::f16], i: usize) -> f32 {
    scales.get(i).map_or(1.0, |s| s.to_f32())
}

impl VqLayer {
    /// The scale row `i` decodes with: s_i with row scales, else 1.
    pub fn row_scale(&self, i: usize) -> f32 {
        row_scale(&self.row_scales, i)
    }
}

/// Order in which column groups are quantized.
fn group_order(h: &Mat<f64>, d: usize, order: GroupOrder) -> Vec<usize> {
    let cols = h.nrows();
    let mut perm: Vec<usize> = (0..cols.div_ceil(d)).collect();
    if order == GroupOrder::HessianDiagonal {
        let weight = |g: usize| {
            (g * d..(g * d + d).min(cols))
                .map(|j| h[(j, j)])
                .sum::<f64>()
        };
        perm.sort_by(|&a, &b| weight(b).total_cmp(&weight(a)).then(a.cmp(&b)));
    }
    perm
}

/// n evenly spaced scalar levels from the smallest to the largest point (d = 1).
fn uniform_grid(points: &[GroupPoints], n: usize) -> Vec<f32> {
    let values = points.iter().flat_map(|g| g.vectors.iter().copied());
    let (lo, hi) = values.fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    (0..n)
        .map(|k| lo + (hi - lo) * k as f32 / (n - 1) as f32)
        .collect()
}

/// Inverse of the upper-triangular d x d block `u` (row-major), and the metric (U^T U)^-1 = U^-1 U^-T.
fn block_metric(u: &[f64], d: usize) -> (Vec<f64>, Vec<f32>) {
    let mut inv = vec![0f64; d * d];
    for j in 0..d {
        inv[j * d + j] = 1.0 / u[j * d + j];
        for i in (0..j).rev() {
            let s: f64 = (i + 1..=j).map(|k| u[i * d + k] * inv[k * d + j]).sum();
            inv[i * d + j] = -s / u[i * d + i];
        }
    }
    let metric = (0..d * d)
        .map(|rs| {
            let (r, s) = (rs / d, rs % d);
            (0..d).map(|k| inv[r * d + k] * inv[s * d + k]).sum::<f64>() as f32
        })
        .collect();
    (inv, metric)
}

/// Each row's RMS, rounded to f16 (1 for an all-zero row, and never 0 or infinite).
fn rms_scales(w: &[f32], rows: usize, cols: usize) -> Vec<half::f16> {
    (0..rows)
        .map(|i| {
            let row = &w[i * cols..(i + 1) * cols];
            let rms = (row.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / cols as f64).sqrt();
            let s = half::f16::from_f64(rms);
            if s.to_f32() > 0.0 && s.is_finite() {
                s
            } else {
                half::f16::ONE
            }
        })
        .collect()
}

/// The row side of a Kronecker-factored loss tr(dW H dW^T H_row) (BoA, ATHENA-MATH 6): once
/// row i's vector of a group is fixed, its error reaches each later row i' of the same group
/// with weight U_r[i, i'] / U_r[i, i] (U_r the upper Cholesky factor of H_row^-1, so the
/// factor of the whole loss's inverse in column-major order is U (x) U_r), and reaches the later
/// columns summed over the rows before it with the same weights. Stored per row i as the
/// (i', weight) pairs with a nonzero weight, in the units of the scaled rows (s_i / s_i').
fn row_pushes(
    row_h: &Mat<f64>,
    scale: impl Fn(usize) -> f32,
    damp: f64,
) -> Result<Vec<Vec<(usize, f32)>>, QuantError> {
    let ur = inverse_cholesky_upper(row_h, damp)?.0;
    let rows = row_h.nrows();
    Ok((0..rows)
        .map(|i| {
            (i + 1..rows)
                .filter(|&k| ur[(i, k)] != 0.0)
                .map(|k| {
                    let weight = ur[(i, k)] / ur[(i, i)] * (scale(i) / scale(k)) as f64;
                    (k, weight as f32)
                })
                .collect()
        })
        .collect())
}

/// What both column loops (this module's and [`super::gptvq_tensors`]'s) start from.
pub(super) struct Prepared {
    pub groups: usize,
    /// Columns rounded up to whole groups (the padding columns are zero weights).
    pub padded: usize,
    /// Processing order: position p quantizes group perm[p].
    pub perm: Vec<usize>,
    pub position_of_group: Vec<usize>,
    /// Upper Cholesky factor of H^-1 in the processing order (`padded x padded`).
    pub u: Mat<f64>,
    /// Per position: U_QQ^-1 (d x d, row-major) and the metric of its points.
    pub uinv: Vec<Vec<f64>>,
    pub metrics: Vec<Vec<f32>>,
    pub row_scales: Vec<half::f16>,
    /// W / s_i, columns in the processing order, padded (`rows x padded`).
    pub wp: Mat<f32>,
}

impl Prepared {
    /// Scale of row `i` (1 without row scales).
    pub fn scale(&self, i: usize) -> f32 {
        row_scale(&self.row_scales, i)
    }

    /// The member groups of tile column `tc`.
    pub fn members(&self, cfg: &VqConfig, cols: usize, tc: usize) -> Vec<usize> {
        let (d, tile_c) = (cfg.d, cfg.tile_cols);
        (tc * tile_c / d..((tc + 1) * tile_c).min(cols).div_ceil(d)).collect()
    }
}

/// The processing order, H^-1's factor in it, the per-group metrics and the scaled weights
/// (ATHENA-MATH 1-2).
pub(super) fn prepare(
    w: &[f32],
    rows: usize,
    cols: usize,
    h: &Mat<f64>,
    cfg: &VqConfig,
) -> Result<Prepared, QuantError> {
    cfg.validate(rows, cols)?;
    let d = cfg.d;
    let groups = cols.div_ceil(d);

    // When d does not divide cols, the last group is partial. The loop runs on `padded` columns:
    // the missing ones are zero weights whose Hessian row and column are zero but for the
    // diagonal (the mean of the real diagonal, so the damping stays the same). Such a column is
    // independent of every real one, so U couples it to none and no error feeds through it,
    // and its metric weight is set to almost nothing below: the padding changes no real column.
    let padded = groups * d;
    let mean_diag = (0..cols).map(|j| h[(j, j)]).sum::<f64>() / cols as f64;
    let h_at = |a: usize, b: usize| match (a < cols, b < cols) {
        (true, true) => h[(a, b)],
        _ if a == b => mean_diag,
        _ => 0.0,
    };

    // Work in the processing order: permuted column p*d+e holds original column perm[p]*d+e.
    let perm = group_order(h, d, cfg.order);
    let col = |p: usize| perm[p / d] * d + p % d;
    let u = if cfg.use_hessian_metric || cfg.error_feedback {
        let hp = Mat::from_fn(padded, padded, |i, j| h_at(col(i), col(j)));
        inverse_cholesky_upper(&hp, cfg.damp)?.0
    } else {
        Mat::identity(padded, padded)
    };
    // With row scales the loop runs on W / s_i: every step of it (assignment, error feedback)
    // is row-wise linear, so only the codebooks see a different problem, rows of equal shape.
    let row_scales = if cfg.row_scales {
        rms_scales(w, rows, cols)
    } else {
        Vec::new()
    };
    let wp = Mat::<f32>::from_fn(rows, padded, |i, j| match col(j) {
        c if c < cols => w[i * cols + c] / row_scale(&row_scales, i),
        _ => 0.0,
    });

    // Per group (in processing order): U_QQ^-1 and the metric used for its points.
    let mut position_of_group = vec![0usize; groups];
    let mut uinv = Vec::with_capacity(groups);
    let mut metrics = Vec::with_capacity(groups);
    for (p, &g) in perm.iter().enumerate() {
        position_of_group[g] = p;
        let block: Vec<f64> = (0..d * d)
            .map(|rs| u[(p * d + rs / d, p * d + rs % d)])
            .collect();
        let (inv, metric) = block_metric(&block, d);
        uinv.push(inv);
        let identity = (0..d * d)
            .map(|rs| if rs / d == rs % d { 1.0 } else { 0.0 })
            .collect();
        let mut metric = if cfg.use_hessian_metric {
            metric
        } else {
            identity
        };
        let real = cols - g * d;
        if real < d {
            // Padding of a partial group: no weight in the assignment, and just enough in the
            // centroid update that a centroid only partial groups use stays determined.
            let largest = (0..real).map(|e| metric[e * d + e]).fold(0f32, f32::max);
            for e in real..d {
                for k in 0..d {
                    metric[e * d + k] = 0.0;
                    metric[k * d + e] = 0.0;
                }
                metric[e * d + e] = largest * 1e-6;
            }
        }
        metrics.push(metric);
    }
    Ok(Prepared {
        groups,
        padded,
        perm,
        position_of_group,
        u,
        uinv,
        metrics,
        row_scales,
        wp,
    })
}

/// Fits the codebook of every tile of tile column `tc`: the tile's points are the rows of its
/// member groups, `columns(p, rows)` giving the d values of each row of `rows` at processing
/// position p (the error-updated weights); `lloyd` runs k-means' heavy steps.
#[allow(clippy::too_many_arguments)]
pub(super) fn fit_tile_column(
    prep: &Prepared,
    cfg: &VqConfig,
    rows: usize,
    cols: usize,
    tc: usize,
    seed: u64,
    columns: &(dyn Fn(usize, std::ops::Range<usize>) -> Vec<f32> + Sync),
    lloyd: &(dyn kmeans::Lloyd + Sync),
) -> Result<Vec<StoredCodebook>, QuantError> {
    let (d, tile_r) = (cfg.d, cfg.tile_rows);
    let (tiles_r, tiles_c) = (rows.div_ceil(tile_r), cols.div_ceil(cfg.tile_cols));
    let members = prep.members(cfg, cols, tc);
    (0..tiles_r)
        .into_par_iter()
        .map(|tr| {
            let row_range = tr * tile_r..((tr + 1) * tile_r).min(rows);
            let points: Vec<GroupPoints> = members
                .iter()
                .map(|&mg| {
                    let p = prep.position_of_group[mg];
                    GroupPoints {
                        metric: prep.metrics[p].clone(),
                        vectors: columns(p, row_range.clone()),
                    }
                })
                .collect();
            let t = tr * tiles_c + tc;
            let mut rng = SplitMix64::new(seed ^ (t as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let centroids = if cfg.uniform_grid {
                uniform_grid(&points, cfg.n)
            } else {
                kmeans::fit(&points, d, cfg.n, cfg.kmeans_iters, &mut rng, lloyd)?
            };
            Ok(codebook::store(&centroids, d, cfg.codebook))
        })
        .collect()
}

/// Quantizes W (`rows x cols`, row-major) with the Hessian `h` (`cols x cols`) and, if given,
/// the row Hessian `row_h` (`rows x rows`) of a Kronecker-factored loss ([`row_pushes`]), on
/// the CPU.
pub fn quantize(
    w: &[f32],
    rows: usize,
    cols: usize,
    h: &Mat<f64>,
    row_h: Option<&Mat<f64>>,
    cfg: &VqConfig,
    seed: u64,
) -> Result<VqLayer, QuantError> {
    let mut prep = prepare(w, rows, cols, h, cfg)?;
    let mut wp = std::mem::replace(&mut prep.wp, Mat::new());
    let d = cfg.d;
    let (groups, padded) = (prep.groups, prep.padded);
    let (tile_r, tile_c) = (cfg.tile_rows, cfg.tile_cols);
    let (tiles_r, tiles_c) = (rows.div_ceil(tile_r), cols.div_ceil(tile_c));
    let u32m = Mat::<f32>::from_fn(padded, padded, |i, j| prep.u[(i, j)] as f32);
    let scale = |i: usize| prep.scale(i);
    let pushes = match row_h {
        Some(rh) => Some(row_pushes(rh, scale, cfg.damp)?),
        None => None,
    };
    let (perm, metrics, uinv) = (&prep.perm, &prep.metrics, &prep.uinv);

    let mut codebooks: Vec<Option<StoredCodebook>> = vec![None; tiles_r * tiles_c];
    let mut indices = vec![0u32; rows * groups];
    let mut dequantized = vec![0f32; rows * cols];
    let mut block_err = Mat::<f32>::zeros(rows, padded);
    // One scorer per tile row, refilled for each group.
    let mut scorers: Vec<MetricCentroids> =
        (0..tiles_r).map(|_| MetricCentroids::empty(d)).collect();
    // The lazy block: errors of columns [block_start, q) have reached columns up to block_end
    // and wait for one GEMM to reach the columns after it.
    let block_len = cfg.block_columns.max(d) / d * d;
    let (mut block_start, mut block_end) = (0usize, block_len.min(padded));
    let flush = |wp: &mut Mat<f32>, block_err: &Mat<f32>, from: usize, done: usize, end: usize| {
        if cfg.error_feedback && from < done && end < padded {
            faer::linalg::matmul::matmul(
                wp.as_mut().subcols_mut(end, padded - end),
                faer::Accum::Add,
                block_err.as_ref().subcols(from, done - from),
                u32m.as_ref()
                    .submatrix(from, end, done - from, padded - end),
                -1.0,
                faer::Par::rayon(0),
            );
        }
    };

    for p in 0..groups {
        let g = perm[p];
        let q = p * d;
        let tc = g * d / tile_c;
        if codebooks[tc].is_none() {
            // The tile column's codebooks see every update so far: close the lazy block first.
            flush(&mut wp, &block_err, block_start, q, block_end);
            (block_start, block_end) = (q, (q + block_len).min(padded));
            let columns = |p: usize, range: std::ops::Range<usize>| {
                range
                    .flat_map(|i| (0..d).map(move |e| (i, p * d + e)))
                    .map(|(i, j)| wp[(i, j)])
                    .collect()
            };
            let fitted = fit_tile_column(
                &prep,
                cfg,
                rows,
                cols,
                tc,
                seed,
                &columns,
                &kmeans::SimdLloyd,
            )?;
            for (tr, cb) in fitted.into_iter().enumerate() {
                codebooks[tr * tiles_c + tc] = Some(cb);
            }
        }

        // Assign every row's d-vector of this group to its tile's quantized centroids.
        for (tr, scorer) in scorers.iter_mut().enumerate() {
            let codebook = codebooks[tr * tiles_c + tc].as_ref().unwrap();
            scorer.refill(&metrics[p], &codebook.values);
        }
        let real_d = d.min(cols - g * d);
        let row_vector = |wp: &Mat<f32>, i: usize| {
            let mut v = [0f32; 8];
            for (e, x) in v[..d].iter_mut().enumerate() {
                *x = wp[(i, q + e)];
            }
            v
        };
        let chosen: Vec<u32> = match &pushes {
            None => (0..rows)
                .into_par_iter()
                .map(|i| scorers[i / tile_r].nearest(&row_vector(&wp, i)[..d]).0)
                .collect(),
            // Row by row: each row's error moves the later rows of this group first.
            Some(pushes) => (0..rows)
                .map(|i| {
                    let v = row_vector(&wp, i);
                    let a = scorers[i / tile_r].nearest(&v[..d]).0;
                    let values = &codebooks[(i / tile_r) * tiles_c + tc]
                        .as_ref()
                        .unwrap()
                        .values;
                    for &(k, weight) in &pushes[i] {
                        for e in 0..real_d {
                            wp[(k, q + e)] -= weight * (v[e] - values[a as usize * d + e]);
                        }
                    }
                    a
                })
                .collect(),
        };
        for i in 0..rows {
            let a = chosen[i] as usize;
            let s = scale(i);
            let values = &codebooks[(i / tile_r) * tiles_c + tc]
                .as_ref()
                .unwrap()
                .values;
            indices[i * groups + g] = chosen[i];
            let mut diff = [0f64; 8];
            for e in 0..d {
                let c = values[a * d + e];
                if g * d + e < cols {
                    dequantized[i * cols + g * d + e] = c * s;
                }
                diff[e] = (wp[(i, q + e)] - c) as f64;
            }
            // E = diff U_QQ^-1 (row vector times upper-triangular inverse).
            for e in 0..d {
                let err: f64 = (0..=e).map(|k| diff[k] * uinv[p][k * d + e]).sum();
                block_err[(i, q + e)] = err as f32;
            }
        }
        if let Some(pushes) = &pushes {
            // The later columns see each row's error plus the pushed errors of the rows
            // before it: E' = sum over i <= i' of weight(i, i') E_i. Rows descending, so
            // every E_i read below is still row i's own (the rows before it add theirs later).
            for i in (0..rows).rev() {
                for &(k, weight) in &pushes[i] {
                    for e in 0..d {
                        let add = weight * block_err[(i, q + e)];
                        block_err[(k, q + e)] += add;
                    }
                }
            }
        }

        // Feed the error forward inside the lazy block; the rest waits for the flush.
        let next = q + d;
        if cfg.error_feedback && next < block_end {
            let (errs, rest) = (
                block_err.as_ref().subcols(q, d),
                u32m.as_ref().submatrix(q, next, d, block_end - next),
            );
            faer::linalg::matmul::matmul(
                wp.as_mut().subcols_mut(next, block_end - next),
                faer::Accum::Add,
                errs,
                rest,
                -1.0,
                faer::Par::Seq,
            );
        }
        if next == block_end {
            flush(&mut wp, &block_err, block_start, block_end, block_end);
            (block_start, block_end) = (block_end, (block_end + block_len).min(padded));
        }
    }

    Ok(VqLayer {
        rows,
        cols,
        indices,
        codebooks: codebooks
            .into_iter()
            .map(|c| c.expect("every tile column is visited"))
            .collect(),
        row_scales: prep.row_scales,
        dequantized,
    })
}
