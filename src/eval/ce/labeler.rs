//! The rule-based report reader: sentence → mentions of findings, each positive, negative or
//! uncertain, with side, zone and severity.
//!
//! Design (after the CheXpert labeler, Irvin et al. 2019, and NegEx, Chapman et al. 2001):
//! a report is split into sentences, a sentence into lower-case words and clauses (a clause
//! ends at "but", "however", "which", ";", …, see [`super::phrases::TERMINATORS`]). At each
//! word the longest phrase of [`super::phrases::PHRASES`] is matched; the mention's certainty
//! is then decided in this order, each looking only inside the mention's clause:
//! 1. a double-negative uncertainty anywhere ("cannot be excluded") → uncertain;
//! 2. a negation trigger before the mention or inside its gap ("no", "without", "negative
//!    for") or after it ("is not seen", "has resolved"), unless it is a pseudo-negation
//!    ("no interval change") → negative; for organ-only ([`Role::Neutral`]) mentions also
//!    "normal", "unremarkable", "within normal limits";
//! 3. an uncertainty trigger before ("may", "possible", "likely") or after ("is suspected")
//!    → uncertain;
//! 4. otherwise positive.
//!
//! Negation wins over plain uncertainty ("no findings to suggest pneumonia" is negative), as
//! in the CheXpert labeler's rule order. Laterality, zone and severity are read from the
//! words of the mention's clause. The reader is pure and deterministic; the same reader draws
//! the phantoms (`synth`) and scores generated reports ([`super::label_report`]).

use std::sync::LazyLock;

use serde::Serialize;

use super::phrases::{self, Role};

/// Longest run of words a `..` in a phrase may skip.
pub const MAX_GAP: usize = 3;

/// A finding the reader knows. Each maps to at most one CheXpert observation
/// ([`Kind::observation`]); some exist because a phantom draws them differently (devices) or
/// at all (granuloma, hyperinflation). Order is the phantom's drawing order (devices last).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Hyperinflation,
    Cardiomegaly,
    WideMediastinum,
    Edema,
    Effusion,
    PleuralThickening,
    Pneumothorax,
    Opacity,
    Consolidation,
    Pneumonia,
    Atelectasis,
    Nodule,
    Granuloma,
    Fracture,
    Sternotomy,
    Line,
    Pacemaker,
    Device,
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
    /// Scale factor the phantom renderer applies to sizes and densities.
    pub fn factor(self) -> f32 {
        match self {
            Severity::Mild => 0.6,
            Severity::Moderate => 1.0,
            Severity::Severe => 1.45,
        }
    }
}

/// What the report says about a mention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Certainty {
    Positive,
    Uncertain,
    Negative,
}

/// One mention of a finding in a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Mention {
    pub kind: Kind,
    pub certainty: Certainty,
    pub side: Side,
    pub zone: Zone,
    pub severity: Severity,
}

/// One positive finding (what a phantom draws).
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

/// Every mention of a report, in text order.
pub fn mentions(report: &str) -> Vec<Mention> {
    report
        .split(['.', '?', '!', '\n'])
        .flat_map(sentence_mentions)
        .collect()
}

/// The positive findings of a report, deduplicated and sorted; empty means "nothing to draw".
pub fn read_report(report: &str) -> Vec<Finding> {
    let mut out: Vec<Finding> = mentions(report)
        .into_iter()
        .filter(|m| m.certainty == Certainty::Positive)
        .map(|m| Finding {
            kind: m.kind,
            side: m.side,
            zone: m.zone,
            severity: m.severity,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// One word pattern of a phrase.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(&'static str),
    Prefix(&'static str),
    Gap,
}

fn compile(pattern: &'static str) -> Vec<Tok> {
    pattern
        .split_whitespace()
        .map(|w| match (w, w.strip_suffix('*')) {
            ("..", _) => Tok::Gap,
            (_, Some(prefix)) => Tok::Prefix(prefix),
            (w, None) => Tok::Word(w),
        })
        .collect()
}

struct Phrase {
    kind: Kind,
    role: Role,
    toks: Vec<Tok>,
}

struct Triggers {
    phrases: Vec<Phrase>,
    double_negative: Vec<Vec<Tok>>,
    pre_neg: Vec<Vec<Tok>>,
    post_neg: Vec<Vec<Tok>>,
    pseudo: Vec<Vec<Tok>>,
    normal: Vec<Vec<Tok>>,
    pre_unc: Vec<Vec<Tok>>,
    post_unc: Vec<Vec<Tok>>,
}

static VOCAB: LazyLock<Triggers> = LazyLock::new(|| {
    let list = |l: &[&'static str]| l.iter().map(|p| compile(p)).collect();
    Triggers {
        phrases: phrases::PHRASES
            .iter()
            .map(|&(kind, p, role)| Phrase {
                kind,
                role,
                toks: compile(p),
            })
            .collect(),
        double_negative: list(phrases::DOUBLE_NEGATIVE_UNCERTAIN),
        pre_neg: list(phrases::PRE_NEGATIONS),
        post_neg: list(phrases::POST_NEGATIONS),
        pseudo: list(phrases::PSEUDO_NEGATIONS),
        normal: list(phrases::NORMAL_TRIGGERS),
        pre_unc: list(phrases::PRE_UNCERTAIN),
        post_unc: list(phrases::POST_UNCERTAIN),
    }
});

/// A sentence as words plus the clause number of every word.
struct Sentence {
    words: Vec<String>,
    clause: Vec<usize>,
}

impl Sentence {
    fn new(text: &str) -> Sentence {
        let words = tokenize(text);
        let mut id = 0;
        let clause = words
            .iter()
            .map(|w| {
                if phrases::TERMINATORS.contains(&w.as_str()) {
                    id += 1;
                }
                id
            })
            .collect();
        Sentence { words, clause }
    }

    fn word_is(&self, j: usize, tok: &Tok) -> bool {
        let w = self.words[j].as_str();
        match tok {
            Tok::Word(p) => w == *p,
            Tok::Prefix(p) => w.starts_with(p),
            Tok::Gap => true,
        }
    }

    /// Matches `toks` at word `i` within clause `clause`: the end (exclusive) and the words
    /// skipped by gaps. The shortest gaps are tried first.
    fn match_at(
        &self,
        i: usize,
        toks: &[Tok],
        clause: usize,
        gaps: &mut Vec<usize>,
    ) -> Option<usize> {
        let Some((first, rest)) = toks.split_first() else {
            return Some(i);
        };
        if *first == Tok::Gap {
            for skip in 0..=MAX_GAP {
                let end = i + skip;
                if end > self.words.len() || (skip > 0 && self.clause[end - 1] != clause) {
                    break;
                }
                let mark = gaps.len();
                gaps.extend(i..end);
                if let Some(e) = self.match_at(end, rest, clause, gaps) {
                    return Some(e);
                }
                gaps.truncate(mark);
            }
            return None;
        }
        if i < self.words.len() && self.clause[i] == clause && self.word_is(i, first) {
            self.match_at(i + 1, rest, clause, gaps)
        } else {
            None
        }
    }

    /// Whether any of `list` matches at word `j` (within `j`'s clause).
    fn any_at(&self, j: usize, list: &[Vec<Tok>]) -> bool {
        list.iter().any(|t| {
            self.match_at(j, t, self.clause[j], &mut Vec::new())
                .is_some()
        })
    }

    /// The longest phrase at word `i`: (phrase, end, gap words).
    fn phrase_at(&self, i: usize) -> Option<(&'static Phrase, usize, Vec<usize>)> {
        let mut best: Option<(&'static Phrase, usize, Vec<usize>)> = None;
        for p in &VOCAB.phrases {
            let mut gaps = Vec::new();
            if let Some(end) = self.match_at(i, &p.toks, self.clause[i], &mut gaps) {
                if best.as_ref().is_none_or(|b| end > b.1) {
                    best = Some((p, end, gaps));
                }
            }
        }
        best
    }

    /// The certainty of the mention at `start..end` (rule order in the module docs).
    fn certainty(&self, start: usize, end: usize, gaps: &[usize], role: Role) -> Certainty {
        let v = &*VOCAB;
        let clause = self.clause[start];
        let in_clause: Vec<usize> = (0..self.words.len())
            .filter(|&j| self.clause[j] == clause)
            .collect();
        let pre: Vec<usize> = in_clause
            .iter()
            .copied()
            .filter(|&j| j < start || gaps.contains(&j))
            .collect();
        let post: Vec<usize> = in_clause.iter().copied().filter(|&j| j >= end).collect();
        if in_clause
            .iter()
            .any(|&j| self.any_at(j, &v.double_negative))
        {
            return Certainty::Uncertain;
        }
        let real = |j: usize, list: &[Vec<Tok>]| self.any_at(j, list) && !self.any_at(j, &v.pseudo);
        let negated = pre.iter().any(|&j| real(j, &v.pre_neg))
            || post.iter().any(|&j| real(j, &v.post_neg))
            || (role == Role::Neutral
                && pre.iter().chain(&post).any(|&j| self.any_at(j, &v.normal)))
            || gaps.iter().any(|&j| self.any_at(j, &v.normal));
        if negated {
            return Certainty::Negative;
        }
        let uncertain = pre.iter().any(|&j| self.any_at(j, &v.pre_unc))
            || post.iter().any(|&j| self.any_at(j, &v.post_unc));
        if uncertain {
            Certainty::Uncertain
        } else {
            Certainty::Positive
        }
    }

    fn clause_words(&self, clause: usize) -> Vec<&str> {
        (0..self.words.len())
            .filter(|&j| self.clause[j] == clause)
            .map(|j| self.words[j].as_str())
            .collect()
    }
}

/// The mentions of one sentence, in order.
fn sentence_mentions(text: &str) -> Vec<Mention> {
    let s = Sentence::new(text);
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.words.len() {
        let Some((phrase, end, gaps)) = s.phrase_at(i) else {
            i += 1;
            continue;
        };
        let certainty = s.certainty(i, end, &gaps, phrase.role);
        let counts = match phrase.role {
            Role::Mention => true,
            Role::Neutral => certainty == Certainty::Negative,
            Role::Ignore => false,
        };
        if counts {
            let clause = s.clause_words(s.clause[i]);
            out.push(Mention {
                kind: phrase.kind,
                certainty,
                side: side_of(&clause),
                zone: zone_of(&clause),
                severity: severity_of(&clause),
            });
        }
        i = end;
    }
    out
}

/// Lower-case words of letters, digits and inner hyphens; everything else separates words,
/// except that `;` is kept as its own token so it can end a clause.
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

fn matches_any(word: &str, set: &[&str]) -> bool {
    set.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => word.starts_with(prefix),
        None => word == *p,
    })
}

fn side_of(clause: &[&str]) -> Side {
    let both = clause
        .iter()
        .any(|w| matches_any(w, &["bilateral", "bilaterally", "both", "bibas*"]));
    let left = clause
        .iter()
        .any(|w| matches_any(w, &["left", "lingula", "lingular"]));
    let right = clause.contains(&"right");
    match (both || (left && right), left, right) {
        (true, _, _) => Side::Both,
        (false, true, false) => Side::Left,
        (false, false, true) => Side::Right,
        _ => Side::Unspecified,
    }
}

fn zone_of(clause: &[&str]) -> Zone {
    let has = |set: &[&str]| clause.iter().any(|w| matches_any(w, set));
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
