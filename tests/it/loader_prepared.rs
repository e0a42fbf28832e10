//! The loader on a directory written by the real `ithn-dist prepare` (not by the loader's own
//! test writer): 16 train / 5 val records of ../shared/data/iu_xray/annotation.json with
//! phantom images from `ithn-dist synth`, two views per study, JPEG and raw pixels.
//! Checks: W=1 and W=2 give tensor-equal global batches, negatives come from the train split,
//! an eval epoch visits every val row once, and `ithn-dist bench loader` runs on the output.

use std::path::Path;
use std::process::Command;

use ithn_dist::data::loader::{Batch, Loader, LoaderOptions, ShardPlan};
use tch::Tensor;

use crate::util::bin;

fn run_ok(args: &[&str]) -> String {
    let out = Command::new(bin())
        .args(args)
        .output()
        .expect("run ithn-dist");
    assert!(
        out.status.success(),
        "ithn-dist {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A small annotation (first records of each split of the shared IU X-Ray file).
fn small_annotation(dir: &Path) -> String {
    let ann = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/iu_xray/annotation.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&ann).unwrap()).unwrap();
    let take = |k: &str, n: usize| serde_json::Value::from(v[k].as_array().unwrap()[..n].to_vec());
    let small = serde_json::json!({ "train": take("train", 16), "val": take("val", 5), "test": take("test", 3) });
    let path = dir.join("annotation.json");
    std::fs::write(&path, serde_json::to_vec(&small).unwrap()).unwrap();
    path.to_str().unwrap().to_string()
}

fn prepare(root: &Path, pixels: &str) -> std::path::PathBuf {
    let ann = small_annotation(root);
    let images = root.join("images");
    let out = root.join(format!("prepared-{pixels}"));
    if !images.exists() {
        run_ok(&[
            "synth",
            "--ann",
            &ann,
            "--out",
            images.to_str().unwrap(),
            "--size",
            "96",
        ]);
    }
    run_ok(&[
        "prepare",
        "--source",
        "r2gen",
        "--ann",
        &ann,
        "--images",
        images.to_str().unwrap(),
        "--dataset",
        "iu_xray",
        "--out",
        out.to_str().unwrap(),
        "--pixels",
        pixels,
        "--resize",
        "72",
        "--shard-rows",
        "6",
        "--row-group-rows",
        "4",
        "--no-progress",
    ]);
    out
}

fn options(dir: &Path, split: &str) -> LoaderOptions {
    LoaderOptions {
        dir: dir.to_path_buf(),
        split: split.parse().unwrap(),
        seed: 7580,
        batch_size: 4,
        accumulation_steps: 1,
        drop_last: false,
        views: 2,
        resize: 72,
        image_size: 64,
        augment: true,
        num_workers: 2,
        prefetch: 1,
        cache_mb: 4,
        verify_checksums: true,
    }
}

fn open(dir: &Path, split: &str, rank: usize, world: usize) -> Loader {
    let plan = ShardPlan::from_manifest(dir, split.parse().unwrap()).unwrap();
    plan.verify_checksums().unwrap();
    Loader::open(options(dir, split), &plan, rank, world).unwrap()
}

fn same(a: &Tensor, parts: &[&Tensor]) -> bool {
    a.equal(&Tensor::cat(parts, 0))
}

#[test]
fn prepared_shards_load_identically_on_one_and_two_ranks() {
    let root = tempfile::tempdir().unwrap();
    for pixels in ["jpeg", "raw"] {
        let dir = prepare(root.path(), pixels);
        let single = open(&dir, "train", 0, 1);
        assert_eq!(single.rows(), 16);
        let ranks = [open(&dir, "train", 0, 2), open(&dir, "train", 1, 2)];
        for k in 0..single.epoch_batches() {
            let s = single.train_batch(3, k).unwrap();
            let p: Vec<Batch> = ranks.iter().map(|l| l.train_batch(3, k).unwrap()).collect();
            assert_eq!(s.images.size(), vec![4, 2, 3, 64, 64]);
            assert!(
                same(&s.images, &[&p[0].images, &p[1].images]),
                "{pixels} batch {k}"
            );
            assert!(same(&s.neg_images, &[&p[0].neg_images, &p[1].neg_images]));
            assert!(same(
                &s.reports_ids,
                &[&p[0].reports_ids, &p[1].reports_ids]
            ));
            assert!(same(
                &s.neg_reports_masks,
                &[&p[0].neg_reports_masks, &p[1].neg_reports_masks]
            ));
            assert!(s.indices.iter().all(|&i| i < 16));
        }
        let mut seen: Vec<u64> = open(&dir, "val", 0, 1)
            .eval_batches()
            .flat_map(|b| b.unwrap().indices)
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..5).collect::<Vec<u64>>(), "{pixels}");
    }
}

#[test]
fn bench_loader_runs_on_prepared_output() {
    let root = tempfile::tempdir().unwrap();
    let dir = prepare(root.path(), "raw");
    let out = run_ok(&[
        "bench",
        "loader",
        "--data",
        dir.to_str().unwrap(),
        "--no-python",
        "--batches",
        "2",
        "--batch-size",
        "4",
        "--views",
        "2",
        "--resize",
        "72",
        "--image-size",
        "64",
    ]);
    assert!(
        out.contains("rust loader:") && out.contains("images/s"),
        "{out}"
    );
}
