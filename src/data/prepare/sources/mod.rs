//! Source readers: each turns one on-disk layout into [`SourceSample`](super::SourceSample)s
//! plus the samples it had to drop (with reasons). They read text and file *paths* only;
//! images are opened later, in parallel, by the pipeline.

pub mod mimic;
pub mod openi;
pub mod r2gen;

use std::path::Path;

use super::PrepareError;

/// Reads a whole file, naming it in the error.
pub(crate) fn read_bytes(path: &Path) -> Result<Vec<u8>, PrepareError> {
    std::fs::read(path).map_err(|source| PrepareError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a text file, transparently gunzipping `*.gz`.
pub(crate) fn read_text_maybe_gz(path: &Path) -> Result<String, PrepareError> {
    let bytes = read_bytes(path)?;
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut out)
            .map_err(|source| PrepareError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        out
    } else {
        bytes
    };
    String::from_utf8(bytes).map_err(|e| PrepareError::input(path, not_utf8(&e)))
}

/// Where the first invalid byte is, as a person finds it in an editor: line and column
/// (1-based, column in bytes) rather than the byte offset of `FromUtf8Error`'s text.
pub(crate) fn not_utf8(e: &std::string::FromUtf8Error) -> String {
    let at = e.utf8_error().valid_up_to();
    let before = &e.as_bytes()[..at];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = at
        - before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1)
        + 1;
    format!(
        "not UTF-8 text: line {line}, column {column} (byte {at}) holds byte 0x{:02x}; \
         save the file as UTF-8",
        e.as_bytes()[at]
    )
}

/// Parses a CSV with a header row into records keyed by column name; a missing column or a
/// ragged row is an error naming the file and the (1-based, header = 1) line.
pub(crate) fn read_csv(
    path: &Path,
    required: &[&str],
) -> Result<Vec<std::collections::HashMap<String, String>>, PrepareError> {
    let text = read_text_maybe_gz(path)?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| PrepareError::input(path, format!("cannot read the CSV header: {e}")))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    if let Some(missing) = required.iter().find(|c| !headers.iter().any(|h| h == *c)) {
        return Err(PrepareError::input(
            path,
            format!(
                "missing CSV column `{missing}` (header: {})",
                headers.join(",")
            ),
        ));
    }
    let mut rows = Vec::new();
    for (i, rec) in reader.records().enumerate() {
        let rec = rec.map_err(|e| PrepareError::Row {
            path: path.to_path_buf(),
            row: i + 2,
            what: format!("malformed CSV row: {e}"),
        })?;
        rows.push(
            headers
                .iter()
                .cloned()
                .zip(rec.iter().map(|v| v.trim().to_string()))
                .collect(),
        );
    }
    Ok(rows)
}
