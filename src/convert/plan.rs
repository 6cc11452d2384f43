//! The per-layer configurations of a conversion, printed and recorded before quantization
//! starts: one fixed configuration (--vq), a scalar grid (the gptq/rtn baselines), or the
//! mixed-precision plan that meets --bits or --file-bits (`budget`, `quantizer::plan`) by the
//! layers' sensitivities. The layers are the linear ones and, with `--embeddings athena`, the
//! token embedding and output head (`budget::athena_weights`).

use super::budget;
use super::error::ConvertError;
use super::options::{ConvertOptions, LowRankChoice, Method, TileLayout};
use super::sensitivity::{self, SensitivityProgress};
use crate::checkpoint::TensorSource;
use crate::model::Model;
use crate::quantizer::plan::{self, LayerInfo};
use crate::quantizer::{rotation, VqConfig};

/// One planned layer, as printed before quantization and stored in the report.
#[derive(Debug, Clone)]
pub struct PlannedLayer {
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    pub config: VqConfig,
    pub bpw: f64,
}

/// Every Athena weight's configuration, in the order they are written.
pub fn make_plan(
    opts: &ConvertOptions,
    model: &Model,
    source: &dyn TensorSource,
    sequences: &[Vec<u32>],
    progress: &mut dyn FnMut(SensitivityProgress),
) -> Result<Vec<PlannedLayer>, ConvertError> {
    let mut layers = budget::athena_weights(model.config(), opts.size.embeddings);
    let size = &opts.size;
    let configs: Vec<VqConfig> = match (size.vq, budget::athena_bits(opts, source)?) {
        (Some([d, n, r, c]), _) => layers
            .iter()
            .map(|l| VqConfig {
                rank: rank_for(size.lowrank, l.rows, l.cols),
                row_scales: row_scales(opts),
                ..VqConfig::new(d, n, r, c)
            })
            .collect(),
        (None, Some(bits)) if opts.quantizer.method.is_scalar() => {
            // Scalar baselines: round(bits) index bits on a grid per row and 128 columns.
            let b = bits.round().clamp(1.0, 16.0) as u32;
            layers
                .iter()
                .map(|l| VqConfig::new(1, 1 << b, 1, 128.min(l.cols)))
                .collect()
        }
        (None, Some(bits)) => {
            sensitivity::measure(
                size.sensitivity,
                model,
                source,
                sequences,
                &mut layers,
                progress,
            )?;
            let make = |l: &LayerInfo, d, n| menu_config(opts, l, d, n);
            let heads = layers.iter().filter(|l| is_head(&l.name)).count();
            let plans = match size.bits {
                // --bits budgets the linear layers (its meaning before the head and embedding
                // were quantized); they come first in `layers`, and the head and embedding get
                // what the same plan would have bought them at its final price. On SmolLM2-135M
                // at --bits 3 that is 3.42 bpw for the tied table (54.2 MB, perplexity 18.43);
                // weighting its loss 4x gave 4.59 bpw (58.3 MB, 17.79): 0.16 perplexity per MB,
                // less than linear bits buy around 3 bpw (docs/CHANGELOG.md, 2026-12-07).
                Some(_) => {
                    let (linear, rest) = layers.split_at(layers.len() - heads);
                    let (mut p, price) = plan::plan_priced(linear, bits, size.levels, make)?;
                    p.extend(plan::plan_at_price(rest, price, size.levels, make)?);
                    p
                }
                // --file-bits: one plan over every Athena weight.
                None => plan::plan_with(&layers, bits, size.levels, make)?,
            };
            plans.into_iter().map(|p| p.config).collect()
        }
        (None, None) => unreachable!("a size is checked by ConvertOptions::check"),
    };
    layers
        .iter()
        .zip(configs)
        .map(|(l, cfg)| finish(opts, l, cfg))
        .collect()
}

/// Whether `name` is the output head or the token embedding (planned after the linear layers).
fn is_head(name: &str) -> bool {
    matches!(name, budget::EMBEDDING | budget::LM_HEAD)
}

/// The configuration the --bits plan considers for `l` at level (d, n).
fn menu_config(opts: &ConvertOptions, l: &LayerInfo, d: usize, n: usize) -> VqConfig {
    let size = &opts.size;
    let mut cfg = match size.tiles {
        TileLayout::Wide => plan::menu_config(d, n, l.rows, l.cols, size.codebook, 0),
        TileLayout::Paper => VqConfig {
            codebook: size.codebook,
            ..VqConfig::new(d, n, l.rows, d)
        },
    };
    cfg.rank = rank_for(size.lowrank, l.rows, l.cols);
    cfg.row_scales = row_scales(opts);
    apply_method(&mut cfg, opts, l.cols);
    cfg
}

/// A layer's final configuration: the method's switches applied, checked against its shape.
fn finish(
    opts: &ConvertOptions,
    l: &LayerInfo,
    mut cfg: VqConfig,
) -> Result<PlannedLayer, ConvertError> {
    apply_method(&mut cfg, opts, l.cols);
    cfg.validate(l.rows, l.cols).map_err(|e| {
        ConvertError::Options(format!("layer '{}' ({} x {}): {e}", l.name, l.rows, l.cols))
    })?;
    let bpw = plan::config_bpw(&cfg, l.rows, l.cols);
    Ok(PlannedLayer {
        name: l.name.clone(),
        rows: l.rows,
        cols: l.cols,
        config: cfg,
        bpw,
    })
}

fn apply_method(cfg: &mut VqConfig, opts: &ConvertOptions, cols: usize) {
    let (q, ablations) = (&opts.quantizer, &opts.ablations);
    match q.method {
        Method::Athena => {
            cfg.use_hessian_metric = ablations.hessian_metric;
            cfg.error_feedback = ablations.error_feedback;
            cfg.refine_codebooks = ablations.codebook_update;
        }
        Method::Kmeans => {
            cfg.use_hessian_metric = false;
            cfg.error_feedback = false;
            cfg.refine_codebooks = false;
        }
        Method::Gptq | Method::Rtn => {
            cfg.uniform_grid = true;
            cfg.error_feedback = q.method == Method::Gptq;
            cfg.use_hessian_metric = q.method == Method::Gptq;
        }
    }
    cfg.codebook = opts.size.codebook;
    cfg.order = q.order;
    cfg.kmeans_iters = q.kmeans_iters;
    cfg.damp = q.damp;
    cfg.rotation = rotation::block_size(cols, q.rotation_block);
    cfg.rotation_if_better = q.rotation_per_layer;
}

/// Whether the method's configurations get per-row scales (the --bits plan may still drop them
/// on a layer too narrow to pay for them).
fn row_scales(opts: &ConvertOptions) -> bool {
    opts.ablations.row_scales && matches!(opts.quantizer.method, Method::Athena | Method::Kmeans)
}

fn rank_for(choice: LowRankChoice, rows: usize, cols: usize) -> usize {
    match choice {
        LowRankChoice::Off => 0,
        LowRankChoice::Rank(r) => r.min(rows.min(cols)),
        LowRankChoice::Auto => (rows.min(cols) / 100).max(1),
    }
}
