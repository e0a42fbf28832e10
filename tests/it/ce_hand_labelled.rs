//! Clinical efficacy on a hand-labelled fixture (issue 15, acceptance 3).
//!
//! `tests/fixtures/ce_hand_labelled.jsonl`: 36 (reference, generated) report pairs, 72
//! reports. References are IU X-Ray findings (data/iu_xray/annotation.json, some shortened)
//! or written in their style; generated reports are written in the trained model's style
//! (lower case, " . " between sentences). Every report's 14 CheXpert labels (1 / 0 / -1 /
//! null) were assigned by hand from CheXpert's observation definitions, before the labeler
//! was run on them; they are not the labeler's output.
//!
//! The test scores the pairs with the real `ithn-dist score --ce` and checks every CE figure
//! (per-observation counts, micro and macro P/R/F1) against the figures computed here from
//! the hand labels alone, and `--ce-labels` (the hand labels of the references as ground
//! truth) likewise. Any labeler error on a positive label changes a count and fails the test.

use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

const OBS: [&str; 14] = [
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Lesion",
    "Lung Opacity",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
];

fn fixture() -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ce_hand_labelled.jsonl");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn positive(labels: &Value, obs: &str) -> bool {
    labels[obs].as_i64() == Some(1)
}

/// (tp, fp, fn) per observation from the hand labels, positive-only.
fn hand_counts(rows: &[Value]) -> Vec<(usize, usize, usize)> {
    OBS.iter()
        .map(|o| {
            let mut c = (0, 0, 0);
            for r in rows {
                match (
                    positive(&r["reference_chexpert"], o),
                    positive(&r["generated_chexpert"], o),
                ) {
                    (true, true) => c.0 += 1,
                    (false, true) => c.1 += 1,
                    (true, false) => c.2 += 1,
                    _ => {}
                }
            }
            c
        })
        .collect()
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn close(got: &Value, want: f64, what: &str) {
    let g = got
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: not a number: {got}"));
    assert!(
        (g - want).abs() < 1e-12,
        "{what}: got {g}, hand labels give {want}"
    );
}

/// Checks one CE object of `score --json` against the hand counts.
fn check_ce(ce: &Value, counts: &[(usize, usize, usize)], n: usize) {
    assert_eq!(ce["n"], json!(n));
    let (mut tp, mut fp, mut fnn) = (0, 0, 0);
    let (mut p_sum, mut r_sum, mut f_sum) = (0.0, 0.0, 0.0);
    for (o, &(t, f, n)) in OBS.iter().zip(counts) {
        let got = &ce["per_observation"][o];
        assert_eq!(
            (got["tp"].clone(), got["fp"].clone(), got["fn"].clone()),
            (json!(t), json!(f), json!(n)),
            "{o}: (tp, fp, fn) differ from the hand labels"
        );
        let (p, r, f1) = (
            ratio(t, t + f),
            ratio(t, t + n),
            ratio(2 * t, 2 * t + f + n),
        );
        close(&got["f1"], f1, o);
        (tp, fp, fnn) = (tp + t, fp + f, fnn + n);
        (p_sum, r_sum, f_sum) = (p_sum + p, r_sum + r, f_sum + f1);
    }
    close(&ce["micro"]["precision"], ratio(tp, tp + fp), "micro P");
    close(&ce["micro"]["recall"], ratio(tp, tp + fnn), "micro R");
    close(
        &ce["micro"]["f1"],
        ratio(2 * tp, 2 * tp + fp + fnn),
        "micro F1",
    );
    close(&ce["macro"]["precision"], p_sum / 14.0, "macro P");
    close(&ce["macro"]["recall"], r_sum / 14.0, "macro R");
    close(&ce["macro"]["f1"], f_sum / 14.0, "macro F1");
    // The 13 findings: every observation but "No Finding" (the first).
    let (t, f, n) = counts[1..]
        .iter()
        .fold((0, 0, 0), |a, c| (a.0 + c.0, a.1 + c.1, a.2 + c.2));
    close(
        &ce["micro_findings"]["f1"],
        ratio(2 * t, 2 * t + f + n),
        "findings F1",
    );
}

#[test]
fn score_ce_matches_the_hand_labels() {
    let rows = fixture();
    assert!(rows.len() >= 30, "the fixture must hold at least 30 pairs");
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, line: &dyn Fn(&Value) -> Value| {
        let text: String = rows.iter().map(|r| format!("{}\n", line(r))).collect();
        std::fs::write(dir.path().join(name), text).unwrap();
    };
    write(
        "reference.jsonl",
        &|r| json!({"id": r["id"], "report": r["reference"]}),
    );
    write(
        "generated.jsonl",
        &|r| json!({"id": r["id"], "report": r["generated"]}),
    );
    write(
        "truth.jsonl",
        &|r| json!({"id": r["id"], "chexpert": r["reference_chexpert"]}),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_ithn-dist"))
        .args([
            "score",
            "--refs",
            "reference.jsonl",
            "--hyps",
            "generated.jsonl",
        ])
        .args([
            "--ce",
            "--ce-labels",
            "truth.jsonl",
            "--json",
            "--no-meteor",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let counts = hand_counts(&rows);
    // The fixture exercises most observations on both sides.
    let present = counts.iter().filter(|c| c.0 + c.2 > 0).count();
    assert!(
        present >= 12,
        "only {present} observations have reference positives"
    );
    check_ce(&v["ce"], &counts, rows.len());
    check_ce(&v["ce_vs_labels"], &counts, rows.len());
    // The flat summary keys next to BLEU are the same micro/macro figures.
    assert_eq!(v["CE_F1_micro"], v["ce"]["micro"]["f1"]);
    assert_eq!(v["CE_F1_macro"], v["ce"]["macro"]["f1"]);
}

#[test]
fn labels_file_errors_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(
        p.join("r.jsonl"),
        "{\"id\": \"a\", \"report\": \"no effusion\"}\n",
    )
    .unwrap();
    let run = |labels: &str| {
        std::fs::write(p.join("l.jsonl"), labels).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_ithn-dist"))
            .args([
                "score",
                "--refs",
                "r.jsonl",
                "--hyps",
                "r.jsonl",
                "--no-meteor",
            ])
            .args(["--ce-labels", "l.jsonl"])
            .current_dir(p)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = run("{\"id\": \"a\", \"chexpert\": {\"Effusion\": 1}}\n");
    assert!(e.contains("l.jsonl:1") && e.contains("`Effusion`"), "{e}");
    let e = run("\n{\"id\": \"a\", \"chexpert\": {\"Pleural Effusion\": 2}}\n");
    assert!(
        e.contains("l.jsonl:2") && e.contains("not 1, 0, -1 or null"),
        "{e}"
    );
    let e = run("{\"id\": \"b\", \"chexpert\": {}}\n");
    assert!(e.contains("no labels for ids a"), "{e}");
}
