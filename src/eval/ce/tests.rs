//! Labeler and CE-score unit tests. Report sentences are IU X-Ray wording
//! (data/iu_xray/annotation.json) unless marked otherwise.

use super::labeler::{Severity, Side, Zone};
use super::*;

fn kinds(report: &str) -> Vec<Kind> {
    let mut k: Vec<Kind> = read_report(report).iter().map(|f| f.kind).collect();
    k.dedup();
    k
}

fn label(report: &str, o: Observation) -> Label {
    label_report(report).get(o)
}

#[test]
fn normal_iu_reports_have_no_positive_findings() {
    for r in [
        "The heart is normal in size. The mediastinum is unremarkable. The lungs are clear.",
        "No pneumothorax, pleural effusion, or focal airspace disease.",
        "The lungs are normally inflated without evidence of focal airspace disease, pleural effusion, or pneumothorax.",
        "No focal alveolar consolidation, no definite pleural effusion seen.",
        "There is no pleural line to suggest pneumothorax or costophrenic XXXX blunting to suggest large pleural effusion.",
        "Negative for focal consolidation. Clear lungs without pneumothorax or pleural effusion.",
        "No pneumonia, effusions, edema, pneumothorax, adenopathy, nodules or masses.",
        "No typical findings of pulmonary edema. The lungs are free of focal airspace disease.",
        "The cardiomediastinal silhouette is within normal limits for size and contour.",
    ] {
        assert_eq!(read_report(r), vec![], "{r}");
        let labels = label_report(r);
        assert_eq!(labels.positives(), vec![Observation::NoFinding], "{r}");
    }
}

#[test]
fn negation_gives_negative_labels() {
    let r = "No pleural effusion. No pneumothorax.";
    assert_eq!(label(r, Observation::PleuralEffusion), Label::Negative);
    assert_eq!(label(r, Observation::Pneumothorax), Label::Negative);
    assert_eq!(label(r, Observation::Edema), Label::Blank);
    assert_eq!(label(r, Observation::NoFinding), Label::Positive);
    assert_eq!(
        label("Heart size is normal.", Observation::Cardiomegaly),
        Label::Negative
    );
    assert_eq!(
        label("Heart is not enlarged.", Observation::Cardiomegaly),
        Label::Negative
    );
    assert_eq!(
        label("Pneumothorax is not seen.", Observation::Pneumothorax),
        Label::Negative
    );
    assert_eq!(
        label(
            "The previously seen left effusion has resolved.",
            Observation::PleuralEffusion
        ),
        Label::Negative
    );
    // An organ named without a verdict is not a mention at all.
    assert_eq!(
        label("The heart size is stable.", Observation::Cardiomegaly),
        Label::Blank
    );
}

#[test]
fn uncertainty_gives_uncertain_labels() {
    for (r, o) in [
        (
            "Left basilar opacity may represent atelectasis.",
            Observation::Atelectasis,
        ),
        (
            "Possible right lower lobe pneumonia.",
            Observation::Pneumonia,
        ),
        (
            "A small left effusion cannot be excluded.",
            Observation::PleuralEffusion,
        ),
        (
            "Findings suspicious for pulmonary edema.",
            Observation::Edema,
        ),
        (
            "Atelectasis versus consolidation.",
            Observation::Consolidation,
        ),
        (
            "Atelectasis versus consolidation.",
            Observation::Atelectasis,
        ),
        ("Pneumonia is not excluded.", Observation::Pneumonia),
    ] {
        assert_eq!(label(r, o), Label::Uncertain, "{r}: {o:?}");
    }
    // The opacity itself is stated: positive; "No Finding" is blocked by the uncertain one.
    let r = "Left basilar opacity may represent atelectasis.";
    assert_eq!(label(r, Observation::LungOpacity), Label::Positive);
    assert_eq!(label(r, Observation::NoFinding), Label::Blank);
    // Negation wins over plain uncertainty; "no change" is not a negation.
    assert_eq!(
        label("No findings to suggest pneumonia.", Observation::Pneumonia),
        Label::Negative
    );
    assert_eq!(
        label(
            "No interval change in the left lower lobe opacity.",
            Observation::LungOpacity
        ),
        Label::Positive
    );
}

#[test]
fn no_finding_is_positive_only_without_pathology() {
    assert_eq!(
        label("Normal chest. No acute disease.", Observation::NoFinding),
        Label::Positive
    );
    // Devices and non-CheXpert findings (granuloma) do not block "No Finding".
    let r = "Left-sided pacemaker. Calcified granuloma in the right upper lobe. Lungs are clear.";
    assert_eq!(
        label_report(r).positives(),
        vec![Observation::NoFinding, Observation::SupportDevices]
    );
    // One positive pathology does.
    let r = "Mild cardiomegaly. Lungs are clear.";
    assert_eq!(label_report(r).positives(), vec![Observation::Cardiomegaly]);
    // A report that mentions nothing gets "No Finding" (CheXpert's rule: no pathology).
    assert_eq!(label_report("").positives(), vec![Observation::NoFinding]);
}

#[test]
fn multi_sentence_reports_keep_each_sentence_apart() {
    let r = "The heart is enlarged. There is a small right pleural effusion. No pneumothorax. \
             Left basilar atelectasis versus scarring. Right PICC line in the SVC.";
    let l = label_report(r);
    assert_eq!(
        l.positives(),
        vec![
            Observation::Cardiomegaly,
            Observation::PleuralEffusion,
            Observation::SupportDevices
        ]
    );
    assert_eq!(l.get(Observation::Pneumothorax), Label::Negative);
    assert_eq!(l.get(Observation::Atelectasis), Label::Uncertain);
    // Negation does not leak into the next sentence, nor past "but".
    assert_eq!(
        kinds("No effusion. Right upper lobe pneumonia."),
        vec![Kind::Pneumonia]
    );
    assert_eq!(
        kinds("No pneumothorax, but there is a small right effusion."),
        vec![Kind::Effusion]
    );
    // Positive beats negative for the same observation across sentences.
    assert_eq!(
        label(
            "No right effusion. Small left effusion.",
            Observation::PleuralEffusion
        ),
        Label::Positive
    );
}

#[test]
fn positive_findings_carry_side_zone_and_severity() {
    let f = read_report("Small left pleural effusion. Mild cardiomegaly.");
    assert_eq!(
        f,
        vec![
            Finding {
                kind: Kind::Cardiomegaly,
                side: Side::Unspecified,
                zone: Zone::Unspecified,
                severity: Severity::Mild
            },
            Finding {
                kind: Kind::Effusion,
                side: Side::Left,
                zone: Zone::Unspecified,
                severity: Severity::Mild
            },
        ]
    );
    let f = read_report("There is a calcified granuloma in the right lung base.");
    assert_eq!(
        (f[0].kind, f[0].side, f[0].zone),
        (Kind::Granuloma, Side::Right, Zone::Lower)
    );
    let f = read_report("Large bilateral effusions.");
    assert_eq!((f[0].side, f[0].severity), (Side::Both, Severity::Severe));
    assert_eq!(read_report("Bibasilar atelectasis.")[0].side, Side::Both);
    assert_eq!(
        kinds("The heart size is mildly enlarged."),
        vec![Kind::Cardiomegaly]
    );
}

#[test]
fn lookalike_phrases_are_not_findings() {
    // "pericardial effusion" is not pleural fluid; "pleural line", "midline" are not tubes.
    assert_eq!(
        kinds("Cardiomegaly and/or pericardial effusion."),
        vec![Kind::Cardiomegaly]
    );
    assert_eq!(kinds("Trachea is midline. A few septal lines."), vec![]);
    assert_eq!(kinds("Decreased bone density."), vec![]);
}

#[test]
fn devices_are_support_devices() {
    assert_eq!(
        kinds("Left-sided pacemaker. Median sternotomy. Right PICC line with tip in the SVC."),
        vec![Kind::Sternotomy, Kind::Line, Kind::Pacemaker]
    );
    assert_eq!(
        label(
            "Surgical clips in the right upper quadrant.",
            Observation::SupportDevices
        ),
        Label::Positive
    );
    assert_eq!(
        label(
            "The pacemaker has been removed.",
            Observation::SupportDevices
        ),
        Label::Negative
    );
}

#[test]
fn scores_follow_scikit_learn_on_a_small_corpus() {
    // Hand-computed: refs positives {Card, Eff}, {Eff}, {NF}; hyps {Card, Eff}, {NF}, {NF}.
    let refs = [
        "Cardiomegaly. Small left effusion.",
        "Small left effusion.",
        "Normal chest.",
    ]
    .map(label_report);
    let hyps = ["Cardiomegaly. Left effusion.", "Normal.", "Normal."].map(label_report);
    let s = ce_scores(&refs, &hyps);
    let c = |o: Observation| s.counts[o.index()];
    assert_eq!(
        (
            c(Observation::Cardiomegaly).tp,
            c(Observation::Cardiomegaly).fp
        ),
        (1, 0)
    );
    let eff = c(Observation::PleuralEffusion);
    assert_eq!((eff.tp, eff.fp, eff.fn_), (1, 0, 1));
    let nf = c(Observation::NoFinding);
    assert_eq!((nf.tp, nf.fp, nf.fn_), (1, 1, 0));
    // micro: tp 3, fp 1, fn 1.
    assert!((s.summary.micro.precision - 0.75).abs() < 1e-12);
    assert!((s.summary.micro.recall - 0.75).abs() < 1e-12);
    assert!((s.summary.micro.f1 - 0.75).abs() < 1e-12);
    // findings (no NF): tp 2, fp 0, fn 1.
    assert!((s.summary.findings.f1 - 0.8).abs() < 1e-12);
    // macro: per-class F1 Card 1, Eff 2/3, NF 2/3, the other 11 classes 0 (0/0 → 0).
    assert!((s.summary.macro_.f1 - (1.0 + 2.0 / 3.0 + 2.0 / 3.0) / 14.0).abs() < 1e-12);
}
