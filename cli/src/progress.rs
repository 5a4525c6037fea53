//! The progress bar of `fleet submit`, on standard error, only on a terminal.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar for `total` tasks (a spinner when unknown), or a hidden one.
pub(crate) fn bar(total: Option<u64>, enabled: bool) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    let template = if total.is_some() {
        "{bar:40} {pos}/{len} tasks {per_sec} eta {eta} {msg}"
    } else {
        "{spinner} {pos} tasks {per_sec} {msg}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar
}
