//! End-to-end plain export: a tiny random model (in-memory TensorSource) written with
//! `export_plain`, read back with our GgufFile and with GgufSource; error paths leave nothing behind;
//! the athena-convert binary on a GGUF input.

mod common;

use common::write_bpe_tokenizer as write_tokenizer;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use athena::checkpoint::gguf_source::GgufSource;
use athena::checkpoint::hf::HfFolder;
use athena::checkpoint::names::{self, hf_to_gguf};
use athena::checkpoint::{Architecture, CheckpointError, DenseTensor, ModelConfig, TensorSource};
use athena::container::gguf::{GgmlType, GgufFile};
use athena::export::{export_plain, ExportError, PlainOptions, PlainType, TokenizerFiles};

const VOCAB: usize = 10;

fn config(arch: Architecture, tied: bool) -> ModelConfig {
    ModelConfig {
        architecture: arch,
        hidden_size: 64,
        // 40: rows of ffn_down are not whole Q8_0 blocks, so it falls back to F16.
        intermediate_size: 40,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 16,
        vocab_size: VOCAB,
        max_position_embeddings: 128,
        rms_norm_eps: 1e-6,
        rope_theta: 10000.0,
        rope_scaling: None,
        tie_word_embeddings: tied,
        attention_bias: arch == Architecture::Qwen2,
        rotary_dim: 16,
        local_attention: None,
        bos_token_id: Some(1),
        eos_token_id: Some(2),
    }
}

/// An in-memory model with random weights.
struct MemSource {
    config: ModelConfig,
    names: Vec<String>,
    tensors: HashMap<String, DenseTensor>,
    /// A tensor whose load fails (to test error cleanup).
    broken: Option<String>,
}

impl MemSource {
    fn new(config: ModelConfig, with_lm_head: bool) -> Self {
        let (h, f, v) = (
            config.hidden_size,
            config.intermediate_size,
            config.vocab_size,
        );
        let q = config.num_attention_heads * config.head_dim;
        let kv = config.num_key_value_heads * config.head_dim;
        let mut shapes: Vec<(String, Vec<usize>)> =
            vec![("model.embed_tokens.weight".into(), vec![v, h])];
        for l in 0..config.num_hidden_layers {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            shapes.push((p("input_layernorm.weight"), vec![h]));
            shapes.push((p("self_attn.q_proj.weight"), vec![q, h]));
            shapes.push((p("self_attn.k_proj.weight"), vec![kv, h]));
            shapes.push((p("self_attn.v_proj.weight"), vec![kv, h]));
            if config.attention_bias {
                shapes.push((p("self_attn.q_proj.bias"), vec![q]));
                shapes.push((p("self_attn.k_proj.bias"), vec![kv]));
                shapes.push((p("self_attn.v_proj.bias"), vec![kv]));
            }
            shapes.push((p("self_attn.o_proj.weight"), vec![h, q]));
            shapes.push((p("post_attention_layernorm.weight"), vec![h]));
            shapes.push((p("mlp.gate_proj.weight"), vec![f, h]));
            shapes.push((p("mlp.up_proj.weight"), vec![f, h]));
            shapes.push((p("mlp.down_proj.weight"), vec![h, f]));
            shapes.push((
                p("self_attn.rotary_emb.inv_freq"),
                vec![config.head_dim / 2],
            ));
        }
        shapes.push(("model.norm.weight".into(), vec![h]));
        if with_lm_head {
            shapes.push(("lm_head.weight".into(), vec![v, h]));
        }
        // Safetensors-like alphabetical order, so the exporter has to sort.
        shapes.sort();
        let mut seed = 0x9e3779b9u32;
        let mut tensors = HashMap::new();
        for (name, shape) in &shapes {
            let n: usize = shape.iter().product();
            let data = (0..n)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    (seed as f32 / u32::MAX as f32 - 0.5) * 0.2
                })
                .collect();
            tensors.insert(
                name.clone(),
                DenseTensor {
                    shape: shape.clone(),
                    data,
                },
            );
        }
        MemSource {
            config,
            names: shapes.into_iter().map(|(n, _)| n).collect(),
            tensors,
            broken: None,
        }
    }
}

impl TensorSource for MemSource {
    fn config(&self) -> &ModelConfig {
        &self.config
    }
    fn tensor_names(&self) -> Vec<String> {
        self.names.clone()
    }
    fn shape(&self, name: &str) -> Result<Vec<usize>, CheckpointError> {
        self.tensors
            .get(name)
            .map(|t| t.shape.clone())
            .ok_or_else(|| CheckpointError::MissingTensor {
                path: "mem".into(),
                name: name.into(),
            })
    }
    fn load(&self, name: &str) -> Result<DenseTensor, CheckpointError> {
        if self.broken.as_deref() == Some(name) {
            return Err(CheckpointError::BadTensor {
                path: "mem".into(),
                name: name.into(),
                message: "simulated read failure".into(),
            });
        }
        self.tensors
            .get(name)
            .cloned()
            .ok_or_else(|| CheckpointError::MissingTensor {
                path: "mem".into(),
                name: name.into(),
            })
    }
}

fn export(src: &MemSource, tok_dir: &Path, out: &Path, ty: PlainType) -> Result<(), ExportError> {
    let files = TokenizerFiles::read(tok_dir)?;
    let opts = PlainOptions {
        ty,
        name: "tiny".into(),
    };
    let mut events = 0;
    export_plain(src, &files, out, &opts, &mut |_| events += 1)?;
    assert!(events > 0);
    Ok(())
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn f32_export_round_trips_through_gguf_source() {
    for arch in [Architecture::Llama, Architecture::Qwen2] {
        let dir = tempfile::tempdir().unwrap();
        write_tokenizer(dir.path());
        let src = MemSource::new(config(arch, true), true);
        let out = dir.path().join("tiny.gguf");
        export(&src, dir.path(), &out, PlainType::F32).unwrap();

        let f = GgufFile::open(&out).unwrap();
        let arch_name = if arch == Architecture::Qwen2 {
            "qwen2"
        } else {
            "llama"
        };
        assert_eq!(f.get_str("general.architecture").unwrap(), arch_name);
        assert_eq!(f.get_u32("general.file_type").unwrap(), 0);
        assert_eq!(
            f.get_u32(&format!("{arch_name}.rope.dimension_count"))
                .unwrap(),
            16
        );
        assert_eq!(f.get_str("tokenizer.ggml.pre").unwrap(), "smollm");
        // Tied: lm_head is dropped; inv_freq is dropped; everything else is there, in order.
        let names: Vec<&str> = f.tensors.iter().map(|t| t.name.as_str()).collect();
        assert!(!names.contains(&"output.weight"));
        let expected = src
            .names
            .iter()
            .filter(|n| !n.ends_with("inv_freq") && *n != "lm_head.weight")
            .count();
        assert_eq!(names.len(), expected);
        assert_eq!(names[0], "token_embd.weight");
        assert_eq!(names[names.len() - 1], "output_norm.weight");
        assert!(
            names.iter().position(|n| n.starts_with("blk.1."))
                > names.iter().rposition(|n| n.starts_with("blk.0."))
        );
        let q = f.tensor("blk.0.attn_q.weight").unwrap();
        assert_eq!(q.dims, vec![64, 64]);
        assert_eq!(
            f.tensor("blk.0.ffn_down.weight").unwrap().dims,
            vec![40, 64]
        );
        assert_eq!(f.tensor("blk.0.attn_k.weight").unwrap().dims, vec![64, 32]);
        assert!(f.tensors.iter().all(|t| t.ggml_type == GgmlType::F32));

        // Raw q rows: permuted for llama, untouched for qwen2.
        let raw: Vec<f32> = f
            .tensor_data(q)
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let hf = &src.tensors["model.layers.0.self_attn.q_proj.weight"].data;
        if arch == Architecture::Llama {
            assert_eq!(raw, names::permute_qk(hf, 64, 64, 4).unwrap());
            assert_ne!(&raw, hf);
        } else {
            assert_eq!(&raw, hf);
        }

        // GgufSource undoes the permutation: every tensor equals the source exactly.
        let back = GgufSource::open(&out).unwrap();
        let c = back.config();
        assert_eq!(
            (c.hidden_size, c.intermediate_size, c.num_hidden_layers),
            (64, 40, 2)
        );
        assert_eq!(
            (c.num_attention_heads, c.num_key_value_heads, c.head_dim),
            (4, 2, 16)
        );
        assert!(c.tie_word_embeddings);
        assert_eq!(c.attention_bias, arch == Architecture::Qwen2);
        for name in back.tensor_names() {
            assert_eq!(back.load(&name).unwrap(), src.tensors[&name], "{name}");
        }
        assert_eq!(
            dir_entries(dir.path()),
            ["tiny.gguf", "tokenizer.json", "tokenizer_config.json"]
        );
    }
}

#[test]
fn untied_model_keeps_output() {
    let dir = tempfile::tempdir().unwrap();
    write_tokenizer(dir.path());
    let src = MemSource::new(config(Architecture::Llama, false), true);
    let out = dir.path().join("untied.gguf");
    export(&src, dir.path(), &out, PlainType::BF16).unwrap();
    let f = GgufFile::open(&out).unwrap();
    let o = f.tensor("output.weight").unwrap();
    assert_eq!(
        (o.dims.clone(), o.ggml_type),
        (vec![64, VOCAB as u64], GgmlType::BF16)
    );
    assert_eq!(f.tensors.last().unwrap().name, "output.weight");
    assert_eq!(f.get_u32("general.file_type").unwrap(), 32);
    let back = GgufSource::open(&out).unwrap();
    assert!(!back.config().tie_word_embeddings);
    let got = back.load("lm_head.weight").unwrap();
    for (a, b) in got.data.iter().zip(&src.tensors["lm_head.weight"].data) {
        assert!((a - b).abs() <= b.abs() / 128.0, "{a} vs {b}");
    }
}

#[test]
fn q8_0_and_f16_types_and_error_bounds() {
    let dir = tempfile::tempdir().unwrap();
    write_tokenizer(dir.path());
    let src = MemSource::new(config(Architecture::Llama, true), false);
    for ty in [PlainType::Q8_0, PlainType::F16] {
        let out = dir.path().join(format!("tiny-{ty}.gguf"));
        export(&src, dir.path(), &out, ty).unwrap();
        let f = GgufFile::open(&out).unwrap();
        assert_eq!(f.get_u32("general.file_type").unwrap(), ty.file_type());
        for t in &f.tensors {
            let want = if t.dims.len() == 1 {
                GgmlType::F32
            } else if ty == PlainType::Q8_0 && t.dims[0] % 32 != 0 {
                GgmlType::F16
            } else {
                ty.ggml_type()
            };
            assert_eq!(t.ggml_type, want, "{}", t.name);
        }
        // Rows of 40: F16 under q8_0 (fallback) and under f16.
        assert_eq!(
            f.tensor("blk.0.ffn_down.weight").unwrap().ggml_type,
            GgmlType::F16
        );
        let back = GgufSource::open(&out).unwrap();
        for name in back.tensor_names() {
            let want = &src.tensors[&name].data;
            let got = back.load(&name).unwrap().data;
            let gguf = hf_to_gguf(back.config().architecture, &name).unwrap();
            let t = f.tensor(&gguf).unwrap();
            match t.ggml_type {
                GgmlType::F32 => assert_eq!(&got, want, "{name}"),
                GgmlType::F16 => {
                    for (a, b) in got.iter().zip(want) {
                        assert!(
                            (a - b).abs() <= b.abs() / 2048.0 + 1e-7,
                            "{name}: {a} vs {b}"
                        );
                    }
                }
                GgmlType::Q8_0 => {
                    // Q8_0 blocks are 32 consecutive values of a row; the q/k permutation moves
                    // whole rows (64 long), so the HF-order chunks of 32 are the same blocks.
                    for (wb, gb) in want.chunks(32).zip(got.chunks(32)) {
                        let amax = wb.iter().fold(0f32, |m, x| m.max(x.abs()));
                        let bound = amax / 127.0 * 0.5 + amax * 1e-3;
                        for (a, b) in gb.iter().zip(wb) {
                            assert!((a - b).abs() <= bound, "{name}: {a} vs {b} (bound {bound})");
                        }
                    }
                }
                other => panic!("unexpected type {other:?}"),
            }
        }
    }
}

#[test]
fn errors_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let tok_dir = dir.path().join("tok");
    std::fs::create_dir(&tok_dir).unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let out = out_dir.join("x.gguf");
    let src = MemSource::new(config(Architecture::Llama, true), false);

    // Missing tokenizer.json: a one-line error naming the file.
    let e = export(&src, &tok_dir, &out, PlainType::F16)
        .unwrap_err()
        .to_string();
    assert!(e.contains("tokenizer.json") && !e.contains('\n'), "{e}");
    assert!(dir_entries(&out_dir).is_empty());

    // A tensor that fails to load half way: the error names it; no output, no spill file.
    write_tokenizer(&tok_dir);
    let mut broken = MemSource::new(config(Architecture::Llama, true), false);
    broken.broken = Some("model.layers.1.mlp.up_proj.weight".into());
    let e = export(&broken, &tok_dir, &out, PlainType::F16)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.layers.1.mlp.up_proj.weight") && !e.contains('\n'),
        "{e}"
    );
    assert!(
        dir_entries(&out_dir).is_empty(),
        "{:?}",
        dir_entries(&out_dir)
    );

    // A q_proj whose rows do not split into heads of even size.
    let mut bad = MemSource::new(config(Architecture::Llama, true), false);
    bad.config.num_attention_heads = 3;
    let e = export(&bad, &tok_dir, &out, PlainType::F16)
        .unwrap_err()
        .to_string();
    assert!(e.contains("q_proj") && e.contains("heads"), "{e}");
    assert!(dir_entries(&out_dir).is_empty());
}

#[test]
fn cli_converts_a_gguf_and_reports_errors() {
    let exe = env!("CARGO_BIN_EXE_athena-convert");
    let dir = tempfile::tempdir().unwrap();
    write_tokenizer(dir.path());
    let src = MemSource::new(config(Architecture::Llama, true), false);
    let f32_path = dir.path().join("in.gguf");
    export(&src, dir.path(), &f32_path, PlainType::F32).unwrap();

    let out = dir.path().join("out.gguf");
    let run = |args: &[&str]| Command::new(exe).args(args).output().unwrap();
    let o = run(&[
        f32_path.to_str().unwrap(),
        out.to_str().unwrap(),
        "--type",
        "q8_0",
        "-q",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let f = GgufFile::open(&out).unwrap();
    assert_eq!(
        f.tensor("blk.0.attn_q.weight").unwrap().ggml_type,
        GgmlType::Q8_0
    );
    assert_eq!(f.get_str("tokenizer.ggml.pre").unwrap(), "smollm");
    assert_eq!(f.get_str("general.name").unwrap(), "tiny");

    // Exists without --force: exit 1, one line naming the file.
    let o = run(&[f32_path.to_str().unwrap(), out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("out.gguf") && err.contains("--force") && err.trim().lines().count() == 1,
        "{err}"
    );

    // Missing input: exit 1, names the file; no output.
    let out2 = dir.path().join("out2.gguf");
    let o = run(&["/nonexistent/model.gguf", out2.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/model.gguf"));
    assert!(!out2.exists());

    // Output folder missing: exit 1, names the folder.
    let o = run(&[f32_path.to_str().unwrap(), "/nonexistent-dir/out.gguf"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("directory /nonexistent-dir does not exist")
    );

    // Usage errors: exit 2. --help teaches.
    assert_eq!(run(&["a", "b", "--type", "q4_0"]).status.code(), Some(2));
    let help = String::from_utf8_lossy(&run(&["--help"]).stdout).into_owned();
    for needle in [
        "Examples:",
        "q8_0",
        "--force",
        "Exit status",
        "default: f16",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}:\n{help}");
    }
}

/// An HF folder (config.json + model.safetensors + a BPE tokenizer.json) exported through HfFolder
/// and through the CLI; every tensor reads back equal (f32) via GgufSource.
#[test]
fn hf_folder_export_round_trip() {
    for arch in ["llama", "qwen2"] {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("tiny-hf");
        std::fs::create_dir(&model).unwrap();
        let cfg = common::tiny_config(arch);
        let tensors = common::random_tensors(&cfg, 11);
        common::write_folder(&model, &cfg, &tensors);
        write_tokenizer(&model);

        let src = HfFolder::open_validated(&model).unwrap();
        let files = TokenizerFiles::read(&model).unwrap();
        let out = dir.path().join("tiny.gguf");
        let opts = PlainOptions {
            ty: PlainType::F32,
            name: "tiny-hf".into(),
        };
        let summary = export_plain(&src, &files, &out, &opts, &mut |_| {}).unwrap();
        assert_eq!(summary.tensors, tensors.len(), "{arch}");
        let back = GgufSource::open(&out).unwrap();
        assert_eq!(back.config().vocab_size, 50);
        assert!(!back.config().tie_word_embeddings);
        for (name, (shape, data)) in &tensors {
            let t = back.load(name).unwrap();
            assert_eq!((&t.shape, &t.data), (shape, data), "{arch} {name}");
        }
        let f = GgufFile::open(&out).unwrap();
        // The 10-token tokenizer is padded to the config's 50 ids.
        let tokens = f.get_string_array("tokenizer.ggml.tokens").unwrap();
        assert_eq!((tokens.len(), tokens[49].as_str()), (50, "[PAD49]"));

        // The CLI on the folder: f16 (rows of 16 are no Q8_0 blocks, so q8_0 would be F16 too).
        let out2 = dir.path().join("tiny-q8.gguf");
        let o = Command::new(env!("CARGO_BIN_EXE_athena-convert"))
            .args([
                model.to_str().unwrap(),
                out2.to_str().unwrap(),
                "--type",
                "q8_0",
                "-q",
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let f = GgufFile::open(&out2).unwrap();
        assert_eq!(f.get_str("general.name").unwrap(), "tiny-hf");
        assert_eq!(
            f.tensor("blk.0.attn_q.weight").unwrap().ggml_type,
            GgmlType::F16
        );
        assert_eq!(
            f.tensor("blk.0.attn_norm.weight").unwrap().ggml_type,
            GgmlType::F32
        );

        // Without tokenizer.json: exit 1, one line naming the file, nothing written.
        std::fs::remove_file(model.join("tokenizer.json")).unwrap();
        let out3 = dir.path().join("none.gguf");
        let o = Command::new(env!("CARGO_BIN_EXE_athena-convert"))
            .args([model.to_str().unwrap(), out3.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            err.contains("tokenizer.json") && err.trim().lines().count() == 1,
            "{err}"
        );
        assert!(!out3.exists());
        assert_eq!(
            dir_entries(dir.path()),
            ["tiny-hf", "tiny-q8.gguf", "tiny.gguf"]
        );
    }
}
