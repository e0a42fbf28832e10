//! THE distributed ITHN step: forward on this rank's slice, the contrastive objective on the
//! global batch, backward, and gradients summed over ranks.
//!
//! Equivalence invariant (SPEC §5): with W ranks holding consecutive slices of a global batch
//! of B samples, [`forward_backward`] leaves in every parameter's `.grad` the gradient a single
//! process computes on the whole batch (up to float re-association). How:
//!
//! 1. Each rank runs the model on its rows: image/text features z, z⁻, u, u⁻ and the summed LM
//!    loss with its token count. Token and sample counts are all-reduced first, so the LM loss is
//!    `Σ_ranks lm_sum / global tokens` and L_cs is a mean over the global batch.
//! 2. z, z⁻, u, u⁻ are all-gathered (rank-major) into fresh leaf tensors. Every rank computes
//!    the identical global h (closed form or ascent), S and L_cp, and the gradient of
//!    `w_cp·L_cp` with respect to those leaves and the temperatures (no accumulation).
//! 3. Each rank back-propagates into its own graph the surrogate
//!    `w_lm·lm_sum/N + w_cs·Σ|cos|/B + Σ_f ⟨f_local, ∂L/∂f_gathered[own rows]⟩`, which has exactly
//!    the gradient of the global loss restricted to this rank's samples. Because every rank holds
//!    the full ∂L/∂(gathered), no reduce-scatter is needed: each simply takes its rows.
//! 4. The temperatures appear only in the global term, which every rank computed: their
//!    gradient is added on rank 0 alone, so the sum over ranks counts it once.
//! 5. Parameter gradients are summed over ranks (the caller's [`GradSync`] buckets).
//!
//! `ithn.gather = "local"` instead runs the contrastive part per rank (the reference on one
//! GPU per rank) and averages L_cp over ranks (its weight is divided by W, the temperatures
//! get every rank's share): a different objective, kept for ablations.
//!
//! [`GradSync`]: crate::dist::buckets::GradSync

use tch::{Kind, Tensor};

use crate::config::{Gather, IthnConfig, Negatives};
use crate::dist::{Collectives, DistError};
use crate::model::ithn::{
    contrastive_loss, cosine_loss, harder_negatives, lm_loss_sum, normalize_rows,
};
use crate::model::{IthnBatch, R2GenCmn};

/// What a model must give the step: its local features and LM sums, and the temperatures.
pub trait IthnModel {
    /// Runs this rank's slice (teacher forced) with autograd; `seeds` are per-sample dropout
    /// seeds (see [`sample_seeds`]).
    fn local_forward(&self, batch: &IthnBatch, train: bool, seeds: Option<&[u64]>) -> LocalForward;
    /// The learnable temperatures (t1, t3), log scale.
    fn temperatures(&self) -> (Tensor, Tensor);
}

/// The per-rank pieces of the objective, still attached to the local graph.
#[derive(Debug)]
pub struct LocalForward {
    pub z: Tensor,
    pub z_neg: Tensor,
    pub u: Tensor,
    pub u_neg: Tensor,
    /// Σ −log p(target)·mask over this rank's targets (0-d).
    pub lm_sum: Tensor,
    /// Σ mask over this rank's targets (0-d).
    pub tokens: Tensor,
}

impl IthnModel for R2GenCmn {
    fn local_forward(&self, batch: &IthnBatch, train: bool, seeds: Option<&[u64]>) -> LocalForward {
        self.with_precision(|| {
            let (att, fc) = self.visual(&batch.images, train);
            let (neg_att, neg_fc) = self.visual(&batch.neg_images, train);
            let (output, states) = self.forward_teacher(&att, &batch.ids, train, seeds);
            let neg_seeds: Option<Vec<u64>> =
                seeds.map(|s| s.iter().map(|&x| mix(x ^ NEG_SALT)).collect());
            let (_, neg_states) =
                self.forward_teacher(&neg_att, &batch.neg_ids, train, neg_seeds.as_deref());
            let (lm_sum, tokens) = lm_loss_sum(&output, &batch.ids, &batch.masks);
            LocalForward {
                z: self.img_embed(&fc),
                z_neg: self.img_embed(&neg_fc),
                u: self.text_embed(&states),
                u_neg: self.text_embed(&neg_states),
                lm_sum,
                tokens,
            }
        })
    }

    fn temperatures(&self) -> (Tensor, Tensor) {
        (self.temp_1.shallow_clone(), self.temp_3.shallow_clone())
    }
}

/// Salt separating the negative pair's dropout seeds from the positive pair's.
const NEG_SALT: u64 = 0x6E65_6761_7469_7665;

/// splitmix64: a cheap, well-mixed hash of one word.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Dropout seeds of `n` samples starting at global index `first` of optimizer step `step`: a
/// function of (seed, step, global sample index) only, so masks do not depend on the world size
/// and a resumed run replays them.
pub fn sample_seeds(seed: u64, step: u64, first: u64, n: usize) -> Vec<u64> {
    (0..n as u64)
        .map(|i| mix(mix(seed ^ mix(step)) ^ (first + i)))
        .collect()
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

/// Wall-clock seconds of one [`forward_backward`] on this rank (for `bench step`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StepTimes {
    /// Local model forward plus the global contrastive objective.
    pub forward: f64,
    /// Both backward passes (global objective, then the local graph).
    pub backward: f64,
    /// Collectives inside the step (counts, feature gathers, loss statistics).
    pub comm: f64,
}

/// One forward + backward of the ITHN objective over the global batch. Leaves this rank's
/// share of every gradient in `.grad` (accumulating, scaled by `scale`, e.g. 1/k for k
/// accumulation micro-steps); summing the `.grad`s over ranks gives the global gradient.
pub fn forward_backward<M: IthnModel + ?Sized>(
    model: &M,
    batch: &IthnBatch,
    cfg: &IthnConfig,
    coll: &dyn Collectives,
    seeds: Option<&[u64]>,
    scale: f64,
) -> Result<LossTerms, DistError> {
    let mut times = StepTimes::default();
    let clock = std::time::Instant::now();
    let f = model.local_forward(batch, true, seeds);
    times.forward += clock.elapsed().as_secs_f64();
    let clock = std::time::Instant::now();
    let device = f.z.device();
    let rows = f.z.size()[0];

    // Global counts first: they scale this rank's share of the LM and cosine terms.
    let mut counts = Tensor::stack(
        &[
            f.tokens.detach().to_kind(Kind::Double),
            Tensor::from(rows as f64).to_device(device),
        ],
        0,
    );
    coll.all_reduce_sum(&mut counts)?;
    let counts: Vec<f64> =
        Vec::try_from(&counts.to_device(tch::Device::Cpu)).map_err(|e| tensor_err(coll, e))?;
    let (tokens, samples) = (counts[0], counts[1]);

    let global = cfg.gather == Gather::Global && coll.size() > 1;
    let gathered = |t: &Tensor| -> Result<Tensor, DistError> {
        let g = if global {
            coll.all_gather(t)?
        } else {
            t.detach().copy()
        };
        Ok(g.set_requires_grad(true))
    };
    let (gz, gzn, gu, gun) = (
        gathered(&f.z)?,
        gathered(&f.z_neg)?,
        gathered(&f.u)?,
        gathered(&f.u_neg)?,
    );
    // This rank's rows inside the gathered tensors.
    let offset = if global { own_offset(coll, rows)? } else { 0 };
    times.comm += clock.elapsed().as_secs_f64();
    let clock = std::time::Instant::now();

    let (t1, t3) = model.temperatures();
    let lambda = batch.lambda;
    let h = match cfg.negatives {
        Negatives::Projection => harder_negatives(&gz, &gu, &gun, lambda).1,
        Negatives::Ascent => ascend_negatives(&gz, &gu, &gzn, &gun, &t1, &t3, lambda, cfg),
    };
    let (l_cp, ..) = contrastive_loss(&gz, &gu, &gzn, &gun, &h, &t1, &t3);
    let cp_weight = cfg.w_cp * scale / if global { 1.0 } else { coll.size() as f64 };
    times.forward += clock.elapsed().as_secs_f64();
    let clock = std::time::Instant::now();
    let grads = Tensor::run_backward(
        &[&l_cp * cp_weight],
        &[&gz, &gzn, &gu, &gun, &t1, &t3],
        false,
        false,
    );
    let own = |g: &Tensor| g.narrow(0, offset, rows).detach();
    let kind = f.z.kind();

    let cs_sum = cosine_loss(&f.z, &f.z_neg) * rows as f64;
    let mut surrogate = &f.lm_sum * (cfg.w_lm * scale / tokens)
        + &cs_sum * (cfg.w_cs * scale / samples)
        + (&f.z * own(&grads[0])).sum(kind)
        + (&f.z_neg * own(&grads[1])).sum(kind)
        + (&f.u * own(&grads[2])).sum(kind)
        + (&f.u_neg * own(&grads[3])).sum(kind);
    if !global || coll.rank() == 0 {
        surrogate =
            surrogate + (&t1 * grads[4].detach()).sum(kind) + (&t3 * grads[5].detach()).sum(kind);
    }
    surrogate.backward();
    times.backward += clock.elapsed().as_secs_f64();
    let clock = std::time::Instant::now();

    // Loss values for the log: Σ over ranks of (lm_sum, cs_sum, l_cp / W). In global mode every
    // rank holds the same L_cp, in local mode this is the mean over ranks.
    let l_cp_share = l_cp.detach().to_kind(Kind::Double) / coll.size() as f64;
    let mut stats = Tensor::stack(
        &[
            f.lm_sum.detach().to_kind(Kind::Double),
            cs_sum.detach().to_kind(Kind::Double),
            l_cp_share,
        ],
        0,
    );
    coll.all_reduce_sum(&mut stats)?;
    let s: Vec<f64> =
        Vec::try_from(&stats.to_device(tch::Device::Cpu)).map_err(|e| tensor_err(coll, e))?;
    let (lm, l_cs, l_cp) = (s[0] / tokens, s[1] / samples, s[2]);
    times.comm += clock.elapsed().as_secs_f64();
    Ok(LossTerms {
        loss: cfg.w_lm * lm + cfg.w_cp * l_cp + cfg.w_cs * l_cs,
        lm,
        l_cp,
        l_cs,
        samples,
        tokens,
        times,
    })
}

fn tensor_err(coll: &dyn Collectives, e: tch::TchError) -> DistError {
    DistError::Collective {
        rank: coll.rank(),
        message: format!("reading reduced loss statistics: {e}"),
    }
}

/// Rows held by the ranks before this one (their local batch sizes may differ).
fn own_offset(coll: &dyn Collectives, rows: i64) -> Result<i64, DistError> {
    let all = coll.all_gather(&Tensor::from_slice(&[rows]))?;
    let all: Vec<i64> = Vec::try_from(&all).map_err(|e| tensor_err(coll, e))?;
    Ok(all[..coll.rank()].iter().sum())
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
mod tests {
    use super::*;
    use crate::dist::collectives::SingleProcess;
    use tch::Device;

    #[test]
    fn seeds_depend_on_global_index_not_on_the_split() {
        let whole = sample_seeds(7, 3, 0, 4);
        let halves = [sample_seeds(7, 3, 0, 2), sample_seeds(7, 3, 2, 2)].concat();
        assert_eq!(whole, halves);
        assert_ne!(sample_seeds(7, 4, 0, 4), whole, "steps draw new masks");
        assert_ne!(whole[0], whole[1]);
    }

    #[test]
    fn ascent_makes_negatives_harder_within_the_radius() {
        tch::manual_seed(2);
        let f = (Kind::Float, Device::Cpu);
        let unit = |t: Tensor| normalize_rows(&t, 1e-12);
        let (z, u, zn, un) = (
            unit(Tensor::randn([6, 8], f)),
            unit(Tensor::randn([6, 8], f)),
            unit(Tensor::randn([6, 8], f)),
            unit(Tensor::randn([6, 8], f)),
        );
        let (t1, t3) = (Tensor::from(2.0f32), Tensor::from(2.6f32));
        let cfg = IthnConfig {
            negatives: Negatives::Ascent,
            ascent_steps: 5,
            ascent_lr: 1.0,
            ascent_radius: 1.0,
            ..IthnConfig::default()
        };
        let l_cp = |h: &Tensor| {
            contrastive_loss(&z, &u, &zn, &un, h, &t1, &t3)
                .0
                .double_value(&[])
        };
        let h = ascend_negatives(&z, &u, &zn, &un, &t1, &t3, 0.5, &cfg);
        assert!(
            l_cp(&h) > l_cp(&un) + 1e-4,
            "ascent raises L_cp: {} vs {}",
            l_cp(&h),
            l_cp(&un)
        );
        let dist = (&h - &un)
            .norm_scalaropt_dim(2, [-1i64].as_slice(), false)
            .max()
            .double_value(&[]);
        assert!(dist <= 0.5 + 1e-4, "within (1 − λ)·radius: {dist}");
        let fixed = ascend_negatives(&z, &u, &zn, &un, &t1, &t3, 1.0, &cfg);
        assert!(
            fixed.allclose(&un, 1e-6, 1e-6, false),
            "λ = 1 leaves h = u⁻"
        );
    }

    #[test]
    fn cap_projection_keeps_unit_norm_and_radius() {
        tch::manual_seed(1);
        let f = (Kind::Float, Device::Cpu);
        let c = normalize_rows(&Tensor::randn([6, 5], f), 1e-12);
        let x = Tensor::randn([6, 5], f) * 3.0;
        for r in [0.0, 0.3, 1.0, 2.0] {
            let h = project_to_cap(&x, &c, r);
            let norms = h.norm_scalaropt_dim(2, [-1], false);
            assert!(
                norms.allclose(&Tensor::ones([6], f), 1e-5, 1e-5, false),
                "r={r}"
            );
            let dist = (&h - &c)
                .norm_scalaropt_dim(2, [-1], false)
                .max()
                .double_value(&[]);
            assert!(dist <= r + 1e-4, "r={r}: distance {dist}");
        }
        let inside = project_to_cap(&c, &c, 0.5);
        assert!(
            inside.allclose(&c, 1e-6, 1e-6, false),
            "points in the cap stay"
        );
    }

    /// A model whose "features" are linear maps of fixed inputs: enough to check that the
    /// surrogate backward equals the direct backward of the single-process loss.
    struct Toy {
        w: Tensor,
        t1: Tensor,
        t3: Tensor,
    }

    impl IthnModel for Toy {
        fn local_forward(&self, b: &IthnBatch, _train: bool, _s: Option<&[u64]>) -> LocalForward {
            let feats = |x: &Tensor| crate::model::ithn::l2_rows(&x.matmul(&self.w));
            let lp = b
                .images
                .matmul(&self.w)
                .sum_dim_intlist([-1i64].as_slice(), false, None)
                .log_sigmoid();
            LocalForward {
                z: feats(&b.images),
                z_neg: feats(&b.neg_images),
                u: feats(&(&b.images * 2.0 + 1.0)),
                u_neg: feats(&(&b.neg_images - 1.0)),
                lm_sum: -lp.sum(Kind::Float),
                tokens: Tensor::from(b.images.size()[0] as f32 * 3.0),
            }
        }
        fn temperatures(&self) -> (Tensor, Tensor) {
            (self.t1.shallow_clone(), self.t3.shallow_clone())
        }
    }

    #[test]
    fn surrogate_gradient_equals_direct_gradient_on_one_rank() {
        tch::manual_seed(5);
        let f = (Kind::Float, Device::Cpu);
        let toy = Toy {
            w: (Tensor::randn([6, 4], f) * 0.5).set_requires_grad(true),
            t1: Tensor::from(2.0f32).set_requires_grad(true),
            t3: Tensor::from(2.5f32).set_requires_grad(true),
        };
        let batch = IthnBatch {
            images: Tensor::randn([5, 6], f),
            neg_images: Tensor::randn([5, 6], f),
            ids: Tensor::zeros([5, 2], (Kind::Int64, Device::Cpu)),
            masks: Tensor::zeros([5, 2], (Kind::Int64, Device::Cpu)),
            neg_ids: Tensor::zeros([5, 2], (Kind::Int64, Device::Cpu)),
            neg_masks: Tensor::zeros([5, 2], (Kind::Int64, Device::Cpu)),
            lambda: 0.8,
        };
        let cfg = IthnConfig::default();
        let terms = forward_backward(&toy, &batch, &cfg, &SingleProcess, None, 1.0).unwrap();
        let got: Vec<Tensor> = [&toy.w, &toy.t1, &toy.t3]
            .iter()
            .map(|p| p.grad().copy())
            .collect();

        // Direct: the published loss as one expression, one backward.
        for p in [&toy.w, &toy.t1, &toy.t3] {
            let _ = p.grad().zero_();
        }
        let l = toy.local_forward(&batch, true, None);
        let (_, h) = harder_negatives(&l.z, &l.u, &l.u_neg, 0.8);
        let (l_cp, ..) = contrastive_loss(&l.z, &l.u, &l.z_neg, &l.u_neg, &h, &toy.t1, &toy.t3);
        let loss = &l.lm_sum / &l.tokens * cfg.w_lm
            + &l_cp * cfg.w_cp
            + cosine_loss(&l.z, &l.z_neg) * cfg.w_cs;
        loss.backward();
        assert!((loss.double_value(&[]) - terms.loss).abs() < 1e-5 * terms.loss.abs());
        for (g, p) in got.iter().zip([&toy.w, &toy.t1, &toy.t3]) {
            assert!(
                g.allclose(&p.grad(), 1e-5, 1e-7, false),
                "{g:?} vs {:?}",
                p.grad()
            );
        }
    }
}
