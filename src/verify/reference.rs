//! `athena-verify FILE --reference MODEL`: every tensor of the file, decoded to f32 in the HF
//! layout (Athena weights by the reference decoder, q/k rows un-permuted), against the same tensor
//! of the model it was converted from.

use std::path::Path;

use serde::Serialize;

use crate::container::gguf::escape_name;
use crate::eval::file::open_source;

/// One tensor's reconstruction error.
#[derive(Debug, Clone, Serialize)]
pub struct TensorError {
    /// HF name, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub name: String,
    pub elements: u64,
    /// ||W - W_ref||_F / ||W_ref||_F (0 when both are zero).
    pub relative_error: f64,
    pub max_abs_error: f64,
}

/// The comparison of a file with its source model.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub reference: String,
    pub tensors: Vec<TensorError>,
    /// sqrt(sum ||dW||^2 / sum ||W_ref||^2) over the 2-D weights (the matrices a quantizer
    /// touches; norms and biases are excluded).
    pub matrix_relative_error: f64,
}

impl Comparison {
    /// The `count` tensors with the largest relative error, worst first.
    pub fn worst(&self, count: usize) -> Vec<&TensorError> {
        let mut sorted: Vec<&TensorError> = self.tensors.iter().collect();
        sorted.sort_by(|a, b| b.relative_error.total_cmp(&a.relative_error));
        sorted.truncate(count);
        sorted
    }
}

/// Compares every tensor of the reference model with the file's. `progress(done, total)` is
/// called per tensor. Errors (one line) name the file, the reference or the tensor.
pub fn compare(
    file: &Path,
    reference: &Path,
    mut progress: impl FnMut(usize, usize),
) -> Result<Comparison, String> {
    let ours = open_source(file)?;
    let theirs = open_source(reference)?;
    let have: std::collections::BTreeSet<String> = ours.tensor_names().into_iter().collect();
    let tied = theirs.config().tie_word_embeddings;
    // A tied output matrix is not stored in a GGUF file: it is the embedding.
    let names: Vec<String> = theirs
        .tensor_names()
        .into_iter()
        .filter(|n| !(tied && n == "lm_head.weight" && !have.contains(n)))
        .collect();
    if let Some(missing) = names.iter().find(|n| !have.contains(*n)) {
        return Err(format!(
            "{}: tensor '{}' of the reference {} is missing",
            file.display(),
            escape_name(missing),
            reference.display()
        ));
    }
    let mut tensors = Vec::with_capacity(names.len());
    let (mut diff2_matrices, mut ref2_matrices) = (0f64, 0f64);
    for (k, name) in names.iter().enumerate() {
        let want = theirs.load(name).map_err(|e| e.to_string())?;
        let got = ours.load(name).map_err(|e| e.to_string())?;
        if got.shape != want.shape {
            return Err(format!(
                "{}: tensor '{}' has shape {:?}, the reference {} has {:?}",
                file.display(),
                escape_name(name),
                got.shape,
                reference.display(),
                want.shape
            ));
        }
        let (mut diff2, mut ref2, mut max_abs) = (0f64, 0f64, 0f64);
        for (&a, &b) in got.data.iter().zip(&want.data) {
            let d = (a as f64) - (b as f64);
            diff2 += d * d;
            ref2 += (b as f64) * (b as f64);
            max_abs = max_abs.max(d.abs());
        }
        if want.shape.len() == 2 {
            diff2_matrices += diff2;
            ref2_matrices += ref2;
        }
        tensors.push(TensorError {
            name: name.clone(),
            elements: want.data.len() as u64,
            relative_error: relative(diff2, ref2),
            max_abs_error: max_abs,
        });
        progress(k + 1, names.len());
    }
    Ok(Comparison {
        reference: reference.display().to_string(),
        tensors,
        matrix_relative_error: relative(diff2_matrices, ref2_matrices),
    })
}

fn relative(diff2: f64, ref2: f64) -> f64 {
    if ref2 > 0.0 {
        (diff2 / ref2).sqrt()
    } else if diff2 > 0.0 {
        f64::INFINITY
    } else {
        0.0
    }
}
