//! `ithn-dist inspect DIR`: a human-readable summary of a prepared directory, and a full
//! integrity check (manifest structure, every checksum, every shard's rows and indices).

use std::io::Write;
use std::path::Path;

use arrow::array::{Array, BinaryArray, ListArray, StringArray, UInt32Array, UInt64Array};

use super::manifest::{read_manifest, verify_checksums};
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
    writeln!(
        out,
        "{}: format {}, dataset {}, source {}",
        dir.display(),
        m.format_version,
        m.dataset.name(),
        m.source
    )
    .map_err(w)?;
    for (split, n) in &m.counts {
        writeln!(
            out,
            "  {:5} {n} rows in {} shards",
            split.name(),
            m.shards_of(*split).count()
        )
        .map_err(w)?;
    }
    writeln!(out, "  skipped {}", m.skipped.len()).map_err(w)?;
    for s in m.skipped.iter().take(10) {
        writeln!(out, "    {}: {}", s.id, s.reason).map_err(w)?;
    }
    writeln!(
        out,
        "  vocab {} tokens (threshold {}); negatives {} / {} train rows",
        m.vocab.size,
        m.vocab.threshold,
        m.negatives.train_with_negative,
        m.negatives.train_with_negative + m.negatives.train_without_negative
    )
    .map_err(w)?;
    verify_checksums(dir, &m)?;
    for split in Split::ALL {
        let mut printed = 0;
        for shard in m.shards_of(split) {
            let path = dir.join(&shard.file);
            let batches = read_shard(&path)?;
            let mut expected = shard.first_index;
            for b in &batches {
                let bad = |what: &str| PrepareError::Parquet {
                    path: path.clone(),
                    message: what.into(),
                };
                let index =
                    column::<UInt64Array>(b, "index").ok_or_else(|| bad("no index column"))?;
                let ids = column::<StringArray>(b, "id").ok_or_else(|| bad("no id column"))?;
                let report =
                    column::<StringArray>(b, "report").ok_or_else(|| bad("no report column"))?;
                let tok = column::<ListArray>(b, "ids").ok_or_else(|| bad("no ids column"))?;
                let img =
                    column::<BinaryArray>(b, "image_0").ok_or_else(|| bad("no image_0 column"))?;
                let width =
                    column::<UInt32Array>(b, "width_0").ok_or_else(|| bad("no width_0 column"))?;
                let height = column::<UInt32Array>(b, "height_0")
                    .ok_or_else(|| bad("no height_0 column"))?;
                let neg = column::<UInt64Array>(b, "neg_index")
                    .ok_or_else(|| bad("no neg_index column"))?;
                for r in 0..b.num_rows() {
                    if index.value(r) != expected {
                        return Err(bad(&format!(
                            "row {r} has index {} where {expected} was expected",
                            index.value(r)
                        )));
                    }
                    expected += 1;
                    if printed < rows {
                        printed += 1;
                        let negative = if neg.is_null(r) {
                            "-".to_string()
                        } else {
                            neg.value(r).to_string()
                        };
                        writeln!(
                            out,
                            "  [{} {}] {} {}x{} image {} B, {} ids, negative {negative}: {}",
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
                }
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
