//! athena-convert: Hugging Face checkpoint -> GGUF. A thin shell over `athena::export`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use athena::checkpoint::gguf_source::GgufSource;
use athena::checkpoint::hf::HfFolder;
use athena::checkpoint::TensorSource;
use athena::export::{self, ExportError, PlainOptions, PlainType, Progress, TokenizerFiles};

const ABOUT: &str =
    "Convert a Hugging Face LLM checkpoint (llama, mistral, qwen2) into a GGUF file.";

const LONG_ABOUT: &str = "\
Convert a Hugging Face LLM checkpoint (llama, mistral, qwen2) into a GGUF file that stock
llama.cpp loads: every tensor under its llama.cpp name and layout (q/k rows permuted for llama
and mistral, tied embeddings without output.weight), the full llama.cpp metadata
(hyperparameters, tokenizer with merges or scores, special tokens, pre-tokenizer name, chat
template).

MODEL is a Hugging Face folder (config.json, *.safetensors, tokenizer.json, and optionally
tokenizer_config.json / chat_template.jinja). For convenience MODEL may also be a .gguf file:
its tensors are dequantized to f32 and re-encoded, and its tokenizer is rebuilt from its own
vocabulary (the way athena-materialize writes tokenizer.json).

The output is written to a temporary file beside OUT and renamed into place only when complete;
on any error nothing is left behind.";

const AFTER_HELP: &str = "\
Examples:
  # Half-precision export of an HF folder (the default type is f16)
  athena-convert ./SmolLM2-135M-Instruct smollm2-f16.gguf

  # Q8_0, with a custom general.name
  athena-convert ./Qwen2.5-Coder-0.5B qwen-q8_0.gguf --type q8_0 --name Qwen2.5-Coder-0.5B

  # Re-encode an existing GGUF (e.g. a dequantized Q4_1) as bf16, replacing OUT if it exists
  athena-convert SmolLM2-135M-Instruct.Q4_1.gguf smollm2-bf16.gguf --type bf16 --force

Tensor types (llama.cpp's rules): 1-D tensors, norms and biases are always F32. With --type q8_0,
a matrix whose rows are not a multiple of 32 long is written as F16 instead.

Athena quantization (--bits, --vq, --calib, ...) is not part of this build.

Exit status: 0 on success, 1 when the conversion fails (the message names the file or tensor),
2 for command-line usage errors.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TypeArg {
    /// 32-bit float: lossless, 4 bytes per weight.
    F32,
    /// IEEE half precision: 2 bytes per weight (llama.cpp's default).
    F16,
    /// bfloat16: 2 bytes per weight, f32's range with 8 bits of mantissa.
    Bf16,
    /// ggml Q8_0: blocks of 32 int8 with an f16 scale, 8.5 bits per weight.
    #[value(name = "q8_0")]
    Q8_0,
}

impl From<TypeArg> for PlainType {
    fn from(t: TypeArg) -> Self {
        match t {
            TypeArg::F32 => PlainType::F32,
            TypeArg::F16 => PlainType::F16,
            TypeArg::Bf16 => PlainType::BF16,
            TypeArg::Q8_0 => PlainType::Q8_0,
        }
    }
}

#[derive(Debug, Parser)]
#[command(name = "athena-convert", version, about = ABOUT, long_about = LONG_ABOUT, after_long_help = AFTER_HELP)]
struct Cli {
    /// Hugging Face model folder, or a .gguf file.
    #[arg(value_name = "MODEL")]
    model: PathBuf,

    /// Output GGUF file.
    #[arg(value_name = "OUT.gguf")]
    out: PathBuf,

    /// Type of the weight matrices (norms and biases stay f32).
    #[arg(
        long = "type",
        short = 't',
        value_name = "TYPE",
        value_enum,
        default_value = "f16"
    )]
    ty: TypeArg,

    /// Value of general.name [default: the model folder's name, or the input GGUF's general.name].
    #[arg(long)]
    name: Option<String>,

    /// Folder with tokenizer.json (and tokenizer_config.json) [default: MODEL itself; for a
    /// .gguf MODEL, the tokenizer is rebuilt from its vocabulary].
    #[arg(long, value_name = "DIR")]
    tokenizer_dir: Option<PathBuf>,

    /// Replace OUT if it already exists.
    #[arg(long, short = 'f')]
    force: bool,

    /// No progress bar or summary.
    #[arg(long, short = 'q')]
    quiet: bool,
    // Room for the Athena quantization options (--bits, --vq, --calib, ...): they belong to the
    // quantizing pipeline and are added together with it, not here as no-ops.
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("athena-convert: error: {e}");
            ExitCode::from(1)
        }
    }
}

struct Input {
    source: Box<dyn TensorSource>,
    tokenizer: TokenizerFiles,
    name: String,
}

fn open_input(cli: &Cli) -> Result<Input, ExportError> {
    let model = &cli.model;
    let meta = std::fs::metadata(model).map_err(|source| ExportError::Io {
        path: model.clone(),
        source,
    })?;
    if meta.is_dir() {
        let src = HfFolder::open_validated(model)?;
        let tokenizer = TokenizerFiles::read(cli.tokenizer_dir.as_deref().unwrap_or(model))?;
        let name = model
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| file_stem(model));
        return Ok(Input {
            source: Box::new(src),
            tokenizer,
            name,
        });
    }
    let src = GgufSource::open(model)?;
    let tokenizer = match &cli.tokenizer_dir {
        Some(dir) => TokenizerFiles::read(dir)?,
        None => TokenizerFiles::from_gguf(model, src.gguf())?,
    };
    let name = src
        .gguf()
        .get("general.name")
        .and_then(|v| v.as_str())
        .map(String::from)
        .unwrap_or_else(|| file_stem(model));
    Ok(Input {
        source: Box::new(src),
        tokenizer,
        name,
    })
}

fn file_stem(p: &Path) -> String {
    p.file_stem()
        .or_else(|| p.file_name())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into())
}

fn run(cli: &Cli) -> Result<(), ExportError> {
    let started = Instant::now();
    if cli.out.exists() && !cli.force {
        return Err(ExportError::Invalid {
            path: cli.out.clone(),
            message: "already exists (use --force to replace it)".into(),
        });
    }
    let parent = match cli.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(ExportError::Invalid {
            path: cli.out.clone(),
            message: format!("directory {} does not exist", parent.display()),
        });
    }
    if let (Ok(a), Ok(b)) = (cli.model.canonicalize(), cli.out.canonicalize()) {
        if a == b {
            return Err(ExportError::Invalid {
                path: cli.out.clone(),
                message: "is the input file".into(),
            });
        }
    }
    let input = open_input(cli)?;
    let opts = PlainOptions {
        ty: cli.ty.into(),
        name: cli.name.clone().unwrap_or(input.name),
    };
    let bar = if cli.quiet {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} tensors  {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        b
    };
    let mut on_progress = |p: Progress<'_>| match p {
        Progress::Start { tensors } => bar.set_length(tensors as u64),
        Progress::Tensor { name, ty, .. } => {
            bar.set_message(format!("{name} ({})", ty.name()));
            bar.inc(1);
        }
        Progress::Writing => bar.set_message(format!("writing {}", cli.out.display())),
    };
    let result = export::export_plain(
        input.source.as_ref(),
        &input.tokenizer,
        &cli.out,
        &opts,
        &mut on_progress,
    );
    bar.finish_and_clear();
    let summary = result?;
    if !cli.quiet {
        let types: Vec<String> = summary
            .types
            .iter()
            .map(|(t, n)| format!("{n} {t}"))
            .collect();
        let pre = summary.pre.as_ref().map_or(String::new(), |p| {
            format!("; pre-tokenizer '{}' (by {:?})", p.name, p.method)
        });
        eprintln!(
            "wrote {}: {} tensors ({}), {:.1} MiB, {:.1}s{pre}",
            cli.out.display(),
            summary.tensors,
            types.join(", "),
            summary.file_bytes as f64 / (1u64 << 20) as f64,
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
