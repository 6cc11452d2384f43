//! The GPTVQ column loop of [`super::gptvq`] on candle tensors: `athena-convert --device cuda`
//! runs it on a GPU, and `--device cpu-tensors` runs the very same code on candle's CPU device,
//! which is how the tests prove it without a GPU.
//!
//! One algorithm with the CPU loop, not a second one: the processing order, the factor of H^-1,
//! the metrics, k-means++ seeding, Lloyd's centroid solve and codebook rounding are the shared
//! code of `gptvq::prepare` and `gptvq::fit_tile_column`. On the device run the steps whose work
//! grows with rows x columns x centroids: the distances of every row of a group to every centroid
//! and their argmin (the assignment, and each Lloyd iteration's), the sums of Lloyd's centroid
//! update, the group's error (diff U_QQ^-1), and the error feedback, within the lazy block and
//! at its flush, as matrix products. Host transfers are per tile column (the points k-means
//! seeds from), per Lloyd iteration (its assignment, n x d x d sums) and per layer. The host
//! keeps the f64 Cholesky factor of H^-1 (once per layer), k-means++ seeding on its subsample,
//! the n small d x d solves of Lloyd's update, and the per-layer steps around the loop (codebook
//! refinement, low-rank residual, rotation). BoA's q/k layers with row Hessians feed each row's error to the next
//! row of the same group, a sequential chain, and stay on the CPU loop (`quantize_layer`).
//!
//! Floating point: the device sums in f32 in its own order, so a row whose two best centroids
//! score within rounding of each other may take the other one (tests/device_path.rs counts them).

use candle_core::{DType, Device, Tensor, D};
use faer::Mat;

use super::codebook::StoredCodebook;
use super::gptvq::{fit_tile_column, prepare, VqLayer};
use super::kmeans::{CentroidSums, GroupPoints, Lloyd};
use super::QuantError;
use super::VqConfig;

/// Scores held at once by one batched distance product (f32 elements, 1 GiB).
const MAX_SCORES: usize = 1 << 28;

/// The distances of points under per-group metrics (g x d x d) to the centroids given
/// transposed (`ct`: d x n, or per batch g x d x n), as the terms of w M w - 2 w M c + c M c
/// that depend on c, in one product: the points come with a constant 1 appended
/// (`points_1`: g x r x (d + 1)) and meet [-2 M c; c M c] (g x (d + 1) x n). Shape (g x r x n).
fn scores(points_1: &Tensor, metrics: &Tensor, ct: &Tensor) -> candle_core::Result<Tensor> {
    let mc = metrics.broadcast_matmul(ct)?; // (g, d, n)
    let cmc = mc.broadcast_mul(ct)?.sum_keepdim(1)?; // (g, 1, n)
    points_1.matmul(&Tensor::cat(&[(mc * -2.0)?, cmc], 1)?)
}

/// Points (rows x d) with the constant 1 [`scores`] takes appended: rows x (d + 1).
fn with_ones(points: &Tensor) -> candle_core::Result<Tensor> {
    let ones = Tensor::ones((points.dim(0)?, 1), points.dtype(), points.device())?;
    Tensor::cat(&[points, &ones], 1)
}

/// [`Lloyd`] on a candle device: each batch of groups with the same number of points is one
/// batched product and argmin for the assignment, and three index_adds for the update's sums.
pub struct TensorLloyd<'a> {
    pub device: &'a Device,
}

impl TensorLloyd<'_> {
    /// Runs of consecutive groups with the same number of points, each with at most
    /// [`MAX_SCORES`] point-centroid pairs, uploaded as points with a 1 appended
    /// (g x r x (d + 1), [`scores`]) and metrics (g x d x d), with the offset of their first point.
    fn batches(
        &self,
        groups: &[GroupPoints],
        d: usize,
        n: usize,
    ) -> candle_core::Result<Vec<(usize, Tensor, Tensor)>> {
        let mut out = Vec::new();
        let (mut first, mut at) = (0, 0);
        while first < groups.len() {
            let r = groups[first].vectors.len() / d;
            let most = (MAX_SCORES / (r * n).max(1)).max(1);
            let mut last = first + 1;
            while last < groups.len() && last - first < most && groups[last].vectors.len() == r * d
            {
                last += 1;
            }
            let batch = &groups[first..last];
            let g = batch.len();
            let points: Vec<f32> = batch
                .iter()
                .flat_map(|gp| gp.vectors.chunks_exact(d))
                .flat_map(|w| w.iter().copied().chain([1.0]))
                .collect();
            let metrics: Vec<f32> = batch
                .iter()
                .flat_map(|gp| gp.metric.iter().copied())
                .collect();
            out.push((
                at,
                Tensor::from_vec(points, (g, r, d + 1), self.device)?,
                Tensor::from_vec(metrics, (g, d, d), self.device)?,
            ));
            at += g * r;
            first = last;
        }
        Ok(out)
    }
}

impl Lloyd for TensorLloyd<'_> {
    fn assign(
        &self,
        groups: &[GroupPoints],
        centroids: &[f32],
        d: usize,
        out: &mut [u32],
    ) -> Result<(), QuantError> {
        let n = centroids.len() / d;
        let ct = Tensor::from_slice(centroids, (n, d), self.device)?
            .t()?
            .contiguous()?;
        for (at, x, m) in self.batches(groups, d, n)? {
            let chosen = scores(&x, &m, &ct)?.argmin(D::Minus1)?.flatten_all()?;
            let chosen = chosen.to_vec1::<u32>()?;
            out[at..at + chosen.len()].copy_from_slice(&chosen);
        }
        Ok(())
    }

    fn sums(
        &self,
        groups: &[GroupPoints],
        assignment: &[u32],
        d: usize,
        n: usize,
    ) -> Result<CentroidSums, QuantError> {
        let mut sums = CentroidSums {
            lhs: vec![0.0; n * d * d],
            rhs: vec![0.0; n * d],
            count: vec![0; n],
        };
        let dev = self.device;
        for (at, x, m) in self.batches(groups, d, n)? {
            let (g, r, _) = x.dims3()?;
            let a = Tensor::from_slice(&assignment[at..at + g * r], g * r, dev)?;
            // Each point adds its group's M (d x d) and M w (d) to its centroid's sums.
            let mw = x
                .narrow(2, 0, d)?
                .matmul(&m.transpose(1, 2)?.contiguous()?)?;
            let rhs = Tensor::zeros((n, d), DType::F32, dev)?.index_add(
                &a,
                &mw.reshape((g * r, d))?,
                0,
            )?;
            let per_point = m.reshape((g, 1, d * d))?.broadcast_as((g, r, d * d))?;
            let lhs = Tensor::zeros((n, d * d), DType::F32, dev)?.index_add(
                &a,
                &per_point.contiguous()?.reshape((g * r, d * d))?,
                0,
            )?;
            let count = Tensor::zeros(n, DType::F32, dev)?.index_add(
                &a,
                &Tensor::ones(g * r, DType::F32, dev)?,
                0,
            )?;
            let add = |to: &mut [f64], t: &Tensor| -> candle_core::Result<()> {
                for (s, v) in to.iter_mut().zip(t.flatten_all()?.to_vec1::<f32>()?) {
                    *s += v as f64;
                }
                Ok(())
            };
            add(&mut sums.lhs, &lhs)?;
            add(&mut sums.rhs, &rhs)?;
            for (c, v) in sums.count.iter_mut().zip(count.to_vec1::<f32>()?) {
                *c += v.round() as usize;
            }
        }
        Ok(sums)
    }
}

/// A row-major `rows x cols` f32 tensor of a faer matrix.
fn upload(m: &Mat<f32>, device: &Device) -> candle_core::Result<Tensor> {
    let (rows, cols) = (m.nrows(), m.ncols());
    let data: Vec<f32> = (0..rows * cols).map(|k| m[(k / cols, k % cols)]).collect();
    Tensor::from_vec(data, (rows, cols), device)
}

/// The codebooks of one tile column on the device: per tile row, the values transposed
/// (`tiles_r x d x n`) for the scores, and all of them as rows (`tiles_r * n x d`) to gather the
/// chosen centroids from.
struct DeviceCodebooks {
    transposed: Tensor,
    rows: Tensor,
}

impl DeviceCodebooks {
    fn new(codebooks: &[StoredCodebook], d: usize, device: &Device) -> candle_core::Result<Self> {
        let tiles = codebooks.len();
        let values: Vec<f32> = codebooks
            .iter()
            .flat_map(|c| c.values.iter().copied())
            .collect();
        let n = values.len() / (tiles * d);
        let rows = Tensor::from_vec(values, (tiles * n, d), device)?;
        let transposed = rows.reshape((tiles, n, d))?.transpose(1, 2)?.contiguous()?;
        Ok(Self { transposed, rows })
    }
}

/// Quantizes W (`rows x cols`, row-major) with the Hessian `h` on `device`: the loop of
/// [`super::gptvq::quantize`] without row Hessians.
pub fn quantize(
    w: &[f32],
    rows: usize,
    cols: usize,
    h: &Mat<f64>,
    cfg: &VqConfig,
    seed: u64,
    device: &Device,
) -> Result<VqLayer, QuantError> {
    let prep = prepare(w, rows, cols, h, cfg)?;
    let d = cfg.d;
    let (groups, padded, n) = (prep.groups, prep.padded, cfg.n);
    let (tile_r, tile_c) = (cfg.tile_rows, cfg.tile_cols);
    let (tiles_r, tiles_c) = (rows.div_ceil(tile_r), cols.div_ceil(tile_c));
    let run = || -> Result<(Vec<u32>, Vec<StoredCodebook>), QuantError> {
        let u = upload(
            &Mat::<f32>::from_fn(padded, padded, |i, j| prep.u[(i, j)] as f32),
            device,
        )?;
        let flat = |v: &[Vec<f32>]| v.iter().flatten().copied().collect::<Vec<f32>>();
        let metrics = Tensor::from_vec(flat(&prep.metrics), (groups, d, d), device)?;
        let uinv: Vec<Vec<f32>> = prep
            .uinv
            .iter()
            .map(|b| b.iter().map(|&x| x as f32).collect())
            .collect();
        let uinv = Tensor::from_vec(flat(&uinv), (groups, d, d), device)?;
        // Row i's first centroid in `DeviceCodebooks::rows`.
        let tile_offsets: Vec<u32> = (0..rows).map(|i| ((i / tile_r) * n) as u32).collect();
        let tile_offsets = Tensor::from_vec(tile_offsets, rows, device)?;
        let padding_rows = tiles_r * tile_r - rows;
        let padding = Tensor::zeros((padding_rows, d), DType::F32, device)?;

        // The lazy block [block_start, block_end): `cur` holds its columns from q on (not yet
        // quantized), `rest` the columns after it, `errs` the errors of [block_start, q) that
        // wait for one product to reach `rest`.
        let block_len = cfg.block_columns.max(d) / d * d;
        let (mut block_start, mut block_end) = (0usize, block_len.min(padded));
        let wp = upload(&prep.wp, device)?;
        let mut cur = wp.narrow(1, 0, block_end)?;
        let mut rest = wp.narrow(1, block_end, padded - block_end)?;
        let mut errs: Vec<Tensor> = Vec::new();
        let flush = |rest: &Tensor, errs: &mut Vec<Tensor>, from: usize, end: usize| {
            let out = match errs.is_empty() || end >= padded || !cfg.error_feedback {
                true => rest.clone(),
                false => {
                    let e = Tensor::cat(errs, 1)?;
                    let uu = u.narrow(0, from, e.dim(1)?)?.narrow(1, end, padded - end)?;
                    (rest - e.matmul(&uu.contiguous()?)?)?
                }
            };
            errs.clear();
            Ok::<_, QuantError>(out)
        };

        let mut codebooks: Vec<Option<Vec<StoredCodebook>>> = vec![None; tiles_c];
        let mut on_device: Vec<Option<DeviceCodebooks>> = (0..tiles_c).map(|_| None).collect();
        let mut chosen = Vec::with_capacity(groups);
        for p in 0..groups {
            let g = prep.perm[p];
            let q = p * d;
            let tc = g * d / tile_c;
            if codebooks[tc].is_none() {
                // The tile column's codebooks see every update so far: close the lazy block.
                rest = flush(&rest, &mut errs, block_start, block_end)?;
                let remaining = match padded > block_end {
                    true => Tensor::cat(&[&cur, &rest], 1)?,
                    false => cur.clone(),
                };
                (block_start, block_end) = (q, (q + block_len).min(padded));
                cur = remaining.narrow(1, 0, block_end - q)?;
                rest = remaining.narrow(1, block_end - q, padded - block_end)?;
                // Every member group of the tile column sits at or after q: one download.
                let members = prep.members(cfg, cols, tc);
                let local: Vec<u32> = members
                    .iter()
                    .flat_map(|&mg| {
                        let pq = prep.position_of_group[mg] * d - q;
                        (pq..pq + d).map(|c| c as u32)
                    })
                    .collect();
                let width = local.len();
                let picked = remaining
                    .index_select(&Tensor::from_vec(local, width, device)?, 1)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                let mut column_of = vec![usize::MAX; groups];
                for (k, &mg) in members.iter().enumerate() {
                    column_of[prep.position_of_group[mg]] = k * d;
                }
                let (column_of, picked) = (&column_of, &picked);
                let columns = |p: usize, range: std::ops::Range<usize>| {
                    range
                        .flat_map(|i| (0..d).map(move |e| i * width + column_of[p] + e))
                        .map(|k| picked[k])
                        .collect()
                };
                let lloyd = TensorLloyd { device };
                let fitted = fit_tile_column(&prep, cfg, rows, cols, tc, seed, &columns, &lloyd)?;
                on_device[tc] = Some(DeviceCodebooks::new(&fitted, d, device)?);
                codebooks[tc] = Some(fitted);
            }
            let cb = on_device[tc].as_ref().expect("fitted above");

            // Every row's d-vector of this group against its tile's stored centroids.
            let x = cur.narrow(1, 0, d)?.contiguous()?;
            let padded_x = match padding_rows {
                0 => x.clone(),
                _ => Tensor::cat(&[&x, &padding], 0)?,
            };
            let s = scores(
                &with_ones(&padded_x)?.reshape((tiles_r, tile_r, d + 1))?,
                &metrics.narrow(0, p, 1)?,
                &cb.transposed,
            )?;
            let a = s.argmin(D::Minus1)?.flatten_all()?.narrow(0, 0, rows)?;
            let c = cb.rows.index_select(&(&a + &tile_offsets)?, 0)?;
            let err = (x - c)?.matmul(&uinv.narrow(0, p, 1)?.squeeze(0)?)?;
            chosen.push(a);

            // Feed the error forward inside the lazy block; the rest waits for the flush.
            let next = q + d;
            if next < block_end {
                let tail = cur.narrow(1, d, block_end - next)?;
                cur = match cfg.error_feedback {
                    true => {
                        let uu = u.narrow(0, q, d)?.narrow(1, next, block_end - next)?;
                        (tail - err.matmul(&uu.contiguous()?)?)?
                    }
                    false => tail,
                };
            }
            errs.push(err);
            if next == block_end && block_end < padded {
                rest = flush(&rest, &mut errs, block_start, block_end)?;
                let len = block_len.min(padded - block_end);
                (block_start, block_end) = (block_end, block_end + len);
                cur = rest.narrow(1, 0, len)?;
                rest = rest.narrow(1, len, padded - block_end)?;
            }
        }
        let chosen = Tensor::stack(&chosen, 1)?.flatten_all()?.to_vec1::<u32>()?;
        // Tile t = tile_row * tiles_c + tile_column, as `VqLayer::codebooks` numbers them.
        let codebooks: Vec<StoredCodebook> = (0..tiles_r)
            .flat_map(|tr| (0..tiles_c).map(move |tc| (tr, tc)))
            .map(|(tr, tc)| {
                codebooks[tc]
                    .as_ref()
                    .expect("every tile column is visited")[tr]
                    .clone()
            })
            .collect();
        Ok((chosen, codebooks))
    };
    let (chosen, codebooks) = run()?;

    let mut indices = vec![0u32; rows * groups];
    let mut dequantized = vec![0f32; rows * cols];
    for i in 0..rows {
        let s = prep.scale(i);
        for (p, &g) in prep.perm.iter().enumerate() {
            let a = chosen[i * groups + p];
            indices[i * groups + g] = a;
            let values = &codebooks[cfg.tile_of(cols, i, g)].values;
            for e in 0..d.min(cols - g * d) {
                dequantized[i * cols + g * d + e] = values[a as usize * d + e] * s;
            }
        }
    }
    Ok(VqLayer {
        rows,
        cols,
        indices,
        codebooks,
        row_scales: prep.row_scales,
        dequantized,
    })
}
