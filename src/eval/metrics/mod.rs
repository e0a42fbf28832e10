//! Report-generation metrics identical to pycocoevalcap 1.2: BLEU-1..4, METEOR, ROUGE-L, CIDEr.
//!
//! Why: papers in this field are compared on pycocoevalcap numbers, so a scorer that differs in
//! the third decimal makes results incomparable. The reference scores *cleaned* strings
//! directly, one reference per sample, without the PTB tokenizer (SPEC §4), and so does this.
//!
//! Guarantees (shown against `../shared/reference/public/metrics.json` by
//! `tests/it/metrics_parity.rs`): BLEU, ROUGE-L and CIDEr equal pycocoevalcap's to the last bit or
//! within 1e-9, METEOR within 1e-6, for corpus and per-item scores. To get there, every score is
//! computed with pycocoevalcap's order of float operations, including numpy's pairwise sums.
//!
//! Edge cases (each tested, behaviour as pycocoevalcap):
//! * identical hypothesis and reference: BLEU-k = 1 − O(1e-10) (the smoothing constants), ROUGE-L = 1,
//!   METEOR ≈ 1, CIDEr high but not a fixed value (idf weights depend on the corpus);
//! * a one-word hypothesis: BLEU-2..4 get their matches from the `1e-15` constant (≈ 1e-9 … 1e-13,
//!   not 0), brevity penalty applies;
//! * an empty hypothesis: BLEU ≈ 0 (≤ 1e-6 after the brevity penalty overflows to 0), ROUGE-L = 0
//!   (its one empty token never matches), CIDEr = 0; METEOR = 0;
//! * repeated n-grams: matches are clipped by the reference counts (BLEU), CIDEr clips tf-idf
//!   weights with `min(hyp, ref)`.
//!
//! An empty corpus is an error (pycocoevalcap divides by zero / takes `ln 0`).
//!
//! Speed (`ithn-dist bench metrics`): each distinct text is tokenised ([`tokens`]), n-gram
//! counted ([`ngrams`]) and tf-idf weighted ([`cider::Weights`]) once per corpus; a pair then
//! only matches n-gram ids through dense arrays and runs a bit-parallel LCS ([`rouge::Lcs`]).
//! Pairs are scored in parallel; corpus sums run afterwards in pair order.

pub mod bleu;
pub mod cider;
pub mod meteor;
pub mod ngrams;
pub mod pymath;
pub mod rouge;
pub mod tokens;

pub use meteor::MeteorOpts;

use crate::eval::ce::CeSummary;
use ngrams::{Matcher, NgramIndex};
use pymath::numpy_mean;
use rayon::prelude::*;
use std::path::PathBuf;
use tokens::{Pairs, Vocab};

/// Everything that can go wrong while scoring.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "{refs} references but {hyps} hypotheses: every hypothesis needs exactly one reference"
    )]
    LengthMismatch { refs: usize, hyps: usize },
    #[error("nothing to score: the corpus is empty")]
    Empty,
    #[error("cannot start Java ({java}) for METEOR: {source}; install a Java runtime (e.g. default-jre-headless) or pass --no-meteor")]
    Java {
        java: PathBuf,
        source: std::io::Error,
    },
    #[error("the METEOR 1.5 jar was not found (looked at: {}); pass --meteor-jar, set ITHN_METEOR_JAR, run ops/setup.sh (it installs pycocoevalcap into .venv), or pass --no-meteor", .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    JarMissing { searched: Vec<PathBuf> },
    #[error("talking to the METEOR jar failed: {0}")]
    MeteorIo(std::io::Error),
    #[error("the METEOR jar misbehaved: {what}{}", if .stderr.is_empty() { String::new() } else { format!("\njava stderr:\n{}", .stderr) })]
    MeteorProtocol { what: String, stderr: String },
}

/// One set of scores (a corpus or a single item), named as pycocoevalcap names them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    /// BLEU-1..BLEU-4.
    pub bleu: [f64; 4],
    /// `None` when METEOR was not requested.
    pub meteor: Option<f64>,
    pub rouge_l: f64,
    pub cider: f64,
    /// Clinical efficacy of the rule-based CheXpert-style labeler (micro and macro P/R/F1,
    /// [`crate::eval::ce`]); set by [`score_corpus`], `None` from the pycocoevalcap scorers.
    pub ce: Option<CeSummary>,
}

/// Key names in pycocoevalcap's order (the order of `score`'s JSON and table).
pub const KEYS: [&str; 7] = [
    "BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr",
];

impl Scores {
    /// `(key, value)` pairs in [`KEYS`] order, then the CE keys ([`CeSummary::entries`]);
    /// METEOR and CE are left out when they were not computed.
    pub fn entries(&self) -> Vec<(&'static str, f64)> {
        let mut out: Vec<(&'static str, f64)> = KEYS[..4].iter().copied().zip(self.bleu).collect();
        if let Some(m) = self.meteor {
            out.push((KEYS[4], m));
        }
        out.push((KEYS[5], self.rouge_l));
        out.push((KEYS[6], self.cider));
        if let Some(ce) = &self.ce {
            out.extend(ce.entries());
        }
        out
    }

    /// The `"BLEU_1":…,…,"CIDEr":…` members in [`KEYS`] order (serde_json's `Map` would sort
    /// them, and readers of published tables expect pycocoevalcap's order).
    pub fn json_members(&self) -> String {
        self.entries()
            .into_iter()
            .map(|(k, v)| format!("\"{k}\":{}", serde_json::Value::from(v)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The JSON text `{"BLEU_1": …, …, "CIDEr": …}` in [`KEYS`] order.
    pub fn to_json_string(&self) -> String {
        format!("{{{}}}", self.json_members())
    }

    /// The scores as a serde_json map (note: serde_json sorts the keys of a `Map`; use
    /// [`Scores::to_json_string`] where the order matters).
    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        self.entries()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), serde_json::json!(v)))
            .collect()
    }
}

/// Corpus scores plus one [`Scores`] per pair, in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreReport {
    pub corpus: Scores,
    pub items: Vec<Scores>,
}

/// Corpus scores of `hyps[i]` against `refs[i]` (cleaned strings), plus clinical efficacy
/// ([`crate::eval::ce::ce_of_texts`]). METEOR runs the jar when `meteor` is given. Call this
/// on one rank: CIDEr's idf depends on the whole corpus.
pub fn score_corpus(
    refs: &[String],
    hyps: &[String],
    meteor: Option<&MeteorOpts>,
) -> Result<Scores, MetricsError> {
    let mut corpus = score_items(refs, hyps, meteor)?.corpus;
    corpus.ce = Some(crate::eval::ce::ce_of_texts(refs, hyps).summary);
    Ok(corpus)
}

/// Like [`score_corpus`], plus the per-item scores.
pub fn score_items(
    refs: &[String],
    hyps: &[String],
    meteor: Option<&MeteorOpts>,
) -> Result<ScoreReport, MetricsError> {
    let fast = score_without_meteor(refs, hyps)?;
    let Some(opts) = meteor else {
        return Ok(fast);
    };
    let (corpus, items) = meteor::meteor(refs, hyps, opts)?;
    let mut report = fast;
    report.corpus.meteor = Some(corpus);
    for (s, m) in report.items.iter_mut().zip(items) {
        s.meteor = Some(m);
    }
    Ok(report)
}

/// BLEU-1..4, ROUGE-L and CIDEr (no Java), corpus and per item.
///
/// One pass does all three: each distinct text is tokenised, n-gram-counted and weighted once,
/// and each pair's n-gram matching serves both BLEU and CIDEr. Pairs are scored in parallel (rayon); every
/// corpus-level sum runs afterwards, sequentially in pair order, so the result does not depend
/// on the number of threads.
pub fn score_without_meteor(refs: &[String], hyps: &[String]) -> Result<ScoreReport, MetricsError> {
    check_pairs(refs, hyps)?;
    let pairs = Pairs::new(refs, hyps);
    let mut vocab = Vocab::default();
    let words = vocab.words(pairs.texts());
    let spaced = vocab.spaced(pairs.texts(), Some(&words));
    let index = NgramIndex::new(&pairs, &words, vocab.len());
    let weights = cider::Weights::new(&index, pairs.len());
    let b2 = rouge::beta_squared();
    let init = || (Matcher::new(&index), rouge::Lcs::new(vocab.len()));
    let per_pair = map_pairs(pairs.len(), init, |(matcher, lcs), i| {
        let texts = (pairs.ref_text(i), pairs.hyp_text(i));
        matcher.run(&index, texts.0, texts.1);
        let stats = bleu::BleuStats::new(&index, matcher, &words, texts);
        let scores = Scores {
            bleu: bleu::item(&stats),
            meteor: None,
            rouge_l: rouge::pair(lcs, &spaced, texts, b2),
            cider: cider::item(&index, &weights, matcher, &words, texts),
            ce: None,
        };
        (stats, scores)
    });
    let (stats, items): (Vec<bleu::BleuStats>, Vec<Scores>) = per_pair.into_iter().unzip();
    let rouges: Vec<f64> = items.iter().map(|s| s.rouge_l).collect();
    let ciders: Vec<f64> = items.iter().map(|s| s.cider).collect();
    let corpus = Scores {
        bleu: bleu::corpus(&stats),
        meteor: None,
        rouge_l: numpy_mean(&rouges),
        cider: numpy_mean(&ciders),
        ce: None,
    };
    Ok(ScoreReport { corpus, items })
}

/// The checks every scorer makes: as many references as hypotheses, and at least one pair
/// (pycocoevalcap divides by zero / takes `ln 0` on an empty corpus).
fn check_pairs(refs: &[String], hyps: &[String]) -> Result<(), MetricsError> {
    if refs.len() != hyps.len() {
        return Err(MetricsError::LengthMismatch {
            refs: refs.len(),
            hyps: hyps.len(),
        });
    }
    if refs.is_empty() {
        return Err(MetricsError::Empty);
    }
    Ok(())
}

/// `f(scratch, i)` for every pair `i < n`, in parallel, results in pair order. Each rayon job
/// gets its own scratch from `init`; jobs are at least `n / (4 · threads)` pairs long, so the
/// (large, dense) scratch tables are set up a handful of times, not once per pair.
fn map_pairs<W, T: Send>(
    n: usize,
    init: impl Fn() -> W + Sync + Send,
    f: impl Fn(&mut W, usize) -> T + Sync + Send,
) -> Vec<T> {
    let min_len = n.div_ceil(4 * rayon::current_num_threads()).max(1);
    (0..n)
        .into_par_iter()
        .with_min_len(min_len)
        .map_init(init, f)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn mismatched_and_empty_inputs_are_errors() {
        assert!(matches!(
            score_without_meteor(&s(&["a"]), &s(&[])),
            Err(MetricsError::LengthMismatch { refs: 1, hyps: 0 })
        ));
        assert!(matches!(
            score_without_meteor(&[], &[]),
            Err(MetricsError::Empty)
        ));
    }

    #[test]
    fn entries_follow_pycocoevalcap_key_order() {
        let sc = Scores {
            bleu: [1.0, 2.0, 3.0, 4.0],
            meteor: None,
            rouge_l: 5.0,
            cider: 6.0,
            ce: None,
        };
        let keys: Vec<&str> = sc.entries().iter().map(|e| e.0).collect();
        assert_eq!(
            keys,
            ["BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "ROUGE_L", "CIDEr"]
        );
    }

    /// Texts that exercise every tokeniser path: doubled/leading spaces and a tab (the two
    /// splits differ), non-ASCII, a token longer than 15 bytes, duplicates on both sides, an
    /// empty hypothesis.
    fn tricky() -> (Vec<String>, Vec<String>) {
        let refs = s(&[
            "the heart  is normal .",
            " lungs are clear",
            "café\u{a0}au lait . pneumomediastinum-like lucency",
            "the heart  is normal .",
            "no effusion",
        ]);
        let hyps = s(&[
            "the heart is normal .",
            "lungs\tare clear",
            "café au lait . pneumomediastinum-like lucency",
            "the heart  is normal .",
            "",
        ]);
        (refs, hyps)
    }

    fn bits(r: &ScoreReport) -> Vec<u64> {
        std::iter::once(&r.corpus)
            .chain(&r.items)
            .flat_map(|s| s.entries())
            .map(|e| e.1.to_bits())
            .collect()
    }

    #[test]
    fn rouge_uses_the_single_space_split() {
        // Pair 0: "the heart  is normal ." splits on ' ' into 6 tokens (one empty), the
        // hypothesis into 5, all 5 in common: P = 5/5, R = 5/6 (pycocoevalcap's my_lcs).
        let (refs, hyps) = tricky();
        let r = score_without_meteor(&refs, &hyps).unwrap();
        let (p, rc, b2) = (1.0f64, 5.0f64 / 6.0, pymath::py_pow(1.2, 2.0));
        let want = ((1.0 + b2) * p * rc) / (rc + b2 * p);
        assert_eq!(r.items[0].rouge_l, want);
        // BLEU splits on whitespace runs: the same pair is identical for BLEU.
        assert!((r.items[0].bleu[3] - 1.0).abs() < 1e-9);
        // Pair 1: "lungs\tare clear" is 2 tokens for ROUGE-L (no ' ' between lungs and are).
        let lcs_1 = 1.0; // "clear"; " lungs are clear" has 4 tokens ["", lungs, are, clear]
        let (p, rc) = (lcs_1 / 2.0, lcs_1 / 4.0);
        assert_eq!(r.items[1].rouge_l, ((1.0 + b2) * p * rc) / (rc + b2 * p));
        assert_eq!(r.items[4].rouge_l, 0.0);
        assert_eq!(r.items[4].cider, 0.0);
    }

    #[test]
    fn one_pass_equals_each_metric_alone_on_any_thread_count() {
        let (refs, hyps) = tricky();
        let on = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| score_without_meteor(&refs, &hyps).unwrap())
        };
        let one = on(1);
        assert_eq!(bits(&one), bits(&on(3)));
        let (b, b_items) = bleu::score(&refs, &hyps).unwrap();
        let (r, r_items) = rouge::score(&refs, &hyps).unwrap();
        let (c, c_items) = cider::score(&refs, &hyps).unwrap();
        let alone = ScoreReport {
            corpus: Scores {
                bleu: b,
                meteor: None,
                rouge_l: r,
                cider: c,
                ce: None,
            },
            items: (0..refs.len())
                .map(|i| Scores {
                    bleu: b_items[i],
                    meteor: None,
                    rouge_l: r_items[i],
                    cider: c_items[i],
                    ce: None,
                })
                .collect(),
        };
        assert_eq!(bits(&one), bits(&alone));
    }
}
