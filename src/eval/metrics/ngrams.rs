//! Tokens and n-gram counts shared by BLEU and CIDEr, plus numpy's float summation.
//!
//! pycocoevalcap keeps n-grams in Python dicts, whose iteration order is insertion order
//! (all 1-grams by first appearance, then 2-grams, …). CIDEr sums floats in that order, so
//! [`NgramCounts`] keeps exactly that order to give bit-identical sums. Tokens are interned to
//! `u32` ids ≥ 1 and an n-gram (n ≤ 4) is packed into one `u128` (32 bits per token; unused
//! leading slots stay 0, so n-grams of different orders never collide).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The largest n-gram order the scorers use (BLEU-4, CIDEr n = 4).
pub const MAX_N: usize = 4;

/// A small, fast, non-cryptographic hasher (the "Fx" multiply-rotate hash); the keys here are
/// interned ids, not attacker-controlled, so HashDoS resistance buys nothing.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

impl Hasher for FxHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(v as u64);
    }
    fn write_u128(&mut self, v: u128) {
        self.write_u64(v as u64);
        self.write_u64((v >> 64) as u64);
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
}

pub type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Maps token strings to ids ≥ 1 (0 is reserved for "no token" in packed n-grams).
#[derive(Default)]
pub struct Interner<'a> {
    ids: FxMap<&'a str, u32>,
}

impl<'a> Interner<'a> {
    pub fn intern(&mut self, token: &'a str) -> u32 {
        let next = self.ids.len() as u32 + 1;
        *self.ids.entry(token).or_insert(next)
    }

    /// Interns every token of `tokens`.
    pub fn sentence(&mut self, tokens: impl Iterator<Item = &'a str>) -> Vec<u32> {
        tokens.map(|t| self.intern(t)).collect()
    }
}

/// Packs `gram` (1 to 4 ids ≥ 1) into one key.
fn pack(gram: &[u32]) -> u128 {
    gram.iter().fold(0u128, |acc, &t| (acc << 32) | t as u128)
}

/// The 1..=4-gram counts of one sentence, per order in first-appearance order (Python dict order).
///
/// Built by sorting instead of hashing: sentences are short (tens of tokens), and a sort of a
/// small vector beats allocating and filling a hash map per sentence.
pub struct NgramCounts {
    /// `orders[k]` holds the (k+1)-grams as `(key, count)`.
    pub orders: [Vec<(u128, u32)>; MAX_N],
    /// `sorted[k]` holds `(key, index into orders[k])`, sorted by key, for lookups.
    sorted: [Vec<(u128, u32)>; MAX_N],
}

impl NgramCounts {
    pub fn new(tokens: &[u32]) -> NgramCounts {
        let mut orders: [Vec<(u128, u32)>; MAX_N] = Default::default();
        let mut sorted: [Vec<(u128, u32)>; MAX_N] = Default::default();
        for k in 0..MAX_N {
            // (key, position) sorted: equal keys adjacent, first occurrence first.
            let mut grams: Vec<(u128, u32)> = tokens
                .windows(k + 1)
                .enumerate()
                .map(|(pos, g)| (pack(g), pos as u32))
                .collect();
            grams.sort_unstable();
            // Distinct n-grams in key order, each filed under its first position; first
            // positions are distinct and < len, so a slot array orders them without a sort.
            let mut by_first: Vec<Option<(u128, u32)>> = vec![None; grams.len()];
            let mut keys_in_order: Vec<(u128, u32)> = Vec::new();
            let mut i = 0;
            while i < grams.len() {
                let (key, first) = grams[i];
                let mut j = i + 1;
                while j < grams.len() && grams[j].0 == key {
                    j += 1;
                }
                by_first[first as usize] = Some((key, (j - i) as u32));
                keys_in_order.push((key, first));
                i = j;
            }
            let mut rank = vec![0u32; grams.len()];
            for (first, slot) in by_first.iter().enumerate() {
                if let Some((key, n)) = *slot {
                    rank[first] = orders[k].len() as u32;
                    orders[k].push((key, n));
                }
            }
            sorted[k] = keys_in_order
                .into_iter()
                .map(|(key, first)| (key, rank[first as usize]))
                .collect();
        }
        NgramCounts { orders, sorted }
    }

    /// Where the (order+1)-gram `key` sits in `orders[order]`, if it occurs.
    pub fn position(&self, order: usize, key: u128) -> Option<usize> {
        let index = &self.sorted[order];
        index
            .binary_search_by_key(&key, |&(k, _)| k)
            .ok()
            .map(|i| index[i].1 as usize)
    }

    /// How often the (order+1)-gram `key` occurs; 0 when absent.
    pub fn count(&self, order: usize, key: u128) -> u32 {
        self.position(order, key)
            .map_or(0, |i| self.orders[order][i].1)
    }
}

/// For every hypothesis n-gram (per order, in `orders` order), its index in the reference's
/// `orders`, if the reference has it. BLEU (clipping) and CIDEr (the reference weight) both
/// need this, so it is looked up once per pair.
pub struct Alignment {
    pub ref_index: [Vec<Option<u32>>; MAX_N],
}

impl Alignment {
    pub fn new(reference: &NgramCounts, hyp: &NgramCounts) -> Alignment {
        let mut ref_index: [Vec<Option<u32>>; MAX_N] = Default::default();
        for (k, idx) in ref_index.iter_mut().enumerate() {
            *idx = hyp.orders[k]
                .iter()
                .map(|&(g, _)| reference.position(k, g).map(|i| i as u32))
                .collect();
        }
        Alignment { ref_index }
    }
}

/// Python's `x ** y` on floats, i.e. the C library's `pow`. The exponent goes through
/// `black_box` because LLVM otherwise rewrites `pow(x, 0.5)` as `sqrt(x)` and `pow(x, 2.0)` as
/// `x * x`, and glibc's `pow` is not always correctly rounded: `sqrt` differs from it in the last
/// bit for some inputs (seen on a BLEU-2 item of the metrics fixture).
pub fn py_pow(x: f64, y: f64) -> f64 {
    x.powf(std::hint::black_box(y))
}

/// `numpy.sum` of a float64 array: numpy's pairwise summation (blocks of 8 partial sums up to
/// 128 elements, recursive halving above). `np.mean` is this divided by the length, and the
/// reference averages with `np.mean`, so using it keeps the last bit identical.
pub fn numpy_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        a.iter().fold(0.0, |acc, &x| acc + x)
    } else if n <= 128 {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let full = n - n % 8;
        for chunk in a[8..full].chunks_exact(8) {
            for (acc, &x) in r.iter_mut().zip(chunk) {
                *acc += x;
            }
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &x in &a[full..] {
            res += x;
        }
        res
    } else {
        let half = n / 2;
        let half = half - half % 8;
        numpy_sum(&a[..half]) + numpy_sum(&a[half..])
    }
}

/// `numpy.mean` of a non-empty float64 array.
pub fn numpy_mean(a: &[f64]) -> f64 {
    numpy_sum(a) / a.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_keep_first_appearance_order_per_order() {
        let c = NgramCounts::new(&[3, 1, 3, 1, 2]);
        let unigrams: Vec<(u128, u32)> = c.orders[0].clone();
        assert_eq!(unigrams, [(3, 2), (1, 2), (2, 1)]);
        assert_eq!(c.orders[1].len(), 3); // (3,1) twice, (1,3), (1,2)
        assert_eq!(c.count(1, pack(&[3, 1])), 2);
        assert_eq!(c.count(3, pack(&[9, 9, 9, 9])), 0);
        assert!(c.orders[3].len() == 2);
    }

    #[test]
    fn numpy_sum_differs_from_sequential_sum_like_numpy_does() {
        // 1e16 + 1 + 1 ... : sequential loses every +1, blocked partial sums keep some.
        let mut a = vec![1e16];
        a.extend([1.0; 15]);
        let sequential = a.iter().fold(0.0, |s, &x| s + x);
        let pairwise = numpy_sum(&a);
        assert_eq!(sequential, 1e16);
        // r[0] = 1e16 + 1 (lost), r[1..8] = 2 each → 1e16 + 14 exactly representable.
        assert_eq!(pairwise, 1e16 + 14.0);
    }
}
