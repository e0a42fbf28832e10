//! The dataset vocabulary every layer shares: which dataset ([`Dataset`]) and which split
//! ([`Split`]). One type each, so that config, prepare, the loader, evaluation and the trainer
//! pass a value the compiler checks instead of a string (`"train"`, `"iu_xray"`).
//!
//! On disk and on the command line they keep their lowercase names (`iu_xray`, `mimic_cxr`;
//! `train`, `val`, `test`), through serde, clap and `Display`.

use serde::{Deserialize, Serialize};

/// The two dataset conventions (R2Gen's IU X-Ray and MIMIC-CXR): each has its own report
/// cleaner (`data::text`), default vocabulary threshold and views per study.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Dataset {
    #[default]
    IuXray,
    MimicCxr,
}

impl Dataset {
    /// The name used in config files, vocab.json and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Dataset::IuXray => "iu_xray",
            Dataset::MimicCxr => "mimic_cxr",
        }
    }

    /// The minimum train-split count of a kept token in the published runs (SPEC §1).
    pub fn default_threshold(self) -> usize {
        match self {
            Dataset::IuXray => 3,
            Dataset::MimicCxr => 10,
        }
    }

    /// Image views per study in the published runs: IU X-Ray frontal + lateral (R2Gen,
    /// R2GenCMN), MIMIC-CXR one frontal view.
    pub fn default_views(self) -> usize {
        match self {
            Dataset::IuXray => 2,
            Dataset::MimicCxr => 1,
        }
    }
}

impl std::fmt::Display for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Dataset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "iu_xray" => Ok(Dataset::IuXray),
            "mimic_cxr" => Ok(Dataset::MimicCxr),
            other => Err(format!(
                "unknown dataset {other:?} (expected iu_xray or mimic_cxr)"
            )),
        }
    }
}

/// The three splits, in output order.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    /// The name in the manifest, the metrics log (`kind`) and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }

    /// Accepts the spellings of the source layouts (`validate` is MIMIC's name for val); for
    /// reading sources, not for the command line, which takes exactly `train`, `val`, `test`.
    pub fn parse(s: &str) -> Option<Split> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" => Some(Split::Train),
            "val" | "valid" | "validate" | "validation" => Some(Split::Val),
            "test" => Some(Split::Test),
            _ => None,
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Split {
    type Err = String;
    /// Exactly `train`, `val` or `test`.
    fn from_str(s: &str) -> Result<Self, String> {
        Split::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| format!("unknown split {s:?} (train, val or test)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde_clap_and_fromstr() {
        for s in Split::ALL {
            assert_eq!(s.name().parse::<Split>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
            let v = <Split as clap::ValueEnum>::to_possible_value(&s).unwrap();
            assert_eq!(v.get_name(), s.name());
        }
        assert!("nope".parse::<Split>().is_err());
        assert!("validation".parse::<Split>().is_err());
        assert_eq!(Split::parse("Validation"), Some(Split::Val));
        for d in [Dataset::IuXray, Dataset::MimicCxr] {
            assert_eq!(d.name().parse::<Dataset>().unwrap(), d);
            assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{d}\""));
        }
        assert!("chexpert".parse::<Dataset>().is_err());
    }
}
