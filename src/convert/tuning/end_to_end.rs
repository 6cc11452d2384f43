//! End-to-end tuning after the last block is quantized (AQLM's global fine-tuning, with
//! Norm-Tweaking's observation that RMSNorm weights are worth tuning at low bit rates): the
//! codebook values of every layer (indices fixed) and every RMSNorm weight are tuned with Adam so
//! that the quantized model's next-token distribution matches the unquantized model's, i.e. the
//! KL divergence on the calibration sequences. The block-wise step (`block`) matches one block's
//! output, an MSE dominated by a few massive-activation channels; this objective is the one
//! perplexity measures, and it can pay back errors that earlier blocks passed on.
//! The per-row scales are tuned with the codebooks. Codebooks and scales are stored (int8 or
//! f16, f16) again afterwards and the norms as f32, so the file format does not change.

use std::time::Instant;

use candle_core::{backprop::GradStore, DType, Tensor, Var, D};

use super::parallel::{accumulate, per_thread, summed_per_thread};
use super::recode::{recode_layer, Moments, RECODE_WARMUP};
use super::weight::{CodebookWeight, GroupedAdam, TuneLayer};
use crate::checkpoint::ModelConfig;
use crate::model::{Block, Head, Model, ModelError};

/// Tokens per piece of the KL divergence's graph in end-to-end tuning: the head's logits and
/// their gradients take 25 MB per tensor at this size (49152-token vocabulary) instead of 100 MB
/// for a whole 512-token sequence.
const KL_ROWS: usize = 128;

/// How long and how fast to tune end to end.
#[derive(Debug, Clone, PartialEq)]
pub struct FinetuneOptions {
    /// Passes over the calibration sequences (0: off).
    pub epochs: usize,
    /// Adam learning rate, in the units of the weights.
    pub learning_rate: f64,
    /// Sequences per Adam step.
    pub batch: usize,
    /// Fraction of each layer's codes the discrete step may change after every Adam step
    /// (`recode`; 0: indices fixed).
    pub code_fraction: f64,
    /// The step (in weight units) of the quadratic model the discrete step judges moves by.
    pub code_step: f64,
    /// Calibration tokens to tune on, from the start of the text (None: the calibration
    /// sequences the Hessians came from).
    pub tokens: Option<usize>,
    /// Sequences after all others in the text, never tuned on: the KL divergence on them picks
    /// the epoch to keep and decides whether the tuning is kept (0: judged on the tuning
    /// sequences).
    pub holdout: usize,
}

/// Estimated peak memory (bytes) of a conversion with end-to-end tuning, by which the converter
/// decides whether to tune by default. Most of it is f32 copies of the linear weights: each
/// layer's reconstructions (the quantizer's, the layer's, the block's), the weight variables of
/// a step, and about one more per worker thread of a step (its gradient store and the graphs
/// of its sequences). Measured on SmolLM2-135M (106M linear weights, 405 MiB in f32; 2f240ee
/// and cc51512, 2026-12-06): 5719 MiB with one worker and 6857 MiB with two before the layers' Hessians were
/// dropped during the tuning (cc51512), which took the short check from 5887 to 4709 MiB; after
/// it, 5041 MiB at --bits 2.25 with two. This estimate gives 6912 and 7722 MiB: on the safe
/// side. The vocabulary term covers the embedding, the head and the KL divergence's
/// [rows x vocabulary] pieces.
pub fn estimated_peak_bytes(config: &ModelConfig, workers: usize) -> u64 {
    // Saturating: a config too large for any machine must come out as "too large", not wrap.
    let linear = config.linear_weights().saturating_mul(4);
    let vocabulary = (config.vocab_size as u64)
        .saturating_mul(config.hidden_size as u64)
        .saturating_mul(4);
    (14 + 2 * (workers.max(1) as u64))
        .saturating_mul(linear)
        .saturating_add(vocabulary.saturating_mul(4))
}

/// One quantized block and its quantized layers.
pub struct FinetuneBlock<'a> {
    pub block: &'a mut Block,
    pub layers: Vec<TuneLayer<'a>>,
}

/// Mean KL divergence per token (nats) from the unquantized model's next-token distribution,
/// on the held-out sequences (on the tuning sequences without any), before and after
/// (`after == before` when tuning did not help and was undone).
#[derive(Debug, Clone, PartialEq)]
pub struct FinetuneOutcome {
    pub before: f64,
    pub after: f64,
    /// The tuned model's KL divergence, also when it was not lower and the tuning was undone.
    pub tuned: f64,
    /// Sequences tuned on, and held out (0: the KLs are on the tuning sequences).
    pub sequences: usize,
    pub held_out: usize,
    /// With held-out sequences: their KL after each epoch (codebooks not yet stored), and the
    /// epoch kept (the lowest; 0 when none beat the untuned model).
    pub epoch_kl: Vec<f64>,
    pub kept_epoch: usize,
    pub steps: usize,
    /// Codes the discrete step changed (a code changed twice counts twice).
    pub recoded: usize,
    pub seconds: f64,
}

/// Tunes every block's codebooks and norms and the final norm of `head` so that the quantized
/// model maps `inputs` (embedded sequences) to the next-token distributions the unquantized model
/// gives from `teacher` (its last block's outputs); the last `opts.holdout` of them are held out
/// to judge by. Writes the stored codebooks back into the layers, the reconstructions and norms
/// into the blocks, the final norm into `head`; keeps the epoch with the lowest held-out KL, and
/// everything as it was when the KL divergence did not drop. `progress(step, steps)` per step.
pub fn finetune_model(
    model: &Model,
    blocks: &mut [FinetuneBlock<'_>],
    head: &mut Head,
    inputs: &[Tensor],
    teacher: &[Tensor],
    opts: &FinetuneOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<FinetuneOutcome, ModelError> {
    let started = Instant::now();
    let objective = Objective::new(model, head, inputs)?;
    let all: Vec<(&Tensor, &Tensor)> = inputs.iter().zip(teacher).collect();
    if all.len() <= opts.holdout {
        return Err(ModelError::Invalid(format!(
            "end-to-end tuning has {} sequences, {} to hold out and none left to tune on",
            all.len(),
            opts.holdout
        )));
    }
    let (items, held) = all.split_at(all.len() - opts.holdout);
    let judge = if held.is_empty() { items } else { held };
    let before = objective.evaluate(blocks, head, judge)?;

    let mut vars = Variables::new(blocks, head, model.device(), opts.code_fraction > 0.0)?;
    // For the undo: the values alone (the reconstructions are rebuilt from them), not copies
    // of the layers' full-size reconstructions.
    let untuned = Snapshot::take(&vars.params, &vars.norm_vars)?;
    let mut adam = GroupedAdam::for_codebooks(
        vars.params.iter().flatten(),
        vars.norm_vars.clone(),
        opts.learning_rate,
    )?;
    let batch = opts.batch.max(1);
    let steps = opts.epochs * items.len().div_ceil(batch);
    let mut step = 0;
    let mut recoded = 0;
    let mut epoch_kl = Vec::new();
    let mut best: Option<(f64, usize, Snapshot)> = None;
    for epoch in 1..=opts.epochs {
        for chunk in items.chunks(batch) {
            progress(step, steps);
            let probe_grads = train_step(&objective, &vars, &mut adam, blocks, head, chunk)?;
            recoded += vars.recode(probe_grads, step, opts)?;
            step += 1;
        }
        if !held.is_empty() {
            vars.install_detached(blocks, head)?;
            let kl = objective.evaluate(blocks, head, held)?;
            epoch_kl.push(kl);
            if kl < before && best.as_ref().is_none_or(|(b, _, _)| kl < *b) {
                best = Some((kl, epoch, Snapshot::take(&vars.params, &vars.norm_vars)?));
            }
        }
    }
    progress(steps, steps);
    let mut kept_epoch = opts.epochs;
    if !held.is_empty() {
        kept_epoch = 0;
        if let Some((_, epoch, snapshot)) = best {
            kept_epoch = epoch;
            if epoch < opts.epochs {
                snapshot.restore(&mut vars.params, &vars.norm_vars)?;
            }
        }
    }

    // Store the tuned codebooks as the file will hold them, install the stored reconstructions
    // and detached norms (the blocks must not keep the tuning graph alive), and measure again.
    vars.store(blocks, head)?;
    let tuned = objective.evaluate(blocks, head, judge)?;
    let mut after = tuned;
    // With held-out sequences, no epoch beat the untuned model (kept_epoch 0): undo, even if
    // storing the codebooks happened to lower the KL. Storing the untuned codebooks again
    // rebuilds the untuned reconstructions exactly.
    if after >= before || kept_epoch == 0 {
        untuned.restore(&mut vars.params, &vars.norm_vars)?;
        vars.store(blocks, head)?;
        after = before;
    }
    Ok(FinetuneOutcome {
        before,
        after,
        tuned,
        sequences: items.len(),
        held_out: held.len(),
        epoch_kl,
        kept_epoch,
        steps,
        recoded,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// One Adam step on the sequences of `chunk`: the gradients of the KL divergence with respect to
/// every tuned variable, chained from the layers' weights. Returns the gradients with respect to
/// the stored vectors (for the discrete step; `None` per layer without probes).
fn train_step(
    objective: &Objective<'_>,
    vars: &Variables,
    adam: &mut GroupedAdam,
    blocks: &mut [FinetuneBlock<'_>],
    head: &mut Head,
    chunk: &[(&Tensor, &Tensor)],
) -> Result<Vec<Option<Tensor>>, ModelError> {
    let weights = vars.install_for_step(blocks, head)?;
    let keep: Vec<Tensor> = weights
        .iter()
        .chain(&vars.norm_vars)
        .map(|v| v.as_tensor().clone())
        .collect();
    let refs: Vec<&Block> = blocks.iter().map(|b| &*b.block).collect();
    let head = &*head;
    let mut grads = checkpointed_gradients(
        &refs,
        &|b, h| objective.forward(b, h),
        &|h, t| objective.kl(head, h, t),
        KL_ROWS,
        chunk,
        &keep,
    )?;
    let probe_grads = vars.chain_gradients(&weights, &mut grads)?;
    adam.step(&grads)?;
    Ok(probe_grads)
}

/// What end-to-end tuning minimises: the KL divergence of the quantized model's next-token
/// distribution from the unquantized model's (`teacher_head` on the teacher's last hidden
/// states), the blocks run on RoPE tables for the longest sequence.
struct Objective<'a> {
    config: &'a ModelConfig,
    /// Per block, its RoPE `(cos, sin)`.
    tables: Vec<(Tensor, Tensor)>,
    teacher_head: Head,
}

impl<'a> Objective<'a> {
    fn new(model: &'a Model, head: &Head, inputs: &[Tensor]) -> Result<Self, ModelError> {
        let mut seq = 0;
        for x in inputs {
            seq = seq.max(x.dim(0)?);
        }
        Ok(Self {
            config: model.config(),
            tables: model.all_rope_tables(seq)?,
            teacher_head: head.clone(),
        })
    }

    fn forward(&self, b: &Block, h: &Tensor) -> candle_core::Result<Tensor> {
        let (cos, sin) = &self.tables[b.layer];
        b.forward(self.config, h, cos, sin, None)
    }

    /// KL divergence from the teacher's distribution given its last hidden states `t`, for the
    /// student's last hidden states `h`.
    fn kl(&self, head: &Head, h: &Tensor, t: &Tensor) -> candle_core::Result<Tensor> {
        let student = candle_nn::ops::log_softmax(&head.logits(h)?, D::Minus1)?;
        let target = candle_nn::ops::log_softmax(&self.teacher_head.logits(t)?, D::Minus1)?;
        (target.exp()? * (target - student)?)?
            .sum(D::Minus1)?
            .mean_all()
    }

    fn loss(
        &self,
        blocks: &[&Block],
        head: &Head,
        x: &Tensor,
        t: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let mut h = x.clone();
        for b in blocks {
            h = self.forward(b, &h)?;
        }
        self.kl(head, &h, t)
    }

    /// The mean KL divergence over `on` (input, teacher) with the blocks as they are.
    fn evaluate(
        &self,
        blocks: &[FinetuneBlock<'_>],
        head: &Head,
        on: &[(&Tensor, &Tensor)],
    ) -> candle_core::Result<f64> {
        let refs: Vec<&Block> = blocks.iter().map(|b| &*b.block).collect();
        let per_item: Vec<f64> = per_thread(on, &|part| {
            part.iter()
                .map(|(x, t)| {
                    self.loss(&refs, head, x, t)?
                        .to_scalar::<f32>()
                        .map(f64::from)
                })
                .collect::<candle_core::Result<Vec<f64>>>()
        })?
        .concat();
        Ok(per_item.iter().sum::<f64>() / per_item.len().max(1) as f64)
    }
}

/// What end-to-end tuning trains: every layer's codebook weight, every block's two norms and
/// the final norm; with the discrete step, a zero probe per layer on its stored vectors and the
/// moments of their gradients.
struct Variables {
    params: Vec<Vec<CodebookWeight>>,
    norms: Vec<[Var; 2]>,
    final_norm: Var,
    /// The norms' variables in one list (the blocks' in order, then the final norm).
    norm_vars: Vec<Var>,
    /// Gradients with respect to the stored vectors, for the discrete step: candle keeps the
    /// gradients of variables only, so each layer's vectors get a zero variable added.
    probes: Vec<Var>,
    moments: Vec<Moments>,
}

impl Variables {
    fn new(
        blocks: &[FinetuneBlock<'_>],
        head: &Head,
        device: &candle_core::Device,
        recode: bool,
    ) -> Result<Self, ModelError> {
        let params: Vec<Vec<CodebookWeight>> = blocks
            .iter()
            .map(|b| {
                b.layers
                    .iter()
                    .map(|l| CodebookWeight::new(l, device).map(CodebookWeight::straight_through))
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<_, _>>()?;
        let norms: Vec<[Var; 2]> = blocks
            .iter()
            .map(|b| {
                Ok([
                    Var::from_tensor(&b.block.input_layernorm)?,
                    Var::from_tensor(&b.block.mlp_norm)?,
                ])
            })
            .collect::<candle_core::Result<_>>()?;
        let final_norm = Var::from_tensor(&head.norm)?;
        let mut norm_vars: Vec<Var> = norms.iter().flatten().cloned().collect();
        norm_vars.push(final_norm.clone());
        let probes: Vec<Var> = match recode {
            true => params
                .iter()
                .flatten()
                .map(|p| Var::zeros(p.gathered_shape(), DType::F32, device))
                .collect::<candle_core::Result<_>>()?,
            false => Vec::new(),
        };
        let moments: Vec<Moments> = params
            .iter()
            .flatten()
            .take(probes.len())
            .map(|p| Moments::new(p.gathered_shape().0 * p.gathered_shape().1))
            .collect();
        Ok(Self {
            params,
            norms,
            final_norm,
            norm_vars,
            probes,
            moments,
        })
    }

    /// Installs every layer's weight as a fresh variable, returned in layer order, and the norm
    /// variables: the model's graph starts at each layer's weight, so the chain from the
    /// codebooks to the weight is differentiated once per step (`chain_gradients`), not once
    /// per sequence, and is not part of the graph that backward keeps alive.
    fn install_for_step(
        &self,
        blocks: &mut [FinetuneBlock<'_>],
        head: &mut Head,
    ) -> Result<Vec<Var>, ModelError> {
        let weights: Vec<Var> = self
            .params
            .iter()
            .flatten()
            .map(|p| Var::from_tensor(&p.weight()?.detach()))
            .collect::<candle_core::Result<_>>()?;
        let mut weight = weights.iter();
        for ((b, ps), [a, m]) in blocks.iter_mut().zip(&self.params).zip(&self.norms) {
            for (p, w) in ps.iter().zip(&mut weight) {
                b.block.set_weight(p.kind, w.as_tensor().clone())?;
            }
            b.block.input_layernorm = a.as_tensor().clone();
            b.block.mlp_norm = m.as_tensor().clone();
        }
        head.norm = self.final_norm.as_tensor().clone();
        Ok(weights)
    }

    /// Installs the tuned weights (not yet stored) and norms, detached, to measure them.
    fn install_detached(
        &self,
        blocks: &mut [FinetuneBlock<'_>],
        head: &mut Head,
    ) -> Result<(), ModelError> {
        for ((b, ps), [a, m]) in blocks.iter_mut().zip(&self.params).zip(&self.norms) {
            for p in ps {
                b.block.set_weight(p.kind, p.weight()?.detach())?;
            }
            b.block.input_layernorm = a.as_tensor().detach();
            b.block.mlp_norm = m.as_tensor().detach();
        }
        head.norm = self.final_norm.as_tensor().detach();
        Ok(())
    }

    /// Replaces each layer's weight gradient in `grads` by the gradients of its variables (the
    /// chain rule through `CodebookWeight::weight_from`); returns the probes' gradients.
    fn chain_gradients(
        &self,
        weights: &[Var],
        grads: &mut GradStore,
    ) -> candle_core::Result<Vec<Option<Tensor>>> {
        let layers: Vec<(&CodebookWeight, &Var, Option<&Var>)> = self
            .params
            .iter()
            .flatten()
            .zip(weights)
            .enumerate()
            .map(|(i, (p, w))| (p, w, self.probes.get(i)))
            .collect();
        let chained = per_thread(&layers, &|part| {
            part.iter()
                .map(|&(p, w, probe)| match grads.get(w.as_tensor()) {
                    Some(g) => codebook_gradients(p, probe, g),
                    None => Ok(LayerGradients::default()),
                })
                .collect::<candle_core::Result<Vec<_>>>()
        })?
        .into_iter()
        .flatten();
        let mut probe_grads = Vec::with_capacity(self.probes.len());
        for ((_, w, _), layer) in layers.iter().zip(chained) {
            grads.remove(w.as_tensor());
            for (v, g) in layer.vars {
                grads.insert(&v, g);
            }
            probe_grads.push(layer.probe);
        }
        Ok(probe_grads)
    }

    /// The discrete step after Adam step `step` (`recode`), from the third step on; returns the
    /// codes changed.
    fn recode(
        &mut self,
        probe_grads: Vec<Option<Tensor>>,
        step: usize,
        opts: &FinetuneOptions,
    ) -> candle_core::Result<usize> {
        let mut recoded = 0;
        for ((p, grad), moments) in self
            .params
            .iter_mut()
            .flatten()
            .zip(probe_grads)
            .zip(&mut self.moments)
        {
            let Some(grad) = grad else {
                continue;
            };
            moments.update(&grad.flatten_all()?.to_vec1()?);
            if step + 1 < RECODE_WARMUP {
                continue;
            }
            let centroids: Vec<f32> = p.centroids.as_tensor().flatten_all()?.to_vec1()?;
            let mut codes = p.codes.clone();
            recoded += recode_layer(
                &centroids,
                p.d,
                p.n,
                &mut codes,
                moments,
                // The moments are in the centroids' units: with row scales, weight / s.
                (opts.code_step / p.row_scale_rms()) as f32,
                opts.code_fraction,
            );
            p.set_codes(codes)?;
        }
        Ok(recoded)
    }

    /// Stores every layer's codebooks and scales as the file will hold them, installs the
    /// stored reconstructions in the blocks and the norms, detached, in the blocks and `head`.
    fn store(&self, blocks: &mut [FinetuneBlock<'_>], head: &mut Head) -> Result<(), ModelError> {
        for ((b, ps), [a, m]) in blocks.iter_mut().zip(&self.params).zip(&self.norms) {
            for (p, l) in ps.iter().zip(b.layers.iter_mut()) {
                p.write_back(l.quantized)?;
                b.block
                    .set_stored_weight(l.kind, &l.quantized.dequantized, l.qk_heads)?;
            }
            b.block.input_layernorm = a.as_tensor().detach();
            b.block.mlp_norm = m.as_tensor().detach();
        }
        head.norm = self.final_norm.as_tensor().detach();
        Ok(())
    }
}

/// The gradient of the mean of `loss(last block's output, teacher)` over `items` (embedded
/// sequence, teacher's last hidden states) with respect to `keep` (variables of the blocks and
/// the head), holding one block's graph at a time per sequence (gradient checkpointing): the
/// forward pass keeps each block's input only, then the backward pass runs the blocks again from
/// the top, each on its input as a variable, and hands that input's gradient down as the output
/// gradient of the block below. One more forward pass per sequence buys a memory peak of one
/// block's activations instead of the whole model's (about 7 GB per sequence at 512 tokens).
/// `loss` must be a mean over the rows (tokens); it runs on `loss_rows` rows at a time.
fn checkpointed_gradients<B: Sync>(
    blocks: &[B],
    forward: &(dyn Fn(&B, &Tensor) -> candle_core::Result<Tensor> + Sync),
    loss: &(dyn Fn(&Tensor, &Tensor) -> candle_core::Result<Tensor> + Sync),
    loss_rows: usize,
    items: &[(&Tensor, &Tensor)],
    keep: &[Tensor],
) -> candle_core::Result<GradStore> {
    let scale = 1.0 / items.len().max(1) as f64;
    summed_per_thread(keep, items, &|&(x, t), grads| {
        let mut inputs = Vec::with_capacity(blocks.len());
        let mut h = x.clone();
        for b in blocks {
            let out = forward(b, &h)?.detach();
            inputs.push(std::mem::replace(&mut h, out));
        }
        // The loss is a mean over tokens, so it splits into row chunks weighted by their share
        // of the rows; one chunk's graph at a time keeps the head's [rows x vocabulary]
        // tensors (100 MB each at 512 tokens) and their gradients to a chunk's size.
        let (rows, chunk) = (h.dim(0)?, loss_rows.max(1));
        let mut grad_rows = Vec::with_capacity(rows.div_ceil(chunk));
        for start in (0..rows).step_by(chunk) {
            let len = chunk.min(rows - start);
            let top = Var::from_tensor(&h.narrow(0, start, len)?)?;
            let weight = scale * len as f64 / rows as f64;
            let g = (loss(top.as_tensor(), &t.narrow(0, start, len)?)? * weight)?.backward()?;
            accumulate(grads, &g, keep)?;
            // Detached: as computed, the gradient is a function of the head's variables (and
            // would pass gradient to them again from every block below).
            grad_rows.extend(g.get(top.as_tensor()).map(Tensor::detach));
        }
        let mut grad_out = if grad_rows.len() == rows.div_ceil(chunk) {
            Some(Tensor::cat(&grad_rows, 0)?)
        } else {
            None
        };
        for (b, input) in blocks.iter().zip(inputs).rev() {
            let Some(grad) = grad_out.take() else {
                break;
            };
            let input = Var::from_tensor(&input)?;
            let g = (forward(b, input.as_tensor())? * grad)?
                .sum_all()?
                .backward()?;
            accumulate(grads, &g, keep)?;
            grad_out = g.get(input.as_tensor()).map(Tensor::detach);
        }
        Ok(())
    })
}

/// One layer's gradients: of its variables (`CodebookWeight::vars`: the variable and its
/// gradient), and of its stored vectors (the discrete step's, through the probe).
#[derive(Default)]
struct LayerGradients {
    vars: Vec<(Tensor, Tensor)>,
    probe: Option<Tensor>,
}

/// The chain rule from a layer's weight gradient to its variables and, through `probe`, its
/// stored vectors: a backward pass through `weight_from` with `grad_weight` as the output
/// gradient.
fn codebook_gradients(
    p: &CodebookWeight,
    probe: Option<&Var>,
    grad_weight: &Tensor,
) -> candle_core::Result<LayerGradients> {
    let mut gathered = p.gathered()?;
    if let Some(z) = probe {
        gathered = (gathered + z.as_tensor())?;
    }
    let grads = (p.weight_from(&gathered)? * grad_weight)?
        .sum_all()?
        .backward()?;
    let vars = p
        .vars()
        .filter_map(|v| {
            let v = v.as_tensor();
            grads.get(v).map(|g| (v.clone(), g.detach()))
        })
        .collect();
    Ok(LayerGradients {
        vars,
        probe: probe.and_then(|z| grads.get(z.as_tensor()).map(Tensor::detach)),
    })
}

/// The tuned values at the end of an epoch: every layer's variables (centroids, row scales)
/// and codes, every norm.
struct Snapshot {
    layers: Vec<(Vec<Tensor>, Vec<u32>)>,
    norms: Vec<Tensor>,
}

impl Snapshot {
    fn take(params: &[Vec<CodebookWeight>], norms: &[Var]) -> candle_core::Result<Self> {
        Ok(Self {
            layers: params
                .iter()
                .flatten()
                .map(|p| {
                    let vars = p
                        .vars()
                        .map(|v| v.as_tensor().copy())
                        .collect::<candle_core::Result<_>>()?;
                    Ok((vars, p.codes.clone()))
                })
                .collect::<candle_core::Result<_>>()?,
            norms: norms
                .iter()
                .map(|v| v.as_tensor().copy())
                .collect::<candle_core::Result<_>>()?,
        })
    }

    fn restore(self, params: &mut [Vec<CodebookWeight>], norms: &[Var]) -> candle_core::Result<()> {
        for (p, (vars, codes)) in params.iter_mut().flatten().zip(self.layers) {
            for (v, t) in p.vars().zip(vars) {
                v.set(&t)?;
            }
            p.set_codes(codes)?;
        }
        for (v, t) in norms.iter().zip(self.norms) {
            v.set(&t)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn matrix(rows: usize, cols: usize, seed: usize) -> candle_core::Result<Var> {
        let values: Vec<f32> = (0..rows * cols)
            .map(|k| (((k + seed) * 37 % 23) as f32 - 11.0) / 20.0)
            .collect();
        Var::from_vec(values, (rows, cols), &Device::Cpu)
    }

    #[test]
    fn checkpointed_gradients_equal_the_whole_graphs() -> candle_core::Result<()> {
        // Four "blocks" h -> tanh(h W) + h and a loss with a target; three sequences, so that
        // the two threads' parts and the 1/3 scale both matter.
        let weights: Vec<Var> = (0..4).map(|i| matrix(6, 6, i)).collect::<Result<_, _>>()?;
        let head = matrix(6, 3, 9)?;
        let forward = |w: &Var, h: &Tensor| h.matmul(w.as_tensor())?.tanh()? + h;
        let loss = |h: &Tensor, t: &Tensor| (h.matmul(head.as_tensor())? - t)?.sqr()?.mean_all();
        let xs: Vec<Tensor> = (0..3)
            .map(|i| Ok(matrix(5, 6, 20 + i)?.as_tensor().detach()))
            .collect::<candle_core::Result<_>>()?;
        let ts: Vec<Tensor> = (0..3)
            .map(|i| Ok(matrix(5, 3, 40 + i)?.as_tensor().detach()))
            .collect::<candle_core::Result<_>>()?;
        let items: Vec<(&Tensor, &Tensor)> = xs.iter().zip(&ts).collect();
        let keep: Vec<Tensor> = weights
            .iter()
            .chain([&head])
            .map(|v| v.as_tensor().clone())
            .collect();

        // Two rows at a time: the five rows split 2 + 2 + 1.
        let checkpointed = checkpointed_gradients(&weights, &forward, &loss, 2, &items, &keep)?;
        let mut whole = GradStore::default();
        for (x, t) in &items {
            let mut h = (*x).clone();
            for w in &weights {
                h = forward(w, &h)?;
            }
            let g = (loss(&h, t)? / 3.0)?.backward()?;
            accumulate(&mut whole, &g, &keep)?;
        }
        for t in &keep {
            let a: Vec<f32> = checkpointed.get(t).unwrap().flatten_all()?.to_vec1()?;
            let b: Vec<f32> = whole.get(t).unwrap().flatten_all()?.to_vec1()?;
            assert!(
                b.iter().any(|&v| v.abs() > 1e-3),
                "a vanishing gradient tests nothing"
            );
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{x} vs {y}");
            }
        }
        Ok(())
    }
}
