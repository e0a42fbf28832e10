//! THE optimizer step: the one recipe the trainer, `bench step` and the equivalence test run.
//!
//! [`OptimStep::step`] takes the micro-batches of one optimizer step as this rank holds them
//! (any split over the ranks: unequal, or empty on some ranks) and does, on every rank:
//!
//! 1. zero the gradients;
//! 2. [`objective_backward`]: the step's global counts, then forward + backward of every
//!    micro-batch (the exact global-batch ITHN objective, `train::step`), then the loss values;
//! 3. refuse a non-finite loss before anything changes (every rank holds the same reduced
//!    values, so every rank refuses together), naming the step as `metrics.jsonl` numbers it;
//! 4. exchange gradients: reduce-scatter the fused buckets ([`BucketPlan`], [`ShardPlan`]), so
//!    each rank holds the sum over ranks of its chunk of every bucket;
//! 5. update the parameters (Adam) at the learning rates the schedule set
//!    ([`OptimStep::set_lrs`]; StepLR moves per epoch, so the trainer sets them per epoch):
//!    * sharded (`dist.shard_optimizer`, the default, on 2 or more ranks; ZeRO-1): each rank
//!      steps Adam on its chunk of every bucket only, with that chunk's state only
//!      ([`ShardedAdam`]), then the updated parameters are all-gathered;
//!    * unsharded: the summed chunks are all-gathered into every gradient (reduce-scatter +
//!      all-gather = all-reduce) and every rank steps the whole model ([`Adam::step`]);
//! 6. sync buffers: with `model.batchnorm = "local"` every rank's BatchNorm running statistics
//!    become rank 0's (DDP's `broadcast_buffers`), so evaluation, checkpoints (rank 0's) and a
//!    resumed run see the same model on every rank.
//!
//! The two modes take bit-identical steps: both use the same reduce-scatter for the gradient
//! sums, and Adam is element-wise (see [`super::optim`]). Sharding divides the Adam time and the
//! Adam state memory (three moments per parameter element) by the world size; the traffic is
//! the same (one reduce-scatter and one all-gather of the model per step). After a sharded step
//! a parameter's `.grad` holds this rank's own (unsummed) gradient.
//!
//! Checkpoints stay independent of the world: [`OptimStep::state_tensors`] gathers the whole
//! state (collective), [`OptimStep::load_state_tensors`] takes this rank's part of it.

use std::collections::HashMap;
use std::time::Instant;

use tch::{Kind, Tensor};

use super::optim::{Adam, AdamConfig, OptimError};
use super::optim_shard::ShardedAdam;
use super::step::{objective_backward, IthnModel, LossTerms, Micro};
use crate::config::{BatchNormMode, Config, IthnConfig};
use crate::dist::buckets::BucketPlan;
use crate::dist::shards::ShardPlan;
use crate::dist::{Collectives, DistError};
use crate::model::R2GenCmn;

/// Why an optimizer step failed; `step` is the number `metrics.jsonl` gives it (1-based).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("step {step}: {source}")]
    Dist {
        step: u64,
        #[source]
        source: DistError,
    },
    #[error("step {step}: loss is not finite ({loss}: lm {lm}, l_cp {l_cp}, l_cs {l_cs}; {samples} samples, {tokens} target tokens); the parameters were not updated")]
    NonFinite {
        step: u64,
        loss: f64,
        lm: f64,
        l_cp: f64,
        l_cs: f64,
        samples: f64,
        tokens: f64,
    },
}

/// The optimizer step of a model: its optimizer, gradient shards, objective and buffers to sync.
#[derive(Debug)]
pub struct OptimStep {
    optimizer: Optimizer,
    /// Every parameter and its name, in optimizer order.
    params: Vec<Tensor>,
    names: Vec<String>,
    /// The buckets' split over the world the step was built for.
    shards: ShardPlan,
    objective: IthnConfig,
    /// Buffers that a training forward changes per rank (BatchNorm statistics in `local` mode).
    buffers: Vec<Tensor>,
}

/// Adam over every parameter, or (ZeRO-1) over this rank's chunk of every bucket.
#[derive(Debug)]
enum Optimizer {
    Whole(Adam),
    Sharded(ShardedAdam),
}

/// Which rank of how many a step is built for, and whether it shards the optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub rank: usize,
    pub size: usize,
    /// ZeRO-1: each rank steps and keeps the state of its shard only (no effect on one rank).
    pub shard: bool,
}

impl Layout {
    /// The layout of `coll`'s world, sharded when `shard` and the world has 2 or more ranks.
    pub fn of(coll: &dyn Collectives, shard: bool) -> Layout {
        Layout {
            rank: coll.rank(),
            size: coll.size(),
            shard,
        }
    }
}

/// The parameters the objective trains, in the given order. The ITHN heads serve only their
/// terms — the temperatures and the text projection L_cp, the image projection L_cp and L_cs —
/// so with those weights at 0 (`ithn.w_cp`, `ithn.w_cs`: the no-ITHN ablation) they are left out
/// of the optimizer, as a PyTorch parameter whose `.grad` stays `None` is. Kept in, weight decay
/// alone shrinks them geometrically (Adam turns `wd·p` into steps of ~lr) until `x / ‖x‖` of
/// the projections is 0/0: a no-ITHN run at lr 2e-3 stopped with a NaN L_cs at step 958.
pub fn objective_parameters(
    params: Vec<(String, Tensor, usize)>,
    cfg: &IthnConfig,
) -> Vec<(String, Tensor, usize)> {
    let cp_only = |n: &str| n == "temp_1" || n == "temp_3" || n.starts_with("text_projection.");
    params
        .into_iter()
        .filter(|(name, _, _)| {
            let cp_off = cfg.w_cp == 0.0 && cp_only(name);
            let both_off =
                cfg.w_cp == 0.0 && cfg.w_cs == 0.0 && name.starts_with("img_projection.");
            !(cp_off || both_off)
        })
        .collect()
}

impl OptimStep {
    /// The step of `model` on `coll`'s world as `cfg` configures it: Adam over the model's
    /// parameter groups at (lr_ve, lr_ed), sharded when `dist.shard_optimizer`, gradient
    /// buckets of `dist.bucket_mb` MiB, the `ithn` objective, and the BatchNorm buffers to keep
    /// in sync when `model.batchnorm = "local"`.
    pub fn new(
        model: &R2GenCmn,
        cfg: &Config,
        coll: &dyn Collectives,
    ) -> Result<OptimStep, OptimError> {
        let buffers = if cfg.model.batchnorm == BatchNormMode::Local {
            batchnorm_buffers(model, cfg.model.freeze_visual_extractor)
        } else {
            Vec::new()
        };
        OptimStep::from_parts(
            objective_parameters(model.parameters(), &cfg.ithn),
            cfg.train.initial_lrs(),
            AdamConfig::from_train(&cfg.train),
            cfg.dist.bucket_mb,
            cfg.ithn.clone(),
            buffers,
            Layout::of(coll, cfg.dist.shard_optimizer),
        )
    }

    /// A step over explicit parts (`params` as [`Adam::new`] takes them) for `layout`.
    pub fn from_parts(
        params: Vec<(String, Tensor, usize)>,
        lrs: Vec<f64>,
        adam: AdamConfig,
        bucket_mb: f64,
        objective: IthnConfig,
        buffers: Vec<Tensor>,
        layout: Layout,
    ) -> Result<OptimStep, OptimError> {
        let tensors: Vec<Tensor> = params.iter().map(|(_, p, _)| p.shallow_clone()).collect();
        let names: Vec<String> = params.iter().map(|(n, _, _)| n.clone()).collect();
        let numels: Vec<i64> = tensors.iter().map(|p| p.numel() as i64).collect();
        let plan = BucketPlan::for_params(&tensors, bucket_mb);
        let shards = ShardPlan::new(&plan, &numels, layout.rank, layout.size);
        let sharded = layout.shard && layout.size > 1 && !tensors.is_empty();
        let optimizer = if sharded {
            let groups: Vec<usize> = params.iter().map(|(_, _, g)| *g).collect();
            Optimizer::Sharded(ShardedAdam::new(&shards, &groups, lrs, adam, &tensors[0])?)
        } else {
            Optimizer::Whole(Adam::new(params, lrs, adam)?)
        };
        Ok(OptimStep {
            optimizer,
            params: tensors,
            names,
            shards,
            objective,
            buffers,
        })
    }

    /// One optimizer step over `micros` (this rank's part of each micro-batch; every rank
    /// passes the same number). `step` is the number this step gets in `metrics.jsonl` (the
    /// count of steps taken before it, plus one); errors carry it. Collective.
    pub fn step<M: IthnModel + ?Sized>(
        &mut self,
        model: &M,
        micros: &[Micro],
        coll: &dyn Collectives,
        step: u64,
    ) -> Result<LossTerms, StepError> {
        let dist = |source| StepError::Dist { step, source };
        if tracing::enabled!(target: "ithn_dist::samples", tracing::Level::DEBUG) {
            let rows: Vec<&[u64]> = micros.iter().map(|m| m.indices.as_slice()).collect();
            tracing::debug!(target: "ithn_dist::samples", step, rank = coll.rank(), rows = ?rows, "step samples");
        }
        self.zero_grad();
        let mut terms = objective_backward(model, micros, &self.objective, coll).map_err(dist)?;
        if !terms.loss.is_finite() {
            return Err(StepError::NonFinite {
                step,
                loss: terms.loss,
                lm: terms.lm,
                l_cp: terms.l_cp,
                l_cs: terms.l_cs,
                samples: terms.samples,
                tokens: terms.tokens,
            });
        }
        match &mut self.optimizer {
            Optimizer::Whole(adam) if coll.size() == 1 => {
                let clock = Instant::now();
                adam.step();
                terms.times.optimizer += clock.elapsed().as_secs_f64();
            }
            Optimizer::Whole(_) => self.replicated_update(coll, &mut terms).map_err(dist)?,
            Optimizer::Sharded(_) => self.sharded_update(coll, &mut terms).map_err(dist)?,
        }
        let clock = Instant::now();
        self.sync_buffers(coll).map_err(dist)?;
        terms.times.comm += clock.elapsed().as_secs_f64();
        Ok(terms)
    }

    /// Clears every parameter's gradient.
    fn zero_grad(&self) {
        for p in &self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.detach_();
                let _ = g.zero_();
            }
        }
    }

    /// ZeRO-1: reduce-scatter the gradients, step this rank's chunks, all-gather the parameters.
    fn sharded_update(
        &mut self,
        coll: &dyn Collectives,
        terms: &mut LossTerms,
    ) -> Result<(), DistError> {
        let Optimizer::Sharded(adam) = &mut self.optimizer else {
            unreachable!("sharded_update runs with the sharded optimizer");
        };
        let clock = Instant::now();
        let grads = self.shards.reduce_scatter_grads(&self.params, coll)?;
        terms.times.comm += clock.elapsed().as_secs_f64();
        let clock = Instant::now();
        let pieces: Vec<Tensor> = self
            .shards
            .pieces()
            .iter()
            .map(|p| {
                let flat = self.params[p.param].detach().reshape([-1]);
                flat.narrow(0, p.param_offset, p.len)
            })
            .collect();
        let first = &self.params[0];
        let mut chunks = self.shards.chunks_of(&pieces, first.kind(), first);
        adam.step(&self.shards, &mut chunks, &grads);
        terms.times.optimizer += clock.elapsed().as_secs_f64();
        let clock = Instant::now();
        self.shards.all_gather_into(&chunks, &self.params, coll)?;
        terms.times.comm += clock.elapsed().as_secs_f64();
        Ok(())
    }

    /// Every rank steps the whole model with the summed gradients (reduce-scatter, then
    /// all-gather of the summed chunks into every `.grad`).
    fn replicated_update(
        &mut self,
        coll: &dyn Collectives,
        terms: &mut LossTerms,
    ) -> Result<(), DistError> {
        let Optimizer::Whole(adam) = &mut self.optimizer else {
            unreachable!("replicated_update runs with the whole optimizer");
        };
        let clock = Instant::now();
        let chunks = self.shards.reduce_scatter_grads(&self.params, coll)?;
        let grads: Vec<Tensor> = self.params.iter().map(|p| p.grad()).collect();
        self.shards.all_gather_into(&chunks, &grads, coll)?;
        terms.times.comm += clock.elapsed().as_secs_f64();
        let clock = Instant::now();
        adam.step();
        terms.times.optimizer += clock.elapsed().as_secs_f64();
        Ok(())
    }

    /// Rank 0's buffers become everyone's: one fused broadcast per element kind.
    fn sync_buffers(&self, coll: &dyn Collectives) -> Result<(), DistError> {
        if coll.size() == 1 || self.buffers.is_empty() {
            return Ok(());
        }
        tch::no_grad(|| {
            for kind in [Kind::Float, Kind::Double, Kind::Int64] {
                let of_kind: Vec<&Tensor> =
                    self.buffers.iter().filter(|b| b.kind() == kind).collect();
                if of_kind.is_empty() {
                    continue;
                }
                let flat: Vec<Tensor> = of_kind.iter().map(|b| b.reshape([-1])).collect();
                let mut fused = Tensor::cat(&flat, 0);
                coll.broadcast(&mut fused, 0)?;
                let mut at = 0i64;
                for b in of_kind {
                    let n = b.numel() as i64;
                    let mut b = b.shallow_clone();
                    b.copy_(&fused.narrow(0, at, n).view_as(&b));
                    at += n;
                }
            }
            Ok(())
        })
    }

    /// The learning rate of each parameter group.
    pub fn lrs(&self) -> &[f64] {
        match &self.optimizer {
            Optimizer::Whole(a) => a.lrs(),
            Optimizer::Sharded(a) => a.lrs(),
        }
    }

    /// Sets every group's learning rate (the schedule owns the values).
    pub fn set_lrs(&mut self, lrs: &[f64]) {
        match &mut self.optimizer {
            Optimizer::Whole(a) => a.set_lrs(lrs),
            Optimizer::Sharded(a) => a.set_lrs(lrs),
        }
    }

    /// The parameters in optimizer order.
    pub fn params(&self) -> Vec<Tensor> {
        self.params.iter().map(|p| p.shallow_clone()).collect()
    }

    /// Whether this step shards the optimizer (ZeRO-1; 2 or more ranks).
    pub fn sharded(&self) -> bool {
        matches!(self.optimizer, Optimizer::Sharded(_))
    }

    /// Elements of Adam state (moments) this rank holds: about 1/world of the unsharded
    /// optimizer's when sharded.
    pub fn state_numel(&self) -> usize {
        match &self.optimizer {
            Optimizer::Whole(a) => a.state_numel(),
            Optimizer::Sharded(a) => a.state_numel(),
        }
    }

    /// The whole optimizer state for a checkpoint, the same on every rank and for every world
    /// size (see [`Adam::state_tensors`]). Collective when sharded: every rank calls it.
    pub fn state_tensors(
        &self,
        coll: &dyn Collectives,
    ) -> Result<Vec<(String, Tensor)>, DistError> {
        match &self.optimizer {
            Optimizer::Whole(a) => Ok(a.state_tensors()),
            Optimizer::Sharded(a) => a.state_tensors(&self.shards, &self.params, &self.names, coll),
        }
    }

    /// Restores optimizer state written by [`OptimStep::state_tensors`] (by any world size);
    /// a sharded step keeps its chunk of it.
    pub fn load_state_tensors(&mut self, map: &HashMap<String, Tensor>) -> Result<(), OptimError> {
        match &mut self.optimizer {
            Optimizer::Whole(a) => a.load_state_tensors(map),
            Optimizer::Sharded(a) => {
                a.load_state_tensors(&self.shards, &self.params, &self.names, map)
            }
        }
    }
}

/// The BatchNorm running statistics of the model (what a `local`-mode training forward updates).
/// The BatchNorm statistics to keep in sync; a frozen extractor's never change, so they are
/// left out (no broadcast each step).
fn batchnorm_buffers(model: &R2GenCmn, frozen_extractor: bool) -> Vec<Tensor> {
    const STATS: [&str; 3] = [".running_mean", ".running_var", ".num_batches_tracked"];
    model
        .registry()
        .state_dict()
        .into_iter()
        .filter(|(name, _)| !(frozen_extractor && name.starts_with("visual_extractor.")))
        .filter(|(name, _)| STATS.iter().any(|s| name.ends_with(s)))
        .map(|(_, t)| t)
        .collect()
}

#[cfg(test)]
#[path = "optim_step_tests.rs"]
mod tests;
