//! The 14 CheXpert observations and report-level labels (positive / negative / uncertain /
//! blank), as the CheXpert labeler defines them (Irvin et al., AAAI 2019, Table 1 and §3):
//! * an observation's label aggregates its mentions: any positive mention → positive, else
//!   any uncertain → uncertain, else any negative → negative, else blank (not mentioned);
//! * "No Finding" is positive when no pathology (every observation but "No Finding" and
//!   "Support Devices") is positive or uncertain, and blank otherwise.

use serde::Serialize;

use super::labeler::{mentions, Certainty, Finding, Kind, Mention};

/// One CheXpert observation; the order is CheXpert's column order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Observation {
    NoFinding,
    EnlargedCardiomediastinum,
    Cardiomegaly,
    LungLesion,
    LungOpacity,
    Edema,
    Consolidation,
    Pneumonia,
    Atelectasis,
    Pneumothorax,
    PleuralEffusion,
    PleuralOther,
    Fracture,
    SupportDevices,
}

/// Number of observations.
pub const N_OBS: usize = 14;

impl Observation {
    /// All observations in CheXpert's column order.
    pub const ALL: [Observation; N_OBS] = [
        Observation::NoFinding,
        Observation::EnlargedCardiomediastinum,
        Observation::Cardiomegaly,
        Observation::LungLesion,
        Observation::LungOpacity,
        Observation::Edema,
        Observation::Consolidation,
        Observation::Pneumonia,
        Observation::Atelectasis,
        Observation::Pneumothorax,
        Observation::PleuralEffusion,
        Observation::PleuralOther,
        Observation::Fracture,
        Observation::SupportDevices,
    ];

    /// CheXpert's column name ("Pleural Effusion").
    pub fn name(self) -> &'static str {
        match self {
            Observation::NoFinding => "No Finding",
            Observation::EnlargedCardiomediastinum => "Enlarged Cardiomediastinum",
            Observation::Cardiomegaly => "Cardiomegaly",
            Observation::LungLesion => "Lung Lesion",
            Observation::LungOpacity => "Lung Opacity",
            Observation::Edema => "Edema",
            Observation::Consolidation => "Consolidation",
            Observation::Pneumonia => "Pneumonia",
            Observation::Atelectasis => "Atelectasis",
            Observation::Pneumothorax => "Pneumothorax",
            Observation::PleuralEffusion => "Pleural Effusion",
            Observation::PleuralOther => "Pleural Other",
            Observation::Fracture => "Fracture",
            Observation::SupportDevices => "Support Devices",
        }
    }

    /// The observation with this column name.
    pub fn from_name(name: &str) -> Option<Observation> {
        Observation::ALL.into_iter().find(|o| o.name() == name)
    }

    /// Position in [`Observation::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Whether it is a pathology (every observation but "No Finding" and "Support Devices").
    pub fn is_pathology(self) -> bool {
        !matches!(self, Observation::NoFinding | Observation::SupportDevices)
    }
}

impl Kind {
    /// The CheXpert observation a finding kind counts toward (`None`: granuloma,
    /// hyperinflation and sternotomy, which are none of the 14).
    pub fn observation(self) -> Option<Observation> {
        Some(match self {
            Kind::WideMediastinum => Observation::EnlargedCardiomediastinum,
            Kind::Cardiomegaly => Observation::Cardiomegaly,
            Kind::Nodule => Observation::LungLesion,
            Kind::Opacity => Observation::LungOpacity,
            Kind::Edema => Observation::Edema,
            Kind::Consolidation => Observation::Consolidation,
            Kind::Pneumonia => Observation::Pneumonia,
            Kind::Atelectasis => Observation::Atelectasis,
            Kind::Pneumothorax => Observation::Pneumothorax,
            Kind::Effusion => Observation::PleuralEffusion,
            Kind::PleuralThickening => Observation::PleuralOther,
            Kind::Fracture => Observation::Fracture,
            Kind::Line | Kind::Pacemaker | Kind::Device => Observation::SupportDevices,
            // Sternotomy wires are a post-surgical finding, not a support device: the IU
            // coders never code them as a device (docs/clinical-efficacy.md).
            Kind::Granuloma | Kind::Hyperinflation | Kind::Sternotomy => return None,
        })
    }
}

/// A report-level label. CheXpert writes them as 1, 0, −1 and an empty cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Label {
    #[default]
    Blank,
    Negative,
    Uncertain,
    Positive,
}

impl Label {
    /// CheXpert's code: Some(1), Some(0), Some(-1), or None for blank.
    pub fn code(self) -> Option<i8> {
        match self {
            Label::Positive => Some(1),
            Label::Negative => Some(0),
            Label::Uncertain => Some(-1),
            Label::Blank => None,
        }
    }

    /// The label with this CheXpert code (`null` → blank); other values are not labels.
    pub fn from_code(code: Option<i64>) -> Option<Label> {
        match code {
            Some(1) => Some(Label::Positive),
            Some(0) => Some(Label::Negative),
            Some(-1) => Some(Label::Uncertain),
            None => Some(Label::Blank),
            _ => None,
        }
    }
}

/// The 14 labels of one report, indexed by [`Observation::index`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Labels(pub [Label; N_OBS]);

impl Labels {
    pub fn get(&self, o: Observation) -> Label {
        self.0[o.index()]
    }

    /// The observations labelled positive.
    pub fn positives(&self) -> Vec<Observation> {
        Observation::ALL
            .into_iter()
            .filter(|o| self.get(*o) == Label::Positive)
            .collect()
    }

    /// `{"No Finding": 1, "Cardiomegaly": null, …}` in CheXpert's column order.
    pub fn to_json(&self) -> serde_json::Value {
        let map: serde_json::Map<String, serde_json::Value> = Observation::ALL
            .into_iter()
            .map(|o| (o.name().to_string(), self.get(o).code().into()))
            .collect();
        serde_json::Value::Object(map)
    }

    /// Sets "No Finding" from the other labels: `yes` when no pathology is positive or
    /// uncertain, else blank.
    fn set_no_finding(&mut self, yes: Label) {
        let abnormal = Observation::ALL
            .into_iter()
            .filter(|o| o.is_pathology())
            .any(|o| matches!(self.get(o), Label::Positive | Label::Uncertain));
        self.0[Observation::NoFinding.index()] = if abnormal { Label::Blank } else { yes };
    }
}

/// The labels of a list of mentions (aggregation rules in the module docs).
pub fn label_mentions(mentions: &[Mention]) -> Labels {
    let mut labels = Labels::default();
    for m in mentions {
        let Some(o) = m.kind.observation() else {
            continue;
        };
        let label = match m.certainty {
            Certainty::Positive => Label::Positive,
            Certainty::Uncertain => Label::Uncertain,
            Certainty::Negative => Label::Negative,
        };
        // Positive > Uncertain > Negative > Blank is the enum's order.
        let slot = &mut labels.0[o.index()];
        *slot = (*slot).max(label);
    }
    labels.set_no_finding(Label::Positive);
    labels
}

/// The CheXpert-style labels of a report's text.
pub fn label_report(report: &str) -> Labels {
    label_mentions(&mentions(report))
}

/// The labels of what a phantom shows: every observation of a drawn finding positive, every
/// other observation negative (the picture does not show it), "No Finding" positive exactly
/// when no pathology was drawn.
pub fn labels_of_findings(findings: &[Finding]) -> Labels {
    let mut labels = Labels([Label::Negative; N_OBS]);
    for o in findings.iter().filter_map(|f| f.kind.observation()) {
        labels.0[o.index()] = Label::Positive;
    }
    labels.set_no_finding(Label::Positive);
    if labels.get(Observation::NoFinding) == Label::Blank {
        labels.0[Observation::NoFinding.index()] = Label::Negative;
    }
    labels
}
