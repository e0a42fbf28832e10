//! Whose run directory is it? Before any expensive work, rank 0 decides what `train` may do
//! with `--run-dir` and every rank follows ([`claim`]):
//!
//! * a directory holding another run's outputs ([`RunDir::previous_outputs`]) is refused for
//!   a new run (`--resume never`, or `auto` with no valid checkpoint, or a checkpoint from
//!   elsewhere) unless `--overwrite` says to delete them first;
//! * `--resume auto` on a run that finished (`finished.json` names the newest checkpoint's
//!   step) with the same configuration, `--max-steps` and `train.epochs` trains nothing: the recorded test
//!   scores are printed again ([`Claim::Finished`]);
//! * the run directory and `checkpoints/` are checked writable (a full disk, a read-only
//!   mount) before the model and loaders are built.
//!
//! Nothing is written or deleted on a refusal.

use std::path::Path;

use crate::checkpoint::{config_hash, CheckpointManager, ResumeMode};
use crate::config::Config;
use crate::dist::World;
use crate::model::contract::RefusedOnRoot;
use crate::run_dir::RunDir;

/// `RUN/finished.json`: how a finished run ended, written by rank 0 after the test pass.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Finished {
    /// Optimizer steps of the run (the step of its last checkpoint).
    pub step: u64,
    /// `train.epochs` and `--max-steps` it was asked for.
    pub epochs: u64,
    pub max_steps: Option<u64>,
    pub config_hash: String,
    /// The test scores (None when the test split was not scored).
    pub scores: Option<serde_json::Value>,
}

impl Finished {
    /// Reads `RUN/finished.json` (None when absent or unreadable: then the run is not known
    /// to be finished and resuming decides).
    pub fn read(run: &RunDir) -> Option<Finished> {
        let text = std::fs::read_to_string(run.finished()).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Writes `RUN/finished.json` atomically.
    pub fn write(&self, run: &RunDir) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        crate::fsutil::write_atomic(&run.finished(), format!("{json}\n").as_bytes())
            .map_err(|e| e.source)
    }
}

/// What the run does.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// Train (fresh, or resumed as `--resume` says).
    Train,
    /// The run finished already with these arguments: nothing to train.
    Finished(Finished),
}

/// What `train` was asked to do with the run directory.
pub struct Request<'a> {
    pub run: &'a RunDir,
    pub mode: &'a ResumeMode,
    pub overwrite: bool,
    pub cfg: &'a Config,
    pub max_steps: Option<u64>,
}

/// Collective: rank 0 decides (and with `--overwrite` deletes the old outputs), every rank
/// gets the same [`Claim`] or a refusal.
pub fn claim(world: &World, req: &Request) -> anyhow::Result<Claim> {
    let decided = if world.is_root() {
        Some(decide(req))
    } else {
        None
    };
    let mut bytes = match &decided {
        Some(Ok(Claim::Train)) => vec![0],
        Some(Ok(Claim::Finished(f))) => {
            let mut b = vec![1];
            b.extend(serde_json::to_vec(f)?);
            b
        }
        Some(Err(_)) => vec![2],
        None => Vec::new(),
    };
    world.broadcast_bytes(0, &mut bytes);
    if let Some(d) = decided {
        return d;
    }
    match bytes.first() {
        Some(0) => Ok(Claim::Train),
        Some(1) => Ok(Claim::Finished(serde_json::from_slice(&bytes[1..])?)),
        _ => Err(RefusedOnRoot { rank: world.rank }.into()),
    }
}

/// Rank 0's decision (see the module documentation).
fn decide(req: &Request) -> anyhow::Result<Claim> {
    let run = req.run;
    let outputs = run.previous_outputs()?;
    if req.overwrite {
        if let ResumeMode::Path(p) = req.mode {
            if inside(p, &run.checkpoints()) {
                anyhow::bail!(
                    "--overwrite would delete {}, the checkpoint --resume names",
                    p.display()
                );
            }
        }
        probe(run)?;
        if !outputs.is_empty() {
            tracing::warn!(run = %run.root().display(), removed = ?outputs, "--overwrite: the earlier run's outputs are deleted");
            run.clear_previous()?;
        }
        return Ok(Claim::Train);
    }
    let claim = match req.mode {
        ResumeMode::Never if !outputs.is_empty() => return Err(refuse(run, &outputs, "")),
        ResumeMode::Never => Claim::Train,
        ResumeMode::Path(p) if !outputs.is_empty() && !inside(p, &run.checkpoints()) => {
            return Err(refuse(
                run,
                &outputs,
                " and --resume names a checkpoint of another run",
            ))
        }
        ResumeMode::Path(_) => Claim::Train,
        ResumeMode::Auto => decide_auto(req, &outputs)?,
    };
    if claim == Claim::Train {
        probe(run)?;
    }
    Ok(claim)
}

/// `--resume auto`: resume the newest valid checkpoint, report a finished run, or start a
/// run in a directory that holds nothing of another one.
fn decide_auto(req: &Request, outputs: &[String]) -> anyhow::Result<Claim> {
    let run = req.run;
    let store = CheckpointManager::new(run.root(), 1);
    if let (Some(ck), _) = store.newest_valid()? {
        let finished = Finished::read(run).filter(|f| {
            f.step == ck.step()
                && f.config_hash == config_hash(req.cfg)
                && (req.max_steps.is_some_and(|m| m <= f.step)
                    || (f.max_steps == req.max_steps && f.epochs == req.cfg.train.epochs as u64))
        });
        return Ok(finished.map_or(Claim::Train, Claim::Finished));
    }
    // No valid checkpoint: only what the same run wrote before its first complete checkpoint
    // may be there (records of its first steps, a torn save); they are redone, so the
    // records are dropped. A best/ or final/ model means a run got further: refused.
    let same_config =
        std::fs::read_to_string(run.config()).is_ok_and(|text| text == req.cfg.to_toml());
    let partial = outputs.iter().all(|n| {
        [RunDir::CONFIG, RunDir::METRICS, RunDir::CHECKPOINTS].contains(&n.as_str())
            || n.starts_with(RunDir::PREDICTIONS_PREFIX)
    });
    if !(outputs.is_empty() || partial && same_config) {
        return Err(refuse(run, outputs, " and no valid checkpoint to resume"));
    }
    if run.metrics().exists() {
        tracing::warn!(path = %run.metrics().display(), "restarting the run from step 0 (it has no checkpoint): its earlier records are dropped");
        std::fs::remove_file(run.metrics())?;
    }
    Ok(Claim::Train)
}

fn inside(path: &Path, dir: &Path) -> bool {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    canon(path).starts_with(canon(dir))
}

/// The run directory and its checkpoint directory accept files.
fn probe(run: &RunDir) -> anyhow::Result<()> {
    for dir in [run.root().to_path_buf(), run.checkpoints()] {
        crate::fsutil::probe_writable(&dir).map_err(|e| {
            anyhow::anyhow!(
                "{}: cannot write here: {e} (checked before training)",
                dir.display()
            )
        })?;
    }
    Ok(())
}

fn refuse(run: &RunDir, outputs: &[String], why: &str) -> anyhow::Error {
    let root = run.root().display();
    anyhow::anyhow!(
        "{root} holds an earlier run ({}){why}; a run directory belongs to one run. To start a \
         new run, pass --overwrite (deletes those) or choose a new --run-dir (e.g. {root}/run-2); \
         to continue the earlier run, use --resume auto",
        outputs.join(", ")
    )
}

/// The fingerprint stored in `finished.json`.
pub fn fingerprint(cfg: &Config) -> String {
    config_hash(cfg)
}

#[cfg(test)]
mod tests {
    /// The scores a finished run prints again come from `finished.json`: parsing must give back
    /// the very f64 that was written (serde_json's `float_roundtrip`; without it this BLEU-2 of a
    /// real run came back one ulp off and the rerun printed different digits).
    #[test]
    fn scores_survive_a_json_round_trip_bit_for_bit() {
        for text in [
            "0.09403073632425837",
            "0.1316035162109448",
            "6.114983734703937e-6",
            "0.3231215591812582",
        ] {
            let v: f64 = text.parse().unwrap();
            let json = serde_json::to_string(&serde_json::json!({ "BLEU_2": v })).unwrap();
            let back: serde_json::Value = serde_json::from_str(&json).unwrap();
            assert_eq!(
                back["BLEU_2"].as_f64().unwrap().to_bits(),
                v.to_bits(),
                "{text}"
            );
            assert_eq!(serde_json::to_string(&back).unwrap(), json);
        }
    }
}
