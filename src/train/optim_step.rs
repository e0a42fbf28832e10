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
//! 4. exchange gradients: sum over ranks in fused buckets ([`BucketPlan`]);
//! 5. update the parameters (Adam, [`Adam::step`]) at the learning rates the schedule set
//!    ([`OptimStep::set_lrs`]; StepLR moves per epoch, so the trainer sets them per epoch);
//! 6. sync buffers: with `model.batchnorm = "local"` every rank's BatchNorm running statistics
//!    become rank 0's (DDP's `broadcast_buffers`), so evaluation, checkpoints (rank 0's) and a
//!    resumed run see the same model on every rank.
//!
//! Steps 4–5 are where ZeRO-1 optimizer sharding goes: reduce-scatter the fused gradients so
//! each rank holds the sum of its shard, step Adam on that shard's parameters and moments only,
//! all-gather the updated parameters. The unit owns the optimizer and its state
//! ([`OptimStep::state_tensors`], [`OptimStep::load_state_tensors`]) for that reason: a sharded
//! variant changes what those return without touching its callers.

use std::collections::HashMap;
use std::time::Instant;

use tch::{Kind, Tensor};

use super::optim::{Adam, AdamConfig, OptimError};
use super::step::{objective_backward, IthnModel, LossTerms, Micro};
use crate::config::{BatchNormMode, Config, IthnConfig};
use crate::dist::buckets::BucketPlan;
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

/// The optimizer step of a model: its optimizer, bucket plan, objective and buffers to sync.
#[derive(Debug)]
pub struct OptimStep {
    optimizer: Adam,
    plan: BucketPlan,
    objective: IthnConfig,
    /// Buffers that a training forward changes per rank (BatchNorm statistics in `local` mode).
    buffers: Vec<Tensor>,
}

impl OptimStep {
    /// The step of `model` as `cfg` configures it: Adam over the model's parameter groups at
    /// (lr_ve, lr_ed), gradient buckets of `dist.bucket_mb` MiB, the `ithn` objective, and the
    /// BatchNorm buffers to keep in sync when `model.batchnorm = "local"`.
    pub fn new(model: &R2GenCmn, cfg: &Config) -> Result<OptimStep, OptimError> {
        let buffers = if cfg.model.batchnorm == BatchNormMode::Local {
            batchnorm_buffers(model)
        } else {
            Vec::new()
        };
        OptimStep::from_parts(
            model.parameters(),
            cfg.train.initial_lrs(),
            AdamConfig::from_train(&cfg.train),
            cfg.dist.bucket_mb,
            cfg.ithn.clone(),
            buffers,
        )
    }

    /// A step over explicit parts (`params` as [`Adam::new`] takes them).
    pub fn from_parts(
        params: Vec<(String, Tensor, usize)>,
        lrs: Vec<f64>,
        adam: AdamConfig,
        bucket_mb: f64,
        objective: IthnConfig,
        buffers: Vec<Tensor>,
    ) -> Result<OptimStep, OptimError> {
        let tensors: Vec<Tensor> = params.iter().map(|(_, p, _)| p.shallow_clone()).collect();
        Ok(OptimStep {
            plan: BucketPlan::for_params(&tensors, bucket_mb),
            optimizer: Adam::new(params, lrs, adam)?,
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
        self.optimizer.zero_grad();
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
        let clock = Instant::now();
        self.plan
            .all_reduce_grads(&self.optimizer.params(), coll)
            .map_err(dist)?;
        terms.times.comm += clock.elapsed().as_secs_f64();
        let clock = Instant::now();
        self.optimizer.step();
        terms.times.optimizer += clock.elapsed().as_secs_f64();
        let clock = Instant::now();
        self.sync_buffers(coll).map_err(dist)?;
        terms.times.comm += clock.elapsed().as_secs_f64();
        Ok(terms)
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
        self.optimizer.lrs()
    }

    /// Sets every group's learning rate (the schedule owns the values).
    pub fn set_lrs(&mut self, lrs: &[f64]) {
        self.optimizer.set_lrs(lrs);
    }

    /// The parameters in optimizer order.
    pub fn params(&self) -> Vec<Tensor> {
        self.optimizer.params()
    }

    /// The optimizer state for a checkpoint (see [`Adam::state_tensors`]).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        self.optimizer.state_tensors()
    }

    /// Restores optimizer state written by [`OptimStep::state_tensors`].
    pub fn load_state_tensors(&mut self, map: &HashMap<String, Tensor>) -> Result<(), OptimError> {
        self.optimizer.load_state_tensors(map)
    }
}

/// The BatchNorm running statistics of the model (what a `local`-mode training forward updates).
fn batchnorm_buffers(model: &R2GenCmn) -> Vec<Tensor> {
    const STATS: [&str; 3] = [".running_mean", ".running_var", ".num_batches_tracked"];
    model
        .registry()
        .state_dict()
        .into_iter()
        .filter(|(name, _)| STATS.iter().any(|s| name.ends_with(s)))
        .map(|(_, t)| t)
        .collect()
}

#[cfg(test)]
#[path = "optim_step_tests.rs"]
mod tests;
