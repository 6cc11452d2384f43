//! The option groups of the two tunings after quantization, mapping onto
//! `athena::convert::tuning`'s options (their defaults depend on the budget and the machine).

use std::path::Path;

use athena::checkpoint::ModelConfig;
use athena::convert::{self, defaults, FinetuneOptions, Method, TuneOptions};

use super::quantize::{at_least, parse_fraction, parse_positive};

/// Tuning each block's codebooks after it is quantized.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Athena quantization: block-wise tuning")]
pub struct TuneArgs {
    /// Block-wise tuning: after each block is quantized, its codebook values (and row scales)
    /// are tuned with Adam for this many passes over the calibration sequences so the block's
    /// output matches the unquantized block's (indices fixed; 0 turns it off). Default: 1 for --bits below 3 (with
    /// --method athena), else 0. Measured with 1 epoch on SmolLM2-135M: --bits 2.25 33.39 -> 30.45 and 32.25 -> 29.80
    /// perplexity (two runs), --bits 3 17.78 -> 17.71; each epoch adds ~14 s per block.
    #[arg(long, value_name = "N")]
    pub tune_epochs: Option<usize>,

    /// Adam learning rate of the block-wise tuning (in weight units; of 1e-4, 1e-3 and 3e-3,
    /// 1e-3 measured best). Codebooks of rotated layers (block B) tune at this rate / sqrt(B),
    /// so a step moves one input channel's weights as far as it does without the rotation.
    #[arg(long, default_value_t = 1e-3, value_parser = parse_positive)]
    pub tune_lr: f64,

    /// Calibration sequences per Adam step of the block-wise tuning.
    #[arg(long, default_value_t = 4, value_parser = at_least(1))]
    pub tune_batch: usize,

    /// Block-wise tuning also tunes the block's two RMSNorm weights (measured no better than
    /// codebooks alone: 18.92 vs 18.80 at --bits 3 --calib-tokens 8192).
    #[arg(long)]
    pub tune_norms: bool,
}

/// Tuning every codebook against the unquantized model's outputs after the last block.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Athena quantization: end-to-end tuning")]
pub struct FinetuneArgs {
    /// End-to-end tuning: after the last block is quantized, every codebook (indices fixed),
    /// every row scale and every RMSNorm weight is tuned with Adam for this many passes over
    /// the calibration sequences so the quantized model's next-token distribution matches the
    /// unquantized model's (KL divergence; 0 turns it off). The loss sees the codebooks and
    /// scales as the file stores them (int8, f16), gradients pass straight through the
    /// rounding. Measured on SmolLM2-135M with 1 epoch: --bits 2.25 27.90 -> 23.84 and --bits 3
    /// 17.25 -> 16.38 perplexity. Each step runs every sequence forward twice and backward
    /// once, one block's graph at a time; one epoch takes about as long as the quantization (13
    /// minutes at --bits 3) and the peak rises from about 1 GB to 5 GB (SmolLM2-135M at
    /// --bits 2.25; it grows with the model's size). Default: 1 below 3 bits (with --method
    /// athena) when the estimated peak fits in half of this machine's memory (the converter
    /// says which), else 0; pass a number for the same file on every machine.
    #[arg(long, value_name = "N")]
    pub finetune_epochs: Option<usize>,

    /// Adam learning rate of the end-to-end tuning (in weight units; only 1e-3 was measured on
    /// the real model). Codebooks of rotated layers (block B) tune at this rate / sqrt(B).
    #[arg(long, default_value_t = 1e-3, value_parser = parse_positive)]
    pub finetune_lr: f64,

    /// Calibration sequences per Adam step of the end-to-end tuning.
    #[arg(long, default_value_t = 4, value_parser = at_least(1))]
    pub finetune_batch: usize,

    /// End-to-end tuning also changes codes (PV-tuning's discrete step): after every Adam step
    /// from the third on, up to this fraction of each layer's vectors move to the neighbouring
    /// centroid predicted to lower the KL divergence most (0: indices fixed). On SmolLM2-135M at
    /// --bits 3, 0.01 with step 0.01 made the KL worse (the run was undone): experimental.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0, value_parser = parse_fraction)]
    pub finetune_codes: f64,

    /// Step length of the discrete step, in weight units: a vector moves to a neighbouring
    /// centroid only where Adam's quadratic model of the loss for a step this long predicts a
    /// decrease (longer: more moves).
    #[arg(long, value_name = "STEP", default_value_t = 1e-2, value_parser = parse_positive)]
    pub finetune_code_step: f64,

    /// Calibration tokens the end-to-end tuning runs on, from the start of the --calib text
    /// (more than --calib-tokens: the calibration sequences and the ones after them)
    /// [default: --calib-tokens, the calibration sequences themselves].
    #[arg(long, value_name = "N")]
    pub finetune_tokens: Option<usize>,

    /// Sequences (of --seq-len) that the end-to-end tuning holds out: taken from the --calib
    /// text after every calibration and tuning sequence, never tuned on. Their KL divergence is
    /// measured after every epoch; the epoch with the lowest is kept, and none when the untuned
    /// model's is lower. 0: judge on the tuning sequences and keep the last epoch.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub finetune_holdout: usize,
}

impl TuneArgs {
    pub(super) fn options(&self, bits: Option<f64>, method: Method) -> TuneOptions {
        TuneOptions {
            epochs: self
                .tune_epochs
                .unwrap_or(defaults::tune_epochs(bits, method)),
            learning_rate: self.tune_lr,
            batch: self.tune_batch,
            norms: self.tune_norms,
        }
    }
}

impl FinetuneArgs {
    /// The epochs default to what this machine's memory allows (`defaults::finetune_epochs`);
    /// a note on stderr says how they were chosen (unless `quiet`).
    pub(super) fn options(
        &self,
        model: &Path,
        bits: Option<f64>,
        method: Method,
        quiet: bool,
    ) -> FinetuneOptions {
        let epochs = self.finetune_epochs.unwrap_or_else(|| {
            // An unreadable config.json is reported by the conversion itself.
            let Ok(config) = ModelConfig::from_hf_json(&model.join("config.json")) else {
                return 0;
            };
            let workers = candle_core::utils::get_num_threads().min(self.finetune_batch);
            let estimate = convert::tuning::end_to_end::estimated_peak_bytes(&config, workers);
            let memory = defaults::machine_memory_bytes();
            let (epochs, note) = defaults::finetune_epochs(bits, method, estimate, memory);
            if let (Some(note), false) = (note, quiet) {
                eprintln!("{note}");
            }
            epochs
        });
        FinetuneOptions {
            epochs,
            learning_rate: self.finetune_lr,
            batch: self.finetune_batch,
            code_fraction: self.finetune_codes,
            code_step: self.finetune_code_step,
            tokens: self.finetune_tokens,
            holdout: self.finetune_holdout,
        }
    }
}
