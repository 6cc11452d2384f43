//! The option groups of Athena quantization itself: size (budget and plan), quantizer,
//! calibration and ablations, each mapping onto `athena::convert::options`.

use std::path::PathBuf;

use clap::ValueEnum;

use super::TypeArg;
use athena::convert::{
    self, defaults, Ablations, CalibrationOptions, Embeddings, LowRankChoice, Method,
    QuantizerOptions, Sensitivity, SizeOptions, TileLayout,
};
use athena::quantizer::plan::LevelLimits;
use athena::quantizer::{CodebookKind, GroupOrder};

/// How small the file gets (any of --bits / --vq switches Athena quantization on).
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Athena quantization: size")]
pub struct SizeArgs {
    /// Budget: average bits per weight of the linear layers, every stored byte counted
    /// (indices, codebooks, scales, low-rank factors); with --embeddings athena the token
    /// embedding and output head get the level the same plan buys at its final exchange rate
    /// of loss for bits (on SmolLM2-135M at --bits 3: 3.42 bpw). Met by a per-layer mixed-precision
    /// plan (1.33 to 8 index bits per weight: d = 2, 3 and 4 codebooks up to 5 bits, scalar ones
    /// above; where d does not divide the columns, each row ends in a partial group; see
    /// --sensitivity and --max-dim). Typical: 2 to 4; 5 and up come close to the source model.
    #[arg(long, value_name = "B")]
    pub bits: Option<f64>,

    /// Budget for the whole file instead: bits per parameter of every tensor byte (norms,
    /// biases and plain embeddings included; metadata excluded), met by the same plan once the
    /// plain tensors' bytes are set aside. Compares directly with other files by size.
    #[arg(long, value_name = "B", conflicts_with_all = ["bits", "vq"])]
    pub file_bits: Option<f64>,

    /// Expert mode: the same configuration for every layer: vector dimension d (1-8), centroids
    /// n (power of two), codebook tile of R rows x C columns (C a multiple of d, or every column
    /// of the layer).
    #[arg(long, value_name = "d,n,R,C", value_parser = parse_vq)]
    pub vq: Option<[usize; 4]>,

    /// The token embedding and output head: athena (quantized like the linear layers and
    /// counted in --bits; a tied table is one Athena weight serving lookups and logits) or a
    /// plain type (q8_0, f16, bf16, f32) that stock llama.cpp tools also read.
    #[arg(long, value_enum, alias = "embed-type", default_value = "athena")]
    pub embeddings: EmbeddingsArg,

    /// Codebook storage: i8 (int8 codes with f16 offset and step per dimension) or f16.
    #[arg(long, value_enum, default_value = "i8")]
    pub codebook: CodebookArg,

    /// Hessian-weighted low-rank residual: a rank, "auto" (min(N, M) / 100) or 0 (off).
    #[arg(long, value_name = "r|auto|0", default_value = "0", value_parser = parse_lowrank)]
    pub lowrank_rank: LowRankChoice,

    /// Codebook tiles for --bits: wide (full-width tiles, ~1/16 bpw of codebook) or paper
    /// (one codebook per d columns, all rows: the paper's layout).
    #[arg(long, value_enum, default_value = "wide")]
    pub tiles: TilesArg,

    /// Largest vector dimension d of the --bits plan: 4, 3 or 2 (d = 2 only; fastest). Each layer
    /// gets the d and centroid count that the plan predicts best for its bits: d = 4 at low
    /// rates and, with up to 4096 centroids, at 3 bits on the large layers; scalar codebooks
    /// (d = 1) above 5 bits whatever the limit.
    #[arg(long, value_name = "2|3|4", default_value_t = LevelLimits::default().max_dim as u8, value_parser = clap::value_parser!(u8).range(2..=4))]
    pub max_dim: u8,

    /// Largest codebook of the --bits plan (centroids per tile). 4096 lets the large layers use
    /// d = 4 at 3 bits: on SmolLM2-135M 2-5% lower MLP layer loss for 2.7x the conversion time.
    #[arg(long, value_name = "N", default_value_t = LevelLimits::default().max_centroids, value_parser = parse_max_centroids)]
    pub max_centroids: usize,

    /// What the --bits plan weighs layers by: hessian (APTQ: the layer's input Hessian trace x
    /// weight energy, one extra calibration pass), fisher (the model loss's Fisher trace for the
    /// layer's weights x weight energy: a forward and backward pass of the whole model on 16
    /// calibration sequences, a few GB per CPU thread; on SmolLM2-135M no better than uniform at
    /// 3 bits, worse at 2.25), uniform (every weight alike: bits spread evenly) or relative
    /// (every layer alike: the same relative output error, small layers protected first).
    #[arg(long, value_enum, default_value = "uniform")]
    pub sensitivity: SensitivityArg,
}

/// How each layer is quantized.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Athena quantization: quantizer")]
pub struct QuantizerArgs {
    /// Quantizer: athena (Hessian-guided VQ), or a baseline measured in the same code: kmeans
    /// (plain k-means VQ), gptq (scalar grid, per 128 columns, error feedback), rtn (round to
    /// nearest on that grid).
    #[arg(long, value_enum, default_value = "athena")]
    pub method: MethodArg,

    /// Order in which column groups are quantized: hessian (descending Hessian diagonal, like
    /// GPTQ's act-order) or natural (left to right).
    #[arg(long, value_enum, default_value = "hessian")]
    pub order: OrderArg,

    /// Lloyd iterations of k-means per codebook (20: 0.5 perplexity better than 10 at --bits 3 for
    /// 19% more time; see docs/benchmarks.md).
    #[arg(long, value_name = "N", default_value_t = athena::quantizer::DEFAULT_KMEANS_ITERS,
          value_parser = at_least(1))]
    pub kmeans_iters: usize,

    /// Hessian damping lambda: lambda x the mean of the Hessian's diagonal is added to its
    /// diagonal before the inverse's Cholesky factor is taken (GPTQ's percdamp / 100; raised
    /// tenfold on a layer whose Cholesky fails). Larger values trust the calibration's
    /// correlations less: the metric and the error feedback lean towards plain rounding. On
    /// SmolLM2-135M at --bits 3: 0.001 17.09, 0.003 17.39, 0.01 17.25 perplexity, all inside
    /// the seed spread (docs/benchmarks.md, "What each default is worth").
    #[arg(long, value_name = "LAMBDA", default_value_t = athena::quantizer::DEFAULT_DAMP)]
    pub damp: f64,

    /// Incoherence processing (QuIP#): quantize W Q instead of W, Q = random signs times a
    /// Walsh-Hadamard transform on blocks of B columns (the largest power of four up to this
    /// that divides the layer's columns: 64 for SmolLM2's 576, 256 for 1536); the decoder
    /// undoes Q (encoding version 2). On SmolLM2-135M at --bits 3: 18% lower layer loss
    /// (geometric mean), perplexity 17.86 -> 17.63; at --bits 2.25 (with block-wise tuning) 4%
    /// lower layer loss but perplexity 30.72 and 31.69 (two runs) against 29.80 and 30.45
    /// unrotated, so it is off below 3 bits. 0 turns it off (with --no-row-scales too, a
    /// version 1 file). B is 0 or a power of four from 4 to 4096. [default: 4096 for --method
    /// athena from --bits 3 up or with --vq, else 0]
    #[arg(long, value_name = "B", value_parser = parse_rotation_block)]
    pub rotation_block: Option<usize>,

    /// With the column rotation on: quantize each layer both rotated and unrotated and keep
    /// whichever has the lower layer loss, instead of rotating every layer (the rotation helps
    /// layers whose inputs have a few huge channels and hurts layers with outlier weights).
    /// Twice the quantization work; on SmolLM2-135M at --bits 3 it kept 172 of 210 layers
    /// rotated, the layer loss fell 0.1% and perplexity came out 17.71 vs 17.63 (one run each).
    #[arg(long)]
    pub rotation_per_layer: bool,

    /// Also quantize q_proj and k_proj under BoA's row Hessians (per head, the covariance of
    /// the keys, resp. queries, that each query, resp. key, meets after RoPE: an error's cost
    /// in attention scores, without the softmax), which push each row's error onto the later
    /// rows of its head. Measured on SmolLM2-135M at --bits 3: worse by 0.15 and 0.5
    /// perplexity (two seeds; docs/benchmarks.md, "What each default is worth"), so off by default.
    #[arg(long)]
    pub qk_row_hessians: bool,

    /// Seed of k-means seeding: the same seed gives a byte-identical file.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// The text the Hessians are measured on.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Athena quantization: calibration")]
pub struct CalibrationArgs {
    /// Calibration text (UTF-8) [default: the C4 sample that tools/fetch-models.sh caches].
    #[arg(long, value_name = "FILE")]
    pub calib: Option<PathBuf>,

    /// Calibration tokens, cut into sequences of --seq-len (32768 measured 1.0 perplexity better
    /// than 8192 at --bits 3 on SmolLM2, for 40% more conversion time).
    #[arg(long, value_name = "N", default_value_t = 32768)]
    pub calib_tokens: usize,

    /// Calibration sequence length in tokens.
    #[arg(long, value_name = "L", default_value_t = 512)]
    pub seq_len: usize,
}

/// Switching off one part of the Athena method at a time, to measure what it is worth.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Athena quantization: ablations")]
pub struct AblationArgs {
    /// Ablation: no per-row scales. By default every row of a vector-quantized weight gets an
    /// f16 scale (its RMS; 16 bits per row, 0.028 bpw on 576 columns, counted in --bits) and
    /// the codebooks fit the rows divided by it, so rows of very different norms share a
    /// codebook well (encoding version 3); the --bits plan drops them on layers too narrow to
    /// pay for them. On SmolLM2-135M at --bits 3: 8% lower layer loss, perplexity 17.63 ->
    /// 17.25 (docs/benchmarks.md, "What each default is worth").
    #[arg(long)]
    pub no_row_scales: bool,

    /// Ablation: k-means and assignment in plain Euclidean distance instead of the
    /// inverse-Hessian metric.
    #[arg(long)]
    pub no_hessian_metric: bool,

    /// Ablation: quantize every column group on its own, without feeding its error to the
    /// columns not yet quantized.
    #[arg(long)]
    pub no_error_feedback: bool,

    /// Ablation: keep the k-means centroids instead of re-solving each codebook for the least
    /// layer loss once its indices are fixed. The update only runs on codebooks of at most 1024
    /// values (n x d: d = 2 up to 512 centroids, d = 3 and 4 up to 256), so it never runs in the
    /// default --bits 3 plan (d = 3 and 4 with 512 or 1024 centroids; same file with or without
    /// this flag). Raising the limit to 1536 values (the d = 3, 512-centroid layers) gave 17.77
    /// vs 17.63 perplexity at --bits 3
    #[arg(long)]
    pub no_codebook_update: bool,

    /// Ablation: quantize v_proj under the plain input Hessian it shares with q/k instead of
    /// BoA's attention-aware Hessians (one per kv head, from the attention-weighted inputs).
    #[arg(long)]
    pub no_attention_hessians: bool,
}

impl SizeArgs {
    pub(super) fn options(&self) -> SizeOptions {
        SizeOptions {
            bits: self.bits,
            file_bits: self.file_bits,
            vq: self.vq,
            codebook: match self.codebook {
                CodebookArg::I8 => CodebookKind::Int8,
                CodebookArg::F16 => CodebookKind::F16,
            },
            lowrank: self.lowrank_rank,
            tiles: match self.tiles {
                TilesArg::Wide => TileLayout::Wide,
                TilesArg::Paper => TileLayout::Paper,
            },
            levels: LevelLimits {
                max_dim: self.max_dim as usize,
                max_centroids: self.max_centroids,
            },
            sensitivity: match self.sensitivity {
                SensitivityArg::Hessian => Sensitivity::Hessian,
                SensitivityArg::Fisher => Sensitivity::Fisher,
                SensitivityArg::Uniform => Sensitivity::Uniform,
                SensitivityArg::Relative => Sensitivity::Relative,
            },
            embeddings: match self.embeddings {
                EmbeddingsArg::Athena => Embeddings::Athena,
                EmbeddingsArg::Q8_0 => Embeddings::Plain(TypeArg::Q8_0.into()),
                EmbeddingsArg::F16 => Embeddings::Plain(TypeArg::F16.into()),
                EmbeddingsArg::Bf16 => Embeddings::Plain(TypeArg::Bf16.into()),
                EmbeddingsArg::F32 => Embeddings::Plain(TypeArg::F32.into()),
            },
        }
    }
}

impl QuantizerArgs {
    pub(super) fn options(&self, bits: Option<f64>) -> QuantizerOptions {
        let method = self.method.into();
        QuantizerOptions {
            method,
            order: match self.order {
                OrderArg::Hessian => GroupOrder::HessianDiagonal,
                OrderArg::Natural => GroupOrder::Natural,
            },
            kmeans_iters: self.kmeans_iters,
            damp: self.damp,
            rotation_block: self
                .rotation_block
                .unwrap_or(defaults::rotation_block(bits, method)),
            rotation_per_layer: self.rotation_per_layer,
            qk_row_hessians: self.qk_row_hessians,
            seed: self.seed,
        }
    }
}

impl CalibrationArgs {
    pub fn options(&self) -> CalibrationOptions {
        CalibrationOptions {
            text: self
                .calib
                .clone()
                .unwrap_or_else(convert::default_calibration_text),
            tokens: self.calib_tokens,
            seq_len: self.seq_len,
        }
    }
}

impl AblationArgs {
    pub(super) fn options(&self) -> Ablations {
        Ablations {
            row_scales: !self.no_row_scales,
            hessian_metric: !self.no_hessian_metric,
            error_feedback: !self.no_error_feedback,
            codebook_update: !self.no_codebook_update,
            attention_hessians: !self.no_attention_hessians,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EmbeddingsArg {
    /// Athena weights, planned with the linear layers.
    Athena,
    /// ggml Q8_0 (8.5 bits per weight).
    #[value(name = "q8_0")]
    Q8_0,
    F16,
    Bf16,
    F32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    Athena,
    Kmeans,
    Gptq,
    Rtn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CodebookArg {
    I8,
    F16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TilesArg {
    Wide,
    Paper,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SensitivityArg {
    Hessian,
    Fisher,
    Uniform,
    Relative,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OrderArg {
    Hessian,
    Natural,
}

impl From<MethodArg> for Method {
    fn from(m: MethodArg) -> Self {
        match m {
            MethodArg::Athena => Method::Athena,
            MethodArg::Kmeans => Method::Kmeans,
            MethodArg::Gptq => Method::Gptq,
            MethodArg::Rtn => Method::Rtn,
        }
    }
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

fn parse_lowrank(s: &str) -> Result<LowRankChoice, String> {
    match s {
        "auto" => Ok(LowRankChoice::Auto),
        "0" | "off" => Ok(LowRankChoice::Off),
        r => r
            .parse()
            .map(LowRankChoice::Rank)
            .map_err(|_| format!("'{r}' is not a rank, auto or 0")),
    }
}

pub(super) fn parse_fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("'{s}' is not a fraction from 0 to 1")),
    }
}

fn parse_rotation_block(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(b) if convert::options::valid_rotation_block(b) => Ok(b),
        _ => Err(format!(
            "'{s}' is not 0 or a power of four from 4 to {}",
            athena::quantizer::rotation::MAX_BLOCK
        )),
    }
}

/// A positive, finite number (learning rates, step lengths).
pub(super) fn parse_positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!("'{s}' is not a positive number")),
    }
}

/// A count of at least `min`.
pub(super) fn at_least(min: u64) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(min..)
}

fn parse_max_centroids(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n.is_power_of_two() && (16..=4096).contains(&n) => Ok(n),
        _ => Err(format!("'{s}' is not a power of two from 16 to 4096")),
    }
}
