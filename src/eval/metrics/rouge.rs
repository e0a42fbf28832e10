//! ROUGE-L (LCS F-measure, β = 1.2) exactly as pycocoevalcap 1.2's `Rouge`.
//!
//! The reference splits on the single character `' '`, not on runs of whitespace, so double
//! spaces produce empty tokens that take part in the LCS; callers pass the `' '` split
//! ([`super::tokens::Vocab::spaced`]).
//!
//! Why bit-parallel: the LCS length is an integer, so any exact algorithm gives identical
//! scores. The reference fills an |a|·|b| table; here the LCS length is computed with one
//! machine word per 64 tokens of the shorter sentence (Hyyrö's bit-vector recurrence), which for
//! report-length sentences is one add and a few logic operations per token.

use super::pymath::numpy_mean;
use super::tokens::{Pairs, Tokenized, Vocab};
use super::MetricsError;

const BETA: f64 = 1.2;

/// Scratch for [`Lcs::length`], reused across pairs (one per worker thread): the match masks of the
/// shorter sentence, indexed through a dense per-token slot table (all zero between calls).
pub struct Lcs {
    /// `slot[token]` = 1 + index of the token's mask in `masks`; 0 when absent.
    slot: Vec<u32>,
    masks: Vec<u64>,
    row: Vec<u64>,
}

impl Lcs {
    /// Scratch for token ids below `vocab`.
    pub fn new(vocab: usize) -> Lcs {
        Lcs {
            slot: vec![0; vocab],
            masks: Vec::new(),
            row: Vec::new(),
        }
    }

    /// Length of the longest common subsequence of `a` and `b`.
    ///
    /// Bit j of the row vector `v` is 0 where the LCS of the prefix of `a` read so far and
    /// `b[..=j]` grows at j; each token `t` of `a` updates it as
    /// `v = (v + (v & m)) | (v & !m)` with `m` the positions of `t` in `b` (the subtraction in
    /// the textbook form `(v + u) | (v - u)` never borrows, since `u = v & m` ⊆ `v`).
    /// The LCS length is the number of zero bits among the |b| low bits.
    pub fn length(&mut self, a: &[u32], b: &[u32]) -> usize {
        let (a, b) = if a.len() >= b.len() { (a, b) } else { (b, a) };
        if b.is_empty() {
            return 0;
        }
        let words = b.len().div_ceil(64);
        self.masks.clear();
        for (j, &t) in b.iter().enumerate() {
            let slot = &mut self.slot[t as usize];
            if *slot == 0 {
                self.masks.resize(self.masks.len() + words, 0);
                *slot = (self.masks.len() / words) as u32;
            }
            self.masks[(*slot as usize - 1) * words + j / 64] |= 1 << (j % 64);
        }
        self.row.clear();
        self.row.resize(words, !0);
        for &t in a {
            let s = self.slot[t as usize] as usize;
            if s == 0 {
                continue; // no match: v is unchanged
            }
            let m = &self.masks[(s - 1) * words..s * words];
            let mut carry = false;
            for (v, &m) in self.row.iter_mut().zip(m) {
                let u = *v & m;
                let (sum, c1) = v.overflowing_add(u);
                let (sum, c2) = sum.overflowing_add(carry as u64);
                carry = c1 || c2;
                *v = sum | (*v & !m);
            }
        }
        for &t in b {
            self.slot[t as usize] = 0;
        }
        // Bits above |b| in the last word are never matched; only the low |b| bits count.
        let tail = b.len() % 64;
        let ones: usize = self
            .row
            .iter()
            .enumerate()
            .map(|(w, &v)| {
                let v = if w == words - 1 && tail != 0 {
                    v & ((1u64 << tail) - 1)
                } else {
                    v
                };
                v.count_ones() as usize
            })
            .sum();
        b.len() - ones
    }
}

/// The reference's `my_lcs` table, kept as the test oracle for [`Lcs::length`].
#[cfg(test)]
fn lcs_table(a: &[u32], b: &[u32]) -> usize {
    let mut row = vec![0usize; b.len() + 1];
    for &x in a {
        let mut diag = 0usize;
        for (j, &y) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = if x == y { diag + 1 } else { up.max(row[j]) };
            diag = up;
        }
    }
    row[b.len()]
}

/// `β²` as the reference computes it (`beta**2`, C `pow`).
pub fn beta_squared() -> f64 {
    super::pymath::py_pow(BETA, 2.0)
}

/// ROUGE-L from the LCS length and the two lengths (both ≥ 1 for `' '`-split sentences), in
/// the reference's order of operations; `b2` is [`beta_squared`].
pub fn item(lcs: usize, ref_len: usize, hyp_len: usize, b2: f64) -> f64 {
    let lcs = lcs as f64;
    let prec = lcs / hyp_len as f64;
    let rec = lcs / ref_len as f64;
    if prec != 0.0 && rec != 0.0 {
        ((1.0 + b2) * prec * rec) / (rec + b2 * prec)
    } else {
        0.0
    }
}

/// ROUGE-L of hypothesis text `hyp` against reference text `reference` of `spaced` (the
/// `' '` split); `b2` is [`beta_squared`].
pub fn pair(lcs: &mut Lcs, spaced: &Tokenized, (reference, hyp): (usize, usize), b2: f64) -> f64 {
    let (r, h) = (spaced.sentence(reference), spaced.sentence(hyp));
    // The same text on both sides: the LCS is the whole sentence.
    let common = if reference == hyp {
        r.len()
    } else {
        lcs.length(r, h)
    };
    item(common, r.len(), h.len(), b2)
}

/// ROUGE-L alone: `(corpus mean, per item)`, tokenising only what ROUGE-L needs (what a caller
/// of pycocoevalcap's `Rouge()` waits for).
pub fn score(refs: &[String], hyps: &[String]) -> Result<(f64, Vec<f64>), MetricsError> {
    super::check_pairs(refs, hyps)?;
    let pairs = Pairs::new(refs, hyps);
    let mut vocab = Vocab::default();
    let spaced = vocab.spaced(pairs.texts(), None);
    let b2 = beta_squared();
    let items = super::map_pairs(
        pairs.len(),
        || Lcs::new(vocab.len()),
        |lcs, i| pair(lcs, &spaced, (pairs.ref_text(i), pairs.hyp_text(i)), b2),
    );
    Ok((numpy_mean(&items), items))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lcs_small_cases() {
        let mut l = Lcs::new(10);
        assert_eq!(l.length(&[1, 2, 3, 4], &[2, 4]), 2);
        assert_eq!(l.length(&[2, 4], &[1, 2, 3, 4]), 2);
        assert_eq!(l.length(&[1, 2, 3], &[3, 2, 1]), 1);
        assert_eq!(l.length(&[], &[1]), 0);
        assert_eq!(l.length(&[5, 5, 5], &[5, 5]), 2);
    }

    #[test]
    fn bit_parallel_lcs_equals_the_table_across_word_boundaries() {
        // Lengths around 64 and 128 exercise the carry between words; a small alphabet makes
        // long common subsequences. splitmix64 keeps the cases the same on every run.
        let mut rng = crate::rng::SplitMix64::new(42);
        let mut next = move || rng.next_u64();
        let mut l = Lcs::new(8);
        for case in 0..400 {
            let la = (next() % 150) as usize;
            let lb = [63, 64, 65, 127, 128, 129, 1, 7][case % 8];
            let alphabet = 2 + (next() % 6);
            let a: Vec<u32> = (0..la).map(|_| (next() % alphabet) as u32).collect();
            let b: Vec<u32> = (0..lb).map(|_| (next() % alphabet) as u32).collect();
            assert_eq!(l.length(&a, &b), lcs_table(&a, &b), "a={a:?} b={b:?}");
        }
    }

    #[test]
    fn identical_scores_one_and_disjoint_zero() {
        let b2 = beta_squared();
        assert!((item(3, 3, 3, b2) - 1.0).abs() < 1e-15);
        assert_eq!(item(0, 3, 1, b2), 0.0);
    }
}
