//! What a conversion shows while it runs: a progress bar on a terminal, one line per block when
//! stderr is a log file, CI or a pipe (indicatif hides its bar there), and the plan before
//! quantization starts.

use std::io::IsTerminal;
use std::time::Instant;

use athena::convert::{report, Progress, Step};
use indicatif::ProgressBar;

pub struct ConversionProgress {
    bar: ProgressBar,
    quiet: bool,
    /// stderr is no terminal: print a line per block.
    log_lines: bool,
    started: Instant,
    /// --bits, for the note on a budget the plan could not spend.
    budget: Option<f64>,
}

impl ConversionProgress {
    pub fn new(quiet: bool, budget: Option<f64>) -> Self {
        Self {
            bar: athena::progress::bar(quiet, athena::progress::WITH_ETA),
            quiet,
            log_lines: !quiet && !std::io::stderr().is_terminal(),
            started: Instant::now(),
            budget,
        }
    }

    pub fn show(&self, p: Progress<'_>) {
        let bar = &self.bar;
        match p {
            Progress::Stage(s) => bar.set_message(s.to_string()),
            Progress::Sensitivity { done, total, unit } => {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
                bar.set_message(format!("{unit}: sensitivity pass"));
            }
            Progress::Plan(plan) => {
                if !self.quiet {
                    bar.suspend(|| {
                        eprint!("{}", report::render_plan(plan));
                        let note = self
                            .budget
                            .and_then(|b| report::unspent_budget_note(plan, b));
                        if let Some(note) = note {
                            eprintln!("{note}");
                        }
                    });
                }
                bar.set_length(plan.len() as u64);
                bar.set_position(0);
                bar.reset_eta();
            }
            Progress::Block {
                layer,
                layers,
                step: Step::Quantized(kind),
            } => {
                bar.set_message(format!(
                    "block {}/{layers}: {} done",
                    layer + 1,
                    kind.suffix()
                ));
                bar.inc(1);
            }
            Progress::Block {
                layer,
                layers,
                step: Step::Done { relative_loss },
            } => {
                if self.log_lines {
                    self.log_block(layer, layers, relative_loss);
                }
            }
            Progress::Block {
                layers,
                step: Step::Head { weight },
                ..
            } => {
                bar.set_message(format!("after block {layers}: {weight}"));
                bar.set_position((layers * 7) as u64);
                if self.log_lines {
                    let elapsed = self.started.elapsed().as_secs_f64();
                    eprintln!("{weight}: quantizing (elapsed {elapsed:.0}s)");
                }
            }
            Progress::Block {
                layer,
                layers,
                step: Step::Tune,
            } => {
                bar.set_message(format!("block {}/{layers}: tuning codebooks", layer + 1));
            }
            Progress::Block {
                step: Step::Finetune { step, steps },
                ..
            } => {
                if step == 0 {
                    bar.set_length(steps as u64);
                    bar.reset_eta();
                }
                bar.set_position(step as u64);
                // `step == steps` is the final report (the last step is done): no "step 17/16".
                bar.set_message(format!(
                    "end-to-end tuning: step {}/{steps}",
                    (step + 1).min(steps)
                ));
            }
        }
    }

    /// One line as block `layer` is done, as llama.cpp's tools print to a log.
    fn log_block(&self, layer: usize, layers: usize, relative_loss: f64) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let done = layer + 1;
        let eta = elapsed / done as f64 * (layers - done) as f64;
        eprintln!(
            "block {done}/{layers}: elapsed {elapsed:.0}s, eta {eta:.0}s, mean layer loss {relative_loss:.3e}"
        );
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
