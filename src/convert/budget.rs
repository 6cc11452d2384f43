//! Which weights Athena quantizes and what `--file-bits` leaves them: the file budget counts
//! every tensor byte (metadata and alignment padding excluded) over every parameter, so the
//! plain tensors' bytes (norms, biases, and the embeddings when they stay plain) are set aside
//! first and the rest becomes the average bits of the Athena weights that the --bits plan meets.

use super::error::ConvertError;
use super::options::{ConvertOptions, Embeddings};
use crate::checkpoint::{ModelConfig, TensorSource};
use crate::export::{self, plain};
use crate::model::LinearKind;
use crate::quantizer::plan::LayerInfo;

/// HF name of the token embedding table (also the output head when embeddings are tied).
pub const EMBEDDING: &str = "model.embed_tokens.weight";
/// HF name of an untied output head.
pub const LM_HEAD: &str = "lm_head.weight";

/// Every weight the conversion quantizes with Athena, in the order they are written: the
/// linear layers block by block, then (with [`Embeddings::Athena`]) the output head of an
/// untied model and the token embedding table. Sensitivities not yet measured.
pub fn athena_weights(config: &ModelConfig, embeddings: Embeddings) -> Vec<LayerInfo> {
    let layer = |name: String, [rows, cols]: [usize; 2]| LayerInfo {
        name,
        rows,
        cols,
        sensitivity: 0.0,
    };
    let mut layers = Vec::new();
    for l in 0..config.num_hidden_layers {
        for kind in LinearKind::ALL {
            layers.push(layer(
                format!("{}.weight", kind.hf_name(l)),
                kind.shape(config),
            ));
        }
    }
    if embeddings == Embeddings::Athena {
        let shape = [config.vocab_size, config.hidden_size];
        if !config.tie_word_embeddings {
            layers.push(layer(LM_HEAD.into(), shape));
        }
        layers.push(layer(EMBEDDING.into(), shape));
    }
    layers
}

/// The model's size as the file budget sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct FileBudget {
    /// Every parameter the file stores (a tied head counted once).
    pub parameters: u64,
    /// Bytes of the tensors that stay plain.
    pub plain_bytes: u64,
    /// Parameters of the Athena weights.
    pub athena_weights: u64,
    /// Whether the embedding (and an untied head) are among the plain tensors.
    pub plain_embeddings: bool,
}

impl FileBudget {
    pub fn measure(
        source: &dyn TensorSource,
        embeddings: Embeddings,
    ) -> Result<FileBudget, ConvertError> {
        let athena: Vec<String> = athena_weights(source.config(), embeddings)
            .into_iter()
            .map(|l| l.name)
            .collect();
        let mut budget = FileBudget {
            parameters: 0,
            plain_bytes: 0,
            athena_weights: 0,
            plain_embeddings: embeddings.plain().is_some(),
        };
        for tp in export::plan_tensors(source)? {
            let count = tp.hf_shape.iter().product::<usize>() as u64;
            budget.parameters += count;
            if athena.contains(&tp.hf_name) {
                budget.athena_weights += count;
                continue;
            }
            let ty = plain::tensor_type(embeddings.plain_or_default(), &tp.gguf_name, &tp.dims);
            budget.plain_bytes += ty.tensor_size(&tp.dims).ok_or_else(|| {
                ConvertError::Options(format!(
                    "tensor '{}': no {ty} size for dims {:?}",
                    tp.gguf_name, tp.dims
                ))
            })?;
        }
        Ok(budget)
    }

    /// The average bits per Athena weight that makes the tensors `file_bits` bits per
    /// parameter; an error when the plain tensors alone take more than the budget allows the
    /// smallest plan.
    pub fn athena_bits(&self, file_bits: f64) -> Result<f64, ConvertError> {
        let total = file_bits * self.parameters as f64;
        let bits = (total - 8.0 * self.plain_bytes as f64) / self.athena_weights.max(1) as f64;
        if bits < MIN_ATHENA_BITS {
            return Err(ConvertError::Options(format!(
                "--file-bits {file_bits}: the plain tensors alone take {:.2} bits per parameter, \
                 leaving {bits:.2} bits per quantized weight (the smallest plan needs \
                 {MIN_ATHENA_BITS}); raise --file-bits{}",
                8.0 * self.plain_bytes as f64 / self.parameters.max(1) as f64,
                match self.plain_embeddings {
                    true => " or quantize the embeddings (--embeddings athena)",
                    false => "",
                }
            )));
        }
        Ok(bits)
    }
}

/// The plan's smallest average (d = 3 with 16 centroids: 1.33 index bits plus codebooks).
const MIN_ATHENA_BITS: f64 = 1.5;

/// The --bits budget of the Athena weights: `--bits` itself, or what `--file-bits` leaves them
/// (None with `--vq`).
pub fn athena_bits(
    opts: &ConvertOptions,
    source: &dyn TensorSource,
) -> Result<Option<f64>, ConvertError> {
    match (opts.size.bits, opts.size.file_bits) {
        (Some(bits), _) => Ok(Some(bits)),
        (None, Some(file_bits)) => FileBudget::measure(source, opts.size.embeddings)?
            .athena_bits(file_bits)
            .map(Some),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_budget_sets_the_plain_bytes_aside() {
        // 1000 parameters, 100 of them in f32 norms (400 bytes), 900 in Athena weights.
        let b = FileBudget {
            parameters: 1000,
            plain_bytes: 400,
            athena_weights: 900,
            plain_embeddings: false,
        };
        // 4 bits per parameter = 4000 bits, 3200 of them plain: 800 bits for 900 weights.
        let err = b.athena_bits(4.0).unwrap_err().to_string();
        assert!(
            err.contains("--file-bits 4: the plain tensors alone take 3.20 bits"),
            "{err}"
        );
        assert!(!err.contains("--embeddings athena"), "{err}");
        let bits = b.athena_bits(6.0).unwrap();
        assert!((bits - (6000.0 - 3200.0) / 900.0).abs() < 1e-12, "{bits}");
        // With plain embeddings the hint names the option that quantizes them.
        let plain = FileBudget {
            plain_embeddings: true,
            ..b
        };
        let err = plain.athena_bits(4.0).unwrap_err().to_string();
        assert!(err.contains("--embeddings athena"), "{err}");
    }
}
