//! Human-readable rendering of a verification report.

use std::fmt::Write;

use super::Report;
use crate::container::gguf::escape_name;

fn shape(s: &[u64]) -> String {
    s.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(" x ")
}

/// The per-tensor table and the summary, as printed by `athena-verify`.
pub fn render_table(report: &Report) -> String {
    let rows: Vec<[String; 5]> = report
        .tensors
        .iter()
        .map(|t| {
            let encoding = if t.params.is_empty() {
                t.encoding.clone()
            } else {
                format!("{} {}", t.encoding, t.params)
            };
            // Names come from the file: escaped and cut like every message's (the JSON report
            // escapes by itself and keeps them whole).
            [
                escape_name(&t.name),
                encoding,
                shape(&t.shape),
                t.bytes.to_string(),
                format!("{:.4}", t.bpw),
            ]
        })
        .collect();
    let header = ["tensor", "encoding", "shape", "bytes", "bpw"];
    let mut width = header.map(str::len);
    for r in &rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: [&str; 5]| {
        let _ = writeln!(
            out,
            "{:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {:>w4$}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            cells[4],
            w0 = width[0],
            w1 = width[1],
            w2 = width[2],
            w3 = width[3],
            w4 = width[4]
        );
    };
    line(&mut out, header);
    for r in &rows {
        line(&mut out, [&r[0], &r[1], &r[2], &r[3], &r[4]]);
    }
    let s = &report.summary;
    let _ = writeln!(out);
    let _ = writeln!(out, "file:                 {}", report.file);
    let _ = writeln!(
        out,
        "valid:                {}",
        if report.valid { "yes" } else { "no" }
    );
    let _ = writeln!(out, "file size:            {} bytes", s.file_bytes);
    let _ = writeln!(
        out,
        "tensors:              {} in GGUF ({} Athena weights, {} plain)",
        s.gguf_tensors, s.athena_weights, s.plain_tensors
    );
    let _ = writeln!(out, "parameters:           {}", s.parameters);
    let _ = writeln!(out, "file bpw:             {:.4}", s.file_bpw);
    let _ = writeln!(
        out,
        "tensor bpw:           {:.4} (--file-bits)",
        s.tensor_bpw
    );
    let _ = writeln!(out, "linear bpw:           {:.4} (--bits)", s.linear_bpw);
    if s.athena_bpw != s.linear_bpw {
        let _ = writeln!(
            out,
            "Athena bpw:           {:.4} (with the embedding and head)",
            s.athena_bpw
        );
    }
    let _ = writeln!(
        out,
        "container overhead:   {} bytes",
        s.container_overhead_bytes
    );
    let _ = writeln!(out, "checksums verified:   {}", s.checksums_verified);
    out
}

/// The `--reference` summary: overall matrix error and the five worst tensors.
pub fn render_comparison(c: &super::reference::Comparison) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "reference:            {}", c.reference);
    let _ = writeln!(
        out,
        "relative error:       {:.6} over the 2-D weights ({} tensors compared)",
        c.matrix_relative_error,
        c.tensors.len()
    );
    for (k, t) in c.worst(5).iter().enumerate() {
        let label = if k == 0 { "worst tensors:" } else { "" };
        let _ = writeln!(
            out,
            "{label:<22}{}  relative {:.6}  max abs {:.6}",
            escape_name(&t.name),
            t.relative_error,
            t.max_abs_error
        );
    }
    out
}
