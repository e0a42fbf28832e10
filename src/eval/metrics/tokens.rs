//! Tokenising a corpus once, into dense `u32` ids shared by BLEU, ROUGE-L and CIDEr.
//!
//! Why: every scorer compares tokens, and comparing interned ids instead of strings is what
//! makes the Rust scorers fast; doing it once per corpus (not once per metric) is what makes
//! them cheap together. Ids are dense (`0..vocab`), so per-token scratch tables can be plain
//! arrays instead of hash maps.
//!
//! Each distinct text is tokenised once ([`Pairs`]): radiology reports repeat a lot (a
//! reference set has many "no acute cardiopulmonary abnormality" reports, and a model's
//! predictions even more), and all later per-text work (n-gram counts, tf-idf weights) is
//! shared by every pair that uses the text.
//!
//! Two tokenisations exist because the reference uses two: BLEU and CIDEr split on runs of
//! Python whitespace (`str.split()`), ROUGE-L on the single character `' '` (`str.split(' ')`),
//! where doubled, leading or trailing spaces give empty tokens that take part in the LCS.
//! Both share one vocabulary. Guarantee: the token sequences are exactly Python's.

use rustc_hash::FxHashMap;
use std::ops::Range;

/// The distinct texts of a corpus of (reference, hypothesis) pairs, and for each pair which
/// text is its reference and which its hypothesis.
pub struct Pairs<'a> {
    texts: Vec<&'a str>,
    refs: Vec<u32>,
    hyps: Vec<u32>,
}

impl<'a> Pairs<'a> {
    /// Pairs `(refs[i], hyps[i])`; the caller has checked that the lengths agree.
    pub fn new(refs: &'a [String], hyps: &'a [String]) -> Pairs<'a> {
        let mut index: FxHashMap<&'a str, u32> = FxHashMap::default();
        let mut texts = Vec::new();
        let mut text_of = |t: &'a String| {
            *index.entry(t.as_str()).or_insert_with(|| {
                texts.push(t.as_str());
                texts.len() as u32 - 1
            })
        };
        let refs: Vec<u32> = refs.iter().map(&mut text_of).collect();
        let hyps: Vec<u32> = hyps.iter().map(&mut text_of).collect();
        Pairs { texts, refs, hyps }
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.refs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.refs.is_empty()
    }

    /// The distinct texts; [`Pairs::ref_text`] and [`Pairs::hyp_text`] index into them.
    pub fn texts(&self) -> &[&'a str] {
        &self.texts
    }

    /// The text of pair `i`'s reference.
    pub fn ref_text(&self, i: usize) -> usize {
        self.refs[i] as usize
    }

    /// The text of pair `i`'s hypothesis.
    pub fn hyp_text(&self, i: usize) -> usize {
        self.hyps[i] as usize
    }

    /// For every text, the number of pairs that have it as their reference (CIDEr's document
    /// frequencies count references, duplicates included).
    pub fn ref_multiplicity(&self) -> Vec<u32> {
        let mut m = vec![0u32; self.texts.len()];
        for &t in &self.refs {
            m[t as usize] += 1;
        }
        m
    }
}

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

/// The vocabulary being built while a corpus is tokenised: maps token strings to dense ids
/// `0..len()`. Tokenise every split of one corpus with the same `Vocab` so that they share ids.
///
/// Tokens of up to 15 bytes (nearly all words) are keyed by their bytes packed into one
/// `u128`, so a lookup hashes and compares two machine words instead of a string. Token
/// strings cannot make the fast non-cryptographic hash misbehave in any way that matters here
/// (a collision only costs time).
#[derive(Default)]
pub struct Vocab<'a> {
    short: FxHashMap<u128, u32>,
    long: FxHashMap<&'a str, u32>,
}

impl<'a> Vocab<'a> {
    /// Number of distinct tokens so far; every id handed out is below it.
    pub fn len(&self) -> usize {
        self.short.len() + self.long.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The id of `text[range]`.
    fn intern(&mut self, text: &'a str, range: Range<usize>) -> u32 {
        let next = self.len() as u32;
        match short_key(text.as_bytes(), range.clone()) {
            Some(key) => *self.short.entry(key).or_insert(next),
            None => *self.long.entry(&text[range]).or_insert(next),
        }
    }

    /// Python's `t.split()` of every text (BLEU, CIDEr).
    pub fn words(&mut self, texts: &[&'a str]) -> Tokenized {
        let mut out = Tokenized::new();
        for &t in texts {
            for_each_py_word(t, |r| out.ids.push(self.intern(t, r)));
            out.end_sentence();
        }
        out
    }

    /// Python's `t.split(' ')` of every text (ROUGE-L). Pass the whitespace split of the same
    /// texts when there is one: where both splits agree (no other whitespace, no empty tokens:
    /// the usual case) the ids are copied instead of looked up.
    pub fn spaced(&mut self, texts: &[&'a str], words: Option<&Tokenized>) -> Tokenized {
        let mut out = Tokenized::new();
        for (i, &t) in texts.iter().enumerate() {
            match words {
                Some(w) if splits_alike(t) => out.ids.extend_from_slice(w.sentence(i)),
                _ => {
                    // ' ' is one byte and never part of a multi-byte UTF-8 sequence.
                    let mut start = 0;
                    for (j, _) in t.bytes().enumerate().filter(|&(_, b)| b == b' ') {
                        let id = self.intern(t, start..j);
                        out.ids.push(id);
                        start = j + 1;
                    }
                    let id = self.intern(t, start..t.len());
                    out.ids.push(id);
                }
            }
            out.end_sentence();
        }
        out
    }
}

/// `text[range]` packed into a `u128` (byte j in bits 8j.., the length in the top byte) when it
/// is at most 15 bytes long. Distinct strings get distinct keys: the length is part of the key
/// and the bytes past it are zero.
fn short_key(text: &[u8], range: Range<usize>) -> Option<u128> {
    let len = range.len();
    if len > 15 {
        return None;
    }
    let bytes = match text.get(range.start..range.start + 16) {
        // Common case: 16 bytes readable from the token's start; keep the token's own.
        Some(window) => {
            let mut buf = [0u8; 16];
            buf.copy_from_slice(window);
            u128::from_le_bytes(buf) & ((1u128 << (8 * len)) - 1)
        }
        None => text[range]
            .iter()
            .rev()
            .fold(0u128, |acc, &b| (acc << 8) | b as u128),
    };
    Some(bytes | (len as u128) << 120)
}

/// Python's whitespace for ASCII bytes (`str.isspace`): `\t \n \v \f \r`, the separators
/// U+001C..U+001F and the space.
fn is_ascii_py_space(b: u8) -> bool {
    matches!(b, b'\t'..=b'\r' | 0x1c..=0x1f | b' ')
}

/// Calls `f` with the byte range of every token of Python's `t.split()`. Reports are ASCII
/// after cleaning, so the common case scans bytes; other texts go through the full Unicode
/// definition.
fn for_each_py_word(t: &str, mut f: impl FnMut(Range<usize>)) {
    if !t.is_ascii() {
        let base = t.as_ptr() as usize;
        for w in crate::data::text::py_split_whitespace(t) {
            let start = w.as_ptr() as usize - base;
            f(start..start + w.len());
        }
        return;
    }
    let b = t.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && is_ascii_py_space(b[i]) {
            i += 1;
        }
        let start = i;
        while i < b.len() && !is_ascii_py_space(b[i]) {
            i += 1;
        }
        if i > start {
            f(start..i);
        }
    }
}

/// True when `t.split(' ') == t.split()`: non-empty, and no whitespace but single spaces
/// between tokens.
fn splits_alike(t: &str) -> bool {
    let b = t.as_bytes();
    if b.first().is_none_or(|&c| c == b' ') || b.last() == Some(&b' ') {
        return false;
    }
    if !t.is_ascii() {
        return !t.contains("  ")
            && !t
                .chars()
                .any(|c| c != ' ' && crate::data::text::is_py_whitespace(c));
    }
    let mut prev_space = false;
    for &c in b {
        let space = c == b' ';
        if (space && prev_space) || (!space && is_ascii_py_space(c)) {
            return false;
        }
        prev_space = space;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn words_of(t: &str) -> Vec<&str> {
        let mut v = Vec::new();
        for_each_py_word(t, |r| v.push(&t[r]));
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
        assert!(splits_alike("x"));
        assert!(!splits_alike(""));
        assert!(!splits_alike(" lead"));
        assert!(!splits_alike("trail "));
        assert!(!splits_alike("two  spaces"));
        assert!(!splits_alike("tab\there"));
        assert!(!splits_alike("nbsp\u{a0}here"));
        assert!(splits_alike("café noir"));
    }

    #[test]
    fn short_keys_tell_every_string_apart() {
        let text = b"ab a\0 abcdefghijklmno abcdefghijklmnop x";
        let key = |s: usize, e: usize| short_key(text, s..e);
        assert_ne!(key(0, 2), key(3, 4)); // "ab" vs "a"
        assert_ne!(key(3, 4), key(3, 5)); // "a" vs "a\0": the length is in the key
        assert_eq!(key(0, 1), key(3, 4)); // "a" == "a"
        assert!(key(6, 21).is_some()); // 15 bytes
        assert_eq!(key(22, 38), None); // 16 bytes go to the string map
                                       // Near the end of the text (no 16-byte window) the packed value is the same.
        let tail = b"zz ab";
        assert_eq!(short_key(tail, 3..5), key(0, 2));
    }

    #[test]
    fn texts_are_deduplicated_and_pairs_point_at_them() {
        let refs = strings(&["a b", "c", "a b"]);
        let hyps = strings(&["c", "a b", "d"]);
        let p = Pairs::new(&refs, &hyps);
        assert_eq!(p.texts(), ["a b", "c", "d"]);
        assert_eq!(p.len(), 3);
        assert_eq!((p.ref_text(2), p.hyp_text(2)), (0, 2));
        assert_eq!(p.ref_multiplicity(), [2, 1, 0]);
    }

    #[test]
    fn one_vocabulary_for_both_splits() {
        let texts = ["a b c", "a  b", "c b a", ""];
        let mut v = Vocab::default();
        let w = v.words(&texts);
        let s = v.spaced(&texts, Some(&w));
        let (a, b, cc) = (0, 1, 2); // first-appearance ids
        assert_eq!(w.sentence(0), [a, b, cc]);
        assert_eq!(w.sentence(1), [a, b]);
        assert_eq!(w.sentence(2), [cc, b, a]);
        assert!(w.sentence(3).is_empty());
        // "a  b".split(' ') = ["a", "", "b"]; "".split(' ') = [""]: the empty token gets id 3.
        assert_eq!(s.sentence(0), [a, b, cc]);
        assert_eq!(s.sentence(1), [a, 3, b]);
        assert_eq!(s.sentence(3), [3]);
        assert_eq!(v.len(), 4);
        assert_eq!(w.len(), 4);
    }

    #[test]
    fn spaced_alone_splits_every_text_itself() {
        let texts = ["x y", "x\ty", " x", "a-very-long-token-indeed y"];
        let mut v = Vocab::default();
        let s = v.spaced(&texts, None);
        assert_eq!(s.sentence(0), [0, 1]);
        assert_eq!(s.sentence(1), [2]); // "x\ty" has no ' ': one token
        assert_eq!(s.sentence(2), [3, 0]); // ["", "x"]
        assert_eq!(s.sentence(3), [4, 1]); // a long token through the string map
    }
}
