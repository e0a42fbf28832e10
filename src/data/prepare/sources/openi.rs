//! The original Open-i IU X-Ray release: `NLMCXR_reports.tgz` (or its unpacked directory) of
//! `ecgen-radiology/*.xml` reports, and the PNG images named by their `parentImage` ids.
//!
//! One sample per report with a FINDINGS section (`<AbstractText Label="FINDINGS">`):
//! - id = the report's `uId` (e.g. `CXR1`); reports without FINDINGS text, or with fewer images
//!   than `--views`, are skipped with that reason;
//! - views: with `--metadata`, a CSV with an image-id column (`imageid`/`image_id`/`ImageID`)
//!   and a view column (`view`/`View`/`ViewPosition`): the first image whose view is PA/AP
//!   (or contains "frontal") is the frontal one and the first other image the lateral; without
//!   metadata the first two `parentImage`s in document order are taken as (frontal, lateral),
//!   which is the order of the Open-i release; with `--views 1` only the frontal (or first) image
//!   is needed and kept;
//! - split: Open-i has none, so a deterministic seeded split by a hash of (seed, id): 70 % train,
//!   10 % val, 20 % test (the proportions of the R2Gen IU split);
//! - order: reports sorted by their file name.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use quick_xml::events::Event;

use crate::data::prepare::{PrepareError, Skipped, SourceData, SourceSample, Split};
use crate::data::text::Dataset;

/// What one XML report holds that we need.
#[derive(Debug, Default, PartialEq)]
pub struct OpeniReport {
    pub uid: Option<String>,
    pub findings: Option<String>,
    pub images: Vec<String>,
}

/// Parses one Open-i report; `origin` names it in errors.
pub fn parse_report(xml: &str, origin: &Path) -> Result<OpeniReport, PrepareError> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut out = OpeniReport::default();
    let mut in_findings = false;
    let mut text = String::new();
    loop {
        let event = reader
            .read_event()
            .map_err(|e| PrepareError::input(origin, format!("malformed XML: {e}")))?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let empty = matches!(event, Event::Empty(_));
                match e.name().as_ref() {
                    "AbstractText" if attr(e, "Label").as_deref() == Some("FINDINGS") => {
                        // `<AbstractText Label="FINDINGS"/>` has no text and no end tag.
                        in_findings = !empty;
                        if empty {
                            out.findings = Some(String::new());
                        }
                    }
                    "parentImage" => out.images.extend(attr(e, "id")),
                    "uId" => out.uid = out.uid.take().or(attr(e, "id")),
                    _ => {}
                }
            }
            Event::Text(t) if in_findings => text.push_str(&t.xml10_content()),
            Event::GeneralRef(r) if in_findings => {
                if let Ok(Some(c)) = r.resolve_char_ref() {
                    text.push(c);
                } else {
                    let name: &str = &r;
                    let resolved = quick_xml::escape::unescape(&format!("&{name};"))
                        .map(|c| c.into_owned())
                        .unwrap_or_default();
                    text.push_str(&resolved);
                }
            }
            Event::End(e) if e.name().as_ref() == "AbstractText" && in_findings => {
                in_findings = false;
                out.findings = Some(std::mem::take(&mut text).trim().to_string());
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

/// An attribute's value, entity-normalised (Open-i XML; also read by `eval::ce::mesh`).
pub(crate) fn attr(e: &quick_xml::events::BytesStart, key: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == key)
        .and_then(|a| {
            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .ok()
                .map(|v| v.into_owned())
        })
}

/// All `*.xml` files of a directory tree or a `.tgz`, as (name, text), sorted by name.
pub(crate) fn read_xml_files(reports: &Path) -> Result<Vec<(String, String)>, PrepareError> {
    let mut files = Vec::new();
    if reports.is_dir() {
        let mut stack = vec![reports.to_path_buf()];
        while let Some(dir) = stack.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|source| PrepareError::Read {
                path: dir.clone(),
                source,
            })?;
            for entry in entries {
                let path = entry
                    .map_err(|source| PrepareError::Read {
                        path: dir.clone(),
                        source,
                    })?
                    .path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "xml") {
                    let text = super::read_text_maybe_gz(&path)?;
                    let name = path
                        .strip_prefix(reports)
                        .unwrap_or(&path)
                        .display()
                        .to_string();
                    files.push((name, text));
                }
            }
        }
    } else {
        let bytes = super::read_bytes(reports)?;
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        let bad =
            |e: std::io::Error| PrepareError::input(reports, format!("not a readable .tgz: {e}"));
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let name = entry.path().map_err(bad)?.display().to_string();
            if name.ends_with(".xml") {
                let mut text = String::new();
                entry.read_to_string(&mut text).map_err(bad)?;
                files.push((name, text));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// A deterministic split from (seed, id): FNV-1a, then 70/10/20.
pub fn seeded_split(seed: u64, id: &str) -> Split {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    match h % 100 {
        0..=69 => Split::Train,
        70..=79 => Split::Val,
        _ => Split::Test,
    }
}

/// Image id → view, from the optional metadata CSV.
fn read_views(metadata: &Path) -> Result<HashMap<String, String>, PrepareError> {
    let rows = super::read_csv(metadata, &[])?;
    let pick = |row: &HashMap<String, String>, names: &[&str]| {
        names.iter().find_map(|n| row.get(*n).cloned())
    };
    let mut views = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        let (Some(id), Some(view)) = (
            pick(row, &["imageid", "image_id", "ImageID"]),
            pick(row, &["view", "View", "ViewPosition"]),
        ) else {
            return Err(PrepareError::Row {
                path: metadata.to_path_buf(),
                row: i + 2,
                what: "needs an image id column (imageid) and a view column (view)".into(),
            });
        };
        views.insert(id, view);
    }
    Ok(views)
}

fn is_frontal(view: &str) -> bool {
    let v = view.to_ascii_uppercase();
    v == "PA" || v == "AP" || v.contains("FRONTAL")
}

/// The first `views` of (frontal, lateral) of a report: by the metadata's view column, else the
/// first `parentImage`s in document order. `None` when the report has fewer.
fn pick_views(
    images: &[String],
    meta: Option<&HashMap<String, String>>,
    views: usize,
) -> Option<Vec<String>> {
    let Some(meta) = meta else {
        return (images.len() >= views).then(|| images[..views].to_vec());
    };
    let frontal = images
        .iter()
        .find(|i| meta.get(*i).is_some_and(|v| is_frontal(v)))?;
    if views == 1 {
        return Some(vec![frontal.clone()]);
    }
    let lateral = images
        .iter()
        .find(|i| *i != frontal && meta.get(*i).is_some_and(|v| !is_frontal(v)))?;
    Some(vec![frontal.clone(), lateral.clone()])
}

/// Reads the reports; `views` (1 or 2) is how many images a kept study has, so a report
/// without them is not a record of this listing (as it is not one of the R2Gen IU annotation,
/// which was built from the two-view Open-i reports).
pub fn read(
    reports: &Path,
    images: &Path,
    metadata: Option<&Path>,
    seed: u64,
    views: usize,
) -> Result<SourceData, PrepareError> {
    let meta = metadata.map(read_views).transpose()?;
    let mut samples = Vec::new();
    let mut skipped = Vec::new();
    for (name, xml) in read_xml_files(reports)? {
        let origin = reports.join(&name);
        let report = parse_report(&xml, &origin)?;
        let id = report
            .uid
            .clone()
            .unwrap_or_else(|| name.trim_end_matches(".xml").to_string());
        let split = seeded_split(seed, &id);
        let skip = |reason: &str| Skipped {
            id: id.clone(),
            split: Some(split),
            reason: reason.into(),
        };
        let Some(findings) = report.findings.filter(|f| !f.is_empty()) else {
            skipped.push(skip("no FINDINGS text"));
            continue;
        };
        let Some(pair) = pick_views(&report.images, meta.as_ref(), views) else {
            skipped.push(skip(if views == 2 {
                "no frontal + lateral image pair (prepare with --views 1 to keep one-view studies)"
            } else {
                "no frontal image"
            }));
            continue;
        };
        samples.push(SourceSample {
            id,
            study_id: None,
            subject_id: None,
            split,
            report_raw: findings,
            images: pair
                .iter()
                .map(|p| images.join(format!("{p}.png")))
                .collect::<Vec<PathBuf>>(),
            neg_report_raw: None,
        });
    }
    // Split order first (the pipeline numbers rows per split), file order within a split.
    samples.sort_by_key(|s| s.split);
    Ok(SourceData {
        dataset: Dataset::IuXray,
        description: serde_json::json!({
            "kind": "openi",
            "reports": reports.display().to_string(),
            "images": images.display().to_string(),
            "metadata": metadata.map(|m| m.display().to_string()),
            "split_seed": seed,
        }),
        samples,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_findings_images_and_uid() {
        let xml = r#"<?xml version="1.0"?><eCitation><uId id="CXR7"/><MedlineCitation><Article><Abstract>
            <AbstractText Label="COMPARISON">None.</AbstractText>
            <AbstractText Label="FINDINGS">Heart &amp; lungs normal.</AbstractText>
            <AbstractText Label="IMPRESSION">Fine.</AbstractText></Abstract></Article></MedlineCitation>
            <parentImage id="CXR7_IM-1-1001"><url>x</url></parentImage><parentImage id="CXR7_IM-1-2001"/></eCitation>"#;
        let r = parse_report(xml, Path::new("7.xml")).expect("valid XML");
        assert_eq!(r.uid.as_deref(), Some("CXR7"));
        assert_eq!(r.findings.as_deref(), Some("Heart & lungs normal."));
        assert_eq!(r.images, vec!["CXR7_IM-1-1001", "CXR7_IM-1-2001"]);
    }

    #[test]
    fn malformed_xml_names_the_file() {
        let err = parse_report("<a><b></a>", Path::new("bad.xml")).expect_err("mismatched tags");
        assert!(err.to_string().contains("bad.xml"), "{err}");
    }

    #[test]
    fn seeded_split_is_stable_and_roughly_70_10_20() {
        let n = 5000;
        let train = (0..n)
            .filter(|i| seeded_split(1, &format!("CXR{i}")) == Split::Train)
            .count();
        assert!((3200..3800).contains(&train), "{train}");
        assert_eq!(seeded_split(1, "CXR5"), seeded_split(1, "CXR5"));
    }
}
