//! Text parity with the reference tokenizer (issue 2, acceptance 2).
//!
//! Every expected value comes from `../shared/reference/public/text.json` (README §1): the
//! vocabulary, every record's cleaned string and ids, the 330 `mimic_cleaner_cases` and the
//! 30 `iu_cleaner_handmade_cases`. The vocabulary and the records go through the real binary
//! (`text vocab`, `text encode`); the cleaner cases through the library.

use ithn_dist::data::text::{clean_iu_xray, clean_mimic_cxr, Dataset, Vocab};
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn fixture() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/public/text.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("text.json is JSON")
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ithn-dist"))
}

/// An R2Gen annotation rebuilt from the fixture's records (it lists every record of the file).
fn write_annotation(fx: &Value, dir: &std::path::Path) -> PathBuf {
    let mut splits = serde_json::Map::new();
    for s in ["train", "val", "test"] {
        splits.insert(s.into(), json!([]));
    }
    for r in fx["records"].as_array().unwrap() {
        let split = r["split"].as_str().unwrap();
        splits[split].as_array_mut().unwrap().push(
            json!({"id": r["id"], "report": r["report_raw"], "image_path": [], "split": split}),
        );
    }
    let path = dir.join("annotation.json");
    std::fs::write(&path, Value::Object(splits).to_string()).unwrap();
    path
}

#[test]
fn vocab_and_every_record_match_the_reference_through_the_binary() {
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    let ann = write_annotation(&fx, dir.path());
    let vocab_path = dir.path().join("vocab.json");
    let out = bin()
        .args(["text", "vocab", "--dataset", "iu_xray", "--ann"])
        .arg(&ann)
        .arg("--out")
        .arg(&vocab_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let vocab = Vocab::load(&vocab_path).unwrap();
    let expected: Vec<String> = serde_json::from_value(fx["vocab"].clone()).unwrap();
    assert_eq!(vocab.tokens(), expected.as_slice(), "vocabulary differs");
    assert_eq!(
        vocab.threshold(),
        fx["threshold"].as_u64().unwrap() as usize
    );
    assert_eq!(vocab.dataset(), Dataset::IuXray);

    let records = fx["records"].as_array().unwrap();
    let input: String = records
        .iter()
        .map(|r| format!("{}\n", json!({"id": r["id"], "report": r["report_raw"]})))
        .collect();
    let mut child = bin()
        .args(["text", "encode", "--max-seq-length"])
        .arg(fx["max_seq_length"].to_string())
        .arg("--vocab")
        .arg(&vocab_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), records.len());
    let mut truncated = 0;
    for (got, want) in lines.iter().zip(records) {
        assert_eq!(got["id"], want["id"]);
        assert_eq!(got["cleaned"], want["cleaned"], "record {}", want["id"]);
        assert_eq!(got["ids"], want["ids"], "record {}", want["id"]);
        truncated += (got["ids"].as_array().unwrap().last() != Some(&json!(0))) as usize;
    }
    // The fixture contains long reports, so the "loses its final 0" rule is exercised.
    assert!(truncated > 0, "no record reached the max_seq_length cut");
}

#[test]
fn every_mimic_cleaner_case_matches() {
    let fx = fixture();
    let cases = fx["mimic_cleaner_cases"].as_array().unwrap();
    assert_eq!(cases.len(), 330);
    for c in cases {
        let raw = c["raw"].as_str().unwrap();
        assert_eq!(
            clean_mimic_cxr(raw),
            c["cleaned"].as_str().unwrap(),
            "raw {raw:?}"
        );
    }
}

#[test]
fn every_iu_handmade_case_matches_cleaned_and_ids() {
    let fx = fixture();
    let expected: Vec<String> = serde_json::from_value(fx["vocab"].clone()).unwrap();
    let cleaned_train: Vec<String> = fx["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["split"] == "train")
        .map(|r| clean_iu_xray(r["report_raw"].as_str().unwrap()))
        .collect();
    let vocab = Vocab::build(cleaned_train.iter().map(String::as_str), Dataset::IuXray, 3);
    assert_eq!(vocab.tokens(), expected.as_slice());
    let cases = fx["iu_cleaner_handmade_cases"].as_array().unwrap();
    assert_eq!(cases.len(), 30);
    for c in cases {
        let raw = c["raw"].as_str().unwrap();
        let cleaned = clean_iu_xray(raw);
        assert_eq!(cleaned, c["cleaned"].as_str().unwrap(), "raw {raw:?}");
        let ids: Vec<i64> = serde_json::from_value(c["ids"].clone()).unwrap();
        assert_eq!(vocab.encode(&cleaned, 60), ids, "raw {raw:?}");
    }
}
