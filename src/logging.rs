//! Rank-aware logging with `tracing`: rank 0 writes human-readable lines to the terminal
//! (stderr), every rank can also write JSON lines to `<log_dir>/rank-<r>.jsonl`.
//! `RUST_LOG` filters as usual (default `info`). `cli` calls [`init`] once, for every command.

use std::path::Path;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{fmt, EnvFilter};

/// Installs the global subscriber. Safe to call once per process.
pub fn init(rank: usize, log_dir: Option<&Path>) -> std::io::Result<()> {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let terminal = (rank == 0).then(|| {
        fmt::layer()
            .with_writer(std::io::stderr)
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
                fmt::layer()
                    .json()
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

/// The error and its causes joined by `: `, leaving out a cause whose text the message
/// already holds (many errors print their source in their own message; `{:#}` would then say
/// it twice, as `train` did for an empty val split — issue 14).
pub fn error_message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
