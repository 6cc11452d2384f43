//! Perplexity over non-overlapping chunks, matching llama.cpp's `llama-perplexity`:
//! the text is tokenized as a whole (with BOS if the model adds one), cut into `tokens.len() /
//! n_ctx` chunks of `n_ctx` tokens, the first token of each chunk is replaced by BOS when the
//! model adds BOS, and only the second half is scored: the logits at positions
//! `n_ctx/2 .. n_ctx-1` predict the tokens after them. The error estimate is llama.cpp's:
//! `ppl * sqrt((mean(nll^2) - mean(nll)^2) / (count - 1))`.
//!
//! The reference path runs the model block at a time over all chunks (the loop calibration
//! uses), so activations of every chunk are held at once: `chunks * n_ctx * hidden * 4` bytes.
//! The runtime path ([`perplexity_runtime`]) runs one chunk at a time.

use crate::model::{Model, ModelError};

#[derive(Debug, thiserror::Error)]
pub enum PerplexityError {
    #[error("the text has {tokens} tokens; a context of {n_ctx} needs at least {needed}")]
    TooFewTokens {
        tokens: usize,
        n_ctx: usize,
        needed: usize,
    },
    #[error("context size {0} is too small (at least 4 tokens)")]
    BadContext(usize),
    #[error("0 chunks asked for (at least 1 is needed)")]
    NoChunks,
    /// The running perplexity became NaN or infinite: the model's logits are not finite (NaN or
    /// infinite weights, or activations that overflow).
    #[error(
        "perplexity is {ppl} after chunk {chunk} of {chunks}: the model's logits are not finite \
         (NaN or infinite weights, or overflowing activations)"
    )]
    NonFinite {
        ppl: f64,
        /// 1-based, as llama.cpp numbers chunks.
        chunk: usize,
        chunks: usize,
    },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Runtime(#[from] athena_runtime::RuntimeError),
}

/// Cuts a tokenized text into llama.cpp's perplexity chunks.
/// `bos`: the BOS id when the model adds BOS (it replaces the first token of each chunk).
pub fn make_chunks(
    tokens: &[u32],
    n_ctx: usize,
    max_chunks: Option<usize>,
    bos: Option<u32>,
) -> Result<Vec<Vec<u32>>, PerplexityError> {
    if n_ctx < 4 {
        return Err(PerplexityError::BadContext(n_ctx));
    }
    if max_chunks == Some(0) {
        return Err(PerplexityError::NoChunks);
    }
    if tokens.len() < 2 * n_ctx {
        return Err(PerplexityError::TooFewTokens {
            tokens: tokens.len(),
            n_ctx,
            needed: 2 * n_ctx,
        });
    }
    let available = tokens.len() / n_ctx;
    let n = max_chunks.map_or(available, |m| m.min(available));
    Ok(tokens
        .chunks_exact(n_ctx)
        .take(n)
        .map(|c| {
            let mut c = c.to_vec();
            if let Some(b) = bos {
                c[0] = b;
            }
            c
        })
        .collect())
}

/// Negative log-likelihood of `target` under `logits`, computed like llama.cpp
/// (f32 max and differences, f64 sum of exponentials).
pub fn token_nll(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum_exp: f64 = logits.iter().map(|&l| (l - max).exp() as f64).sum();
    let log_p = (logits[target as usize] - max) as f64 - sum_exp.ln();
    -log_p
}

/// Running sums of per-token NLL and its square.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NllStats {
    pub nll: f64,
    pub nll2: f64,
    pub count: usize,
}

impl NllStats {
    pub fn add(&mut self, v: f64) {
        self.nll += v;
        self.nll2 += v * v;
        self.count += 1;
    }

    /// `exp(mean nll)`.
    pub fn ppl(&self) -> f64 {
        (self.nll / self.count as f64).exp()
    }

    /// llama.cpp's standard error of the perplexity (0 when it is undefined).
    pub fn ppl_error(&self) -> f64 {
        if self.count < 2 {
            return 0.0;
        }
        let n = self.count as f64;
        let mean = self.nll / n;
        let var = self.nll2 / n - mean * mean;
        if var > 0.0 {
            (var / (n - 1.0)).sqrt() * self.ppl()
        } else {
            0.0
        }
    }
}

/// What [`perplexity`] is doing, for progress display.
#[derive(Debug, Clone, Copy)]
pub enum PerplexityProgress {
    /// Block `layer` (of `layers`) has run over all chunks.
    Block { layer: usize, layers: usize },
    /// Chunk `index` (0-based) is scored; `running_ppl` covers chunks `0..=index`.
    Chunk { index: usize, running_ppl: f64 },
}

/// Result of a perplexity run.
#[derive(Debug, Clone, PartialEq)]
pub struct PerplexityReport {
    pub ppl: f64,
    pub ppl_error: f64,
    pub chunks: usize,
    pub n_ctx: usize,
    pub stats: NllStats,
    /// Perplexity over chunks `0..=i`, as llama.cpp prints `[i+1]ppl`.
    pub running: Vec<f64>,
}

/// Scores chunks made by [`make_chunks`] (all of length `n_ctx`).
pub fn perplexity(
    model: &Model,
    chunks: &[Vec<u32>],
    progress: &mut dyn FnMut(PerplexityProgress),
) -> Result<PerplexityReport, PerplexityError> {
    if chunks.is_empty() {
        return Err(PerplexityError::NoChunks);
    }
    let n_ctx = chunks[0].len();
    if n_ctx < 4 || chunks.iter().any(|c| c.len() != n_ctx) {
        return Err(PerplexityError::BadContext(n_ctx));
    }
    let layers = model.config().num_hidden_layers;
    let hidden = model.embed(chunks)?;
    let mut layer = 0;
    let hidden = model.forward_blocks(hidden, None, |_, _| {
        if layer > 0 {
            progress(PerplexityProgress::Block {
                layer: layer - 1,
                layers,
            });
        }
        layer += 1;
        Ok(())
    })?;
    progress(PerplexityProgress::Block {
        layer: layers - 1,
        layers,
    });

    let head = model.load_head()?;
    let first = n_ctx / 2;
    let scored = n_ctx - 1 - first;
    score_chunks(chunks, progress, |index, _| {
        let logits = head
            .logits(
                &hidden[index]
                    .narrow(0, first, scored)
                    .map_err(ModelError::from)?,
            )
            .map_err(ModelError::from)?;
        let width = logits.dim(1).map_err(ModelError::from)?;
        let flat = logits
            .flatten_all()
            .and_then(|l| l.to_vec1::<f32>())
            .map_err(ModelError::from)?;
        Ok((flat, width))
    })
}

/// Scores every chunk (all of length n_ctx): `logits_of(index, tokens)` gives the logits
/// (row-major) and their width of positions n_ctx/2 .. n_ctx-2 at least, which predict the
/// tokens after them. Stops at the first chunk that makes the perplexity NaN or infinite: such a
/// figure is an error, never a result.
fn score_chunks(
    chunks: &[Vec<u32>],
    progress: &mut dyn FnMut(PerplexityProgress),
    mut logits_of: impl FnMut(usize, &[u32]) -> Result<(Vec<f32>, usize), PerplexityError>,
) -> Result<PerplexityReport, PerplexityError> {
    let n_ctx = chunks.first().map_or(0, Vec::len);
    let first = n_ctx / 2;
    let scored = n_ctx - 1 - first;
    let mut stats = NllStats::default();
    let mut running = Vec::with_capacity(chunks.len());
    for (index, tokens) in chunks.iter().enumerate() {
        let (logits, vocab) = logits_of(index, tokens)?;
        for (i, row) in logits.chunks_exact(vocab).take(scored).enumerate() {
            stats.add(token_nll(row, tokens[first + i + 1]));
        }
        if !stats.ppl().is_finite() {
            return Err(PerplexityError::NonFinite {
                ppl: stats.ppl(),
                chunk: index + 1,
                chunks: chunks.len(),
            });
        }
        running.push(stats.ppl());
        progress(PerplexityProgress::Chunk {
            index,
            running_ppl: stats.ppl(),
        });
    }
    Ok(PerplexityReport {
        ppl: stats.ppl(),
        ppl_error: stats.ppl_error(),
        chunks: chunks.len(),
        n_ctx,
        stats,
        running,
    })
}

/// [`perplexity`] through athena-runtime's forward: each chunk runs as one batch in a fresh KV
/// cache, scored at the same positions as the reference path.
pub fn perplexity_runtime(
    model: &athena_runtime::Model,
    chunks: &[Vec<u32>],
    kv: athena_runtime::KvType,
    progress: &mut dyn FnMut(PerplexityProgress),
) -> Result<PerplexityReport, PerplexityError> {
    if chunks.is_empty() {
        return Err(PerplexityError::NoChunks);
    }
    let n_ctx = chunks[0].len();
    if n_ctx < 4 || chunks.iter().any(|c| c.len() != n_ctx) {
        return Err(PerplexityError::BadContext(n_ctx));
    }
    let mut cache = model.new_cache(kv, n_ctx);
    score_chunks(chunks, progress, |_, tokens| {
        cache.truncate(0);
        Ok((
            model.forward(&mut cache, tokens, n_ctx / 2)?,
            model.config.vocab,
        ))
    })
}
