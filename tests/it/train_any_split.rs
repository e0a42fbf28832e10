//! Real training runs whose global batches fall unevenly on the ranks (issue 13, acceptance 2):
//! `ithn-dist train` through launch/mpirun.sh on 2, 3 and 4 ranks, configs/tiny.toml on a
//! prepared subset of the bundled IU X-Ray annotation (phantom images): 13 train samples with a
//! global batch of 12, so every epoch ends in a step of 1 sample (ranks 1.. hold none), and val
//! and test splits of 3 and 2 samples (smaller than the world: ranks decode nothing).
//! * 2 epochs, every loss term finite, validation scored each epoch, the test split scored;
//! * every train sample exactly once per epoch, read from the per-rank debug log of what each
//!   optimizer step trained on (`--log-dir`, target `ithn_dist::samples`);
//! * every rank ends with the same weights (checksums every step);
//! * on 3 ranks a SIGTERM that lands on the tail step (rank 0 raises it as step 2 starts:
//!   `ITHN_FAULT=signal-at-step:2`) stops at a checkpoint of step 2 with exit code 3, and
//!   `--resume auto` ends with final weights and test predictions bit-identical to the
//!   uninterrupted 3-rank run.
//!
//! Also (acceptance 4 and the refusal): a non-finite loss is reported with the step number
//! `metrics.jsonl` gives it, and a world larger than the global batch is refused before any
//! work with what to set.
//!
//! Expected values come from the runs made here; nothing from a fixture.

use crate::resume_support;
use crate::train_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use resume_support::{max_abs_diff, weights, BIN};
use train_support::{jsonl, prepared, repo};

const TRAIN: usize = 13;
const EPOCHS: u64 = 2;
/// 12 + 1 per epoch.
const STEPS_PER_EPOCH: u64 = 2;

fn train(np: usize, data: &Path, run: &Path, env: &[(&str, &str)]) -> Output {
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let sets = [
        format!("data.prepared={:?}", s(data)),
        format!("train.epochs={EPOCHS}"),
        "train.batch_size=12".into(),
        "eval.batch_size=8".into(),
        "eval.max_seq_length=12".into(),
        "eval.beam_size=1".into(),
        "dist.checksum_every=1".into(),
    ];
    let mut cmd = Command::new("bash");
    cmd.arg(repo("launch/mpirun.sh")).arg(np.to_string()).args([
        "train",
        "--config",
        &s(&repo("configs/tiny.toml")),
    ]);
    for set in &sets {
        cmd.args(["--set", set]);
    }
    cmd.args(["--run-dir", &s(run), "--threads", "1"])
        .args(["--log-dir", &s(&run.join("logs"))])
        .env("ITHN_BIN", BIN)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info,ithn_dist::samples=debug")
        .envs(env.iter().copied())
        .output()
        .expect("run launch/mpirun.sh")
}

fn ok(out: Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// (step → every rank's rows) from the per-rank logs of `run`.
fn trained_rows(run: &Path, np: usize) -> BTreeMap<u64, Vec<u64>> {
    let mut steps: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for rank in 0..np {
        let log = run.join("logs").join(format!("rank-{rank}.jsonl"));
        for line in jsonl(&log) {
            if line["target"] != "ithn_dist::samples" {
                continue;
            }
            let f = &line["fields"];
            let step = f["step"].as_u64().expect("step");
            let rows: Vec<Vec<u64>> =
                serde_json::from_str(f["rows"].as_str().expect("rows")).expect("rows list");
            steps
                .entry(step)
                .or_default()
                .extend(rows.into_iter().flatten());
        }
    }
    steps
}

fn check_run(run: &Path, np: usize) {
    let lines = jsonl(&run.join("metrics.jsonl"));
    let kind = |k: &str| lines.iter().filter(|l| l["kind"] == k).collect::<Vec<_>>();
    let train = kind("train");
    assert_eq!(train.len() as u64, EPOCHS * STEPS_PER_EPOCH, "{np} ranks");
    for l in &train {
        for k in ["loss", "lm", "l_cp", "l_cs"] {
            assert!(
                l[k].as_f64().is_some_and(f64::is_finite),
                "{np} ranks, step {}: {k} = {}",
                l["step"],
                l[k]
            );
        }
    }
    assert_eq!(
        kind("val").len() as u64,
        EPOCHS,
        "{np} ranks: one val line per epoch"
    );
    assert_eq!(
        kind("test").len(),
        1,
        "{np} ranks: the test split is scored"
    );
    for split in ["val", "test"] {
        let preds = jsonl(&run.join(format!("predictions-{split}.jsonl")));
        assert_eq!(preds.len(), if split == "val" { 3 } else { 2 }, "{split}");
    }
    // Every train sample exactly once per epoch, over every rank's share of every step.
    let steps = trained_rows(run, np);
    assert_eq!(steps.len() as u64, EPOCHS * STEPS_PER_EPOCH, "{np} ranks");
    for epoch in 0..EPOCHS {
        let mut seen: Vec<u64> = (1..=STEPS_PER_EPOCH)
            .flat_map(|s| steps[&(epoch * STEPS_PER_EPOCH + s)].clone())
            .collect();
        seen.sort_unstable();
        assert_eq!(
            seen,
            (0..TRAIN as u64).collect::<Vec<_>>(),
            "{np} ranks, epoch {}",
            epoch + 1
        );
    }
    assert_eq!(
        steps[&STEPS_PER_EPOCH].len(),
        1,
        "the tail step holds 1 sample"
    );
}

#[test]
fn uneven_and_empty_local_batches_train_evaluate_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let data = prepared(dir.path(), TRAIN, 3, 2);
    for np in [2, 3, 4] {
        let run = dir.path().join(format!("w{np}"));
        ok(train(np, &data, &run, &[]), &format!("{np} ranks"));
        check_run(&run, np);
    }

    // SIGTERM on the tail step of epoch 1 (3 ranks), then resume.
    let run = dir.path().join("interrupted");
    let fault = format!("signal-at-step:{STEPS_PER_EPOCH}");
    let out = train(3, &data, &run, &[("ITHN_FAULT", &fault)]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ck = resume_support::newest(&run);
    assert_eq!(
        ck.meta.state.step, STEPS_PER_EPOCH,
        "stopped on the tail step"
    );
    ok(train(3, &data, &run, &[]), "resumed run");
    let reference = dir.path().join("w3");
    let (want, got) = (
        weights(&reference.join("final")),
        weights(&run.join("final")),
    );
    assert_eq!(max_abs_diff(&want, &got), 0.0);
    assert_eq!(got, want);
    let preds = |r: &Path| std::fs::read_to_string(r.join("predictions-test.jsonl")).unwrap();
    assert_eq!(preds(&run), preds(&reference));
}

/// Issue 13, acceptance 4: an error names the step the way metrics.jsonl numbers it. A learning
/// rate of 1e30 makes the loss overflow after the first updates; the error's step is the one
/// after the last step logged, and the parameters of the refused step were not written.
#[test]
fn a_non_finite_loss_is_reported_with_the_metrics_step_number() {
    let dir = tempfile::tempdir().unwrap();
    let data = prepared(dir.path(), 8, 2, 2);
    let run = dir.path().join("run");
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let out = Command::new(BIN)
        .args(["train", "--config", &s(&repo("configs/tiny.toml"))])
        .args(["--set", &format!("data.prepared={:?}", s(&data))])
        .args(["--set", "train.batch_size=2", "--set", "train.epochs=3"])
        .args(["--set", "train.lr_ve=1e30", "--set", "train.lr_ed=1e30"])
        .args(["--run-dir", &s(&run), "--threads", "1"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let logged = jsonl(&run.join("metrics.jsonl"))
        .iter()
        .filter(|l| l["kind"] == "train")
        .count();
    let want = format!("step {}: loss is not finite", logged + 1);
    assert!(err.contains(&want), "{want:?} in {err}");
    assert!(logged >= 1, "the overflow comes after an update: {err}");
    eprintln!("{}", err.lines().last().unwrap_or_default());
}

/// A world that cannot split full steps evenly — here more ranks than samples in a global
/// batch — is refused before any work, saying why and what to set, and leaves no run directory.
#[test]
fn a_world_larger_than_the_global_batch_is_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let out = Command::new("bash")
        .arg(repo("launch/mpirun.sh"))
        .arg("3")
        .args(["train", "--config", &s(&repo("configs/tiny.toml"))])
        .args(["--set", "train.batch_size=2", "--run-dir", &s(&run)])
        .env("ITHN_BIN", BIN)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    for part in [
        "train.batch_size = 2 cannot be split over 3 ranks",
        "more ranks than samples",
        "multiple of 3 (e.g. 3)",
    ] {
        assert!(err.contains(part), "{part:?} in {err}");
    }
    assert!(!run.exists(), "nothing is written");
}
