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
//! ```
//!
//! [`RunDir`] only names paths; creating the directory is [`RunDir::create`], the one place
//! where policies about a directory as a whole (e.g. "a run directory belongs to one run") go.

use std::path::{Path, PathBuf};

/// A run directory (see the module documentation for its layout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
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
        self.root.join("config.toml")
    }

    /// `RUN/metrics.jsonl`.
    pub fn metrics(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }

    /// `RUN/predictions-{split}.jsonl`.
    pub fn predictions(&self, split: &str) -> PathBuf {
        self.root.join(format!("predictions-{split}.jsonl"))
    }

    /// `RUN/checkpoints/`.
    pub fn checkpoints(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    /// `RUN/best/`.
    pub fn best(&self) -> PathBuf {
        self.root.join("best")
    }

    /// `RUN/final/`.
    pub fn final_model(&self) -> PathBuf {
        self.root.join("final")
    }

    /// `RUN/logs/`.
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    /// `RUN/plots/`.
    pub fn plots(&self) -> PathBuf {
        self.root.join("plots")
    }
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
            r.predictions("val"),
            Path::new("runs/x/predictions-val.jsonl")
        );
        assert_eq!(r.logs(), Path::new("runs/x/logs"));
        assert_eq!(r.plots(), Path::new("runs/x/plots"));
    }
}
