//! SLURM end to end on the local single-node cluster (ops/slurm-local, started by the test; CI
//! runs as root on a fresh clone of this machine): `sbatch launch/slurm/train.sbatch` with a
//! one-minute time limit and `--signal=B:USR1@50`, so SLURM signals the batch shell while the
//! 2-rank drill runs. The job must checkpoint, requeue itself (exit code 3 → `scontrol
//! requeue`), be released (`scontrol update StartTime=now`), resume and complete, with final
//! weights bit-identical to an uninterrupted 2-rank run made here.

use crate::resume_support;

use resume_support::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn slurm_env() -> String {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the local SLURM cluster needs root (CI runs as root)"
    );
    let out = Command::new("bash")
        .arg(root().join("ops/slurm-local/start.sh"))
        .output()
        .expect("run start.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ops/slurm-local/start.sh failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("export SLURM_CONF="))
        .unwrap_or_else(|| panic!("start.sh printed no SLURM_CONF: {stdout}"))
        .to_string()
}

fn job_field(conf: &str, job: &str, field: &str) -> String {
    let out = Command::new("scontrol")
        .args(["show", "job", job, "-o"])
        .env("SLURM_CONF", conf)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{field}=")))
        .unwrap_or("")
        .to_string()
}

/// Whether the single node has finished cleaning up after its last job (`State=IDLE`, not
/// `IDLE+COMPLETING`): releasing a requeued job before that makes slurmctld start it with a
/// credential slurmd is still revoking ("Killing non-startable batch job: Job credential
/// revoked"), which ends the job FAILED — a race seen on a loaded machine.
fn node_idle(conf: &str) -> bool {
    let out = Command::new("scontrol")
        .args(["show", "node", "-o"])
        .env("SLURM_CONF", conf)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .any(|kv| kv == "State=IDLE")
}

#[test]
fn sbatch_time_limit_signal_checkpoints_requeues_resumes_and_completes_identically() {
    let conf = slurm_env();
    let reference = tempfile::tempdir().unwrap();
    let out = mpirun(2, &drill_args(reference.path(), &[]))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = weights(&newest(reference.path()).dir);

    let run = tempfile::tempdir().unwrap();
    // 18 steps × 2.5 s = 45 s of work; SLURM signals once ≤ 50 s remain of the 60 s limit,
    // which its 30 s scheduler tick turns into 10–40 s after the start: always mid-run.
    let mut args = drill_args(run.path(), &["--step-ms", "2500"]);
    args.remove(0); // "drill" comes from ITHN_COMMAND
    let log = run.path().join("slurm-%j.out");
    let out = Command::new("sbatch")
        .args([
            "--parsable",
            "--time=1",
            "--signal=B:USR1@50",
            "--ntasks-per-node=2",
        ])
        .arg(format!("--output={}", log.display()))
        .arg(root().join("launch/slurm/train.sbatch"))
        .args(&args)
        .current_dir(root())
        .env("SLURM_CONF", &conf)
        .env("ITHN_COMMAND", "drill")
        .env("ITHN_BIN", BIN)
        .output()
        .expect("run sbatch");
    assert!(
        out.status.success(),
        "sbatch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let job = String::from_utf8_lossy(&out.stdout)
        .trim()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let log = run.path().join(format!("slurm-{job}.out"));

    let t = Instant::now();
    let state = loop {
        let state = job_field(&conf, &job, "JobState");
        match state.as_str() {
            "COMPLETED" | "FAILED" | "CANCELLED" | "TIMEOUT" | "NODE_FAIL" | "OUT_OF_MEMORY" => {
                break state
            }
            "PENDING" if job_field(&conf, &job, "Reason") == "BeginTime" && node_idle(&conf) => {
                // A requeued job waits for its begin time; release it once the node is clean.
                Command::new("scontrol")
                    .args(["update", &format!("JobId={job}"), "StartTime=now"])
                    .env("SLURM_CONF", &conf)
                    .status()
                    .unwrap();
            }
            _ => {}
        }
        if t.elapsed() > Duration::from_secs(420) {
            let _ = Command::new("scancel")
                .arg(&job)
                .env("SLURM_CONF", &conf)
                .status();
            panic!(
                "job {job} did not finish in 7 min (state {state}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(state, "COMPLETED", "{text}");
    let restarts: u32 = job_field(&conf, &job, "Restarts").parse().unwrap();
    assert!(restarts >= 1, "the job was never requeued:\n{text}");
    assert!(
        text.contains("USR1 received") && text.contains("checkpointed on a signal: requeueing"),
        "{text}"
    );
    assert!(
        text.contains("resuming") && text.contains("drill: finished at step 18"),
        "{text}"
    );
    eprintln!(
        "job {job}: {restarts} restart(s) in {:.0}s",
        t.elapsed().as_secs_f64()
    );
    let got = weights(&newest(run.path()).dir);
    assert_eq!(max_abs_diff(&expected, &got), 0.0);
}
