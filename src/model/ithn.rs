//! The ITHN objective (SPEC §3) as free functions on already computed (or all-gathered)
//! tensors, so the distributed trainer can call them on the global batch, plus
//! [`ithn_forward`], the single-process composition (the reference `forward_cxr` + loss).
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

/// λ = exp(−α·epoch), epochs counted from 1.
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
    let l_cp =
        (fin.cross_entropy_for_logits(&labels) + fin.tr().cross_entropy_for_logits(&labels)) / 2.0;
    (l_cp, s, sn, sh, fin)
}

/// `L_cs = mean_i |cos(z_i, z⁻_i)|` with each norm clamped at 1e-8.
pub fn cosine_loss(z: &Tensor, z_neg: &Tensor) -> Tensor {
    let cos =
        (normalize_rows(z, 1e-8) * normalize_rows(z_neg, 1e-8)).sum_dim_intlist(-1, false, None);
    cos.abs().mean(None)
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

/// Every intermediate of [`ithn_forward`] under the reference's names.
#[derive(Debug)]
pub struct IthnOutputs {
    pub att_feats: Tensor,
    pub fc_feats: Tensor,
    pub neg_att_feats: Tensor,
    pub neg_fc_feats: Tensor,
    pub output: Tensor,
    pub pos_rep_output: Tensor,
    pub neg_rep_output: Tensor,
    pub pos_img_embeds: Tensor,
    pub neg_img_embeds: Tensor,
    pub pos_rep_embeds: Tensor,
    pub neg_rep_embeds: Tensor,
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
        vec![
            ("att_feats", &self.att_feats),
            ("fc_feats", &self.fc_feats),
            ("neg_att_feats", &self.neg_att_feats),
            ("neg_fc_feats", &self.neg_fc_feats),
            ("output", &self.output),
            ("pos_rep_output", &self.pos_rep_output),
            ("neg_rep_output", &self.neg_rep_output),
            ("pos_img_embeds", &self.pos_img_embeds),
            ("neg_img_embeds", &self.neg_img_embeds),
            ("pos_rep_embeds", &self.pos_rep_embeds),
            ("neg_rep_embeds", &self.neg_rep_embeds),
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

/// Derives the seeds of the negative pair's pass from the positive ones, so the two decoder
/// passes of a sample draw different dropout masks.
fn negative_seeds(seeds: &[u64]) -> Vec<u64> {
    seeds.iter().map(|s| s ^ 0xA5A5_5A5A_DEAD_BEEF).collect()
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
    model.with_precision(|| {
        let (att_feats, fc_feats) = model.visual(&batch.images, train);
        let (neg_att_feats, neg_fc_feats) = model.visual(&batch.neg_images, train);
        let (output, pos_rep_output) = model.forward_teacher(&att_feats, &batch.ids, train, seeds);
        let neg_seeds = seeds.map(negative_seeds);
        let (_, neg_rep_output) =
            model.forward_teacher(&neg_att_feats, &batch.neg_ids, train, neg_seeds.as_deref());
        let z = model.img_embed(&fc_feats);
        let z_neg = model.img_embed(&neg_fc_feats);
        let u = model.text_embed(&pos_rep_output);
        let u_neg = model.text_embed(&neg_rep_output);
        let (p, h) = harder_negatives(&z, &u, &u_neg, batch.lambda);
        let (l_cp, s, sn, sh, fin) =
            contrastive_loss(&z, &u, &z_neg, &u_neg, &h, &model.temp_1, &model.temp_3);
        let l_cs = cosine_loss(&z, &z_neg);
        let (lm_sum, tokens) = lm_loss_sum(&output, &batch.ids, &batch.masks);
        let lm_loss = lm_sum / tokens;
        let loss = &lm_loss * cfg.w_lm + &l_cp * cfg.w_cp + &l_cs * cfg.w_cs;
        IthnOutputs {
            att_feats,
            fc_feats,
            neg_att_feats,
            neg_fc_feats,
            output,
            pos_rep_output,
            neg_rep_output,
            pos_img_embeds: z,
            neg_img_embeds: z_neg,
            pos_rep_embeds: u,
            neg_rep_embeds: u_neg,
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
        assert!((lambda_for_epoch(0.01, 100) - (-1.0f64).exp()).abs() < 1e-12);
    }
}
