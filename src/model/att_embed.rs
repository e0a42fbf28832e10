//! att_embed: the patch features' way into the transformer (`encoder_decoder.att_embed` of the
//! reference's AttModel), an `nn.Sequential` whose indices are the state_dict keys:
//!
//! | `model.use_bn` | layers (Sequential index)                                              |
//! |---|---|
//! | 0 (default)    | Linear(2048 → d_model) 0, ReLU 1, Dropout(drop_prob_lm) 2               |
//! | 1              | BatchNorm1d(2048) 0, Linear 1, ReLU 2, Dropout 3                        |
//! | 2              | BatchNorm1d(2048) 0, Linear 1, ReLU 2, Dropout 3, BatchNorm1d(d_model) 4 |
//!
//! (R2Gen/R2GenCMN `--use_bn`, `AttModel.__init__`.)
//!
//! BatchNorm1d normalises each channel over **every valid patch of the batch** — what the
//! reference computes when it is given attention masks (`pack_wrapper` flattens the valid
//! patches to `[M, C]` first). Without masks the reference hands `[B, N, C]` straight to
//! `BatchNorm1d(C)`, which reads dim 1 (N patches) as the channels and so only runs when N == C;
//! R2GenCMN passes no masks, so its `--use_bn 1` cannot run at all on 7×7 maps. This model has
//! no padded patches, so "all valid patches" is all `B·N` of them.
//!
//! Why it matters (docs/tiny-model-diagnosis.md): ResNet patch features are ≥ 0 after the final
//! ReLU and share a large common component; centred, unit-variance inputs keep att_embed's ReLU
//! units alive under Adam and make the image-specific part of the features the whole signal.

use tch::Tensor;

use super::layers::{BatchNorm, Dropout, Linear, LinearInit};
use super::weights::Scope;

#[derive(Debug)]
pub struct AttEmbed {
    bn_in: Option<BatchNorm>,
    linear: Linear,
    bn_out: Option<BatchNorm>,
    drop_prob_lm: f64,
}

impl AttEmbed {
    /// Registers the layers under `s` (= `encoder_decoder.att_embed`) in Sequential order.
    /// `use_bn` must be 0, 1 or 2 (checked by the config).
    pub fn new(s: &Scope, d_vf: i64, d_model: i64, use_bn: u8, drop_prob_lm: f64) -> AttEmbed {
        let bn_in = (use_bn >= 1).then(|| BatchNorm::new(&s.sub(0), d_vf));
        let linear_at = if use_bn >= 1 { 1 } else { 0 };
        let linear = Linear::new(&s.sub(linear_at), d_vf, d_model, true, LinearInit::Default);
        let bn_out = (use_bn == 2).then(|| BatchNorm::new(&s.sub(4), d_model));
        AttEmbed {
            bn_in,
            linear,
            bn_out,
            drop_prob_lm,
        }
    }

    /// `[B, N, d_vf]` → `[B, N, d_model]`. `batch_stats`: normalise with (and update) the batch
    /// statistics — training with `model.batchnorm = "local"`; otherwise the running ones. A
    /// batch with < 2 patches per channel (a rank holding 0 samples) uses the running
    /// statistics ([`BatchNorm::forward`]), so it stays finite.
    pub fn forward(&self, x: &Tensor, drop: &Dropout, batch_stats: bool) -> Tensor {
        let x = match &self.bn_in {
            Some(bn) => per_patch(bn, x, batch_stats),
            None => x.shallow_clone(),
        };
        let x = drop.apply(&self.linear.forward(&x).relu(), self.drop_prob_lm);
        match &self.bn_out {
            Some(bn) => per_patch(bn, &x, batch_stats),
            None => x,
        }
    }
}

/// BatchNorm1d over `[B, N, C]` read as `B·N` samples of C channels.
fn per_patch(bn: &BatchNorm, x: &Tensor, batch_stats: bool) -> Tensor {
    let dims = x.size();
    let c = dims[dims.len() - 1];
    bn.forward(&x.reshape([-1, c]), batch_stats).reshape(&dims)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use tch::{Device, Kind, Tensor};

    use super::*;
    use crate::config::ModelConfig;
    use crate::model::weights::Registry;
    use crate::model::R2GenCmn;

    fn tiny(use_bn: u8) -> ModelConfig {
        ModelConfig {
            d_model: 16,
            d_ff: 32,
            num_heads: 2,
            num_layers: 1,
            cmm_size: 8,
            cmm_dim: 16,
            topk: 4,
            proj_dim: 8,
            visual_layers: vec![1, 1, 1, 1],
            visual_width_per_group: 8,
            use_bn,
            ..ModelConfig::default()
        }
    }

    fn shapes(use_bn: u8) -> Vec<(String, Vec<i64>)> {
        let m = R2GenCmn::new(&tiny(use_bn), 1, 12, Device::Cpu, 0).unwrap();
        m.registry()
            .state_dict()
            .into_iter()
            .filter(|(k, _)| k.starts_with("encoder_decoder.att_embed."))
            .map(|(k, t)| (k, t.size()))
            .collect()
    }

    #[test]
    fn use_bn_keys_are_the_reference_sequential_indices() {
        let key = |k: &str, s: &[i64]| (format!("encoder_decoder.att_embed.{k}"), s.to_vec());
        let linear = |i: usize| {
            [
                key(&format!("{i}.weight"), &[16, 2048]),
                key(&format!("{i}.bias"), &[16]),
            ]
        };
        let bn = |i: usize, c: i64| {
            let n = |leaf: &str| format!("{i}.{leaf}");
            [
                key(&n("weight"), &[c]),
                key(&n("bias"), &[c]),
                key(&n("running_mean"), &[c]),
                key(&n("running_var"), &[c]),
                key(&n("num_batches_tracked"), &[]),
            ]
        };
        assert_eq!(shapes(0), linear(0).to_vec());
        let one: Vec<_> = bn(0, 2048).into_iter().chain(linear(1)).collect();
        assert_eq!(shapes(1), one);
        let two: Vec<_> = one.into_iter().chain(bn(4, 16)).collect();
        assert_eq!(shapes(2), two);
    }

    fn att_embed(use_bn: u8) -> AttEmbed {
        tch::manual_seed(3);
        let reg = RefCell::new(Registry::default());
        let root = Scope::root(&reg, Device::Cpu);
        AttEmbed::new(&root.sub("att_embed"), 2048, 16, use_bn, 0.0)
    }

    /// Non-negative patch features with a large common part, like a ResNet's.
    fn relu_features(b: i64, n: i64) -> Tensor {
        let f = (Kind::Float, Device::Cpu);
        (Tensor::randn([b, n, 2048], f) + 3.0).relu() * 0.5
    }

    #[test]
    fn training_normalises_every_channel_over_all_patches_of_the_batch() {
        let e = att_embed(2);
        let x = relu_features(3, 5);
        let drop = Dropout::new(true, None);
        let bn_in = e.bn_in.as_ref().unwrap();
        let flat = |t: &Tensor| t.reshape([-1, t.size()[2]]);
        // Input BatchNorm: mean 0, biased variance 1 per channel over the 15 patches.
        let y = flat(&per_patch(bn_in, &x, true));
        let mean = y.mean_dim(0, false, None).abs().max().double_value(&[]);
        let var = y.var_dim(0, false, false);
        let var_err = (var - 1.0).abs().max().double_value(&[]);
        assert!(
            mean < 1e-5 && var_err < 1e-3,
            "mean {mean}, |var − 1| {var_err}"
        );
        // The running mean moved by momentum 0.1 towards the batch mean (unchanged in eval).
        let want = flat(&x).mean_dim(0, false, None) * 0.1;
        let got = &bn_in.running_mean;
        assert!(got.allclose(&want, 1e-5, 1e-6, false));
        let _ = per_patch(bn_in, &x, false);
        assert!(bn_in.running_mean.allclose(&want, 1e-5, 1e-6, false));
        // use_bn = 2: the output channels are normalised as well.
        let out = flat(&e.forward(&x, &drop, true));
        assert_eq!(out.size(), [15, 16]);
        let mean = out.mean_dim(0, false, None).abs().max().double_value(&[]);
        assert!(mean < 1e-5, "output mean {mean}");
    }

    #[test]
    fn a_rank_with_no_samples_stays_finite_and_leaves_the_statistics() {
        let e = att_embed(2);
        let drop = Dropout::new(true, None);
        let stats = |e: &AttEmbed| {
            let bn = e.bn_in.as_ref().unwrap();
            (
                bn.running_mean.copy(),
                bn.num_batches_tracked.int64_value(&[]),
            )
        };
        let before = stats(&e);
        let out = e.forward(&relu_features(0, 5), &drop, true);
        assert_eq!(out.size(), [0, 5, 16]);
        let after = stats(&e);
        assert!(before.0.equal(&after.0) && before.1 == after.1);
        // One sample still has 5 patches per channel: batch statistics, finite.
        let one = e.forward(&relu_features(1, 5), &drop, true);
        assert!(bool::try_from(one.isfinite().all()).unwrap());
        assert_eq!(stats(&e).1, 1);
        // A whole model whose rank holds 0 samples: encoder output empty, parameters' grads finite.
        let m = R2GenCmn::new(&tiny(1), 1, 12, Device::Cpu, 0).unwrap();
        let ids = Tensor::zeros([0, 4], (Kind::Int64, Device::Cpu));
        let (lp, _) = m.forward_teacher(&relu_features(0, 4), &ids, true, None);
        let loss = lp.sum(Kind::Float);
        loss.backward();
        for (name, t) in m.registry().state_dict() {
            let finite = t.isfinite().all();
            assert!(bool::try_from(finite).unwrap(), "{name}");
        }
    }
}
