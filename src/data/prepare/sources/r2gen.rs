//! The community "R2Gen annotation" format (SPEC §1): one JSON object with `train`, `val`,
//! `test` lists of `{id, report, image_path: [relative paths], split?}`; MIMIC records also
//! carry `study_id` / `subject_id`, and ITHN's files add `neg_report` / `neg_image_path`.
//!
//! Every `image_path` is listed; the pipeline keeps the first `--views` of them (IU X-Ray: both,
//! frontal and lateral; MIMIC-CXR: the first, as in the published runs) and skips a record with
//! fewer, with its reason, instead of failing the whole run. A record's `neg_report[0]`, when present,
//! is kept as `neg_report_raw` for reference; the stored negative is always the mined one.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::data::ids::id_text;
use crate::data::prepare::{PrepareError, SourceData, SourceSample, Split};
use crate::data::text::Dataset;

/// Reads `ann`; image paths are resolved against `images`.
pub fn read(ann: &Path, images: &Path, dataset: Dataset) -> Result<SourceData, PrepareError> {
    let text = super::read_text_maybe_gz(ann)?;
    let root: Value = serde_json::from_str(&text)
        .map_err(|e| PrepareError::input(ann, format!("invalid JSON: {e}")))?;
    let mut samples = Vec::new();
    for split in Split::ALL {
        let list = root
            .get(split.name())
            .and_then(Value::as_array)
            .ok_or_else(|| {
                PrepareError::input(
                    ann,
                    format!(
                        "missing list `{}` (an R2Gen annotation has train/val/test lists)",
                        split.name()
                    ),
                )
            })?;
        for (i, rec) in list.iter().enumerate() {
            samples.push(record(ann, images, split, i, rec)?);
        }
    }
    Ok(SourceData {
        dataset,
        description: serde_json::json!({
            "kind": "r2gen",
            "ann": ann.display().to_string(),
            "images": images.display().to_string(),
            "dataset": dataset.name(),
        }),
        samples,
        skipped: Vec::new(),
    })
}

fn record(
    ann: &Path,
    images: &Path,
    split: Split,
    i: usize,
    rec: &Value,
) -> Result<SourceSample, PrepareError> {
    let bad = |what: String| PrepareError::input(ann, format!("{}[{i}]: {what}", split.name()));
    let id = rec
        .get("id")
        .and_then(id_text)
        .ok_or_else(|| bad("missing key `id` (a string or an integer)".into()))?;
    let report = rec
        .get("report")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("record {id}: missing string key `report`")))?;
    let paths: Vec<PathBuf> = rec
        .get("image_path")
        .and_then(Value::as_array)
        .ok_or_else(|| bad(format!("record {id}: missing list `image_path`")))?
        .iter()
        .map(|p| p.as_str().map(|s| images.join(s)))
        .collect::<Option<_>>()
        .ok_or_else(|| bad(format!("record {id}: `image_path` must hold strings")))?;
    if let Some(s) = rec.get("split").and_then(Value::as_str) {
        if Split::parse(s) != Some(split) {
            return Err(bad(format!(
                "record {id}: `split` is {s:?} but the record is in the `{}` list",
                split.name()
            )));
        }
    }
    let neg_report_raw = rec
        .get("neg_report")
        .and_then(Value::as_array)
        .and_then(|l| l.first())
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(SourceSample {
        id,
        study_id: rec.get("study_id").and_then(id_text),
        subject_id: rec.get("subject_id").and_then(id_text),
        split,
        report_raw: report.to_string(),
        images: paths,
        neg_report_raw,
    })
}
