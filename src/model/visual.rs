//! The visual extractor: a torchvision bottleneck ResNet (`[3,4,23,3]` = ResNet-101) without its
//! average pool and fc, keeping torchvision's parameter names under `visual_extractor.model.*`
//! so converted ImageNet weights (ops/export_resnet101.py) and reference checkpoints load.
//!
//! Output: the 2048-channel map; [`features`] turns it into patch features `[B, h·w, 2048]`
//! (row-major spatial order) and pooled features `[B, 2048]` (average over the map, which is
//! the reference's 7×7 AvgPool2d at 224×224 input).

use std::collections::HashMap;
use std::path::Path;

use tch::{Device, Kind, Tensor};

use super::layers::{conv2d, BatchNorm};
use super::weights::{ModelError, Scope};
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

/// torchvision's top-level ResNet children → the reference's `nn.Sequential` index
/// (`list(resnet.children())[:-2]`: conv1, bn1, relu, maxpool, layer1..layer4).
const TORCHVISION_CHILD: [(&str, usize); 6] = [
    ("conv1", 0),
    ("bn1", 1),
    ("layer1", 4),
    ("layer2", 5),
    ("layer3", 6),
    ("layer4", 7),
];

/// A pretrained extractor's state_dict in the model's names (`visual_extractor.model.N.*`).
///
/// Accepts either the reference's names (`visual_extractor.model.0.weight`, what
/// ops/export_resnet101.py writes) or torchvision's (`conv1.weight`, `layer1.0.bn1.running_mean`,
/// what `torchvision.models.resnet101(weights=...).state_dict()` saved with safetensors holds);
/// torchvision's classifier `fc.*` is dropped (R2Gen removes avgpool and fc). Every tensor must
/// be finite: NaN/inf weights would train to NaN silently.
///
/// Errors (naming `path` and the key): a key of neither form, or a non-finite tensor.
pub fn extractor_state_dict(
    path: &Path,
    map: HashMap<String, Tensor>,
) -> Result<HashMap<String, Tensor>, ModelError> {
    let mut out = HashMap::with_capacity(map.len());
    for (key, t) in map {
        if t.is_floating_point() && !bool::try_from(t.isfinite().all())? {
            return Err(ModelError::Invalid {
                path: path.into(),
                msg: format!("key {key:?} holds NaN or infinite values"),
            });
        }
        if key.starts_with("visual_extractor.") {
            out.insert(key, t);
            continue;
        }
        let (child, rest) = key.split_once('.').unwrap_or((key.as_str(), ""));
        if child == "fc" {
            continue;
        }
        let Some(&(_, index)) = TORCHVISION_CHILD.iter().find(|(name, _)| *name == child) else {
            return Err(ModelError::UnexpectedKey {
                path: path.into(),
                key,
            });
        };
        out.insert(format!("visual_extractor.model.{index}.{rest}"), t);
    }
    Ok(out)
}

/// Adds torchvision's name of the key to a missing-key or shape error of
/// [`extractor_state_dict`]'s output, so a user of a torchvision file can find it
/// (`visual_extractor.model.5.0.conv2.weight (torchvision: layer2.0.conv2.weight)`).
pub fn with_torchvision_name(err: ModelError) -> ModelError {
    let name = |key: &str| -> String {
        let tv = key
            .strip_prefix("visual_extractor.model.")
            .and_then(|rest| rest.split_once('.'))
            .and_then(|(index, tail)| {
                let index: usize = index.parse().ok()?;
                let (child, _) = TORCHVISION_CHILD.iter().find(|(_, i)| *i == index)?;
                Some(format!("{child}.{tail}"))
            });
        match tv {
            Some(tv) => format!("{key} (torchvision: {tv})"),
            None => key.to_string(),
        }
    };
    match err {
        ModelError::MissingKey { path, key } => ModelError::MissingKey {
            key: name(&key),
            path,
        },
        ModelError::Shape {
            path,
            key,
            expected,
            found,
        } => ModelError::Shape {
            key: name(&key),
            path,
            expected,
            found,
        },
        other => other,
    }
}
