//! BLEU-1..4 exactly as pycocoevalcap 1.2's `BleuScorer` with option `"closest"` and one
//! reference per item.
//!
//! Why the odd constants: pycocoevalcap adds `1e-15` to match counts and `1e-9` to guess counts
//! so that a zero count gives a tiny score instead of a division by zero; published IU X-Ray
//! and MIMIC-CXR numbers include those effects (e.g. a one-word hypothesis gets BLEU-4 ≈ 1e-13,
//! not 0), so they are reproduced here, operation for operation.
//!
//! The corpus score is NOT the mean of the item scores: it applies the same formula to the
//! match counts, guess counts and lengths summed over the corpus.

use super::ngrams::{Matcher, NgramIndex, MAX_N};
use super::pymath::py_pow;
use super::tokens::{Pairs, Tokenized, Vocab};
use super::MetricsError;

const TINY: f64 = 1e-15;
const SMALL: f64 = 1e-9;

/// The counts BLEU needs from one (reference, hypothesis) pair.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BleuStats {
    pub hyp_len: usize,
    pub ref_len: usize,
    /// Clipped n-gram matches per order.
    pub correct: [u64; MAX_N],
    /// Hypothesis n-grams per order, `max(0, len - k)`.
    pub guess: [u64; MAX_N],
}

impl BleuStats {
    /// The counts of hypothesis text `hyp` against reference text `reference` (texts of
    /// `index` and `words`), whose n-grams `matcher` has just matched.
    pub fn new(
        index: &NgramIndex,
        matcher: &Matcher,
        words: &Tokenized,
        (reference, hyp): (usize, usize),
    ) -> Self {
        let (ref_len, hyp_len) = (words.range(reference).len(), words.range(hyp).len());
        let correct = std::array::from_fn(|k| {
            let (refs, hyps) = (index.grams(k, reference), index.grams(k, hyp));
            matcher
                .matches(k)
                .iter()
                .map(|&(j, r)| hyps[j as usize].tf.min(refs[r as usize].tf) as u64)
                .sum()
        });
        BleuStats {
            hyp_len,
            ref_len,
            correct,
            guess: std::array::from_fn(|k| hyp_len.saturating_sub(k) as u64),
        }
    }
}

/// BLEU-1..4 from (possibly summed) counts, in pycocoevalcap's order of operations.
fn bleu_from_counts(
    correct: [f64; MAX_N],
    guess: [f64; MAX_N],
    hyp_len: f64,
    ref_len: f64,
) -> [f64; MAX_N] {
    let mut out = [0.0; MAX_N];
    let mut product = 1.0f64;
    for k in 0..MAX_N {
        product *= (correct[k] + TINY) / (guess[k] + SMALL);
        out[k] = py_pow(product, 1.0 / (k as f64 + 1.0));
    }
    let ratio = (hyp_len + TINY) / (ref_len + SMALL);
    if ratio < 1.0 {
        let brevity = (1.0 - 1.0 / ratio).exp();
        for v in &mut out {
            *v *= brevity;
        }
    }
    out
}

/// Per-item BLEU-1..4 of one pair.
pub fn item(s: &BleuStats) -> [f64; MAX_N] {
    bleu_from_counts(
        s.correct.map(|c| c as f64),
        s.guess.map(|g| g as f64),
        s.hyp_len as f64,
        s.ref_len as f64,
    )
}

/// Corpus BLEU-1..4: the formula applied to counts summed over all pairs.
pub fn corpus(stats: &[BleuStats]) -> [f64; MAX_N] {
    let mut correct = [0u64; MAX_N];
    let mut guess = [0u64; MAX_N];
    let (mut hyp_len, mut ref_len) = (0usize, 0usize);
    for s in stats {
        for k in 0..MAX_N {
            correct[k] += s.correct[k];
            guess[k] += s.guess[k];
        }
        hyp_len += s.hyp_len;
        ref_len += s.ref_len;
    }
    bleu_from_counts(
        correct.map(|c| c as f64),
        guess.map(|g| g as f64),
        hyp_len as f64,
        ref_len as f64,
    )
}

/// Corpus BLEU-1..4 and the per-item BLEU-1..4.
pub type BleuScores = ([f64; MAX_N], Vec<[f64; MAX_N]>);

/// BLEU-1..4 alone: `(corpus, per item)`, tokenising and counting only what BLEU needs (what
/// a caller of pycocoevalcap's `Bleu(4)` waits for; [`super::score_without_meteor`] shares this
/// work with the other metrics).
pub fn score(refs: &[String], hyps: &[String]) -> Result<BleuScores, MetricsError> {
    super::check_pairs(refs, hyps)?;
    let pairs = Pairs::new(refs, hyps);
    let mut vocab = Vocab::default();
    let words = vocab.words(pairs.texts());
    let index = NgramIndex::new(&pairs, &words, vocab.len());
    let per_pair = super::map_pairs(
        pairs.len(),
        || Matcher::new(&index),
        |matcher, i| {
            let texts = (pairs.ref_text(i), pairs.hyp_text(i));
            matcher.run(&index, texts.0, texts.1);
            let stats = BleuStats::new(&index, matcher, &words, texts);
            (stats, item(&stats))
        },
    );
    let (stats, items): (Vec<BleuStats>, Vec<_>) = per_pair.into_iter().unzip();
    Ok((corpus(&stats), items))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(r: &str, h: &str) -> BleuStats {
        let (refs, hyps) = ([r.to_string()], [h.to_string()]);
        let pairs = Pairs::new(&refs, &hyps);
        let mut vocab = Vocab::default();
        let w = vocab.words(pairs.texts());
        let idx = NgramIndex::new(&pairs, &w, vocab.len());
        let texts = (pairs.ref_text(0), pairs.hyp_text(0));
        let mut m = Matcher::new(&idx);
        m.run(&idx, texts.0, texts.1);
        BleuStats::new(&idx, &m, &w, texts)
    }

    #[test]
    fn identical_pair_scores_one_up_to_the_constants() {
        let s = stats("a b c d e", "a b c d e");
        for v in item(&s) {
            assert!((v - 1.0).abs() < 1e-9, "{v}");
        }
    }

    #[test]
    fn matches_are_clipped_by_reference_counts() {
        // "the the the" against "the cat": one clipped unigram match out of three guesses.
        let s = stats("the cat", "the the the");
        assert_eq!(s.correct, [1, 0, 0, 0]);
        assert_eq!(s.guess, [3, 2, 1, 0]);
        let b1 = item(&s)[0];
        assert!((b1 - (1.0 + TINY) / (3.0 + SMALL)).abs() < 1e-15);
    }

    #[test]
    fn corpus_sums_counts_before_the_formula() {
        let (a, b) = (stats("a b c", "a b"), stats("d e", "d x e f"));
        let c = corpus(&[a, b]);
        // correct 1-grams 2 + 2, guesses 2 + 4; hyp length 6 ≥ ref length 5: no brevity.
        assert_eq!(c[0], (4.0 + TINY) / (6.0 + SMALL));
    }
}
