//! The sharded optimizer (ZeRO-1, Rajbhandari et al. 2020, stage 1): Adam over this rank's
//! chunk of every gradient bucket ([`ShardPlan`]), on flat tensors.
//!
//! The chunk of a bucket is stepped in runs of consecutive pieces that share a parameter group
//! and a step count, each run as one flat tensor: with [`adam_math`] element-wise, that gives
//! every element the bits the per-parameter step of [`super::optim::Adam`] gives it, with a
//! handful of kernels per bucket instead of a handful per parameter. The moments cover the
//! chunk only (1/world of the model, plus at most world − 1 padding elements per bucket).
//!
//! State as checkpoints hold it: whole tensors per parameter, in [`Adam`]'s keys
//! (`"{name}.step"`, `.exp_avg`, `.exp_avg_sq`, `.max_exp_avg_sq`), the same for every world
//! size, so a run resumes on any number of ranks ([`ShardedAdam::state_tensors`] gathers them,
//! [`ShardedAdam::load_state_tensors`] keeps this rank's elements).
//!
//! [`Adam`]: super::optim::Adam

use std::collections::HashMap;

use tch::{Device, Kind, Tensor};

use super::optim::{adam_math, AdamConfig, OptimError};
use crate::dist::shards::{Piece, ShardPlan};
use crate::dist::{Collectives, DistError};

const MOMENTS: [&str; 3] = ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"];

/// Adam over one rank's shard of the model.
#[derive(Debug)]
pub struct ShardedAdam {
    cfg: AdamConfig,
    lrs: Vec<f64>,
    /// Per bucket: `[exp_avg, exp_avg_sq, max_exp_avg_sq]`, each `[chunk]`.
    moments: Vec<[Tensor; 3]>,
    /// Per piece (in [`ShardPlan::pieces`] order): its parameter's group and step count
    /// (0: never stepped, zero moments, like PyTorch's lazily created state).
    groups: Vec<usize>,
    steps: Vec<f64>,
}

impl ShardedAdam {
    /// Fresh state for `shards`; `groups[i]` is parameter i's group, `like` gives the moments'
    /// kind and device (the parameters'). Errors: a group without a learning rate.
    pub fn new(
        shards: &ShardPlan,
        groups: &[usize],
        lrs: Vec<f64>,
        cfg: AdamConfig,
        like: &Tensor,
    ) -> Result<ShardedAdam, OptimError> {
        if let Some(&g) = groups.iter().find(|&&g| g >= lrs.len()) {
            return Err(OptimError::NoGroup {
                group: g,
                groups: lrs.len(),
            });
        }
        let zeros = |n: i64| Tensor::zeros([n], (like.kind(), like.device()));
        let moments = shards
            .chunks()
            .iter()
            .map(|&n| [zeros(n), zeros(n), zeros(n)])
            .collect();
        let groups: Vec<usize> = shards.pieces().iter().map(|p| groups[p.param]).collect();
        let steps = vec![0.0; groups.len()];
        Ok(ShardedAdam {
            cfg,
            lrs,
            moments,
            groups,
            steps,
        })
    }

    /// Sets every group's learning rate.
    pub fn set_lrs(&mut self, lrs: &[f64]) {
        let n = self.lrs.len().min(lrs.len());
        self.lrs[..n].copy_from_slice(&lrs[..n]);
    }

    pub fn lrs(&self) -> &[f64] {
        &self.lrs
    }

    /// Elements of optimizer state held (moments, padding included).
    pub fn state_numel(&self) -> usize {
        self.moments.iter().map(|m| 3 * m[0].numel()).sum()
    }

    /// One step: `params[b]` is this rank's chunk of bucket b's parameters (updated in place),
    /// `grads[b]` the summed gradients of the same elements.
    pub fn step(&mut self, shards: &ShardPlan, params: &mut [Tensor], grads: &[Tensor]) {
        let pieces = shards.pieces();
        tch::no_grad(|| {
            let mut k = 0;
            while k < pieces.len() {
                // A run: consecutive pieces of one bucket with one group and one step count.
                let (b, group, step) = (pieces[k].bucket, self.groups[k], self.steps[k]);
                let mut end = k + 1;
                while end < pieces.len()
                    && pieces[end].bucket == b
                    && self.groups[end] == group
                    && self.steps[end] == step
                {
                    end += 1;
                }
                let start = pieces[k].chunk_offset;
                let len = pieces[end - 1].chunk_offset + pieces[end - 1].len - start;
                let view = |t: &Tensor| t.narrow(0, start, len);
                let [m, v, vmax] = &self.moments[b];
                let (mut m, mut v, mut vmax) = (view(m), view(v), view(vmax));
                let lr = self.lrs[group];
                let mut p = view(&params[b]);
                adam_math(
                    &self.cfg,
                    lr,
                    step + 1.0,
                    &mut p,
                    &view(&grads[b]),
                    [&mut m, &mut v, &mut vmax],
                );
                self.steps[k..end].iter_mut().for_each(|s| *s = step + 1.0);
                k = end;
            }
        })
    }

    /// The whole state of every parameter that has stepped, in [`super::optim::Adam`]'s keys
    /// and order; `params` and `names` list every parameter in optimizer order. Collective:
    /// every rank calls it and gets the same tensors.
    pub fn state_tensors(
        &self,
        shards: &ShardPlan,
        params: &[Tensor],
        names: &[String],
        coll: &dyn Collectives,
    ) -> Result<Vec<(String, Tensor)>, DistError> {
        let Some(like) = params.first() else {
            return Ok(Vec::new());
        };
        let steps = self.gather_steps(shards, params.len(), coll)?;
        let mut whole: Vec<Vec<Tensor>> = Vec::with_capacity(3);
        for m in 0..3 {
            let chunks: Vec<Tensor> = self.moments.iter().map(|t| t[m].shallow_clone()).collect();
            let out: Vec<Tensor> = params.iter().map(|p| p.detach().zeros_like()).collect();
            shards.all_gather_into(&chunks, &out, coll)?;
            whole.push(out);
        }
        let mut out = Vec::new();
        for (i, &step) in steps.iter().enumerate().filter(|(_, &s)| s > 0.0) {
            let step = Tensor::from_slice(&[step as f32])
                .reshape([])
                .to_device(like.device());
            out.push((format!("{}.step", names[i]), step));
            for (m, key) in MOMENTS.iter().enumerate() {
                out.push((format!("{}.{key}", names[i]), whole[m][i].shallow_clone()));
            }
        }
        Ok(out)
    }

    /// Every parameter's step count (0: never stepped), from the rank holding its first element.
    fn gather_steps(
        &self,
        shards: &ShardPlan,
        n: usize,
        coll: &dyn Collectives,
    ) -> Result<Vec<f64>, DistError> {
        let mut steps = vec![0f64; n];
        for (piece, &s) in shards.pieces().iter().zip(&self.steps) {
            if piece.param_offset == 0 {
                steps[piece.param] = s;
            }
        }
        let mut t = Tensor::from_slice(&steps).to_device(coll.device());
        coll.all_reduce_sum(&mut t)?;
        Vec::<f64>::try_from(&t.to_device(Device::Cpu)).map_err(|e| DistError::Collective {
            rank: coll.rank(),
            message: format!("optimizer state gather: {e}"),
        })
    }

    /// Restores the state of whole parameters (by any world size) into this rank's chunk: a
    /// parameter without a `step` entry starts fresh; one with a `step` but a missing or
    /// misshapen moment is an error naming the key.
    pub fn load_state_tensors(
        &mut self,
        shards: &ShardPlan,
        params: &[Tensor],
        names: &[String],
        map: &HashMap<String, Tensor>,
    ) -> Result<(), OptimError> {
        for (k, piece) in shards.pieces().iter().enumerate() {
            let name = &names[piece.param];
            let step = map.get(&format!("{name}.step"));
            self.steps[k] = match step {
                Some(s) => s.to_kind(Kind::Double).reshape([-1]).double_value(&[0]),
                None => 0.0,
            };
            for (m, key) in MOMENTS.iter().enumerate() {
                let mut dst =
                    self.moments[piece.bucket][m].narrow(0, piece.chunk_offset, piece.len);
                let src = match step {
                    None => dst.zeros_like(),
                    Some(_) => piece_of(map, name, key, &params[piece.param], piece)?,
                };
                tch::no_grad(|| dst.copy_(&src));
            }
        }
        Ok(())
    }
}

/// The elements of `piece` of the checkpointed moment `{name}.{key}` (checked against the
/// parameter's shape).
fn piece_of(
    map: &HashMap<String, Tensor>,
    name: &str,
    key: &str,
    param: &Tensor,
    piece: &Piece,
) -> Result<Tensor, OptimError> {
    let full = format!("{name}.{key}");
    let t = map.get(&full).ok_or_else(|| OptimError::MissingState {
        param: name.to_string(),
        key: full.clone(),
    })?;
    if t.size() != param.size() {
        return Err(OptimError::Shape {
            key: full,
            got: t.size(),
            want: param.size(),
        });
    }
    Ok(t.reshape([-1])
        .narrow(0, piece.param_offset, piece.len)
        .to_device(param.device())
        .to_kind(param.kind()))
}
