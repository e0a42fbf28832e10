//! The checkpoint store: writes `step-XXXXXXXX/` directories atomically, validates them,
//! keeps the last K, and picks the one a run resumes from. When to save, "best" and signals
//! are the [`super::Checkpointer`]'s business; this file only knows directories.
//!
//! Model and optimizer state are the same on every rank (a sharded optimizer gathers its whole
//! state first, `Stateful::optimizer_state`), so only rank 0 writes; the other
//! ranks wait in one all-reduce that also tells them whether rank 0 succeeded, and the `DONE`
//! marker is written after it (llm.c). Nothing in this file trusts a directory's name alone:
//! a checkpoint exists only when its marker is present and every checksum matches.

use std::path::{Path, PathBuf};
use tch::Tensor;

use super::meta::{config_hash, math_diff, TrainerMeta, FORMAT_VERSION};
use super::CheckpointError;
use crate::config::Config;
use crate::dist::World;
use crate::fsutil::{fsync_dir, sha256_bytes, sha256_file, write_durable};
use crate::lifecycle::{fault, Fault, SavePoint};
use crate::run_dir::RunDir;

/// The weights and the configuration have the names of a model directory (`RUN/best/`), so
/// `generate`/`evaluate`/`export` read a checkpoint directory as well.
pub const MODEL_FILE: &str = crate::model::weights::WEIGHTS_FILE;
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const TRAINER_FILE: &str = "trainer.json";
pub const CONFIG_FILE: &str = crate::model::weights::CONFIG_FILE;
pub const SUMS_FILE: &str = "SHA256SUMS";
pub const DONE_FILE: &str = "DONE";
const REQUIRED: [&str; 4] = [MODEL_FILE, OPTIMIZER_FILE, TRAINER_FILE, CONFIG_FILE];

/// What one save writes. Tensors may live on any device; they are copied to the CPU.
pub struct Payload<'a> {
    /// Model state_dict with reference names.
    pub model: &'a [(String, Tensor)],
    /// Optimizer state (moments, max_exp_avg_sq, step counts), named by the optimizer.
    pub optimizer: &'a [(String, Tensor)],
    pub meta: &'a TrainerMeta,
    pub config: &'a Config,
    /// Further files, e.g. `("vocab.json", bytes)` so that generate/export can read the directory.
    pub extra_files: &'a [(&'a str, &'a [u8])],
}

/// Which checkpoint to start from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeMode {
    /// The newest valid checkpoint of the run, or a fresh start when there is none.
    Auto,
    /// Always a fresh start.
    Never,
    /// This checkpoint directory; an error when it is not valid.
    Path(PathBuf),
}

impl std::str::FromStr for ResumeMode {
    type Err = CheckpointError;
    fn from_str(s: &str) -> Result<Self, CheckpointError> {
        match s {
            "auto" => Ok(ResumeMode::Auto),
            "never" => Ok(ResumeMode::Never),
            "" => Err(CheckpointError::BadResume {
                spec: s.into(),
                reason: "expected auto, never or a checkpoint directory".into(),
            }),
            path => Ok(ResumeMode::Path(PathBuf::from(path))),
        }
    }
}

/// Resume options shared by every command that trains (`#[command(flatten)]`).
#[derive(clap::Args, Debug, Clone)]
pub struct ResumeArgs {
    /// `auto` (newest valid checkpoint of the run, else start fresh), `never`, or a checkpoint directory.
    #[arg(long, default_value = "auto", value_name = "auto|never|PATH")]
    pub resume: String,
    /// Resume even if keys that change the mathematics differ from the checkpoint's config.
    #[arg(long)]
    pub allow_config_change: bool,
    /// Inside SLURM, rank 0 runs `scontrol requeue $SLURM_JOB_ID` after a signal checkpoint.
    #[arg(long)]
    pub requeue_on_signal: bool,
}

impl ResumeArgs {
    pub fn mode(&self) -> Result<ResumeMode, CheckpointError> {
        self.resume.parse()
    }
}

/// A validated checkpoint directory and its trainer state.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub dir: PathBuf,
    pub meta: TrainerMeta,
}

impl Checkpoint {
    /// Validates `dir` (marker, checksums, format version) and reads its trainer state.
    pub fn open(dir: &Path) -> Result<Checkpoint, CheckpointError> {
        validate(dir)?;
        let path = dir.join(TRAINER_FILE);
        let text =
            std::fs::read_to_string(&path).map_err(|e| CheckpointError::io("read", &path, e))?;
        let parse = |e: serde_json::Error| CheckpointError::Parse {
            path: path.clone(),
            message: e.to_string(),
        };
        // The version first: an older layout must be reported as such, not as unknown fields.
        #[derive(serde::Deserialize)]
        struct Version {
            format_version: u32,
        }
        let found = serde_json::from_str::<Version>(&text)
            .map_err(parse)?
            .format_version;
        if found != FORMAT_VERSION {
            return Err(CheckpointError::Format {
                dir: dir.to_path_buf(),
                found,
            });
        }
        let meta: TrainerMeta = serde_json::from_str(&text).map_err(parse)?;
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            meta,
        })
    }

    /// Optimizer steps completed when the checkpoint was written.
    pub fn step(&self) -> u64 {
        self.meta.state.step
    }

    /// The model state_dict; non-finite weights are an error naming the key.
    pub fn model(&self) -> Result<Vec<(String, Tensor)>, CheckpointError> {
        let path = self.dir.join(MODEL_FILE);
        let tensors = read_tensors(&path)?;
        crate::model::weights::check_finite(&path, &tensors)?;
        Ok(tensors)
    }

    /// The optimizer state.
    pub fn optimizer(&self) -> Result<Vec<(String, Tensor)>, CheckpointError> {
        read_tensors(&self.dir.join(OPTIMIZER_FILE))
    }

    /// The configuration the checkpoint was written with.
    pub fn config(&self) -> Result<Config, CheckpointError> {
        let path = self.dir.join(CONFIG_FILE);
        Config::load(&path, &[]).map_err(|e| CheckpointError::Parse {
            path,
            message: e.to_string(),
        })
    }

    /// Compares `cfg` with the checkpoint's configuration. Returns the changed mathematical keys
    /// (empty when the fingerprints agree); an error when some changed and `allow` is false.
    pub fn check_config(&self, cfg: &Config, allow: bool) -> Result<Vec<String>, CheckpointError> {
        if config_hash(cfg) == self.meta.config_hash {
            return Ok(Vec::new());
        }
        let mut keys = math_diff(&self.config()?, cfg);
        if keys.is_empty() {
            keys.push(
                "(config.toml matches but trainer.json's config_hash does not: edited by hand?)"
                    .into(),
            );
        }
        if allow {
            Ok(keys)
        } else {
            Err(CheckpointError::ConfigChanged {
                dir: self.dir.clone(),
                keys,
            })
        }
    }
}

/// Checks that `dir` is a complete checkpoint: `DONE` present and naming the checksum file's
/// hash, every required file listed, every listed file present with the recorded SHA-256.
pub fn validate(dir: &Path) -> Result<(), CheckpointError> {
    let done_path = dir.join(DONE_FILE);
    let done = std::fs::read_to_string(&done_path)
        .map_err(|_| CheckpointError::invalid(dir, "no DONE marker (the save did not finish)"))?;
    let sums_path = dir.join(SUMS_FILE);
    let sums =
        std::fs::read(&sums_path).map_err(|_| CheckpointError::invalid(dir, "no SHA256SUMS"))?;
    if done.trim() != sha256_bytes(&sums) {
        return Err(CheckpointError::invalid(
            dir,
            "SHA256SUMS does not match the DONE marker",
        ));
    }
    let sums = String::from_utf8(sums)
        .map_err(|_| CheckpointError::invalid(dir, "SHA256SUMS is not UTF-8"))?;
    let mut listed = Vec::new();
    for (i, line) in sums.lines().enumerate() {
        let (hash, name) = line.split_once("  ").ok_or_else(|| {
            CheckpointError::invalid(dir, format!("SHA256SUMS line {}: malformed", i + 1))
        })?;
        if name.contains('/') || name.starts_with('.') {
            return Err(CheckpointError::invalid(
                dir,
                format!("SHA256SUMS line {}: bad name {name:?}", i + 1),
            ));
        }
        let path = dir.join(name);
        if !path.is_file() {
            return Err(CheckpointError::invalid(dir, format!("{name} is missing")));
        }
        if sha256_file(&path)? != hash {
            return Err(CheckpointError::invalid(
                dir,
                format!("{name}: checksum mismatch (truncated or corrupt)"),
            ));
        }
        listed.push(name);
    }
    for required in REQUIRED {
        if !listed.contains(&required) {
            return Err(CheckpointError::invalid(
                dir,
                format!("{required} is not in SHA256SUMS"),
            ));
        }
    }
    Ok(())
}

fn read_tensors(path: &Path) -> Result<Vec<(String, Tensor)>, CheckpointError> {
    Tensor::read_safetensors(path).map_err(|e| CheckpointError::Tensor {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn write_tensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), CheckpointError> {
    // Serialised in memory and written with our own I/O, so that a full disk reads
    // "No space left on device" with the file's name.
    let bytes = crate::model::weights::safetensors_bytes(tensors)?;
    Ok(write_durable(path, &bytes)?)
}

/// A checkpoint that `--resume auto` passed over, and why.
#[derive(Debug, Clone)]
pub struct Skipped {
    pub dir: PathBuf,
    pub reason: String,
}

/// Owns `RUN/checkpoints/`.
#[derive(Debug, Clone)]
pub struct CheckpointManager {
    root: PathBuf,
    keep_last: usize,
    fault: Option<Fault>,
}

impl CheckpointManager {
    /// Manages `run_dir/checkpoints`, keeping the `keep_last` newest checkpoints (≥ 1).
    pub fn new(run_dir: &Path, keep_last: usize) -> CheckpointManager {
        CheckpointManager {
            root: RunDir::new(run_dir).checkpoints(),
            keep_last: keep_last.max(1),
            fault: None,
        }
    }

    /// Injects a scripted fault into saves (crash tests; see [`crate::lifecycle::fault`]).
    pub fn with_fault(mut self, fault: Option<Fault>) -> CheckpointManager {
        self.fault = fault;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `step-XXXXXXXX` (8 digits, so that names sort by step).
    pub fn step_dir(&self, step: u64) -> PathBuf {
        self.root.join(format!("step-{step:08}"))
    }

    /// Every `step-*` directory, complete or not, by ascending step.
    pub fn list(&self) -> Result<Vec<(u64, PathBuf)>, CheckpointError> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(CheckpointError::io("list", &self.root, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| CheckpointError::io("list", &self.root, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(step) = name
                .strip_prefix("step-")
                .and_then(|s| s.parse::<u64>().ok())
            {
                out.push((step, entry.path()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// The newest checkpoint that validates, and those newer than it that did not (with reasons).
    pub fn newest_valid(&self) -> Result<(Option<Checkpoint>, Vec<Skipped>), CheckpointError> {
        let mut skipped = Vec::new();
        for (_, dir) in self.list()?.into_iter().rev() {
            match Checkpoint::open(&dir) {
                Ok(c) => return Ok((Some(c), skipped)),
                // A complete checkpoint of another layout is not torn: skipping it would start
                // the run afresh and let retention delete it.
                Err(e @ CheckpointError::Format { .. }) => return Err(e),
                Err(e) => skipped.push(Skipped {
                    dir,
                    reason: e.to_string(),
                }),
            }
        }
        Ok((None, skipped))
    }

    /// The checkpoint to resume from for `mode` (None = fresh start). Skipped directories are
    /// reported with `tracing::warn!`.
    pub fn resolve(&self, mode: &ResumeMode) -> Result<Option<Checkpoint>, CheckpointError> {
        match mode {
            ResumeMode::Never => Ok(None),
            ResumeMode::Path(p) => Checkpoint::open(p).map(Some),
            ResumeMode::Auto => {
                let (found, skipped) = self.newest_valid()?;
                for s in &skipped {
                    tracing::warn!(dir = %s.dir.display(), "skipping checkpoint: {}", s.reason);
                }
                Ok(found)
            }
        }
    }

    /// Writes the checkpoint of `payload.meta.state.step`. Collective: every rank calls it; rank 0
    /// writes, the others learn the outcome. Returns the checkpoint directory.
    pub fn save(&self, world: &World, payload: &Payload) -> Result<PathBuf, CheckpointError> {
        let step = payload.meta.state.step;
        let final_dir = self.step_dir(step);
        let written = if world.is_root() {
            self.write_files(payload)
        } else {
            Ok(())
        };
        let mut failed = [u64::from(written.is_err())];
        world.all_reduce_max_u64(&mut failed);
        written?;
        if failed[0] != 0 {
            return Err(CheckpointError::RemoteFailed {
                rank: world.rank,
                step,
            });
        }
        if world.is_root() {
            self.fault_point(step, SavePoint::BeforeDone);
            let sums = std::fs::read(final_dir.join(SUMS_FILE))
                .map_err(|e| CheckpointError::io("read", &final_dir.join(SUMS_FILE), e))?;
            write_durable(
                &final_dir.join(DONE_FILE),
                format!("{}\n", sha256_bytes(&sums)).as_bytes(),
            )?;
            fsync_dir(&final_dir)?;
            self.retain()?;
        }
        Ok(final_dir)
    }

    /// Rank 0's part of a save: everything up to (not including) the marker. A failure (a
    /// full disk) removes the temporary directory, so the space is free again and nothing is
    /// left for the next run to stumble on.
    fn write_files(&self, p: &Payload) -> Result<(), CheckpointError> {
        let step = p.meta.state.step;
        std::fs::create_dir_all(&self.root)
            .map_err(|e| CheckpointError::io("create", &self.root, e))?;
        let tmp = self.root.join(format!(".tmp-step-{step:08}"));
        remove_dir_if_present(&tmp)?;
        let result = self.write_into(p, &tmp);
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result
    }

    /// [`Self::write_files`] into `tmp`, then the rename to `step-N/`.
    fn write_into(&self, p: &Payload, tmp: &Path) -> Result<(), CheckpointError> {
        let step = p.meta.state.step;
        std::fs::create_dir(tmp).map_err(|e| CheckpointError::io("create", tmp, e))?;

        write_tensors(&tmp.join(MODEL_FILE), p.model)?;
        write_tensors(&tmp.join(OPTIMIZER_FILE), p.optimizer)?;
        let meta = serde_json::to_string_pretty(p.meta).expect("TrainerMeta serialises");
        write_durable(&tmp.join(TRAINER_FILE), meta.as_bytes())?;
        write_durable(&tmp.join(CONFIG_FILE), p.config.to_toml().as_bytes())?;
        for (name, bytes) in p.extra_files {
            write_durable(&tmp.join(name), bytes)?;
        }
        let mut names: Vec<&str> = REQUIRED.to_vec();
        names.extend(p.extra_files.iter().map(|(n, _)| *n));
        names.sort_unstable();
        let mut sums = String::new();
        for name in names {
            sums.push_str(&format!("{}  {name}\n", sha256_file(&tmp.join(name))?));
        }
        write_durable(&tmp.join(SUMS_FILE), sums.as_bytes())?;
        fsync_dir(tmp)?;
        self.fault_point(step, SavePoint::BeforeRename);

        // A directory of the same step (a torn save, or an earlier attempt of a replayed step)
        // is moved out of the way first: rename cannot replace a non-empty directory.
        let final_dir = self.step_dir(step);
        if final_dir.exists() {
            let trash = self.root.join(format!(".trash-step-{step:08}"));
            remove_dir_if_present(&trash)?;
            std::fs::rename(&final_dir, &trash)
                .map_err(|e| CheckpointError::io("move aside", &final_dir, e))?;
            remove_dir_if_present(&trash)?;
        }
        std::fs::rename(tmp, &final_dir)
            .map_err(|e| CheckpointError::io("rename into", &final_dir, e))?;
        Ok(fsync_dir(&self.root)?)
    }

    /// Keeps the `keep_last` newest complete checkpoints; deletes older ones and torn
    /// directories older than the newest complete one.
    fn retain(&self) -> Result<(), CheckpointError> {
        let all = self.list()?;
        let complete: Vec<&(u64, PathBuf)> = all
            .iter()
            .filter(|(_, d)| d.join(DONE_FILE).is_file())
            .collect();
        let Some(&&(newest, _)) = complete.last() else {
            return Ok(());
        };
        let keep_from = complete.len().saturating_sub(self.keep_last);
        let kept: Vec<u64> = complete[keep_from..].iter().map(|(s, _)| *s).collect();
        for (step, dir) in &all {
            if kept.contains(step) || *step > newest {
                continue;
            }
            remove_dir_if_present(dir)?;
        }
        Ok(fsync_dir(&self.root)?)
    }

    /// Kills this process at `at` of the save of `step` when the scripted fault says so.
    fn fault_point(&self, step: u64, at: SavePoint) {
        if self
            .fault
            .as_ref()
            .is_some_and(|f| f.kills_checkpoint(step, at))
        {
            tracing::error!(
                step,
                at = at.as_str(),
                "ITHN_FAULT: killing this process in the middle of a checkpoint"
            );
            fault::kill_self();
        }
    }
}

fn remove_dir_if_present(dir: &Path) -> Result<(), CheckpointError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CheckpointError::io("remove", dir, e)),
    }
}

#[cfg(test)]
#[path = "manager_tests.rs"]
mod tests;
