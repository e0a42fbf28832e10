//! `evaluate` reports clinical efficacy exactly as `score --ce` does (issue 15, acceptance 3):
//! the CE of its `scores.json` (against the reference reports, and with `--ce-labels` against
//! the phantom labels `synth` wrote) equals `score --ce --ce-labels` on its own
//! `predictions.jsonl`; `score`'s CE is checked against hand labels in `ce_hand_labelled.rs`.
//! A labels file that lacks a test study fails, naming the file, and writes nothing.
//!
//! The checkpoint is the `final/` model of a 2-step run on a prepared subset of the bundled
//! IU X-Ray annotation (phantoms); decoding is short (12 tokens) to keep the test quick.

use std::process::Command;

use crate::train_support::{bin, jsonl, prepared, repo, run};

#[test]
fn evaluate_ce_equals_score_ce_on_its_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let data = prepared(dir.path(), 16, 4, 9);
    let labels = dir.path().join("images/findings.jsonl");
    let run_dir = dir.path().join("run");
    let s = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let prepared_set = format!("data.prepared={:?}", s(&data));
    run(&[
        "train",
        "--config",
        &s(&repo("configs/tiny.toml")),
        "--set",
        &prepared_set,
        "--set",
        "train.batch_size=8",
        "--set",
        "eval.max_seq_length=12",
        "--run-dir",
        &s(&run_dir),
        "--max-steps",
        "2",
    ]);
    let out = dir.path().join("eval");
    let evaluate = |labels: &std::path::Path, out: &std::path::Path| {
        Command::new(bin())
            .args(["evaluate", "--checkpoint", &s(&run_dir.join("final"))])
            .args(["--data", &s(&data), "--split", "test", "--beam", "1"])
            .args(["--out", &s(out), "--ce-labels", &s(labels)])
            .output()
            .unwrap()
    };
    let o = evaluate(&labels, &out);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let scores: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("scores.json")).unwrap()).unwrap();
    let preds = jsonl(&out.join("predictions.jsonl"));
    assert_eq!(preds.len(), 9);
    let write = |name: &str, key: &str| {
        let text: String = preds
            .iter()
            .map(|p| format!("{}\n", serde_json::json!({"id": p["id"], "report": p[key]})))
            .collect();
        std::fs::write(dir.path().join(name), text).unwrap();
    };
    write("refs.jsonl", "reference");
    write("hyps.jsonl", "prediction");
    let o = Command::new(bin())
        .args([
            "score",
            "--refs",
            "refs.jsonl",
            "--hyps",
            "hyps.jsonl",
            "--json",
        ])
        .args(["--no-meteor", "--ce", "--ce-labels", &s(&labels)])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let scored: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(scores["ce"], scored["ce"]);
    assert_eq!(scores["ce_vs_labels"], scored["ce_vs_labels"]);
    assert_eq!(scores["ce"]["n"], 9);
    for key in [
        "CE_F1_micro",
        "CE_F1_macro",
        "CE_F1_findings",
        "BLEU_4",
        "CIDEr",
    ] {
        assert_eq!(scores[key], scored[key], "{key}");
    }

    // Labels without the test studies: an error naming the file; nothing written.
    let partial = dir.path().join("train-only.jsonl");
    let train_lines: String = jsonl(&labels)
        .into_iter()
        .filter(|l| l["split"] == "train")
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&partial, train_lines).unwrap();
    let out2 = dir.path().join("eval2");
    let o = evaluate(&partial, &out2);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("train-only.jsonl") && err.contains("no labels for ids"),
        "{err}"
    );
    assert!(!out2.join("scores.json").exists() && !out2.join("predictions.jsonl").exists());
}
