//! Perplexity of a model on disk (HF folder or GGUF file, Athena tensors included): the one code
//! path behind athena-eval, athena-verify --text and athena-convert --eval-text, so the three
//! report the same figure for the same file and text. GGUF files run through athena-runtime's
//! forward (the one a deployment runs); the reference path (reference decoder + the candle model
//! the converter calibrates with) stays available as [`Engine::Reference`] and for HF folders.

use std::path::{Path, PathBuf};

use candle_core::Device;

use super::{
    make_chunks, perplexity, perplexity_runtime, PerplexityError, PerplexityProgress,
    PerplexityReport,
};
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

/// Parses a --chunks value for clap: a whole number, at least 1.
pub fn parse_chunks(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("at least 1 chunk is needed".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Parses a --ctx value for clap: a whole number of tokens, at least 4.
pub fn parse_ctx(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n < 4 => Err("a context needs at least 4 tokens".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

impl EvalText {
    /// The options alone, checked before any model is loaded.
    pub fn check(&self) -> Result<(), PerplexityError> {
        if self.ctx < 4 {
            return Err(PerplexityError::BadContext(self.ctx));
        }
        if self.chunks == Some(0) {
            return Err(PerplexityError::NoChunks);
        }
        Ok(())
    }

    /// Tokens the chunks need when their number is given (`None`: all of the text). At least two
    /// contexts, llama-perplexity's minimum.
    fn tokens_needed(&self) -> Option<usize> {
        self.chunks.map(|n| n.max(2).saturating_mul(self.ctx))
    }
}

/// The text's side of a run, for the report line.
#[derive(Debug, Clone)]
pub struct TextInfo {
    /// Tokens read: the whole text's, or (`whole` false) the first ones, enough for the chunks.
    pub tokens: usize,
    pub whole: bool,
    pub chunks: usize,
    pub add_bos: bool,
    /// Why the reference engine runs a GGUF file that `Engine::Auto` would give the runtime.
    pub fallback: Option<String>,
}

/// The tokens of a text file: all of them, or the first `needed` when that many exist.
#[derive(Debug, Clone)]
pub struct TextTokens {
    pub tokens: Vec<u32>,
    /// Whether the whole text was read (else the text goes on past the tokens returned).
    pub whole: bool,
}

/// Tokens past the ones needed that a prefix of the text must yield before its first `needed`
/// tokens are taken as the whole text's (see [`text_tokens`]).
const PREFIX_MARGIN: usize = 256;

/// Tokenizes the text at `path` (with BOS when the model adds one), reading no more of it than
/// the first `needed` tokens take: memory follows the chunks evaluated, not the size of the text.
///
/// Without `needed`, or when the text is shorter, the whole text is tokenized at once, as
/// llama-perplexity does. Otherwise a prefix is read and tokenized on its own, grown until it
/// yields `needed` + [`PREFIX_MARGIN`] tokens, and its first `needed` tokens are returned. They
/// are the whole text's first `needed` tokens: a tokenizer sees the same text up to the cut, and
/// the cut is made where none merges across, after a newline that a printable ASCII character
/// follows (every pre-tokenizer splits there: the byte-level BPE regexes of GPT-2, llama 3 and
/// qwen2 end a pre-token at such a newline, and SentencePiece vocabularies have no token that
/// spans one). At most the last few tokens before a cut could differ from the whole text's; the
/// margin keeps them out of the tokens returned, also where a text has no newline to cut at
/// (one long line of digits).
pub fn text_tokens(
    tokenizer: &Tokenizer,
    path: &Path,
    needed: Option<usize>,
) -> Result<TextTokens, String> {
    use std::io::Read;
    let in_text = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    if path.is_dir() {
        return Err(in_text(&"is a directory, not a text file"));
    }
    let mut file = std::fs::File::open(path).map_err(|e| in_text(&e))?;
    let mut buf: Vec<u8> = Vec::new();
    // About 4 bytes of English per token to start with; corrected by what a prefix yields.
    let mut want = needed.map_or(usize::MAX, |n| {
        n.saturating_add(PREFIX_MARGIN)
            .saturating_mul(4)
            .saturating_add(4096)
    });
    loop {
        let missing = want.saturating_sub(buf.len()) as u64;
        let got = (&mut file)
            .take(missing)
            .read_to_end(&mut buf)
            .map_err(|e| in_text(&e))?;
        let whole = (got as u64) < missing;
        let end = if whole { buf.len() } else { prefix_end(&buf) };
        let text = match std::str::from_utf8(&buf[..end]) {
            Ok(t) => t,
            Err(e) => {
                return Err(in_text(&format_args!(
                    "not valid UTF-8 (at byte {})",
                    e.valid_up_to()
                )))
            }
        };
        let mut tokens = tokenizer.encode(text, true).map_err(|e| in_text(&e))?;
        let Some(needed) = needed.filter(|_| !whole) else {
            return Ok(TextTokens {
                tokens,
                whole: true,
            });
        };
        if tokens.len() >= needed.saturating_add(PREFIX_MARGIN) {
            tokens.truncate(needed);
            return Ok(TextTokens {
                tokens,
                whole: false,
            });
        }
        // Read on: at least twice as much, or as much as this prefix's bytes per token say.
        let per_token = end.max(1) as f64 / tokens.len().max(1) as f64;
        let estimate = (needed.saturating_add(PREFIX_MARGIN) as f64 * per_token * 1.25) as usize;
        want = want.saturating_mul(2).max(estimate.saturating_add(4096));
    }
}

/// Where a prefix of a longer text in `buf` ends: after the last newline that a printable ASCII
/// character follows, in the second half of `buf` (a point no tokenizer merges across); else at
/// the last whole UTF-8 character.
fn prefix_end(buf: &[u8]) -> usize {
    let half = buf.len() / 2;
    if let Some(p) = (half.max(1)..buf.len())
        .rev()
        .find(|&p| buf[p - 1] == b'\n' && buf[p].is_ascii_graphic())
    {
        return p;
    }
    match std::str::from_utf8(buf) {
        // A character cut at the end of the buffer: stop before it (an invalid byte earlier is
        // reported by the caller).
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        _ => buf.len(),
    }
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
    text.check()
        .map_err(|e| format!("{}: {e}", text.path.display()))?;
    let is_file = model_path.is_file();
    let auto = matches!(engine, Engine::Auto);
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
    let chunks_of =
        |tokenizer: &Tokenizer, fallback: Option<String>, on_text: &mut dyn FnMut(&TextInfo)| {
            let read = text_tokens(tokenizer, &text.path, text.tokens_needed())?;
            let bos = if tokenizer.add_bos_token {
                tokenizer.bos_token_id
            } else {
                None
            };
            let chunks = make_chunks(&read.tokens, text.ctx, text.chunks, bos)
                .map_err(|e| format!("{}: {e}", text.path.display()))?;
            on_text(&TextInfo {
                tokens: read.tokens.len(),
                whole: read.whole,
                chunks: chunks.len(),
                add_bos: bos.is_some(),
                fallback,
            });
            Ok::<_, String>(chunks)
        };
    // A NaN or infinite perplexity is the model file's fault: name it.
    let model_err = |e: PerplexityError| match e {
        PerplexityError::NonFinite { .. } => format!("{}: {e}", model_path.display()),
        e => e.to_string(),
    };
    // The reference engine on `device`; `fallback` says why it runs a file Auto gave the runtime.
    let reference = |device: Device,
                     fallback: Option<String>,
                     on_text: &mut dyn FnMut(&TextInfo),
                     progress: &mut dyn FnMut(PerplexityProgress)| {
        let (source, tokenizer) = open_model(model_path)?;
        let chunks = chunks_of(&tokenizer, fallback, on_text)?;
        let model = Model::new(source.as_ref(), device).map_err(|e| e.to_string())?;
        perplexity(&model, &chunks, progress).map_err(model_err)
    };
    match engine {
        Engine::Runtime(kv) => {
            let file = open_gguf(model_path)?;
            let tokenizer = tokenizer_of_gguf(model_path, &file)?;
            match athena_runtime::Model::load(&file) {
                Ok(model) => {
                    let chunks = chunks_of(&tokenizer, None, on_text)?;
                    perplexity_runtime(&model, &chunks, kv, progress).map_err(model_err)
                }
                // llama.cpp's other types (K-quants, Q4_0, Q5_0, ...) are read by the reference
                // path, so a file of any llama.cpp quantizer compares without a flag.
                Err(e @ athena_runtime::RuntimeError::UnsupportedType { .. }) if auto => {
                    reference(Device::Cpu, Some(e.to_string()), on_text, progress)
                }
                Err(e) => Err(format!("{}: {e}", model_path.display())),
            }
        }
        Engine::Reference(device) => reference(device, None, on_text, progress),
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
                        "{}: {}{} tokens, {} chunks of {} (add_bos: {}), tokenized in {:.1}s",
                        text.path.display(),
                        if info.whole { "" } else { "the first " },
                        info.tokens,
                        info.chunks,
                        text.ctx,
                        info.add_bos,
                        start.elapsed().as_secs_f64()
                    );
                    if let Some(why) = &info.fallback {
                        eprintln!(
                            "{}: {why}: measuring with the reference engine",
                            model_path.display()
                        );
                    }
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
