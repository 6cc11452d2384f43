//! A quantized layer's weight as a differentiable function of its stored codebooks (and row
//! scales), and the optimizer that steps them: what both tunings train.

use candle_core::{backprop::GradStore, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};

use crate::checkpoint::names;
use crate::model::{LinearKind, ModelError};
use crate::quantizer::{codebook, CodebookKind, QuantizedLinear};

/// One quantized layer of the block being tuned (its codebooks are what `CodebookWeight` trains).
pub struct TuneLayer<'a> {
    pub kind: LinearKind,
    pub quantized: &'a mut QuantizedLinear,
    /// Heads of llama's q/k row permutation when the layer is stored in GGUF row order.
    pub qk_heads: Option<usize>,
}

/// A layer's weight as a differentiable function of its codebooks.
pub(super) struct CodebookWeight {
    pub(super) kind: LinearKind,
    /// All tiles' centroids stacked: `[tiles * n, d]`.
    pub(super) centroids: Var,
    /// Row of `centroids` for each (row, group), row-major: `[rows * groups]`.
    index: Tensor,
    /// The same rows on the CPU (what end-to-end tuning's code step changes).
    pub(super) codes: Vec<u32>,
    /// Centroids per tile and their dimension.
    pub(super) n: usize,
    pub(super) d: usize,
    rows: usize,
    cols: usize,
    /// ceil(cols / d): when d does not divide cols, the last group of a row is partial.
    groups: usize,
    /// HF row r is stored row `to_hf[r]` (q/k only).
    to_hf: Option<Tensor>,
    /// The per-row scales `[rows, 1]` (stored row order), applied to the codebook part and
    /// tuned with the centroids, and their root mean square before tuning.
    pub(super) row_scales: Option<(Var, f64)>,
    /// The fixed low-rank term, in stored row order (in the rotated domain, as the codebooks).
    lowrank: Option<Tensor>,
    /// The column rotation's transpose, applied after the codebooks and the low-rank term:
    /// the B x B Hadamard block divided by sqrt(B), and the +-1 column signs `[1, cols]`.
    unrotate: Option<(Tensor, Tensor)>,
    /// How the file stores the codebooks, and whether the loss sees them stored
    /// (`straight_through`).
    stored: CodebookKind,
    straight_through: bool,
}

impl CodebookWeight {
    pub(super) fn new(layer: &TuneLayer<'_>, device: &Device) -> Result<Self, ModelError> {
        let q = &*layer.quantized;
        let cfg = &q.config;
        let (rows, cols, d, n) = (q.vq.rows, q.vq.cols, cfg.d, cfg.n);
        let groups = cols.div_ceil(d);
        let index: Vec<u32> = (0..rows * groups)
            .map(|i| (cfg.tile_of(cols, i / groups, i % groups) * n) as u32 + q.vq.indices[i])
            .collect();
        let values: Vec<f32> =
            q.vq.codebooks
                .iter()
                .flat_map(|c| c.values.iter().copied())
                .collect();
        let tiles = q.vq.codebooks.len();
        let centroids = Var::from_tensor(&Tensor::from_vec(values, (tiles * n, d), device)?)?;
        let to_hf = match layer.qk_heads {
            Some(heads) => {
                let ids: Vec<f32> = (0..rows).map(|r| r as f32).collect();
                let src = names::unpermute_qk(&ids, rows, 1, heads)
                    .map_err(|e| ModelError::Invalid(e.to_string()))?;
                let src: Vec<u32> = src.into_iter().map(|r| r as u32).collect();
                Some(Tensor::from_vec(src, rows, device)?)
            }
            None => None,
        };
        let row_scales = match q.vq.row_scales.is_empty() {
            true => None,
            false => {
                let s: Vec<f32> = q.vq.row_scales.iter().map(|s| s.to_f32()).collect();
                let rms = (s.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / rows as f64).sqrt();
                Some((
                    Var::from_tensor(&Tensor::from_vec(s, (rows, 1), device)?)?,
                    rms,
                ))
            }
        };
        let lowrank = match &q.lowrank {
            Some(lr) => {
                let mut with = q.vq.dequantized.clone();
                lr.apply(&mut with, cols);
                let diff: Vec<f32> = with
                    .iter()
                    .zip(&q.vq.dequantized)
                    .map(|(a, b)| a - b)
                    .collect();
                Some(Tensor::from_vec(diff, (rows, cols), device)?)
            }
            None => None,
        };
        let unrotate = match &q.rotation {
            Some(r) => Some((
                Tensor::from_vec(r.scaled_hadamard(), (r.block, r.block), device)?,
                Tensor::from_vec(r.sign_factors(cols), (1, cols), device)?,
            )),
            None => None,
        };
        Ok(Self {
            kind: layer.kind,
            centroids,
            index: Tensor::from_vec(index.clone(), rows * groups, device)?,
            codes: index,
            n,
            d,
            rows,
            cols,
            groups,
            to_hf,
            row_scales,
            lowrank,
            unrotate,
            stored: cfg.codebook,
            straight_through: false,
        })
    }

    /// Quantization-aware tuning: the weight is built from the centroids as the file will
    /// store them (int8 on its per-dimension grid, or f16), and the gradient passes straight
    /// through the rounding to the tuned values. Adam's steps then accumulate until they move a
    /// stored value, and the loss is the stored model's. Without it, storing the tuned
    /// codebooks re-rounds every value, noise that can outweigh small tuning steps.
    pub(super) fn straight_through(mut self) -> Self {
        self.straight_through = true;
        self
    }

    /// The factor on the tunings' learning rate for this layer's centroids: 1/sqrt(B) with a
    /// column rotation of block B, else 1. Adam steps every coordinate by about the learning
    /// rate; a rotated coordinate is spread over B weights, and when one input channel dominates
    /// the gradient (the massive-activation channels) all B coordinates' steps add up coherently
    /// on that channel's weights, sqrt(B) times the step an unrotated codebook takes there.
    ///
    /// With row scales the centroids are in units of the scaled rows (RMS about 1), not of the
    /// weights: the rate is divided by the scales' root mean square so that a step moves the
    /// weights by about the learning rate as before.
    pub(super) fn learning_rate_scale(&self) -> f64 {
        let rotation = match &self.unrotate {
            Some((hadamard, _)) => 1.0 / (hadamard.dims()[0] as f64).sqrt(),
            None => 1.0,
        };
        rotation / self.row_scale_rms()
    }

    /// The root mean square of the row scales (1 without them): weight units per unit of the
    /// centroids.
    pub(super) fn row_scale_rms(&self) -> f64 {
        match &self.row_scales {
            Some((_, rms)) if *rms > 0.0 => *rms,
            _ => 1.0,
        }
    }

    /// The weight in HF layout `[rows, cols]`, tracked for backprop.
    pub(super) fn weight(&self) -> candle_core::Result<Tensor> {
        self.weight_from(&self.gathered()?)
    }

    /// The codebook part of the weight in stored row order, `[rows, groups * d]` (a partial
    /// last group still gathers its whole centroid), before the row scales (so its gradient is
    /// in the codebooks' units, one entry per stored vector dimension, as end-to-end tuning's
    /// code step needs).
    pub(super) fn gathered(&self) -> candle_core::Result<Tensor> {
        let tuned = self.centroids.as_tensor();
        let centroids = match self.straight_through {
            true => round_straight_through(tuned, |values| {
                values
                    .chunks(self.n * self.d)
                    .flat_map(|tile| codebook::store(tile, self.d, self.stored).values)
                    .collect()
            })?,
            false => tuned.clone(),
        };
        centroids
            .index_select(&self.index, 0)?
            .reshape(self.gathered_shape())
    }

    /// The tuned variables: the centroids, and the row scales if any.
    pub(super) fn vars(&self) -> impl Iterator<Item = &Var> {
        std::iter::once(&self.centroids).chain(self.row_scales.as_ref().map(|(s, _)| s))
    }

    /// `gathered()`'s shape, `[rows, groups * d]`.
    pub(super) fn gathered_shape(&self) -> (usize, usize) {
        (self.rows, self.groups * self.d)
    }

    /// The weight in HF layout from `gathered()`'s output.
    pub(super) fn weight_from(&self, gathered: &Tensor) -> candle_core::Result<Tensor> {
        let gathered = match self.groups * self.d == self.cols {
            true => gathered.clone(),
            false => gathered.narrow(1, 0, self.cols)?,
        };
        let scaled = match &self.row_scales {
            Some((s, _)) => {
                let s = s.as_tensor();
                let s = match self.straight_through {
                    true => round_straight_through(s, |values| {
                        values
                            .iter()
                            .map(|&v| half::f16::from_f32(v).to_f32())
                            .collect()
                    })?,
                    false => s.clone(),
                };
                gathered.broadcast_mul(&s)?
            }
            None => gathered.clone(),
        };
        let mut w = match &self.lowrank {
            Some(lr) => (scaled + lr)?,
            None => scaled,
        };
        if let Some((hadamard, signs)) = &self.unrotate {
            let b = hadamard.dim(0)?;
            w = w
                .reshape((self.rows * self.cols / b, b))?
                .matmul(hadamard)?
                .reshape((self.rows, self.cols))?
                .broadcast_mul(signs)?;
        }
        match &self.to_hf {
            Some(src) => w.index_select(src, 0),
            None => Ok(w),
        }
    }

    /// Replaces the codes (rows of `centroids`, as in `codes`).
    pub(super) fn set_codes(&mut self, codes: Vec<u32>) -> candle_core::Result<()> {
        self.index = Tensor::from_vec(codes.clone(), codes.len(), self.index.device())?;
        self.codes = codes;
        Ok(())
    }

    /// Stores the tuned centroids in the layer's codebook kind, and the codes, and rebuilds its
    /// reconstruction.
    pub(super) fn write_back(&self, q: &mut QuantizedLinear) -> candle_core::Result<()> {
        let (d, n) = (q.config.d, q.config.n);
        let values: Vec<f32> = self.centroids.as_tensor().flatten_all()?.to_vec1()?;
        for (t, stored) in q.vq.codebooks.iter_mut().enumerate() {
            *stored = codebook::store(&values[t * n * d..(t + 1) * n * d], d, q.config.codebook);
        }
        for (stored, &code) in q.vq.indices.iter_mut().zip(&self.codes) {
            *stored = code % n as u32;
        }
        if let Some((s, _)) = &self.row_scales {
            let tuned: Vec<f32> = s.as_tensor().flatten_all()?.to_vec1()?;
            for (stored, v) in q.vq.row_scales.iter_mut().zip(tuned) {
                *stored = store_row_scale(v, stored.to_f32());
            }
        }
        let (cols, groups) = (q.vq.cols, self.groups);
        for (i, &code) in self.codes.iter().enumerate() {
            let (tile, idx) = (code as usize / n, code as usize % n);
            let c = &q.vq.codebooks[tile].values[idx * d..(idx + 1) * d];
            let (row, g) = (i / groups, i % groups);
            let s = q.vq.row_scale(row);
            let start = row * cols + g * d;
            let end = row * cols + (g * d + d).min(cols);
            for (out, &v) in q.vq.dequantized[start..end].iter_mut().zip(c) {
                *out = v * s;
            }
        }
        q.dequantized.clone_from(&q.vq.dequantized);
        if let Some(lr) = &q.lowrank {
            lr.apply(&mut q.dequantized, q.vq.cols);
        }
        if let Some(r) = &q.rotation {
            r.unrotate(&mut q.dequantized, q.vq.cols);
        }
        Ok(())
    }
}

/// Adam without weight decay (both tunings), with a learning rate per group of variables:
/// candle's AdamW has one rate and steps only its own variables, so one AdamW per group.
pub(super) struct GroupedAdam(Vec<AdamW>);

impl GroupedAdam {
    /// `groups`: variables and their learning rate.
    pub(super) fn new(groups: Vec<(Vec<Var>, f64)>) -> candle_core::Result<Self> {
        let optimizers = groups
            .into_iter()
            .filter(|(vars, _)| !vars.is_empty())
            .map(|(vars, lr)| {
                AdamW::new(
                    vars,
                    ParamsAdamW {
                        lr,
                        weight_decay: 0.0,
                        ..Default::default()
                    },
                )
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Self(optimizers))
    }

    /// Codebook centroids at `learning_rate` times their layer's scale
    /// (`CodebookWeight::learning_rate_scale`), row scales at `learning_rate` times their
    /// root mean square (a step changes a row by about `learning_rate` relative: a scale moves
    /// the whole row at once), `others` (norm weights) at `learning_rate`.
    pub(super) fn for_codebooks<'a>(
        codebooks: impl IntoIterator<Item = &'a CodebookWeight>,
        others: Vec<Var>,
        learning_rate: f64,
    ) -> candle_core::Result<Self> {
        let mut groups: Vec<(Vec<Var>, f64)> = vec![(others, learning_rate)];
        let mut add = |var: &Var, lr: f64| match groups.iter_mut().find(|(_, l)| *l == lr) {
            Some((vars, _)) => vars.push(var.clone()),
            None => groups.push((vec![var.clone()], lr)),
        };
        for p in codebooks {
            add(&p.centroids, learning_rate * p.learning_rate_scale());
            if let Some((s, rms)) = &p.row_scales {
                add(s, learning_rate * rms);
            }
        }
        Self::new(groups)
    }

    pub(super) fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
        self.0.iter_mut().try_for_each(|o| o.step(grads))
    }
}

/// `tuned` with the values `store` gives for them in the forward pass (the file's rounding),
/// and the gradient passed straight through to `tuned`.
fn round_straight_through(
    tuned: &Tensor,
    store: impl Fn(&[f32]) -> Vec<f32>,
) -> candle_core::Result<Tensor> {
    let stored = store(&tuned.flatten_all()?.to_vec1()?);
    let stored = Tensor::from_vec(stored, tuned.shape(), tuned.device())?;
    tuned + (stored - tuned)?.detach()
}

/// A tuned row scale as the file stores it (f16); `fallback` where the value would not be
/// finite there (the format requires finite scales).
fn store_row_scale(v: f32, fallback: f32) -> half::f16 {
    let stored = half::f16::from_f32(v);
    match stored.is_finite() {
        true => stored,
        false => half::f16::from_f32(fallback),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantizer::{quantize_linear, VqConfig};

    fn up_layer(q: &mut QuantizedLinear) -> TuneLayer<'_> {
        TuneLayer {
            kind: LinearKind::Up,
            quantized: q,
            qk_heads: None,
        }
    }

    #[test]
    fn the_tuned_weight_is_the_reconstruction_with_rotation_row_scales_and_low_rank() {
        let (rows, cols) = (12, 32);
        let w: Vec<f32> = (0..rows * cols)
            .map(|k| ((k * 29 % 17) as f32 - 8.0) / 16.0)
            .collect();
        let h =
            faer::Mat::<f64>::from_fn(
                cols,
                cols,
                |i, j| {
                    if i == j {
                        1.0 + (i % 5) as f64
                    } else {
                        0.1
                    }
                },
            );
        // d = 3 on 32 columns ends every row in a partial group (encoding version 4): with one
        // tile of all columns, and with tiles of 15 whose last holds only the partial group.
        let layouts = [(2, 16), (3, 32), (3, 15)];
        for ((rotation, row_scales), (d, tile_cols)) in
            [(0, false), (16, false), (0, true), (16, true)]
                .into_iter()
                .flat_map(|o| layouts.map(|l| (o, l)))
        {
            let cfg = VqConfig {
                rank: 2,
                rotation,
                row_scales,
                ..VqConfig::new(d, 8, 4, tile_cols)
            };
            let mut q = quantize_linear(&w, rows, cols, &h, &cfg, 3).unwrap();
            let layer = up_layer(&mut q);
            let cw = CodebookWeight::new(&layer, &Device::Cpu).unwrap();
            let got: Vec<f32> = cw
                .weight()
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            for (a, b) in got.iter().zip(&q.dequantized) {
                assert!(
                    (a - b).abs() < 1e-5,
                    "rotation {rotation}, d {d}: {a} vs {b}"
                );
            }
            // Writing the (unchanged) codebooks back rebuilds the same reconstruction.
            let before = q.dequantized.clone();
            cw.write_back(&mut q).unwrap();
            assert_eq!(before, q.dequantized);
        }
    }

    #[test]
    fn an_adam_step_moves_one_input_channel_by_the_learning_rate_with_or_without_rotation() {
        // A loss that depends on one input column only, as when a massive-activation channel
        // dominates the gradient: Adam's first step (about lr per coordinate) must not move that
        // column's weights further than lr when the codebooks live in the rotated domain
        // (without the per-layer rate they moved by 3.5 lr at B = 16 and 3.0 lr at B = 64).
        let (rows, cols, channel, lr) = (16, 64, 5, 1e-3);
        let w: Vec<f32> = (0..rows * cols)
            .map(|k| ((k * 37 % 23) as f32 - 11.0) / 32.0)
            .collect();
        let h = faer::Mat::<f64>::identity(cols, cols);
        // With row scales the centroids are in units of the scaled rows (RMS ~1 against the
        // weights' ~0.2 here; unscaled, a step would move them by 0.2 lr): the per-layer rate must
        // bring the step back to weight units.
        for (rotation, row_scales) in [(0, false), (16, false), (64, false), (0, true), (64, true)]
        {
            let cfg = VqConfig {
                rotation,
                row_scales,
                ..VqConfig::new(2, 16, 16, 64)
            };
            let mut q = quantize_linear(&w, rows, cols, &h, &cfg, 5).unwrap();
            let layer = up_layer(&mut q);
            let cw = CodebookWeight::new(&layer, &Device::Cpu).unwrap();
            let column = |cw: &CodebookWeight| cw.weight().unwrap().narrow(1, channel, 1).unwrap();
            let before: Vec<f32> = column(&cw).flatten_all().unwrap().to_vec1().unwrap();
            let grads = column(&cw).sum_all().unwrap().backward().unwrap();
            // The centroids alone (a row scale's step moves its row by lr relative, tested below).
            let rate = lr * cw.learning_rate_scale();
            let mut adam = GroupedAdam::new(vec![(vec![cw.centroids.clone()], rate)]).unwrap();
            adam.step(&grads).unwrap();
            let after: Vec<f32> = column(&cw).flatten_all().unwrap().to_vec1().unwrap();
            let moved = before
                .iter()
                .zip(&after)
                .map(|(a, b)| (a - b).abs() as f64)
                .fold(0.0, f64::max);
            eprintln!("rotation {rotation} row scales {row_scales}: moved {moved}");
            assert!(
                moved > 0.25 * lr && moved < 1.01 * lr,
                "rotation {rotation}, row scales {row_scales}: moved {moved}"
            );
        }
    }

    #[test]
    fn an_adam_step_changes_each_row_scale_by_the_learning_rate_relative_to_their_rms() {
        let (rows, cols, lr) = (16, 64, 1e-3);
        let w: Vec<f32> = (0..rows * cols)
            .map(|k| ((k * 37 % 23) as f32 - 11.0) / 32.0 * (1 + k / cols) as f32)
            .collect();
        let h = faer::Mat::<f64>::identity(cols, cols);
        let cfg = VqConfig {
            rotation: 16,
            row_scales: true,
            ..VqConfig::new(2, 16, 16, 64)
        };
        let mut q = quantize_linear(&w, rows, cols, &h, &cfg, 5).unwrap();
        let layer = up_layer(&mut q);
        let cw = CodebookWeight::new(&layer, &Device::Cpu).unwrap();
        let (scales, rms) = cw.row_scales.clone().unwrap();
        assert!(rms > 0.0);
        let weight = |cw: &CodebookWeight| -> Vec<f32> {
            cw.weight()
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        let before = weight(&cw);
        let s: Vec<f32> = scales.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let mut grads = cw.weight().unwrap().sum_all().unwrap().backward().unwrap();
        grads.remove(cw.centroids.as_tensor());
        let mut adam = GroupedAdam::for_codebooks([&cw], Vec::new(), lr).unwrap();
        adam.step(&grads).unwrap();
        let after = weight(&cw);
        for (i, s) in s.iter().enumerate() {
            // The scales grow with the rows here: each row moves by the same relative amount
            // lr * rms / s_i, the rows with large scales by less than lr.
            let expect = lr * rms / *s as f64;
            for j in 0..cols {
                let (b, a) = (before[i * cols + j] as f64, after[i * cols + j] as f64);
                if b.abs() > 1e-3 {
                    let relative = ((a - b) / b).abs();
                    assert!(
                        (relative - expect).abs() < 0.02 * expect,
                        "row {i}: {relative} vs {expect}"
                    );
                }
            }
        }
    }

    #[test]
    fn tuned_row_scales_reach_the_file_as_f16_and_the_loss_sees_them_stored() {
        let (rows, cols) = (12, 32);
        let w: Vec<f32> = (0..rows * cols)
            .map(|k| ((k * 29 % 17) as f32 - 8.0) / 16.0)
            .collect();
        let h = faer::Mat::<f64>::identity(cols, cols);
        let cfg = VqConfig {
            rotation: 16,
            row_scales: true,
            ..VqConfig::new(2, 8, 4, 16)
        };
        let mut q = quantize_linear(&w, rows, cols, &h, &cfg, 3).unwrap();
        let layer = up_layer(&mut q);
        let cw = CodebookWeight::new(&layer, &Device::Cpu)
            .unwrap()
            .straight_through();
        let (scales, _) = cw.row_scales.clone().unwrap();
        // A change that f16 cannot hold exactly.
        let tuned = ((scales.as_tensor() * 1.0123).unwrap() + 1e-5).unwrap();
        scales.set(&tuned).unwrap();
        let seen: Vec<f32> = cw
            .weight()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        cw.write_back(&mut q).unwrap();
        let tuned: Vec<f32> = tuned.flatten_all().unwrap().to_vec1().unwrap();
        let stored: Vec<half::f16> = tuned.iter().map(|&v| half::f16::from_f32(v)).collect();
        assert_eq!(q.vq.row_scales, stored);
        assert!(stored.iter().zip(&tuned).any(|(s, t)| s.to_f32() != *t));
        for (a, b) in seen.iter().zip(&q.dequantized) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn straight_through_tuning_sees_the_stored_codebooks_and_passes_the_gradient_on() {
        let (rows, cols) = (8, 16);
        let w: Vec<f32> = (0..rows * cols)
            .map(|k| ((k * 13 % 19) as f32 - 9.0) / 8.0)
            .collect();
        let h = faer::Mat::<f64>::identity(cols, cols);
        let mut q = quantize_linear(&w, rows, cols, &h, &VqConfig::new(2, 8, 8, 16), 1).unwrap();
        let layer = up_layer(&mut q);
        let free = CodebookWeight::new(&layer, &Device::Cpu).unwrap();
        let rounded = CodebookWeight::new(&layer, &Device::Cpu)
            .unwrap()
            .straight_through();
        // Move every centroid off the int8 grid, by less than half a step for most.
        let nudged = (free.centroids.as_tensor() + 1e-4).unwrap();
        free.centroids.set(&nudged).unwrap();
        rounded.centroids.set(&nudged).unwrap();

        let values: Vec<f32> = nudged.flatten_all().unwrap().to_vec1().unwrap();
        let stored = codebook::store(&values, 2, CodebookKind::Int8).values;
        let gathered_values = |cw: &CodebookWeight| -> Vec<f32> {
            let g = cw.gathered().unwrap();
            g.flatten_all().unwrap().to_vec1().unwrap()
        };
        let codes = &free.codes;
        let expect = |table: &[f32]| -> Vec<f32> {
            codes
                .iter()
                .flat_map(|&c| table[c as usize * 2..c as usize * 2 + 2].to_vec())
                .collect()
        };
        assert_eq!(gathered_values(&rounded), expect(&stored));
        assert_eq!(gathered_values(&free), expect(&values));
        assert_ne!(stored, values, "the nudge must leave the grid");

        // The gradient reaches the tuned values unchanged: d(sum)/dc = the centroid's uses.
        let grads = rounded
            .gathered()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g: Vec<f32> = grads
            .get(rounded.centroids.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let mut uses = vec![0f32; values.len()];
        for &c in codes {
            uses[c as usize * 2] += 1.0;
            uses[c as usize * 2 + 1] += 1.0;
        }
        assert_eq!(g, uses);
    }
}
