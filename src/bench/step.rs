//! `ithn-dist bench step`: samples/s of the distributed ITHN training step for the current
//! world, with a time breakdown (data, forward, backward, communication, optimizer).
//!
//! Batches are synthetic (random images and reports at the configured sizes), built on the
//! calling thread, so "data" is the cost of making and moving a batch, not the loader's.
//!
//! On 2 or more CPU ranks the same invocation measures, in alternating rounds:
//! * the reference: one process with all the world's threads (`world × --threads`) taking the
//!   same step on the whole global batch — rank 0 alone, on the CPUs of all ranks (whatever
//!   `mpirun --bind-to` gave each), while the other ranks sleep (they do not spin in MPI, so
//!   the reference gets the cores), e.g. 1 process × 2 threads;
//! * the world with the optimizer sharded (ZeRO-1, `dist.shard_optimizer = true`) and
//!   unsharded, e.g. 2 ranks × 1 thread;
//!
//! and prints a per-phase table (ms per step, the median round by wall time) and the scaling
//! ratio: the world's samples/s over the reference's (1.0 = ranks scale as well as threads).
//! On GPUs the reference is one process on one GPU (the ratio is then the speed-up).
//!
//! `mpirun -np 2 ithn-dist bench step --config configs/tiny.toml --threads 1`.

use std::time::{Duration, Instant};

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
    /// Skip the one-process reference measurement (and the other optimizer mode).
    #[arg(long)]
    pub no_reference: bool,
    /// Measurement rounds; each measures every run once, in turn; the median round is shown.
    #[arg(long, default_value_t = 3, value_parser = crate::bounds::at_least::<usize>(1))]
    pub rounds: usize,
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
            lambda: crate::model::ithn::lambda_for_epoch(cfg.ithn.alpha, 1),
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

/// Runs `warmup + steps` optimizer steps and returns the measured phase times and the Adam
/// state elements this rank holds.
fn measure(
    cfg: &Config,
    a: &StepBenchArgs,
    coll: &dyn Collectives,
    device: Device,
) -> anyhow::Result<(Phases, usize)> {
    let model = R2GenCmn::from_config(cfg, a.vocab + 1, device)?;
    // The trainer's optimizer step, unchanged: what is measured is what training runs.
    let mut unit = OptimStep::new(&model, cfg, coll)?;
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
    Ok((p, unit.state_numel()))
}

/// What one measurement ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    /// One process with all the world's threads, on the whole global batch.
    Reference,
    /// The world, with `dist.shard_optimizer` as given.
    World { shard: bool },
}

/// One measurement: rank 0's phases and the wall time that sets the pace (the slowest rank's).
#[derive(Debug, Clone, Copy)]
struct Measured {
    phases: Phases,
    wall: f64,
    /// Adam state elements rank 0 holds.
    state: usize,
}

/// Waits for every rank without spinning (MPI's blocking calls poll a core at 100 %): the
/// ranks that are not measuring sleep while rank 0 measures the reference alone.
fn quiet_barrier(world: &World) {
    use mpi::traits::Communicator;
    let Some(comm) = world.comm() else {
        return;
    };
    if comm.size() == 1 {
        return;
    }
    let mut req = mpi::collective::CommunicatorCollectives::immediate_barrier(comm);
    loop {
        match req.test() {
            Ok(_) => return,
            Err(r) => req = r,
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The CPUs this process may run on (Linux affinity mask).
fn cpu_mask() -> Option<libc::cpu_set_t> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the call writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let ok = libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
        (ok == 0).then_some(set)
    }
}

fn set_cpu_mask(set: &libc::cpu_set_t) {
    // SAFETY: `set` is a valid cpu_set_t of the size passed. A refusal (a CPU outside this
    // job's cgroup) leaves the mask as it was, which is all a benchmark can do then.
    unsafe {
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set);
    }
}

/// The union of every rank's CPUs (collective). Under `mpirun --bind-to core` (what
/// `launch/mpirun.sh` does with a core per rank) rank 0 alone may run on its own cores only:
/// the reference's threads would share them and measure the binding, not one process.
fn world_cpus(world: &World) -> Option<libc::cpu_set_t> {
    let own = cpu_mask();
    let n = libc::CPU_SETSIZE as usize;
    let mut flags: Vec<u64> = (0..n)
        // SAFETY: c < CPU_SETSIZE.
        .map(|c| {
            own.as_ref()
                .is_some_and(|s| unsafe { libc::CPU_ISSET(c, s) }) as u64
        })
        .collect();
    world.all_reduce_max_u64(&mut flags); // max of 0/1 flags: the union
    own?;
    // SAFETY: as in `cpu_mask`; c < CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for c in (0..n).filter(|&c| flags[c] == 1) {
            libc::CPU_SET(c, &mut set);
        }
        Some(set)
    }
}

/// Measures `run` (collective; the reference is measured on rank 0 only, `None` elsewhere,
/// on `cpus`, every rank's CPUs).
#[allow(clippy::too_many_arguments)]
fn measure_run(
    run: Run,
    cfg: &Config,
    a: &StepBenchArgs,
    world: &World,
    coll: &dyn Collectives,
    device: Device,
    threads: i32,
    cpus: Option<&libc::cpu_set_t>,
) -> anyhow::Result<Option<Measured>> {
    match run {
        Run::Reference => {
            let mut m = None;
            if world.is_root() {
                let ref_threads = if device.is_cuda() {
                    threads
                } else {
                    threads * world.size as i32
                };
                let own = cpu_mask();
                if let (Some(all), Some(_)) = (cpus, &own) {
                    set_cpu_mask(all);
                }
                tch::set_num_threads(ref_threads);
                let measured = measure(cfg, a, &SingleProcess, device);
                tch::set_num_threads(threads);
                if let Some(own) = &own {
                    set_cpu_mask(own);
                }
                let (phases, state) = measured?;
                m = Some(Measured {
                    phases,
                    wall: phases.total,
                    state,
                });
            }
            quiet_barrier(world);
            Ok(m)
        }
        Run::World { shard } => {
            let mut c = cfg.clone();
            c.dist.shard_optimizer = shard;
            let (phases, state) = measure(&c, a, coll, device)?;
            // The slowest rank sets the pace.
            let wall = world
                .all_gather_f64(phases.total)
                .iter()
                .cloned()
                .fold(0.0, f64::max);
            Ok(Some(Measured {
                phases,
                wall,
                state,
            }))
        }
    }
}

/// The runs of this invocation: the configured one first.
fn runs(cfg: &Config, a: &StepBenchArgs, world: usize) -> Vec<Run> {
    let shard = cfg.dist.shard_optimizer;
    let mut v = vec![Run::World { shard }];
    if world > 1 && !a.no_reference {
        v.push(Run::World { shard: !shard });
        v.push(Run::Reference);
    }
    v
}

fn label(run: Run, world: usize, threads: i32, device: Device) -> String {
    let t = |n: i32| {
        if n == 1 {
            "1 thread".to_string()
        } else {
            format!("{n} threads")
        }
    };
    match run {
        Run::Reference if device.is_cuda() => "1 process, 1 GPU (reference)".into(),
        Run::Reference => format!("1 process × {} (reference)", t(threads * world as i32)),
        Run::World { shard } => format!(
            "{world} rank{} × {}, optimizer {}",
            if world == 1 { "" } else { "s" },
            t(threads),
            if shard && world > 1 {
                "sharded"
            } else {
                "unsharded"
            }
        ),
    }
}

/// The median round by wall time.
fn median(mut v: Vec<Measured>) -> Measured {
    v.sort_by(|x, y| x.wall.total_cmp(&y.wall));
    v[v.len() / 2]
}

/// The summary line, the phase table and the scaling ratios.
fn report(
    results: &[(Run, Measured)],
    a: &StepBenchArgs,
    batch: usize,
    world: usize,
    threads: i32,
    device: Device,
) {
    let samples = (batch * a.steps) as f64;
    let rate = |m: &Measured| samples / m.wall.max(1e-12);
    let per_step = |x: f64| 1e3 * x / a.steps as f64;
    let (first, m) = results[0];
    let p = &m.phases;
    let share = |x: f64| 100.0 * x / p.total.max(1e-12);
    println!(
        "distributed ({}; the slowest rank's pace, rank 0's phases): {:.2} samples/s | {:.1} ms/step: data {:.1}%, forward {:.1}%, backward {:.1}%, communication {:.1}%, optimizer {:.1}%",
        label(first, world, threads, device), rate(&m), per_step(m.wall),
        share(p.data), share(p.forward), share(p.backward), share(p.comm), share(p.optimizer),
    );
    println!("| run | samples/s | ms/step | data | forward | backward | communication | optimizer | Adam state (elements, rank 0) |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (run, m) in results {
        let p = &m.phases;
        println!(
            "| {} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} |",
            label(*run, world, threads, device),
            rate(m),
            per_step(m.wall),
            per_step(p.data),
            per_step(p.forward),
            per_step(p.backward),
            per_step(p.comm),
            per_step(p.optimizer),
            m.state
        );
    }
    if let Some((_, r)) = results.iter().find(|(run, _)| *run == Run::Reference) {
        for (run, m) in results.iter().filter(|(run, _)| *run != Run::Reference) {
            println!(
                "scaling ratio, {} vs {}: {:.3} (samples/s over the reference's; 1.0 = ranks scale like threads)",
                label(*run, world, threads, device), label(Run::Reference, world, threads, device), rate(m) / rate(r)
            );
        }
    }
}

pub fn run(a: StepBenchArgs) -> anyhow::Result<i32> {
    let cfg = a.config.load()?;
    let world = World::init()?;
    if let Some(n) = a.threads {
        tch::set_num_threads(n);
    }
    let threads = tch::get_num_threads();
    // The world the trainer accepts (one micro-batch per step here: the whole global batch).
    check_world(cfg.train.batch_size, 1, world.size)?;
    let device = if tch::Cuda::is_available() {
        Device::Cuda(world.local_rank)
    } else {
        Device::Cpu
    };
    let coll = select(&world, cfg.dist.backend, device, cfg.dist.timeout_s)?;
    let runs = runs(&cfg, &a, world.size);
    let cpus = world_cpus(&world);
    let mut rounds: Vec<Vec<Measured>> = vec![Vec::new(); runs.len()];
    for _ in 0..a.rounds {
        for (k, run) in runs.iter().enumerate() {
            if let Some(m) = measure_run(
                *run,
                &cfg,
                &a,
                &world,
                coll.as_ref(),
                device,
                threads,
                cpus.as_ref(),
            )? {
                rounds[k].push(m);
            }
        }
    }
    if world.is_root() {
        println!(
            "bench step: world {} × {} threads, global batch {}, {} steps (+{} warm-up) × {} rounds (median shown), backend {}",
            world.size, threads, cfg.train.batch_size, a.steps, a.warmup, a.rounds, coll.name()
        );
        let results: Vec<(Run, Measured)> = runs
            .iter()
            .copied()
            .zip(rounds.into_iter().map(median))
            .collect();
        report(
            &results,
            &a,
            cfg.train.batch_size,
            world.size,
            threads,
            device,
        );
    }
    world.barrier();
    Ok(0)
}
