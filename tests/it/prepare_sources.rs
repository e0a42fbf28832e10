//! `ithn-dist prepare` on each input layout: the real IU X-Ray annotation (with generated
//! images), a MIMIC-CXR-JPG-shaped tree, an Open-i-shaped release and a MIMIC-style R2Gen
//! annotation with ITHN's `neg_report` and raw pixels. Every output must pass
//! `check_prepared` (counts, schema, order, checksums, valid negatives, vocab == `text vocab`).

use crate::prepare_util;

use ithn_dist::data::prepare::fixtures::{self, Rng};
use ithn_dist::data::prepare::shards::row_groups;
use ithn_dist::data::prepare::Split;
use prepare_util::*;

/// Expected counts and texts come from ../shared/data/iu_xray/annotation.json (2069/296/590)
/// and ../shared/reference/public/text.json (cleaned report and ids of every record).
#[test]
fn iu_annotation_with_generated_images() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ann = shared("data/iu_xray/annotation.json");
    let images = tmp.path().join("images");
    assert_eq!(
        fixtures::write_r2gen_images(&ann, &images, 24).expect("images"),
        2 * 2955
    );
    let out = tmp.path().join("out");
    run_ok(&[
        "prepare",
        "--source",
        "r2gen",
        "--ann",
        s(&ann),
        "--images",
        s(&images),
        "--dataset",
        "iu_xray",
        "--out",
        s(&out),
        "--resize",
        "16",
        "--shard-rows",
        "512",
    ]);
    let (m, [train, val, test]) = check_prepared(&out);
    assert_eq!((train.len(), val.len(), test.len()), (2069, 296, 590));
    assert!(m.skipped.is_empty(), "{:?}", m.skipped);
    assert_eq!(m.vocab.size, 760, "V of the reference fixture");
    assert_eq!(
        m.shards_of(Split::Train).count(),
        5,
        "2069 rows in shards of 512"
    );

    let text: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(shared("reference/public/text.json")).expect("text.json"),
    )
    .expect("json");
    let records = text["records"].as_array().expect("records");
    let rows: Vec<&ReadRow> = train.iter().chain(&val).chain(&test).collect();
    assert_eq!(records.len(), rows.len());
    for (rec, row) in records.iter().zip(rows) {
        assert_eq!(rec["id"].as_str(), Some(row.id.as_str()));
        assert_eq!(
            rec["cleaned"].as_str(),
            Some(row.report.as_str()),
            "{}",
            row.id
        );
        let ids: Vec<i64> = rec["ids"]
            .as_array()
            .expect("ids")
            .iter()
            .filter_map(|v| v.as_i64())
            .collect();
        assert_eq!(ids, row.ids, "{}", row.id);
    }
    let r = &train[0];
    assert_eq!(r.pixel_format, "jpeg");
    assert_eq!(
        (r.images[0].1, r.images[0].2),
        (16, 20),
        "24x30 generated, shorter side resized to 16"
    );
    assert_eq!(&r.images[1].0[..2], &[0xFF, 0xD8]);
    for shard in &m.shards {
        let groups = row_groups(&out.join(&shard.file)).expect("row groups");
        assert!(
            groups.iter().all(|&n| n <= 64),
            "row groups of at most 64 rows: {groups:?}"
        );
        assert_eq!(groups.iter().sum::<i64>() as u64, shard.rows);
    }
}

/// A MIMIC-CXR-JPG-shaped tree from the fixture builder (reports from real IU sentences).
#[test]
fn mimic_cxr_jpg_tree() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("mimic");
    let fx = fixtures::write_mimic_tree(&root, 150, &iu_sentences(), 7, 20).expect("fixture");
    let out = tmp.path().join("out");
    run_ok(&[
        "prepare",
        "--source",
        "mimic-cxr-jpg",
        "--root",
        s(&root),
        "--out",
        s(&out),
        "--resize",
        "16",
        "--threshold",
        "2",
        "--shard-rows",
        "40",
    ]);
    let (m, all) = check_prepared(&out);
    assert_eq!(all.iter().map(Vec::len).sum::<usize>(), fx.usable);
    let reasons = |r: &str| m.skipped.iter().filter(|s| s.reason == r).count();
    assert_eq!(reasons("no frontal (PA/AP) image"), fx.without_frontal);
    assert_eq!(reasons("no FINDINGS section"), fx.without_findings);
    assert_eq!(m.skipped.len(), fx.without_frontal + fx.without_findings);
    assert_eq!(m.preprocessing.views, 1);
    let train = &all[0];
    assert!(train.iter().all(|r| r.subject_id.is_some()));
    assert!(
        train
            .iter()
            .all(|r| !r.report_raw.contains("IMPRESSION")
                && !r.report_raw.contains("No acute process")),
        "only the FINDINGS section is kept"
    );
    assert_eq!(
        (train[0].images[0].1, train[0].images[0].2),
        (22, 16),
        "28x20 → shorter side 16 (torchvision truncates the long side)"
    );
}

/// An Open-i release (.tgz of XML reports + PNGs), split by the seeded hash.
#[test]
fn openi_release() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let fx = fixtures::write_openi_tree(tmp.path(), 80, &iu_sentences(), 3, 20).expect("fixture");
    let out = tmp.path().join("out");
    run_ok(&[
        "prepare",
        "--source",
        "openi",
        "--reports",
        s(&fx.tgz),
        "--images",
        s(&fx.images),
        "--out",
        s(&out),
        "--resize",
        "16",
        "--threshold",
        "2",
    ]);
    let (m, all) = check_prepared(&out);
    assert_eq!(all.iter().map(Vec::len).sum::<usize>(), fx.usable);
    assert_eq!(m.skipped.len(), fx.reports - fx.usable);
    assert!(m.skipped.iter().all(|s| s.reason == "no FINDINGS text"));
    assert_eq!(m.preprocessing.views, 2);
    assert!(
        all[0].len() > all[1].len() && all[0].len() > all[2].len(),
        "about 70% train"
    );
}

/// A MIMIC-style R2Gen annotation carrying ITHN's neg_report, stored as raw pixels.
#[test]
fn r2gen_mimic_annotation_with_neg_report_and_raw_pixels() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sentences = iu_sentences();
    let mut rng = Rng::new(11);
    let mut lists = serde_json::Map::new();
    for (split, n) in [("train", 30), ("val", 4), ("test", 4)] {
        let recs: Vec<serde_json::Value> = (0..n).map(|i| serde_json::json!({
            "id": format!("{split}{i}"), "study_id": 1000 + i, "subject_id": 10 + i % 7,
            "report": fixtures::report(&mut rng, &sentences), "image_path": [format!("{split}/{i}.jpg")],
            "split": split, "neg_report": ["No acute findings."], "neg_image_path": ["x.jpg"],
        })).collect();
        lists.insert(split.into(), recs.into());
    }
    let ann = tmp.path().join("ann.json");
    std::fs::write(&ann, serde_json::to_vec(&lists).expect("json")).expect("write");
    let images = tmp.path().join("img");
    fixtures::write_r2gen_images(&ann, &images, 12).expect("images");
    let out = tmp.path().join("out");
    run_ok(&[
        "prepare",
        "--source",
        "r2gen",
        "--ann",
        s(&ann),
        "--images",
        s(&images),
        "--dataset",
        "mimic_cxr",
        "--out",
        s(&out),
        "--resize",
        "0",
        "--pixels",
        "raw",
        "--threshold",
        "1",
    ]);
    let (m, all) = check_prepared(&out);
    assert!(m.negatives.source_neg_report_kept);
    let r = &all[0][0];
    assert_eq!(r.pixel_format, "raw_gray8");
    assert_eq!(
        (r.images[0].1, r.images[0].2),
        (12, 15),
        "--resize 0 keeps the size"
    );
    assert_eq!(r.images[0].0.len(), 12 * 15, "one byte per grey pixel");
    assert_eq!(r.subject_id.as_deref(), Some("10"));
}
