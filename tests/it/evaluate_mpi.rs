//! `ithn-dist evaluate` under `mpirun -np 2` gives exactly the scores of one process (issue 6,
//! acceptance 3), with every sample decoded once and predictions in split order.
//!
//! The checkpoint is the `final/` model of a 2-step training run on a prepared subset of the
//! bundled IU X-Ray annotation (phantom images); the split has an odd number of samples so the
//! two ranks hold different counts. No fixture: one process is the reference.

use crate::train_support;

use train_support::{jsonl, mpirun, prepared, repo, run};

#[test]
fn two_ranks_score_exactly_like_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = prepared(dir.path(), 16, 4, 7);
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
        "eval.batch_size=4",
        "--set",
        "eval.max_seq_length=12",
        "--run-dir",
        &s(&run_dir),
        "--max-steps",
        "2",
    ]);
    let ckpt = run_dir.join("final");
    let eval = |np: usize, out: &str| {
        let out_dir = dir.path().join(out);
        let args = [
            "evaluate",
            "--checkpoint",
            &s(&ckpt),
            "--data",
            &s(&data),
            "--split",
            "test",
            "--beam",
            "3",
            "--out",
            &s(&out_dir),
        ];
        if np == 1 {
            run(&args);
        } else {
            mpirun(np, &args);
        }
        out_dir
    };
    let one = eval(1, "one");
    let two = eval(2, "two");
    let scores =
        |d: &std::path::Path| std::fs::read_to_string(d.join("scores.json")).expect("scores.json");
    assert_eq!(
        scores(&one),
        scores(&two),
        "identical scores, byte for byte"
    );
    let p1 = jsonl(&one.join("predictions.jsonl"));
    let p2 = jsonl(&two.join("predictions.jsonl"));
    assert_eq!(p1.len(), 7, "every test sample exactly once");
    assert_eq!(p1, p2, "same predictions in the same (split) order");
    let ann: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("annotation.json")).unwrap())
            .unwrap();
    let ids: Vec<&str> = ann["test"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let got: Vec<&str> = p1.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(got, ids, "split order");
    for p in &p1 {
        assert!(p["reference"].as_str().is_some_and(|r| !r.is_empty()));
        assert!(p["prediction"].as_str().is_some());
    }
}
