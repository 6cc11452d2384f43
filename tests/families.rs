//! The model families beyond llama/mistral/qwen2 (Llama 3.x RoPE scaling, Qwen3, Gemma 3, Phi-3)
//! on tiny random checkpoints with each family's options on (`common::tiny_config`): config
//! parsing and its refusals, and one forward three ways that must agree: the reference decoder on
//! the HF folder, the same decoder on our plain F32 export read back (names, the Gemma norm offset,
//! the RoPE tensors), and athena-runtime on that export. Against an implementation nobody here
//! wrote (llama.cpp, and transformers' definitions in numpy): tools/check-families.sh.

mod common;

use athena::checkpoint::gguf_source::GgufSource;
use athena::checkpoint::{Architecture, HfFolder, ModelConfig, TensorSource};
use athena::container::gguf::GgufFile;
use athena::export::{export_plain, PlainOptions, PlainType, TokenizerFiles};
use athena::model::Model;
use candle_core::Device;
use common::*;
use serde_json::json;
use std::path::Path;

const TOKENS: [u32; 12] = [3, 17, 4, 49, 0, 8, 8, 21, 5, 30, 2, 11];

fn parse(v: &serde_json::Value) -> Result<ModelConfig, String> {
    ModelConfig::from_hf_value(v, Path::new("x/config.json")).map_err(|e| e.to_string())
}

#[test]
fn family_configs_turn_their_options_on() {
    let c = parse(&tiny_config("qwen3")).unwrap();
    assert_eq!(c.architecture, Architecture::Qwen3);
    assert!(c.architecture.qk_norm() && c.tie_word_embeddings && !c.attention_bias);
    assert_eq!((c.head_dim, c.hidden_size), (8, 16));

    let c = parse(&tiny_config("gemma3")).unwrap();
    assert_eq!(c.architecture, Architecture::Gemma3);
    let local = c.local_attention.as_ref().unwrap();
    assert_eq!(
        (local.window, local.layers.clone(), local.rope_theta),
        (4, vec![true, false], 10000.0)
    );
    assert!(c.is_local(0) && !c.is_local(1));

    let c = parse(&tiny_config("phi3")).unwrap();
    assert_eq!(
        (c.architecture, c.head_dim, c.rotary_dim),
        (Architecture::Phi3, 8, 4)
    );
    let s = c.rope_scaling.as_ref().unwrap();
    assert_eq!((s.rope_type.as_str(), s.factor), ("longrope", 4.0));
    let want = (1.0 + 4f64.ln() / 32f64.ln()).sqrt();
    assert!((s.attention_factor.unwrap() - want).abs() < 1e-12);

    // sliding_window_pattern instead of layer_types: every 6th layer global.
    let mut v = tiny_config("gemma3");
    v.as_object_mut().unwrap().remove("layer_types");
    v["num_hidden_layers"] = json!(7);
    v["sliding_window_pattern"] = json!(6);
    let c = parse(&v).unwrap();
    let layers = &c.local_attention.unwrap().layers;
    assert_eq!(layers, &[true, true, true, true, true, false, true]);
}

#[test]
fn family_options_outside_the_forward_are_refused() {
    let refused = |arch: &str, edit: &dyn Fn(&mut serde_json::Value), needle: &str| {
        let mut v = tiny_config(arch);
        edit(&mut v);
        let e = parse(&v).unwrap_err();
        assert!(
            e.contains(needle) && e.contains("x/config.json") && !e.contains('\n'),
            "{e}"
        );
    };
    refused(
        "gemma3",
        &|v| v["final_logit_softcapping"] = json!(30.0),
        "final_logit_softcapping",
    );
    refused(
        "gemma3",
        &|v| v["query_pre_attn_scalar"] = json!(6),
        "query_pre_attn_scalar",
    );
    refused(
        "gemma3",
        &|v| v["layer_types"] = json!(["full_attention"]),
        "layer_types",
    );
    refused(
        "gemma3",
        &|v| v["hidden_activation"] = json!("relu"),
        "relu",
    );
    refused(
        "phi3",
        &|v| v["rope_scaling"]["short_factor"] = json!([1.0]),
        "short_factor",
    );
    refused(
        "phi3",
        &|v| v["rope_scaling"]["long_factor"] = json!([1.0, -2.0]),
        "long_factor",
    );
    refused(
        "phi3",
        &|v| v["partial_rotary_factor"] = json!(0.1),
        "partial_rotary_factor",
    );
    refused(
        "qwen3",
        &|v| v["attention_bias"] = json!(true),
        "attention_bias",
    );
    refused(
        "llama",
        &|v| v["architectures"] = json!(["Gemma2ForCausalLM"]),
        "Gemma2ForCausalLM",
    );
}

/// A tiny random checkpoint of `arch` in `dir`, with a tokenizer the export understands.
fn tiny_model(dir: &Path, arch: &str) -> HfFolder {
    let cfg = tiny_config(arch);
    write_folder(dir, &cfg, &random_tensors(&cfg, 23));
    write_bpe_tokenizer(dir);
    HfFolder::open_validated(dir).unwrap()
}

fn reference_logits(source: &dyn TensorSource, tokens: &[u32]) -> Vec<f32> {
    let model = Model::new(source, Device::Cpu).unwrap();
    let logits = model.logits(&[tokens.to_vec()]).unwrap();
    logits[0].flatten_all().unwrap().to_vec1().unwrap()
}

/// Our plain F32 export of the tiny model in `dir` (its path, and the file opened).
fn export_f32(dir: &Path, folder: &HfFolder) -> (std::path::PathBuf, GgufFile) {
    let out = dir.join("f32.gguf");
    let files = TokenizerFiles::read(dir).unwrap();
    let opts = PlainOptions {
        ty: PlainType::F32,
        name: "tiny".into(),
    };
    export_plain(folder, &files, &out, &opts, &mut |_| {}).unwrap();
    let file = GgufFile::open(&out).unwrap();
    (out, file)
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
        / scale
}

#[test]
fn reference_export_and_runtime_agree_for_every_family() {
    for arch in NEW_FAMILIES.into_iter().chain(["llama", "qwen2"]) {
        let dir = tempfile::tempdir().unwrap();
        let folder = tiny_model(dir.path(), arch);
        let want = reference_logits(&folder, &TOKENS);
        assert!(want.iter().all(|x| x.is_finite()), "{arch}");

        let (out, file) = export_f32(dir.path(), &folder);
        let model = athena_runtime::Model::load(&file).unwrap();
        // A context within Phi-3's original 32 positions: the runtime picks longrope's factors
        // by its context (as llama.cpp does), the reference by the sequence (as HF does).
        let ctx = 32;
        let mut cache = model.new_cache(athena_runtime::KvType::F16, ctx);
        let got = model.forward(&mut cache, &TOKENS, 0).unwrap();
        let d = max_rel_diff(&got, &want);
        assert!(
            d < 2e-3,
            "{arch}: runtime differs from the reference by {d}"
        );
        // One token at a time (the decode path, sliding window over the cache) as well.
        let mut cache = model.new_cache(athena_runtime::KvType::F16, ctx);
        let mut stepped = Vec::new();
        for &t in &TOKENS {
            stepped.extend(model.forward(&mut cache, &[t], 0).unwrap());
        }
        let d = max_rel_diff(&stepped, &want);
        assert!(d < 2e-3, "{arch}: token-by-token runtime differs by {d}");

        let back = GgufSource::open(&out).unwrap();
        assert_eq!(
            back.config().architecture,
            folder.config().architecture,
            "{arch}"
        );
        let d = max_rel_diff(&reference_logits(&back, &TOKENS), &want);
        assert!(d < 1e-5, "{arch}: the export read back differs by {d}");
    }
}

/// The sliding window matters: with it removed, Gemma 3's logits past the window change, and
/// the ones inside it do not.
#[test]
fn gemma3_window_masks_only_past_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let folder = tiny_model(dir.path(), "gemma3");
    let with = reference_logits(&folder, &TOKENS);
    let mut cfg = tiny_config("gemma3");
    cfg["sliding_window"] = json!(64);
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    let without = reference_logits(&HfFolder::open_validated(dir.path()).unwrap(), &TOKENS);
    let vocab = 50;
    let inside = 4 * vocab; // positions 0..4 see at most 4 keys
    assert_eq!(with[..inside], without[..inside]);
    assert!(max_rel_diff(&with[inside..], &without[inside..]) > 1e-3);
}

/// Past Phi-3's original context both forwards switch to longrope's long factors: the reference
/// on a sequence longer than it (as transformers), the runtime with a cache larger than it (as
/// llama.cpp), so a 40-token sequence with a 64-position cache agrees too.
#[test]
fn phi3_long_factors_beyond_the_original_context() {
    let dir = tempfile::tempdir().unwrap();
    let folder = tiny_model(dir.path(), "phi3");
    let tokens: Vec<u32> = (0..40).map(|i| (i * 7 + 3) % 50).collect();
    let want = reference_logits(&folder, &tokens);
    let (_, file) = export_f32(dir.path(), &folder);
    let runtime = athena_runtime::Model::load(&file).unwrap();
    let run = |ctx: usize, tokens: &[u32]| {
        let mut cache = runtime.new_cache(athena_runtime::KvType::F16, ctx);
        runtime.forward(&mut cache, tokens, 0).unwrap()
    };
    let d = max_rel_diff(&run(64, &tokens), &want);
    assert!(d < 2e-3, "long factors: runtime differs by {d}");
    // The same 12 tokens in a cache within the original context use the short factors.
    let d = max_rel_diff(&run(32, &tokens[..12]), &run(64, &tokens[..12]));
    assert!(
        d > 1e-3,
        "short and long factors give the same logits ({d})"
    );
}
