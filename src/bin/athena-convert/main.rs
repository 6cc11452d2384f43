//! athena-convert: Hugging Face checkpoint -> GGUF. A thin shell over `athena::export`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};

use athena::checkpoint::gguf_source::GgufSource;
use athena::checkpoint::hf::HfFolder;
use athena::checkpoint::{ModelConfig, TensorSource};
use athena::convert::{self, report};
use athena::eval::file::{perplexity_with_bar, summary_line, Engine, EvalText};
use athena::export::{self, ExportError, PlainOptions, PlainType, Progress, TokenizerFiles};
use athena::progress;
use athena::quantizer::plan::LevelLimits;
use athena::quantizer::{CodebookKind, GroupOrder};

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

Athena quantization (needs an HF folder and the calibration text; see tools/fetch-models.sh):
  # 3 bits per weight on average over the linear layers, mixed precision from the Hessians
  athena-convert ~/.cache/athena/models/SmolLM2-135M-Instruct smollm2-3bit.gguf --bits 3

  # One configuration for every layer: d=2, 64 centroids, tiles of 64 rows x all columns
  athena-convert MODEL out.gguf --vq 2,64,64,576

  # A baseline in the same code, for comparison
  athena-convert MODEL gptq-3bit.gguf --bits 3 --method gptq

  # Measure the result right away (ANCHORS.md's setting: wiki text, context 512, 32 chunks)
  athena-convert MODEL out.gguf --bits 3 --eval-text ~/.cache/athena/text/wiki.utf8 --eval-chunks 32

The plan (per-layer configuration and bpw) is printed before quantizing; at the end a table gives
per layer the configuration, bpw and relative layer loss tr(dW H dW^T) / tr(W H W^T), then the
totals, time and peak memory. Check the result with athena-verify.

Exit status: 0 on success, 1 when the conversion fails (the message names the file or tensor),
2 for command-line usage errors, 130 when interrupted (Ctrl-C or SIGTERM; the temp file is removed).";

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

    #[command(flatten)]
    athena: AthenaArgs,

    #[command(flatten)]
    eval: EvalArgs,
}

/// Measuring the written file (the same code as athena-eval and athena-verify --text).
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Measuring the result")]
struct EvalArgs {
    /// After writing OUT, measure its perplexity on this UTF-8 text (llama-perplexity's method:
    /// chunks of --eval-ctx tokens, second half of each scored).
    #[arg(long, value_name = "FILE")]
    eval_text: Option<PathBuf>,
    /// Context length of each perplexity chunk, in tokens.
    #[arg(long, value_name = "N", default_value_t = 512, requires = "eval_text")]
    eval_ctx: usize,
    /// Score only the first N chunks of --eval-text (default: all that fit; ANCHORS.md uses 32).
    #[arg(long, value_name = "N", requires = "eval_text")]
    eval_chunks: Option<usize>,
}

/// Athena quantization (any of --bits / --vq switches it on).
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Athena quantization")]
struct AthenaArgs {
    /// Budget: average bits per weight of the quantized linear weights, every stored byte
    /// counted (indices, codebooks, scales, low-rank factors). Met by a per-layer mixed-precision
    /// plan (1.33 to 8 index bits per weight: d = 2, 3 and 4 codebooks up to 5 bits, scalar ones
    /// above; where d does not divide the columns, each row ends in a partial group; see
    /// --sensitivity and --max-dim). Typical: 2 to 4; 5 and up come close to the source model.
    #[arg(long, value_name = "B")]
    bits: Option<f64>,

    /// Expert mode: the same configuration for every layer: vector dimension d (1-8), centroids
    /// n (power of two), codebook tile of R rows x C columns (C a multiple of d, or every column
    /// of the layer).
    #[arg(long, value_name = "d,n,R,C", value_parser = parse_vq)]
    vq: Option<[usize; 4]>,

    /// Quantizer: athena (Hessian-guided VQ), or a baseline measured in the same code: kmeans
    /// (plain k-means VQ), gptq (scalar grid, per 128 columns, error feedback), rtn (round to
    /// nearest on that grid).
    #[arg(long, value_enum, default_value = "athena")]
    method: MethodArg,

    /// Codebook storage: i8 (int8 codes with f16 offset and step per dimension) or f16.
    #[arg(long, value_enum, default_value = "i8")]
    codebook: CodebookArg,

    /// Hessian-weighted low-rank residual: a rank, "auto" (min(N, M) / 100) or 0 (off).
    #[arg(long, value_name = "r|auto|0", default_value = "0", value_parser = parse_lowrank)]
    lowrank_rank: convert::LowRankChoice,

    /// Codebook tiles for --bits: wide (full-width tiles, ~1/16 bpw of codebook) or paper
    /// (one codebook per d columns, all rows: the paper's layout).
    #[arg(long, value_enum, default_value = "wide")]
    tiles: TilesArg,

    /// Largest vector dimension d of the --bits plan: 4, 3 or 2 (d = 2 only; fastest). Each layer
    /// gets the d and centroid count that the plan predicts best for its bits: d = 4 at low
    /// rates and, with up to 4096 centroids, at 3 bits on the large layers; scalar codebooks
    /// (d = 1) above 5 bits whatever the limit.
    #[arg(long, value_name = "2|3|4", default_value_t = LevelLimits::default().max_dim as u8, value_parser = clap::value_parser!(u8).range(2..=4))]
    max_dim: u8,

    /// Largest codebook of the --bits plan (centroids per tile). 4096 lets the large layers use
    /// d = 4 at 3 bits: on SmolLM2-135M 2-5% lower MLP layer loss for 2.7x the conversion time.
    #[arg(long, value_name = "N", default_value_t = LevelLimits::default().max_centroids, value_parser = parse_max_centroids)]
    max_centroids: usize,

    /// What the --bits plan weighs layers by: hessian (APTQ: the layer's input Hessian trace x
    /// weight energy, one extra calibration pass), fisher (the model loss's Fisher trace for the
    /// layer's weights x weight energy: a forward and backward pass of the whole model on 16
    /// calibration sequences, a few GB per CPU thread; on SmolLM2-135M no better than uniform at
    /// 3 bits, worse at 2.25), uniform (every weight alike: bits spread evenly) or relative
    /// (every layer alike: the same relative output error, small layers protected first).
    #[arg(long, value_enum, default_value = "uniform")]
    sensitivity: SensitivityArg,

    /// Order in which column groups are quantized: hessian (descending Hessian diagonal, like
    /// GPTQ's act-order) or natural (left to right).
    #[arg(long, value_enum, default_value = "hessian")]
    order: OrderArg,

    /// Calibration text (UTF-8) [default: the C4 sample that tools/fetch-models.sh caches].
    #[arg(long, value_name = "FILE")]
    calib: Option<PathBuf>,

    /// Calibration tokens, cut into sequences of --seq-len (32768 measured 1.0 perplexity better
    /// than 8192 at --bits 3 on SmolLM2, for 40% more conversion time).
    #[arg(long, value_name = "N", default_value_t = 32768)]
    calib_tokens: usize,

    /// Calibration sequence length in tokens.
    #[arg(long, value_name = "L", default_value_t = 512)]
    seq_len: usize,

    /// Lloyd iterations of k-means per codebook (20: 0.5 perplexity better than 10 at --bits 3 for
    /// 19% more time; see docs/benchmarks.md).
    #[arg(long, value_name = "N", default_value_t = athena::quantizer::DEFAULT_KMEANS_ITERS)]
    kmeans_iters: usize,

    /// Hessian damping lambda: lambda x the mean of the Hessian's diagonal is added to its
    /// diagonal before the inverse's Cholesky factor is taken (GPTQ's percdamp / 100; raised
    /// tenfold on a layer whose Cholesky fails). Larger values trust the calibration's
    /// correlations less: the metric and the error feedback lean towards plain rounding. On
    /// SmolLM2-135M at --bits 3: 0.001 17.09, 0.003 17.39, 0.01 17.25 perplexity, all inside
    /// the seed spread (docs/benchmarks.md, "Session 26").
    #[arg(long, value_name = "LAMBDA", default_value_t = athena::quantizer::DEFAULT_DAMP)]
    damp: f64,

    /// Incoherence processing (QuIP#): quantize W Q instead of W, Q = random signs times a
    /// Walsh-Hadamard transform on blocks of B columns (the largest power of four up to this
    /// that divides the layer's columns: 64 for SmolLM2's 576, 256 for 1536); the decoder
    /// undoes Q (encoding version 2). On SmolLM2-135M at --bits 3: 18% lower layer loss
    /// (geometric mean), perplexity 17.86 -> 17.63; at --bits 2.25 (with block-wise tuning) 4%
    /// lower layer loss but perplexity 30.72 and 31.69 (two runs) against 29.80 and 30.45
    /// unrotated, so it is off below 3 bits. 0 turns it off (with --no-row-scales too, a
    /// version 1 file). [default: 4096 for --method athena from --bits 3 up or with --vq,
    /// else 0]
    #[arg(long, value_name = "B")]
    rotation_block: Option<usize>,

    /// With the column rotation on: quantize each layer both rotated and unrotated and keep
    /// whichever has the lower layer loss, instead of rotating every layer (the rotation helps
    /// layers whose inputs have a few huge channels and hurts layers with outlier weights).
    /// Twice the quantization work; on SmolLM2-135M at --bits 3 it kept 172 of 210 layers
    /// rotated, the layer loss fell 0.1% and perplexity came out 17.71 vs 17.63 (one run each).
    #[arg(long)]
    rotation_per_layer: bool,

    /// Ablation: no per-row scales. By default every row of a vector-quantized weight gets an
    /// f16 scale (its RMS; 16 bits per row, 0.028 bpw on 576 columns, counted in --bits) and
    /// the codebooks fit the rows divided by it, so rows of very different norms share a
    /// codebook well (encoding version 3); the --bits plan drops them on layers too narrow to
    /// pay for them. On SmolLM2-135M at --bits 3: 8% lower layer loss, perplexity 17.63 ->
    /// 17.25 (docs/benchmarks.md, "Session 18").
    #[arg(long)]
    no_row_scales: bool,

    /// Ablation: k-means and assignment in plain Euclidean distance instead of the
    /// inverse-Hessian metric.
    #[arg(long)]
    no_hessian_metric: bool,

    /// Ablation: quantize every column group on its own, without feeding its error to the
    /// columns not yet quantized.
    #[arg(long)]
    no_error_feedback: bool,

    /// Ablation: keep the k-means centroids instead of re-solving each codebook for the least
    /// layer loss once its indices are fixed. The update only runs on codebooks of at most 1024
    /// values (n x d: d = 2 up to 512 centroids, d = 3 and 4 up to 256), so it never runs in the
    /// default --bits 3 plan (d = 3 and 4 with 512 or 1024 centroids; same file with or without
    /// this flag). Raising the limit to 1536 values (the d = 3, 512-centroid layers) gave 17.77
    /// vs 17.63 perplexity at --bits 3
    #[arg(long)]
    no_codebook_update: bool,

    /// Ablation: quantize v_proj under the plain input Hessian it shares with q/k instead of
    /// BoA's attention-aware Hessians (one per kv head, from the attention-weighted inputs).
    #[arg(long)]
    no_attention_hessians: bool,

    /// Also quantize q_proj and k_proj under BoA's row Hessians (per head, the covariance of
    /// the keys, resp. queries, that each query, resp. key, meets after RoPE: an error's cost
    /// in attention scores, without the softmax), which push each row's error onto the later
    /// rows of its head. Measured on SmolLM2-135M at --bits 3: worse by 0.15 and 0.5
    /// perplexity (two seeds; docs/benchmarks.md, "Session 26"), so off by default.
    #[arg(long)]
    qk_row_hessians: bool,

    /// Block-wise tuning: after each block is quantized, its codebook values (and row scales)
    /// are tuned with Adam for this many passes over the calibration sequences so the block's
    /// output matches the unquantized block's (indices fixed; 0 turns it off). Default: 1 for --bits below 3 (with
    /// --method athena), else 0. Measured with 1 epoch on SmolLM2-135M: --bits 2.25 33.39 -> 30.45 and 32.25 -> 29.80
    /// perplexity (two runs), --bits 3 17.78 -> 17.71; each epoch adds ~14 s per block.
    #[arg(long, value_name = "N")]
    tune_epochs: Option<usize>,

    /// Adam learning rate of the block-wise tuning (in weight units; of 1e-4, 1e-3 and 3e-3,
    /// 1e-3 measured best). Codebooks of rotated layers (block B) tune at this rate / sqrt(B),
    /// so a step moves one input channel's weights as far as it does without the rotation.
    #[arg(long, default_value_t = 1e-3)]
    tune_lr: f64,

    /// Calibration sequences per Adam step of the block-wise tuning.
    #[arg(long, default_value_t = 4)]
    tune_batch: usize,

    /// Block-wise tuning also tunes the block's two RMSNorm weights (measured no better than
    /// codebooks alone: 18.92 vs 18.80 at --bits 3 --calib-tokens 8192).
    #[arg(long)]
    tune_norms: bool,

    /// End-to-end tuning: after the last block is quantized, every codebook (indices fixed),
    /// every row scale and every RMSNorm weight is tuned with Adam for this many passes over
    /// the calibration sequences so the quantized model's next-token distribution matches the
    /// unquantized model's (KL divergence; 0 turns it off). The loss sees the codebooks and
    /// scales as the file stores them (int8, f16), gradients pass straight through the
    /// rounding. Measured on SmolLM2-135M with 1 epoch: --bits 2.25 27.90 -> 23.84 and --bits 3
    /// 17.25 -> 16.38 perplexity. Each step runs every sequence forward twice and backward
    /// once, one block's graph at a time; one epoch takes about as long as the quantization (13
    /// minutes at --bits 3) and the peak rises from about 1 GB to 5 GB (SmolLM2-135M at
    /// --bits 2.25; it grows with the model's size). Default: 1 below 3 bits (with --method
    /// athena) when the estimated peak fits in half of this machine's memory (the converter
    /// says which), else 0; pass a number for the same file on every machine.
    #[arg(long, value_name = "N")]
    finetune_epochs: Option<usize>,

    /// Adam learning rate of the end-to-end tuning (in weight units; only 1e-3 was measured on
    /// the real model). Codebooks of rotated layers (block B) tune at this rate / sqrt(B).
    #[arg(long, default_value_t = 1e-3)]
    finetune_lr: f64,

    /// Calibration sequences per Adam step of the end-to-end tuning.
    #[arg(long, default_value_t = 4)]
    finetune_batch: usize,

    /// End-to-end tuning also changes codes (PV-tuning's discrete step): after every Adam step
    /// from the third on, up to this fraction of each layer's vectors move to the neighbouring
    /// centroid predicted to lower the KL divergence most (0: indices fixed). On SmolLM2-135M at
    /// --bits 3, 0.01 with step 0.01 made the KL worse (the run was undone): experimental.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0, value_parser = parse_fraction)]
    finetune_codes: f64,

    /// Step length of the discrete step, in weight units: a vector moves to a neighbouring
    /// centroid only where Adam's quadratic model of the loss for a step this long predicts a
    /// decrease (longer: more moves).
    #[arg(long, value_name = "STEP", default_value_t = 1e-2)]
    finetune_code_step: f64,

    /// Calibration tokens the end-to-end tuning runs on, from the start of the --calib text
    /// (more than --calib-tokens: the calibration sequences and the ones after them)
    /// [default: --calib-tokens, the calibration sequences themselves].
    #[arg(long, value_name = "N")]
    finetune_tokens: Option<usize>,

    /// Sequences (of --seq-len) that the end-to-end tuning holds out: taken from the --calib
    /// text after every calibration and tuning sequence, never tuned on. Their KL divergence is
    /// measured after every epoch; the epoch with the lowest is kept, and none when the untuned
    /// model's is lower. 0: judge on the tuning sequences and keep the last epoch.
    #[arg(long, value_name = "N", default_value_t = 8)]
    finetune_holdout: usize,

    /// Seed of k-means seeding: the same seed gives a byte-identical file.
    #[arg(long, default_value_t = 0)]
    seed: u64,

    /// Type of the token embedding (and an untied output matrix) in an Athena file.
    #[arg(long, value_enum, default_value = "q8_0")]
    embed_type: TypeArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum MethodArg {
    Athena,
    Kmeans,
    Gptq,
    Rtn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CodebookArg {
    I8,
    F16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TilesArg {
    Wide,
    Paper,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SensitivityArg {
    Hessian,
    Fisher,
    Uniform,
    Relative,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OrderArg {
    Hessian,
    Natural,
}

fn parse_vq(s: &str) -> Result<[usize; 4], String> {
    let parts: Vec<usize> = s
        .split(',')
        .map(|p| {
            p.trim()
                .parse::<usize>()
                .map_err(|_| format!("'{p}' is not a number"))
        })
        .collect::<Result<_, _>>()?;
    parts
        .try_into()
        .map_err(|_| "expected four numbers: d,n,R,C".to_string())
}

fn parse_lowrank(s: &str) -> Result<convert::LowRankChoice, String> {
    match s {
        "auto" => Ok(convert::LowRankChoice::Auto),
        "0" | "off" => Ok(convert::LowRankChoice::Off),
        r => r
            .parse()
            .map(convert::LowRankChoice::Rank)
            .map_err(|_| format!("'{r}' is not a rank, auto or 0")),
    }
}

/// Tuning pays below 3 bits (2.5-2.9 perplexity at --bits 2.25, two runs) and not measurably at
/// 3 (0.07), where it would double the conversion time. The baselines stay untuned by default.
fn default_tune_epochs(bits: Option<f64>, method: MethodArg) -> usize {
    match bits {
        Some(b) if b < 3.0 && method == MethodArg::Athena => 1,
        _ => 0,
    }
}

/// `--finetune-epochs`' default and the line that explains it (None where it is 0 anyway):
/// below 3 bits end-to-end tuning gains most (--bits 2.25 27.90 -> 23.84, --bits 3 17.25 ->
/// 16.38, for about twice the conversion time), so it is on there unless its estimated peak
/// (`estimate` bytes) exceeds half of the machine's memory (`memory` bytes; unknown: off).
fn default_finetune_epochs(
    bits: Option<f64>,
    method: MethodArg,
    estimate: u64,
    memory: Option<u64>,
) -> (usize, Option<String>) {
    match bits {
        Some(b) if b < 3.0 && method == MethodArg::Athena => {}
        _ => return (0, None),
    }
    let gib = |bytes: u64| bytes as f64 / (1u64 << 30) as f64;
    let Some(memory) = memory else {
        return (
            0,
            Some(
                "end-to-end tuning: off (the default below 3 bits, but this machine's memory is \
                 unknown; --finetune-epochs 1 turns it on)"
                    .into(),
            ),
        );
    };
    if estimate > memory / 2 {
        let note = format!(
            "end-to-end tuning: off (the default below 3 bits, but its estimated peak of {:.1} \
             GiB exceeds half of this machine's {:.1} GiB; --finetune-epochs 1 forces it)",
            gib(estimate),
            gib(memory)
        );
        return (0, Some(note));
    }
    let note = format!(
        "end-to-end tuning: 1 epoch, the default below 3 bits (estimated peak {:.1} GiB of this \
         machine's {:.1} GiB; --finetune-epochs 0 skips it)",
        gib(estimate),
        gib(memory)
    );
    (1, Some(note))
}

/// This machine's memory (MemTotal), where /proc tells it.
fn machine_memory_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The column rotation measured better at 3 bits (perplexity 17.86 -> 17.63, layer loss -18%)
/// and worse at 2.25 bits (30.72 and 31.69 against 29.80 and 30.45 unrotated). The baselines
/// stay unrotated by default.
fn default_rotation_block(bits: Option<f64>, method: MethodArg) -> usize {
    match bits {
        _ if method != MethodArg::Athena => 0,
        Some(b) if b < 3.0 => 0,
        _ => athena::quantizer::rotation::MAX_BLOCK,
    }
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("'{s}' is not a fraction from 0 to 1")),
    }
}

fn parse_max_centroids(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n.is_power_of_two() && (16..=4096).contains(&n) => Ok(n),
        _ => Err(format!("'{s}' is not a power of two from 16 to 4096")),
    }
}

fn run_athena(cli: &Cli) -> Result<(), String> {
    let a = &cli.athena;
    let finetune_epochs = match a.finetune_epochs {
        Some(n) => n,
        None => match ModelConfig::from_hf_json(&cli.model.join("config.json")) {
            Ok(config) => {
                let workers = candle_core::utils::get_num_threads().min(a.finetune_batch);
                let estimate = convert::finetune::estimated_peak_bytes(&config, workers);
                let (epochs, note) =
                    default_finetune_epochs(a.bits, a.method, estimate, machine_memory_bytes());
                if let (Some(note), false) = (note, cli.quiet) {
                    eprintln!("{note}");
                }
                epochs
            }
            // The conversion itself reports the unreadable config.json.
            Err(_) => 0,
        },
    };
    let opts = convert::ConvertOptions {
        model: cli.model.clone(),
        out: cli.out.clone(),
        bits: a.bits,
        vq: a.vq,
        method: match a.method {
            MethodArg::Athena => convert::Method::Athena,
            MethodArg::Kmeans => convert::Method::Kmeans,
            MethodArg::Gptq => convert::Method::Gptq,
            MethodArg::Rtn => convert::Method::Rtn,
        },
        codebook: match a.codebook {
            CodebookArg::I8 => CodebookKind::Int8,
            CodebookArg::F16 => CodebookKind::F16,
        },
        lowrank: a.lowrank_rank,
        levels: LevelLimits {
            max_dim: a.max_dim as usize,
            max_centroids: a.max_centroids,
        },
        tiles: match a.tiles {
            TilesArg::Wide => convert::TileLayout::Wide,
            TilesArg::Paper => convert::TileLayout::Paper,
        },
        sensitivity: match a.sensitivity {
            SensitivityArg::Hessian => convert::Sensitivity::Hessian,
            SensitivityArg::Fisher => convert::Sensitivity::Fisher,
            SensitivityArg::Uniform => convert::Sensitivity::Uniform,
            SensitivityArg::Relative => convert::Sensitivity::Relative,
        },
        order: match a.order {
            OrderArg::Hessian => GroupOrder::HessianDiagonal,
            OrderArg::Natural => GroupOrder::Natural,
        },
        kmeans_iters: a.kmeans_iters,
        damp: a.damp,
        rotation_block: a
            .rotation_block
            .unwrap_or(default_rotation_block(a.bits, a.method)),
        rotation_per_layer: a.rotation_per_layer,
        row_scales: !a.no_row_scales,
        hessian_metric: !a.no_hessian_metric,
        error_feedback: !a.no_error_feedback,
        codebook_update: !a.no_codebook_update,
        attention_hessians: !a.no_attention_hessians,
        row_hessians: a.qk_row_hessians,
        tune: convert::TuneOptions {
            epochs: a
                .tune_epochs
                .unwrap_or(default_tune_epochs(a.bits, a.method)),
            learning_rate: a.tune_lr,
            batch: a.tune_batch,
            norms: a.tune_norms,
        },
        finetune: convert::FinetuneOptions {
            epochs: finetune_epochs,
            learning_rate: a.finetune_lr,
            batch: a.finetune_batch,
            code_fraction: a.finetune_codes,
            code_step: a.finetune_code_step,
            tokens: a.finetune_tokens,
            holdout: a.finetune_holdout,
        },
        calib: a
            .calib
            .clone()
            .unwrap_or_else(convert::default_calibration_text),
        calib_tokens: a.calib_tokens,
        seq_len: a.seq_len,
        seed: a.seed,
        embed_type: a.embed_type.into(),
    };
    let bar = progress::bar(cli.quiet, progress::WITH_ETA);
    let quiet = cli.quiet;
    let log_lines = !quiet && !std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    let budget = a.bits;
    let mut on_progress = |p: convert::Progress<'_>| match p {
        convert::Progress::Stage(s) => bar.set_message(s.to_string()),
        convert::Progress::Sensitivity { done, total, unit } => {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
            bar.set_message(format!("{unit}: sensitivity pass"));
        }
        convert::Progress::Plan(plan) => {
            if !quiet {
                bar.suspend(|| {
                    eprint!("{}", report::render_plan(plan));
                    if let Some(note) = budget.and_then(|b| report::unspent_budget_note(plan, b)) {
                        eprintln!("{note}");
                    }
                });
            }
            bar.set_length(plan.len() as u64);
            bar.set_position(0);
            bar.reset_eta();
        }
        convert::Progress::Block {
            layer,
            layers,
            step: convert::Step::Quantize(kind),
        } => {
            bar.set_message(format!("block {}/{layers}: {}", layer + 1, kind.suffix()));
            bar.set_position((layer * 7 + kind as usize) as u64);
            // indicatif hides its bar when stderr is no terminal (a log file, CI, a pipe): one
            // line per block instead, as llama.cpp's tools print.
            if log_lines && kind as usize == 0 {
                let elapsed = started.elapsed().as_secs_f64();
                let eta = if layer > 0 {
                    format!("{:.0}s", elapsed / layer as f64 * (layers - layer) as f64)
                } else {
                    "?".to_string()
                };
                eprintln!(
                    "block {}/{layers}: elapsed {elapsed:.0}s, eta {eta}",
                    layer + 1
                );
            }
        }
        convert::Progress::Block {
            layer,
            layers,
            step: convert::Step::Tune,
        } => {
            bar.set_message(format!("block {}/{layers}: tuning codebooks", layer + 1));
        }
        convert::Progress::Block {
            step: convert::Step::Finetune { step, steps },
            ..
        } => {
            if step == 0 {
                bar.set_length(steps as u64);
                bar.reset_eta();
            }
            bar.set_position(step as u64);
            // `step == steps` is the final report (the last step is done): no "step 17/16".
            bar.set_message(format!(
                "end-to-end tuning: step {}/{steps}",
                (step + 1).min(steps)
            ));
        }
    };
    let result = convert::convert(&opts, &mut on_progress);
    bar.finish_and_clear();
    let rep = result.map_err(|e| e.to_string())?;
    if !cli.quiet {
        eprint!("{}", report::render_report(&rep));
        eprintln!(
            "peak memory:          {} MiB",
            athena::progress::peak_rss_mib().map_or("?".into(), |m| m.to_string())
        );
        eprintln!("wrote {}", cli.out.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Ctrl-C / SIGTERM do not unwind, so the writer's own cleanup would not run.
    let _ = ctrlc::set_handler(|| {
        athena::container::temp_files::remove_all();
        eprintln!("\nathena-convert: interrupted; no output file was written");
        std::process::exit(130);
    });
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

fn run(cli: &Cli) -> Result<(), String> {
    check_output(cli).map_err(|e| e.to_string())?;
    if let Some(text) = &cli.eval.eval_text {
        // Fail before the conversion, not after it.
        std::fs::metadata(text).map_err(|e| format!("--eval-text {}: {e}", text.display()))?;
    }
    if cli.athena.bits.is_some() || cli.athena.vq.is_some() {
        run_athena(cli)?;
    } else {
        run_plain(cli).map_err(|e| e.to_string())?;
    }
    if let Some(path) = &cli.eval.eval_text {
        let text = EvalText {
            path: path.clone(),
            ctx: cli.eval.eval_ctx,
            chunks: cli.eval.eval_chunks,
        };
        let report =
            perplexity_with_bar(&cli.out, &text, Engine::Auto, cli.quiet).map_err(|e| {
                format!(
                    "{} was written, but perplexity failed: {e}",
                    cli.out.display()
                )
            })?;
        // On stdout even with --quiet: it is the result that was asked for.
        println!("{} on {}", summary_line(&report), path.display());
    }
    Ok(())
}

fn check_output(cli: &Cli) -> Result<(), ExportError> {
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
    Ok(())
}

fn run_plain(cli: &Cli) -> Result<(), ExportError> {
    let started = Instant::now();
    let input = open_input(cli)?;
    let opts = PlainOptions {
        ty: cli.ty.into(),
        name: cli.name.clone().unwrap_or(input.name),
    };
    let bar = progress::bar(
        cli.quiet,
        "{elapsed:>4} [{bar:30}] {pos}/{len} tensors  {msg}",
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_to_end_tuning_defaults_on_below_3_bits_where_half_the_memory_holds_it() {
        let gib = 1u64 << 30;
        let athena = MethodArg::Athena;
        let epochs = |bits, method, estimate, memory| {
            default_finetune_epochs(Some(bits), method, estimate, memory).0
        };
        assert_eq!(epochs(2.25, athena, 8 * gib, Some(24 * gib)), 1);
        assert_eq!(epochs(2.25, athena, 12 * gib, Some(24 * gib)), 1);
        assert_eq!(epochs(2.25, athena, 12 * gib + 1, Some(24 * gib)), 0);
        assert_eq!(epochs(2.25, athena, 8 * gib, None), 0);
        assert_eq!(epochs(3.0, athena, 8 * gib, Some(24 * gib)), 0);
        assert_eq!(epochs(2.25, MethodArg::Gptq, 8 * gib, Some(24 * gib)), 0);
        assert_eq!(
            default_finetune_epochs(None, athena, 8 * gib, Some(24 * gib)),
            (0, None)
        );
        // The note says which way and how to change it.
        let (_, on) = default_finetune_epochs(Some(2.0), athena, 8 * gib, Some(24 * gib));
        assert!(on.unwrap().contains("8.0 GiB of this machine's 24.0 GiB"));
        let (_, off) = default_finetune_epochs(Some(2.0), athena, 20 * gib, Some(24 * gib));
        assert!(off.unwrap().contains("--finetune-epochs 1 forces it"));
    }
}
