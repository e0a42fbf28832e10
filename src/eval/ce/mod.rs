//! Clinical efficacy (CE): do generated reports state the same findings as the references?
//!
//! One rule-based labeler for the whole project ([`labeler`]): it reads a report into
//! mentions of findings (positive / negative / uncertain, with side, zone and severity); the
//! phantom renderer (`synth`) draws its positive findings, and [`label_report`] turns the
//! mentions into the 14 CheXpert observations' labels (positive / negative / uncertain /
//! blank, "No Finding" when no pathology is positive or uncertain).
//!
//! It is an **approximation of the CheXpert labeler** (Irvin et al., AAAI 2019), whose
//! successor CheXbert (a BERT model) is what MIMIC-CXR papers use and whose weights cannot be
//! fetched here. Agreement with human (MeSH) labels of the IU X-Ray reports is measured by
//! `tests/ce_mesh_agreement.rs` and tabled in docs/clinical-efficacy.md.
//!
//! Scores ([`ce_scores`]) follow the R2Gen / R2GenCMN convention (their `compute_ce.py` and
//! `compute_mlc`): labels are made binary with **positive = 1 and negative, uncertain and
//! blank = 0**, over all 14 observations including "No Finding"; precision, recall and F1
//! are reported micro-averaged (counts summed over observations) and macro-averaged (the
//! mean of the 14 per-observation values), with 0 for a 0/0 ratio as scikit-learn does.
//! Which of the two a paper's "P / R / F1" means differs between papers; see the docs.
//! Because "No Finding" dominates normal-heavy test sets (a constant normal report scores a
//! high micro-F1 on it alone), the micro average over the 13 *findings* (every observation
//! but "No Finding") is reported as well: it is 0 for any report that states no finding.

pub mod chexpert;
pub mod labeler;
pub mod mesh;
pub mod phrases;

#[cfg(test)]
mod tests;

use serde::Serialize;

pub use chexpert::{label_report, labels_of_findings, Label, Labels, Observation, N_OBS};
pub use labeler::{mentions, read_report, Certainty, Finding, Kind, Mention};

/// Precision, recall and F1 of one observation or an average.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Prf {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

/// Counts of one observation over a corpus (positive-only binary labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Counts {
    pub tp: usize,
    pub fp: usize,
    #[serde(rename = "fn")]
    pub fn_: usize,
}

impl Counts {
    /// scikit-learn's definitions, with 0 for 0/0 (its default `zero_division`).
    pub fn prf(&self) -> Prf {
        let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        Prf {
            precision: ratio(self.tp, self.tp + self.fp),
            recall: ratio(self.tp, self.tp + self.fn_),
            f1: ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_),
        }
    }
}

/// The corpus averages, small enough to travel with BLEU & co. in
/// [`crate::eval::metrics::Scores`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CeSummary {
    pub micro: Prf,
    pub macro_: Prf,
    /// Micro average over the 13 observations other than "No Finding".
    pub findings: Prf,
}

/// CE of a corpus: per-observation counts and scores, micro and macro averages.
#[derive(Debug, Clone, PartialEq)]
pub struct CeScores {
    /// Number of (reference, generated) pairs.
    pub n: usize,
    /// Indexed by [`Observation::index`].
    pub counts: [Counts; N_OBS],
    pub summary: CeSummary,
}

/// CE scores of generated labels against reference labels, pair by pair (same order).
///
/// Errors: none; the caller pairs the lists (an empty corpus gives all zeros).
pub fn ce_scores(refs: &[Labels], hyps: &[Labels]) -> CeScores {
    let mut counts = [Counts::default(); N_OBS];
    for (r, h) in refs.iter().zip(hyps) {
        for (k, c) in counts.iter_mut().enumerate() {
            match (r.0[k] == Label::Positive, h.0[k] == Label::Positive) {
                (true, true) => c.tp += 1,
                (false, true) => c.fp += 1,
                (true, false) => c.fn_ += 1,
                (false, false) => {}
            }
        }
    }
    let sum = |cs: &[Counts]| {
        cs.iter().fold(Counts::default(), |a, c| Counts {
            tp: a.tp + c.tp,
            fp: a.fp + c.fp,
            fn_: a.fn_ + c.fn_,
        })
    };
    let total = sum(&counts);
    let findings = sum(&counts[Observation::NoFinding.index() + 1..]);
    let per: Vec<Prf> = counts.iter().map(Counts::prf).collect();
    let mean = |f: fn(&Prf) -> f64| per.iter().map(f).sum::<f64>() / N_OBS as f64;
    CeScores {
        n: refs.len().min(hyps.len()),
        counts,
        summary: CeSummary {
            micro: total.prf(),
            macro_: Prf {
                precision: mean(|p| p.precision),
                recall: mean(|p| p.recall),
                f1: mean(|p| p.f1),
            },
            findings: findings.prf(),
        },
    }
}

/// CE of generated report texts against reference report texts (both labelled here).
pub fn ce_of_texts(refs: &[String], hyps: &[String]) -> CeScores {
    let label = |v: &[String]| v.iter().map(|t| label_report(t)).collect::<Vec<_>>();
    ce_scores(&label(refs), &label(hyps))
}

impl CeSummary {
    /// `(key, value)` pairs as they appear next to BLEU in score tables and metrics.jsonl.
    pub fn entries(&self) -> [(&'static str, f64); 7] {
        [
            ("CE_P_micro", self.micro.precision),
            ("CE_R_micro", self.micro.recall),
            ("CE_F1_micro", self.micro.f1),
            ("CE_P_macro", self.macro_.precision),
            ("CE_R_macro", self.macro_.recall),
            ("CE_F1_macro", self.macro_.f1),
            ("CE_F1_findings", self.findings.f1),
        ]
    }
}

impl CeScores {
    /// The full report as JSON: convention, averages, and per observation the scores, the
    /// counts and the support (reference positives).
    pub fn to_json(&self) -> serde_json::Value {
        let per: serde_json::Map<String, serde_json::Value> = Observation::ALL
            .into_iter()
            .map(|o| {
                let c = self.counts[o.index()];
                let p = c.prf();
                let v = serde_json::json!({
                    "precision": p.precision, "recall": p.recall, "f1": p.f1,
                    "tp": c.tp, "fp": c.fp, "fn": c.fn_, "support": c.tp + c.fn_,
                });
                (o.name().to_string(), v)
            })
            .collect();
        serde_json::json!({
            "labeler": "ithn-dist rule-based CheXpert approximation",
            "binarization": "positive=1; negative, uncertain, blank=0 (R2Gen compute_ce.py)",
            "n": self.n,
            "micro": self.summary.micro,
            "macro": self.summary.macro_,
            "micro_findings": self.summary.findings,
            "per_observation": per,
        })
    }

    /// A text table: one line per observation, then the averages.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<27} {:>9} {:>9} {:>9} {:>8}\n",
            "CE (positive-only)", "precision", "recall", "F1", "support"
        );
        for o in Observation::ALL {
            let c = self.counts[o.index()];
            let p = c.prf();
            s.push_str(&format!(
                "{:<27} {:>9.4} {:>9.4} {:>9.4} {:>8}\n",
                o.name(),
                p.precision,
                p.recall,
                p.f1,
                c.tp + c.fn_
            ));
        }
        for (name, p) in [
            ("micro", self.summary.micro),
            ("macro", self.summary.macro_),
            ("micro, findings (no NF)", self.summary.findings),
        ] {
            s.push_str(&format!(
                "{:<27} {:>9.4} {:>9.4} {:>9.4}\n",
                name, p.precision, p.recall, p.f1
            ));
        }
        s
    }
}
