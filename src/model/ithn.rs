//! The ITHN objective (SPEC §3) as free functions on already computed (or all-gathered)
//! tensors, so the distributed trainer can call them on the global batch; [`local_forward`],
//! THE model pass of a batch (both pairs through extractor and decoder, projections) that the
//! trainer, the step bench and the equivalence test run; and [`ithn_forward`], the
//! single-process composition (the reference `forward_cxr` + loss) on top of it.
//!
//! Numerical details follow the reference exactly: z and u are divided by their L2 norm with no
//! epsilon; `normalize` in the harder-negative formula clamps the norm at 1e-12; the cosine loss
//! clamps each norm at 1e-8; the temperature scales the left matrix before the product;
//! λ is an f64 (the reference's Python double), rounded to f32 where it multiplies a tensor.

use tch::{Kind, Tensor};

use super::r2gencmn::R2GenCmn;
use crate::config::IthnConfig;

/// Rows divided by their L2 norm (no epsilon, as the reference's `x / x.norm(dim=-1)`).
pub fn l2_rows(x: &Tensor) -> Tensor {
    x / x.norm_scalaropt_dim(2, [-1], true)
}

/// Rows divided by `max(‖row‖, eps)` (torch.nn.functional.normalize).
pub fn normalize_rows(x: &Tensor, eps: f64) -> Tensor {
    x / x.norm_scalaropt_dim(2, [-1], true).clamp_min(eps)
}

/// λ = exp(−α·epoch), epochs counted from 1 (SPEC §3; the one definition: trainer, `bench
/// step` and tests call this).
pub fn lambda_for_epoch(alpha: f64, epoch: usize) -> f64 {
    (-alpha * epoch as f64).exp()
}

/// The official closed-form harder negatives:
/// `p = u⁻ + ((z − u⁻)(u − u⁻)ᵀ)·normalize(u − u⁻)`, `h = λ·u⁻ + (1 − λ)·p`. Returns (p, h).
pub fn harder_negatives(z: &Tensor, u: &Tensor, u_neg: &Tensor, lambda: f64) -> (Tensor, Tensor) {
    let zi = z - u_neg;
    let ui = u - u_neg;
    let p = u_neg + zi.matmul(&ui.tr()).matmul(&normalize_rows(&ui, 1e-12));
    let h = u_neg * lambda + &p * (1.0 - lambda);
    (p, h)
}

/// The alignment matrices and loss. Returns `(l_cp, S, Sn, Sh, fin)` with
/// `S = (e^{t1}z)uᵀ`, `Sn = (e^{t1}z⁻)u⁻ᵀ`, `Sh = ((e^{t3}z)hᵀ) ⊙ (−I)`, `fin = (S+Sn+Sh)/3` and
/// `l_cp = ½[CE(fin, arange) + CE(finᵀ, arange)]`.
pub fn contrastive_loss(
    z: &Tensor,
    u: &Tensor,
    z_neg: &Tensor,
    u_neg: &Tensor,
    h: &Tensor,
    temp_1: &Tensor,
    temp_3: &Tensor,
) -> (Tensor, Tensor, Tensor, Tensor, Tensor) {
    let b = z.size()[0];
    let (e1, e3) = (temp_1.exp(), temp_3.exp());
    let s = (&e1 * z).matmul(&u.tr());
    let sn = (&e1 * z_neg).matmul(&u_neg.tr());
    let minus_eye = -Tensor::eye(b, (z.kind(), z.device()));
    let sh = (&e3 * z).matmul(&h.tr()) * minus_eye;
    let fin = (&s + &sn + &sh) / 3.0;
    let labels = Tensor::arange(b, (Kind::Int64, z.device()));
    // Cross-entropy in the logits' own kind (tch's `cross_entropy_for_logits` would round
    // float64 logits to float32; for float32 logits this is the same op).
    let ce = |x: &Tensor| x.log_softmax(-1, x.kind()).nll_loss(&labels);
    let l_cp = (ce(&fin) + ce(&fin.tr())) / 2.0;
    (l_cp, s, sn, sh, fin)
}

/// `L_cs = mean_i |cos(z_i, z⁻_i)|` with each norm clamped at 1e-8.
pub fn cosine_loss(z: &Tensor, z_neg: &Tensor) -> Tensor {
    abs_cosines(z, z_neg).mean(None)
}

/// `Σ_i |cos(z_i, z⁻_i)|` (0-d): L_cs's numerator, 0 for 0 rows (where the mean is NaN), so a
/// distributed step divides it by the global sample count.
pub fn cosine_sum(z: &Tensor, z_neg: &Tensor) -> Tensor {
    abs_cosines(z, z_neg).sum(z.kind())
}

/// `|cos(z_i, z⁻_i)|` per row, each norm clamped at 1e-8.
fn abs_cosines(z: &Tensor, z_neg: &Tensor) -> Tensor {
    (normalize_rows(z, 1e-8) * normalize_rows(z_neg, 1e-8))
        .sum_dim_intlist(-1, false, None)
        .abs()
}

/// Target tokens the LM loss of a batch sums over: `Σ masks[:, 1:]` (what [`lm_loss_sum`]
/// returns as its second part, known before the forward).
pub fn target_tokens(masks: &Tensor) -> i64 {
    let t = masks.size().get(1).copied().unwrap_or(0);
    if t < 2 {
        return 0;
    }
    masks.narrow(1, 1, t - 1).sum(Kind::Int64).int64_value(&[])
}

/// Language-model loss parts: `(Σ −log p(target)·mask, Σ mask)` over targets `ids[:, 1:]`
/// masked by `masks[:, 1:]`; the caller divides by the (possibly global) token count.
pub fn lm_loss_sum(logprobs: &Tensor, ids: &Tensor, masks: &Tensor) -> (Tensor, Tensor) {
    let t = logprobs.size()[1];
    let target = ids.narrow(1, 1, t);
    let mask = masks.narrow(1, 1, t).to_kind(logprobs.kind());
    let picked = logprobs
        .gather(2, &target.unsqueeze(2), false)
        .squeeze_dim(2);
    ((-picked * &mask).sum(None), mask.sum(None))
}

/// One ITHN training batch (single process). Images are `[B, 3, H, W]` or `[B, views, 3, H, W]`.
#[derive(Debug)]
pub struct IthnBatch {
    pub images: Tensor,
    pub neg_images: Tensor,
    pub ids: Tensor,
    pub masks: Tensor,
    pub neg_ids: Tensor,
    pub neg_masks: Tensor,
    pub lambda: f64,
}

/// Every intermediate of [`ithn_forward`]: the local forward (its features, decoder outputs and
/// z, z⁻, u, u⁻) and the objective's terms; [`IthnOutputs::named`] gives the reference's names.
#[derive(Debug)]
pub struct IthnOutputs {
    pub forward: LocalForward,
    pub p: Tensor,
    pub h_neg_embeds: Tensor,
    pub similarity_matrix: Tensor,
    pub n_similarity_matrix: Tensor,
    pub h_n_similarity_matrix: Tensor,
    pub fin_similarity_matrix: Tensor,
    pub lm_loss: Tensor,
    pub l_cp: Tensor,
    pub l_cs: Tensor,
    pub loss: Tensor,
}

impl IthnOutputs {
    /// `(name, tensor)` pairs under the fixture's key names (outputs.safetensors).
    pub fn named(&self) -> Vec<(&'static str, &Tensor)> {
        let f = &self.forward;
        vec![
            ("att_feats", &f.att_feats),
            ("fc_feats", &f.fc_feats),
            ("neg_att_feats", &f.neg_att_feats),
            ("neg_fc_feats", &f.neg_fc_feats),
            ("output", &f.output),
            ("pos_rep_output", &f.pos_rep_output),
            ("neg_rep_output", &f.neg_rep_output),
            ("pos_img_embeds", &f.z),
            ("neg_img_embeds", &f.z_neg),
            ("pos_rep_embeds", &f.u),
            ("neg_rep_embeds", &f.u_neg),
            ("p", &self.p),
            ("h_neg_embeds", &self.h_neg_embeds),
            ("similarity_matrix", &self.similarity_matrix),
            ("n_similarity_matrix", &self.n_similarity_matrix),
            ("h_n_similarity_matrix", &self.h_n_similarity_matrix),
            ("fin_similarity_matrix", &self.fin_similarity_matrix),
            ("lm_loss", &self.lm_loss),
            ("l_cp", &self.l_cp),
            ("l_cs", &self.l_cs),
            ("loss", &self.loss),
        ]
    }
}

/// Salt separating the negative pair's dropout seeds from the positive pair's.
const NEG_SALT: u64 = 0x6E65_6761_7469_7665;

/// The dropout seeds of the negative pair's decoder pass, derived from the positive pair's
/// (one per sample), so the two passes of a sample draw different masks.
pub fn negative_seeds(seeds: &[u64]) -> Vec<u64> {
    seeds
        .iter()
        .map(|&s| crate::rng::splitmix64(s ^ NEG_SALT))
        .collect()
}

/// One pass of the model over a batch, before any objective: both pairs (image, report) and
/// (negative image, negative report) through the extractor and the teacher-forced decoder,
/// and the ITHN projections. Names follow the reference's `forward_cxr`.
#[derive(Debug)]
pub struct LocalForward {
    /// Patch features `[B, 49·views, 2048]` of the images (and of the negatives).
    pub att_feats: Tensor,
    /// Pooled features `[B, 2048·views]`.
    pub fc_feats: Tensor,
    pub neg_att_feats: Tensor,
    pub neg_fc_feats: Tensor,
    /// Log-probs `[B, T−1, V+1]` of the reports' next tokens.
    pub output: Tensor,
    /// Final decoder states `[B, T−1, d_model]` of the positive and the negative pair.
    pub pos_rep_output: Tensor,
    pub neg_rep_output: Tensor,
    /// z, z⁻, u, u⁻: `[B, proj_dim]`, rows of unit L2 norm.
    pub z: Tensor,
    pub z_neg: Tensor,
    pub u: Tensor,
    pub u_neg: Tensor,
}

/// THE local ITHN forward (trainer, `bench step`, equivalence test and [`ithn_forward`]).
/// `seeds` are per-sample dropout seeds (`train::step::sample_seeds`); the negative pair's
/// are [`negative_seeds`] of them. A batch of 0 samples gives 0-row tensors (and no NaN).
pub fn local_forward(
    model: &R2GenCmn,
    batch: &IthnBatch,
    train: bool,
    seeds: Option<&[u64]>,
) -> LocalForward {
    model.with_precision(|| {
        let (att_feats, fc_feats) = model.visual(&batch.images, train);
        let (neg_att_feats, neg_fc_feats) = model.visual(&batch.neg_images, train);
        let (output, pos_rep_output) = model.forward_teacher(&att_feats, &batch.ids, train, seeds);
        let neg_seeds = seeds.map(negative_seeds);
        let (_, neg_rep_output) =
            model.forward_teacher(&neg_att_feats, &batch.neg_ids, train, neg_seeds.as_deref());
        LocalForward {
            z: model.img_embed(&fc_feats),
            z_neg: model.img_embed(&neg_fc_feats),
            u: model.text_embed(&pos_rep_output),
            u_neg: model.text_embed(&neg_rep_output),
            att_feats,
            fc_feats,
            neg_att_feats,
            neg_fc_feats,
            output,
            pos_rep_output,
            neg_rep_output,
        }
    })
}

/// The single-process ITHN forward (the reference `forward_cxr` and loss):
/// `loss = w_lm·L_lm + w_cp·L_cp + w_cs·L_cs` with the weights of `cfg`.
pub fn ithn_forward(
    model: &R2GenCmn,
    batch: &IthnBatch,
    cfg: &IthnConfig,
    train: bool,
    seeds: Option<&[u64]>,
) -> IthnOutputs {
    let f = local_forward(model, batch, train, seeds);
    model.with_precision(|| {
        let (p, h) = harder_negatives(&f.z, &f.u, &f.u_neg, batch.lambda);
        let (l_cp, s, sn, sh, fin) = contrastive_loss(
            &f.z,
            &f.u,
            &f.z_neg,
            &f.u_neg,
            &h,
            &model.temp_1,
            &model.temp_3,
        );
        let l_cs = cosine_loss(&f.z, &f.z_neg);
        let (lm_sum, tokens) = lm_loss_sum(&f.output, &batch.ids, &batch.masks);
        let lm_loss = lm_sum / tokens;
        // Terms of weight 0 are left out, not multiplied by 0 (IthnConfig::objective).
        let mut loss = if cfg.w_lm != 0.0 {
            &lm_loss * cfg.w_lm
        } else {
            lm_loss.zeros_like()
        };
        if cfg.w_cp != 0.0 {
            loss = &loss + &l_cp * cfg.w_cp;
        }
        if cfg.w_cs != 0.0 {
            loss = &loss + &l_cs * cfg.w_cs;
        }
        IthnOutputs {
            forward: f,
            p,
            h_neg_embeds: h,
            similarity_matrix: s,
            n_similarity_matrix: sn,
            h_n_similarity_matrix: sh,
            fin_similarity_matrix: fin,
            lm_loss,
            l_cp,
            l_cs,
            loss,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn harder_negative_is_lambda_mix() {
        let f = (Kind::Float, Device::Cpu);
        tch::manual_seed(3);
        let z = l2_rows(&Tensor::randn([3, 5], f));
        let u = l2_rows(&Tensor::randn([3, 5], f));
        let un = l2_rows(&Tensor::randn([3, 5], f));
        let (p, h1) = harder_negatives(&z, &u, &un, 1.0);
        assert!(h1.allclose(&un, 1e-6, 1e-6, false));
        let (_, h0) = harder_negatives(&z, &u, &un, 0.0);
        assert!(h0.allclose(&p, 1e-6, 1e-6, false));
    }

    #[test]
    fn cosine_loss_of_identical_rows_is_one() {
        let x = Tensor::from_slice(&[3.0f32, 4.0, 0.0, 1.0]).reshape([2, 2]);
        assert!((cosine_loss(&x, &x).double_value(&[]) - 1.0).abs() < 1e-6);
        assert!((lambda_for_epoch(0.01, 1) - 0.990_049_833_749_168).abs() < 1e-15);
        assert!((lambda_for_epoch(0.01, 100) - (-1.0f64).exp()).abs() < 1e-12);
    }
}
