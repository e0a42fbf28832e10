//! Equivalence of the distributed ITHN step (issue 7, acceptance 1; SPEC §5).
//!
//! `mpirun -np 2` with per-rank batch b against one process with batch 2b, on the real
//! R2GenCMN+ITHN model (tiny dimensions, dropout 0, BatchNorm frozen, fixed random data):
//! every loss term and every parameter gradient of the first step, and every parameter after 5
//! Adam steps, agree within 1e-5 (relative, per tensor: max |a − b| / max |b|), for
//! `ithn.negatives = "projection"` and `"ascent"`. The same run shows that `ithn.gather =
//! "local"` on 2 ranks gives a different objective.
//!
//! The comparison runs in float64 (`model.precision = "fp64"`: parameters and buffers converted
//! after the usual float32 initialisation, inputs at the model's entry). Why: the invariant is mathematical, and Adam divides each gradient
//! element by its own magnitude, so in float32 the rounding noise of elements whose exact
//! gradient is zero (attention key biases: softmax ignores a shift shared by all keys) becomes
//! full ±lr steps in both runs, in random directions. In float64 that noise (~1e-17) sits far
//! below Adam's eps (1e-9). For the same reason a gradient tensor is compared relative to
//! max(max |b|, 1e-6·G), G = the largest gradient element of the model.
//!
//! No fixture: the expected values are those of the single process, computed here. This test
//! binary is its own MPI program (harness = false): without `ITHN_EQ_OUT` it is the parent
//! (single-process runs + launching itself under mpirun); with it, it is one rank.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use ithn_dist::config::{BatchNormMode, Config, Gather, Negatives, Precision};
use ithn_dist::dist::buckets::{BucketPlan, GradSync};
use ithn_dist::dist::collectives::{select, Collectives};
use ithn_dist::dist::World;
use ithn_dist::model::{IthnBatch, R2GenCmn};
use ithn_dist::train::optim::{Adam, AdamConfig};
use ithn_dist::train::step::{forward_backward, sample_seeds};
use tch::{Device, Kind, Tensor};

const GLOBAL_BATCH: i64 = 4;
const STEPS: usize = 5;
const LOGIT_DIM: usize = 31;
const MODES: [&str; 3] = ["projection", "ascent", "local"];

fn tiny_config(mode: &str) -> Config {
    let mut c = Config::default();
    let m = &mut c.model;
    (m.d_model, m.d_ff, m.num_heads, m.num_layers) = (32, 64, 4, 1);
    (m.cmm_size, m.cmm_dim, m.topk, m.proj_dim) = (16, 32, 4, 16);
    m.visual_layers = vec![1, 1, 1, 1];
    m.visual_width_per_group = 4;
    (m.dropout, m.drop_prob_lm) = (0.0, 0.0);
    m.batchnorm = BatchNormMode::Frozen;
    m.precision = Precision::Fp64;
    c.ithn.negatives = if mode == "ascent" {
        Negatives::Ascent
    } else {
        Negatives::Projection
    };
    c.ithn.gather = if mode == "local" {
        Gather::Local
    } else {
        Gather::Global
    };
    c.ithn.ascent_steps = 3;
    c.ithn.ascent_lr = 0.5;
    c.train.seed = 11;
    c.train.batch_size = GLOBAL_BATCH as usize;
    c
}

/// The global batch of step `s`: random images, reports of random lengths right-padded to the
/// global batch's longest (as the loader pads), identical in every process.
fn global_batch(s: usize) -> IthnBatch {
    tch::manual_seed(1000 + s as i64);
    let f = (Kind::Float, Device::Cpu);
    let make_ids = |max_len: i64| {
        let lens = Tensor::randint_low(3, max_len, [GLOBAL_BATCH], (Kind::Int64, Device::Cpu));
        let tok = Tensor::randint_low(
            1,
            LOGIT_DIM as i64,
            [GLOBAL_BATCH, max_len],
            (Kind::Int64, Device::Cpu),
        );
        let pos = Tensor::arange(max_len, (Kind::Int64, Device::Cpu)).unsqueeze(0);
        let inside = pos.lt_tensor(&lens.unsqueeze(1));
        let mut ids = tok * inside.to_kind(Kind::Int64);
        let _ = ids.narrow(1, 0, 1).fill_(0); // BOS
        let last = pos.eq_tensor(&(lens.unsqueeze(1) - 1));
        ids = ids.masked_fill(&last, 0); // EOS
        let masks = pos.le_tensor(&(lens.unsqueeze(1) - 1)).to_kind(Kind::Int64);
        let t = lens.max().int64_value(&[]);
        (ids.narrow(1, 0, t), masks.narrow(1, 0, t))
    };
    let (ids, masks) = make_ids(9);
    let (neg_ids, neg_masks) = make_ids(8);
    IthnBatch {
        images: Tensor::randn([GLOBAL_BATCH, 3, 32, 32], f).to_kind(Kind::Double),
        neg_images: Tensor::randn([GLOBAL_BATCH, 3, 32, 32], f).to_kind(Kind::Double),
        ids,
        masks,
        neg_ids,
        neg_masks,
        lambda: 0.8,
    }
}

fn slice(b: &IthnBatch, start: i64, len: i64) -> IthnBatch {
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

/// Runs the scenario on this process's share and returns what rank 0 records: the loss terms
/// and gradients of the first step, the parameters after `STEPS` steps.
fn scenario(mode: &str, coll: &dyn Collectives) -> Vec<(String, Tensor)> {
    let cfg = tiny_config(mode);
    let model = R2GenCmn::from_config(&cfg, LOGIT_DIM, Device::Cpu).expect("tiny model");
    let params = model.parameters();
    // Rank 0's initialisation is everyone's (what the trainer does at start).
    for (_, p, _) in &params {
        let mut d = p.detach();
        coll.broadcast(&mut d, 0).expect("broadcast");
    }
    let tensors: Vec<Tensor> = params.iter().map(|(_, p, _)| p.shallow_clone()).collect();
    let names: Vec<String> = params.iter().map(|(n, _, _)| n.clone()).collect();
    let mut opt = Adam::new(params, vec![1e-4, 5e-4], AdamConfig::from_train(&cfg.train)).unwrap();
    // A small bucket size so the run uses several buckets.
    let mut sync = GradSync::new(BucketPlan::for_params(&tensors, 0.05), 1);
    let per_rank = GLOBAL_BATCH / coll.size() as i64;
    let start = per_rank * coll.rank() as i64;
    let mut out = Vec::new();
    for s in 0..STEPS {
        let batch = slice(&global_batch(s), start, per_rank);
        let seeds = sample_seeds(cfg.train.seed, s as u64, start as u64, per_rank as usize);
        opt.zero_grad();
        let terms =
            forward_backward(&model, &batch, &cfg.ithn, coll, Some(&seeds), 1.0).expect("step");
        assert!(sync.after_backward(&tensors, coll).expect("all-reduce"));
        if s == 0 {
            for (k, v) in [
                ("lm", terms.lm),
                ("l_cp", terms.l_cp),
                ("l_cs", terms.l_cs),
                ("loss", terms.loss),
            ] {
                out.push((format!("loss.{k}"), Tensor::from(v)));
            }
            for (n, p) in names.iter().zip(&tensors) {
                out.push((format!("grad.{n}"), p.grad().copy()));
            }
        }
        opt.step();
    }
    for (n, p) in names.iter().zip(&tensors) {
        out.push((format!("param.{n}"), p.detach().copy()));
    }
    out
}

/// max |a − b| / max(max |b|, floor) (0 when equal).
fn rel(a: &Tensor, b: &Tensor, floor: f64) -> f64 {
    let num = max_abs(&(a.to_kind(Kind::Double) - b.to_kind(Kind::Double)));
    let den = max_abs(&b.to_kind(Kind::Double));
    if num == 0.0 {
        0.0
    } else {
        num / den.max(floor).max(1e-300)
    }
}

fn max_abs(t: &Tensor) -> f64 {
    t.abs().max().double_value(&[])
}

fn child(out: &Path) {
    let world = World::init().expect("MPI world");
    let coll =
        select(&world, ithn_dist::config::Backend::Auto, Device::Cpu, 120.0).expect("collectives");
    tch::set_num_threads(1);
    for mode in MODES {
        let rec = scenario(mode, coll.as_ref());
        if world.rank == 0 {
            Tensor::write_safetensors(&rec, out.join(format!("{mode}.safetensors")))
                .expect("write");
        }
    }
    world.barrier();
}

fn parent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("own path");
    let status = Command::new("mpirun")
        .args(["--oversubscribe", "-np", "2"])
        .arg(&exe)
        .env("ITHN_EQ_OUT", dir.path())
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .status()
        .expect("mpirun must be on PATH");
    assert!(status.success(), "the 2-rank run failed: {status}");

    let single_coll = ithn_dist::dist::collectives::SingleProcess;
    let mut failures = Vec::new();
    let mut report = Vec::new();
    for mode in MODES {
        let single: HashMap<String, Tensor> = scenario(mode, &single_coll).into_iter().collect();
        let dist: HashMap<String, Tensor> =
            Tensor::read_safetensors(dir.path().join(format!("{mode}.safetensors")))
                .expect("rank 0 output")
                .into_iter()
                .collect();
        assert_eq!(single.len(), dist.len(), "{mode}: same keys");
        let g_max = single
            .iter()
            .filter(|(k, _)| k.starts_with("grad."))
            .map(|(_, t)| max_abs(t))
            .fold(0.0, f64::max);
        let mut worst = ("", 0.0f64);
        for (k, want) in &single {
            let floor = if k.starts_with("grad.") {
                1e-6 * g_max
            } else {
                0.0
            };
            let r = rel(&dist[k], want, floor);
            if r > worst.1 {
                worst = (k.as_str(), r);
            }
            if mode != "local" && r > 1e-5 {
                failures.push(format!("{mode}: {k} differs by {r:e}"));
            }
        }
        report.push(format!(
            "{mode}: worst relative difference {:e} ({})",
            worst.1, worst.0
        ));
        if mode == "local" {
            let d = rel(&dist["loss.l_cp"], &single["loss.l_cp"], 0.0);
            assert!(
                d > 1e-3,
                "gather=local must change L_cp on 2 ranks (relative change {d:e})"
            );
            let g = rel(&dist["grad.temp_3"], &single["grad.temp_3"], 0.0);
            assert!(
                g > 1e-3,
                "gather=local must change the gradients (temp_3 by {g:e})"
            );
            report.push(format!(
                "local: L_cp differs by {d:e}, grad temp_3 by {g:e}"
            ));
        }
    }
    for line in &report {
        println!("{line}");
    }
    assert!(
        failures.is_empty(),
        "not equivalent:\n{}",
        failures.join("\n")
    );
    println!("train_equivalence: ok");
}

fn main() {
    match std::env::var_os("ITHN_EQ_OUT") {
        Some(out) => child(&PathBuf::from(out)),
        None => parent(),
    }
}
