//! Preemption-proof checkpoints: atomic save, validation, retention, and the choice of the
//! checkpoint a run resumes from.
//!
//! A checkpoint is a directory `RUN/checkpoints/step-XXXXXXXX/` holding `model.safetensors`
//! (reference state_dict names), `optimizer.safetensors`, `trainer.json` ([`TrainerMeta`]),
//! `config.toml`, optional extras such as `vocab.json`, `SHA256SUMS`, and a `DONE` marker.
//! Guarantees:
//! * a directory without a `DONE` marker, or whose files do not match `SHA256SUMS`, is never
//!   loaded: `--resume auto` skips it with a warning and takes the previous one;
//! * a crash at any instant of a save leaves every earlier checkpoint intact (files are
//!   written into a temporary directory, fsync'd, renamed into place, and the marker is
//!   written last — the llm.c pattern);
//! * resuming with a configuration that changes the mathematics is refused unless allowed
//!   (see [`meta::FREE_KEYS`] and docs/resume.md).

pub mod drill;
pub mod fsutil;
pub mod hook;
pub mod manager;
pub mod meta;
pub mod schedule;

pub use manager::{Checkpoint, CheckpointManager, Payload, ResumeArgs, ResumeMode};
pub use meta::{config_hash, LoaderCursor, SaveReason, TrainerMeta, FORMAT_VERSION};
pub use schedule::{SaveSchedule, StepDecision};

use std::path::{Path, PathBuf};

/// Everything that can go wrong with a checkpoint; each variant names the file or directory.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{dir} is not a valid checkpoint: {reason}")]
    Invalid { dir: PathBuf, reason: String },
    #[error("{path}: tensor file error: {message}")]
    Tensor { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(
        "{dir} was written with a different configuration; these keys change the mathematics:\n  {}\n\
         pass --allow-config-change to resume anyway (docs/resume.md lists the keys that may change freely)",
        keys.join("\n  ")
    )]
    ConfigChanged { dir: PathBuf, keys: Vec<String> },
    #[error("--resume {spec:?}: {reason}")]
    BadResume { spec: String, reason: String },
    #[error("rank {rank}: the checkpoint of step {step} failed on rank 0 (see its log)")]
    RemoteFailed { rank: usize, step: u64 },
}

impl CheckpointError {
    pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        CheckpointError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn invalid(dir: &Path, reason: impl Into<String>) -> Self {
        CheckpointError::Invalid {
            dir: dir.to_path_buf(),
            reason: reason.into(),
        }
    }
}
