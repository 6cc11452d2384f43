//! athena-verify: checks a GGUF file against the Athena spec and reports what it holds.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use athena::verify::{self, report, Options};

/// Check a GGUF file (plain or with Athena vector-codebook tensors) against format-spec/.
///
/// Checks the GGUF v3 structure (header, metadata, tensor infos, offsets, alignment, sizes), every
/// Athena weight (parameters, component tensors' types and shapes, index padding, finite
/// codebooks, scales and low-rank factors) and the sha256 of every tensor, then prints one row per
/// tensor (Athena weights as one row) and a summary with the file's and the linear weights' bits
/// per weight.
///
/// Exit status: 0 when the file is valid, 1 when it is not (one line names the problem), 2 for
/// usage errors.
///
/// Examples:
///   athena-verify model.gguf
///   athena-verify model.gguf --json > report.json
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
}

fn main() -> ExitCode {
    let args = Args::parse();
    let options = Options {
        checksums: !args.no_checksums,
    };
    match verify::verify_file(&args.file, options) {
        Ok(report) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("report serializes")
                );
            } else {
                print!("{}", report::render_table(&report));
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
