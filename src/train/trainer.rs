//! The training loop, torchtitan's recipe:
//!
//! ```text
//! checkpointer.load(&mut learner)            (--resume: weights, optimizer, progress)
//! per epoch: per optimizer step {
//!     train_step                             (THE step: micro-batches, all-reduce, Adam)
//!     record; checkpointer.maybe_save        (schedule, --max-steps, signals → stop)
//! }   validate every eval.every_epochs       (checkpointer.observe → RUN/best/; early stop)
//! RUN/final/, then the test split with the best model
//! ```
//!
//! What it guarantees:
//! * every rank starts from rank 0's weights (broadcast of the whole state_dict), and every
//!   `dist.checksum_every` steps the ranks compare a parameter checksum — a divergence stops the
//!   run with an error naming the step and every rank's checksum;
//! * one optimizer step = up to `train.accumulation_steps` loader micro-batches of
//!   `batch_size / k` global samples (fewer at an epoch's end), taken by [`OptimStep::step`]
//!   (the exact global-batch objective over any split of the batch on the ranks, gradients
//!   all-reduced in buckets, Adam);
//! * λ(epoch) and StepLR advance per epoch; validation runs every `eval.every_epochs` epochs,
//!   the best model on `train.monitor_metric` is written to `RUN/best/`, early stopping after
//!   `train.early_stop` epochs without improvement (0 = never), the final model to `RUN/final/`,
//!   then the test split is scored with the best;
//! * `RUN/metrics.jsonl` gets one JSON object per line (`kind` = train / val / test) from rank 0;
//! * a stop signal (SIGUSR1/SIGTERM/SIGINT) ends the run at the next step boundary — or in the
//!   middle of an evaluation pass — after a checkpoint: [`Outcome::Preempted`], exit code 3.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tch::{Device, Tensor};

use super::metrics_log::{eval_record, train_record, MetricsLog};
use super::optim_step::{OptimStep, StepError};
use super::replicas::{broadcast_weights, check_in_sync};
use super::schedule::StepLr;
use super::step::{LossTerms, Micro};
use crate::checkpoint::manager::MODEL_FILE;
use crate::checkpoint::{
    Checkpoint, CheckpointError, Checkpointer, ResumeArgs, Stateful, StepAction, TrainState,
};
use crate::config::Config;
use crate::data::loader::Loader;
use crate::data::sampler::Cursor;
use crate::dataset::Split;
use crate::dist::{collectives, Collectives, DistError, World};
use crate::eval::evaluate::{evaluate_split, write_predictions, DecodeOpts, EvalError};
use crate::eval::metrics::Scores;
use crate::lifecycle::{Fault, Watchdog, EXIT_OK, EXIT_PREEMPTED};
use crate::model::ithn::lambda_for_epoch as lambda;
use crate::model::weights::{VocabInfo, WEIGHTS_FILE};
use crate::model::{ModelCheckpoint, ModelError, R2GenCmn};
use crate::run_dir::RunDir;

/// Errors of a training run, naming the file, step or rank involved.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Dist(#[from] DistError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Eval(#[from] EvalError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("training data: {0}")]
    Data(#[from] crate::data::loader::LoaderError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Step(#[from] StepError),
    #[error("training data: {0}")]
    Split(#[from] crate::data::sampler::SamplerError),
    #[error("optimizer: {0}")]
    Optim(#[from] super::optim::OptimError),
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
}

/// How a run ended.
#[derive(Debug)]
pub enum Outcome {
    /// All epochs, early stop or `--max-steps`; the test scores (rank 0).
    Finished(Option<Scores>),
    /// A stop signal: the state is checkpointed, `--resume auto` continues.
    Preempted { signal: i32 },
}

impl Outcome {
    /// [`EXIT_OK`], or [`EXIT_PREEMPTED`] after a signal checkpoint.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Finished(_) => EXIT_OK,
            Outcome::Preempted { .. } => EXIT_PREEMPTED,
        }
    }
}

/// How the run is driven from outside its configuration.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Stop after this many optimizer steps in total (a checkpoint is written there).
    pub max_steps: Option<u64>,
    /// `--resume`, `--allow-config-change`, `--requeue-on-signal`.
    pub resume: ResumeArgs,
    /// A scripted crash-test fault (`ITHN_FAULT`).
    pub fault: Option<Fault>,
}

/// What a checkpoint holds of a training run: model, optimizer and progress, plus the
/// vocabulary a model directory carries, and the collectives the step and the (sharded)
/// optimizer's state gather run on.
struct Learner<'w> {
    model: R2GenCmn,
    optimizer: OptimStep,
    state: TrainState,
    vocab: VocabInfo,
    coll: Box<dyn Collectives + 'w>,
}

impl Stateful for Learner<'_> {
    fn progress(&self) -> &TrainState {
        &self.state
    }

    fn progress_mut(&mut self) -> &mut TrainState {
        &mut self.state
    }

    fn model_state(&self) -> Vec<(String, Tensor)> {
        self.model.registry().state_dict()
    }

    fn optimizer_state(&self) -> Result<Vec<(String, Tensor)>, CheckpointError> {
        Ok(self.optimizer.state_tensors(self.coll.as_ref())?)
    }

    fn load_checkpoint(&mut self, ck: &Checkpoint) -> Result<(), CheckpointError> {
        let fail = |source: Box<dyn std::error::Error + Send + Sync>| CheckpointError::Restore {
            dir: ck.dir.clone(),
            source,
        };
        let state = ck.meta.state.clone();
        self.model
            .load_safetensors(&ck.dir.join(MODEL_FILE))
            .map_err(|e| fail(e.into()))?;
        let optimizer: HashMap<String, Tensor> = ck.optimizer()?.into_iter().collect();
        self.optimizer
            .load_state_tensors(&optimizer)
            .map_err(|e| fail(e.into()))?;
        self.optimizer.set_lrs(&state.lrs);
        self.state = state;
        Ok(())
    }

    fn write_model_dir(&self, dir: &Path, cfg: &Config) -> Result<(), CheckpointError> {
        self.model
            .registry()
            .save_safetensors(&dir.join(WEIGHTS_FILE))?;
        ModelCheckpoint::write_meta(dir, cfg, &self.vocab)?;
        Ok(())
    }
}

/// What the loop does after an epoch's steps.
enum EpochEnd {
    Completed,
    MaxSteps,
    Preempted { signal: i32 },
}

/// The result of decoding and scoring a split.
enum Evaluated {
    /// The scores (rank 0; None elsewhere).
    Scored(Option<Scores>),
    /// A stop request the ranks agreed on interrupted the pass.
    Interrupted,
}

/// What a validation decided.
enum Validated {
    Continue,
    EarlyStop,
    Interrupted,
}

/// One training run in a run directory.
pub struct Trainer<'w> {
    cfg: Config,
    world: &'w World,
    run: RunDir,
    learner: Learner<'w>,
    checkpointer: Checkpointer<'w>,
    train: Loader,
    val: Loader,
    test: Loader,
    log: MetricsLog,
    max_steps: Option<u64>,
    fault: Option<Fault>,
}

impl<'w> Trainer<'w> {
    /// Builds model, optimizer, loaders and the checkpoint manager; rank 0's weights become
    /// everyone's. Writes `RUN/config.toml` (rank 0).
    pub fn new(
        cfg: Config,
        world: &'w World,
        run_dir: &Path,
        opts: TrainOptions,
    ) -> Result<Self, TrainError> {
        // Before any work: full steps must split into equal local batches.
        let t = &cfg.train;
        crate::data::sampler::check_world(t.batch_size, t.accumulation_steps, world.size)?;
        let run = RunDir::new(run_dir);
        run.create().map_err(|source| TrainError::Io {
            path: run_dir.to_path_buf(),
            source,
        })?;
        let device = if tch::Cuda::is_available() {
            Device::Cuda(world.local_rank)
        } else {
            Device::Cpu
        };
        let vocab_path = cfg
            .data
            .prepared
            .join(crate::data::prepare::manifest::VOCAB_FILE);
        let vocab = VocabInfo::load(&vocab_path)?;
        // Rank 0's weights (incl. model.visual_weights, the ImageNet ResNet) become everyone's below.
        let model = R2GenCmn::for_training(&cfg, vocab.logit_dim, device)?;
        if cfg.model.freeze_visual_extractor && !cfg.data.augment && cfg.train.feature_cache_mb > 0
        {
            model.enable_feature_cache(cfg.train.feature_cache_mb << 20);
            tracing::info!(
                bound_mb = cfg.train.feature_cache_mb,
                "frozen visual extractor, no augmentation: features cached by image"
            );
        }
        let coll = collectives::select(world, cfg.dist.backend, device, cfg.dist.timeout_s)?;
        broadcast_weights(&model, coll.as_ref())?;
        let state = TrainState::fresh(&cfg);
        let optimizer = OptimStep::new(&model, &cfg, coll.as_ref())?;
        let (train, val, test) = loaders(&cfg, world)?;
        if world.is_root() {
            crate::model::weights::write_bytes_atomic(&run.config(), cfg.to_toml().as_bytes())?;
        }
        let log = MetricsLog::open(&run, world.is_root())?;
        let mut checkpointer = Checkpointer::new(
            world,
            &cfg,
            &run,
            &opts.resume,
            opts.max_steps,
            opts.fault.clone(),
        );
        // Checkpoints carry the vocabulary so that `generate`/`export` read them (when readable).
        if let Ok(bytes) = std::fs::read(&vocab_path) {
            checkpointer = checkpointer.with_extra_file(crate::model::weights::VOCAB_FILE, bytes);
        }
        Ok(Trainer {
            learner: Learner {
                model,
                optimizer,
                state,
                vocab,
                coll,
            },
            cfg,
            world,
            run,
            checkpointer,
            train,
            val,
            test,
            log,
            max_steps: opts.max_steps,
            fault: opts.fault,
        })
    }

    /// Optimizer steps taken so far (after [`Self::train`]: the run's last step).
    pub fn step(&self) -> u64 {
        self.learner.state.step
    }

    /// The whole run: resume, train, validate, test with the best. Collective.
    pub fn train(&mut self) -> Result<Outcome, TrainError> {
        if let Some(step) = self.checkpointer.load(&mut self.learner)? {
            self.log.rewind(step)?;
        }
        self.checkpointer.start().map_err(TrainError::Signals)?;
        let watchdog = Watchdog::start(
            Duration::from_secs_f64(self.cfg.dist.timeout_s),
            self.world.rank,
        );
        let t = &self.cfg.train;
        let mut schedule = StepLr::replay(
            t.initial_lrs(),
            t.lr_step_size,
            t.lr_gamma,
            (self.learner.state.epoch - 1) as usize,
        );
        while self.learner.state.epoch <= self.cfg.train.epochs as u64 {
            self.learner.state.lrs = schedule.lrs().to_vec();
            self.learner.optimizer.set_lrs(&self.learner.state.lrs);
            match self.train_epoch(&watchdog)? {
                EpochEnd::Preempted { signal } => return Ok(Outcome::Preempted { signal }),
                EpochEnd::MaxSteps => break,
                EpochEnd::Completed => {}
            }
            let epoch = self.learner.state.epoch;
            let validated = if epoch.is_multiple_of(self.cfg.eval.every_epochs as u64) {
                self.validate()?
            } else {
                Validated::Continue
            };
            if let Validated::Interrupted = validated {
                return self.interrupted();
            }
            schedule.step();
            self.learner.state.epoch += 1;
            self.learner.state.cursor = Cursor {
                epoch: self.learner.state.epoch,
                batches_consumed: 0,
            };
            if let Validated::EarlyStop = validated {
                tracing::info!(epoch = self.learner.state.epoch - 1, "early stopping");
                break;
            }
        }
        self.finish()
    }

    /// The optimizer steps of one epoch, from the loader cursor on.
    fn train_epoch(&mut self, watchdog: &Watchdog) -> Result<EpochEnd, TrainError> {
        let lam = lambda(self.cfg.ithn.alpha, self.learner.state.epoch as usize);
        let bar = self.progress_bar();
        let mut t0 = Instant::now();
        let k = self.cfg.train.accumulation_steps;
        let mut batches = self.train.iter_from(self.learner.state.cursor);
        loop {
            // One optimizer step = the next k loader batches, fewer at the epoch's end.
            let mut micros = Vec::with_capacity(k);
            for batch in batches.by_ref().take(k) {
                let (seed, step) = (self.cfg.train.seed, self.learner.state.step);
                let device = self.learner.model.device();
                micros.push(Micro::from_loader(&batch?, device, lam, seed, step));
            }
            if micros.is_empty() {
                break;
            }
            let terms = self.train_step(&micros)?;
            let secs = t0.elapsed().as_secs_f64();
            t0 = Instant::now();
            self.record_step(&terms, lam, secs, micros.len() as u64, bar.as_ref())?;
            let epoch_batches = self.train.epoch_batches() as u64;
            let epoch_end = self.learner.state.cursor.batches_consumed >= epoch_batches;
            let action = self.checkpointer.maybe_save(&self.learner, epoch_end)?;
            if epoch_end {
                watchdog.disarm(); // validation follows, outside the step loop
            } else {
                watchdog.arm("step");
            }
            if let StepAction::Stop { signal } = action {
                return Ok(EpochEnd::Preempted { signal });
            }
            if self.max_steps.is_some_and(|m| self.learner.state.step >= m) {
                return Ok(EpochEnd::MaxSteps);
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        Ok(EpochEnd::Completed)
    }

    /// THE optimizer step ([`OptimStep::step`]) over this rank's part of the step's
    /// micro-batches; advances the step counter and the data cursor. A scripted
    /// `signal-at-step` fault fires as the step starts.
    fn train_step(&mut self, micros: &[Micro]) -> Result<LossTerms, TrainError> {
        let step = self.learner.state.step + 1;
        if let Some(f) = &self.fault {
            if f.signals_at_step(step) && self.world.is_root() {
                tracing::warn!(step, "ITHN_FAULT: SIGTERM to this rank as the step starts");
                crate::lifecycle::raise_sigterm();
            }
        }
        let learner = &mut self.learner;
        let terms = learner
            .optimizer
            .step(&learner.model, micros, learner.coll.as_ref(), step)?;
        learner.state.cursor.batches_consumed += micros.len() as u64;
        learner.state.step = step;
        Ok(terms)
    }

    /// After a step: the metrics line, the periodic log line, the progress bar and the
    /// replicas' checksum.
    fn record_step(
        &mut self,
        terms: &LossTerms,
        lam: f64,
        secs: f64,
        batches: u64,
        bar: Option<&indicatif::ProgressBar>,
    ) -> Result<(), TrainError> {
        let state = &self.learner.state;
        self.log.write(&train_record(state, terms, lam, secs))?;
        if state.step.is_multiple_of(self.cfg.log.every_steps as u64) {
            tracing::info!(
                step = state.step,
                epoch = state.epoch,
                loss = terms.loss,
                lm = terms.lm,
                l_cp = terms.l_cp,
                l_cs = terms.l_cs,
                lambda = lam,
                "train"
            );
        }
        if let Some(b) = bar {
            b.inc(batches);
            b.set_message(format!(
                "loss {}  λ {}",
                crate::logging::short_float(terms.loss, crate::logging::SIG_DIGITS),
                crate::logging::short_float(lam, 3)
            ));
        }
        let every = self.cfg.dist.checksum_every as u64;
        if every > 0 && state.step.is_multiple_of(every) {
            check_in_sync(self.world, &self.learner.model, state.step)?;
        }
        Ok(())
    }

    /// Rank 0's bar of this epoch's loader batches (epoch, loss, λ, rate, ETA), starting at
    /// the cursor on a resume; none off a terminal or with `log.progress = false`.
    fn progress_bar(&self) -> Option<indicatif::ProgressBar> {
        if !self.world.is_root() || !self.cfg.log.progress || !crate::logging::bars_visible() {
            return None;
        }
        let b = crate::logging::bar(
            self.train.epoch_batches() as u64,
            "{prefix} [{bar:30}] {pos}/{len} batches  {msg}  {per_sec}  eta {eta}",
            true,
        );
        let state = &self.learner.state;
        b.set_prefix(format!("epoch {}/{}", state.epoch, self.cfg.train.epochs));
        b.set_position(state.cursor.batches_consumed);
        b.reset_eta();
        Some(b)
    }

    /// Scores the val split; the checkpointer keeps the best model; decides early stopping.
    fn validate(&mut self) -> Result<Validated, TrainError> {
        let scores = match self.evaluate(Split::Val)? {
            Evaluated::Scored(scores) => scores,
            Evaluated::Interrupted => return Ok(Validated::Interrupted),
        };
        let metric = &self.cfg.train.monitor_metric;
        let value = scores.and_then(|s| {
            s.entries()
                .into_iter()
                .find(|(k, _)| *k == metric.name())
                .map(|(_, v)| v)
        });
        self.checkpointer.observe(&mut self.learner, value)?;
        let patience = self.cfg.train.early_stop;
        if patience > 0 && self.learner.state.epochs_without_improvement >= patience {
            Ok(Validated::EarlyStop)
        } else {
            Ok(Validated::Continue)
        }
    }

    /// Decodes and scores a split; writes `RUN/predictions-{split}.jsonl` and a metrics line.
    fn evaluate(&mut self, split: Split) -> Result<Evaluated, TrainError> {
        self.inject_signal_in_eval(split);
        let loader = match split {
            Split::Val => &self.val,
            Split::Train | Split::Test => &self.test,
        };
        let opts = DecodeOpts::from_config(&self.cfg);
        let checkpointer = &self.checkpointer;
        let (preds, scores) = match evaluate_split(
            &self.learner.model,
            loader,
            &self.learner.vocab,
            opts,
            self.learner.coll.as_ref(),
            None,
            &|| checkpointer.stop_requested(),
        ) {
            Ok(r) => r,
            Err(EvalError::Interrupted { .. }) => {
                tracing::warn!(split = %split, "stop requested: evaluation interrupted");
                return Ok(Evaluated::Interrupted);
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(s) = &scores {
            write_predictions(&self.run.predictions(split), &preds)?;
            let state = &self.learner.state;
            // The test pass runs after the loop advanced the epoch: it scores the best epoch's model.
            let epoch = if split == Split::Test {
                state
                    .best_epoch
                    .unwrap_or(state.epoch.saturating_sub(1).max(1))
            } else {
                state.epoch
            };
            self.log.write(&eval_record(split, epoch, state.step, s))?;
            tracing::info!(split = %split, scores = %crate::logging::short_pairs(&s.entries()), "evaluation");
        }
        Ok(Evaluated::Scored(scores))
    }

    /// Saves the final model, makes the final state resumable, reloads the best model (if
    /// any) and scores the test split.
    fn finish(&mut self) -> Result<Outcome, TrainError> {
        self.checkpointer.save_final_model(&self.learner)?;
        self.checkpointer.save_before_test(&self.learner)?;
        if let Some(best) = self.checkpointer.best_weights(&self.learner.state) {
            self.learner.model.load_safetensors(&best)?;
        }
        match self.evaluate(Split::Test)? {
            Evaluated::Scored(scores) => Ok(Outcome::Finished(scores)),
            Evaluated::Interrupted => self.interrupted(),
        }
    }

    /// An evaluation was interrupted by a stop request: the state is made resumable.
    fn interrupted(&mut self) -> Result<Outcome, TrainError> {
        let signal = self.checkpointer.save_on_interrupt(&self.learner)?;
        Ok(Outcome::Preempted { signal })
    }

    /// `ITHN_FAULT=signal-in-eval:SPLIT` (crash tests): rank 0 sends itself SIGTERM as the
    /// first evaluation of SPLIT in this process starts, so the stop arrives in the middle of
    /// the pass.
    fn inject_signal_in_eval(&mut self, split: Split) {
        if self.world.is_root()
            && self
                .fault
                .as_ref()
                .is_some_and(|f| f.signals_in_eval(split))
        {
            self.fault = None; // once per process
            tracing::warn!(split = %split, "ITHN_FAULT: SIGTERM to this rank during evaluation");
            crate::lifecycle::raise_sigterm();
        }
    }
}

/// The train, val and test loaders. A train loader batch is one micro-batch: the global batch
/// split over the accumulation steps (`LoaderOptions::from_config`).
fn loaders(cfg: &Config, world: &World) -> Result<(Loader, Loader, Loader), TrainError> {
    Ok((
        Loader::new(cfg, world, Split::Train)?,
        Loader::new(cfg, world, Split::Val)?,
        Loader::new(cfg, world, Split::Test)?,
    ))
}
