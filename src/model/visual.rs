//! The visual extractor: a torchvision bottleneck ResNet (`[3,4,23,3]` = ResNet-101) without its
//! average pool and fc, keeping torchvision's parameter names under `visual_extractor.model.*`
//! so converted ImageNet weights (ops/export_resnet101.py) and reference checkpoints load.
//!
//! Output: the 2048-channel map; [`features`] turns it into patch features `[B, h·w, 2048]`
//! (row-major spatial order) and pooled features `[B, 2048]` (average over the map, which is
//! the reference's 7×7 AvgPool2d at 224×224 input).

use tch::{Device, Kind, Tensor};

use super::layers::{conv2d, BatchNorm};
use super::weights::Scope;
use crate::config::BatchNormMode;

/// Conv weight with torchvision's init: kaiming-normal, fan_out, ReLU gain.
fn conv(s: &Scope, out: i64, inp: i64, k: i64) -> Tensor {
    let std = (2.0 / (out * k * k) as f64).sqrt();
    s.param(
        "weight",
        Tensor::empty([out, inp, k, k], (Kind::Float, Device::Cpu)).normal_(0.0, std),
    )
}

#[derive(Debug)]
struct Bottleneck {
    conv1: Tensor,
    bn1: BatchNorm,
    conv2: Tensor,
    bn2: BatchNorm,
    conv3: Tensor,
    bn3: BatchNorm,
    downsample: Option<(Tensor, BatchNorm)>,
    stride: i64,
}

impl Bottleneck {
    fn new(s: &Scope, inplanes: i64, planes: i64, width: i64, stride: i64) -> Bottleneck {
        let conv1 = conv(&s.sub("conv1"), width, inplanes, 1);
        let bn1 = BatchNorm::new(&s.sub("bn1"), width);
        let conv2 = conv(&s.sub("conv2"), width, width, 3);
        let bn2 = BatchNorm::new(&s.sub("bn2"), width);
        let conv3 = conv(&s.sub("conv3"), planes * 4, width, 1);
        let bn3 = BatchNorm::new(&s.sub("bn3"), planes * 4);
        let downsample = (stride != 1 || inplanes != planes * 4).then(|| {
            let d = s.sub("downsample");
            (
                conv(&d.sub(0), planes * 4, inplanes, 1),
                BatchNorm::new(&d.sub(1), planes * 4),
            )
        });
        Bottleneck {
            conv1,
            bn1,
            conv2,
            bn2,
            conv3,
            bn3,
            downsample,
            stride,
        }
    }

    fn forward(&self, x: &Tensor, bs: bool) -> Tensor {
        let y = self.bn1.forward(&conv2d(x, &self.conv1, 1, 0), bs).relu();
        let y = self
            .bn2
            .forward(&conv2d(&y, &self.conv2, self.stride, 1), bs)
            .relu();
        let y = self.bn3.forward(&conv2d(&y, &self.conv3, 1, 0), bs);
        let identity = match &self.downsample {
            Some((w, bn)) => bn.forward(&conv2d(x, w, self.stride, 0), bs),
            None => x.shallow_clone(),
        };
        (y + identity).relu()
    }
}

/// The ResNet trunk (`visual_extractor.model.{0,1,4,5,6,7}`).
#[derive(Debug)]
pub struct ResNet {
    conv1: Tensor,
    bn1: BatchNorm,
    stages: Vec<Vec<Bottleneck>>,
    bn_mode: BatchNormMode,
}

impl ResNet {
    /// `layers` blocks per stage, torchvision's `width_per_group` (64 for ResNet-101).
    pub fn new(
        s: &Scope,
        layers: &[usize],
        width_per_group: usize,
        bn_mode: BatchNormMode,
    ) -> ResNet {
        let conv1 = conv(&s.sub(0), 64, 3, 7);
        let bn1 = BatchNorm::new(&s.sub(1), 64);
        let mut inplanes = 64;
        let mut stages = Vec::new();
        for (i, &n) in layers.iter().enumerate() {
            let planes = 64i64 << i;
            let stride = if i == 0 { 1 } else { 2 };
            let width = planes * width_per_group as i64 / 64;
            let st = s.sub(4 + i);
            let blocks = (0..n)
                .map(|b| {
                    let blk = Bottleneck::new(
                        &st.sub(b),
                        inplanes,
                        planes,
                        width,
                        if b == 0 { stride } else { 1 },
                    );
                    inplanes = planes * 4;
                    blk
                })
                .collect();
            stages.push(blocks);
        }
        ResNet {
            conv1,
            bn1,
            stages,
            bn_mode,
        }
    }

    /// `[N, 3, H, W]` → `[N, 2048, H/32, W/32]`.
    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let bs = train && self.bn_mode == BatchNormMode::Local;
        let mut y = self
            .bn1
            .forward(&conv2d(x, &self.conv1, 2, 3), bs)
            .relu()
            .max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        for blk in self.stages.iter().flatten() {
            y = blk.forward(&y, bs);
        }
        y
    }
}

/// Patch features `[N, h·w, C]` and pooled features `[N, C]` of a feature map `[N, C, h, w]`.
pub fn features(map: &Tensor) -> (Tensor, Tensor) {
    let (n, c, h, w) = map.size4().expect("feature map is 4-D");
    let fc = map
        .avg_pool2d([h, w], [1, 1], [0, 0], false, true, None::<i64>)
        .reshape([n, c]);
    let att = map.reshape([n, c, h * w]).permute([0, 2, 1]);
    (att, fc)
}
