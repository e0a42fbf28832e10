//! Features of a frozen visual extractor, computed once per distinct image.
//!
//! Why it exists: with `model.freeze_visual_extractor` and `data.augment = false` a training
//! image's features never change, yet the extractor's forward (of the images and of their hard
//! negatives) is a large share of a training step on small images: configs/quickstart.toml on
//! 2 ranks of this 2-core machine took ~30 s per 130-step epoch without the cache and ~17–21 s
//! with it. Caching them leaves a step the encoder-decoder's cost, the usual "extract features once" practice, without a separate
//! extraction pass or file.
//!
//! What it guarantees:
//! * **Keys are the pixels.** An entry is found by a 128-bit hash of the image's f32 values (all
//!   views), so no row numbers travel with the batch, a positive and the same study used as
//!   someone's negative share one entry, and an entry can never be stale.
//! * **Exactness.** A miss runs the extractor on that one image alone (eval mode: BatchNorm
//!   running statistics), so a feature never depends on the batch, rank or epoch that first
//!   met its image, and the cache never changes a result: a resumed run (cold cache) recomputes
//!   the same values, so resume stays bit-exact, and the frozen path without a cache computes
//!   each image alone too.
//! * **Bounded.** Entries stop being added once `limit_bytes` of features are held; later
//!   misses are computed (one image at a time, slower than a batched forward, especially on a
//!   GPU) and not kept. Entries live on the model's device (GPU memory on a GPU run). The cache
//!   is meant for datasets whose features fit (the quickstart's 2,069 images: ~81 MiB at
//!   64 px); at MIMIC-CXR scale extract features offline or keep the extractor trainable.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use tch::{Device, Kind, Tensor};

/// Patch and pooled features of one image: `[1, P, C]` and `[1, C·views]`.
type Entry = (Tensor, Tensor);

#[derive(Debug)]
pub struct FeatureCache {
    entries: HashMap<u128, Entry>,
    bytes: usize,
    limit_bytes: usize,
    hits: u64,
    misses: u64,
}

/// What the cache did so far: lookups that found an entry, lookups that did not, bytes held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub entries: usize,
    pub bytes: usize,
}

impl FeatureCache {
    /// An empty cache that keeps at most `limit_bytes` of features (0: keeps nothing).
    pub fn new(limit_bytes: usize) -> FeatureCache {
        FeatureCache {
            entries: HashMap::new(),
            bytes: 0,
            limit_bytes,
            hits: 0,
            misses: 0,
        }
    }

    /// Whether it keeps anything (a bound above 0).
    pub fn keeps(&self) -> bool {
        self.limit_bytes > 0
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits,
            misses: self.misses,
            entries: self.entries.len(),
            bytes: self.bytes,
        }
    }

    /// Features of `images` (`[B, ...]`, one image — all its views — per row): cached rows are
    /// looked up, the others computed one image at a time by `compute` (which maps `[1, ...]`
    /// to patch `[1, P, C]` and pooled `[1, C']` features) and kept while the bound allows.
    /// Returns `[B, P, C]` and `[B, C']`; a batch of 0 rows is passed to `compute` whole.
    pub fn features(
        &mut self,
        images: &Tensor,
        compute: impl Fn(&Tensor) -> (Tensor, Tensor),
    ) -> (Tensor, Tensor) {
        let rows = images.size()[0];
        if rows == 0 {
            return compute(images);
        }
        let (mut atts, mut fcs) = (Vec::new(), Vec::new());
        if self.limit_bytes == 0 {
            // Keeps nothing: each image computed alone, no keys needed.
            for i in 0..rows {
                self.misses += 1;
                let (att, fc) = compute(&images.narrow(0, i, 1));
                atts.push(att);
                fcs.push(fc);
            }
            return (Tensor::cat(&atts, 0), Tensor::cat(&fcs, 0));
        }
        let host = images
            .to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous();
        for i in 0..rows {
            let one = images.narrow(0, i, 1);
            let key = content_key(&host.get(i));
            let (att, fc) = match self.entries.get(&key) {
                Some((att, fc)) => {
                    self.hits += 1;
                    (att.shallow_clone(), fc.shallow_clone())
                }
                None => {
                    self.misses += 1;
                    let (att, fc) = compute(&one);
                    self.keep(key, &att, &fc);
                    (att, fc)
                }
            };
            atts.push(att);
            fcs.push(fc);
        }
        (Tensor::cat(&atts, 0), Tensor::cat(&fcs, 0))
    }

    fn keep(&mut self, key: u128, att: &Tensor, fc: &Tensor) {
        let size = (att.numel() + fc.numel()) * att.kind().elt_size_in_bytes();
        if self.bytes + size <= self.limit_bytes {
            self.bytes += size;
            self.entries.insert(key, (att.detach(), fc.detach()));
        }
    }
}

/// 128 bits from two SipHashes (differently prefixed) of the values' bit patterns: distinct
/// images collide with probability ~n²/2¹²⁸.
fn content_key(image: &Tensor) -> u128 {
    let values = Vec::<f32>::try_from(image.reshape([-1])).expect("f32 image");
    let half = |salt: u8| {
        let mut h = DefaultHasher::new();
        salt.hash(&mut h);
        values.len().hash(&mut h);
        for v in &values {
            v.to_bits().hash(&mut h);
        }
        h.finish()
    };
    (u128::from(half(0)) << 64) | u128::from(half(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in extractor whose output depends on the row only: (sum, max) per image.
    fn fake(x: &Tensor) -> (Tensor, Tensor) {
        let n = x.size()[0];
        let flat = x.reshape([n, x.size()[1..].iter().product::<i64>()]);
        let (sum, max) = if n == 0 {
            (
                flat.sum_dim_intlist(1, false, Kind::Float),
                flat.sum_dim_intlist(1, false, Kind::Float),
            )
        } else {
            (
                flat.sum_dim_intlist(1, false, Kind::Float),
                flat.amax(1, false),
            )
        };
        let att = Tensor::stack(&[sum, max], 1);
        (
            att.unsqueeze(1),
            flat.mean_dim(1, false, Kind::Float).unsqueeze(1),
        )
    }

    #[test]
    fn hits_return_what_a_miss_computed_and_the_bound_holds() {
        tch::manual_seed(4);
        let imgs = Tensor::randn([5, 2, 3, 4, 4], (Kind::Float, Device::Cpu));
        let mut cache = FeatureCache::new(1 << 20);
        let (a1, f1) = cache.features(&imgs, fake);
        let (want_a, want_f) = fake(&imgs);
        assert!(a1.equal(&want_a) && f1.equal(&want_f));
        assert_eq!(cache.stats().misses, 5);
        // Rows in another order, one repeated, one new: hits for the known ones.
        let other = Tensor::cat(
            &[
                imgs.get(3).unsqueeze(0),
                imgs.get(0).unsqueeze(0),
                imgs.get(3).unsqueeze(0),
                (imgs.get(1) + 1e-3).unsqueeze(0),
            ],
            0,
        );
        let (a2, f2) = cache.features(&other, fake);
        let (want_a, want_f) = fake(&other);
        assert!(a2.equal(&want_a) && f2.equal(&want_f));
        let s = cache.stats();
        assert_eq!((s.hits, s.misses, s.entries), (3, 6, 6));
        assert_eq!(s.bytes, 6 * 3 * 4);
        // A bound of two entries: later misses are computed but not kept.
        let mut small = FeatureCache::new(2 * 3 * 4);
        let (a3, _) = small.features(&imgs, fake);
        assert!(a3.equal(&a1));
        assert_eq!(small.stats().entries, 2);
        let _ = small.features(&imgs, fake);
        assert_eq!((small.stats().hits, small.stats().misses), (2, 8));
        // A bound of 0 keeps nothing and computes each image alone: the same values.
        let mut none = FeatureCache::new(0);
        let (a4, f4) = none.features(&imgs, fake);
        assert!(a4.equal(&a1) && f4.equal(&f1));
        assert_eq!(
            (none.stats().hits, none.stats().misses, none.stats().entries),
            (0, 5, 0)
        );
        // No rows: whatever `compute` gives for an empty batch.
        let (a0, f0) = cache.features(&imgs.narrow(0, 0, 0), fake);
        assert_eq!((a0.size(), f0.size()), (vec![0, 1, 2], vec![0, 1]));
    }
}
