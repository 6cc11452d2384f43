//! Block-wise tuning of the stored codebooks (AQLM's block fine-tuning; ATHENA-MATH stops at the
//! per-layer objective). Once a block's seven layers are quantized, the float values of every
//! codebook (indices fixed) are tuned with Adam so that the quantized block's output matches the
//! unquantized block's output on the same inputs. The per-layer objective cannot see how the
//! errors of q, k, v, o, gate, up and down combine through attention and the MLP; this step can.
//! The per-row scales (when the layer has them) are tuned with the codebooks, as AQLM tunes its
//! scales. The tuned codebooks and scales are stored (int8 or f16, f16) again, so the file
//! format does not change.
//! Optionally the block's two RMSNorm weights are tuned with them: they scale the inputs of
//! q/k/v and of gate/up per channel, which the fixed indices cannot.

use candle_core::{Tensor, Var};

use super::parallel::parallel_gradients;
use super::weight::{CodebookWeight, GroupedAdam, TuneLayer};
use crate::model::{Block, Model, ModelError};
use crate::quantizer::QuantizedLinear;

/// How long and how fast to tune.
#[derive(Debug, Clone, PartialEq)]
pub struct TuneOptions {
    /// Passes over the calibration sequences (0: no tuning).
    pub epochs: usize,
    /// Adam learning rate, in the units of the weights.
    pub learning_rate: f64,
    /// Sequences per Adam step.
    pub batch: usize,
    /// Also tune the block's two RMSNorm weights (stored as plain f32 tensors).
    pub norms: bool,
}

/// Mean squared block-output error before and after tuning, relative to the mean square of
/// the target outputs (`after == before` when tuning did not help and was undone).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TuneOutcome {
    pub before: f64,
    pub after: f64,
}

/// Tunes the codebooks of `layers` (the block's quantized layers) so that `block` maps each of
/// `inputs` to the matching `targets`; writes the stored codebooks and reconstructions back into
/// `layers` and the tuned weights into `block`. Keeps the original codebooks when tuning does not
/// lower the block-output error.
pub fn tune_block(
    model: &Model,
    block: &mut Block,
    layers: &mut [TuneLayer<'_>],
    inputs: &[Tensor],
    targets: &[Tensor],
    opts: &TuneOptions,
) -> Result<TuneOutcome, ModelError> {
    let config = model.config();
    let device = model.device();
    let params: Vec<CodebookWeight> = layers
        .iter()
        .map(|l| CodebookWeight::new(l, device))
        .collect::<Result<_, _>>()?;
    let mut seq = 0;
    for x in inputs {
        seq = seq.max(x.dim(0)?);
    }
    let (cos, sin) = model.rope_tables(block.layer, seq)?;
    let target_power = mean_square(targets)?;
    let loss_of = |block: &Block, x: &Tensor, y: &Tensor| -> candle_core::Result<Tensor> {
        let out = block.forward(config, x, &cos, &sin, None)?;
        (out - y)?.sqr()?.mean_all()
    };
    let evaluate = |block: &Block| -> candle_core::Result<f64> {
        let mut sum = 0.0;
        for (x, y) in inputs.iter().zip(targets) {
            sum += loss_of(block, x, y)?.to_scalar::<f32>()? as f64;
        }
        Ok(sum / inputs.len().max(1) as f64 / target_power)
    };
    let before = evaluate(block)?;
    let original_norms = (block.input_layernorm.clone(), block.mlp_norm.clone());
    let norms = if opts.norms {
        Some((
            Var::from_tensor(&block.input_layernorm)?,
            Var::from_tensor(&block.mlp_norm)?,
        ))
    } else {
        None
    };
    let install = |block: &mut Block| -> Result<(), ModelError> {
        for p in &params {
            block.set_weight(p.kind, p.weight()?)?;
        }
        if let Some((a, b)) = &norms {
            block.input_layernorm = a.as_tensor().clone();
            block.mlp_norm = b.as_tensor().clone();
        }
        Ok(())
    };
    let norm_vars: Vec<Var> = match &norms {
        Some((a, b)) => vec![a.clone(), b.clone()],
        None => Vec::new(),
    };
    let keep: Vec<Tensor> = params
        .iter()
        .flat_map(CodebookWeight::vars)
        .chain(&norm_vars)
        .map(|v| v.as_tensor().clone())
        .collect();
    let mut adam = GroupedAdam::for_codebooks(&params, norm_vars, opts.learning_rate)?;
    let batch = opts.batch.max(1);
    for _ in 0..opts.epochs {
        for (xs, ys) in inputs.chunks(batch).zip(targets.chunks(batch)) {
            install(block)?;
            let pairs: Vec<(&Tensor, &Tensor)> = xs.iter().zip(ys).collect();
            let grads = parallel_gradients(&keep, &pairs, &|(x, y)| loss_of(block, x, y))?;
            adam.step(&grads)?;
        }
    }
    let originals: Vec<QuantizedLinear> = layers.iter().map(|l| l.quantized.clone()).collect();
    for (p, l) in params.iter().zip(layers.iter_mut()) {
        p.write_back(l.quantized)?;
    }
    // Measured on the stored (re-quantized) codebooks, which the block runs on from here, as a
    // decoder will; if tuning did not help, the original codebooks are kept.
    let install_stored = |block: &mut Block, layers: &[TuneLayer<'_>]| -> Result<(), ModelError> {
        for l in layers {
            block.set_stored_weight(l.kind, &l.quantized.dequantized, l.qk_heads)?;
        }
        Ok(())
    };
    install_stored(block, layers)?;
    if let Some((a, b)) = &norms {
        // Detached copies: the block must not keep the tuning graph alive.
        block.input_layernorm = a.as_tensor().detach();
        block.mlp_norm = b.as_tensor().detach();
    }
    let mut after = evaluate(block)?;
    if after >= before {
        for (l, original) in layers.iter_mut().zip(originals) {
            *l.quantized = original;
        }
        install_stored(block, layers)?;
        (block.input_layernorm, block.mlp_norm) = original_norms;
        after = before;
    }
    Ok(TuneOutcome { before, after })
}

fn mean_square(ts: &[Tensor]) -> candle_core::Result<f64> {
    let mut sum = 0.0;
    for t in ts {
        sum += t.sqr()?.mean_all()?.to_scalar::<f32>()? as f64;
    }
    Ok((sum / ts.len().max(1) as f64).max(f64::MIN_POSITIVE))
}
