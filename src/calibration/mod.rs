//! Calibration: text in, per-layer Hessians out.
//!
//! The calibration text is tokenized and cut into sequences of `seq_len` tokens. The model runs
//! them one decoder block at a time; a [`HessianObserver`] sees every linear layer's input and
//! accumulates H = 2 X X^T / T. Layers that read the same tensor share one Hessian (q/k/v read the
//! attention input, gate/up the MLP input), so it is accumulated once.

pub mod attention_rows;

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Tensor;

use crate::checkpoint::tokenizer::Tokenizer;
use crate::checkpoint::CheckpointError;
use crate::model::LinearObserver;
use crate::quantizer::hessian::HessianAccumulator;
use attention_rows::AttentionRowHessians;

/// The layer whose Hessian `layer` uses: k/v share q's input, up shares gate's.
pub fn hessian_owner(layer: &str) -> String {
    layer
        .replace("self_attn.k_proj", "self_attn.q_proj")
        .replace("self_attn.v_proj", "self_attn.q_proj")
        .replace("mlp.up_proj", "mlp.gate_proj")
}

/// Tokenizes `path` and cuts it into `tokens / seq_len` sequences of `seq_len` consecutive
/// tokens; the first token of each becomes BOS when the tokenizer adds one (as llama.cpp's
/// perplexity does). Errors when the text is too short; the message suggests lowering
/// `count_options` (the options that set `tokens`).
pub fn calibration_sequences(
    path: &Path,
    tokenizer: &Tokenizer,
    tokens: usize,
    seq_len: usize,
    count_options: &str,
) -> Result<Vec<Vec<u32>>, CheckpointError> {
    let text = std::fs::read_to_string(path).map_err(|source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let ids = tokenizer.encode(&text, false)?;
    let count = tokens / seq_len.max(1);
    if count == 0 || ids.len() < count * seq_len {
        return Err(CheckpointError::Invalid {
            path: path.to_path_buf(),
            message: format!(
                "the text has {} tokens, calibration needs {} ({} sequences of {seq_len}; \
                 lower {count_options}, or give a longer --calib text)",
                ids.len(),
                count.max(1) * seq_len,
                count.max(1)
            ),
        });
    }
    let bos = tokenizer.bos_token_id.filter(|_| tokenizer.add_bos_token);
    Ok(ids
        .chunks_exact(seq_len)
        .take(count)
        .map(|chunk| {
            let mut seq = chunk.to_vec();
            if let Some(b) = bos {
                seq[0] = b;
            }
            seq
        })
        .collect())
}

/// What the observer accumulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accumulate {
    /// Full Hessians, for quantization.
    Hessian,
    /// Only tr(H) = 2 sum(x^2) / T, for the mixed-precision plan (cheap).
    Trace,
}

/// Accumulates Hessians (or their traces) of the linear layers it observes.
pub struct HessianObserver {
    mode: Accumulate,
    hessians: BTreeMap<String, HessianAccumulator>,
    traces: BTreeMap<String, (f64, u64)>,
    /// BoA: per v_proj, one Hessian per kv head of the attention-mixed input (None: off).
    value_heads: Option<BTreeMap<String, Vec<HessianAccumulator>>>,
    /// BoA: per block, the row Hessians of q_proj and k_proj (None: off).
    attention_rows: Option<BTreeMap<usize, AttentionRowHessians>>,
}

impl HessianObserver {
    pub fn new(mode: Accumulate) -> Self {
        Self {
            mode,
            hessians: BTreeMap::new(),
            traces: BTreeMap::new(),
            value_heads: None,
            attention_rows: None,
        }
    }

    /// Also accumulates BoA's row Hessians of q_proj and k_proj.
    pub fn with_attention_rows(mut self) -> Self {
        self.attention_rows = Some(BTreeMap::new());
        self
    }

    /// The row Hessians of block `layer` (None unless `with_attention_rows`).
    pub fn attention_rows(&self, layer: usize) -> Option<&AttentionRowHessians> {
        self.attention_rows.as_ref()?.get(&layer)
    }

    /// Also accumulates BoA's attention-aware Hessians of v_proj, one per kv head.
    pub fn with_value_heads(mut self) -> Self {
        self.value_heads = Some(BTreeMap::new());
        self
    }

    /// The per-kv-head Hessians of a v_proj layer (empty unless `with_value_heads`).
    pub fn value_head_hessians(&self, layer: &str) -> &[HessianAccumulator] {
        self.value_heads
            .as_ref()
            .and_then(|m| m.get(layer))
            .map_or(&[], Vec::as_slice)
    }

    /// The accumulated Hessian of `layer` (its owner's, for layers that share an input).
    pub fn hessian(&self, layer: &str) -> Option<&HessianAccumulator> {
        self.hessians.get(&hessian_owner(layer))
    }

    /// tr(H) of `layer` from trace mode.
    pub fn trace(&self, layer: &str) -> Option<f64> {
        self.traces
            .get(&hessian_owner(layer))
            .map(|&(sum, t)| 2.0 * sum / t.max(1) as f64)
    }
}

impl LinearObserver for HessianObserver {
    fn wants_value_mix(&self) -> bool {
        self.value_heads.is_some()
    }

    fn observe_value_mix(&mut self, layer: &str, mixed: &Tensor) -> candle_core::Result<()> {
        let Some(heads) = self.value_heads.as_mut() else {
            return Ok(());
        };
        let (kv_heads, tokens, dim) = mixed.dims3()?;
        let accs = heads
            .entry(layer.to_string())
            .or_insert_with(|| vec![HessianAccumulator::new(dim); kv_heads]);
        for (g, acc) in accs.iter_mut().enumerate() {
            accumulate(acc, &mixed.get(g)?, tokens)?;
        }
        Ok(())
    }

    fn wants_attention_rows(&self) -> bool {
        self.attention_rows.is_some()
    }

    fn observe_attention_rows(
        &mut self,
        layer: usize,
        q: &Tensor,
        k: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
    ) -> candle_core::Result<()> {
        let Some(rows) = self.attention_rows.as_mut() else {
            return Ok(());
        };
        let (kv_heads, tokens, head_dim) = k.dims3()?;
        let flat = |t: &Tensor| -> candle_core::Result<Vec<f32>> { t.flatten_all()?.to_vec1() };
        rows.entry(layer)
            .or_insert_with(|| AttentionRowHessians::new(kv_heads, head_dim))
            .add(&flat(q)?, &flat(k)?, &flat(cos)?, &flat(sin)?, tokens);
        Ok(())
    }

    fn observe(&mut self, layer: &str, input: &Tensor) -> candle_core::Result<()> {
        if hessian_owner(layer) != layer {
            return Ok(());
        }
        let (tokens, dim) = input.dims2()?;
        match self.mode {
            Accumulate::Hessian => {
                let acc = self
                    .hessians
                    .entry(layer.to_string())
                    .or_insert_with(|| HessianAccumulator::new(dim));
                accumulate(acc, input, tokens)?;
            }
            Accumulate::Trace => {
                let x: Vec<f32> = input.flatten_all()?.to_vec1()?;
                let e = self.traces.entry(layer.to_string()).or_insert((0.0, 0));
                e.0 += x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>();
                e.1 += tokens as u64;
            }
        }
        Ok(())
    }
}

/// Adds a batch of inputs (`tokens x dim`) to `acc`. On a GPU the product X^T X is formed
/// there and only its dim x dim values come back; on the CPU by faer, as always.
fn accumulate(acc: &mut HessianAccumulator, x: &Tensor, tokens: usize) -> candle_core::Result<()> {
    if x.device().is_cpu() {
        acc.add(&x.flatten_all()?.to_vec1()?, tokens);
    } else {
        let x = x.contiguous()?;
        acc.add_gram(&x.t()?.matmul(&x)?.flatten_all()?.to_vec1()?, tokens);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_inputs_have_one_owner() {
        assert_eq!(
            hessian_owner("model.layers.3.self_attn.v_proj"),
            "model.layers.3.self_attn.q_proj"
        );
        assert_eq!(
            hessian_owner("model.layers.3.mlp.up_proj"),
            "model.layers.3.mlp.gate_proj"
        );
        assert_eq!(
            hessian_owner("model.layers.3.mlp.down_proj"),
            "model.layers.3.mlp.down_proj"
        );
    }
}
