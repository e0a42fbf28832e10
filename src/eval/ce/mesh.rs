//! Validation of the labeler on human labels: the Open-i release of IU X-Ray
//! (`NLMCXR_reports.tgz`, 3955 XML reports, CC BY-NC-ND 4.0, Demner-Fushman et al. 2016)
//! carries, per report, MeSH "major" terms assigned by human coders (`Cardiomegaly/mild`,
//! `Pleural Effusion/bilateral/small`, `normal`, …).
//!
//! Each CheXpert observation gets the MeSH headings (and, where the heading is an organ, the
//! qualifier) that name it ([`mesh_observations`]); "No Finding" is derived as CheXpert does
//! (no pathology). A report's text for the labeler is FINDINGS + IMPRESSION, the sections the
//! coders read. Reports coded "No Indexing" are left out. [`Agreement`] then counts, per
//! observation, how often our positive label and the MeSH label agree.

use std::collections::BTreeSet;
use std::path::Path;

use quick_xml::events::Event;

use super::chexpert::{label_report, Label, Observation, N_OBS};
use super::Counts;

/// What the agreement needs from one Open-i XML report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MeshReport {
    /// The report's `uId` (`CXR1`).
    pub id: String,
    /// FINDINGS and IMPRESSION texts joined by a space (either may be empty).
    pub text: String,
    /// The MeSH major terms as written (`Opacity/lung/base/left`).
    pub major: Vec<String>,
}

/// Parses one Open-i report. Errors name `origin` and say what is wrong.
pub fn parse_report(xml: &str, origin: &str) -> Result<MeshReport, String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut out = MeshReport::default();
    let (mut section, mut in_major, mut text) = (None::<String>, false, String::new());
    let mut sections: Vec<(String, String)> = Vec::new();
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("{origin}: malformed XML: {e}"))?;
        match event {
            Event::Start(ref e) => match e.name().as_ref() {
                "AbstractText" => section = label_attr(e),
                "major" => in_major = true,
                _ => {}
            },
            Event::Empty(ref e) if e.name().as_ref() == "uId" => {
                out.id = attr(e, "id").unwrap_or_default();
            }
            Event::Text(t) if section.is_some() || in_major => {
                text.push_str(&t.xml10_content());
            }
            Event::GeneralRef(r) if section.is_some() || in_major => {
                if let Ok(Some(c)) = r.resolve_char_ref() {
                    text.push(c);
                }
            }
            Event::End(ref e) => match e.name().as_ref() {
                "AbstractText" => {
                    if let Some(label) = section.take() {
                        sections.push((label, std::mem::take(&mut text)));
                    }
                }
                "major" => {
                    in_major = false;
                    out.major.push(std::mem::take(&mut text).trim().to_string());
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    if out.id.is_empty() {
        return Err(format!("{origin}: no <uId id=…>"));
    }
    let part = |name: &str| {
        sections
            .iter()
            .find(|(l, _)| l == name)
            .map(|(_, t)| t.trim().to_string())
            .unwrap_or_default()
    };
    out.text = format!("{} {}", part("FINDINGS"), part("IMPRESSION"))
        .trim()
        .to_string();
    Ok(out)
}

use crate::data::prepare::sources::openi::attr;

fn label_attr(e: &quick_xml::events::BytesStart) -> Option<String> {
    attr(e, "Label")
}

/// Every report of an Open-i archive (`.tgz`) or unpacked directory, sorted by file name.
pub fn read_reports(path: &Path) -> anyhow::Result<Vec<MeshReport>> {
    let files = crate::data::prepare::sources::openi::read_xml_files(path)?;
    files
        .iter()
        .map(|(name, xml)| parse_report(xml, &format!("{}:{name}", path.display())))
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)
}

/// The observations one MeSH major term names (lower-cased heading before the first `/`,
/// qualifiers after it). Why these: they are the MeSH headings the Open-i coders used for
/// each observation's radiological sign; organ headings count only with an abnormal
/// qualifier ("Cardiac Shadow/enlarged", "Mediastinum/prominent", "Thickening/pleura").
pub fn mesh_observations(term: &str) -> Vec<Observation> {
    let lower = term.to_lowercase();
    let mut parts = lower.split('/').map(str::trim);
    let head = parts.next().unwrap_or_default();
    let quals: Vec<&str> = parts.collect();
    let has = |q: &[&str]| quals.iter().any(|w| q.contains(w));
    let enlarged = has(&["enlarged", "prominent", "widened", "wide"]);
    use Observation as O;
    match head {
        "cardiomegaly" => vec![O::Cardiomegaly],
        "cardiac shadow" | "heart" if has(&["enlarged"]) => vec![O::Cardiomegaly],
        "mediastinum" if enlarged => vec![O::EnlargedCardiomediastinum],
        "nodule" | "mass" | "cavitation" | "neoplasms" => vec![O::LungLesion],
        "opacity"
        | "airspace disease"
        | "infiltrate"
        | "density"
        | "lung diseases, interstitial" => {
            vec![O::LungOpacity]
        }
        "markings" | "lung" if has(&["interstitial"]) => vec![O::LungOpacity],
        "pulmonary edema" | "pulmonary congestion" | "edema" | "heart failure" => vec![O::Edema],
        "consolidation" => vec![O::Consolidation],
        "pneumonia" => vec![O::Pneumonia],
        "pulmonary atelectasis" => vec![O::Atelectasis],
        "pneumothorax" => vec![O::Pneumothorax],
        "hydropneumothorax" | "hemopneumothorax" => vec![O::Pneumothorax, O::PleuralEffusion],
        "pleural effusion" | "hemothorax" => vec![O::PleuralEffusion],
        "thickening" if has(&["pleura"]) => vec![O::PleuralOther],
        "pleura" => vec![O::PleuralOther],
        "fractures, bone" => vec![O::Fracture],
        "catheters, indwelling"
        | "implanted medical device"
        | "medical device"
        | "stents"
        | "surgical instruments"
        | "sutures"
        | "tube, inserted" => vec![O::SupportDevices],
        _ => vec![],
    }
}

/// The MeSH-derived positives of a report (`None` when it is coded "No Indexing").
pub fn mesh_labels(major: &[String]) -> Option<[bool; N_OBS]> {
    if major.iter().any(|t| t.eq_ignore_ascii_case("no indexing")) {
        return None;
    }
    let found: BTreeSet<Observation> = major.iter().flat_map(|t| mesh_observations(t)).collect();
    let mut out = [false; N_OBS];
    for o in &found {
        out[o.index()] = true;
    }
    out[Observation::NoFinding.index()] = !found.iter().any(|o| o.is_pathology());
    Some(out)
}

/// Per-observation agreement of the labeler's positives with the MeSH positives.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Agreement {
    /// Reports compared (with FINDINGS or IMPRESSION text, not "No Indexing").
    pub reports: usize,
    /// tp: both positive; fp: ours only; fn: MeSH only.
    pub counts: [Counts; N_OBS],
    /// MeSH positives our labeler calls uncertain (counted in `fn`).
    pub uncertain: [usize; N_OBS],
}

/// Labels every report and compares with its MeSH terms.
pub fn agreement(reports: &[MeshReport]) -> Agreement {
    let mut a = Agreement::default();
    for r in reports.iter().filter(|r| !r.text.is_empty()) {
        let Some(mesh) = mesh_labels(&r.major) else {
            continue;
        };
        a.reports += 1;
        let ours = label_report(&r.text);
        for o in Observation::ALL {
            let (k, m) = (o.index(), mesh[o.index()]);
            let c = &mut a.counts[k];
            match (ours.0[k] == Label::Positive, m) {
                (true, true) => c.tp += 1,
                (true, false) => c.fp += 1,
                (false, true) => c.fn_ += 1,
                (false, false) => {}
            }
            if m && ours.0[k] == Label::Uncertain {
                a.uncertain[k] += 1;
            }
        }
    }
    a
}

impl Agreement {
    /// Cohen's kappa of the two binary raters for observation `o`.
    pub fn kappa(&self, o: Observation) -> f64 {
        let c = self.counts[o.index()];
        let n = self.reports as f64;
        let tn = n - (c.tp + c.fp + c.fn_) as f64;
        let po = (c.tp as f64 + tn) / n;
        let ours = (c.tp + c.fp) as f64 / n;
        let mesh = (c.tp + c.fn_) as f64 / n;
        let pe = ours * mesh + (1.0 - ours) * (1.0 - mesh);
        if pe >= 1.0 {
            1.0
        } else {
            (po - pe) / (1.0 - pe)
        }
    }

    /// Micro-averaged agreement over the 14 observations.
    pub fn micro(&self) -> super::Prf {
        let t = self.counts.iter().fold(Counts::default(), |a, c| Counts {
            tp: a.tp + c.tp,
            fp: a.fp + c.fp,
            fn_: a.fn_ + c.fn_,
        });
        t.prf()
    }

    /// The Markdown table of docs/clinical-efficacy.md.
    pub fn markdown(&self) -> String {
        let mut s = String::from(
            "| observation | MeSH positives | ours positive | both | precision | recall | F1 | kappa | MeSH+, ours uncertain |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for o in Observation::ALL {
            let c = self.counts[o.index()];
            let p = c.prf();
            s.push_str(&format!(
                "| {} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.3} | {} |\n",
                o.name(),
                c.tp + c.fn_,
                c.tp + c.fp,
                c.tp,
                p.precision,
                p.recall,
                p.f1,
                self.kappa(o),
                self.uncertain[o.index()]
            ));
        }
        let m = self.micro();
        s.push_str(&format!(
            "| **micro** | | | | {:.3} | {:.3} | {:.3} | | |\n",
            m.precision, m.recall, m.f1
        ));
        s
    }
}
