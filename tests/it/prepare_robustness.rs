//! Robustness of `ithn-dist prepare` / `inspect`: byte-identical reruns, interruption and
//! rerun, and the documented outcome of each bad input (corrupt JPEG, missing file, empty
//! report, oversized image → row skipped with a reason, or exit 1 with `--strict`; malformed
//! CSV → exit 1 naming file and row; a tampered shard → `inspect` exits 1).
//! Reports are real IU sentences (../shared/data/iu_xray/annotation.json); images are generated.

use crate::prepare_util;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ithn_dist::data::prepare::fixtures::{self, Rng};
use prepare_util::*;

/// A small R2Gen IU-style annotation (`n` train records, 5 val, 5 test) with images.
fn small_r2gen(dir: &Path, n: usize) -> (PathBuf, PathBuf) {
    let sentences = iu_sentences();
    let mut rng = Rng::new(5);
    let mut lists = serde_json::Map::new();
    for (split, count) in [("train", n), ("val", 5), ("test", 5)] {
        let recs: Vec<serde_json::Value> = (0..count).map(|i| serde_json::json!({
            "id": format!("{split}{i}"), "report": fixtures::report(&mut rng, &sentences),
            "image_path": [format!("{split}{i}/0.png"), format!("{split}{i}/1.jpg")], "split": split,
        })).collect();
        lists.insert(split.into(), recs.into());
    }
    let ann = dir.join("ann.json");
    std::fs::write(&ann, serde_json::to_vec(&lists).expect("json")).expect("write ann");
    let images = dir.join("img");
    fixtures::write_r2gen_images(&ann, &images, 16).expect("images");
    (ann, images)
}

fn prepare_args<'a>(ann: &'a Path, images: &'a Path, out: &'a Path) -> Vec<&'a str> {
    vec![
        "prepare",
        "--source",
        "r2gen",
        "--ann",
        s(ann),
        "--images",
        s(images),
        "--dataset",
        "iu_xray",
        "--out",
        s(out),
        "--resize",
        "12",
        "--threshold",
        "1",
        "--shard-rows",
        "8",
    ]
}

#[test]
fn two_runs_are_byte_identical_and_a_rerun_in_place_too() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (ann, images) = small_r2gen(tmp.path(), 40);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    run_ok(&prepare_args(&ann, &images, &a));
    run_ok(&prepare_args(&ann, &images, &b));
    check_prepared(&a);
    let first = snapshot(&a);
    assert!(
        first.len() >= 8,
        "manifest, vocab and several shards: {:?}",
        first.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    assert_eq!(first, snapshot(&b));
    run_ok(&prepare_args(&ann, &images, &a));
    assert_eq!(first, snapshot(&a));
}

#[test]
fn killed_run_keeps_the_previous_output_and_a_rerun_completes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (ann, images) = small_r2gen(tmp.path(), 400);
    let (out, clean) = (tmp.path().join("out"), tmp.path().join("clean"));
    run_ok(&prepare_args(&ann, &images, &clean));
    run_ok(&prepare_args(&ann, &images, &out)); // a previous complete output to be replaced
    let mut child = std::process::Command::new(bin())
        .args(prepare_args(&ann, &images, &out))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let start = Instant::now();
    // The staging directory (with its work directory) exists from the start until the commit.
    while !out.join(".prepare-staging/.prepare-work").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "prepare never started its work directory"
        );
        assert!(
            child.try_wait().expect("wait").is_none(),
            "prepare finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().expect("kill");
    child.wait().expect("reap");
    // Killed before its commit: the previous complete output is still there and usable
    // (issue 18); only the staging directory is left, which the next run removes.
    assert!(out.join(".prepare-staging").exists());
    let inspect = run(&["inspect", s(&out)]);
    assert_eq!(
        inspect.status.code(),
        Some(0),
        "the previous output survives an interrupted run"
    );
    run_ok(&prepare_args(&ann, &images, &out));
    assert!(!out.join(".prepare-staging").exists());
    check_prepared(&out);
    assert_eq!(
        snapshot(&out),
        snapshot(&clean),
        "the rerun equals an uninterrupted run"
    );
}

/// Damages the inputs of `small_r2gen` and returns (id, expected reason fragment) per damage.
fn damage(dir: &Path, ann: &Path, images: &Path) -> Vec<(&'static str, String)> {
    // Corrupt JPEG: a valid header, then the data cut off.
    let jpg = images.join("train1/1.jpg");
    let bytes = std::fs::read(&jpg).expect("jpg");
    std::fs::write(&jpg, &bytes[..bytes.len() / 3]).expect("truncate");
    // Missing file.
    std::fs::remove_file(images.join("train2/0.png")).expect("remove");
    // Oversized image: 20,001 px wide (the decoder's limit is 20,000 per side).
    fixtures::write_image(&images.join("train3/0.png"), 1, 20_001, 2).expect("wide png");
    // Empty report.
    let mut root: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ann).expect("ann")).expect("json");
    root["train"][4]["report"] = "  ".into();
    std::fs::write(ann, serde_json::to_vec(&root).expect("json")).expect("write");
    let _ = dir;
    vec![
        ("train1", "corrupt".to_string()),
        ("train2", s(&images.join("train2/0.png")).to_string()),
        ("train3", "20001".to_string()),
        ("train4", "empty report".to_string()),
    ]
}

#[test]
fn bad_samples_are_skipped_with_reasons_or_fatal_with_strict() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (ann, images) = small_r2gen(tmp.path(), 30);
    let expected = damage(tmp.path(), &ann, &images);
    let out = tmp.path().join("out");
    run_ok(&prepare_args(&ann, &images, &out));
    let (m, all) = check_prepared(&out);
    assert_eq!(all[0].len(), 30 - expected.len());
    assert_eq!(m.skipped.len(), expected.len(), "{:?}", m.skipped);
    for (id, fragment) in &expected {
        let s = m
            .skipped
            .iter()
            .find(|s| s.id == *id)
            .unwrap_or_else(|| panic!("{id} not skipped"));
        assert!(
            s.reason.contains(fragment.as_str()),
            "{id}: {:?} lacks {fragment:?}",
            s.reason
        );
        assert!(all[0].iter().all(|r| r.id != *id));
    }
    let strict_out = tmp.path().join("strict");
    let mut args = prepare_args(&ann, &images, &strict_out);
    args.push("--strict");
    let o = run(&args);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    // Reports are checked before any image is opened, so the empty one is the first failure.
    assert!(
        err.contains("train4") && err.contains("empty report") && err.contains("--strict"),
        "{err}"
    );
    assert!(!strict_out.join("manifest.json").exists());
    // With the report repaired, the first failure is train1's corrupt JPEG.
    let mut root: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&ann).expect("ann")).expect("json");
    root["train"][4]["report"] = "Heart size normal.".into();
    std::fs::write(&ann, serde_json::to_vec(&root).expect("json")).expect("write");
    let o = run(&args);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("train1") && err.contains("corrupt"), "{err}");
}

#[test]
fn malformed_csv_names_file_and_row() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("mimic");
    let fx = fixtures::write_mimic_tree(&root, 10, &iu_sentences(), 1, 12).expect("fixture");
    std::fs::write(&fx.split_csv, b"").expect("clear");
    let csv = root.join("mimic-cxr-2.0.0-split.csv");
    std::fs::remove_file(&fx.split_csv).expect("remove gz");
    std::fs::write(
        &csv,
        "dicom_id,study_id,subject_id,split\na,1,10000001,train\nb,2,10000001\n",
    )
    .expect("csv");
    let o = run(&[
        "prepare",
        "--source",
        "mimic-cxr-jpg",
        "--root",
        s(&root),
        "--out",
        s(&tmp.path().join("out")),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("mimic-cxr-2.0.0-split.csv") && err.contains("row 3"),
        "{err}"
    );
}

#[test]
fn inspect_reports_rows_and_fails_on_a_tampered_shard() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (ann, images) = small_r2gen(tmp.path(), 20);
    let out = tmp.path().join("out");
    run_ok(&prepare_args(&ann, &images, &out));
    let o = run_ok(&["inspect", s(&out)]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("train 20 rows") && text.contains("[train 0] train0"),
        "{text}"
    );
    // The hard negative is named as a row, apart from the row's own report.
    let row = text
        .lines()
        .find(|l| l.contains("[train 0]"))
        .expect("row 0");
    assert!(
        row.contains("hard negative: train row ") && row.contains("; report: "),
        "{row}"
    );
    let shard = out.join("val-00000.parquet");
    let mut bytes = std::fs::read(&shard).expect("shard");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&shard, bytes).expect("tamper");
    let o = run(&["inspect", s(&out)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("sha256 mismatch"));
}

#[test]
fn refuses_an_output_directory_with_foreign_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (ann, images) = small_r2gen(tmp.path(), 10);
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).expect("mkdir");
    std::fs::write(out.join("thesis.tex"), "precious").expect("write");
    let o = run(&prepare_args(&ann, &images, &out));
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("thesis.tex"));
    assert_eq!(
        std::fs::read_to_string(out.join("thesis.tex")).expect("kept"),
        "precious"
    );
}
