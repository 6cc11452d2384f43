//! athena-convert --bits/--vq end to end on a tiny random llama (the real model runs in
//! tests/real_convert.rs): a valid file that athena-verify accepts and GgufSource decodes,
//! byte-identical output for a fixed seed, and clear errors that leave no output behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use athena::checkpoint::gguf_source::GgufSource;
use athena::checkpoint::{HfFolder, TensorSource};
use athena::container::gguf::reader::GgufFile;

struct Tiny {
    dir: tempfile::TempDir,
}

impl Tiny {
    fn new(arch: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("tiny");
        std::fs::create_dir(&model).unwrap();
        let cfg = common::tiny_config(arch);
        common::write_folder(&model, &cfg, &common::random_tensors(&cfg, 5));
        common::write_bpe_tokenizer(&model);
        let text: String = (0..400)
            .map(|k| ["ab ", "a b ", "12 ", "ab1 "][k % 4])
            .collect();
        std::fs::write(dir.path().join("calib.txt"), text).unwrap();
        Tiny { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn convert(&self, out: &str, extra: &[&str]) -> (i32, String) {
        let mut extra = extra.to_vec();
        extra.push("--quiet");
        self.convert_with_report(out, &extra)
    }

    /// As `convert`, without `--quiet`: stderr holds the plan and the final report.
    fn convert_with_report(&self, out: &str, extra: &[&str]) -> (i32, String) {
        let mut args: Vec<String> = vec![
            self.path("tiny").display().to_string(),
            self.path(out).display().to_string(),
        ];
        args.extend(
            [
                "--calib",
                &self.path("calib.txt").display().to_string(),
                "--seq-len",
                "16",
            ]
            .map(String::from),
        );
        if !extra.contains(&"--calib-tokens") {
            args.extend(["--calib-tokens".to_string(), "64".to_string()]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let o = Command::new(env!("CARGO_BIN_EXE_athena-convert"))
            .args(&args)
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }
}

fn verify_json(path: &Path) -> serde_json::Value {
    let o = Command::new(env!("CARGO_BIN_EXE_athena-verify"))
        .arg(path)
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "athena-verify: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn bits_budget_gives_a_valid_file_within_budget() {
    for arch in ["llama", "qwen2"] {
        let t = Tiny::new(arch);
        let (code, err) = t.convert("q.gguf", &["--bits", "3.5"]);
        assert_eq!(code, 0, "{arch}: {err}");
        let report = verify_json(&t.path("q.gguf"));
        let s = &report["summary"];
        assert_eq!(
            s["athena_weights"], 16,
            "{arch}: two blocks of seven linear layers, the output head and the embedding"
        );
        let bpw = s["linear_bpw"].as_f64().unwrap();
        assert!(bpw <= 3.5 && bpw > 2.0, "{arch}: linear bpw {bpw}");
        // The file runs: every weight decodes back to its HF shape.
        let src = GgufSource::open(t.path("q.gguf")).unwrap();
        let w = src.load("model.layers.1.self_attn.q_proj.weight").unwrap();
        assert_eq!(w.shape, vec![16, 16]);
        assert!(w.data.iter().all(|x| x.is_finite()));
    }
}

/// Every new family converts at --bits 3 into a file athena-verify accepts, whose perplexity
/// through athena-eval (the runtime on the compressed weights) is the converter's own figure.
#[test]
fn every_family_converts_verifies_and_evaluates() {
    for arch in common::NEW_FAMILIES {
        let t = Tiny::new(arch);
        let calib = t.path("calib.txt");
        let o = Command::new(env!("CARGO_BIN_EXE_athena-convert"))
            .arg(t.path("tiny"))
            .arg(t.path("q.gguf"))
            .args([
                "--bits",
                "3",
                "--seq-len",
                "16",
                "--calib-tokens",
                "64",
                "--quiet",
            ])
            .args([
                "--calib",
                calib.to_str().unwrap(),
                "--eval-text",
                calib.to_str().unwrap(),
            ])
            .args(["--eval-ctx", "16"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stdout).into_owned();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{arch}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let report = verify_json(&t.path("q.gguf"));
        let tied = !matches!(arch, "llama" | "qwen2");
        let weights = 14 + if tied { 1 } else { 2 };
        assert_eq!(report["summary"]["athena_weights"], weights, "{arch}");
        let o = Command::new(env!("CARGO_BIN_EXE_athena-eval"))
            .arg(t.path("q.gguf"))
            .args(["--text", calib.to_str().unwrap(), "--ctx", "16"])
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{arch}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let ppl = |s: &str| -> f64 {
            let at = s
                .find("ppl = ")
                .unwrap_or_else(|| panic!("{arch}: no ppl in {s}"));
            s[at + 6..]
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        let (ours, converter) = (ppl(&String::from_utf8_lossy(&o.stdout)), ppl(&err));
        assert!(ours.is_finite() && ours > 1.0, "{arch}: {ours}");
        assert_eq!(ours, converter, "{arch}");
    }
}

/// With stderr not a terminal (here a pipe) the bar is hidden, so a line per block says how far
/// the conversion is.
#[test]
fn a_conversion_logged_to_a_file_prints_a_line_per_block() {
    let t = Tiny::new("llama");
    let (code, err) = t.convert_with_report("q.gguf", &["--bits", "3"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("block ")).collect();
    assert_eq!(lines.len(), 2, "{err}");
    // After each block: time so far, the estimate for the rest and the block's mean relative
    // layer loss (the report's table has each layer's).
    assert!(lines[0].starts_with("block 1/2: elapsed ") && lines[0].contains(", eta "));
    assert!(lines[1].starts_with("block 2/2: elapsed ") && lines[1].contains(", eta 0s, "));
    for line in lines {
        let loss: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(loss > 0.0 && loss < 1.0, "{line}");
    }
}

/// The encoding of each tensor of a file as athena-verify reports it.
fn encodings(path: &Path) -> std::collections::BTreeMap<String, String> {
    verify_json(path)["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let s = |k: &str| t[k].as_str().unwrap().to_string();
            (s("name"), s("encoding"))
        })
        .collect()
}

#[test]
fn embeddings_are_athena_weights_by_default_and_plain_on_request() {
    let t = Tiny::new("llama");
    let (code, err) = t.convert("athena.gguf", &["--bits", "4"]);
    assert_eq!(code, 0, "{err}");
    // (16 columns: too narrow for Q8_0 blocks of 32, so q8_0 would fall back to f16.)
    let (code, err) = t.convert("plain.gguf", &["--bits", "4", "--embeddings", "bf16"]);
    assert_eq!(code, 0, "{err}");
    let athena = encodings(&t.path("athena.gguf"));
    let plain = encodings(&t.path("plain.gguf"));
    for name in ["token_embd.weight", "output.weight"] {
        assert_eq!(athena[name], "athena", "{name}");
        assert_eq!(plain[name], "BF16", "{name}");
    }
    // The planned budget covers the embedding and head too.
    let bpw = verify_json(&t.path("athena.gguf"))["summary"]["linear_bpw"]
        .as_f64()
        .unwrap();
    assert!(bpw <= 4.0 && bpw > 3.0, "{bpw}");
    // Their decoded values are close to the checkpoint's (4 bits: well under the weights'
    // own spread).
    let hf = HfFolder::open(t.path("tiny")).unwrap();
    let src = GgufSource::open(t.path("athena.gguf")).unwrap();
    for name in ["model.embed_tokens.weight", "lm_head.weight"] {
        let (a, b) = (hf.load(name).unwrap(), src.load(name).unwrap());
        assert_eq!(a.shape, b.shape, "{name}");
        let err: f64 = a
            .data
            .iter()
            .zip(&b.data)
            .map(|(x, y)| ((x - y) as f64).powi(2))
            .sum();
        let energy: f64 = a.data.iter().map(|&x| (x as f64).powi(2)).sum();
        assert!(
            err / energy < 0.1,
            "{name}: relative error {}",
            err / energy
        );
    }
}

#[test]
fn a_tied_embedding_is_one_athena_weight() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tied");
    std::fs::create_dir(&model).unwrap();
    let mut cfg = common::tiny_config("llama");
    cfg["tie_word_embeddings"] = serde_json::Value::Bool(true);
    common::write_folder(&model, &cfg, &common::random_tensors(&cfg, 5));
    common::write_bpe_tokenizer(&model);
    let text: String = (0..400).map(|k| ["ab ", "a b ", "12 "][k % 3]).collect();
    std::fs::write(dir.path().join("calib.txt"), text).unwrap();
    let out = dir.path().join("q.gguf");
    let o = Command::new(env!("CARGO_BIN_EXE_athena-convert"))
        .arg(&model)
        .arg(&out)
        .args([
            "--quiet",
            "--bits",
            "4",
            "--seq-len",
            "16",
            "--calib-tokens",
            "64",
            "--calib",
        ])
        .arg(dir.path().join("calib.txt"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let enc = encodings(&out);
    assert_eq!(enc["token_embd.weight"], "athena");
    assert!(!enc.contains_key("output.weight"), "{enc:?}");
    assert_eq!(verify_json(&out)["summary"]["athena_weights"], 15);
}

/// --file-bits budgets every tensor byte over every parameter; a budget the plain tensors alone
/// exceed is refused before any work.
#[test]
fn file_bits_budget_the_whole_file() {
    let t = Tiny::new("qwen2");
    let (code, err) = t.convert("q.gguf", &["--file-bits", "6"]);
    assert_eq!(code, 0, "{err}");
    let s = &verify_json(&t.path("q.gguf"))["summary"];
    let tensor_bpw = s["tensor_bpw"].as_f64().unwrap();
    assert!(tensor_bpw <= 6.0 && tensor_bpw > 5.0, "{s}");
    assert!(s["file_bpw"].as_f64().unwrap() > tensor_bpw);
    let (code, err) = t.convert("small.gguf", &["--file-bits", "4", "--embeddings", "f32"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("--file-bits 4: the plain tensors alone take")
            && err.contains("--embeddings athena"),
        "{err}"
    );
    assert!(!t.path("small.gguf").exists());
    let (code, err) = t.convert("both.gguf", &["--file-bits", "4", "--bits", "3"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn every_sensitivity_meets_the_budget() {
    let t = Tiny::new("llama");
    for sensitivity in ["uniform", "relative", "hessian", "fisher"] {
        let out = format!("{sensitivity}.gguf");
        let (code, err) =
            t.convert_with_report(&out, &["--bits", "3.5", "--sensitivity", sensitivity]);
        assert_eq!(code, 0, "{sensitivity}: {err}");
        assert!(err.contains("(planning "), "{sensitivity}: {err}");
        let bpw = verify_json(&t.path(&out))["summary"]["linear_bpw"]
            .as_f64()
            .unwrap();
        assert!(bpw <= 3.5 && bpw > 2.0, "{sensitivity}: linear bpw {bpw}");
    }
}

#[test]
fn same_seed_gives_a_byte_identical_file() {
    let t = Tiny::new("llama");
    for out in ["a.gguf", "b.gguf"] {
        let (code, err) = t.convert(out, &["--vq", "2,16,4,16", "--seed", "7"]);
        assert_eq!(code, 0, "{err}");
    }
    assert_eq!(
        std::fs::read(t.path("a.gguf")).unwrap(),
        std::fs::read(t.path("b.gguf")).unwrap()
    );
}

#[test]
fn baselines_and_options_all_produce_valid_files() {
    let t = Tiny::new("llama");
    let runs: [(&str, &[&str]); 8] = [
        ("gptq.gguf", &["--bits", "3", "--method", "gptq"]),
        ("rtn.gguf", &["--bits", "3", "--method", "rtn"]),
        ("kmeans.gguf", &["--bits", "3", "--method", "kmeans"]),
        ("f16cb.gguf", &["--vq", "2,16,8,16", "--codebook", "f16"]),
        (
            "lowrank.gguf",
            &["--vq", "2,16,8,16", "--lowrank-rank", "auto"],
        ),
        // The default column rotation with a low-rank term and block-wise tuning on top.
        (
            "tuned-lowrank.gguf",
            &[
                "--vq",
                "2,16,8,16",
                "--lowrank-rank",
                "auto",
                "--tune-epochs",
                "1",
            ],
        ),
        (
            "unrotated.gguf",
            &["--vq", "2,16,8,16", "--rotation-block", "0"],
        ),
        // The paper's layout costs ~11 bpw of codebook on 16-column layers.
        (
            "paper.gguf",
            &["--bits", "12", "--tiles", "paper", "--order", "natural"],
        ),
    ];
    for (out, args) in runs {
        let (code, err) = t.convert(out, args);
        assert_eq!(code, 0, "{out}: {err}");
        // Athena rotates the 16-column layers by default; the baselines and
        // --rotation-block 0 do not.
        let report = verify_json(&t.path(out)).to_string();
        let plain = ["gptq.gguf", "rtn.gguf", "kmeans.gguf", "unrotated.gguf"].contains(&out);
        assert_eq!(report.contains("rot=16"), !plain, "{out}");
    }
}

#[test]
fn block_tuning_lowers_the_block_output_error_and_the_file_stays_valid() {
    let t = Tiny::new("llama");
    // Low-rank on, so the tuned codebooks must also compose with the fixed low-rank term.
    let args = [
        "--vq",
        "2,16,8,16",
        "--lowrank-rank",
        "auto",
        "--tune-epochs",
        "4",
        "--tune-lr",
        "1e-2",
        "--tune-batch",
        "1",
    ];
    let (code, err) = t.convert_with_report("tuned.gguf", &args);
    assert_eq!(code, 0, "{err}");
    verify_json(&t.path("tuned.gguf"));
    // The report's tuning table: "block  before  after  seconds", one row per block.
    let header = err
        .lines()
        .position(|l| l.starts_with("block") && l.contains("after tuning"))
        .unwrap_or_else(|| panic!("no tuning table in:\n{err}"));
    let rows: Vec<(f64, f64)> = err
        .lines()
        .skip(header + 1)
        .take_while(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<f64> = l
                .split_whitespace()
                .skip(1)
                .map(|x| x.parse().unwrap())
                .collect();
            (f[0], f[1])
        })
        .collect();
    assert_eq!(rows.len(), 2, "one row per block of the tiny model:\n{err}");
    for (before, after) in &rows {
        assert!(
            after <= before,
            "tuning kept a worse block: {before} -> {after}"
        );
    }
    assert!(
        rows.iter().any(|(before, after)| after < before),
        "tuning improved no block:\n{err}"
    );

    // With --tune-norms the tuned norms reach the file; without, the file keeps the source's.
    let (code, err) = t.convert("norms.gguf", &[&args[..], &["--tune-norms"]].concat());
    assert_eq!(code, 0, "{err}");
    let source = HfFolder::open(t.path("tiny")).unwrap();
    let tuned = GgufSource::open(t.path("norms.gguf")).unwrap();
    let codebooks_only = GgufSource::open(t.path("tuned.gguf")).unwrap();
    let mut changed = 0;
    for layer in 0..2 {
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            let name = format!("model.layers.{layer}.{norm}.weight");
            let original = source.load(&name).unwrap();
            assert_eq!(
                codebooks_only.load(&name).unwrap().data,
                original.data,
                "{name}"
            );
            if tuned.load(&name).unwrap().data != original.data {
                changed += 1;
            }
        }
    }
    assert!(changed > 0, "no norm weight was tuned");
}

/// The report's end-to-end line and its numbers: KL before, after, steps, codes changed, seconds
/// ("end-to-end tuning:    KL 0.1234 -> 0.0987 nats/token (16 steps, 70 codes changed, 0.5 s)").
fn end_to_end_numbers(err: &str) -> (&str, Vec<f64>) {
    let line = err
        .lines()
        .find(|l| l.starts_with("end-to-end tuning:"))
        .unwrap_or_else(|| panic!("no end-to-end line in:\n{err}"));
    let numbers = line
        .split_whitespace()
        .filter_map(|w| w.trim_start_matches('(').parse().ok())
        .collect();
    (line, numbers)
}

#[test]
fn end_to_end_tuning_lowers_the_kl_divergence_and_reaches_the_file() {
    let t = Tiny::new("llama");
    let args = [
        "--vq",
        "2,16,8,16",
        "--lowrank-rank",
        "auto",
        "--tune-epochs",
        "0",
        "--finetune-epochs",
        "4",
        "--finetune-lr",
        "1e-3",
        "--finetune-batch",
        "1",
    ];
    let (code, err) = t.convert_with_report("e2e.gguf", &args);
    assert_eq!(code, 0, "{err}");
    verify_json(&t.path("e2e.gguf"));
    let (line, kl) = end_to_end_numbers(&err);
    assert!(kl[1] < kl[0], "KL did not drop: {line}");

    // The tuned norms (every block's two and the final one) reach the file; the untuned
    // conversion keeps the source's.
    let (code, err) = t.convert("plain.gguf", &args[..6]);
    assert_eq!(code, 0, "{err}");
    let source = HfFolder::open(t.path("tiny")).unwrap();
    let tuned = GgufSource::open(t.path("e2e.gguf")).unwrap();
    let untuned = GgufSource::open(t.path("plain.gguf")).unwrap();
    let mut names = vec!["model.norm.weight".to_string()];
    for layer in 0..2 {
        for norm in ["input_layernorm", "post_attention_layernorm"] {
            names.push(format!("model.layers.{layer}.{norm}.weight"));
        }
    }
    for name in &names {
        let original = source.load(name).unwrap().data;
        assert_eq!(untuned.load(name).unwrap().data, original, "{name}");
        assert_ne!(tuned.load(name).unwrap().data, original, "{name} not tuned");
    }
}

#[test]
fn layer_losses_in_the_report_are_from_before_end_to_end_tuning() {
    let t = Tiny::new("llama");
    // The report's last 14 layer rows (2 blocks of 7; the plan's rows come first): rel. loss.
    let losses = |err: &str| -> Vec<String> {
        let rows: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("model.layers."))
            .collect();
        rows[rows.len() - 14..]
            .iter()
            .map(|l| l.split_whitespace().rev().nth(1).unwrap().to_string())
            .collect()
    };
    let args = |epochs| {
        [
            "--vq",
            "2,16,8,16",
            "--tune-epochs",
            "1",
            "--finetune-batch",
            "1",
            "--finetune-epochs",
            epochs,
        ]
    };
    let (code, tuned) = t.convert_with_report("e2e.gguf", &args("3"));
    assert_eq!(code, 0, "{tuned}");
    let (line, kl) = end_to_end_numbers(&tuned);
    assert!(kl[1] < kl[0], "the tuning was undone: {line}");
    assert!(tuned.contains("rel. loss above is from before this tuning"));
    let (code, untuned) = t.convert_with_report("plain.gguf", &args("0"));
    assert_eq!(code, 0, "{untuned}");
    assert_eq!(losses(&tuned), losses(&untuned));
}

/// The held-out line of the report: the KL after each epoch and the epoch kept (0: none).
fn held_out_epochs(err: &str) -> (String, Vec<f64>, usize) {
    let detail = err
        .lines()
        .find(|l| l.contains("held out; after each epoch:"))
        .unwrap_or_else(|| panic!("no held-out line in:\n{err}"));
    let (epochs, kept) = detail
        .split_once("after each epoch: ")
        .unwrap()
        .1
        .split_once("; kept: ")
        .unwrap();
    let epochs = epochs.split(", ").map(|k| k.parse().unwrap()).collect();
    let kept = match kept {
        "none" => 0,
        e => e.trim_start_matches("epoch ").parse().unwrap(),
    };
    (detail.trim().to_string(), epochs, kept)
}

#[test]
fn held_out_sequences_pick_the_epoch_that_is_kept() {
    let t = Tiny::new("llama");
    let args = |tokens: &'static str, epochs: &'static str, lr: &'static str| {
        [
            "--vq",
            "2,16,8,16",
            "--tune-epochs",
            "0",
            "--finetune-batch",
            "1",
            "--finetune-holdout",
            "2",
            "--finetune-tokens",
            tokens,
            "--finetune-epochs",
            epochs,
            "--finetune-lr",
            lr,
        ]
    };

    // 128 tokens of 16: 8 tuning sequences (the 4 calibration ones and 4 more), batch 1.
    let (code, err) = t.convert_with_report("more.gguf", &args("128", "3", "1e-3"));
    assert_eq!(code, 0, "{err}");
    verify_json(&t.path("more.gguf"));
    let (line, kl) = end_to_end_numbers(&err);
    assert_eq!(kl[2], 24.0, "steps: {line}");
    let (detail, epochs, kept) = held_out_epochs(&err);
    assert!(
        detail.starts_with("8 sequence(s) tuned on, KL on 2 held out"),
        "{detail}"
    );
    assert_eq!(epochs.len(), 3, "{detail}");
    let lowest = epochs.iter().copied().fold(f64::INFINITY, f64::min);
    let best = 1 + epochs.iter().position(|&k| k == lowest).unwrap();
    assert_eq!(
        kept,
        if lowest < kl[0] { best } else { 0 },
        "{detail}\n{line}"
    );

    // One tuning sequence and eight epochs overfit it (seeded, so this run is reproducible):
    // an earlier epoch is kept, and the file's KL is that epoch's, not the last one's.
    let (code, err) = t.convert_with_report("overfit.gguf", &args("16", "8", "3e-3"));
    assert_eq!(code, 0, "{err}");
    verify_json(&t.path("overfit.gguf"));
    let (line, kl) = end_to_end_numbers(&err);
    let (detail, epochs, kept) = held_out_epochs(&err);
    assert!((1..8).contains(&kept), "{detail}");
    let after = kl[1];
    assert!(
        (after - epochs[kept - 1]).abs() < (after - epochs[7]).abs(),
        "{detail}\n{line}"
    );
}

#[test]
fn the_discrete_step_changes_codes_and_the_file_verifies() {
    let t = Tiny::new("llama");
    let args = [
        "--vq",
        "2,16,8,16",
        "--tune-epochs",
        "0",
        "--finetune-epochs",
        "4",
        "--finetune-batch",
        "1",
        "--finetune-codes",
        "0.05",
        "--finetune-code-step",
        "0.05",
    ];
    let (code, err) = t.convert_with_report("codes.gguf", &args);
    assert_eq!(code, 0, "{err}");
    verify_json(&t.path("codes.gguf"));
    let (line, numbers) = end_to_end_numbers(&err);
    assert!(numbers[1] < numbers[0], "KL did not drop: {line}");
    assert!(numbers[3] > 0.0, "no code changed: {line}");

    // The file holds other indices than the run with fixed indices.
    let (code, err) = t.convert("fixed.gguf", &args[..8]);
    assert_eq!(code, 0, "{err}");
    let moved = GgufFile::open(&t.path("codes.gguf")).unwrap();
    let fixed = GgufFile::open(&t.path("fixed.gguf")).unwrap();
    let indices = |f: &GgufFile| -> Vec<u8> {
        let mut all = Vec::new();
        for layer in 0..2 {
            for w in [
                "attn_q",
                "attn_k",
                "attn_v",
                "attn_output",
                "ffn_gate",
                "ffn_up",
                "ffn_down",
            ] {
                let info = f
                    .tensor(&format!("blk.{layer}.{w}.weight.athena_idx"))
                    .unwrap();
                all.extend_from_slice(f.tensor_data(info));
            }
        }
        all
    };
    assert_ne!(indices(&moved), indices(&fixed), "no stored index changed");
}

#[test]
fn qk_row_hessians_change_q_and_k_and_nothing_else_of_the_first_block() {
    // Block 0 sees the same inputs either way, so only the layers whose loss the row Hessians
    // change can differ there.
    let t = Tiny::new("llama");
    let args = ["--vq", "2,16,8,16"];
    let (code, err) = t.convert("rows.gguf", &[&args[..], &["--qk-row-hessians"]].concat());
    assert_eq!(code, 0, "{err}");
    let (code, err) = t.convert("plain.gguf", &args);
    assert_eq!(code, 0, "{err}");
    let rows = GgufFile::open(&t.path("rows.gguf")).unwrap();
    let plain = GgufFile::open(&t.path("plain.gguf")).unwrap();
    let same = |w: &str| {
        let name = format!("blk.0.{w}.weight.athena_idx");
        let (a, b) = (rows.tensor(&name).unwrap(), plain.tensor(&name).unwrap());
        rows.tensor_data(a) == plain.tensor_data(b)
    };
    for w in ["attn_q", "attn_k"] {
        assert!(!same(w), "{w}: the row Hessians changed no index");
    }
    for w in ["attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"] {
        assert!(same(w), "{w} differs");
    }
}

#[test]
fn undone_end_to_end_tuning_leaves_the_untuned_files_tensors() {
    // A learning rate this large wrecks the model: no epoch beats the untuned one, the tuning
    // is undone, and every tensor must be the one the conversion without it writes.
    let t = Tiny::new("llama");
    let args = [
        "--vq",
        "2,16,8,16",
        "--lowrank-rank",
        "auto",
        "--finetune-batch",
        "1",
        "--finetune-holdout",
        "2",
        "--finetune-tokens",
        "96",
        "--finetune-epochs",
        "2",
        "--finetune-lr",
        "10",
    ];
    let (code, err) = t.convert_with_report("undone.gguf", &args);
    assert_eq!(code, 0, "{err}");
    let (line, _) = end_to_end_numbers(&err);
    assert!(line.contains("undone"), "the tuning was kept: {line}");
    let (code, err) = t.convert("untuned.gguf", &args[..4]);
    assert_eq!(code, 0, "{err}");
    let undone = GgufFile::open(&t.path("undone.gguf")).unwrap();
    let untuned = GgufFile::open(&t.path("untuned.gguf")).unwrap();
    assert_eq!(undone.tensors.len(), untuned.tensors.len());
    for info in &untuned.tensors {
        let other = undone.tensor(&info.name).unwrap();
        assert!(
            undone.tensor_data(other) == untuned.tensor_data(info),
            "{} differs",
            info.name
        );
    }
}

#[test]
fn tuning_is_on_by_default_only_below_3_bits() {
    let t = Tiny::new("llama");
    let tuned = |args: &[&str]| {
        let args = [args, &["--force"]].concat();
        let (code, err) = t.convert_with_report("t.gguf", &args);
        assert_eq!(code, 0, "{args:?}: {err}");
        err.lines()
            .any(|l| l.starts_with("block") && l.contains("after tuning"))
    };
    assert!(tuned(&["--bits", "2.9"]));
    assert!(!tuned(&["--bits", "2.9", "--tune-epochs", "0"]));
    assert!(!tuned(&["--bits", "3"]));
    assert!(tuned(&["--bits", "3", "--tune-epochs", "1"]));
    // Baselines stay baselines unless asked.
    assert!(!tuned(&["--bits", "2.9", "--method", "kmeans"]));
    assert!(tuned(&[
        "--bits",
        "2.9",
        "--method",
        "kmeans",
        "--tune-epochs",
        "1"
    ]));
}

#[test]
fn end_to_end_tuning_is_on_by_default_below_3_bits() {
    let t = Tiny::new("llama");
    // (the tuning's report line, the default's note, the epochs the file records)
    let run = |args: &[&str]| {
        let args = [args, &["--force", "--tune-epochs", "0"]].concat();
        let (code, err) = t.convert_with_report("e.gguf", &args);
        assert_eq!(code, 0, "{args:?}: {err}");
        let file = GgufFile::open(&t.path("e.gguf")).unwrap();
        let epochs = file.get_u64("athena.converter.finetune_epochs").unwrap();
        (
            err.contains("end-to-end tuning:    KL"),
            err.contains("end-to-end tuning: 1 epoch, the default below 3 bits"),
            epochs,
        )
    };
    // The tiny model's estimated peak fits on any machine that runs the tests.
    assert_eq!(run(&["--bits", "2.9"]), (true, true, 1));
    assert_eq!(run(&["--bits", "3"]), (false, false, 0));
    assert_eq!(
        run(&["--bits", "2.9", "--finetune-epochs", "0"]),
        (false, false, 0)
    );
    assert_eq!(
        run(&["--bits", "3", "--finetune-epochs", "2"]),
        (true, false, 2)
    );
    assert_eq!(
        run(&["--bits", "2.9", "--method", "kmeans"]),
        (false, false, 0)
    );
}

#[test]
fn column_rotation_is_on_by_default_from_3_bits_up() {
    let t = Tiny::new("llama");
    let rotated = |args: &[&str]| {
        let args = [args, &["--force", "--tune-epochs", "0"]].concat();
        let (code, err) = t.convert_with_report("r.gguf", &args);
        assert_eq!(code, 0, "{args:?}: {err}");
        err.contains(" rot=16")
    };
    assert!(rotated(&["--bits", "3"]));
    assert!(!rotated(&["--bits", "2.9"]));
    assert!(rotated(&["--bits", "2.9", "--rotation-block", "16"]));
    assert!(!rotated(&["--bits", "3", "--rotation-block", "0"]));
    assert!(rotated(&["--vq", "2,16,8,16"]));
    assert!(!rotated(&["--bits", "3", "--method", "gptq"]));
}

#[test]
fn bad_arguments_get_one_line_errors_and_no_output() {
    let t = Tiny::new("llama");
    let cases: [(&[&str], &str); 11] = [
        (&["--bits", "0.5"], "below the smallest configuration"),
        (&["--bits", "3", "--damp", "0"], "--damp must be above 0"),
        (&["--bits", "3", "--damp", "NaN"], "--damp must be above 0"),
        (&["--vq", "2,16,99,16"], "tile rows 99"),
        (&["--vq", "3,16,4,16"], "or a multiple of d = 3"),
        (&["--vq", "2,12,4,16"], "power of two"),
        (&["--vq", "2,16,4,16", "--bits", "3"], "exclude each other"),
        (
            &["--bits", "3", "--calib-tokens", "100000"],
            "calibration needs 100000 (6250 sequences of 16; lower --calib-tokens, or give",
        ),
        (
            &[
                "--bits",
                "3",
                "--finetune-epochs",
                "1",
                "--finetune-tokens",
                "8",
            ],
            "--finetune-tokens must be at least one sequence",
        ),
        (
            &[
                "--bits",
                "3",
                "--finetune-epochs",
                "1",
                "--finetune-tokens",
                "0",
            ],
            "--finetune-tokens must be at least one sequence",
        ),
        (
            &[
                "--bits",
                "3",
                "--finetune-epochs",
                "1",
                "--finetune-holdout",
                "5000",
            ],
            "--finetune-holdout",
        ),
    ];
    for (args, needle) in cases {
        let (code, err) = t.convert("bad.gguf", args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in {err:?}"
        );
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        let left: Vec<_> = std::fs::read_dir(t.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("bad.gguf"))
            .collect();
        assert!(left.is_empty(), "{args:?} left {left:?}");
    }
}

/// `athena-verify --reference`: zero error for a lossless export, a bounded nonzero one for a
/// quantized file, and a one-line error against a model of another shape.
#[test]
fn verify_reference_compares_with_the_source_model() {
    let t = Tiny::new("llama");
    let reference = |file: &str, model: &Path| {
        let o = Command::new(env!("CARGO_BIN_EXE_athena-verify"))
            .arg(t.path(file))
            .arg("--json")
            .arg("--reference")
            .arg(model)
            .output()
            .unwrap();
        (
            o.status.code(),
            serde_json::from_slice::<serde_json::Value>(&o.stdout).ok(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let model = t.path("tiny");
    assert_eq!(t.convert("f32.gguf", &["--type", "f32"]).0, 0);
    let (code, json, err) = reference("f32.gguf", &model);
    assert_eq!(code, Some(0), "{err}");
    let c = &json.unwrap()["reference"];
    assert_eq!(c["matrix_relative_error"], 0.0);
    assert!(c["tensors"].as_array().unwrap().len() > 10);

    assert_eq!(t.convert("q.gguf", &["--vq", "2,16,8,16"]).0, 0);
    let (code, json, err) = reference("q.gguf", &model);
    assert_eq!(code, Some(0), "{err}");
    let json = json.unwrap();
    let e = json["reference"]["matrix_relative_error"].as_f64().unwrap();
    assert!(e > 0.01 && e < 0.6, "2-bit relative error {e}");
    let q = json["reference"]["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "model.layers.0.self_attn.q_proj.weight")
        .unwrap()
        .clone();
    assert!(q["relative_error"].as_f64().unwrap() > 0.0);

    // d = 3 on 16 and 32 columns: every row ends in a partial group (encoding version 4), in a
    // tile of its own (tiles of 15 columns). The file verifies and stays close to the model.
    assert_eq!(t.convert("partial.gguf", &["--vq", "3,16,8,15"]).0, 0);
    let file = GgufFile::open(&t.path("partial.gguf")).unwrap();
    assert_eq!(
        file.get("athena.encoding_version"),
        Some(&athena::container::gguf::Value::U32(4))
    );
    let (code, json, err) = reference("partial.gguf", &model);
    assert_eq!(code, Some(0), "{err}");
    let e = json.unwrap()["reference"]["matrix_relative_error"]
        .as_f64()
        .unwrap();
    assert!(e > 0.01 && e < 0.6, "partial-group relative error {e}");

    // A model of another shape: the comparison fails with one line naming the tensor.
    let other = t.path("other");
    std::fs::create_dir(&other).unwrap();
    let mut cfg = common::tiny_config("llama");
    cfg["intermediate_size"] = serde_json::json!(48);
    common::write_folder(&other, &cfg, &common::random_tensors(&cfg, 5));
    common::write_bpe_tokenizer(&other);
    let (code, _, err) = reference("q.gguf", &other);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("has shape") && err.contains("mlp") && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn rotation_per_layer_keeps_it_only_where_it_lowers_the_layer_loss() {
    let t = Tiny::new("llama");
    let rotated_layers = |out: &str, extra: &[&str]| {
        let args = [&["--vq", "2,16,8,16"], extra].concat();
        let (code, err) = t.convert(out, &args);
        assert_eq!(code, 0, "{out}: {err}");
        let report = verify_json(&t.path(out)).to_string();
        (
            report.matches("rot=16").count(),
            report.matches("d=2 n=16").count(),
        )
    };
    let (every, layers) = rotated_layers("every.gguf", &[]);
    let (chosen, _) = rotated_layers("chosen.gguf", &["--rotation-per-layer"]);
    eprintln!("{chosen} of {layers} layers rotated by choice");
    assert_eq!(every, layers);
    assert!(0 < chosen && chosen < layers, "{chosen} of {layers}");
}

/// Runs athena-convert with exactly `args`: (exit status, stderr).
fn run_convert(args: &[&std::ffi::OsStr]) -> (i32, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_athena-convert"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Every file of a folder with its bytes, to show that a refused run changed nothing.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn out_never_replaces_a_file_the_run_reads() {
    let t = Tiny::new("llama");
    let tiny = t.path("tiny");
    std::fs::write(t.path("eval.txt"), "ab ab 12 ab1 ".repeat(50)).unwrap();
    let tok_dir = t.path("tok");
    std::fs::create_dir(&tok_dir).unwrap();
    common::write_bpe_tokenizer(&tok_dir);
    std::fs::hard_link(tiny.join("model.safetensors"), t.path("hard.gguf")).unwrap();
    std::os::unix::fs::symlink(tiny.join("tokenizer.json"), t.path("link.gguf")).unwrap();
    let before = (snapshot(&tiny), snapshot(t.dir.path()), snapshot(&tok_dir));
    let outs = [
        tiny.join("model.safetensors"),
        tiny.join("config.json"),
        tiny.join("tokenizer.json"),
        tiny.join("tokenizer_config.json"),
        tiny.join(".").join("model.safetensors"),
        t.path("calib.txt"),
        t.path("eval.txt"),
        tok_dir.join("tokenizer.json"),
        t.path("hard.gguf"),
        t.path("link.gguf"),
    ];
    let calib = t.path("calib.txt");
    let modes: [&[&str]; 3] = [
        &["--tokenizer-dir", tok_dir.to_str().unwrap()],
        &["--bits", "3", "--calib", calib.to_str().unwrap()],
        &["--vq", "2,16,8,16", "--calib", calib.to_str().unwrap()],
    ];
    let eval = t.path("eval.txt");
    for out in &outs {
        for mode in modes {
            // --tokenizer-dir is read by the plain export only, --calib by quantization only.
            let plain = mode[0] == "--tokenizer-dir";
            let read = match () {
                _ if out.starts_with(&tok_dir) => plain,
                _ if *out == calib => !plain,
                _ => true,
            };
            if !read {
                continue;
            }
            for force in [false, true] {
                let mut args: Vec<&std::ffi::OsStr> = vec![tiny.as_os_str(), out.as_os_str()];
                args.extend(mode.iter().map(std::ffi::OsStr::new));
                args.extend(["--eval-text".as_ref(), eval.as_os_str(), "-q".as_ref()]);
                if force {
                    args.push("--force".as_ref());
                }
                let (code, err) = run_convert(&args);
                assert_eq!(code, 1, "{out:?} {mode:?} force={force}: {err}");
                assert!(
                    err.contains("an input of this conversion") && err.lines().count() == 1,
                    "{out:?} {mode:?}: {err}"
                );
            }
        }
    }
    assert!(before == (snapshot(&tiny), snapshot(t.dir.path()), snapshot(&tok_dir)));

    // A GGUF MODEL is an input too.
    assert_eq!(t.convert("f32.gguf", &["--type", "f32"]).0, 0);
    let gguf = t.path("f32.gguf");
    let (code, err) = run_convert(&[gguf.as_os_str(), gguf.as_os_str(), "-f".as_ref()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("an input of this conversion"), "{err}");
}

#[test]
fn output_locations_that_cannot_work_fail_before_the_conversion() {
    let t = Tiny::new("llama");
    std::fs::create_dir(t.path("outdir")).unwrap();
    let (outdir, nowhere) = (t.path("outdir"), t.path("no/such/dir/out.gguf"));
    let cases: [(&str, &str); 4] = [
        (outdir.to_str().unwrap(), "is a directory"),
        ("/dev/null", "is not a regular file"),
        ("/proc/athena-out.gguf", "cannot create a file in /proc"),
        (nowhere.to_str().unwrap(), "does not exist"),
    ];
    let tiny = t.path("tiny");
    let calib = t.path("calib.txt");
    for (out, needle) in cases {
        for mode in [&["--bits", "3"][..], &[]] {
            let mut args: Vec<&std::ffi::OsStr> = vec![tiny.as_os_str(), out.as_ref()];
            args.extend(mode.iter().map(std::ffi::OsStr::new));
            args.extend(["--calib".as_ref(), calib.as_os_str(), "--force".as_ref()]);
            let (code, err) = run_convert(&args);
            assert_eq!(code, 1, "{out} {mode:?}: {err}");
            // Not quiet, yet one line: the plan was never made.
            assert!(
                err.contains(needle) && err.trim().lines().count() == 1,
                "{out} {mode:?}: {err}"
            );
        }
    }
}

#[test]
fn options_that_would_be_ignored_or_reinterpreted_are_usage_errors() {
    let t = Tiny::new("llama");
    let cases: [(&[&str], &str); 17] = [
        (
            &["--bits", "3", "--rotation-block", "100"],
            "--rotation-block",
        ),
        (&["--bits", "3", "--rotation-block", "2"], "power of four"),
        (
            &["--bits", "3", "--rotation-block", "16384"],
            "from 4 to 4096",
        ),
        (&["--bits", "3", "--tune-batch", "0"], "--tune-batch"),
        (
            &["--bits", "3", "--finetune-batch", "0"],
            "--finetune-batch",
        ),
        (&["--bits", "3", "--kmeans-iters", "0"], "--kmeans-iters"),
        (&["--bits", "3", "--tune-lr", "NaN"], "--tune-lr"),
        (&["--bits", "3", "--tune-lr=-1e-3"], "--tune-lr"),
        (&["--bits", "3", "--tune-lr", "0"], "--tune-lr"),
        (&["--bits", "3", "--finetune-lr", "inf"], "--finetune-lr"),
        (
            &["--bits", "3", "--finetune-code-step", "0"],
            "--finetune-code-step",
        ),
        (&["--eval-text", "x.txt", "--eval-ctx", "1"], "--eval-ctx"),
        (
            &["--eval-text", "x.txt", "--eval-chunks", "0"],
            "--eval-chunks",
        ),
        (
            &["--bits", "3", "--type", "q8_0"],
            "--type is the plain export's weight type",
        ),
        (
            &["--vq", "2,16,8,16", "-t", "f32"],
            "--type is the plain export's weight type",
        ),
        (
            &["--bits", "3", "--tokenizer-dir", "."],
            "--tokenizer-dir is the plain export's",
        ),
        (&["--eval-ctx", "64"], "--eval-text"),
    ];
    for (args, needle) in cases {
        let (code, err) = t.convert("bad.gguf", args);
        assert_eq!(code, 2, "{args:?}: {err}");
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error:") && err.contains(needle),
            "{args:?}: expected {needle:?} in {err:?}"
        );
        assert!(!t.path("bad.gguf").exists());
    }
}

#[test]
fn bad_input_files_are_named_before_the_model_is_read() {
    let t = Tiny::new("llama");
    std::fs::create_dir(t.path("adir")).unwrap();
    let tiny = t.path("tiny");
    let missing = t.path("missing.txt");
    let adir = t.path("adir");
    let out = t.path("bad.gguf");
    let base = |extra: &[&std::ffi::OsStr]| {
        let mut args: Vec<&std::ffi::OsStr> = vec![tiny.as_os_str(), out.as_os_str()];
        args.extend_from_slice(extra);
        run_convert(&args)
    };
    let cases: [(Vec<&std::ffi::OsStr>, String); 5] = [
        (
            vec![
                "--bits".as_ref(),
                "3".as_ref(),
                "--calib".as_ref(),
                missing.as_os_str(),
            ],
            format!("--calib {}: No such file", missing.display()),
        ),
        (
            vec![
                "--bits".as_ref(),
                "3".as_ref(),
                "--calib".as_ref(),
                adir.as_os_str(),
            ],
            format!("--calib {}: is a directory", adir.display()),
        ),
        (
            vec!["--eval-text".as_ref(), missing.as_os_str()],
            format!("--eval-text {}: No such file", missing.display()),
        ),
        (
            vec!["--eval-text".as_ref(), adir.as_os_str()],
            format!("--eval-text {}: is a directory", adir.display()),
        ),
        (
            vec!["--tokenizer-dir".as_ref(), adir.as_os_str()],
            "tokenizer.json".to_string(),
        ),
    ];
    for (args, needle) in cases {
        let (code, err) = base(&args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            err.contains(&needle) && err.trim().lines().count() == 1,
            "{args:?}: expected {needle:?} in {err:?}"
        );
        assert!(!out.exists());
    }

    // A GGUF MODEL can be re-encoded, not quantized: the message says how to get a folder.
    assert_eq!(t.convert("f32.gguf", &["--type", "f32"]).0, 0);
    let gguf = t.path("f32.gguf");
    let calib = t.path("calib.txt");
    for size in [["--bits", "3"], ["--vq", "2,16,8,16"]] {
        let (code, err) = run_convert(&[
            gguf.as_os_str(),
            out.as_os_str(),
            size[0].as_ref(),
            size[1].as_ref(),
            "--calib".as_ref(),
            calib.as_os_str(),
        ]);
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("needs a Hugging Face folder")
                && err.contains(&format!("athena-materialize {} DIR", gguf.display())),
            "{err}"
        );
    }
}

/// Replaces the tiny model's tensors (after `edit`) and config.
fn rewrite_tiny(t: &Tiny, config: &serde_json::Value, edit: impl FnOnce(&mut common::Tensors)) {
    let mut tensors = common::random_tensors(&common::tiny_config("llama"), 5);
    edit(&mut tensors);
    common::write_folder(&t.path("tiny"), config, &tensors);
}

#[test]
fn non_finite_weights_stop_a_conversion_before_calibration() {
    let t = Tiny::new("llama");
    let name = "model.layers.1.mlp.down_proj.weight";
    rewrite_tiny(&t, &common::tiny_config("llama"), |ts| {
        let w = &mut ts.get_mut(name).unwrap().1;
        w[0] = f32::NAN;
        w[9] = f32::INFINITY;
    });
    for args in [
        &["--bits", "3"][..],
        &["--vq", "2,16,8,16"],
        &["--type", "f16"],
    ] {
        // Not quiet: a quantizing run must stop before its first stage.
        let (code, err) = t.convert_with_report("bad.gguf", args);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(
            err.contains(name) && err.contains("2 of 512 values are not finite"),
            "{args:?}: {err}"
        );
        assert!(
            !err.contains("calibration") && !err.contains("plan"),
            "{err}"
        );
        assert!(!t.path("bad.gguf").exists());
    }
}

#[test]
fn bad_hyperparameters_are_named_before_any_work() {
    let t = Tiny::new("llama");
    let cases: [(&str, serde_json::Value, &str); 4] = [
        (
            "rms_norm_eps",
            serde_json::json!(0.0),
            "'rms_norm_eps' is 0.0",
        ),
        (
            "rope_theta",
            serde_json::json!(-1.0),
            "'rope_theta' is -1.0",
        ),
        (
            "max_position_embeddings",
            serde_json::json!(0),
            "'max_position_embeddings' is 0",
        ),
        (
            "num_hidden_layers",
            serde_json::json!(0),
            "'num_hidden_layers'",
        ),
    ];
    for (key, value, needle) in cases {
        let mut config = common::tiny_config("llama");
        config[key] = value;
        rewrite_tiny(&t, &config, |_| {});
        for args in [&["--bits", "3"][..], &[]] {
            let (code, err) = t.convert("bad.gguf", args);
            assert_eq!(code, 1, "{key} {args:?}: {err}");
            assert!(
                err.contains("config.json") && err.contains(needle) && err.lines().count() == 1,
                "{key} {args:?}: {err}"
            );
            assert!(!t.path("bad.gguf").exists());
        }
    }
}

#[test]
fn a_gguf_model_is_checked_at_open_and_its_tensors_named_by_their_gguf_names() {
    use athena::container::gguf::Value as MetaValue;
    let t = Tiny::new("llama");
    assert_eq!(t.convert("f32.gguf", &["--type", "f32"]).0, 0);
    let nan = f32::NAN.to_le_bytes();
    type Edit = Box<dyn FnOnce(&mut Vec<(String, MetaValue)>, &mut common::GgufTensors)>;
    let cases: [(Edit, &str); 4] = [
        (
            Box::new(|_, tensors| tensors.retain(|(name, ..)| name != "blk.1.attn_k.weight")),
            "'blk.1.attn_k.weight': not found",
        ),
        (
            Box::new(|meta, _| common::set_meta(meta, "llama.block_count", MetaValue::U32(0))),
            "'llama.block_count' is 0",
        ),
        (
            Box::new(|meta, _| common::set_meta(meta, "llama.context_length", MetaValue::U32(0))),
            "'llama.context_length' is 0",
        ),
        (
            Box::new(move |_, tensors| {
                let (.., data) = tensors
                    .iter_mut()
                    .find(|(name, ..)| name == "blk.1.ffn_up.weight")
                    .unwrap();
                data[8..12].copy_from_slice(&nan);
            }),
            "'blk.1.ffn_up.weight' in ",
        ),
    ];
    for (edit, needle) in cases {
        common::rewrite(&t.path("f32.gguf"), &t.path("edited.gguf"), edit);
        let (code, err) = run_convert(&[
            t.path("edited.gguf").as_os_str(),
            t.path("out.gguf").as_os_str(),
            "--force".as_ref(),
        ]);
        assert_eq!(code, 1, "{needle}: {err}");
        assert!(
            err.contains(needle) && err.contains("edited.gguf") && err.lines().count() == 1,
            "{needle}: {err}"
        );
        if needle.contains("ffn_up") {
            assert!(err.contains(": 1 of 512 values are not finite"), "{err}");
        }
        assert!(!t.path("out.gguf").exists());
    }
}

/// `--device`: the GPU code path on candle's CPU device writes a valid file; a device this build
/// or machine does not have, or an unknown one, is a one-line error before any work, and no
/// output is left.
#[test]
fn devices_run_or_are_refused_before_any_work() {
    let t = Tiny::new("llama");
    let (code, err) = t.convert(
        "tensors.gguf",
        &["--vq", "2,16,4,16", "--device", "cpu-tensors"],
    );
    assert_eq!(code, 0, "{err}");
    verify_json(&t.path("tensors.gguf"));

    // No machine has a 100th GPU.
    let (code, err) = t.convert("bad.gguf", &["--bits", "3", "--device", "cuda:99"]);
    assert_eq!(code, 1, "{err}");
    let expected = match cfg!(feature = "cuda") {
        true => "--device cuda:99: ",
        false => "--device cuda:99: this athena-convert was built without CUDA",
    };
    assert!(err.contains(expected), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!t.path("bad.gguf").exists());

    let (code, err) = t.convert("bad.gguf", &["--bits", "3", "--device", "tpu"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("unknown device 'tpu' (cpu, cpu-tensors, cuda or cuda:N)"),
        "{err}"
    );
    assert!(!t.path("bad.gguf").exists());
}
