//! Helpers shared by the resume/checkpoint/SLURM integration tests: run `ithn-dist drill` (the
//! deterministic preemption drill) in temp dirs, signal it at chosen steps, and compare the
//! final weights of two runs tensor by tensor.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use ithn_dist::checkpoint::{Checkpoint, CheckpointManager};

pub use crate::util::BIN;

/// Repository root (for configs/ and launch/).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The drill on configs/tiny.toml: global batch 16 of 96 samples = 6 steps per epoch, 3 epochs
/// = 18 steps, a checkpoint every 3 steps and at each epoch end, the last 2 kept.
pub fn drill_args(run: &Path, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "drill".into(),
        "--config".into(),
        root().join("configs/tiny.toml").display().to_string(),
        "--run-dir".into(),
        run.display().to_string(),
        "--set".into(),
        "train.epochs=3".into(),
        "--set".into(),
        "checkpoint.every_steps=3".into(),
        "--set".into(),
        "checkpoint.keep_last=2".into(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// Total steps of [`drill_args`].
pub const STEPS: u64 = 18;

/// Runs the drill in one process to the end; returns (status, stdout, stderr).
pub fn run_drill(run: &Path, extra: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let out = Command::new(BIN)
        .args(drill_args(run, extra))
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .output()
        .expect("spawn ithn-dist");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Spawns a command with stdout piped, sends `signal` to `target` (the child itself when None)
/// as soon as rank 0 prints `drill: step <at>`, and waits. Returns the status and the last step
/// printed.
pub fn signal_at_step(mut cmd: Command, at: u64, signal: i32) -> (ExitStatus, u64) {
    let mut child: Child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut last = 0;
    let mut sent = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read stdout");
        if let Some(step) = line
            .strip_prefix("drill: step ")
            .and_then(|r| r.split(' ').next())
            .and_then(|s| s.parse::<u64>().ok())
        {
            last = step;
            if step >= at && !sent {
                // SAFETY: signalling a child process we spawned.
                unsafe { libc::kill(child.id() as i32, signal) };
                sent = true;
            }
        }
    }
    (child.wait().expect("wait"), last)
}

/// The newest valid checkpoint of a run (panics when there is none).
pub fn newest(run: &Path) -> Checkpoint {
    CheckpointManager::new(run, 2)
        .newest_valid()
        .expect("list checkpoints")
        .0
        .unwrap_or_else(|| panic!("no valid checkpoint in {}", run.display()))
}

/// Every tensor of a safetensors model file in a checkpoint directory, as f64 values by name
/// (f32 or f64 parameters and i64 buffers such as BatchNorm's `num_batches_tracked`; all exact
/// in f64).
pub fn weights(dir: &Path) -> BTreeMap<String, Vec<f64>> {
    let bytes = std::fs::read(dir.join("model.safetensors")).expect("read model.safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("parse model.safetensors");
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let d = view.data();
            let v: Vec<f64> = match view.dtype() {
                safetensors::Dtype::F32 => d
                    .chunks_exact(4)
                    .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                    .collect(),
                safetensors::Dtype::F64 => d
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                safetensors::Dtype::I64 => d
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                other => panic!("{name}: unexpected dtype {other:?}"),
            };
            (name, v)
        })
        .collect()
}

/// Largest absolute difference between two weight sets with the same names and shapes.
pub fn max_abs_diff(a: &BTreeMap<String, Vec<f64>>, b: &BTreeMap<String, Vec<f64>>) -> f64 {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "tensor names differ"
    );
    let mut worst = 0.0f64;
    for (name, x) in a {
        let y = &b[name];
        assert_eq!(x.len(), y.len(), "{name}: sizes differ");
        for (p, q) in x.iter().zip(y) {
            worst = worst.max((p - q).abs());
        }
    }
    worst
}

/// A seed for the "random" choices of a test, printed so that a failure can be replayed with
/// `ITHN_TEST_SEED=<n>`.
pub fn test_seed() -> u64 {
    let seed = std::env::var("ITHN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("ITHN_TEST_SEED={seed}");
    seed
}

/// `count` distinct values in `lo..=hi`, ascending, from a splitmix64 stream.
pub fn distinct_steps(seed: u64, count: usize, lo: u64, hi: u64) -> Vec<u64> {
    let mut state = seed;
    let mut out = Vec::new();
    while out.len() < count {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        let v = lo + (z ^ (z >> 31)) % (hi - lo + 1);
        if !out.contains(&v) {
            out.push(v);
        }
    }
    out.sort_unstable();
    out
}

/// `mpirun` through launch/mpirun.sh with `np` ranks.
pub fn mpirun(np: usize, args: &[String]) -> Command {
    let mut c = Command::new("bash");
    c.arg(root().join("launch/mpirun.sh"))
        .arg(np.to_string())
        .args(args);
    c.env("ITHN_BIN", BIN).env("NO_COLOR", "1");
    c
}
