//! The training loop: `load → loop { step, maybe validate, maybe stop } → test with the best`.
//!
//! What it guarantees:
//! * every rank starts from rank 0's weights (broadcast of the whole state_dict), and every
//!   `dist.checksum_every` steps the ranks compare a parameter checksum — a divergence stops the
//!   run with an error naming the step and every rank's checksum;
//! * one optimizer step = up to `train.accumulation_steps` loader micro-batches of
//!   `batch_size / k` global samples (fewer at an epoch's end), taken by [`OptimStep::step`]
//!   (the exact global-batch objective, gradients all-reduced in buckets, Adam);
//! * λ(epoch) and StepLR advance per epoch; validation runs every `eval.every_epochs` epochs,
//!   the best model on `train.monitor_metric` is written to `RUN/best/`, early stopping after
//!   `train.early_stop` epochs without improvement (0 = never), the final model to `RUN/final/`,
//!   then the test split is scored with the best;
//! * `RUN/metrics.jsonl` gets one JSON object per line (`kind` = train / val / test) from rank 0.
//!
//! [`TrainerState`] is everything a resumed run needs besides weights and optimizer tensors;
//! [`StepHook::after_step`] is where checkpointing and preemption signals plug in.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind};

use super::optim_step::{OptimStep, StepError};
use super::schedule::{lambda, StepLr};
use super::step::{LossTerms, Micro};
use crate::config::Config;
use crate::data::loader::Loader;
use crate::data::sampler::Cursor;
use crate::dist::{collectives, Collectives, DistError, World};
use crate::eval::evaluate::{evaluate_split, write_predictions, DecodeOpts, EvalError};
use crate::eval::metrics::Scores;
use crate::model::weights::VocabInfo;
use crate::model::{ModelCheckpoint, ModelError, R2GenCmn};

/// Errors of a training run, naming the file, step or rank involved.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Dist(#[from] DistError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Eval(#[from] EvalError),
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
    #[error("step hook at step {step}: {message}")]
    Hook { step: u64, message: String },
}

/// Where the run stands: epoch (1-based), optimizer steps, data cursor, best score, early-stop
/// counter and the current learning rates. Serialisable for checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub epoch: u64,
    pub step: u64,
    pub cursor: Cursor,
    pub best_metric: Option<f64>,
    pub best_epoch: Option<u64>,
    pub epochs_without_improvement: usize,
    pub lrs: Vec<f64>,
}

impl TrainerState {
    pub fn fresh(cfg: &Config) -> TrainerState {
        TrainerState {
            epoch: 1,
            step: 0,
            cursor: Cursor {
                epoch: 1,
                batches_consumed: 0,
            },
            best_metric: None,
            best_epoch: None,
            epochs_without_improvement: 0,
            lrs: vec![cfg.train.lr_ve, cfg.train.lr_ed],
        }
    }
}

/// What a hook asks the loop to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookAction {
    Continue,
    /// Leave the loop now (e.g. after a preemption checkpoint); no final test.
    Stop,
}

/// Everything a hook may read after an optimizer step.
pub struct HookCtx<'a> {
    pub world: &'a World,
    pub config: &'a Config,
    pub state: &'a TrainerState,
    pub model: &'a R2GenCmn,
    pub optimizer: &'a OptimStep,
    pub run_dir: &'a Path,
    /// Loader batches per epoch: `state.cursor.batches_consumed == epoch_batches` at an epoch end.
    pub epoch_batches: u64,
}

/// Called after every optimizer step on every rank (collectively: hooks may communicate).
pub trait StepHook {
    fn after_step(&mut self, ctx: &HookCtx<'_>) -> Result<HookAction, String>;

    /// Whether this process was asked to stop (a local check, polled between evaluation
    /// batches, where the ranks are not in step).
    fn stop_requested(&self) -> bool {
        false
    }

    /// Training is over and the test pass follows (collective): the hook may make the final
    /// state resumable, so that a stop during the test pass loses nothing.
    fn before_test(&mut self, _ctx: &HookCtx<'_>) -> Result<(), String> {
        Ok(())
    }

    /// An evaluation pass was interrupted by a stop request the ranks agreed on (collective):
    /// make the current state resumable; the run then stops without a final test.
    fn on_interrupt(&mut self, _ctx: &HookCtx<'_>) -> Result<(), String> {
        Ok(())
    }
}

/// A hook that never intervenes.
pub struct NoHook;

impl StepHook for NoHook {
    fn after_step(&mut self, _ctx: &HookCtx<'_>) -> Result<HookAction, String> {
        Ok(HookAction::Continue)
    }
}

/// Appends JSON lines to `RUN/metrics.jsonl` (rank 0 only; an append-only log, flushed per line).
pub struct MetricsLog {
    file: Option<std::fs::File>,
    path: PathBuf,
}

impl MetricsLog {
    pub fn open(run_dir: &Path, enabled: bool) -> Result<MetricsLog, TrainError> {
        let path = run_dir.join("metrics.jsonl");
        let file = if enabled {
            Some(append_to(&path)?)
        } else {
            None
        };
        Ok(MetricsLog { file, path })
    }

    /// On resume from the checkpoint of `step`: drops what the resumed run will redo, so that
    /// nothing appears twice — train records of later steps, and val/test records of `step` or
    /// later (a checkpoint at an epoch end is written before that epoch's validation) — and a
    /// torn last line (a kill in the middle of a write). Rewritten atomically, then appended to.
    pub fn rewind(&mut self, step: u64) -> Result<(), TrainError> {
        if self.file.is_none() {
            return Ok(());
        }
        let io = |source| TrainError::Io {
            path: self.path.clone(),
            source,
        };
        let text = std::fs::read_to_string(&self.path).map_err(io)?;
        let kept: String = text
            .lines()
            .filter(|l| {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
                    return false;
                };
                let train = v.get("kind").and_then(|k| k.as_str()) == Some("train");
                v.get("step")
                    .and_then(|s| s.as_u64())
                    .is_some_and(|s| s < step || (train && s == step))
            })
            .flat_map(|l| [l, "\n"])
            .collect();
        if kept.len() != text.len() {
            crate::fsutil::write_atomic(&self.path, kept.as_bytes()).map_err(io)?;
            self.file = Some(append_to(&self.path)?);
        }
        Ok(())
    }

    pub fn write(&mut self, line: &str) -> Result<(), TrainError> {
        if let Some(f) = &mut self.file {
            writeln!(f, "{line}")
                .and_then(|_| f.flush())
                .map_err(|source| TrainError::Io {
                    path: self.path.clone(),
                    source,
                })?;
        }
        Ok(())
    }
}

/// Opens (creating) `path` for appending.
fn append_to(path: &Path) -> Result<std::fs::File, TrainError> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// A JSON object with its keys in the given order (serde_json's own map sorts them, and
/// readers of metrics.jsonl find `kind` first).
pub fn ordered_json(pairs: &[(&str, serde_json::Value)]) -> String {
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}:{v}", serde_json::Value::from(*k)))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// The JSON line of one training step.
pub fn train_record(state: &TrainerState, t: &LossTerms, lam: f64, secs: f64) -> String {
    let secs = secs.max(1e-9);
    ordered_json(&[
        ("kind", "train".into()),
        ("epoch", state.epoch.into()),
        ("step", state.step.into()),
        ("loss", t.loss.into()),
        ("lm", t.lm.into()),
        ("l_cp", t.l_cp.into()),
        ("l_cs", t.l_cs.into()),
        ("lr_ve", state.lrs[0].into()),
        ("lr_ed", state.lrs[1].into()),
        ("lambda", lam.into()),
        ("samples_per_s", (t.samples / secs).into()),
        ("tokens_per_s", (t.tokens / secs).into()),
    ])
}

/// The JSON line of a val/test evaluation: kind, epoch, step, then the scores in
/// pycocoevalcap's order.
pub fn eval_record(kind: &str, epoch: u64, step: u64, scores: &Scores) -> String {
    let mut pairs: Vec<(&str, serde_json::Value)> = vec![
        ("kind", kind.into()),
        ("epoch", epoch.into()),
        ("step", step.into()),
    ];
    pairs.extend(scores.entries().into_iter().map(|(k, v)| (k, v.into())));
    ordered_json(&pairs)
}

/// Copies rank 0's parameters and buffers to every rank.
pub fn broadcast_weights(model: &R2GenCmn, coll: &dyn Collectives) -> Result<(), DistError> {
    for (_, t) in model.registry().state_dict() {
        let mut d = t.detach();
        coll.broadcast(&mut d, 0)?;
    }
    Ok(())
}

/// Σ of every parameter in f64: cheap, and any divergence between ranks shows in it.
pub fn parameter_checksum(model: &R2GenCmn) -> f64 {
    tch::no_grad(|| {
        model
            .parameters()
            .iter()
            .map(|(_, p, _)| p.to_kind(Kind::Double).sum(Kind::Double).double_value(&[]))
            .sum()
    })
}

/// Compares checksums across ranks; an error names the step and every rank's value.
pub fn check_in_sync(world: &World, model: &R2GenCmn, step: u64) -> Result<(), DistError> {
    compare_checksums(
        world.rank,
        step,
        world.all_gather_f64(parameter_checksum(model)),
    )
}

/// Every rank's checksum must be bit-identical (the ranks run the same arithmetic on the same
/// reduced gradients); anything else is a divergence.
fn compare_checksums(rank: usize, step: u64, sums: Vec<f64>) -> Result<(), DistError> {
    if sums.iter().any(|&s| s.to_bits() != sums[0].to_bits()) {
        return Err(DistError::Diverged {
            rank,
            step,
            checksums: sums,
        });
    }
    Ok(())
}

/// One training run in `run_dir`.
pub struct Trainer<'w> {
    pub cfg: Config,
    pub world: &'w World,
    pub run_dir: PathBuf,
    pub model: R2GenCmn,
    pub optimizer: OptimStep,
    pub state: TrainerState,
    coll: Box<dyn Collectives + 'w>,
    vocab: VocabInfo,
    train: Loader,
    val: Loader,
    test: Loader,
    log: MetricsLog,
    max_steps: Option<u64>,
}

impl<'w> Trainer<'w> {
    /// Builds model, optimizer and loaders; rank 0's weights become everyone's.
    pub fn new(
        cfg: Config,
        world: &'w World,
        run_dir: &Path,
        max_steps: Option<u64>,
    ) -> Result<Self, TrainError> {
        let io = |source| TrainError::Io {
            path: run_dir.to_path_buf(),
            source,
        };
        // Before any work: full steps must split into equal local batches.
        let t = &cfg.train;
        crate::data::sampler::check_world(t.batch_size, t.accumulation_steps, world.size)?;
        std::fs::create_dir_all(run_dir).map_err(io)?;
        let device = if tch::Cuda::is_available() {
            Device::Cuda(world.local_rank)
        } else {
            Device::Cpu
        };
        let vocab = VocabInfo::load(&Path::new(&cfg.data.prepared).join("vocab.json"))?;
        // Rank 0's weights (incl. model.visual_weights, the ImageNet ResNet) become everyone's below.
        let model = R2GenCmn::for_training(&cfg, vocab.logit_dim, device)?;
        let coll = collectives::select(world, cfg.dist.backend, device, cfg.dist.timeout_s)?;
        broadcast_weights(&model, coll.as_ref())?;
        let state = TrainerState::fresh(&cfg);
        let optimizer = OptimStep::new(&model, &cfg)?;
        // A train loader batch is one micro-batch (LoaderOptions::from_config).
        let train = Loader::new(&cfg, world, "train")?;
        let val = Loader::new(&cfg, world, "val")?;
        let test = Loader::new(&cfg, world, "test")?;
        if world.is_root() {
            crate::model::weights::write_bytes_atomic(
                &run_dir.join("config.toml"),
                cfg.to_toml().as_bytes(),
            )?;
        }
        let log = MetricsLog::open(run_dir, world.is_root())?;
        Ok(Trainer {
            cfg,
            world,
            run_dir: run_dir.to_path_buf(),
            model,
            optimizer,
            state,
            coll,
            vocab,
            train,
            val,
            test,
            log,
            max_steps,
        })
    }

    fn device(&self) -> Device {
        self.model.device()
    }

    /// See [`MetricsLog::rewind`]; called when the run resumes from the checkpoint of `step`.
    pub fn rewind_log(&mut self, step: u64) -> Result<(), TrainError> {
        self.log.rewind(step)
    }

    /// The whole run; returns the test scores (rank 0) when the run reached its end.
    pub fn run(&mut self, hook: &mut dyn StepHook) -> Result<Option<Scores>, TrainError> {
        let epochs = self.cfg.train.epochs as u64;
        let mut schedule = StepLr::replay(
            vec![self.cfg.train.lr_ve, self.cfg.train.lr_ed],
            self.cfg.train.lr_step_size,
            self.cfg.train.lr_gamma,
            (self.state.epoch - 1) as usize,
        );
        while self.state.epoch <= epochs {
            self.state.lrs = schedule.lrs().to_vec();
            self.optimizer.set_lrs(&self.state.lrs);
            match self.train_epoch(hook)? {
                Flow::Stop => return Ok(None),
                Flow::MaxSteps => break,
                Flow::Next => {}
            }
            let stop_early = if self
                .state
                .epoch
                .is_multiple_of(self.cfg.eval.every_epochs as u64)
            {
                match self.validate(hook)? {
                    Some(stop) => stop,
                    None => return self.interrupted(hook),
                }
            } else {
                false
            };
            schedule.step();
            self.state.epoch += 1;
            self.state.cursor = Cursor {
                epoch: self.state.epoch,
                batches_consumed: 0,
            };
            if stop_early {
                tracing::info!(epoch = self.state.epoch - 1, "early stopping");
                break;
            }
        }
        self.finish(hook)
    }

    /// What a hook sees of the run now.
    fn ctx(&self) -> HookCtx<'_> {
        HookCtx {
            world: self.world,
            config: &self.cfg,
            state: &self.state,
            model: &self.model,
            optimizer: &self.optimizer,
            run_dir: &self.run_dir,
            epoch_batches: self.train.epoch_batches() as u64,
        }
    }

    /// An evaluation was interrupted by a stop request: the hook makes the state resumable.
    fn interrupted(&mut self, hook: &mut dyn StepHook) -> Result<Option<Scores>, TrainError> {
        let step = self.state.step;
        hook.on_interrupt(&self.ctx())
            .map_err(|message| TrainError::Hook { step, message })?;
        Ok(None)
    }

    fn train_epoch(&mut self, hook: &mut dyn StepHook) -> Result<Flow, TrainError> {
        let lam = lambda(self.cfg.ithn.alpha, self.state.epoch as usize);
        let k = self.cfg.train.accumulation_steps;
        let bar = self.progress_bar();
        let mut t0 = Instant::now();
        let mut batches = self.train.iter_from(self.state.cursor);
        loop {
            // One optimizer step = the next k loader batches, fewer at the epoch's end.
            let mut micros = Vec::with_capacity(k);
            for batch in batches.by_ref().take(k) {
                let (seed, step) = (self.cfg.train.seed, self.state.step);
                micros.push(Micro::from_loader(&batch?, self.device(), lam, seed, step));
            }
            if micros.is_empty() {
                break;
            }
            let terms = self.optimizer.step(
                &self.model,
                &micros,
                self.coll.as_ref(),
                self.state.step + 1,
            )?;
            self.state.cursor.batches_consumed += micros.len() as u64;
            self.state.step += 1;
            let secs = t0.elapsed().as_secs_f64();
            t0 = Instant::now();
            self.log
                .write(&train_record(&self.state, &terms, lam, secs))?;
            if self
                .state
                .step
                .is_multiple_of(self.cfg.log.every_steps as u64)
            {
                tracing::info!(
                    step = self.state.step,
                    epoch = self.state.epoch,
                    loss = terms.loss,
                    lm = terms.lm,
                    l_cp = terms.l_cp,
                    l_cs = terms.l_cs,
                    lambda = lam,
                    "train"
                );
            }
            if let Some(b) = &bar {
                b.inc(micros.len() as u64);
                b.set_message(format!("loss {:.4}", terms.loss));
            }
            let every = self.cfg.dist.checksum_every as u64;
            if every > 0 && self.state.step.is_multiple_of(every) {
                check_in_sync(self.world, &self.model, self.state.step)?;
            }
            let step = self.state.step;
            if hook
                .after_step(&self.ctx())
                .map_err(|message| TrainError::Hook { step, message })?
                == HookAction::Stop
            {
                return Ok(Flow::Stop);
            }
            if self.max_steps.is_some_and(|m| self.state.step >= m) {
                return Ok(Flow::MaxSteps);
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        Ok(Flow::Next)
    }

    fn progress_bar(&self) -> Option<indicatif::ProgressBar> {
        use std::io::IsTerminal;
        if !self.world.is_root() || !self.cfg.log.progress || !std::io::stderr().is_terminal() {
            return None;
        }
        let b = indicatif::ProgressBar::new(self.train.epoch_batches() as u64);
        b.set_prefix(format!("epoch {}", self.state.epoch));
        Some(b)
    }

    /// Scores the val split; keeps the best model; returns whether to stop early, or None when
    /// a stop request interrupted the pass.
    fn validate(&mut self, hook: &dyn StepHook) -> Result<Option<bool>, TrainError> {
        let Some(scores) = self.evaluate("val", hook)? else {
            return Ok(None);
        };
        let metric = self.cfg.train.monitor_metric.clone();
        let value = scores.and_then(|s| {
            s.entries()
                .into_iter()
                .find(|(k, _)| *k == metric)
                .map(|(_, v)| v)
        });
        // Rank 0 decided; everyone must agree on "better" so the collective save stays in step.
        let mut flag = vec![u64::from(
            matches!((value, self.state.best_metric), (Some(v), None) if v.is_finite())
                || matches!((value, self.state.best_metric), (Some(v), Some(b)) if v > b),
        )];
        self.world.all_reduce_max_u64(&mut flag);
        if flag[0] == 1 {
            self.state.best_metric = value.or(self.state.best_metric);
            self.state.best_epoch = Some(self.state.epoch);
            self.state.epochs_without_improvement = 0;
            self.save_model("best")?;
        } else {
            self.state.epochs_without_improvement += 1;
        }
        let patience = self.cfg.train.early_stop;
        Ok(Some(
            patience > 0 && self.state.epochs_without_improvement >= patience,
        ))
    }

    /// Decodes and scores a split; writes `RUN/predictions-{split}.jsonl` and a metrics line.
    /// The scores (rank 0), or None when `hook` asked to stop in the middle.
    fn evaluate(
        &mut self,
        split: &str,
        hook: &dyn StepHook,
    ) -> Result<Option<Option<Scores>>, TrainError> {
        fault_signal_in_eval(split, self.world.is_root());
        let loader = if split == "val" {
            &self.val
        } else {
            &self.test
        };
        let opts = DecodeOpts::from_config(&self.cfg);
        let (preds, scores) = match evaluate_split(
            &self.model,
            loader,
            &self.vocab,
            opts,
            self.coll.as_ref(),
            None,
            &|| hook.stop_requested(),
        ) {
            Ok(r) => r,
            Err(EvalError::Interrupted { .. }) => {
                tracing::warn!(split, "stop requested: evaluation interrupted");
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(s) = &scores {
            write_predictions(
                &self.run_dir.join(format!("predictions-{split}.jsonl")),
                &preds,
            )?;
            // The test pass runs after the loop advanced the epoch: it scores the best epoch's model.
            let epoch = if split == "test" {
                self.state
                    .best_epoch
                    .unwrap_or(self.state.epoch.saturating_sub(1).max(1))
            } else {
                self.state.epoch
            };
            self.log
                .write(&eval_record(split, epoch, self.state.step, s))?;
            tracing::info!(split, scores = %serde_json::Value::Object(s.to_json()), "evaluation");
        }
        Ok(Some(scores))
    }

    /// Writes a model checkpoint directory `RUN/{name}/` (rank 0).
    fn save_model(&self, name: &str) -> Result<(), TrainError> {
        if self.world.is_root() {
            let dir = self.run_dir.join(name);
            std::fs::create_dir_all(&dir).map_err(|source| TrainError::Io {
                path: dir.clone(),
                source,
            })?;
            self.model
                .registry()
                .save_safetensors(&dir.join(crate::model::weights::WEIGHTS_FILE))?;
            ModelCheckpoint::write_meta(&dir, &self.cfg, &self.vocab)?;
        }
        self.world.barrier();
        Ok(())
    }

    /// Saves the final model, reloads the best (if any) and scores the test split.
    fn finish(&mut self, hook: &mut dyn StepHook) -> Result<Option<Scores>, TrainError> {
        self.save_model("final")?;
        let step = self.state.step;
        hook.before_test(&self.ctx())
            .map_err(|message| TrainError::Hook { step, message })?;
        let best = self
            .run_dir
            .join("best")
            .join(crate::model::weights::WEIGHTS_FILE);
        if self.state.best_epoch.is_some() && best.is_file() {
            self.model.load_safetensors(&best)?;
        }
        match self.evaluate("test", hook)? {
            Some(scores) => Ok(scores),
            None => self.interrupted(hook),
        }
    }
}

/// `ITHN_FAULT=signal-in-eval:SPLIT` (crash tests): rank 0 sends itself SIGTERM as the first
/// evaluation of SPLIT in this process starts, so the stop arrives in the middle of the pass.
fn fault_signal_in_eval(split: &str, root: bool) {
    static FIRED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if root
        && std::env::var("ITHN_FAULT").is_ok_and(|f| f == format!("signal-in-eval:{split}"))
        && !FIRED.swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        tracing::warn!(split, "ITHN_FAULT: SIGTERM to this rank during evaluation");
        // SAFETY: raising a signal in our own process; the handler only sets flags.
        unsafe { libc::raise(libc::SIGTERM) };
    }
}

/// How an epoch ended.
enum Flow {
    Next,
    MaxSteps,
    Stop,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewind_drops_later_steps_and_a_torn_line_and_keeps_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        std::fs::write(
            &path,
            concat!(
                "{\"kind\":\"train\",\"epoch\":1,\"step\":1}\n",
                "{\"kind\":\"train\",\"epoch\":1,\"step\":2}\n",
                "{\"kind\":\"val\",\"epoch\":1,\"step\":2}\n",
                "{\"kind\":\"train\",\"epoch\":2,\"step\":3}\n",
                "{\"kind\":\"train\",\"epoch\":2,\"step\":4}\n",
                "{\"kind\":\"val\",\"epoch\":2,\"step\":4}\n",
                "{\"kind\":\"train\",\"ep",
            ),
        )
        .unwrap();
        let mut log = MetricsLog::open(dir.path(), true).unwrap();
        // Resuming from the epoch-end checkpoint of step 4 (written before validation).
        log.rewind(4).unwrap();
        log.write("{\"kind\":\"val\",\"epoch\":2,\"step\":4}")
            .unwrap();
        let steps: Vec<(String, u64)> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["kind"].as_str().unwrap().into(),
                    v["step"].as_u64().unwrap(),
                )
            })
            .collect();
        let want = [
            ("train", 1),
            ("train", 2),
            ("val", 2),
            ("train", 3),
            ("train", 4),
            ("val", 4),
        ];
        let want: Vec<(String, u64)> = want.iter().map(|(k, s)| (k.to_string(), *s)).collect();
        assert_eq!(steps, want);
        // A log that is disabled (ranks other than 0) is never touched.
        let mut off = MetricsLog::open(dir.path(), false).unwrap();
        off.rewind(0).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 6);
    }

    #[test]
    fn train_record_has_exactly_the_documented_keys() {
        let cfg = Config::default();
        let mut s = TrainerState::fresh(&cfg);
        s.step = 3;
        let t = LossTerms {
            loss: 1.0,
            lm: 2.0,
            l_cp: 3.0,
            l_cs: 4.0,
            samples: 16.0,
            tokens: 160.0,
            times: Default::default(),
        };
        let line = train_record(&s, &t, 0.99, 2.0);
        assert!(
            line.starts_with(r#"{"kind":"train","epoch":1,"step":3,"loss":1.0,"#),
            "{line}"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        let mut want = vec![
            "kind",
            "epoch",
            "step",
            "loss",
            "lm",
            "l_cp",
            "l_cs",
            "lr_ve",
            "lr_ed",
            "lambda",
            "samples_per_s",
            "tokens_per_s",
        ];
        let mut got = keys.clone();
        want.sort();
        got.sort();
        assert_eq!(got, want);
        assert_eq!(v["samples_per_s"], 8.0);
        assert_eq!(v["lr_ed"], 5e-4);
    }

    #[test]
    fn diverged_checksums_name_step_and_every_rank() {
        assert!(compare_checksums(1, 5, vec![1.5, 1.5, 1.5]).is_ok());
        let e = compare_checksums(1, 40, vec![1.5, 1.5000000000000002])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("step 40") && e.contains("1.5000000000000002"),
            "{e}"
        );
        assert!(e.starts_with("rank 1"), "{e}");
    }

    // accumulation_averages_terms_and_sums_counts moved with the accumulation itself:
    // train::optim_step::tests::micro_batches_share_the_step_counts.

    #[test]
    fn checksum_detects_nothing_on_one_rank() {
        let cfg = {
            let mut c = Config::default();
            c.model.d_model = 32;
            c.model.cmm_dim = 32;
            c.model.d_ff = 32;
            c.model.num_heads = 4;
            c.model.num_layers = 1;
            c.model.cmm_size = 8;
            c.model.topk = 4;
            c.model.proj_dim = 8;
            c.model.visual_layers = vec![1, 1, 1, 1];
            c.model.visual_width_per_group = 4;
            c
        };
        let model = R2GenCmn::from_config(&cfg, 10, Device::Cpu).unwrap();
        let w = World::single();
        assert!(check_in_sync(&w, &model, 1).is_ok());
        assert!(parameter_checksum(&model).is_finite());
    }
}
