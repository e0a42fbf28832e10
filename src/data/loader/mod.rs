//! The sharded data loader: every rank reads exactly its part of one global sequence of batches
//! that does not depend on the number of ranks, decodes it on a thread pool, and keeps
//! `data.prefetch` batches ready ahead of the training step.
//!
//! Guarantees:
//! - **World-size independence**: global batch `k` of epoch `e` is the same set of samples in
//!   the same order for any W ([`crate::data::sampler`]); rank r gets a contiguous slice; ids and
//!   masks are padded to the longest report of the *global* batch; so concatenating the ranks'
//!   batches in rank order gives, tensor-equal, the batch of a single process.
//! - **Exact replay**: [`Cursor`] `{epoch, batches_consumed}` is the whole state; augmentation
//!   draws come from (seed, epoch, row, view), never from thread timing, so results do not depend
//!   on `data.num_workers` either.
//! - **Bounded reading**: rank 0 verifies the manifest checksums and broadcasts the shard plan;
//!   each rank keeps only per-row token ids in memory and reads image row groups on demand
//!   through a cache of `data.cache_mb` MiB.
//! - **Views**: a sample with fewer views than `data.views` is an error naming the row —
//!   replicating view 0 would silently feed a two-view model a different input than the
//!   reference, so the config must say `views = 1` for one-view data.
//! - **Batch sizes**: the `train` split yields micro-batches of `train.batch_size /
//!   train.accumulation_steps` global samples (one optimizer step = `accumulation_steps` of
//!   them, [`sampler::step_batches`]), any other split batches of `eval.batch_size`. Training
//!   drops or keeps the last incomplete optimizer step per `train.drop_last` (kept: split as
//!   evenly as possible, so a rank's b may differ on that step or be 0).

mod assemble;
pub mod plan;
mod store;
pub mod testing;

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use tch::Tensor;

use crate::config::Config;
use crate::data::image::ImageError;
use crate::data::prepare::PrepareError;
use crate::data::sampler::{self, permutation, Cursor, SamplerError};
pub use crate::dataset::Split;
use crate::dist::world::World;
use assemble::{Assembler, Mode};
pub use plan::ShardPlan;
use store::{Meta, Store};

#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid manifest: {reason}")]
    Manifest { path: PathBuf, reason: String },
    #[error("{path}: sha256 mismatch: manifest says {expected}, file has {actual}")]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("rank {rank}: the coordinator (rank 0) could not build the shard plan: {reason}")]
    Coordinator { rank: usize, reason: String },
    #[error("{path}: unreadable Parquet shard: {reason}")]
    Parquet { path: PathBuf, reason: String },
    #[error("{path}: row {row}: {reason}")]
    Row {
        path: PathBuf,
        row: u64,
        reason: String,
    },
    #[error("row {row} has {have} image view(s) but data.views = {want}")]
    Views { row: u64, have: usize, want: usize },
    #[error("this split has no neg_index values: training batches need the train split")]
    NoNegatives,
    #[error("row {row} has no hard negative (neg_index is null), so it cannot be trained on with ITHN; rerun prepare so every train row gets one")]
    MissingNegative { row: u64 },
    #[error("invalid loader option {key}: {reason}")]
    Option { key: &'static str, reason: String },
    /// The manifest could not be read or failed `prepare`'s checks, or a shard could not be hashed.
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Sampler(#[from] SamplerError),
}

/// One rank's part of one global batch.
#[derive(Debug)]
pub struct Batch {
    /// Split row numbers of this rank's samples, in global-batch order.
    pub indices: Vec<u64>,
    /// Sample ids (the `id` column).
    pub ids: Vec<String>,
    /// `[b, views, 3, S, S]` f32, ImageNet-normalised.
    pub images: Tensor,
    /// Same shape for the hard negatives; empty (`[0]`) in eval batches.
    pub neg_images: Tensor,
    /// `[b, T]` i64, T = longest report of the global batch; 0-padded.
    pub reports_ids: Tensor,
    /// `[b, T]` i64: 1 over the ids, 0 on padding.
    pub reports_masks: Tensor,
    /// `[b, T⁻]` for the negatives (padded over the global batch's negatives); `[0, 0]` in eval.
    pub neg_reports_ids: Tensor,
    pub neg_reports_masks: Tensor,
    /// B of this step (the last batch of an epoch may be smaller).
    pub global_batch: usize,
    /// Position of this rank's slice inside the global batch.
    pub offset: usize,
    /// Position of the global batch's first sample in the epoch's order (training) or in the
    /// split (evaluation): `start + offset` is this rank's first sample's position, whatever
    /// the sizes of earlier batches.
    pub start: usize,
}

/// Everything the loader needs, resolved from the config (or set directly by tests/benches).
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderOptions {
    pub dir: PathBuf,
    pub split: Split,
    pub seed: u64,
    /// Global samples of one loader batch: the micro-batch `train.batch_size /
    /// train.accumulation_steps` for `train`, `eval.batch_size` otherwise.
    pub batch_size: usize,
    /// Loader batches per optimizer step (`train.accumulation_steps`; 1 for evaluation): with
    /// `drop_last` an incomplete optimizer step is dropped whole.
    pub accumulation_steps: usize,
    pub drop_last: bool,
    pub views: usize,
    pub resize: u32,
    pub image_size: u32,
    /// Random crop + flip for training batches (`data.augment`); false: the eval transform.
    pub augment: bool,
    pub num_workers: usize,
    pub prefetch: usize,
    pub cache_mb: usize,
    /// Rank 0 checks every shard's sha256 before anyone reads.
    pub verify_checksums: bool,
}

impl LoaderOptions {
    /// The options of `split` in `cfg`. For `train`, a loader batch is one micro-batch of the
    /// global batch (`train.batch_size / train.accumulation_steps` samples).
    pub fn from_config(cfg: &Config, split: Split) -> LoaderOptions {
        let k = cfg.train.accumulation_steps.max(1);
        let (batch_size, accumulation_steps) = if split == Split::Train {
            (cfg.train.batch_size / k, k)
        } else {
            (cfg.eval.batch_size, 1)
        };
        LoaderOptions {
            dir: cfg.data.prepared.clone(),
            split,
            seed: cfg.train.seed,
            batch_size,
            accumulation_steps,
            drop_last: cfg.train.drop_last,
            views: cfg.data.views,
            resize: cfg.data.resize as u32,
            image_size: cfg.data.image_size as u32,
            augment: cfg.data.augment,
            num_workers: cfg.data.num_workers,
            prefetch: cfg.data.prefetch,
            cache_mb: cfg.data.cache_mb,
            verify_checksums: true,
        }
    }

    fn validate(&self) -> Result<(), LoaderError> {
        let bad = |key, reason: &str| {
            Err(LoaderError::Option {
                key,
                reason: reason.to_string(),
            })
        };
        if self.batch_size == 0 {
            return bad("batch_size", "must be ≥ 1");
        }
        if self.accumulation_steps == 0 {
            return bad("train.accumulation_steps", "must be ≥ 1");
        }
        if !(1..=2).contains(&self.views) {
            return bad("data.views", "must be 1 or 2");
        }
        if self.image_size == 0 || self.resize < self.image_size {
            return bad("data.resize", "must be ≥ data.image_size ≥ 1");
        }
        Ok(())
    }
}

struct Inner {
    /// Why this split cannot be trained on (no or incomplete negatives), found once at open so
    /// that training fails on its first batch rather than mid-epoch.
    train_blocker: Option<fn(u64) -> LoaderError>,
    first_missing_negative: u64,
    opts: LoaderOptions,
    store: Store,
    meta: Meta,
    pool: rayon::ThreadPool,
    rank: usize,
    world: usize,
}

/// A split's loader for one rank. Cheap to share: iterators hold an `Arc` of it.
#[derive(Clone)]
pub struct Loader {
    inner: Arc<Inner>,
}

impl Loader {
    /// Coordinated construction: rank 0 validates the manifest (checksums) and broadcasts the
    /// shard plan; every rank then opens its loader. Collective: call on every rank.
    pub fn new(cfg: &Config, world: &World, split: Split) -> Result<Loader, LoaderError> {
        let opts = LoaderOptions::from_config(cfg, split);
        let plan = ShardPlan::coordinated(world, &opts.dir, split, opts.verify_checksums)?;
        Loader::open(opts, &plan, world.rank, world.size)
    }

    /// Open the loader of `rank` in a world of `world` ranks from an agreed plan. Pure with
    /// respect to MPI, so tests can build every rank's view in one process.
    pub fn open(
        opts: LoaderOptions,
        plan: &ShardPlan,
        rank: usize,
        world: usize,
    ) -> Result<Loader, LoaderError> {
        opts.validate()?;
        if rank >= world {
            return Err(SamplerError::BadRank { rank, world }.into());
        }
        let (store, meta) = Store::open(plan, opts.cache_mb)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(opts.num_workers.max(1))
            .thread_name(|i| format!("ithn-decode-{i}"))
            .build()
            .map_err(|e| LoaderError::Option {
                key: "data.num_workers",
                reason: e.to_string(),
            })?;
        let missing = meta.neg.iter().position(Option::is_none);
        let train_blocker: Option<fn(u64) -> LoaderError> = match missing {
            None => None,
            Some(_) if meta.neg.iter().all(Option::is_none) => Some(|_| LoaderError::NoNegatives),
            Some(_) => Some(|row| LoaderError::MissingNegative { row }),
        };
        Ok(Loader {
            inner: Arc::new(Inner {
                train_blocker,
                first_missing_negative: missing.unwrap_or(0) as u64,
                opts,
                store,
                meta,
                pool,
                rank,
                world,
            }),
        })
    }

    pub fn options(&self) -> &LoaderOptions {
        &self.inner.opts
    }

    /// Rows in the split.
    pub fn rows(&self) -> usize {
        self.inner.meta.rows()
    }

    /// Training loader batches (micro-batches) per epoch (the same for every epoch).
    pub fn epoch_batches(&self) -> usize {
        let o = &self.inner.opts;
        sampler::train_batches(self.rows(), o.batch_size, o.accumulation_steps, o.drop_last)
    }

    /// Global evaluation batches (the whole split, last batch kept).
    pub fn eval_num_batches(&self) -> usize {
        sampler::num_batches(self.rows(), self.inner.opts.batch_size, false)
    }

    /// Training batch `k` of `epoch`, built on the calling thread (no prefetch).
    pub fn train_batch(&self, epoch: u64, k: usize) -> Result<Batch, LoaderError> {
        let order = permutation(self.rows(), self.inner.opts.seed, epoch);
        self.inner.train_batch(&order, epoch, k)
    }

    /// Evaluation batch `k` (split order, no augmentation, no negatives).
    pub fn eval_batch(&self, k: usize) -> Result<Batch, LoaderError> {
        self.inner.eval_batch(k)
    }

    /// The rest of `cursor.epoch` from `cursor.batches_consumed` on, built in the background.
    pub fn iter_from(&self, cursor: Cursor) -> Batches {
        let inner = self.inner.clone();
        let start = cursor.batches_consumed as usize;
        let end = self.epoch_batches();
        // O(n) once per epoch (a few ms for MIMIC), shared by every batch of the iterator.
        let order = permutation(self.rows(), self.inner.opts.seed, cursor.epoch);
        Batches::spawn(
            self.inner.opts.prefetch,
            move |k| inner.train_batch(&order, cursor.epoch, k),
            start..end,
        )
    }

    /// One pass over the split for evaluation, built in the background.
    pub fn eval_batches(&self) -> Batches {
        let inner = self.inner.clone();
        Batches::spawn(
            self.inner.opts.prefetch,
            move |k| inner.eval_batch(k),
            0..self.eval_num_batches(),
        )
    }
}

impl Inner {
    fn assembler(&self) -> Assembler<'_> {
        Assembler {
            opts: &self.opts,
            store: &self.store,
            meta: &self.meta,
            pool: &self.pool,
        }
    }

    fn train_batch(&self, order: &[u64], epoch: u64, k: usize) -> Result<Batch, LoaderError> {
        if let Some(blocker) = self.train_blocker {
            return Err(blocker(self.first_missing_negative));
        }
        let o = &self.opts;
        let s = sampler::micro_slice(
            order.len(),
            o.batch_size,
            o.accumulation_steps,
            o.drop_last,
            k,
            self.world,
            self.rank,
        )?;
        let global = &order[s.global.clone()];
        let local = s.local.start - s.global.start..s.local.end - s.global.start;
        let mut b = self
            .assembler()
            .batch(Mode::Train { epoch }, global, local)?;
        b.start = s.global.start;
        Ok(b)
    }

    fn eval_batch(&self, k: usize) -> Result<Batch, LoaderError> {
        let n = self.meta.rows();
        let s = sampler::eval_slice(n, self.opts.batch_size, k, self.world, self.rank)?;
        let global: Vec<u64> = (s.global.start as u64..s.global.end as u64).collect();
        let local = s.local.start - s.global.start..s.local.end - s.global.start;
        let mut b = self.assembler().batch(Mode::Eval, &global, local)?;
        b.start = s.global.start;
        Ok(b)
    }
}

/// Batches produced by a background thread, at most `prefetch` ahead of the consumer. Stops
/// after the first error (which it yields). Dropping it stops the producer.
pub struct Batches {
    rx: Option<Receiver<Result<Batch, LoaderError>>>,
    handle: Option<JoinHandle<()>>,
}

impl Batches {
    fn spawn<F>(prefetch: usize, make: F, range: std::ops::Range<usize>) -> Batches
    where
        F: Fn(usize) -> Result<Batch, LoaderError> + Send + 'static,
    {
        let (tx, rx) = sync_channel(prefetch);
        let handle = std::thread::Builder::new()
            .name("ithn-loader".into())
            .spawn(move || {
                for k in range {
                    let item = make(k);
                    let failed = item.is_err();
                    if tx.send(item).is_err() || failed {
                        break;
                    }
                }
            })
            .expect("spawning the loader thread");
        Batches {
            rx: Some(rx),
            handle: Some(handle),
        }
    }
}

impl Iterator for Batches {
    type Item = Result<Batch, LoaderError>;
    fn next(&mut self) -> Option<Self::Item> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        // Closing the channel first makes a blocked producer's send fail, so join returns.
        self.rx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests;
