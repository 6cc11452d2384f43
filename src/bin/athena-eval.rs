//! athena-eval: perplexity of a GGUF file or an HF model folder on a text file, computed like
//! llama.cpp's llama-perplexity so the numbers can be compared directly.

use athena::eval::file::{
    parse_chunks, parse_ctx, parse_device, perplexity_with_bar, running_line, summary_line, Engine,
    EvalText,
};
use athena::signals;
use athena_runtime::KvType;
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Measure the perplexity of a GGUF file or a Hugging Face model folder on a text file.
///
/// The text is tokenized as a whole and cut into non-overlapping chunks of --ctx tokens; in each
/// chunk only the second half of the positions is scored (as llama.cpp's llama-perplexity does),
/// so results are comparable with `llama-perplexity -f FILE -c CTX --chunks N`.
///
/// A GGUF file runs through athena-runtime, one chunk at a time from the compressed weights (the
/// forward athena-run uses). The reference engine (HF folders, or --engine reference) runs one
/// decoder block at a time over all chunks: memory is one block plus chunks x ctx x hidden_size x
/// 4 bytes of activations. With --chunks, only as much of the text is read and tokenized as the
/// chunks need.
///
/// Exit status: 0 success, 1 invalid input (model, text, or a perplexity that is NaN or
/// infinite), 2 usage, 130 and 143 when interrupted by SIGINT and SIGTERM.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    long_about,
    after_long_help = "Example (SmolLM2-135M dequantized to f32, llama.cpp reports 12.97 for the same setting):\n  athena-eval ~/.cache/athena/models/SmolLM2-135M-Instruct --text wiki.utf8 --ctx 512 --chunks 32\n  ...\n  ppl = 12.9664 +/- 0.42305 (32 chunks x 512 tokens, 8160 scored) 37.1s"
)]
struct Args {
    /// HF model folder (config.json, model.safetensors or shards + index, tokenizer.json), or a
    /// GGUF file (Athena or plain; tokenizer rebuilt from its vocabulary).
    model: PathBuf,
    /// UTF-8 text to evaluate (read whole, or as far as --chunks needs).
    #[arg(long, value_name = "FILE")]
    text: PathBuf,
    /// Context length of each chunk, in tokens (at least 4).
    #[arg(long, default_value_t = 512, value_parser = parse_ctx)]
    ctx: usize,
    /// Evaluate only the first N chunks (default: all that fit).
    #[arg(long, value_name = "N", value_parser = parse_chunks)]
    chunks: Option<usize>,
    /// Which forward computes the logits: "runtime" (athena-runtime, the compressed weights as
    /// a deployment runs them; GGUF files only), "reference" (the reference decoder and the
    /// converter's model; the only one for HF folders), or "auto" (runtime for GGUF files, the
    /// reference engine for files with types the runtime does not read, such as llama.cpp's
    /// Q4_K or Q5_0).
    #[arg(long, default_value = "auto", value_parser = ["auto", "runtime", "reference"])]
    engine: String,
    /// KV cache storage of the runtime engine: f16, or q8 (int8 with a scale per position and
    /// head).
    #[arg(long, default_value = "f16", value_parser = ["f16", "q8"])]
    kv: String,
    /// Compute device of the reference engine: "cpu", or "cuda" / "cuda:N" (needs the `cuda`
    /// build feature). A device other than cpu selects the reference engine.
    #[arg(long, default_value = "cpu")]
    device: String,
}

fn run(args: Args) -> Result<(), String> {
    let start = Instant::now();
    let device = parse_device(&args.device)?;
    let kv = match args.kv.as_str() {
        "q8" => KvType::Q8,
        _ => KvType::F16,
    };
    let engine = match (args.engine.as_str(), args.device.as_str()) {
        ("runtime", "cpu") => Engine::Runtime(kv),
        ("runtime", _) => return Err("--device applies to the reference engine only".into()),
        // Auto falls back to the reference engine for types the runtime does not read.
        ("auto", "cpu") if args.model.is_file() && args.kv == "f16" => Engine::Auto,
        ("auto", "cpu") if args.model.is_file() => Engine::Runtime(kv),
        _ if args.kv != "f16" => {
            return Err("--kv applies to the runtime engine (GGUF files) only".into())
        }
        _ => Engine::Reference(device),
    };

    let text = EvalText {
        path: args.text.clone(),
        ctx: args.ctx,
        chunks: args.chunks,
    };
    let report = perplexity_with_bar(&args.model, &text, engine, false)?;
    println!("{}", running_line(&report));
    println!(
        "{} {:.1}s",
        summary_line(&report),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    signals::install("athena-eval", &[&args.model]);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("athena-eval: {e}");
            ExitCode::from(1)
        }
    }
}
