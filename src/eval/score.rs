//! `ithn-dist score`: score a file of generated reports against a file of references.
//!
//! Why a separate command: predictions from any source (this trainer, the Python reference, a
//! baseline) can be scored by exactly the same code, so numbers are comparable. Both files are
//! JSON lines `{"id": …, "report": …}`; pairs are matched by id, and a missing, extra or
//! duplicate id is an error that names the ids (silently dropping samples changes scores).
//! `evaluate`'s own `predictions.jsonl` (`{"id", "reference", "prediction"}`) is read as it
//! is: as `--hyps` alone it gives both sides, and either side reads its key from it.

use clap::Args;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::ce::{ce_of_texts, ce_scores, label_report, CeScores, Label, Labels, Observation};
use super::metrics::{self, MeteorOpts, MetricsError, ScoreReport};
use crate::data::text::Dataset;
use crate::fsutil::write_atomic;

#[derive(Args, Debug)]
pub struct ScoreArgs {
    /// Reference reports: JSON lines {"id": ..., "report": ...} (or "reference": ...)
    /// [default: the "reference" of each --hyps line, as in evaluate's predictions.jsonl].
    #[arg(long, value_name = "REFS.jsonl")]
    pub refs: Option<PathBuf>,
    /// Generated reports, matched to the references by id: JSON lines {"id", "report"}, or
    /// evaluate's predictions.jsonl ({"id", "reference", "prediction"}).
    #[arg(long, value_name = "HYPS.jsonl")]
    pub hyps: PathBuf,
    /// Print {"BLEU_1": ..., ..., "CIDEr": ...} as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Clean both sides with this dataset's cleaner first (default: texts are scored as given).
    #[arg(long, value_enum, value_name = "DATASET")]
    pub clean: Option<Dataset>,
    /// Also write per-item scores as JSON lines {"id", "BLEU_1", ..., "CIDEr"} (atomically).
    #[arg(long, value_name = "OUT.jsonl")]
    pub per_item: Option<PathBuf>,
    /// Skip METEOR (it needs Java and takes a few seconds to start).
    #[arg(long)]
    pub no_meteor: bool,
    /// The METEOR 1.5 jar [default: $ITHN_METEOR_JAR, else the pycocoevalcap wheel in .venv].
    #[arg(long, value_name = "JAR", conflicts_with = "no_meteor")]
    pub meteor_jar: Option<PathBuf>,
    /// Also report clinical efficacy: the rule-based CheXpert-style labeler labels both sides;
    /// precision / recall / F1 micro, macro and per observation (positive-only labels, as
    /// R2Gen's compute_ce.py). See docs/clinical-efficacy.md.
    #[arg(long)]
    pub ce: bool,
    /// Also score the hypotheses' CE against given labels instead of labelled references:
    /// JSON lines {"id": ..., "chexpert": {"Cardiomegaly": 1, ...}} with CheXpert codes
    /// 1 / 0 / -1 / null, e.g. `synth`'s findings.jsonl (what each phantom truly shows).
    /// Every reference id needs a line; extra lines are ignored.
    #[arg(long, value_name = "LABELS.jsonl")]
    pub ce_labels: Option<PathBuf>,
}

/// Problems with the input files, each naming the file, line or ids concerned.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: invalid JSON: {message}")]
    Json {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}:{line}: missing {what}")]
    MissingKey {
        path: PathBuf,
        line: usize,
        what: String,
    },
    #[error("{path}: duplicate ids: {}", list(.ids))]
    Duplicate { path: PathBuf, ids: Vec<String> },
    #[error("ids do not match: {}", mismatch(.missing, .extra))]
    Unmatched {
        /// Reference ids without a hypothesis.
        missing: Vec<String>,
        /// Hypothesis ids without a reference.
        extra: Vec<String>,
    },
    #[error("{path}:{line}: {message}")]
    BadLabel {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: no labels for ids {}", list(.ids))]
    MissingLabels { path: PathBuf, ids: Vec<String> },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

fn list(ids: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut s = ids
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > SHOWN {
        s.push_str(&format!(" … ({} in all)", ids.len()));
    }
    s
}

fn mismatch(missing: &[String], extra: &[String]) -> String {
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("no hypothesis for reference ids {}", list(missing)));
    }
    if !extra.is_empty() {
        parts.push(format!("no reference for hypothesis ids {}", list(extra)));
    }
    parts.join("; ")
}

/// One `{"id", "report"}` line: the id as text (a JSON string's content, else its JSON form).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: String,
    pub report: String,
}

/// Which side of the pairs a file gives: its text is `report`, else this side's key in
/// `evaluate`'s predictions.jsonl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    References,
    Hypotheses,
    /// The references inside a hypotheses file (`score` without `--refs`): only the
    /// `reference` key counts, never `report`, which is the hypothesis itself there.
    ReferencesOfHypotheses,
}

impl Side {
    fn key(self) -> &'static str {
        match self {
            Side::References | Side::ReferencesOfHypotheses => "reference",
            Side::Hypotheses => "prediction",
        }
    }
}

/// Reads a `{"id", "report"}` JSON-lines file (blank lines skipped), or `evaluate`'s
/// `{"id", "reference", "prediction"}` lines taking `side`'s key; ids must be unique.
pub fn read_records(path: &Path, side: Side) -> Result<Vec<Record>, ScoreError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScoreError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = |what: &str| ScoreError::MissingKey {
            path: path.to_path_buf(),
            line: i + 1,
            what: what.to_string(),
        };
        let v: Value = serde_json::from_str(line).map_err(|e| ScoreError::Json {
            path: path.to_path_buf(),
            line: i + 1,
            message: e.to_string(),
        })?;
        // One id rule for every command (issue 14): a string, or an integer as its digits.
        let id = v
            .get("id")
            .and_then(crate::data::ids::id_text)
            .ok_or_else(|| at("key `id` (a string or an integer)"))?;
        let report = match side {
            Side::ReferencesOfHypotheses => v.get("reference"),
            _ => v.get("report").or_else(|| v.get(side.key())),
        }
        .and_then(Value::as_str)
        .ok_or_else(|| match side {
            Side::ReferencesOfHypotheses => at(
                "string key `reference` (without --refs the references come from the \
                 hypotheses file, as in evaluate's predictions.jsonl; for {\"id\", \"report\"} \
                 hypotheses give --refs FILE)",
            ),
            _ => at(&format!(
                "string key `report` (or `{}`, as in evaluate's predictions.jsonl)",
                side.key()
            )),
        })?;
        out.push(Record {
            id,
            report: report.to_owned(),
        });
    }
    let mut seen = HashSet::new();
    let dups: Vec<String> = out
        .iter()
        .filter(|r| !seen.insert(r.id.as_str()))
        .map(|r| r.id.clone())
        .collect();
    if !dups.is_empty() {
        return Err(ScoreError::Duplicate {
            path: path.to_path_buf(),
            ids: dups,
        });
    }
    Ok(out)
}

/// Matched inputs in reference order: ids, reference texts, hypothesis texts.
pub type Paired = (Vec<String>, Vec<String>, Vec<String>);

/// Pairs hypotheses with references by id, in reference order.
pub fn pair_by_id(refs: &[Record], hyps: &[Record]) -> Result<Paired, ScoreError> {
    let by_id: HashMap<&str, &str> = hyps
        .iter()
        .map(|r| (r.id.as_str(), r.report.as_str()))
        .collect();
    let ref_ids: HashSet<&str> = refs.iter().map(|r| r.id.as_str()).collect();
    let missing: Vec<String> = refs
        .iter()
        .filter(|r| !by_id.contains_key(r.id.as_str()))
        .map(|r| r.id.clone())
        .collect();
    let extra: Vec<String> = hyps
        .iter()
        .filter(|r| !ref_ids.contains(r.id.as_str()))
        .map(|r| r.id.clone())
        .collect();
    if !missing.is_empty() || !extra.is_empty() {
        return Err(ScoreError::Unmatched { missing, extra });
    }
    let ids = refs.iter().map(|r| r.id.clone()).collect();
    let ref_texts = refs.iter().map(|r| r.report.clone()).collect();
    let hyp_texts = refs
        .iter()
        .map(|r| by_id[r.id.as_str()].to_owned())
        .collect();
    Ok((ids, ref_texts, hyp_texts))
}

/// Per-item scores as JSON lines `{"id", "BLEU_1", …}`, in reference order.
fn per_item_jsonl(ids: &[String], report: &ScoreReport) -> String {
    ids.iter()
        .zip(&report.items)
        .map(|(id, s)| {
            format!(
                "{{\"id\":{},{}}}\n",
                Value::from(id.as_str()),
                s.json_members()
            )
        })
        .collect()
}

/// Reads CheXpert labels as JSON lines `{"id": …, "chexpert": {"No Finding": 1, …}}`: every
/// key must be one of the 14 observation names and every value 1, 0, -1 or null; absent
/// observations are blank. Errors name the file and line.
pub fn read_labels(path: &Path) -> Result<HashMap<String, Labels>, ScoreError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScoreError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| ScoreError::BadLabel {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        };
        let v: Value = serde_json::from_str(line).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let id = match v.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => return Err(bad("missing key `id`".into())),
            Some(other) => other.to_string(),
        };
        let Some(map) = v.get("chexpert").and_then(Value::as_object) else {
            return Err(bad("missing object `chexpert`".into()));
        };
        let mut labels = Labels::default();
        for (name, code) in map {
            let o = Observation::from_name(name).ok_or_else(|| {
                bad(format!(
                    "`{name}` is not a CheXpert observation (e.g. \"Pleural Effusion\")"
                ))
            })?;
            let label = match code {
                Value::Null => Some(Label::Blank),
                Value::Number(n) => Label::from_code(n.as_i64()),
                _ => None,
            }
            .ok_or_else(|| bad(format!("`{name}`: {code} is not 1, 0, -1 or null")))?;
            labels.0[o.index()] = label;
        }
        if out.insert(id.clone(), labels).is_some() {
            return Err(bad(format!("duplicate id `{id}`")));
        }
    }
    Ok(out)
}

/// The labels of `ids` from a labels file, in that order (all must be there).
pub fn labels_for(path: &Path, ids: &[String]) -> Result<Vec<Labels>, ScoreError> {
    let all = read_labels(path)?;
    let missing: Vec<String> = ids
        .iter()
        .filter(|id| !all.contains_key(*id))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Err(ScoreError::MissingLabels {
            path: path.to_path_buf(),
            ids: missing,
        });
    }
    Ok(ids.iter().map(|id| all[id]).collect())
}

/// The CE reports `score` prints: (name, scores) vs the references and vs a labels file.
fn ce_reports(
    a: &ScoreArgs,
    ids: &[String],
    refs: &[String],
    hyps: &[String],
) -> Result<Vec<(&'static str, CeScores)>, ScoreError> {
    let mut out = Vec::new();
    if a.ce {
        out.push(("ce", ce_of_texts(refs, hyps)));
    }
    if let Some(path) = &a.ce_labels {
        let truth = labels_for(path, ids)?;
        let hyp_labels: Vec<Labels> = hyps.iter().map(|h| label_report(h)).collect();
        out.push(("ce_vs_labels", ce_scores(&truth, &hyp_labels)));
    }
    Ok(out)
}

/// Runs the command: read, pair, (clean), score, print, optionally write per-item scores.
pub fn run(a: ScoreArgs) -> anyhow::Result<i32> {
    let refs = match a.refs.as_deref() {
        Some(refs) => read_records(refs, Side::References)?,
        None => read_records(&a.hyps, Side::ReferencesOfHypotheses)?,
    };
    let hyps = read_records(&a.hyps, Side::Hypotheses)?;
    let (ids, mut ref_texts, mut hyp_texts) = pair_by_id(&refs, &hyps)?;
    if let Some(ds) = a.clean {
        for t in ref_texts.iter_mut().chain(hyp_texts.iter_mut()) {
            *t = ds.clean(t);
        }
    }
    let meteor = if a.no_meteor {
        None
    } else {
        Some(MeteorOpts::locate(a.meteor_jar.as_deref()).map_err(ScoreError::from)?)
    };
    let mut report =
        metrics::score_items(&ref_texts, &hyp_texts, meteor.as_ref()).map_err(ScoreError::from)?;
    let ce = ce_reports(&a, &ids, &ref_texts, &hyp_texts)?;
    if let Some((_, vs_refs)) = ce.iter().find(|(k, _)| *k == "ce") {
        report.corpus.ce = Some(vs_refs.summary);
    }
    if let Some(path) = &a.per_item {
        write_atomic(path, per_item_jsonl(&ids, &report).as_bytes()).map_err(
            |crate::fsutil::IoError { source, .. }| ScoreError::Write {
                path: path.clone(),
                source,
            },
        )?;
    }
    if a.json {
        let mut members = report.corpus.json_members();
        for (key, scores) in &ce {
            members.push_str(&format!(",\"{key}\":{}", scores.to_json()));
        }
        println!("{{{members}}}");
    } else {
        println!("{} pairs", ids.len());
        for (k, v) in report.corpus.entries() {
            println!("{k:<11} {v:.6}");
        }
        for (key, scores) in &ce {
            let against = if *key == "ce" {
                "reference reports"
            } else {
                "given labels"
            };
            println!("\nclinical efficacy against {against}:\n{}", scores.table());
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, report: &str) -> Record {
        Record {
            id: id.into(),
            report: report.into(),
        }
    }

    /// Without --refs the references come only from a `reference` key: a plain
    /// {"id", "report"} hypotheses file must be refused, not scored against itself (which gave
    /// BLEU 1.0 and exit 0). Both evaluate's format and a file holding both keys still work.
    #[test]
    fn hypotheses_are_never_their_own_references() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hyps.jsonl");
        std::fs::write(&p, "{\"id\":\"a\",\"report\":\"clear lungs\"}\n").unwrap();
        let err = read_records(&p, Side::ReferencesOfHypotheses)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`reference`") && err.contains("--refs"),
            "{err}"
        );
        std::fs::write(
            &p,
            "{\"id\":\"a\",\"report\":\"clear lungs\",\"reference\":\"no effusion\"}\n",
        )
        .unwrap();
        assert_eq!(
            read_records(&p, Side::ReferencesOfHypotheses).unwrap(),
            [rec("a", "no effusion")]
        );
        assert_eq!(
            read_records(&p, Side::Hypotheses).unwrap(),
            [rec("a", "clear lungs")]
        );
    }

    /// evaluate's predictions.jsonl gives the references and the hypotheses (issue 19).
    #[test]
    fn evaluate_predictions_give_both_sides() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("predictions.jsonl");
        std::fs::write(
            &p,
            "{\"id\":\"a\",\"reference\":\"no effusion\",\"prediction\":\"clear lungs\"}\n",
        )
        .unwrap();
        assert_eq!(
            read_records(&p, Side::References).unwrap(),
            [rec("a", "no effusion")]
        );
        assert_eq!(
            read_records(&p, Side::Hypotheses).unwrap(),
            [rec("a", "clear lungs")]
        );
        std::fs::write(&p, "{\"id\":\"a\",\"text\":\"x\"}\n").unwrap();
        let err = read_records(&p, Side::Hypotheses).unwrap_err().to_string();
        assert!(
            err.contains(":1: missing string key `report` (or `prediction`"),
            "{err}"
        );
    }

    #[test]
    fn pairing_follows_reference_order_and_names_unmatched_ids() {
        let refs = [rec("a", "x"), rec("b", "y")];
        let (ids, r, h) = pair_by_id(&refs, &[rec("b", "Y"), rec("a", "X")]).unwrap();
        assert_eq!(
            (ids, r, h),
            (
                vec!["a".into(), "b".into()],
                vec!["x".into(), "y".into()],
                vec!["X".into(), "Y".into()]
            )
        );
        let err = pair_by_id(&refs, &[rec("a", "X"), rec("c", "Z")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ids do not match: no hypothesis for reference ids b; no reference for hypothesis ids c"
        );
    }
}
