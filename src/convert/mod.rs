//! The conversion driver behind `athena-convert --bits/--vq`, top-down: the options are checked
//! (`options`), the checkpoint opened, the calibration text tokenized, the per-layer
//! configurations planned (`plan`, by the layers' `sensitivity` or `fisher` traces), the output
//! opened with every plain tensor (`output`), then the sequential pass (`sequential`) quantizes
//! block by block, tuning below it (`tuning`), and hands each finished tensor to the output;
//! `report` renders the plan and the outcome.

pub mod budget;
pub mod error;
pub mod fisher;
pub mod options;
pub mod output;
pub mod paths;
pub mod plan;
pub mod report;
pub mod sensitivity;
pub mod sequential;
pub mod tuning;

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::calibration;
use crate::checkpoint::{HfFolder, TensorSource, Tokenizer};
use crate::export::{self, TokenizerFiles};
use crate::model::Model;
use crate::quantizer::VqConfig;

pub use error::ConvertError;
pub use options::{
    defaults, Ablations, CalibrationOptions, ComputeDevice, ConvertOptions, Embeddings,
    LowRankChoice, Method, QuantizerOptions, Sensitivity, SizeOptions, TileLayout,
};
pub use output::OutputFile;
pub use plan::PlannedLayer;
pub use report::{ConvertReport, Progress};
pub use sensitivity::SensitivityProgress;
pub use sequential::{BlockTensor, BlockTuning, CalibrationSets, LayerOutcome, Step};
pub use tuning::{FinetuneOptions, FinetuneOutcome, TuneOptions};

/// Runs a whole conversion; see the module documentation.
pub fn convert(
    opts: &ConvertOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<ConvertReport, ConvertError> {
    let started = Instant::now();
    opts.check()?;
    let (device, engine) = opts.device.open().map_err(ConvertError::Options)?;
    let source = HfFolder::open_validated(&opts.model)?;
    // Before any block runs: a NaN or an infinity would otherwise surface as a failed
    // Cholesky on whatever layer it reaches first.
    source.check_finite()?;
    let tokenizer = Tokenizer::from_dir(&opts.model)?;
    let model = Model::new(&source, device)?;
    let config = source.config().clone();
    let meta = llama_cpp_metadata(opts, &config)?;

    progress(Progress::Stage("tokenizing calibration text"));
    let sets = calibration_sets(opts, &tokenizer)?;
    let plan_started = Instant::now();
    let plan = plan::make_plan(opts, &model, &source, &sets.hessians, &mut |p| match p {
        SensitivityProgress::Stage(s) => progress(Progress::Stage(s)),
        SensitivityProgress::Pass { done, total, unit } => {
            progress(Progress::Sensitivity { done, total, unit })
        }
    })?;
    let plan_seconds = plan_started.elapsed().as_secs_f64();
    progress(Progress::Plan(&plan));

    let calibration_tokens = sets.hessians.len() * opts.calibration.seq_len;
    let mut out = OutputFile::create(opts, meta, calibration_tokens)?;
    let planned: std::collections::BTreeMap<String, VqConfig> = plan
        .iter()
        .map(|p| (p.name.clone(), p.config.clone()))
        .collect();
    let layers = config.num_hidden_layers;
    out.write_plain_tensors(&source, &planned, layers, opts.finetune.epochs > 0)?;
    let sequential_opts = sequential::SequentialOptions {
        plan: &planned,
        seed: opts.quantizer.seed,
        attention_hessians: opts.attention_hessians(),
        row_hessians: opts.qk_row_hessians(),
        tune: &opts.tune,
        finetune: &opts.finetune,
        engine: &engine,
    };
    let outcome = sequential::quantize_model(
        &model,
        &sets,
        &sequential_opts,
        |layer, step| {
            progress(Progress::Block {
                layer,
                layers,
                step,
            })
        },
        |name, tensor| out.add(name, tensor),
    )?;
    progress(Progress::Stage("writing the GGUF file"));
    let written = out.finish()?;
    Ok(ConvertReport {
        plan,
        plan_seconds,
        layers: outcome.layers,
        tuning: outcome.tuning,
        finetune: outcome.finetune,
        linear_bpw: written.linear_bpw,
        athena_bpw: written.athena_bpw,
        file_bytes: written.file_bytes,
        tensor_bpw: written.tensor_bpw,
        file_bpw: written.file_bpw,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// llama.cpp's metadata keys for the model (hyperparameters, tokenizer, general.name from the
/// folder's name).
fn llama_cpp_metadata(
    opts: &ConvertOptions,
    config: &crate::checkpoint::ModelConfig,
) -> Result<Vec<(String, crate::container::gguf::Value)>, ConvertError> {
    let tokenizer_files = TokenizerFiles::read(&opts.model)?;
    let name = opts
        .model
        .file_name()
        .map_or_else(|| "model".to_string(), |n| n.to_string_lossy().into_owned());
    let meta = export::metadata::model_metadata(
        config,
        &tokenizer_files,
        &name,
        opts.size.embeddings.plain_or_default().file_type(),
    )?;
    Ok(meta.keys)
}

/// One tokenization for both sets: the calibration sequences open the text, the end-to-end
/// tuning's start there too (more or fewer of them), its held-out ones follow both.
fn calibration_sets(
    opts: &ConvertOptions,
    tokenizer: &Tokenizer,
) -> Result<CalibrationSets, ConvertError> {
    let calib = &opts.calibration;
    let calib_count = calib.tokens / calib.seq_len;
    let (tune_count, holdout, count_options) = match opts.finetune.epochs {
        0 => (0, 0, "--calib-tokens"),
        _ => (
            opts.finetune
                .tokens
                .map_or(calib_count, |t| t / calib.seq_len),
            opts.finetune.holdout,
            "--calib-tokens, --finetune-tokens, --finetune-holdout or --finetune-epochs",
        ),
    };
    let mut hessians = calibration::calibration_sequences(
        &calib.text,
        tokenizer,
        (calib_count.max(tune_count) + holdout) * calib.seq_len,
        calib.seq_len,
        count_options,
    )?;
    let mut end_to_end = hessians[..tune_count].to_vec();
    end_to_end.extend_from_slice(&hessians[hessians.len() - holdout..]);
    hessians.truncate(calib_count);
    Ok(CalibrationSets {
        hessians,
        end_to_end,
    })
}

/// The default calibration text: the C4 sample that `tools/fetch-models.sh` puts in the cache.
pub fn default_calibration_text() -> PathBuf {
    cache_dir().join("text/c4.utf8")
}

/// `$ATHENA_CACHE`, else `~/.cache/athena` (where tools/fetch-models.sh puts models and texts).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("ATHENA_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(".").to_path_buf());
            home.join(".cache/athena")
        })
}
