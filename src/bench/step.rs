//! `ithn-dist bench step`: samples/s of the distributed ITHN training step for the current
//! world, with a time breakdown (data, forward, backward, communication, optimizer).
//!
//! Batches are synthetic (random images and reports at the configured sizes), built on the
//! calling thread, so "data" is the cost of making and moving a batch, not the loader's. The
//! reference measured in the same run is one process taking the same step on the whole global
//! batch (rank 0 alone, after the distributed measurement): the printed ratio is the speed-up
//! of the world over one rank at the same thread count per rank.
//!
//! Compare 1 rank × 2 threads with 2 ranks × 1 thread:
//! `ithn-dist bench step --config configs/tiny.toml --threads 2` and
//! `mpirun -np 2 ithn-dist bench step --config configs/tiny.toml --threads 1`.

use std::time::Instant;

use clap::Args;
use tch::{Device, Kind, Tensor};

use crate::config::Config;
use crate::config::ConfigArgs;
use crate::data::sampler::{check_world, even_slice};
use crate::dist::collectives::{select, SingleProcess};
use crate::dist::{Collectives, World};
use crate::model::{IthnBatch, R2GenCmn};
use crate::train::optim_step::OptimStep;
use crate::train::step::{sample_seeds, Micro};

#[derive(Args, Debug)]
pub struct StepBenchArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Measured optimizer steps (after the warm-up).
    #[arg(long, default_value_t = 10, value_parser = crate::bounds::at_least::<usize>(1))]
    pub steps: usize,
    /// Unmeasured warm-up steps.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// libtorch CPU threads per rank.
    #[arg(long, value_parser = crate::bounds::threads::<i32>())]
    pub threads: Option<i32>,
    /// Vocabulary size of the synthetic reports (logit columns).
    #[arg(long, default_value_t = 761, value_parser = crate::bounds::at_least::<usize>(2))]
    pub vocab: usize,
    /// Report length (tokens incl. BOS/EOS) of the synthetic reports.
    #[arg(long, default_value_t = 40, value_parser = crate::bounds::between::<i64>(2, crate::bounds::MAX_SEQ_LEN))]
    pub report_len: i64,
    /// Skip the one-process reference measurement.
    #[arg(long)]
    pub no_reference: bool,
}

/// Seconds per phase, summed over the measured steps.
#[derive(Debug, Default, Clone, Copy)]
struct Phases {
    data: f64,
    forward: f64,
    backward: f64,
    comm: f64,
    optimizer: f64,
    total: f64,
}

/// A synthetic global batch of step `s`, sliced for `rank` of `size` ranks the way the sampler
/// slices it, with the dropout seeds the trainer would draw.
fn batch(
    cfg: &Config,
    a: &StepBenchArgs,
    s: usize,
    rank: usize,
    size: usize,
    device: Device,
) -> Micro {
    let b = cfg.train.batch_size as i64;
    tch::manual_seed(s as i64);
    let side = cfg.data.image_size as i64;
    let imgs = |n| {
        Tensor::randn(
            [n, cfg.data.views as i64, 3, side, side],
            (Kind::Float, Device::Cpu),
        )
    };
    let ids = |n| {
        let t = Tensor::randint_low(
            1,
            a.vocab as i64,
            [n, a.report_len],
            (Kind::Int64, Device::Cpu),
        );
        let _ = t.narrow(1, 0, 1).fill_(0);
        let _ = t.narrow(1, a.report_len - 1, 1).fill_(0);
        t
    };
    let (images, neg_images, ids_, neg_ids) = (imgs(b), imgs(b), ids(b), ids(b));
    let part = even_slice(b as usize, size, rank);
    let (start, len) = (part.start as i64, part.len() as i64);
    let n = |t: &Tensor| t.narrow(0, start, len).to_device(device);
    let masks = Tensor::ones([b, a.report_len], (Kind::Int64, Device::Cpu));
    Micro {
        batch: IthnBatch {
            images: n(&images),
            neg_images: n(&neg_images),
            ids: n(&ids_),
            masks: n(&masks),
            neg_ids: n(&neg_ids),
            neg_masks: n(&masks),
            lambda: cfg.lambda(1),
        },
        seeds: Some(sample_seeds(
            cfg.train.seed,
            s as u64,
            part.start as u64,
            part.len(),
        )),
        indices: (part.start as u64..part.end as u64).collect(),
    }
}

/// Runs `warmup + steps` optimizer steps and returns the measured phase times.
fn measure(
    cfg: &Config,
    a: &StepBenchArgs,
    coll: &dyn Collectives,
    device: Device,
) -> anyhow::Result<Phases> {
    let model = R2GenCmn::from_config(cfg, a.vocab + 1, device)?;
    // The trainer's optimizer step, unchanged: what is measured is what training runs.
    let mut unit = OptimStep::new(&model, cfg)?;
    let mut p = Phases::default();
    for s in 0..a.warmup + a.steps {
        let start = Instant::now();
        let micro = batch(cfg, a, s, coll.rank(), coll.size(), device);
        let data = start.elapsed().as_secs_f64();
        let t = unit.step(&model, std::slice::from_ref(&micro), coll, s as u64 + 1)?;
        if s >= a.warmup {
            p.data += data;
            p.forward += t.times.forward;
            p.backward += t.times.backward;
            p.comm += t.times.comm;
            p.optimizer += t.times.optimizer;
            p.total += start.elapsed().as_secs_f64();
        }
    }
    Ok(p)
}

/// One line: throughput (samples over `wall` seconds), time per step and each phase's share.
fn print(label: &str, p: &Phases, samples: f64, wall: f64, steps: usize) {
    let share = |x: f64| 100.0 * x / p.total.max(1e-12);
    println!(
        "{label}: {:.2} samples/s | {:.1} ms/step: data {:.1}%, forward {:.1}%, backward {:.1}%, communication {:.1}%, optimizer {:.1}%",
        samples / wall.max(1e-12),
        1e3 * wall / steps.max(1) as f64,
        share(p.data),
        share(p.forward),
        share(p.backward),
        share(p.comm),
        share(p.optimizer),
    );
}

pub fn run(a: StepBenchArgs) -> anyhow::Result<i32> {
    let cfg = a.config.load()?;
    let world = World::init()?;
    if let Some(n) = a.threads {
        tch::set_num_threads(n);
    }
    // The world the trainer accepts (one micro-batch per step here: the whole global batch).
    check_world(cfg.train.batch_size, 1, world.size)?;
    let device = if tch::Cuda::is_available() {
        Device::Cuda(world.local_rank)
    } else {
        Device::Cpu
    };
    let coll = select(&world, cfg.dist.backend, device, cfg.dist.timeout_s)?;
    let p = measure(&cfg, &a, coll.as_ref(), device)?;
    // The slowest rank sets the pace; report its phases.
    let slowest = world
        .all_gather_f64(p.total)
        .iter()
        .cloned()
        .fold(0.0, f64::max);
    let samples = (cfg.train.batch_size * a.steps) as f64;
    if world.is_root() {
        println!(
            "bench step: world {} × {} threads, global batch {}, {} steps, backend {}",
            world.size,
            tch::get_num_threads(),
            cfg.train.batch_size,
            a.steps,
            coll.name()
        );
        print(
            "distributed (slowest rank's pace, rank 0's phases)",
            &p,
            samples,
            slowest,
            a.steps,
        );
    }
    if world.is_root() && !a.no_reference && world.size > 1 {
        let r = measure(&cfg, &a, &SingleProcess, device)?;
        print(
            "one process, whole global batch",
            &r,
            samples,
            r.total,
            a.steps,
        );
        println!(
            "speed-up of {} ranks over one process: {:.2}× (ideal {}×; efficiency {:.0}%)",
            world.size,
            r.total / slowest,
            world.size,
            100.0 * r.total / slowest / world.size as f64
        );
    }
    world.barrier();
    Ok(0)
}
