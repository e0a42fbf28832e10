//! Unit tests of the ITHN step on one process: seeds, ascent, cap projection, and the
//! surrogate backward against the published loss as one expression (toy model).

use super::*;
use crate::dist::collectives::SingleProcess;
use crate::model::ithn::cosine_loss;
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
pub(crate) struct Toy {
    pub w: Tensor,
    pub t1: Tensor,
    pub t3: Tensor,
}

impl Toy {
    /// Fresh parameters drawn from `seed` (f64, so equivalence checks see no rounding noise).
    pub fn new(seed: i64) -> Toy {
        tch::manual_seed(seed);
        let f = (Kind::Double, Device::Cpu);
        Toy {
            w: (Tensor::randn([6, 4], f) * 0.5).set_requires_grad(true),
            t1: Tensor::from(2.0f64).set_requires_grad(true),
            t3: Tensor::from(2.5f64).set_requires_grad(true),
        }
    }

    pub fn params(&self) -> Vec<(String, Tensor, usize)> {
        vec![
            ("w".into(), self.w.shallow_clone(), 0),
            ("temp_1".into(), self.t1.shallow_clone(), 1),
            ("temp_3".into(), self.t3.shallow_clone(), 1),
        ]
    }
}

/// A toy batch of `rows` samples drawn from `seed` (ids/masks unused by [`Toy`]).
pub(crate) fn toy_batch(rows: i64, seed: i64) -> IthnBatch {
    tch::manual_seed(seed);
    let f = (Kind::Double, Device::Cpu);
    let z = |n| Tensor::zeros([n, 2], (Kind::Int64, Device::Cpu));
    IthnBatch {
        images: Tensor::randn([rows, 6], f),
        neg_images: Tensor::randn([rows, 6], f),
        ids: z(rows),
        masks: z(rows),
        neg_ids: z(rows),
        neg_masks: z(rows),
        lambda: 0.8,
    }
}

/// Rows `[start, start + len)` of a batch.
pub(crate) fn rows_of(b: &IthnBatch, start: i64, len: i64) -> IthnBatch {
    let n = |t: &Tensor| t.narrow(0, start, len);
    IthnBatch {
        images: n(&b.images),
        neg_images: n(&b.neg_images),
        ids: n(&b.ids),
        masks: n(&b.masks),
        neg_ids: n(&b.neg_ids),
        neg_masks: n(&b.neg_masks),
        lambda: b.lambda,
    }
}

impl IthnModel for Toy {
    fn local_forward(&self, b: &IthnBatch, _train: bool, _s: Option<&[u64]>) -> RankForward {
        let feats = |x: &Tensor| crate::model::ithn::l2_rows(&x.matmul(&self.w));
        let lp = b
            .images
            .matmul(&self.w)
            .sum_dim_intlist([-1i64].as_slice(), false, None)
            .log_sigmoid();
        RankForward {
            z: feats(&b.images),
            z_neg: feats(&b.neg_images),
            u: feats(&(&b.images * 2.0 + 1.0)),
            u_neg: feats(&(&b.neg_images - 1.0)),
            lm_sum: -lp.sum(lp.kind()),
        }
    }
    fn target_tokens(&self, b: &IthnBatch) -> i64 {
        b.images.size()[0] * 3
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
    let micro = [Micro {
        batch,
        seeds: None,
        indices: Vec::new(),
    }];
    let terms = objective_backward(&toy, &micro, &cfg, &SingleProcess).unwrap();
    let batch = &micro[0].batch;
    let got: Vec<Tensor> = [&toy.w, &toy.t1, &toy.t3]
        .iter()
        .map(|p| p.grad().copy())
        .collect();

    // Direct: the published loss as one expression, one backward.
    for p in [&toy.w, &toy.t1, &toy.t3] {
        let _ = p.grad().zero_();
    }
    let l = toy.local_forward(batch, true, None);
    let (_, h) = harder_negatives(&l.z, &l.u, &l.u_neg, 0.8);
    let (l_cp, ..) = contrastive_loss(&l.z, &l.u, &l.z_neg, &l.u_neg, &h, &toy.t1, &toy.t3);
    let loss = &l.lm_sum / toy.target_tokens(batch) as f64 * cfg.w_lm
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
