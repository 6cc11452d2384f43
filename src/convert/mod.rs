//! The conversion driver behind `athena-convert --bits/--vq`: checkpoint -> calibration ->
//! plan -> sequential quantization -> extended GGUF file, with a report of what each layer cost.

pub mod finetune;
pub mod fisher;
pub mod recode;
pub mod report;
pub mod sequential;
pub mod tune;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;

use crate::calibration;
use crate::checkpoint::{HfFolder, TensorSource, Tokenizer};
use crate::container::athena;
use crate::container::gguf::Value;
use crate::container::model_file::ModelFileWriter;
use crate::export::{self, plain, PlainType, TokenizerFiles};
use crate::model::{LinearKind, Model};
use crate::quantizer::plan::{self, LayerInfo};
use crate::quantizer::{rotation, CodebookKind, GroupOrder, VqConfig};

pub use finetune::{FinetuneOptions, FinetuneOutcome};
pub use sequential::{BlockTensor, BlockTuning, LayerOutcome, Step};
pub use tune::TuneOptions;

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

/// Everything a conversion needs.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    pub model: PathBuf,
    pub out: PathBuf,
    /// Average bits per weight of the quantized linear weights (APTQ plan).
    pub bits: Option<f64>,
    /// Explicit (d, n, R, C) for every layer.
    pub vq: Option<[usize; 4]>,
    pub method: Method,
    pub codebook: CodebookKind,
    pub lowrank: LowRankChoice,
    pub tiles: TileLayout,
    /// Which (d, n) levels the --bits plan may use.
    pub levels: plan::LevelLimits,
    pub sensitivity: Sensitivity,
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
    /// Per-row f16 scales (encoding version 3) for the vector-quantized methods.
    pub row_scales: bool,
    /// Ablation switches of the Athena method (all on by default).
    pub hessian_metric: bool,
    pub error_feedback: bool,
    pub codebook_update: bool,
    /// BoA: v_proj under per-kv-head attention-aware Hessians (Athena method only).
    pub attention_hessians: bool,
    /// BoA: q_proj and k_proj under the row Hessians of their scores (Athena method only).
    pub row_hessians: bool,
    /// Block-wise codebook tuning after each block is quantized (epochs 0: off).
    pub tune: TuneOptions,
    /// End-to-end tuning of every codebook and norm after the last block (epochs 0: off).
    pub finetune: FinetuneOptions,
    pub calib: PathBuf,
    pub calib_tokens: usize,
    pub seq_len: usize,
    pub seed: u64,
    /// Type of the token embedding (and an untied output matrix).
    pub embed_type: PlainType,
}

/// Errors of a conversion. Display is one line naming the file, layer or option.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{0}")]
    Options(String),
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Export(#[from] export::ExportError),
    #[error(transparent)]
    Sequential(#[from] sequential::SequentialError),
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    #[error(transparent)]
    Write(#[from] crate::container::model_file::WriteError),
}

/// One planned layer, as printed before quantization and stored in the report.
#[derive(Debug, Clone)]
pub struct PlannedLayer {
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    pub config: VqConfig,
    pub bpw: f64,
}

/// What a conversion produced.
#[derive(Debug, Clone)]
pub struct ConvertReport {
    pub plan: Vec<PlannedLayer>,
    pub layers: Vec<LayerOutcome>,
    /// Per block, when block-wise tuning ran.
    pub tuning: Vec<BlockTuning>,
    /// When end-to-end tuning ran.
    pub finetune: Option<FinetuneOutcome>,
    /// Weighted bpw of the quantized linear weights, from the stored bytes.
    pub linear_bpw: f64,
    pub file_bytes: u64,
    /// 8 * file bytes / all parameters of the model.
    pub file_bpw: f64,
    /// Building the plan (its sensitivity pass, if any).
    pub plan_seconds: f64,
    pub seconds: f64,
}

/// Progress events for the command-line front end.
pub enum Progress<'a> {
    Stage(&'a str),
    /// Sensitivity pass: `done` of `total` units (`unit`: "blocks" or "sequences").
    Sensitivity {
        done: usize,
        total: usize,
        unit: &'static str,
    },
    Plan(&'a [PlannedLayer]),
    /// Quantizing a layer of (or tuning) block `layer` of `layers`.
    Block {
        layer: usize,
        layers: usize,
        step: Step,
    },
}

fn apply_method(cfg: &mut VqConfig, opts: &ConvertOptions, cols: usize) {
    match opts.method {
        Method::Athena => {
            cfg.use_hessian_metric = opts.hessian_metric;
            cfg.error_feedback = opts.error_feedback;
            cfg.refine_codebooks = opts.codebook_update;
        }
        Method::Kmeans => {
            cfg.use_hessian_metric = false;
            cfg.error_feedback = false;
            cfg.refine_codebooks = false;
        }
        Method::Gptq | Method::Rtn => {
            cfg.uniform_grid = true;
            cfg.error_feedback = opts.method == Method::Gptq;
            cfg.use_hessian_metric = opts.method == Method::Gptq;
        }
    }
    cfg.codebook = opts.codebook;
    cfg.order = opts.order;
    cfg.kmeans_iters = opts.kmeans_iters;
    cfg.damp = opts.damp;
    cfg.rotation = rotation::block_size(cols, opts.rotation_block);
    cfg.rotation_if_better = opts.rotation_per_layer;
}

/// Whether the method's configurations get per-row scales (the --bits plan may still drop them
/// on a layer too narrow to pay for them).
fn row_scales(opts: &ConvertOptions) -> bool {
    opts.row_scales && matches!(opts.method, Method::Athena | Method::Kmeans)
}

fn rank_for(choice: LowRankChoice, rows: usize, cols: usize) -> usize {
    match choice {
        LowRankChoice::Off => 0,
        LowRankChoice::Rank(r) => r.min(rows.min(cols)),
        LowRankChoice::Auto => (rows.min(cols) / 100).max(1),
    }
}

/// Checks option combinations before any work starts.
fn check_options(opts: &ConvertOptions) -> Result<(), ConvertError> {
    let fail = |m: &str| Err(ConvertError::Options(m.to_string()));
    match (opts.bits, opts.vq) {
        (None, None) => {
            return fail("choose a size: --bits B (average bits per weight) or --vq d,n,R,C")
        }
        (Some(_), Some(_)) => return fail("--bits and --vq exclude each other"),
        (Some(b), None) if !(b.is_finite() && b > 0.0) => {
            return fail("--bits must be a positive number")
        }
        _ => {}
    }
    if !(opts.damp.is_finite() && opts.damp > 0.0 && opts.damp <= 1.0) {
        return fail(
            "--damp must be above 0 and at most 1 (a fraction of the Hessian's mean diagonal)",
        );
    }
    if opts.seq_len < 16 || opts.calib_tokens < opts.seq_len {
        return fail("--seq-len must be at least 16 and --calib-tokens at least one sequence");
    }
    if opts.finetune.tokens.is_some_and(|t| t < opts.seq_len) {
        return fail("--finetune-tokens must be at least one sequence (--seq-len)");
    }
    if matches!(opts.method, Method::Gptq | Method::Rtn) && opts.vq.is_some_and(|v| v[0] != 1) {
        return fail("the scalar baselines (gptq, rtn) need d = 1 in --vq");
    }
    Ok(())
}

/// The per-layer configurations, printed and recorded before quantization starts.
fn make_plan(
    opts: &ConvertOptions,
    model: &Model,
    source: &dyn TensorSource,
    sequences: &[Vec<u32>],
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Vec<PlannedLayer>, ConvertError> {
    let config = model.config().clone();
    let mut layers = Vec::new();
    for layer in 0..config.num_hidden_layers {
        for kind in LinearKind::ALL {
            let [rows, cols] = kind.shape(&config);
            layers.push(LayerInfo {
                name: format!("{}.weight", kind.hf_name(layer)),
                rows,
                cols,
                sensitivity: 0.0,
            });
        }
    }
    let finish = |l: &LayerInfo, mut cfg: VqConfig| -> Result<PlannedLayer, ConvertError> {
        apply_method(&mut cfg, opts, l.cols);
        cfg.validate(l.rows, l.cols).map_err(|e| {
            ConvertError::Options(format!("layer '{}' ({} x {}): {e}", l.name, l.rows, l.cols))
        })?;
        let bpw = plan::config_bpw(&cfg, l.rows, l.cols);
        Ok(PlannedLayer {
            name: l.name.clone(),
            rows: l.rows,
            cols: l.cols,
            config: cfg,
            bpw,
        })
    };
    let scalar = matches!(opts.method, Method::Gptq | Method::Rtn);
    match (opts.vq, opts.bits) {
        (Some([d, n, r, c]), _) => layers
            .iter()
            .map(|l| {
                finish(
                    l,
                    VqConfig {
                        rank: rank_for(opts.lowrank, l.rows, l.cols),
                        row_scales: row_scales(opts),
                        ..VqConfig::new(d, n, r, c)
                    },
                )
            })
            .collect(),
        (None, Some(bits)) if scalar => {
            // Scalar baselines: round(bits) index bits on a grid per row and 128 columns.
            let b = bits.round().clamp(1.0, 16.0) as u32;
            layers
                .iter()
                .map(|l| finish(l, VqConfig::new(1, 1 << b, 1, 128.min(l.cols))))
                .collect()
        }
        (None, Some(bits)) => {
            match opts.sensitivity {
                Sensitivity::Hessian => {
                    progress(Progress::Stage(
                        "measuring layer sensitivities (Hessian traces)",
                    ));
                    let total = config.num_hidden_layers;
                    let traces = sequential::hessian_traces(model, sequences, |done| {
                        progress(Progress::Sensitivity {
                            done,
                            total,
                            unit: "blocks",
                        })
                    })?;
                    for l in &mut layers {
                        l.sensitivity =
                            traces[&l.name] * weight_energy(source, &l.name)? / l.cols as f64;
                    }
                }
                Sensitivity::Fisher => {
                    progress(Progress::Stage(
                        "measuring layer sensitivities (Fisher traces)",
                    ));
                    let traces = fisher::fisher_traces(model, sequences, &mut |done, total| {
                        progress(Progress::Sensitivity {
                            done,
                            total,
                            unit: "sequences",
                        })
                    })?;
                    for l in &mut layers {
                        l.sensitivity = traces[&l.name] * weight_energy(source, &l.name)?
                            / (l.rows * l.cols) as f64;
                    }
                }
                Sensitivity::Relative => layers.iter_mut().for_each(|l| l.sensitivity = 1.0),
                Sensitivity::Uniform => layers
                    .iter_mut()
                    .for_each(|l| l.sensitivity = (l.rows * l.cols) as f64),
            }
            let chosen = plan::plan_with(&layers, bits, opts.levels, |l, d, n| {
                let mut cfg = match opts.tiles {
                    TileLayout::Wide => plan::menu_config(d, n, l.rows, l.cols, opts.codebook, 0),
                    TileLayout::Paper => VqConfig {
                        codebook: opts.codebook,
                        ..VqConfig::new(d, n, l.rows, d)
                    },
                };
                cfg.rank = rank_for(opts.lowrank, l.rows, l.cols);
                cfg.row_scales = row_scales(opts);
                apply_method(&mut cfg, opts, l.cols);
                cfg
            })?;
            layers
                .iter()
                .zip(chosen)
                .map(|(l, p)| finish(l, p.config))
                .collect()
        }
        (None, None) => unreachable!("checked by check_options"),
    }
}

/// ||W||_F^2 of a checkpoint weight.
fn weight_energy(source: &dyn TensorSource, name: &str) -> Result<f64, ConvertError> {
    let w = source.load(name)?;
    Ok(w.data.iter().map(|&x| (x as f64) * (x as f64)).sum())
}

/// Runs a whole conversion; see the module documentation.
pub fn convert(
    opts: &ConvertOptions,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<ConvertReport, ConvertError> {
    let started = Instant::now();
    check_options(opts)?;
    let source = HfFolder::open_validated(&opts.model)?;
    let tokenizer = Tokenizer::from_dir(&opts.model)?;
    let tokenizer_files = TokenizerFiles::read(&opts.model)?;
    let model = Model::new(&source, Device::Cpu)?;
    let config = source.config().clone();
    let name = opts
        .model
        .file_name()
        .map_or_else(|| "model".to_string(), |n| n.to_string_lossy().into_owned());
    let meta = export::metadata::model_metadata(
        &config,
        &tokenizer_files,
        &name,
        opts.embed_type.file_type(),
    )?;

    progress(Progress::Stage("tokenizing calibration text"));
    // One tokenization for both sets: the calibration sequences open the text, the end-to-end
    // tuning's start there too (more or fewer of them), its held-out ones follow both.
    let calib_count = opts.calib_tokens / opts.seq_len;
    let (tune_count, holdout, count_options) = match opts.finetune.epochs {
        0 => (0, 0, "--calib-tokens"),
        _ => (
            opts.finetune
                .tokens
                .map_or(calib_count, |t| t / opts.seq_len),
            opts.finetune.holdout,
            "--calib-tokens, --finetune-tokens, --finetune-holdout or --finetune-epochs",
        ),
    };
    let mut sequences = calibration::calibration_sequences(
        &opts.calib,
        &tokenizer,
        (calib_count.max(tune_count) + holdout) * opts.seq_len,
        opts.seq_len,
        count_options,
    )?;
    let mut finetune_sequences = sequences[..tune_count].to_vec();
    finetune_sequences.extend_from_slice(&sequences[sequences.len() - holdout..]);
    sequences.truncate(calib_count);
    let plan_started = Instant::now();
    let plan = make_plan(opts, &model, &source, &sequences, progress)?;
    let plan_seconds = plan_started.elapsed().as_secs_f64();
    progress(Progress::Plan(&plan));

    let mut writer = ModelFileWriter::create(&opts.out)?;
    for (key, value) in meta.keys {
        writer.add_metadata(key, value);
    }
    writer.add_metadata(
        "athena.converter.method",
        format!("{:?}", opts.method).to_lowercase(),
    );
    writer.add_metadata("athena.converter.seed", Value::U64(opts.seed));
    writer.add_metadata(
        "athena.converter.calibration_tokens",
        Value::U64((sequences.len() * opts.seq_len) as u64),
    );
    if let Some(bits) = opts.bits {
        writer.add_metadata("athena.converter.bits_budget", Value::F64(bits));
    }
    // The command line's default for it depends on the machine's memory.
    writer.add_metadata(
        "athena.converter.finetune_epochs",
        Value::U64(opts.finetune.epochs as u64),
    );

    // Everything that is not a quantized linear weight: embeddings, norms, biases, output.
    let planned: BTreeMap<String, VqConfig> = plan
        .iter()
        .map(|p| (p.name.clone(), p.config.clone()))
        .collect();
    // Block norms come from the sequential pass (block-wise tuning may change them).
    let mut block_norms: BTreeSet<String> = (0..config.num_hidden_layers)
        .flat_map(sequential::block_norm_names)
        .collect();
    if opts.finetune.epochs > 0 {
        block_norms.insert(sequential::FINAL_NORM_NAME.to_string());
    }
    let mut parameters = 0u64;
    let mut deferred = BTreeMap::new();
    for tp in export::plan_tensors(&source)? {
        parameters += tp.hf_shape.iter().product::<usize>() as u64;
        if planned.contains_key(&tp.hf_name) {
            continue;
        }
        if block_norms.contains(&tp.hf_name) {
            deferred.insert(tp.hf_name.clone(), tp);
            continue;
        }
        let data = export::to_gguf_layout(&tp, source.load(&tp.hf_name)?)?;
        write_plain(&mut writer, &tp, opts.embed_type, &data)?;
    }

    let layers_n = config.num_hidden_layers;
    let mut linear_bits = 0u64;
    let mut linear_weights = 0u64;
    let outcome = sequential::quantize_model(
        &model,
        &sequences,
        &finetune_sequences,
        &planned,
        opts.seed,
        opts.attention_hessians && opts.method == Method::Athena,
        opts.row_hessians && opts.method == Method::Athena,
        &opts.tune,
        &opts.finetune,
        |layer, step| {
            progress(Progress::Block {
                layer,
                layers: layers_n,
                step,
            })
        },
        |name, tensor| match tensor {
            BlockTensor::Quantized(q) => {
                let gguf = crate::checkpoint::names::hf_to_gguf(name)
                    .ok_or_else(|| format!("no GGUF name for {name}"))?;
                let encoded = athena::encode(&gguf, q);
                linear_bits += 8 * encoded.stored_bytes();
                linear_weights += (q.vq.rows * q.vq.cols) as u64;
                writer.add_weight(&encoded).map_err(|e| e.to_string())
            }
            BlockTensor::Norm(data) => {
                let tp = deferred
                    .get(name)
                    .ok_or_else(|| format!("{name} is not a tensor of the model"))?;
                let dense = crate::checkpoint::DenseTensor {
                    shape: tp.hf_shape.clone(),
                    data: data.to_vec(),
                };
                let data = export::to_gguf_layout(tp, dense).map_err(|e| e.to_string())?;
                write_plain(&mut writer, tp, opts.embed_type, &data).map_err(|e| e.to_string())
            }
        },
    )?;
    progress(Progress::Stage("writing the GGUF file"));
    let file_bytes = writer.finish()?;
    Ok(ConvertReport {
        plan,
        plan_seconds,
        layers: outcome.layers,
        tuning: outcome.tuning,
        finetune: outcome.finetune,
        linear_bpw: linear_bits as f64 / linear_weights.max(1) as f64,
        file_bytes,
        file_bpw: 8.0 * file_bytes as f64 / parameters.max(1) as f64,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Writes a tensor that is not Athena-quantized, in the type `plain::tensor_type` picks for it.
fn write_plain(
    writer: &mut ModelFileWriter,
    tp: &export::TensorPlan,
    embed_type: PlainType,
    data: &[f32],
) -> Result<(), ConvertError> {
    let ty = plain::tensor_type(embed_type, &tp.gguf_name, &tp.dims);
    let bytes = plain::encode(ty, data).map_err(|e| export::ExportError::Tensor {
        name: tp.hf_name.clone(),
        message: e.to_string(),
    })?;
    writer.add_tensor(&tp.gguf_name, &tp.dims, ty, &bytes)?;
    Ok(())
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
