//! Helpers shared by the `prepare_*` integration tests: run the real binary, read shards back,
//! and check the invariants every prepared directory must satisfy.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow::array::{
    Array, BinaryArray, Float32Array, ListArray, StringArray, UInt32Array, UInt64Array, UInt8Array,
};
use ithn_dist::data::prepare::shards::{column, read_shard};
use ithn_dist::data::prepare::{read_manifest, verify_checksums, Manifest, Split};

pub use crate::util::{bin, shared};

pub fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("run ithn-dist")
}

pub fn run_ok(args: &[&str]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "ithn-dist {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Real sentences from the IU X-Ray annotation (fixture: ../shared/data/iu_xray/annotation.json).
pub fn iu_sentences() -> Vec<String> {
    let text =
        std::fs::read_to_string(shared("data/iu_xray/annotation.json")).expect("IU annotation");
    let root: serde_json::Value = serde_json::from_str(&text).expect("json");
    let reports: Vec<String> = root["train"]
        .as_array()
        .expect("train")
        .iter()
        .filter_map(|r| r["report"].as_str().map(str::to_string))
        .collect();
    ithn_dist::data::prepare::fixtures::sentences(reports.iter().map(String::as_str))
}

/// One row read back from the shards.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadRow {
    pub index: u64,
    pub id: String,
    pub subject_id: Option<String>,
    pub split: String,
    pub report_raw: String,
    pub report: String,
    pub ids: Vec<i64>,
    pub n_views: u8,
    pub images: Vec<(Vec<u8>, u32, u32)>,
    pub pixel_format: String,
    pub neg: Option<(u64, f32)>,
}

pub fn rows(dir: &Path, m: &Manifest, split: Split) -> Vec<ReadRow> {
    let mut out = Vec::new();
    for shard in m.shards_of(split) {
        for b in read_shard(&dir.join(&shard.file)).expect("shard readable") {
            let s = |n: &str| column::<StringArray>(&b, n).unwrap_or_else(|| panic!("column {n}"));
            let u32c =
                |n: &str| column::<UInt32Array>(&b, n).unwrap_or_else(|| panic!("column {n}"));
            let img =
                |n: &str| column::<BinaryArray>(&b, n).unwrap_or_else(|| panic!("column {n}"));
            let index = column::<UInt64Array>(&b, "index").expect("index");
            let ids = column::<ListArray>(&b, "ids").expect("ids");
            let n_views = column::<UInt8Array>(&b, "n_views").expect("n_views");
            let neg_index = column::<UInt64Array>(&b, "neg_index").expect("neg_index");
            let neg_score = column::<Float32Array>(&b, "neg_score").expect("neg_score");
            for r in 0..b.num_rows() {
                let mut images = vec![(
                    img("image_0").value(r).to_vec(),
                    u32c("width_0").value(r),
                    u32c("height_0").value(r),
                )];
                if !img("image_1").is_null(r) {
                    images.push((
                        img("image_1").value(r).to_vec(),
                        u32c("width_1").value(r),
                        u32c("height_1").value(r),
                    ));
                }
                let list = ids.value(r);
                let list = list
                    .as_any()
                    .downcast_ref::<arrow::array::Int64Array>()
                    .expect("int64 ids");
                out.push(ReadRow {
                    index: index.value(r),
                    id: s("id").value(r).to_string(),
                    subject_id: (!s("subject_id").is_null(r))
                        .then(|| s("subject_id").value(r).to_string()),
                    split: s("split").value(r).to_string(),
                    report_raw: s("report_raw").value(r).to_string(),
                    report: s("report").value(r).to_string(),
                    ids: list.values().to_vec(),
                    n_views: n_views.value(r),
                    images,
                    pixel_format: s("pixel_format").value(r).to_string(),
                    neg: (!neg_index.is_null(r)).then(|| (neg_index.value(r), neg_score.value(r))),
                });
            }
        }
    }
    out
}

/// The invariants of any prepared directory: manifest valid, checksums match, rows numbered
/// 0..n per split, every train row has a valid negative (another train row with a different
/// cleaned report and, when known, another patient), vocab.json identical to what
/// `ithn-dist text vocab` builds from the listing (see [`check_vocab`]). Returns the manifest
/// and rows per split.
pub fn check_prepared(dir: &Path) -> (Manifest, [Vec<ReadRow>; 3]) {
    let m = read_manifest(dir).expect("manifest");
    verify_checksums(dir, &m).expect("checksums");
    let all = Split::ALL.map(|s| rows(dir, &m, s));
    for (split, rs) in Split::ALL.iter().zip(&all) {
        assert_eq!(rs.len() as u64, m.counts[split], "{split:?} count");
        for (i, r) in rs.iter().enumerate() {
            assert_eq!(r.index, i as u64, "{split:?} rows in index order");
            assert_eq!(r.split, split.name());
            assert_eq!(r.n_views as usize, r.images.len());
            assert_eq!(r.n_views as usize, m.preprocessing.views);
            assert_eq!(r.ids.first(), Some(&0), "ids start with BOS");
            assert!(r.ids.len() <= m.preprocessing.max_seq_length);
            if *split != Split::Train {
                assert!(r.neg.is_none(), "no negative outside train");
            }
        }
    }
    let train = &all[0];
    assert_eq!(
        m.negatives.train_with_negative as usize,
        train.iter().filter(|r| r.neg.is_some()).count()
    );
    for r in train {
        let (j, score) = r
            .neg
            .unwrap_or_else(|| panic!("train row {} has no negative", r.index));
        let n = &train[j as usize];
        assert_ne!(j, r.index, "negative is another sample");
        assert_ne!(
            n.report, r.report,
            "negative has a different cleaned report"
        );
        if let (Some(a), Some(b)) = (&r.subject_id, &n.subject_id) {
            assert_ne!(a, b, "negative from the same patient");
        }
        assert!((0.0..=1.0001).contains(&score), "cosine {score}");
    }
    check_vocab(dir, &m, train);
    (m, all)
}

/// vocab.json is what `ithn-dist text vocab` builds from the listing's train records, skipped
/// ones included (SPEC §1): for an R2Gen source that is the annotation itself; for the other
/// layouts, the kept train rows when none was skipped, else a superset of their tokens.
fn check_vocab(dir: &Path, m: &Manifest, train: &[ReadRow]) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let listed_ann = m.source["ann"]
        .as_str()
        .filter(|_| m.source["kind"] == "r2gen");
    let ann = match listed_ann {
        Some(a) => PathBuf::from(a),
        None => {
            let recs: Vec<serde_json::Value> = train
                .iter()
                .map(|r| serde_json::json!({"id": r.id, "report": r.report_raw}))
                .collect();
            let ann = tmp.path().join("ann.json");
            let root = serde_json::json!({"train": recs, "val": [], "test": []});
            std::fs::write(&ann, serde_json::to_vec(&root).expect("json")).expect("write ann");
            ann
        }
    };
    let vocab = tmp.path().join("vocab.json");
    let threshold = m.vocab.threshold.to_string();
    run_ok(&[
        "text",
        "vocab",
        "--ann",
        ann.to_str().expect("utf8"),
        "--dataset",
        m.dataset.name(),
        "--threshold",
        &threshold,
        "--out",
        vocab.to_str().expect("utf8"),
    ]);
    let expected = std::fs::read(&vocab).expect("vocab");
    let prepared = std::fs::read(dir.join("vocab.json")).expect("prepared vocab");
    let all_listed_kept = m.vocab.train_records == Some(train.len() as u64);
    if listed_ann.is_some() || all_listed_kept {
        assert_eq!(expected, prepared, "vocab.json differs from `text vocab`");
    } else {
        let tokens = |b: &[u8]| -> Vec<String> {
            let v: serde_json::Value = serde_json::from_slice(b).expect("vocab JSON");
            serde_json::from_value(v["tokens"].clone()).expect("tokens")
        };
        let have = tokens(&prepared);
        for t in tokens(&expected) {
            assert!(
                have.contains(&t),
                "token {t:?} of a kept train row is missing"
            );
        }
    }
}

/// Every file of a directory (name → bytes), for byte-identity checks.
pub fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| {
            let e = e.expect("entry");
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap_or_default(),
            )
        })
        .collect();
    files.sort();
    files
}

pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
