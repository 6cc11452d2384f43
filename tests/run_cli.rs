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
        Self::with_embeddings(arch, false)
    }

    /// As `new`, with the output head tied to the embedding table when `tied`.
    fn with_embeddings(arch: &str, tied: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("tiny");
        std::fs::create_dir(&model).unwrap();
        let mut cfg = common::tiny_config(arch);
        cfg["tie_word_embeddings"] = serde_json::Value::Bool(tied);
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
        convert("athena-q8.gguf", &["--bits", "3", "--embeddings", "q8_0"]);
        t
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `q4.gguf`: the f32 export with blk.0.ffn_down.weight stored as Q4_0 blocks of the same
    /// element count (an f16 scale of 0.02 and 16 bytes of 4-bit values taken from the f32
    /// bytes), a type the runtime does not read.
    fn q4_file(&self) -> PathBuf {
        let q4 = self.path("q4.gguf");
        common::rewrite(&self.path("f32.gguf"), &q4, |_, tensors| {
            let t = tensors
                .iter_mut()
                .find(|t| t.0 == "blk.0.ffn_down.weight")
                .unwrap();
            let blocks = t.1.iter().product::<u64>() as usize / 32;
            let scale = half::f16::from_f32(0.02).to_le_bytes();
            let data: Vec<u8> = (0..blocks)
                .flat_map(|b| scale.into_iter().chain(t.3[b * 16..b * 16 + 16].to_vec()))
                .collect();
            t.2 = athena::container::gguf::GgmlType::Q4_0;
            t.3 = data;
        });
        q4
    }

    /// athena-eval on `file` over the first four 16-token chunks of the text, with `extra` args.
    fn eval(&self, file: &str, extra: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_athena-eval"))
            .arg(self.path(file))
            .arg("--text")
            .arg(self.path("text.txt"))
            .args(["--ctx", "16", "--chunks", "4"])
            .args(extra)
            .output()
            .unwrap()
    }

    fn ppl(&self, file: &str, engine: &str) -> f64 {
        ppl_of(&self.eval(file, &["--engine", engine]))
    }
}

/// The perplexity of a successful athena-eval run, from its `ppl = P +/- E ...` line.
fn ppl_of(o: &Output) -> f64 {
    assert!(o.status.success(), "{}", stderr(o));
    let out = stdout(o);
    let line = out.lines().find(|l| l.starts_with("ppl = ")).unwrap();
    line[6..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
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
/// type, for both RoPE layouts (llama's permuted rows, qwen2's halves) and qwen2's biases, with
/// Athena or Q8_0 embeddings, tied (one Athena weight for lookups and logits) or not.
#[test]
fn runtime_perplexity_equals_the_reference_path() {
    for (arch, tied) in [("llama", false), ("llama", true), ("qwen2", false)] {
        let t = Tiny::with_embeddings(arch, tied);
        for file in ["f32.gguf", "q8.gguf", "athena.gguf", "athena-q8.gguf"] {
            let (rt, reference) = (t.ppl(file, "runtime"), t.ppl(file, "reference"));
            let rel = (rt - reference).abs() / reference;
            println!(
                "{arch} tied={tied} {file}: runtime {rt:.4} reference {reference:.4} ({rel:.2e})"
            );
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
    one_line(
        &run(&["-p", "x"], t.dir.path()),
        "is a directory, not a GGUF file",
    );
    one_line(
        &run(&["-p", "x"], Path::new("/dev/null")),
        "not a regular file",
    );
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
    one_line(&run(&["-p", "x"], &t.q4_file()), "blk.0.ffn_down.weight");
}

/// athena-eval measures a file with a type the runtime lacks (llama.cpp's Q4_0 here) on the
/// reference path unless the runtime engine is asked for by name.
#[test]
fn eval_measures_other_llama_cpp_types_on_the_reference_path() {
    let t = Tiny::new("llama");
    t.q4_file();
    let auto = t.eval("q4.gguf", &[]);
    let auto_ppl = ppl_of(&auto);
    assert!(
        stderr(&auto).contains("type Q4_0 is not supported by the runtime")
            && stderr(&auto).contains("measuring with the reference engine"),
        "{}",
        stderr(&auto)
    );
    assert_eq!(auto_ppl, t.ppl("q4.gguf", "reference"));
    // Q4_0 moved the model: the fallback measured the Q4_0 tensor, not the f32 one.
    assert_ne!(auto_ppl, t.ppl("f32.gguf", "reference"));

    let runtime = t.eval("q4.gguf", &["--engine", "runtime"]);
    assert_eq!(runtime.status.code(), Some(1));
    assert!(stderr(&runtime).contains("blk.0.ffn_down.weight"));
}

/// A FIFO at `path` (the text a binary blocks on while its model is mapped).
#[cfg(unix)]
fn fifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// Opens the FIFO for writing once `child` has opened it for reading (the child is then past
/// its signal setup and has its model mapped). Fails, instead of hanging, if the child exits.
#[cfg(unix)]
fn writer_once_read(path: &Path, child: &mut std::process::Child) -> std::fs::File {
    use std::os::unix::fs::OpenOptionsExt;
    let start = std::time::Instant::now();
    loop {
        match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
        {
            Ok(f) => return f,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
            Err(e) => panic!("{}: {e}", path.display()),
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("the child exited ({status}) before reading: {err}");
        }
        assert!(start.elapsed().as_secs() < 120, "the child never read");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[cfg(unix)]
fn signal(child: &std::process::Child, sig: i32) {
    // SAFETY: signalling our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
}

/// SIGTERM and SIGINT end athena-eval, athena-verify and athena-run with 143 and 130, and a
/// model file truncated while it is mapped gives "<file>: file changed while being read" and
/// exit status 1 instead of a crash (issue 33). Each binary is caught while it blocks on input
/// (a FIFO as --text, or stdin for --chat) with its model mapped, so nothing depends on timing.
#[cfg(unix)]
#[test]
fn signals_and_a_model_truncated_while_mapped() {
    use std::io::{BufRead, Write};
    use std::process::Stdio;
    let t = Tiny::new("llama");
    let text = std::fs::read(t.path("text.txt")).unwrap();
    let eval = |model: &Path, fifo: &Path| {
        Command::new(env!("CARGO_BIN_EXE_athena-eval"))
            .arg(model)
            .arg("--text")
            .arg(fifo)
            .args(["--ctx", "16", "--chunks", "2"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let verify = |model: &Path, fifo: &Path| {
        Command::new(env!("CARGO_BIN_EXE_athena-verify"))
            .arg(model)
            .arg("--text")
            .arg(fifo)
            .args(["--ctx", "16", "--chunks", "2"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    type Spawn<'a> = &'a dyn Fn(&Path, &Path) -> std::process::Child;
    let tools: [(&str, Spawn); 2] = [("athena-eval", &eval), ("athena-verify", &verify)];
    for (k, (tool, spawn)) in tools.into_iter().enumerate() {
        // Interrupted while waiting for the text.
        for (sig, code) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)] {
            let pipe = t.path(&format!("text-{k}-{sig}.fifo"));
            fifo(&pipe);
            let mut child = spawn(&t.path("f32.gguf"), &pipe);
            let _writer = writer_once_read(&pipe, &mut child);
            signal(&child, sig);
            let out = child.wait_with_output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(code),
                "{tool} after signal {sig}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // The model truncated after it was mapped, before the forward reads it.
        let model = t.path(&format!("truncated-{k}.gguf"));
        std::fs::copy(t.path("f32.gguf"), &model).unwrap();
        let pipe = t.path(&format!("text-{k}.fifo"));
        fifo(&pipe);
        let mut child = spawn(&model, &pipe);
        let mut writer = writer_once_read(&pipe, &mut child);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&model)
            .unwrap()
            .set_len(4096)
            .unwrap();
        // The child may die before it has read everything: a broken pipe is fine.
        let _ = writer.write_all(&text);
        drop(writer);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{tool}: {stderr}");
        assert!(
            stderr.ends_with(&format!(
                "{tool}: {}: file changed while being read\n",
                model.display()
            )),
            "{tool}: {stderr:?}"
        );
    }

    // athena-run --chat waiting for a turn on stdin.
    let chat = t.path("chat.gguf");
    common::rewrite(&t.path("f32.gguf"), &chat, |meta, _| {
        meta.push((
            "tokenizer.chat_template".into(),
            Value::String("{% for m in messages %}{{ m.content }}{% endfor %}".into()),
        ));
    });
    let start_chat = |model: &Path| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_athena-run"))
            .arg(model)
            .args(["--chat", "-n", "4", "--temp", "0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The line it prints before it reads stdin: the model is loaded and mapped.
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while !line.contains("reading turns from stdin") {
            line.clear();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "no prompt line");
        }
        (child, stderr)
    };
    for (sig, code) in [(libc::SIGTERM, 143), (libc::SIGINT, 130)] {
        let (mut child, _stderr) = start_chat(&chat);
        signal(&child, sig);
        assert_eq!(child.wait().unwrap().code(), Some(code), "athena-run {sig}");
    }
    let model = t.path("chat-truncated.gguf");
    std::fs::copy(&chat, &model).unwrap();
    let (mut child, mut stderr) = start_chat(&model);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&model)
        .unwrap()
        .set_len(4096)
        .unwrap();
    child.stdin.take().unwrap().write_all(b"ab 12\n").unwrap();
    let status = child.wait().unwrap();
    let mut rest = String::new();
    use std::io::Read;
    stderr.read_to_string(&mut rest).unwrap();
    assert_eq!(status.code(), Some(1), "{rest}");
    assert!(
        rest.ends_with(&format!(
            "athena-run: {}: file changed while being read\n",
            model.display()
        )),
        "{rest:?}"
    );
}
