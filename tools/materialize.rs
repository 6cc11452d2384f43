//! athena-materialize: turn a llama.cpp GGUF checkpoint into a Hugging Face model folder.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use athena::checkpoint::gguf_source::GgufSource;
use athena::checkpoint::vocab::GgufVocab;
use athena::checkpoint::{Architecture, ModelConfig, TensorSource};
use clap::Parser;
use serde_json::{json, Map, Value as Json};
use sha2::{Digest, Sha256};

/// Materialise a GGUF checkpoint as a Hugging Face model folder (f32).
///
/// Reads a llama.cpp GGUF file (architecture qwen2, qwen3, gemma3 or llama, which llama.cpp also uses for
/// mistral; tensor types F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K) and writes OUT_DIR with:
///
///   config.json            HF config (architectures, model_type, hyperparameters, torch_dtype float32)
///   model.safetensors      every tensor dequantized to f32, under HF names and in HF shapes; for the
///                          llama architecture the q/k row permutation of llama.cpp's converter is undone
///   tokenizer.json         rebuilt from the GGUF vocabulary (tokenizer.ggml.*)
///   tokenizer_config.json  bos/eos/unk/pad tokens, add_bos_token, chat_template
///
/// The result loads like any HF checkpoint (transformers, candle, Athena's own HF reader). It is the
/// dequantized model: its weights lie exactly on the source's quantization grid. The safetensors
/// metadata records the source file name and its SHA-256.
///
/// The folder is written under a temporary name next to OUT_DIR and renamed when complete, so OUT_DIR
/// never exists half-written. An existing OUT_DIR is an error unless --force is given.
///
/// Example:
///   athena-materialize ~/.cache/athena/gguf/SmolLM2-135M-Instruct.Q4_1.gguf \
///       ~/.cache/athena/models/SmolLM2-135M-Instruct
#[derive(Parser, Debug)]
#[command(name = "athena-materialize", version, verbatim_doc_comment)]
struct Args {
    /// The GGUF file to read.
    gguf: PathBuf,
    /// The HF folder to create.
    out_dir: PathBuf,
    /// Replace OUT_DIR if it already exists.
    #[arg(long)]
    force: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("athena-materialize: {e}");
            ExitCode::FAILURE
        }
    }
}

type Error = Box<dyn std::error::Error>;

fn run(args: &Args) -> Result<(), Error> {
    let start = Instant::now();
    if args.out_dir.exists() && !args.force {
        return Err(format!(
            "{} already exists (use --force to replace it)",
            args.out_dir.display()
        )
        .into());
    }
    let source = GgufSource::open(&args.gguf)?;
    let vocab = GgufVocab::from_gguf(source.gguf())
        .map_err(|e| format!("{}: tokenizer: {e}", args.gguf.display()))?;
    let tokenizer = vocab
        .tokenizer_json()
        .map_err(|e| format!("{}: tokenizer: {e}", args.gguf.display()))?;
    let tokenizer_config = vocab
        .tokenizer_config_json()
        .map_err(|e| format!("{}: tokenizer: {e}", args.gguf.display()))?;
    let sha = sha256_file(&args.gguf)?;

    let out = &args.out_dir;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(|e| io_err("creating", &parent, e))?;
    let name = out
        .file_name()
        .ok_or_else(|| format!("{}: not a folder name", out.display()))?;
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| io_err("removing", &tmp, e))?;
    }
    fs::create_dir(&tmp).map_err(|e| io_err("creating", &tmp, e))?;
    let result = (|| -> Result<u64, Error> {
        write_json(&tmp.join("config.json"), &hf_config(source.config())?)?;
        write_json(&tmp.join("tokenizer.json"), &tokenizer)?;
        write_json(&tmp.join("tokenizer_config.json"), &tokenizer_config)?;
        let file_name = args
            .gguf
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let meta = [
            ("format", "pt".to_string()),
            ("athena_source", file_name),
            ("athena_source_sha256", sha.clone()),
        ];
        write_safetensors(&source, &tmp.join("model.safetensors"), &meta)
    })();
    let bytes = match result {
        Ok(b) => b,
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    if out.exists() {
        fs::remove_dir_all(out).map_err(|e| io_err("removing", out, e))?;
    }
    fs::rename(&tmp, out).map_err(|e| io_err("renaming into place", out, e))?;
    let c = source.config();
    eprintln!(
        "wrote {}: {} tensors, {} parameters, model.safetensors {:.1} MB, {:?} {} layers width {}, in {:.1} s",
        out.display(),
        source.tensor_names().len(),
        count_params(&source)?,
        bytes as f64 / 1e6,
        c.architecture,
        c.num_hidden_layers,
        c.hidden_size,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn io_err(op: &str, path: &Path, e: std::io::Error) -> Error {
    format!("{op} {}: {e}", path.display()).into()
}

fn write_json(path: &Path, value: &Json) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(value)?;
    fs::write(path, text + "\n").map_err(|e| io_err("writing", path, e))
}

fn sha256_file(path: &Path) -> Result<String, Error> {
    let mut f = File::open(path).map_err(|e| io_err("opening", path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| io_err("reading", path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn count_params(source: &GgufSource) -> Result<usize, Error> {
    let mut n = 0;
    for name in source.tensor_names() {
        n += source.shape(&name)?.iter().product::<usize>();
    }
    Ok(n)
}

/// The HF config.json for a model config (transformers' LlamaConfig / Qwen2Config / Qwen3Config /
/// Gemma3TextConfig keys).
fn hf_config(c: &ModelConfig) -> Result<Json, Error> {
    let (arch, model_type) = match c.architecture {
        Architecture::Llama => ("LlamaForCausalLM", "llama"),
        Architecture::Mistral => ("MistralForCausalLM", "mistral"),
        Architecture::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
        Architecture::Qwen3 => ("Qwen3ForCausalLM", "qwen3"),
        Architecture::Gemma3 => ("Gemma3ForCausalLM", "gemma3_text"),
        Architecture::Phi3 => return Err("phi3 GGUF files cannot be materialised yet".into()),
    };
    if c.rope_scaling
        .as_ref()
        .is_some_and(|r| r.short_factor.is_some())
    {
        return Err(
            "RoPE frequency factors (rope_freqs.weight) have no HF rope_scaling form".into(),
        );
    }
    let rope_scaling = c.rope_scaling.as_ref().map(|r| {
        let mut m = Map::new();
        m.insert("rope_type".into(), json!(r.rope_type));
        m.insert("factor".into(), json!(r.factor));
        if let Some(x) = r.low_freq_factor {
            m.insert("low_freq_factor".into(), json!(x));
        }
        if let Some(x) = r.high_freq_factor {
            m.insert("high_freq_factor".into(), json!(x));
        }
        if let Some(x) = r.original_max_position_embeddings {
            m.insert("original_max_position_embeddings".into(), json!(x));
        }
        Json::Object(m)
    });
    let mut m = Map::new();
    m.insert("architectures".into(), json!([arch]));
    m.insert("model_type".into(), json!(model_type));
    m.insert("hidden_size".into(), json!(c.hidden_size));
    m.insert("intermediate_size".into(), json!(c.intermediate_size));
    m.insert("num_hidden_layers".into(), json!(c.num_hidden_layers));
    m.insert("num_attention_heads".into(), json!(c.num_attention_heads));
    m.insert("num_key_value_heads".into(), json!(c.num_key_value_heads));
    m.insert("head_dim".into(), json!(c.head_dim));
    m.insert("vocab_size".into(), json!(c.vocab_size));
    m.insert(
        "max_position_embeddings".into(),
        json!(c.max_position_embeddings),
    );
    m.insert("rms_norm_eps".into(), json!(c.rms_norm_eps));
    m.insert("rope_theta".into(), json!(c.rope_theta));
    m.insert("rope_scaling".into(), rope_scaling.unwrap_or(Json::Null));
    m.insert("tie_word_embeddings".into(), json!(c.tie_word_embeddings));
    match c.architecture.activation() {
        athena::checkpoint::Activation::Silu => m.insert("hidden_act".into(), json!("silu")),
        athena::checkpoint::Activation::GeluTanh => {
            m.insert("hidden_activation".into(), json!("gelu_pytorch_tanh"))
        }
    };
    if let Some(local) = &c.local_attention {
        let types: Vec<&str> = local
            .layers
            .iter()
            .map(|&l| {
                if l {
                    "sliding_attention"
                } else {
                    "full_attention"
                }
            })
            .collect();
        m.insert("sliding_window".into(), json!(local.window));
        m.insert("layer_types".into(), json!(types));
        m.insert("rope_local_base_freq".into(), json!(local.rope_theta));
    }
    if c.architecture == Architecture::Gemma3 {
        m.insert("query_pre_attn_scalar".into(), json!(c.head_dim));
    }
    if c.architecture != Architecture::Qwen2 {
        // qwen2 always has q/k/v biases and has no such key.
        m.insert("attention_bias".into(), json!(c.attention_bias));
        m.insert("mlp_bias".into(), json!(false));
    }
    m.insert("attention_dropout".into(), json!(0.0));
    m.insert("initializer_range".into(), json!(0.02));
    m.insert("use_cache".into(), json!(true));
    m.insert(
        "bos_token_id".into(),
        c.bos_token_id.map_or(Json::Null, |x| json!(x)),
    );
    m.insert(
        "eos_token_id".into(),
        c.eos_token_id.map_or(Json::Null, |x| json!(x)),
    );
    m.insert("torch_dtype".into(), json!("float32"));
    Ok(Json::Object(m))
}

/// Writes all tensors as f32 safetensors, one tensor in memory at a time. Returns the file size.
///
/// Layout (safetensors spec): u64 LE header length, the JSON header (padded with spaces to a
/// multiple of 8), then the tensors' bytes back to back in header-offset order.
fn write_safetensors(
    source: &GgufSource,
    path: &Path,
    metadata: &[(&str, String)],
) -> Result<u64, Error> {
    let names = source.tensor_names();
    let mut header = Map::new();
    let mut meta = Map::new();
    for (k, v) in metadata {
        meta.insert(k.to_string(), json!(v));
    }
    header.insert("__metadata__".into(), Json::Object(meta));
    let mut offset: u64 = 0;
    let mut shapes = Vec::with_capacity(names.len());
    for name in &names {
        let shape = source.shape(name)?;
        let bytes = shape.iter().product::<usize>() as u64 * 4;
        header.insert(
            name.clone(),
            json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
        shapes.push(shape);
    }
    let mut text = serde_json::to_string(&Json::Object(header))?;
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    let file = File::create(path).map_err(|e| io_err("creating", path, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let werr = |e: std::io::Error| io_err("writing", path, e);
    w.write_all(&(text.len() as u64).to_le_bytes())
        .map_err(werr)?;
    w.write_all(text.as_bytes()).map_err(werr)?;
    let mut buf = Vec::new();
    for (name, shape) in names.iter().zip(&shapes) {
        let t = source.load(name)?;
        if &t.shape != shape {
            return Err(format!(
                "tensor '{name}': loaded shape {:?} differs from {:?}",
                t.shape, shape
            )
            .into());
        }
        if let Some(i) = t.data.iter().position(|x| !x.is_finite()) {
            return Err(format!(
                "tensor '{name}': element {i} is {} after dequantization",
                t.data[i]
            )
            .into());
        }
        buf.clear();
        buf.reserve(t.data.len() * 4);
        for x in &t.data {
            buf.extend_from_slice(&x.to_le_bytes());
        }
        w.write_all(&buf).map_err(werr)?;
    }
    let file = w
        .into_inner()
        .map_err(|e| io_err("flushing", path, e.into_error()))?;
    file.sync_all().map_err(|e| io_err("syncing", path, e))?;
    Ok(8 + text.len() as u64 + offset)
}
