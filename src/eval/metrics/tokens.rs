//! Tokenising a corpus once, into dense `u32` ids shared by BLEU, ROUGE-L and CIDEr.
//!
//! Why: every scorer compares tokens, and comparing interned ids instead of strings is what
//! makes the Rust scorers fast; doing it once per corpus (not once per metric) is what makes
//! them cheap together. Ids are dense (`0..vocab`), so per-token scratch tables can be plain
//! arrays instead of hash maps.
//!
//! Two tokenisations exist because the reference uses two: BLEU and CIDEr split on runs of
//! Python whitespace (`str.split()`), ROUGE-L on the single character `' '` (`str.split(' ')`),
//! where doubled, leading or trailing spaces give empty tokens that take part in the LCS.
//! Both share one vocabulary. Guarantee: the token sequences are exactly Python's.

use rustc_hash::FxHashMap;
use std::ops::Range;

/// Sentences of token ids, stored flat: sentence `i` is `ids[starts[i]..starts[i + 1]]`.
/// One allocation per corpus instead of one per sentence.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tokenized {
    ids: Vec<u32>,
    starts: Vec<usize>,
}

impl Tokenized {
    fn new() -> Self {
        Tokenized {
            ids: Vec::new(),
            starts: vec![0],
        }
    }

    /// Ends the sentence whose ids were pushed since the previous call.
    fn end_sentence(&mut self) {
        self.starts.push(self.ids.len());
    }

    /// Number of sentences.
    pub fn len(&self) -> usize {
        self.starts.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where sentence `i` lies in [`Tokenized::ids`].
    pub fn range(&self, i: usize) -> Range<usize> {
        self.starts[i]..self.starts[i + 1]
    }

    /// The ids of sentence `i`.
    pub fn sentence(&self, i: usize) -> &[u32] {
        &self.ids[self.range(i)]
    }

    /// All ids, sentence after sentence.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
}

/// References and hypotheses under one tokenisation; pair `i` is `(refs[i], hyps[i])`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sides {
    pub refs: Tokenized,
    pub hyps: Tokenized,
}

impl Sides {
    /// `(reference length, hypothesis length)` of pair `i`, in tokens.
    pub fn lens(&self, i: usize) -> (usize, usize) {
        (self.refs.range(i).len(), self.hyps.range(i).len())
    }
}

/// The vocabulary being built while a corpus is tokenised: maps token strings to dense ids
/// `0..len()`. Tokenise every split of one corpus with the same `Vocab` so that they share ids.
/// Token strings cannot make a fast non-cryptographic hash misbehave in any way that matters
/// here (a collision only costs time), hence `FxHashMap`.
#[derive(Default)]
pub struct Vocab<'a> {
    ids: FxHashMap<&'a str, u32>,
}

impl<'a> Vocab<'a> {
    /// Number of distinct tokens so far; every id handed out is below it.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn intern(&mut self, token: &'a str) -> u32 {
        let next = self.ids.len() as u32;
        *self.ids.entry(token).or_insert(next)
    }

    /// Python's `t.split()` of every reference and hypothesis (BLEU, CIDEr).
    pub fn words(&mut self, refs: &'a [String], hyps: &'a [String]) -> Sides {
        Sides {
            refs: self.words_of(refs),
            hyps: self.words_of(hyps),
        }
    }

    /// Python's `t.split(' ')` of every reference and hypothesis (ROUGE-L). Pass the
    /// whitespace split of the same texts when there is one: where both splits agree (no other
    /// whitespace, no empty tokens: the usual case) the ids are copied instead of looked up.
    pub fn spaced(
        &mut self,
        refs: &'a [String],
        hyps: &'a [String],
        words: Option<&Sides>,
    ) -> Sides {
        Sides {
            refs: self.spaced_of(refs, words.map(|w| &w.refs)),
            hyps: self.spaced_of(hyps, words.map(|w| &w.hyps)),
        }
    }

    fn words_of(&mut self, texts: &'a [String]) -> Tokenized {
        let mut out = Tokenized::new();
        for t in texts {
            for_each_py_word(t, |w| out.ids.push(self.intern(w)));
            out.end_sentence();
        }
        out
    }

    fn spaced_of(&mut self, texts: &'a [String], words: Option<&Tokenized>) -> Tokenized {
        let mut out = Tokenized::new();
        for (i, t) in texts.iter().enumerate() {
            match words {
                Some(w) if splits_alike(t) => out.ids.extend_from_slice(w.sentence(i)),
                _ => {
                    for tok in t.split(' ') {
                        let id = self.intern(tok);
                        out.ids.push(id);
                    }
                }
            }
            out.end_sentence();
        }
        out
    }
}

/// Python's whitespace for ASCII bytes (`str.isspace`): `\t \n \v \f \r`, the separators
/// U+001C..U+001F and the space.
fn is_ascii_py_space(b: u8) -> bool {
    matches!(b, b'\t'..=b'\r' | 0x1c..=0x1f | b' ')
}

/// Calls `f` on every token of Python's `t.split()`. Reports are ASCII after cleaning, so the
/// common case scans bytes; other texts go through the full Unicode definition.
fn for_each_py_word<'t>(t: &'t str, mut f: impl FnMut(&'t str)) {
    if !t.is_ascii() {
        crate::data::text::py_split_whitespace(t).for_each(f);
        return;
    }
    let bytes = t.as_bytes();
    let mut start = None;
    for (i, &b) in bytes.iter().enumerate() {
        match (is_ascii_py_space(b), start) {
            (true, Some(s)) => {
                f(&t[s..i]);
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        f(&t[s..]);
    }
}

/// True when `t.split(' ') == t.split()`: non-empty, no whitespace but single inner spaces.
fn splits_alike(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b[0] != b' '
        && b[b.len() - 1] != b' '
        && !b.windows(2).any(|w| w == b"  ")
        && if t.is_ascii() {
            !b.iter().any(|&c| c != b' ' && is_ascii_py_space(c))
        } else {
            !t.chars()
                .any(|c| c != ' ' && crate::data::text::is_py_whitespace(c))
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn words_of(t: &str) -> Vec<&str> {
        let mut v = Vec::new();
        for_each_py_word(t, |w| v.push(w));
        v
    }

    #[test]
    fn ascii_split_equals_python_split() {
        // Expected tokens are Python's `str.split()` of the same strings.
        assert_eq!(words_of("a b  c"), ["a", "b", "c"]);
        assert_eq!(
            words_of("  lead\ttab\x0bvt\x1fus end  "),
            ["lead", "tab", "vt", "us", "end"]
        );
        assert!(words_of("").is_empty());
        assert!(words_of(" \n ").is_empty());
        // Non-ASCII: U+00A0 (no-break space) is whitespace to Python, 'é' is not.
        assert_eq!(words_of("café\u{a0}noir x"), ["café", "noir", "x"]);
    }

    #[test]
    fn splits_alike_only_when_space_split_has_no_empty_or_other_whitespace() {
        assert!(splits_alike("the heart is normal ."));
        assert!(!splits_alike(""));
        assert!(!splits_alike(" lead"));
        assert!(!splits_alike("trail "));
        assert!(!splits_alike("two  spaces"));
        assert!(!splits_alike("tab\there"));
        assert!(!splits_alike("nbsp\u{a0}here"));
    }

    #[test]
    fn one_vocabulary_for_both_splits() {
        let refs = strings(&["a b c", "a  b"]);
        let hyps = strings(&["c b a", ""]);
        let mut v = Vocab::default();
        let w = v.words(&refs, &hyps);
        let s = v.spaced(&refs, &hyps, Some(&w));
        let (a, b, cc) = (0, 1, 2); // first-appearance ids
        assert_eq!(w.refs.sentence(0), [a, b, cc]);
        assert_eq!(w.refs.sentence(1), [a, b]);
        assert_eq!(w.hyps.sentence(0), [cc, b, a]);
        assert!(w.hyps.sentence(1).is_empty());
        // "a  b".split(' ') = ["a", "", "b"]; "".split(' ') = [""]: the empty token gets id 3.
        assert_eq!(s.refs.sentence(0), [a, b, cc]);
        assert_eq!(s.refs.sentence(1), [a, 3, b]);
        assert_eq!(s.hyps.sentence(1), [3]);
        assert_eq!(v.len(), 4);
        assert_eq!(w.refs.len(), 2);
    }

    #[test]
    fn spaced_alone_splits_every_text_itself() {
        let refs = strings(&["x y", "x\ty"]);
        let mut v = Vocab::default();
        let s = v.spaced(&refs, &refs, None);
        assert_eq!(s.hyps.sentence(0), [0, 1]);
        assert_eq!(s.hyps.sentence(1), [2]); // "x\ty" has no ' ': one token
    }
}
