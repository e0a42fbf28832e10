//! The layout of a run directory, in one place. Everything `ithn-dist train` (and `drill`)
//! writes for a run lives under one directory `RUN/`:
//!
//! ```text
//! RUN/config.toml               the resolved configuration of the run
//! RUN/metrics.jsonl             one JSON object per line: train / val / test records (rank 0)
//! RUN/predictions-{split}.jsonl the last decoded val / test reports
//! RUN/checkpoints/step-N/       resumable checkpoints (see `checkpoint`)
//! RUN/best/                     the model with the best validation score (a model directory)
//! RUN/final/                    the model at the end of training (a model directory)
//! RUN/logs/                     per-job, per-rank JSON logs (launch/slurm passes --log-dir there)
//! RUN/plots/                    charts of `ithn-dist plot` (default output)
//! RUN/finished.json             written last: the run finished (step, epochs, --max-steps,
//!                               the test scores); a rerun of the same run trains nothing
//! ```
//!
//! A run directory belongs to one run: `train` refuses to start a new run in a directory that
//! holds [`RunDir::previous_outputs`] of another unless told `--overwrite`
//! ([`RunDir::clear_previous`]); see `train::claim`.
//!
//! [`RunDir`] only names paths; creating the directory is [`RunDir::create`], the one place
//! where policies about a directory as a whole (e.g. "a run directory belongs to one run") go.

use std::path::{Path, PathBuf};

use crate::dataset::Split;

/// A run directory (see the module documentation for its layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// The file and directory names of a run (the one place they are spelled).
    pub const CONFIG: &'static str = "config.toml";
    pub const METRICS: &'static str = "metrics.jsonl";
    pub const CHECKPOINTS: &'static str = "checkpoints";
    pub const BEST: &'static str = "best";
    pub const FINAL: &'static str = "final";
    pub const LOGS: &'static str = "logs";
    pub const PLOTS: &'static str = "plots";
    pub const FINISHED: &'static str = "finished.json";
    /// `predictions-{split}.jsonl`.
    pub const PREDICTIONS_PREFIX: &'static str = "predictions-";

    /// The run directory at `root` (nothing is touched on disk).
    pub fn new(root: impl Into<PathBuf>) -> RunDir {
        RunDir { root: root.into() }
    }

    /// Creates the directory (and its parents) if needed.
    pub fn create(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.root)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `RUN/config.toml`.
    pub fn config(&self) -> PathBuf {
        self.root.join(Self::CONFIG)
    }

    /// `RUN/metrics.jsonl`.
    pub fn metrics(&self) -> PathBuf {
        self.root.join(Self::METRICS)
    }

    /// `RUN/predictions-{split}.jsonl`.
    pub fn predictions(&self, split: Split) -> PathBuf {
        self.root
            .join(format!("{}{split}.jsonl", Self::PREDICTIONS_PREFIX))
    }

    /// `RUN/checkpoints/`.
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join(Self::CHECKPOINTS)
    }

    /// `RUN/best/`.
    pub fn best(&self) -> PathBuf {
        self.root.join(Self::BEST)
    }

    /// `RUN/final/`.
    pub fn final_model(&self) -> PathBuf {
        self.root.join(Self::FINAL)
    }

    /// `RUN/logs/`.
    pub fn logs(&self) -> PathBuf {
        self.root.join(Self::LOGS)
    }

    /// `RUN/plots/`.
    pub fn plots(&self) -> PathBuf {
        self.root.join(Self::PLOTS)
    }

    /// `RUN/finished.json`.
    pub fn finished(&self) -> PathBuf {
        self.root.join(Self::FINISHED)
    }

    /// The entries of `RUN/` a training run writes (config, metrics, predictions, checkpoints,
    /// best/final models, the finished marker), sorted by name; empty for a new directory.
    /// Logs and plots are not a run's state and do not count.
    pub fn previous_outputs(&self) -> std::io::Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for entry in entries {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if is_run_output(&name) {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes [`Self::previous_outputs`] (`train --overwrite`); logs and plots stay.
    pub fn clear_previous(&self) -> std::io::Result<()> {
        for name in self.previous_outputs()? {
            let path = self.root.join(&name);
            if path.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(())
    }
}

/// Whether `name` in a run directory is something a training run wrote.
fn is_run_output(name: &str) -> bool {
    let written = [
        RunDir::CONFIG,
        RunDir::METRICS,
        RunDir::CHECKPOINTS,
        RunDir::BEST,
        RunDir::FINAL,
        RunDir::FINISHED,
    ];
    // `.best.…`/`.final.…`: a model directory's staging or temporary left by a crash.
    written.contains(&name)
        || (name.starts_with(RunDir::PREDICTIONS_PREFIX) && name.ends_with(".jsonl"))
        || name.starts_with(&format!(".{}.", RunDir::BEST))
        || name.starts_with(&format!(".{}.", RunDir::FINAL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_names() {
        let r = RunDir::new("runs/x");
        assert_eq!(r.metrics(), Path::new("runs/x/metrics.jsonl"));
        assert_eq!(r.config(), Path::new("runs/x/config.toml"));
        assert_eq!(r.checkpoints(), Path::new("runs/x/checkpoints"));
        assert_eq!(r.best(), Path::new("runs/x/best"));
        assert_eq!(r.final_model(), Path::new("runs/x/final"));
        assert_eq!(
            r.predictions(Split::Val),
            Path::new("runs/x/predictions-val.jsonl")
        );
        assert_eq!(r.logs(), Path::new("runs/x/logs"));
        assert_eq!(r.plots(), Path::new("runs/x/plots"));
    }

    #[test]
    fn previous_outputs_are_the_runs_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let r = RunDir::new(dir.path().join("run"));
        assert!(r.previous_outputs().unwrap().is_empty());
        for d in ["logs", "checkpoints", "final"] {
            std::fs::create_dir_all(r.root().join(d)).unwrap();
        }
        std::fs::write(r.metrics(), "{}\n").unwrap();
        std::fs::write(r.predictions(Split::Test), "").unwrap();
        assert_eq!(
            r.previous_outputs().unwrap(),
            [
                "checkpoints",
                "final",
                "metrics.jsonl",
                "predictions-test.jsonl"
            ]
        );
        r.clear_previous().unwrap();
        assert!(r.previous_outputs().unwrap().is_empty());
        assert!(r.logs().is_dir());
    }
}
