//! End-to-end layer sensitivities for the --bits plan: HAWQ's and APTQ's "Hessian trace" of the
//! model's loss with respect to each layer's weights, estimated by the empirical Fisher
//! (SqueezeLLM's choice): the sum over calibration sequences of the squared gradient of the
//! sequence's next-token cross-entropy. Unlike the layer-local tr(H) of
//! [`super::sensitivity::hessian_traces`], which only sees a layer's inputs, this sees what an
//! error in the layer costs at the output, through every later block and the LM head.
//!
//! Cost: one forward and backward pass of the whole unquantized model per sequence, one
//! sequence per CPU thread at a time (each holds its autograd graph, a few GB at 512 tokens).

use std::collections::BTreeMap;

use candle_core::{Tensor, Var};

use super::tuning::parallel::per_thread;
use crate::model::{Block, LinearKind, Model, ModelError};

/// Sequences the sensitivity pass uses at most: the traces only rank layers against each other,
/// and each sequence costs a full forward and backward pass.
pub const FISHER_SEQUENCES: usize = 16;

/// Per weight name (`model.layers.L.….weight`, and the output matrix's), the sum over the first [`FISHER_SEQUENCES`] of
/// `sequences` of the squared gradient of the sequence's mean next-token cross-entropy with
/// respect to that weight, summed over its entries. `progress(done, total)` per sequence.
pub fn fisher_traces(
    model: &Model,
    sequences: &[Vec<u32>],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<BTreeMap<String, f64>, ModelError> {
    let config = model.config();
    let mut blocks: Vec<Block> = Vec::with_capacity(config.num_hidden_layers);
    let mut weights: Vec<(String, Var)> = Vec::new();
    for layer in 0..config.num_hidden_layers {
        let mut block = model.load_block(layer)?;
        for kind in LinearKind::ALL {
            let var = Var::from_tensor(&block.linear(kind).weight)?;
            block.set_weight(kind, var.as_tensor().clone())?;
            weights.push((format!("{}.weight", kind.hf_name(layer)), var));
        }
        blocks.push(block);
    }
    // The output matrix (the embedding table when tied) as one more weight: its gradient is
    // that of the head role only (the lookups happen before the graph).
    let mut head = model.load_head()?;
    let head_var = Var::from_tensor(&head.lm_head)?;
    head.lm_head = head_var.as_tensor().clone();
    let head_name = match config.tie_word_embeddings {
        true => super::budget::EMBEDDING,
        false => super::budget::LM_HEAD,
    };
    weights.push((head_name.to_string(), head_var));
    let used: Vec<Vec<u32>> = sequences
        .iter()
        .filter(|s| s.len() >= 2)
        .take(FISHER_SEQUENCES)
        .cloned()
        .collect();
    if used.is_empty() {
        return Err(ModelError::Invalid(
            "the sensitivity pass needs a calibration sequence of at least 2 tokens".into(),
        ));
    }
    let longest = used.iter().map(|s| s.len()).max().unwrap_or(0);
    let tables = model.all_rope_tables(longest)?;
    // One sequence per thread at a time, so memory holds one graph per thread and progress is
    // reported from this thread.
    let threads = candle_core::utils::get_num_threads().max(1);
    let mut sums = vec![0.0f64; weights.len()];
    progress(0, used.len());
    let items: Vec<(&Vec<u32>, Tensor)> = used.iter().zip(model.embed(&used)?).collect();
    let mut done = 0;
    for chunk in items.chunks(threads) {
        let parts = per_thread(chunk, &|part| {
            let mut sums = vec![0.0f64; weights.len()];
            for (tokens, x) in part {
                let mut h = x.clone();
                for b in &blocks {
                    let (cos, sin) = &tables[b.layer];
                    h = b.forward(config, &h, cos, sin, None)?;
                }
                let t = tokens.len();
                let logits = head.logits(&h.narrow(0, 0, t - 1)?)?;
                let targets = Tensor::new(&tokens[1..], model.device())?;
                let grads = candle_nn::loss::cross_entropy(&logits, &targets)?.backward()?;
                for (sum, (_, var)) in sums.iter_mut().zip(&weights) {
                    if let Some(g) = grads.get(var.as_tensor()) {
                        *sum += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
                    }
                }
            }
            Ok(sums)
        })?;
        for part in parts {
            for (sum, p) in sums.iter_mut().zip(part) {
                *sum += p;
            }
        }
        done += chunk.len();
        progress(done, used.len());
    }
    let mut traces = BTreeMap::new();
    for ((name, _), sum) in weights.iter().zip(sums) {
        traces.insert(name.clone(), sum);
    }
    Ok(traces)
}
