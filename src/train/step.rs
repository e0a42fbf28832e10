//! THE distributed ITHN objective of one micro-batch: forward on this rank's slice, the
//! contrastive objective on the global batch, backward. [`super::optim_step::OptimStep`] runs it
//! over the micro-batches of an optimizer step, then sums gradients over ranks and steps Adam.
//!
//! Equivalence invariant (SPEC §5): with W ranks holding consecutive slices of a global batch
//! of B samples — **any** slices: unequal, and empty on some ranks — the step leaves in every
//! parameter's `.grad`, once summed over ranks, the gradient a single process computes on the
//! whole batch (up to float re-association). How:
//!
//! 1. Before any forward, [`step_counts`] all-gathers every rank's sample and target-token
//!    count of every micro-batch of the step (one collective per optimizer step). So every rank
//!    knows each rank's rows (for the gathers below and its own offset) and the step's global
//!    counts: the LM loss is `Σ_ranks lm_sum / global tokens` and L_cs `Σ_ranks Σ|cos| /
//!    global samples`, whatever the split; a rank with 0 samples adds exactly 0.
//! 2. Each rank runs the model on its rows ([`crate::model::ithn::local_forward`]); z, z⁻, u, u⁻
//!    are all-gathered (rank-major, only real rows: [`Collectives::all_gather_rows`]) into
//!    fresh leaf tensors. Every rank computes the identical global h (closed form or ascent), S
//!    and L_cp, and the gradient of `w_cp·L_cp` with respect to those leaves and the
//!    temperatures.
//! 3. Each rank back-propagates into its own graph the surrogate
//!    `w_lm·lm_sum/N + w_cs·Σ|cos|/B + Σ_f ⟨f_local, ∂L/∂f_gathered[own rows]⟩`, which has exactly
//!    the gradient of the global loss restricted to this rank's samples. Because every rank holds
//!    the full ∂L/∂(gathered), no reduce-scatter is needed: each simply takes its rows.
//! 4. The temperatures appear only in the global term, which every rank computed: their
//!    gradient is added on rank 0 alone (whatever its own number of samples: the global term
//!    needs none), so the sum over ranks counts it once.
//! 5. Parameter gradients are then summed over ranks by the caller's buckets.
//!
//! With `train.accumulation_steps = k` the step's micro-batches share the step's global counts
//! (so LM and L_cs are exactly those of one pass over the step's samples, also when the epoch's
//! last step is short), and micro-batch j's L_cp — a B_j×B_j objective, which cannot be split —
//! gets the weight `B_j / B_step` (1/k for equal micro-batches).
//!
//! `ithn.gather = "local"` instead runs the contrastive part per rank (the reference on one
//! GPU per rank): L_cp is the sample-weighted mean over ranks, `Σ_r (b_r/B)·L_cp(r)` (the plain
//! mean for equal local batches; a rank with 0 samples has weight 0), and the temperatures get
//! every rank's share: a different objective, kept for ablations.

use std::time::Instant;

use tch::{Device, Kind, Tensor};

use crate::config::{Gather, IthnConfig, Negatives};
use crate::data::loader::Batch;
use crate::dist::{Collectives, DistError};
use crate::model::ithn::{
    contrastive_loss, cosine_sum, harder_negatives, lm_loss_sum, normalize_rows, target_tokens,
};
use crate::model::{IthnBatch, R2GenCmn};

/// What a model must give the step: its local features and LM sums, and the temperatures.
pub trait IthnModel {
    /// Runs this rank's slice (teacher forced) with autograd; `seeds` are per-sample dropout
    /// seeds (see [`sample_seeds`]). Must accept a batch of 0 samples (0-row outputs).
    fn local_forward(&self, batch: &IthnBatch, train: bool, seeds: Option<&[u64]>) -> RankForward;
    /// The learnable temperatures (t1, t3), log scale.
    fn temperatures(&self) -> (Tensor, Tensor);
    /// Target tokens the LM sum of `batch` runs over (known before the forward, so that the
    /// step can normalise by the global count of all its micro-batches).
    fn target_tokens(&self, batch: &IthnBatch) -> i64 {
        target_tokens(&batch.masks)
    }
}

/// The per-rank pieces of the objective, still attached to the local graph.
#[derive(Debug)]
pub struct RankForward {
    pub z: Tensor,
    pub z_neg: Tensor,
    pub u: Tensor,
    pub u_neg: Tensor,
    /// Σ −log p(target)·mask over this rank's targets (0-d; 0 for 0 samples).
    pub lm_sum: Tensor,
}

impl IthnModel for R2GenCmn {
    fn local_forward(&self, batch: &IthnBatch, train: bool, seeds: Option<&[u64]>) -> RankForward {
        let f = crate::model::ithn::local_forward(self, batch, train, seeds);
        let (lm_sum, _) = self.with_precision(|| lm_loss_sum(&f.output, &batch.ids, &batch.masks));
        RankForward {
            z: f.z,
            z_neg: f.z_neg,
            u: f.u,
            u_neg: f.u_neg,
            lm_sum,
        }
    }

    fn temperatures(&self) -> (Tensor, Tensor) {
        (self.temp_1.shallow_clone(), self.temp_3.shallow_clone())
    }
}

use crate::rng::splitmix64 as mix;

/// Dropout seeds of `n` samples starting at global index `first` of optimizer step `step`: a
/// function of (seed, step, global sample index) only, so masks do not depend on the world size
/// and a resumed run replays them.
pub fn sample_seeds(seed: u64, step: u64, first: u64, n: usize) -> Vec<u64> {
    (0..n as u64)
        .map(|i| mix(mix(seed ^ mix(step)) ^ (first + i)))
        .collect()
}

/// One micro-batch of an optimizer step, as this rank holds it.
#[derive(Debug)]
pub struct Micro {
    pub batch: IthnBatch,
    /// Per-sample dropout seeds ([`sample_seeds`]); `None` leaves dropout to libtorch's RNG.
    pub seeds: Option<Vec<u64>>,
    /// Split rows of this rank's samples (logged at debug level: what each step trained on).
    pub indices: Vec<u64>,
}

impl Micro {
    /// A loader batch on `device` with the dropout seeds of optimizer step `step` (0-based: the
    /// number of steps taken before it) under `seed`; `lambda` is λ of the epoch.
    pub fn from_loader(b: &Batch, device: Device, lambda: f64, seed: u64, step: u64) -> Micro {
        let first = (b.start + b.offset) as u64;
        Micro {
            batch: IthnBatch {
                images: b.images.to_device(device),
                neg_images: b.neg_images.to_device(device),
                ids: b.reports_ids.to_device(device),
                masks: b.reports_masks.to_device(device),
                neg_ids: b.neg_reports_ids.to_device(device),
                neg_masks: b.neg_reports_masks.to_device(device),
                lambda,
            },
            seeds: Some(sample_seeds(seed, step, first, b.indices.len())),
            indices: b.indices.clone(),
        }
    }

    fn rows(&self) -> i64 {
        self.batch.ids.size().first().copied().unwrap_or(0)
    }
}

/// The loss terms of one step, over the global batch (identical on every rank).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossTerms {
    pub loss: f64,
    pub lm: f64,
    pub l_cp: f64,
    pub l_cs: f64,
    /// Samples in the global batch.
    pub samples: f64,
    /// Target tokens in the global batch.
    pub tokens: f64,
    /// Where this rank's time went.
    pub times: StepTimes,
}

/// Wall-clock seconds of one optimizer step on this rank (for `bench step`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StepTimes {
    /// Local model forward plus the global contrastive objective.
    pub forward: f64,
    /// Both backward passes (global objective, then the local graph).
    pub backward: f64,
    /// Collectives (counts, feature gathers, loss statistics, gradient buckets, buffers).
    pub comm: f64,
    /// The parameter update.
    pub optimizer: f64,
}

impl StepTimes {
    pub(crate) fn add(&mut self, o: &StepTimes) {
        self.forward += o.forward;
        self.backward += o.backward;
        self.comm += o.comm;
        self.optimizer += o.optimizer;
    }
}

/// Every rank's sample and target-token count of every micro-batch of a step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepCounts {
    /// `rows[j][r]`: samples of micro-batch j on rank r.
    pub rows: Vec<Vec<i64>>,
    /// `tokens[j]`: target tokens of micro-batch j over all ranks.
    pub tokens: Vec<i64>,
}

impl StepCounts {
    /// Global samples of micro-batch j.
    pub fn samples(&self, j: usize) -> i64 {
        self.rows[j].iter().sum()
    }

    /// Global samples of the step.
    pub fn step_samples(&self) -> i64 {
        (0..self.rows.len()).map(|j| self.samples(j)).sum()
    }

    /// Global target tokens of the step.
    pub fn step_tokens(&self) -> i64 {
        self.tokens.iter().sum()
    }
}

/// One all-gather of `[rows, tokens]` per micro-batch from every rank (collective: every rank
/// calls it with the same number of micro-batches).
pub fn step_counts<M: IthnModel + ?Sized>(
    model: &M,
    micros: &[Micro],
    coll: &dyn Collectives,
) -> Result<StepCounts, DistError> {
    let device = coll.device();
    let mine: Vec<i64> = micros
        .iter()
        .flat_map(|m| [m.rows(), model.target_tokens(&m.batch)])
        .collect();
    let w = coll.size();
    let local = Tensor::from_slice(&mine).reshape([1, -1]).to_device(device);
    let all = coll.all_gather_rows(&local, &vec![1; w])?;
    let all: Vec<i64> = Vec::try_from(&all.to_device(Device::Cpu).reshape([-1]))
        .map_err(|e| tensor_err(coll, "step counts", e))?;
    let at = |r: usize, j: usize, which: usize| all[r * mine.len() + 2 * j + which];
    Ok(StepCounts {
        rows: (0..micros.len())
            .map(|j| (0..w).map(|r| at(r, j, 0)).collect())
            .collect(),
        tokens: (0..micros.len())
            .map(|j| (0..w).map(|r| at(r, j, 1)).sum())
            .collect(),
    })
}

/// How one micro-batch's terms are normalised within its optimizer step.
#[derive(Debug, Clone, Copy)]
pub struct MicroNorm<'a> {
    /// Samples of this micro-batch on each rank.
    pub rows: &'a [i64],
    /// Global target tokens of the whole optimizer step.
    pub step_tokens: f64,
    /// Global samples of the whole optimizer step.
    pub step_samples: f64,
}

impl MicroNorm<'_> {
    /// The norm of micro-batch `j` of a step.
    pub fn of(counts: &StepCounts, j: usize) -> MicroNorm<'_> {
        MicroNorm {
            rows: &counts.rows[j],
            step_tokens: counts.step_tokens() as f64,
            step_samples: counts.step_samples() as f64,
        }
    }
}

/// This rank's contribution to the step's loss values: `[lm_sum, Σ|cos|, weighted L_cp share]`
/// (f64, detached), summed over micro-batches and ranks by [`reduce_losses`].
#[derive(Debug)]
pub struct MicroLoss {
    pub stats: Tensor,
    pub times: StepTimes,
}

/// One forward + backward of the ITHN objective of one micro-batch over the global batch.
/// Leaves this rank's share of every gradient in `.grad` (accumulating); summing the `.grad`s
/// over ranks gives the gradient of the step's global loss. Collective.
pub fn forward_backward<M: IthnModel + ?Sized>(
    model: &M,
    batch: &IthnBatch,
    cfg: &IthnConfig,
    coll: &dyn Collectives,
    seeds: Option<&[u64]>,
    norm: &MicroNorm<'_>,
) -> Result<MicroLoss, DistError> {
    let mut times = StepTimes::default();
    let clock = Instant::now();
    let f = model.local_forward(batch, true, seeds);
    times.forward += clock.elapsed().as_secs_f64();
    let clock = Instant::now();
    let global = cfg.gather == Gather::Global && coll.size() > 1;
    let g = Features::gather(&f, coll, norm.rows, global)?;
    times.comm += clock.elapsed().as_secs_f64();

    // L_cp of the gathered batch (global) or of this rank's (local), and its weight in the step.
    let cp_share = g.z.size()[0] as f64 / norm.step_samples;
    // A term weighted 0 is not part of the objective: not evaluated into the loss at all, so
    // its value (NaN, say, when its heads are left untrained) cannot reach the gradients.
    let cp = (g.z.size()[0] > 0 && cfg.w_cp != 0.0)
        .then(|| Contrastive::backward(model, &g, batch.lambda, cfg, cp_share, &mut times));

    let clock = Instant::now();
    let kind = f.z.kind();
    let cs_sum = cosine_sum(&f.z, &f.z_neg);
    let mut surrogate = if cfg.w_lm != 0.0 {
        &f.lm_sum * (cfg.w_lm / norm.step_tokens)
    } else {
        f.lm_sum.zeros_like()
    };
    if cfg.w_cs != 0.0 {
        surrogate = &surrogate + &cs_sum * (cfg.w_cs / norm.step_samples);
    }
    let mut l_cp_share = Tensor::zeros([], (Kind::Double, f.z.device()));
    if let Some(cp) = &cp {
        // This rank's rows inside the gathered tensors: every rank knows every rank's count.
        let rank = coll.rank();
        let offset: i64 = if global {
            norm.rows[..rank].iter().sum()
        } else {
            0
        };
        let own = |g: &Tensor| g.narrow(0, offset, norm.rows[rank]).detach();
        let ours = [&f.z, &f.z_neg, &f.u, &f.u_neg];
        for (mine, grad) in ours.into_iter().zip(&cp.feature_grads) {
            // Not `+=`: an in-place add would modify a tensor of the autograd graph.
            surrogate = &surrogate + (mine * own(grad)).sum(kind);
        }
        // Global: every rank holds the same L_cp; rank 0 alone reports it and feeds the
        // temperatures, so the sums over ranks count it once.
        if !global || rank == 0 {
            let [(t1, g1), (t3, g3)] = &cp.temperature_grads;
            surrogate = surrogate + (t1 * g1).sum(kind) + (t3 * g3).sum(kind);
            l_cp_share = cp.l_cp.to_kind(Kind::Double) * cp_share;
        }
    }
    surrogate.backward();
    times.backward += clock.elapsed().as_secs_f64();
    let stats = Tensor::stack(
        &[
            f.lm_sum.detach().to_kind(Kind::Double),
            cs_sum.detach().to_kind(Kind::Double),
            l_cp_share,
        ],
        0,
    );
    Ok(MicroLoss { stats, times })
}

/// z, z⁻, u, u⁻ of the global batch (all-gathered, rank-major) or of this rank (`gather =
/// "local"`), as fresh leaves: the contrastive backward stops at them.
struct Features {
    z: Tensor,
    z_neg: Tensor,
    u: Tensor,
    u_neg: Tensor,
}

impl Features {
    fn gather(
        f: &RankForward,
        coll: &dyn Collectives,
        rows: &[i64],
        global: bool,
    ) -> Result<Features, DistError> {
        let leaf = |t: &Tensor| -> Result<Tensor, DistError> {
            let g = if global {
                coll.all_gather_rows(t, rows)?
            } else {
                t.detach().copy()
            };
            Ok(g.set_requires_grad(true))
        };
        Ok(Features {
            z: leaf(&f.z)?,
            z_neg: leaf(&f.z_neg)?,
            u: leaf(&f.u)?,
            u_neg: leaf(&f.u_neg)?,
        })
    }
}

/// L_cp of gathered features and the gradients of `w_cp·share·L_cp` with respect to them and
/// to the temperatures.
struct Contrastive {
    l_cp: Tensor,
    /// ∂/∂(z, z⁻, u, u⁻) of the gathered leaves.
    feature_grads: Vec<Tensor>,
    /// (t1, ∂/∂t1), (t3, ∂/∂t3).
    temperature_grads: [(Tensor, Tensor); 2],
}

impl Contrastive {
    fn backward<M: IthnModel + ?Sized>(
        model: &M,
        g: &Features,
        lambda: f64,
        cfg: &IthnConfig,
        share: f64,
        times: &mut StepTimes,
    ) -> Contrastive {
        let clock = Instant::now();
        let (t1, t3) = model.temperatures();
        let h = match cfg.negatives {
            Negatives::Projection => harder_negatives(&g.z, &g.u, &g.u_neg, lambda).1,
            Negatives::Ascent => {
                ascend_negatives(&g.z, &g.u, &g.z_neg, &g.u_neg, &t1, &t3, lambda, cfg)
            }
        };
        let (l_cp, ..) = contrastive_loss(&g.z, &g.u, &g.z_neg, &g.u_neg, &h, &t1, &t3);
        times.forward += clock.elapsed().as_secs_f64();
        let clock = Instant::now();
        let mut grads = Tensor::run_backward(
            &[&l_cp * (cfg.w_cp * share)],
            &[&g.z, &g.z_neg, &g.u, &g.u_neg, &t1, &t3],
            false,
            false,
        );
        times.backward += clock.elapsed().as_secs_f64();
        let g3 = grads.pop().map(|t| t.detach());
        let g1 = grads.pop().map(|t| t.detach());
        let (g1, g3) = (
            g1.unwrap_or_else(|| t1.zeros_like()),
            g3.unwrap_or_else(|| t3.zeros_like()),
        );
        Contrastive {
            l_cp: l_cp.detach(),
            feature_grads: grads,
            temperature_grads: [(t1, g1), (t3, g3)],
        }
    }
}

/// Sums the micro-batches' [`MicroLoss`] over ranks (one all-reduce) into the step's terms.
pub fn reduce_losses(
    parts: &[MicroLoss],
    counts: &StepCounts,
    cfg: &IthnConfig,
    coll: &dyn Collectives,
) -> Result<LossTerms, DistError> {
    let mut times = StepTimes::default();
    let Some(first) = parts.first() else {
        return Err(DistError::Collective {
            rank: coll.rank(),
            message: "an optimizer step needs at least one micro-batch".into(),
        });
    };
    let mut stats = first.stats.zeros_like();
    for p in parts {
        stats += &p.stats;
        times.add(&p.times);
    }
    let clock = Instant::now();
    coll.all_reduce_sum(&mut stats)?;
    let s: Vec<f64> = Vec::try_from(&stats.to_device(Device::Cpu))
        .map_err(|e| tensor_err(coll, "reduced loss statistics", e))?;
    times.comm += clock.elapsed().as_secs_f64();
    let (tokens, samples) = (counts.step_tokens() as f64, counts.step_samples() as f64);
    let (lm, l_cs, l_cp) = (s[0] / tokens, s[1] / samples, s[2]);
    Ok(LossTerms {
        loss: cfg.objective(lm, l_cp, l_cs),
        lm,
        l_cp,
        l_cs,
        samples,
        tokens,
        times,
    })
}

/// The whole objective of one optimizer step without the update: counts, then every
/// micro-batch's [`forward_backward`], then the loss values. Leaves this rank's share of the
/// step's gradient in `.grad` (not yet summed over ranks). Collective.
pub fn objective_backward<M: IthnModel + ?Sized>(
    model: &M,
    micros: &[Micro],
    cfg: &IthnConfig,
    coll: &dyn Collectives,
) -> Result<LossTerms, DistError> {
    let clock = Instant::now();
    let counts = step_counts(model, micros, coll)?;
    let counting = clock.elapsed().as_secs_f64();
    let parts = micros
        .iter()
        .enumerate()
        .map(|(j, m)| {
            let norm = MicroNorm::of(&counts, j);
            forward_backward(model, &m.batch, cfg, coll, m.seeds.as_deref(), &norm)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut terms = reduce_losses(&parts, &counts, cfg, coll)?;
    terms.times.comm += counting;
    Ok(terms)
}

fn tensor_err(coll: &dyn Collectives, what: &str, e: tch::TchError) -> DistError {
    DistError::Collective {
        rank: coll.rank(),
        message: format!("reading {what}: {e}"),
    }
}

/// The paper's maximisation (`ithn.negatives = "ascent"`): starting from u⁻, K projected
/// gradient-ascent steps on L_cp with respect to h, every feature and temperature detached.
/// After each step h is put back on the unit sphere inside the cap of chordal radius
/// `(1 − λ)·ascent_radius` around u⁻ (so negatives get harder as λ decays). The result is
/// detached: the minimisation step treats h as fixed.
#[allow(clippy::too_many_arguments)]
fn ascend_negatives(
    z: &Tensor,
    u: &Tensor,
    z_neg: &Tensor,
    u_neg: &Tensor,
    t1: &Tensor,
    t3: &Tensor,
    lambda: f64,
    cfg: &IthnConfig,
) -> Tensor {
    let (z, u, z_neg, center) = (z.detach(), u.detach(), z_neg.detach(), u_neg.detach());
    let (t1, t3) = (t1.detach(), t3.detach());
    let radius = (1.0 - lambda) * cfg.ascent_radius;
    let mut h = center.copy();
    for _ in 0..cfg.ascent_steps {
        let hv = h.detach().set_requires_grad(true);
        let (l, ..) = contrastive_loss(&z, &u, &z_neg, &center, &hv, &t1, &t3);
        let g = Tensor::run_backward(&[&l], &[&hv], false, false);
        let moved = hv.detach() + &g[0] * cfg.ascent_lr;
        h = project_to_cap(&moved, &center, radius);
    }
    h.detach()
}

/// Nearest point to each row of `x` on the unit sphere within chordal distance `radius` of the
/// matching (unit) row of `center`: normalise, and if outside the cap rotate towards the centre
/// onto its rim (the cap is {h : ⟨h, c⟩ ≥ 1 − radius²/2}).
pub fn project_to_cap(x: &Tensor, center: &Tensor, radius: f64) -> Tensor {
    let x = normalize_rows(x, 1e-12);
    let min_cos = (1.0 - radius * radius / 2.0).clamp(-1.0, 1.0);
    let cos = (&x * center).sum_dim_intlist([-1i64].as_slice(), true, None);
    let tangent = normalize_rows(&(&x - &cos * center), 1e-12);
    let rim = center * min_cos + tangent * (1.0 - min_cos * min_cos).sqrt();
    x.where_self(&cos.ge(min_cos), &rim)
}

#[cfg(test)]
#[path = "step_tests.rs"]
pub(crate) mod tests;
