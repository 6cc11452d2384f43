//! Perplexity of a model on disk (HF folder or GGUF file, Athena tensors included): the one code
//! path behind athena-eval, athena-verify --text and athena-convert --eval-text, so the three
//! report the same figure for the same file and text. GGUF files run through athena-runtime's
//! forward (the one a deployment runs); the reference path (reference decoder + the candle model
//! the converter calibrates with) stays available as [`Engine::Reference`] and for HF folders.

use std::path::{Path, PathBuf};

use candle_core::Device;

use super::{make_chunks, perplexity, perplexity_runtime, PerplexityProgress, PerplexityReport};
use crate::checkpoint::gguf_source::GgufSource;
use crate::checkpoint::vocab::GgufVocab;
use crate::checkpoint::{HfFolder, TensorSource, Tokenizer};
use crate::container::gguf::{GgufError, GgufFile};
use crate::model::Model;

/// What to measure on: a text file cut into `chunks` chunks of `ctx` tokens (all that fit when
/// `chunks` is None).
#[derive(Debug, Clone)]
pub struct EvalText {
    pub path: PathBuf,
    pub ctx: usize,
    pub chunks: Option<usize>,
}

/// The text's side of a run, for the report line.
#[derive(Debug, Clone)]
pub struct TextInfo {
    pub tokens: usize,
    pub chunks: usize,
    pub add_bos: bool,
}

/// "cpu", or "cuda" / "cuda:N" (the latter needs the `cuda` build feature).
pub fn parse_device(spec: &str) -> Result<Device, String> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = s
                .strip_prefix("cuda:")
                .map(|n| n.parse::<usize>().map_err(|_| format!("bad device '{s}'")))
                .transpose()?
                .unwrap_or(0);
            Device::new_cuda(ordinal).map_err(|e| format!("device '{s}': {e}"))
        }
        s => Err(format!("unknown device '{s}' (use cpu or cuda[:N])")),
    }
}

/// The weights of an HF folder or a GGUF file.
enum Weights {
    Folder(HfFolder),
    Gguf(GgufSource),
}

fn open_weights(path: &Path) -> Result<Weights, String> {
    if !path.exists() {
        return Err(format!(
            "{}: no such model folder or GGUF file",
            path.display()
        ));
    }
    if path.is_dir() {
        let folder = HfFolder::open_validated(path).map_err(|e| e.to_string())?;
        return Ok(Weights::Folder(folder));
    }
    Ok(Weights::Gguf(
        GgufSource::open(path).map_err(|e| e.to_string())?,
    ))
}

/// The weights of an HF folder or a GGUF file, without its tokenizer (athena-verify --reference).
pub fn open_source(path: &Path) -> Result<Box<dyn TensorSource>, String> {
    Ok(match open_weights(path)? {
        Weights::Folder(folder) => Box::new(folder),
        Weights::Gguf(source) => Box::new(source),
    })
}

/// An HF folder, or a GGUF file with its tokenizer rebuilt from the GGUF vocabulary.
pub fn open_model(path: &Path) -> Result<(Box<dyn TensorSource>, Tokenizer), String> {
    let source = match open_weights(path)? {
        Weights::Folder(folder) => {
            let tokenizer = Tokenizer::from_dir(path).map_err(|e| e.to_string())?;
            return Ok((Box::new(folder), tokenizer));
        }
        Weights::Gguf(source) => source,
    };
    let tokenizer = tokenizer_of_gguf(path, source.gguf())?;
    Ok((Box::new(source), tokenizer))
}

/// Opens and validates a GGUF file; every error is one line that names the file.
pub fn open_gguf(path: &Path) -> Result<GgufFile, String> {
    if path.is_dir() {
        return Err(format!(
            "{}: is a directory, not a GGUF file",
            path.display()
        ));
    }
    GgufFile::open(path).map_err(|e| match e {
        GgufError::Io { .. } => e.to_string(),
        _ => format!("{}: {e}", path.display()),
    })
}

/// The tokenizer of a GGUF file, rebuilt from its vocabulary (`tokenizer.ggml.*`).
pub fn tokenizer_of_gguf(path: &Path, file: &GgufFile) -> Result<Tokenizer, String> {
    let in_file = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let vocab = GgufVocab::from_gguf(file).map_err(|e| in_file(&e))?;
    let tokenizer_json = vocab.tokenizer_json().map_err(|e| in_file(&e))?;
    let config = vocab.tokenizer_config_json().map_err(|e| in_file(&e))?;
    Tokenizer::from_json(tokenizer_json.to_string().as_bytes(), &config, path, path)
        .map_err(|e| e.to_string())
}

/// Which forward computes the logits.
#[derive(Debug, Clone)]
pub enum Engine {
    /// athena-runtime for GGUF files (the weights stay compressed), the reference path for HF
    /// folders.
    Auto,
    /// athena-runtime's forward (GGUF files only), with this KV cache storage.
    Runtime(athena_runtime::KvType),
    /// The reference decoder and the candle model the converter calibrates with, on `Device`.
    Reference(Device),
}

/// Tokenizes `text` with the model's own tokenizer and measures perplexity like llama-perplexity.
/// `on_text` hears about the tokenized text before the (long) model run starts.
pub fn perplexity_of_model(
    model_path: &Path,
    text: &EvalText,
    engine: Engine,
    on_text: &mut dyn FnMut(&TextInfo),
    progress: &mut dyn FnMut(PerplexityProgress),
) -> Result<PerplexityReport, String> {
    let is_file = model_path.is_file();
    let engine = match engine {
        Engine::Auto if is_file => Engine::Runtime(athena_runtime::KvType::F16),
        Engine::Auto => Engine::Reference(Device::Cpu),
        Engine::Runtime(_) if !is_file => {
            return Err(format!(
                "{}: the runtime engine runs GGUF files; use the reference engine for a model \
                 folder",
                model_path.display()
            ))
        }
        resolved => resolved,
    };
    let chunks_of = |tokenizer: &Tokenizer, on_text: &mut dyn FnMut(&TextInfo)| {
        let raw = std::fs::read_to_string(&text.path)
            .map_err(|e| format!("{}: {e}", text.path.display()))?;
        let tokens = tokenizer.encode(&raw, true).map_err(|e| e.to_string())?;
        let bos = if tokenizer.add_bos_token {
            tokenizer.bos_token_id
        } else {
            None
        };
        let chunks = make_chunks(&tokens, text.ctx, text.chunks, bos)
            .map_err(|e| format!("{}: {e}", text.path.display()))?;
        on_text(&TextInfo {
            tokens: tokens.len(),
            chunks: chunks.len(),
            add_bos: bos.is_some(),
        });
        Ok::<_, String>(chunks)
    };
    match engine {
        Engine::Runtime(kv) => {
            let file = open_gguf(model_path)?;
            let tokenizer = tokenizer_of_gguf(model_path, &file)?;
            let model = athena_runtime::Model::load(&file)
                .map_err(|e| format!("{}: {e}", model_path.display()))?;
            let chunks = chunks_of(&tokenizer, on_text)?;
            perplexity_runtime(&model, &chunks, kv, progress).map_err(|e| e.to_string())
        }
        Engine::Reference(device) => {
            let (source, tokenizer) = open_model(model_path)?;
            let chunks = chunks_of(&tokenizer, on_text)?;
            let model = Model::new(source.as_ref(), device).map_err(|e| e.to_string())?;
            perplexity(&model, &chunks, progress).map_err(|e| e.to_string())
        }
        Engine::Auto => unreachable!("Auto is resolved above"),
    }
}

/// One line: `ppl = P +/- E (C chunks x N tokens, S scored)`.
pub fn summary_line(report: &PerplexityReport) -> String {
    format!(
        "ppl = {:.4} +/- {:.5} ({} chunks x {} tokens, {} scored)",
        report.ppl, report.ppl_error, report.chunks, report.n_ctx, report.stats.count
    )
}

/// [`perplexity_of_model`] behind a progress bar (hidden when `quiet`), the way the command-line
/// tools run it.
pub fn perplexity_with_bar(
    model_path: &Path,
    text: &EvalText,
    engine: Engine,
    quiet: bool,
) -> Result<PerplexityReport, String> {
    let start = std::time::Instant::now();
    let bar = crate::progress::bar(quiet, crate::progress::WITH_ETA);
    bar.set_message(format!("perplexity on {}", text.path.display()));
    let report = perplexity_of_model(
        model_path,
        text,
        engine,
        &mut |info| {
            bar.set_length(info.chunks as u64);
            if !quiet {
                bar.suspend(|| {
                    eprintln!(
                        "{}: {} tokens, {} chunks of {} (add_bos: {}), tokenized in {:.1}s",
                        text.path.display(),
                        info.tokens,
                        info.chunks,
                        text.ctx,
                        info.add_bos,
                        start.elapsed().as_secs_f64()
                    )
                });
            }
        },
        &mut |p| match p {
            PerplexityProgress::Block { layer, layers } => {
                if layer == 0 {
                    bar.inc_length(layers as u64);
                }
                bar.set_message(format!("perplexity: block {}/{layers}", layer + 1));
                bar.inc(1);
            }
            PerplexityProgress::Chunk { index, running_ppl } => {
                bar.set_message(format!(
                    "perplexity: chunk {} ppl {running_ppl:.4}",
                    index + 1
                ));
                bar.inc(1);
            }
        },
    );
    bar.finish_and_clear();
    report
}

/// The running perplexities as llama-perplexity prints them: `[1]p1,[2]p2,...`.
pub fn running_line(report: &PerplexityReport) -> String {
    report
        .running
        .iter()
        .enumerate()
        .map(|(i, p)| format!("[{}]{p:.4},", i + 1))
        .collect()
}
