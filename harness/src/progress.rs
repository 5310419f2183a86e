//! Progress bars for long commands: drawn on a terminal, silent in a pipe.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar counting `unit`s up to `total` (or a spinner when the total is unknown).
/// It draws to stderr only when stderr is a terminal.
pub fn bar(total: Option<u64>, message: &str, unit: &str) -> ProgressBar {
    let bar = match total {
        Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr()),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
    let template = if total.is_some() {
        format!("{{msg:>10}} [{{bar:30}}] {{human_pos}}/{{human_len}} {unit} ({{per_sec}}, {{eta}} left)")
    } else {
        format!("{{msg:>10}} {{spinner}} {{human_pos}} {unit} ({{per_sec}})")
    };
    bar.set_style(
        ProgressStyle::with_template(&template)
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(message.to_string());
    bar
}

/// A bar counting bytes, with their rate and the time left: drawn on a
/// terminal, silent in a pipe. Its length is set by whoever drives it.
pub fn byte_bar(message: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(message.to_string());
    bar
}
