//! Athena's logits of every position of a token sequence, in the layout `tools/llama_logits.cpp`
//! writes (little-endian f32, row-major `[tokens x n_vocab]`), so the two can be compared
//! byte for byte by `tools/check-families.sh`:
//!
//! ```text
//! cargo run --release --example dump-logits -- MODEL --tokens 1,2,3 --engine reference --out logits.bin
//! ```
//!
//! MODEL is an HF folder or a GGUF file. `--engine reference` runs the converter's candle model
//! (`athena::model::Model::logits`) over the folder's safetensors or the file's tensors as the
//! checkpoint module reads them; `--engine runtime` runs athena-runtime's forward on a GGUF file
//! (one batch at positions 0.., its f16 KV cache). Prints `tokens=N n_vocab=V engine=E`; an error
//! is one line on stderr and exit status 1 (2 for a usage error). OUT is written under a
//! temporary name and renamed.

use std::io::Write;
use std::path::{Path, PathBuf};

use athena::eval::file::{open_gguf, open_source};
use athena::model::Model;
use candle_core::Device;
use clap::Parser;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum EngineArg {
    /// The converter's candle model (HF folder or GGUF file).
    Reference,
    /// athena-runtime's forward (GGUF file).
    Runtime,
}

#[derive(Parser)]
#[command(
    name = "dump-logits",
    about = "Athena's logits of every position of a token sequence"
)]
struct Args {
    /// HF model folder or GGUF file.
    model: PathBuf,
    /// Token ids, comma-separated, evaluated at positions 0, 1, ...
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    tokens: Vec<u32>,
    /// Which forward computes the logits.
    #[arg(long, value_enum, default_value = "reference")]
    engine: EngineArg,
    /// Output file: little-endian f32, [tokens x n_vocab].
    #[arg(long)]
    out: PathBuf,
}

/// The logits, row-major `[tokens x vocab]`, and the vocabulary size.
fn logits(args: &Args) -> Result<(Vec<f32>, usize), String> {
    let in_model = |e: &dyn std::fmt::Display| format!("{}: {e}", args.model.display());
    match args.engine {
        EngineArg::Reference => {
            let source = open_source(&args.model)?;
            let model = Model::new(source.as_ref(), Device::Cpu).map_err(|e| in_model(&e))?;
            let out = model
                .logits(std::slice::from_ref(&args.tokens))
                .map_err(|e| in_model(&e))?;
            let vocab = out[0].dim(1).map_err(|e| in_model(&e))?;
            let flat = out[0]
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| in_model(&e))?;
            Ok((flat, vocab))
        }
        EngineArg::Runtime => {
            if args.model.is_dir() {
                return Err(in_model(
                    &"the runtime engine runs GGUF files; use --engine reference for a model folder",
                ));
            }
            let file = open_gguf(&args.model)?;
            let model = athena_runtime::Model::load(&file).map_err(|e| in_model(&e))?;
            let mut cache = model.new_cache(athena_runtime::KvType::F16, args.tokens.len());
            let flat = model
                .forward(&mut cache, &args.tokens, 0)
                .map_err(|e| in_model(&e))?;
            Ok((flat, model.config.vocab))
        }
    }
}

/// Writes `data` as little-endian f32 to `path`, via a temporary file renamed into place.
fn write_f32(path: &Path, data: &[f32]) -> Result<(), String> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        for v in data {
            f.write_all(&v.to_le_bytes())?;
        }
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: {e}", path.display())
    })
}

fn main() {
    let args = Args::parse();
    let result = logits(&args).and_then(|(flat, vocab)| {
        write_f32(&args.out, &flat)?;
        Ok(vocab)
    });
    match result {
        Ok(vocab) => println!(
            "tokens={} n_vocab={vocab} engine={}",
            args.tokens.len(),
            format!("{:?}", args.engine).to_lowercase()
        ),
        Err(e) => {
            eprintln!("dump-logits: {e}");
            std::process::exit(1);
        }
    }
}
