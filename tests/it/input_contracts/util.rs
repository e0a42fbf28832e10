//! Shared by the input-contract tests: run the real binary in temp dirs, build small R2Gen
//! annotations with phantom images (`ithn-dist synth`), prepared directories and checkpoints.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

pub use crate::util::{bin, repo, shared};

pub fn s(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_string()
}

/// `ithn-dist ARGS` (one libtorch thread, no stdin).
pub fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("OMP_NUM_THREADS", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run ithn-dist")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs and asserts success.
pub fn ok(args: &[&str]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "ithn-dist {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    out
}

/// Runs and asserts exit code `code` and a message holding every one of `needles`; never a
/// panic or a libtorch frame dump.
pub fn refused(args: &[&str], code: i32, needles: &[&str]) -> String {
    let out = run(args);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "ithn-dist {args:?}: expected exit {code}, got {}:\nstdout: {}\nstderr: {err}",
        out.status,
        stdout(&out)
    );
    assert_no_crash(args, &err);
    for n in needles {
        assert!(
            err.contains(n),
            "ithn-dist {args:?}: the message does not name {n:?}:\n{err}"
        );
    }
    err
}

/// [`refused`] for owned arguments.
pub fn refused_owned(args: &[String], code: i32, needles: &[&str]) -> String {
    refused(&strs(args), code, needles)
}

/// Borrowed views of owned arguments.
pub fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

pub fn assert_no_crash(args: &[&str], err: &str) {
    for sign in [
        "panicked",
        "frame #",
        "RUST_BACKTRACE",
        "Exception raised from",
    ] {
        assert!(
            !err.contains(sign),
            "ithn-dist {args:?} crashed ({sign}):\n{err}"
        );
    }
}

/// An annotation record: id, report, number of images.
pub type Record = (String, String, usize);
/// The three lists of an annotation, train, val, test.
pub type Splits = [(&'static str, Vec<Record>); 3];

/// Writes an R2Gen annotation `{train, val, test}` of `(id, report, images)` records.
pub fn write_annotation(path: &Path, splits: Splits) {
    let mut root = serde_json::Map::new();
    for (split, recs) in splits {
        let list: Vec<Value> = recs
            .into_iter()
            .map(|(id, report, n)| {
                let paths: Vec<String> = (0..n).map(|v| format!("{id}/{v}.png")).collect();
                json!({"id": id, "report": report, "image_path": paths, "split": split})
            })
            .collect();
        root.insert(split.into(), Value::Array(list));
    }
    std::fs::write(path, Value::Object(root).to_string()).expect("write annotation");
}

/// One small valid grey PNG (a phantom from `ithn-dist synth`, `size` px).
pub fn png_bytes(dir: &Path, size: u32) -> Vec<u8> {
    let ann = dir.join("one.json");
    let rec = json!({"id": "p0", "report": "the heart is normal.", "image_path": ["p0/0.png"], "split": "train"});
    std::fs::write(
        &ann,
        json!({"train": [rec], "val": [], "test": []}).to_string(),
    )
    .unwrap();
    let out = dir.join("one-img");
    ok(&[
        "synth",
        "--ann",
        &s(&ann),
        "--out",
        &s(&out),
        "--size",
        &size.to_string(),
    ]);
    std::fs::read(out.join("p0/0.png")).expect("synth wrote p0/0.png")
}

/// Writes `bytes` at every `image_path` of the annotation whose id is not in `missing`.
pub fn write_images(ann: &Path, images: &Path, bytes: &[u8], missing: &[&str]) {
    let root: Value = serde_json::from_str(&std::fs::read_to_string(ann).unwrap()).unwrap();
    for split in ["train", "val", "test"] {
        for r in root[split].as_array().unwrap() {
            if missing.contains(&r["id"].as_str().unwrap()) {
                continue;
            }
            for p in r["image_path"].as_array().unwrap() {
                let path = images.join(p.as_str().unwrap());
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, bytes).unwrap();
            }
        }
    }
}

/// The first `n` records of each split of the bundled IU annotation, with their image counts.
pub fn iu_records(train: usize, val: usize, test: usize) -> Splits {
    iu_records_at(0, train, val, test)
}

/// Records `offset..offset + n` of each split of the bundled IU annotation (two images each).
pub fn iu_records_at(offset: usize, train: usize, val: usize, test: usize) -> Splits {
    let text = std::fs::read_to_string(repo("data/iu_xray/annotation.json")).unwrap();
    let root: Value = serde_json::from_str(&text).unwrap();
    let take = |split: &str, n: usize| -> Vec<Record> {
        root[split].as_array().unwrap()[offset..offset + n]
            .iter()
            .map(|r| {
                (
                    r["id"].as_str().unwrap().to_string(),
                    r["report"].as_str().unwrap().to_string(),
                    2,
                )
            })
            .collect()
    };
    [
        ("train", take("train", train)),
        ("val", take("val", val)),
        ("test", take("test", test)),
    ]
}

/// `prepare --source r2gen` with 72 px images (what configs/tiny.toml resizes to).
pub fn prepare_args<'a>(ann: &'a str, images: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "prepare",
        "--source",
        "r2gen",
        "--ann",
        ann,
        "--images",
        images,
        "--dataset",
        "iu_xray",
        "--out",
        out,
        "--resize",
        "72",
    ]
}

/// A small world: annotation (IU records), images, prepared data, and a fresh tiny checkpoint.
pub struct World {
    pub dir: PathBuf,
    pub ann: PathBuf,
    pub images: PathBuf,
    pub data: PathBuf,
    pub ckpt: PathBuf,
    pub png: Vec<u8>,
}

pub fn tiny_config() -> String {
    s(&repo("configs/tiny.toml"))
}

impl World {
    pub fn new(dir: &Path, train: usize, val: usize, test: usize) -> World {
        let ann = dir.join("ann.json");
        write_annotation(&ann, iu_records(train, val, test));
        let png = png_bytes(dir, 80);
        let images = dir.join("images");
        write_images(&ann, &images, &png, &[]);
        let data = dir.join("prepared");
        ok(&prepare_args(&s(&ann), &s(&images), &s(&data)));
        let ckpt = dir.join("ckpt");
        init_model(&data, &ckpt, &[]);
        World {
            dir: dir.to_path_buf(),
            ann,
            images,
            data,
            ckpt,
            png,
        }
    }
}

/// `init-model` with configs/tiny.toml (short decoding) on `data`'s vocabulary, plus `sets`.
pub fn init_model(data: &Path, out: &Path, sets: &[&str]) {
    let vocab = data.join("vocab.json");
    let prepared = format!("data.prepared={:?}", s(data));
    let (cfg, v, o) = (tiny_config(), s(&vocab), s(out));
    let mut args = vec![
        "init-model",
        "--config",
        &cfg,
        "--vocab",
        &v,
        "--out",
        &o,
        "--set",
        "eval.max_seq_length=6",
        "--set",
        &prepared,
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    ok(&args);
}

/// The manifest of a prepared directory.
pub fn manifest(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap()
}

/// The tokens of a vocab.json.
pub fn tokens(path: &Path) -> Vec<String> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    serde_json::from_value(v["tokens"].clone()).unwrap()
}
