//! Floating-point operations of one ITHN training sample, counted from the model's dimensions,
//! for the model FLOPs utilisation (MFU) that `ops/gpu/check.sh` reports next to `bench step`.
//!
//! Convention (as in the MFU literature, e.g. PaLM, Appendix B): a multiply-add is 2 FLOPs; only
//! convolutions, Linear layers and attention/memory products are counted (normalisations,
//! activations, softmax and the losses are a few percent at most); the backward pass costs twice
//! the forward, so a training sample is 3× its forward. What one sample's forward runs follows
//! `ithn_forward` (SPEC §4/§5): the ResNet on the positive and the negative images (every view),
//! and for each of the two image/report pairs the encoder (att_embed, the memory response, the
//! encoder layers) and the teacher-forced decoder (text memory response, decoder layers, the
//! logit layer over V+1 columns) — `forward_teacher` runs the encoder once per pass. The memory
//! module projects the whole memory matrix (cmm_size rows) to keys and values at each of its 4
//! calls per batch; that cost is shared by the batch, so it is divided by the batch size.

use serde::Serialize;

use crate::config::Config;

/// FLOPs of one training sample.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SampleFlops {
    /// ResNet forward of one image (one view), FLOPs.
    pub resnet_image: f64,
    /// Forward of one whole sample (two image sets, two encoder + decoder passes), FLOPs.
    pub forward: f64,
    /// forward + backward (3 × forward), FLOPs.
    pub train: f64,
}

/// ResNet forward FLOPs of one `side`×`side` image, stem + bottleneck stages (torchvision's
/// ResNet v1.5: the stride sits on the 3×3 convolution, the downsample is a strided 1×1 conv).
pub fn resnet_flops(layers: &[usize], width_per_group: usize, side: usize) -> f64 {
    let conv = |cin: usize, cout: usize, k: usize, out_side: usize| {
        2.0 * (cin * cout * k * k) as f64 * (out_side * out_side) as f64
    };
    let mut s = side.div_ceil(2); // 7×7 stem, stride 2, padding 3
    let mut flops = conv(3, 64, 7, s);
    s = s.div_ceil(2); // 3×3 max-pool, stride 2, padding 1
    let mut cin = 64;
    for (stage, &blocks) in layers.iter().enumerate() {
        let planes = 64 << stage;
        let width = planes * width_per_group / 64;
        let cout = planes * 4;
        for block in 0..blocks {
            let stride = if block == 0 && stage > 0 { 2 } else { 1 };
            let s_out = s.div_ceil(stride);
            flops +=
                conv(cin, width, 1, s) + conv(width, width, 3, s_out) + conv(width, cout, 1, s_out);
            if block == 0 {
                flops += conv(cin, cout, 1, s_out); // downsample
            }
            cin = cout;
            s = s_out;
        }
    }
    flops
}

/// The memory module on `n` query rows (q/out projections, scores over all slots, the weighted
/// top-k sum); its key/value projections of the matrix are counted per batch by the caller.
fn memory_query(n: f64, d: f64, cmm: f64, topk: f64) -> f64 {
    2.0 * n * d * d * 2.0 + 2.0 * n * cmm * d + 2.0 * n * topk * d
}

/// One transformer layer's attention: projections of `n` queries and `m` keys/values, scores
/// and the weighted sum.
fn attention(n: f64, m: f64, d: f64) -> f64 {
    2.0 * n * d * d * 2.0 + 2.0 * m * d * d * 2.0 + 2.0 * 2.0 * n * m * d
}

/// FLOPs of one training sample of `cfg` with reports of `report_len` tokens (BOS/EOS included)
/// and `logit_dim` = V+1 output columns, at global batch `cfg.train.batch_size`.
pub fn sample_flops(cfg: &Config, report_len: usize, logit_dim: usize) -> SampleFlops {
    let m = &cfg.model;
    let (d, dff) = (m.d_model as f64, m.d_ff as f64);
    let (cmm, topk, layers) = (m.cmm_size as f64, m.topk as f64, m.num_layers as f64);
    let image = resnet_flops(
        &m.visual_layers,
        m.visual_width_per_group,
        cfg.data.image_size,
    );
    let grid = (cfg.data.image_size as f64 / 32.0).ceil();
    let s = grid * grid * cfg.data.views as f64; // patch positions fed to the encoder
    let t = report_len.saturating_sub(1) as f64; // teacher-forced positions
    let ffn = |n: f64| 2.0 * 2.0 * n * d * dff;
    let encoder = 2.0 * s * m.d_vf as f64 * d
        + memory_query(s, d, cmm, topk)
        + layers * (attention(s, s, d) + ffn(s));
    let decoder = memory_query(t, d, cmm, topk)
        + layers * (attention(t, t, d) + attention(t, s, d) + ffn(t))
        + 2.0 * t * d * logit_dim as f64;
    let heads = 2.0 * (m.d_vf as f64 + d) * m.proj_dim as f64;
    let memory_matrix = 4.0 * (2.0 * 2.0 * cmm * m.cmm_dim as f64 * d);
    let batch = cfg.train.batch_size.max(1) as f64;
    let forward = 2.0 * cfg.data.views as f64 * image
        + 2.0 * (encoder + decoder + heads)
        + memory_matrix / batch;
    SampleFlops {
        resnet_image: image,
        forward,
        train: 3.0 * forward,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// torchvision's model table lists 4.09 GFLOPS for ResNet-50 and 7.80 for ResNet-101 at
    /// 224×224, counting multiply-adds (its fc layer, 2048×1000, adds 0.002 G of them).
    #[test]
    fn resnet_counts_match_torchvision_table() {
        let r50 = resnet_flops(&[3, 4, 6, 3], 64, 224) / 2.0;
        let r101 = resnet_flops(&[3, 4, 23, 3], 64, 224) / 2.0;
        assert!((r50 / 4.09e9 - 1.0).abs() < 0.01, "ResNet-50 {r50:e} MACs");
        assert!(
            (r101 / 7.80e9 - 1.0).abs() < 0.01,
            "ResNet-101 {r101:e} MACs"
        );
    }

    #[test]
    fn published_config_is_dominated_by_the_two_resnet_passes() {
        let mut cfg = Config::default();
        cfg.model.visual_layers = vec![3, 4, 23, 3];
        cfg.data.views = 1;
        cfg.train.batch_size = 16;
        let f = sample_flops(&cfg, 40, 761);
        let resnet = 2.0 * f.resnet_image;
        assert!(f.forward > resnet && f.forward < 1.2 * resnet, "{f:?}");
        assert_eq!(f.train, 3.0 * f.forward);
        // Two views double the images and the encoder positions.
        cfg.data.views = 2;
        assert!(sample_flops(&cfg, 40, 761).forward > 1.9 * f.forward);
    }
}
