//! The command-line tools' progress bars (one look for all of them, hidden under --quiet) and
//! the peak memory they report.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of unknown length with `template` (indicatif syntax), or a hidden one when `quiet`.
pub fn bar(quiet: bool, template: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(template)
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

/// The template of long stages: elapsed time, bar, count, message and ETA.
pub const WITH_ETA: &str = "{elapsed:>4} [{bar:30}] {pos}/{len} {msg} (eta {eta})";

/// Peak resident set size of this process (VmHWM) in MiB, where /proc tells it.
pub fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kb| kb / 1024)
}
