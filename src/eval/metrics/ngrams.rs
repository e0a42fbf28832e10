//! N-gram counts of every distinct text of a corpus, document frequencies, and the matching of
//! a hypothesis's n-grams against its reference's that BLEU and CIDEr share.
//!
//! Why this shape: pycocoevalcap keeps n-grams as tuples in Python dicts. Here every distinct
//! (k+1)-gram of the corpus gets a dense `u32` id, built order by order from the k-gram id and
//! the next token (one hash lookup per n-gram occurrence of each distinct text, once per
//! corpus). After that, per-pair work — clipping, looking up a reference count, reading a
//! document frequency — is array indexing, with no hashing and no allocation per pair.
//!
//! Guarantee: [`NgramIndex::grams`] lists a text's distinct n-grams of one order in
//! *first-appearance order* with their counts, which is the iteration order of
//! pycocoevalcap's dicts (it counts 1-grams, then 2-grams, … per sentence), and
//! [`Matcher::matches`] keeps the hypothesis's order. CIDEr sums floats in those orders, so its
//! results stay bit-identical.

use super::tokens::{Pairs, Tokenized};
use rustc_hash::FxHashMap;
use std::ops::Range;

/// The largest n-gram order the scorers use (BLEU-4, CIDEr n = 4).
pub const MAX_N: usize = 4;

/// A distinct n-gram of a text: its id and how often the text contains it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gram {
    pub id: u32,
    pub tf: u32,
}

/// The n-grams (orders 1..=4) of every distinct text of a corpus, plus each n-gram's document
/// frequency: the number of *pairs* whose reference contains it (pycocoevalcap's CIDEr
/// `document_frequency`; a reference text used by three pairs counts three times).
pub struct NgramIndex {
    /// `grams[k][starts[k][t]..starts[k][t + 1]]`: the distinct (k+1)-grams of text t.
    grams: [Vec<Gram>; MAX_N],
    starts: [Vec<usize>; MAX_N],
    /// Number of distinct ids per order.
    counts: [usize; MAX_N],
    /// `df[k][id]`; 0 for n-grams that occur only in hypotheses.
    df: [Vec<u32>; MAX_N],
}

impl NgramIndex {
    /// Indexes the whitespace split of `pairs`' texts (`words`, with `vocab` token ids).
    pub fn new(pairs: &Pairs, words: &Tokenized, vocab: usize) -> NgramIndex {
        let multiplicity = pairs.ref_multiplicity();
        let mut index = NgramIndex {
            grams: Default::default(),
            starts: Default::default(),
            counts: [0; MAX_N],
            df: Default::default(),
        };
        // The id of the k-gram at each token position (k = 1: the token ids).
        let mut at: Vec<u32> = Vec::new();
        for k in 0..MAX_N {
            let order = Order::build(words, (k > 0).then_some(&at[..]), k, vocab, &multiplicity);
            index.counts[k] = order.df.len();
            index.grams[k] = order.grams;
            index.starts[k] = order.starts;
            index.df[k] = order.df;
            at = order.at;
        }
        index
    }

    /// Where text `t`'s distinct (k+1)-grams lie in the flat per-order list (the same layout
    /// as any per-gram table built from [`NgramIndex::all_grams`]).
    pub fn span(&self, k: usize, t: usize) -> Range<usize> {
        self.starts[k][t]..self.starts[k][t + 1]
    }

    /// Text `t`'s distinct (k+1)-grams in first-appearance order.
    pub fn grams(&self, k: usize, t: usize) -> &[Gram] {
        &self.grams[k][self.span(k, t)]
    }

    /// Every text's distinct (k+1)-grams, text after text.
    pub fn all_grams(&self, k: usize) -> &[Gram] {
        &self.grams[k]
    }

    /// Number of distinct texts.
    pub fn texts(&self) -> usize {
        self.starts[0].len() - 1
    }

    /// Document frequency of the (k+1)-gram `id`.
    pub fn df(&self, k: usize, id: u32) -> u32 {
        self.df[k][id as usize]
    }
}

/// One order of an [`NgramIndex`] being built.
struct Order {
    /// The id of the (k+1)-gram at each token position (slots without one are 0, unused).
    at: Vec<u32>,
    grams: Vec<Gram>,
    starts: Vec<usize>,
    /// One entry per id.
    df: Vec<u32>,
}

impl Order {
    /// Order k from the k-gram ids `prev` (`None` for k = 0, whose ids are the tokens): every
    /// text's distinct (k+1)-grams with counts, in first-appearance order, and the document
    /// frequencies (`multiplicity[t]` = pairs that have text t as reference).
    ///
    /// The (k+1)-gram at p is the k-gram at p followed by token p+k; it gets its id from a
    /// hash map keyed by that pair, in first-seen order. First-seen ids keep the `slot` and
    /// `df` accesses below close together (a new n-gram takes the next id), which matters
    /// more than the hashing: this step is bound by memory latency.
    fn build(
        words: &Tokenized,
        prev: Option<&[u32]>,
        k: usize,
        vocab: usize,
        multiplicity: &[u32],
    ) -> Order {
        let tokens = words.ids();
        let mut ids: FxHashMap<u64, u32> = FxHashMap::default();
        let known = if prev.is_none() { vocab } else { 0 };
        // `slot[id]` = 1 + position of `id` in the text being counted, 0 = not seen yet.
        let mut slot = vec![0u32; known];
        let mut order = Order {
            at: vec![0; tokens.len()],
            grams: Vec::new(),
            starts: Vec::with_capacity(words.len() + 1),
            df: vec![0; known],
        };
        order.starts.push(0);
        for (t, &refs_of_t) in multiplicity.iter().enumerate().take(words.len()) {
            let first = order.grams.len();
            for p in positions(words, t, k) {
                let id = match prev {
                    None => tokens[p],
                    Some(prev) => {
                        let key = (prev[p] as u64) << 32 | tokens[p + k] as u64;
                        let id = *ids.entry(key).or_insert(slot.len() as u32);
                        if id as usize == slot.len() {
                            slot.push(0);
                            order.df.push(0);
                        }
                        id
                    }
                };
                order.at[p] = id;
                let s = &mut slot[id as usize];
                if *s == 0 {
                    order.grams.push(Gram { id, tf: 1 });
                    *s = (order.grams.len() - first) as u32;
                } else {
                    order.grams[first + *s as usize - 1].tf += 1;
                }
            }
            for g in &order.grams[first..] {
                slot[g.id as usize] = 0;
                order.df[g.id as usize] += refs_of_t;
            }
            order.starts.push(order.grams.len());
        }
        order
    }
}

/// The positions of text `t` where a (k+1)-gram starts.
fn positions(words: &Tokenized, t: usize, k: usize) -> Range<usize> {
    let r = words.range(t);
    r.start..r.end.saturating_sub(k).max(r.start)
}

/// Matches a hypothesis's n-grams against its reference's: for each order, the pairs
/// `(position in the hypothesis's list, position in the reference's list)` of the n-grams
/// both contain, in hypothesis order. Reused from pair to pair (one per worker thread), so
/// matching allocates nothing once it has grown.
pub struct Matcher {
    /// `slot[id]` = 1 + position of `id` in the reference's list, 0 when absent. A dense
    /// array over all ids instead of a per-pair hash map; all zero between pairs.
    slot: Vec<u32>,
    matches: [Vec<(u32, u32)>; MAX_N],
}

impl Matcher {
    pub fn new(index: &NgramIndex) -> Matcher {
        Matcher {
            slot: vec![0; index.counts.iter().copied().max().unwrap_or(0)],
            matches: Default::default(),
        }
    }

    /// Matches text `hyp` against text `reference`; read the result with [`Matcher::matches`].
    pub fn run(&mut self, index: &NgramIndex, reference: usize, hyp: usize) {
        for k in 0..MAX_N {
            let refs = index.grams(k, reference);
            for (j, g) in refs.iter().enumerate() {
                self.slot[g.id as usize] = j as u32 + 1;
            }
            let matches = &mut self.matches[k];
            matches.clear();
            for (j, g) in index.grams(k, hyp).iter().enumerate() {
                if let Some(r) = self.slot[g.id as usize].checked_sub(1) {
                    matches.push((j as u32, r));
                }
            }
            for g in refs {
                self.slot[g.id as usize] = 0;
            }
        }
    }

    /// The order-k matches of the last [`Matcher::run`].
    pub fn matches(&self, k: usize) -> &[(u32, u32)] {
        &self.matches[k]
    }
}

#[cfg(test)]
mod tests {
    use super::super::tokens::Vocab;
    use super::*;

    /// The index of a small corpus of pairs.
    fn index(refs: &[&str], hyps: &[&str]) -> NgramIndex {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let (refs, hyps) = (s(refs), s(hyps));
        let pairs = Pairs::new(&refs, &hyps);
        let mut vocab = Vocab::default();
        let words = vocab.words(pairs.texts());
        NgramIndex::new(&pairs, &words, vocab.len())
    }

    fn tfs(g: &[Gram]) -> Vec<u32> {
        g.iter().map(|g| g.tf).collect()
    }

    #[test]
    fn grams_keep_first_appearance_order_and_counts() {
        // Text 0 = "c a c a" (c=0, a=1), text 1 = "a c b a c" (b=2).
        let idx = index(&["c a c a"], &["a c b a c"]);
        assert_eq!(
            idx.grams(0, 0).iter().map(|g| g.id).collect::<Vec<_>>(),
            [0, 1]
        );
        assert_eq!(tfs(idx.grams(0, 0)), [2, 2]);
        assert_eq!(tfs(idx.grams(1, 0)), [2, 1]); // "c a" twice, "a c" once
        assert_eq!(tfs(idx.grams(2, 0)), [1, 1]); // "c a c", "a c a"
        assert_eq!(tfs(idx.grams(3, 0)), [1]);
        // The hypothesis in its own order: a, c, b.
        assert_eq!(
            idx.grams(0, 1).iter().map(|g| g.id).collect::<Vec<_>>(),
            [1, 0, 2]
        );
        assert_eq!(tfs(idx.grams(0, 1)), [2, 2, 1]);
        assert_eq!(tfs(idx.grams(1, 1)), [2, 1, 1]); // "a c" ×2, "c b", "b a"
        assert_eq!(idx.grams(3, 1).len(), 2);
        assert_eq!(idx.texts(), 2);
    }

    #[test]
    fn matches_follow_the_hypothesis_order() {
        let idx = index(&["c a c a"], &["a c b a c"]);
        let mut m = Matcher::new(&idx);
        m.run(&idx, 0, 1);
        // Unigrams: hyp a (0) ↔ ref a (1), hyp c (1) ↔ ref c (0); b has no match.
        assert_eq!(m.matches(0), [(0, 1), (1, 0)]);
        // Bigrams: hyp "a c" (0) ↔ ref "a c" (1).
        assert_eq!(m.matches(1), [(0, 1)]);
        assert!(m.matches(3).is_empty());
        // Scratch is clean afterwards: matching a text with itself finds everything.
        m.run(&idx, 1, 1);
        assert_eq!(m.matches(0), [(0, 0), (1, 1), (2, 2)]);
        assert!(m.slot.iter().all(|&s| s == 0));
    }

    #[test]
    fn document_frequency_counts_reference_pairs_not_occurrences() {
        // "a" occurs in every reference (three times in the first, and that text is the
        // reference of two pairs): df 3. "c": df 1. "b" only in a hypothesis: df 0.
        let idx = index(&["a a a", "a c", "a a a"], &["b", "a a", "x"]);
        assert_eq!(idx.df(0, 0), 3);
        assert_eq!(idx.df(0, 1), 1); // c
        assert_eq!(idx.df(0, 2), 0); // b
                                     // Bigram "a a" (in text 0, the reference of pairs 0 and 2): df 2.
        assert_eq!(idx.grams(1, 0)[0].tf, 2);
        assert_eq!(idx.df(1, idx.grams(1, 0)[0].id), 2);
        // Three distinct texts besides the hypotheses "b", "a a", "x".
        assert_eq!(idx.texts(), 5);
    }

    #[test]
    fn empty_and_short_texts_have_no_higher_orders() {
        let idx = index(&["", "a"], &["a b", "a b c"]);
        assert!(idx.grams(0, 0).is_empty());
        assert!(idx.grams(1, 1).is_empty()); // "a" has no bigram
        assert_eq!(idx.grams(2, 3).len(), 1); // "a b c" has one trigram
        assert!(idx.grams(3, 3).is_empty());
    }
}
