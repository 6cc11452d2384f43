//! athena-verify: checks a GGUF file against the Athena spec and reports what it holds.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

use athena::eval::file::{
    parse_chunks, parse_ctx, perplexity_with_bar, summary_line, Engine, EvalText,
};
use athena::verify::reference::{self, Comparison};
use athena::verify::{self, report, Options};
use athena::{progress, signals};

/// Check a GGUF file (plain or with Athena vector-codebook tensors) against format-spec/.
///
/// Checks the GGUF v3 structure (header, metadata, tensor infos, offsets, alignment, sizes), every
/// Athena weight (parameters, component tensors' types and shapes, index padding, finite
/// codebooks, scales and low-rank factors) and the sha256 of every tensor, then prints one row per
/// tensor (Athena weights as one row) and a summary with the file's and the linear weights' bits
/// per weight.
///
/// Exit status: 0 when the file is valid, 1 when it is not (one line names the problem), 2 for
/// usage errors, 130 and 143 when interrupted by SIGINT and SIGTERM. A file truncated while it
/// is being read is an error ("file changed while being read"), not a crash.
///
/// Examples:
///   athena-verify model.gguf
///   athena-verify model.gguf --json > report.json
///   # also measure perplexity (the same figure athena-eval and athena-convert --eval-text give)
///   athena-verify model.gguf --text wiki.utf8 --chunks 32
///   # and how far each tensor is from the model it came from
///   athena-verify model.gguf --reference ./SmolLM2-135M-Instruct
#[derive(Parser, Debug)]
#[command(name = "athena-verify", version, verbatim_doc_comment)]
struct Args {
    /// The GGUF file to check.
    file: PathBuf,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Skip the sha256 checks (faster on large files; structure and contents are still checked).
    #[arg(long)]
    no_checksums: bool,
    /// After the checks, measure the file's perplexity on this UTF-8 text (llama-perplexity's
    /// method, the same code as athena-eval).
    #[arg(long, value_name = "FILE")]
    text: Option<PathBuf>,
    /// Context length of each perplexity chunk, in tokens (at least 4).
    #[arg(long, default_value_t = 512, requires = "text", value_parser = parse_ctx)]
    ctx: usize,
    /// Score only the first N chunks of --text (default: all that fit).
    #[arg(long, value_name = "N", requires = "text", value_parser = parse_chunks)]
    chunks: Option<usize>,
    /// After the checks, compare every tensor with the model the file was converted from (an HF
    /// folder or a GGUF file): relative error ||W - W_ref|| / ||W_ref|| and largest absolute
    /// error per tensor (all of them in --json, the worst five in the table).
    #[arg(long, value_name = "MODEL")]
    reference: Option<PathBuf>,
}

/// [`reference::compare`] behind a progress bar.
fn compare_with_bar(args: &Args, reference: &Path) -> Result<Comparison, String> {
    let bar = progress::bar(args.json, progress::WITH_ETA);
    bar.set_message(format!("comparing with {}", reference.display()));
    let result = reference::compare(&args.file, reference, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    result
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut mapped = vec![args.file.as_path()];
    mapped.extend(args.reference.as_deref());
    signals::install("athena-verify", &mapped);
    let options = Options {
        checksums: !args.no_checksums,
    };
    match verify::verify_file(&args.file, options) {
        Ok(report) => {
            let measured = match &args.text {
                None => None,
                Some(path) => {
                    let text = EvalText {
                        path: path.clone(),
                        ctx: args.ctx,
                        chunks: args.chunks,
                    };
                    match perplexity_with_bar(&args.file, &text, Engine::Auto, args.json) {
                        Ok(ppl) => Some(ppl),
                        Err(e) => {
                            eprintln!(
                                "athena-verify: the file is valid, but perplexity failed: {e}"
                            );
                            return ExitCode::from(1);
                        }
                    }
                }
            };
            let compared = match &args.reference {
                None => None,
                Some(r) => match compare_with_bar(&args, r) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        eprintln!(
                            "athena-verify: the file is valid, but the comparison failed: {e}"
                        );
                        return ExitCode::from(1);
                    }
                },
            };
            if args.json {
                let mut value = serde_json::to_value(&report).expect("report serializes");
                if let Some(c) = &compared {
                    value["reference"] = serde_json::to_value(c).expect("comparison serializes");
                }
                if let Some(p) = &measured {
                    value["perplexity"] = serde_json::json!({
                        "text": args.text.as_ref().map(|t| t.display().to_string()),
                        "ppl": p.ppl, "ppl_error": p.ppl_error,
                        "chunks": p.chunks, "ctx": p.n_ctx, "scored": p.stats.count,
                    });
                }
                println!("{}", serde_json::to_string_pretty(&value).expect("json"));
            } else {
                print!("{}", report::render_table(&report));
                if let Some(c) = &compared {
                    print!("{}", report::render_comparison(c));
                }
                if let Some(p) = &measured {
                    println!("{}", summary_line(p));
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if args.json {
                let out = serde_json::json!({ "file": args.file.display().to_string(), "valid": false, "error": e.to_string() });
                println!("{}", serde_json::to_string_pretty(&out).expect("json"));
            }
            eprintln!("athena-verify: invalid: {e}");
            ExitCode::from(1)
        }
    }
}
