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

use super::ngrams::{py_pow, Alignment, NgramCounts, MAX_N};

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
    pub fn new(
        reference: &NgramCounts,
        ref_len: usize,
        hyp: &NgramCounts,
        hyp_len: usize,
        alignment: &Alignment,
    ) -> Self {
        let mut correct = [0u64; MAX_N];
        let mut guess = [0u64; MAX_N];
        for k in 0..MAX_N {
            correct[k] = hyp.orders[k]
                .iter()
                .zip(&alignment.ref_index[k])
                .map(|(&(_, c), r)| {
                    r.map_or(0, |r| c.min(reference.orders[k][r as usize].1)) as u64
                })
                .sum();
            guess[k] = hyp_len.saturating_sub(k) as u64;
        }
        BleuStats {
            hyp_len,
            ref_len,
            correct,
            guess,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(r: &[u32], h: &[u32]) -> BleuStats {
        let (r_c, h_c) = (NgramCounts::new(r), NgramCounts::new(h));
        BleuStats::new(&r_c, r.len(), &h_c, h.len(), &Alignment::new(&r_c, &h_c))
    }

    #[test]
    fn identical_pair_scores_one_up_to_the_constants() {
        let s = stats(&[1, 2, 3, 4, 5], &[1, 2, 3, 4, 5]);
        for v in item(&s) {
            assert!((v - 1.0).abs() < 1e-9, "{v}");
        }
    }

    #[test]
    fn matches_are_clipped_by_reference_counts() {
        // "the the the" against "the cat": one clipped unigram match out of three guesses.
        let s = stats(&[1, 2], &[1, 1, 1]);
        assert_eq!(s.correct, [1, 0, 0, 0]);
        assert_eq!(s.guess, [3, 2, 1, 0]);
        let b1 = item(&s)[0];
        assert!((b1 - (1.0 + TINY) / (3.0 + SMALL)).abs() < 1e-15);
    }
}
