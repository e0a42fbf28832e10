//! Training-mode behaviour of the model that the distributed trainer relies on, on a fresh
//! tiny model (configs/tiny.toml dimensions; no fixture numbers involved): per-sample dropout
//! seeds make a sample's forward independent of its batch, every parameter receives a gradient,
//! BatchNorm `frozen` equals eval mode, and bf16 stays close to fp32.

use ithn_dist::config::{BatchNormMode, Config, IthnConfig};
use ithn_dist::model::layers::with_bf16;
use ithn_dist::model::{ithn_forward, IthnBatch, R2GenCmn};
use tch::{Device, Kind, Tensor};

const V1: usize = 50;

/// libtorch's default generator (`tch::manual_seed`, parameter init) is process-wide and the
/// test harness runs tests on parallel threads: a test comparing two seeded inits must not see
/// another test draw in between, so every test here holds this lock.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    TORCH_RNG
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn tiny(bn: BatchNormMode) -> R2GenCmn {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/tiny.toml");
    let mut cfg = Config::load(&path, &[]).expect("configs/tiny.toml");
    cfg.model.batchnorm = bn;
    R2GenCmn::from_config(&cfg, V1, Device::Cpu).expect("tiny model")
}

fn ids(b: i64, t: i64) -> Tensor {
    tch::manual_seed(1);
    let ids = Tensor::randint_low(1, V1 as i64, [b, t], (Kind::Int64, Device::Cpu));
    let _ = ids.narrow(1, 0, 1).fill_(0);
    ids
}

#[test]
fn seeded_dropout_makes_samples_independent_of_their_batch() {
    let _serial = serial();
    let model = tiny(BatchNormMode::Local);
    tch::manual_seed(2);
    let att = Tensor::rand([3, 4, 2048], (Kind::Float, Device::Cpu));
    let ids = ids(3, 9);
    let (lp, st) = model.forward_teacher(&att, &ids, true, Some(&[10, 20, 30]));
    let (lp1, st1) = model.forward_teacher(
        &att.narrow(0, 1, 1),
        &ids.narrow(0, 1, 1),
        true,
        Some(&[20]),
    );
    assert!(lp.get(1).allclose(&lp1.get(0), 1e-5, 1e-5, false));
    assert!(st.get(1).allclose(&st1.get(0), 1e-5, 1e-5, false));
    // Same seeds → same result; other seeds → another dropout draw; eval differs from train.
    let (lp2, _) = model.forward_teacher(&att, &ids, true, Some(&[10, 20, 30]));
    assert!(lp.equal(&lp2));
    let (lp3, _) = model.forward_teacher(&att, &ids, true, Some(&[11, 20, 30]));
    assert!(!lp3.get(0).allclose(&lp.get(0), 1e-5, 1e-5, false));
    assert!(lp3.get(1).allclose(&lp.get(1), 1e-5, 1e-5, false));
    let (lp4, _) = model.forward_teacher(&att, &ids, false, None);
    assert!(!lp4.allclose(&lp, 1e-5, 1e-5, false));
}

fn batch(b: i64) -> IthnBatch {
    tch::manual_seed(3);
    let f = (Kind::Float, Device::Cpu);
    let ids = ids(b, 7);
    IthnBatch {
        images: Tensor::randn([b, 3, 64, 64], f),
        neg_images: Tensor::randn([b, 3, 64, 64], f),
        masks: ids.ones_like(),
        neg_ids: ids.flip([0]),
        neg_masks: ids.ones_like(),
        ids,
        lambda: 0.9,
    }
}

#[test]
fn every_parameter_gets_a_gradient_in_training() {
    let _serial = serial();
    let model = tiny(BatchNormMode::Local);
    let out = ithn_forward(
        &model,
        &batch(3),
        &IthnConfig::default(),
        true,
        Some(&[1, 2, 3]),
    );
    let loss = out.loss.double_value(&[]);
    assert!(loss.is_finite() && loss > 0.0, "loss {loss}");
    out.loss.backward();
    let params = model.parameters();
    assert_eq!(
        params.iter().filter(|(_, _, g)| *g == 0).count(),
        51,
        "visual group size"
    );
    for (name, p, _) in &params {
        let g = p.grad();
        assert!(g.defined(), "{name} has no gradient");
        assert!(
            bool::try_from(g.isfinite().all()).unwrap(),
            "{name} gradient not finite"
        );
    }
}

#[test]
fn batchnorm_frozen_uses_running_statistics_and_local_updates_them() {
    let _serial = serial();
    let frozen = tiny(BatchNormMode::Frozen);
    let imgs = batch(2).images;
    let (a_train, _) = frozen.visual(&imgs, true);
    let (a_eval, _) = frozen.visual(&imgs, false);
    assert!(a_train.equal(&a_eval));
    let local = tiny(BatchNormMode::Local);
    let key = "visual_extractor.model.1.num_batches_tracked";
    let tracked = |m: &R2GenCmn| {
        m.registry()
            .state_dict()
            .into_iter()
            .find(|(n, _)| n == key)
            .unwrap()
            .1
            .int64_value(&[])
    };
    assert_eq!(tracked(&local), 0);
    let (l_train, _) = local.visual(&imgs, true);
    assert_eq!(tracked(&local), 1);
    assert!(!l_train.allclose(&a_eval, 1e-4, 1e-4, false));
}

/// `model.freeze_visual_extractor`: the ResNet's weights and BatchNorm statistics come out of a
/// training step bit for bit as they went in (not in the optimizer, so no weight decay either),
/// its features are the eval-mode ones and carry no autograd graph, and everything else trains.
#[test]
fn a_frozen_extractor_stays_fixed_while_the_rest_trains() {
    use ithn_dist::dist::collectives::SingleProcess;
    use ithn_dist::train::optim_step::OptimStep;
    use ithn_dist::train::step::Micro;
    let _serial = serial();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/tiny.toml");
    let mut cfg = Config::load(&path, &["model.freeze_visual_extractor=true".into()])
        .expect("configs/tiny.toml");
    cfg.train.lr_ve = 1.0; // would move the weights a lot if they were stepped
    let model = R2GenCmn::from_config(&cfg, V1, Device::Cpu).expect("tiny model");
    let unfrozen = tiny(BatchNormMode::Local);
    let params = model.parameters();
    assert!(
        params.iter().all(|(_, _, g)| *g != 0),
        "no visual-group parameter"
    );
    assert_eq!(params.len() + 51, unfrozen.parameters().len());
    let b = batch(3);
    let (train_feats, _) = model.visual(&b.images, true);
    // Eval-mode features, each image alone (a batched forward may differ in the last bits).
    let alone: Vec<Tensor> = (0..3)
        .map(|i| model.visual(&b.images.narrow(0, i, 1), false).0)
        .collect();
    let eval_feats = Tensor::cat(&alone, 0);
    assert!(
        train_feats.equal(&eval_feats),
        "eval-mode features in training"
    );
    assert!(
        !train_feats.requires_grad(),
        "no graph through the extractor"
    );
    let snapshot = |m: &R2GenCmn| -> Vec<(String, Tensor)> {
        let sd = m.registry().state_dict();
        sd.into_iter()
            .map(|(n, t)| (n, t.detach().copy()))
            .collect()
    };
    let before = snapshot(&model);
    let mut unit = OptimStep::new(&model, &cfg, &SingleProcess).expect("optimizer step");
    let micro = Micro {
        batch: b,
        seeds: Some(vec![1, 2, 3]),
        indices: vec![0, 1, 2],
    };
    unit.step(&model, &[micro], &SingleProcess, 1)
        .expect("step");
    let after = snapshot(&model);
    let (mut fixed, mut moved) = (0, 0);
    for ((name, x), (_, y)) in before.iter().zip(&after) {
        if name.starts_with("visual_extractor.") {
            assert!(x.equal(y), "{name} changed although frozen");
            fixed += 1;
        } else if !x.equal(y) {
            moved += 1;
        }
    }
    assert!(fixed > 51, "weights and BatchNorm buffers checked: {fixed}");
    assert!(
        moved > 10,
        "the encoder-decoder trains: {moved} tensors moved"
    );
}

/// The frozen extractor's feature cache: each image's features are its own batch-of-one eval
/// features, bit for bit, whatever batch it arrives in, cold or warm.
#[test]
fn cached_features_are_each_images_own_eval_features() {
    let _serial = serial();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/tiny.toml");
    let cfg = Config::load(&path, &["model.freeze_visual_extractor=true".into()]).unwrap();
    let model = R2GenCmn::from_config(&cfg, V1, Device::Cpu).expect("tiny model");
    model.enable_feature_cache(1 << 30);
    let imgs = batch(4).images;
    let (att, fc) = model.visual(&imgs, true);
    for i in 0..4 {
        let (a1, f1) = model.visual(&imgs.narrow(0, i, 1), false);
        assert!(
            att.narrow(0, i, 1).equal(&a1) && fc.narrow(0, i, 1).equal(&f1),
            "row {i}"
        );
    }
    let stats = model.feature_cache_stats().expect("cache on");
    assert_eq!((stats.hits, stats.misses, stats.entries), (0, 4, 4));
    // Warm, in another batch: the same values, from the cache.
    let (att2, fc2) = model.visual(&imgs.narrow(0, 1, 3).flip([0]), true);
    assert!(att2.equal(&att.narrow(0, 1, 3).flip([0])) && fc2.equal(&fc.narrow(0, 1, 3).flip([0])));
    assert_eq!(model.feature_cache_stats().unwrap().hits, 3);
    // Evaluation never consults it.
    let _ = model.visual(&imgs, false);
    assert_eq!(model.feature_cache_stats().unwrap().hits, 3);
}

/// The no-ITHN ablation (`ithn.w_cp = ithn.w_cs = 0`): the ITHN heads are not trained (no
/// weight decay shrinking them towards 0/0) and an off term cannot poison the loss — here the
/// image projection is zeroed so that z = x/‖x‖ is NaN, yet the step is finite, equals the LM
/// term alone, and leaves the heads as they were.
#[test]
fn terms_weighted_zero_train_nothing_and_cannot_poison_the_loss() {
    use ithn_dist::dist::collectives::SingleProcess;
    use ithn_dist::train::optim_step::OptimStep;
    use ithn_dist::train::step::Micro;
    let _serial = serial();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/tiny.toml");
    let off = ["ithn.w_cp=0".to_string(), "ithn.w_cs=0".to_string()];
    let cfg = Config::load(&path, &off).unwrap();
    let model = R2GenCmn::from_config(&cfg, V1, Device::Cpu).expect("tiny model");
    let heads = |m: &R2GenCmn| -> Vec<(String, Tensor)> {
        m.registry()
            .state_dict()
            .into_iter()
            .filter(|(n, _)| n.contains("projection") || n.starts_with("temp_"))
            .map(|(n, t)| (n, t.detach().copy()))
            .collect()
    };
    for (name, t) in model.registry().state_dict() {
        if name == "img_projection.linear1.weight" {
            tch::no_grad(|| {
                let _ = t.shallow_clone().zero_();
            });
        }
    }
    let before = heads(&model);
    assert_eq!(before.len(), 4);
    let mut unit = OptimStep::new(&model, &cfg, &SingleProcess).expect("optimizer step");
    let micro = Micro {
        batch: batch(3),
        seeds: Some(vec![1, 2, 3]),
        indices: vec![0, 1, 2],
    };
    let terms = unit
        .step(&model, &[micro], &SingleProcess, 1)
        .expect("a finite step");
    assert!(terms.l_cs.is_nan(), "the off term is NaN here: {terms:?}");
    assert!(terms.loss.is_finite());
    assert!((terms.loss - 0.7 * terms.lm).abs() < 1e-12, "{terms:?}");
    for ((name, a), (_, b)) in before.iter().zip(&heads(&model)) {
        assert!(a.equal(b), "{name} was trained although its terms are off");
    }
    // With the terms on, the same heads are trained (and the NaN would stop the step).
    let on = Config::load(&path, &[]).unwrap();
    let model = R2GenCmn::from_config(&on, V1, Device::Cpu).expect("tiny model");
    let before = heads(&model);
    let mut unit = OptimStep::new(&model, &on, &SingleProcess).expect("optimizer step");
    let micro = Micro {
        batch: batch(3),
        seeds: Some(vec![1, 2, 3]),
        indices: vec![0, 1, 2],
    };
    unit.step(&model, &[micro], &SingleProcess, 1)
        .expect("step");
    let after = heads(&model);
    let moved = before
        .iter()
        .zip(&after)
        .filter(|((_, a), (_, b))| !a.equal(b));
    assert_eq!(moved.count(), 4);
}

#[test]
fn bf16_products_stay_close_to_fp32() {
    let _serial = serial();
    let model = tiny(BatchNormMode::Local);
    let b = batch(2);
    let full = ithn_forward(&model, &b, &IthnConfig::default(), false, None);
    let half = with_bf16(true, || {
        ithn_forward(&model, &b, &IthnConfig::default(), false, None)
    });
    let (x, y) = (full.loss.double_value(&[]), half.loss.double_value(&[]));
    assert!(x != y && ((x - y) / x).abs() < 2e-2, "fp32 {x} vs bf16 {y}");
    half.loss.backward();
    assert!(model
        .parameters()
        .iter()
        .all(|(_, p, _)| p.grad().defined()));
}

#[test]
fn visual_weights_load_only_the_resnet_trunk() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/tiny.toml");
    let mut cfg = Config::load(&path, &[]).unwrap();
    // A "pretrained" trunk: the visual entries of a model built from another seed.
    cfg.train.seed = 99;
    let donor = R2GenCmn::from_config(&cfg, V1, Device::Cpu).unwrap();
    let trunk: Vec<(String, Tensor)> = donor
        .registry()
        .state_dict()
        .into_iter()
        .filter(|(n, _)| n.starts_with("visual_extractor."))
        .collect();
    let file = dir.path().join("resnet.safetensors");
    ithn_dist::model::weights::write_safetensors_atomic(&file, &trunk).unwrap();
    cfg.train.seed = 1;
    cfg.model.visual_weights = Some(file.clone());
    let model = R2GenCmn::for_training(&cfg, V1, Device::Cpu).unwrap();
    let fresh = R2GenCmn::from_config(&cfg, V1, Device::Cpu).unwrap();
    for (((name, got), (_, want)), (_, other)) in model
        .registry()
        .state_dict()
        .into_iter()
        .zip(donor.registry().state_dict())
        .zip(fresh.registry().state_dict())
    {
        if name.starts_with("visual_extractor.") {
            assert!(got.equal(&want), "{name} not loaded");
        } else {
            assert!(got.equal(&other), "{name} should keep its seed-1 init");
        }
    }
    // A trunk with a missing tensor is refused, naming the file and key.
    let file2 = dir.path().join("partial.safetensors");
    ithn_dist::model::weights::write_safetensors_atomic(&file2, &trunk[1..]).unwrap();
    cfg.model.visual_weights = Some(file2.clone());
    let err = R2GenCmn::for_training(&cfg, V1, Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("partial.safetensors") && err.contains(&trunk[0].0),
        "{err}"
    );
}

/// The donor's extractor in torchvision's names (`visual_extractor.model.{0,1,4..7}.*` →
/// `conv1`, `bn1`, `layer1..4`), as `resnet(...).state_dict()` saved with safetensors holds it.
fn torchvision_names(trunk: &[(String, Tensor)]) -> Vec<(String, Tensor)> {
    let child = |i: &str| match i {
        "0" => "conv1",
        "1" => "bn1",
        "4" => "layer1",
        "5" => "layer2",
        "6" => "layer3",
        "7" => "layer4",
        other => panic!("no torchvision child for index {other}"),
    };
    trunk
        .iter()
        .map(|(n, t)| {
            let rest = n.strip_prefix("visual_extractor.model.").unwrap();
            let (i, tail) = rest.split_once('.').unwrap();
            (format!("{}.{tail}", child(i)), t.shallow_clone())
        })
        .collect()
}

#[test]
fn visual_weights_accept_torchvision_names_and_refuse_bad_tensors() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/tiny.toml");
    let mut cfg = Config::load(&path, &[]).unwrap();
    cfg.train.seed = 99;
    let donor = R2GenCmn::from_config(&cfg, V1, Device::Cpu).unwrap();
    let trunk: Vec<(String, Tensor)> = donor
        .registry()
        .state_dict()
        .into_iter()
        .filter(|(n, _)| n.starts_with("visual_extractor."))
        .collect();
    let mut tv = torchvision_names(&trunk);
    assert!(tv.iter().any(|(n, _)| n == "layer1.0.bn1.running_mean"));
    // torchvision's classifier is part of its state_dict and must be ignored.
    tv.push((
        "fc.weight".into(),
        Tensor::ones([1000, 2048], (Kind::Float, Device::Cpu)),
    ));
    tv.push((
        "fc.bias".into(),
        Tensor::zeros([1000], (Kind::Float, Device::Cpu)),
    ));
    let file = dir.path().join("resnet_tv.safetensors");
    ithn_dist::model::weights::write_safetensors_atomic(&file, &tv).unwrap();
    cfg.train.seed = 1;
    cfg.model.visual_weights = Some(file.clone());
    let model = R2GenCmn::for_training(&cfg, V1, Device::Cpu).unwrap();
    let loaded: std::collections::HashMap<String, Tensor> =
        model.registry().state_dict().into_iter().collect();
    for (name, want) in &trunk {
        assert!(
            loaded[name].equal(want),
            "{name} not loaded from torchvision names"
        );
    }

    // Each bad file is refused naming the file and the offending key.
    let refused = |name: &str, tensors: Vec<(String, Tensor)>, key: &str| {
        let f = dir.path().join(name);
        ithn_dist::model::weights::write_safetensors_atomic(&f, &tensors).unwrap();
        let mut c = cfg.clone();
        c.model.visual_weights = Some(f.clone());
        let err = R2GenCmn::for_training(&c, V1, Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains(name) && err.contains(key), "{err}");
    };
    let without = |key: &str| -> Vec<(String, Tensor)> {
        tv.iter()
            .filter(|(n, _)| n != key)
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect()
    };
    // Missing key: reported in the model's name and torchvision's.
    refused(
        "missing.safetensors",
        without("layer2.0.conv2.weight"),
        "visual_extractor.model.5.0.conv2.weight (torchvision: layer2.0.conv2.weight)",
    );
    let mut wrong = without("conv1.weight");
    wrong.push((
        "conv1.weight".into(),
        Tensor::zeros([3, 3, 7, 7], (Kind::Float, Device::Cpu)),
    ));
    refused("shape.safetensors", wrong, "(torchvision: conv1.weight)");
    let mut nan = without("bn1.weight");
    let bad = trunk
        .iter()
        .find(|(n, _)| n == "visual_extractor.model.1.weight")
        .unwrap()
        .1
        .copy();
    let _ = bad.narrow(0, 0, 1).fill_(f64::NAN);
    nan.push(("bn1.weight".into(), bad));
    refused("nan.safetensors", nan, "bn1.weight");
    let mut unknown = without("");
    unknown.push((
        "avgpool.weight".into(),
        Tensor::zeros([1], (Kind::Float, Device::Cpu)),
    ));
    refused("unknown.safetensors", unknown, "avgpool.weight");
}
