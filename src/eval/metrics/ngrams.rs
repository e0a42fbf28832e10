//! N-gram ids for a whole corpus, document frequencies, and the per-pair n-gram counts that
//! BLEU and CIDEr share.
//!
//! Why this shape: pycocoevalcap keeps n-grams as tuples in Python dicts. Here every distinct
//! (k+1)-gram of the corpus gets a dense `u32` id, built order by order from the k-gram id and
//! the next token (one hash lookup per n-gram occurrence, once per corpus). After that, all
//! per-pair work — counting, clipping, looking up a reference count, reading a document
//! frequency — is array indexing, with no hashing and no allocation per pair.
//!
//! Guarantee: [`PairGrams`] lists each order's distinct n-grams in *first-appearance order*
//! with their counts, which is the iteration order of pycocoevalcap's dicts (it counts 1-grams,
//! then 2-grams, … per sentence). CIDEr sums floats in that order, so its results stay
//! bit-identical.

use super::tokens::{Sides, Tokenized};
use rustc_hash::FxHashMap;

/// The largest n-gram order the scorers use (BLEU-4, CIDEr n = 4).
pub const MAX_N: usize = 4;

/// One side (references or hypotheses) of the corpus as n-gram ids.
struct SideGrams<'c> {
    /// `ids[k][p]`: id of the (k+1)-gram that starts at flat token position `p`; the last `k`
    /// slots of each sentence hold no n-gram and are never read.
    ids: [Vec<u32>; MAX_N],
    tokens: &'c Tokenized,
}

impl SideGrams<'_> {
    fn grams(&self, order: usize, sentence: usize) -> &[u32] {
        let r = self.tokens.range(sentence);
        let end = r.end.saturating_sub(order).max(r.start);
        &self.ids[order][r.start..end]
    }
}

/// Every n-gram (orders 1..=4) of a corpus as dense ids, plus each id's document frequency
/// (the number of references that contain it: pycocoevalcap's CIDEr `document_frequency`).
pub struct NgramIndex<'c> {
    refs: SideGrams<'c>,
    hyps: SideGrams<'c>,
    /// Number of distinct ids per order.
    counts: [usize; MAX_N],
    /// `df[k][id]` for every id of order k; 0 for n-grams that occur only in hypotheses.
    df: [Vec<u32>; MAX_N],
}

impl<'c> NgramIndex<'c> {
    /// Indexes the whitespace-split corpus (`vocab` = number of token ids).
    pub fn new(words: &'c Sides, vocab: usize) -> NgramIndex<'c> {
        let mut ref_ids: [Vec<u32>; MAX_N] = Default::default();
        let mut hyp_ids: [Vec<u32>; MAX_N] = Default::default();
        ref_ids[0] = words.refs.ids().to_vec();
        hyp_ids[0] = words.hyps.ids().to_vec();
        let mut counts = [vocab; MAX_N];
        let mut df: [Vec<u32>; MAX_N] = Default::default();
        df[0] = document_frequency(&words.refs, &ref_ids[0], 0, vocab);
        for k in 1..MAX_N {
            // Ids are handed out in first-seen order over references, then hypotheses, so
            // every id seen in a reference is < the reference-side count.
            let mut ids: FxHashMap<u64, u32> = FxHashMap::default();
            ref_ids[k] = extend_order(&words.refs, &ref_ids[k - 1], k, &mut ids);
            let in_refs = ids.len();
            df[k] = document_frequency(&words.refs, &ref_ids[k], k, in_refs);
            hyp_ids[k] = extend_order(&words.hyps, &hyp_ids[k - 1], k, &mut ids);
            counts[k] = ids.len();
            df[k].resize(counts[k], 0);
        }
        df[0].resize(vocab, 0);
        NgramIndex {
            refs: SideGrams {
                ids: ref_ids,
                tokens: &words.refs,
            },
            hyps: SideGrams {
                ids: hyp_ids,
                tokens: &words.hyps,
            },
            counts,
            df,
        }
    }

    /// Document frequency of the (order+1)-gram `id`.
    pub fn df(&self, order: usize, id: u32) -> u32 {
        self.df[order][id as usize]
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.refs.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The (k+1)-gram ids of every sentence from its k-gram ids (`prev`) and tokens: the
/// (k+1)-gram at p is the k-gram at p followed by token p+k.
fn extend_order(
    side: &Tokenized,
    prev: &[u32],
    k: usize,
    ids: &mut FxHashMap<u64, u32>,
) -> Vec<u32> {
    let tokens = side.ids();
    let mut out = vec![0u32; tokens.len()];
    for s in 0..side.len() {
        let r = side.range(s);
        for p in r.start..r.end.saturating_sub(k).max(r.start) {
            let key = (prev[p] as u64) << 32 | tokens[p + k] as u64;
            let next = ids.len() as u32;
            out[p] = *ids.entry(key).or_insert(next);
        }
    }
    out
}

/// For ids `0..n` of order k: in how many reference sentences each occurs (once per sentence).
fn document_frequency(refs: &Tokenized, ids: &[u32], k: usize, n: usize) -> Vec<u32> {
    let mut df = vec![0u32; n];
    // `seen[id]` = 1 + the last sentence that counted `id`, so a repeat is not counted twice.
    let mut seen = vec![0u32; n];
    for s in 0..refs.len() {
        let r = refs.range(s);
        for &id in &ids[r.start..r.end.saturating_sub(k).max(r.start)] {
            let slot = &mut seen[id as usize];
            if *slot != s as u32 + 1 {
                *slot = s as u32 + 1;
                df[id as usize] += 1;
            }
        }
    }
    df
}

/// A reference n-gram of one pair: its id and count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefGram {
    pub id: u32,
    pub tf: u32,
}

/// A hypothesis n-gram of one pair: its id, count, and where the same n-gram sits in the
/// reference's list (`None` when the reference lacks it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HypGram {
    pub id: u32,
    pub tf: u32,
    pub in_ref: Option<u32>,
}

/// The distinct n-grams of one (reference, hypothesis) pair, per order, in first-appearance
/// order. Reused from pair to pair (one per worker thread), so filling it allocates nothing
/// once it has grown.
pub struct PairGrams {
    pub refs: [Vec<RefGram>; MAX_N],
    pub hyps: [Vec<HypGram>; MAX_N],
    /// `ref_slot[id]` / `hyp_slot[id]` = 1 + position of `id` in the list being built, 0 when
    /// absent. Dense arrays over all ids instead of per-pair hash maps; all zero between pairs.
    ref_slot: Vec<u32>,
    hyp_slot: Vec<u32>,
}

impl PairGrams {
    pub fn new(index: &NgramIndex) -> PairGrams {
        let n = index.counts.iter().copied().max().unwrap_or(0);
        PairGrams {
            refs: Default::default(),
            hyps: Default::default(),
            ref_slot: vec![0; n],
            hyp_slot: vec![0; n],
        }
    }

    /// Fills the lists for pair `i` of `index`.
    pub fn load(&mut self, index: &NgramIndex, i: usize) {
        for k in 0..MAX_N {
            let (refs, hyps) = (&mut self.refs[k], &mut self.hyps[k]);
            refs.clear();
            hyps.clear();
            for &id in index.refs.grams(k, i) {
                let slot = &mut self.ref_slot[id as usize];
                if *slot == 0 {
                    refs.push(RefGram { id, tf: 1 });
                    *slot = refs.len() as u32;
                } else {
                    refs[*slot as usize - 1].tf += 1;
                }
            }
            for &id in index.hyps.grams(k, i) {
                let slot = &mut self.hyp_slot[id as usize];
                if *slot == 0 {
                    let r = self.ref_slot[id as usize];
                    hyps.push(HypGram {
                        id,
                        tf: 1,
                        in_ref: r.checked_sub(1),
                    });
                    *slot = hyps.len() as u32;
                } else {
                    hyps[*slot as usize - 1].tf += 1;
                }
            }
            for g in refs.iter() {
                self.ref_slot[g.id as usize] = 0;
            }
            for g in hyps.iter() {
                self.hyp_slot[g.id as usize] = 0;
            }
        }
    }

    /// The reference count of hypothesis n-gram `g` of order `k` (0 when absent).
    pub fn ref_tf(&self, k: usize, g: &HypGram) -> u32 {
        g.in_ref.map_or(0, |r| self.refs[k][r as usize].tf)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tokens::Vocab;
    use super::*;

    /// The whitespace split of a small corpus and its vocabulary size.
    fn corpus(refs: &[&str], hyps: &[&str]) -> (Sides, usize) {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let (refs, hyps) = (s(refs), s(hyps));
        let mut vocab = Vocab::default();
        let words = vocab.words(&refs, &hyps);
        (words, vocab.len())
    }

    #[test]
    fn pair_lists_keep_first_appearance_order_and_counts() {
        // Tokens: c=0 a=1 (ref), b=2 (hyp only).
        let (w, v) = corpus(&["c a c a"], &["a c b a c"]);
        let idx = NgramIndex::new(&w, v);
        let mut p = PairGrams::new(&idx);
        p.load(&idx, 0);
        let tfs = |k: usize| p.refs[k].iter().map(|g| g.tf).collect::<Vec<_>>();
        assert_eq!(p.refs[0].iter().map(|g| g.id).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(tfs(0), [2, 2]);
        assert_eq!(tfs(1), [2, 1]); // "c a" twice, "a c" once
        assert_eq!(tfs(2), [1, 1]); // "c a c", "a c a"
        assert_eq!(tfs(3), [1]);
        // Hypothesis unigrams in its own order a, c, b; b is not in the reference.
        let h0: Vec<(u32, Option<u32>)> = p.hyps[0].iter().map(|g| (g.tf, g.in_ref)).collect();
        assert_eq!(h0, [(2, Some(1)), (2, Some(0)), (1, None)]);
        // Bigrams a c (ref has it once), c b, b a (absent), "a c" repeats at the end.
        let h1: Vec<(u32, u32)> = p.hyps[1].iter().map(|g| (g.tf, p.ref_tf(1, g))).collect();
        assert_eq!(h1, [(2, 1), (1, 0), (1, 0)]);
        assert!(p.hyps[3].len() == 2);
    }

    #[test]
    fn scratch_is_clean_between_pairs() {
        let (w, v) = corpus(&["x y x", "y y"], &["x", "y x y"]);
        let idx = NgramIndex::new(&w, v);
        let mut p = PairGrams::new(&idx);
        p.load(&idx, 0);
        p.load(&idx, 1);
        assert_eq!(p.refs[0].len(), 1);
        assert_eq!(p.refs[0][0].tf, 2);
        let h: Vec<(u32, u32)> = p.hyps[0].iter().map(|g| (g.tf, p.ref_tf(0, g))).collect();
        assert_eq!(h, [(2, 2), (1, 0)]); // y twice (ref has y twice), x absent from ref 1
        assert!(p.ref_slot.iter().chain(&p.hyp_slot).all(|&s| s == 0));
    }

    #[test]
    fn document_frequency_counts_references_not_occurrences() {
        // "a" occurs in both references (three times in the first): df 2; "b" only in a
        // hypothesis: df 0; bigram "a a": df 1.
        let (w, v) = corpus(&["a a a", "a c"], &["b", "a a"]);
        let idx = NgramIndex::new(&w, v);
        assert_eq!(idx.df(0, 0), 2);
        assert_eq!(idx.df(0, 1), 1); // c
        assert_eq!(idx.df(0, 2), 0); // b
        let mut p = PairGrams::new(&idx);
        p.load(&idx, 1);
        let aa = p.hyps[1][0].id;
        assert_eq!(idx.df(1, aa), 1);
        assert_eq!(idx.len(), 2);
    }
}
