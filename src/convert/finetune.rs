//! End-to-end tuning after the last block is quantized (AQLM's global fine-tuning, with
//! Norm-Tweaking's observation that RMSNorm weights are worth tuning at low bit rates): the
//! codebook values of every layer (indices fixed) and every RMSNorm weight are tuned with Adam so
//! that the quantized model's next-token distribution matches the unquantized model's, i.e. the
//! KL divergence on the calibration sequences. The block-wise step (`tune`) matches one block's
//! output, an MSE dominated by a few massive-activation channels; this objective is the one
//! perplexity measures, and it can pay back errors that earlier blocks passed on.
//! Codebooks are stored (int8 or f16) again afterwards and the norms as f32, so the file format
//! does not change.

use std::time::Instant;

use candle_core::{DType, Tensor, Var, D};

use super::recode::{recode_layer, Moments, RECODE_WARMUP};
use super::tune::{parallel_gradients, per_thread, CodebookWeight, GroupedAdam, TuneLayer};
use crate::model::{Block, Head, Model, ModelError};
use crate::quantizer::QuantizedLinear;

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
    let config = model.config();
    let device = model.device();
    let mut seq = 0;
    for x in inputs {
        seq = seq.max(x.dim(0)?);
    }
    let (cos, sin) = model.rope_tables(seq)?;
    let teacher_head = head.clone();
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
    let loss_of = |blocks: &[&Block], head: &Head, x: &Tensor, t: &Tensor| {
        let mut h = x.clone();
        for b in blocks {
            h = b.forward(config, &h, &cos, &sin, None)?;
        }
        let student = candle_nn::ops::log_softmax(&head.logits(&h)?, D::Minus1)?;
        let target = candle_nn::ops::log_softmax(&teacher_head.logits(t)?, D::Minus1)?;
        (target.exp()? * (target - student)?)?
            .sum(D::Minus1)?
            .mean_all()
    };
    let evaluate = |blocks: &[FinetuneBlock<'_>],
                    head: &Head,
                    on: &[(&Tensor, &Tensor)]|
     -> candle_core::Result<f64> {
        let refs: Vec<&Block> = blocks.iter().map(|b| &*b.block).collect();
        let per_item: Vec<f64> = per_thread(on, &|part| {
            part.iter()
                .map(|(x, t)| {
                    loss_of(&refs, head, x, t)?
                        .to_scalar::<f32>()
                        .map(f64::from)
                })
                .collect::<candle_core::Result<Vec<f64>>>()
        })?
        .concat();
        Ok(per_item.iter().sum::<f64>() / per_item.len().max(1) as f64)
    };
    let before = evaluate(blocks, head, judge)?;

    let mut params: Vec<Vec<CodebookWeight>> = blocks
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
                Var::from_tensor(&b.block.post_attention_layernorm)?,
            ])
        })
        .collect::<candle_core::Result<_>>()?;
    let final_norm = Var::from_tensor(&head.norm)?;
    let originals: Vec<(Vec<QuantizedLinear>, [Tensor; 2])> = blocks
        .iter()
        .map(|b| {
            (
                b.layers.iter().map(|l| l.quantized.clone()).collect(),
                [
                    b.block.input_layernorm.clone(),
                    b.block.post_attention_layernorm.clone(),
                ],
            )
        })
        .collect();
    let original_final_norm = head.norm.clone();

    let mut norm_vars: Vec<Var> = norms.iter().flatten().cloned().collect();
    norm_vars.push(final_norm.clone());
    // Gradients with respect to the stored vectors, for the discrete step: candle keeps the
    // gradients of variables only, so each layer's vectors get a zero variable added.
    let probes: Vec<Var> = if opts.code_fraction > 0.0 {
        params
            .iter()
            .flatten()
            .map(|p| Var::zeros(p.shape(), DType::F32, device))
            .collect::<candle_core::Result<_>>()?
    } else {
        Vec::new()
    };
    let mut moments: Vec<Moments> = params
        .iter()
        .flatten()
        .take(probes.len())
        .map(|p| Moments::new(p.shape().0 * p.shape().1))
        .collect();
    let keep: Vec<Tensor> = params
        .iter()
        .flatten()
        .map(|p| &p.centroids)
        .chain(&norm_vars)
        .chain(&probes)
        .map(|v| v.as_tensor().clone())
        .collect();
    let mut adam = GroupedAdam::for_codebooks(
        params.iter().flatten(),
        norm_vars.clone(),
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
            let mut layer = 0;
            for ((b, ps), [a, m]) in blocks.iter_mut().zip(&params).zip(&norms) {
                for p in ps {
                    let mut w = p.gathered()?;
                    if let Some(z) = probes.get(layer) {
                        w = (w + z.as_tensor())?;
                    }
                    b.block.set_weight(p.kind, p.weight_from(&w)?)?;
                    layer += 1;
                }
                b.block.input_layernorm = a.as_tensor().clone();
                b.block.post_attention_layernorm = m.as_tensor().clone();
            }
            head.norm = final_norm.as_tensor().clone();
            let refs: Vec<&Block> = blocks.iter().map(|b| &*b.block).collect();
            let grads = parallel_gradients(&keep, chunk, &|(x, t)| loss_of(&refs, head, x, t))?;
            adam.step(&grads)?;
            for ((p, z), moments) in params.iter_mut().flatten().zip(&probes).zip(&mut moments) {
                let Some(grad) = grads.get(z.as_tensor()) else {
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
            step += 1;
        }
        if !held.is_empty() {
            for ((b, ps), [a, m]) in blocks.iter_mut().zip(&params).zip(&norms) {
                for p in ps {
                    b.block.set_weight(p.kind, p.weight()?.detach())?;
                }
                b.block.input_layernorm = a.as_tensor().detach();
                b.block.post_attention_layernorm = m.as_tensor().detach();
            }
            head.norm = final_norm.as_tensor().detach();
            let kl = evaluate(blocks, head, held)?;
            epoch_kl.push(kl);
            if kl < before && best.as_ref().is_none_or(|(b, _, _)| kl < *b) {
                best = Some((kl, epoch, Snapshot::take(&params, &norm_vars)?));
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
                snapshot.restore(&mut params, &norm_vars)?;
            }
        }
    }

    // Store the tuned codebooks as the file will hold them, install the stored reconstructions
    // and detached norms (the blocks must not keep the tuning graph alive), and measure again.
    for ((b, ps), [a, m]) in blocks.iter_mut().zip(&params).zip(&norms) {
        for (p, l) in ps.iter().zip(b.layers.iter_mut()) {
            p.write_back(l.quantized)?;
            super::sequential::set_quantized(b.block, l.kind, l.quantized, l.qk_heads, model)?;
        }
        b.block.input_layernorm = a.as_tensor().detach();
        b.block.post_attention_layernorm = m.as_tensor().detach();
    }
    head.norm = final_norm.as_tensor().detach();
    let tuned = evaluate(blocks, head, judge)?;
    let mut after = tuned;
    // With held-out sequences, no epoch beat the untuned model (kept_epoch 0): undo, even if
    // storing the codebooks happened to lower the KL.
    if after >= before || kept_epoch == 0 {
        for (b, (layers, [a, m])) in blocks.iter_mut().zip(originals) {
            for (l, original) in b.layers.iter_mut().zip(layers) {
                *l.quantized = original;
                super::sequential::set_quantized(b.block, l.kind, l.quantized, l.qk_heads, model)?;
            }
            b.block.input_layernorm = a;
            b.block.post_attention_layernorm = m;
        }
        head.norm = original_final_norm;
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

/// The tuned values at the end of an epoch: every layer's centroids and codes, every norm.
struct Snapshot {
    centroids: Vec<(Tensor, Vec<u32>)>,
    norms: Vec<Tensor>,
}

impl Snapshot {
    fn take(params: &[Vec<CodebookWeight>], norms: &[Var]) -> candle_core::Result<Self> {
        Ok(Self {
            centroids: params
                .iter()
                .flatten()
                .map(|p| Ok((p.centroids.as_tensor().copy()?, p.codes.clone())))
                .collect::<candle_core::Result<_>>()?,
            norms: norms
                .iter()
                .map(|v| v.as_tensor().copy())
                .collect::<candle_core::Result<_>>()?,
        })
    }

    fn restore(self, params: &mut [Vec<CodebookWeight>], norms: &[Var]) -> candle_core::Result<()> {
        for (p, (centroids, codes)) in params.iter_mut().flatten().zip(self.centroids) {
            p.centroids.set(&centroids)?;
            p.set_codes(codes)?;
        }
        for (v, t) in norms.iter().zip(self.norms) {
            v.set(&t)?;
        }
        Ok(())
    }
}
