//! The names a run can monitor (`train.monitor_metric`) and the optimizer's learning-rate groups
//! (`train.lr_ve`, `train.lr_ed`): typed once, at deserialisation, so later code compares values
//! instead of strings or positions.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Declares [`Metric`]: one line per metric, `Variant => "name in scores and config files"`.
/// Adding a metric (e.g. a clinical-efficacy score) is one more line here, plus the code that
/// computes it.
macro_rules! metrics {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)+) => {
        /// A validation score that can select the best model, named as in `scores.json` and
        /// `metrics.jsonl` (pycocoevalcap's keys and the clinical-efficacy keys).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Metric {
            $($(#[$doc])* $variant,)+
        }

        impl Metric {
            /// Every metric, in the order error messages list them.
            pub const ALL: &'static [Metric] = &[$(Metric::$variant,)+];

            /// The name in config files, `scores.json` and `metrics.jsonl`.
            pub fn name(self) -> &'static str {
                match self {
                    $(Metric::$variant => $name,)+
                }
            }
        }
    };
}

metrics! {
    Bleu1 => "BLEU_1",
    Bleu2 => "BLEU_2",
    Bleu3 => "BLEU_3",
    /// The published runs' choice.
    Bleu4 => "BLEU_4",
    Meteor => "METEOR",
    RougeL => "ROUGE_L",
    Cider => "CIDEr",
    /// Clinical efficacy (crate::eval::ce::CeSummary::entries): micro/macro precision, recall
    /// and F1 over the 14 CheXpert observations, and micro-F1 over the 13 findings.
    CeMicroP => "CE_P_micro",
    CeMicroR => "CE_R_micro",
    CeMicroF1 => "CE_F1_micro",
    CeMacroP => "CE_P_macro",
    CeMacroR => "CE_R_macro",
    CeMacroF1 => "CE_F1_macro",
    CeFindingsF1 => "CE_F1_findings",
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Metric {
    type Err = String;
    fn from_str(s: &str) -> Result<Metric, String> {
        Metric::ALL
            .iter()
            .copied()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
                format!("must be one of {names:?}, got {s:?}")
            })
    }
}

impl Serialize for Metric {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Metric {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Metric, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The optimizer's two learning-rate groups (the reference's two Adam parameter groups): the
/// visual extractor (`train.lr_ve`) and everything else, encoder-decoder and memory
/// (`train.lr_ed`). A group's index is its position in the optimizer's and the checkpoint's
/// `lrs` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LrGroup {
    VisualExtractor = 0,
    EncoderDecoder = 1,
}

impl LrGroup {
    /// Every group, in index order.
    pub const ALL: [LrGroup; 2] = [LrGroup::VisualExtractor, LrGroup::EncoderDecoder];

    /// Position in the optimizer's rate list.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The key of the base rate under `[train]`, also the field of `metrics.jsonl`'s train
    /// lines that logs the current rate.
    pub fn key(self) -> &'static str {
        match self {
            LrGroup::VisualExtractor => "lr_ve",
            LrGroup::EncoderDecoder => "lr_ed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_round_trip_and_unknown_ones_are_listed() {
        for &m in Metric::ALL {
            assert_eq!(m.name().parse::<Metric>().unwrap(), m);
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(serde_json::from_str::<Metric>(&json).unwrap(), m);
        }
        let e = "BLEU_5".parse::<Metric>().unwrap_err();
        assert!(
            e.contains("\"CIDEr\"") && e.ends_with("got \"BLEU_5\""),
            "{e}"
        );
        assert_eq!(LrGroup::ALL.map(LrGroup::index), [0, 1]);
    }
}
