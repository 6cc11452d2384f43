//! How much each linear layer's error costs, for the --bits plan to spend bits by: one pass of
//! the unquantized model over the calibration sequences (Hessian traces), the loss's Fisher
//! traces (`fisher`), or a fixed weighting.

use std::collections::BTreeMap;

use super::budget::{EMBEDDING, LM_HEAD};
use super::error::ConvertError;
use super::fisher;
use super::options::Sensitivity;
use crate::calibration::{Accumulate, HessianObserver};
use crate::checkpoint::TensorSource;
use crate::model::{LinearKind, LinearObserver, Model, ModelError};
use crate::quantizer::plan::LayerInfo;

/// What a sensitivity pass reports as it goes.
pub enum SensitivityProgress {
    /// The pass starts (what it measures).
    Stage(&'static str),
    /// `done` of `total` units (`unit`: "blocks" or "sequences").
    Pass {
        done: usize,
        total: usize,
        unit: &'static str,
    },
}

/// Sets every layer's `sensitivity` as `kind` asks.
pub fn measure(
    kind: Sensitivity,
    model: &Model,
    source: &dyn TensorSource,
    sequences: &[Vec<u32>],
    layers: &mut [LayerInfo],
    progress: &mut dyn FnMut(SensitivityProgress),
) -> Result<(), ConvertError> {
    match kind {
        Sensitivity::Hessian => {
            progress(SensitivityProgress::Stage(
                "measuring layer sensitivities (Hessian traces)",
            ));
            let total = model.config().num_hidden_layers;
            let traces = hessian_traces(model, sequences, |done| {
                progress(SensitivityProgress::Pass {
                    done,
                    total,
                    unit: "blocks",
                })
            })?;
            for l in layers {
                l.sensitivity =
                    trace(&traces, &l.name)? * weight_energy(source, &l.name)? / l.cols as f64;
            }
        }
        Sensitivity::Fisher => {
            progress(SensitivityProgress::Stage(
                "measuring layer sensitivities (Fisher traces)",
            ));
            let traces = fisher::fisher_traces(model, sequences, &mut |done, total| {
                progress(SensitivityProgress::Pass {
                    done,
                    total,
                    unit: "sequences",
                })
            })?;
            for l in layers {
                l.sensitivity = trace(&traces, &l.name)? * weight_energy(source, &l.name)?
                    / (l.rows * l.cols) as f64;
            }
        }
        Sensitivity::Relative => layers.iter_mut().for_each(|l| l.sensitivity = 1.0),
        Sensitivity::Uniform => layers
            .iter_mut()
            .for_each(|l| l.sensitivity = (l.rows * l.cols) as f64),
    }
    Ok(())
}

/// A weight's trace; an untied model's embedding table, which no product reads, takes the
/// output head's (both map the vocabulary to the width).
fn trace(traces: &BTreeMap<String, f64>, name: &str) -> Result<f64, ConvertError> {
    let found = traces.get(name).or_else(|| match name {
        EMBEDDING => traces.get(LM_HEAD),
        _ => None,
    });
    found.copied().ok_or_else(|| {
        ConvertError::Options(format!(
            "layer '{name}': the sensitivity pass did not reach it"
        ))
    })
}

/// Per-layer tr(H) from one pass of the unquantized model (APTQ sensitivities), the output
/// head's (under the name of the matrix that serves as head) from the final normed hidden
/// states.
pub fn hessian_traces(
    model: &Model,
    sequences: &[Vec<u32>],
    mut progress: impl FnMut(usize),
) -> Result<BTreeMap<String, f64>, ModelError> {
    let mut observer = HessianObserver::new(Accumulate::Trace);
    let hidden = model.embed(sequences)?;
    let mut layer = 0;
    let last = model.forward_blocks(hidden, Some(&mut observer), |_, _| {
        progress(layer);
        layer += 1;
        Ok(())
    })?;
    let head = model.load_head()?;
    for h in &last {
        observer.observe(LM_HEAD, &head.input(h)?)?;
    }
    let mut traces = BTreeMap::new();
    if let Some(t) = observer.trace(LM_HEAD) {
        let name = match model.config().tie_word_embeddings {
            true => EMBEDDING,
            false => LM_HEAD,
        };
        traces.insert(name.to_string(), t);
    }
    for layer in 0..model.config().num_hidden_layers {
        for kind in LinearKind::ALL {
            let name = kind.hf_name(layer);
            let trace = observer.trace(&name).ok_or_else(|| {
                ModelError::Invalid(format!(
                    "layer '{name}': no calibration input reached this layer"
                ))
            })?;
            traces.insert(format!("{name}.weight"), trace);
        }
    }
    Ok(traces)
}

/// ||W||_F^2 of a checkpoint weight.
fn weight_energy(source: &dyn TensorSource, name: &str) -> Result<f64, ConvertError> {
    let w = source.load(name)?;
    Ok(w.data.iter().map(|&x| (x as f64) * (x as f64)).sum())
}
