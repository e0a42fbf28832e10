//! A small rule-based reader of chest X-ray reports: sentence → findings, with negation.
//!
//! It exists so the phantom renderer can draw what a report says (an enlarged heart for
//! "cardiomegaly", a blunted angle for "small left effusion") and *not* draw what it denies
//! ("no effusion", "without pneumothorax", "negative for consolidation", "lungs are clear").
//! It is deliberately simple and predictable, in the spirit of NegEx: a report is split into
//! sentences, each sentence into lower-case words; a finding term is negated when a
//! negation trigger precedes it in the same clause (a clause ends at "but", "however", …), or
//! when a post-negation ("is not seen", "resolved") follows it. Laterality, zone and severity
//! are read from the words of the finding's clause. The reader is pure and deterministic.

use serde::Serialize;

/// What a phantom can show. Order is the drawing order (devices last, on top).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Hyperinflation,
    Cardiomegaly,
    Edema,
    Effusion,
    Pneumothorax,
    Consolidation,
    Atelectasis,
    Nodule,
    Granuloma,
    Sternotomy,
    Line,
    Pacemaker,
}

/// Which lung a finding is in, as the report says it (patient's side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Unspecified,
    Left,
    Right,
    Both,
}

/// Vertical lung zone named by the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Zone {
    Unspecified,
    Upper,
    Middle,
    Lower,
}

/// How strongly the report states a finding ("mild", "moderate", "large").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Mild,
    Moderate,
    Severe,
}

impl Severity {
    /// Scale factor the renderer applies to sizes and densities.
    pub fn factor(self) -> f32 {
        match self {
            Severity::Mild => 0.6,
            Severity::Moderate => 1.0,
            Severity::Severe => 1.45,
        }
    }
}

/// One positive (non-negated) finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Finding {
    pub kind: Kind,
    pub side: Side,
    pub zone: Zone,
    pub severity: Severity,
}

impl Finding {
    /// A finding with unspecified side/zone and moderate severity (handy in tests and demos).
    pub fn plain(kind: Kind) -> Finding {
        Finding {
            kind,
            side: Side::Unspecified,
            zone: Zone::Unspecified,
            severity: Severity::Moderate,
        }
    }
}

/// Words that start a negation scope reaching to the end of the clause.
const PRE_NEGATIONS: &[&[&str]] = &[
    &["no"],
    &["not"],
    &["without"],
    &["negative", "for"],
    &["free", "of"],
    &["clear"],
    &["absence", "of"],
    &["resolution", "of"],
    &["rather", "than"],
    &["nor"],
];
/// Words that negate the findings *before* them in the same clause.
const POST_NEGATIONS: &[&[&str]] = &[
    &["not", "seen"],
    &["not", "identified"],
    &["not", "present"],
    &["not", "visualized"],
    &["absent"],
    &["resolved"],
    &["has", "resolved"],
    &["ruled", "out"],
    &["excluded"],
];
/// Phrases that look like negations but are not ("no interval change in the effusion").
const PSEUDO_NEGATIONS: &[&[&str]] = &[
    &["no", "change"],
    &["no", "interval", "change"],
    &["no", "significant", "change"],
    &["not", "changed"],
    &["not", "significantly", "changed"],
];
/// Words that end a clause, and so a negation scope.
const TERMINATORS: &[&str] = &[
    "but", "however", "although", "though", "except", "aside", "apart", "which", "whereas",
];

/// Finding vocabulary: word sequences (a `*` suffix matches any word with that prefix).
const TERMS: &[(Kind, &[&str])] = &[
    (Kind::Cardiomegaly, &["cardiomegaly"]),
    (Kind::Cardiomegaly, &["enlarged", "heart"]),
    (Kind::Cardiomegaly, &["enlarged", "cardiac"]),
    (Kind::Cardiomegaly, &["heart", "is", "enlarged"]),
    (Kind::Cardiomegaly, &["heart", "size", "is", "enlarged"]),
    (
        Kind::Cardiomegaly,
        &["heart", "size", "is", "mildly", "enlarged"],
    ),
    (Kind::Cardiomegaly, &["heart", "size", "mildly", "enlarged"]),
    (Kind::Cardiomegaly, &["heart", "is", "mildly", "enlarged"]),
    (Kind::Cardiomegaly, &["silhouette", "is", "enlarged"]),
    (Kind::Cardiomegaly, &["heart", "size", "is", "increased"]),
    (Kind::Effusion, &["effusion*"]),
    (Kind::Effusion, &["pleural", "fluid"]),
    (Kind::Pneumothorax, &["pneumothora*"]),
    (Kind::Consolidation, &["consolidat*"]),
    (Kind::Consolidation, &["opacit*"]),
    (Kind::Consolidation, &["pneumonia*"]),
    (Kind::Consolidation, &["airspace"]),
    (Kind::Consolidation, &["air", "space"]),
    (Kind::Consolidation, &["infiltrat*"]),
    (Kind::Atelectasis, &["atelecta*"]),
    (Kind::Edema, &["edema"]),
    (Kind::Edema, &["vascular", "congestion"]),
    (Kind::Nodule, &["nodul*"]),
    (Kind::Nodule, &["mass"]),
    (Kind::Nodule, &["masses"]),
    (Kind::Granuloma, &["granulom*"]),
    (Kind::Pacemaker, &["pacemaker*"]),
    (Kind::Pacemaker, &["pacer"]),
    (Kind::Pacemaker, &["defibrillator"]),
    (Kind::Pacemaker, &["aicd"]),
    (Kind::Sternotomy, &["sternotomy"]),
    (Kind::Sternotomy, &["sternal", "wires"]),
    (Kind::Sternotomy, &["cabg"]),
    (Kind::Line, &["catheter*"]),
    (Kind::Line, &["picc"]),
    (Kind::Line, &["mediport"]),
    (Kind::Line, &["port"]),
    (Kind::Line, &["central", "line"]),
    (Kind::Line, &["venous", "line"]),
    (Kind::Line, &["tube"]),
    (Kind::Line, &["tubes"]),
    (Kind::Hyperinflation, &["hyperinflat*"]),
    (Kind::Hyperinflation, &["hyperexpan*"]),
    (Kind::Hyperinflation, &["emphysem*"]),
    (Kind::Hyperinflation, &["copd"]),
];

/// Reads a whole report. Findings are deduplicated and sorted; an empty list means "normal".
pub fn read_report(report: &str) -> Vec<Finding> {
    let mut out: Vec<Finding> = report
        .split(['.', '?', '!', '\n'])
        .flat_map(read_sentence)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Reads one sentence.
pub fn read_sentence(sentence: &str) -> Vec<Finding> {
    let words = tokenize(sentence);
    let clauses = clause_ids(&words);
    let mut found = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let Some((kind, len)) = match_term(&words, i) else {
            i += 1;
            continue;
        };
        // "pericardial effusion" is not pleural fluid; the phantom has nothing to draw for it.
        let pericardial = kind == Kind::Effusion && i > 0 && words[i - 1] == "pericardial";
        if !pericardial && !is_negated(&words, &clauses, i, len) {
            let clause: Vec<&str> = (0..words.len())
                .filter(|&j| clauses[j] == clauses[i])
                .map(|j| words[j].as_str())
                .collect();
            found.push(Finding {
                kind,
                side: side_of(&clause),
                zone: zone_of(&clause),
                severity: severity_of(&clause),
            });
        }
        i += len;
    }
    found
}

/// Lower-case words of letters, digits and inner hyphens; everything else separates words,
/// except that a comma or semicolon is kept as its own token so clause logic can see it.
fn tokenize(sentence: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    for ch in sentence.chars() {
        if ch.is_alphanumeric() || (ch == '-' && !cur.is_empty()) {
            cur.extend(ch.to_lowercase());
        } else {
            if !cur.is_empty() {
                words.push(std::mem::take(&mut cur));
            }
            if ch == ';' {
                words.push(";".to_string());
            }
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// Clause number of every word: a terminator word or `;` starts a new clause.
fn clause_ids(words: &[String]) -> Vec<usize> {
    let mut id = 0;
    words
        .iter()
        .map(|w| {
            if w == ";" || TERMINATORS.contains(&w.as_str()) {
                id += 1;
            }
            id
        })
        .collect()
}

fn word_matches(pattern: &str, word: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => word.starts_with(prefix),
        None => pattern == word,
    }
}

fn phrase_at(words: &[String], i: usize, phrase: &[&str]) -> bool {
    i + phrase.len() <= words.len()
        && phrase
            .iter()
            .zip(&words[i..])
            .all(|(p, w)| word_matches(p, w))
}

/// The longest finding term starting at word `i`, as (kind, number of words).
fn match_term(words: &[String], i: usize) -> Option<(Kind, usize)> {
    TERMS
        .iter()
        .filter(|(_, phrase)| phrase_at(words, i, phrase))
        .max_by_key(|(_, phrase)| phrase.len())
        .map(|(kind, phrase)| (*kind, phrase.len()))
}

fn any_phrase_at(words: &[String], i: usize, phrases: &[&[&str]]) -> Option<usize> {
    phrases
        .iter()
        .filter(|p| phrase_at(words, i, p))
        .map(|p| p.len())
        .max()
}

/// Whether the term at `start..start+len` lies in a negation scope of its clause.
fn is_negated(words: &[String], clauses: &[usize], start: usize, len: usize) -> bool {
    let clause = clauses[start];
    let in_clause = |j: usize| clauses[j] == clause;
    let pre = (0..start).filter(|&j| in_clause(j)).any(|j| {
        any_phrase_at(words, j, PRE_NEGATIONS).is_some()
            && any_phrase_at(words, j, PSEUDO_NEGATIONS).is_none()
    });
    let post = (start + len..words.len())
        .filter(|&j| in_clause(j))
        .any(|j| any_phrase_at(words, j, POST_NEGATIONS).is_some());
    pre || post
}

fn side_of(clause: &[&str]) -> Side {
    let both = clause
        .iter()
        .any(|w| matches!(*w, "bilateral" | "bilaterally" | "both") || w.starts_with("bibas"));
    let left = clause
        .iter()
        .any(|w| matches!(*w, "left" | "lingula" | "lingular"));
    let right = clause.contains(&"right");
    match (both || (left && right), left, right) {
        (true, _, _) => Side::Both,
        (false, true, false) => Side::Left,
        (false, false, true) => Side::Right,
        _ => Side::Unspecified,
    }
}

fn zone_of(clause: &[&str]) -> Zone {
    let has = |set: &[&str]| {
        clause
            .iter()
            .any(|w| set.iter().any(|p| word_matches(p, w)))
    };
    if has(&[
        "lower",
        "base",
        "bases",
        "basilar",
        "basal",
        "bibas*",
        "costophrenic",
        "retrocardiac",
    ]) {
        Zone::Lower
    } else if has(&["upper", "apex", "apices", "apical", "apic*"]) {
        Zone::Upper
    } else if has(&[
        "mid",
        "middle",
        "midlung",
        "lingula*",
        "perihilar",
        "hilar",
        "midzone",
    ]) {
        Zone::Middle
    } else {
        Zone::Unspecified
    }
}

fn severity_of(clause: &[&str]) -> Severity {
    let has = |set: &[&str]| clause.iter().any(|w| set.contains(w));
    if has(&[
        "large",
        "severe",
        "marked",
        "markedly",
        "massive",
        "extensive",
        "moderate-to-large",
    ]) {
        Severity::Severe
    } else if has(&[
        "mild",
        "mildly",
        "minimal",
        "small",
        "trace",
        "tiny",
        "borderline",
        "slight",
        "slightly",
        "subtle",
    ]) {
        Severity::Mild
    } else {
        Severity::Moderate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(report: &str) -> Vec<Kind> {
        let mut k: Vec<Kind> = read_report(report).iter().map(|f| f.kind).collect();
        k.dedup();
        k
    }

    #[test]
    fn normal_iu_reports_have_no_findings() {
        // Sentences taken from data/iu_xray/annotation.json (typical normal studies).
        for r in [
            "The heart is normal in size. The mediastinum is unremarkable. The lungs are clear.",
            "No pneumothorax, pleural effusion, or focal airspace disease.",
            "The lungs are normally inflated without evidence of focal airspace disease, pleural effusion, or pneumothorax.",
            "No focal alveolar consolidation, no definite pleural effusion seen.",
            "There is no pleural line to suggest pneumothorax or costophrenic XXXX blunting to suggest large pleural effusion.",
            "Negative for focal consolidation. Clear lungs without pneumothorax or pleural effusion.",
            "No pneumonia, effusions, edema, pneumothorax, adenopathy, nodules or masses.",
            "No typical findings of pulmonary edema. The lungs are free of focal airspace disease.",
        ] {
            assert_eq!(read_report(r), vec![], "{r}");
        }
    }

    #[test]
    fn positive_findings_with_side_zone_and_severity() {
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
        assert_eq!(f.len(), 1);
        assert_eq!(
            (f[0].kind, f[0].side, f[0].zone),
            (Kind::Granuloma, Side::Right, Zone::Lower)
        );
        let f = read_report("Large bilateral effusions.");
        assert_eq!((f[0].side, f[0].severity), (Side::Both, Severity::Severe));
        assert_eq!(read_report("Bibasilar atelectasis.")[0].side, Side::Both);
    }

    #[test]
    fn negation_scope_ends_at_clause_boundary() {
        assert_eq!(
            kinds("No pneumothorax, but there is a small right effusion."),
            vec![Kind::Effusion]
        );
        assert_eq!(kinds("Heart is not enlarged."), vec![]);
        assert_eq!(
            kinds("The heart size is enlarged."),
            vec![Kind::Cardiomegaly]
        );
        assert_eq!(kinds("Pneumothorax is not seen."), vec![]);
        assert_eq!(
            kinds("The previously seen left effusion has resolved."),
            vec![]
        );
        assert_eq!(
            kinds("No interval change in the left lower lobe opacity."),
            vec![Kind::Consolidation]
        );
        // Negation does not leak into the next sentence.
        assert_eq!(
            kinds("No effusion. Right upper lobe pneumonia."),
            vec![Kind::Consolidation]
        );
    }

    #[test]
    fn pericardial_effusion_is_not_pleural() {
        assert_eq!(
            kinds("Cardiomegaly and/or pericardial effusion."),
            vec![Kind::Cardiomegaly]
        );
    }

    #[test]
    fn devices_are_recognised() {
        assert_eq!(
            kinds("Left-sided pacemaker. Median sternotomy. Right PICC line with tip in the SVC."),
            vec![Kind::Sternotomy, Kind::Line, Kind::Pacemaker]
        );
        // "pleural line" / "midline" / "septal lines" are not tubes.
        assert_eq!(kinds("Trachea is midline. A few septal lines."), vec![]);
    }
}
