//! Sequential (GPTQ-style) quantization of a whole model: block by block, each block's Hessians
//! are gathered on the outputs of the already-quantized blocks before it, its seven linear layers
//! are quantized, and the block is re-run with the quantized weights to feed the next one.
//! Memory: one block plus the calibration activations.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::Tensor;

use crate::calibration::{Accumulate, HessianObserver};
use crate::checkpoint::names;
use crate::export;
use crate::model::{LinearKind, Model, ModelError};
use crate::quantizer::{quantize_linear_banded, QuantError, QuantizedLinear, VqConfig};

/// Errors of the sequential pass. Display is one line naming the layer.
#[derive(Debug, thiserror::Error)]
pub enum SequentialError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("layer '{layer}': {source}")]
    Quant {
        layer: String,
        #[source]
        source: QuantError,
    },
    #[error("layer '{layer}': {message}")]
    Layer { layer: String, message: String },
}

/// One quantized layer and what it cost.
#[derive(Debug, Clone)]
pub struct LayerOutcome {
    /// HF weight name, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    pub relative_loss: f64,
    pub seconds: f64,
}

/// Per-layer tr(H) from one pass of the unquantized model (APTQ sensitivities).
pub fn hessian_traces(
    model: &Model,
    sequences: &[Vec<u32>],
    mut progress: impl FnMut(usize),
) -> Result<BTreeMap<String, f64>, SequentialError> {
    let mut observer = HessianObserver::new(Accumulate::Trace);
    let hidden = model.embed(sequences)?;
    let mut layer = 0;
    model.forward_blocks(hidden, Some(&mut observer), |_, _| {
        progress(layer);
        layer += 1;
        Ok(())
    })?;
    let mut traces = BTreeMap::new();
    for layer in 0..model.config().num_hidden_layers {
        for kind in LinearKind::ALL {
            let name = kind.hf_name(layer);
            let trace = observer
                .trace(&name)
                .ok_or_else(|| SequentialError::Layer {
                    layer: name.clone(),
                    message: "no calibration input reached this layer".into(),
                })?;
            traces.insert(format!("{name}.weight"), trace);
        }
    }
    Ok(traces)
}

/// Quantizes every linear layer of `model` with the configuration `plan` gives its weight name,
/// handing each result (in GGUF row order) to `sink`. `progress(layer, kind)` is called per layer.
/// With `attention_hessians`, v_proj is quantized per kv head under BoA's attention-aware
/// Hessians instead of the plain input Hessian it shares with q/k.
#[allow(clippy::too_many_arguments)]
pub fn quantize_model(
    model: &Model,
    sequences: &[Vec<u32>],
    plan: &BTreeMap<String, VqConfig>,
    seed: u64,
    attention_hessians: bool,
    mut progress: impl FnMut(usize, LinearKind),
    mut sink: impl FnMut(&str, &QuantizedLinear) -> Result<(), String>,
) -> Result<Vec<LayerOutcome>, SequentialError> {
    let config = model.config().clone();
    let mut outcomes = Vec::new();
    let mut hidden = model.embed(sequences)?;
    for layer in 0..config.num_hidden_layers {
        let mut block = model.load_block(layer)?;
        let mut observer = HessianObserver::new(Accumulate::Hessian);
        if attention_hessians {
            observer = observer.with_value_heads();
        }
        model.run_block(&block, &hidden, Some(&mut observer))?;
        for kind in LinearKind::ALL {
            progress(layer, kind);
            let started = Instant::now();
            let module = kind.hf_name(layer);
            let name = format!("{module}.weight");
            let err = |message: String| SequentialError::Layer {
                layer: name.clone(),
                message,
            };
            let cfg = plan
                .get(&name)
                .ok_or_else(|| err("no configuration planned".into()))?;
            let weight = &block.linear(kind).weight;
            let (rows, cols) = weight.dims2().map_err(ModelError::from)?;
            let mut w: Vec<f32> = weight
                .flatten_all()
                .and_then(|t| t.to_vec1())
                .map_err(ModelError::from)?;
            // Athena weights are quantized and stored in the GGUF row order (llama's q/k rows
            // permuted), so a codebook tile groups the rows a runtime reads together.
            let perm = export::plan_tensor(&config, &name, &[rows, cols])
                .map_err(|e| err(e.to_string()))?
                .qk_heads;
            if let Some(n_head) = perm {
                w = names::permute_qk(&w, rows, cols, n_head).map_err(|e| err(e.to_string()))?;
            }
            let hs: Vec<_> = match observer.value_head_hessians(&module) {
                [] => vec![observer
                    .hessian(&module)
                    .ok_or_else(|| err("no calibration input reached this layer".into()))?
                    .finish()],
                heads => heads.iter().map(|h| h.finish()).collect(),
            };
            let layer_seed = seed ^ fnv1a(name.as_bytes());
            let q =
                quantize_linear_banded(&w, rows, cols, &hs, cfg, layer_seed).map_err(|source| {
                    SequentialError::Quant {
                        layer: name.clone(),
                        source,
                    }
                })?;
            sink(&name, &q).map_err(err)?;
            let mut dequantized = q.dequantized.clone();
            if let Some(n_head) = perm {
                dequantized = names::unpermute_qk(&dequantized, rows, cols, n_head)
                    .map_err(|e| err(e.to_string()))?;
            }
            let t = Tensor::from_vec(dequantized, (rows, cols), model.device())
                .map_err(ModelError::from)?;
            block.set_weight(kind, t)?;
            outcomes.push(LayerOutcome {
                name,
                rows,
                cols,
                relative_loss: q.relative_loss,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
        drop(observer);
        hidden = model.run_block(&block, &hidden, None)?;
    }
    Ok(outcomes)
}

/// FNV-1a: a stable per-layer seed offset (std's hashers are not stable across releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}
