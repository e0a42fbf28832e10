//! Which samples each rank reads, and in which order: pure functions of (seed, epoch, batch,
//! world size, rank), so they can be tested without MPI and a run means the same thing on any
//! number of ranks (SPEC §5).
//!
//! Guarantees:
//! - the permutation of a split is a function of `(seed, epoch)` only (SplitMix64 driving a
//!   Fisher–Yates shuffle; both fully specified below, no library RNG whose stream could change);
//! - global batch `k` is positions `[k·B, (k+1)·B)` of that permutation; rank `r` of `W` takes a
//!   contiguous slice, so concatenating the ranks' slices in rank order gives the global batch;
//! - **any split of a global batch**: a full training batch gives every rank `B/W` samples
//!   (`W | B` is checked up front by [`check_world`]); a smaller one — the epoch's last — is split
//!   as evenly as possible, the first `len % W` ranks getting one sample more, so a rank's `b`
//!   can differ on that step and can be 0 when fewer samples than ranks remain. The training
//!   step is defined for every such split (`train::step`: a rank with 0 samples joins every
//!   collective and contributes exactly zero);
//! - **last partial batch** (training): with `train.drop_last` it is dropped, otherwise kept;
//! - **accumulation** (`train.accumulation_steps = k`): a loader batch is a micro-batch of
//!   `m = B/k` global samples and optimizer step `s` is loader batches `[s·k, (s+1)·k)`, i.e.
//!   positions `[s·B, (s+1)·B)` cut into `m`-sized pieces ([`step_batches`]); the epoch's last
//!   step may hold fewer (and a smaller last) micro-batch, and `drop_last` drops that whole
//!   incomplete step, never part of one;
//! - evaluation visits the split in file order, each sample exactly once across ranks, with no
//!   padding duplicates, using the same even contiguous split (any world size, also larger than
//!   `eval.batch_size`: ranks past the batch's end get 0 samples);
//! - augmentation randomness comes from [`sample_rng`]`(seed, epoch, index, view)`, never from
//!   thread timing or the rank.

use std::ops::Range;

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SamplerError {
    #[error("world size {world} does not divide the global batch size {batch} (train.batch_size must be a multiple of the number of ranks)")]
    Indivisible { batch: usize, world: usize },
    #[error("train.batch_size = {batch}{accumulation} cannot be split over {world} ranks: {why}. Set train.batch_size to a multiple of {unit} (e.g. {suggest}), or launch a number of ranks that divides {micro}")]
    WorldSplit {
        batch: usize,
        world: usize,
        /// `" with train.accumulation_steps = k (micro-batches of m)"`, or empty for k = 1.
        accumulation: String,
        /// Global samples of one micro-batch (`batch / k`).
        micro: usize,
        why: &'static str,
        /// The smallest batch size that works: `world · k`.
        unit: usize,
        /// The multiple of `unit` nearest above `batch`.
        suggest: usize,
    },
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

/// Refuses, before any work, a training world whose full steps would not split into equal
/// local batches: `W` must divide the micro-batch `B/k`. That also refuses `W > B/k`, where
/// some ranks would hold nothing in every step (the step itself would still be correct — a rank
/// with 0 samples contributes exactly zero — but it would be W/(B/k) times the hardware for
/// the same work, which is never what a user meant). Only the epoch's last step may be uneven.
pub fn check_world(batch: usize, accumulation: usize, world: usize) -> Result<(), SamplerError> {
    let k = accumulation.max(1);
    let micro = batch / k;
    if world >= 1 && micro >= 1 && micro.is_multiple_of(world) {
        return Ok(());
    }
    let unit = world.max(1) * k;
    Err(SamplerError::WorldSplit {
        batch,
        world,
        accumulation: if k > 1 {
            format!(" with train.accumulation_steps = {k} (micro-batches of {micro})")
        } else {
            String::new()
        },
        micro,
        why: if world > micro {
            "there are more ranks than samples in a global batch, so some ranks would hold no \
             sample in every step"
        } else {
            "the global batch means the same on any number of ranks (SPEC §5), so every full \
             step must give each rank the same number of samples"
        },
        unit,
        suggest: batch.div_ceil(unit).max(1) * unit,
    })
}

/// Samples trained on per epoch: all `n`, or with `drop_last` the whole optimizer steps of
/// `step_batch` samples only.
pub fn epoch_samples(n: usize, step_batch: usize, drop_last: bool) -> usize {
    if drop_last {
        n / step_batch * step_batch
    } else {
        n
    }
}

/// Loader batches (micro-batches of `micro` global samples, `accumulation` per optimizer step)
/// in a training epoch of `n` samples.
pub fn train_batches(n: usize, micro: usize, accumulation: usize, drop_last: bool) -> usize {
    epoch_samples(n, micro * accumulation.max(1), drop_last).div_ceil(micro)
}

/// The loader batches of each optimizer step of an epoch: step `s` is `[s·k, min((s+1)·k, total))`
/// — every step but the last holds `k` micro-batches. The trainer groups loader batches this way.
pub fn step_batches(
    n: usize,
    micro: usize,
    accumulation: usize,
    drop_last: bool,
) -> Vec<Range<usize>> {
    let k = accumulation.max(1);
    let total = train_batches(n, micro, k, drop_last);
    (0..total.div_ceil(k))
        .map(|s| s * k..((s + 1) * k).min(total))
        .collect()
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
    micro_slice(n, batch, 1, drop_last, k, world, rank)
}

/// The training slice of loader batch (micro-batch) `i` of `micro` global samples, with
/// `accumulation` micro-batches per optimizer step: `drop_last` drops a whole incomplete
/// optimizer step. Full micro-batches require `world | micro` (see [`check_world`]).
pub fn micro_slice(
    n: usize,
    micro: usize,
    accumulation: usize,
    drop_last: bool,
    i: usize,
    world: usize,
    rank: usize,
) -> Result<Slice, SamplerError> {
    if world == 0 || !micro.is_multiple_of(world) {
        return Err(SamplerError::Indivisible {
            batch: micro,
            world,
        });
    }
    let used = epoch_samples(n, micro * accumulation.max(1), drop_last);
    slice(used, micro, false, i, world, rank)
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

    /// Issue 13, acceptance 3: the published split sizes, global batch 16, W ∈ {1..64}. For
    /// every training step (both `drop_last` policies) and every evaluation batch: the ranks'
    /// local sizes sum to the global batch, every micro-batch holds a sample and rank 0 holds
    /// one (the step's temperature gradient flows through rank 0), every sample is visited
    /// exactly once per epoch — or the world is refused up front, with a message saying why and
    /// what to set.
    #[test]
    fn published_splits_fall_on_any_world_or_are_refused_up_front() {
        const B: usize = 16;
        let datasets = [
            ("IU X-Ray", [2069, 296, 590]),
            ("MIMIC-CXR", [270_790, 2130, 3858]),
        ];
        for (name, [train, val, test]) in datasets {
            for world in [1, 2, 4, 8, 16, 32, 64] {
                match check_world(B, 1, world) {
                    Ok(()) => {
                        for drop_last in [false, true] {
                            walk_train(train, B, drop_last, world);
                        }
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        assert!(world > B, "{name} W={world}: refused: {msg}");
                        for part in [
                            "train.batch_size = 16",
                            &format!("over {world} ranks"),
                            "more ranks than samples",
                            &format!("multiple of {world} (e.g. {world})"),
                            "ranks that divides 16",
                        ] {
                            assert!(msg.contains(part), "{name} W={world}: {part:?} in {msg}");
                        }
                    }
                }
                // Evaluation takes any world (ranks past a batch's end hold nothing).
                for n in [val, test] {
                    walk_eval(n, B, world);
                }
            }
        }
    }

    fn walk_train(n: usize, batch: usize, drop_last: bool, world: usize) {
        let mut seen = Vec::with_capacity(n);
        let steps = step_batches(n, batch, 1, drop_last);
        assert_eq!(steps.len(), num_batches(n, batch, drop_last));
        for (s, micro) in steps.iter().enumerate() {
            for i in micro.clone() {
                let parts: Vec<Slice> = (0..world)
                    .map(|r| micro_slice(n, batch, 1, drop_last, i, world, r).unwrap())
                    .collect();
                let global = parts[0].global.clone();
                let sizes: Vec<usize> = parts.iter().map(|p| p.local.len()).collect();
                let what = format!("n={n} W={world} drop_last={drop_last} step {}", s + 1);
                assert_eq!(
                    sizes.iter().sum::<usize>(),
                    global.len(),
                    "{what}: {sizes:?}"
                );
                assert!(!global.is_empty() && sizes[0] >= 1, "{what}: {sizes:?}");
                assert!(
                    global.len() == batch || s + 1 == steps.len(),
                    "{what}: short step"
                );
                for p in parts {
                    assert_eq!(p.global, global, "{what}");
                    seen.extend(p.local);
                }
            }
        }
        let want = epoch_samples(n, batch, drop_last);
        assert_eq!(seen, (0..want).collect::<Vec<_>>(), "n={n} W={world}");
    }

    fn walk_eval(n: usize, batch: usize, world: usize) {
        let mut seen = Vec::with_capacity(n);
        for k in 0..num_batches(n, batch, false) {
            let parts: Vec<Slice> = (0..world)
                .map(|r| eval_slice(n, batch, k, world, r).unwrap())
                .collect();
            let sizes: Vec<usize> = parts.iter().map(|p| p.local.len()).collect();
            assert_eq!(sizes.iter().sum::<usize>(), parts[0].global.len());
            seen.extend(parts.into_iter().flat_map(|p| p.local));
        }
        assert_eq!(seen, (0..n).collect::<Vec<_>>(), "eval n={n} W={world}");
    }

    #[test]
    fn accumulation_groups_micro_batches_into_whole_steps() {
        // 21 samples, B = 8 in 2 micro-batches of 4: steps [0,1], [2,3], [4, 5] where the last
        // step holds 5 samples (4 + 1); drop_last drops that whole step, not only its tail.
        assert_eq!(step_batches(21, 4, 2, false), vec![0..2, 2..4, 4..6]);
        assert_eq!(train_batches(21, 4, 2, true), 4);
        assert_eq!(step_batches(21, 4, 2, true), vec![0..2, 2..4]);
        let last = micro_slice(21, 4, 2, false, 5, 2, 1).unwrap();
        assert_eq!((last.global, last.local), (20..21, 21..21));
        assert!(micro_slice(21, 4, 2, true, 4, 2, 0).is_err());
        // The refusal names accumulation and suggests a batch that works.
        let e = check_world(16, 2, 3).unwrap_err().to_string();
        assert!(
            e.contains("train.accumulation_steps = 2 (micro-batches of 8)")
                && e.contains("multiple of 6 (e.g. 18)")
                && e.contains("same number of samples"),
            "{e}"
        );
        assert!(check_world(16, 2, 4).is_ok() && check_world(16, 2, 16).is_err());
    }
}
