//! Sequential (GPTQ-style) quantization of a whole model: block by block, each block's Hessians
//! are gathered on the outputs of the already-quantized blocks before it, its seven linear layers
//! are quantized, and the block is re-run with the quantized weights to feed the next one; the
//! output head and token embedding last, when the plan has them (`quantize_head`).
//! Memory: one block plus the calibration activations (all blocks with end-to-end tuning,
//! which needs every quantized layer at once).

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::Tensor;
use faer::Mat;
use rayon::prelude::*;

use super::budget::{EMBEDDING, LM_HEAD};
use super::tuning::{
    self, FinetuneBlock, FinetuneOptions, FinetuneOutcome, TuneLayer, TuneOptions,
};
use crate::calibration::{Accumulate, HessianObserver};
use crate::checkpoint::{names, Architecture};
use crate::export;
use crate::model::{Block, Head, LinearKind, Model, ModelError};
use crate::quantizer::hessian::HessianAccumulator;
use crate::quantizer::{
    layer_loss, quantize_linear_banded, quantize_linear_kronecker, Engine, QuantError,
    QuantizedLinear, VqConfig,
};

/// Errors of the sequential pass. Display is one line naming the layer.
#[derive(Debug, thiserror::Error)]
pub enum SequentialError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("layer '{layer}': {source}")]
    Quant {
        layer: String,
        #[source]
        source: QuantError,
    },
    #[error("layer '{layer}': {message}")]
    Layer { layer: String, message: String },
}

/// One quantized layer and what it cost.
#[derive(Debug, Clone)]
pub struct LayerOutcome {
    /// HF weight name, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub name: String,
    pub rows: usize,
    pub cols: usize,
    /// The configuration the layer ended with: the planned one, with `rotation` 0 where the
    /// unrotated codes measured better.
    pub config: VqConfig,
    pub relative_loss: f64,
    pub seconds: f64,
}

/// A tensor of a finished block, handed to the sink in block order.
pub enum BlockTensor<'a> {
    /// A quantized linear weight, rows in GGUF order.
    Quantized(&'a QuantizedLinear),
    /// An RMSNorm weight (tuned when block-wise tuning covers norms), HF layout.
    Norm(&'a [f32]),
}

/// The RMSNorm weights of block `layer`, under their HF names: quantize_model hands them to the
/// sink after the block, so the caller must not write them itself.
pub fn block_norm_names(arch: Architecture, layer: usize) -> [String; 2] {
    let mlp_norm = match arch.sandwich_norms() {
        true => "pre_feedforward_layernorm",
        false => "post_attention_layernorm",
    };
    [
        format!("model.layers.{layer}.input_layernorm.weight"),
        format!("model.layers.{layer}.{mlp_norm}.weight"),
    ]
}

/// The final RMSNorm weight: end-to-end tuning changes it, so quantize_model hands it to the
/// sink at the end when that tuning runs (and only then).
pub const FINAL_NORM_NAME: &str = "model.norm.weight";

/// What the sequential pass is doing in a block, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// A linear layer of the block is quantized (the block's layers run side by side, so
    /// they finish in any order).
    Quantized(LinearKind),
    Tune,
    /// The block is quantized (and tuned): the mean relative layer loss of its layers.
    Done {
        relative_loss: f64,
    },
    /// End-to-end tuning after the last block: Adam step `step` of `steps`.
    Finetune {
        step: usize,
        steps: usize,
    },
    /// After the blocks: quantizing the output head or token embedding (HF name).
    Head {
        weight: &'static str,
    },
}

/// Everything the sequential pass measured.
#[derive(Debug, Clone)]
pub struct SequentialOutcome {
    pub layers: Vec<LayerOutcome>,
    /// Per block, when block-wise tuning ran.
    pub tuning: Vec<BlockTuning>,
    /// When end-to-end tuning ran.
    pub finetune: Option<FinetuneOutcome>,
}

/// One block's tuning: the relative block-output error (mean squared error over the mean
/// square of the target) before and after, on the calibration sequences.
#[derive(Debug, Clone)]
pub struct BlockTuning {
    pub layer: usize,
    pub before: f64,
    pub after: f64,
    pub seconds: f64,
}

/// A row Hessian of q_proj or k_proj in the GGUF row order the weight is quantized in (the
/// same permutation on its rows and its columns).
fn permute_square(m: &Mat<f64>, n_head: usize) -> Result<Mat<f64>, String> {
    let n = m.nrows();
    let labels: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let order = names::permute_qk(&labels, n, 1, n_head).map_err(|e| e.to_string())?;
    Ok(Mat::from_fn(n, n, |i, j| {
        m[(order[i] as usize, order[j] as usize)]
    }))
}

/// The token sequences of the sequential pass.
pub struct CalibrationSets {
    /// The Hessians' (and block-wise tuning's).
    pub hessians: Vec<Vec<u32>>,
    /// End-to-end tuning's, its held-out ones last.
    pub end_to_end: Vec<Vec<u32>>,
}

/// How the sequential pass quantizes and tunes.
pub struct SequentialOptions<'a> {
    /// Each linear weight's configuration, by HF name.
    pub plan: &'a BTreeMap<String, VqConfig>,
    pub seed: u64,
    /// BoA: v_proj per kv head under attention-aware Hessians instead of the plain input
    /// Hessian it shares with q/k.
    pub attention_hessians: bool,
    /// BoA: q_proj and k_proj also under the row Hessians of their scores
    /// (`calibration::attention_rows`).
    pub row_hessians: bool,
    pub tune: &'a TuneOptions,
    pub finetune: &'a FinetuneOptions,
    /// Where each layer's column loop runs.
    pub engine: &'a Engine,
}

impl SequentialOptions<'_> {
    /// The planned configuration of weight `name`, run on the chosen engine.
    fn config(&self, name: &str) -> Option<VqConfig> {
        let planned = self.plan.get(name)?;
        Some(VqConfig {
            engine: self.engine.clone(),
            ..planned.clone()
        })
    }
}

/// Quantizes every linear layer of `model` with the configuration the plan gives its weight
/// name, handing each result (in GGUF row order) and then the block's norm weights to `sink`.
/// `progress(layer, step)` is called per layer and before a block's tuning.
/// With `tune.epochs > 0`, each block's codebooks are then tuned on the block output
/// (`tuning::block`) before the block is written.
/// With `finetune.epochs > 0`, the blocks are kept until the last one is quantized, every
/// codebook and norm is tuned end to end (`tuning::end_to_end`) on `sets.end_to_end` (the last
/// `finetune.holdout` of them held out), and then all are written, followed by the final norm
/// ([`FINAL_NORM_NAME`]).
pub fn quantize_model(
    model: &Model,
    sets: &CalibrationSets,
    opts: &SequentialOptions<'_>,
    mut progress: impl FnMut(usize, Step),
    mut sink: impl FnMut(&str, BlockTensor<'_>) -> Result<(), String>,
) -> Result<SequentialOutcome, SequentialError> {
    let mut outcome = SequentialOutcome {
        layers: Vec::new(),
        tuning: Vec::new(),
        finetune: None,
    };
    let mut hidden = model.embed(&sets.hessians)?;
    let finetuning = opts.finetune.epochs > 0;
    // End-to-end tuning's target: the unquantized model's last hidden states.
    let mut teacher = match finetuning {
        true => Some(model.embed(&sets.end_to_end)?),
        false => None,
    };
    let mut pending = Vec::new();
    for layer in 0..model.config().num_hidden_layers {
        let mut block = model.load_block(layer)?;
        if let Some(t) = teacher.as_mut() {
            *t = model.run_block(&block, t, None)?;
        }
        let (mut done, tuning) =
            quantize_block(model, &mut block, layer, &hidden, opts, &mut progress)?;
        outcome.tuning.extend(tuning);
        hidden = model.run_block(&block, &hidden, None)?;
        // The layer losses are final here, also ahead of end-to-end tuning (which optimizes the
        // model's output, not the layers'): keeping every layer's original weight and Hessians
        // through it cost 1.2 GB of the peak for SmolLM2-135M, and the Hessians grow with the
        // square of the width.
        for d in &mut done {
            d.settle_relative_loss();
        }
        let relative_loss =
            done.iter().map(|d| d.q.relative_loss).sum::<f64>() / done.len().max(1) as f64;
        progress(layer, Step::Done { relative_loss });
        if finetuning {
            pending.push((block, done));
        } else {
            write_block(
                model.config().architecture,
                layer,
                &block,
                done,
                &mut outcome.layers,
                &mut sink,
            )?;
        }
        release_freed_memory();
    }
    let head = match teacher {
        Some(teacher) => {
            let (finetuned, head) = finetune_and_write(
                model,
                pending,
                &sets.end_to_end,
                &teacher,
                opts.finetune,
                &mut progress,
                &mut outcome.layers,
                &mut sink,
            )?;
            outcome.finetune = Some(finetuned);
            head
        }
        None => model.load_head()?,
    };
    let last = model.config().num_hidden_layers.saturating_sub(1);
    for weight in [LM_HEAD, EMBEDDING] {
        if opts.plan.contains_key(weight) {
            progress(last, Step::Head { weight });
            let started = Instant::now();
            let q = quantize_head(model, weight, &head, &hidden, opts)?;
            let seconds = started.elapsed().as_secs_f64();
            write_outcome(weight.into(), &q, seconds, &mut outcome.layers, &mut sink)?;
        }
    }
    Ok(outcome)
}

/// Quantizes the output head or the token embedding table (`--embeddings athena`). The head
/// (the table itself when embeddings are tied: one weight serves lookups and logits) is
/// quantized under the Hessian of its inputs, the final normed hidden states of the quantized
/// model on the calibration sequences (with end-to-end tuning, those before it, normed by the
/// tuned final norm). An untied table, which only lookups read, is quantized under the identity
/// (plain squared error). Every row counts alike: weighting the codebook fit by how often the
/// calibration text uses each token measured worse on SmolLM2-135M (docs/CHANGELOG.md,
/// 2026-12-07).
fn quantize_head(
    model: &Model,
    name: &'static str,
    head: &Head,
    hidden: &[Tensor],
    opts: &SequentialOptions<'_>,
) -> Result<QuantizedLinear, SequentialError> {
    let err = |message: String| SequentialError::Layer {
        layer: name.to_string(),
        message,
    };
    let cfg = &opts
        .config(name)
        .ok_or_else(|| err("no configuration planned".into()))?;
    let weight = model.source().load(name).map_err(|e| err(e.to_string()))?;
    let [rows, cols] = weight.shape[..] else {
        return Err(err(format!("shape {:?} is not a matrix", weight.shape)));
    };
    let reads_head_input = name == LM_HEAD || model.config().tie_word_embeddings;
    let h = match reads_head_input {
        true => {
            let mut acc = HessianAccumulator::new(cols);
            for x in hidden {
                let x = head.input(x).map_err(ModelError::from)?;
                let tokens = x.dims2().map_err(ModelError::from)?.0;
                let values: Vec<f32> = x
                    .flatten_all()
                    .and_then(|t| t.to_vec1())
                    .map_err(ModelError::from)?;
                acc.add(&values, tokens);
            }
            acc.finish()
        }
        false => Mat::identity(cols, cols),
    };
    let seed = opts.seed ^ fnv1a(name.as_bytes());
    let hs = std::slice::from_ref(&h);
    quantize_linear_banded(&weight.data, rows, cols, hs, cfg, seed).map_err(|source| {
        SequentialError::Quant {
            layer: name.to_string(),
            source,
        }
    })
}

/// Quantizes block `layer`'s linear layers under the Hessians of `hidden` (its inputs, from the
/// quantized blocks before it), puts their reconstructions into `block`, and tunes the block
/// when asked.
fn quantize_block(
    model: &Model,
    block: &mut Block,
    layer: usize,
    hidden: &[Tensor],
    opts: &SequentialOptions<'_>,
    progress: &mut impl FnMut(usize, Step),
) -> Result<(Vec<Done>, Option<BlockTuning>), SequentialError> {
    let mut observer = HessianObserver::new(Accumulate::Hessian);
    if opts.attention_hessians {
        observer = observer.with_value_heads();
    }
    // BoA's row Hessians of q/k model the scores as (R W_q x)^T (R W_k x) with R the RoPE
    // rotation of the whole head; a q/k norm between the product and RoPE (qwen3, gemma3) or a
    // partly rotated head (phi3) breaks that form, so those layers keep the column Hessian.
    let c = model.config();
    if opts.row_hessians && !c.architecture.qk_norm() && c.rotary_dim == c.head_dim {
        observer = observer.with_attention_rows();
    }
    // The unquantized block's outputs on the quantized model's inputs: the tuning target,
    // kept only when tuning. (Tuning towards the unquantized model's own hidden states,
    // which would also pay back earlier blocks' error, measured worse: 19.05 vs 18.80,
    // docs/CHANGELOG.md.)
    let outputs = model.run_block(block, hidden, Some(&mut observer))?;
    let targets = (opts.tune.epochs > 0).then_some(outputs);
    // The layers share the block's Hessians and nothing else, so they are quantized side by
    // side: each one's GPTQ column loop is sequential over its groups, and where a group's rows
    // cannot keep every core busy the other layers can (on two cores it measured the same,
    // docs/benchmarks.md). The calling thread reports each layer as it finishes.
    let (finished, reports) = std::sync::mpsc::channel();
    let mut done: Vec<Done> = std::thread::scope(|scope| {
        let (block, observer) = (&*block, &observer);
        let worker = scope.spawn(move || {
            LinearKind::ALL
                .par_iter()
                .map(|&kind| {
                    let d = quantize_layer(model, block, layer, kind, observer, opts);
                    finished.send(kind).ok();
                    d
                })
                .collect::<Result<Vec<_>, _>>()
        });
        for kind in reports {
            progress(layer, Step::Quantized(kind));
        }
        worker
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })?;
    for d in &done {
        block
            .set_stored_weight(d.kind, &d.q.dequantized, d.perm)
            .map_err(|e| SequentialError::Layer {
                layer: d.name.clone(),
                message: e.to_string(),
            })?;
    }
    drop(observer);
    let Some(targets) = targets else {
        return Ok((done, None));
    };
    let mut layers: Vec<TuneLayer<'_>> = done.iter_mut().map(Done::tune_layer).collect();
    progress(layer, Step::Tune);
    let started = Instant::now();
    let o = tuning::tune_block(model, block, &mut layers, hidden, &targets, opts.tune)?;
    drop(layers);
    let tuning = BlockTuning {
        layer,
        before: o.before,
        after: o.after,
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((done, Some(tuning)))
}

/// Quantizes one linear layer of `block` (in GGUF row order) under the Hessians `observer`
/// gathered; the caller puts its reconstruction into the block.
fn quantize_layer(
    model: &Model,
    block: &Block,
    layer: usize,
    kind: LinearKind,
    observer: &HessianObserver,
    opts: &SequentialOptions<'_>,
) -> Result<Done, SequentialError> {
    let config = model.config();
    let started = Instant::now();
    let module = kind.hf_name(layer);
    let name = format!("{module}.weight");
    let err = |message: String| SequentialError::Layer {
        layer: name.clone(),
        message,
    };
    let cfg = &opts
        .config(&name)
        .ok_or_else(|| err("no configuration planned".into()))?;
    let weight = &block.linear(kind).weight;
    let (rows, cols) = weight.dims2().map_err(ModelError::from)?;
    let mut w: Vec<f32> = weight
        .flatten_all()
        .and_then(|t| t.to_vec1())
        .map_err(ModelError::from)?;
    // Athena weights are quantized and stored in the GGUF row order (llama's q/k rows
    // permuted), so a codebook tile groups the rows a runtime reads together.
    let perm = export::plan_tensor(config, &name, &[rows, cols])
        .map_err(|e| err(e.to_string()))?
        .qk_heads;
    if let Some(n_head) = perm {
        w = names::permute_qk(&w, rows, cols, n_head).map_err(|e| err(e.to_string()))?;
    }
    let hs: Vec<_> = match observer.value_head_hessians(&module) {
        [] => vec![observer
            .hessian(&module)
            .ok_or_else(|| err("no calibration input reached this layer".into()))?
            .finish()],
        heads => heads.iter().map(|h| h.finish()).collect(),
    };
    let layer_seed = opts.seed ^ fnv1a(name.as_bytes());
    let row_h = observer.attention_rows(layer).and_then(|a| match kind {
        LinearKind::Q => Some(a.query_rows(config.num_attention_heads)),
        LinearKind::K => Some(a.key_rows()),
        _ => None,
    });
    let q = match row_h {
        Some(rh) => {
            let rh = match perm {
                Some(n_head) => permute_square(&rh, n_head).map_err(&err)?,
                None => rh,
            };
            quantize_linear_kronecker(&w, rows, cols, &hs[0], &rh, cfg, layer_seed)
        }
        None => quantize_linear_banded(&w, rows, cols, &hs, cfg, layer_seed),
    }
    .map_err(|source| SequentialError::Quant {
        layer: name.clone(),
        source,
    })?;
    Ok(Done {
        kind,
        tuned_from: (opts.tune.epochs > 0).then_some((w, hs)),
        perm,
        q,
        seconds: started.elapsed().as_secs_f64(),
        name,
    })
}

/// Tunes every kept block end to end, then writes them all and the final norm; returns the
/// tuned head.
#[allow(clippy::too_many_arguments)]
fn finetune_and_write(
    model: &Model,
    pending: Vec<(Block, Vec<Done>)>,
    sequences: &[Vec<u32>],
    teacher: &[Tensor],
    opts: &FinetuneOptions,
    progress: &mut impl FnMut(usize, Step),
    outcomes: &mut Vec<LayerOutcome>,
    sink: &mut impl FnMut(&str, BlockTensor<'_>) -> Result<(), String>,
) -> Result<(FinetuneOutcome, Head), SequentialError> {
    let last = model.config().num_hidden_layers.saturating_sub(1);
    let mut head = model.load_head()?;
    let (mut blocks, mut dones): (Vec<Block>, Vec<Vec<Done>>) = pending.into_iter().unzip();
    let mut parts: Vec<FinetuneBlock<'_>> = blocks
        .iter_mut()
        .zip(dones.iter_mut())
        .map(|(block, done)| FinetuneBlock {
            block,
            layers: done.iter_mut().map(Done::tune_layer).collect(),
        })
        .collect();
    let inputs = model.embed(sequences)?;
    let finetuned = tuning::end_to_end::finetune_model(
        model,
        &mut parts,
        &mut head,
        &inputs,
        teacher,
        opts,
        &mut |step, steps| progress(last, Step::Finetune { step, steps }),
    )?;
    drop(parts);
    for (layer, (block, done)) in blocks.iter().zip(dones).enumerate() {
        write_block(
            model.config().architecture,
            layer,
            block,
            done,
            outcomes,
            sink,
        )?;
    }
    let data: Vec<f32> = head.norm.to_vec1().map_err(ModelError::from)?;
    sink(FINAL_NORM_NAME, BlockTensor::Norm(&data)).map_err(|message| SequentialError::Layer {
        layer: FINAL_NORM_NAME.into(),
        message,
    })?;
    Ok((finetuned, head))
}

/// Hands a finished block's quantized layers and norms to the sink and records the layers'
/// outcomes.
fn write_block(
    arch: Architecture,
    layer: usize,
    block: &Block,
    done: Vec<Done>,
    outcomes: &mut Vec<LayerOutcome>,
    sink: &mut impl FnMut(&str, BlockTensor<'_>) -> Result<(), String>,
) -> Result<(), SequentialError> {
    for l in done {
        write_outcome(l.name, &l.q, l.seconds, outcomes, sink)?;
    }
    let [input_norm, mlp_norm] = block_norm_names(arch, layer);
    for (name, weight) in [
        (input_norm, &block.input_layernorm),
        (mlp_norm, &block.mlp_norm),
    ] {
        let data: Vec<f32> = weight.to_vec1().map_err(ModelError::from)?;
        sink(&name, BlockTensor::Norm(&data)).map_err(|message| SequentialError::Layer {
            layer: name,
            message,
        })?;
    }
    Ok(())
}

/// Hands a quantized layer to the sink and records its outcome.
fn write_outcome(
    name: String,
    q: &QuantizedLinear,
    seconds: f64,
    outcomes: &mut Vec<LayerOutcome>,
    sink: &mut impl FnMut(&str, BlockTensor<'_>) -> Result<(), String>,
) -> Result<(), SequentialError> {
    sink(&name, BlockTensor::Quantized(q)).map_err(|message| SequentialError::Layer {
        layer: name.clone(),
        message,
    })?;
    outcomes.push(LayerOutcome {
        relative_loss: q.relative_loss,
        config: q.config.clone(),
        name,
        rows: q.vq.rows,
        cols: q.vq.cols,
        seconds,
    });
    Ok(())
}

/// A quantized layer of the current block, kept until the block is tuned and written.
struct Done {
    kind: LinearKind,
    name: String,
    /// With tuning on, the original weight (stored row order) and the Hessians, to measure the
    /// relative loss of the tuned reconstruction (`settle_relative_loss`).
    tuned_from: Option<(Vec<f32>, Vec<faer::Mat<f64>>)>,
    perm: Option<usize>,
    q: QuantizedLinear,
    seconds: f64,
}

impl Done {
    /// Measures the tuned reconstruction's relative loss (tuning optimizes the block output,
    /// so it may rise or fall) and drops the original weight and Hessians.
    fn settle_relative_loss(&mut self) {
        if let Some((w, hs)) = self.tuned_from.take() {
            let q = &mut self.q;
            q.relative_loss = layer_loss(&w, &q.dequantized, q.vq.rows, q.vq.cols, &hs, &q.config);
        }
    }

    fn tune_layer(&mut self) -> TuneLayer<'_> {
        TuneLayer {
            kind: self.kind,
            quantized: &mut self.q,
            qk_heads: self.perm,
        }
    }
}

/// FNV-1a: a stable per-layer seed offset (std's hashers are not stable across releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Returns the free pages of every malloc arena to the system; glibc's free() only gives back
/// the top of an arena. SmolLM2-135M at --bits 5.5 --calib-tokens 32768 --kmeans-iters 2 peaked
/// at 1560 MiB without this and 784 MiB with it (same file); the excess grew with the
/// calibration tokens, not the k-means iterations, so it is most likely each block's freed
/// calibration activations held between small allocations that live on (not traced further).
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
