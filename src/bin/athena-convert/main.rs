//! athena-convert: Hugging Face checkpoint -> GGUF, plain (`athena::export`) or Athena-quantized
//! (`athena::convert`). A thin shell: the command line (`args`), its help texts (`help`) and what
//! a conversion shows while it runs (`progress`).

mod args;
mod checks;
mod help;
mod progress;

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use athena::checkpoint::gguf_source::GgufSource;
use athena::checkpoint::hf::HfFolder;
use athena::checkpoint::TensorSource;
use athena::convert::{self, report};
use athena::eval::file::{perplexity_with_bar, summary_line, Engine, EvalText};
use athena::export::{self, ExportError, PlainOptions, Progress, TokenizerFiles};

use args::Cli;
use progress::ConversionProgress;

fn run_athena(cli: &Cli) -> Result<(), String> {
    let opts = cli.convert_options();
    let shown = ConversionProgress::new(cli.quiet, opts.size.bits);
    let result = convert::convert(&opts, &mut |p| shown.show(p));
    shown.finish();
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

/// Run on SIGINT or SIGTERM before the process exits (130 or 143).
fn remove_temp_files() {
    athena::container::temp_files::remove_all();
    eprintln!("\nathena-convert: interrupted; no output file was written");
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli.check_usage();
    // SIGINT / SIGTERM do not unwind, so the writer's own cleanup would not run.
    athena::signals::install_with_cleanup("athena-convert", &[&cli.model], remove_temp_files);
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
    // Everything about the files that can fail does so here, not after the conversion.
    checks::before_work(cli)?;
    if cli.quantizes() {
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

fn run_plain(cli: &Cli) -> Result<(), ExportError> {
    let started = Instant::now();
    let input = open_input(cli)?;
    let opts = PlainOptions {
        ty: cli.plain_type(),
        name: cli.name.clone().unwrap_or(input.name),
    };
    let bar = athena::progress::bar(
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
