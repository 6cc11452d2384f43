//! athena-eval: perplexity of an HF model folder on a text file, computed like llama.cpp's
//! llama-perplexity so the numbers can be compared directly.

use athena::checkpoint::gguf_source::GgufSource;
use athena::checkpoint::vocab::GgufVocab;
use athena::checkpoint::{HfFolder, TensorSource, Tokenizer};
use athena::eval::{make_chunks, perplexity, PerplexityProgress};
use athena::model::Model;
use candle_core::Device;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Measure the perplexity of a Hugging Face model folder on a text file.
///
/// The text is tokenized as a whole and cut into non-overlapping chunks of --ctx tokens; in each
/// chunk only the second half of the positions is scored (as llama.cpp's llama-perplexity does),
/// so results are comparable with `llama-perplexity -f FILE -c CTX --chunks N`.
///
/// The model runs one decoder block at a time over all chunks: memory is one block plus
/// chunks x ctx x hidden_size x 4 bytes of activations.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    long_about,
    after_long_help = "Example (SmolLM2-135M dequantized to f32, llama.cpp reports 12.97 for the same setting):\n  athena-eval ~/.cache/athena/models/SmolLM2-135M-Instruct --text wiki.utf8 --ctx 512 --chunks 32\n  ...\n  ppl = 12.9664 +/- 0.42305 (32 chunks x 512 tokens, 8160 scored, ...)"
)]
struct Args {
    /// HF model folder (config.json, model.safetensors or shards + index, tokenizer.json), or a
    /// llama.cpp GGUF file (dequantized on the fly; tokenizer rebuilt from its vocabulary).
    model: PathBuf,
    /// UTF-8 text to evaluate (read whole).
    #[arg(long, value_name = "FILE")]
    text: PathBuf,
    /// Context length of each chunk, in tokens.
    #[arg(long, default_value_t = 512)]
    ctx: usize,
    /// Evaluate only the first N chunks (default: all that fit).
    #[arg(long, value_name = "N")]
    chunks: Option<usize>,
    /// Compute device: "cpu", or "cuda" / "cuda:N" (needs the `cuda` build feature).
    #[arg(long, default_value = "cpu")]
    device: String,
}

fn device(spec: &str) -> Result<Device, String> {
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

/// An HF folder, or a GGUF file with its tokenizer rebuilt from the GGUF vocabulary.
fn open_model(path: &Path) -> Result<(Box<dyn TensorSource>, Tokenizer), String> {
    if !path.exists() {
        return Err(format!(
            "{}: no such model folder or GGUF file",
            path.display()
        ));
    }
    if path.is_dir() {
        let folder = HfFolder::open_validated(path).map_err(|e| e.to_string())?;
        let tokenizer = Tokenizer::from_dir(path).map_err(|e| e.to_string())?;
        return Ok((Box::new(folder), tokenizer));
    }
    let source = GgufSource::open(path).map_err(|e| e.to_string())?;
    let in_file = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let vocab = GgufVocab::from_gguf(source.gguf()).map_err(|e| in_file(&e))?;
    let tokenizer_json = vocab.tokenizer_json().map_err(|e| in_file(&e))?;
    let config = vocab.tokenizer_config_json().map_err(|e| in_file(&e))?;
    let tokenizer =
        Tokenizer::from_json(tokenizer_json.to_string().as_bytes(), &config, path, path)
            .map_err(|e| e.to_string())?;
    Ok((Box::new(source), tokenizer))
}

fn run(args: Args) -> Result<(), String> {
    let start = Instant::now();
    let device = device(&args.device)?;
    let (source, tokenizer) = open_model(&args.model)?;
    let text =
        std::fs::read_to_string(&args.text).map_err(|e| format!("{}: {e}", args.text.display()))?;
    let tokens = tokenizer.encode(&text, true).map_err(|e| e.to_string())?;
    let bos = if tokenizer.add_bos_token {
        tokenizer.bos_token_id
    } else {
        None
    };
    let chunks = make_chunks(&tokens, args.ctx, args.chunks, bos).map_err(|e| e.to_string())?;
    eprintln!(
        "{}: {} tokens, {} chunks of {} (add_bos: {}), tokenized in {:.1}s",
        args.text.display(),
        tokens.len(),
        chunks.len(),
        args.ctx,
        bos.is_some(),
        start.elapsed().as_secs_f64()
    );

    let model = Model::new(source.as_ref(), device).map_err(|e| e.to_string())?;
    let layers = model.config().num_hidden_layers;
    let bar = ProgressBar::new((layers + chunks.len()) as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let mut running = String::new();
    let report = perplexity(&model, &chunks, &mut |p| match p {
        PerplexityProgress::Block { layer, layers } => {
            bar.set_message(format!("block {}/{layers}", layer + 1));
            bar.inc(1);
        }
        PerplexityProgress::Chunk { index, running_ppl } => {
            running.push_str(&format!("[{}]{:.4},", index + 1, running_ppl));
            bar.set_message(format!("chunk {} ppl {running_ppl:.4}", index + 1));
            bar.inc(1);
        }
    })
    .map_err(|e| e.to_string())?;
    bar.finish_and_clear();
    println!("{running}");
    println!(
        "ppl = {:.4} +/- {:.5} ({} chunks x {} tokens, {} scored, {:.1}s)",
        report.ppl,
        report.ppl_error,
        report.chunks,
        report.n_ctx,
        report.stats.count,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("athena-eval: {e}");
        std::process::exit(1);
    }
}
