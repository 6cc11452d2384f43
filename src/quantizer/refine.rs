//! Codebook update after assignment (the step GPTVQ calls codebook update; ATHENA-MATH 2 "may be
//! refined afterwards"). With every index fixed the reconstruction is linear in the centroids, so
//! the centroids that minimise the layer loss tr(dW H dW^T) against the *original* weights solve a
//! least-squares problem of n*d unknowns per codebook:
//!
//!   (sum_i S_i^T H S_i) delta = sum_i S_i^T H r_i,
//!
//! where r_i is row i's residual and S_i scatters the codebook onto the tile's columns of row i.
//! The k-means fit only saw the error-updated weights of its own tile with a per-group diagonal
//! metric; this step sees the whole H, cross-group terms included.
//!
//! Tiles of one tile column share no rows, so they are solved in parallel; tile columns are visited
//! left to right, each against the residual left by the ones before. The refined centroids are
//! stored again (int8 or f16) and a tile keeps its new codebook only when the stored values lower
//! the loss.

use faer::linalg::solvers::Solve;
use faer::{Mat, Side};
use rayon::prelude::*;

use super::codebook;
use super::gptvq::VqLayer;
use super::hessian::damped;
use super::VqConfig;

/// Largest n * d solved for: the normal matrix is (n d)^2 f64 per tile in flight. 1536 (so that
/// the 3-bit plan's d = 3, 512-centroid tiles are updated too) measured no better at --bits 3:
/// the same geometric-mean layer loss, perplexity 17.77 vs 17.63.
pub const MAX_UNKNOWNS: usize = 1024;

/// Refines every codebook of `layer` (quantized from `w`, row-major) in place and updates its
/// dequantized weights. Returns the number of tiles whose codebook changed.
pub fn refine_codebooks(w: &[f32], layer: &mut VqLayer, h: &Mat<f64>, cfg: &VqConfig) -> usize {
    let (rows, cols, d, n) = (layer.rows, layer.cols, cfg.d, cfg.n);
    if n * d > MAX_UNKNOWNS {
        return 0;
    }
    let (tile_r, tile_c) = (cfg.tile_rows, cfg.tile_cols);
    let (tiles_r, tiles_c) = (rows.div_ceil(tile_r), cols.div_ceil(tile_c));
    let groups = cols.div_ceil(d);
    let h = damped(h, cfg.damp);
    let mut residual = Mat::<f64>::from_fn(rows, cols, |i, j| {
        (w[i * cols + j] - layer.dequantized[i * cols + j]) as f64
    });
    let mut changed = 0;

    for tc in 0..tiles_c {
        let (c0, c1) = (tc * tile_c, ((tc + 1) * tile_c).min(cols));
        let width = c1 - c0;
        let h_tile: Vec<f64> = (0..width * width)
            .map(|jk| h[(c0 + jk / width, c0 + jk % width)])
            .collect();
        // Row block results: the new codebook (if it helps) for each tile of this tile column.
        let updates: Vec<Option<codebook::StoredCodebook>> = (0..tiles_r)
            .into_par_iter()
            .map(|tr| {
                let (r0, r1) = (tr * tile_r, ((tr + 1) * tile_r).min(rows));
                let t = tr * tiles_c + tc;
                let old = &layer.codebooks[t];
                // G = R H[:, c0..c1] for the tile's rows: the gradient of the loss per weight.
                let grad = residual.as_ref().subrows(r0, r1 - r0) * h.as_ref().subcols(c0, width);
                let unknowns = n * d;
                // The hot loop (rows x width^2 scattered adds): row-major slices, not Mat indexing.
                let mut acc = vec![0f64; unknowns * unknowns];
                let mut rhs = Mat::<f64>::zeros(unknowns, 1);
                let mut slots = vec![0usize; width];
                for i in r0..r1 {
                    for (j, slot) in slots.iter_mut().enumerate() {
                        let col = c0 + j;
                        *slot = layer.indices[i * groups + col / d] as usize * d + col % d;
                    }
                    // Row i's weights are s_i times its codebook entries: a centroid step e
                    // moves them by s_i e.
                    let s = layer.row_scale(i) as f64;
                    for (j, &sj) in slots.iter().enumerate() {
                        rhs[(sj, 0)] += s * grad[(i - r0, j)];
                        let hrow = &h_tile[j * width..(j + 1) * width];
                        let arow = &mut acc[sj * unknowns..(sj + 1) * unknowns];
                        for (&sk, &hv) in slots.iter().zip(hrow) {
                            arow[sk] += s * s * hv;
                        }
                    }
                }
                let normal = Mat::<f64>::from_fn(unknowns, unknowns, |a, b| acc[a * unknowns + b]);
                // A small ridge keeps unused centroids where they are and the solve well posed.
                let diag_mean =
                    (0..unknowns).map(|s| normal[(s, s)]).sum::<f64>() / unknowns as f64;
                if diag_mean <= 0.0 {
                    return None;
                }
                let mut ridged = normal.clone();
                for s in 0..unknowns {
                    ridged[(s, s)] += 1e-4 * diag_mean;
                }
                let delta = ridged.llt(Side::Lower).ok()?.solve(&rhs);
                let moved: Vec<f32> = (0..unknowns)
                    .map(|s| (old.values[s] as f64 + delta[(s, 0)]) as f32)
                    .collect();
                let new = codebook::store(&moved, d, cfg.codebook);
                // Loss change of the stored step e: e^T A e - 2 e^T b (negative is better).
                let step = Mat::<f64>::from_fn(unknowns, 1, |s, _| {
                    new.values[s] as f64 - old.values[s] as f64
                });
                let gain = (step.transpose() * &normal * &step)[(0, 0)]
                    - 2.0 * (step.transpose() * &rhs)[(0, 0)];
                (gain < 0.0).then_some(new)
            })
            .collect();

        for (tr, update) in updates.into_iter().enumerate() {
            let Some(new) = update else { continue };
            changed += 1;
            let (r0, r1) = (tr * tile_r, ((tr + 1) * tile_r).min(rows));
            for i in r0..r1 {
                let s = layer.row_scale(i);
                for col in c0..c1 {
                    let a = layer.indices[i * groups + col / d] as usize;
                    let value = new.values[a * d + col % d] * s;
                    layer.dequantized[i * cols + col] = value;
                    residual[(i, col)] = (w[i * cols + col] - value) as f64;
                }
            }
            layer.codebooks[tr * tiles_c + tc] = new;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantizer::hessian::HessianAccumulator;
    use crate::quantizer::{gptvq, relative_loss};

    fn layer_and_hessian(rows: usize, cols: usize) -> (Vec<f32>, Mat<f64>) {
        let mut rng = crate::quantizer::rng::SplitMix64::new(7);
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.unit() as f32 - 0.5).collect();
        let tokens = 4 * cols;
        // Correlated inputs, so the cross-group terms of H matter.
        let base: Vec<f32> = (0..tokens * cols)
            .map(|_| rng.unit() as f32 - 0.5)
            .collect();
        let x: Vec<f32> = (0..tokens * cols)
            .map(|k| base[k] + 0.7 * base[k - k % cols])
            .collect();
        let mut acc = HessianAccumulator::new(cols);
        acc.add(&x, tokens);
        (w, acc.finish())
    }

    #[test]
    fn refinement_never_raises_the_layer_loss() {
        let (rows, cols) = (48, 32);
        let (w, h) = layer_and_hessian(rows, cols);
        // Rows of different magnitudes, for the row-scaled runs.
        let w: Vec<f32> = w
            .iter()
            .enumerate()
            .map(|(k, &v)| v * (1 + k / cols % 7) as f32)
            .collect();
        let kinds = [codebook::CodebookKind::Int8, codebook::CodebookKind::F16];
        for ((tile_r, tile_c), row_scales) in [(16, 32), (48, 2), (24, 8)]
            .into_iter()
            .flat_map(|s| [(s, false), (s, true)])
        {
            for kind in kinds {
                let mut cfg = VqConfig::new(2, 8, tile_r, tile_c);
                cfg.codebook = kind;
                cfg.row_scales = row_scales;
                let mut layer = gptvq::quantize(&w, rows, cols, &h, None, &cfg, 1).unwrap();
                // The update minimises the damped loss (the one the quantizer works with).
                let hd = damped(&h, cfg.damp);
                let before = relative_loss(&w, &layer.dequantized, rows, cols, &hd);
                let changed = refine_codebooks(&w, &mut layer, &h, &cfg);
                let after = relative_loss(&w, &layer.dequantized, rows, cols, &hd);
                assert!(
                    after <= before * (1.0 + 1e-9),
                    "{tile_r}x{tile_c}: {after} > {before}"
                );
                assert!(changed > 0, "{tile_r}x{tile_c} {kind:?}: no tile improved");
                // The dequantized weights are still exactly the codebook entries the indices name
                // (times the row scale).
                for i in 0..rows {
                    let s = layer.row_scale(i);
                    for col in 0..cols {
                        let t = (i / tile_r) * cols.div_ceil(tile_c) + col / tile_c;
                        let a = layer.indices[i * (cols / 2) + col / 2] as usize;
                        assert_eq!(
                            layer.dequantized[i * cols + col],
                            layer.codebooks[t].values[a * 2 + col % 2] * s
                        );
                    }
                }
            }
        }
    }
}
