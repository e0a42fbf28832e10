//! `ithn-dist text …`: build a vocabulary, clean and encode reports from the command line.
//!
//! These commands are thin shells over [`crate::data::text`]; they exist so that data
//! preparation can be inspected and scripted (and checked against the reference) without
//! writing Rust. Input is JSON lines on stdin; every error names the 1-based line and the key.

use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::io::{BufRead, Write};
use std::path::PathBuf;

use super::text::{self, Dataset, Vocab};

#[derive(Subcommand, Debug)]
pub enum TextCmd {
    /// Build vocab.json from the train split of an R2Gen annotation JSON.
    Vocab(VocabArgs),
    /// Clean and encode reports: `{"id","report"}` JSON lines on stdin → `{"id","cleaned","ids"}` lines.
    Encode(EncodeArgs),
    /// Clean reports only: `{"id","report"}` JSON lines on stdin → `{"id","cleaned"}` lines.
    Clean(CleanArgs),
}

#[derive(Args, Debug)]
pub struct VocabArgs {
    /// R2Gen annotation JSON (object with train/val/test lists of {id, report, ...}).
    #[arg(long, value_name = "ANNOTATION.json")]
    pub ann: PathBuf,
    /// Which cleaner to apply before counting tokens.
    #[arg(long, value_enum)]
    pub dataset: Dataset,
    /// Keep tokens seen at least this often in the train split [default: 3 for iu_xray, 10 for mimic_cxr].
    #[arg(long, value_name = "N", value_parser = crate::bounds::at_least::<usize>(1))]
    pub threshold: Option<usize>,
    /// Where to write vocab.json (atomically).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct EncodeArgs {
    /// vocab.json written by `text vocab`; its dataset field selects the cleaner.
    #[arg(long, value_name = "FILE")]
    pub vocab: PathBuf,
    /// Cut every id list (BOS and EOS included) to this many entries.
    #[arg(long, default_value_t = text::DEFAULT_MAX_SEQ_LENGTH, value_name = "N", value_parser = crate::bounds::at_least::<usize>(2))]
    pub max_seq_length: usize,
}

#[derive(Args, Debug)]
pub struct CleanArgs {
    /// Which cleaner to apply.
    #[arg(long, value_enum)]
    pub dataset: Dataset,
}

/// One input line's problem, with its 1-based line number.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("stdin line {line}: invalid JSON: {message}")]
    Json { line: usize, message: String },
    #[error("stdin line {line}: missing string key `{key}`")]
    MissingKey { line: usize, key: &'static str },
    #[error("cannot read stdin: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads `{"id", "report"}` JSON lines (blank lines are skipped) and calls `emit` per record.
pub fn for_each_report(
    input: impl BufRead,
    mut emit: impl FnMut(Value, &str) -> std::io::Result<()>,
) -> Result<(), LineError> {
    for (i, line) in input.lines().enumerate() {
        let line_no = i + 1;
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line).map_err(|e| LineError::Json {
            line: line_no,
            message: e.to_string(),
        })?;
        let id = v.get("id").cloned().ok_or(LineError::MissingKey {
            line: line_no,
            key: "id",
        })?;
        let report = v
            .get("report")
            .and_then(Value::as_str)
            .ok_or(LineError::MissingKey {
                line: line_no,
                key: "report",
            })?;
        emit(id, report)?;
    }
    Ok(())
}

pub fn run(cmd: TextCmd) -> anyhow::Result<i32> {
    let stdin = std::io::stdin().lock();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    match cmd {
        TextCmd::Vocab(a) => {
            let threshold = a.threshold.unwrap_or_else(|| a.dataset.default_threshold());
            let vocab = Vocab::from_annotation(&a.ann, a.dataset, threshold)?;
            vocab.save(&a.out)?;
            eprintln!(
                "wrote {} ({} tokens incl. {}, threshold {threshold})",
                a.out.display(),
                vocab.len(),
                text::UNK
            );
        }
        TextCmd::Encode(a) => {
            let vocab = Vocab::load(&a.vocab)?;
            for_each_report(stdin, |id, report| {
                let cleaned = vocab.clean(report);
                let ids = vocab.encode(&cleaned, a.max_seq_length);
                writeln!(out, "{}", json!({"id": id, "cleaned": cleaned, "ids": ids}))
            })?;
        }
        TextCmd::Clean(a) => {
            for_each_report(stdin, |id, report| {
                writeln!(
                    out,
                    "{}",
                    json!({"id": id, "cleaned": a.dataset.clean(report)})
                )
            })?;
        }
    }
    out.flush()?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_line_and_key() {
        let input = "{\"id\": 1, \"report\": \"a\"}\n\n{\"id\": 2}\n";
        let err = for_each_report(input.as_bytes(), |_, _| Ok(())).unwrap_err();
        assert_eq!(err.to_string(), "stdin line 3: missing string key `report`");
        let err = for_each_report("{oops".as_bytes(), |_, _| Ok(())).unwrap_err();
        assert!(err.to_string().starts_with("stdin line 1: invalid JSON"));
    }
}
