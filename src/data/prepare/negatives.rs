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
//! Speed (MIMIC: 270k reports in minutes on two cores): identical texts are scored once; each
//! distinct text queries an inverted index term-at-a-time, rarest terms first, and stops
//! admitting new candidates as soon as the Cauchy–Schwarz bound on the unread terms
//! (‖q_rest‖₂) falls below the k-th best exact score found so far. Candidates are then pruned
//! by the per-document bound `partial + ‖q_rest‖·√(1 − ‖d_read‖²)` and only survivors get an
//! exact dot product. Exact scores are always computed by the same merge (term-id order, f64),
//! so the fast path and the brute force agree bit for bit; bounds carry a slack of [`SLACK`]
//! so that float rounding in the partial sums can never prune a true winner.

use std::collections::HashMap;

use rayon::prelude::*;

use crate::data::text::py_split_whitespace;

/// Safety margin on every pruning bound (scores live in [0, 1]).
const SLACK: f64 = 1e-4;
/// How many best texts a distinct text keeps. One keeps the pruning threshold as high as
/// possible from the first term on; patient exclusion reruns the search when needed.
const TOP_K: usize = 1;

/// The negative chosen for one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Negative {
    /// Sample index (position in the slices given to [`mine`]).
    pub index: usize,
    /// TF-IDF cosine between the two cleaned reports.
    pub score: f32,
}

/// Sparse L2-normalised TF-IDF vectors of the distinct texts, with an inverted index.
struct Index {
    /// CSR forward index: the terms of text `u` are `terms[ptr[u]..ptr[u+1]]`, ascending.
    ptr: Vec<usize>,
    terms: Vec<u32>,
    weights: Vec<f32>,
    /// CSR inverted index: the texts containing term t, ascending, with their weights.
    post_ptr: Vec<usize>,
    post_doc: Vec<u32>,
    post_w: Vec<f32>,
    /// The largest weight of each term over all texts (a per-term bound on any product).
    max_w: Vec<f32>,
}

impl Index {
    fn n_texts(&self) -> usize {
        self.ptr.len() - 1
    }

    fn doc(&self, u: usize) -> (&[u32], &[f32]) {
        let r = self.ptr[u]..self.ptr[u + 1];
        (&self.terms[r.clone()], &self.weights[r])
    }

    fn postings(&self, t: u32) -> (&[u32], &[f32]) {
        let r = self.post_ptr[t as usize]..self.post_ptr[t as usize + 1];
        (&self.post_doc[r.clone()], &self.post_w[r])
    }

    /// The exact cosine: a merge in term-id order, accumulated in f64. Symmetric bit for bit.
    fn dot(&self, a: usize, b: usize) -> f64 {
        let (ta, wa) = self.doc(a);
        let (tb, wb) = self.doc(b);
        let (mut i, mut j, mut s) = (0, 0, 0.0f64);
        while i < ta.len() && j < tb.len() {
            match ta[i].cmp(&tb[j]) {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    s += f64::from(wa[i]) * f64::from(wb[j]);
                    i += 1;
                    j += 1;
                }
            }
        }
        s
    }
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
    // Term ids by first occurrence over the distinct texts: deterministic, no sorting needed.
    let mut term_ids: HashMap<&str, u32> = HashMap::new();
    let mut counts: Vec<Vec<(u32, u32)>> = Vec::with_capacity(texts.samples.len());
    let mut df: Vec<u64> = Vec::new();
    for samples in &texts.samples {
        let mut tf: HashMap<u32, u32> = HashMap::new();
        for tok in tokens(&cleaned[samples[0]]) {
            let next = term_ids.len() as u32;
            let t = *term_ids.entry(tok).or_insert(next);
            if t == next {
                df.push(0);
            }
            *tf.entry(t).or_insert(0) += 1;
        }
        let mut tf: Vec<(u32, u32)> = tf.into_iter().collect();
        tf.sort_unstable();
        for &(t, _) in &tf {
            df[t as usize] += samples.len() as u64;
        }
        counts.push(tf);
    }
    let n = cleaned.len() as f64;
    let idf: Vec<f64> = df
        .iter()
        .map(|&d| ((1.0 + n) / (1.0 + d as f64)).ln() + 1.0)
        .collect();

    let mut ptr = vec![0usize];
    let (mut terms, mut weights) = (Vec::new(), Vec::new());
    let mut post_len = vec![0usize; df.len()];
    for tf in &counts {
        let raw: Vec<f64> = tf
            .iter()
            .map(|&(t, c)| (1.0 + f64::from(c).ln()) * idf[t as usize])
            .collect();
        let norm = raw.iter().map(|w| w * w).sum::<f64>().sqrt();
        for (&(t, _), w) in tf.iter().zip(raw) {
            terms.push(t);
            weights.push((w / norm) as f32);
            post_len[t as usize] += 1;
        }
        ptr.push(terms.len());
    }
    let mut post_ptr = vec![0usize; df.len() + 1];
    for t in 0..df.len() {
        post_ptr[t + 1] = post_ptr[t] + post_len[t];
    }
    let mut fill = post_ptr.clone();
    let mut post_doc = vec![0u32; terms.len()];
    let mut post_w = vec![0f32; terms.len()];
    for u in 0..counts.len() {
        for k in ptr[u]..ptr[u + 1] {
            let t = terms[k] as usize;
            post_doc[fill[t]] = u as u32;
            post_w[fill[t]] = weights[k];
            fill[t] += 1;
        }
    }
    let mut max_w = vec![0f32; df.len()];
    for (&t, &w) in terms.iter().zip(&weights) {
        max_w[t as usize] = max_w[t as usize].max(w);
    }
    Index {
        ptr,
        terms,
        weights,
        post_ptr,
        post_doc,
        post_w,
        max_w,
    }
}

/// The best texts found so far, ordered by (score descending, text ascending), at most `k`.
struct TopK {
    k: usize,
    items: Vec<(f64, usize)>,
}

impl TopK {
    fn new(k: usize) -> Self {
        TopK {
            k,
            items: Vec::with_capacity(k + 1),
        }
    }
    fn better(a: (f64, usize), b: (f64, usize)) -> bool {
        a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
    }
    /// Score of the k-th entry: anything that cannot reach it is useless (−∞ while not full).
    fn threshold(&self) -> f64 {
        if self.items.len() < self.k {
            f64::NEG_INFINITY
        } else {
            self.items[self.k - 1].0
        }
    }
    fn contains(&self, v: usize) -> bool {
        self.items.iter().any(|&(_, u)| u == v)
    }
    fn offer(&mut self, item: (f64, usize)) {
        if self.contains(item.1) {
            return;
        }
        let pos = self
            .items
            .iter()
            .position(|&x| Self::better(item, x))
            .unwrap_or(self.items.len());
        if pos < self.k {
            self.items.insert(pos, item);
            self.items.truncate(self.k);
        }
    }
}

/// A candidate text with its score bound, ordered by bound (then lower text first).
struct Cand(f64, u32);

impl PartialEq for Cand {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for Cand {}
impl PartialOrd for Cand {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Cand {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0).then(other.1.cmp(&self.1))
    }
}

/// Per-thread scratch space of one query, reused across queries.
struct Scratch {
    acc: Vec<f32>,
    acc2: Vec<f32>,
    stamp: Vec<u32>,
    epoch: u32,
    touched: Vec<u32>,
}

impl Scratch {
    fn new(n: usize) -> Self {
        Scratch {
            acc: vec![0.0; n],
            acc2: vec![0.0; n],
            stamp: vec![0; n],
            epoch: 0,
            touched: Vec::new(),
        }
    }
}

/// The `k` best admissible texts for text `u` (never `u` itself), exactly.
fn search(
    index: &Index,
    u: usize,
    k: usize,
    admissible: &dyn Fn(usize) -> bool,
    s: &mut Scratch,
) -> Vec<(f64, usize)> {
    s.epoch = s.epoch.wrapping_add(1);
    if s.epoch == 0 {
        s.stamp.iter_mut().for_each(|x| *x = 0);
        s.epoch = 1;
    }
    s.touched.clear();
    let (qt, qw) = index.doc(u);
    // Largest query weights (rarest terms) first: the unread norm shrinks fastest.
    let mut order: Vec<usize> = (0..qt.len()).collect();
    order.sort_by(|&a, &b| qw[b].total_cmp(&qw[a]).then(qt[a].cmp(&qt[b])));
    // Two bounds on what the unread terms can add to any text: Cauchy–Schwarz (‖q_rest‖₂,
    // tight for rare terms) and Σ q_t·max_w_t (tight for common terms, whose weights are small).
    let mut rest2: f64 = order.iter().map(|&i| f64::from(qw[i]).powi(2)).sum();
    let mut rest_lin: f64 = order
        .iter()
        .map(|&i| f64::from(qw[i]) * f64::from(index.max_w[qt[i] as usize]))
        .sum();
    let rest_bound = |rest2: f64, rest_lin: f64| rest2.max(0.0).sqrt().min(rest_lin.max(0.0));
    let mut top = TopK::new(k);
    for &i in &order {
        if rest_bound(rest2, rest_lin) + SLACK < top.threshold() {
            break;
        }
        let q = qw[i];
        let (docs, ws) = index.postings(qt[i]);
        let mut best: Option<(f32, u32)> = None;
        for (&d, &w) in docs.iter().zip(ws) {
            let di = d as usize;
            if di == u {
                continue;
            }
            if s.stamp[di] != s.epoch {
                s.stamp[di] = s.epoch;
                s.acc[di] = 0.0;
                s.acc2[di] = 0.0;
                s.touched.push(d);
            }
            s.acc[di] += q * w;
            s.acc2[di] += w * w;
            if best.is_none_or(|(b, _)| s.acc[di] > b) && admissible(di) {
                best = Some((s.acc[di], d));
            }
        }
        rest2 -= f64::from(q).powi(2);
        rest_lin -= f64::from(q) * f64::from(index.max_w[qt[i] as usize]);
        // The best partial sum is a good candidate: its exact score raises the threshold early.
        if let Some((_, d)) = best {
            top.offer((index.dot(u, d as usize), d as usize));
        }
    }
    let rest = rest2.max(0.0).sqrt();
    let rest_lin = rest_lin.max(0.0);
    // Survivors of the per-text bound, best bound first, so the threshold rises quickly and
    // the scan stops at the first bound below it.
    let threshold = top.threshold();
    let cands: Vec<(f64, u32)> = s
        .touched
        .iter()
        .filter_map(|&d| {
            let di = d as usize;
            let cs = rest * (1.0 - f64::from(s.acc2[di])).max(0.0).sqrt();
            let bound = f64::from(s.acc[di]) + cs.min(rest_lin) + SLACK;
            (bound >= threshold).then_some((bound, d))
        })
        .collect();
    // A heap, not a sort: usually only a few candidates are popped before the bound drops
    // below the threshold, and heapify is linear.
    let mut heap: std::collections::BinaryHeap<Cand> =
        cands.into_iter().map(|(b, d)| Cand(b, d)).collect();
    while let Some(Cand(bound, d)) = heap.pop() {
        if bound < top.threshold() {
            break;
        }
        let di = d as usize;
        if !top.contains(di) && admissible(di) {
            top.offer((index.dot(u, di), di));
        }
    }
    if top.items.len() < k {
        // Every admissible touched text is in `top`; the rest share no term: cosine exactly 0.
        for v in 0..index.n_texts() {
            if top.items.len() >= k {
                break;
            }
            if v != u && (s.stamp[v] != s.epoch) && admissible(v) {
                top.offer((0.0, v));
            }
        }
    }
    top.items
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
    let tops: Vec<Vec<(f64, usize)>> = (0..n_texts)
        .into_par_iter()
        .map_init(
            || Scratch::new(n_texts),
            |s, u| {
                progress.inc(1);
                search(&index, u, TOP_K, &|v| v != u, s)
            },
        )
        .collect();
    progress.finish_and_clear();

    (0..cleaned.len())
        .into_par_iter()
        .map_init(
            || None::<Scratch>,
            |scratch, i| {
                let u = texts.of_sample[i];
                let pick = |list: &[(f64, usize)]| {
                    list.iter().find_map(|&(score, v)| {
                        eligible_sample(&texts, patients, i, v).map(|j| Negative {
                            index: j,
                            score: score as f32,
                        })
                    })
                };
                if let Some(neg) = pick(&tops[u]) {
                    return Some(neg);
                }
                if tops[u].len() < TOP_K {
                    return None; // the list already holds every other text
                }
                // Rare: every text of the short list belongs only to this patient.
                let s = scratch.get_or_insert_with(|| Scratch::new(n_texts));
                let admissible =
                    |v: usize| v != u && eligible_sample(&texts, patients, i, v).is_some();
                pick(&search(&index, u, 1, &admissible, s))
            },
        )
        .collect()
}

/// The definition, literally: every pair, O(n²). For tests and spot checks.
pub fn brute_force(cleaned: &[String], patients: &[Option<String>]) -> Vec<Option<Negative>> {
    let texts = group_texts(cleaned);
    let index = build_index(cleaned, &texts);
    (0..cleaned.len())
        .map(|i| {
            let u = texts.of_sample[i];
            let mut best: Option<(f64, usize, usize)> = None;
            for j in 0..cleaned.len() {
                let v = texts.of_sample[j];
                if v == u || same_patient(patients, i, j) {
                    continue;
                }
                let cand = (index.dot(u, v), v, j);
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
