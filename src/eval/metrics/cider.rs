//! CIDEr-D exactly as pycocoevalcap 1.2's `CiderScorer` (n = 4, σ = 6, clipping, × 10).
//!
//! Why these quirks are kept: they define the published numbers. Document frequencies come
//! from the references *of the evaluated set* (so a score depends on the whole corpus, and
//! `log N` with N = number of pairs), the "length" used by the Gaussian length penalty is the
//! number of 2-grams, and every float is accumulated in the same order as the Python dicts
//! iterate (first appearance per order), which keeps results bit-identical.

use super::ngrams::{numpy_sum, py_pow, Alignment, FxMap, NgramCounts, MAX_N};

const SIGMA: f64 = 6.0;

/// For every n-gram of the references, `ln(max(1, df))` where df is the number of references
/// that contain it (pycocoevalcap's `np.log(max(1.0, document_frequency[ngram]))`, computed
/// once per distinct n-gram instead of once per occurrence; n-grams absent from the map have
/// df 0 and so log-df 0).
pub fn document_frequency(refs: &[NgramCounts]) -> FxMap<u128, f64> {
    let mut df: FxMap<u128, f64> = FxMap::default();
    for r in refs {
        for order in &r.orders {
            for &(g, _) in order {
                *df.entry(g).or_insert(0.0) += 1.0;
            }
        }
    }
    for v in df.values_mut() {
        *v = v.max(1.0).ln();
    }
    df
}

/// The tf-idf vector of one sentence per order (in n-gram order), its norms and its "length".
struct TfIdf {
    values: [Vec<f64>; MAX_N],
    norms: [f64; MAX_N],
    length: u32,
}

fn tfidf(c: &NgramCounts, log_df: &FxMap<u128, f64>, log_n: f64) -> TfIdf {
    let mut values: [Vec<f64>; MAX_N] = Default::default();
    let mut norms = [0.0; MAX_N];
    for k in 0..MAX_N {
        values[k] = c.orders[k]
            .iter()
            .map(|&(g, tf)| tf as f64 * (log_n - log_df.get(&g).copied().unwrap_or(0.0)))
            .collect();
        norms[k] = values[k]
            .iter()
            .fold(0.0, |acc, &v| acc + py_pow(v, 2.0))
            .sqrt();
    }
    let length = c.orders[1].iter().map(|&(_, tf)| tf).sum();
    TfIdf {
        values,
        norms,
        length,
    }
}

/// CIDEr-D of one pair, given [`document_frequency`]'s log-df map and `log_n = ln(N)`.
pub fn item(
    reference: &NgramCounts,
    hyp: &NgramCounts,
    alignment: &Alignment,
    log_df: &FxMap<u128, f64>,
    log_n: f64,
) -> f64 {
    let h = tfidf(hyp, log_df, log_n);
    let r = tfidf(reference, log_df, log_n);
    let delta = h.length as f64 - r.length as f64;
    let penalty = py_pow(
        std::f64::consts::E,
        -py_pow(delta, 2.0) / (2.0 * py_pow(SIGMA, 2.0)),
    );
    let val: [f64; MAX_N] = std::array::from_fn(|k| {
        let mut v = 0.0f64;
        for (&vh, r_i) in h.values[k].iter().zip(&alignment.ref_index[k]) {
            // The reference vector entry; absent entries read as 0.0 (a defaultdict).
            let vr = r_i.map_or(0.0, |j| r.values[k][j as usize]);
            v += vh.min(vr) * vr;
        }
        if h.norms[k] != 0.0 && r.norms[k] != 0.0 {
            v /= h.norms[k] * r.norms[k];
        }
        v * penalty
    });
    // np.mean over the 4 orders, / one reference, × 10.
    numpy_sum(&val) / MAX_N as f64 / 1.0 * 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_pair_in_a_corpus_of_two_scores_ten() {
        // Every order has n-grams (4 tokens) with idf ln 2 > 0: each cosine is 1 → 10 × 1.
        let refs = [
            NgramCounts::new(&[1, 2, 3, 4]),
            NgramCounts::new(&[5, 6, 7, 8]),
        ];
        let df = document_frequency(&refs);
        let hyp = NgramCounts::new(&[1, 2, 3, 4]);
        let al = Alignment::new(&refs[0], &hyp);
        let s = item(&refs[0], &hyp, &al, &df, 2f64.ln());
        assert!((s - 10.0).abs() < 1e-12, "{s}");
        // Three tokens have no 4-gram: that order contributes 0, so the mean is 3/4 → 7.5.
        let short = [NgramCounts::new(&[1, 2, 3]), NgramCounts::new(&[5, 6, 7])];
        let df = document_frequency(&short);
        let al = Alignment::new(&short[0], &short[0]);
        let s = item(&short[0], &short[0], &al, &df, 2f64.ln());
        assert!((s - 7.5).abs() < 1e-12, "{s}");
    }

    #[test]
    fn ngrams_in_every_reference_weigh_nothing() {
        // With N = 1 every idf is ln(1) - ln(1) = 0, so everything scores 0.
        let refs = [NgramCounts::new(&[1, 2, 3])];
        let df = document_frequency(&refs);
        let hyp = NgramCounts::new(&[1, 2, 3]);
        let al = Alignment::new(&refs[0], &hyp);
        assert_eq!(item(&refs[0], &hyp, &al, &df, 0.0), 0.0);
    }
}
