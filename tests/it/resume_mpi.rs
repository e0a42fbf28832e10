//! Multi-rank resume and failure behaviour under `mpirun` (through launch/mpirun.sh), with the
//! real binary running `ithn-dist drill`. Expected weights come from uninterrupted runs made in
//! the same test.
//! * SIGUSR1 to mpirun (what the SLURM batch script does) → every rank stops at the same step,
//!   exit code 3, and resuming on 2 ranks ends bit-identical to the uninterrupted 2-rank run;
//! * elastic: 2 → 1 and 1 → 2 ranks continue the same global batches (equal within 1e-5);
//! * `kill -9` of one rank: every process is gone within 60 s, non-zero, last checkpoint valid;
//! * a rank that hangs: the watchdog aborts the whole job after dist.timeout_s.

use crate::resume_support;

use resume_support::*;
use std::time::{Duration, Instant};

fn drill_mpi(np: usize, run: &std::path::Path, extra: &[&str]) -> std::process::Output {
    mpirun(np, &drill_args(run, extra))
        .output()
        .expect("run mpirun")
}

fn reference(
    np: usize,
) -> (
    tempfile::TempDir,
    std::collections::BTreeMap<String, Vec<f64>>,
) {
    let dir = tempfile::tempdir().unwrap();
    let out = drill_mpi(np, dir.path(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let w = weights(&newest(dir.path()).dir);
    (dir, w)
}

#[test]
fn sigusr1_to_mpirun_checkpoints_all_ranks_and_resume_is_bit_identical() {
    let (_keep, expected) = reference(2);
    let run = tempfile::tempdir().unwrap();
    let at = distinct_steps(test_seed(), 1, 2, STEPS - 3)[0];
    let (status, last) = signal_at_step(
        mpirun(2, &drill_args(run.path(), &["--step-ms", "80"])),
        at,
        libc::SIGUSR1,
    );
    assert_eq!(
        status.code(),
        Some(3),
        "mpirun passes the ranks' exit code 3 on"
    );
    let ck = newest(run.path());
    assert_eq!((ck.meta.state.step, ck.meta.world_size), (last, 2));
    let out = drill_mpi(2, run.path(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        max_abs_diff(&expected, &weights(&newest(run.path()).dir)),
        0.0,
        "stopped at {last}"
    );
}

#[test]
fn elastic_resume_two_to_one_and_one_to_two_ranks() {
    let (_keep2, expected2) = reference(2);
    let (_keep1, expected1) = reference(1);
    // The two references differ only by float re-association of the gradient sum.
    assert!(max_abs_diff(&expected1, &expected2) < 1e-5);

    let run = tempfile::tempdir().unwrap();
    assert!(drill_mpi(2, run.path(), &["--max-steps", "7"])
        .status
        .success());
    assert_eq!(newest(run.path()).meta.world_size, 2);
    let out = drill_mpi(1, run.path(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = max_abs_diff(&expected2, &weights(&newest(run.path()).dir));
    assert!(d < 1e-5, "2 → 1 ranks: max abs diff {d}");

    let run = tempfile::tempdir().unwrap();
    assert!(drill_mpi(1, run.path(), &["--max-steps", "10"])
        .status
        .success());
    let out = drill_mpi(2, run.path(), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let d = max_abs_diff(&expected1, &weights(&newest(run.path()).dir));
    assert!(d < 1e-5, "1 → 2 ranks: max abs diff {d}");
}

#[test]
fn kill_9_of_one_rank_ends_every_process_quickly_and_keeps_the_last_checkpoint_valid() {
    let run = tempfile::tempdir().unwrap();
    let mut cmd = mpirun(2, &drill_args(run.path(), &["--step-ms", "150"]));
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("drill: step 4 ") {
        line.clear();
        assert!(
            std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() > 0,
            "run ended early"
        );
    }
    // launch/mpirun.sh runs mpirun as its own child (it stays to forward Ctrl-C), so the ranks
    // are the `ithn-dist` processes somewhere below the child.
    let ranks = rank_processes(child.id());
    assert_eq!(ranks.len(), 2, "rank processes: {ranks:?}");
    let t = Instant::now();
    // SAFETY: killing a process of our own job.
    unsafe { libc::kill(ranks[1] as i32, libc::SIGKILL) };
    let status =
        wait_timeout(&mut child, Duration::from_secs(60)).expect("mpirun did not exit within 60 s");
    assert!(!status.success(), "{status:?}");
    eprintln!(
        "mpirun exited {:.1}s after kill -9",
        t.elapsed().as_secs_f64()
    );
    // mpirun may return before the surviving rank has finished dying; give it the rest of the 60 s.
    while ranks.iter().any(|&p| alive(p)) {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "ranks still alive: {ranks:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "every rank gone {:.1}s after kill -9",
        t.elapsed().as_secs_f64()
    );
    let ck = newest(run.path());
    assert!(
        ck.meta.state.step >= 3,
        "checkpoint at step {}",
        ck.meta.state.step
    );
    assert!(ck.meta.state.step < STEPS);
}

#[test]
fn a_hanging_rank_is_aborted_by_the_watchdog() {
    let run = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let mut cmd = mpirun(2, &drill_args(run.path(), &["--set", "dist.timeout_s=3.0"]));
    cmd.env("ITHN_FAULT", "hang:5:1");
    let out = cmd.output().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(
        out.status.code(),
        Some(4),
        "EXIT_WATCHDOG; {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("watchdog: no step completed"));
    assert_eq!(
        newest(run.path()).meta.state.step,
        3,
        "the checkpoint before the hang stays valid"
    );
}

/// The `ithn-dist` processes among the descendants of `pid` (sorted).
fn rank_processes(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for c in children(p) {
            let comm = std::fs::read_to_string(format!("/proc/{c}/comm")).unwrap_or_default();
            if comm.trim() == "ithn-dist" {
                found.push(c);
            } else {
                todo.push(c);
            }
        }
    }
    found.sort_unstable();
    found
}

fn children(pid: u32) -> Vec<u32> {
    let text =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let mut v: Vec<u32> = text
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    v.sort_unstable();
    v
}

fn alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; only a running or sleeping process counts.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

fn wait_timeout(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    None
}
