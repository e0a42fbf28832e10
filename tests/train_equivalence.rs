//! Equivalence of the distributed ITHN step (issue 7, acceptance 1; issue 13, acceptance 1;
//! SPEC §5), through `OptimStep`, the optimizer step the trainer runs.
//!
//! Under `mpirun` against one process on the same global batch, on the real R2GenCMN+ITHN model
//! (tiny dimensions, dropout 0, BatchNorm frozen, fixed random data): every loss term and every
//! parameter gradient of the first step, and every parameter after the last Adam step, agree
//! within 1e-5 (relative, per tensor: max |a − b| / max |b|), for `ithn.negatives =
//! "projection"` and `"ascent"`, for every way a global batch falls on the ranks:
//! * 2 ranks, global batch 4 (2 + 2), 5 steps; and global batches 1 (1 + 0), 3 (2 + 1) and
//!   5 (3 + 2), 2 steps each;
//! * 3 ranks (`--oversubscribe`), global batches 2 (1 + 1 + 0), 4 (2 + 1 + 1), 5 (2 + 2 + 1).
//!
//! The same runs show that `ithn.gather = "local"` on 2 ranks gives a different objective, and
//! that with `model.batchnorm = "local"` the step is finite on every rank also when a rank holds
//! 0 samples or 1 sample on a 1×1 feature map (32×32 images), and every rank ends with rank 0's
//! parameters and BatchNorm statistics.
//!
//! These runs use `dist.shard_optimizer = false`: only then does every `.grad` hold the summed
//! gradient after the step. The sharded optimizer (ZeRO-1, the default) is compared with the
//! unsharded one bit for bit (issue 20, acceptance 3), in float32 as training runs: on 2 ranks
//! global batches 1 (1 + 0) and 5 (3 + 2), on 3 ranks 2 (1 + 1 + 0) and 5 (2 + 2 + 1), 3 steps
//! each, every rank's loss terms, parameters and whole (gathered) optimizer state must have the
//! same bits, with several buckets of which some do not divide by the world size; the Adam state
//! a sharded rank holds must be its ⌈1/world⌉ of each bucket's.
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
use ithn_dist::data::sampler::even_slice;
use ithn_dist::dist::buckets::BucketPlan;
use ithn_dist::dist::collectives::{select, Collectives};
use ithn_dist::dist::World;
use ithn_dist::model::{IthnBatch, R2GenCmn};
use ithn_dist::train::optim_step::OptimStep;
use ithn_dist::train::step::{sample_seeds, Micro};
use tch::{Device, Kind, Tensor};

const LOGIT_DIM: usize = 31;

/// One run: objective `mode` (projection, ascent, local = `ithn.gather = "local"`, bn-local =
/// projection with `model.batchnorm = "local"`), global batch `batch`, `steps` optimizer steps.
#[derive(Debug, Clone, Copy)]
struct Scenario {
    mode: &'static str,
    batch: i64,
    steps: usize,
}

impl Scenario {
    fn key(&self) -> String {
        format!("{}-b{}", self.mode, self.batch)
    }
    /// Compared with the single process (local and bn-local are different objectives; zero and
    /// zero-off are compared with each other).
    fn equivalent(&self) -> bool {
        matches!(self.mode, "projection" | "ascent")
    }

    /// The float32 runs of the sharded (zero) and unsharded (zero-off) optimizer.
    fn zero(&self) -> bool {
        self.mode.starts_with("zero")
    }
}

/// What runs on `world` ranks.
fn scenarios(world: usize) -> Vec<Scenario> {
    let s = |mode, batch, steps| Scenario { mode, batch, steps };
    let uneven: &[i64] = if world == 2 { &[1, 3, 5] } else { &[2, 4, 5] };
    let mut v = Vec::new();
    if world == 2 {
        v.extend([s("projection", 4, 5), s("ascent", 4, 5), s("local", 4, 5)]);
    }
    for &b in uneven {
        v.extend([s("projection", b, 2), s("ascent", b, 2)]);
    }
    // A rank with 0 samples, and one with 1 sample on a 1×1 map (1 value per channel).
    v.push(s("bn-local", if world == 2 { 1 } else { 2 }, 2));
    v.push(s("bn-local", 3, 2));
    for &b in if world == 2 { &[1i64, 5] } else { &[2, 5] } {
        v.extend([s("zero", b, 3), s("zero-off", b, 3)]);
    }
    v
}

fn tiny_config(mode: &str, batch: i64) -> Config {
    let mut c = Config::default();
    let m = &mut c.model;
    (m.d_model, m.d_ff, m.num_heads, m.num_layers) = (32, 64, 4, 1);
    (m.cmm_size, m.cmm_dim, m.topk, m.proj_dim) = (16, 32, 4, 16);
    m.visual_layers = vec![1, 1, 1, 1];
    m.visual_width_per_group = 4;
    (m.dropout, m.drop_prob_lm) = (0.0, 0.0);
    m.batchnorm = if mode == "bn-local" {
        BatchNormMode::Local
    } else {
        BatchNormMode::Frozen
    };
    m.precision = if mode.starts_with("zero") {
        Precision::Fp32
    } else {
        Precision::Fp64
    };
    c.dist.shard_optimizer = mode == "zero";
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
    c.train.batch_size = batch as usize;
    // A small bucket size so the run uses several buckets.
    c.dist.bucket_mb = 0.05;
    c
}

/// The global batch of step `s`: `n` random images, reports of random lengths right-padded to
/// the global batch's longest (as the loader pads), identical in every process.
fn global_batch(s: usize, n: i64) -> IthnBatch {
    tch::manual_seed(1000 + s as i64);
    let f = (Kind::Float, Device::Cpu);
    let make_ids = |max_len: i64| {
        let lens = Tensor::randint_low(3, max_len, [n], (Kind::Int64, Device::Cpu));
        let tok = Tensor::randint_low(
            1,
            LOGIT_DIM as i64,
            [n, max_len],
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
        images: Tensor::randn([n, 3, 32, 32], f).to_kind(Kind::Double),
        neg_images: Tensor::randn([n, 3, 32, 32], f).to_kind(Kind::Double),
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

/// Runs the scenario on this process's share (the sampler's split of each global batch) and
/// returns what it records: the loss terms and gradients of the first step, the parameters and
/// BatchNorm statistics after the last.
fn scenario(sc: &Scenario, coll: &dyn Collectives) -> Vec<(String, Tensor)> {
    let cfg = tiny_config(sc.mode, sc.batch);
    let model = R2GenCmn::from_config(&cfg, LOGIT_DIM, Device::Cpu).expect("tiny model");
    // Rank 0's initialisation is everyone's (what the trainer does at start).
    for (_, t) in model.registry().state_dict() {
        let mut d = t.detach();
        coll.broadcast(&mut d, 0).expect("broadcast");
    }
    let mut unit = OptimStep::new(&model, &cfg, coll).expect("optimizer step");
    let params = model.parameters();
    let part = even_slice(sc.batch as usize, coll.size(), coll.rank());
    let mut out = Vec::new();
    for s in 0..sc.steps {
        let micro = Micro {
            batch: slice(
                &global_batch(s, sc.batch),
                part.start as i64,
                part.len() as i64,
            ),
            seeds: Some(sample_seeds(
                cfg.train.seed,
                s as u64,
                part.start as u64,
                part.len(),
            )),
            indices: (part.start as u64..part.end as u64).collect(),
        };
        let terms = unit
            .step(&model, &[micro], coll, s as u64 + 1)
            .expect("step");
        if sc.zero() && s + 1 == sc.steps {
            for (k, v) in [("lm", terms.lm), ("l_cp", terms.l_cp), ("loss", terms.loss)] {
                out.push((format!("last.{k}"), Tensor::from(v)));
            }
        }
        if s == 0 && !sc.zero() {
            for (k, v) in [
                ("lm", terms.lm),
                ("l_cp", terms.l_cp),
                ("l_cs", terms.l_cs),
                ("loss", terms.loss),
            ] {
                out.push((format!("loss.{k}"), Tensor::from(v)));
            }
            for (n, p, _) in &params {
                out.push((format!("grad.{n}"), p.grad().copy()));
            }
        }
    }
    for (n, p, _) in &params {
        out.push((format!("param.{n}"), p.detach().copy()));
    }
    for (n, t) in model.registry().state_dict() {
        if n.contains("running_") {
            out.push((format!("buffer.{n}"), t.detach().copy()));
        }
    }
    if sc.zero() {
        // What a checkpoint gets (collective), and what this rank holds.
        for (k, t) in unit.state_tensors(coll).expect("optimizer state") {
            out.push((format!("state.{k}"), t));
        }
        let held = unit.state_numel() as i64;
        out.push(("meta.state_numel".into(), Tensor::from(held)));
    }
    out
}

/// The sharded run (zero) against the unsharded one (zero-off) of global batch `batch` on
/// `world` ranks: every rank's every recorded tensor bit for bit; and the Adam state of a
/// sharded rank at most its share of the buckets.
fn check_zero(dir: &Path, world: usize, batch: i64, failures: &mut Vec<String>) -> String {
    let sc = |mode| Scenario {
        mode,
        batch,
        steps: 3,
    };
    let cfg = tiny_config("zero", batch);
    let model = R2GenCmn::from_config(&cfg, LOGIT_DIM, Device::Cpu).expect("tiny model");
    let tensors: Vec<Tensor> = model.parameters().into_iter().map(|(_, p, _)| p).collect();
    let plan = BucketPlan::for_params(&tensors, cfg.dist.bucket_mb);
    let sizes: Vec<i64> = plan
        .buckets
        .iter()
        .map(|b| b.iter().map(|&i| tensors[i].numel() as i64).sum())
        .collect();
    assert!(
        sizes.len() > 2 && sizes.iter().any(|n| n % world as i64 != 0),
        "the test needs several buckets, some not a multiple of {world}: {sizes:?}"
    );
    let share: i64 = sizes
        .iter()
        .map(|n| 3 * ((n + world as i64 - 1) / world as i64))
        .sum();
    let whole: i64 = 3 * sizes.iter().sum::<i64>();
    let mut held = Vec::new();
    for r in 0..world {
        let (on, off) = (
            read(dir, &sc("zero"), world, r),
            read(dir, &sc("zero-off"), world, r),
        );
        let what = format!("zero-b{batch} on {world} ranks, rank {r}");
        let mut keys: Vec<&String> = off.keys().filter(|k| *k != "meta.state_numel").collect();
        keys.sort();
        if on.len() != off.len() || !keys.iter().any(|k| k.starts_with("state.")) {
            failures.push(format!(
                "{what}: {} vs {} tensors (state included)",
                on.len(),
                off.len()
            ));
        }
        for k in keys {
            match on.get(k) {
                Some(t) if t.size() == off[k].size() && t.equal(&off[k]) => {}
                _ => failures.push(format!("{what}: {k} differs between sharded and unsharded")),
            }
        }
        held.push(on["meta.state_numel"].int64_value(&[]));
        if off["meta.state_numel"].int64_value(&[]) != whole {
            failures.push(format!(
                "{what}: the unsharded optimizer holds {} state elements, not {whole}",
                off["meta.state_numel"].int64_value(&[])
            ));
        }
    }
    // Each rank holds the moments of its chunk of every bucket: ⌈bucket / world⌉ elements.
    if held.iter().any(|&h| h != share) || share > whole / world as i64 + 3 * sizes.len() as i64 {
        failures.push(format!(
            "zero-b{batch} on {world} ranks: sharded ranks hold {held:?} Adam state elements (whole {whole}, share {share})"
        ));
    }
    format!("zero-b{batch} on {world} ranks: sharded = unsharded bit for bit; Adam state per rank {held:?} of {whole}; bucket sizes {sizes:?}")
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
    for sc in scenarios(world.size) {
        let rec = scenario(&sc, coll.as_ref());
        let name = format!(
            "{}-w{}-rank{}.safetensors",
            sc.key(),
            world.size,
            world.rank
        );
        Tensor::write_safetensors(&rec, out.join(name)).expect("write");
    }
    world.barrier();
}

fn read(dir: &Path, sc: &Scenario, world: usize, rank: usize) -> HashMap<String, Tensor> {
    let name = format!("{}-w{world}-rank{rank}.safetensors", sc.key());
    Tensor::read_safetensors(dir.join(&name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .into_iter()
        .collect()
}

/// Launches `world` ranks of this binary; every scenario of [`scenarios`] is run there.
fn launch(world: usize, dir: &Path) {
    let exe = std::env::current_exe().expect("own path");
    let status = Command::new("mpirun")
        .args(["--oversubscribe", "-np", &world.to_string()])
        .arg(&exe)
        .env("ITHN_EQ_OUT", dir)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .status()
        .expect("mpirun must be on PATH");
    assert!(status.success(), "the {world}-rank run failed: {status}");
}

/// Checks one scenario of a `world`-rank run; returns report lines, pushes failures.
fn check(dir: &Path, world: usize, sc: &Scenario, failures: &mut Vec<String>) -> Vec<String> {
    let what = format!("{} on {world} ranks", sc.key());
    let dist = read(dir, sc, world, 0);
    let mut report = Vec::new();
    // Every rank ends with rank 0's parameters and BatchNorm statistics, all finite.
    for r in 0..world {
        let other = read(dir, sc, world, r);
        for (k, t) in other.iter().filter(|(k, _)| !k.starts_with("grad.")) {
            if !bool::try_from(t.isfinite().all()).unwrap() {
                failures.push(format!("{what}: rank {r}: {k} is not finite"));
            }
            if (k.starts_with("param.") || k.starts_with("buffer.")) && !t.equal(&dist[k]) {
                failures.push(format!("{what}: rank {r}: {k} differs from rank 0's"));
            }
        }
    }
    if !sc.equivalent() {
        return report;
    }
    let single = scenario(sc, &ithn_dist::dist::collectives::SingleProcess);
    let single: HashMap<String, Tensor> = single.into_iter().collect();
    assert_eq!(single.len(), dist.len(), "{what}: same keys");
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
        if r > 1e-5 {
            failures.push(format!("{what}: {k} differs by {r:e}"));
        }
    }
    report.push(format!(
        "{what}: worst relative difference {:e} ({})",
        worst.1, worst.0
    ));
    report
}

fn parent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut failures = Vec::new();
    let mut report = Vec::new();
    for world in [2, 3] {
        launch(world, dir.path());
        for sc in scenarios(world) {
            report.extend(check(dir.path(), world, &sc, &mut failures));
            if sc.mode == "zero" {
                report.push(check_zero(dir.path(), world, sc.batch, &mut failures));
            }
        }
    }
    // gather = "local" is a different objective on 2 ranks.
    let local = Scenario {
        mode: "local",
        batch: 4,
        steps: 5,
    };
    let single: HashMap<String, Tensor> =
        scenario(&local, &ithn_dist::dist::collectives::SingleProcess)
            .into_iter()
            .collect();
    let dist = read(dir.path(), &local, 2, 0);
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
