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

use std::path::PathBuf;
use std::time::Duration;
use tch::Tensor;

use super::meta::{config_hash, LoaderCursor, SaveReason, TrainerMeta, FORMAT_VERSION};
use super::{Checkpoint, CheckpointError, CheckpointManager, Payload, ResumeArgs, SaveSchedule};
use crate::config::Config;
use crate::dist::World;
use crate::train::signals::{self, SignalFlag, Watchdog, EXIT_OK, EXIT_PREEMPTED};

const SAMPLES: usize = 96;
const IN: usize = 8;
const OUT: usize = 4;
const DROPOUT: f32 = 0.25;

#[derive(clap::Args, Debug)]
pub struct DrillArgs {
    #[command(flatten)]
    pub config: crate::cli::ConfigArgs,
    /// Run directory (checkpoints go to RUN/checkpoints).
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
    #[error("{dir}: tensor {name:?} missing or of the wrong size")]
    Tensor { dir: PathBuf, name: String },
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
}

/// Parameters and Adam state, flat f32 in a fixed order: W (OUT×IN) then b (OUT).
#[derive(Debug, Clone, PartialEq)]
struct State {
    params: [Vec<f32>; 2],
    exp_avg: [Vec<f32>; 2],
    exp_avg_sq: [Vec<f32>; 2],
    max_exp_avg_sq: [Vec<f32>; 2],
    step: u64,
    epoch_loss: f64,
    best: Option<(f64, u64)>,
    stale_epochs: u64,
}

/// Named tensors, as a checkpoint file holds them.
type Named = Vec<(String, Tensor)>;

/// One value per parameter (W, b).
type Pair = [Vec<f32>; 2];

const NAMES: [&str; 2] = ["linear.weight", "linear.bias"];
const SHAPES: [&[i64]; 2] = [&[OUT as i64, IN as i64], &[OUT as i64]];

/// splitmix64: the stateless hash every random draw of the drill comes from.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

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
    fn fresh(seed: u64) -> State {
        let w = (0..OUT * IN)
            .map(|k| 0.2 * uniform(&[seed, 4, k as u64]) - 0.1)
            .collect();
        let zeros = || [vec![0.0; OUT * IN], vec![0.0; OUT]];
        State {
            params: [w, vec![0.0; OUT]],
            exp_avg: zeros(),
            exp_avg_sq: zeros(),
            max_exp_avg_sq: zeros(),
            step: 0,
            epoch_loss: 0.0,
            best: None,
            stale_epochs: 0,
        }
    }

    /// Gradient contributions (already divided by the global batch) and loss of `indices`.
    fn local_grads(&self, seed: u64, indices: &[usize], global_batch: usize) -> Vec<f32> {
        let mut g = vec![0.0f32; OUT * IN + OUT + 1];
        let scale = 1.0 / global_batch as f32;
        for &i in indices {
            let (x, y) = sample(seed, i);
            let keep = |j: usize| uniform(&[seed, 5, self.step, i as u64, j as u64]) >= DROPOUT;
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
    fn adam(&mut self, grads: &[f32], lr: [f64; 2], cfg: &Config) {
        let t = &cfg.train;
        let (b1, b2) = (t.adam_betas[0] as f32, t.adam_betas[1] as f32);
        let n = (self.step + 1) as i32;
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
        self.step += 1;
    }

    /// (model state_dict, optimizer state) as named tensors.
    fn tensors(&self) -> (Named, Named) {
        let t = |v: &Vec<f32>, p: usize| Tensor::from_slice(v).reshape(SHAPES[p]);
        let model = (0..2)
            .map(|p| (NAMES[p].to_string(), t(&self.params[p], p)))
            .collect();
        let mut opt = Vec::new();
        for p in 0..2 {
            opt.push((format!("state.{p}.exp_avg"), t(&self.exp_avg[p], p)));
            opt.push((format!("state.{p}.exp_avg_sq"), t(&self.exp_avg_sq[p], p)));
            opt.push((
                format!("state.{p}.max_exp_avg_sq"),
                t(&self.max_exp_avg_sq[p], p),
            ));
            opt.push((
                format!("state.{p}.step"),
                Tensor::from_slice(&[self.step as f32]),
            ));
        }
        (model, opt)
    }

    fn restore(ck: &Checkpoint) -> Result<State, DrillError> {
        let (model, opt) = (ck.model()?, ck.optimizer()?);
        let get =
            |list: &[(String, Tensor)], name: &str, len: usize| -> Result<Vec<f32>, DrillError> {
                let missing = || DrillError::Tensor {
                    dir: ck.dir.clone(),
                    name: name.to_string(),
                };
                let (_, t) = list.iter().find(|(n, _)| n == name).ok_or_else(missing)?;
                let v = Vec::<f32>::try_from(t.flatten(0, -1)).map_err(|_| missing())?;
                if v.len() == len {
                    Ok(v)
                } else {
                    Err(missing())
                }
            };
        let lens = [OUT * IN, OUT];
        let both = |f: &dyn Fn(usize) -> Result<Vec<f32>, DrillError>| -> Result<Pair, DrillError> {
            Ok([f(0)?, f(1)?])
        };
        let m = &ck.meta;
        Ok(State {
            params: both(&|p| get(&model, NAMES[p], lens[p]))?,
            exp_avg: both(&|p| get(&opt, &format!("state.{p}.exp_avg"), lens[p]))?,
            exp_avg_sq: both(&|p| get(&opt, &format!("state.{p}.exp_avg_sq"), lens[p]))?,
            max_exp_avg_sq: both(&|p| get(&opt, &format!("state.{p}.max_exp_avg_sq"), lens[p]))?,
            step: m.step,
            epoch_loss: m
                .extra
                .get("epoch_loss")
                .and_then(|v| v.as_f64())
                .unwrap_or(0.0),
            best: m.best_metric.zip(m.best_step),
            stale_epochs: m.early_stop_counter,
        })
    }

    fn meta(
        &self,
        cfg: &Config,
        world: &World,
        reason: SaveReason,
        steps_per_epoch: u64,
    ) -> TrainerMeta {
        let epoch = self.step / steps_per_epoch + 1;
        let mut extra = serde_json::Map::new();
        extra.insert("epoch_loss".into(), self.epoch_loss.into());
        TrainerMeta {
            format_version: FORMAT_VERSION,
            step: self.step,
            epoch,
            cursor: LoaderCursor {
                epoch,
                batches_consumed: self.step % steps_per_epoch,
            },
            lambda: cfg.lambda(epoch as usize),
            best_metric: self.best.map(|b| b.0),
            best_step: self.best.map(|b| b.1),
            early_stop_counter: self.stale_epochs,
            lr: lrs(cfg, epoch).to_vec(),
            seed: cfg.train.seed,
            world_size: world.size,
            config_hash: config_hash(cfg),
            reason,
            extra,
        }
    }
}

/// StepLR: base · γ^⌊(epoch−1)/step_size⌋ for the two groups (lr_ve, lr_ed).
fn lrs(cfg: &Config, epoch: u64) -> [f64; 2] {
    let t = &cfg.train;
    let decay = t
        .lr_gamma
        .powi(((epoch - 1) / t.lr_step_size as u64) as i32);
    [t.lr_ve * decay, t.lr_ed * decay]
}

/// `ITHN_FAULT=hang:STEP:RANK`: that rank stops responding before step STEP's all-reduce.
fn hang_fault(step: u64, rank: usize) -> bool {
    std::env::var("ITHN_FAULT").is_ok_and(|s| s == format!("hang:{step}:{rank}"))
}

/// Runs the drill; returns the exit code (0 done, 3 checkpointed on a signal).
pub fn run(world: &World, args: &DrillArgs) -> anyhow::Result<i32> {
    let cfg = args.config.load()?;
    let (batch, w) = (cfg.train.batch_size, world.size);
    if batch % w != 0 || batch > SAMPLES {
        return Err(DrillError::Batch { batch, world: w }.into());
    }
    let local = batch / w;
    let steps_per_epoch = (SAMPLES / batch) as u64;
    let total = args
        .max_steps
        .unwrap_or(steps_per_epoch * cfg.train.epochs as u64);
    let seed = cfg.train.seed;
    let signals = SignalFlag::install().map_err(DrillError::Signals)?;
    let mgr = CheckpointManager::new(&args.run_dir, cfg.checkpoint.keep_last);

    let mut state = match mgr.resolve(&args.resume.mode()?)? {
        Some(ck) => {
            for key in ck.check_config(&cfg, args.resume.allow_config_change)? {
                tracing::warn!("resuming with a changed key: {key}");
            }
            tracing::info!(dir = %ck.dir.display(), step = ck.meta.step, from_world = ck.meta.world_size, "resuming");
            State::restore(&ck)?
        }
        None => State::fresh(seed),
    };
    let mut schedule = SaveSchedule::new(&cfg.checkpoint);
    let watchdog = Watchdog::start(Duration::from_secs_f64(cfg.dist.timeout_s), world.rank);

    while state.step < total {
        let epoch = state.step / steps_per_epoch + 1;
        let in_epoch = (state.step % steps_per_epoch) as usize;
        let order = permutation(seed, epoch);
        let start = in_epoch * batch + world.rank * local;
        if hang_fault(state.step + 1, world.rank) {
            tracing::error!(rank = world.rank, "ITHN_FAULT: this rank hangs");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        let mut grads = state.local_grads(seed, &order[start..start + local], batch);
        world.all_reduce_sum_f32(&mut grads);
        state.epoch_loss += f64::from(grads[OUT * IN + OUT]);
        state.adam(&grads, lrs(&cfg, epoch), &cfg);
        if world.is_root() {
            // One line per step on stdout: tests and people watch it to time their signals.
            println!(
                "drill: step {} loss {:.6}",
                state.step,
                grads[OUT * IN + OUT]
            );
        }
        watchdog.beat();
        std::thread::sleep(Duration::from_millis(args.step_ms));

        let epoch_end = state.step % steps_per_epoch == 0;
        let improved = epoch_end && end_epoch(&mut state, steps_per_epoch);
        let decision = schedule.after_step(world, state.step, epoch_end, signals.pending());
        let last = state.step == total;
        if let Some(reason) = decision.save.or(last.then_some(SaveReason::Final)) {
            save(world, &mgr, &cfg, &state, reason, steps_per_epoch)?;
            schedule.saved();
            if improved && world.is_root() {
                mgr.mark_best(state.step)?;
            }
        }
        watchdog.beat();
        if let Some(sig) = decision.signal {
            return Ok(stop_on_signal(
                world,
                sig,
                state.step,
                args.resume.requeue_on_signal,
            ));
        }
    }
    if world.is_root() {
        println!("drill: finished at step {}", state.step);
    }
    Ok(EXIT_OK)
}

/// Closes an epoch: compares its mean loss with the best so far. True when it improved.
fn end_epoch(state: &mut State, steps_per_epoch: u64) -> bool {
    let score = -state.epoch_loss / steps_per_epoch as f64;
    state.epoch_loss = 0.0;
    if state.best.is_none_or(|(b, _)| score > b) {
        state.best = Some((score, state.step));
        state.stale_epochs = 0;
        true
    } else {
        state.stale_epochs += 1;
        false
    }
}

fn save(
    world: &World,
    mgr: &CheckpointManager,
    cfg: &Config,
    state: &State,
    reason: SaveReason,
    spe: u64,
) -> Result<(), CheckpointError> {
    let (model, optimizer) = state.tensors();
    let meta = state.meta(cfg, world, reason, spe);
    let payload = Payload {
        model: &model,
        optimizer: &optimizer,
        meta: &meta,
        config: cfg,
        extra_files: &[],
    };
    let dir = mgr.save(world, &payload)?;
    tracing::info!(step = state.step, ?reason, dir = %dir.display(), "checkpoint saved");
    Ok(())
}

/// After the signal checkpoint: optionally requeue (rank 0, inside SLURM), then the exit code.
fn stop_on_signal(world: &World, sig: i32, step: u64, requeue: bool) -> i32 {
    tracing::warn!(
        step,
        "{} received: checkpoint written, stopping",
        signals::signal_name(sig)
    );
    if requeue && world.is_root() {
        match signals::requeue_slurm_job() {
            Ok(job) => tracing::info!("requeued SLURM job {job}"),
            Err(e) => tracing::error!("{e}"),
        }
    }
    EXIT_PREEMPTED
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
        let cfg = Config::from_toml_str("", std::path::Path::new("<t>"), &[]).unwrap();
        let run = tempfile::tempdir().unwrap();
        let mgr = CheckpointManager::new(run.path(), 2);
        let world = World::single();
        let mut s = State::fresh(1);
        let g = s.local_grads(1, &[0, 5, 9], 4);
        s.adam(&g, [1e-3, 1e-3], &cfg);
        s.epoch_loss = 0.123456789;
        save(&world, &mgr, &cfg, &s, SaveReason::Steps, 6).unwrap();
        let back = State::restore(
            &mgr.resolve(&super::super::ResumeMode::Auto)
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(back, s);
    }
}
