//! The quantizer: Hessian-guided vector quantization of one linear layer at a time.
//!
//! `hessian` builds H and the factors of H^-1, `kmeans` fits codebooks under per-group metrics,
//! `codebook` stores them (int8 or f16), `gptvq` runs the GPTQ-style loop on the CPU threads
//! (`gptvq_tensors` the same loop on candle tensors, for a GPU: `Engine`), `lowrank` fits the
//! residual correction. Bookkeeping (bit accounting, packing) lives in the container module.

pub mod codebook;
pub mod gptvq;
pub mod gptvq_tensors;
pub mod hessian;
pub mod kmeans;
pub mod lowrank;
pub mod plan;
pub mod refine;
pub mod rng;
pub mod rotation;
pub mod simd;

use faer::Mat;

pub use codebook::{CodebookKind, StoredCodebook};
pub use gptvq::VqLayer;
pub use lowrank::LowRank;
pub use rotation::Rotation;

/// Errors a layer's quantization can end with. Display is one line.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum QuantError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("Hessian is not positive definite even with damping {damp}")]
    NotPositiveDefinite { damp: f64 },
    #[error("SVD of the low-rank residual did not converge")]
    Svd,
    #[error("device: {0}")]
    Device(String),
}

impl From<candle_core::Error> for QuantError {
    fn from(e: candle_core::Error) -> Self {
        QuantError::Device(e.to_string())
    }
}

/// Where a layer's GPTVQ column loop runs.
#[derive(Debug, Clone, Default)]
pub enum Engine {
    /// `gptvq`: the CPU threads with SIMD scoring (the default).
    #[default]
    Simd,
    /// `gptvq_tensors`: candle tensors on this device (a GPU, or candle's CPU device to test
    /// the GPU code without one).
    Tensors(candle_core::Device),
}

impl PartialEq for Engine {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Engine::Simd, Engine::Simd) => true,
            (Engine::Tensors(a), Engine::Tensors(b)) => a.same_device(b),
            _ => false,
        }
    }
}

/// Order in which column groups are quantized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupOrder {
    /// Left to right.
    Natural,
    /// Descending sum of the Hessian diagonal over the group (GPTQ act-order per group).
    HessianDiagonal,
}

/// Lloyd iterations of k-means per codebook unless told otherwise (athena-convert --kmeans-iters):
/// 20 measured 0.5 perplexity better than 10 at --bits 3 for 19% more time (docs/benchmarks.md).
pub const DEFAULT_KMEANS_ITERS: usize = 20;

/// Relative Hessian damping unless told otherwise (athena-convert --damp): ATHENA-MATH's lambda,
/// added as lambda * mean(diag H) to the diagonal before the Cholesky factorisation.
pub const DEFAULT_DAMP: f64 = 0.01;

/// One layer's vector-quantization settings.
#[derive(Debug, Clone, PartialEq)]
pub struct VqConfig {
    /// Vector dimension: columns per group.
    pub d: usize,
    /// Centroids per codebook (a power of two).
    pub n: usize,
    /// Codebook tile: rows and columns (columns a multiple of d).
    pub tile_rows: usize,
    pub tile_cols: usize,
    pub codebook: CodebookKind,
    /// Low-rank residual rank (0: none).
    pub rank: usize,
    pub kmeans_iters: usize,
    /// Weigh k-means and assignment with the inverse-Hessian metric (off: plain Euclidean).
    pub use_hessian_metric: bool,
    /// Feed each group's error to the columns not yet quantized (off: independent groups).
    pub error_feedback: bool,
    /// After assignment, re-solve each codebook's centroids for the least layer loss
    /// (`refine`; GPTVQ's codebook update).
    pub refine_codebooks: bool,
    /// Scalar baselines (d = 1): the codebook is the uniform grid from the tile's minimum to its
    /// maximum instead of k-means centroids (round-to-nearest / GPTQ with a min-max grid).
    pub uniform_grid: bool,
    pub order: GroupOrder,
    /// Lazy-batch width in columns.
    pub block_columns: usize,
    /// Relative damping added to the Hessian diagonal.
    pub damp: f64,
    /// Block size B of the column rotation (`rotation`; 0: none): the codes describe W Q.
    pub rotation: usize,
    /// With `rotation` > 0: also quantize the layer unrotated and keep whichever has the lower
    /// layer loss (the rotation helps layers with massive-activation channels and hurts layers
    /// whose weights have outliers of their own).
    pub rotation_if_better: bool,
    /// Give every row an f16 scale (its RMS) and quantize the rows divided by it, so a tile's
    /// codebook fits the shape of its rows rather than their magnitudes (encoding version 3).
    pub row_scales: bool,
    /// Where the column loop runs; the result is the same up to f32 rounding (near-ties).
    pub engine: Engine,
}

impl VqConfig {
    /// The Athena defaults for a given vector dimension, centroid count and tile.
    pub fn new(d: usize, n: usize, tile_rows: usize, tile_cols: usize) -> Self {
        Self {
            d,
            n,
            tile_rows,
            tile_cols,
            codebook: CodebookKind::Int8,
            rank: 0,
            kmeans_iters: DEFAULT_KMEANS_ITERS,
            use_hessian_metric: true,
            error_feedback: true,
            refine_codebooks: true,
            uniform_grid: false,
            order: GroupOrder::HessianDiagonal,
            block_columns: 128,
            damp: DEFAULT_DAMP,
            rotation: 0,
            rotation_if_better: false,
            row_scales: false,
            engine: Engine::Simd,
        }
    }

    /// The stored encoding's parameters (format-spec/athena-encoding.md section 2) of this
    /// configuration on a `rows x cols` layer.
    pub fn encoding_params(&self, rows: usize, cols: usize) -> athena_decode::Params {
        athena_decode::Params {
            rows: rows as u64,
            cols: cols as u64,
            vector_dim: self.d as u32,
            centroids: self.n as u32,
            tile_rows: self.tile_rows as u64,
            tile_cols: self.tile_cols as u64,
            rank: self.rank as u32,
            codebook: match self.codebook {
                CodebookKind::Int8 => athena_decode::CodebookType::I8,
                CodebookKind::F16 => athena_decode::CodebookType::F16,
            },
            rotation: self.rotation as u32,
            row_scales: self.row_scales,
        }
    }

    /// The tile (index into `VqLayer::codebooks`) holding column group `group` of `row` in a
    /// layer of `cols` columns: tiles are numbered row-major, partial tiles at the edges count.
    pub fn tile_of(&self, cols: usize, row: usize, group: usize) -> usize {
        (row / self.tile_rows) * cols.div_ceil(self.tile_cols) + group * self.d / self.tile_cols
    }

    /// Index bits per d weights.
    pub fn index_bits(&self) -> u32 {
        self.n.trailing_zeros()
    }

    /// Checks the settings against a layer of `rows x cols`.
    pub fn validate(&self, rows: usize, cols: usize) -> Result<(), QuantError> {
        let fail = |m: String| Err(QuantError::Config(m));
        if !(1..=8).contains(&self.d) {
            return fail(format!("vector dimension d = {} is outside 1..=8", self.d));
        }
        if !self.n.is_power_of_two() || !(2..=65536).contains(&self.n) {
            return fail(format!(
                "centroid count n = {} must be a power of two in 2..=65536",
                self.n
            ));
        }
        if cols < self.d {
            return fail(format!("{cols} columns are fewer than d = {}", self.d));
        }
        if self.tile_rows == 0 || self.tile_rows > rows {
            return fail(format!(
                "tile rows {} must be in 1..={rows} for a layer of {rows} rows",
                self.tile_rows
            ));
        }
        // A tile of all columns may end in a partial group; any narrower tile must hold whole
        // groups so that no group straddles two tiles.
        if !(self.tile_cols.is_multiple_of(self.d) || self.tile_cols == cols)
            || self.tile_cols < self.d
            || self.tile_cols > cols
        {
            return fail(format!(
                "tile columns {} must be {cols} (all) or a multiple of d = {} in {}..={cols}",
                self.tile_cols, self.d, self.d
            ));
        }
        if self.uniform_grid && self.d != 1 {
            return fail(format!("a uniform scalar grid needs d = 1, not {}", self.d));
        }
        if self.rotation != 0 && rotation::block_size(cols, self.rotation) != self.rotation {
            return fail(format!(
                "rotation block {} must be a power of four in 4..=4096 dividing {cols} columns",
                self.rotation
            ));
        }
        if self.rank > rows.min(cols) {
            return fail(format!(
                "low-rank rank {} exceeds min({rows}, {cols})",
                self.rank
            ));
        }
        Ok(())
    }
}

/// A fully quantized linear layer: vector codes plus the optional low-rank residual.
#[derive(Debug, Clone)]
pub struct QuantizedLinear {
    pub config: VqConfig,
    pub vq: VqLayer,
    pub lowrank: Option<LowRank>,
    /// The column rotation the codes and the low-rank term live under (`config.rotation` > 0).
    pub rotation: Option<Rotation>,
    /// Final reconstruction (row-major), bit-identical to what the reference decoder returns.
    pub dequantized: Vec<f32>,
    /// tr(dW H dW^T) / tr(W H W^T).
    pub relative_loss: f64,
}

/// Quantizes W (`rows x cols`, row-major) under the Hessian `h` (`cols x cols`).
pub fn quantize_linear(
    w: &[f32],
    rows: usize,
    cols: usize,
    h: &Mat<f64>,
    config: &VqConfig,
    seed: u64,
) -> Result<QuantizedLinear, QuantError> {
    quantize_linear_banded(w, rows, cols, std::slice::from_ref(h), config, seed)
}

/// Quantizes W whose equal consecutive row bands each have their own Hessian (BoA's per-kv-head
/// Hessians of v_proj, ATHENA-MATH 6). Each band runs the GPTQ loop under its own H when the
/// codebook tiles fit inside a band; when a tile would span bands, the whole layer runs under the
/// mean of the band Hessians. The low-rank residual is fitted under that mean too.
///
/// With `config.rotation_if_better` the result is the better of the rotated and the unrotated
/// quantization (its `config.rotation` says which).
pub fn quantize_linear_banded(
    w: &[f32],
    rows: usize,
    cols: usize,
    hs: &[Mat<f64>],
    config: &VqConfig,
    seed: u64,
) -> Result<QuantizedLinear, QuantError> {
    quantize_layer(w, rows, cols, hs, None, config, seed)
}

/// Quantizes W under the Kronecker-factored loss tr(dW H dW^T H_row) (BoA's q_proj and k_proj,
/// ATHENA-MATH 6): `h` is the input Hessian (`cols x cols`), `row_h` the row Hessian (`rows x
/// rows`). The reported relative loss is the plain one under `h`, comparable across layers.
pub fn quantize_linear_kronecker(
    w: &[f32],
    rows: usize,
    cols: usize,
    h: &Mat<f64>,
    row_h: &Mat<f64>,
    config: &VqConfig,
    seed: u64,
) -> Result<QuantizedLinear, QuantError> {
    if row_h.nrows() != rows || row_h.ncols() != rows {
        return Err(QuantError::Config(format!(
            "row Hessian is {} x {}, the layer has {rows} rows",
            row_h.nrows(),
            row_h.ncols()
        )));
    }
    quantize_layer(
        w,
        rows,
        cols,
        std::slice::from_ref(h),
        Some(row_h),
        config,
        seed,
    )
}

/// The shared body of [`quantize_linear_banded`] and [`quantize_linear_kronecker`]: the column
/// rotation (and the per-layer choice of it) around [`quantize_unrotated`].
fn quantize_layer(
    w: &[f32],
    rows: usize,
    cols: usize,
    hs: &[Mat<f64>],
    row_h: Option<&Mat<f64>>,
    config: &VqConfig,
    seed: u64,
) -> Result<QuantizedLinear, QuantError> {
    if config.rotation == 0 {
        return quantize_unrotated(w, rows, cols, hs, row_h, config, seed, None);
    }
    config.validate(rows, cols)?;
    let rotation = Rotation::new(cols, config.rotation, seed ^ 0x5EED_0F51_6E55_0000);
    let quantize_rotated = || {
        let wr = rotation.rotate_weights(w, cols);
        let hr: Vec<Mat<f64>> = hs.iter().map(|h| rotation.rotate_hessian(h)).collect();
        // Q mixes columns only: the row Hessian stays as it is.
        quantize_unrotated(
            &wr,
            rows,
            cols,
            &hr,
            row_h,
            config,
            seed,
            Some(rotation.clone()),
        )
    };
    if !config.rotation_if_better {
        return quantize_rotated();
    }
    // Both losses are tr(dW H dW^T) / tr(W H W^T), which Q leaves unchanged: comparable. The
    // two quantizations are independent, so they run side by side.
    let plain_config = VqConfig {
        rotation: 0,
        ..config.clone()
    };
    let (rotated, plain) = rayon::join(quantize_rotated, || {
        quantize_unrotated(w, rows, cols, hs, row_h, &plain_config, seed, None)
    });
    let (rotated, plain) = (rotated?, plain?);
    Ok(if plain.relative_loss < rotated.relative_loss {
        plain
    } else {
        rotated
    })
}

/// The quantizer on the (possibly already rotated) weight; `rotation` is undone on the final
/// reconstruction only.
#[allow(clippy::too_many_arguments)]
fn quantize_unrotated(
    w: &[f32],
    rows: usize,
    cols: usize,
    hs: &[Mat<f64>],
    row_h: Option<&Mat<f64>>,
    config: &VqConfig,
    seed: u64,
    rotation: Option<Rotation>,
) -> Result<QuantizedLinear, QuantError> {
    config.validate(rows, cols)?;
    let bands = hs.len().max(1);
    let mean_of_bands;
    let mean = if let [h] = hs {
        h
    } else {
        mean_of_bands = mean_hessian(hs, cols);
        &mean_of_bands
    };
    let per_band = tiles_fit_bands(rows, bands, config);
    let (band_hs, band_rows) = if per_band {
        (hs, rows / bands)
    } else {
        (std::slice::from_ref(mean), rows)
    };
    let mut vq = VqLayer {
        rows,
        cols,
        indices: Vec::with_capacity(rows * cols.div_ceil(config.d)),
        codebooks: Vec::new(),
        row_scales: Vec::new(),
        dequantized: Vec::with_capacity(rows * cols),
    };
    for (b, h) in band_hs.iter().enumerate() {
        // Bands stack whole tile rows, so their codebooks concatenate in tile order.
        let wb = &w[b * band_rows * cols..(b + 1) * band_rows * cols];
        let band_seed = seed ^ (b as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
        // Row Hessians come with a single band (quantize_linear_kronecker).
        let part_rows = row_h.filter(|_| band_hs.len() == 1);
        let mut part = match (&config.engine, part_rows) {
            (Engine::Tensors(device), None) => {
                gptvq_tensors::quantize(wb, band_rows, cols, h, config, band_seed, device)?
            }
            // Row Hessians chain each row's error to the next row: sequential, CPU only.
            _ => gptvq::quantize(wb, band_rows, cols, h, part_rows, config, band_seed)?,
        };
        if config.refine_codebooks && !config.uniform_grid {
            refine::refine_codebooks(wb, &mut part, h, config);
        }
        vq.indices.extend(part.indices);
        vq.codebooks.extend(part.codebooks);
        vq.row_scales.extend(part.row_scales);
        vq.dequantized.extend(part.dequantized);
    }
    let mut dequantized = vq.dequantized.clone();
    let lowrank = if config.rank > 0 {
        let lr = lowrank::fit(
            w,
            &vq.dequantized,
            rows,
            cols,
            mean,
            config.rank,
            config.damp,
        )?;
        lr.apply(&mut dequantized, cols);
        Some(lr)
    } else {
        None
    };
    // Rotation-invariant: measured in the rotated domain, before undoing Q.
    let relative_loss = relative_loss_banded(w, &dequantized, rows, cols, band_hs);
    if let Some(r) = &rotation {
        r.unrotate(&mut dequantized, cols);
    }
    Ok(QuantizedLinear {
        config: config.clone(),
        vq,
        lowrank,
        rotation,
        dequantized,
        relative_loss,
    })
}

/// The relative loss [`quantize_linear_banded`] reports for a reconstruction `what` of `w`: per
/// band when the codebook tiles fit inside the bands, else under the mean band Hessian.
pub fn layer_loss(
    w: &[f32],
    what: &[f32],
    rows: usize,
    cols: usize,
    hs: &[Mat<f64>],
    config: &VqConfig,
) -> f64 {
    if hs.len() <= 1 || tiles_fit_bands(rows, hs.len(), config) {
        relative_loss_banded(w, what, rows, cols, hs)
    } else {
        relative_loss(w, what, rows, cols, &mean_hessian(hs, cols))
    }
}

/// Whether `bands` equal row bands each hold whole codebook tiles, so each band can run under
/// its own Hessian.
fn tiles_fit_bands(rows: usize, bands: usize, config: &VqConfig) -> bool {
    rows.is_multiple_of(bands) && (rows / bands).is_multiple_of(config.tile_rows)
}

/// The mean of the band Hessians (`cols x cols`).
fn mean_hessian(hs: &[Mat<f64>], cols: usize) -> Mat<f64> {
    let mut m = Mat::<f64>::zeros(cols, cols);
    for h in hs {
        m += h;
    }
    m * faer::Scale(1.0 / hs.len().max(1) as f64)
}

/// tr(dW H dW^T) / tr(W H W^T) for dW = W - What.
pub fn relative_loss(w: &[f32], what: &[f32], rows: usize, cols: usize, h: &Mat<f64>) -> f64 {
    relative_loss_banded(w, what, rows, cols, std::slice::from_ref(h))
}

/// The relative loss when equal consecutive row bands have their own Hessians: the sums of
/// tr(dW_b H_b dW_b^T) and tr(W_b H_b W_b^T) over the bands.
pub fn relative_loss_banded(
    w: &[f32],
    what: &[f32],
    rows: usize,
    cols: usize,
    hs: &[Mat<f64>],
) -> f64 {
    let band_rows = rows / hs.len();
    let (mut loss, mut base) = (0.0, 0.0);
    for (b, h) in hs.iter().enumerate() {
        let r0 = b * band_rows;
        let wm = Mat::<f64>::from_fn(band_rows, cols, |i, j| w[(r0 + i) * cols + j] as f64);
        let dm = Mat::<f64>::from_fn(band_rows, cols, |i, j| {
            (w[(r0 + i) * cols + j] - what[(r0 + i) * cols + j]) as f64
        });
        let quad = |m: &Mat<f64>| {
            let mh = m * h;
            (0..band_rows)
                .map(|i| (0..cols).map(|j| mh[(i, j)] * m[(i, j)]).sum::<f64>())
                .sum::<f64>()
        };
        base += quad(&wm);
        loss += quad(&dm);
    }
    if base > 0.0 {
        loss / base
    } else {
        0.0
    }
}
