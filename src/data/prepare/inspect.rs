//! `ithn-dist inspect DIR`: a human-readable summary of a prepared directory, and a full
//! integrity check (manifest structure, every checksum, every shard's rows and indices).

use std::io::Write;
use std::path::Path;

use arrow::array::{Array, BinaryArray, ListArray, StringArray, UInt32Array, UInt64Array};

use super::manifest::{read_manifest, verify_checksums, Manifest};
use super::shards::{column, read_shard};
use super::{PrepareError, Split};

/// Prints counts, skip reasons and `rows` sample rows per split to `out`, then verifies the
/// checksums and that each shard holds exactly the rows the manifest promises.
pub fn inspect(dir: &Path, rows: usize, out: &mut dyn Write) -> Result<(), PrepareError> {
    let m = read_manifest(dir)?;
    let w = |e| PrepareError::Write {
        path: "stdout".into(),
        source: e,
    };
    for line in summary(dir, &m) {
        writeln!(out, "{line}").map_err(w)?;
    }
    verify_checksums(dir, &m)?;
    for split in Split::ALL {
        let mut budget = rows;
        for shard in m.shards_of(split) {
            let path = dir.join(&shard.file);
            let batches = read_shard(&path)?;
            let mut expected = shard.first_index;
            for b in &batches {
                check_batch(b, &path, split, &mut expected, &mut budget, out)?;
            }
            if expected != shard.first_index + shard.rows {
                return Err(PrepareError::Parquet {
                    path,
                    message: format!(
                        "holds {} rows, the manifest says {}",
                        expected - shard.first_index,
                        shard.rows
                    ),
                });
            }
        }
    }
    writeln!(
        out,
        "ok: {} shards and vocab.json match their sha256",
        m.shards.len()
    )
    .map_err(w)?;
    Ok(())
}

/// Checks that batch `b` of shard `path` continues the split's row numbering at `*expected`,
/// printing its rows while `*budget` lasts.
fn check_batch(
    b: &arrow::array::RecordBatch,
    path: &Path,
    split: Split,
    expected: &mut u64,
    budget: &mut usize,
    out: &mut dyn Write,
) -> Result<(), PrepareError> {
    let bad = |what: &str| PrepareError::Parquet {
        path: path.to_path_buf(),
        message: what.into(),
    };
    let w = |e| PrepareError::Write {
        path: "stdout".into(),
        source: e,
    };
    let index = column::<UInt64Array>(b, "index").ok_or_else(|| bad("no index column"))?;
    let ids = column::<StringArray>(b, "id").ok_or_else(|| bad("no id column"))?;
    let report = column::<StringArray>(b, "report").ok_or_else(|| bad("no report column"))?;
    let tok = column::<ListArray>(b, "ids").ok_or_else(|| bad("no ids column"))?;
    let img = column::<BinaryArray>(b, "image_0").ok_or_else(|| bad("no image_0 column"))?;
    let width = column::<UInt32Array>(b, "width_0").ok_or_else(|| bad("no width_0 column"))?;
    let height = column::<UInt32Array>(b, "height_0").ok_or_else(|| bad("no height_0 column"))?;
    let neg = column::<UInt64Array>(b, "neg_index").ok_or_else(|| bad("no neg_index column"))?;
    for r in 0..b.num_rows() {
        if index.value(r) != *expected {
            return Err(bad(&format!(
                "row {r} has index {} where {expected} was expected",
                index.value(r)
            )));
        }
        *expected += 1;
        if *budget == 0 {
            continue;
        }
        *budget -= 1;
        // Which row is the hard negative, said apart from the row's own report that follows.
        let negative = if neg.is_null(r) {
            "none".to_string()
        } else {
            format!("train row {}", neg.value(r))
        };
        writeln!(
            out,
            "  [{} {}] {} {}x{} image {} B, {} ids, hard negative: {negative}; report: {}",
            split.name(),
            index.value(r),
            ids.value(r),
            width.value(r),
            height.value(r),
            img.value(r).len(),
            tok.value(r).len(),
            report.value(r)
        )
        .map_err(w)?;
    }
    Ok(())
}

/// The human-readable summary of a manifest: source, counts, skips, warnings, vocabulary.
fn summary(dir: &Path, m: &Manifest) -> Vec<String> {
    let mut lines = vec![format!(
        "{}: format {}, dataset {}, source {}",
        dir.display(),
        m.format_version,
        m.dataset.name(),
        m.source
    )];
    for (split, n) in &m.counts {
        let shards = m.shards_of(*split).count();
        lines.push(format!("  {:5} {n} rows in {shards} shards", split.name()));
    }
    lines.push(format!("  skipped {}", m.skipped.len()));
    lines.extend(skipped_lines(m, 10).into_iter().map(|l| format!("    {l}")));
    lines.extend(
        split_warnings(m)
            .into_iter()
            .map(|w| format!("  warning: {w}")),
    );
    lines.push(format!(
        "  vocab {} tokens (threshold {}); negatives {} / {} train rows",
        m.vocab.size,
        m.vocab.threshold,
        m.negatives.train_with_negative,
        m.negatives.train_with_negative + m.negatives.train_without_negative
    ));
    lines
}

/// `split/id: reason` for the first `n` skipped samples, then how many more there are.
pub fn skipped_lines(m: &Manifest, n: usize) -> Vec<String> {
    let mut lines: Vec<String> = m
        .skipped
        .iter()
        .take(n)
        .map(|s| {
            let split = s.split.map(|x| x.name()).unwrap_or("?");
            format!("{split}/{}: {}", s.id, s.reason)
        })
        .collect();
    if m.skipped.len() > n {
        lines.push(format!(
            "… and {} more (manifest.json lists every one)",
            m.skipped.len() - n
        ));
    }
    lines
}

/// What an empty split means for the commands that read it, and what to do (issue 14: an
/// empty `val` used to pass here and fail only in `train`).
pub fn split_warnings(m: &Manifest) -> Vec<String> {
    let mut out = Vec::new();
    for split in [Split::Val, Split::Test] {
        if m.counts.get(&split).copied().unwrap_or(0) > 0 {
            continue;
        }
        let skipped = m.skipped.iter().filter(|s| s.split == Some(split)).count();
        let why = if skipped > 0 {
            format!("all {skipped} of its samples were skipped")
        } else {
            "the source lists none".to_string()
        };
        let use_ = match split {
            Split::Val => {
                "`train` validates on it (best model, early stopping) and refuses to start"
            }
            _ => {
                "`train` scores it at the end and `evaluate --split test` needs it, so both refuse"
            }
        };
        out.push(format!(
            "split {} is empty ({why}): {use_}; give the source {} samples and rerun prepare",
            split.name(),
            split.name()
        ));
    }
    out
}
