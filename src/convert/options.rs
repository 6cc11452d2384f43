//! What a conversion is asked to do, in the groups `athena-convert --help` shows (one struct per
//! heading), the check of their combinations before any work starts, and the defaults that
//! depend on the budget.

use std::path::PathBuf;

use candle_core::Device;

use super::error::ConvertError;
use super::paths;
use super::tuning::{FinetuneOptions, TuneOptions};
use crate::export::PlainType;
use crate::quantizer::plan::LevelLimits;
use crate::quantizer::{rotation, CodebookKind, Engine, GroupOrder};

/// Everything a conversion needs.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    pub model: PathBuf,
    pub out: PathBuf,
    pub size: SizeOptions,
    pub quantizer: QuantizerOptions,
    pub ablations: Ablations,
    pub calibration: CalibrationOptions,
    /// Block-wise codebook tuning after each block is quantized (epochs 0: off).
    pub tune: TuneOptions,
    /// End-to-end tuning of every codebook and norm after the last block (epochs 0: off).
    pub finetune: FinetuneOptions,
    /// Where calibration and quantization compute.
    pub device: ComputeDevice,
}

/// Where a conversion computes (athena-convert --device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ComputeDevice {
    /// The CPU threads: candle's CPU device for the model, the SIMD column loop (`gptvq`).
    #[default]
    Cpu,
    /// The GPU code path (`gptvq_tensors`) on candle's CPU device: slower than `Cpu`, for
    /// checking that path without a GPU.
    CpuTensors,
    /// CUDA GPU N: the model forward and the tensor column loop on it.
    Cuda(usize),
}

impl ComputeDevice {
    /// `cpu`, `cpu-tensors`, `cuda` or `cuda:N`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        match spec {
            "cpu" => Ok(Self::Cpu),
            "cpu-tensors" => Ok(Self::CpuTensors),
            "cuda" => Ok(Self::Cuda(0)),
            s => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| format!("unknown device '{s}' (cpu, cpu-tensors, cuda or cuda:N)")),
        }
    }

    /// The model's device and the quantizer's engine; a one-line error when the device is
    /// not there (no CUDA in this build, no such GPU, no driver).
    pub fn open(self) -> Result<(Device, Engine), String> {
        match self {
            Self::Cpu => Ok((Device::Cpu, Engine::Simd)),
            Self::CpuTensors => Ok((Device::Cpu, Engine::Tensors(Device::Cpu))),
            Self::Cuda(n) if !cfg!(feature = "cuda") => Err(format!(
                "--device cuda:{n}: this athena-convert was built without CUDA \
                 (cargo build --release --features cuda)"
            )),
            Self::Cuda(n) => {
                let device = Device::new_cuda(n).map_err(|e| {
                    let e = e.to_string();
                    format!(
                        "--device cuda:{n}: {}",
                        e.lines().next().unwrap_or_default()
                    )
                })?;
                Ok((device.clone(), Engine::Tensors(device)))
            }
        }
    }
}

/// How small the file gets: a budget or one fixed configuration, and what the plan may choose.
#[derive(Debug, Clone)]
pub struct SizeOptions {
    /// Average bits per weight of the quantized linear weights (APTQ plan); Athena embeddings
    /// and head ([`Embeddings::Athena`]) get the levels the same plan buys at its final price.
    pub bits: Option<f64>,
    /// Budget for the whole file: bits per parameter of every tensor byte (metadata excluded),
    /// met by the same plan after the plain tensors' bytes are set aside.
    pub file_bits: Option<f64>,
    /// Explicit (d, n, R, C) for every layer.
    pub vq: Option<[usize; 4]>,
    pub codebook: CodebookKind,
    pub lowrank: LowRankChoice,
    pub tiles: TileLayout,
    /// Which (d, n) levels the --bits plan may use.
    pub levels: LevelLimits,
    pub sensitivity: Sensitivity,
    /// How the token embedding and an untied output matrix are stored.
    pub embeddings: Embeddings,
}

/// How the token embedding table and the output head are stored in an Athena file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embeddings {
    /// A plain llama.cpp type (every reader runs it; Q8_0 was the only choice before
    /// 2026-12-07).
    Plain(PlainType),
    /// Athena weights planned and quantized like the linear layers: the head under the Hessian
    /// of the final normed hidden states; a tied table is one weight serving both lookups and
    /// logits (`sequential::quantize_head`).
    Athena,
}

impl Embeddings {
    /// The plain type of the embedding matrices, None when they are Athena weights.
    pub fn plain(self) -> Option<PlainType> {
        match self {
            Embeddings::Plain(t) => Some(t),
            Embeddings::Athena => None,
        }
    }

    /// The type the remaining plain tensors are chosen by (`plain::tensor_type`): with Athena
    /// embeddings only 1-D tensors stay plain, and those are F32 whatever this says.
    pub fn plain_or_default(self) -> PlainType {
        self.plain().unwrap_or(PlainType::Q8_0)
    }
}

/// How each layer is quantized.
#[derive(Debug, Clone)]
pub struct QuantizerOptions {
    pub method: Method,
    pub order: GroupOrder,
    pub kmeans_iters: usize,
    /// Relative Hessian damping (lambda of ATHENA-MATH section 1; raised on a failed Cholesky).
    pub damp: f64,
    /// Largest column-rotation block (incoherence processing; 0: off). Each layer gets the
    /// largest power of four up to this that divides its columns.
    pub rotation_block: usize,
    /// With `rotation_block` > 0: rotate only the layers where the rotated codes measure the
    /// lower layer loss (each layer is quantized both ways) instead of every layer.
    pub rotation_per_layer: bool,
    /// BoA: q_proj and k_proj under the row Hessians of their scores (Athena method only).
    pub qk_row_hessians: bool,
    /// Seed of k-means seeding: the same seed gives a byte-identical file.
    pub seed: u64,
}

/// Parts of the Athena method that can be switched off to measure what each is worth (all on
/// by default).
#[derive(Debug, Clone)]
pub struct Ablations {
    /// Per-row f16 scales (encoding version 3) for the vector-quantized methods.
    pub row_scales: bool,
    pub hessian_metric: bool,
    pub error_feedback: bool,
    pub codebook_update: bool,
    /// BoA: v_proj under per-kv-head attention-aware Hessians (Athena method only).
    pub attention_hessians: bool,
}

impl Default for Ablations {
    fn default() -> Self {
        Self {
            row_scales: true,
            hessian_metric: true,
            error_feedback: true,
            codebook_update: true,
            attention_hessians: true,
        }
    }
}

/// The text the Hessians (and the tunings) are measured on.
#[derive(Debug, Clone)]
pub struct CalibrationOptions {
    pub text: PathBuf,
    pub tokens: usize,
    pub seq_len: usize,
}

/// The quantization method: Athena, or one of the baselines measured in the same code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Hessian-guided VQ (metric k-means, error feedback).
    Athena,
    /// Plain k-means VQ: no Hessian metric, no error feedback.
    Kmeans,
    /// GPTQ: scalar min-max grid per group of 128 columns, with error feedback.
    Gptq,
    /// Round to nearest on the same grid, no error feedback.
    Rtn,
}

/// Low-rank residual choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LowRankChoice {
    Off,
    Rank(usize),
    /// min(N, M) / 100 per layer (ATHENA-MATH 4).
    Auto,
}

/// What the mixed-precision plan weighs layers by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sensitivity {
    /// APTQ: tr(H) * ||W||^2 / M from one calibration pass over the unquantized model.
    Hessian,
    /// HAWQ/APTQ with the model's loss: the empirical Fisher trace of the next-token
    /// cross-entropy with respect to the layer's weights, times ||W||^2 / (N M) (`fisher`).
    Fisher,
    /// Every weight counts the same: bits spread as evenly as the menu allows.
    Uniform,
    /// Every layer counts the same: each layer's relative output error
    /// tr(dW H dW^T) / tr(W H W^T) weighs alike, so small layers are cheap to protect.
    Relative,
}

/// How codebook tiles are shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TileLayout {
    /// Full-width tiles of as many rows as keep the codebook overhead near 1/16 bpw.
    Wide,
    /// The paper's layout: one codebook per group of d columns and all rows (C = d).
    Paper,
}

impl ConvertOptions {
    /// Checks option combinations before any work starts.
    pub fn check(&self) -> Result<(), ConvertError> {
        let fail = |m: &str| Err(ConvertError::Options(m.to_string()));
        let (size, calib) = (&self.size, &self.calibration);
        let chosen = [
            size.bits.is_some(),
            size.file_bits.is_some(),
            size.vq.is_some(),
        ];
        match chosen.iter().filter(|&&c| c).count() {
            0 => {
                return fail(
                    "choose a size: --bits B (average bits per quantized weight), --file-bits B \
                     (bits per parameter of the whole file) or --vq d,n,R,C",
                )
            }
            1 => {}
            _ => return fail("--bits, --file-bits and --vq exclude each other"),
        }
        for (value, option) in [(size.bits, "--bits"), (size.file_bits, "--file-bits")] {
            if value.is_some_and(|b| !(b.is_finite() && b > 0.0)) {
                return fail(&format!("{option} must be a positive number"));
            }
        }
        let damp = self.quantizer.damp;
        if !(damp.is_finite() && damp > 0.0 && damp <= 1.0) {
            return fail(
                "--damp must be above 0 and at most 1 (a fraction of the Hessian's mean diagonal)",
            );
        }
        if calib.seq_len < 16 || calib.tokens < calib.seq_len {
            return fail("--seq-len must be at least 16 and --calib-tokens at least one sequence");
        }
        if self.finetune.tokens.is_some_and(|t| t < calib.seq_len) {
            return fail("--finetune-tokens must be at least one sequence (--seq-len)");
        }
        if self.quantizer.method.is_scalar() && size.vq.is_some_and(|v| v[0] != 1) {
            return fail("the scalar baselines (gptq, rtn) need d = 1 in --vq");
        }
        if !valid_rotation_block(self.quantizer.rotation_block) {
            return fail(&format!(
                "--rotation-block must be 0 (off) or a power of four from 4 to {} (got {})",
                rotation::MAX_BLOCK,
                self.quantizer.rotation_block
            ));
        }
        if self.quantizer.kmeans_iters == 0 {
            return fail("--kmeans-iters must be at least 1");
        }
        let (tune, finetune) = (&self.tune, &self.finetune);
        for (value, option) in [
            (tune.learning_rate, "--tune-lr"),
            (finetune.learning_rate, "--finetune-lr"),
            (finetune.code_step, "--finetune-code-step"),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return fail(&format!("{option} must be a positive number (got {value})"));
            }
        }
        if tune.batch == 0 || finetune.batch == 0 {
            return fail("--tune-batch and --finetune-batch must be at least 1");
        }
        if !(0.0..=1.0).contains(&finetune.code_fraction) {
            return fail("--finetune-codes must be a fraction from 0 to 1");
        }
        self.check_paths()
    }

    /// The files: MODEL a Hugging Face folder, the calibration text a readable file, OUT
    /// writable and none of the files the conversion reads.
    fn check_paths(&self) -> Result<(), ConvertError> {
        let model = &self.model;
        if model.is_file() {
            return Err(ConvertError::Options(format!(
                "{}: Athena quantization (--bits/--vq) needs a Hugging Face folder (config.json, \
                 *.safetensors, tokenizer.json), not a file; for a GGUF file, \
                 `athena-materialize {} DIR` writes one",
                model.display(),
                model.display()
            )));
        }
        self.calibration
            .check_text()
            .map_err(ConvertError::Options)?;
        paths::check_location(&self.out).map_err(ConvertError::Options)?;
        let mut inputs = crate::checkpoint::folder_files(model);
        inputs.push(self.calibration.text.clone());
        paths::check_not_an_input(&self.out, &inputs).map_err(ConvertError::Options)
    }

    /// BoA's attention-aware Hessians for v_proj apply (the Athena method only).
    pub fn attention_hessians(&self) -> bool {
        self.ablations.attention_hessians && self.quantizer.method == Method::Athena
    }

    /// BoA's row Hessians for q_proj and k_proj apply (the Athena method only).
    pub fn qk_row_hessians(&self) -> bool {
        self.quantizer.qk_row_hessians && self.quantizer.method == Method::Athena
    }
}

impl CalibrationOptions {
    /// Checks that the calibration text is a readable file (the default one: that it was
    /// fetched). The error is one line naming it.
    pub fn check_text(&self) -> Result<(), String> {
        paths::check_readable_file(&self.text, "--calib").map_err(|e| {
            match self.text == super::default_calibration_text() {
                true => format!(
                    "{e} (the default calibration text: tools/fetch-models.sh fetches it, or \
                     give --calib FILE)"
                ),
                false => e,
            }
        })
    }
}

/// A column-rotation block the format and the quantizer take as given: 0 (off) or a power of
/// four up to [`rotation::MAX_BLOCK`] (other values used to be rounded down silently).
pub fn valid_rotation_block(block: usize) -> bool {
    block == 0
        || ((4..=rotation::MAX_BLOCK).contains(&block)
            && block.is_power_of_two()
            && block.trailing_zeros().is_multiple_of(2))
}

impl Method {
    /// GPTQ and RTN: scalar grids instead of codebooks.
    pub fn is_scalar(self) -> bool {
        matches!(self, Method::Gptq | Method::Rtn)
    }
}

/// The defaults that depend on the budget and the method, chosen by measurement
/// (docs/benchmarks.md). The baselines stay untuned and unrotated by default.
pub mod defaults {
    use super::*;

    /// Block-wise tuning pays below 3 bits (2.5-2.9 perplexity at --bits 2.25, two runs) and not
    /// measurably at 3 (0.07), where it would double the conversion time.
    pub fn tune_epochs(bits: Option<f64>, method: Method) -> usize {
        match bits {
            Some(b) if b < 3.0 && method == Method::Athena => 1,
            _ => 0,
        }
    }

    /// The column rotation measured better at 3 bits (perplexity 17.86 -> 17.63, layer loss
    /// -18%) and worse at 2.25 bits (30.72 and 31.69 against 29.80 and 30.45 unrotated).
    pub fn rotation_block(bits: Option<f64>, method: Method) -> usize {
        match bits {
            _ if method != Method::Athena => 0,
            Some(b) if b < 3.0 => 0,
            _ => rotation::MAX_BLOCK,
        }
    }

    /// End-to-end tuning's default epochs and the line that explains them (None where it is 0
    /// anyway): below 3 bits it gains most (--bits 2.25 27.90 -> 23.84, --bits 3 17.25 -> 16.38,
    /// for about twice the conversion time), so it is on there unless its estimated peak
    /// (`estimate` bytes) exceeds half of the machine's memory (`memory` bytes; unknown: off).
    pub fn finetune_epochs(
        bits: Option<f64>,
        method: Method,
        estimate: u64,
        memory: Option<u64>,
    ) -> (usize, Option<String>) {
        match bits {
            Some(b) if b < 3.0 && method == Method::Athena => {}
            _ => return (0, None),
        }
        let gib = |bytes: u64| bytes as f64 / (1u64 << 30) as f64;
        let Some(memory) = memory else {
            let note = "end-to-end tuning: off (the default below 3 bits, but this machine's \
                        memory is unknown; --finetune-epochs 1 turns it on)";
            return (0, Some(note.into()));
        };
        if estimate > memory / 2 {
            let note = format!(
                "end-to-end tuning: off (the default below 3 bits, but its estimated peak of \
                 {:.1} GiB exceeds half of this machine's {:.1} GiB; --finetune-epochs 1 forces it)",
                gib(estimate),
                gib(memory)
            );
            return (0, Some(note));
        }
        let note = format!(
            "end-to-end tuning: 1 epoch, the default below 3 bits (estimated peak {:.1} GiB of \
             this machine's {:.1} GiB; --finetune-epochs 0 skips it)",
            gib(estimate),
            gib(memory)
        );
        (1, Some(note))
    }

    /// This machine's memory (MemTotal), where /proc tells it.
    pub fn machine_memory_bytes() -> Option<u64> {
        let info = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn end_to_end_tuning_defaults_on_below_3_bits_where_half_the_memory_holds_it() {
            let gib = 1u64 << 30;
            let athena = Method::Athena;
            let epochs = |bits, method, estimate, memory| {
                finetune_epochs(Some(bits), method, estimate, memory).0
            };
            assert_eq!(epochs(2.25, athena, 8 * gib, Some(24 * gib)), 1);
            assert_eq!(epochs(2.25, athena, 12 * gib, Some(24 * gib)), 1);
            assert_eq!(epochs(2.25, athena, 12 * gib + 1, Some(24 * gib)), 0);
            assert_eq!(epochs(2.25, athena, 8 * gib, None), 0);
            assert_eq!(epochs(3.0, athena, 8 * gib, Some(24 * gib)), 0);
            assert_eq!(epochs(2.25, Method::Gptq, 8 * gib, Some(24 * gib)), 0);
            assert_eq!(
                finetune_epochs(None, athena, 8 * gib, Some(24 * gib)),
                (0, None)
            );
            // The note says which way and how to change it.
            let (_, on) = finetune_epochs(Some(2.0), athena, 8 * gib, Some(24 * gib));
            assert!(on.unwrap().contains("8.0 GiB of this machine's 24.0 GiB"));
            let (_, off) = finetune_epochs(Some(2.0), athena, 20 * gib, Some(24 * gib));
            assert!(off.unwrap().contains("--finetune-epochs 1 forces it"));
        }
    }
}
