//! Checkpoints and preemption inside `ithn-dist train`: the trainer's after-step hook and the
//! resume of a [`Trainer`] from a checkpoint.
//!
//! After every optimizer step the hook asks the [`SaveSchedule`] (one small all-reduce that
//! also carries the signal flag), saves when due, and stops the loop after a signal checkpoint.
//! It also feeds the watchdog, which is paused at epoch ends because validation and test
//! decoding run outside the step loop and may legitimately take longer than `dist.timeout_s`.
//! The trainer's whole [`TrainerState`] goes into `trainer.json` (`extra.trainer_state`), so a
//! resumed run continues with the same epoch, loader cursor, best score and early-stop counter.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::manager::{Checkpoint, CheckpointManager, Payload, ResumeArgs, MODEL_FILE};
use super::meta::{config_hash, LoaderCursor, SaveReason, TrainerMeta, FORMAT_VERSION};
use super::{CheckpointError, SaveSchedule};
use crate::config::Config;
use crate::dist::World;
use crate::train::signals::{self, SignalFlag, Watchdog, EXIT_OK, EXIT_PREEMPTED};
use crate::train::trainer::{HookAction, HookCtx, StepHook, Trainer, TrainerState};

const STATE_KEY: &str = "trainer_state";

/// Errors of resuming a trainer from a checkpoint; each names the checkpoint directory.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{dir}: {message}")]
    Restore { dir: PathBuf, message: String },
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
}

/// The after-step hook of a training run.
pub struct TrainCheckpointing {
    mgr: CheckpointManager,
    schedule: SaveSchedule,
    signals: SignalFlag,
    watchdog: Watchdog,
    requeue: bool,
    max_steps: Option<u64>,
    vocab_json: Option<Vec<u8>>,
    stopped_by: Option<i32>,
}

impl TrainCheckpointing {
    /// Installs the signal handlers and starts the (paused) watchdog. `max_steps` is the run's
    /// `--max-steps` (a checkpoint is written there so that a longer run can continue it).
    pub fn new(
        cfg: &Config,
        world: &World,
        run_dir: &Path,
        args: &ResumeArgs,
        max_steps: Option<u64>,
    ) -> Result<TrainCheckpointing, ResumeError> {
        let vocab = Path::new(&cfg.data.prepared).join("vocab.json");
        Ok(TrainCheckpointing {
            mgr: CheckpointManager::new(run_dir, cfg.checkpoint.keep_last),
            schedule: SaveSchedule::new(&cfg.checkpoint),
            signals: SignalFlag::install().map_err(ResumeError::Signals)?,
            watchdog: Watchdog::start(Duration::from_secs_f64(cfg.dist.timeout_s), world.rank),
            requeue: args.requeue_on_signal,
            max_steps,
            vocab_json: std::fs::read(vocab).ok(),
            stopped_by: None,
        })
    }

    /// [`EXIT_PREEMPTED`] after a signal checkpoint, else [`EXIT_OK`].
    pub fn exit_code(&self) -> i32 {
        if self.stopped_by.is_some() {
            EXIT_PREEMPTED
        } else {
            EXIT_OK
        }
    }

    fn save(&self, ctx: &HookCtx<'_>, reason: SaveReason) -> Result<PathBuf, CheckpointError> {
        let model = ctx.model.registry().state_dict();
        let optimizer = ctx.optimizer.state_tensors();
        let meta = trainer_meta(ctx.config, ctx.world, ctx.state, reason);
        let extra: Vec<(&str, &[u8])> = match &self.vocab_json {
            Some(v) => vec![("vocab.json", v.as_slice())],
            None => Vec::new(),
        };
        let payload = Payload {
            model: &model,
            optimizer: &optimizer,
            meta: &meta,
            config: ctx.config,
            extra_files: &extra,
        };
        self.mgr.save(ctx.world, &payload)
    }
}

impl StepHook for TrainCheckpointing {
    fn after_step(&mut self, ctx: &HookCtx<'_>) -> Result<HookAction, String> {
        let step = ctx.state.step;
        let epoch_end = ctx.state.cursor.batches_consumed >= ctx.epoch_batches;
        let decision = self
            .schedule
            .after_step(ctx.world, step, epoch_end, self.signals.pending());
        let last = self.max_steps.is_some_and(|m| step >= m);
        if let Some(reason) = decision.save.or(last.then_some(SaveReason::Final)) {
            self.save_now(ctx, reason)?;
        }
        if epoch_end {
            self.watchdog.pause(); // validation follows, outside the step loop
        } else {
            self.watchdog.beat();
        }
        let Some(sig) = decision.signal else {
            return Ok(HookAction::Continue);
        };
        tracing::warn!(
            step,
            "{} received: checkpoint written, stopping",
            signals::signal_name(sig)
        );
        self.stop(ctx, sig);
        Ok(HookAction::Stop)
    }

    fn stop_requested(&self) -> bool {
        self.signals.pending().is_some()
    }

    fn before_test(&mut self, ctx: &HookCtx<'_>) -> Result<(), String> {
        self.ensure_saved(ctx, SaveReason::Final)
    }

    fn on_interrupt(&mut self, ctx: &HookCtx<'_>) -> Result<(), String> {
        self.ensure_saved(ctx, SaveReason::Signal)?;
        let sig = self.signals.pending().unwrap_or(libc::SIGTERM);
        tracing::warn!(
            step = ctx.state.step,
            "{} received during evaluation: state saved, stopping",
            signals::signal_name(sig)
        );
        self.stop(ctx, sig);
        Ok(())
    }
}

impl TrainCheckpointing {
    /// Saves a checkpoint of the current step unless a valid one exists already (e.g. the
    /// epoch-end checkpoint written just before validation, or the one this run resumed from).
    /// Rank 0 decides from the files and everyone follows, since saving is collective.
    fn ensure_saved(&mut self, ctx: &HookCtx<'_>, reason: SaveReason) -> Result<(), String> {
        let step = ctx.state.step;
        let exists =
            ctx.world.is_root() && super::manager::validate(&self.mgr.step_dir(step)).is_ok();
        let mut flag = vec![u64::from(exists)];
        ctx.world.all_reduce_max_u64(&mut flag);
        if flag[0] == 1 {
            return Ok(());
        }
        self.save_now(ctx, reason)
    }

    /// Writes a checkpoint of the current step (collective) and restarts the save cadence.
    fn save_now(&mut self, ctx: &HookCtx<'_>, reason: SaveReason) -> Result<(), String> {
        let dir = self.save(ctx, reason).map_err(|e| e.to_string())?;
        self.schedule.saved();
        tracing::info!(step = ctx.state.step, ?reason, dir = %dir.display(), "checkpoint saved");
        Ok(())
    }

    /// Requeues the SLURM job when asked (rank 0) and records why the run stops.
    fn stop(&mut self, ctx: &HookCtx<'_>, sig: i32) {
        if self.requeue && ctx.world.is_root() {
            match signals::requeue_slurm_job() {
                Ok(job) => tracing::info!("requeued SLURM job {job}"),
                Err(e) => tracing::error!("{e}"),
            }
        }
        self.stopped_by = Some(sig);
    }
}

/// `trainer.json` for the trainer's state.
pub fn trainer_meta(
    cfg: &Config,
    world: &World,
    s: &TrainerState,
    reason: SaveReason,
) -> TrainerMeta {
    let mut extra = serde_json::Map::new();
    extra.insert(
        STATE_KEY.into(),
        serde_json::to_value(s).expect("TrainerState serialises"),
    );
    TrainerMeta {
        format_version: FORMAT_VERSION,
        step: s.step,
        epoch: s.epoch,
        cursor: LoaderCursor {
            epoch: s.cursor.epoch,
            batches_consumed: s.cursor.batches_consumed,
        },
        lambda: cfg.lambda(s.epoch as usize),
        best_metric: s.best_metric,
        best_step: None,
        early_stop_counter: s.epochs_without_improvement as u64,
        lr: s.lrs.clone(),
        seed: cfg.train.seed,
        world_size: world.size,
        config_hash: config_hash(cfg),
        reason,
        extra,
    }
}

/// Chooses the checkpoint for `args` (`--resume auto|never|PATH`), checks its configuration
/// and loads weights, optimizer state and trainer state into `trainer`. Returns the step
/// resumed from (None = fresh start). Every rank reads the same files.
pub fn resume_trainer(
    trainer: &mut Trainer<'_>,
    args: &ResumeArgs,
) -> Result<Option<u64>, ResumeError> {
    let mgr = CheckpointManager::new(&trainer.run_dir, trainer.cfg.checkpoint.keep_last);
    let Some(ck) = mgr.resolve(&args.mode()?)? else {
        return Ok(None);
    };
    for key in ck.check_config(&trainer.cfg, args.allow_config_change)? {
        tracing::warn!("resuming with a changed key: {key}");
    }
    // `data.prepared` may change on resume, the vocabulary may not (issue 14).
    crate::data::contract::check_resume_on_data(&ck.dir, &trainer.cfg).map_err(|e| {
        ResumeError::Restore {
            dir: ck.dir.clone(),
            message: crate::cli::error_message(&e),
        }
    })?;
    restore(trainer, &ck)?;
    trainer
        .rewind_log(ck.meta.step)
        .map_err(|e| ResumeError::Restore {
            dir: ck.dir.clone(),
            message: e.to_string(),
        })?;
    tracing::info!(dir = %ck.dir.display(), step = ck.meta.step, from_world = ck.meta.world_size, "resuming");
    Ok(Some(ck.meta.step))
}

fn restore(trainer: &mut Trainer<'_>, ck: &Checkpoint) -> Result<(), ResumeError> {
    let fail = |message: String| ResumeError::Restore {
        dir: ck.dir.clone(),
        message,
    };
    let state: TrainerState = ck
        .meta
        .extra
        .get(STATE_KEY)
        .cloned()
        .ok_or_else(|| {
            fail(format!(
                "trainer.json has no extra.{STATE_KEY} (not written by `train`)"
            ))
        })
        .and_then(|v| {
            serde_json::from_value(v).map_err(|e| fail(format!("extra.{STATE_KEY}: {e}")))
        })?;
    trainer
        .model
        .load_safetensors(&ck.dir.join(MODEL_FILE))
        .map_err(|e| fail(e.to_string()))?;
    let optimizer: HashMap<String, tch::Tensor> = ck.optimizer()?.into_iter().collect();
    trainer
        .optimizer
        .load_state_tensors(&optimizer)
        .map_err(|e| fail(e.to_string()))?;
    trainer.optimizer.set_lrs(&state.lrs);
    trainer.state = state;
    Ok(())
}
