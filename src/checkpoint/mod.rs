//! Preemption-proof checkpoints: the [`Checkpointer`] a training loop drives (load, save
//! schedule, signal-driven saves, the best and final models), and below it the
//! [`CheckpointManager`] store (atomic save, validation, retention, the choice of the checkpoint
//! a run resumes from).
//!
//! Layering: this module sits below `train`. It never imports the trainer; a trainer hands its
//! state over through the [`Stateful`] trait (torchtitan's pattern), and so does `drill`.
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

pub mod checkpointer;
pub mod drill;
pub mod manager;
pub mod meta;
pub mod schedule;

pub use checkpointer::{Checkpointer, Stateful, StepAction};
pub use manager::{Checkpoint, CheckpointManager, Payload, ResumeArgs, ResumeMode};
pub use meta::{config_hash, SaveReason, TrainState, TrainerMeta, FORMAT_VERSION};
pub use schedule::{SaveSchedule, StepDecision};

use std::path::{Path, PathBuf};

/// Everything that can go wrong with a checkpoint; each variant names the file or directory.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Io(#[from] crate::fsutil::IoError),
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
    #[error(
        "{dir} has checkpoint format {found}; this build reads format {FORMAT_VERSION} (an older \
         ithn-dist wrote it: finish that run with the build that started it, or start afresh \
         with --resume never)"
    )]
    Format { dir: PathBuf, found: u32 },
    /// The checkpoint is valid but its content does not fit what loads it (tensor names or
    /// shapes of another model, an optimizer of other parameters).
    #[error("{dir}: {source}")]
    Restore {
        dir: PathBuf,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Writing a model directory (`RUN/best/`, `RUN/final/`).
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    /// A collective of a save (gathering a sharded optimizer's state).
    #[error(transparent)]
    Dist(#[from] crate::dist::DistError),
}

impl CheckpointError {
    pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> Self {
        CheckpointError::Io(crate::fsutil::IoError::new(op, path, source))
    }

    pub(crate) fn invalid(dir: &Path, reason: impl Into<String>) -> Self {
        CheckpointError::Invalid {
            dir: dir.to_path_buf(),
            reason: reason.into(),
        }
    }
}
