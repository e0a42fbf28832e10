//! Hard-negative mining: for every training sample, the most similar *other* training sample
//! by TF-IDF cosine over its cleaned report.
//!
//! Why it exists: ITHN trains on one hard-negative (report, image) pair per sample, and its
//! authors never published how they mined theirs. This is the documented, reproducible choice.
//!
//! Definition (what [`brute_force`] computes literally, and [`mine`] computes fast):
//! - tokens = whitespace tokens of the cleaned report, without the sentence separator `.`;
//! - weight of term t in a report = (1 + ln tf) · (ln((1 + N) / (1 + df_t)) + 1), with N the
//!   number of training samples and df_t the number of them containing t; each vector is
//!   L2-normalised, so the dot product is the cosine;
//! - sample j is *eligible* for sample i when their cleaned reports differ (MIMIC has thousands
//!   of identical normal reports; an identical report is no negative) and they do not belong
//!   to the same known patient;
//! - the negative of i maximises the cosine over eligible j; ties go to the report text seen
//!   first (in sample order), then to the smallest sample index. A sample with no eligible
//!   partner (a train split of a single text) gets none.
//!
//! Speed (MIMIC scale: 270k reports in minutes on two cores): identical texts are scored once;
//! each distinct text finds its best other text with the exact pruned search of [`search`]
//! (seeded threshold, prefix-filtered inverted index, signature-sharpened bounds); a sample
//! whose best text belongs entirely to its own patient searches again with that patient's
//! texts excluded. Every exact score is the same f64 sum of the same products in the same
//! order ([`index::Index::dot`]), so the fast path and the brute force agree bit for bit.

mod index;
mod search;

use std::collections::HashMap;

use rayon::prelude::*;

use crate::data::text::py_split_whitespace;
use index::Index;

/// The negative chosen for one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Negative {
    /// Sample index (position in the slices given to [`mine`]).
    pub index: usize,
    /// TF-IDF cosine between the two cleaned reports.
    pub score: f32,
}

/// Distinct texts in first-occurrence order and, per text, its samples in ascending order.
struct Texts {
    of_sample: Vec<usize>,
    samples: Vec<Vec<usize>>,
}

fn group_texts(cleaned: &[String]) -> Texts {
    let mut ids: HashMap<&str, usize> = HashMap::new();
    let mut of_sample = Vec::with_capacity(cleaned.len());
    let mut samples: Vec<Vec<usize>> = Vec::new();
    for (i, text) in cleaned.iter().enumerate() {
        let next = samples.len();
        let u = *ids.entry(text.as_str()).or_insert(next);
        if u == next {
            samples.push(Vec::new());
        }
        samples[u].push(i);
        of_sample.push(u);
    }
    Texts { of_sample, samples }
}

fn tokens(text: &str) -> impl Iterator<Item = &str> {
    py_split_whitespace(text).filter(|t| *t != ".")
}

fn build_index(cleaned: &[String], texts: &Texts) -> Index {
    let weight: Vec<usize> = texts.samples.iter().map(Vec::len).collect();
    let first = texts.samples.iter().map(|s| tokens(&cleaned[s[0]]));
    Index::build(first, &weight, cleaned.len())
}

fn same_patient(patients: &[Option<String>], i: usize, j: usize) -> bool {
    matches!((&patients[i], &patients[j]), (Some(a), Some(b)) if a == b)
}

/// The smallest sample of text `v` that sample `i` may take as its negative.
fn eligible_sample(
    texts: &Texts,
    patients: &[Option<String>],
    i: usize,
    v: usize,
) -> Option<usize> {
    texts.samples[v]
        .iter()
        .copied()
        .find(|&j| !same_patient(patients, i, j))
}

/// Mines the negative of every sample. `cleaned[i]` is sample i's cleaned report and
/// `patients[i]` its patient when known. Runs on the rayon pool; `progress` is ticked once per
/// distinct text.
pub fn mine(
    cleaned: &[String],
    patients: &[Option<String>],
    progress: &indicatif::ProgressBar,
) -> Vec<Option<Negative>> {
    assert_eq!(
        cleaned.len(),
        patients.len(),
        "one patient entry per report"
    );
    let texts = group_texts(cleaned);
    let index = build_index(cleaned, &texts);
    let n_texts = texts.samples.len();
    progress.set_length(n_texts as u64);
    let all: Vec<usize> = (0..n_texts).collect();
    let tick = || progress.inc(1);
    let tops = search::best_texts(&index, &all, &|_, _| true, &tick);
    progress.finish_and_clear();

    let pick = |i: usize, top: Option<(f64, usize)>| {
        top.and_then(|(score, v)| {
            eligible_sample(&texts, patients, i, v).map(|j| Negative {
                index: j,
                score: score as f32,
            })
        })
    };
    let mut negs: Vec<Option<Negative>> = (0..cleaned.len())
        .into_par_iter()
        .map(|i| pick(i, tops[texts.of_sample[i]]))
        .collect();
    // Rare: the best text's samples all belong to this sample's patient. Search again with
    // every text that has no other patient's sample excluded.
    let retry: Vec<usize> = (0..cleaned.len())
        .filter(|&i| negs[i].is_none() && tops[texts.of_sample[i]].is_some())
        .collect();
    if !retry.is_empty() {
        let queries: Vec<usize> = retry.iter().map(|&i| texts.of_sample[i]).collect();
        let admissible =
            |pos: usize, v: usize| eligible_sample(&texts, patients, retry[pos], v).is_some();
        let again = search::best_texts(&index, &queries, &admissible, &|| {});
        for (pos, &i) in retry.iter().enumerate() {
            negs[i] = pick(i, again[pos]);
        }
    }
    negs
}

/// The definition, literally: every pair, O(n²). For tests and spot checks.
pub fn brute_force(cleaned: &[String], patients: &[Option<String>]) -> Vec<Option<Negative>> {
    let texts = group_texts(cleaned);
    let index = build_index(cleaned, &texts);
    let row = |i: usize| index.row_of[texts.of_sample[i]] as usize;
    (0..cleaned.len())
        .map(|i| {
            let u = texts.of_sample[i];
            let mut best: Option<(f64, usize, usize)> = None;
            for j in 0..cleaned.len() {
                let v = texts.of_sample[j];
                if v == u || same_patient(patients, i, j) {
                    continue;
                }
                let cand = (index.dot(row(i), row(j)), v, j);
                let better = match best {
                    None => true,
                    Some(b) => {
                        (cand.0, std::cmp::Reverse(cand.1), std::cmp::Reverse(cand.2))
                            > (b.0, std::cmp::Reverse(b.1), std::cmp::Reverse(b.2))
                    }
                };
                if better {
                    best = Some(cand);
                }
            }
            best.map(|(score, _, j)| Negative {
                index: j,
                score: score as f32,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hidden() -> indicatif::ProgressBar {
        indicatif::ProgressBar::hidden()
    }

    /// A small deterministic corpus with many duplicates, shared words and repeated patients.
    fn corpus(n: usize, seed: u64) -> (Vec<String>, Vec<Option<String>>) {
        let words = [
            "heart",
            "size",
            "normal",
            "lungs",
            "clear",
            "no",
            "effusion",
            "pneumothorax",
            "mild",
            "cardiomegaly",
            "opacity",
            "left",
            "right",
            "base",
            "stable",
            "the",
        ];
        let mut state = seed;
        let mut next = move |m: u64| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) % m
        };
        let mut reports = Vec::new();
        let mut patients = Vec::new();
        for _ in 0..n {
            let len = 1 + next(6) as usize;
            let mut r: Vec<&str> = (0..len)
                .map(|_| words[next(words.len() as u64) as usize])
                .collect();
            if next(3) == 0 {
                r.truncate(2); // short texts collide often: duplicates
            }
            reports.push(format!("{} .", r.join(" ")));
            patients.push(if next(4) == 0 {
                None
            } else {
                Some(format!("p{}", next(8)))
            });
        }
        (reports, patients)
    }

    #[test]
    fn matches_brute_force_on_random_corpora() {
        for seed in 0..6 {
            let (reports, patients) = corpus(150, seed);
            let fast = mine(&reports, &patients, &hidden());
            let slow = brute_force(&reports, &patients);
            assert_eq!(fast, slow, "seed {seed}");
            for (i, neg) in fast.iter().enumerate() {
                let neg = neg.expect("corpus has many texts and patients");
                assert_ne!(
                    reports[i], reports[neg.index],
                    "identical text chosen for {i}"
                );
                assert!(
                    !same_patient(&patients, i, neg.index),
                    "same patient for {i}"
                );
            }
        }
    }

    /// Reports assembled like the bench's: 3–8 sentences drawn with skewed frequencies from a
    /// small pool, so texts share common words and near-duplicates abound. Patients hold 4
    /// consecutive reports; with `follow_ups`, a patient's reports are one report with one
    /// sentence swapped each time, so a sample's closest text is usually its own patient's.
    fn templated(n: usize, seed: u64, follow_ups: bool) -> (Vec<String>, Vec<Option<String>>) {
        let words = [
            "the",
            "heart",
            "is",
            "normal",
            "in",
            "size",
            "lungs",
            "are",
            "clear",
            "no",
            "pleural",
            "effusion",
            "or",
            "pneumothorax",
            "mild",
            "cardiomegaly",
            "stable",
            "degenerative",
            "changes",
            "of",
            "spine",
            "focal",
            "consolidation",
            "left",
            "base",
            "atelectasis",
            "right",
            "granuloma",
            "calcified",
            "aorta",
            "tortuous",
            "acute",
        ];
        let mut state = seed.wrapping_add(7);
        let mut next = move |m: usize| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) % m as u64) as usize
        };
        // Sentence i is drawn with weight ~1/(i+1): a few very common sentences, many rare.
        let pool: Vec<String> = (0..60)
            .map(|_| {
                let len = 2 + next(6);
                let mut s: Vec<&str> = (0..len).map(|_| words[next(8) * next(5) % 32]).collect();
                s.push(".");
                s.join(" ")
            })
            .collect();
        let mut draw = move || pool[next(60) * next(60) / 60].clone();
        let mut reports = Vec::with_capacity(n);
        let mut patients = Vec::with_capacity(n);
        let mut base: Vec<String> = Vec::new();
        for i in 0..n {
            if i % 4 == 0 || !follow_ups {
                base = (0..3 + i % 6).map(|_| draw()).collect();
            } else {
                let k = i % base.len();
                base[k] = draw();
            }
            reports.push(base.join(" "));
            patients.push((i % 11 != 0).then(|| format!("p{}", i / 4)));
        }
        (reports, patients)
    }

    #[test]
    fn matches_brute_force_on_templated_reports_with_patients() {
        for (seed, follow_ups) in [(1, false), (2, true), (3, true), (4, false)] {
            let (reports, patients) = templated(500, seed, follow_ups);
            let distinct = reports
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len();
            assert!(
                distinct > 100,
                "seed {seed}: only {distinct} distinct texts"
            );
            let fast = mine(&reports, &patients, &hidden());
            assert_eq!(fast, brute_force(&reports, &patients), "seed {seed}");
            assert!(fast.iter().all(Option::is_some), "seed {seed}");
        }
    }

    #[test]
    fn follow_up_corpora_exercise_the_patient_retry() {
        // The retry path runs when a sample's best text has only its own patient's samples.
        let (reports, patients) = templated(400, 9, true);
        let texts = group_texts(&reports);
        let index = build_index(&reports, &texts);
        let all: Vec<usize> = (0..texts.samples.len()).collect();
        let tops = search::best_texts(&index, &all, &|_, _| true, &|| {});
        let blocked = (0..reports.len())
            .filter(|&i| {
                let (_, v) = tops[texts.of_sample[i]].expect("many texts");
                eligible_sample(&texts, &patients, i, v).is_none()
            })
            .count();
        assert!(blocked > 20, "only {blocked} samples need the retry");
        assert_eq!(
            mine(&reports, &patients, &hidden()),
            brute_force(&reports, &patients)
        );
    }

    #[test]
    fn matches_brute_force_with_a_vocabulary_larger_than_the_signature() {
        // 600 terms: the 128-bit signatures collide, so they must only ever over-estimate.
        let mut state = 11u64;
        let mut next = move |m: u64| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) % m
        };
        let reports: Vec<String> = (0..300)
            .map(|_| {
                let len = 5 + next(40);
                let words: Vec<String> = (0..len)
                    .map(|_| format!("w{}", next(600) * next(600) / 600))
                    .collect();
                words.join(" ")
            })
            .collect();
        let patients: Vec<Option<String>> = (0..300).map(|i| Some(format!("p{}", i / 3))).collect();
        assert_eq!(
            mine(&reports, &patients, &hidden()),
            brute_force(&reports, &patients)
        );
    }

    #[test]
    fn without_patients_matches_brute_force() {
        let (reports, _) = corpus(200, 42);
        let none = vec![None; reports.len()];
        assert_eq!(
            mine(&reports, &none, &hidden()),
            brute_force(&reports, &none)
        );
    }

    #[test]
    fn picks_the_obvious_neighbour_and_breaks_ties_by_first_text() {
        let reports: Vec<String> = [
            "heart normal . lungs clear .",
            "heart normal . lungs clear .",
            "heart normal . lungs clear . no effusion .",
            "large effusion .",
            "heart normal . lungs clear . no effusion .",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let none = vec![None; reports.len()];
        let negs = mine(&reports, &none, &hidden());
        // 0 and 1 are identical: both take the first sample of the closest other text (2).
        assert_eq!(negs[0].map(|n| n.index), Some(2));
        assert_eq!(negs[1].map(|n| n.index), Some(2));
        assert_eq!(negs[2].map(|n| n.index), Some(0));
        assert_eq!(negs[4].map(|n| n.index), Some(0));
        let s = negs[0].map(|n| n.score).unwrap_or(0.0);
        assert!(s > 0.5 && s < 1.0, "cosine of near duplicates: {s}");
    }

    #[test]
    fn patient_exclusion_falls_back_beyond_the_short_list() {
        // Text 0's three closest texts all belong to its own patient.
        let reports: Vec<String> = ["a b c d", "a b c", "a b d", "a c d", "x y"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let patients: Vec<Option<String>> = ["p", "p", "p", "p", "q"]
            .iter()
            .map(|s| Some(s.to_string()))
            .collect();
        let negs = mine(&reports, &patients, &hidden());
        assert_eq!(negs, brute_force(&reports, &patients));
        assert_eq!(negs[0].map(|n| n.index), Some(4));
        assert_eq!(negs[0].map(|n| n.score), Some(0.0));
    }

    #[test]
    fn a_single_text_has_no_negative() {
        let reports = vec!["same .".to_string(); 3];
        let none = vec![None; 3];
        assert_eq!(mine(&reports, &none, &hidden()), vec![None; 3]);
    }
}
