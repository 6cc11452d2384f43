//! What can be known about the files before the work starts: MODEL of the kind the mode needs,
//! OUT writable and none of the files the run reads, the texts readable. Each error is one
//! line naming the file or option.

use std::path::PathBuf;

use athena::checkpoint::folder_files;
use athena::convert::paths;

use crate::args::Cli;

pub fn before_work(cli: &Cli) -> Result<(), String> {
    let model = &cli.model;
    let meta = std::fs::metadata(model).map_err(|e| format!("{}: {e}", model.display()))?;
    if !meta.is_dir() && cli.quantizes() {
        return Err(format!(
            "{}: Athena quantization (--bits/--vq) needs a Hugging Face folder, not a GGUF \
             file; `athena-materialize {} DIR` writes one, then convert DIR",
            model.display(),
            model.display()
        ));
    }
    paths::check_location(&cli.out)?;
    paths::check_not_an_input(&cli.out, &inputs(cli, meta.is_dir()))?;
    if cli.out.exists() && !cli.force {
        return Err(format!(
            "{}: already exists (use --force to replace it)",
            cli.out.display()
        ));
    }
    if cli.quantizes() {
        cli.calibration.options().check_text()?;
    }
    if let Some(text) = &cli.eval.eval_text {
        paths::check_readable_file(text, "--eval-text")?;
    }
    Ok(())
}

/// Every file this run reads: MODEL's (the GGUF file itself, or the folder's checkpoint and
/// tokenizer files), --tokenizer-dir's, the calibration text and --eval-text.
fn inputs(cli: &Cli, model_is_dir: bool) -> Vec<PathBuf> {
    let mut files = match model_is_dir {
        true => folder_files(&cli.model),
        false => vec![cli.model.clone()],
    };
    if let Some(dir) = &cli.tokenizer_dir {
        files.extend(folder_files(dir));
    }
    if cli.quantizes() {
        files.push(cli.calibration.options().text);
    }
    files.extend(cli.eval.eval_text.clone());
    files
}
