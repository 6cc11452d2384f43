//! athena-run and the runtime engine on tiny random llama and qwen2 models (the real model runs
//! in tests/real_convert.rs): the runtime's perplexity equals the reference path's on plain and
//! Athena files, generation is reproducible, the benchmark prints its JSON line, and bad input
//! gets a one-line error.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use athena::container::gguf::Value;

struct Tiny {
    dir: tempfile::TempDir,
}

impl Tiny {
    /// A tiny random model of `arch`, its f32 export and an Athena --bits 3 file of it.
    fn new(arch: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("tiny");
        std::fs::create_dir(&model).unwrap();
        let cfg = common::tiny_config(arch);
        common::write_folder(&model, &cfg, &common::random_tensors(&cfg, 7));
        common::write_bpe_tokenizer(&model);
        let text: String = (0..600)
            .map(|k| ["ab ", "a b ", "12 ", "ab1 ", "ba2 "][k % 5])
            .collect();
        std::fs::write(dir.path().join("text.txt"), text).unwrap();
        let t = Tiny { dir };
        let m = t.path("tiny");
        let convert = |out: &str, extra: &[&str]| {
            let o = Command::new(env!("CARGO_BIN_EXE_athena-convert"))
                .arg(&m)
                .arg(t.path(out))
                .args(["--quiet", "--calib"])
                .arg(t.path("text.txt"))
                .args(["--seq-len", "16", "--calib-tokens", "64"])
                .args(extra)
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        };
        convert("f32.gguf", &["--type", "f32"]);
        convert("q8.gguf", &["--type", "q8_0"]);
        convert("athena.gguf", &["--bits", "3"]);
        t
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ppl(&self, file: &str, engine: &str) -> f64 {
        let o = Command::new(env!("CARGO_BIN_EXE_athena-eval"))
            .arg(self.path(file))
            .arg("--text")
            .arg(self.path("text.txt"))
            .args(["--ctx", "16", "--chunks", "4", "--engine", engine])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let line = out.lines().find(|l| l.starts_with("ppl = ")).unwrap();
        line[6..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }
}

fn run(args: &[&str], file: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_athena-run"))
        .arg(file)
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The runtime and the reference path (reference decoder + candle model) agree on every file
/// type, for both RoPE layouts (llama's permuted rows, qwen2's halves) and qwen2's biases.
#[test]
fn runtime_perplexity_equals_the_reference_path() {
    for arch in ["llama", "qwen2"] {
        let t = Tiny::new(arch);
        for file in ["f32.gguf", "q8.gguf", "athena.gguf"] {
            let (rt, reference) = (t.ppl(file, "runtime"), t.ppl(file, "reference"));
            let rel = (rt - reference).abs() / reference;
            println!("{arch} {file}: runtime {rt:.4} reference {reference:.4} ({rel:.2e})");
            assert!(
                rel < 1e-3,
                "{arch} {file}: runtime {rt} vs reference {reference}"
            );
        }
    }
}

#[test]
fn generation_is_reproducible_and_greedy_is_deterministic() {
    let t = Tiny::new("llama");
    let file = t.path("athena.gguf");
    let args = ["-p", "ab 12", "-n", "12", "--seed", "3", "--temp", "1.0"];
    let (a, b) = (run(&args, &file), run(&args, &file));
    assert!(a.status.success(), "{}", stderr(&a));
    assert_eq!(stdout(&a), stdout(&b));
    assert!(stdout(&a).starts_with("ab 12"), "{}", stdout(&a));
    assert!(stderr(&a).contains("generated"), "{}", stderr(&a));

    let greedy = ["-p", "ab 12", "-n", "12", "--temp", "0", "--json"];
    let (g1, g2) = (run(&greedy, &file), run(&greedy, &file));
    assert_eq!(stdout(&g1), stdout(&g2));
    let stats: serde_json::Value = serde_json::from_str(stderr(&g1).trim()).unwrap();
    assert!(stats["prompt_tokens"].as_u64().unwrap() >= 2, "{stats}");
    assert!(stats["peak_rss_mib"].as_u64().is_some(), "{stats}");
}

#[test]
fn bench_prints_one_json_line() {
    let t = Tiny::new("llama");
    let o = run(
        &["--bench-pp", "8", "--bench-tg", "4", "--json", "-t", "1"],
        &t.path("athena.gguf"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let line: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(line["pp_tokens"], 8);
    assert_eq!(line["tg_tokens"], 4);
    assert!(line["pp_tps"].as_f64().unwrap() > 0.0 && line["tg_tps"].as_f64().unwrap() > 0.0);
}

#[test]
fn bad_input_gets_a_one_line_error() {
    let t = Tiny::new("llama");
    let file = t.path("athena.gguf");
    let one_line = |o: &Output, want: &str| {
        let e = stderr(o);
        assert_eq!(o.status.code(), Some(1), "{e}");
        assert!(
            e.contains(want) && e.trim().lines().count() == 1,
            "{want:?} in {e:?}"
        );
    };
    one_line(&run(&["-p", "x"], &t.path("missing.gguf")), "missing.gguf");
    one_line(&run(&["-p", "x"], &t.path("text.txt")), "text.txt");
    one_line(&run(&[], &file), "no prompt");
    one_line(&run(&["-p", "x", "--temp=-1"], &file), "--temp");
    assert_eq!(
        run(&["-p", "x", "--no-such-option"], &file).status.code(),
        Some(2)
    );
    one_line(&run(&["-p", "x", "--chat"], &file), "chat_template");
    // The tiny model's context is 128 tokens.
    let long = "ab ".repeat(200);
    one_line(&run(&["-p", &long, "-c", "32"], &file), "context");
    let o = run(&["-p", &long, "-c", "32", "--truncate", "-n", "3"], &file);
    assert!(o.status.success(), "{}", stderr(&o));

    // An architecture the runtime lacks is named.
    let other = t.path("other.gguf");
    common::rewrite(&t.path("f32.gguf"), &other, |meta, _| {
        common::set_meta(meta, "general.architecture", Value::String("mamba".into()));
    });
    one_line(&run(&["-p", "x"], &other), "architecture 'mamba'");

    // A tensor type the runtime lacks is named, with the tensor.
    let q4 = t.path("q4.gguf");
    common::rewrite(&t.path("f32.gguf"), &q4, |_, tensors| {
        let t = tensors
            .iter_mut()
            .find(|t| t.0 == "blk.0.ffn_down.weight")
            .unwrap();
        // 32 x 16 f32 values re-typed as Q4_0 blocks of the same element count (18 bytes / 32).
        t.2 = athena::container::gguf::GgmlType::Q4_0;
        t.3.truncate(t.1.iter().product::<u64>() as usize / 32 * 18);
    });
    one_line(&run(&["-p", "x"], &q4), "blk.0.ffn_down.weight");
}
