//! The TF-IDF vectors of the distinct texts, laid out for the search in [`super::search`].
//!
//! Guarantees: the weights are exactly those of the definition in [`super`]; [`Index::dot`] is
//! the one exact cosine (a merge in term order, f64), and [`Index::dot_dense`] returns the same
//! value bit for bit. Layout choices are for speed only and never change a result:
//! - term ids are ranks by ascending document frequency (rarest = 0), so every row lists its
//!   rarest terms first and the suffix norms `suf` bound what the common tail can add;
//! - rows are sorted by their term lists, so texts sharing rare terms are neighbours in memory
//!   and consecutive queries touch the same cache lines; `orig` maps a row back to its text;
//! - `sig` is a 128-bit set of `term & 127` per row: a cheap superset test of which query
//!   terms a row can share.

use std::collections::HashMap;

/// Distinct-text TF-IDF rows (CSR), in search order.
pub(super) struct Index {
    /// Text id (first-occurrence order) of each row.
    pub orig: Vec<u32>,
    /// Row of each text id.
    pub row_of: Vec<u32>,
    /// The terms of row `r` are `terms[ptr[r]..ptr[r + 1]]`, ascending.
    pub ptr: Vec<usize>,
    pub terms: Vec<u32>,
    pub weights: Vec<f32>,
    /// `suf[k]` = L2 norm of the row's weights from position `k` to its end (inclusive).
    pub suf: Vec<f32>,
    /// Bit `t & 127` is set for every term `t` of the row.
    pub sig: Vec<u128>,
    pub n_terms: usize,
}

/// Term counts of one distinct text, by first-occurrence term id.
type Counts = Vec<(u32, u32)>;

/// Counts terms per distinct text; returns (counts per text, df per term) with df counted over
/// samples (`weight[u]` samples carry text `u`).
fn count_terms<'a>(
    texts: impl Iterator<Item = impl Iterator<Item = &'a str>>,
    weight: &[usize],
) -> (Vec<Counts>, Vec<u64>) {
    let mut ids: HashMap<&str, u32> = HashMap::new();
    let mut df: Vec<u64> = Vec::new();
    let mut counts = Vec::with_capacity(weight.len());
    for (u, tokens) in texts.enumerate() {
        let mut tf: HashMap<u32, u32> = HashMap::new();
        for tok in tokens {
            let next = ids.len() as u32;
            let t = *ids.entry(tok).or_insert(next);
            if t == next {
                df.push(0);
            }
            *tf.entry(t).or_insert(0) += 1;
        }
        let mut tf: Counts = tf.into_iter().collect();
        tf.sort_unstable();
        for &(t, _) in &tf {
            df[t as usize] += weight[u] as u64;
        }
        counts.push(tf);
    }
    (counts, df)
}

impl Index {
    /// Builds the index of the distinct texts `texts` (tokens of each), where text `u` stands
    /// for `weight[u]` samples and `n` is the number of samples.
    pub fn build<'a>(
        texts: impl Iterator<Item = impl Iterator<Item = &'a str>>,
        weight: &[usize],
        n: usize,
    ) -> Index {
        let (counts, df) = count_terms(texts, weight);
        // Rank terms rarest first; ties by first occurrence, so the order is deterministic.
        let mut order: Vec<u32> = (0..df.len() as u32).collect();
        order.sort_by_key(|&t| (df[t as usize], t));
        let mut rank = vec![0u32; df.len()];
        for (r, &t) in order.iter().enumerate() {
            rank[t as usize] = r as u32;
        }
        let n = n as f64;
        let idf: Vec<f64> = df
            .iter()
            .map(|&d| ((1.0 + n) / (1.0 + d as f64)).ln() + 1.0)
            .collect();
        let rows: Vec<Vec<(u32, f32)>> = counts
            .iter()
            .map(|tf| {
                let mut raw: Vec<(u32, f64)> = tf
                    .iter()
                    .map(|&(t, c)| {
                        let w = (1.0 + f64::from(c).ln()) * idf[t as usize];
                        (rank[t as usize], w)
                    })
                    .collect();
                raw.sort_unstable_by_key(|&(t, _)| t);
                let norm = raw.iter().map(|(_, w)| w * w).sum::<f64>().sqrt();
                raw.into_iter()
                    .map(|(t, w)| (t, (w / norm) as f32))
                    .collect()
            })
            .collect();
        // Search order: rows sorted by their term lists (stable, so equal lists keep text order).
        let mut orig: Vec<u32> = (0..rows.len() as u32).collect();
        orig.sort_by(|&a, &b| {
            let (ra, rb) = (&rows[a as usize], &rows[b as usize]);
            ra.iter().map(|x| x.0).cmp(rb.iter().map(|x| x.0))
        });
        Self::from_rows(&rows, orig, df.len())
    }

    fn from_rows(rows: &[Vec<(u32, f32)>], orig: Vec<u32>, n_terms: usize) -> Index {
        let nnz = rows.iter().map(Vec::len).sum();
        let mut ix = Index {
            row_of: vec![0; orig.len()],
            ptr: Vec::with_capacity(orig.len() + 1),
            terms: Vec::with_capacity(nnz),
            weights: Vec::with_capacity(nnz),
            suf: Vec::with_capacity(nnz),
            sig: Vec::with_capacity(orig.len()),
            orig,
            n_terms,
        };
        ix.ptr.push(0);
        for (r, &u) in ix.orig.iter().enumerate() {
            ix.row_of[u as usize] = r as u32;
            let row = &rows[u as usize];
            let mut sig = 0u128;
            for &(t, w) in row {
                ix.terms.push(t);
                ix.weights.push(w);
                sig |= 1u128 << (t & 127);
            }
            // Suffix norms from the stored f32 weights, summed from the end in f64.
            let start = ix.suf.len();
            ix.suf.resize(start + row.len(), 0.0);
            let mut acc = 0.0f64;
            for (k, &(_, w)) in row.iter().enumerate().rev() {
                acc += f64::from(w) * f64::from(w);
                ix.suf[start + k] = acc.sqrt() as f32;
            }
            ix.sig.push(sig);
            ix.ptr.push(ix.terms.len());
        }
        ix
    }

    pub fn n_rows(&self) -> usize {
        self.orig.len()
    }

    /// Terms, weights and suffix norms of row `r`.
    pub fn row(&self, r: usize) -> (&[u32], &[f32], &[f32]) {
        let k = self.ptr[r]..self.ptr[r + 1];
        (
            &self.terms[k.clone()],
            &self.weights[k.clone()],
            &self.suf[k],
        )
    }

    /// The exact cosine of two rows: a merge in term order, accumulated in f64. Symmetric.
    pub fn dot(&self, a: usize, b: usize) -> f64 {
        let (ta, wa, _) = self.row(a);
        let (tb, wb, _) = self.row(b);
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

    /// [`Index::dot`] of row `b` with the row scattered into `dense` (zero elsewhere): the
    /// same products added in the same order, plus exact zeros, so the same bits, without
    /// the merge's unpredictable branches.
    pub fn dot_dense(&self, dense: &[f32], b: usize) -> f64 {
        let (tb, wb, _) = self.row(b);
        tb.iter().zip(wb).fold(0.0f64, |s, (&t, &w)| {
            s + f64::from(dense[t as usize]) * f64::from(w)
        })
    }

    /// Writes row `r`'s weights into `dense` (or zeroes them again with `clear`).
    pub fn scatter(&self, r: usize, dense: &mut [f32], clear: bool) {
        let (t, w, _) = self.row(r);
        for (&t, &w) in t.iter().zip(w) {
            dense[t as usize] = if clear { 0.0 } else { w };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(texts: &[&str]) -> Index {
        let toks = texts.iter().map(|t| t.split_whitespace());
        Index::build(toks, &vec![1; texts.len()], texts.len())
    }

    #[test]
    fn rows_are_unit_vectors_with_rarest_terms_first() {
        let ix = index(&["a b c", "a b", "a", "a c d d"]);
        for r in 0..ix.n_rows() {
            let (t, w, s) = ix.row(r);
            assert!(t.windows(2).all(|p| p[0] < p[1]), "terms ascending");
            let n: f64 = w.iter().map(|&x| f64::from(x).powi(2)).sum();
            assert!((n - 1.0).abs() < 1e-6, "unit norm, got {n}");
            assert!((f64::from(s[0]) - 1.0).abs() < 1e-6, "suf[0] is the norm");
            assert!(s.windows(2).all(|p| p[0] >= p[1]), "suffix norms shrink");
        }
        // "a" is in every text: the most common term gets the largest id.
        let ra = ix.row_of[2] as usize;
        assert_eq!(ix.row(ra).0, &[3]);
    }

    #[test]
    fn dense_dot_equals_merge_dot_bit_for_bit() {
        let texts = [
            "heart size normal lungs clear",
            "heart size normal no effusion",
            "lungs clear no pneumothorax the the",
            "mild cardiomegaly the heart",
            "x",
        ];
        let ix = index(&texts);
        let mut dense = vec![0.0f32; ix.n_terms];
        for a in 0..ix.n_rows() {
            ix.scatter(a, &mut dense, false);
            for b in 0..ix.n_rows() {
                assert_eq!(
                    ix.dot_dense(&dense, b).to_bits(),
                    ix.dot(a, b).to_bits(),
                    "rows {a} {b}"
                );
                assert_eq!(ix.dot(a, b).to_bits(), ix.dot(b, a).to_bits());
            }
            ix.scatter(a, &mut dense, true);
            assert!(dense.iter().all(|&x| x == 0.0));
        }
    }
}
