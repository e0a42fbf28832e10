//! Which samples each rank reads, and in which order: pure functions of (seed, epoch, batch,
//! world size, rank), so they can be tested without MPI and a run means the same thing on any
//! number of ranks (SPEC §5).
//!
//! Guarantees:
//! - the permutation of a split is a function of `(seed, epoch)` only (SplitMix64 driving a
//!   Fisher–Yates shuffle; both fully specified below, no library RNG whose stream could change);
//! - global batch `k` is positions `[k·B, (k+1)·B)` of that permutation; rank `r` of `W` takes a
//!   contiguous slice, so concatenating the ranks' slices in rank order gives the global batch;
//! - **last partial batch** (training): with `train.drop_last` it is dropped; otherwise it is
//!   kept and split as evenly as possible — the first `len % W` ranks get one sample more — so a
//!   rank's `b` can differ on that step (and can be 0 when fewer samples than ranks remain);
//! - evaluation visits the split in file order, each sample exactly once across ranks, with no
//!   padding duplicates, using the same even contiguous split;
//! - augmentation randomness comes from [`sample_rng`]`(seed, epoch, index, view)`, never from
//!   thread timing or the rank.

use std::ops::Range;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SamplerError {
    #[error("world size {world} does not divide the global batch size {batch} (train.batch_size must be a multiple of the number of ranks)")]
    Indivisible { batch: usize, world: usize },
    #[error("batch {batch} is past the end of the epoch ({batches} batches)")]
    PastEnd { batch: usize, batches: usize },
    #[error("rank {rank} is not in a world of {world}")]
    BadRank { rank: usize, world: usize },
}

/// The whole loader state: resuming from it (with any world size) continues the same global
/// sequence of batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Cursor {
    /// Epoch, counted from 1 like the trainer does (any value is a valid seed input).
    pub epoch: u64,
    /// Global batches of this epoch already consumed.
    pub batches_consumed: u64,
}

/// SplitMix64 (Steele, Lea & Flood 2014): a 64-bit state advanced by the golden-ratio constant,
/// output passed through a fixed mixing function. Tiny, fast, and its stream is fixed forever.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    /// Uniform-enough integer in `0..n` (`n ≥ 1`) by the multiply-high method; the bias is below
    /// n / 2^64, irrelevant for shuffles and crops.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// SplitMix64's finaliser: a bijective avalanche mix of 64 bits.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hash a sequence of words into one seed (each word is mixed in, order matters).
pub fn hash_words(words: &[u64]) -> u64 {
    words
        .iter()
        .fold(0x243F_6A88_85A3_08D3, |h, &w| mix64(h ^ mix64(w)))
}

/// Domain tags keep the streams of different uses apart even for equal numbers.
const TAG_PERMUTATION: u64 = 0x7065_726d; // "perm"
const TAG_AUGMENT: u64 = 0x6175_676d; // "augm"

/// The order of one epoch: a permutation of `0..n` that depends on `(seed, epoch)` only.
pub fn permutation(n: usize, seed: u64, epoch: u64) -> Vec<u64> {
    let mut rng = SplitMix64::new(hash_words(&[TAG_PERMUTATION, seed, epoch]));
    let mut order: Vec<u64> = (0..n as u64).collect();
    // Fisher–Yates, from the back: swap i with a uniform j in 0..=i.
    for i in (1..n).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
}

/// The random stream of one view of one sample in one epoch (crop offsets, flip).
pub fn sample_rng(seed: u64, epoch: u64, index: u64, view: u64) -> SplitMix64 {
    SplitMix64::new(hash_words(&[TAG_AUGMENT, seed, epoch, index, view]))
}

/// Global batches in an epoch of `n` samples with global batch `batch`.
pub fn num_batches(n: usize, batch: usize, drop_last: bool) -> usize {
    if drop_last {
        n / batch
    } else {
        n.div_ceil(batch)
    }
}

/// Positions `[k·B, min((k+1)·B, n))` of global batch `k`.
pub fn global_positions(n: usize, batch: usize, k: usize) -> Range<usize> {
    (k * batch).min(n)..((k + 1) * batch).min(n)
}

/// Rank `rank`'s contiguous part of `len` items split over `world` ranks as evenly as possible
/// (the first `len % world` ranks get one more). Relative to the start of the batch.
pub fn even_slice(len: usize, world: usize, rank: usize) -> Range<usize> {
    let (base, extra) = (len / world, len % world);
    let start = rank * base + rank.min(extra);
    let size = base + usize::from(rank < extra);
    start..start + size
}

/// What one rank reads for one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slice {
    /// Positions (into the epoch's order) of the whole global batch.
    pub global: Range<usize>,
    /// This rank's positions, a contiguous sub-range of `global`.
    pub local: Range<usize>,
}

/// The training slice of global batch `k` for `rank` of `world` (see the module doc for the
/// last-batch policy). Full batches require `world | batch`.
pub fn train_slice(
    n: usize,
    batch: usize,
    drop_last: bool,
    k: usize,
    world: usize,
    rank: usize,
) -> Result<Slice, SamplerError> {
    if !batch.is_multiple_of(world) {
        return Err(SamplerError::Indivisible { batch, world });
    }
    slice(n, batch, drop_last, k, world, rank)
}

/// The evaluation slice of batch `k`: the split in its own order, every sample exactly once,
/// any world size (no divisibility needed: slices are split evenly).
pub fn eval_slice(
    n: usize,
    batch: usize,
    k: usize,
    world: usize,
    rank: usize,
) -> Result<Slice, SamplerError> {
    slice(n, batch, false, k, world, rank)
}

fn slice(
    n: usize,
    batch: usize,
    drop_last: bool,
    k: usize,
    world: usize,
    rank: usize,
) -> Result<Slice, SamplerError> {
    if rank >= world {
        return Err(SamplerError::BadRank { rank, world });
    }
    let batches = num_batches(n, batch, drop_last);
    if k >= batches {
        return Err(SamplerError::PastEnd { batch: k, batches });
    }
    let global = global_positions(n, batch, k);
    let part = even_slice(global.len(), world, rank);
    let local = global.start + part.start..global.start + part.end;
    Ok(Slice { global, local })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_depends_only_on_seed_and_epoch() {
        let p = permutation(1000, 7580, 3);
        assert_eq!(p, permutation(1000, 7580, 3));
        let mut sorted = p.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<u64>>());
        assert_ne!(p, permutation(1000, 7580, 4), "epoch changes the order");
        assert_ne!(p, permutation(1000, 9153, 3), "seed changes the order");
        assert!(permutation(0, 1, 1).is_empty());
        assert_eq!(permutation(1, 1, 1), vec![0]);
    }

    #[test]
    fn shuffle_is_not_degenerate() {
        // Every position sees many different values over epochs (a broken Fisher–Yates, e.g.
        // j in 0..i, would never leave an element in place).
        let fixed: usize = (0..200)
            .map(|e| {
                let p = permutation(10, 1, e);
                p.iter()
                    .enumerate()
                    .filter(|(i, &v)| *i as u64 == v)
                    .count()
            })
            .sum();
        // Expected one fixed point per permutation on average.
        assert!((100..300).contains(&fixed), "{fixed}");
    }

    #[test]
    fn ranks_tile_the_global_batch_in_order() {
        for (n, batch, drop_last) in [(103, 16, false), (103, 16, true), (64, 16, false)] {
            for world in [1, 2, 4, 8, 16] {
                let batches = num_batches(n, batch, drop_last);
                let mut seen = Vec::new();
                for k in 0..batches {
                    for r in 0..world {
                        let s = train_slice(n, batch, drop_last, k, world, r).unwrap();
                        assert_eq!(s.global, global_positions(n, batch, k));
                        seen.extend(s.local);
                    }
                }
                let want = if drop_last { n / batch * batch } else { n };
                assert_eq!(seen, (0..want).collect::<Vec<_>>(), "n={n} W={world}");
            }
        }
    }

    #[test]
    fn last_partial_batch_is_split_evenly() {
        // 103 = 6·16 + 7: the last batch has 7 samples; 4 ranks get 2, 2, 2, 1.
        let sizes: Vec<usize> = (0..4)
            .map(|r| train_slice(103, 16, false, 6, 4, r).unwrap().local.len())
            .collect();
        assert_eq!(sizes, vec![2, 2, 2, 1]);
        assert_eq!(
            train_slice(103, 16, true, 6, 4, 0),
            Err(SamplerError::PastEnd {
                batch: 6,
                batches: 6
            })
        );
    }

    #[test]
    fn indivisible_world_is_refused_for_training_only() {
        assert_eq!(
            train_slice(100, 16, false, 0, 3, 0),
            Err(SamplerError::Indivisible {
                batch: 16,
                world: 3
            })
        );
        assert!(eval_slice(100, 16, 0, 3, 2).is_ok());
        assert!(train_slice(100, 16, false, 0, 4, 4).is_err());
    }

    #[test]
    fn eval_visits_every_sample_once_for_any_world() {
        for world in 1..=7 {
            let mut seen = Vec::new();
            for k in 0..num_batches(50, 8, false) {
                for r in 0..world {
                    seen.extend(eval_slice(50, 8, k, world, r).unwrap().local);
                }
            }
            assert_eq!(seen, (0..50).collect::<Vec<_>>(), "W={world}");
        }
    }

    #[test]
    fn sample_streams_differ_by_every_input() {
        let first = |s, e, i, v| sample_rng(s, e, i, v).next_u64();
        let base = first(1, 2, 3, 0);
        assert_eq!(base, first(1, 2, 3, 0));
        for other in [
            first(2, 2, 3, 0),
            first(1, 3, 3, 0),
            first(1, 2, 4, 0),
            first(1, 2, 3, 1),
        ] {
            assert_ne!(base, other);
        }
        let mut r = SplitMix64::new(5);
        assert!((0..1000).all(|_| r.below(7) < 7 && r.unit() < 1.0));
    }
}
