//! `ithn-dist drill`: a preemption drill — a tiny deterministic "training" (linear regression
//! with input dropout, Adam/AMSGrad, StepLR) that runs the real checkpoint manager, signal
//! handling, watchdog and save schedule on any world, in seconds, without data or a model.
//!
//! It exists so that the resume machinery can be proven (bit-exact resume, elastic world size,
//! torn checkpoints, SLURM requeue, a killed rank) independently of the model, and so that a
//! cluster's launch setup (`--signal`, `--requeue`, mpirun signal forwarding) can be checked
//! before a long job. It follows the trainer's rules: the global batch comes from a
//! permutation of (seed, epoch), rank r takes the r-th slice, all randomness is derived from
//! (seed, global step, sample index), gradients are summed over ranks and normalised by the
//! global batch.

use std::path::{Path, PathBuf};
use std::time::Duration;
use tch::Tensor;

use super::{
    Checkpoint, CheckpointError, Checkpointer, ResumeArgs, Stateful, StepAction, TrainState,
};
use crate::config::Config;
use crate::data::sampler::Cursor;
use crate::dist::World;
use crate::lifecycle::{Fault, Watchdog, EXIT_OK, EXIT_PREEMPTED};
use crate::run_dir::RunDir;

const SAMPLES: usize = 96;
const IN: usize = 8;
const OUT: usize = 4;
const DROPOUT: f32 = 0.25;

#[derive(clap::Args, Debug)]
pub struct DrillArgs {
    #[command(flatten)]
    pub config: crate::config::ConfigArgs,
    /// Run directory (checkpoints go to RUN/checkpoints, the best epoch's weights to RUN/best).
    #[arg(long, value_name = "DIR")]
    pub run_dir: PathBuf,
    /// Stop after this many optimizer steps in total (default: train.epochs full epochs).
    #[arg(long, value_parser = crate::bounds::at_least::<u64>(1))]
    pub max_steps: Option<u64>,
    /// Sleep this long after each step, so that signals can land mid-run in tests.
    #[arg(long, default_value_t = 0, value_parser = crate::bounds::between::<u64>(0, 3_600_000))]
    pub step_ms: u64,
    #[command(flatten)]
    pub resume: ResumeArgs,
}

/// Errors of the drill.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("train.batch_size ({batch}) must be a multiple of the world size ({world}) and at most {SAMPLES}")]
    Batch { batch: usize, world: usize },
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Parameters and Adam state, flat f32 in a fixed order: W (OUT×IN) then b (OUT), and where
/// the run stands.
#[derive(Debug, Clone, PartialEq)]
struct State {
    params: Pair,
    exp_avg: Pair,
    exp_avg_sq: Pair,
    max_exp_avg_sq: Pair,
    progress: TrainState,
    /// Σ of this epoch's step losses so far (the epoch's score is its negated mean).
    epoch_loss: f64,
}

/// Named tensors, as a checkpoint file holds them.
type Named = Vec<(String, Tensor)>;

/// One value per parameter (W, b).
type Pair = [Vec<f32>; 2];

const NAMES: [&str; 2] = ["linear.weight", "linear.bias"];
const SHAPES: [&[i64]; 2] = [&[OUT as i64, IN as i64], &[OUT as i64]];

/// The stateless hash every random draw of the drill comes from.
use crate::rng::splitmix64 as mix;

fn uniform(keys: &[u64]) -> f32 {
    let h = keys.iter().fold(0u64, |acc, k| mix(acc ^ k));
    (h >> 40) as f32 / (1u64 << 24) as f32
}

fn sample(seed: u64, i: usize) -> ([f32; IN], [f32; OUT]) {
    let x: [f32; IN] = std::array::from_fn(|j| 2.0 * uniform(&[seed, 1, i as u64, j as u64]) - 1.0);
    let y = std::array::from_fn(|o| {
        let w = |j: usize| 2.0 * uniform(&[seed, 2, o as u64, j as u64]) - 1.0;
        (0..IN).map(|j| w(j) * x[j]).sum::<f32>() + 0.1 * uniform(&[seed, 3, i as u64, o as u64])
    });
    (x, y)
}

/// The epoch's sample order: a Fisher–Yates shuffle keyed by (seed, epoch) only.
fn permutation(seed: u64, epoch: u64) -> Vec<usize> {
    let mut p: Vec<usize> = (0..SAMPLES).collect();
    for k in (1..SAMPLES).rev() {
        let j = (mix(seed ^ mix(epoch ^ mix(k as u64))) % (k as u64 + 1)) as usize;
        p.swap(k, j);
    }
    p
}

impl State {
    fn fresh(cfg: &Config) -> State {
        let seed = cfg.train.seed;
        let w = (0..OUT * IN)
            .map(|k| 0.2 * uniform(&[seed, 4, k as u64]) - 0.1)
            .collect();
        let zeros = || [vec![0.0; OUT * IN], vec![0.0; OUT]];
        State {
            params: [w, vec![0.0; OUT]],
            exp_avg: zeros(),
            exp_avg_sq: zeros(),
            max_exp_avg_sq: zeros(),
            progress: TrainState::fresh(cfg),
            epoch_loss: 0.0,
        }
    }

    /// Gradient contributions (already divided by the global batch) and loss of `indices`.
    fn local_grads(&self, seed: u64, indices: &[usize], global_batch: usize) -> Vec<f32> {
        let mut g = vec![0.0f32; OUT * IN + OUT + 1];
        let scale = 1.0 / global_batch as f32;
        for &i in indices {
            let (x, y) = sample(seed, i);
            let keep =
                |j: usize| uniform(&[seed, 5, self.progress.step, i as u64, j as u64]) >= DROPOUT;
            let xd: [f32; IN] =
                std::array::from_fn(|j| if keep(j) { x[j] / (1.0 - DROPOUT) } else { 0.0 });
            for o in 0..OUT {
                let pred: f32 = (0..IN)
                    .map(|j| self.params[0][o * IN + j] * xd[j])
                    .sum::<f32>()
                    + self.params[1][o];
                let r = pred - y[o];
                for j in 0..IN {
                    g[o * IN + j] += 2.0 * r * xd[j] * scale;
                }
                g[OUT * IN + o] += 2.0 * r * scale;
                g[OUT * IN + OUT] += r * r * scale;
            }
        }
        g
    }

    /// torch.optim.Adam with amsgrad and L2 weight decay, one step, per group learning rate.
    fn adam(&mut self, grads: &[f32], lr: &[f64], cfg: &Config) {
        let t = &cfg.train;
        let (b1, b2) = (t.adam_betas[0] as f32, t.adam_betas[1] as f32);
        let n = (self.progress.step + 1) as i32;
        let (bc1, bc2) = (1.0 - b1.powi(n), 1.0 - b2.powi(n));
        let mut offset = 0;
        for (p, &lr_p) in lr.iter().enumerate() {
            for k in 0..self.params[p].len() {
                let g = grads[offset + k] + t.weight_decay as f32 * self.params[p][k];
                let m = b1 * self.exp_avg[p][k] + (1.0 - b1) * g;
                let v = b2 * self.exp_avg_sq[p][k] + (1.0 - b2) * g * g;
                let vmax = self.max_exp_avg_sq[p][k].max(v);
                let denom = (vmax.sqrt() / bc2.sqrt()) + t.adam_eps as f32;
                self.params[p][k] -= (lr_p as f32 / bc1) * m / denom;
                (
                    self.exp_avg[p][k],
                    self.exp_avg_sq[p][k],
                    self.max_exp_avg_sq[p][k],
                ) = (m, v, vmax);
            }
            offset += self.params[p].len();
        }
        self.progress.step += 1;
    }

    /// Records where the run stands after a step of `epoch` that consumed batch `in_epoch`
    /// (0-based) of it, like the trainer does: the epoch advances with the next step.
    fn advance(&mut self, cfg: &Config, epoch: u64, in_epoch: u64) {
        self.progress.epoch = epoch;
        self.progress.cursor = Cursor {
            epoch,
            batches_consumed: in_epoch + 1,
        };
        self.progress.lrs = lrs(cfg, epoch);
    }

    /// Named tensors of `which` (parameter values or one Adam moment), in checkpoint order.
    fn named(values: &Pair, name: impl Fn(usize) -> String) -> Named {
        (0..2)
            .map(|p| (name(p), Tensor::from_slice(&values[p]).reshape(SHAPES[p])))
            .collect()
    }

    /// One tensor of a checkpoint file as flat f32, checked for its length.
    fn read(
        list: &[(String, Tensor)],
        name: &str,
        len: usize,
        dir: &Path,
    ) -> Result<Vec<f32>, CheckpointError> {
        let missing = || CheckpointError::Restore {
            dir: dir.to_path_buf(),
            source: format!("tensor {name:?} missing or of the wrong size").into(),
        };
        let (_, t) = list.iter().find(|(n, _)| n == name).ok_or_else(missing)?;
        let v = Vec::<f32>::try_from(t.flatten(0, -1)).map_err(|_| missing())?;
        if v.len() == len {
            Ok(v)
        } else {
            Err(missing())
        }
    }
}

impl Stateful for State {
    fn progress(&self) -> &TrainState {
        &self.progress
    }

    fn progress_mut(&mut self) -> &mut TrainState {
        &mut self.progress
    }

    fn model_state(&self) -> Named {
        State::named(&self.params, |p| NAMES[p].to_string())
    }

    fn optimizer_state(&self) -> Result<Named, CheckpointError> {
        let mut opt = Vec::new();
        for p in 0..2 {
            let t = |v: &Pair| Tensor::from_slice(&v[p]).reshape(SHAPES[p]);
            opt.push((format!("state.{p}.exp_avg"), t(&self.exp_avg)));
            opt.push((format!("state.{p}.exp_avg_sq"), t(&self.exp_avg_sq)));
            opt.push((format!("state.{p}.max_exp_avg_sq"), t(&self.max_exp_avg_sq)));
            opt.push((
                format!("state.{p}.step"),
                Tensor::from_slice(&[self.progress.step as f32]),
            ));
        }
        Ok(opt)
    }

    fn extra(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut extra = serde_json::Map::new();
        extra.insert("epoch_loss".into(), self.epoch_loss.into());
        extra
    }

    fn load_checkpoint(&mut self, ck: &Checkpoint) -> Result<(), CheckpointError> {
        let (model, opt) = (ck.model()?, ck.optimizer()?);
        let lens = [OUT * IN, OUT];
        let both =
            |list: &Named, name: &dyn Fn(usize) -> String| -> Result<Pair, CheckpointError> {
                Ok([
                    State::read(list, &name(0), lens[0], &ck.dir)?,
                    State::read(list, &name(1), lens[1], &ck.dir)?,
                ])
            };
        self.params = both(&model, &|p| NAMES[p].to_string())?;
        self.exp_avg = both(&opt, &|p| format!("state.{p}.exp_avg"))?;
        self.exp_avg_sq = both(&opt, &|p| format!("state.{p}.exp_avg_sq"))?;
        self.max_exp_avg_sq = both(&opt, &|p| format!("state.{p}.max_exp_avg_sq"))?;
        self.progress = ck.meta.state.clone();
        self.epoch_loss = ck
            .meta
            .extra
            .get("epoch_loss")
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0);
        Ok(())
    }

    fn write_model_dir(&self, dir: &Path, cfg: &Config) -> Result<(), CheckpointError> {
        let weights = dir.join(crate::model::weights::WEIGHTS_FILE);
        crate::model::weights::write_safetensors_atomic(&weights, &self.model_state())?;
        let config = dir.join(crate::model::weights::CONFIG_FILE);
        crate::model::weights::write_bytes_atomic(&config, cfg.to_toml().as_bytes())?;
        Ok(())
    }
}

/// StepLR: base · γ^⌊(epoch−1)/step_size⌋ for the two groups (lr_ve, lr_ed).
fn lrs(cfg: &Config, epoch: u64) -> Vec<f64> {
    let t = &cfg.train;
    let decay = t
        .lr_gamma
        .powi(((epoch - 1) / t.lr_step_size as u64) as i32);
    t.initial_lrs().into_iter().map(|lr| lr * decay).collect()
}

/// The drill's fixed shape: samples per rank and optimizer steps per epoch and in total.
struct Plan {
    local: usize,
    steps_per_epoch: u64,
    total: u64,
}

impl Plan {
    fn new(cfg: &Config, world: &World, max_steps: Option<u64>) -> Result<Plan, DrillError> {
        let (batch, w) = (cfg.train.batch_size, world.size);
        if batch % w != 0 || batch > SAMPLES {
            return Err(DrillError::Batch { batch, world: w });
        }
        let steps_per_epoch = (SAMPLES / batch) as u64;
        Ok(Plan {
            local: batch / w,
            steps_per_epoch,
            total: max_steps.unwrap_or(steps_per_epoch * cfg.train.epochs as u64),
        })
    }
}

/// Runs the drill; returns the exit code (0 done, 3 checkpointed on a signal).
pub fn run(world: &World, args: &DrillArgs, fault: Option<Fault>) -> anyhow::Result<i32> {
    let cfg = args.config.load()?;
    let plan = Plan::new(&cfg, world, args.max_steps)?;
    let run = RunDir::new(&args.run_dir);
    let hang = fault.clone();
    let mut checkpointer =
        Checkpointer::new(world, &cfg, &run, &args.resume, Some(plan.total), fault);
    let mut state = State::fresh(&cfg);
    checkpointer.load(&mut state)?;
    checkpointer.start().map_err(DrillError::Signals)?;
    let watchdog = Watchdog::start(Duration::from_secs_f64(cfg.dist.timeout_s), world.rank);
    while state.progress.step < plan.total {
        if hang
            .as_ref()
            .is_some_and(|f| f.hangs(state.progress.step + 1, world.rank))
        {
            tracing::error!(rank = world.rank, "ITHN_FAULT: this rank hangs");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        let epoch_end = step(world, &cfg, &plan, &mut state);
        watchdog.arm("step");
        std::thread::sleep(Duration::from_millis(args.step_ms));
        if epoch_end {
            let score = -state.epoch_loss / plan.steps_per_epoch as f64;
            state.epoch_loss = 0.0;
            checkpointer.observe(&mut state, Some(score))?;
        }
        let action = checkpointer.maybe_save(&state, epoch_end)?;
        watchdog.arm("step");
        if let StepAction::Stop { .. } = action {
            return Ok(EXIT_PREEMPTED);
        }
    }
    if world.is_root() {
        println!("drill: finished at step {}", state.progress.step);
    }
    Ok(EXIT_OK)
}

/// One optimizer step on every rank; true when it ended an epoch.
fn step(world: &World, cfg: &Config, plan: &Plan, state: &mut State) -> bool {
    let seed = cfg.train.seed;
    let batch = cfg.train.batch_size;
    let epoch = state.progress.step / plan.steps_per_epoch + 1;
    let in_epoch = state.progress.step % plan.steps_per_epoch;
    let order = permutation(seed, epoch);
    let start = in_epoch as usize * batch + world.rank * plan.local;
    let mut grads = state.local_grads(seed, &order[start..start + plan.local], batch);
    world.all_reduce_sum_f32(&mut grads);
    state.epoch_loss += f64::from(grads[OUT * IN + OUT]);
    state.adam(&grads, &lrs(cfg, epoch), cfg);
    state.advance(cfg, epoch, in_epoch);
    if world.is_root() {
        // One line per step on stdout: tests and people watch it to time their signals.
        println!(
            "drill: step {} loss {:.6}",
            state.progress.step,
            grads[OUT * IN + OUT]
        );
    }
    state.progress.step.is_multiple_of(plan.steps_per_epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_a_permutation_and_depends_on_epoch_only() {
        let p = permutation(7, 1);
        let mut s = p.clone();
        s.sort_unstable();
        assert_eq!(s, (0..SAMPLES).collect::<Vec<_>>());
        assert_eq!(p, permutation(7, 1));
        assert_ne!(p, permutation(7, 2));
    }

    #[test]
    fn state_round_trips_through_a_checkpoint() {
        let o = vec!["checkpoint.every_steps=1".to_string()];
        let cfg = Config::from_toml_str("", std::path::Path::new("<t>"), &o).unwrap();
        let run = tempfile::tempdir().unwrap();
        let world = World::single();
        let args = ResumeArgs {
            resume: "auto".into(),
            allow_config_change: false,
            requeue_on_signal: false,
        };
        let run = RunDir::new(run.path());
        let mut ckpt = Checkpointer::new(&world, &cfg, &run, &args, None, None);
        let mut s = State::fresh(&cfg);
        let g = s.local_grads(1, &[0, 5, 9], 4);
        s.adam(&g, &[1e-3, 1e-3], &cfg);
        s.advance(&cfg, 1, 0);
        s.epoch_loss = 0.123456789;
        assert_eq!(ckpt.maybe_save(&s, false).unwrap(), StepAction::Continue);
        let mut back = State::fresh(&cfg);
        assert_eq!(ckpt.load(&mut back).unwrap(), Some(1));
        assert_eq!(back, s);
        // The best epoch's weights go to RUN/best/ as a model directory.
        assert!(ckpt.observe(&mut s, Some(-1.0)).unwrap());
        assert_eq!(s.progress.best_epoch, Some(1));
        assert!(run.best().join("model.safetensors").is_file());
        assert!(run.best().join("config.toml").is_file());
        assert!(!ckpt.observe(&mut s, Some(-2.0)).unwrap());
        assert_eq!(s.progress.epochs_without_improvement, 1);
    }
}
