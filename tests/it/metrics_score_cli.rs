//! `ithn-dist score` end to end (issue 6, build item 2): the real binary in a temp dir.
//!
//! Expected corpus numbers come from `../shared/reference/public/metrics.json` (its 200 pairs
//! are written out as refs/hyps JSON lines, hypotheses in reverse order so that matching by id
//! is exercised). Error cases check that messages name the file, line or ids.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture() -> Value {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/public/metrics.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn score(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ithn-dist"))
        .arg("score")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn write_lines(path: &Path, lines: &[Value]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// refs.jsonl / hyps.jsonl for the fixture pairs; ids are the pair index (as strings, since
/// several pairs share a record id), hypotheses written in reverse order.
fn write_fixture_pairs(dir: &Path) -> Value {
    let fx = fixture();
    let pairs = fx["pairs"].as_array().unwrap();
    let refs: Vec<Value> = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| json!({"id": format!("p{i}"), "report": p["ref"]}))
        .collect();
    let mut hyps: Vec<Value> = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| json!({"id": format!("p{i}"), "report": p["hyp"]}))
        .collect();
    hyps.reverse();
    write_lines(&dir.join("refs.jsonl"), &refs);
    write_lines(&dir.join("hyps.jsonl"), &hyps);
    fx
}

#[test]
fn json_output_and_per_item_file_match_the_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let fx = write_fixture_pairs(dir.path());
    let out = score(
        &[
            "--refs",
            "refs.jsonl",
            "--hyps",
            "hyps.jsonl",
            "--json",
            "--no-meteor",
            "--per-item",
            "items.jsonl",
        ],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    // serde_json's Map sorts keys, so check pycocoevalcap's order on the raw text.
    let keys = ["BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "ROUGE_L", "CIDEr"];
    let positions: Vec<usize> = keys
        .iter()
        .map(|k| text.find(&format!("\"{k}\"")).expect(k))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert!(!text.contains("METEOR"), "--no-meteor: {text}");
    let got: Value = serde_json::from_str(&text).unwrap();
    for k in keys {
        let (g, w) = (got[k].as_f64().unwrap(), fx["scores"][k].as_f64().unwrap());
        assert!((g - w).abs() <= 1e-9, "{k}: {g} vs {w}");
    }
    let items: Vec<Value> = std::fs::read_to_string(dir.path().join("items.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(items.len(), 200);
    // Per-item lines follow the reference order, whatever the hypothesis order was.
    assert_eq!(items[7]["id"], "p7");
    let want = fx["per_item"]["CIDEr"][7].as_f64().unwrap();
    assert!((items[7]["CIDEr"].as_f64().unwrap() - want).abs() <= 1e-9);
}

#[test]
fn table_output_includes_meteor_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let fx = write_fixture_pairs(dir.path());
    let out = score(
        &["--refs", "refs.jsonl", "--hyps", "hyps.jsonl"],
        dir.path(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let meteor_line = text.lines().find(|l| l.starts_with("METEOR")).expect(&text);
    let shown: f64 = meteor_line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!((shown - fx["scores"]["METEOR"].as_f64().unwrap()).abs() < 1e-6);
}

#[test]
fn missing_duplicate_and_malformed_inputs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_lines(
        &d.join("refs.jsonl"),
        &[
            json!({"id": "a", "report": "x ."}),
            json!({"id": "b", "report": "y ."}),
        ],
    );
    write_lines(
        &d.join("hyps.jsonl"),
        &[
            json!({"id": "a", "report": "x ."}),
            json!({"id": "c", "report": "z ."}),
        ],
    );
    write_lines(
        &d.join("dup.jsonl"),
        &[
            json!({"id": "a", "report": "x ."}),
            json!({"id": "a", "report": "y ."}),
        ],
    );
    std::fs::write(
        d.join("bad.jsonl"),
        "{\"id\": \"a\", \"report\": \"x\"}\n{\"id\": \"b\"}\n",
    )
    .unwrap();
    let cases: [(&[&str], &str); 4] = [
        (
            &["--refs", "refs.jsonl", "--hyps", "hyps.jsonl"],
            "no hypothesis for reference ids b; no reference for hypothesis ids c",
        ),
        (
            &["--refs", "refs.jsonl", "--hyps", "dup.jsonl"],
            "dup.jsonl: duplicate ids: a",
        ),
        (
            &["--refs", "bad.jsonl", "--hyps", "hyps.jsonl"],
            "bad.jsonl:2: missing string key `report`",
        ),
        (
            &["--refs", "nope.jsonl", "--hyps", "hyps.jsonl"],
            "cannot read nope.jsonl",
        ),
    ];
    for (args, msg) in cases {
        let mut a = args.to_vec();
        a.push("--no-meteor");
        let out = score(&a, d);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(msg), "{args:?}: {err}");
    }
}

#[test]
fn a_missing_meteor_jar_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    write_fixture_pairs(dir.path());
    let out = score(
        &[
            "--refs",
            "refs.jsonl",
            "--hyps",
            "hyps.jsonl",
            "--meteor-jar",
            "missing.jar",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("METEOR 1.5 jar was not found")
            && err.contains("missing.jar")
            && err.contains("--no-meteor"),
        "{err}"
    );
}

/// Without --refs, a plain {"id", "report"} hypotheses file has no references: refused with
/// exit 1 and the fix named, never scored against itself (that printed BLEU 1.0 and exit 0).
#[test]
fn hypotheses_without_references_are_refused_not_scored_against_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let hyps = dir.path().join("hyps.jsonl");
    write_lines(
        &hyps,
        &[json!({"id": "a", "report": "the lungs are clear ."})],
    );
    let out = score(&["--hyps", hyps.to_str().unwrap()], dir.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("`reference`") && err.contains("--refs"),
        "{err}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("BLEU_4"));
}
