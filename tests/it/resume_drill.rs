//! Resume equivalence on one process, with the real binary (`ithn-dist drill`, the deterministic
//! preemption drill that uses the same checkpoint manager, save schedule and signal handling as
//! training). Expected weights come from an uninterrupted run of the same command in the same
//! test, never from stored numbers.

use crate::resume_support;

use resume_support::*;
use std::process::Command;

const EXIT_PREEMPTED: i32 = 3;

#[test]
fn sigterm_at_three_random_steps_then_resume_is_bit_identical() {
    let reference = tempfile::tempdir().unwrap();
    let (status, _, err) = run_drill(reference.path(), &[], &[]);
    assert!(status.success(), "{err}");
    let expected = weights(&newest(reference.path()).dir);

    let run = tempfile::tempdir().unwrap();
    let stops = distinct_steps(test_seed(), 3, 1, STEPS - 1);
    let mut resumed_from = Vec::new();
    for &at in &stops {
        let mut cmd = Command::new(BIN);
        cmd.args(drill_args(run.path(), &["--step-ms", "60"]))
            .env("NO_COLOR", "1");
        let (status, last) = signal_at_step(cmd, at, libc::SIGTERM);
        let ck = newest(run.path());
        if ck.meta.state.step >= STEPS {
            break; // the run finished before the signal landed (only possible for the last stop)
        }
        assert_eq!(
            status.code(),
            Some(EXIT_PREEMPTED),
            "SIGTERM at step {at}: {status:?}"
        );
        assert_eq!(ck.meta.reason, ithn_dist::checkpoint::SaveReason::Signal);
        assert_eq!(
            ck.meta.state.step, last,
            "the signal checkpoint is the step the run stopped at"
        );
        assert!(ck.meta.state.step >= at);
        resumed_from.push(ck.meta.state.step);
    }
    assert!(
        !resumed_from.is_empty(),
        "no signal landed: stops {stops:?}"
    );
    let (status, out, err) = run_drill(run.path(), &[], &[]);
    assert!(status.success(), "{err}");
    assert!(
        out.contains(&format!("drill: finished at step {STEPS}")),
        "{out}"
    );
    let got = weights(&newest(run.path()).dir);
    assert_eq!(
        max_abs_diff(&expected, &got),
        0.0,
        "stopped at {resumed_from:?}"
    );
    assert_eq!(got, expected);
}

#[test]
fn sigkill_during_a_checkpoint_write_resumes_from_the_previous_one_identically() {
    let reference = tempfile::tempdir().unwrap();
    assert!(run_drill(reference.path(), &[], &[]).0.success());
    let expected = weights(&newest(reference.path()).dir);

    let run = tempfile::tempdir().unwrap();
    // Killed after the files of step 6 are complete but before the rename: a hidden temp dir.
    let (status, _, _) = run_drill(
        run.path(),
        &[],
        &[("ITHN_FAULT", "kill-in-checkpoint:6:before-rename")],
    );
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    assert_eq!(newest(run.path()).meta.state.step, 3);
    // Killed after the rename but before the DONE marker: a torn step-00000012.
    let (status, _, err) = run_drill(
        run.path(),
        &[],
        &[("ITHN_FAULT", "kill-in-checkpoint:12:before-done")],
    );
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL),
        "{err}"
    );
    assert!(err.contains("resuming") && err.contains("step=3"), "{err}");
    let torn = run.path().join("checkpoints/step-00000012");
    assert!(torn.is_dir() && !torn.join("DONE").exists());
    assert_eq!(newest(run.path()).meta.state.step, 9);

    let (status, _, err) = run_drill(run.path(), &[], &[]);
    assert!(status.success(), "{err}");
    assert!(
        err.contains("skipping checkpoint") && err.contains("no DONE marker"),
        "{err}"
    );
    assert!(err.contains("step=9"), "resumed from step 9: {err}");
    assert_eq!(weights(&newest(run.path()).dir), expected);
}

#[test]
fn second_sigint_exits_at_once_without_a_checkpoint() {
    let run = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    // 3 s per step: after the first SIGINT the run would only stop at the next step boundary.
    cmd.args(drill_args(run.path(), &["--step-ms", "3000"]))
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.starts_with("drill: step 1"), "{line}");
    let t = std::time::Instant::now();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    std::thread::sleep(std::time::Duration::from_millis(200));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(t.elapsed().as_secs_f64() < 2.0, "took {:?}", t.elapsed());
    assert!(ithn_dist::checkpoint::CheckpointManager::new(run.path(), 2)
        .list()
        .unwrap()
        .is_empty());
}

#[test]
fn config_change_on_resume_is_refused_unless_allowed() {
    let run = tempfile::tempdir().unwrap();
    assert!(run_drill(run.path(), &["--max-steps", "4"], &[])
        .0
        .success());
    let (status, _, err) = run_drill(
        run.path(),
        &["--max-steps", "5", "--set", "train.lr_ed=0.5"],
        &[],
    );
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("train.lr_ed: 0.001 → 0.5") && err.contains("--allow-config-change"),
        "{err}"
    );
    // Free keys (docs/resume.md) pass without the flag.
    let free = [
        "--max-steps",
        "5",
        "--set",
        "dist.timeout_s=99.0",
        "--set",
        "data.num_workers=3",
        "--set",
        "log.every_steps=1",
    ];
    let (status, _, err) = run_drill(run.path(), &free, &[]);
    assert!(status.success(), "{err}");
    let (status, _, err) = run_drill(
        run.path(),
        &[
            "--max-steps",
            "6",
            "--set",
            "train.lr_ed=0.5",
            "--allow-config-change",
        ],
        &[],
    );
    assert!(status.success(), "{err}");
    assert!(
        err.contains("resuming with a changed key: train.lr_ed"),
        "{err}"
    );
    assert_eq!(newest(run.path()).meta.state.step, 6);
}

#[test]
fn a_malformed_fault_injection_is_refused_naming_the_variable() {
    let run = tempfile::tempdir().unwrap();
    let (status, _, err) = run_drill(run.path(), &[], &[("ITHN_FAULT", "hang:5")]);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("ITHN_FAULT=\"hang:5\"") && err.contains("hang:STEP:RANK"),
        "{err}"
    );
    assert!(ithn_dist::checkpoint::CheckpointManager::new(run.path(), 2)
        .list()
        .unwrap()
        .is_empty());
}
