//! Adam with AMSGrad and L2 weight decay, with `torch.optim.Adam` semantics (single-tensor
//! path), so that a run here and the reference take the same steps.
//!
//! Why not tch's optimizer: it cannot hold two groups with their own state as plain tensors,
//! and its arithmetic differs in the last bits. This one follows the reference op by op
//! (fixture README §3.6): tensor arithmetic in float32, scalar factors computed in double and
//! rounded to float32 where they multiply a tensor:
//!
//! ```text
//! g'   = g + wd·p                       (torch.add(g, p, alpha=wd): one fused multiply-add)
//! m    = lerp(m, g', 1 − β1)
//! v    = β2·v + ((1 − β2)·g')·g'
//! vmax = max(vmax, v)
//! den  = sqrt(vmax) / sqrt(1 − β2^t) + eps
//! p    = p + ((−lr/(1 − β1^t))·m) / den
//! ```
//!
//! All state (step, m, v, vmax per parameter) lives in tensors so a checkpoint can save and
//! restore it exactly ([`Adam::state_tensors`], [`Adam::load_state_tensors`]).
//!
//! Every operation above is element-wise, with scalar factors that depend only on the
//! parameter's group and step count ([`adam_math`]). So any flat range of elements stepped on
//! its own gets the bits the whole step gives it: the sharded optimizer
//! ([`super::optim_shard::ShardedAdam`], ZeRO-1) steps each rank's chunk of every gradient
//! bucket as one flat tensor.

use std::collections::HashMap;

use tch::{Kind, Tensor};

use crate::config::TrainConfig;

/// Errors restoring optimizer state; each names the parameter and the state key.
#[derive(Debug, thiserror::Error)]
pub enum OptimError {
    #[error("optimizer state for parameter {param:?}: key {key:?} is missing")]
    MissingState { param: String, key: String },
    #[error("optimizer state {key:?}: shape {got:?} does not match the parameter's {want:?}")]
    Shape {
        key: String,
        got: Vec<i64>,
        want: Vec<i64>,
    },
    #[error("optimizer group {group} does not exist (the optimizer has {groups} groups)")]
    NoGroup { group: usize, groups: usize },
}

/// Hyper-parameters shared by every group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub amsgrad: bool,
}

impl AdamConfig {
    pub fn from_train(t: &TrainConfig) -> AdamConfig {
        AdamConfig {
            beta1: t.adam_betas[0],
            beta2: t.adam_betas[1],
            eps: t.adam_eps,
            weight_decay: t.weight_decay,
            amsgrad: t.amsgrad,
        }
    }
}

/// Per-parameter state, created lazily on its first step (like PyTorch).
#[derive(Debug)]
struct ParamState {
    /// float32 0-d tensor, as PyTorch keeps it.
    step: Tensor,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
    max_exp_avg_sq: Tensor,
}

/// One trainable tensor and the group it belongs to.
#[derive(Debug)]
struct Slot {
    name: String,
    param: Tensor,
    group: usize,
    state: Option<ParamState>,
}

/// Adam over named parameters split into groups with their own learning rate.
#[derive(Debug)]
pub struct Adam {
    cfg: AdamConfig,
    lrs: Vec<f64>,
    slots: Vec<Slot>,
}

const STATE_KEYS: [&str; 4] = ["step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"];

impl Adam {
    /// `params` are `(name, tensor, group)` in the order the optimizer walks them (the
    /// reference's parameter order); `lrs[g]` is group g's learning rate.
    pub fn new(
        params: Vec<(String, Tensor, usize)>,
        lrs: Vec<f64>,
        cfg: AdamConfig,
    ) -> Result<Adam, OptimError> {
        if let Some((_, _, g)) = params.iter().find(|(_, _, g)| *g >= lrs.len()) {
            return Err(OptimError::NoGroup {
                group: *g,
                groups: lrs.len(),
            });
        }
        let slots = params
            .into_iter()
            .map(|(name, param, group)| Slot {
                name,
                param,
                group,
                state: None,
            })
            .collect();
        Ok(Adam { cfg, lrs, slots })
    }

    pub fn lrs(&self) -> &[f64] {
        &self.lrs
    }

    /// Sets every group's learning rate (the schedule owns the values).
    pub fn set_lrs(&mut self, lrs: &[f64]) {
        let n = self.lrs.len().min(lrs.len());
        self.lrs[..n].copy_from_slice(&lrs[..n]);
    }

    /// The parameters in optimizer order.
    pub fn params(&self) -> Vec<Tensor> {
        self.slots.iter().map(|s| s.param.shallow_clone()).collect()
    }

    /// Clears every gradient.
    pub fn zero_grad(&self) {
        for s in &self.slots {
            let mut g = s.param.grad();
            if g.defined() {
                let _ = g.detach_();
                let _ = g.zero_();
            }
        }
    }

    /// One optimizer step over every parameter that has a gradient.
    pub fn step(&mut self) {
        let cfg = self.cfg;
        let lrs = &self.lrs;
        let slots = &mut self.slots;
        tch::no_grad(|| {
            for slot in slots.iter_mut() {
                let grad = slot.param.grad();
                if !grad.defined() {
                    continue; // PyTorch skips parameters whose .grad is None
                }
                let lr = lrs[slot.group];
                let state = slot
                    .state
                    .get_or_insert_with(|| ParamState::zeros(&slot.param));
                adam_update(&cfg, lr, &mut slot.param, &grad, state);
            }
        })
    }

    /// Elements of optimizer state held (moments; step counts not counted).
    pub fn state_numel(&self) -> usize {
        self.slots
            .iter()
            .filter_map(|s| s.state.as_ref())
            .map(|st| 3 * st.exp_avg.numel())
            .sum()
    }

    /// Every state tensor as `(key, tensor)`, key = `"{param}.{step|exp_avg|exp_avg_sq|max_exp_avg_sq}"`;
    /// parameters that never stepped have no entries.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for s in &self.slots {
            if let Some(st) = &s.state {
                for (k, t) in STATE_KEYS.iter().zip(st.tensors()) {
                    out.push((format!("{}.{k}", s.name), t.shallow_clone()));
                }
            }
        }
        out
    }

    /// Restores state written by [`Adam::state_tensors`]. A parameter with no `step` entry is
    /// left fresh; one with a `step` but a missing moment is an error.
    pub fn load_state_tensors(&mut self, map: &HashMap<String, Tensor>) -> Result<(), OptimError> {
        for s in &mut self.slots {
            let step_key = format!("{}.step", s.name);
            let Some(step) = map.get(&step_key) else {
                s.state = None;
                continue;
            };
            let mut moments = Vec::with_capacity(3);
            for k in &STATE_KEYS[1..] {
                let key = format!("{}.{k}", s.name);
                let t = map.get(&key).ok_or_else(|| OptimError::MissingState {
                    param: s.name.clone(),
                    key: key.clone(),
                })?;
                if t.size() != s.param.size() {
                    return Err(OptimError::Shape {
                        key,
                        got: t.size(),
                        want: s.param.size(),
                    });
                }
                moments.push(t.to_device(s.param.device()).to_kind(s.param.kind()));
            }
            let mut it = moments.into_iter();
            s.state = Some(ParamState {
                step: step
                    .to_kind(Kind::Float)
                    .to_device(s.param.device())
                    .reshape([]),
                exp_avg: it.next().unwrap_or_else(|| s.param.zeros_like()),
                exp_avg_sq: it.next().unwrap_or_else(|| s.param.zeros_like()),
                max_exp_avg_sq: it.next().unwrap_or_else(|| s.param.zeros_like()),
            });
        }
        Ok(())
    }
}

impl ParamState {
    fn zeros(p: &Tensor) -> ParamState {
        ParamState {
            step: Tensor::zeros([], (Kind::Float, p.device())),
            exp_avg: p.detach().zeros_like(),
            exp_avg_sq: p.detach().zeros_like(),
            max_exp_avg_sq: p.detach().zeros_like(),
        }
    }

    fn tensors(&self) -> [&Tensor; 4] {
        [
            &self.step,
            &self.exp_avg,
            &self.exp_avg_sq,
            &self.max_exp_avg_sq,
        ]
    }
}

/// `g + wd·p` rounded once, as ATen's vectorised `add(alpha=)` computes it with a fused
/// multiply-add. Emulated in float64: the product of two float32 values is exact there, so
/// only the sum is rounded (then to float32; the double rounding this adds is one in ~2^29).
fn add_weight_decay(g: &Tensor, p: &Tensor, wd: f64) -> Tensor {
    let alpha = wd as f32 as f64;
    (g.to_kind(Kind::Double) + p.to_kind(Kind::Double) * alpha).to_kind(g.kind())
}

/// One `torch.optim.Adam` single-tensor update of `param` (in place).
fn adam_update(cfg: &AdamConfig, lr: f64, param: &mut Tensor, grad: &Tensor, st: &mut ParamState) {
    let _ = st.step.g_add_scalar_(1.0);
    let step = st.step.double_value(&[]);
    let moments = [&mut st.exp_avg, &mut st.exp_avg_sq, &mut st.max_exp_avg_sq];
    adam_math(cfg, lr, step, param, grad, moments);
}

/// The update of step number `step` (already counted) of `param` with `grad` and the moments
/// `[exp_avg, exp_avg_sq, max_exp_avg_sq]`, all in place and element-wise: any flat range of
/// elements (a shard) updated on its own gets the bits the whole tensor's update gives it.
pub(crate) fn adam_math(
    cfg: &AdamConfig,
    lr: f64,
    step: f64,
    param: &mut Tensor,
    grad: &Tensor,
    [exp_avg, exp_avg_sq, max_exp_avg_sq]: [&mut Tensor; 3],
) {
    let grad = if cfg.weight_decay != 0.0 {
        add_weight_decay(grad, param, cfg.weight_decay)
    } else {
        grad.shallow_clone()
    };
    let _ = exp_avg.lerp_(&grad, 1.0 - cfg.beta1);
    let _ = exp_avg_sq.g_mul_scalar_(cfg.beta2);
    let _ = exp_avg_sq.g_add_(&(grad.g_mul_scalar(1.0 - cfg.beta2) * &grad));
    let bias_correction1 = 1.0 - cfg.beta1.powf(step);
    let bias_correction2 = 1.0 - cfg.beta2.powf(step);
    let step_size = lr / bias_correction1;
    let bias_correction2_sqrt = bias_correction2.powf(0.5);
    let second: &Tensor = if cfg.amsgrad {
        let m = max_exp_avg_sq.maximum(exp_avg_sq);
        max_exp_avg_sq.copy_(&m);
        max_exp_avg_sq
    } else {
        exp_avg_sq
    };
    let denom = (second.sqrt() / bias_correction2_sqrt).g_add_scalar(cfg.eps);
    let update = exp_avg.g_mul_scalar(-step_size) / denom;
    let _ = param.g_add_(&update);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn cfg() -> AdamConfig {
        AdamConfig {
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-9,
            weight_decay: 5e-5,
            amsgrad: true,
        }
    }

    #[test]
    fn first_step_moves_by_about_lr_against_the_gradient() {
        let p = Tensor::from_slice(&[1.0f32, -1.0]).set_requires_grad(true);
        (&p * Tensor::from_slice(&[2.0f32, -3.0]))
            .sum(Kind::Float)
            .backward();
        let mut opt =
            Adam::new(vec![("w".into(), p.shallow_clone(), 0)], vec![0.01], cfg()).unwrap();
        opt.step();
        let v: Vec<f32> = Vec::try_from(&p.detach()).unwrap();
        assert!(
            (v[0] - 0.99).abs() < 1e-6 && (v[1] + 0.99).abs() < 1e-6,
            "{v:?}"
        );
    }

    #[test]
    fn state_round_trips_and_missing_moments_are_named() {
        let p = Tensor::ones([3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        p.sum(Kind::Float).backward();
        let mut a = Adam::new(vec![("w".into(), p.shallow_clone(), 0)], vec![0.1], cfg()).unwrap();
        a.step();
        let st: HashMap<String, Tensor> = a.state_tensors().into_iter().collect();
        assert_eq!(st.len(), 4);
        assert_eq!(st["w.step"].double_value(&[]), 1.0);
        let q = p.detach().copy().set_requires_grad(true);
        let mut b = Adam::new(vec![("w".into(), q, 0)], vec![0.1], cfg()).unwrap();
        b.load_state_tensors(&st).unwrap();
        let again: HashMap<String, Tensor> = b.state_tensors().into_iter().collect();
        for (k, t) in &st {
            assert!(t.equal(&again[k]), "{k}");
        }
        let mut partial = st;
        partial.remove("w.exp_avg_sq");
        let e = b.load_state_tensors(&partial).unwrap_err().to_string();
        assert!(e.contains("w.exp_avg_sq"), "{e}");
    }

    #[test]
    fn unknown_group_is_rejected() {
        let p = Tensor::ones([1], (Kind::Float, Device::Cpu));
        let e = Adam::new(vec![("w".into(), p, 2)], vec![0.1, 0.2], cfg()).unwrap_err();
        assert!(e.to_string().contains("group 2"));
    }
}
