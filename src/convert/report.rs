//! What a conversion tells its caller: progress events while it runs, the report at the end,
//! and the tables `athena-convert` prints of them (the plan before quantizing, the per-layer
//! outcome after).

use std::fmt::Write;

use super::plan::PlannedLayer;
use super::sequential::{BlockTuning, LayerOutcome, Step};
use super::tuning::FinetuneOutcome;
use crate::quantizer::{plan, VqConfig};

/// What a conversion produced.
#[derive(Debug, Clone)]
pub struct ConvertReport {
    pub plan: Vec<PlannedLayer>,
    pub layers: Vec<LayerOutcome>,
    /// Per block, when block-wise tuning ran.
    pub tuning: Vec<BlockTuning>,
    /// When end-to-end tuning ran.
    pub finetune: Option<FinetuneOutcome>,
    /// Weighted bpw of the quantized linear weights, from the stored bytes.
    pub linear_bpw: f64,
    /// Weighted bpw of every Athena weight (with --embeddings athena also the head and
    /// embedding).
    pub athena_bpw: f64,
    pub file_bytes: u64,
    /// 8 * tensor data bytes / all parameters: what --file-bits budgets.
    pub tensor_bpw: f64,
    /// 8 * file bytes / all parameters of the model (metadata included).
    pub file_bpw: f64,
    /// Building the plan (its sensitivity pass, if any).
    pub plan_seconds: f64,
    pub seconds: f64,
}

/// Progress events for the command-line front end.
pub enum Progress<'a> {
    Stage(&'a str),
    /// Sensitivity pass: `done` of `total` units (`unit`: "blocks" or "sequences").
    Sensitivity {
        done: usize,
        total: usize,
        unit: &'static str,
    },
    Plan(&'a [PlannedLayer]),
    /// Quantizing a layer of (or tuning) block `layer` of `layers`.
    Block {
        layer: usize,
        layers: usize,
        step: Step,
    },
}

/// `d=2 n=64 tile=72x576 i8 r=0` (the stored parameters, as athena-verify prints them) plus
/// the markers of the baselines and ablations, which the file does not record.
pub fn describe(cfg: &VqConfig, rows: usize, cols: usize) -> String {
    let mut s = cfg.encoding_params(rows, cols).to_string();
    if cfg.uniform_grid {
        s.push_str(" grid");
    }
    if !cfg.use_hessian_metric {
        s.push_str(" no-metric");
    }
    if !cfg.error_feedback {
        s.push_str(" no-feedback");
    }
    if !cfg.refine_codebooks && !cfg.uniform_grid {
        s.push_str(" no-update");
    }
    s
}

/// The plan: one line per layer and the weighted average.
pub fn render_plan(plan: &[PlannedLayer]) -> String {
    let mut out = String::new();
    let width = plan.iter().map(|p| p.name.len()).max().unwrap_or(5);
    let _ = writeln!(
        out,
        "{:<width$}  {:>11}  {:<40}  {:>7}",
        "layer", "shape", "config", "bpw"
    );
    for p in plan {
        let shape = format!("{}x{}", p.rows, p.cols);
        let _ = writeln!(
            out,
            "{:<width$}  {:>11}  {:<40}  {:>7.4}",
            p.name,
            shape,
            describe(&p.config, p.rows, p.cols),
            p.bpw
        );
    }
    let _ = writeln!(
        out,
        "planned bpw: {:.4} over {} layers",
        planned_bpw(plan),
        plan.len()
    );
    out
}

/// The plan's average bits per weight, weighted by each layer's weight count.
fn planned_bpw(plan: &[PlannedLayer]) -> f64 {
    plan::weighted_bpw(plan.iter().map(|p| (p.bpw, p.rows * p.cols)))
}

/// A note when the plan spends visibly less than the --bits budget: no layer has a larger level
/// on the menu that fits, typically because every layer is at its largest level (less with a
/// small --max-centroids).
pub fn unspent_budget_note(plan: &[PlannedLayer], budget: f64) -> Option<String> {
    let planned = planned_bpw(plan);
    (planned < budget - 0.05).then(|| {
        format!(
            "note: the plan uses {planned:.4} of the {budget} bpw budget: the menu has no larger \
             level that fits for any layer (it tops out at {} index bits; --max-dim and \
             --max-centroids shape it, --vq sets any configuration)",
            plan::top_index_bits()
        )
    })
}

/// Per layer: config, bpw, relative layer loss and time; then the totals.
pub fn render_report(report: &ConvertReport) -> String {
    let mut out = String::new();
    let width = report
        .layers
        .iter()
        .map(|l| l.name.len())
        .max()
        .unwrap_or(5);
    let _ = writeln!(
        out,
        "{:<width$}  {:<40}  {:>7}  {:>10}  {:>7}",
        "layer", "config", "bpw", "rel. loss", "seconds"
    );
    for l in &report.layers {
        let _ = writeln!(
            out,
            "{:<width$}  {:<40}  {:>7.4}  {:>10.3e}  {:>7.2}",
            l.name,
            describe(&l.config, l.rows, l.cols),
            plan::config_bpw(&l.config, l.rows, l.cols),
            l.relative_loss,
            l.seconds
        );
    }
    render_block_tuning(&mut out, &report.tuning);
    if let Some(f) = &report.finetune {
        render_finetune(&mut out, f);
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "linear bpw (stored):  {:.4}", report.linear_bpw);
    if report.athena_bpw != report.linear_bpw {
        let _ = writeln!(out, "Athena bpw (+ head):  {:.4}", report.athena_bpw);
    }
    let _ = writeln!(out, "tensor bpw:           {:.4}", report.tensor_bpw);
    let _ = writeln!(out, "file bpw:             {:.4}", report.file_bpw);
    let _ = writeln!(
        out,
        "file size:            {} bytes ({:.1} MB)",
        report.file_bytes,
        report.file_bytes as f64 / 1e6
    );
    let _ = writeln!(
        out,
        "conversion time:      {:.1} s (planning {:.1} s)",
        report.seconds, report.plan_seconds
    );
    out
}

/// The block-wise tuning table: each block's output error before and after.
fn render_block_tuning(out: &mut String, tuning: &[BlockTuning]) {
    if tuning.is_empty() {
        return;
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<5}  {:>13}  {:>13}  {:>7}",
        "block", "output error", "after tuning", "seconds"
    );
    for t in tuning {
        let _ = writeln!(
            out,
            "{:<5}  {:>13.3e}  {:>13.3e}  {:>7.2}",
            t.layer, t.before, t.after, t.seconds
        );
    }
}

/// End-to-end tuning's KL divergence before and after, and per epoch on the held-out sequences.
fn render_finetune(out: &mut String, f: &FinetuneOutcome) {
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "end-to-end tuning:    KL {:.4} -> {:.4} nats/token ({} steps, {} codes changed, {:.1} s{})",
        f.before,
        f.after,
        f.steps,
        f.recoded,
        f.seconds,
        if f.after == f.before {
            format!(", undone: the tuned model had KL {:.4}", f.tuned)
        } else {
            String::new()
        }
    );
    let _ = match f.held_out {
        0 => writeln!(out, "  on the {} tuning sequences", f.sequences),
        held => writeln!(
            out,
            "  {} sequence(s) tuned on, KL on {held} held out; after each epoch: {}; kept: {}",
            f.sequences,
            f.epoch_kl
                .iter()
                .map(|kl| format!("{kl:.4}"))
                .collect::<Vec<_>>()
                .join(", "),
            match f.kept_epoch {
                0 => "none".to_string(),
                e => format!("epoch {e}"),
            }
        ),
    };
    let _ = writeln!(
        out,
        "  the layers' rel. loss above is from before this tuning, which matches the model's \
         output, not the layers'"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(rows: usize, cols: usize, bpw: f64) -> PlannedLayer {
        PlannedLayer {
            name: format!("l{rows}x{cols}"),
            rows,
            cols,
            config: VqConfig::new(2, 256, rows, cols),
            bpw,
        }
    }

    #[test]
    fn the_note_names_an_unspent_budget_and_only_then() {
        // Weighted average: (4.1 * 64 + 3.9 * 192) / 256 = 3.95.
        let plan = [layer(8, 8, 4.1), layer(8, 24, 3.9)];
        let note = unspent_budget_note(&plan, 5.0).expect("1.05 bpw unspent");
        assert!(note.contains("3.9500 of the 5 bpw"), "{note}");
        assert!(note.contains("tops out at 8 index bits"), "{note}");
        assert_eq!(unspent_budget_note(&plan, 3.99), None);
    }
}
