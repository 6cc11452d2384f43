//! The file a conversion writes: llama.cpp's metadata and the converter's own keys, every tensor
//! that is not an Athena weight in its plain type, then the quantized layers and the block norms
//! as the sequential pass hands them over, in block order, and the head and embedding last when
//! they are Athena weights.

use std::collections::{BTreeMap, BTreeSet};

use super::budget;
use super::error::ConvertError;
use super::options::ConvertOptions;
use super::sequential::{self, BlockTensor};
use crate::checkpoint::{names, Architecture, DenseTensor, TensorSource};
use crate::container::athena;
use crate::container::gguf::Value;
use crate::container::model_file::ModelFileWriter;
use crate::export::{self, plain, PlainType, TensorPlan};

/// The output file while the conversion runs, with the sizes the report gives.
pub struct OutputFile {
    writer: ModelFileWriter,
    /// What the remaining plain matrices are chosen by (`plain::tensor_type`).
    plain_type: PlainType,
    /// Norm weights written when the sequential pass hands them over (tuning may change them).
    deferred: BTreeMap<String, TensorPlan>,
    /// The model's architecture (the tensors' GGUF names).
    arch: Architecture,
    /// Every parameter of the model (for the file's bits per parameter).
    parameters: u64,
    /// Bytes of every tensor's data (metadata and padding excluded).
    tensor_bytes: u64,
    linear_bits: u64,
    linear_weights: u64,
    athena_bits: u64,
    athena_weights: u64,
}

/// What the finished file holds, by size.
pub struct WrittenFile {
    pub file_bytes: u64,
    /// Weighted bpw of the quantized linear weights, from the stored bytes.
    pub linear_bpw: f64,
    /// Weighted bpw of every Athena weight (the linear ones, and the head and embedding when
    /// quantized).
    pub athena_bpw: f64,
    /// 8 * tensor data bytes / all parameters of the model: what --file-bits budgets.
    pub tensor_bpw: f64,
    /// 8 * file bytes / all parameters of the model (metadata included).
    pub file_bpw: f64,
}

impl OutputFile {
    /// Opens the output (a temporary file until `finish`) and records the metadata: `meta`
    /// (llama.cpp's keys) and how the file was made.
    pub fn create(
        opts: &ConvertOptions,
        meta: Vec<(String, Value)>,
        calibration_tokens: usize,
    ) -> Result<Self, ConvertError> {
        let mut writer = ModelFileWriter::create(&opts.out)?;
        for (key, value) in meta {
            writer.add_metadata(key, value);
        }
        let method = format!("{:?}", opts.quantizer.method).to_lowercase();
        writer.add_metadata("athena.converter.method", method);
        writer.add_metadata("athena.converter.seed", Value::U64(opts.quantizer.seed));
        writer.add_metadata(
            "athena.converter.calibration_tokens",
            Value::U64(calibration_tokens as u64),
        );
        if let Some(bits) = opts.size.bits {
            writer.add_metadata("athena.converter.bits_budget", Value::F64(bits));
        }
        if let Some(bits) = opts.size.file_bits {
            writer.add_metadata("athena.converter.file_bits_budget", Value::F64(bits));
        }
        // The command line's default for it depends on the machine's memory.
        writer.add_metadata(
            "athena.converter.finetune_epochs",
            Value::U64(opts.finetune.epochs as u64),
        );
        Ok(Self {
            writer,
            plain_type: opts.size.embeddings.plain_or_default(),
            deferred: BTreeMap::new(),
            arch: Architecture::Llama,
            parameters: 0,
            tensor_bytes: 0,
            linear_bits: 0,
            linear_weights: 0,
            athena_bits: 0,
            athena_weights: 0,
        })
    }

    /// Writes every tensor of `source` that is neither a `quantized` weight nor a norm the
    /// sequential pass hands over (the block norms, and the final norm with end-to-end tuning):
    /// biases, and the embeddings and output matrix unless they are Athena weights.
    pub fn write_plain_tensors(
        &mut self,
        source: &dyn TensorSource,
        quantized: &BTreeMap<String, crate::quantizer::VqConfig>,
        layers: usize,
        final_norm_deferred: bool,
    ) -> Result<(), ConvertError> {
        let arch = source.config().architecture;
        self.arch = arch;
        let mut handed_over: BTreeSet<String> = (0..layers)
            .flat_map(|layer| sequential::block_norm_names(arch, layer))
            .collect();
        self.tensor_bytes += export::add_rope_tensors(&mut self.writer, source.config())?.1;
        if final_norm_deferred {
            handed_over.insert(sequential::FINAL_NORM_NAME.to_string());
        }
        for tp in export::plan_tensors(source)? {
            self.parameters += tp.hf_shape.iter().product::<usize>() as u64;
            if quantized.contains_key(&tp.hf_name) {
                continue;
            }
            if handed_over.contains(&tp.hf_name) {
                self.deferred.insert(tp.hf_name.clone(), tp);
                continue;
            }
            let data = export::to_gguf_layout(&tp, export::load_planned(source, &tp)?)?;
            self.tensor_bytes += write_plain(&mut self.writer, self.plain_type, &tp, &data)?;
        }
        Ok(())
    }

    /// Takes a finished tensor from the sequential pass (its sink).
    pub fn add(&mut self, name: &str, tensor: BlockTensor<'_>) -> Result<(), String> {
        match tensor {
            BlockTensor::Quantized(q) => {
                let gguf = names::hf_to_gguf(self.arch, name)
                    .ok_or_else(|| format!("no GGUF name for {name}"))?;
                let encoded = athena::encode(&gguf, q);
                let (bits, weights) = (8 * encoded.stored_bytes(), (q.vq.rows * q.vq.cols) as u64);
                if !matches!(name, budget::EMBEDDING | budget::LM_HEAD) {
                    self.linear_bits += bits;
                    self.linear_weights += weights;
                }
                self.athena_bits += bits;
                self.athena_weights += weights;
                self.tensor_bytes += encoded.stored_bytes();
                self.writer.add_weight(&encoded).map_err(|e| e.to_string())
            }
            BlockTensor::Norm(data) => {
                let tp = self
                    .deferred
                    .get(name)
                    .ok_or_else(|| format!("{name} is not a tensor of the model"))?;
                let dense = DenseTensor {
                    shape: tp.hf_shape.clone(),
                    data: data.to_vec(),
                };
                let data = export::to_gguf_layout(tp, dense).map_err(|e| e.to_string())?;
                self.tensor_bytes += write_plain(&mut self.writer, self.plain_type, tp, &data)
                    .map_err(|e| e.to_string())?;
                Ok(())
            }
        }
    }

    /// Writes the file and renames it into place.
    pub fn finish(self) -> Result<WrittenFile, ConvertError> {
        let file_bytes = self.writer.finish()?;
        let per_parameter = |bytes: u64| 8.0 * bytes as f64 / self.parameters.max(1) as f64;
        Ok(WrittenFile {
            file_bytes,
            linear_bpw: self.linear_bits as f64 / self.linear_weights.max(1) as f64,
            athena_bpw: self.athena_bits as f64 / self.athena_weights.max(1) as f64,
            tensor_bpw: per_parameter(self.tensor_bytes),
            file_bpw: per_parameter(file_bytes),
        })
    }
}

/// Writes a tensor that is not Athena-quantized, in the type `plain::tensor_type` picks for it;
/// returns its data bytes.
fn write_plain(
    writer: &mut ModelFileWriter,
    plain_type: PlainType,
    tp: &TensorPlan,
    data: &[f32],
) -> Result<u64, ConvertError> {
    let ty = plain::tensor_type(plain_type, &tp.gguf_name, &tp.dims);
    let bytes = plain::encode(ty, data).map_err(|e| export::ExportError::Tensor {
        name: tp.hf_name.clone(),
        message: e.to_string(),
    })?;
    writer.add_tensor(&tp.gguf_name, &tp.dims, ty, &bytes)?;
    Ok(bytes.len() as u64)
}
