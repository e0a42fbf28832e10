//! `ithn-dist synth` end to end: the real binary on small annotation files in temp dirs.
//! Expected findings come from the report texts written in each test (and, for the bundled
//! file, from data/iu_xray/annotation.json); image sizes from the `--size` given.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ithn-dist"))
}

fn synth(ann: &Path, out: &Path, extra: &[&str]) -> Output {
    bin()
        .arg("synth")
        .arg("--ann")
        .arg(ann)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .expect("run ithn-dist")
}

fn record(id: &str, report: &str, split: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id, "report": report, "split": split,
        "image_path": [format!("{id}/0.png"), format!("{id}/1.png")],
    })
}

fn write_ann(dir: &Path) -> PathBuf {
    let ann = serde_json::json!({
        "train": [
            record("CXR1_1_IM-0001", "The heart is normal in size. The lungs are clear. No effusion.", "train"),
            record("CXR2_1_IM-0002", "Small left pleural effusion. Mild cardiomegaly.", "train"),
            record("CXR3_1_IM-0003", "No pneumothorax, but there is right upper lobe consolidation.", "train"),
        ],
        "val": [record("CXR4_1_IM-0004", "Left-sided pacemaker. No acute disease.", "val")],
        "test": [
            record("CXR5_1_IM-0005", "Calcified granuloma in the right lung base.", "test"),
            record("CXR6_1_IM-0006", "Negative for focal consolidation or effusion.", "test"),
        ],
    });
    let path = dir.join("annotation.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&ann).expect("json")).expect("write ann");
    path
}

fn findings(out: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("findings.jsonl"))
        .expect("findings.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

#[test]
fn writes_images_at_image_paths_labelled_synthetic_and_deterministic() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ann = write_ann(tmp.path());
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for out in [&a, &b] {
        let o = synth(&ann, out, &["--size", "96", "--seed", "3"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            stdout.contains("6 studies (2 normal), 12 SYNTHETIC images"),
            "{stdout}"
        );
    }
    for id in ["CXR1_1_IM-0001", "CXR4_1_IM-0004", "CXR6_1_IM-0006"] {
        for view in ["0.png", "1.png"] {
            let pa = std::fs::read(a.join(id).join(view)).expect("image written");
            let pb = std::fs::read(b.join(id).join(view)).expect("image written");
            assert_eq!(pa, pb, "{id}/{view} differs between two runs");
            let img = image::load_from_memory(&pa).expect("valid PNG").to_luma8();
            assert_eq!(img.dimensions(), (96, 96));
        }
    }
    let notice = std::fs::read_to_string(a.join("SYNTHETIC.txt")).expect("SYNTHETIC.txt");
    assert!(notice.starts_with("SYNTHETIC IMAGES"));
    let f = findings(&a);
    assert_eq!(f.len(), 6);
    assert!(f.iter().all(|l| l["synthetic"] == true));
    assert_eq!(f[0]["id"], "CXR1_1_IM-0001");
    assert_eq!(f[0]["normal"], true);
    let kinds = |i: usize| -> Vec<String> {
        f[i]["findings"]
            .as_array()
            .expect("array")
            .iter()
            .map(|x| x["kind"].as_str().expect("kind").to_string())
            .collect()
    };
    assert_eq!(kinds(1), ["cardiomegaly", "effusion"]);
    assert_eq!(f[1]["findings"][1]["side"], "left");
    assert_eq!(kinds(2), ["consolidation"]);
    assert_eq!(f[2]["findings"][0]["zone"], "upper");
    assert_eq!(kinds(3), ["pacemaker"]);
    assert_eq!(kinds(4), ["granuloma"]);
    assert_eq!(f[5]["normal"], true);
    // The CheXpert labels of what was drawn: 1 drawn, 0 not; No Finding 1 without pathology
    // (a pacemaker or a granuloma is none).
    let positives = |i: usize| -> Vec<String> {
        let map = f[i]["chexpert"].as_object().expect("chexpert labels");
        assert_eq!(map.len(), 14, "{map:?}");
        assert!(map.values().all(|v| v == 0 || v == 1), "{map:?}");
        let mut p: Vec<String> = map
            .iter()
            .filter(|(_, v)| **v == 1)
            .map(|(k, _)| k.clone())
            .collect();
        p.sort();
        p
    };
    assert_eq!(positives(0), ["No Finding"]);
    assert_eq!(positives(1), ["Cardiomegaly", "Pleural Effusion"]);
    assert_eq!(positives(2), ["Consolidation"]);
    assert_eq!(positives(3), ["No Finding", "Support Devices"]);
    assert_eq!(positives(4), ["No Finding"]);
    assert_eq!(positives(5), ["No Finding"]);
    // A different seed gives different pixels for the same study.
    let c = tmp.path().join("c");
    assert!(synth(&ann, &c, &["--size", "96", "--seed", "4"])
        .status
        .success());
    assert_ne!(
        std::fs::read(a.join("CXR2_1_IM-0002/0.png")).expect("a"),
        std::fs::read(c.join("CXR2_1_IM-0002/0.png")).expect("c")
    );
}

#[test]
fn splits_and_limit_select_studies() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ann = write_ann(tmp.path());
    let out = tmp.path().join("o");
    let o = synth(
        &ann,
        &out,
        &["--size", "32", "--splits", "test,train", "--limit", "1"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ids: Vec<String> = findings(&out)
        .iter()
        .map(|l| l["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(ids, ["CXR5_1_IM-0005", "CXR1_1_IM-0001"]);
    assert!(!out.join("CXR2_1_IM-0002").exists());
}

#[test]
fn bundled_iu_annotation_renders() {
    // data/iu_xray/annotation.json is bundled with the product (first train record: CXR2384_IM-0942).
    let ann = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/iu_xray/annotation.json");
    let tmp = tempfile::tempdir().expect("tempdir");
    let o = synth(&ann, tmp.path(), &["--size", "64", "--limit", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(tmp.path().join("CXR2384_IM-0942/0.png").is_file());
    assert!(tmp.path().join("CXR2384_IM-0942/1.png").is_file());
    assert_eq!(findings(tmp.path()).len(), 6);
}

#[test]
fn bad_inputs_fail_with_clear_messages() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ann = tmp.path().join("evil.json");
    let evil = serde_json::json!({"train": [
        {"id": "ok", "report": "normal", "image_path": ["ok/0.png"]},
        {"id": "CXR9_bad", "report": "normal", "image_path": ["../../escape.png"]},
    ]});
    std::fs::write(&ann, evil.to_string()).expect("write");
    let o = synth(&ann, &tmp.path().join("o"), &["--splits", "train"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("evil.json") && err.contains("train[1]") && err.contains("CXR9_bad"),
        "{err}"
    );
    assert!(
        !tmp.path().join("o/ok/0.png").exists(),
        "nothing is written when validation fails"
    );

    let o = synth(&ann, &tmp.path().join("o"), &["--splits", "val"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.code() == Some(1)
            && err.contains("split `val` not found")
            && err.contains("train"),
        "{err}"
    );

    std::fs::write(&ann, "{\"train\": [ {\"id\": 1} ]}").expect("write");
    let o = synth(&ann, &tmp.path().join("o"), &["--splits", "train"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.code() == Some(1)
            && err.contains("evil.json")
            && err.contains("not an R2Gen annotation"),
        "{err}"
    );

    let o = synth(&tmp.path().join("missing.json"), &tmp.path().join("o"), &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.code() == Some(1) && err.contains("missing.json"),
        "{err}"
    );
}
