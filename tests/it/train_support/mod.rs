//! Shared by `train_run` and `evaluate_mpi`: builds a small prepared dataset with the real
//! binary (phantom images from `ithn-dist synth`, shards from `ithn-dist prepare`) from the first
//! records of the bundled IU X-Ray annotation (data/iu_xray/annotation.json in this repository).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use crate::util::{bin, repo};

pub fn check(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `ithn-dist ARGS` in one process.
pub fn run(args: &[&str]) -> Output {
    check(
        Command::new(bin())
            .args(args)
            .output()
            .expect("run ithn-dist"),
        &format!("ithn-dist {args:?}"),
    )
}

/// `mpirun -np N ithn-dist ARGS`, one libtorch thread per rank.
pub fn mpirun(np: usize, args: &[&str]) -> Output {
    let out = Command::new("mpirun")
        .args(["--oversubscribe", "-np", &np.to_string(), bin()])
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .expect("mpirun must be on PATH");
    check(out, &format!("mpirun -np {np} ithn-dist {args:?}"))
}

/// A prepared directory of `train`/`val`/`test` records (first N of each split), 72 px images.
pub fn prepared(dir: &Path, train: usize, val: usize, test: usize) -> PathBuf {
    let text =
        std::fs::read_to_string(repo("data/iu_xray/annotation.json")).expect("bundled annotation");
    let ann: serde_json::Value = serde_json::from_str(&text).expect("annotation JSON");
    let take = |split: &str, n: usize| {
        serde_json::Value::Array(ann[split].as_array().expect(split)[..n].to_vec())
    };
    let sub = serde_json::json!({"train": take("train", train), "val": take("val", val), "test": take("test", test)});
    let ann_path = dir.join("annotation.json");
    std::fs::write(&ann_path, sub.to_string()).expect("write annotation subset");
    let images = dir.join("images");
    let out = dir.join("prepared");
    let s = |p: &Path| p.to_string_lossy().into_owned();
    run(&[
        "synth",
        "--ann",
        &s(&ann_path),
        "--out",
        &s(&images),
        "--size",
        "80",
    ]);
    run(&[
        "prepare",
        "--source",
        "r2gen",
        "--ann",
        &s(&ann_path),
        "--images",
        &s(&images),
        "--dataset",
        "iu_xray",
        "--out",
        &s(&out),
        "--resize",
        "72",
    ]);
    out
}

/// Parses a JSON-lines file.
pub fn jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: bad line {l}: {e}", path.display()))
        })
        .collect()
}
