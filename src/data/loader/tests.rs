//! Loader tests on small synthetic shards written by [`super::testing`]: world-size
//! independence (W=1 vs W=2/3/4 tensor-equal), exact eval coverage, cursor replay, thread-count
//! independence, global padding, and the error paths. Images are small (40×36 → resize 34,
//! crop 32) so every test runs in well under a second.

use std::path::Path;

use super::testing::{write_split, TestPixels, TestRow};
use super::*;
use crate::data::image::{self, Channels, Image};

const N: usize = 23;

fn image(seed: u64, w: u32, h: u32, channels: Channels) -> Image {
    let c = channels as u32;
    let data = (0..w * h * c)
        .map(|i| {
            (u64::from(i)
                .wrapping_mul(2654435761)
                .wrapping_add(seed * 97)
                >> 3) as u8
        })
        .collect();
    Image::from_raw(w, h, channels, data, "test").unwrap()
}

/// N rows, two views, report lengths 3..=13, negatives = a fixed derangement.
fn rows(channels: Channels) -> Vec<TestRow> {
    (0..N)
        .map(|i| TestRow {
            id: format!("s{i}"),
            ids: (0..3 + (i * 7) % 11).map(|t| t as i64).collect(),
            images: vec![
                image(i as u64, 40, 36, channels),
                image(100 + i as u64, 36, 44, channels),
            ],
            neg_index: Some(((i * 5 + 3) % N) as u64),
        })
        .collect()
}

fn opts(dir: &Path, split: Split) -> LoaderOptions {
    LoaderOptions {
        dir: dir.to_path_buf(),
        split,
        seed: 7580,
        batch_size: 8,
        accumulation_steps: 1,
        drop_last: false,
        views: 2,
        resize: 34,
        image_size: 32,
        augment: true,
        num_workers: 2,
        prefetch: 2,
        cache_mb: 1,
        verify_checksums: true,
    }
}

fn prepared(pixels: TestPixels) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_split(
        dir.path(),
        Split::Train,
        &rows(Channels::Gray),
        pixels,
        10,
        4,
    )
    .unwrap();
    let mut val = rows(Channels::Rgb);
    val.truncate(11);
    val.iter_mut().for_each(|r| r.neg_index = None); // eval splits carry no negatives
    write_split(dir.path(), Split::Val, &val, pixels, 6, 3).unwrap();
    dir
}

fn open(o: &LoaderOptions, rank: usize, world: usize) -> Loader {
    let plan = ShardPlan::from_manifest(&o.dir, o.split).unwrap();
    plan.verify_checksums().unwrap();
    Loader::open(o.clone(), &plan, rank, world).unwrap()
}

/// Every batch rank `rank` of `world` reads from `(epoch, consumed)` to the end of the epoch.
fn batches_from(
    o: &LoaderOptions,
    rank: usize,
    world: usize,
    epoch: u64,
    consumed: u64,
) -> Vec<Batch> {
    open(o, rank, world)
        .iter_from(Cursor {
            epoch,
            batches_consumed: consumed,
        })
        .map(Result::unwrap)
        .collect()
}

fn cat(ts: Vec<&Tensor>) -> Tensor {
    Tensor::cat(&ts, 0)
}

/// Concatenate the ranks' parts of one step and compare with the single-process batch.
fn assert_same_global(single: &Batch, parts: &[&Batch]) {
    let pick = |f: fn(&Batch) -> &Tensor| cat(parts.iter().map(|b| f(b)).collect());
    assert!(single.images.equal(&pick(|b| &b.images)));
    assert!(single.neg_images.equal(&pick(|b| &b.neg_images)));
    assert!(single.reports_ids.equal(&pick(|b| &b.reports_ids)));
    assert!(single.reports_masks.equal(&pick(|b| &b.reports_masks)));
    assert!(single.neg_reports_ids.equal(&pick(|b| &b.neg_reports_ids)));
    assert!(single
        .neg_reports_masks
        .equal(&pick(|b| &b.neg_reports_masks)));
    let idx: Vec<u64> = parts.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(single.indices, idx);
    let ids: Vec<String> = parts.iter().flat_map(|b| b.ids.clone()).collect();
    assert_eq!(single.ids, ids);
    let mut offset = 0;
    for p in parts {
        assert_eq!((p.offset, p.global_batch), (offset, single.global_batch));
        offset += p.indices.len();
    }
}

#[test]
fn world_sizes_produce_identical_global_batches() {
    let dir = prepared(TestPixels::Jpeg { quality: 90 });
    let o = opts(dir.path(), Split::Train);
    let single = open(&o, 0, 1);
    assert_eq!(single.epoch_batches(), 3); // 23 = 8 + 8 + 7, last kept
    for world in [2, 4] {
        let ranks: Vec<Loader> = (0..world).map(|r| open(&o, r, world)).collect();
        for k in 0..3 {
            let s = single.train_batch(2, k).unwrap();
            let parts: Vec<Batch> = ranks.iter().map(|l| l.train_batch(2, k).unwrap()).collect();
            assert_same_global(&s, &parts.iter().collect::<Vec<_>>());
        }
    }
}

#[test]
fn batch_contents_follow_the_permutation_and_pad_globally() {
    let dir = prepared(TestPixels::Raw);
    let o = opts(dir.path(), Split::Train);
    let order = permutation(N, o.seed, 1);
    let rows = rows(Channels::Gray);
    let rank1 = open(&o, 1, 2).train_batch(1, 0).unwrap();
    assert_eq!(rank1.indices, order[4..8].to_vec());
    assert_eq!(rank1.images.size(), vec![4, 2, 3, 32, 32]);
    // T is the longest report of the *global* batch, not of this rank's half.
    let t_global = order[..8]
        .iter()
        .map(|&r| rows[r as usize].ids.len())
        .max()
        .unwrap();
    assert_eq!(rank1.reports_ids.size(), vec![4, t_global as i64]);
    for (i, &r) in rank1.indices.iter().enumerate() {
        let want = &rows[r as usize].ids;
        let got: Vec<i64> = Vec::try_from(rank1.reports_ids.get(i as i64)).unwrap();
        let mask: Vec<i64> = Vec::try_from(rank1.reports_masks.get(i as i64)).unwrap();
        assert_eq!(&got[..want.len()], &want[..]);
        assert!(got[want.len()..].iter().all(|&v| v == 0));
        assert_eq!(mask.iter().sum::<i64>(), want.len() as i64);
        assert!(mask[..want.len()].iter().all(|&v| v == 1));
        assert_eq!(rank1.ids[i], format!("s{r}"));
    }
    let t_neg = order[..8]
        .iter()
        .map(|&r| rows[rows[r as usize].neg_index.unwrap() as usize].ids.len())
        .max()
        .unwrap();
    assert_eq!(rank1.neg_reports_ids.size(), vec![4, t_neg as i64]);
}

#[test]
fn eval_epoch_covers_the_split_exactly_once() {
    let dir = prepared(TestPixels::Jpeg { quality: 90 });
    let o = opts(dir.path(), Split::Val);
    for world in [1, 3, 4] {
        let mut seen = Vec::new();
        for r in 0..world {
            for b in open(&o, r, world).eval_batches() {
                let b = b.unwrap();
                assert_eq!(b.images.size()[0], b.indices.len() as i64);
                assert_eq!(b.neg_images.numel(), 0);
                seen.push((b.global_batch, b.offset, b.indices));
            }
        }
        // Re-assemble in (batch, rank) order: 0..11 each once, in split order.
        seen.sort_by_key(|(_, off, idx)| (idx.first().copied(), *off));
        let all: Vec<u64> = seen.into_iter().flat_map(|(_, _, i)| i).collect();
        assert_eq!(all, (0..11).collect::<Vec<u64>>(), "W={world}");
    }
}

#[test]
fn eval_images_are_the_exact_resize() {
    let dir = prepared(TestPixels::Raw);
    let o = opts(dir.path(), Split::Val);
    let b = open(&o, 0, 1).eval_batch(0).unwrap();
    let src = &rows(Channels::Rgb)[3].images[1];
    let want = image::to_tensor_normalized(&[image::resize_exact(src, 32, 32)]);
    assert!(b.images.get(3).get(1).equal(&want.get(0)));
}

#[test]
fn without_augmentation_training_images_are_the_eval_resize_every_epoch() {
    let dir = prepared(TestPixels::Raw);
    let mut o = opts(dir.path(), Split::Train);
    o.augment = false;
    let loader = open(&o, 0, 1);
    let (a, b) = (
        loader.train_batch(1, 0).unwrap(),
        loader.train_batch(2, 0).unwrap(),
    );
    let all = rows(Channels::Gray);
    let exact = |row: u64, view: usize| {
        let src = &all[row as usize].images[view];
        image::to_tensor_normalized(&[image::resize_exact(src, 32, 32)]).get(0)
    };
    for batch in [&a, &b] {
        for (slot, &row) in batch.indices.iter().enumerate() {
            for view in 0..2 {
                let got = batch.images.get(slot as i64).get(view as i64);
                assert!(got.equal(&exact(row, view)), "row {row} view {view}");
                let neg = all[row as usize].neg_index.unwrap();
                let got = batch.neg_images.get(slot as i64).get(view as i64);
                assert!(got.equal(&exact(neg, view)), "negative of row {row}");
            }
        }
    }
    // The same row in two epochs: the same pixels (with augmentation on, other crops).
    let row = a.indices[0];
    let slot = b.indices.iter().position(|&r| r == row);
    if let Some(slot) = slot {
        assert!(a.images.get(0).equal(&b.images.get(slot as i64)));
    }
    o.augment = true;
    let augmented = open(&o, 0, 1).train_batch(1, 0).unwrap();
    assert_eq!(augmented.indices, a.indices);
    assert!(!augmented.images.equal(&a.images));
}

#[test]
fn resuming_mid_epoch_replays_identical_batches() {
    let dir = prepared(TestPixels::Jpeg { quality: 90 });
    let o = opts(dir.path(), Split::Train);
    let rank0 = batches_from(&o, 0, 2, 5, 0);
    assert_eq!(rank0.len(), 3);
    // Resume with another world size: rank 0 of 1 holds what ranks 0+1 of 2 held.
    let resumed = batches_from(&o, 0, 1, 5, 1);
    assert_eq!(resumed.len(), 2);
    let rank1 = batches_from(&o, 1, 2, 5, 1);
    for k in 0..2 {
        assert_same_global(&resumed[k], &[&rank0[k + 1], &rank1[k]]);
    }
}

#[test]
fn results_do_not_depend_on_decode_threads_or_prefetch() {
    let dir = prepared(TestPixels::Jpeg { quality: 90 });
    let mut o = opts(dir.path(), Split::Train);
    let collect = |o: &LoaderOptions| batches_from(o, 0, 1, 1, 0);
    o.num_workers = 1;
    o.prefetch = 0;
    let one = collect(&o);
    o.num_workers = 4;
    o.prefetch = 3;
    let four = collect(&o);
    for (a, b) in one.iter().zip(&four) {
        assert_same_global(a, &[b]);
    }
    // And augmentation is real: another epoch gives other crops of the same rows.
    let other = open(&o, 0, 1).train_batch(2, 0).unwrap();
    assert!(!other.images.equal(&one[0].images));
}

#[test]
fn cache_stays_within_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<TestRow> = (0..12)
        .map(|i| TestRow {
            id: format!("b{i}"),
            ids: vec![0, 1, 0],
            images: vec![image(i, 400, 400, Channels::Rgb)],
            neg_index: Some((i + 1) % 12),
        })
        .collect();
    write_split(dir.path(), Split::Train, &big, TestPixels::Raw, 12, 1).unwrap();
    let mut o = opts(dir.path(), Split::Train);
    o.views = 1;
    o.resize = 400;
    o.image_size = 32;
    o.batch_size = 4;
    let l = open(&o, 0, 1);
    for k in 0..3 {
        l.train_batch(1, k).unwrap();
        // 1 MiB bound; one row group (one 480 kB image) may exceed it alone, never two.
        assert!(l.inner.store.cached_bytes() <= (1 << 20) + 600_000);
    }
}

#[test]
fn errors_name_what_is_wrong() {
    let dir = prepared(TestPixels::Raw);
    // Asking for more views than a sample has.
    let one_view: Vec<TestRow> = rows(Channels::Gray)
        .into_iter()
        .map(|mut r| {
            r.images.truncate(1);
            r
        })
        .collect();
    write_split(dir.path(), Split::Test, &one_view, TestPixels::Raw, 30, 8).unwrap();
    let err = open(&opts(dir.path(), Split::Test), 0, 1)
        .eval_batch(0)
        .unwrap_err();
    assert!(
        matches!(
            err,
            LoaderError::Views {
                row: 0,
                have: 1,
                want: 2
            }
        ),
        "{err}"
    );
    // Training on a split without negatives.
    let err = open(&opts(dir.path(), Split::Val), 0, 1)
        .train_batch(1, 0)
        .unwrap_err();
    assert!(matches!(err, LoaderError::NoNegatives), "{err}");
    // A corrupted shard fails the checksum, naming the file.
    let shard = dir.path().join("train-00001.parquet");
    let mut bytes = std::fs::read(&shard).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xFF;
    std::fs::write(&shard, bytes).unwrap();
    let plan = ShardPlan::from_manifest(dir.path(), Split::Train).unwrap();
    let err = plan.verify_checksums().unwrap_err().to_string();
    assert!(
        err.contains("train-00001.parquet") && err.contains("sha256"),
        "{err}"
    );
    // Unknown split (refused where the name is parsed: `Split` has no other values) and an
    // indivisible world.
    assert!("nope".parse::<Split>().is_err());
    let plan = ShardPlan::from_manifest(dir.path(), Split::Test).unwrap();
    let l = Loader::open(opts(dir.path(), Split::Test), &plan, 0, 3).unwrap();
    let err = l.train_batch(1, 0).unwrap_err();
    assert!(
        matches!(err, LoaderError::Sampler(SamplerError::Indivisible { .. })),
        "{err}"
    );
}

#[test]
fn coordinated_plan_on_a_single_process() {
    let dir = prepared(TestPixels::Raw);
    let world = World::single();
    let plan = ShardPlan::coordinated(&world, dir.path(), Split::Train, true).unwrap();
    assert_eq!((plan.rows, plan.shards.len()), (N as u64, 3));
    // This directory has no test shards: the coordinator's error reaches every rank.
    let err = ShardPlan::coordinated(&world, dir.path(), Split::Test, true).unwrap_err();
    assert!(
        matches!(err, LoaderError::Coordinator { rank: 0, .. }),
        "{err}"
    );
}

#[test]
fn a_train_row_without_negative_fails_the_first_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rows(Channels::Gray);
    r[17].neg_index = None;
    write_split(dir.path(), Split::Train, &r, TestPixels::Raw, 30, 8).unwrap();
    let l = open(&opts(dir.path(), Split::Train), 0, 1);
    let first = l
        .iter_from(Cursor {
            epoch: 1,
            batches_consumed: 0,
        })
        .next()
        .unwrap();
    assert!(
        matches!(first, Err(LoaderError::MissingNegative { row: 17 })),
        "{first:?}"
    );
    // Evaluation of the same split does not need negatives.
    assert!(l.eval_batch(0).is_ok());
}

#[test]
fn the_plan_is_read_with_prepares_manifest_reader() {
    let dir = prepared(TestPixels::Raw);
    let manifest = crate::data::prepare::read_manifest(dir.path()).unwrap();
    let plan = ShardPlan::from_manifest(dir.path(), Split::Val).unwrap();
    let val: Vec<_> = manifest
        .shards_of(crate::data::prepare::Split::Val)
        .cloned()
        .collect();
    assert_eq!((plan.shards, plan.rows), (val, 11));
    // What prepare's reader refuses (here: an unknown format version), the loader refuses too,
    // naming the file.
    let path = dir.path().join("manifest.json");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"format_version\": 1,", "\"format_version\": 99,");
    std::fs::write(&path, text).unwrap();
    let err = ShardPlan::from_manifest(dir.path(), Split::Train)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("manifest.json") && err.contains("format_version 99"),
        "{err}"
    );
}
