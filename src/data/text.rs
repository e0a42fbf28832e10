//! Report text: the IU X-Ray and MIMIC-CXR cleaners, the vocabulary, encode and decode.
//!
//! Why this exists: every token id the model sees and every string the metrics score comes
//! from here, and published numbers are only comparable when the text is cleaned exactly as
//! the R2Gen reference tokenizer cleans it (SPEC §1). The reference is Python, so this module
//! reproduces Python semantics where they differ from Rust's: `str.strip()`/`str.split()` use
//! Python's whitespace set (which also contains the ASCII separators U+001C–U+001F), and
//! `str.lower()` is full Unicode lower-casing (`İ` → `i̇`, final `Σ` → `ς`).
//!
//! Guarantees (checked against `../shared/reference/public/text.json` by `tests/it/text_parity.rs`):
//! cleaned strings, vocabularies and id lists are identical to the reference, token for token.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Id 0 is at once BOS, EOS and padding (the reference's convention).
pub const BOS_EOS_PAD: i64 = 0;
/// The unknown-token string; it is part of every vocabulary.
pub const UNK: &str = "<unk>";
/// The dataset-side truncation of id lists in the published runs.
pub const DEFAULT_MAX_SEQ_LENGTH: usize = 60;

/// Everything that can go wrong while reading or writing text artefacts.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON: {message}")]
    Json { path: PathBuf, message: String },
    #[error("{path}: {what}")]
    Annotation { path: PathBuf, what: String },
    #[error("{path}: invalid vocabulary: {what}")]
    BadVocab { path: PathBuf, what: String },
    #[error("token id {id} is outside the vocabulary (valid ids are 0..={max})")]
    UnknownId { id: i64, max: i64 },
}

pub use crate::dataset::Dataset;

/// The cleaner lives here with the other text rules; the enum itself is in [`crate::dataset`].
impl Dataset {
    /// Applies this dataset's cleaner.
    pub fn clean(self, report: &str) -> String {
        match self {
            Dataset::IuXray => clean_iu_xray(report),
            Dataset::MimicCxr => clean_mimic_cxr(report),
        }
    }
}

/// Python's `str.isspace()` set: Unicode `White_Space` plus U+001C–U+001F.
pub fn is_py_whitespace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `s.strip()`.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(is_py_whitespace)
}

/// Python's `s.split()` (runs of whitespace, no empty tokens).
pub fn py_split_whitespace(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_py_whitespace).filter(|t| !t.is_empty())
}

/// Python's `s.replace(from, to)` applied `times` times in a row.
fn replace_n(s: String, from: &str, to: &str, times: usize) -> String {
    (0..times).fold(s, |acc, _| acc.replace(from, to))
}

/// Characters deleted by the reference's class `[.,?;*!%^&_+():-\[\]{}]`. Inside it `:-\[` is a
/// range U+003A..=U+005B, so `<=>@` and `A`–`Z` go too, while `-` survives (`x-ray` stays one token).
fn is_reference_punct(c: char) -> bool {
    matches!(
        c,
        '.' | ','
            | '?'
            | ';'
            | '*'
            | '!'
            | '%'
            | '^'
            | '&'
            | '_'
            | '+'
            | '('
            | ')'
            | ']'
            | '{'
            | '}'
    ) || (':'..='[').contains(&c)
}

/// The per-sentence cleaner shared by both datasets.
fn clean_sentence(piece: &str) -> String {
    let unquoted: String = piece
        .chars()
        .filter(|c| !matches!(c, '"' | '/' | '\\' | '\''))
        .collect();
    py_strip(&unquoted)
        .to_lowercase()
        .chars()
        .filter(|&c| !is_reference_punct(c))
        .collect()
}

/// Numbered-list removal, strip, lower-case, sentence split and sentence cleaning — the part
/// both cleaners share after their own pre-normalisation.
fn clean_after_prenormalisation(text: String) -> String {
    let mut t = text.replace("1. ", "");
    for n in 2..=5 {
        t = t.replace(&format!(". {n}. "), ". ");
    }
    for n in 2..=5 {
        t = t.replace(&format!(" {n}. "), ". ");
    }
    let lowered = py_strip(&t).to_lowercase();
    // Empty sentences are kept on purpose: the reference's filter compares a string with `[]`
    // and so never removes anything.
    let sentences: Vec<String> = lowered.split(". ").map(clean_sentence).collect();
    let mut out = sentences.join(" . ");
    out.push_str(" .");
    out
}

/// The IU X-Ray cleaner (`clean_report_iu_xray` of the reference).
pub fn clean_iu_xray(report: &str) -> String {
    clean_after_prenormalisation(replace_n(report.to_owned(), "..", ".", 3))
}

/// The MIMIC-CXR cleaner (`clean_report_mimic_cxr`); tabs are deliberately not touched.
pub fn clean_mimic_cxr(report: &str) -> String {
    let t = report.replace('\n', " ");
    let t = replace_n(t, "__", "_", 7);
    let t = replace_n(t, "  ", " ", 6);
    let t = replace_n(t, "..", ".", 8);
    clean_after_prenormalisation(t)
}

/// A token vocabulary: ids 1..=V in code-point order of the tokens, `<unk>` included; id 0 is
/// BOS/EOS/pad and has no token.
#[derive(Debug, Clone, PartialEq)]
pub struct Vocab {
    dataset: Dataset,
    threshold: usize,
    tokens: Vec<String>,
    ids: HashMap<String, i64>,
}

/// The on-disk form: `{"dataset": "iu_xray", "threshold": 3, "tokens": [token of id 1, ...]}`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VocabFile {
    dataset: Dataset,
    threshold: usize,
    tokens: Vec<String>,
}

impl Vocab {
    /// Builds the vocabulary from already-cleaned train reports: whitespace tokens with a count
    /// of at least `threshold`, plus `<unk>`, sorted by code point (= Rust's byte order on UTF-8).
    pub fn build<'a>(
        cleaned_train: impl IntoIterator<Item = &'a str>,
        dataset: Dataset,
        threshold: usize,
    ) -> Vocab {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for report in cleaned_train {
            for token in py_split_whitespace(report) {
                *counts.entry(token).or_insert(0) += 1;
            }
        }
        let mut tokens: Vec<String> = counts
            .into_iter()
            .filter(|&(_, n)| n >= threshold)
            .map(|(t, _)| t.to_owned())
            .collect();
        // The cleaner deletes `<` and `>`, so `<unk>` can never collide with a real token.
        tokens.push(UNK.to_owned());
        tokens.sort_unstable();
        Self::from_sorted(dataset, threshold, tokens)
    }

    fn from_sorted(dataset: Dataset, threshold: usize, tokens: Vec<String>) -> Vocab {
        let ids = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as i64 + 1))
            .collect();
        Vocab {
            dataset,
            threshold,
            tokens,
            ids,
        }
    }

    /// Reads an R2Gen annotation JSON, cleans its `train` reports with `dataset`'s cleaner and
    /// builds the vocabulary.
    pub fn from_annotation(
        path: &Path,
        dataset: Dataset,
        threshold: usize,
    ) -> Result<Vocab, TextError> {
        let reports = read_annotation_reports(path, "train")?;
        let cleaned: Vec<String> = reports.iter().map(|(_, r)| dataset.clean(r)).collect();
        Ok(Self::build(
            cleaned.iter().map(String::as_str),
            dataset,
            threshold,
        ))
    }

    /// Loads a vocab.json and checks that it is one this module could have written.
    pub fn load(path: &Path) -> Result<Vocab, TextError> {
        let text = std::fs::read_to_string(path).map_err(|source| TextError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let file: VocabFile = serde_json::from_str(&text).map_err(|e| TextError::Json {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let bad = |what: String| TextError::BadVocab {
            path: path.to_path_buf(),
            what,
        };
        if let Some(w) = file.tokens.windows(2).find(|w| w[0] >= w[1]) {
            return Err(bad(format!(
                "tokens must be unique and sorted by code point, but {:?} comes before {:?}",
                w[0], w[1]
            )));
        }
        if let Some(t) = file
            .tokens
            .iter()
            .find(|t| t.is_empty() || t.chars().any(is_py_whitespace))
        {
            return Err(bad(format!("token {t:?} is empty or contains whitespace")));
        }
        if !file.tokens.iter().any(|t| t == UNK) {
            return Err(bad(format!("the token list lacks {UNK:?}")));
        }
        Ok(Self::from_sorted(file.dataset, file.threshold, file.tokens))
    }

    /// Writes vocab.json atomically (temp file in the same directory, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<(), TextError> {
        let file = VocabFile {
            dataset: self.dataset,
            threshold: self.threshold,
            tokens: self.tokens.clone(),
        };
        let mut bytes = serde_json::to_vec(&file).map_err(|e| TextError::Json {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        bytes.push(b'\n');
        crate::fsutil::write_atomic(path, &bytes).map_err(
            |crate::fsutil::IoError { source, .. }| TextError::Write {
                path: path.to_path_buf(),
                source,
            },
        )
    }

    pub fn dataset(&self) -> Dataset {
        self.dataset
    }
    pub fn threshold(&self) -> usize {
        self.threshold
    }
    /// Tokens in id order: `tokens()[i]` has id `i + 1`.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }
    /// V, the number of tokens including `<unk>`; the model's output layer has V + 1 columns.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }
    /// Never true for a built or loaded vocabulary (`<unk>` is always there).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The id of `<unk>`.
    pub fn unk_id(&self) -> i64 {
        self.ids[UNK]
    }

    /// The id of `token`, `<unk>`'s id when it is not in the vocabulary.
    pub fn id(&self, token: &str) -> i64 {
        self.ids
            .get(token)
            .copied()
            .unwrap_or_else(|| self.unk_id())
    }

    /// The token of `id` (1..=V); `None` for 0 and out-of-range ids.
    pub fn token(&self, id: i64) -> Option<&str> {
        usize::try_from(id - 1)
            .ok()
            .and_then(|i| self.tokens.get(i))
            .map(String::as_str)
    }

    /// Cleans a raw report with this vocabulary's dataset cleaner.
    pub fn clean(&self, report: &str) -> String {
        self.dataset.clean(report)
    }

    /// `[0] + ids + [0]`, cut to `max_seq_length` — so a report of more than
    /// `max_seq_length - 2` tokens loses its final 0, as in the reference.
    pub fn encode(&self, cleaned: &str, max_seq_length: usize) -> Vec<i64> {
        std::iter::once(BOS_EOS_PAD)
            .chain(py_split_whitespace(cleaned).map(|t| self.id(t)))
            .chain(std::iter::once(BOS_EOS_PAD))
            .take(max_seq_length)
            .collect()
    }

    /// The tokens before the first 0, joined by single spaces. Ids outside 0..=V are an error
    /// (they can only come from a model with a different vocabulary).
    pub fn decode(&self, ids: &[i64]) -> Result<String, TextError> {
        let mut words = Vec::new();
        for &id in ids.iter().take_while(|&&id| id != BOS_EOS_PAD) {
            words.push(self.token(id).ok_or(TextError::UnknownId {
                id,
                max: self.tokens.len() as i64,
            })?);
        }
        Ok(words.join(" "))
    }
}

/// The `(id, report)` pairs of one split of an R2Gen annotation JSON, in file order.
pub fn read_annotation_reports(
    path: &Path,
    split: &str,
) -> Result<Vec<(String, String)>, TextError> {
    let text = std::fs::read_to_string(path).map_err(|source| TextError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let root: serde_json::Value = serde_json::from_str(&text).map_err(|e| TextError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let bad = |what: String| TextError::Annotation {
        path: path.to_path_buf(),
        what,
    };
    let records = root.get(split).and_then(|v| v.as_array()).ok_or_else(|| {
        bad(format!(
            "missing list `{split}` (an R2Gen annotation has train/val/test lists)"
        ))
    })?;
    records
        .iter()
        .enumerate()
        .map(|(i, rec)| {
            let report = rec
                .get("report")
                .and_then(|v| v.as_str())
                .ok_or_else(|| bad(format!("{split}[{i}]: missing string key `report`")))?;
            let id = match rec.get("id") {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => format!("{split}[{i}]"),
            };
            Ok((id, report.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_whitespace_includes_ascii_separators() {
        let toks: Vec<&str> = py_split_whitespace("a\u{1f}b\u{a0}c  d").collect();
        assert_eq!(toks, ["a", "b", "c", "d"]);
        assert_eq!(py_strip("\u{1c} x \u{2028}"), "x");
    }

    #[test]
    fn empty_sentences_are_kept() {
        assert_eq!(clean_iu_xray("normal. . clear."), "normal .  . clear .");
        assert_eq!(clean_iu_xray(""), " .");
    }

    #[test]
    fn punctuation_range_deletes_angle_brackets_but_not_hyphen() {
        assert_eq!(clean_iu_xray("x-ray <a=b>@[c]"), "x-ray abc .");
    }

    #[test]
    fn encode_truncates_and_decode_stops_at_zero() {
        let v = Vocab::build(["a b c", "a b", "a"], Dataset::IuXray, 2);
        assert_eq!(v.tokens(), ["<unk>", "a", "b"]);
        assert_eq!(v.encode("a b z", 60), [0, 2, 3, 1, 0]);
        assert_eq!(v.encode("a b z", 3), [0, 2, 3]);
        assert_eq!(v.decode(&[2, 3, 0, 2]).unwrap(), "a b");
        assert!(matches!(
            v.decode(&[9]),
            Err(TextError::UnknownId { id: 9, .. })
        ));
    }
}
