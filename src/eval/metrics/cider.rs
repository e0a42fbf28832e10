//! CIDEr-D exactly as pycocoevalcap 1.2's `CiderScorer` (n = 4, σ = 6, clipping, × 10).
//!
//! Why these quirks are kept: they define the published numbers. Document frequencies come
//! from the references *of the evaluated set* (so a score depends on the whole corpus, and
//! `log N` with N = number of pairs), the "length" used by the Gaussian length penalty is the
//! number of 2-grams, and every float is accumulated in the same order as the Python dicts
//! iterate (first appearance per order, see [`NgramIndex::grams`]), which keeps results bit-identical.
//!
//! Why the work is split into [`Weights`] (per text) and [`item`] (per pair): a sentence's
//! tf-idf vector and its norms depend on the sentence and the corpus only, so they are
//! computed once per distinct text and shared by every pair that uses it; a pair then only
//! sums over the n-grams its two texts share. The floats are the reference's: the same
//! operations in the same order, merely not repeated.
//!
//! Why [`Idf`] caches by document frequency: an n-gram's tf-idf weight is
//! `tf · (ln N − ln max(1, df))`, and almost every n-gram occurs once in its sentence, so its
//! weight and the weight's square (C `pow`, the costly part) depend on `df` alone. They are
//! computed once per df value (≤ N + 1 values) instead of once per n-gram occurrence; `1.0 · x`
//! is exactly `x`, so the cached values are the very floats the reference computes.

use super::ngrams::{Matcher, NgramIndex, MAX_N};
use super::pymath::{numpy_mean, numpy_sum, py_pow};
use super::tokens::{Pairs, Tokenized, Vocab};
use super::MetricsError;

const SIGMA: f64 = 6.0;

/// tf-idf weights for a corpus of `n` references.
pub struct Idf {
    /// `by_df[d]` = `ln N − ln max(1, d)`, the weight of an n-gram with tf 1 and df d.
    by_df: Vec<f64>,
    /// `square_by_df[d]` = `by_df[d] ** 2` (C `pow`, as `pow(x, 2)` in the reference).
    square_by_df: Vec<f64>,
}

impl Idf {
    /// Weights for document frequencies `0..=n` (a df never exceeds the number of references).
    pub fn new(n: usize) -> Idf {
        let log_n = (n as f64).ln();
        let by_df: Vec<f64> = (0..=n).map(|d| log_n - (d as f64).max(1.0).ln()).collect();
        let square_by_df = by_df.iter().map(|&w| py_pow(w, 2.0)).collect();
        Idf {
            by_df,
            square_by_df,
        }
    }

    /// The weight `tf · idf` of an n-gram and its square.
    fn weight(&self, tf: u32, df: u32) -> (f64, f64) {
        let d = df as usize;
        if tf == 1 {
            (self.by_df[d], self.square_by_df[d])
        } else {
            let w = tf as f64 * self.by_df[d];
            (w, py_pow(w, 2.0))
        }
    }
}

/// Every text's tf-idf vector (per order, in first-appearance order) and its norms:
/// pycocoevalcap's `counts2vec`, once per distinct text.
pub struct Weights {
    /// `weights[k][i]`: the weight of the i-th entry of [`NgramIndex::all_grams`]`(k)`.
    weights: [Vec<f64>; MAX_N],
    /// `norms[t][k]`: `sqrt(Σ weight²)` over text t's (k+1)-grams, summed in list order.
    norms: Vec<[f64; MAX_N]>,
}

impl Weights {
    /// Weights of every text of `index` in a corpus of `n_pairs` references.
    pub fn new(index: &NgramIndex, n_pairs: usize) -> Weights {
        let idf = Idf::new(n_pairs);
        let mut weights: [Vec<f64>; MAX_N] = Default::default();
        let mut norms = vec![[0.0f64; MAX_N]; index.texts()];
        for (k, w) in weights.iter_mut().enumerate() {
            w.reserve(index.all_grams(k).len());
            for (t, norm) in norms.iter_mut().enumerate() {
                let mut sum = 0.0f64;
                for g in index.grams(k, t) {
                    let (x, square) = idf.weight(g.tf, index.df(k, g.id));
                    w.push(x);
                    sum += square;
                }
                norm[k] = sum.sqrt();
            }
        }
        Weights { weights, norms }
    }
}

/// CIDEr-D of hypothesis text `hyp` against reference text `reference` (texts of `index`,
/// `weights` and `words`), whose n-grams `matcher` has just matched.
pub fn item(
    index: &NgramIndex,
    weights: &Weights,
    matcher: &Matcher,
    words: &Tokenized,
    (reference, hyp): (usize, usize),
) -> f64 {
    // The "length" is the number of 2-grams (the sum of their counts).
    let length = |t: usize| words.range(t).len().saturating_sub(1) as f64;
    let delta = length(hyp) - length(reference);
    let penalty = py_pow(
        std::f64::consts::E,
        -py_pow(delta, 2.0) / (2.0 * py_pow(SIGMA, 2.0)),
    );
    let val: [f64; MAX_N] = std::array::from_fn(|k| {
        let w_hyp = &weights.weights[k][index.span(k, hyp)];
        let w_ref = &weights.weights[k][index.span(k, reference)];
        // Only shared n-grams: one the reference lacks reads 0.0 there (a defaultdict) and
        // would add min(w, 0)·0 = 0.0, which leaves the non-negative sum unchanged.
        let mut v = 0.0f64;
        for &(j, r) in matcher.matches(k) {
            let (h, r) = (w_hyp[j as usize], w_ref[r as usize]);
            v += h.min(r) * r;
        }
        let (norm_hyp, norm_ref) = (weights.norms[hyp][k], weights.norms[reference][k]);
        if norm_hyp != 0.0 && norm_ref != 0.0 {
            v /= norm_hyp * norm_ref;
        }
        v * penalty
    });
    // np.mean over the 4 orders, / one reference, × 10.
    numpy_sum(&val) / MAX_N as f64 / 1.0 * 10.0
}

/// CIDEr-D alone: `(corpus, per item)`, tokenising and counting only what CIDEr needs (what a
/// caller of pycocoevalcap's `Cider()` waits for; [`super::score_without_meteor`] shares this
/// work with the other metrics).
pub fn score(refs: &[String], hyps: &[String]) -> Result<(f64, Vec<f64>), MetricsError> {
    super::check_pairs(refs, hyps)?;
    let pairs = Pairs::new(refs, hyps);
    let mut vocab = Vocab::default();
    let words = vocab.words(pairs.texts());
    let index = NgramIndex::new(&pairs, &words, vocab.len());
    let weights = Weights::new(&index, pairs.len());
    let items = super::map_pairs(
        pairs.len(),
        || Matcher::new(&index),
        |matcher, i| {
            let texts = (pairs.ref_text(i), pairs.hyp_text(i));
            matcher.run(&index, texts.0, texts.1);
            item(&index, &weights, matcher, &words, texts)
        },
    );
    Ok((numpy_mean(&items), items))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CIDEr of every pair of a small corpus.
    fn scores(refs: &[&str], hyps: &[&str]) -> Vec<f64> {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        score(&s(refs), &s(hyps)).unwrap().1
    }

    #[test]
    fn identical_pair_in_a_corpus_of_two_scores_ten() {
        // Every order has n-grams (4 tokens) with idf ln 2 > 0: each cosine is 1 → 10 × 1.
        let s = scores(&["a b c d", "e f g h"], &["a b c d", "x"]);
        assert!((s[0] - 10.0).abs() < 1e-12, "{}", s[0]);
        // Three tokens have no 4-gram: that order contributes 0, so the mean is 3/4 → 7.5.
        let s = scores(&["a b c", "e f g"], &["a b c", "x"]);
        assert!((s[0] - 7.5).abs() < 1e-12, "{}", s[0]);
    }

    #[test]
    fn ngrams_in_every_reference_weigh_nothing() {
        // With N = 1 every idf is ln(1) - ln(1) = 0, so everything scores 0.
        assert_eq!(scores(&["a b c"], &["a b c"]), [0.0]);
    }

    #[test]
    fn repeated_ngrams_are_clipped_to_the_reference_weight() {
        // "a a" vs "a b" in a corpus of 2 (second pair unrelated): unigram weights are
        // hyp a: 2·ln2, ref a: ln2, ref b: ln2 → min(2ln2, ln2)·ln2 = ln2², norms 2ln2 and
        // √2·ln2, cosine 1/(2√2); the bigrams share nothing; equal lengths: no penalty.
        let s = scores(&["a b", "c d"], &["a a", "c d"]);
        let expected = (1.0 / (2.0 * 2f64.sqrt())) / 4.0 * 10.0;
        assert!((s[0] - expected).abs() < 1e-12, "{} vs {expected}", s[0]);
    }

    #[test]
    fn cached_weights_equal_the_direct_formula() {
        let idf = Idf::new(3858);
        for (tf, df) in [(1, 0), (1, 1), (1, 3858), (2, 7), (5, 1)] {
            let direct = tf as f64 * ((3858f64).ln() - (df as f64).max(1.0).ln());
            let (w, sq) = idf.weight(tf, df);
            assert_eq!(w.to_bits(), direct.to_bits());
            assert_eq!(sq.to_bits(), py_pow(direct, 2.0).to_bits());
        }
    }
}
