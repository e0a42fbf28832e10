//! The PhysioNet MIMIC-CXR-JPG layout: `mimic-cxr-2.0.0-split.csv[.gz]` (dicom_id, study_id,
//! subject_id, split), `mimic-cxr-2.0.0-metadata.csv[.gz]` (dicom_id, …, ViewPosition), images
//! `files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg`, and free-text reports
//! `files/pXX/pSUBJECT/sSTUDY.txt` (from mimic-cxr-reports; `--reports` when they live apart).
//!
//! One sample per study (SPEC §1: one frontal image per sample, text = FINDINGS only):
//! - view: the study keeps one frontal image, PA preferred over AP, then the smallest
//!   `dicom_id` (string order); a study without a PA/AP image is skipped ("no frontal image");
//! - split: the split CSV's entry of that image; `validate` means val;
//! - text: see [`extract_findings`]; a study whose report has no FINDINGS section, an empty
//!   one, or no report file at all, is skipped with that reason;
//! - order: studies sorted by (subject_id, study_id) as strings; sample id = the dicom_id.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::data::prepare::{PrepareError, Skipped, SourceData, SourceSample, Split};
use crate::data::text::Dataset;

/// `name.csv.gz` if present, else `name.csv`.
fn csv_path(root: &Path, stem: &str) -> Result<PathBuf, PrepareError> {
    for ext in ["csv.gz", "csv"] {
        let p = root.join(format!("{stem}.{ext}"));
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(PrepareError::input(
        root,
        format!("neither {stem}.csv.gz nor {stem}.csv found (is this a MIMIC-CXR-JPG root?)"),
    ))
}

/// The directory of one study below `files/`: `pXX/pSUBJECT/sSTUDY`.
fn study_dir(subject: &str, study: &str) -> PathBuf {
    let prefix: String = subject.chars().take(2).collect();
    PathBuf::from(format!("p{prefix}/p{subject}/s{study}"))
}

/// The FINDINGS section of a MIMIC report, or the reason there is none.
///
/// Rules: a section header is a line whose first non-blank text is an upper-case heading
/// (letters, spaces, `/`, `&`, `-`) followed by `:`. FINDINGS starts at the header
/// `FINDINGS:` (text after the colon on the same line counts) and runs to the next header or
/// the end of the report. Lines are kept as they are (the MIMIC cleaner turns newlines into
/// spaces); the result is trimmed. Only the first FINDINGS section is used.
pub fn extract_findings(report: &str) -> Result<String, &'static str> {
    let mut out: Option<Vec<&str>> = None;
    for line in report.lines() {
        let trimmed = line.trim_start();
        match header(trimmed) {
            Some(("FINDINGS", rest)) if out.is_none() => out = Some(vec![rest]),
            Some(_) if out.is_some() => break,
            _ => {
                if let Some(lines) = out.as_mut() {
                    lines.push(line);
                }
            }
        }
    }
    let lines = out.ok_or("no FINDINGS section")?;
    let text = lines.join("\n").trim().to_string();
    if text.is_empty() {
        return Err("empty FINDINGS section");
    }
    Ok(text)
}

/// `Some((NAME, rest))` when the line starts with an upper-case `NAME:` heading.
fn header(line: &str) -> Option<(&str, &str)> {
    let colon = line.find(':')?;
    let name = &line[..colon];
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || matches!(c, ' ' | '/' | '&' | '-'));
    ok.then(|| (name.trim_end(), &line[colon + 1..]))
}

struct Image {
    dicom: String,
    view: String,
    split: String,
}

/// Reads the layout under `root`; reports default to `root` as well.
pub fn read(root: &Path, reports: Option<&Path>) -> Result<SourceData, PrepareError> {
    let split_csv = csv_path(root, "mimic-cxr-2.0.0-split")?;
    let studies = read_studies(root, &split_csv)?;
    let report_root = reports.unwrap_or(root);
    let mut samples = Vec::new();
    let mut skipped = Vec::new();
    for ((subject, study), images) in studies {
        let Some(image) = frontal(images) else {
            skipped.push(Skipped {
                id: format!("s{study}"),
                split: None,
                reason: "no frontal (PA/AP) image".into(),
            });
            continue;
        };
        let split = Split::parse(&image.split).ok_or_else(|| {
            PrepareError::input(
                &split_csv,
                format!("dicom {}: unknown split {:?}", image.dicom, image.split),
            )
        })?;
        let study_ids = (subject.as_str(), study.as_str());
        match sample(root, report_root, study_ids, &image, split) {
            Ok(s) => samples.push(s),
            Err(reason) => skipped.push(Skipped {
                id: image.dicom.clone(),
                split: Some(split),
                reason,
            }),
        }
    }
    Ok(SourceData {
        dataset: Dataset::MimicCxr,
        description: serde_json::json!({
            "kind": "mimic-cxr-jpg",
            "root": root.display().to_string(),
            "reports": report_root.display().to_string(),
        }),
        samples,
        skipped,
    })
}

/// The images of every (subject, study) from the split CSV, with their view positions from
/// the metadata CSV. A row with a malformed subject or study id is an error naming the row.
fn read_studies(
    root: &Path,
    split_csv: &Path,
) -> Result<BTreeMap<(String, String), Vec<Image>>, PrepareError> {
    let meta_csv = csv_path(root, "mimic-cxr-2.0.0-metadata")?;
    let splits = super::read_csv(split_csv, &["dicom_id", "study_id", "subject_id", "split"])?;
    let meta = super::read_csv(&meta_csv, &["dicom_id", "ViewPosition"])?;
    let views: HashMap<&str, &str> = meta
        .iter()
        .map(|r| (r["dicom_id"].as_str(), r["ViewPosition"].as_str()))
        .collect();
    let mut studies: BTreeMap<(String, String), Vec<Image>> = BTreeMap::new();
    for (i, r) in splits.iter().enumerate() {
        let (subject, study) = (r["subject_id"].clone(), r["study_id"].clone());
        if subject.is_empty() || study.is_empty() || !subject.chars().all(|c| c.is_ascii_digit()) {
            return Err(PrepareError::Row {
                path: split_csv.to_path_buf(),
                row: i + 2,
                what: format!("bad subject_id {subject:?} / study_id {study:?}"),
            });
        }
        studies.entry((subject, study)).or_default().push(Image {
            dicom: r["dicom_id"].clone(),
            view: views.get(r["dicom_id"].as_str()).unwrap_or(&"").to_string(),
            split: r["split"].clone(),
        });
    }
    Ok(studies)
}

/// The study's image the reference uses: the first PA, else the first AP (by dicom id).
fn frontal(mut images: Vec<Image>) -> Option<Image> {
    let rank = |v: &str| match v {
        "PA" => Some(0),
        "AP" => Some(1),
        _ => None,
    };
    images.retain(|im| rank(&im.view).is_some());
    images.sort_by(|a, b| {
        rank(&a.view)
            .cmp(&rank(&b.view))
            .then(a.dicom.cmp(&b.dicom))
    });
    images.into_iter().next()
}

/// One sample: the study's report (FINDINGS section) and its image path, or why it is skipped.
fn sample(
    root: &Path,
    report_root: &Path,
    (subject, study): (&str, &str),
    image: &Image,
    split: Split,
) -> Result<SourceSample, String> {
    let dir = study_dir(subject, study);
    let report_path = report_root
        .join("files")
        .join(format!("{}.txt", dir.display()));
    let report = std::fs::read_to_string(&report_path)
        .map_err(|e| format!("cannot read report {}: {e}", report_path.display()))?;
    let findings = extract_findings(&report).map_err(|reason| reason.to_string())?;
    Ok(SourceSample {
        id: image.dicom.clone(),
        study_id: Some(study.to_string()),
        subject_id: Some(subject.to_string()),
        split,
        report_raw: findings,
        images: vec![root
            .join("files")
            .join(&dir)
            .join(format!("{}.jpg", image.dicom))],
        neg_report_raw: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_run_to_the_next_header() {
        let r = "FINAL REPORT\n EXAMINATION: CHEST\n\n FINDINGS: Heart normal.\n Lungs clear.\n\n IMPRESSION: None.";
        assert_eq!(
            extract_findings(r),
            Ok("Heart normal.\n Lungs clear.".to_string())
        );
    }

    #[test]
    fn findings_on_following_lines_and_until_the_end() {
        let r = "FINDINGS:\n\n  No effusion. Note: stable.\n";
        assert_eq!(
            extract_findings(r),
            Ok("No effusion. Note: stable.".to_string())
        );
    }

    #[test]
    fn missing_or_empty_findings_are_reasons() {
        assert_eq!(
            extract_findings("IMPRESSION: fine."),
            Err("no FINDINGS section")
        );
        assert_eq!(
            extract_findings("FINDINGS:\n IMPRESSION: x"),
            Err("empty FINDINGS section")
        );
    }

    #[test]
    fn study_dir_uses_the_two_digit_prefix() {
        assert_eq!(
            study_dir("10000032", "50414267"),
            PathBuf::from("p10/p10000032/s50414267")
        );
    }
}
