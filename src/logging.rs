//! Rank-aware logging with `tracing`: rank 0 writes human-readable lines to the terminal
//! (stderr), every rank can also write JSON lines to `<log_dir>/rank-<r>.jsonl`.
//! `RUST_LOG` filters as usual (default `info`). `cli` calls [`init`] once, for every command.
//!
//! What a person reads differs from what a machine reads (issue 19):
//! * colours only when stderr is a terminal and `NO_COLOR` is unset or empty
//!   (<https://no-color.org>), so a redirected log or `launch/mpirun.sh` output is plain text;
//! * floating-point fields print with [`SIG_DIGITS`] significant digits on the terminal
//!   (`loss=4.481`); the JSON files and `metrics.jsonl` keep full precision;
//! * progress bars ([`bar`]) live in one [`indicatif::MultiProgress`], and every terminal log
//!   line is written while the bars are suspended, so it prints *above* them instead of being
//!   glued to the bar's line.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::fmt;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::LazyLock;
use tracing::field::{Field, Visit};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{fmt as tfmt, EnvFilter};

/// Significant digits of a floating-point field in terminal logs.
pub const SIG_DIGITS: usize = 4;

/// Every bar of the process; log lines suspend them while they print.
static BARS: LazyLock<MultiProgress> = LazyLock::new(MultiProgress::new);

/// Installs the global subscriber. Safe to call once per process.
pub fn init(rank: usize, log_dir: Option<&Path>) -> std::io::Result<()> {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let terminal = (rank == 0).then(|| {
        tfmt::layer()
            .with_writer(AboveBars)
            .with_ansi(colour_wanted(std::io::stderr().is_terminal()))
            .fmt_fields(ShortFloats)
            .with_target(false)
            .with_filter(filter())
    });
    let file = match log_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(format!("rank-{rank}.jsonl")))?;
            Some(
                tfmt::layer()
                    .json()
                    .with_ansi(false)
                    .with_writer(std::sync::Mutex::new(f))
                    .with_filter(filter()),
            )
        }
        None => None,
    };
    let _ = tracing_subscriber::registry()
        .with(terminal)
        .with(file)
        .try_init();
    Ok(())
}

/// Colour on a terminal unless `NO_COLOR` is set to a non-empty value.
fn colour_wanted(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Whether bars can be drawn: stderr is a terminal (a redirected or piped run gets none).
pub fn bars_visible() -> bool {
    std::io::stderr().is_terminal()
}

/// A progress bar of `len` steps drawn below the log lines, or a hidden one when `enabled`
/// is false or stderr is not a terminal (so callers update it unconditionally).
/// `template` is indicatif's (`{prefix}`, `{msg}`, `{bar}`, `{pos}`, `{len}`, `{per_sec}`,
/// `{eta}`, …); an invalid template falls back to indicatif's default style.
pub fn bar(len: u64, template: &str, enabled: bool) -> ProgressBar {
    if !enabled || !bars_visible() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        pb.set_style(style.progress_chars("█▉▊▋▌▍▎▏ "));
    }
    BARS.add(pb)
}

/// Prints a line on stderr above any bar (for messages that are not `tracing` events).
pub fn eprint_above_bars(line: &str) {
    BARS.suspend(|| {
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    });
}

/// The terminal writer: one buffer per event, written in one piece while the bars are
/// suspended (indicatif clears them, the line prints, the bars redraw below it).
struct AboveBars;

/// One formatted event, written to stderr when dropped.
struct EventBuffer(Vec<u8>);

impl<'a> MakeWriter<'a> for AboveBars {
    type Writer = EventBuffer;
    fn make_writer(&'a self) -> EventBuffer {
        EventBuffer(Vec::with_capacity(160))
    }
}

impl Write for EventBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventBuffer {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let bytes = std::mem::take(&mut self.0);
        BARS.suspend(|| {
            let _ = std::io::stderr().lock().write_all(&bytes);
        });
    }
}

/// `x` with `digits` significant digits, trailing zeros dropped: `4.481494479972988` →
/// `4.481`, `0.0001` → `0.0001`, `5e-5` → `5e-5`, `123456.7` → `1.235e5`. Plain notation for
/// magnitudes 1e-4 ≤ |x| < 1e5, scientific outside it.
pub fn short_float(x: f64, digits: usize) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let digits = digits.max(1);
    let exp = x.abs().log10().floor() as i32;
    if (-4..5).contains(&exp) {
        let decimals = (digits as i32 - 1 - exp).max(0) as usize;
        trim_zeros(&format!("{x:.decimals$}"))
    } else {
        let s = format!("{x:.*e}", digits - 1);
        match s.split_once('e') {
            Some((mantissa, e)) => format!("{}e{e}", trim_zeros(mantissa)),
            None => s,
        }
    }
}

/// `name=value` pairs with [`short_float`] values, space-separated (scores in a log line).
pub fn short_pairs(entries: &[(&str, f64)]) -> String {
    let pairs: Vec<String> = entries
        .iter()
        .map(|(k, v)| format!("{k}={}", short_float(*v, SIG_DIGITS)))
        .collect();
    pairs.join(" ")
}

fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

/// Field formatter of the terminal layer: tracing-subscriber's default layout
/// (`message key=value …`) with floats shortened by [`short_float`].
struct ShortFloats;

/// Visits one event's fields into the line being written.
struct ShortFloatsVisitor<'a> {
    writer: Writer<'a>,
    first: bool,
    result: fmt::Result,
}

impl<'a> MakeVisitor<Writer<'a>> for ShortFloats {
    type Visitor = ShortFloatsVisitor<'a>;
    fn make_visitor(&self, writer: Writer<'a>) -> ShortFloatsVisitor<'a> {
        ShortFloatsVisitor {
            writer,
            first: true,
            result: Ok(()),
        }
    }
}

impl ShortFloatsVisitor<'_> {
    fn write(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.result.is_err() {
            return;
        }
        let sep = if self.first { "" } else { " " };
        self.first = false;
        self.result = if field.name() == "message" {
            write!(self.writer, "{sep}{value}")
        } else {
            write!(self.writer, "{sep}{}={value}", field.name())
        };
    }
}

impl Visit for ShortFloatsVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.write(field, format_args!("{}", short_float(value, SIG_DIGITS)));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.write(field, format_args!("{value}"));
        } else {
            self.write(field, format_args!("{value:?}"));
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, format_args!("{value:?}"));
    }
}

impl VisitOutput<fmt::Result> for ShortFloatsVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for ShortFloatsVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

/// The error and its causes joined by `: `, leaving out a cause whose text the message
/// already holds (many errors print their source in their own message; `{:#}` would then say
/// it twice, as `train` did for an empty val split — issue 14). A message's own leading
/// `error: ` is dropped, since `main` prints one.
pub fn error_message(e: &anyhow::Error) -> String {
    error_chain(e.chain())
}

/// [`error_message`] for any chain of causes (outermost first).
pub fn error_chain<'a>(
    chain: impl Iterator<Item = &'a (dyn std::error::Error + 'static)>,
) -> String {
    let mut out = String::new();
    for cause in chain {
        let text = cause.to_string();
        let text = text.trim();
        let text = text.strip_prefix("error: ").unwrap_or(text);
        if text.is_empty() || out.contains(text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(text);
    }
    out
}

#[cfg(test)]
mod tests;
