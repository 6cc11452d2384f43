//! athena-run: runs an Athena (or plain F32/F16/BF16/Q8_0) GGUF file on the CPU, straight from
//! its compressed weights: generation, chat, and llama-bench-style speed measurements. A thin
//! shell over the `athena-runtime` crate; the tokenizer is rebuilt from the file's vocabulary.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Instant, SystemTime};

use athena::checkpoint::Tokenizer;
use athena::container::gguf::GgufFile;
use athena::eval::file::{open_gguf, tokenizer_of_gguf};
use athena::signals;
use athena_runtime::chat::{ChatTemplate, Message};
use athena_runtime::{KvType, Model, Sampler, SamplerOptions, Session};
use clap::{Parser, ValueEnum};

/// Run an Athena GGUF file: generate text, chat, or measure its speed.
///
/// The weights stay compressed in the memory-mapped file; every matrix product runs on the
/// packed indices and codebooks. Timings and peak memory go to stderr at the end.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    long_about,
    after_long_help = "Examples:\n  athena-run smollm2-3bit.gguf -p 'The capital of France is' -n 32 --temp 0\n  athena-run smollm2-3bit.gguf --chat -p 'Write a haiku about rivers.'\n  athena-run smollm2-3bit.gguf --chat            (interactive, on a terminal)\n  athena-run smollm2-3bit.gguf --bench-pp 512 --bench-tg 128 --json\n\nExit status: 0 success, 1 invalid input (file, prompt), 2 usage, 130 and 143 when interrupted by SIGINT and SIGTERM (during generation the first one stops it and the statistics are printed). A file truncated while it is being read is an error (\"file changed while being read\"), not a crash."
)]
struct Args {
    /// The GGUF file (Athena, or plain F32/F16/BF16/Q8_0; llama or qwen2 architecture).
    file: PathBuf,
    /// Prompt text (with --chat: the user's message).
    #[arg(short, long)]
    prompt: Option<String>,
    /// Tokens to generate at most (per turn with --chat).
    #[arg(short = 'n', long, default_value_t = 256)]
    n_predict: usize,
    /// Context size in tokens (default: the model's training context, at most 4096).
    #[arg(short = 'c', long)]
    ctx: Option<usize>,
    /// Keep only the last tokens of a prompt longer than the context (instead of an error).
    #[arg(long)]
    truncate: bool,
    /// Format the prompt as a chat turn with the file's chat template; without --prompt on a
    /// terminal, read turns from stdin until an empty line or end of input.
    #[arg(long)]
    chat: bool,
    /// System message for --chat.
    #[arg(long)]
    system: Option<String>,
    /// KV cache storage: f16, or q8 (int8 with a scale per position and head: half the memory).
    #[arg(long, value_enum, default_value_t = Kv::F16)]
    kv: Kv,
    /// Worker threads (default: every core).
    #[arg(short, long)]
    threads: Option<usize>,
    /// Print the statistics as one JSON line (on stdout with --bench-*, else on stderr).
    #[arg(long)]
    json: bool,

    /// Sampling temperature; 0 picks the most likely token (greedy).
    #[arg(long, default_value_t = 0.8, help_heading = "Sampling")]
    temp: f32,
    #[arg(long, default_value_t = 40, help_heading = "Sampling")]
    top_k: usize,
    #[arg(long, default_value_t = 0.95, help_heading = "Sampling")]
    top_p: f32,
    #[arg(long, default_value_t = 0.05, help_heading = "Sampling")]
    min_p: f32,
    /// Penalty for tokens among the last --repeat-last-n (1 = off).
    #[arg(long, default_value_t = 1.0, help_heading = "Sampling")]
    repeat_penalty: f32,
    #[arg(long, default_value_t = 64, help_heading = "Sampling")]
    repeat_last_n: usize,
    /// Random seed; a seeded run is reproducible (default: from the clock, printed).
    #[arg(long, help_heading = "Sampling")]
    seed: Option<u64>,

    /// Benchmark: process a synthetic prompt of N tokens as one batch (like llama-bench's ppN).
    #[arg(long, value_name = "N", help_heading = "Benchmark")]
    bench_pp: Option<usize>,
    /// Benchmark: generate N tokens one at a time from an empty context (like tgN).
    #[arg(long, value_name = "N", help_heading = "Benchmark")]
    bench_tg: Option<usize>,
    /// Benchmark repetitions (the speeds are averaged).
    #[arg(long, default_value_t = 1, help_heading = "Benchmark")]
    bench_reps: usize,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kv {
    F16,
    Q8,
}

/// Prompt and generation counts and times, for the closing statistics.
#[derive(Default)]
struct Stats {
    prompt_tokens: usize,
    prompt_s: f64,
    gen_tokens: usize,
    gen_s: f64,
}

fn check_args(a: &Args) -> Result<(), String> {
    let bad = |what: &str| Err(format!("{what} (see --help)"));
    if !(a.temp >= 0.0 && a.temp.is_finite()) {
        return bad("--temp must be a finite number >= 0");
    }
    if !(a.top_p > 0.0 && a.top_p <= 1.0) {
        return bad("--top-p must be in (0, 1]");
    }
    if !(0.0..=1.0).contains(&a.min_p) {
        return bad("--min-p must be in [0, 1]");
    }
    if !(a.repeat_penalty > 0.0 && a.repeat_penalty.is_finite()) {
        return bad("--repeat-penalty must be a positive number");
    }
    if a.ctx == Some(0) || a.threads == Some(0) || a.bench_reps == 0 {
        return bad("--ctx, --threads and --bench-reps must be at least 1");
    }
    if a.bench_pp == Some(0) || a.bench_tg == Some(0) {
        return bad("--bench-pp and --bench-tg must be at least 1");
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    signals::install("athena-run", &[&args.file]);
    match run(&args) {
        Ok(()) => match signals::interrupted() {
            Some(sig) => ExitCode::from(signals::exit_status(sig)),
            None => ExitCode::SUCCESS,
        },
        Err(e) => {
            eprintln!("athena-run: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    check_args(args)?;
    if let Some(t) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .map_err(|e| e.to_string())?;
    }
    let start = Instant::now();
    let path = &args.file;
    let in_file = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let file = open_gguf(path)?;
    let model = Model::load(&file).map_err(|e| in_file(&e))?;
    let load_s = start.elapsed().as_secs_f64();
    let ctx = args.ctx.unwrap_or_else(|| model.config.train_ctx.min(4096));
    let kv = match args.kv {
        Kv::F16 => KvType::F16,
        Kv::Q8 => KvType::Q8,
    };
    if args.bench_pp.is_some() || args.bench_tg.is_some() {
        return bench(args, &model, kv, load_s).map_err(|e| in_file(&e));
    }

    let tokenizer = tokenizer_of_gguf(path, &file)?;
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let mut sampler = Sampler::new(SamplerOptions {
        temperature: args.temp,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repeat_penalty: args.repeat_penalty,
        repeat_last_n: args.repeat_last_n,
        seed,
    });
    let mut session = Session::new(&model, kv, ctx);
    let mut stats = Stats::default();
    let stops = end_of_generation_tokens(&file, &tokenizer);
    let mut gen = Generator {
        args,
        tokenizer: &tokenizer,
        sampler: &mut sampler,
        session: &mut session,
        stats: &mut stats,
        stops: &stops,
    };
    if args.chat {
        chat(&mut gen, &file)?;
    } else {
        let prompt = args
            .prompt
            .as_deref()
            .ok_or("no prompt: give -p TEXT, or --chat for a conversation")?;
        let tokens = tokenizer.encode(prompt, true).map_err(|e| e.to_string())?;
        print!("{prompt}");
        gen.generate(tokens)?;
        println!();
    }
    let info = RunInfo {
        load_s,
        seed: Some(seed),
        kv_bytes: session.cache().bytes(),
    };
    report(args, &stats, &info);
    Ok(())
}

/// Turns [`signals::defer_interrupts`] off again when a generation ends, however it ends.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        signals::defer_interrupts(false);
    }
}

struct Generator<'a, 'm> {
    args: &'a Args,
    tokenizer: &'a Tokenizer,
    sampler: &'a mut Sampler,
    session: &'a mut Session<'m>,
    stats: &'a mut Stats,
    stops: &'a [u32],
}

impl Generator<'_, '_> {
    /// Runs `prompt` (all tokens the cache should hold) and streams up to -n new tokens to
    /// stdout; returns the generated text.
    fn generate(&mut self, mut prompt: Vec<u32>) -> Result<String, String> {
        let ctx = self.session.cache().ctx();
        if prompt.len() >= ctx {
            if !self.args.truncate {
                return Err(format!(
                    "the prompt has {} tokens, the context {ctx} (raise --ctx, or --truncate)",
                    prompt.len()
                ));
            }
            prompt.drain(..prompt.len() + 1 - ctx);
        }
        let t0 = Instant::now();
        let (mut logits, ran) = self.session.sync(&prompt).map_err(|e| e.to_string())?;
        self.stats.prompt_tokens += ran;
        self.stats.prompt_s += t0.elapsed().as_secs_f64();

        let t1 = Instant::now();
        let mut out: Vec<u32> = Vec::new();
        let mut printed = 0;
        let mut stdout = std::io::stdout();
        // The first SIGINT/SIGTERM ends the generation at the next token (the text so far and
        // the statistics are printed); a second one ends the process.
        signals::defer_interrupts(true);
        let _restore = Restore;
        while out.len() < self.args.n_predict && signals::interrupted().is_none() {
            let next = self.sampler.sample(&logits, self.session.tokens());
            if self.stops.contains(&next) {
                break;
            }
            out.push(next);
            self.stats.gen_tokens += 1;
            // Print whole characters only: a token may end inside a multi-byte character.
            let text = self.tokenizer.decode(&out).map_err(|e| e.to_string())?;
            if !text.ends_with('\u{fffd}') && text.len() > printed {
                print!("{}", &text[printed..]);
                let _ = stdout.flush();
                printed = text.len();
            }
            if self.session.tokens().len() + 1 >= ctx {
                eprintln!("\nathena-run: the context of {ctx} tokens is full");
                break;
            }
            logits = self.session.push(next).map_err(|e| e.to_string())?;
        }
        self.stats.gen_s += t1.elapsed().as_secs_f64();
        let text = self.tokenizer.decode(&out).map_err(|e| e.to_string())?;
        if text.len() > printed {
            print!("{}", &text[printed.min(text.len())..]);
        }
        Ok(text)
    }
}

/// The tokens that end a turn: the file's end-of-sequence and end-of-turn ids, and the usual
/// end-of-turn tokens of chat templates where the vocabulary has them.
fn end_of_generation_tokens(file: &GgufFile, tokenizer: &Tokenizer) -> Vec<u32> {
    let mut ids: Vec<u32> = ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id"]
        .iter()
        .filter_map(|k| file.get(k).and_then(|v| v.as_u32()))
        .collect();
    ids.extend(tokenizer.eos_token_id);
    for t in [
        "<|im_end|>",
        "<|eot_id|>",
        "<|endoftext|>",
        "<end_of_turn>",
        "<|end|>",
    ] {
        ids.extend(tokenizer.inner().token_to_id(t));
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn chat(gen: &mut Generator, file: &GgufFile) -> Result<(), String> {
    let source = file
        .get("tokenizer.chat_template")
        .and_then(|v| v.as_str())
        .ok_or("the file has no tokenizer.chat_template, so --chat cannot format turns")?;
    let token_text = |id: Option<u32>| {
        id.and_then(|i| gen.tokenizer.inner().id_to_token(i))
            .unwrap_or_default()
    };
    let template = ChatTemplate::new(
        source,
        &token_text(gen.tokenizer.bos_token_id),
        &token_text(gen.tokenizer.eos_token_id),
    )
    .map_err(|e| format!("chat template: {e}"))?;
    let mut messages = Vec::new();
    if let Some(system) = &gen.args.system {
        messages.push(Message {
            role: "system".into(),
            content: system.clone(),
        });
    }
    let interactive = gen.args.prompt.is_none();
    if interactive && !std::io::stdin().is_terminal() {
        eprintln!("athena-run: reading turns from stdin, one per line");
    }
    let mut lines = std::io::stdin().lock().lines();
    loop {
        let user = match &gen.args.prompt {
            Some(p) => p.clone(),
            None => {
                eprint!("> ");
                match lines.next() {
                    Some(Ok(line)) if !line.trim().is_empty() => line,
                    _ => break,
                }
            }
        };
        messages.push(Message {
            role: "user".into(),
            content: user,
        });
        let text = template
            .render(&messages, true)
            .map_err(|e| format!("chat template: {e}"))?;
        // The template writes BOS itself where the model wants one.
        let tokens = gen
            .tokenizer
            .encode(&text, false)
            .map_err(|e| e.to_string())?;
        let reply = gen.generate(tokens)?;
        println!();
        messages.push(Message {
            role: "assistant".into(),
            content: reply,
        });
        if !interactive || signals::interrupted().is_some() {
            break;
        }
    }
    Ok(())
}

struct RunInfo {
    load_s: f64,
    seed: Option<u64>,
    kv_bytes: usize,
}

fn report(args: &Args, s: &Stats, info: &RunInfo) {
    let tps = |n: usize, t: f64| if t > 0.0 { n as f64 / t } else { 0.0 };
    let peak = athena::progress::peak_rss_mib();
    if args.json {
        eprintln!(
            "{}",
            serde_json::json!({
                "prompt_tokens": s.prompt_tokens, "prompt_tps": tps(s.prompt_tokens, s.prompt_s),
                "gen_tokens": s.gen_tokens, "gen_tps": tps(s.gen_tokens, s.gen_s),
                "load_s": info.load_s, "peak_rss_mib": peak, "kv_cache_mib": info.kv_bytes as f64 / 1048576.0,
                "seed": info.seed,
            })
        );
        return;
    }
    eprintln!(
        "\nathena-run: load {:.2} s | prompt {} tokens, {:.1} tokens/s | generated {} tokens, {:.1} tokens/s | KV cache {:.1} MiB | peak memory {} MiB{}",
        info.load_s,
        s.prompt_tokens,
        tps(s.prompt_tokens, s.prompt_s),
        s.gen_tokens,
        tps(s.gen_tokens, s.gen_s),
        info.kv_bytes as f64 / 1048576.0,
        peak.map_or("?".into(), |p| p.to_string()),
        info.seed.map_or(String::new(), |s| format!(" | seed {s}")),
    );
}

/// llama-bench's pp and tg tests: a synthetic prompt as one batch, then tokens one at a time
/// from an empty context; the speeds are averaged over --bench-reps.
fn bench(
    args: &Args,
    model: &Model,
    kv: KvType,
    load_s: f64,
) -> Result<(), athena_runtime::RuntimeError> {
    let vocab = model.config.vocab as u64;
    // Deterministic "random" token ids, as llama-bench feeds random tokens.
    let token = |i: usize| ((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 17) % vocab;
    let mut pp_tps = Vec::new();
    let mut tg_tps = Vec::new();
    let pp = args.bench_pp.unwrap_or(0);
    let tg = args.bench_tg.unwrap_or(0);
    let ctx = pp.max(tg) + 1;
    let mut cache = model.new_cache(kv, ctx);
    for _ in 0..args.bench_reps {
        if pp > 0 {
            cache.truncate(0);
            let tokens: Vec<u32> = (0..pp).map(|i| token(i) as u32).collect();
            let t0 = Instant::now();
            model.forward(&mut cache, &tokens, pp - 1)?;
            pp_tps.push(pp as f64 / t0.elapsed().as_secs_f64());
        }
        if tg > 0 {
            cache.truncate(0);
            let mut next = token(0) as u32;
            let t0 = Instant::now();
            for _ in 0..tg {
                let logits = model.forward(&mut cache, &[next], 0)?;
                next = athena_runtime::sampler::argmax(&logits);
            }
            tg_tps.push(tg as f64 / t0.elapsed().as_secs_f64());
        }
    }
    let mean = |v: &[f64]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let peak = athena::progress::peak_rss_mib();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "file": args.file, "threads": rayon::current_num_threads(),
                "pp_tokens": pp, "pp_tps": mean(&pp_tps), "tg_tokens": tg, "tg_tps": mean(&tg_tps),
                "reps": args.bench_reps, "load_s": load_s, "peak_rss_mib": peak,
                "kernels": format!("{:?}", athena_runtime::kernels::isa()),
            })
        );
    } else {
        let mut parts = Vec::new();
        if pp > 0 {
            parts.push(format!("pp{pp} {:.1} tokens/s", mean(&pp_tps)));
        }
        if tg > 0 {
            parts.push(format!("tg{tg} {:.1} tokens/s", mean(&tg_tps)));
        }
        println!(
            "{}: {} ({} threads, {} reps, kernels {:?}), load {load_s:.2} s, peak memory {} MiB",
            args.file.display(),
            parts.join(", "),
            rayon::current_num_threads(),
            args.bench_reps,
            athena_runtime::kernels::isa(),
            peak.map_or("?".into(), |p| p.to_string()),
        );
    }
    Ok(())
}
