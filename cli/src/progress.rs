//! The progress bar of `fleet submit`, on standard error, only on a terminal:
//! a count and a rate a person reads at a glance (`12,345 tasks 1,004/s`),
//! and the time left when the total is known.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// `n` with a comma every three digits.
pub(crate) fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate in whole tasks per second, grouped: `1,004/s`.
fn rate(state: &ProgressState, w: &mut dyn std::fmt::Write) {
    let _ = write!(w, "{}/s", grouped(state.per_sec().round() as u64));
}

fn count(state: &ProgressState, w: &mut dyn std::fmt::Write) {
    let _ = write!(w, "{}", grouped(state.pos()));
}

fn total(state: &ProgressState, w: &mut dyn std::fmt::Write) {
    let _ = write!(w, "{}", grouped(state.len().unwrap_or_default()));
}

/// A bar for `total` tasks (a spinner when unknown), or a hidden one.
pub(crate) fn bar(total_tasks: Option<u64>, enabled: bool) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(total_tasks, ProgressDrawTarget::stderr());
    let template = if total_tasks.is_some() {
        "{bar:40} {count}/{total} tasks {rate} eta {eta} {msg}"
    } else {
        "{spinner} {count} tasks {rate} {msg}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(
            style
                .with_key("rate", rate)
                .with_key("count", count)
                .with_key("total", total),
        );
    }
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_with_thousands_grouped() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(1_004), "1,004");
        assert_eq!(grouped(1_234_567), "1,234,567");
    }
}
