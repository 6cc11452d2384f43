//! Greedy generation through athena-runtime checked against the reference path (reference
//! decoder + the candle model): the runtime generates, then the reference scores the whole
//! sequence in one forward. Where the reference's own greedy choice agrees with the runtime's at
//! every step, reference greedy generation would produce the same tokens; the first step where
//! it does not is reported with the reference's logit gap between the two tokens (a near-tie
//! explains a divergence), and the largest logit difference over all steps.

use std::path::Path;

use candle_core::Device;

use super::file::{open_gguf, open_model, tokenizer_of_gguf};
use crate::model::Model;

/// One prompt's comparison.
#[derive(Debug, Clone)]
pub struct GreedyReport {
    pub prompt: String,
    /// The runtime's generated text.
    pub text: String,
    pub prompt_tokens: usize,
    pub generated: usize,
    /// First generated position where the reference's argmax differs from the runtime's token:
    /// (step, the reference's logit of its own choice minus that of the runtime's token).
    pub divergence: Option<(usize, f32)>,
    /// Largest |runtime logit - reference logit| over every vocabulary entry and step.
    pub max_logit_diff: f32,
}

/// Generates `n` greedy tokens for each prompt and compares them with the reference path.
pub fn compare(path: &Path, prompts: &[&str], n: usize) -> Result<Vec<GreedyReport>, String> {
    let file = open_gguf(path)?;
    let tokenizer = tokenizer_of_gguf(path, &file)?;
    let runtime = athena_runtime::Model::load(&file).map_err(|e| e.to_string())?;
    let (source, _) = open_model(path)?;
    let reference = Model::new(source.as_ref(), Device::Cpu).map_err(|e| e.to_string())?;
    let vocab = runtime.config.vocab;
    let mut reports = Vec::new();
    for &prompt in prompts {
        let mut tokens = tokenizer.encode(prompt, true).map_err(|e| e.to_string())?;
        let prompt_tokens = tokens.len();
        let mut session = athena_runtime::Session::new(
            &runtime,
            athena_runtime::KvType::F16,
            prompt_tokens + n + 1,
        );
        let (mut logits, _) = session.sync(&tokens).map_err(|e| e.to_string())?;
        let mut steps = Vec::with_capacity(n);
        for _ in 0..n {
            let next = athena_runtime::sampler::argmax(&logits);
            steps.push(logits.clone());
            tokens.push(next);
            logits = session.push(next).map_err(|e| e.to_string())?;
        }
        let reference_logits = reference
            .logits(std::slice::from_ref(&tokens))
            .and_then(|l| {
                l[0].to_vec2::<f32>()
                    .map_err(crate::model::ModelError::from)
            })
            .map_err(|e| e.to_string())?;
        let mut divergence = None;
        let mut max_logit_diff = 0.0f32;
        for (step, rt) in steps.iter().enumerate() {
            let re = &reference_logits[prompt_tokens - 1 + step];
            debug_assert_eq!(re.len(), vocab);
            for (a, b) in rt.iter().zip(re) {
                max_logit_diff = max_logit_diff.max((a - b).abs());
            }
            let chosen = tokens[prompt_tokens + step] as usize;
            let best = athena_runtime::sampler::argmax(re) as usize;
            if divergence.is_none() && best != chosen {
                divergence = Some((step, re[best] - re[chosen]));
            }
        }
        reports.push(GreedyReport {
            prompt: prompt.to_string(),
            text: tokenizer
                .decode(&tokens[prompt_tokens..])
                .map_err(|e| e.to_string())?,
            prompt_tokens,
            generated: n,
            divergence,
            max_logit_diff,
        });
    }
    Ok(reports)
}
