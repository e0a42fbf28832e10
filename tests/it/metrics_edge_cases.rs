//! Documented edge cases of the metrics (issue 6, acceptance 2): identical hypothesis and
//! reference, a one-word hypothesis, an empty hypothesis, repeated n-grams.
//!
//! Expected values are derived by hand from pycocoevalcap 1.2's formulas (fixture README §2);
//! the derivation is written next to each assertion. The identical / one-word / repeated cases
//! also appear in `../shared/reference/public/metrics.json` and are covered numerically by
//! `metrics_parity.rs`; here the *reasons* are pinned down, plus the empty hypothesis, which
//! the fixture lacks.

use ithn_dist::eval::metrics::{score_items, score_without_meteor, MeteorOpts};

const TINY: f64 = 1e-15;
const SMALL: f64 = 1e-9;

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Three references so CIDEr's idf is not zero everywhere; the case under test is item 0.
fn corpus(hyp0: &str) -> (Vec<String>, Vec<String>) {
    let refs = strings(&[
        "the heart is normal in size . the lungs are clear .",
        "no pleural effusion or pneumothorax .",
        "stable cardiomegaly with mild edema .",
    ]);
    let mut hyps = refs.clone();
    hyps[0] = hyp0.to_owned();
    (refs, hyps)
}

#[test]
fn identical_hypothesis() {
    let (refs, hyps) = corpus("the heart is normal in size . the lungs are clear .");
    let r = score_without_meteor(&refs, &hyps).unwrap();
    let s = r.items[0];
    // correct = guess for every order, so each factor is (g + 1e-15)/(g + 1e-9) = 1 - O(1e-10).
    for b in s.bleu {
        assert!(b < 1.0 && (1.0 - b) < 1e-9, "{b}");
    }
    assert_eq!(s.rouge_l, 1.0);
    // Identical vectors: cosine 1 per order, no length penalty → 10, minus idf-zero n-grams?
    // None here: every n-gram of ref 0 occurs in 1 of 3 refs, so each order's cosine is exactly 1.
    assert!((s.cider - 10.0).abs() < 1e-12, "{}", s.cider);
}

#[test]
fn one_word_hypothesis() {
    let (refs, hyps) = corpus("clear");
    let s = score_without_meteor(&refs, &hyps).unwrap().items[0];
    let reflen = 12.0; // words of refs[0]
    let brevity = (1.0 - 1.0 / ((1.0 + TINY) / (reflen + SMALL))).exp();
    // BLEU-1: one match of one guess. BLEU-2: no bigram at all, so the factor is 1e-15/1e-9.
    let b1 = (1.0 + TINY) / (1.0 + SMALL);
    let b2 = (b1 * ((0.0 + TINY) / (0.0 + SMALL))).powf(0.5);
    assert!((s.bleu[0] - b1 * brevity).abs() < 1e-18);
    assert!((s.bleu[1] - b2 * brevity).abs() < 1e-18);
    assert!(
        s.bleu[1] > 0.0,
        "the smoothing constants keep BLEU-2 above zero"
    );
    // ROUGE-L: lcs 1, P = 1, R = 1/12 → (1 + 1.44)·R / (R + 1.44).
    let (p, rr) = (1.0, 1.0 / 12.0);
    let b2c = 1.2f64.powf(2.0);
    assert!((s.rouge_l - ((1.0 + b2c) * p * rr) / (rr + b2c * p)).abs() < 1e-15);
    assert!(s.cider > 0.0 && s.cider < 1.0, "{}", s.cider);
}

#[test]
fn empty_hypothesis() {
    let (refs, hyps) = corpus("");
    let r = score_without_meteor(&refs, &hyps).unwrap();
    let s = r.items[0];
    // hyplen 0: ratio = 1e-15/(12 + 1e-9), exp(1 - 1/ratio) underflows to 0 → every BLEU-k is 0.
    assert_eq!(s.bleu, [0.0; 4]);
    // "".split(' ') is one empty token, which never matches: ROUGE-L 0 (no division by zero).
    assert_eq!(s.rouge_l, 0.0);
    // No n-grams: every cosine is 0.
    assert_eq!(s.cider, 0.0);
    // The other two items are untouched and the corpus stays finite.
    assert!(r.corpus.bleu.iter().all(|b| b.is_finite()));
    assert!(r.corpus.cider.is_finite() && r.corpus.rouge_l.is_finite());
}

#[test]
fn repeated_ngrams_are_clipped() {
    // The reference has "the" twice and "the lungs" once.
    let (refs, hyps) = corpus("the lungs the lungs the lungs");
    let s = score_without_meteor(&refs, &hyps).unwrap().items[0];
    // Unigrams: the×3 clipped to 2, lungs×3 clipped to 1 → 3 of 6. Bigrams: "the lungs"×3
    // clipped to 1, "lungs the"×2 → 0 → 1 of 5. Trigrams: none of 4 match.
    let brevity = (1.0 - 1.0 / ((6.0 + TINY) / (12.0 + SMALL))).exp();
    let f1 = (3.0 + TINY) / (6.0 + SMALL);
    let f2 = (1.0 + TINY) / (5.0 + SMALL);
    assert!((s.bleu[0] - f1 * brevity).abs() < 1e-15, "{}", s.bleu[0]);
    assert!((s.bleu[1] - (f1 * f2).powf(0.5) * brevity).abs() < 1e-15);
    assert!(s.bleu[2] < 1e-3);
    // CIDEr clips each tf-idf weight at the reference's: repeating cannot beat the reference.
    let once = score_without_meteor(&refs, &corpus("the lungs").1)
        .unwrap()
        .items[0];
    assert!(s.cider < 10.0 && once.cider < 10.0);
}

#[test]
fn meteor_of_identical_and_empty_hypotheses() {
    let (refs, mut hyps) = corpus("the heart is normal in size . the lungs are clear .");
    hyps[1] = String::new();
    let opts = MeteorOpts::locate(None).expect("METEOR jar (run ops/setup.sh)");
    let r = score_items(&refs, &hyps, Some(&opts)).unwrap();
    let m0 = r.items[0].meteor.unwrap();
    let m1 = r.items[1].meteor.unwrap();
    assert!(m0 > 0.9 && m0 <= 1.0, "identical: {m0}");
    assert_eq!(m1, 0.0, "empty hypothesis");
}
