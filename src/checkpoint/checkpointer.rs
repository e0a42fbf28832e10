//! The checkpoint manager a training loop drives (torchtitan's `CheckpointManager`):
//!
//! ```text
//! checkpointer.load(&mut state)                  --resume auto|never|PATH
//! checkpointer.start()                           signal handlers, save clock
//! per step:  checkpointer.maybe_save(&state, …)  schedule, --max-steps, signals → Stop
//! per validation: checkpointer.observe(…)        the one notion of "best": RUN/best/
//! at the end: save_final_model, save_before_test, best_weights → the test pass
//! ```
//!
//! It owns when to save (the [`SaveSchedule`]: steps, minutes, epoch ends, a signal any rank
//! received — all decided identically on every rank), the best model, retention (through the
//! [`CheckpointManager`] store), and what happens after a signal checkpoint (SLURM requeue, the
//! stop). What is saved comes from the caller through [`Stateful`], so this module never
//! imports the trainer. Every method that may save is collective: call it on every rank.

use std::path::{Path, PathBuf};

use tch::Tensor;

use super::manager::{validate, Checkpoint, CheckpointManager, Payload, ResumeArgs};
use super::meta::{config_hash, SaveReason, TrainState, TrainerMeta, FORMAT_VERSION};
use super::{CheckpointError, SaveSchedule};
use crate::config::Config;
use crate::dist::World;
use crate::lifecycle::{requeue_slurm_job, signal_name, Fault, SignalFlag};
use crate::run_dir::RunDir;

/// What a checkpoint holds of a run, as the run that owns it sees it (torchtitan's `Stateful`).
pub trait Stateful {
    /// Where the run stands (saved as `trainer.json`'s `state`).
    fn progress(&self) -> &TrainState;
    fn progress_mut(&mut self) -> &mut TrainState;
    /// The model state_dict with the reference names (`model.safetensors`).
    fn model_state(&self) -> Vec<(String, Tensor)>;
    /// The optimizer state (`optimizer.safetensors`), whole whatever the world size.
    /// Collective: every rank calls it as it saves (a sharded optimizer gathers its state).
    fn optimizer_state(&self) -> Result<Vec<(String, Tensor)>, CheckpointError>;
    /// Free-form additions to `trainer.json` (`extra`), none by default.
    fn extra(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }
    /// Replaces weights, optimizer state and progress with the checkpoint's. Errors name the
    /// checkpoint directory ([`CheckpointError::Restore`]).
    fn load_checkpoint(&mut self, ck: &Checkpoint) -> Result<(), CheckpointError>;
    /// Writes a model directory (weights plus what a reader of the model needs) into `dir`,
    /// which exists. Rank 0 only.
    fn write_model_dir(&self, dir: &Path, cfg: &Config) -> Result<(), CheckpointError>;
}

/// What the loop does after [`Checkpointer::maybe_save`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepAction {
    Continue,
    /// A stop signal reached some rank: its checkpoint is written; leave the loop (exit code 3).
    Stop {
        signal: i32,
    },
}

/// The checkpoint manager of one run (see the module documentation).
pub struct Checkpointer<'w> {
    world: &'w World,
    cfg: Config,
    config_hash: String,
    run: RunDir,
    store: CheckpointManager,
    schedule: SaveSchedule,
    signals: SignalFlag,
    resume: ResumeArgs,
    max_steps: Option<u64>,
    extra_files: Vec<(String, Vec<u8>)>,
}

impl<'w> Checkpointer<'w> {
    /// The manager of `run`'s checkpoints. `max_steps` is the run's `--max-steps` (a checkpoint is
    /// written there so that a longer run can continue it); `fault` a scripted crash-test fault.
    pub fn new(
        world: &'w World,
        cfg: &Config,
        run: &RunDir,
        resume: &ResumeArgs,
        max_steps: Option<u64>,
        fault: Option<Fault>,
    ) -> Checkpointer<'w> {
        Checkpointer {
            world,
            cfg: cfg.clone(),
            config_hash: config_hash(cfg),
            run: run.clone(),
            store: CheckpointManager::new(run.root(), cfg.checkpoint.keep_last).with_fault(fault),
            schedule: SaveSchedule::new(&cfg.checkpoint),
            signals: SignalFlag::inert(),
            resume: resume.clone(),
            max_steps,
            extra_files: Vec::new(),
        }
    }

    /// Adds a file to every checkpoint (e.g. `vocab.json`, so that `generate` reads the directory).
    pub fn with_extra_file(mut self, name: &str, bytes: Vec<u8>) -> Checkpointer<'w> {
        self.extra_files.push((name.to_string(), bytes));
        self
    }

    /// Chooses the checkpoint for `--resume`, checks its configuration against the run's and
    /// loads it into `target`. Returns the step resumed from (None = fresh start). Every rank
    /// reads the same files.
    pub fn load(&mut self, target: &mut dyn Stateful) -> Result<Option<u64>, CheckpointError> {
        let Some(ck) = self.store.resolve(&self.resume.mode()?)? else {
            return Ok(None);
        };
        for key in ck.check_config(&self.cfg, self.resume.allow_config_change)? {
            tracing::warn!("resuming with a changed key: {key}");
        }
        // `data.prepared` may change on resume, the vocabulary may not (issue 14).
        crate::model::contract::check_resume_on_data(&ck.dir, &self.cfg).map_err(|e| {
            CheckpointError::Restore {
                dir: ck.dir.clone(),
                source: crate::logging::error_message(&e).into(),
            }
        })?;
        target.load_checkpoint(&ck)?;
        tracing::info!(dir = %ck.dir.display(), step = ck.step(), from_world = ck.meta.world_size, "resuming");
        Ok(Some(ck.step()))
    }

    /// Training begins: installs the stop-signal handlers and starts the save clock. Until
    /// then a signal ends the process as usual (there is nothing to save yet).
    pub fn start(&mut self) -> std::io::Result<()> {
        self.signals = SignalFlag::install()?;
        self.schedule.saved();
        Ok(())
    }

    /// Collective, after every optimizer step: saves when the schedule, `--max-steps` or a
    /// signal says so (one small all-reduce), and asks the loop to stop after a signal
    /// checkpoint. `epoch_end`: the step consumed the epoch's last batch.
    pub fn maybe_save(
        &mut self,
        target: &dyn Stateful,
        epoch_end: bool,
    ) -> Result<StepAction, CheckpointError> {
        let step = target.progress().step;
        let decision =
            self.schedule
                .after_step(self.world, step, epoch_end, self.signals.pending());
        let last = self.max_steps.is_some_and(|m| step >= m);
        if let Some(reason) = decision.save.or(last.then_some(SaveReason::Final)) {
            self.save(target, reason)?;
        }
        let Some(signal) = decision.signal else {
            return Ok(StepAction::Continue);
        };
        tracing::warn!(
            step,
            "{} received: checkpoint written, stopping",
            signal_name(signal)
        );
        self.requeue();
        Ok(StepAction::Stop { signal })
    }

    /// Whether this process received a stop signal (a local check, for phases where the ranks
    /// are not in step, e.g. between evaluation batches).
    pub fn stop_requested(&self) -> bool {
        self.signals.pending().is_some()
    }

    /// Collective, after a validation: `value` is the monitored score (rank 0's; None on the
    /// other ranks). When it beats the best so far — rank 0 decides, everyone follows — the
    /// progress records it and the model goes to `RUN/best/`; otherwise the early-stop counter
    /// grows. Returns whether it improved.
    pub fn observe(
        &mut self,
        target: &mut dyn Stateful,
        value: Option<f64>,
    ) -> Result<bool, CheckpointError> {
        let better = match (value, target.progress().best_metric) {
            (Some(v), None) => v.is_finite(),
            (Some(v), Some(best)) => v > best,
            (None, _) => false,
        };
        let mut flag = [u64::from(better)];
        self.world.all_reduce_max_u64(&mut flag);
        let state = target.progress_mut();
        if flag[0] == 0 {
            state.epochs_without_improvement += 1;
            return Ok(false);
        }
        state.best_metric = value.or(state.best_metric);
        state.best_epoch = Some(state.epoch);
        state.epochs_without_improvement = 0;
        self.write_model(target, &self.run.best())?;
        Ok(true)
    }

    /// The weights of `RUN/best/`, when a validation marked one in `state`.
    pub fn best_weights(&self, state: &TrainState) -> Option<PathBuf> {
        let path = self.run.best().join(super::manager::MODEL_FILE);
        (state.best_epoch.is_some() && path.is_file()).then_some(path)
    }

    /// Collective: writes the model at the end of training to `RUN/final/`.
    pub fn save_final_model(&self, target: &dyn Stateful) -> Result<(), CheckpointError> {
        self.write_model(target, &self.run.final_model())
    }

    /// Collective: training is over and the test pass follows; makes the final state
    /// resumable, so that a stop during the test pass loses nothing.
    pub fn save_before_test(&mut self, target: &dyn Stateful) -> Result<(), CheckpointError> {
        self.ensure_saved(target, SaveReason::Final)
    }

    /// Collective: an evaluation pass was interrupted by a stop request the ranks agreed on.
    /// Makes the current state resumable, requeues when asked, and returns the signal.
    pub fn save_on_interrupt(&mut self, target: &dyn Stateful) -> Result<i32, CheckpointError> {
        self.ensure_saved(target, SaveReason::Signal)?;
        let signal = self.signals.pending().unwrap_or(libc::SIGTERM);
        tracing::warn!(
            step = target.progress().step,
            "{} received during evaluation: state saved, stopping",
            signal_name(signal)
        );
        self.requeue();
        Ok(signal)
    }

    /// Saves a checkpoint of the current step unless a valid one exists already (e.g. the
    /// epoch-end checkpoint written just before validation, or the one this run resumed from).
    /// Rank 0 decides from the files and everyone follows, since saving is collective.
    fn ensure_saved(
        &mut self,
        target: &dyn Stateful,
        reason: SaveReason,
    ) -> Result<(), CheckpointError> {
        let step = target.progress().step;
        let exists = self.world.is_root() && validate(&self.store.step_dir(step)).is_ok();
        let mut flag = [u64::from(exists)];
        self.world.all_reduce_max_u64(&mut flag);
        if flag[0] == 1 {
            return Ok(());
        }
        self.save(target, reason)
    }

    /// Writes a checkpoint of the current step (collective) and restarts the save clock.
    fn save(&mut self, target: &dyn Stateful, reason: SaveReason) -> Result<(), CheckpointError> {
        let (model, optimizer) = (target.model_state(), target.optimizer_state()?);
        let meta = TrainerMeta {
            format_version: FORMAT_VERSION,
            reason,
            world_size: self.world.size,
            config_hash: self.config_hash.clone(),
            state: target.progress().clone(),
            extra: target.extra(),
        };
        let extra: Vec<(&str, &[u8])> = self
            .extra_files
            .iter()
            .map(|(name, bytes)| (name.as_str(), bytes.as_slice()))
            .collect();
        let payload = Payload {
            model: &model,
            optimizer: &optimizer,
            meta: &meta,
            config: &self.cfg,
            extra_files: &extra,
        };
        let dir = self.store.save(self.world, &payload)?;
        self.schedule.saved();
        tracing::info!(step = meta.state.step, ?reason, dir = %dir.display(), "checkpoint saved");
        Ok(())
    }

    /// Writes a model directory (rank 0), then every rank waits for it.
    fn write_model(&self, target: &dyn Stateful, dir: &Path) -> Result<(), CheckpointError> {
        // Built beside the old directory and swapped in whole with its SHA256SUMS: a failure
        // (a full disk) leaves the previous best/final as it was and no staging directory.
        let written = if self.world.is_root() {
            (|| {
                let staged = crate::fsutil::StagedDir::new(dir)
                    .map_err(|e| CheckpointError::io("create", dir, e))?;
                target.write_model_dir(staged.path(), &self.cfg)?;
                staged
                    .commit()
                    .map_err(|e| CheckpointError::io("write", dir, e))
            })()
        } else {
            Ok(())
        };
        let mut failed = [u64::from(written.is_err())];
        self.world.all_reduce_max_u64(&mut failed);
        written?;
        if failed[0] != 0 {
            return Err(CheckpointError::io(
                "write",
                dir,
                std::io::Error::other("rank 0 failed to write it (see its log)"),
            ));
        }
        Ok(())
    }

    /// After a signal checkpoint: `--requeue-on-signal` requeues the SLURM job (rank 0).
    fn requeue(&self) {
        if self.resume.requeue_on_signal && self.world.is_root() {
            match requeue_slurm_job() {
                Ok(job) => tracing::info!("requeued SLURM job {job}"),
                Err(e) => tracing::error!("{e}"),
            }
        }
    }
}
