//! athena-convert's command line: the positional arguments and plain-export options, then one
//! `clap::Args` group per help heading, each mapping onto the library's option struct of the
//! same concern (`athena::convert::options`).

use std::path::PathBuf;

use clap::{CommandFactory, Parser, ValueEnum};

use athena::convert::budget::FileBudget;
use athena::convert::{ComputeDevice, ConvertOptions};
use athena::export::PlainType;

mod quantize;
mod tuning;

use quantize::at_least;
pub use quantize::{AblationArgs, CalibrationArgs, QuantizerArgs, SizeArgs};
pub use tuning::{FinetuneArgs, TuneArgs};

use crate::help::{ABOUT, AFTER_HELP, LONG_ABOUT};

#[derive(Debug, Parser)]
#[command(name = "athena-convert", version, about = ABOUT, long_about = LONG_ABOUT, after_long_help = AFTER_HELP)]
pub struct Cli {
    /// Hugging Face model folder, or a .gguf file.
    #[arg(value_name = "MODEL")]
    pub model: PathBuf,

    /// Output GGUF file.
    #[arg(value_name = "OUT.gguf")]
    pub out: PathBuf,

    /// Type of the weight matrices in a plain export (norms and biases stay f32) [default:
    /// f16]. Not with --bits/--vq: an Athena file's embedding type is --embeddings.
    #[arg(long = "type", short = 't', value_name = "TYPE", value_enum)]
    pub ty: Option<TypeArg>,

    /// Value of general.name [default: the model folder's name, or the input GGUF's general.name].
    #[arg(long)]
    pub name: Option<String>,

    /// Folder with tokenizer.json (and tokenizer_config.json) [default: MODEL itself; for a
    /// .gguf MODEL, the tokenizer is rebuilt from its vocabulary].
    #[arg(long, value_name = "DIR")]
    pub tokenizer_dir: Option<PathBuf>,

    /// Replace OUT if it already exists.
    #[arg(long, short = 'f')]
    pub force: bool,

    /// No progress bar or summary.
    #[arg(long, short = 'q')]
    pub quiet: bool,

    /// Where calibration and quantization compute: cpu; cuda or cuda:N (a build with
    /// `--features cuda`: the model forward and every layer's column loop on that GPU); or
    /// cpu-tensors (the GPU code path on the CPU, slower than cpu: it checks that path
    /// without a GPU).
    #[arg(long, value_name = "DEVICE", default_value = "cpu", value_parser = ComputeDevice::parse)]
    pub device: ComputeDevice,

    #[command(flatten)]
    pub size: SizeArgs,

    #[command(flatten)]
    pub quantizer: QuantizerArgs,

    #[command(flatten)]
    pub calibration: CalibrationArgs,

    #[command(flatten)]
    pub tune: TuneArgs,

    #[command(flatten)]
    pub finetune: FinetuneArgs,

    #[command(flatten)]
    pub ablations: AblationArgs,

    #[command(flatten)]
    pub eval: EvalArgs,
}

/// Measuring the written file (the same code as athena-eval and athena-verify --text).
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Measuring the result")]
pub struct EvalArgs {
    /// After writing OUT, measure its perplexity on this UTF-8 text (llama-perplexity's method:
    /// chunks of --eval-ctx tokens, second half of each scored).
    #[arg(long, value_name = "FILE")]
    pub eval_text: Option<PathBuf>,
    /// Context length of each perplexity chunk, in tokens (at least 4).
    #[arg(long, value_name = "N", default_value_t = 512, requires = "eval_text",
          value_parser = at_least(4))]
    pub eval_ctx: usize,
    /// Score only the first N chunks of --eval-text (default: all that fit; ANCHORS.md uses 32).
    #[arg(long, value_name = "N", requires = "eval_text", value_parser = at_least(1))]
    pub eval_chunks: Option<usize>,
}

impl Cli {
    /// Whether Athena quantization was asked for (else a plain export).
    pub fn quantizes(&self) -> bool {
        self.size.bits.is_some() || self.size.file_bits.is_some() || self.size.vq.is_some()
    }

    /// Exits with a usage error (status 2) for options that the chosen mode would ignore.
    pub fn check_usage(&self) {
        let conflict = |message: &str| -> ! {
            Cli::command()
                .error(clap::error::ErrorKind::ArgumentConflict, message)
                .exit()
        };
        if self.quantizes() && self.ty.is_some() {
            conflict(
                "--type is the plain export's weight type; with --bits/--vq the linear layers \
                 are quantized and --embeddings sets the embedding's type",
            );
        }
        if self.quantizes() && self.tokenizer_dir.is_some() {
            conflict(
                "--tokenizer-dir is the plain export's; Athena quantization (--bits/--vq) reads \
                 the tokenizer from MODEL",
            );
        }
    }

    /// The plain export's weight type.
    pub fn plain_type(&self) -> PlainType {
        self.ty.unwrap_or(TypeArg::F16).into()
    }

    /// The library's options, with the defaults that depend on the budget, the method and this
    /// machine resolved.
    pub fn convert_options(&self) -> ConvertOptions {
        let size = self.size.options();
        // --file-bits: the defaults go by the bits it leaves the quantized weights (an
        // unreadable MODEL is reported by the conversion itself).
        let bits = size.bits.or_else(|| {
            let source = athena::checkpoint::HfFolder::open_validated(&self.model).ok()?;
            FileBudget::measure(&source, size.embeddings)
                .ok()?
                .athena_bits(size.file_bits?)
                .ok()
        });
        let method = self.quantizer.method.into();
        ConvertOptions {
            model: self.model.clone(),
            out: self.out.clone(),
            size,
            quantizer: self.quantizer.options(bits),
            ablations: self.ablations.options(),
            calibration: self.calibration.options(),
            tune: self.tune.options(bits, method),
            finetune: self.finetune.options(&self.model, bits, method, self.quiet),
            device: self.device,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TypeArg {
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
